//! The reconcile engine: one flow that the imperative CLI, `smm reconcile` and the operator all
//! call, through a [`session`]. It knows nothing about which of them called it.
//!
//! A reconcile reads the ControlPlane, resolves every component's desired state (rejecting a bad
//! spec before touching anything), then runs rounds: uninstalls in reverse dependency order,
//! installs and upgrades in dependency order, each component's status recorded as soon as it
//! changes (and written before anything is acted on; see `status`). A component that must wait
//! (CRDs not yet established, a dependency not yet available) asks for another round; rounds
//! stop when none asks or the limit is reached.

mod apply;
pub mod decide;
mod guards;
mod readiness;
pub mod report;
pub mod revisions;
mod run;
mod schedule;
pub mod session;
mod status;
mod step;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use decide::{Operation, Reason, decide};
use report::{PlannedComponent, Progress, ReconcileReport};
pub use status::StatusError;
use status::StatusWriter;
pub use step::ComponentError;

use crate::api::{ComponentStatus, ControlPlane, ControlPlaneStatus};
use crate::cluster::inventory::Inventory;
use crate::desired::edit::Covered;
use crate::desired::resolve::DesiredComponent;
use crate::desired::resolved::{Rejected, Resolved};
use crate::helm::Helm;
use crate::helm::record::ManifestObject;
use crate::helm::record_cache::RecordCache;
use crate::helm::release::{self, Freshness, ObservedReleases, ReleaseRef};
use crate::mesh::catalog::Catalog;
use crate::values::diff;
use crate::values::mask::mask_change;

/// What stops a whole run (or a plan); a component's own failure is a [`ComponentError`].
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("ControlPlane {name} not found")]
    NotFound { name: String },
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error("cannot list helm releases: {0}")]
    Observe(#[source] kube::Error),
    #[error(transparent)]
    Record(release::RecordError),
    #[error("cannot plan {component}: {source}")]
    Plan {
        component: String,
        #[source]
        source: Box<ComponentError>,
    },
    #[error("reconcile of ControlPlane {name} stopped before it finished: {why}")]
    Cancelled { name: String, why: String },
    #[error(transparent)]
    Status(#[from] StatusError),
}

/// Which components a reconcile may act on. The imperative CLI narrows it to the components a
/// command named (plus their dependencies); everything else is left as it is.
#[derive(Clone, Debug, Default)]
pub enum Scope {
    #[default]
    All,
    Only(Covered),
}

impl Scope {
    /// The components of `desired` this scope covers, in their order.
    fn select<'a, 'c>(&self, desired: &'a [DesiredComponent<'c>]) -> Vec<&'a DesiredComponent<'c>> {
        desired.iter().filter(|d| self.includes(d.name())).collect()
    }

    pub fn includes(&self, name: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(covered) => {
                covered.named.contains(name) || covered.dependencies.contains(name)
            }
        }
    }

    /// Whether an up-to-date component is looked at for drift (objects of its release deleted
    /// behind helm's back): in every run but for a dependency an imperative command brought in
    /// without naming it. That one is there to be installed first if it is not; `smm
    /// reconcile` and the operator, which cover every component, repair its drift, and so does
    /// a command naming it.
    fn checks_drift(&self, name: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(covered) => !covered.dependencies.contains(name),
        }
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

