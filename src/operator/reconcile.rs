//! One reconcile of a ControlPlane: the backoff gate, the engine run under the ControlPlane's
//! lease, metrics, and when to look at it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::controller::{ControllerError, FINALIZER, RunOptions};
use super::events::EventProgress;
use super::failure_backoff::Failing;
use super::http::EndpointState;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::api::{ControlPlane, ControlPlaneMeta, set_stalled};
use crate::cluster::control_plane::StoreError;
use crate::engine::report::ReconcileReport;
use crate::engine::session::{Request, Session, SessionError};
use crate::engine::{EngineError, WaitPolicy};
use crate::helm::Helm;
use crate::helm::record_cache::RecordCache;
use crate::mesh::catalog::Catalog;

/// How soon a ControlPlane whose components wait for their workloads is looked at again (a
/// change of their Deployments triggers a reconcile sooner).
const WAITING_RECHECK: Duration = Duration::from_secs(5);

/// What every reconcile of one term of leadership shares.
pub(super) struct Context {
    pub(super) client: Client,
    pub(super) helm: Helm,
    pub(super) catalog: Arc<Catalog>,
    pub(super) endpoints: Arc<EndpointState>,
    /// Who publishes the Events.
    pub(super) reporter: Reporter,
    pub(super) options: RunOptions,
    /// Failing ControlPlanes, for exponential backoff.
    pub(super) failures: Mutex<HashMap<String, Failing>>,
    /// Engine progress as Events, per ControlPlane.
    pub(super) progress: Mutex<HashMap<String, Arc<EventProgress>>>,
    /// Cancelled when this replica's leadership ended: reconciles stop at once, helm included.
    pub(super) lost: CancellationToken,
    /// Cancelled on shutdown: reconciles stop at the next component boundary.
    pub(super) stopping: CancellationToken,
    /// The leader this replica took over from once its lease expired: its reconcile leases are
    /// taken at once instead of after they expire too (it stopped reconciling as it stopped
    /// renewing), so a failover costs one lease duration, not two.
    pub(super) former_leader: Option<String>,
    /// helm's records decoded by earlier reconciles, by Secret version: a resync of a
    /// ControlPlane whose releases did not change decodes none.
    pub(super) records: RecordCache,
}

/// One reconcile of a ControlPlane as the controller calls it: through the finalizer, which
/// says whether to apply it or clean it up.
pub(super) async fn reconcile(
    control_plane: Arc<ControlPlaneMeta>,
    context: Arc<Context>,
) -> Result<Action, kube::runtime::finalizer::Error<ControllerError>> {
    use kube::runtime::finalizer::Error as FinalizerError;
    let api: Api<ControlPlaneMeta> = Api::all(context.client.clone());
    let name = control_plane.name_any();
    let result = finalizer(&api, FINALIZER, control_plane, |event| async {
        match event {
            FinalizerEvent::Apply(cp) => context.reconcile(&cp, Goal::Apply).await,
            FinalizerEvent::Cleanup(cp) => context.reconcile(&cp, Goal::Cleanup).await,
        }
    })
    .await;
    // The watch can hand over a deleted ControlPlane once more after its finalizer let it go
    // (the cached copy still carries the finalizer): it is gone, nothing is left to clean up.
    let gone = match &result {
        Err(FinalizerError::CleanupFailed(ControllerError::Session(err))) => {
            matches!(**err, SessionError::Engine(EngineError::NotFound { .. }))
        }
        Err(FinalizerError::RemoveFinalizer(kube::Error::Api(status))) => status.code == 404,
        _ => false,
    };
    if !gone {
        return result;
    }
    context.forget(&name);
    Ok(Action::await_change())
}

