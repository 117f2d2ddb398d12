//! Whether components are ready: their release's workloads judged live (and the engine's wait
//! for them), and the rule that says when a whole ControlPlane is Ready. The engine's wait and `smm status` both read it here, so
//! `smm status` says what the engine would.

use kube::{Client, ResourceExt};

use super::status::StatusWriter;
use super::step::{ComponentError, StepEnd};
use super::{Engine, WaitPolicy};
use crate::api::{ComponentPhase, ComponentStatus, ControlPlane, condition};
use crate::cluster::workloads::{self, Readiness, WorkloadRef, WorkloadState};
use crate::desired::resolve::DesiredComponent;
use crate::helm::release::{self, ObservedRelease, RecordError, ReleaseRef};

#[derive(Debug, thiserror::Error)]
pub enum ReadinessError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("cannot read the workloads of {release}: {source}")]
    Workloads {
        release: String,
        #[source]
        source: kube::Error,
    },
}

/// How long a step that waits for its workloads keeps looking before the round moves on.
const LOOK_AGAIN_FOR: std::time::Duration = std::time::Duration::from_secs(2);
const LOOK_AGAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Engine {
    /// Available once every workload of the release is ready; until then Progressing, with
    /// what it waits for as the message. A workload that cannot get ready without a change (a
    /// failed Job) fails the component.
    pub(super) async fn await_workloads(
        &self,
        wanted: &DesiredComponent<'_>,
        phase: ComponentPhase,
        release: &ObservedRelease,
        writer: &StatusWriter,
    ) -> Result<StepEnd, ComponentError> {
        let name = wanted.name();
        let refs = release
            .record(&wanted.release)
            .map_err(ReadinessError::Record)?
            .workloads(&wanted.release);
        // Workloads are often ready a moment after helm returns: a waiting run looks again a
        // few times before it gives the slot up, so what depends on this component starts
        // without waiting for the round's end.
        let looked_since = tokio::time::Instant::now();
        let waiting_for = loop {
            let states = observe_workloads(&self.client, &wanted.release, &refs).await?;
            if let Some(failed) = states
                .iter()
                .find(|s| matches!(s.readiness, Readiness::Failed(_)))
            {
                return Err(ComponentError::WorkloadFailed(failed.describe()));
            }
            let waiting_for: Vec<String> = states
                .iter()
                .filter(|s| s.readiness != Readiness::Ready)
                .map(WorkloadState::describe)
                .collect();
            let look_again = matches!(self.settings.wait, WaitPolicy::Until(_))
                && looked_since.elapsed() < LOOK_AGAIN_FOR
                && !self.cancel.is_cancelled();
            if waiting_for.is_empty() || !look_again {
                break waiting_for;
            }
            tokio::time::sleep(LOOK_AGAIN_EVERY).await;
        };
        if waiting_for.is_empty() {
            writer.available(name).await?;
            tracing::info!(component = name, "available");
            return Ok(StepEnd::Done);
        }
        let message = waiting_for.join("; ");
        writer
            .progressing(name, phase, Some(message.clone()))
            .await?;
        if let Some(progress) = &self.progress {
            progress.waiting(name, &message);
        }
        Ok(match self.settings.wait {
            // Applied is all that was asked; the status says what is still on its way.
            WaitPolicy::No => StepEnd::Done,
            _ => StepEnd::Waiting(message),
        })
    }
}

/// The workloads of `release` at `revision`, judged now.
pub async fn release_workloads(
    client: &Client,
    release: &ReleaseRef,
    revision: i64,
) -> Result<Vec<WorkloadState>, ReadinessError> {
    let refs = release::workloads(client, release, revision).await?;
    observe_workloads(client, release, &refs).await
}

/// `refs`, the workloads of `release`, judged now.
async fn observe_workloads(
    client: &Client,
    release: &ReleaseRef,
    refs: &[WorkloadRef],
) -> Result<Vec<WorkloadState>, ReadinessError> {
    workloads::observe(client, refs)
        .await
        .map_err(|source| ReadinessError::Workloads {
            release: release.to_string(),
            source,
        })
}

