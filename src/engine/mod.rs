//! The reconcile engine: one flow that the imperative CLI, `smm reconcile` and the operator all
//! call. It knows nothing about which of them called it.
//!
//! A reconcile reads the ControlPlane, resolves every component's desired state (rejecting a bad
//! spec before touching anything), then runs rounds: uninstalls in reverse dependency order,
//! installs and upgrades in dependency order, each component's status written as soon as it
//! changes. A component that must wait (CRDs not yet established, a dependency not yet
//! available) asks for another round; rounds stop when none asks or the limit is reached.

pub mod desired;
pub mod plan;
mod status;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Client};

use crate::api::{
    ChartRef, ComponentPhase, ComponentStatus, ControlPlane, ControlPlaneSpec, ControlPlaneStatus,
    ReleaseStatus,
};
use crate::catalog::Catalog;
use crate::catalog::ComponentContext;
use crate::helm::{Helm, HelmError, ReleaseRef};
use crate::native;
use crate::release::{self, ObservedRelease, ObservedReleases, ReleaseState};
use crate::values::{ValueChange, diff};
use desired::{DesiredComponent, SpecError, resolve};
use plan::{Action, Decision, Reason, decide};
use status::StatusWriter;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("ControlPlane {name} not found")]
    NotFound { name: String },
    #[error("cannot read ControlPlane {name}: {source}")]
    Get {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("ControlPlane {name} rejected, nothing was changed: {source}")]
    Spec {
        name: String,
        #[source]
        source: SpecError,
    },
    #[error("cannot list helm releases: {0}")]
    Observe(#[source] kube::Error),
    #[error(transparent)]
    Record(release::RecordError),
    #[error("cannot write the status of ControlPlane {name}: {source}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Whether a run follows the spec or removes everything (the ControlPlane is being deleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intent {
    AsSpecified,
    RemoveEverything,
}

/// Which components a reconcile may act on. The imperative CLI narrows it to the components a
/// command named (plus their dependencies); everything else is left as it is.
#[derive(Clone, Debug, Default)]
pub enum Scope {
    #[default]
    All,
    Only(BTreeSet<String>),
}

impl Scope {
    /// The components of `desired` this scope covers, in their order.
    fn select<'a, 'c>(&self, desired: &'a [DesiredComponent<'c>]) -> Vec<&'a DesiredComponent<'c>> {
        desired.iter().filter(|d| self.includes(d.name())).collect()
    }

    pub fn includes(&self, name: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(names) => names.contains(name),
        }
    }
}

#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Rounds before the engine gives up and reports `Stalled`.
    pub max_rounds: u32,
    /// Pause between rounds, so waiting components get a chance to become ready.
    pub round_delay: Duration,
    /// How many independent components are reconciled at once.
    pub parallelism: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            max_rounds: 30,
            round_delay: Duration::from_secs(2),
            parallelism: 4,
        }
    }
}

/// What happened to one component in a reconcile.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentReport {
    pub name: String,
    pub action: Action,
    pub reason: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "result", content = "message")]
pub enum Outcome {
    Done,
    Waiting(String),
    Failed(String),
}

/// One component's entry in a dry-run plan.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedComponent {
    pub name: String,
    pub action: Action,
    pub reason: String,
    /// For upgrades: how the merged values differ from those of the installed release.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values_diff: Vec<ValueChange>,
}

#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    pub control_plane: String,
    pub rounds: u32,
    pub ready: bool,
    pub components: Vec<ComponentReport>,
}

/// Told what the engine does as it does it, so a CLI can show progress; the operator logs.
pub trait Progress: Send + Sync {
    fn started(&self, component: &str, action: Action, reason: &str);
    fn finished(&self, component: &str, outcome: &Outcome);
}

pub struct Engine {
    client: Client,
    helm: Helm,
    catalog: Catalog,
    settings: EngineSettings,
    progress: Option<std::sync::Arc<dyn Progress>>,
}

