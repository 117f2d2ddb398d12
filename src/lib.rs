//! `smm`: a service-mesh manager that installs the mesh's components from embedded Helm charts
//! and keeps them reconciled, from the command line or as an operator in the cluster.
//!
//! The crate is layered; a module imports only from layers below it:
//!
//! ```text
//!   cli (the binary)                           parse, call one operation, print
//!        |
//!       ops             operator               the client's operations | watch ControlPlanes,
//!        |    \        /      |                serve endpoints
//!        |     dashboard      |                the web view: JSON, the graph as SVG, the page
//!         \        |        /
//!            fleet     |                       several clusters: attach, detach, each attached
//!              |       |                       cluster's session after the primary's
//!           engine      check                  sessions, rounds, one component's step, status |
//!             |       /                        `smm check`: findings before and after install
//!             |     /
//!           desired                            spec -> desired components (resolved once a
//!             |                                run); imperative edits
//!           mesh                               catalog, dependency graph, the components
//!             |
//!           helm                               charts, helm, releases and their live workloads
//!             |
//!          cluster                             target, applying objects, inventory, leases
//!             |
//!            api      signals  memory          ControlPlane types, conditions and the Ready rule,
//!             |                                native objects as data | SIGINT/SIGTERM as a
//!           values                             cancellation token | malloc_trim; values layering
//!                                              and digests
//! ```
//!
//! mesh and desired never import cluster: they build plain data (`api::objects`), and the
//! engine applies it. cluster imports from mesh only plain data: `cluster::mesh_snapshot` fills
//! a `mesh::revisions::usage::MeshSnapshot`, which mesh judges, and `cluster::bundle` reads the
//! Gateway API's annotation names from `mesh::gateway_api`.

// Unsafe code is allowed only where it is marked, each place with the reason it is sound.
#![deny(unsafe_code)]

/// The ControlPlane custom resource: spec, status, kstatus conditions and their rules; native
/// objects as plain data.
pub mod api;
/// `smm check`: whether a cluster is fit for the mesh before an install, and whether the
/// installed mesh works.
pub mod check;
/// Reaching the cluster: target (kubeconfig), applying native objects, the stored ControlPlane,
/// namespaces' labels, leases.
pub mod cluster;
/// The dashboard: a read-only web view of ControlPlanes, components, the mesh and the plan.
pub mod dashboard;
/// Desired state: resolving a spec into desired components; the imperative commands' edits.
pub mod desired;
/// The reconcile engine: sessions, the round loop, the pure decision, component steps, status.
pub mod engine;
/// One mesh over several clusters: attaching, detaching and probing clusters, and reconciling
/// each attached cluster's part in a session of its own.
pub mod fleet;
#[cfg(test)]
mod generated_docs;
/// Helm: embedded charts, the helm runner, release records, `--dump-resources` rendering.
pub mod helm;
/// Giving freed memory back to the system after a brief peak (a reconcile, a dashboard refresh).
pub mod memory;
/// The mesh: the component catalog, the dependency graph, one module per component.
pub mod mesh;
/// Operator mode: install/uninstall operations, the controller, events, endpoints, manifests.
pub mod operator;
/// The client's operations, one per command that changes or previews the mesh: reconcile
/// (unless the operator owns it), plan, dump.
pub mod ops;
/// SIGINT and SIGTERM as a cancellation token (used by the CLI and the operator).
pub mod signals;
/// Helm values: parsing, layering with managed-value checks, diffs, canonical digests.
pub mod values;
