//! One component's step in a round: decide (with drift), wait for dependencies, move it out of
//! an old namespace, then apply native objects and the chart, or uninstall. A failure of the
//! step is a [`ComponentError`], recorded as the component's Failed status; only errors that
//! stop the whole run (the status cannot be written, releases cannot be read) are
//! [`EngineError`]s.

use tracing::Instrument;

use super::decide::{Decision, Operation, Reason, decide};
use super::readiness::ReadinessError;
use super::report::{ComponentReport, Outcome};
use super::status::StatusWriter;
use super::{Engine, EngineError, Observed, WaitPolicy};
use crate::api::{ComponentPhase, ComponentStatus, ControlPlaneSpec};
use crate::cluster::inventory::Inventory;
use crate::cluster::objects::{self, NativeError};
use crate::desired::resolve::DesiredComponent;
use crate::helm::chart::ChartError;
use crate::helm::release::{
    self, OWNER_LABEL, ObservedRelease, ObservedReleases, ReleaseRef, ReleaseState,
};
use crate::helm::{Helm, HelmError};
use crate::mesh::catalog::ComponentContext;

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
    Readiness(#[from] ReadinessError),
    #[error("{0}")]
    WorkloadFailed(String),
    #[error(
        "release {release} belongs to {owner}, not to this ControlPlane: refusing to take it \
         over (--adopt takes it over knowingly)"
    )]
    NotOwned { release: String, owner: String },
}

