//! A reconcile session: take the ControlPlane's reconcile lease, change and store the spec if
//! asked, run the engine, release the lease, report. Every command that changes the mesh and
//! the operator go through here, so no two of them ever write one ControlPlane's components at
//! once, whichever mode they run in.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::report::{Progress, ReconcileReport};
use super::{Engine, EngineError, EngineSettings, Scope, WaitPolicy};
use crate::api::ControlPlaneSpec;
use crate::api::names::{self, InvalidName};
use crate::cluster::control_plane::{self, Listed, StoreError};
use crate::cluster::lease::{Holder, LockError, reconcile_lock};
use crate::desired::edit::{self, Covered, EditError};
use crate::desired::resolved::{Rejected, Resolved};
use crate::helm::record_cache::RecordCache;
use crate::helm::{Helm, STOP_GRACE};
use crate::mesh::catalog::Catalog;

/// How long a run that lost its lease may take to stop: helm's grace, then a moment for a
/// killed helm to be reaped. A run still going then is dropped, which kills its helm.
pub const STOPPING_LIMIT: Duration = Duration::from_secs(STOP_GRACE.as_secs() + 5);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error(
        "lost the reconcile lease of ControlPlane {name} (another holder took it, or it could \
         not be renewed in time); stopped, helm included"
    )]
    LeaseLost { name: String },
}

/// An edit of the stored spec (or of a new one when none is stored) that returns the
/// components the reconcile must cover.
pub type Edit<'a> =
    dyn Fn(&mut ControlPlaneSpec, &Catalog) -> Result<Covered, EditError> + Send + Sync + 'a;

/// What a session does once it holds the lease.
pub enum Request<'a> {
    /// Reconcile the stored ControlPlane as it is (the operator).
    Stored,
    /// Store the resolved spec as the whole desired state, then reconcile every component
    /// (`smm reconcile -f`). It was resolved, and so checked, before anything was locked.
    Replace(Box<Resolved<'a>>),
    /// Apply an imperative edit to the stored spec, store it, and reconcile the components the
    /// edit names (`smm install`, `smm uninstall`). The edit runs under the lease, so two
    /// commands editing one ControlPlane never lose each other's change.
    Edit(&'a Edit<'a>),
    /// Uninstall every component (a ControlPlane being deleted, or a purge).
    RemoveAll,
}

/// Runs sessions for one process: the catalog, helm and client are shared by every run.
pub struct Session {
    engine: Engine,
    client: Client,
    catalog: Arc<Catalog>,
    holder: String,
    /// A former holder known to be gone, whose leases are taken at once (see
    /// [`Holder::successor_of`]).
    successor_of: Option<String>,
    lease_wait: Duration,
    /// Cancelled to stop every run at once (the CLI interrupted); each run also stops at once
    /// when it loses its lease.
    cancel: CancellationToken,
    /// Cancelled when every run counts as having lost its lease (see [`Session::with_lease_lost`]);
    /// each run's own lease lost counts too.
    lease_lost: CancellationToken,
}

impl Session {
    /// `holder` names this process in the lease (see
    /// [`holder_identity`](crate::cluster::lease::holder_identity)); a busy lease is waited for
    /// up to `lease_wait`.
    pub fn new(
        client: Client,
        helm: Helm,
        catalog: Arc<Catalog>,
        holder: String,
        lease_wait: Duration,
    ) -> Self {
        Self {
            engine: Engine::new(
                client.clone(),
                helm,
                catalog.clone(),
                EngineSettings::default(),
            ),
            client,
            catalog,
            holder,
            successor_of: None,
            lease_wait,
            cancel: CancellationToken::new(),
            lease_lost: CancellationToken::new(),
        }
    }

    /// Runs take the leases `former` holds at once: it is known to be gone (the operator leader
    /// this one took over from once its lease expired).
    pub fn with_successor_of(mut self, former: Option<String>) -> Self {
        self.successor_of = former;
        self
    }

    /// Runs stop at once, helm included, when `cancel` is cancelled.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Runs write no more status when `lease_lost` is cancelled: as when a run's own lease is
    /// lost, another holder may be writing it (the operator's leader lease lost: its successor
    /// takes this replica's reconcile leases at once).
    pub fn with_lease_lost(mut self, lease_lost: CancellationToken) -> Self {
        self.lease_lost = lease_lost;
        self
    }

