//! `smm operator run`: a kube-runtime controller over ControlPlanes that calls the same engine
//! as `smm reconcile`. One replica leads (a Lease); it takes each ControlPlane's reconcile lease
//! too, so it never runs alongside a CLI. A finalizer uninstalls everything when a ControlPlane
//! is deleted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::events::EventProgress;
use super::http::{self, EndpointState};
use crate::api::ControlPlane;
use crate::cluster::lease::{Holder, LeaseLock, LockError};
use crate::dashboard::{self, Access, Dashboard};
use crate::engine::session::{Request, Session, SessionError};
use crate::engine::{Engine, EngineError, EngineSettings, WaitPolicy};
use crate::helm::Helm;
use crate::mesh::catalog::Catalog;

/// The finalizer that keeps a ControlPlane until its components are uninstalled.
pub const FINALIZER: &str = "smm.dev/uninstall-components";
/// The leader-election lease, in the operator's namespace.
pub const LEADER_LEASE: &str = "smm-operator-leader";
/// How soon a ControlPlane whose components wait for their workloads is looked at again (a
/// change of their Deployments triggers a reconcile sooner).
const WAITING_RECHECK: Duration = Duration::from_secs(5);
/// Deployments whose deletion or change should trigger a reconcile: those helm deployed (helm
/// labels whatever it applies), narrowed to the catalog's releases by helm's release annotation.
/// Istio's charts label their workloads `part-of: istio`, not smm's.
const WATCHED_LABEL: &str = "app.kubernetes.io/managed-by=Helm";
/// The annotation helm puts on every object of a release, naming the release.
const RELEASE_ANNOTATION: &str = "meta.helm.sh/release-name";

