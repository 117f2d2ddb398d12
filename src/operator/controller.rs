//! `smm operator run`: a kube-runtime controller over ControlPlanes that calls the same engine
//! as `smm reconcile`. One replica leads (a Lease); it takes each ControlPlane's reconcile lease
//! too, so it never runs alongside a CLI. A finalizer uninstalls everything when a ControlPlane
//! is deleted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::Controller;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::dashboard::{self, TOKEN_SECRET};
use super::drift;
use super::http::{self, EndpointState};
use super::reconcile::{Context, error_policy, reconcile};
use super::watch_retry::WatchRetry;
use crate::api::ControlPlaneMeta;
use crate::cluster::lease::{Holder, LeaseLock, LockError};
use crate::dashboard::TokenError;
use crate::engine::session::{STOPPING_LIMIT, SessionError};
use crate::helm::Helm;
use crate::mesh::catalog::Catalog;

/// The finalizer that keeps a ControlPlane until its components are uninstalled.
pub const FINALIZER: &str = "smm.dev/uninstall-components";
/// The leader-election lease, in the operator's namespace.
pub const LEADER_LEASE: &str = "smm-operator-leader";
/// How long a shutdown waits for the controller's first list of ControlPlanes.
const FIRST_LIST_LIMIT: Duration = Duration::from_secs(10);

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
        "the dashboard must listen on a loopback address (reached with kubectl port-forward), not {0}"
    )]
    DashboardNotLoopback(SocketAddr),
    #[error(
        "cannot read or create the dashboard's token, Secret {namespace}/{TOKEN_SECRET}: {source}"
    )]
    DashboardSecret {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("the dashboard's token, Secret {namespace}/{TOKEN_SECRET}: {source}")]
    DashboardToken {
        namespace: String,
        #[source]
        source: TokenError,
    },
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

/// The operator's clients: calls fail once the API server stops answering them; watches wait
/// for events for minutes at a time.
pub struct Clients {
    pub calls: Client,
    pub watches: Client,
}

/// Runs until a shutdown signal (SIGTERM or SIGINT). A replica leads (a Lease) before it
/// reconciles; one that loses the lease stops its reconciles at once, helm included, and stands
/// by again. On shutdown it starts no further component and lets a running helm finish (the
/// pod's termination grace period covers that).
pub async fn run(
    clients: Clients,
    helm: Helm,
    catalog: Arc<Catalog>,
    options: RunOptions,
) -> Result<(), ControllerError> {
    let Clients {
        calls: client,
        watches,
    } = clients;
    let endpoints = Arc::new(EndpointState::default());
    let address = options.listen;
    let mut server = tokio::spawn(http::serve(address, endpoints.clone()));
    if let Some(address) = options.dashboard {
        dashboard::serve(address, &options.leader_namespace, &client, &helm, &catalog).await?;
    }
    let stopping = crate::signals::stop_on_signal(
        "shutting down: no further component is started",
        crate::helm::kill_running_and_exit,
    );
    let reporter = Reporter {
        controller: "smm-operator".to_owned(),
        instance: Some(options.identity.clone()),
    };
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
            reporter: reporter.clone(),
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
            records: Default::default(),
        });
        // Boxed, so that reconciles abandoned after a loss are dropped (and their helm killed)
        // before the leader lease is given back.
        let mut controller = Box::pin(controller(
            &watches,
            context,
            stopping.clone(),
            lost.clone(),
        ));
        let lost_leadership = tokio::select! {
            () = &mut controller => false,
            () = leader.lost() => {
                tracing::warn!("lost the leader lease; stopping reconciles");
                lost.cancel();
                // Stopping helm takes at most its grace; an API call that hangs must not keep
                // this replica from standing by (dropped, its helm is killed).
                if tokio::time::timeout(STOPPING_LIMIT, controller).await.is_err() {
                    tracing::warn!("reconciles did not stop in time; abandoned");
                }
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
async fn controller(
    client: &Client,
    context: Arc<Context>,
    stopping: CancellationToken,
    lost: CancellationToken,
) {
    let ended = async move {
        tokio::select! {
            () = stopping.cancelled() => {}
            () = lost.cancelled() => {}
        }
    };
    // Any change to what smm manages (a workload deleted, rolled out or ready, a release record
    // written by hand) may concern any ControlPlane. Finding the kinds asks the API server.
    let mut ended = Box::pin(ended);
    let changes = tokio::select! {
        changes = drift::changes(client, &context.catalog) => changes,
        () = ended.as_mut() => return,
    };
    // Watched as metadata: a ControlPlane whose spec cannot be decoded must not stop the watch
    // of the others; each reconcile reads its own ControlPlane whole.
    let control_planes: Api<ControlPlaneMeta> = Api::all(client.clone());
    let controller = Controller::new(control_planes, watcher::Config::default());
    let store = controller.store();
    controller
        .reconcile_all_on(changes)
        .trigger_backoff(WatchRetry::default())
        // A controller shut down before its first list of ControlPlanes never ends (its runner
        // waits for that list), so the shutdown waits for the list, for a few seconds at most.
        .graceful_shutdown_on(async move {
            ended.await;
            let _ = tokio::time::timeout(FIRST_LIST_LIMIT, store.wait_until_ready()).await;
        })
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::warn!(%err, "reconcile failed");
            }
        })
        .await;
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
