//! One component's step in a round, top to bottom: decide (with drift), check what must hold
//! before the release is touched ([`guards`](super::guards)), move it out of an old namespace,
//! then apply native objects and the chart, or uninstall ([`apply`](super::apply)), and wait
//! for its workloads ([`readiness`](super::readiness)).
//!
//! A step ends [`StepEnd::Done`] or [`StepEnd::Waiting`], or fails with a [`ComponentError`]:
//! anything that goes wrong inside a step (helm, objects, its status write) fails that
//! component only, is recorded as its Failed status, and the run goes on. Only what stops the
//! whole run is an [`EngineError`](super::EngineError).

use tracing::Instrument;

use super::Engine;
use super::Observed;
use super::decide::{Decision, Operation, Reason, decide};
use super::report::{ComponentReport, Outcome};
use super::status::{StatusError, StatusWriter};
use crate::api::ComponentStatus;
use crate::cluster::inventory::InventoryError;
use crate::cluster::objects::NativeError;
use crate::desired::resolve::DesiredComponent;
use crate::desired::resolved::Resolved;
use crate::helm::HelmError;
use crate::helm::chart::ChartError;
use crate::helm::release::{self, ObservedRelease, RecordError};
use crate::helm::workloads::ObserveError;

/// Why one component's step failed; its message is what `smm status` shows.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("{}", helm_message(.0))]
    Helm(#[source] HelmError),
    #[error("recovering the stuck release: {}", helm_message(.0))]
    Recover(#[source] HelmError),
    #[error("removing the release in its old namespace: {}", helm_message(.0))]
    RemoveMoved(#[source] HelmError),
    #[error(transparent)]
    Objects(#[from] NativeError),
    #[error(transparent)]
    Chart(#[from] ChartError),
    #[error(transparent)]
    Workloads(#[from] ObserveError),
    #[error("{0}")]
    WorkloadFailed(String),
    #[error(
        "release {release} belongs to {owner}, not to this ControlPlane: refusing to take it \
         over (--adopt takes it over knowingly)"
    )]
    NotOwned { release: String, owner: String },
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("cannot list helm releases: {0}")]
    Observe(#[source] kube::Error),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Revision(Box<super::revisions::RevisionError>),
    #[error(transparent)]
    Trust(Box<crate::cluster::trust::TrustError>),
}

impl From<super::revisions::RevisionError> for ComponentError {
    fn from(err: super::revisions::RevisionError) -> Self {
        Self::Revision(Box::new(err))
    }
}

impl From<crate::cluster::trust::TrustError> for ComponentError {
    fn from(err: crate::cluster::trust::TrustError) -> Self {
        Self::Trust(Box::new(err))
    }
}

/// helm's own error line when helm ran and failed; the whole error otherwise.
fn helm_message(err: &HelmError) -> String {
    match err {
        HelmError::Failed { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Whether the release at `previous` is an earlier revision of a revisioned component, kept
/// beside the new one until nothing uses it, rather than a release that moved to another
/// namespace and must go first. Whatever the strategy now: a switch back to `InPlace` must not
/// cut off the proxies of the revision it leaves either.
fn keeps_revision(
    wanted: &DesiredComponent<'_>,
    previous: &crate::helm::release::ReleaseRef,
) -> bool {
    wanted.component.revisioned && wanted.enabled && previous.namespace == wanted.release.namespace
}

/// How a step that did not fail ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum StepEnd {
    /// In its desired state, or as far as this run takes it (`--no-wait`).
    Done,
    /// Waiting for something (a dependency, CRDs, workloads), named here; another round looks
    /// again.
    Waiting(String),
}

impl Engine {
    /// What to do with one component: the pure decision, plus drift (an up-to-date release whose
    /// objects were deleted is upgraded) where the run looks for it. The dry-run plan and the
    /// reconcile both decide here, so the plan shows what a reconcile does.
    pub(super) fn decide_with_drift(
        &self,
        wanted: &DesiredComponent<'_>,
        recorded: Option<&ComponentStatus>,
        release: Option<&ObservedRelease>,
        observed: &Observed,
    ) -> Result<Decision, ComponentError> {
        let decision = decide(wanted.into(), recorded, release);
        let (Reason::UpToDate, Some(release)) = (&decision.reason, release) else {
            return Ok(decision);
        };
        if observed.unchecked.contains(wanted.name()) {
            return Ok(decision);
        }
        let inventory = &observed.inventory;
        let mut missing = Vec::new();
        for object in &release.record()?.objects {
            let namespace = object
                .namespace
                .as_deref()
                .unwrap_or(&wanted.release.namespace);
            if inventory
                .find(&object.kind(), namespace, &object.name)?
                .is_none()
            {
                missing.push(object.describe());
            }
        }
        if missing.is_empty() {
            return Ok(decision);
        }
        Ok(Decision {
            action: Operation::Upgrade,
            reason: Reason::Drift(missing),
        })
    }

    /// Runs one component's step and reports how it ended; a failure is recorded first.
    pub(super) async fn step(
        &self,
        wanted: &DesiredComponent<'_>,
        resolved: &Resolved<'_>,
        observed: &Observed,
        writer: &StatusWriter,
    ) -> ComponentReport {
        let name = wanted.name();
        let recorded = writer.component(name);
        let release = release::lookup(&observed.releases, &wanted.release);
        let decided = self.decide_with_drift(wanted, recorded.as_ref(), release, observed);
        let decision = match decided {
            Ok(decision) => decision,
            Err(err) => {
                let outcome = self.fail(writer, name, err.to_string()).await;
                return ComponentReport {
                    name: name.to_owned(),
                    action: Operation::Nothing,
                    reason: "error".to_owned(),
                    outcome,
                };
            }
        };
        let span = tracing::info_span!(
            "component",
            control_plane = writer.control_plane(),
            component = name,
            action = ?decision.action,
        );
        let act = self.act(
            wanted,
            &decision,
            recorded.as_ref(),
            resolved,
            observed,
            writer,
        );
        let outcome = match act.instrument(span).await {
            Ok(end) => {
                let outcome = match end {
                    StepEnd::Done => Outcome::Done,
                    StepEnd::Waiting(why) => Outcome::Waiting(why),
                };
                // Also for a component that only waited this round: progress that shows it
                // waiting learns that the wait is over.
                self.tell_finished(name, &outcome);
                outcome
            }
            Err(err) => self.fail(writer, name, err.to_string()).await,
        };
        ComponentReport {
            name: name.to_owned(),
            action: decision.action,
            reason: decision.reason.to_string(),
            outcome,
        }
    }

    /// The step once decided: nothing is touched while something it needs is not there yet.
    async fn act(
        &self,
        wanted: &DesiredComponent<'_>,
        decision: &Decision,
        recorded: Option<&ComponentStatus>,
        resolved: &Resolved<'_>,
        observed: &Observed,
        writer: &StatusWriter,
    ) -> Result<StepEnd, ComponentError> {
        let release = release::lookup(&observed.releases, &wanted.release);
        if let Some(why) = self.held_back(wanted, decision, recorded, release, writer)? {
            return Ok(StepEnd::Waiting(why));
        }
        if let Some(previous) = super::apply::moved_release(recorded, wanted, &observed.releases) {
            if keeps_revision(wanted, &previous) {
                self.keep_revision(&previous, observed, writer).await?;
            } else {
                self.remove_moved(wanted, resolved, &previous, writer)
                    .await?;
            }
        }
        self.refuse_cutting_off(wanted, decision.action, release, resolved, writer)
            .await?;
        if decision.action != Operation::Nothing {
            self.announce(wanted.name(), decision, writer);
        }
        let end = match decision.action {
            Operation::Uninstall => self.uninstall(wanted, writer).await,
            Operation::Nothing if !wanted.enabled => {
                self.finish_removal(wanted, recorded, &observed.inventory, writer)
                    .await
            }
            operation => {
                let inventory = &observed.inventory;
                self.apply(wanted, operation, release, inventory, resolved, writer)
                    .await
            }
        }?;
        if end == StepEnd::Done && wanted.component.revisioned {
            self.settle_revisions(wanted, resolved, writer).await?;
        }
        Ok(end)
    }

    /// A change begins: progress shows it, and the conditions say Reconciling (once a run),
    /// written with the change's first write.
    fn announce(&self, name: &str, decision: &Decision, writer: &StatusWriter) {
        let reason = decision.reason.to_string();
        if let Some(progress) = &self.progress {
            progress.started(name, decision.action, &reason);
            if decision.reason.is_change_outside_smm() {
                progress.changed_outside(name, &reason);
            }
        }
        writer.mark_reconciling(&format!("{name}: {reason}"));
    }

    /// Records that the component failed with `message` (as its Failed status, so the run's
    /// conditions say so) and tells progress; the outcome to report.
    pub(super) async fn fail(&self, writer: &StatusWriter, name: &str, message: String) -> Outcome {
        tracing::warn!(control_plane = writer.control_plane(), component = name, %message, "failed");
        if let Err(status_err) = writer.failed(name, message.clone()).await {
            tracing::warn!(component = name, %status_err, "cannot record the failure");
        }
        let outcome = Outcome::Failed(message);
        self.tell_finished(name, &outcome);
        outcome
    }

    fn tell_finished(&self, name: &str, outcome: &Outcome) {
        if let Some(progress) = &self.progress {
            progress.finished(name, outcome);
        }
    }
}
