//! Desired state: what a ControlPlane asks for, computed before the cluster is touched, and the
//! edits the imperative commands make to a ControlPlane.

pub mod edit;
pub mod resolve;
pub mod resolved;
pub mod shared;
pub mod tags;
