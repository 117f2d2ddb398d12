//! Istio's control-plane revisions. What a spec asks for: which revision istiod runs and at
//! which version (`strategy`), the revision tags smm owns (`tags`). What the API server shows:
//! which revisions exist, which tags point where, which pods, namespaces and tags still use a
//! revision (the rule that decides whether a revision may be removed, `usage`), and each
//! proxy's version against its revision's (`proxies`): pure functions over a snapshot of plain
//! objects, which `cluster::mesh_snapshot` reads.

#[cfg(test)]
pub(crate) mod fixtures;
pub mod migration;
pub mod proxies;
pub mod strategy;
pub mod tag_list;
pub mod tags;
pub mod usage;
