//! istiod revisions: which one a spec asks for and what it runs (`strategy`), the revision tags
//! smm owns (`tags`).

pub mod strategy;
pub mod tags;
