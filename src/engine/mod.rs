//! The reconcile engine: one flow that the imperative CLI, `smm reconcile` and the operator all
//! call, through a [`session`]. It knows nothing about which of them called it.
//!
//! A reconcile reads the ControlPlane, resolves every component's desired state (rejecting a bad
//! spec before touching anything), then runs rounds: uninstalls in reverse dependency order,
//! installs and upgrades in dependency order, each component's status written as soon as it
//! changes. A component that must wait (CRDs not yet established, a dependency not yet
//! available) asks for another round; rounds stop when none asks or the limit is reached.

mod component;
pub mod decide;
pub mod readiness;
pub mod report;
pub mod session;
mod status;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use component::ComponentError;
use decide::Operation;
use report::{Outcome, PlannedComponent, Progress, ReconcileReport};
use status::{RunEnd, StatusWriter};

use crate::api::{ControlPlane, ControlPlaneSpec, ControlPlaneStatus};
use crate::desired::resolve::{DesiredComponent, SpecError, refuse_shared_releases, resolve};
use crate::helm::Helm;
use crate::helm::release::{self, ObservedReleases};
use crate::mesh::catalog::Catalog;
use crate::mesh::graph;
use crate::values::diff;

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
    #[error("reconcile of ControlPlane {name} stopped before it finished: {why}")]
    Cancelled { name: String, why: String },
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

/// Every other ControlPlane's name and spec, to refuse releases they manage too.
pub(crate) async fn other_control_planes(
    api: &Api<ControlPlane>,
    name: &str,
) -> Result<Vec<(String, ControlPlaneSpec)>, EngineError> {
    let all = api
        .list(&Default::default())
        .await
        .map_err(|source| EngineError::Get {
            name: name.to_owned(),
            source,
        })?;
    Ok(all
        .items
        .into_iter()
        .filter(|cp| cp.metadata.name.as_deref() != Some(name))
        .map(|cp| (cp.metadata.name.clone().unwrap_or_default(), cp.spec))
        .collect())
}

/// The component that keeps `wanted` from being acted on in this run: for an install, a
/// dependency that failed; for a removal, a dependent whose removal failed (removing what it
/// still uses would break it).
fn blocker(
    wanted: &DesiredComponent<'_>,
    removing: bool,
    in_scope: &[&DesiredComponent<'_>],
    failed: &BTreeSet<&'static str>,
) -> Option<&'static str> {
    if removing {
        in_scope
            .iter()
            .find(|d| failed.contains(d.name()) && d.component.depends_on.contains(&wanted.name()))
            .map(|d| d.name())
    } else {
        wanted
            .component
            .depends_on
            .iter()
            .copied()
            .find(|dependency| failed.contains(dependency))
    }
}

/// How a run treats components that are not ready yet: their workloads (Deployments,
/// StatefulSets, DaemonSets, Jobs) not ready, their CRDs not established, what they depend on
/// not Available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitPolicy {
    /// Round after round until every component is in its desired state, for at most this long;
    /// a component still waiting then is Failed with what it waited for, and the ControlPlane
    /// Stalled. The CLI's default, bounded by `--timeout`.
    Until(Duration),
    /// Stop once a round changes nothing: what waits stays Progressing and the caller comes
    /// back later (the operator requeues, holding no lease and running no helm meanwhile).
    Requeue,
    /// Apply everything without waiting for workloads; a dependent needs what it depends on
    /// applied, not ready (`--no-wait`).
    No,
}

#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub wait: WaitPolicy,
    /// Take over releases that belong to another ControlPlane or to nobody (`--adopt`).
    pub adopt: bool,
    /// Pause between rounds, so waiting components get a chance to become ready.
    pub round_delay: Duration,
    /// How many independent components are reconciled at once.
    pub parallelism: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            wait: WaitPolicy::Until(Duration::from_secs(300)),
            adopt: false,
            round_delay: Duration::from_secs(1),
            parallelism: 4,
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    client: Client,
    helm: Helm,
    catalog: Arc<Catalog>,
    settings: EngineSettings,
    progress: Option<Arc<dyn Progress>>,
    /// Cancelled when the run must stop at once (the lease was lost, the CLI was interrupted):
    /// helm is told to stop and the engine stops.
    cancel: CancellationToken,
    /// Cancelled when the run should stop at the next component boundary, letting a running
    /// helm finish (the operator shutting down).
    stop: CancellationToken,
}

