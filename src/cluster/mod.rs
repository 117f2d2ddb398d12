//! Cluster access: which cluster to talk to, the objects smm applies itself (no helm), what
//! exists of the objects smm and helm manage, the stored ControlPlane, namespaces' labels, and the
//! leases that keep two writers apart; the objects that say which Istio revisions are in use.

pub(crate) mod bundle;
pub mod control_plane;
pub mod inventory;
pub mod lease;
pub mod mesh_snapshot;
pub mod migration;
pub mod namespaces;
pub mod objects;
pub mod port_forward;
pub mod target;
pub mod trust;
pub mod workloads;