/// The workloads of a component as its status records its release; none when it has no
/// applied release.
pub async fn component_workloads(
    client: &Client,
    status: &ComponentStatus,
) -> Result<Vec<WorkloadState>, ReadinessError> {
    let Some((release, revision)) = status.release.as_ref().and_then(|r| {
        let reference = ReleaseRef {
            name: r.name.clone(),
            namespace: r.namespace.clone(),
        };
        Some((reference, r.revision?))
    }) else {
        return Ok(Vec::new());
    };
    if status.phase == ComponentPhase::Removed {
        return Ok(Vec::new());
    }
    release_workloads(client, &release, revision).await
}

/// Ready and desired replicas summed over `states`, as `1/1`.
pub fn summary(states: &[WorkloadState]) -> String {
    let (ready, desired) = states
        .iter()
        .fold((0, 0), |(r, d), s| (r + s.ready, d + s.desired));
    format!("{ready}/{desired}")
}

/// Whether every workload is ready.
pub fn all_ready(states: &[WorkloadState]) -> bool {
    states.iter().all(|s| s.readiness == Readiness::Ready)
}

/// Whether the ControlPlane is Ready now, given each component's live workloads: its latest
/// spec was reconciled, nothing failed or stalled, every component is applied (Available,
/// or Installing/Upgrading with its chart and values recorded, as `--no-wait` leaves it) or
/// removed, and every workload is ready. A reconcile that waited records the same answer
/// as the `Ready` condition; after `--no-wait` only this live look can say it.
pub fn ready_now(control_plane: &ControlPlane, live: &[(String, Vec<WorkloadState>)]) -> bool {
    let Some(status) = &control_plane.status else {
        return false;
    };
    let current = status.observed_generation.is_some()
        && status.observed_generation == control_plane.metadata.generation;
    let stalled = status
        .conditions
        .iter()
        .any(|c| c.type_ == condition::STALLED && c.status == "True");
    let applied = status
        .components
        .values()
        .all(|c| c.phase == ComponentPhase::Removed || c.is_applied());
    let workloads_ready = live.iter().all(|(_, states)| all_ready(states));
    tracing::debug!(control_plane = %control_plane.name_any(), current, stalled, applied, workloads_ready, "readiness");
    current && !stalled && applied && workloads_ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ControlPlaneSpec, ControlPlaneStatus};
    use crate::cluster::workloads::{WorkloadKind, WorkloadRef};

    fn control_plane(phase: ComponentPhase, recorded: bool) -> ControlPlane {
        let mut cp = ControlPlane::new("smm", ControlPlaneSpec::default());
        cp.metadata.generation = Some(2);
        let component = ComponentStatus {
            values_digest: recorded.then(|| "sha256:v".to_owned()),
            ..ComponentStatus::with_phase(phase)
        };
        cp.status = Some(ControlPlaneStatus {
            observed_generation: Some(2),
            components: [("istiod".to_owned(), component)].into(),
            ..ControlPlaneStatus::default()
        });
        cp
    }

    fn istiod(readiness: Readiness) -> Vec<(String, Vec<WorkloadState>)> {
        let state = WorkloadState {
            workload: WorkloadRef {
                kind: WorkloadKind::Deployment,
                namespace: "istio-system".to_owned(),
                name: "istiod".to_owned(),
            },
            ready: i32::from(readiness == Readiness::Ready),
            desired: 1,
            readiness,
        };
        vec![("istiod".to_owned(), vec![state])]
    }

    #[test]
    fn ready_means_applied_current_and_every_workload_ready() {
        let waiting = Readiness::Progressing("0/1 available".to_owned());
        let installed = control_plane(ComponentPhase::Installing, true);
        assert!(ready_now(&installed, &istiod(Readiness::Ready)));
        assert!(!ready_now(&installed, &istiod(waiting.clone())));
        assert!(!ready_now(
            &control_plane(ComponentPhase::Installing, false),
            &istiod(Readiness::Ready)
        ));
        assert!(!ready_now(
            &control_plane(ComponentPhase::Failed, true),
            &istiod(Readiness::Ready)
        ));
        let mut newer_spec = control_plane(ComponentPhase::Available, true);
        newer_spec.metadata.generation = Some(3);
        assert!(!ready_now(&newer_spec, &istiod(Readiness::Ready)));
        assert_eq!(summary(&istiod(waiting)[0].1), "0/1");
    }
}
