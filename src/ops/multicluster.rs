//! `smm cluster attach|detach|status`: one mesh over several clusters. Attaching a cluster is a
//! layer above the reconcile session, never a session with two clients: a remote cluster's
//! part (Istio's CRDs and istiod's remote profile) is a ControlPlane of its own in that cluster,
//! reconciled by a session against it; what joins the two (the reader's token there, the remote
//! secret here) is made around the sessions; the primary's ControlPlane lists the attached
//! clusters in its status.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::json;

use super::{OpsError, Reach, ReconcileOptions};
use crate::api::names::{SMM_NAMESPACE, TOPOLOGY_CONTROL_PLANES};
use crate::api::{AttachedCluster, ClusterModel, ControlPlane, ControlPlaneSpec};
use crate::cluster::control_plane;
use crate::cluster::objects::FIELD_MANAGER;
use crate::desired::resolved::Resolved;
use crate::engine::report::ReconcileReport;
use crate::engine::session::Request;
use crate::mesh::catalog::Catalog;
use crate::mesh::multicluster::{
    self, Attachment, AttachmentError, READER_TOKEN_SECRET, ReaderCredentials, model_of,
    remote_secret_name,
};
use crate::mesh::revisions::strategy;

/// How long the controller-manager may take to fill in the reader's token Secret.
const TOKEN_WAIT: Duration = Duration::from_secs(30);
/// How long a probe of an attached cluster's API server may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The annotation on a remote cluster's ControlPlane that lists what the attach created there
/// (namespaces, CRDs), so a detach removes exactly that and nothing that was there before.
const CREATED_ANNOTATION: &str = "smm.dev/created-by-attach";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    #[error("ControlPlane {name} not found in this cluster: install the mesh first")]
    NoControlPlane { name: String },
    #[error("cluster {cluster}: cannot reach its API server: {source}")]
    Unreachable {
        cluster: String,
        #[source]
        source: kube::Error,
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
        "cluster {cluster}: the reader token Secret {namespace}/{READER_TOKEN_SECRET} got no \
         token within {}s (is the controller-manager's token controller running?)",
        TOKEN_WAIT.as_secs()
    )]
    NoToken { cluster: String, namespace: String },
    #[error(
        "cluster {cluster} is not attached to ControlPlane {control_plane} (no remote secret {namespace}/{secret} made by smm)"
    )]
    NotAttached {
        cluster: String,
        control_plane: String,
        namespace: String,
        secret: String,
    },
    #[error("cluster {cluster}: the remote cluster's part was not removed: {why}")]
    RemoteNotRemoved { cluster: String, why: String },
    #[error("cluster {cluster}: cannot {action} {what}: {source}")]
    Api {
        cluster: String,
        action: &'static str,
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// What `smm cluster attach` did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachReport {
    pub cluster: AttachedCluster,
    /// The remote cluster's own reconcile (a remote cluster only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<ReconcileReport>,
    /// The remote secrets made or refreshed, as `cluster/namespace/name`.
    pub remote_secrets: Vec<String>,
}

/// The two ends of an attach: this cluster (the primary) and the one attached.
pub struct Clusters {
    pub primary: Reach,
    pub attached: Reach,
}

/// Where each istiod reaches the other cluster's API server.
pub struct Servers {
    /// The attached cluster's, as the primary's istiod reaches it.
    pub attached: String,
    /// This cluster's, as the attached cluster's istiod reaches it (read for a primary only).
    pub primary: String,
}

