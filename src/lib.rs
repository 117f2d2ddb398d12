//! `smm`: a service-mesh manager that installs the mesh's components from embedded Helm charts
//! and keeps them reconciled, from the command line or as an operator in the cluster.
//!
//! The library holds the engine and everything it needs; `main.rs` and the CLI are thin shells.

pub mod api;
pub mod catalog;
pub mod chart;
pub mod cluster;
pub mod components;
pub mod digest;
pub mod engine;
pub mod helm;
pub mod imperative;
pub mod lock;
pub mod native;
pub mod operator;
pub mod release;
pub mod render;
pub mod store;
pub mod values;
