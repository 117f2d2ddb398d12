//! How a component and its workloads read on the page: the phase and its tone as `smm status`
//! shows them, and each workload's readiness with its reason.

use serde::Serialize;

use super::svg::Tone;
use crate::api::{ComponentPhase, ComponentStatus};
use crate::cluster::workloads::{Readiness, WorkloadKind, WorkloadState};
use crate::helm::workloads::LiveComponent;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadView {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub ready: i32,
    pub desired: i32,
    /// What `ready` and `desired` count: a DaemonSet (a node agent such as ztunnel) runs one pod
    /// per node it fits on, so its counts are nodes.
    pub unit: &'static str,
    pub state: &'static str,
    pub tone: Tone,
    pub message: Option<String>,
}

/// The phase in words and its tone: as `smm status` shows it (`shown`: a rollout in progress is
/// not Available), the recorded phase when the workloads cannot be read, or what a component
/// without a record is waiting for.
pub(super) fn phase_of(
    enabled: bool,
    recorded: Option<&ComponentStatus>,
    shown: Option<&LiveComponent>,
) -> (String, Tone) {
    match shown.map(|s| s.phase.as_str()) {
        Some(phase @ "Progressing") => return (phase.to_owned(), Tone::Busy),
        Some(phase @ "Failed") => return (phase.to_owned(), Tone::Bad),
        _ => {}
    }
    let Some(recorded) = recorded else {
        return if enabled {
            ("Pending".to_owned(), Tone::Busy)
        } else {
            ("Not installed".to_owned(), Tone::Off)
        };
    };
    let tone = match recorded.phase {
        ComponentPhase::Available => Tone::Good,
        ComponentPhase::Installing | ComponentPhase::Upgrading | ComponentPhase::Uninstalling => {
            Tone::Busy
        }
        ComponentPhase::Failed => Tone::Bad,
        ComponentPhase::Removed | ComponentPhase::Unknown => Tone::Off,
    };
    (recorded.phase.to_string(), tone)
}

pub(super) fn workload_view(state: &WorkloadState) -> WorkloadView {
    let tone = match &state.readiness {
        Readiness::Ready => Tone::Good,
        Readiness::Progressing(_) => Tone::Busy,
        Readiness::Failed(_) => Tone::Bad,
    };
    WorkloadView {
        kind: format!("{:?}", state.workload.kind),
        namespace: state.workload.namespace.clone(),
        name: state.workload.name.clone(),
        ready: state.ready,
        desired: state.desired,
        unit: match state.workload.kind {
            WorkloadKind::Deployment | WorkloadKind::StatefulSet => "replicas",
            WorkloadKind::DaemonSet => "nodes",
            WorkloadKind::Job => "completions",
        },
        state: state.readiness.state(),
        tone,
        message: state.readiness.reason().map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::workloads::WorkloadRef;

    fn state(kind: WorkloadKind, ready: i32, desired: i32) -> WorkloadState {
        WorkloadState {
            workload: WorkloadRef {
                kind,
                namespace: "istio-system".to_owned(),
                name: "ztunnel".to_owned(),
            },
            ready,
            desired,
            readiness: Readiness::Progressing(format!("{ready}/{desired} ready")),
        }
    }

    #[test]
    fn a_node_agent_counts_nodes() {
        let view = workload_view(&state(WorkloadKind::DaemonSet, 2, 3));
        assert_eq!((view.ready, view.desired, view.unit), (2, 3, "nodes"));
        assert_eq!(view.tone, Tone::Busy);
        assert_eq!(
            workload_view(&state(WorkloadKind::Deployment, 1, 1)).unit,
            "replicas"
        );
    }
}