impl Engine {
    pub fn new(
        client: Client,
        helm: Helm,
        catalog: Arc<Catalog>,
        settings: EngineSettings,
    ) -> Self {
        Self {
            client,
            helm,
            catalog,
            settings,
            progress: None,
            cancel: CancellationToken::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Stops runs at once when `cancel` is cancelled: helm is stopped (see
    /// [`Helm::with_cancel`]) and no further component is touched.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.helm = self.helm.with_cancel(cancel.clone());
        self.cancel = cancel;
        self
    }

    /// Stops runs at the next component boundary when `stop` is cancelled.
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Fails when the run must not go on.
    fn check_going(&self, name: &str) -> Result<(), EngineError> {
        let why = if self.cancel.is_cancelled() {
            "told to stop at once"
        } else if self.stop.is_cancelled() {
            "shutting down"
        } else {
            return Ok(());
        };
        Err(EngineError::Cancelled {
            name: name.to_owned(),
            why: why.to_owned(),
        })
    }

    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
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
                (Operation::Upgrade | Operation::Recover, Some(release)) => {
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
        let span = tracing::info_span!("reconcile", control_plane = name, ?intent);
        self.run_rounds(name, scope, intent).instrument(span).await
    }

    async fn run_rounds(
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
        let writer = StatusWriter::new(api.clone(), &control_plane);
        let others = if intent == Intent::AsSpecified {
            other_control_planes(&api, name).await?
        } else {
            Vec::new()
        };
        let desired = match self.resolve(name, &spec).and_then(|desired| {
            refuse_shared_releases(&self.catalog, &spec, &others)
                .map(|()| desired)
                .map_err(|source| EngineError::Spec {
                    name: name.to_owned(),
                    source,
                })
        }) {
            Ok(desired) => desired,
            Err(err) => {
                // Visible where users look (kubectl, Argo CD), not only in a log: the operator
                // has no terminal to print it to.
                writer.rejected(&err.to_string()).await?;
                return Err(err);
            }
        };
        let in_scope = scope.select(&desired);

        let mut report = ReconcileReport {
            control_plane: name.to_owned(),
            rounds: 0,
            ready: false,
            components: Vec::new(),
        };
        let started = tokio::time::Instant::now();
        let mut rounds = 0;
        // Components that failed in this run are not tried again in it (a retry would meet the
        // same cause, each time holding the lease as long as helm's timeout), and what depends
        // on them is blocked: reported failed, left untouched.
        let mut failed: BTreeSet<&'static str> = BTreeSet::new();
        let mut fatal = None;
        let end = loop {
            rounds += 1;
            let observed = match self.observe(&in_scope).await {
                Ok(observed) => observed,
                Err(err) => {
                    fatal = Some(err);
                    break RunEnd::Waiting;
                }
            };
            let mut waiting = false;
            let mut acted = false;
            // Dependents go before what they depend on when removing, after it when installing;
            // components of one wave do not depend on each other and run side by side.
            let removals: Vec<_> = in_scope
                .iter()
                .rev()
                .filter(|d| !d.enabled)
                .copied()
                .collect();
            let installs: Vec<_> = in_scope.iter().filter(|d| d.enabled).copied().collect();
            let waves = graph::waves(&removals, true)
                .into_iter()
                .map(|wave| (wave, true))
                .chain(
                    graph::waves(&installs, false)
                        .into_iter()
                        .map(|w| (w, false)),
                );
            for (wave, removing) in waves {
                self.check_going(name)?;
                let mut runnable = Vec::new();
                for wanted in wave {
                    if failed.contains(wanted.name()) {
                        continue;
                    }
                    match blocker(wanted, removing, &in_scope, &failed) {
                        Some(blocker) => {
                            failed.insert(wanted.name());
                            report.record(report::ComponentReport {
                                name: wanted.name().to_owned(),
                                action: Operation::Nothing,
                                reason: format!("blocked by {blocker}"),
                                outcome: Outcome::Failed(format!(
                                    "blocked by {blocker}, which failed in this run"
                                )),
                            });
                        }
                        None => runnable.push(wanted),
                    }
                }
                // Futures made up front: a mapping closure here trips the compiler's Send
                // analysis of the operator's reconcile future.
                let pending: Vec<_> = runnable
                    .into_iter()
                    .map(|wanted| self.step(wanted, &spec, &observed, &writer))
                    .collect();
                let results: Vec<_> = futures::stream::iter(pending)
                    .buffer_unordered(self.settings.parallelism.max(1))
                    .collect()
                    .await;
                for step in results {
                    waiting |= matches!(step.outcome, Outcome::Waiting(_));
                    acted |= step.action != Operation::Nothing;
                    if matches!(step.outcome, Outcome::Failed(_))
                        && let Some(wanted) = in_scope.iter().find(|d| d.name() == step.name)
                    {
                        failed.insert(wanted.name());
                    }
                    report.record(step);
                }
            }
            if !waiting {
                break RunEnd::Settled;
            }
            match self.settings.wait {
                WaitPolicy::Until(limit) if started.elapsed() >= limit => {
                    self.time_out(&mut report, limit, &writer).await?;
                    break RunEnd::TimedOut;
                }
                WaitPolicy::Until(_) => {}
                WaitPolicy::Requeue | WaitPolicy::No if !acted => break RunEnd::Waiting,
                WaitPolicy::Requeue | WaitPolicy::No => {}
            }
            tokio::time::sleep(self.settings.round_delay).await;
        };
        // Side by side work finishes in any order; the report follows the catalog.
        report.components.sort_by_key(|component| {
            in_scope
                .iter()
                .position(|d| d.name() == component.name)
                .unwrap_or(usize::MAX)
        });
        report.rounds = rounds;
        // The conditions are made current whatever happened above.
        report.ready = writer.finish(&desired, end).await?;
        match fatal {
            Some(err) => Err(err),
            None => Ok(report),
        }
    }

    /// The wait is over: every component still waiting is Failed, with what it waited for.
    async fn time_out(
        &self,
        report: &mut ReconcileReport,
        limit: Duration,
        writer: &StatusWriter,
    ) -> Result<(), EngineError> {
        for component in &mut report.components {
            if let Outcome::Waiting(why) = &component.outcome {
                let message = format!("not ready after {}s: {why}", limit.as_secs());
                writer.failed(&component.name, message.clone()).await?;
                let outcome = Outcome::Failed(message);
                if let Some(progress) = &self.progress {
                    progress.finished(&component.name, &outcome);
                }
                component.outcome = outcome;
            }
        }
        Ok(())
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
}