/// Attaches a cluster to the mesh of the ControlPlane `control_plane`, idempotently: a remote
/// cluster gets Istio's CRDs and istiod's remote profile (a ControlPlane of its own there,
/// reconciled like any other), both get what the other's istiod reads them with. Refused
/// before anything is written when the cluster belongs to another mesh.
pub async fn attach(
    clusters: Clusters,
    servers: &Servers,
    control_plane: &str,
    attachment: &Attachment,
    options: ReconcileOptions,
) -> Result<AttachReport, OpsError> {
    let cluster = attachment.name.as_str();
    let primary_cp = control_plane::load(&clusters.primary.client, control_plane)
        .await?
        .ok_or_else(|| ClusterError::NoControlPlane {
            name: control_plane.to_owned(),
        })?;
    let primary_spec = &primary_cp.spec;
    let placement = multicluster::check_attachment(control_plane, primary_spec, attachment)
        .map_err(ClusterError::from)?;
    let mesh_id = placement.mesh_id(primary_spec.trust_domain()).to_owned();
    let remote = &clusters.attached.client;
    remote
        .apiserver_version()
        .await
        .map_err(|source| ClusterError::Unreachable {
            cluster: cluster.to_owned(),
            source,
        })?;
    let existing = control_plane::load(remote, control_plane).await?;
    check_not_elsewhere(remote, attachment, control_plane, primary_spec).await?;
    let primary_namespace = istiod_namespace(&clusters.primary.catalog, primary_spec);
    let mut report = AttachReport {
        cluster: AttachedCluster {
            name: cluster.to_owned(),
            model: attachment.model,
            network: attachment
                .network
                .clone()
                .or_else(|| placement.network.clone()),
            reachable: true,
            remote_secret_created: None,
            message: None,
            last_probe_time: Some(now()),
        },
        remote: None,
        remote_secrets: Vec::new(),
    };
    let attached_namespace = match attachment.model {
        ClusterModel::Remote => {
            let address = attachment.pilot_address.as_deref().unwrap_or_default();
            let revision = strategy::active(primary_spec)?.value;
            let spec = multicluster::remote_spec(
                &clusters.attached.catalog,
                primary_spec,
                placement,
                attachment,
                address,
                &revision,
            );
            let namespace = spec.mesh_namespace().to_owned();
            let catalog = clusters.attached.catalog.clone();
            let resolved = Resolved::new(&catalog, control_plane, spec)?;
            let created = absent_before(remote, cluster, &resolved).await?;
            let run = super::reconcile(
                clusters.attached.clone(),
                control_plane,
                Request::Replace(Box::new(resolved)),
                options,
                |_| {},
            )
            .await?;
            record_created(remote, cluster, control_plane, existing.as_ref(), &created).await?;
            let succeeded = run.succeeded();
            report.remote = Some(run);
            if !succeeded {
                report.cluster.message = Some(format!(
                    "the remote cluster's ControlPlane {control_plane} did not reach its desired \
                     state: see its status there"
                ));
                record_status(&clusters.primary.client, control_plane, &report.cluster).await?;
                return Ok(report);
            }
            namespace
        }
        ClusterModel::Primary => {
            let spec = existing.as_ref().map(|cp| &cp.spec);
            let same_mesh = spec
                .and_then(|spec| spec.multi_cluster.as_ref())
                .is_some_and(|theirs| theirs.mesh_id(spec.unwrap().trust_domain()) == mesh_id);
            if !same_mesh {
                return Err(ClusterError::NotAPrimary {
                    cluster: cluster.to_owned(),
                    control_plane: control_plane.to_owned(),
                    mesh: mesh_id,
                }
                .into());
            }
            istiod_namespace(&clusters.attached.catalog, spec.unwrap())
        }
    };
    // The primary's istiod reads the attached cluster.
    let credentials = reader_credentials(
        remote,
        cluster,
        &attached_namespace,
        control_plane,
        &servers.attached,
    )
    .await?;
    let secret = multicluster::remote_secret(
        &primary_namespace,
        control_plane,
        cluster,
        attachment.model,
        &credentials,
    );
    let applied = apply_secret(&clusters.primary.client, &placement.cluster_name, &secret).await?;
    report.cluster.remote_secret_created = applied.metadata.creation_timestamp.clone();
    report.remote_secrets.push(format!(
        "{}/{primary_namespace}/{}",
        placement.cluster_name,
        applied.name_any()
    ));
    // A primary's istiod reads this cluster in turn.
    if attachment.model == ClusterModel::Primary {
        let credentials = reader_credentials(
            &clusters.primary.client,
            &placement.cluster_name,
            &primary_namespace,
            control_plane,
            &servers.primary,
        )
        .await?;
        let secret = multicluster::remote_secret(
            &attached_namespace,
            control_plane,
            &placement.cluster_name,
            ClusterModel::Primary,
            &credentials,
        );
        let applied = apply_secret(remote, cluster, &secret).await?;
        report.remote_secrets.push(format!(
            "{cluster}/{attached_namespace}/{}",
            applied.name_any()
        ));
    }
    record_status(&clusters.primary.client, control_plane, &report.cluster).await?;
    Ok(report)
}

