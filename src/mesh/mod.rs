//! The mesh: which components exist, how they depend on each other, and what each deploys.

pub mod addons;
pub mod catalog;
pub mod components;
pub mod gateway_api;
pub mod graph;
pub mod injection;
pub mod multicluster;
pub mod revisions;
pub mod trust;