/// The longest pause between rounds: workloads that take long to get ready are looked at this
/// often.
pub const MAX_ROUND_DELAY: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub wait: WaitPolicy,
    /// Take over releases that belong to another ControlPlane or to nobody (`--adopt`).
    pub adopt: bool,
    /// Go on with a change that cuts running proxies off their istiod: a revision renamed in
    /// place, or istiod removed while proxies use it (`--force`).
    pub force: bool,
    /// Pause after a round in which something still waits, so it gets a chance to become
    /// ready; it doubles after every round that changed nothing, up to [`MAX_ROUND_DELAY`].
    pub round_delay: Duration,
    /// How many independent components are reconciled at once.
    pub parallelism: usize,
    /// Judge the workloads of components recorded Available again even when nothing changed,
    /// so one that stopped being ready (a crash loop, a restart whose pods are refused) goes
    /// back to waiting, with why. The operator's resyncs and watch-triggered runs do; the
    /// CLI's no-op stays a few reads (`smm status` judges the workloads live anyway).
    pub recheck_available: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            wait: WaitPolicy::Until(Duration::from_secs(300)),
            adopt: false,
            force: false,
            round_delay: Duration::from_millis(100),
            parallelism: 4,
            recheck_available: false,
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    client: Client,
    /// For the waits' watches (see [`Engine::with_watches`]).
    watches: Client,
    helm: Helm,
    catalog: Arc<Catalog>,
    settings: EngineSettings,
    /// helm's records decoded by earlier runs (see [`Engine::with_records`]).
    records: RecordCache,
    progress: Option<Arc<dyn Progress>>,
    /// Cancelled when the run must stop at once (the lease was lost, the CLI was interrupted):
    /// helm is told to stop and the engine stops.
    cancel: CancellationToken,
    /// Cancelled when the run should stop at the next component boundary, letting a running
    /// helm finish (the operator shutting down).
    stop: CancellationToken,
    /// Cancelled when the run's lease is lost: the status is then another holder's to write.
    lease_lost: CancellationToken,
    /// When, on this process's monotonic clock, nothing of the lease's former holder can still
    /// be writing (see [`Engine::with_predecessor_stopped_by`]); `None` when the run holds no
    /// lease taken from anyone (tests drive the engine directly).
    predecessor_stopped_by: Option<tokio::time::Instant>,
}

impl Engine {
    pub fn new(
        client: Client,
        helm: Helm,
        catalog: Arc<Catalog>,
        settings: EngineSettings,
    ) -> Self {
        Self {
            watches: client.clone(),
            client,
            helm,
            catalog,
            settings,
            records: RecordCache::default(),
            progress: None,
            cancel: CancellationToken::new(),
            stop: CancellationToken::new(),
            lease_lost: CancellationToken::new(),
            predecessor_stopped_by: None,
        }
    }

    /// Says when the former holder of the lease this run holds has stopped for certain: until
    /// then, a release left pending may still have that holder's helm writing it, and is not
    /// touched.
    pub fn with_predecessor_stopped_by(mut self, stopped_by: tokio::time::Instant) -> Self {
        self.predecessor_stopped_by = Some(stopped_by);
        self
    }

    /// Keeps helm's decoded records in `records`, shared with whatever else holds it (the
    /// operator's every reconcile): a record read again from the same Secret version is not
    /// decoded again. Clones of an engine share its cache already.
    pub fn with_records(mut self, records: RecordCache) -> Self {
        self.records = records;
        self
    }

    /// Follows workloads through `watches`, a client with connections of its own: a watch
    /// holds its connection, and closes it when the wait drops it.
    pub fn with_watches(mut self, watches: Client) -> Self {
        self.watches = watches;
        self
    }