/// Why `smm operator run` stopped, or why one reconcile of a ControlPlane failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Session(Box<SessionError>),
    #[error("component(s) failed: {0}")]
    ComponentsFailed(String),
    #[error("cannot serve the health and metrics endpoints on {address}: {source}")]
    Http {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the dashboard has no authentication in the operator and must listen on a loopback address (reached with kubectl port-forward), not {0}"
    )]
    DashboardNotLoopback(SocketAddr),
    #[error("cannot serve the dashboard on {address}: {source}")]
    Dashboard {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl From<SessionError> for ControllerError {
    fn from(err: SessionError) -> Self {
        Self::Session(Box::new(err))
    }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
    /// Namespace of the leader-election lease (the operator's own).
    pub leader_namespace: String,
    /// Who this replica is, in leases and events (the pod name in the cluster).
    pub identity: String,
    /// How often a healthy ControlPlane is reconciled anyway, to repair drift.
    pub resync_every: Duration,
    /// Where the read-only dashboard listens, a loopback address; none: not served.
    pub dashboard: Option<SocketAddr>,
}

struct Context {
    client: Client,
    helm: Helm,
    catalog: Arc<Catalog>,
    endpoints: Arc<EndpointState>,
    recorder: Recorder,
    options: RunOptions,
    /// Failing ControlPlanes, for exponential backoff.
    failures: Mutex<HashMap<String, Failing>>,
    /// Engine progress as Events, per ControlPlane.
    progress: Mutex<HashMap<String, Arc<EventProgress>>>,
    /// Cancelled when this replica's leadership ended: reconciles stop at once, helm included.
    lost: CancellationToken,
    /// Cancelled on shutdown: reconciles stop at the next component boundary.
    stopping: CancellationToken,
    /// The leader this replica took over from once its lease expired: its reconcile leases are
    /// taken at once instead of after they expire too (it stopped reconciling as it stopped
    /// renewing), so a failover costs one lease duration, not two.
    former_leader: Option<String>,
}

/// Runs until a shutdown signal (SIGTERM or SIGINT). A replica leads (a Lease) before it
/// reconciles; one that loses the lease stops its reconciles at once, helm included, and stands
/// by again. On shutdown it starts no further component and lets a running helm finish (the
/// pod's termination grace period covers that).
pub async fn run(
    client: Client,
    helm: Helm,
    catalog: Arc<Catalog>,
    options: RunOptions,
) -> Result<(), ControllerError> {
    let endpoints = Arc::new(EndpointState::default());
    let address = options.listen;
    let mut server = tokio::spawn(http::serve(address, endpoints.clone()));
    if let Some(address) = options.dashboard {
        serve_dashboard(address, &client, &helm, &catalog).await?;
    }
    let stopping = crate::signals::stop_on_signal("shutting down: no further component is started");
    let reporter = Reporter {
        controller: "smm-operator".to_owned(),
        instance: Some(options.identity.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    loop {
        tracing::info!(identity = %options.identity, "waiting to become the leader");
        let claimant = Holder::new(&options.identity);
        let acquire = LeaseLock::acquire(
            &client,
            &options.leader_namespace,
            LEADER_LEASE,
            &claimant,
            None,
            |holder| tracing::info!(%holder, "another replica leads; standing by"),
        );
        let mut leader = tokio::select! {
            leader = acquire => leader?,
            () = stopping.cancelled() => return Ok(()),
            served = &mut server => return served_outcome(served, address),
        };
        let former_leader = leader.taken_from().map(str::to_owned);
        tracing::info!(former_leader, "leading: reconciling ControlPlanes");
        endpoints.set_leading(true);
        // Cancelled when this term of leadership ends without a shutdown: helm is stopped.
        let lost = CancellationToken::new();
        let context = Arc::new(Context {
            recorder: recorder.clone(),
            client: client.clone(),
            helm: helm.clone(),
            catalog: catalog.clone(),
            endpoints: endpoints.clone(),
            options: options.clone(),
            failures: Mutex::default(),
            progress: Mutex::default(),
            lost: lost.clone(),
            stopping: stopping.clone(),
            former_leader,
        });
        let controller = controller(&client, context, stopping.clone(), lost.clone());
        tokio::pin!(controller);
        let lost_leadership = tokio::select! {
            () = &mut controller => false,
            () = leader.lost() => {
                tracing::warn!("lost the leader lease; stopping reconciles");
                lost.cancel();
                controller.await;
                true
            }
            served = &mut server => {
                leader.release().await;
                return served_outcome(served, address);
            }
        };
        leader.release().await;
        endpoints.set_leading(false);
        if !lost_leadership {
            return Ok(());
        }
    }
}

/// The controller over ControlPlanes for one term of leadership; it ends on shutdown or when
/// the term ends, once its running reconciles returned.
fn controller(
    client: &Client,
    context: Arc<Context>,
    stopping: CancellationToken,
    lost: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    let control_planes: Api<ControlPlane> = Api::all(client.clone());
    let controller = Controller::new(control_planes, watcher::Config::default());
    let store = controller.store();
    let releases: std::collections::BTreeSet<&'static str> = context
        .catalog
        .components()
        .iter()
        .map(|component| component.release_name)
        .collect();
    controller
        .watches(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default().labels(WATCHED_LABEL),
            // Any change to a workload of one of the catalog's releases (deleted, rolled out,
            // ready) may concern any ControlPlane.
            move |deployment| {
                let ours = deployment
                    .annotations()
                    .get(RELEASE_ANNOTATION)
                    .is_some_and(|release| releases.contains(release.as_str()));
                if !ours {
                    return Vec::new();
                }
                store
                    .state()
                    .iter()
                    .map(|cp| ObjectRef::from_obj(cp.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .trigger_backoff(WatchRetry::default())
        .graceful_shutdown_on(async move {
            tokio::select! {
                () = stopping.cancelled() => {}
                () = lost.cancelled() => {}
            }
        })
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::warn!(%err, "reconcile failed");
            }
        })
}

fn served_outcome(
    served: Result<std::io::Result<()>, tokio::task::JoinError>,
    address: SocketAddr,
) -> Result<(), ControllerError> {
    match served {
        Ok(Err(source)) => Err(ControllerError::Http { address, source }),
        _ => Ok(()),
    }
}

/// Serves the dashboard on every replica (it only reads, so standbys serve it too). Bound before
/// anything else happens, so a wrong address stops the operator at once. Loopback only: whoever
/// reaches it through `kubectl port-forward` may already port-forward into the operator's pod.
async fn serve_dashboard(
    address: SocketAddr,
    client: &Client,
    helm: &Helm,
    catalog: &Arc<Catalog>,
) -> Result<(), ControllerError> {
    if !address.ip().is_loopback() {
        return Err(ControllerError::DashboardNotLoopback(address));
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ControllerError::Dashboard { address, source })?;
    let engine = Engine::new(
        client.clone(),
        helm.clone(),
        catalog.clone(),
        EngineSettings::default(),
    );
    let view = Arc::new(Dashboard::new(
        client.clone(),
        engine,
        catalog.clone(),
        None,
    ));
    tracing::info!(%address, "serving the dashboard");
    tokio::spawn(async move {
        if let Err(err) =
            dashboard::serve(listener, view, Access::Loopback, std::future::pending()).await
        {
            tracing::error!(%err, "the dashboard stopped");
        }
    });
    Ok(())
}

/// Delays between attempts to re-establish a failed watch: 0.5 s doubling up to 5 s, back to
/// 0.5 s once events flow again. The default (client-go's, up to 30 s) stacks its waits after
/// an API server outage, the connection errors and then the expired resource version each
/// adding one, so the operator could miss changes for a minute or more.
struct WatchRetry {
    next: Duration,
}

impl WatchRetry {
    const FIRST: Duration = Duration::from_millis(500);
    const LONGEST: Duration = Duration::from_secs(5);
}

impl Default for WatchRetry {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchRetry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::LONGEST);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for WatchRetry {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

async fn reconcile(
    control_plane: Arc<ControlPlane>,
    context: Arc<Context>,
) -> Result<Action, kube::runtime::finalizer::Error<ControllerError>> {
    use kube::runtime::finalizer::Error as FinalizerError;
    let api: Api<ControlPlane> = Api::all(context.client.clone());
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
    context
        .progress
        .lock()
        .expect("progress lock")
        .remove(&name);
    context
        .failures
        .lock()
        .expect("failures lock")
        .remove(&name);
    Ok(Action::await_change())
}

/// A ControlPlane whose last reconcile failed.
#[derive(Default)]
struct Failing {
    /// Consecutive failures.
    count: u32,
    /// Not tried again before this, unless its spec changes.
    retry_at: Option<Instant>,
    /// The generation that failed.
    generation: Option<i64>,
}

impl Failing {
    /// How long a watch event (the status write of the failed run itself, a workload
    /// changing) must still wait: a failing ControlPlane is tried again after its backoff, not
    /// on every event, unless its spec changed.
    fn holds_back(&self, generation: Option<i64>, now: Instant) -> Option<Duration> {
        let retry_at = self.retry_at?;
        (self.generation == generation && retry_at > now).then(|| retry_at - now)
    }
}

fn error_policy(
    control_plane: Arc<ControlPlane>,
    error: &kube::runtime::finalizer::Error<ControllerError>,
    context: Arc<Context>,
) -> Action {
    let mut failures = context.failures.lock().expect("failures lock");
    let failing = failures.entry(control_plane.name_any()).or_default();
    failing.count += 1;
    // 5s, 10s, 20s, ... up to 5 minutes.
    let delay =
        Duration::from_secs(5 * 2u64.pow((failing.count - 1).min(6))).min(Duration::from_secs(300));
    failing.retry_at = Some(Instant::now() + delay);
    failing.generation = control_plane.metadata.generation;
    tracing::warn!(control_plane = %control_plane.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Goal {
    Apply,
    Cleanup,
}

impl Context {
    async fn reconcile(
        &self,
        control_plane: &ControlPlane,
        goal: Goal,
    ) -> Result<Action, ControllerError> {
        let name = control_plane.name_any();
        let started = Instant::now();
        let held_back = self
            .failures
            .lock()
            .expect("failures lock")
            .get(&name)
            .and_then(|failing| failing.holds_back(control_plane.metadata.generation, started));
        if let (Goal::Apply, Some(wait)) = (goal, held_back) {
            return Ok(Action::requeue(wait));
        }
        // One per ControlPlane for the operator's life: an action started in one reconcile
        // may finish (its workloads ready) in a later one, and its Event is published then.
        let progress = self
            .progress
            .lock()
            .expect("progress lock")
            .entry(name.clone())
            .or_insert_with(|| {
                Arc::new(EventProgress::new(
                    self.recorder.clone(),
                    control_plane.object_ref(&()),
                ))
            })
            .clone();
        let session = Session::new(
            self.client.clone(),
            self.helm.clone(),
            self.catalog.clone(),
            self.options.identity.clone(),
            Duration::from_secs(60),
        )
        .with_successor_of(self.former_leader.clone())
        .with_wait(WaitPolicy::Requeue)
        .with_cancel(self.lost.clone())
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
        if let Err(SessionError::Engine(err @ EngineError::Spec { .. })) = &result {
            progress.rejected(&err.to_string());
        }

        let metrics = &self.endpoints.metrics;
        metrics.record_helm_processes(self.helm.processes_spawned());
        // Components waiting for their workloads are no failure: look again soon, without
        // the error backoff and without holding the lease meanwhile.
        let outcome = result.map_err(ControllerError::from).and_then(|report| {
            if report.succeeded() {
                Ok(None)
            } else if report.failed().is_empty() {
                Ok(Some(report.unfinished().join("; ")))
            } else {
                Err(ControllerError::ComponentsFailed(
                    report.failed().join("; "),
                ))
            }
        });
        metrics.record_reconcile(outcome.is_ok(), started.elapsed().as_secs_f64());
        give_back_freed_memory();
        if let Ok(Some(stored)) = Api::<ControlPlane>::all(self.client.clone())
            .get_opt(&name)
            .await
        {
            metrics.record_components(&name, &stored.status.unwrap_or_default());
        }
        let waiting = outcome?;
        self.failures.lock().expect("failures lock").remove(&name);
        self.endpoints.set_reconciled();
        Ok(match (goal, waiting) {
            (_, Some(waiting_for)) => {
                tracing::info!(control_plane = %name, %waiting_for, "waiting; looking again soon");
                Action::requeue(WAITING_RECHECK)
            }
            (Goal::Apply, None) => Action::requeue(self.options.resync_every),
            (Goal::Cleanup, None) => {
                self.progress.lock().expect("progress lock").remove(&name);
                Action::await_change()
            }
        })
    }
}

/// A reconcile's peak (release records with their manifests, rendered values) is freed when it
/// ends, but glibc's allocator keeps freed memory for the process unless asked to give it back;
/// an operator idles between reconciles, so its memory would stay at the last peak.
fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the system; no pointer is touched.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    /// A failing ControlPlane is held back until its retry time, unless its spec changed.
    #[test]
    fn a_failing_control_plane_waits_out_its_backoff_unless_its_spec_changes() {
        let now = Instant::now();
        let failing = Failing {
            count: 1,
            retry_at: Some(now + Duration::from_secs(5)),
            generation: Some(3),
        };
        assert_eq!(
            failing.holds_back(Some(3), now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            failing.holds_back(Some(4), now),
            None,
            "a new spec goes at once"
        );
        assert_eq!(
            failing.holds_back(Some(3), now + Duration::from_secs(6)),
            None
        );
        assert_eq!(Failing::default().holds_back(Some(3), now), None);
    }

    #[test]
    fn watch_retries_double_up_to_five_seconds_and_reset() {
        let mut retry = WatchRetry::default();
        let delays: Vec<u128> = retry.by_ref().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000]);
        retry.reset();
        assert_eq!(retry.next(), Some(Duration::from_millis(500)));
    }
}