/// A failed reconcile is tried again after its backoff (see [`Failing`]).
pub(super) fn error_policy(
    control_plane: Arc<ControlPlaneMeta>,
    error: &kube::runtime::finalizer::Error<ControllerError>,
    context: Arc<Context>,
) -> Action {
    let delay = context
        .failures
        .lock()
        .expect("failures lock")
        .entry(control_plane.name_any())
        .or_default()
        .failed(control_plane.metadata.generation, Instant::now());
    tracing::warn!(control_plane = %control_plane.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// How soon an attached cluster that could not be reconciled is tried again.
const ATTACHED_RETRY: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Goal {
    Apply,
    Cleanup,
}

impl Context {
    /// One reconcile of `control_plane` towards `goal`, and when to look at it again.
    async fn reconcile(
        &self,
        control_plane: &ControlPlaneMeta,
        goal: Goal,
    ) -> Result<Action, ControllerError> {
        let name = control_plane.name_any();
        let started = Instant::now();
        let held_back = self.held_back(&name, control_plane.metadata.generation, started);
        if let (Goal::Apply, Some(wait)) = (goal, held_back) {
            return Ok(Action::requeue(wait));
        }
        let mut result = self.run_session(control_plane, goal).await;
        if let (Goal::Apply, Ok(report)) = (goal, &mut result)
            && report.multi_cluster_primary
        {
            self.reconcile_attached(&name, report).await;
        }
        self.endpoints
            .metrics
            .record_helm_processes(self.helm.processes_spawned());
        let outcome = result
            .map_err(ControllerError::from)
            .and_then(|report| Ok((waiting_for(&report)?, report.revisit_after)));
        self.endpoints
            .metrics
            .record_reconcile(outcome.is_ok(), started.elapsed().as_secs_f64());
        // A reconcile's peak (release records with their manifests, rendered values) is freed
        // when it ends; an operator idles between reconciles.
        crate::memory::give_back_freed();
        self.record_components(&name).await;
        let (waiting, revisit) = outcome?;
        self.failures.lock().expect("failures lock").remove(&name);
        self.endpoints.set_reconciled();
        Ok(self.next_look(&name, goal, waiting, revisit))
    }

    /// How long a failing ControlPlane must still wait for its next try (see [`Failing`]).
    fn held_back(&self, name: &str, generation: Option<i64>, now: Instant) -> Option<Duration> {
        self.failures
            .lock()
            .expect("failures lock")
            .get(name)
            .and_then(|failing| failing.holds_back(generation, now))
    }

    /// The Events of `control_plane`'s progress. One per ControlPlane for the operator's life:
    /// an action started in one reconcile may finish (its workloads ready) in a later one, and
    /// its Event is published then.
    fn progress_of(&self, control_plane: &ControlPlaneMeta) -> Arc<EventProgress> {
        self.progress
            .lock()
            .expect("progress lock")
            .entry(control_plane.name_any())
            .or_insert_with(|| {
                Arc::new(EventProgress::new(
                    self.client.clone(),
                    self.reporter.clone(),
                    control_plane.object_ref(&()),
                ))
            })
            .clone()
    }

    /// Runs the engine on `control_plane` under its reconcile lease; a spec the engine rejects
    /// is told as an Event.
    async fn run_session(
        &self,
        control_plane: &ControlPlaneMeta,
        goal: Goal,
    ) -> Result<ReconcileReport, SessionError> {
        let name = control_plane.name_any();
        let progress = self.progress_of(control_plane);
        let session = Session::new(
            self.client.clone(),
            self.helm.clone(),
            self.catalog.clone(),
            self.options.identity.clone(),
            Duration::from_secs(60),
        )
        .with_successor_of(self.former_leader.clone())
        .with_records(self.records.clone())
        .with_wait(WaitPolicy::Requeue)
        .with_recheck_available()
        .with_cancel(self.lost.clone())
        .with_lease_lost(self.lost.clone())
        .with_stop(self.stopping.clone())
        .with_progress(progress.clone());
        let request = match goal {
            Goal::Apply => Request::Stored,
            Goal::Cleanup => Request::RemoveAll,
        };
        let result = session
            .run(&name, request, |holder| {
                tracing::info!(control_plane = %name, %holder, "waiting for another reconcile")
            })
            .await;
        match &result {
            Err(SessionError::Engine(EngineError::Rejected(rejected))) => {
                progress.rejected(&rejected.to_string());
            }
            Err(SessionError::Store(StoreError::Undecodable(undecodable))) => {
                let message = undecodable.to_string();
                progress.rejected(&message);
                self.mark_unreadable(control_plane, &message).await;
            }
            _ => {}
        }
        result
    }

    /// The remote clusters attached to the ControlPlane `name`, each in a session of its own
    /// after the primary's; one that failed is looked at again within [`ATTACHED_RETRY`].
    async fn reconcile_attached(&self, name: &str, report: &mut ReconcileReport) {
        let stored = match crate::cluster::control_plane::load(&self.client, name).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(control_plane = %name, %err, "cannot read it for its attached clusters");
                return;
            }
        };
        let settings = crate::fleet::SessionSettings {
            helm: self.helm.clone(),
            catalog: self.catalog.clone(),
            holder: self.options.identity.clone(),
            lease_wait: Duration::from_secs(60),
            wait: WaitPolicy::Until(Duration::from_secs(300)),
            adopt: false,
            force: false,
            cancel: self.lost.clone(),
            progress: None,
        };
        match crate::fleet::reconcile_attached(&self.client, &stored, &settings).await {
            Ok(clusters) => {
                if clusters.iter().any(|cluster| cluster.message.is_some()) {
                    let sooner = report
                        .revisit_after
                        .map_or(ATTACHED_RETRY, |r| r.min(ATTACHED_RETRY));
                    report.revisit_after = Some(sooner);
                }
                report.clusters = clusters;
            }
            Err(err) => {
                tracing::warn!(control_plane = %name, %err, "attached clusters not reconciled");
                report.revisit_after = Some(ATTACHED_RETRY);
            }
        }
    }

    /// A ControlPlane that cannot be read is Stalled, as one whose spec cannot be applied: its
    /// status is written through its metadata alone, which always decodes.
    async fn mark_unreadable(&self, control_plane: &ControlPlaneMeta, message: &str) {
        let generation = control_plane.metadata.generation;
        let time = Time(k8s_openapi::jiff::Timestamp::now());
        let mut conditions = Vec::new();
        set_stalled(&mut conditions, "Unreadable", message, generation, &time);
        let status =
            json!({"status": {"conditions": conditions, "observedGeneration": generation}});
        let api: Api<ControlPlaneMeta> = Api::all(self.client.clone());
        let name = control_plane.name_any();
        if let Err(err) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
        {
            tracing::warn!(control_plane = %name, %err, "cannot mark an unreadable ControlPlane Stalled");
        }
    }

    /// The ControlPlane's metrics, from the status the run stored (read back: the report does
    /// not carry every field the status has).
    async fn record_components(&self, name: &str) {
        if let Ok(Some(stored)) = Api::<ControlPlane>::all(self.client.clone())
            .get_opt(name)
            .await
        {
            self.endpoints.metrics.record_control_plane(name, &stored);
        }
    }

    /// When to reconcile a ControlPlane again after a run that did not fail: soon while
    /// something waits, when the run asked to be run again (an unused revision's grace period
    /// ends), else at the next resync.
    fn next_look(
        &self,
        name: &str,
        goal: Goal,
        waiting: Option<String>,
        revisit: Option<std::time::Duration>,
    ) -> Action {
        match (goal, waiting) {
            (_, Some(waiting_for)) => {
                tracing::info!(control_plane = %name, %waiting_for, "waiting; looking again soon");
                Action::requeue(WAITING_RECHECK)
            }
            (Goal::Apply, None) => {
                Action::requeue(revisit.map_or(self.options.resync_every, |revisit| {
                    // A second late, so the grace period has passed for certain.
                    (revisit + std::time::Duration::from_secs(1)).min(self.options.resync_every)
                }))
            }
            (Goal::Cleanup, None) => {
                self.progress.lock().expect("progress lock").remove(name);
                Action::await_change()
            }
        }
    }

    /// Drops what is kept about a ControlPlane that is gone.
    fn forget(&self, name: &str) {
        self.progress.lock().expect("progress lock").remove(name);
        self.failures.lock().expect("failures lock").remove(name);
    }
}

/// What a run's components still wait for, if anything. Components waiting for their workloads
/// are no failure: the ControlPlane is looked at again soon, without the error backoff and
/// without holding the lease meanwhile.
fn waiting_for(report: &ReconcileReport) -> Result<Option<String>, ControllerError> {
    if report.succeeded() {
        Ok(None)
    } else if report.failed().is_empty() {
        Ok(Some(report.unfinished().join("; ")))
    } else {
        Err(ControllerError::ComponentsFailed(
            report.failed().join("; "),
        ))
    }
}