    /// Stops runs at once when `cancel` is cancelled: helm is stopped (see
    /// [`Helm::with_cancel`]) and no further component is touched.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.helm = self.helm.with_cancel(cancel.clone());
        self.cancel = cancel;
        self
    }

    /// Writes no more status once `lease_lost` is cancelled: the next holder of the lease may be
    /// writing it by then, and a stale entry or condition would overwrite its own.
    pub fn with_lease_lost(mut self, lease_lost: CancellationToken) -> Self {
        self.lease_lost = lease_lost;
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

    /// What a reconcile of `resolved` would do, given the recorded `status` and the releases
    /// in the cluster, without changing anything: no helm process is spawned.
    pub async fn plan(
        &self,
        resolved: &Resolved<'_>,
        status: Option<&ControlPlaneStatus>,
        scope: &Scope,
    ) -> Result<Vec<PlannedComponent>, EngineError> {
        let in_scope = scope.select(resolved.components());
        let observed = self
            .observe(
                &in_scope,
                status,
                |name| status.and_then(|s| s.components.get(name)).cloned(),
                scope,
            )
            .await?;
        let mut planned = Vec::new();
        for wanted in in_scope {
            let recorded = status.and_then(|s| s.components.get(wanted.name()));
            let release = release::lookup(&observed.releases, &wanted.release);
            let decision = self
                .decide_with_drift(wanted, recorded, release, &observed)
                .map_err(|source| EngineError::Plan {
                    component: wanted.name().to_owned(),
                    source: Box::new(source),
                })?;
            let values_diff = match (decision.action, release) {
                (Operation::Upgrade | Operation::Recover, Some(release)) => {
                    let applied = release.record().map_err(EngineError::Record)?;
                    // Masked here, for every reader of a plan: the dashboard, and the dry
                    // run's print that ends up in CI logs.
                    diff(&applied.config, &wanted.values)
                        .into_iter()
                        .map(mask_change)
                        .collect()
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

    /// Brings the components in `scope` to the state `resolved` asks for; `control_plane` is
    /// the stored ControlPlane as just read (its status and generation), whose spec `resolved`
    /// was made from and checked against the other ControlPlanes' releases.
    pub async fn reconcile(
        &self,
        control_plane: &ControlPlane,
        resolved: &Resolved<'_>,
        scope: &Scope,
    ) -> Result<ReconcileReport, EngineError> {
        self.run(control_plane, resolved, scope).await
    }

    /// Uninstalls every component, dependents first, as deleting a ControlPlane asks. The CRDs
    /// stay (see the base component).
    pub async fn remove_all(
        &self,
        control_plane: &ControlPlane,
    ) -> Result<ReconcileReport, EngineError> {
        let name = control_plane.name_any();
        let removal = Resolved::removal(&self.catalog, &name, &control_plane.spec);
        let removal = self
            .accept(control_plane, removal.map_err(EngineError::from))
            .await?;
        // Deleting the ControlPlane is the explicit act: proxies that still use istiod do not
        // hold it up (an imperative uninstall refuses unless forced).
        let mut forced = self.clone();
        forced.settings.force = true;
        forced.run(control_plane, &removal, &Scope::All).await
    }

    /// The stored ControlPlane's spec resolved for a run, and checked against the releases of
    /// `others` (the other ControlPlanes).
    pub async fn resolve_stored(
        &self,
        control_plane: &ControlPlane,
        others: &[ControlPlane],
    ) -> Result<Resolved<'_>, EngineError> {
        let name = control_plane.name_any();
        let checked = match Resolved::new(&self.catalog, &name, control_plane.spec.clone()) {
            Ok(resolved) => self
                .refuse_shared_releases(&resolved, Some(control_plane), others)
                .await
                .map(|()| resolved),
            Err(rejected) => Err(rejected.into()),
        };
        self.accept(control_plane, checked).await
    }

    /// Refuses `resolved` when it would manage a release that one of `others` keeps: the one
    /// that owns the release, or the older before either does (see
    /// [`keeps_shared_release`](crate::desired::shared::keeps_shared_release)). `stored` is the
    /// ControlPlane as stored, none before it is first stored. helm's records are read only when
    /// a release would be shared, to learn whose it is.
    pub async fn refuse_shared_releases(
        &self,
        resolved: &Resolved<'_>,
        stored: Option<&ControlPlane>,
        others: &[ControlPlane],
    ) -> Result<(), EngineError> {
        let shared = resolved.shared_releases(others);
        if shared.is_empty() {
            return Ok(());
        }
        let releases: Vec<ReleaseRef> = shared.iter().map(|s| s.release.clone()).collect();
        let observed = release::observe(&self.client, &releases, Freshness::Latest, &self.records)
            .await
            .map_err(EngineError::Observe)?;
        let owner_of = |release: &ReleaseRef| release::lookup(&observed, release)?.owner.as_deref();
        Ok(resolved.refuse_newcomer(stored.map(|cp| &cp.metadata), &shared, owner_of)?)
    }

    /// `resolved` as the run's desired state; a spec that was rejected is recorded on the
    /// stored ControlPlane (Ready=False, Stalled=True, InvalidSpec for its generation), visible
    /// where users look (kubectl, Argo CD), not only in a log: the operator has no terminal.
    async fn accept<'c>(
        &self,
        control_plane: &ControlPlane,
        resolved: Result<Resolved<'c>, EngineError>,
    ) -> Result<Resolved<'c>, EngineError> {
        if let Err(EngineError::Rejected(rejected)) = &resolved {
            let api: Api<ControlPlane> = Api::all(self.client.clone());
            StatusWriter::new(api, control_plane, self.lease_lost.clone())
                .rejected(&rejected.to_string())
                .await?;
        }
        resolved
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The releases of `components` as helm recorded them (one list call per namespace they
    /// are in, or were in when the status recorded them), and what exists of their objects and
    /// of the components' native objects (one list per kind). Given what the status `recorded`
    /// (read from etcd), helm's records are read from the API server's cache first, and again
    /// from etcd only when the two differ (see [`decide::cache_agrees`]).
    async fn observe(
        &self,
        components: &[&DesiredComponent<'_>],
        recorded: Option<&ControlPlaneStatus>,
        status_of: impl Fn(&str) -> Option<ComponentStatus>,
        scope: &Scope,
    ) -> Result<Observed, EngineError> {
        // A component whose namespace changed still has its release in the old one, which
        // goes first (see `apply::moved_release`).
        let mut releases: Vec<ReleaseRef> = components.iter().map(|d| d.release.clone()).collect();
        let moved_from = components.iter().filter_map(|d| {
            let status = recorded?.components.get(d.name())?;
            Some(ReleaseRef::from(status.release.as_ref()?))
        });
        for previous in moved_from {
            if !releases.contains(&previous) {
                releases.push(previous);
            }
        }
        let releases = &releases;
        let read = |freshness| async move {
            release::observe(&self.client, releases, freshness, &self.records)
                .await
                .map_err(EngineError::Observe)
        };
        let releases = async {
            Ok::<_, EngineError>(match recorded {
                Some(status) => {
                    let cached = read(Freshness::Cached).await?;
                    let expected = components
                        .iter()
                        .map(|d| (&d.release, status.components.get(d.name())));
                    if decide::cache_agrees(expected, &cached) {
                        cached
                    } else {
                        read(Freshness::Latest).await?
                    }
                }
                None => read(Freshness::Latest).await?,
            })
        }
        .instrument(tracing::debug_span!("observe_releases"))
        .await?;
        // A release's objects are looked for only where the drift check will look: for a
        // component up to date by its record (see `decide_with_drift`) that the scope checks.
        // A component about to be applied anyway gets its record left undecoded and its kinds
        // unlisted. Should the step find it up to date after all, its objects are not in the
        // inventory and count as missing: it is applied, never skipped.
        let mut kinds = BTreeSet::new();
        let mut unchecked = BTreeSet::new();
        for wanted in components {
            kinds.extend(wanted.native.iter().map(|native| native.kind()));
            if !scope.checks_drift(wanted.name()) {
                unchecked.insert(wanted.name());
                continue;
            }
            let Some(release) = release::lookup(&releases, &wanted.release) else {
                continue;
            };
            let status = status_of(wanted.name());
            if decide((*wanted).into(), status.as_ref(), Some(release)).reason != Reason::UpToDate {
                continue;
            }
            if let Ok(record) = release.record() {
                kinds.extend(record.objects.iter().map(ManifestObject::kind));
            }
        }
        let inventory = Inventory::take(&self.client, kinds)
            .instrument(tracing::debug_span!("observe_inventory"))
            .await;
        Ok(Observed {
            releases,
            inventory,
            unchecked,
        })
    }
}

/// What a round starts from.
pub(super) struct Observed {
    /// The latest revision of each release, with its record.
    releases: ObservedReleases,
    /// What exists of the releases' objects and the components' native objects.
    inventory: Inventory,
    /// The components whose drift this run does not look for (see [`Scope::checks_drift`]).
    unchecked: BTreeSet<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An imperative run covers what it names and what that depends on, and looks for drift
    /// in all of them but the dependencies it brought in; a full run looks everywhere.
    #[test]
    fn drift_is_looked_for_everywhere_but_in_dependencies_brought_in() {
        let names = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        let scope = Scope::Only(Covered {
            named: names(&["grafana"]),
            dependencies: names(&["prometheus"]),
        });
        assert!(scope.includes("grafana") && scope.includes("prometheus"));
        assert!(!scope.includes("istiod"));
        assert!(scope.checks_drift("grafana"));
        assert!(!scope.checks_drift("prometheus"));
        assert!(Scope::All.includes("prometheus") && Scope::All.checks_drift("prometheus"));
    }
}
