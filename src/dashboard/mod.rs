//! The dashboard: a read-only web view of the ControlPlanes, their components, the mesh, istiod's
//! revisions and tags, and the next reconcile's plan, served by `smm dashboard` from the user's machine and by the operator
//! in its pod. The server answers JSON under `/api/` and draws the dependency graph as SVG; a
//! small page embedded in the binary renders them and polls every 2 s.

mod addons;
mod checks;
mod mesh;
mod revisions;
mod server;
mod snapshot;
mod svg;
mod view;
mod workloads;

pub use addons::{AddonError, AddonLink, addon_target};
pub use server::{Access, Token, TokenError, serve};
pub use view::{Dashboard, DashboardError};
