//! End-to-end tests: a real API server (see `scripts/cluster.sh`) and the real helm binaries.

mod addon_dashboard;
mod ambient;
mod charts;
mod check;
mod cli;
mod drift;
mod engine;
mod failures;
mod helm_runner;
mod istio;
mod kiali;
mod local_plane;
mod migration;
mod multicluster;
mod readiness;
mod records;
mod revisions;
mod set_syntax;
mod smm_binary;
#[path = "../support/mod.rs"]
mod support;
mod tags;
#[path = "../fixtures/tiny_component.rs"]
mod tiny_component;
mod trust;
mod upgrades;
mod waypoint;