    /// Runs stop at the next component boundary when `stop` is cancelled, letting a running
    /// helm finish.
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.engine = self.engine.with_stop(stop);
        self
    }

    /// Runs keep helm's decoded records in `records` (see [`Engine::with_records`]); without
    /// it, the runs of this session share a cache of their own.
    pub fn with_records(mut self, records: RecordCache) -> Self {
        self.engine = self.engine.with_records(records);
        self
    }

    /// Runs follow workloads through `watches` (see [`Engine::with_watches`]).
    pub fn with_watches(mut self, watches: Client) -> Self {
        self.engine = self.engine.with_watches(watches);
        self
    }

    /// Runs take over releases that belong to another ControlPlane or to nobody.
    pub fn with_adopt(mut self, adopt: bool) -> Self {
        self.engine.settings.adopt = adopt;
        self
    }

    /// Runs go on with changes that cut running proxies off their istiod.
    pub fn with_force(mut self, force: bool) -> Self {
        self.engine.settings.force = force;
        self
    }

    /// How runs wait for components to become ready (default: up to 5 minutes).
    pub fn with_wait(mut self, wait: WaitPolicy) -> Self {
        self.engine.settings.wait = wait;
        self
    }

    /// Runs judge the workloads of Available components again (see
    /// [`EngineSettings::recheck_available`]).
    pub fn with_recheck_available(mut self) -> Self {
        self.engine.settings.recheck_available = true;
        self
    }

    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.engine = self.engine.with_progress(progress);
        self
    }

    /// Runs `request` on the ControlPlane `name` under its reconcile lease. `on_wait` is told
    /// once who holds the lease when another run has it.
    pub async fn run(
        &self,
        name: &str,
        request: Request<'_>,
        on_wait: impl FnOnce(&str),
    ) -> Result<ReconcileReport, SessionError> {
        // The name names the lease: a bad one is refused before the cluster is touched.
        names::control_plane_name("ControlPlane name", name)?;
        let holder = Holder {
            identity: &self.holder,
            successor_of: self.successor_of.as_deref(),
        };
        let mut lock = reconcile_lock(&self.client, name, &holder, self.lease_wait, on_wait)
            .instrument(tracing::debug_span!("take_lease"))
            .await?;
        // Losing the lease stops this run at once: another holder may already be at work.
        let cancel = self.cancel.child_token();
        let lease_lost = self.lease_lost.child_token();
        let predecessor_stopped_by =
            super::guards::predecessor_stopped_by(lock.predecessor(), lock.taken_at());
        let engine = self
            .engine
            .clone()
            .with_cancel(cancel.clone())
            .with_lease_lost(lease_lost.clone())
            .with_predecessor_stopped_by(predecessor_stopped_by);
        // Boxed, so that a run abandoned after a loss is dropped (and its helm killed) before
        // the lease is given back.
        let mut run = Box::pin(self.run_locked(&engine, name, request));
        let result = tokio::select! {
            result = &mut run => result,
            () = lock.lost() => {
                lease_lost.cancel();
                cancel.cancel();
                // Wait for helm to stop before returning: nothing of ours may go on writing. An
                // API call that hangs must not hold the run up: dropped, its helm is killed.
                if tokio::time::timeout(STOPPING_LIMIT, run).await.is_err() {
                    tracing::warn!(control_plane = name, "the run did not stop in time; abandoned");
                }
                Err(SessionError::LeaseLost { name: name.to_owned() })
            }
        };
        lock.release()
            .instrument(tracing::debug_span!("release_lease"))
            .await;
        result
    }

    async fn run_locked(
        &self,
        engine: &Engine,
        name: &str,
        request: Request<'_>,
    ) -> Result<ReconcileReport, SessionError> {
        // One read of every ControlPlane: this one (its spec, status and uid) and the others,
        // whose releases this one must not manage. Removal reads only this one, as far as it
        // needs: one whose spec cannot be decoded as a whole is still removed.
        let Listed { this, others } = match &request {
            Request::RemoveAll => Listed {
                this: control_plane::load_for_removal(&self.client, name).await?,
                others: Vec::new(),
            },
            _ => {
                control_plane::list_around(&self.client, name)
                    .instrument(tracing::debug_span!("read_control_planes"))
                    .await?
            }
        };
        let not_found = || EngineError::NotFound {
            name: name.to_owned(),
        };
        // The spec is resolved once, checked against the other ControlPlanes' releases before
        // it is stored, and handed to the engine as it is.
        let (control_plane, resolved, scope) = match request {
            Request::Stored => {
                let this = this.ok_or_else(not_found)?;
                let resolved = engine.resolve_stored(&this, &others).await?;
                (this, resolved, Scope::All)
            }
            Request::Replace(resolved) => {
                let resolved = *resolved;
                engine
                    .refuse_shared_releases(&resolved, this.as_ref(), &others)
                    .await?;
                let stored =
                    control_plane::store(&self.client, name, resolved.spec(), this).await?;
                (stored, resolved, Scope::All)
            }
            Request::Edit(apply_edit) => {
                let before = this
                    .as_ref()
                    .map(|cp| cp.spec.clone())
                    .unwrap_or_else(|| edit::new_spec(&self.catalog));
                let mut spec = before.clone();
                let mut covered = apply_edit(&mut spec, &self.catalog)?;
                let resolved = Resolved::new(&self.catalog, name, spec)?;
                // A stored spec that no longer resolves changes nothing else the edit could see.
                // What the edit changed counts as named (it is applied, not just brought in).
                if let Ok(before) = Resolved::new(&self.catalog, name, before) {
                    covered.named.extend(resolved.changed_from(&before));
                }
                let named = &covered.named;
                covered.dependencies.retain(|d| !named.contains(d));
                engine
                    .refuse_shared_releases(&resolved, this.as_ref(), &others)
                    .await?;
                let stored =
                    control_plane::store(&self.client, name, resolved.spec(), this).await?;
                (stored, resolved, Scope::Only(covered))
            }
            Request::RemoveAll => {
                let this = this.ok_or_else(not_found)?;
                return Ok(engine.remove_all(&this).await?);
            }
        };
        Ok(engine.reconcile(&control_plane, &resolved, &scope).await?)
    }
}
