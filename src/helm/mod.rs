//! Helm: the charts compiled into smm, the helm processes that install them, helm's release
//! records read straight from the cluster, the releases' workloads judged live, and rendering for `--dump-resources`.

pub mod chart;
mod process;
pub mod record;
pub mod record_cache;
pub mod record_size;
pub mod release;
pub mod render;
mod runner;
pub mod workloads;

pub use process::{STOP_GRACE, kill_running_and_exit};
pub use runner::{HELM_ENV, Helm, HelmBinary, HelmError, HelmSource, HelmVersion, KILL_GRACE};