impl Engine {
    pub fn new(client: Client, helm: Helm, catalog: Catalog, settings: EngineSettings) -> Self {
        Self {
            client,
            helm,
            catalog,
            settings,
            progress: None,
        }
    }

    pub fn with_progress(mut self, progress: std::sync::Arc<dyn Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// What a reconcile of `spec` would do, given the recorded `status` and the releases in the
    /// cluster, without changing anything: no helm process is spawned.
    pub async fn plan(
        &self,
        name: &str,
        spec: &ControlPlaneSpec,
        status: Option<&ControlPlaneStatus>,
        scope: &Scope,
    ) -> Result<Vec<PlannedComponent>, EngineError> {
        let desired = self.resolve(name, spec)?;
        let in_scope = scope.select(&desired);
        let observed = self.observe(&in_scope).await?;
        let mut planned = Vec::new();
        for wanted in in_scope {
            let recorded = status.and_then(|s| s.components.get(wanted.name()));
            let release = release::lookup(&observed, &wanted.release);
            let decision = self.decide(wanted, recorded, release).await?;
            let values_diff = match (decision.action, release) {
                (Action::Upgrade | Action::Recover, Some(release)) => {
                    let applied =
                        release::applied_values(&self.client, &wanted.release, release.revision)
                            .await
                            .map_err(EngineError::Record)?;
                    diff(&applied, &wanted.values)
                }
                _ => Vec::new(),
            };
            planned.push(PlannedComponent {
                name: wanted.name().to_owned(),
                action: decision.action,
                reason: decision.reason.to_string(),
                values_diff,
            });
        }
        Ok(planned)
    }

    /// Brings the components in `scope` to the state the named ControlPlane asks for.
    pub async fn reconcile(
        &self,
        name: &str,
        scope: &Scope,
    ) -> Result<ReconcileReport, EngineError> {
        self.run(name, scope, Intent::AsSpecified).await
    }

    /// Uninstalls every component, dependents first, as deleting a ControlPlane asks. The CRDs
    /// stay (see the base component).
    pub async fn remove_all(&self, name: &str) -> Result<ReconcileReport, EngineError> {
        self.run(name, &Scope::All, Intent::RemoveEverything).await
    }

    async fn run(
        &self,
        name: &str,
        scope: &Scope,
        intent: Intent,
    ) -> Result<ReconcileReport, EngineError> {
        let api: Api<ControlPlane> = Api::all(self.client.clone());
        let control_plane = match api.get_opt(name).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Err(EngineError::NotFound {
                    name: name.to_owned(),
                });
            }
            Err(source) => {
                return Err(EngineError::Get {
                    name: name.to_owned(),
                    source,
                });
            }
        };
        let mut spec = control_plane.spec.clone();
        if intent == Intent::RemoveEverything {
            // Removal must work even for a spec that could not be applied: values and unknown
            // components do not matter once everything goes.
            spec.components
                .retain(|component, _| self.catalog.get(component).is_some());
            for component in self.catalog.names() {
                let entry = spec.components.entry(component.to_owned()).or_default();
                entry.enabled = Some(false);
                entry.values_override = None;
            }
        }
        let desired = self.resolve(name, &spec)?;
        let writer = StatusWriter::new(api, &control_plane);
        let in_scope = scope.select(&desired);