/// Refuses a cluster that another mesh (or another primary, or another name) has: any of its
/// ControlPlanes in another mesh or served by another primary, the one of the same name
/// attached under another cluster name or running a mesh of its own when attached as a remote,
/// or a mesh namespace annotated for another primary's istiod.
async fn check_not_elsewhere(
    remote: &Client,
    attachment: &Attachment,
    control_plane: &str,
    primary_spec: &ControlPlaneSpec,
) -> Result<(), OpsError> {
    let cluster = attachment.name.as_str();
    let ours = primary_spec
        .multi_cluster
        .as_ref()
        .expect("checked by check_attachment");
    let mesh_id = ours.mesh_id(primary_spec.trust_domain());
    let other = |why: String| ClusterError::OtherMesh {
        cluster: cluster.to_owned(),
        why,
    };
    for theirs in control_plane::list(remote).await? {
        let name = theirs.name_any();
        let spec = &theirs.spec;
        let same = name == control_plane;
        let Some(mc) = &spec.multi_cluster else {
            if same && attachment.model == ClusterModel::Remote && istiod_enabled(spec) {
                let why = format!("its ControlPlane {name} runs a mesh of one cluster");
                return Err(other(why).into());
            }
            continue;
        };
        let their_mesh = mc.mesh_id(spec.trust_domain());
        let why = if their_mesh != mesh_id {
            format!("its ControlPlane {name} is in mesh {their_mesh}, this one is {mesh_id}")
        } else if let Some(primary) = mc
            .primary
            .as_ref()
            .filter(|p| p.cluster_name != ours.cluster_name)
        {
            format!("it is a remote of cluster {}", primary.cluster_name)
        } else if same && mc.cluster_name != cluster {
            format!("it is attached as cluster {}", mc.cluster_name)
        } else if same && mc.primary.is_none() && attachment.model == ClusterModel::Remote {
            format!(
                "its ControlPlane {name} runs istiod of its own (a primary); attach it with \
                 --model primary"
            )
        } else {
            continue;
        };
        return Err(other(why).into());
    }
    let namespace = primary_spec.mesh_namespace();
    let found = Api::<Namespace>::all(remote.clone())
        .get_opt(namespace)
        .await
        .map_err(|e| api_error(cluster, "read", format!("namespace {namespace}"), e))?;
    let served_by = found.as_ref().and_then(|ns| {
        ns.annotations()
            .get(TOPOLOGY_CONTROL_PLANES)
            .filter(|primaries| primaries.split(',').all(|p| p.trim() != ours.cluster_name))
            .cloned()
    });
    match served_by {
        Some(primaries) => Err(other(format!(
            "its namespace {namespace} is annotated {TOPOLOGY_CONTROL_PLANES}={primaries}"
        ))
        .into()),
        None => Ok(()),
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

/// What an attach created in a remote cluster, recorded on its ControlPlane there.
#[derive(Debug, Default, serde::Deserialize, Serialize)]
struct Created {
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    crds: Vec<String>,
}

/// What a remote cluster lacks before its first attach and the attach will create: the
/// namespaces and the CRDs of the resolved components, the lease namespace and the
/// ControlPlane CRD.
async fn absent_before(
    remote: &Client,
    cluster: &str,
    resolved: &Resolved<'_>,
) -> Result<Created, ClusterError> {
    let desired = resolved.components();
    let mut namespaces: BTreeSet<String> = desired
        .iter()
        .filter(|d| d.enabled)
        .map(|d| d.release.namespace.clone())
        .collect();
    namespaces.insert(SMM_NAMESPACE.to_owned());
    let mut crds: BTreeSet<String> = desired
        .iter()
        .filter(|d| d.enabled)
        .flat_map(|d| d.native.iter().filter(|n| n.is_crd()))
        .map(|n| n.name().to_owned())
        .collect();
    crds.insert(<ControlPlane as kube::CustomResourceExt>::crd_name().to_owned());
    let namespace_api = Api::<Namespace>::all(remote.clone());
    let crd_api = Api::<CustomResourceDefinition>::all(remote.clone());
    let mut created = Created::default();
    for namespace in namespaces {
        let found = namespace_api.get_opt(&namespace).await;
        let found =
            found.map_err(|e| api_error(cluster, "read", format!("namespace {namespace}"), e))?;
        if found.is_none() {
            created.namespaces.push(namespace);
        }
    }
    for crd in crds {
        let found = crd_api.get_opt(&crd).await;
        let found = found.map_err(|e| api_error(cluster, "read", format!("CRD {crd}"), e))?;
        if found.is_none() {
            created.crds.push(crd);
        }
    }
    Ok(created)
}

/// Records what the first attach created on the remote cluster's ControlPlane; a later attach
/// (the cluster already had them) keeps the first record.
async fn record_created(
    remote: &Client,
    cluster: &str,
    control_plane: &str,
    existing: Option<&ControlPlane>,
    created: &Created,
) -> Result<(), ClusterError> {
    let recorded = existing.is_some_and(|cp| cp.annotations().contains_key(CREATED_ANNOTATION));
    if recorded {
        return Ok(());
    }
    let record = serde_json::to_string(created).expect("a list of names serializes");
    let patch = json!({"metadata": {"annotations": {CREATED_ANNOTATION: record}}});
    Api::<ControlPlane>::all(remote.clone())
        .patch(
            control_plane,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| {
            api_error(
                cluster,
                "annotate",
                format!("ControlPlane {control_plane}"),
                e,
            )
        })?;
    Ok(())
}

/// The reader account's token in `namespace` of `cluster`, made if missing and waited for until
/// the controller-manager has filled it in, with the cluster's CA.
async fn reader_credentials(
    client: &Client,
    cluster: &str,
    namespace: &str,
    control_plane: &str,
    server: &str,
) -> Result<ReaderCredentials, ClusterError> {
    let secret = multicluster::reader_token_secret(namespace, control_plane);
    apply_secret(client, cluster, &secret).await?;
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + TOKEN_WAIT;
    loop {
        let found = api.get_opt(READER_TOKEN_SECRET).await.map_err(|e| {
            api_error(
                cluster,
                "read",
                format!("Secret {namespace}/{READER_TOKEN_SECRET}"),
                e,
            )
        })?;
        let data = found.and_then(|secret| secret.data).unwrap_or_default();
        let token = data
            .get("token")
            .and_then(|t| String::from_utf8(t.0.clone()).ok());
        if let (Some(token), Some(ca)) = (token, data.get("ca.crt")) {
            return Ok(ReaderCredentials {
                server: server.to_owned(),
                certificate_authority: ca.0.clone(),
                token,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ClusterError::NoToken {
                cluster: cluster.to_owned(),
                namespace: namespace.to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Server-side applies a Secret smm owns (so a token never lands in an annotation).
async fn apply_secret(
    client: &Client,
    cluster: &str,
    secret: &Secret,
) -> Result<Secret, ClusterError> {
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
) -> Result<(), ClusterError> {
    update_status(client, control_plane, &cluster.name, Some(cluster)).await
}

async fn update_status(
    client: &Client,
    control_plane: &str,
    name: &str,
    entry: Option<&AttachedCluster>,
) -> Result<(), ClusterError> {
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
    api.patch_status(
        control_plane,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| {
        api_error(
            here,
            "write the status of",
            format!("ControlPlane {control_plane}"),
            e,
        )
    })?;
    Ok(())
}

fn api_error(
    cluster: &str,
    action: &'static str,
    what: String,
    source: kube::Error,
) -> ClusterError {
    ClusterError::Api {
        cluster: cluster.to_owned(),
        action,
        what,
        source,
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// What `smm cluster detach` removed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DetachReport {
    pub cluster: String,
    /// What was removed, as `cluster: kind namespace/name`.
    pub removed: Vec<String>,
    /// The remote cluster's own reconcile that uninstalled its part (a remote cluster only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<ReconcileReport>,
}

/// Detaches `cluster` from the mesh of `control_plane`, removing exactly what the attach made:
/// the remote secrets on both sides, the reader tokens, and on a remote cluster its part of the
/// mesh (its ControlPlane's components, then the ControlPlane) and the namespaces and CRDs the
/// first attach created, when nothing of anyone else's is left in them.
pub async fn detach(
    clusters: Clusters,
    control_plane: &str,
    cluster: &str,
    options: ReconcileOptions,
) -> Result<DetachReport, OpsError> {
    let primary = &clusters.primary.client;
    let primary_cp = control_plane::load(primary, control_plane)
        .await?
        .ok_or_else(|| ClusterError::NoControlPlane {
            name: control_plane.to_owned(),
        })?;
    let primary_spec = &primary_cp.spec;
    let primary_name = primary_spec
        .multi_cluster
        .as_ref()
        .map(|mc| mc.cluster_name.clone())
        .unwrap_or_default();
    let primary_namespace = istiod_namespace(&clusters.primary.catalog, primary_spec);
    let secret_name = remote_secret_name(cluster);
    let secrets = Api::<Secret>::namespaced(primary.clone(), &primary_namespace);
    let secret = secrets
        .get_opt(&secret_name)
        .await
        .map_err(|e| {
            api_error(
                "this cluster",
                "read",
                format!("Secret {primary_namespace}/{secret_name}"),
                e,
            )
        })?
        .filter(|secret| made_for(secret, control_plane))
        .ok_or_else(|| ClusterError::NotAttached {
            cluster: cluster.to_owned(),
            control_plane: control_plane.to_owned(),
            namespace: primary_namespace.clone(),
            secret: secret_name.clone(),
        })?;
    let model = model_of(&secret);
    let mut report = DetachReport {
        cluster: cluster.to_owned(),
        removed: Vec::new(),
        remote: None,
    };
    let remote = &clusters.attached.client;
    // istiod lets go of the cluster first, so nothing it manages there is left half-managed.
    delete(
        in_namespace::<Secret>(primary, &primary_namespace),
        &primary_name,
        &secret_name,
        &mut report,
    )
    .await?;
    match model {
        ClusterModel::Remote => {
            let existing = control_plane::load(remote, control_plane).await?;
            let created: Created = existing
                .as_ref()
                .and_then(|cp| cp.annotations().get(CREATED_ANNOTATION).cloned())
                .and_then(|record| serde_json::from_str(&record).ok())
                .unwrap_or_default();
            let attached_namespace = existing
                .as_ref()
                .map(|cp| istiod_namespace(&clusters.attached.catalog, &cp.spec))
                .unwrap_or_else(|| primary_namespace.clone());
            delete(
                in_namespace::<Secret>(remote, &attached_namespace),
                cluster,
                READER_TOKEN_SECRET,
                &mut report,
            )
            .await?;
            if existing.is_some() {
                let run = super::reconcile(
                    clusters.attached.clone(),
                    control_plane,
                    Request::RemoveAll,
                    options,
                    |_| {},
                )
                .await?;
                let removed = run.succeeded();
                report.remote = Some(run);
                if !removed {
                    return Err(ClusterError::RemoteNotRemoved {
                        cluster: cluster.to_owned(),
                        why: format!(
                            "the uninstall of ControlPlane {control_plane} there did not finish"
                        ),
                    }
                    .into());
                }
                delete(
                    Api::<ControlPlane>::all(remote.clone()),
                    cluster,
                    control_plane,
                    &mut report,
                )
                .await?;
                let lease = crate::cluster::lease::lease_name(control_plane);
                delete(
                    in_namespace::<k8s_openapi::api::coordination::v1::Lease>(
                        remote,
                        SMM_NAMESPACE,
                    ),
                    cluster,
                    &lease,
                    &mut report,
                )
                .await?;
            }
            remove_created(remote, cluster, &created, &mut report).await?;
        }
        ClusterModel::Primary => {
            let attached_namespace = control_plane::load(remote, control_plane)
                .await?
                .map(|cp| istiod_namespace(&clusters.attached.catalog, &cp.spec))
                .unwrap_or_else(|| primary_namespace.clone());
            let reverse = remote_secret_name(&primary_name);
            delete(
                in_namespace::<Secret>(remote, &attached_namespace),
                cluster,
                &reverse,
                &mut report,
            )
            .await?;
            delete(
                in_namespace::<Secret>(remote, &attached_namespace),
                cluster,
                READER_TOKEN_SECRET,
                &mut report,
            )
            .await?;
            delete(
                in_namespace::<Secret>(primary, &primary_namespace),
                &primary_name,
                READER_TOKEN_SECRET,
                &mut report,
            )
            .await?;
        }
    }
    update_status(primary, control_plane, cluster, None).await?;
    Ok(report)
}

fn made_for(secret: &Secret, control_plane: &str) -> bool {
    let labels = secret.labels();
    labels
        .get(multicluster::CONTROL_PLANE_LABEL)
        .map(String::as_str)
        == Some(control_plane)
        && labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str)
            == Some("smm")
}

/// Removes the CRDs and namespaces the first attach created, each only when nothing is left in
/// it: a CRD with objects, or a namespace with pods, someone else uses now.
async fn remove_created(
    remote: &Client,
    cluster: &str,
    created: &Created,
    report: &mut DetachReport,
) -> Result<(), ClusterError> {
    for crd in &created.crds {
        if crd_in_use(remote, crd).await.unwrap_or(true) {
            tracing::info!(cluster, crd, "kept: it has objects now");
            continue;
        }
        delete(
            Api::<CustomResourceDefinition>::all(remote.clone()),
            cluster,
            crd,
            report,
        )
        .await?;
    }
    for namespace in &created.namespaces {
        let pods = Api::<Pod>::namespaced(remote.clone(), namespace)
            .list_metadata(&ListParams::default().limit(1))
            .await;
        if pods.map_or(true, |pods| !pods.items.is_empty()) {
            tracing::info!(cluster, namespace, "kept: it has pods now");
            continue;
        }
        delete(
            Api::<Namespace>::all(remote.clone()),
            cluster,
            namespace,
            report,
        )
        .await?;
    }
    Ok(())
}

/// Whether any object of the CRD `name` exists (any of its served versions).
async fn crd_in_use(client: &Client, name: &str) -> Result<bool, kube::Error> {
    let Some(crd) = Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(name)
        .await?
    else {
        return Ok(false);
    };
    let Some(version) = crd.spec.versions.iter().find(|v| v.served) else {
        return Ok(false);
    };
    let gvk =
        kube::api::GroupVersionKind::gvk(&crd.spec.group, &version.name, &crd.spec.names.kind);
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural);
    let api = Api::<kube::api::DynamicObject>::all_with(client.clone(), &resource);
    Ok(!api
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .items
        .is_empty())
}

/// Deletes `name` through `api` (already gone: nothing to do) and notes it in the report.
async fn delete<K>(
    api: Api<K>,
    cluster: &str,
    name: &str,
    report: &mut DetachReport,
) -> Result<(), ClusterError>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let namespace = api.namespace().map(|n| format!("{n}/")).unwrap_or_default();
    let what = format!("{} {namespace}{name}", K::kind(&()));
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            report.removed.push(format!("{cluster}: {what}"));
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

/// One attached cluster as `smm cluster status` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    #[serde(flatten)]
    pub cluster: AttachedCluster,
    /// The cluster whose istiod reads it (this one) and the istiod revision serving it.
    pub served_by: String,
    pub revision: String,
}

/// Every cluster attached to `control_plane`, each probed through its remote secret (the
/// credentials istiod itself uses), and the result written into `status.clusters`.
pub async fn status(
    client: &Client,
    catalog: &Catalog,
    control_plane: &str,
) -> Result<Vec<ClusterState>, OpsError> {
    let cp = control_plane::load(client, control_plane)
        .await?
        .ok_or_else(|| ClusterError::NoControlPlane {
            name: control_plane.to_owned(),
        })?;
    let spec = &cp.spec;
    let here = spec
        .multi_cluster
        .as_ref()
        .map(|mc| mc.cluster_name.clone())
        .unwrap_or_default();
    let revision = strategy::active(spec)?.name().to_owned();
    let namespace = istiod_namespace(catalog, spec);
    let selector = multicluster::remote_secret_selector(control_plane);
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            api_error(
                "this cluster",
                "list",
                format!("remote secrets in {namespace}"),
                e,
            )
        })?;
    let recorded: Vec<AttachedCluster> = cp.status.map(|s| s.clusters).unwrap_or_default();
    let mut states = Vec::new();
    for secret in secrets.items {
        let Some(name) = secret
            .annotations()
            .get(multicluster::CLUSTER_ANNOTATION)
            .cloned()
        else {
            continue;
        };
        let probe = probe(&secret, &name).await;
        let before = recorded.iter().find(|c| c.name == name);
        let cluster = AttachedCluster {
            name: name.clone(),
            model: model_of(&secret),
            network: before.and_then(|c| c.network.clone()),
            reachable: probe.is_ok(),
            remote_secret_created: secret.metadata.creation_timestamp.clone(),
            message: probe.err(),
            last_probe_time: Some(now()),
        };
        record_status(client, control_plane, &cluster).await?;
        states.push(ClusterState {
            cluster,
            served_by: here.clone(),
            revision: revision.clone(),
        });
    }
    Ok(states)
}

/// Reaches the cluster as istiod does, with the remote secret's kubeconfig: its API server
/// answers and the reader may list Services there.
async fn probe(secret: &Secret, cluster: &str) -> Result<(), String> {
    let data = secret.data.as_ref().and_then(|data| data.get(cluster));
    let text = data.ok_or_else(|| format!("the remote secret has no key {cluster}"))?;
    let kubeconfig: Kubeconfig = serde_yaml_ng::from_slice(&text.0)
        .map_err(|err| format!("the remote secret's kubeconfig does not parse: {err}"))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|err| format!("the remote secret's kubeconfig is not usable: {err}"))?;
    config.connect_timeout = Some(PROBE_TIMEOUT);
    config.read_timeout = Some(PROBE_TIMEOUT);
    let client = Client::try_from(config).map_err(|err| err.to_string())?;
    let services = Api::<k8s_openapi::api::core::v1::Service>::all(client);
    services
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map(|_| ())
        .map_err(|err| format!("the reader cannot list Services there: {err}"))
}
