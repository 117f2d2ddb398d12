//! One mesh over several clusters: a layer above the reconcile session, never a session with two
//! clients. A remote cluster's part of the mesh (Istio's CRDs and istiod's remote profile) is a
//! ControlPlane of its own in that cluster, reconciled by a session against it, from the
//! primary: at attach with the user's credentials, afterwards with the manager account the
//! attach made there, whose kubeconfig smm keeps in the primary. What joins the clusters (the
//! reader's token there, the remote secret here) is made around the sessions; the primary's
//! ControlPlane lists the attached clusters in its status, each with its reachability and why
//! its part is not in its desired state.

mod attach;
mod created;
mod detach;
mod reconcile;
mod status;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub use attach::{AttachReport, Servers, attach};
pub use detach::{DetachReport, detach};
pub use reconcile::reconcile_attached;
pub use status::{ClusterState, status};

use crate::api::{AttachedCluster, ControlPlane, ControlPlaneSpec};
use crate::cluster::objects::FIELD_MANAGER;
use crate::cluster::target::ClusterTarget;
use crate::engine::WaitPolicy;
use crate::engine::report::Progress;
use crate::engine::report::ReconcileReport;
use crate::engine::session::{Request, Session};
use crate::helm::Helm;
use crate::mesh::catalog::Catalog;
use crate::mesh::multicluster::AttachmentError;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    #[error("ControlPlane {name} not found in this cluster: install the mesh first")]
    NoControlPlane { name: String },
    #[error("cluster {cluster}: cannot reach its API server: {source}")]
    Unreachable {
        cluster: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "cluster {cluster} is already part of another mesh: {why}; detach it there first (smm \
         cluster detach), or attach it under that mesh"
    )]
    OtherMesh { cluster: String, why: String },
    #[error(
        "cluster {cluster} has no ControlPlane {control_plane} of its own with \
         spec.multiCluster in mesh {mesh}: a primary cluster runs its own istiod; install it \
         there first with the same mesh ID, then attach it"
    )]
    NotAPrimary {
        cluster: String,
        control_plane: String,
        mesh: String,
    },
    #[error(
        "cluster {cluster}: the token Secret {namespace}/{secret} got no token within 30s (is \
         the controller-manager's token controller running?)"
    )]
    NoToken {
        cluster: String,
        namespace: String,
        secret: String,
    },
    #[error(
        "cluster {cluster} is not attached to ControlPlane {control_plane} (no remote secret {namespace}/{secret} made by smm)"
    )]
    NotAttached {
        cluster: String,
        control_plane: String,
        namespace: String,
        secret: String,
    },
    #[error(
        "cluster {cluster}: its ControlPlane {control_plane} did not reach its desired state: \
         see its status there"
    )]
    RemoteNotReconciled {
        cluster: String,
        control_plane: String,
    },
    #[error("cluster {cluster}: the remote cluster's part was not removed: {why}")]
    RemoteNotRemoved { cluster: String, why: String },
    #[error(transparent)]
    Store(#[from] crate::cluster::control_plane::StoreError),
    #[error(transparent)]
    Trust(#[from] crate::cluster::trust::TrustError),
    #[error(transparent)]
    Rejected(#[from] crate::desired::resolved::Rejected),
    #[error(transparent)]
    Revision(#[from] crate::mesh::revisions::strategy::RevisionError),
    #[error("cluster {cluster}: {source}")]
    Session {
        cluster: String,
        #[source]
        source: Box<crate::engine::session::SessionError>,
    },
    #[error("cluster {cluster}: cannot use the kubeconfig smm keeps for it: {why}")]
    Credentials { cluster: String, why: String },
    #[error("cluster {cluster}: cannot {action} {what}: {source}")]
    Api {
        cluster: String,
        action: &'static str,
        what: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// A cluster as sessions reach it.
#[derive(Clone)]
pub struct Reach {
    pub client: Client,
    /// A client of its own for the waits' watches (`ClusterTarget::watch_client`).
    pub watches: Client,
    /// What helm is told to target (the same cluster as the clients).
    pub target: ClusterTarget,
}

impl Reach {
    /// Whether the cluster's API server answers: `cluster` is unreachable otherwise.
    async fn check_reachable(&self, cluster: &str) -> Result<(), FleetError> {
        self.client
            .apiserver_version()
            .await
            .map(|_| ())
            .map_err(|source| FleetError::Unreachable {
                cluster: cluster.to_owned(),
                source: Box::new(source),
            })
    }
}

/// How the sessions against attached clusters run: as the primary's own.
#[derive(Clone)]
pub struct SessionSettings {
    /// The primary's helm runner, told to target each attached cluster in turn.
    pub helm: Helm,
    pub catalog: Arc<Catalog>,
    /// Who takes the remote ControlPlane's lease (the primary's own holder identity).
    pub holder: String,
    pub lease_wait: Duration,
    pub wait: WaitPolicy,
    pub adopt: bool,
    pub force: bool,
    pub cancel: CancellationToken,
    pub progress: Option<Arc<dyn Progress>>,
}

impl SessionSettings {
    /// Runs `request` on the ControlPlane `control_plane` of the attached cluster `cluster`, in
    /// a session against it.
    async fn run(
        &self,
        reach: &Reach,
        cluster: &str,
        control_plane: &str,
        request: Request<'_>,
    ) -> Result<ReconcileReport, FleetError> {
        self.session(reach)
            .run(control_plane, request, |_| {})
            .await
            .map_err(|source| FleetError::Session {
                cluster: cluster.to_owned(),
                source: Box::new(source),
            })
    }

    fn session(&self, reach: &Reach) -> Session {
        let helm = self.helm.for_target(reach.target.resolved());
        let mut session = Session::new(
            reach.client.clone(),
            helm,
            self.catalog.clone(),
            self.holder.clone(),
            self.lease_wait,
        )
        .with_watches(reach.watches.clone())
        .with_adopt(self.adopt)
        .with_force(self.force)
        .with_wait(self.wait)
        .with_cancel(self.cancel.clone());
        if let Some(progress) = &self.progress {
            session = session.with_progress(progress.clone());
        }
        session
    }
}

fn istiod_enabled(spec: &ControlPlaneSpec) -> bool {
    Catalog::builtin()
        .map(|catalog| {
            catalog
                .placements(spec)
                .get("istiod")
                .is_some_and(|p| p.enabled)
        })
        .unwrap_or(false)
}

/// The namespace istiod runs in (or, on a remote cluster, its remote profile is installed in).
fn istiod_namespace(catalog: &Catalog, spec: &ControlPlaneSpec) -> String {
    catalog
        .placements(spec)
        .get("istiod")
        .map(|placement| placement.namespace.clone())
        .unwrap_or_else(|| spec.mesh_namespace().to_owned())
}

/// Server-side applies a Secret smm owns (so a token never lands in an annotation).
async fn apply_secret(
    client: &Client,
    cluster: &str,
    secret: &Secret,
) -> Result<Secret, FleetError> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let mut object = serde_json::to_value(secret).expect("a Secret serializes");
    object["apiVersion"] = json!("v1");
    object["kind"] = json!("Secret");
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .map_err(|e| api_error(cluster, "apply", format!("Secret {namespace}/{name}"), e))
}

/// Writes `cluster` into the ControlPlane's `status.clusters` (replacing its earlier entry),
/// or with `None` removes it.
async fn record_status(
    client: &Client,
    control_plane: &str,
    cluster: &AttachedCluster,
) -> Result<(), FleetError> {
    update_status(client, control_plane, &cluster.name, Some(cluster)).await
}

async fn update_status(
    client: &Client,
    control_plane: &str,
    name: &str,
    entry: Option<&AttachedCluster>,
) -> Result<(), FleetError> {
    let api = Api::<ControlPlane>::all(client.clone());
    let here = "this cluster";
    let stored = api
        .get(control_plane)
        .await
        .map_err(|e| api_error(here, "read", format!("ControlPlane {control_plane}"), e))?;
    let mut clusters: Vec<AttachedCluster> = stored
        .status
        .map(|status| status.clusters)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.name != name)
        .collect();
    clusters.extend(entry.cloned());
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    // The resourceVersion makes this a compare-and-swap: two attaches at once never drop each
    // other's entry (the loser fails with a conflict and can be run again).
    let patch = json!({
        "metadata": {"resourceVersion": stored.metadata.resource_version},
        "status": {"clusters": clusters},
    });
    let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
    let write = api.patch_status(control_plane, &params, &patch).await;
    patched(write, here, "write the status of", control_plane)
}

/// A patch of the ControlPlane `control_plane` in `cluster`, its error named.
fn patched<T>(
    result: Result<T, kube::Error>,
    cluster: &str,
    action: &'static str,
    control_plane: &str,
) -> Result<(), FleetError> {
    let what = || format!("ControlPlane {control_plane}");
    result
        .map(|_| ())
        .map_err(|e| api_error(cluster, action, what(), e))
}

fn api_error(cluster: &str, action: &'static str, what: String, source: kube::Error) -> FleetError {
    FleetError::Api {
        cluster: cluster.to_owned(),
        action,
        what,
        source: Box::new(source),
    }
}

/// The API of the Istio config kind `object` is (`networking.istio.io/v1` Gateway or
/// VirtualService), in its namespace.
fn istio_config_api(client: &Client, object: &serde_json::Value) -> Api<kube::api::DynamicObject> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let gvk = kube::api::GroupVersionKind::gvk("networking.istio.io", "v1", kind);
    let plural = format!("{}s", kind.to_lowercase());
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, &plural);
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Server-side applies a piece of Istio config smm owns.
async fn apply_istio_config(
    client: &Client,
    cluster: &str,
    object: &serde_json::Value,
) -> Result<(), FleetError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let what = format!("{} {name}", object["kind"].as_str().unwrap_or_default());
    istio_config_api(client, object)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(|e| api_error(cluster, "apply", what, e))?;
    Ok(())
}

/// The spec of the remote cluster `attachment` names, from the primary's spec.
fn remote_spec(
    catalog: &Catalog,
    control_plane: &str,
    primary: &ControlPlaneSpec,
    attachment: &crate::mesh::multicluster::Attachment,
) -> Result<ControlPlaneSpec, FleetError> {
    let placement =
        crate::mesh::multicluster::check_attachment(control_plane, primary, attachment)?;
    let address = attachment.pilot_address.as_deref().unwrap_or_default();
    let revision = crate::mesh::revisions::strategy::active(primary)?.value;
    Ok(crate::mesh::multicluster::remote_spec(
        catalog, primary, placement, attachment, address, &revision,
    ))
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Deletes `name` through `api` (already gone: nothing to do) and notes it in the report.
async fn delete<K>(
    api: Api<K>,
    cluster: &str,
    name: &str,
    removed: &mut Vec<String>,
) -> Result<(), FleetError>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    delete_as(api, &K::kind(&()), cluster, name, removed).await
}

/// Deletes `name` (of kind `kind`, for the report) through `api`, of any kind.
async fn delete_as<K>(
    api: Api<K>,
    kind: &str,
    cluster: &str,
    name: &str,
    removed: &mut Vec<String>,
) -> Result<(), FleetError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let namespace = api.namespace().map(|n| format!("{n}/")).unwrap_or_default();
    let what = format!("{kind} {namespace}{name}");
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            removed.push(format!("{cluster}: {what}"));
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(api_error(cluster, "delete", what, source)),
    }
}

fn in_namespace<K>(client: &Client, namespace: &str) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(client.clone(), namespace)
}
