//! Cluster access: which cluster to talk to, the objects smm applies itself (no helm), what
//! exists of the objects smm and helm manage, the stored ControlPlane, namespaces' labels, and the
//! leases that keep two writers apart.

pub mod control_plane;
pub mod inventory;
pub mod lease;
pub mod namespaces;
pub mod objects;
pub mod target;
pub mod workloads;