        let mut reports: Vec<ComponentReport> = Vec::new();
        let mut rounds = 0;
        let mut waiting = true;
        while waiting && rounds < self.settings.max_rounds {
            if rounds > 0 {
                tokio::time::sleep(self.settings.round_delay).await;
            }
            rounds += 1;
            let observed = self.observe(&in_scope).await?;
            waiting = false;
            // Dependents go before what they depend on when removing, after it when installing;
            // components of one wave do not depend on each other and run side by side.
            let removals: Vec<_> = in_scope
                .iter()
                .rev()
                .filter(|d| !d.enabled)
                .copied()
                .collect();
            let installs: Vec<_> = in_scope.iter().filter(|d| d.enabled).copied().collect();
            for wave in waves(&removals, true)
                .into_iter()
                .chain(waves(&installs, false))
            {
                // Futures made up front: a mapping closure here trips the compiler's Send
                // analysis of the operator's reconcile future.
                let pending: Vec<_> = wave
                    .into_iter()
                    .map(|wanted| self.reconcile_component(wanted, &spec, &observed, &writer))
                    .collect();
                let results: Vec<_> = futures::stream::iter(pending)
                    .buffer_unordered(self.settings.parallelism.max(1))
                    .collect()
                    .await;
                for report in results {
                    let report = report?;
                    waiting |= matches!(report.outcome, Outcome::Waiting(_));
                    record(&mut reports, report);
                }
            }
        }
        // Side by side work finishes in any order; the report follows the catalog.
        reports.sort_by_key(|report| {
            in_scope
                .iter()
                .position(|d| d.name() == report.name)
                .unwrap_or(usize::MAX)
        });
        let ready = writer.finish(&desired, waiting).await?;
        Ok(ReconcileReport {
            control_plane: name.to_owned(),
            rounds,
            ready,
            components: reports,
        })
    }

    /// Every component's desired state; a bad spec is an error naming the ControlPlane.
    fn resolve(
        &self,
        name: &str,
        spec: &ControlPlaneSpec,
    ) -> Result<Vec<DesiredComponent<'_>>, EngineError> {
        resolve(&self.catalog, spec).map_err(|source| EngineError::Spec {
            name: name.to_owned(),
            source,
        })
    }

    /// The releases of `components` as helm recorded them, in one list call.
    async fn observe(
        &self,
        components: &[&DesiredComponent<'_>],
    ) -> Result<ObservedReleases, EngineError> {
        let names: Vec<&str> = components
            .iter()
            .map(|d| d.component.release_name)
            .collect();
        release::observe(&self.client, &names)
            .await
            .map_err(EngineError::Observe)
    }

    /// What to do with one component: the pure decision, plus drift (an up-to-date release whose
    /// objects were deleted is upgraded). The dry-run plan and the reconcile both decide here, so
    /// the plan shows what a reconcile does.
    async fn decide(
        &self,
        wanted: &DesiredComponent<'_>,
        recorded: Option<&ComponentStatus>,
        release: Option<&ObservedRelease>,
    ) -> Result<Decision, EngineError> {
        let decision = decide(wanted.into(), recorded, release);
        let (Reason::UpToDate, Some(release)) = (&decision.reason, release) else {
            return Ok(decision);
        };
        let missing = release::missing_objects(&self.client, &wanted.release, release.revision)
            .await
            .map_err(EngineError::Record)?;
        if missing.is_empty() {
            return Ok(decision);
        }
        Ok(Decision {
            action: Action::Upgrade,
            reason: Reason::Drift(missing),
        })
    }

    async fn reconcile_component(
        &self,
        wanted: &DesiredComponent<'_>,
        spec: &ControlPlaneSpec,
        observed: &ObservedReleases,
        writer: &StatusWriter,
    ) -> Result<ComponentReport, EngineError> {
        let name = wanted.name();
        let recorded = writer.component(name);
        let release = release::lookup(observed, &wanted.release);
        let decision = self.decide(wanted, recorded.as_ref(), release).await?;
        let report = |decision: &Decision, outcome| ComponentReport {
            name: name.to_owned(),
            action: decision.action,
            reason: decision.reason.to_string(),
            outcome,
        };

        let unavailable_dependency = wanted
            .component
            .depends_on
            .iter()
            .find(|dependency| !writer.is_available(dependency));
        if let (true, Some(dependency)) = (wanted.enabled, unavailable_dependency) {
            let message = format!("waiting for {dependency} to be available");
            return Ok(report(&decision, Outcome::Waiting(message)));
        }
        if let Some(previous) = moved_release(recorded.as_ref(), wanted, observed)
            && let Err(message) = self.remove_moved(wanted, spec, &previous, writer).await?
        {
            let outcome = self.fail(wanted, writer, recorded, message).await?;
            return Ok(report(&decision, outcome));
        }
        let progress = self
            .progress
            .as_ref()
            .filter(|_| decision.action != Action::Nothing);
        if let Some(progress) = progress {
            progress.started(name, decision.action, &decision.reason.to_string());
        }
        if decision.action != Action::Nothing {
            writer
                .mark_reconciling(&format!("{name}: {}", decision.reason))
                .await?;
        }

        let outcome = match decision.action {
            Action::Uninstall => self.uninstall(wanted, writer).await?,
            Action::Nothing if !wanted.enabled => {
                // Native objects may outlive a release (a failed earlier removal): finish the job.
                match native::reconcile(&self.client, &wanted.native).await {
                    Ok(_) => {
                        if recorded
                            .as_ref()
                            .is_some_and(|s| s.phase != ComponentPhase::Removed)
                        {
                            writer.set_component(name, removed_status()).await?;
                        }
                        Outcome::Done
                    }
                    Err(err) => self.fail(wanted, writer, recorded, err.to_string()).await?,
                }
            }
            action => {
                self.apply(wanted, action, release.map(|r| &r.state), writer)
                    .await?
            }
        };
        if let Some(progress) = progress {
            progress.finished(name, &outcome);
        }
        Ok(report(&decision, outcome))
    }

    /// Native objects first, then the chart; Nothing still re-applies native objects, which
    /// puts back a deleted cluster role without spawning helm.
    async fn apply(
        &self,
        wanted: &DesiredComponent<'_>,
        action: Action,
        release_state: Option<&ReleaseState>,
        writer: &StatusWriter,
    ) -> Result<Outcome, EngineError> {
        let name = wanted.name();
        let recorded = writer.component(name);
        let native_outcome = match native::reconcile(&self.client, &wanted.native).await {
            Ok(outcome) => outcome,
            Err(err) => return self.fail(wanted, writer, recorded, err.to_string()).await,
        };
        let progressing = match action {
            Action::Install => ComponentPhase::Installing,
            _ => ComponentPhase::Upgrading,
        };
        if !native_outcome.not_ready.is_empty() {
            let message = format!(
                "waiting for {} to be established",
                native_outcome.not_ready.join(", ")
            );
            let mut status = recorded.unwrap_or_else(|| empty_status(progressing));
            status.phase = progressing;
            status.message = Some(message.clone());
            writer.set_component(name, status).await?;
            return Ok(Outcome::Waiting(message));
        }
        if action == Action::Nothing {
            if let Some(mut status) = recorded.filter(|s| s.phase != ComponentPhase::Available) {
                // Up to date, but last seen waiting: the wait is over.
                status.phase = ComponentPhase::Available;
                status.message = None;
                writer.set_component(name, status).await?;
            }
            return Ok(Outcome::Done);
        }

        let mut status = recorded
            .clone()
            .unwrap_or_else(|| empty_status(progressing));
        status.phase = progressing;
        status.message = None;
        writer.set_component(name, status).await?;

        match self.run_helm(wanted, action, release_state).await {
            Ok(()) => {
                let revision = release::observe(&self.client, &[wanted.component.release_name])
                    .await
                    .map_err(EngineError::Observe)?;
                let available = ComponentStatus {
                    phase: ComponentPhase::Available,
                    chart: Some(ChartRef {
                        name: wanted.chart_metadata.name.clone(),
                        version: wanted.chart_metadata.version.clone(),
                    }),
                    chart_digest: Some(wanted.chart_digest.clone()),
                    values_digest: Some(wanted.values_digest.clone()),
                    release: Some(ReleaseStatus {
                        name: wanted.release.name.clone(),
                        namespace: wanted.release.namespace.clone(),
                        revision: release::lookup(&revision, &wanted.release).map(|r| r.revision),
                    }),
                    last_transition_time: None,
                    message: None,
                };
                writer.set_component(name, available).await?;
                tracing::info!(component = name, ?action, "reconciled");
                Ok(Outcome::Done)
            }
            Err(message) => self.fail(wanted, writer, recorded, message).await,
        }
    }

    /// Runs helm for an install, upgrade or recovery. Errors come back as the message to record.
    async fn run_helm(
        &self,
        wanted: &DesiredComponent<'_>,
        action: Action,
        release_state: Option<&ReleaseState>,
    ) -> Result<(), String> {
        if action == Action::Recover {
            // A pending install has nothing to go back to; anything else returns to the last
            // good revision. Either way helm accepts the release again afterwards.
            let recovered = match release_state {
                Some(ReleaseState::PendingInstall) => self.helm.uninstall(&wanted.release).await,
                _ => self.helm.rollback(&wanted.release).await,
            };
            recovered
                .map_err(|err| format!("recovering the stuck release: {}", helm_message(&err)))?;
        }
        let prepared = wanted
            .chart
            .prepare(&wanted.values)
            .map_err(|err| err.to_string())?;
        self.helm
            .upgrade_install(
                &wanted.release,
                prepared.chart_path(),
                prepared.values_file(),
            )
            .await
            .map(drop)
            .map_err(|err| helm_message(&err))
    }

    /// The component's namespace changed: its release (and native objects) in the old namespace
    /// go before anything happens in the new one, so two copies never run side by side.
    /// `Ok(Err(message))` is a failure to record against the component.
    async fn remove_moved(
        &self,
        wanted: &DesiredComponent<'_>,
        spec: &ControlPlaneSpec,
        previous: &ReleaseRef,
        writer: &StatusWriter,
    ) -> Result<Result<(), String>, EngineError> {
        let name = wanted.name();
        let reason = format!("moved from namespace {}", previous.namespace);
        if let Some(progress) = &self.progress {
            progress.started(name, Action::Uninstall, &reason);
        }
        writer
            .mark_reconciling(&format!("{name}: {reason}"))
            .await?;
        if let Err(err) = self.helm.uninstall(previous).await {
            return Ok(Err(format!(
                "removing the release in its old namespace: {}",
                helm_message(&err)
            )));
        }
        let old_natives = (wanted.component.native_objects)(&ComponentContext {
            spec,
            namespace: &previous.namespace,
            enabled: false,
        });
        if let Err(err) = native::reconcile(&self.client, &old_natives).await {
            return Ok(Err(err.to_string()));
        }
        if let Some(progress) = &self.progress {
            progress.finished(name, &Outcome::Done);
        }
        tracing::info!(component = name, from = %previous, to = %wanted.release, "moved");
        Ok(Ok(()))
    }

    async fn uninstall(
        &self,
        wanted: &DesiredComponent<'_>,
        writer: &StatusWriter,
    ) -> Result<Outcome, EngineError> {
        let name = wanted.name();
        let recorded = writer.component(name);
        let mut uninstalling = recorded
            .clone()
            .unwrap_or_else(|| empty_status(ComponentPhase::Uninstalling));
        uninstalling.phase = ComponentPhase::Uninstalling;
        uninstalling.message = None;
        writer.set_component(name, uninstalling).await?;
        if let Err(err) = self.helm.uninstall(&wanted.release).await {
            return self
                .fail(wanted, writer, recorded, helm_message(&err))
                .await;
        }
        if let Err(err) = native::reconcile(&self.client, &wanted.native).await {
            return self.fail(wanted, writer, recorded, err.to_string()).await;
        }
        writer.set_component(name, removed_status()).await?;
        tracing::info!(component = name, "uninstalled");
        Ok(Outcome::Done)
    }

    /// Records a failure. The digests stay those of the last success, so the next reconcile
    /// tries again.
    async fn fail(
        &self,
        wanted: &DesiredComponent<'_>,
        writer: &StatusWriter,
        recorded: Option<ComponentStatus>,
        message: String,
    ) -> Result<Outcome, EngineError> {
        tracing::warn!(component = wanted.name(), %message, "failed");
        let mut status = recorded.unwrap_or_else(|| empty_status(ComponentPhase::Failed));
        status.phase = ComponentPhase::Failed;
        status.message = Some(message.clone());
        writer.set_component(wanted.name(), status).await?;
        Ok(Outcome::Failed(message))
    }
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

/// Splits components into waves that can run side by side: a component waits for the wave after
/// the last of its dependencies in the list (for removals, after the last of its dependents).
fn waves<'a, 'c>(
    components: &[&'a DesiredComponent<'c>],
    removing: bool,
) -> Vec<Vec<&'a DesiredComponent<'c>>> {
    let mut wave_of: Vec<usize> = Vec::with_capacity(components.len());
    for (index, component) in components.iter().enumerate() {
        let must_follow = |earlier: &DesiredComponent<'_>| {
            if removing {
                earlier.component.depends_on.contains(&component.name())
            } else {
                component.component.depends_on.contains(&earlier.name())
            }
        };
        let wave = components[..index]
            .iter()
            .zip(&wave_of)
            .filter(|(earlier, _)| must_follow(earlier))
            .map(|(_, wave)| wave + 1)
            .max()
            .unwrap_or(0);
        wave_of.push(wave);
    }
    let mut waves: Vec<Vec<&DesiredComponent<'c>>> = Vec::new();
    for (component, wave) in components.iter().zip(wave_of) {
        if waves.len() <= wave {
            waves.resize_with(wave + 1, Vec::new);
        }
        waves[wave].push(component);
    }
    waves
}

