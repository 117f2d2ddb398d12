//! The operations behind the commands that change or preview the mesh from the client, one
//! each, as cargo's `ops` serve its `commands`: a command parses its flags, calls one of these
//! and prints what it returns. The decisions (refusing while the operator owns reconciliation,
//! where a dump starts from, the lease, storing, the engine) are made here and below, never in
//! the command line.

pub mod ambient;
pub mod revisions;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::api::{ControlPlaneSpec, DEFAULT_MESH_NAMESPACE};
use crate::cluster::control_plane::{self, StoreError};
use crate::cluster::lease::holder_identity;
use crate::cluster::mesh_snapshot::{self, SnapshotError};
use crate::cluster::namespaces::{self, LabelError};
use crate::desired::edit;
use crate::desired::resolved::Resolved;
use crate::engine::report::{PlannedComponent, Progress, ReconcileReport};
use crate::engine::revisions::plan::{RevisionPlan, plan_revisions};
use crate::engine::session::{Request, Session, SessionError};
use crate::engine::{Engine, EngineError, EngineSettings, Scope, WaitPolicy};
use crate::fleet;
use crate::helm::Helm;
use crate::helm::render::{self, RenderError, RenderedComponent};
use crate::mesh::catalog::Catalog;
use crate::mesh::injection::{ProtectedNamespace, check_injectable, injection_labels};
use crate::mesh::revisions::proxies::{ProxyStatus, proxy_statuses};
use crate::mesh::revisions::usage::{RevisionInfo, revisions};
use crate::operator::manifests::OperatorOptions;
use crate::operator::{self, OperatorLifecycleError, UninstallMode};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    ProtectedNamespace(#[from] ProtectedNamespace),
    #[error(transparent)]
    Label(#[from] LabelError),
    #[error(transparent)]
    OperatorPresent(#[from] OperatorLifecycleError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Plan(#[from] EngineError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Revision(#[from] crate::mesh::revisions::strategy::RevisionError),
    #[error(transparent)]
    Edit(#[from] crate::desired::edit::EditError),
    #[error(transparent)]
    Rejected(#[from] crate::desired::resolved::Rejected),
    #[error(transparent)]
    TagInUse(#[from] revisions::TagInUse),
    #[error(transparent)]
    Migration(#[from] crate::mesh::revisions::migration::MigrationError),
    #[error(transparent)]
    MigrationRun(#[from] crate::cluster::migration::MigrationRunError),
    #[error(transparent)]
    Ambient(#[from] ambient::AmbientError),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
}

/// What a reconcile from the client needs to reach the cluster and its charts.
#[derive(Clone)]
pub struct Reach {
    pub client: Client,
    /// A client of its own for the waits' watches (`ClusterTarget::watch_client`).
    pub watches: Client,
    pub helm: Helm,
    pub catalog: Arc<Catalog>,
}

/// How a reconcile from the client runs.
pub struct ReconcileOptions {
    /// Take over releases that belong to another ControlPlane or to nobody.
    pub adopt: bool,
    /// Go on with changes that cut running proxies off their istiod.
    pub force: bool,
    pub wait: WaitPolicy,
    /// How long a lease held by another run is waited for.
    pub lease_wait: Duration,
    pub progress: Option<Arc<dyn Progress>>,
    /// Cancelled to stop at once (the user interrupted): helm is stopped, the lease released.
    pub cancel: CancellationToken,
}

/// Runs `request` on the ControlPlane `name` in a reconcile session, as `smm install`,
/// `smm uninstall` and `smm reconcile -f` do; refused while the operator is installed, since it
/// owns reconciliation and a run from the client would compete with it. `on_wait` is told who
/// holds the lease when another run has it.
pub async fn reconcile(
    reach: Reach,
    name: &str,
    request: Request<'_>,
    options: ReconcileOptions,
    on_wait: impl FnOnce(&str),
) -> Result<ReconcileReport, OpsError> {
    operator::ensure_absent(&reach.client, name).await?;
    let settings = fleet_settings(&reach, &options);
    let removing = matches!(request, Request::RemoveAll);
    let mut session = Session::new(
        reach.client.clone(),
        reach.helm,
        reach.catalog,
        settings.holder.clone(),
        options.lease_wait,
    )
    .with_watches(reach.watches)
    .with_adopt(options.adopt)
    .with_force(options.force)
    .with_wait(options.wait)
    .with_cancel(options.cancel);
    if let Some(progress) = options.progress {
        session = session.with_progress(progress);
    }
    let mut report = session.run(name, request, on_wait).await?;
    // The attached remote clusters follow the primary's spec, each in a session of its own.
    if report.multi_cluster_primary
        && !removing
        && let Some(stored) = control_plane::load(&reach.client, name).await?
    {
        report.clusters = fleet::reconcile_attached(&reach.client, &stored, &settings).await?;
    }
    Ok(report)
}

/// How sessions against the attached clusters run: as this run's own.
pub fn fleet_settings(reach: &Reach, options: &ReconcileOptions) -> fleet::SessionSettings {
    fleet::SessionSettings {
        helm: reach.helm.clone(),
        catalog: reach.catalog.clone(),
        holder: holder_identity("smm-cli"),
        lease_wait: options.lease_wait,
        wait: options.wait,
        adopt: options.adopt,
        force: options.force,
        cancel: options.cancel.clone(),
        progress: options.progress.clone(),
    }
}

/// Removes the operator from the cluster. With `purge`, every ControlPlane's components go too
/// (each under its reconcile lease, waited for up to `lease_wait`; `cancel` stops helm at
/// once), then the ControlPlanes and their CRD; without it the components stay. Told of each
/// ControlPlane as it is handled, through `on_control_plane`.
pub async fn uninstall_operator(
    reach: Reach,
    options: &OperatorOptions,
    purge: bool,
    lease_wait: Duration,
    cancel: CancellationToken,
    on_control_plane: impl Fn(&str),
) -> Result<(), OpsError> {
    let client = reach.client.clone();
    let holder = holder_identity("smm-cli");
    let session = Session::new(reach.client, reach.helm, reach.catalog, holder, lease_wait)
        .with_watches(reach.watches)
        .with_cancel(cancel);
    let mode = if purge {
        UninstallMode::Purge { session: &session }
    } else {
        UninstallMode::KeepComponents
    };
    Ok(operator::uninstall(&client, options, mode, on_control_plane).await?)
}

/// Turns sidecar auto-injection on or off for `namespaces`, for the revision of the
/// ControlPlane `control_plane` (none stored: the default injector). Switching it on for a
/// namespace whose pods must restart while istiod is down (Kubernetes', istiod's, the
/// operator's) is refused before any namespace is changed.
pub async fn auto_inject(
    client: &Client,
    control_plane: &str,
    namespaces: &[String],
    on: bool,
) -> Result<(), OpsError> {
    let spec = control_plane::load(client, control_plane)
        .await?
        .map(|cp| cp.spec)
        .unwrap_or_default();
    if on {
        let mesh_namespace = spec.namespace.as_deref().unwrap_or(DEFAULT_MESH_NAMESPACE);
        let operator_namespaces = operator_namespaces(client).await?;
        let operator_namespaces: Vec<&str> =
            operator_namespaces.iter().map(String::as_str).collect();
        for namespace in namespaces {
            check_injectable(namespace, mesh_namespace, &operator_namespaces)?;
        }
    }
    let labels = injection_labels(on, spec.revision.as_deref());
    for namespace in namespaces {
        namespaces::merge_labels(client, namespace, labels.clone()).await?;
    }
    Ok(())
}

/// The namespaces the operator runs in, or would by default: never injected.
async fn operator_namespaces(client: &Client) -> Result<Vec<String>, OpsError> {
    let installed = operator::installed(client)
        .await
        .map_err(OperatorLifecycleError::Lookup)?;
    let installed_in = installed.as_deref().and_then(|d| d.split_once('/'));
    let mut namespaces = vec![operator::manifests::DEFAULT_NAMESPACE.to_owned()];
    namespaces.extend(installed_in.map(|(namespace, _)| namespace.to_owned()));
    Ok(namespaces)
}

/// Every injected pod's proxy and every revision of the mesh, as `smm proxy-status` shows them.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatusReport {
    /// Where the mesh's istiods run: the ControlPlane's namespace.
    pub mesh_namespace: String,
    pub revisions: BTreeMap<String, RevisionInfo>,
    pub proxies: Vec<ProxyStatus>,
}

/// The proxies and revisions of the mesh of the ControlPlane `control_plane` (none stored: the
/// default mesh namespace); changes nothing.
pub async fn proxy_status(
    client: &Client,
    control_plane: &str,
) -> Result<ProxyStatusReport, OpsError> {
    let spec = control_plane::load(client, control_plane)
        .await?
        .map(|cp| cp.spec)
        .unwrap_or_default();
    let mesh_namespace = spec.mesh_namespace().to_owned();
    let snapshot = mesh_snapshot::read(client, &mesh_namespace).await?;
    Ok(ProxyStatusReport {
        revisions: revisions(&snapshot),
        proxies: proxy_statuses(&snapshot),
        mesh_namespace,
    })
}

/// What reconciling `resolved` would do, against the status stored for its ControlPlane (none
/// when it is not stored yet); changes nothing and spawns no helm.
pub async fn plan(reach: Reach, resolved: &Resolved<'_>) -> Result<Plan, OpsError> {
    let stored = control_plane::load(&reach.client, resolved.name()).await?;
    let engine = Engine::new(
        reach.client,
        reach.helm,
        reach.catalog,
        EngineSettings::default(),
    );
    let status = stored.as_ref().and_then(|cp| cp.status.as_ref());
    let components = engine.plan(resolved, status, &Scope::All).await?;
    let revisions = plan_revisions(resolved, status, &components);
    Ok(Plan {
        components,
        revisions,
    })
}

/// What a reconcile would do: each component's action, and what it would do to istiod's
/// revisions.
#[derive(Debug, serde::Serialize)]
pub struct Plan {
    pub components: Vec<PlannedComponent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revisions: Option<RevisionPlan>,
}

/// The objects the enabled components of `resolved` in `scope` would apply, rendered with
/// `helm template`: needs no cluster.
pub async fn dump(
    helm: &Helm,
    resolved: &Resolved<'_>,
    scope: &Scope,
) -> Result<Vec<RenderedComponent>, OpsError> {
    let requests: Vec<_> = resolved
        .components()
        .iter()
        .filter(|d| d.enabled && scope.includes(d.name()))
        .map(|d| d.render_request())
        .collect();
    Ok(render::render(helm, &requests).await?)
}

/// The spec an imperative command's `--dump-resources` edits: the stored ControlPlane's when a
/// cluster answers, otherwise the defaults, so a machine with no cluster at all can still dump.
pub async fn spec_to_dump(
    client: Option<&Client>,
    catalog: &Catalog,
    name: &str,
) -> ControlPlaneSpec {
    let Some(client) = client else {
        return ControlPlaneSpec::default();
    };
    match control_plane::load(client, name).await {
        Ok(stored) => stored
            .map(|cp| cp.spec)
            .unwrap_or_else(|| edit::new_spec(catalog)),
        Err(err) => {
            tracing::warn!("rendering from defaults: cannot read the ControlPlane: {err:#}");
            ControlPlaneSpec::default()
        }
    }
}
