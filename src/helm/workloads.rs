//! The workloads of a release judged live: what `smm status` and the dashboard show for each
//! component, and what the engine's wait looks at.

use std::time::Duration;

use kube::Client;
use serde::Serialize;

use super::release::{self, RecordError, ReleaseRef};
use crate::api::{ComponentPhase, ComponentStatus};
use crate::cluster::workloads::{self, Readiness, WorkloadRef, WorkloadState};

/// The workloads of a release could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the workloads of {release}: {source}")]
pub struct ObserveError {
    release: String,
    #[source]
    source: kube::Error,
}

/// Why the workloads of a component as its status records them could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadsError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Observe(#[from] ObserveError),
}

/// `refs`, the workloads of `release`, judged now.
pub async fn observe(
    client: &Client,
    release: &ReleaseRef,
    refs: &[WorkloadRef],
) -> Result<Vec<WorkloadState>, ObserveError> {
    wait_ready(client, client, release, refs, Duration::ZERO).await
}

/// `refs`, the workloads of `release`, followed for up to `limit` until they are ready (see
/// [`workloads::wait_ready`]; watched through `watches`), then judged.
pub async fn wait_ready(
    client: &Client,
    watches: &Client,
    release: &ReleaseRef,
    refs: &[WorkloadRef],
    limit: Duration,
) -> Result<Vec<WorkloadState>, ObserveError> {
    workloads::wait_ready(client, watches, refs, limit)
        .await
        .map_err(|source| ObserveError {
            release: release.to_string(),
            source,
        })
}

/// The workloads of a component as its status records its release, judged now; none when it
/// has no applied release.
pub async fn component_workloads(
    client: &Client,
    status: &ComponentStatus,
) -> Result<Vec<WorkloadState>, WorkloadsError> {
    let Some((release, revision)) = status
        .release
        .as_ref()
        .and_then(|r| Some((ReleaseRef::from(r), r.revision?)))
    else {
        return Ok(Vec::new());
    };
    if status.phase == ComponentPhase::Removed {
        return Ok(Vec::new());
    }
    let refs = release::workloads(client, &release, revision).await?;
    Ok(observe(client, &release, &refs).await?)
}

/// A component as it stands now, shown alike by `smm status` and the dashboard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveComponent {
    /// The recorded phase, unless the workloads say otherwise: `Progressing` for a component
    /// recorded Available whose workloads are not ready (a rollout in progress is not
    /// Available), `Failed` when one of them cannot get ready without a change.
    pub phase: String,
    /// Ready/desired replicas, e.g. `1/1`; none without workloads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Why the workloads are not ready ([`workloads::overall`]'s words), or the recorded
    /// message; a recorded failure keeps its own (helm's error, what the wait gave up on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `recorded` with `states`, its workloads judged now.
pub fn live(recorded: &ComponentStatus, states: &[WorkloadState]) -> LiveComponent {
    let ready = (!states.is_empty()).then(|| workloads::summary(states));
    let recorded_phase = recorded.phase.to_string();
    let (phase, message) = match workloads::overall(states) {
        _ if recorded.phase == ComponentPhase::Failed => (recorded_phase, recorded.message.clone()),
        Readiness::Ready => (recorded_phase, recorded.message.clone()),
        Readiness::Failed(why) => ("Failed".to_owned(), Some(why)),
        Readiness::Progressing(why) if recorded.phase == ComponentPhase::Available => {
            ("Progressing".to_owned(), Some(why))
        }
        Readiness::Progressing(why) => (recorded_phase, Some(why)),
    };
    LiveComponent {
        phase,
        ready,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::workloads::{WorkloadKind, WorkloadRef};

    fn gateway(readiness: Readiness) -> WorkloadState {
        WorkloadState {
            workload: WorkloadRef {
                kind: WorkloadKind::Deployment,
                namespace: "istio-system".to_owned(),
                name: "gw".to_owned(),
            },
            ready: 1,
            desired: 1,
            readiness,
        }
    }

    /// A component recorded Available shows Progressing or Failed, with the workloads' reason,
    /// while they are not ready; a recorded failure keeps its message.
    #[test]
    fn live_says_what_the_workloads_say_unless_the_record_failed() {
        let available = ComponentStatus::with_phase(ComponentPhase::Available);
        let rolling = gateway(Readiness::Progressing("0/1 updated".to_owned()));
        let shown = live(&available, std::slice::from_ref(&rolling));
        assert_eq!(
            shown,
            LiveComponent {
                phase: "Progressing".to_owned(),
                ready: Some("1/1".to_owned()),
                message: Some("Deployment istio-system/gw: 0/1 updated".to_owned()),
            }
        );
        let past = gateway(Readiness::Failed("progress deadline exceeded".to_owned()));
        assert_eq!(live(&available, &[rolling.clone(), past]).phase, "Failed");
        assert_eq!(
            live(&available, &[gateway(Readiness::Ready)]).phase,
            "Available"
        );
        let installing = ComponentStatus::with_phase(ComponentPhase::Installing);
        assert_eq!(
            live(&installing, std::slice::from_ref(&rolling)).phase,
            "Installing"
        );
        let failed = ComponentStatus {
            message: Some("helm said no".to_owned()),
            ..ComponentStatus::with_phase(ComponentPhase::Failed)
        };
        assert_eq!(
            live(&failed, &[rolling]).message.as_deref(),
            Some("helm said no")
        );
        assert_eq!(live(&available, &[]).ready, None);
    }
}
