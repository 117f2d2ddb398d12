//! Istio's control-plane revisions as the API server shows them: which revisions exist, which
//! tags point at which revision, which pods, namespaces and tags still use a revision (the rule
//! that decides whether a revision may be removed), and each proxy's version against its
//! revision's. Pure functions over a snapshot of plain objects; `cluster::mesh_snapshot` reads
//! one.

#[cfg(test)]
mod fixtures;
pub mod proxies;
pub mod usage;