/// Keeps one report per component: the first decision that did something, and the last outcome.
fn record(reports: &mut Vec<ComponentReport>, report: ComponentReport) {
    match reports.iter_mut().find(|r| r.name == report.name) {
        Some(existing)
            if report.action == Action::Nothing && existing.action != Action::Nothing =>
        {
            existing.outcome = report.outcome;
        }
        Some(existing) => *existing = report,
        None => reports.push(report),
    }
}

fn empty_status(phase: ComponentPhase) -> ComponentStatus {
    ComponentStatus {
        phase,
        chart: None,
        chart_digest: None,
        values_digest: None,
        release: None,
        last_transition_time: None,
        message: None,
    }
}

fn removed_status() -> ComponentStatus {
    empty_status(ComponentPhase::Removed)
}

/// helm's own error line when helm ran and failed; the whole error otherwise.
fn helm_message(err: &HelmError) -> String {
    match err {
        HelmError::Failed { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ComponentSpec;

    fn names(waves: Vec<Vec<&DesiredComponent<'_>>>) -> Vec<Vec<&'static str>> {
        waves
            .into_iter()
            .map(|wave| wave.into_iter().map(DesiredComponent::name).collect())
            .collect()
    }

    #[test]
    fn independent_components_share_a_wave_and_removal_reverses_it() {
        let catalog = Catalog::builtin().unwrap();
        let mut spec = ControlPlaneSpec::default();
        for name in catalog.names() {
            spec.components.insert(
                name.to_owned(),
                ComponentSpec {
                    enabled: Some(true),
                    ..ComponentSpec::default()
                },
            );
        }
        let desired = resolve(&catalog, &spec).unwrap();
        let all: Vec<_> = desired.iter().collect();
        assert_eq!(
            names(waves(&all, false)),
            [
                vec!["base", "prometheus", "tracing"],
                vec!["istiod", "grafana"],
                vec!["ingress-gateway", "egress-gateway"],
            ]
        );
        let reversed: Vec<_> = desired.iter().rev().collect();
        assert_eq!(
            names(waves(&reversed, true)),
            [
                vec!["tracing", "grafana", "egress-gateway", "ingress-gateway"],
                vec!["prometheus", "istiod"],
                vec!["base"],
            ]
        );
    }
}