/// helm's own error line when helm ran and failed; the whole error otherwise.
fn helm_message(err: &HelmError) -> String {
    match err {
        HelmError::Failed { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// A step either ends (done or waiting) or fails with a component error; `EngineError`s go out.
pub(super) type StepResult = Result<Result<Outcome, ComponentError>, EngineError>;

impl Engine {
    /// What to do with one component: the pure decision, plus drift (an up-to-date release whose
    /// objects were deleted is upgraded). The dry-run plan and the reconcile both decide here, so
    /// the plan shows what a reconcile does.
    pub(super) fn decide(
        &self,
        wanted: &DesiredComponent<'_>,
        recorded: Option<&ComponentStatus>,
        release: Option<&ObservedRelease>,
        inventory: &Inventory,
    ) -> Result<Decision, EngineError> {
        let decision = decide(wanted.into(), recorded, release);
        let (Reason::UpToDate, Some(release)) = (&decision.reason, release) else {
            return Ok(decision);
        };
        let record = release
            .record(&wanted.release)
            .map_err(EngineError::Record)?;
        let mut missing = Vec::new();
        for object in &record.objects {
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

    /// Runs one component's step and records how it ended. An error that stops this step
    /// (its status cannot be written, helm's records cannot be read) fails this component
    /// only: the others go on and the run's conditions are still made current.
    pub(super) async fn step(
        &self,
        wanted: &DesiredComponent<'_>,
        spec: &ControlPlaneSpec,
        observed: &Observed,
        writer: &StatusWriter,
    ) -> ComponentReport {
        match self.try_step(wanted, spec, observed, writer).await {
            Ok(report) => report,
            Err(err) => {
                tracing::warn!(component = wanted.name(), %err, "step failed");
                // The conditions the run ends with are read from the status: it must say so.
                if let Err(status_err) = writer.failed(wanted.name(), err.to_string()).await {
                    tracing::warn!(component = wanted.name(), %status_err, "cannot record the failure");
                }
                let outcome = Outcome::Failed(err.to_string());
                if let Some(progress) = &self.progress {
                    progress.finished(wanted.name(), &outcome);
                }
                ComponentReport {
                    name: wanted.name().to_owned(),
                    action: Operation::Nothing,
                    reason: "error".to_owned(),
                    outcome,
                }
            }
        }
    }

    async fn try_step(
        &self,
        wanted: &DesiredComponent<'_>,
        spec: &ControlPlaneSpec,
        observed: &Observed,
        writer: &StatusWriter,
    ) -> Result<ComponentReport, EngineError> {
        let name = wanted.name();
        let recorded = writer.component(name);
        let release = release::lookup(&observed.releases, &wanted.release);
        let inventory = &observed.inventory;
        let decision = self.decide(wanted, recorded.as_ref(), release, inventory)?;
        let span = tracing::info_span!(
            "component",
            control_plane = writer.control_plane(),
            component = name,
            action = ?decision.action,
        );
        let outcome: StepResult = async {
            // Without waiting, what a component depends on need only be applied.
            let ready_enough = |dependency: &str| match self.settings.wait {
                WaitPolicy::No => writer.is_applied(dependency),
                _ => writer.is_available(dependency),
            };
            let unavailable_dependency = wanted
                .component
                .depends_on
                .iter()
                .find(|dependency| !ready_enough(dependency));
            if let (true, Some(dependency)) = (wanted.enabled, unavailable_dependency) {
                return Ok(Ok(Outcome::Waiting(format!(
                    "waiting for {dependency} to be available"
                ))));
            }
            if let Some(release) = release
                && let Err(err) = self.check_owner(wanted, release, recorded.as_ref(), writer)
            {
                return Ok(Err(err));
            }
            let resolves_pending =
                matches!(decision.action, Operation::Recover | Operation::Uninstall);
            if let Some(release) = release.filter(|r| resolves_pending && r.state.is_pending())
                && let Some(wait) = self.too_fresh_to_recover(wanted, release)?
            {
                return Ok(Ok(Outcome::Waiting(wait)));
            }
            if let Some(previous) = moved_release(recorded.as_ref(), wanted, &observed.releases) {
                match self.remove_moved(wanted, spec, &previous, writer).await? {
                    Ok(()) => {}
                    failed => return Ok(failed.map(|()| Outcome::Done)),
                }
            }
            let progress = self
                .progress
                .as_ref()
                .filter(|_| decision.action != Operation::Nothing);
            if let Some(progress) = progress {
                progress.started(name, decision.action, &decision.reason.to_string());
                if decision.reason.is_change_outside_smm() {
                    progress.changed_outside(name, &decision.reason.to_string());
                }
            }
            if decision.action != Operation::Nothing {
                writer
                    .mark_reconciling(&format!("{name}: {}", decision.reason))
                    .await?;
            }
            let outcome = match decision.action {
                Operation::Uninstall => self.uninstall(wanted, writer).await?,
                Operation::Nothing if !wanted.enabled => {
                    self.finish_removal(wanted, recorded.as_ref(), inventory, writer)
                        .await?
                }
                operation => {
                    self.apply(wanted, operation, release, inventory, writer)
                        .await?
                }
            };
            // Also for a component that only waited this round: progress that shows it
            // waiting learns that the wait is over.
            if let (Some(progress), Ok(outcome)) = (&self.progress, &outcome) {
                progress.finished(name, outcome);
            }
            Ok(outcome)
        }
        .instrument(span)
        .await;
        let outcome = match outcome? {
            Ok(outcome) => outcome,
            Err(err) => {
                let message = err.to_string();
                tracing::warn!(control_plane = writer.control_plane(), component = name, %message, "failed");
                writer.failed(name, message.clone()).await?;
                if let Some(progress) = &self.progress {
                    progress.finished(name, &Outcome::Failed(message.clone()));
                }
                Outcome::Failed(message)
            }
        };
        Ok(ComponentReport {
            name: name.to_owned(),
            action: decision.action,
            reason: decision.reason.to_string(),
            outcome,
        })
    }

    /// Native objects first (those not as they should be), then the chart; `Nothing` still
    /// looks at native objects, which puts back a deleted cluster role without spawning helm.
    async fn apply(
        &self,
        wanted: &DesiredComponent<'_>,
        operation: Operation,
        release: Option<&ObservedRelease>,
        inventory: &Inventory,
        writer: &StatusWriter,
    ) -> StepResult {
        let name = wanted.name();
        let native = match objects::apply_changed(&self.client, &wanted.native, inventory).await {
            Ok(native) => native,
            Err(err) => return Ok(Err(err.into())),
        };
        let phase = match operation {
            Operation::Install => ComponentPhase::Installing,
            _ => ComponentPhase::Upgrading,
        };
        if !native.not_ready.is_empty() {
            let message = format!(
                "waiting for {} to be established",
                native.not_ready.join(", ")
            );
            writer
                .progressing(name, phase, Some(message.clone()))
                .await?;
            return Ok(Ok(Outcome::Waiting(message)));
        }
        if operation == Operation::Nothing {
            // Up to date; still waiting for its workloads when last seen.
            let waiting = writer
                .component(name)
                .map(|s| s.phase)
                .filter(|phase| *phase != ComponentPhase::Available);
            return match (waiting, release) {
                (Some(phase), Some(release)) => {
                    self.await_workloads(wanted, phase, release, writer).await
                }
                _ => {
                    writer.available(name).await?;
                    Ok(Ok(Outcome::Done))
                }
            };
        }
        writer.attempting(wanted, phase).await?;
        let release_state = release.map(|r| &r.state);
        let owner = writer.control_plane_uid();
        if let Err(err) = run_helm(&self.helm, wanted, operation, release_state, owner).await {
            return Ok(Err(err));
        }
        let applied = release::observe(
            &self.client,
            &[wanted.component.release_name],
            release::Freshness::Latest,
        )
        .await
        .map_err(EngineError::Observe)?;
        let Some(applied) = release::lookup(&applied, &wanted.release) else {
            // helm said it succeeded; its record not being there is someone else's doing.
            writer.applied(wanted, phase, None).await?;
            return Ok(Ok(Outcome::Waiting(
                "waiting for helm's release record".to_owned(),
            )));
        };
        let revision = applied.revision;
        writer.applied(wanted, phase, Some(revision)).await?;
        tracing::info!(component = name, ?operation, revision, "applied");
        self.await_workloads(wanted, phase, applied, writer).await
    }

    /// The component's namespace changed: its release (and native objects) in the old namespace
    /// go before anything happens in the new one, so two copies never run side by side.
    async fn remove_moved(
        &self,
        wanted: &DesiredComponent<'_>,
        spec: &ControlPlaneSpec,
        previous: &ReleaseRef,
        writer: &StatusWriter,
    ) -> Result<Result<(), ComponentError>, EngineError> {
        let name = wanted.name();
        let reason = format!("moved from namespace {}", previous.namespace);
        if let Some(progress) = &self.progress {
            progress.started(name, Operation::Uninstall, &reason);
        }
        writer
            .mark_reconciling(&format!("{name}: {reason}"))
            .await?;
        if let Err(err) = self.helm.uninstall(previous, self.waits()).await {
            return Ok(Err(ComponentError::RemoveMoved(err)));
        }
        let placements = self.catalog.placements(spec);
        let old_natives = (wanted.component.native_objects)(&ComponentContext {
            spec,
            namespace: &previous.namespace,
            enabled: false,
            placements: &placements,
        });
        if let Err(err) = objects::apply(&self.client, &old_natives).await {
            return Ok(Err(err.into()));
        }
        if let Some(progress) = &self.progress {
            progress.finished(name, &Outcome::Done);
        }
        tracing::info!(component = name, from = %previous, to = %wanted.release, "moved");
        Ok(Ok(()))
    }

    async fn uninstall(&self, wanted: &DesiredComponent<'_>, writer: &StatusWriter) -> StepResult {
        let name = wanted.name();
        writer
            .progressing(name, ComponentPhase::Uninstalling, None)
            .await?;
        if let Err(err) = self.helm.uninstall(&wanted.release, self.waits()).await {
            return Ok(Err(ComponentError::Helm(err)));
        }
        if let Err(err) = objects::apply(&self.client, &wanted.native).await {
            return Ok(Err(err.into()));
        }
        writer.removed(name).await?;
        tracing::info!(component = name, "uninstalled");
        Ok(Ok(Outcome::Done))
    }

    /// A disabled component with no release: native objects may outlive a release (a failed
    /// earlier removal), so finish the job.
    async fn finish_removal(
        &self,
        wanted: &DesiredComponent<'_>,
        recorded: Option<&ComponentStatus>,
        inventory: &Inventory,
        writer: &StatusWriter,
    ) -> StepResult {
        if let Err(err) = objects::apply_changed(&self.client, &wanted.native, inventory).await {
            return Ok(Err(err.into()));
        }
        if recorded.is_some_and(|s| s.phase != ComponentPhase::Removed) {
            writer.removed(wanted.name()).await?;
        }
        Ok(Ok(Outcome::Done))
    }
}

impl Engine {
    /// Whether helm should wait for what it removes to be gone.
    fn waits(&self) -> bool {
        self.settings.wait != WaitPolicy::No
    }
}

/// Runs helm for an install, upgrade or recovery.
async fn run_helm(
    helm: &Helm,
    wanted: &DesiredComponent<'_>,
    operation: Operation,
    release_state: Option<&ReleaseState>,
    owner: &str,
) -> Result<(), ComponentError> {
    if operation == Operation::Recover {
        // A pending install has nothing to go back to, and an interrupted uninstall is finished
        // rather than undone (a rollback fails when no earlier revision is left); anything else
        // returns to the last good revision.
        match release_state {
            Some(ReleaseState::PendingInstall | ReleaseState::Uninstalling) => {
                helm.uninstall(&wanted.release, false).await
            }
            _ => helm.rollback(&wanted.release).await,
        }
        .map_err(ComponentError::Recover)?;
    }
    let prepared = wanted.chart.prepare(&wanted.values)?;
    // The record says who owns the release and what it holds (label values are short: the
    // digests' first 32 hex digits).
    let short = |digest: &str| -> String {
        digest
            .trim_start_matches("sha256:")
            .chars()
            .take(32)
            .collect()
    };
    let (chart, values) = (short(&wanted.chart_digest), short(&wanted.values_digest));
    let labels = [
        (OWNER_LABEL, owner),
        ("smm.dev/chart-digest", chart.as_str()),
        ("smm.dev/values-digest", values.as_str()),
    ];
    helm.upgrade_install(
        &wanted.release,
        prepared.chart_path(),
        prepared.values_file(),
        &labels,
    )
    .await
    .map_err(ComponentError::Helm)?;
    Ok(())
}

/// Where the component's release was installed, when that is no longer where it should be and a
/// release is still there.
fn moved_release(
    recorded: Option<&ComponentStatus>,
    wanted: &DesiredComponent<'_>,
    observed: &ObservedReleases,
) -> Option<ReleaseRef> {
    let previous = recorded?.release.as_ref()?;
    let previous = ReleaseRef {
        name: previous.name.clone(),
        namespace: previous.namespace.clone(),
    };
    (previous != wanted.release && release::lookup(observed, &previous).is_some())
        .then_some(previous)
}
