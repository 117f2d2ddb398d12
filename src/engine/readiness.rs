//! The engine's wait for a component's workloads: Available once they are all ready. The
//! workloads are judged as `smm status` judges them (`helm::workloads`), and worded by
//! `cluster::workloads::overall`, so the stored message, the Events and `smm status` say the
//! same.

use super::status::StatusWriter;
use super::step::{ComponentError, StepEnd};
use super::{Engine, WaitPolicy};
use crate::api::ComponentPhase;
use crate::cluster::workloads::{Readiness, overall};
use crate::desired::resolve::DesiredComponent;
use crate::helm::release::ObservedRelease;
use crate::helm::workloads;

/// How long a step that waits for its workloads follows them before the round moves on.
const FOLLOW_FOR: std::time::Duration = std::time::Duration::from_secs(2);

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
        let refs = release.record()?.workloads(&wanted.release);
        // Workloads are often ready a moment after helm returns: a waiting run follows them
        // (by watch) for a while before it gives the slot up, so what depends on this
        // component starts the moment it is ready, without waiting for the round's end.
        let follow_for = match self.settings.wait {
            WaitPolicy::Until(_) if !self.cancel.is_cancelled() => FOLLOW_FOR,
            _ => std::time::Duration::ZERO,
        };
        let following = workloads::wait_ready(
            &self.client,
            &self.watches,
            &wanted.release,
            &refs,
            follow_for,
        );
        let states = tokio::select! {
            states = following => states?,
            // Stopping at once: the wait is abandoned, the round ends with the run.
            () = self.cancel.cancelled() => workloads::observe(&self.client, &wanted.release, &refs).await?,
        };
        let waiting_for = match overall(&states) {
            Readiness::Failed(why) => return Err(ComponentError::WorkloadFailed(why)),
            Readiness::Progressing(why) => Some(why),
            Readiness::Ready => None,
        };
        let Some(message) = waiting_for else {
            writer.available(name).await?;
            tracing::info!(component = name, "available");
            return Ok(StepEnd::Done);
        };
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
