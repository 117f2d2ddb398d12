//! `attach`: a cluster joins the mesh. A remote gets its part (a ControlPlane of its own there)
//! and the manager account smm reconciles it with later; each istiod gets the reader's token of
//! the cluster it reads.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::json;

use super::created::{absent_before, record_created};
use super::{
    FleetError, Reach, SessionSettings, api_error, apply_secret, istiod_enabled, istiod_namespace,
    now, record_status,
};
use crate::api::names::{SMM_NAMESPACE, TOPOLOGY_CONTROL_PLANES};
use crate::api::{AttachedCluster, ClusterModel, ControlPlaneSpec, MultiCluster};
use crate::cluster::objects::FIELD_MANAGER;
use crate::cluster::{control_plane, trust};
use crate::desired::resolved::Resolved;
use crate::engine::report::ReconcileReport;
use crate::engine::session::Request;
use crate::mesh::catalog::Catalog;
use crate::mesh::multicluster::{
    self, Attachment, MANAGER_TOKEN_SECRET, READER_TOKEN_SECRET, ReaderCredentials,
};

/// How long the controller-manager may take to fill in a token Secret.
const TOKEN_WAIT: Duration = Duration::from_secs(30);

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

/// Where each istiod reaches the other cluster's API server.
pub struct Servers {
    /// The attached cluster's, as the primary's istiod reaches it.
    pub attached: String,
    /// This cluster's, as the attached cluster's istiod reaches it (read for a primary only).
    pub primary: String,
}

/// Attaches a cluster to the mesh of the ControlPlane `control_plane`, idempotently: a remote
/// cluster gets Istio's CRDs and istiod's remote profile (a ControlPlane of its own there,
/// reconciled like any other) and smm's manager account; both get what the other's istiod reads
/// them with. Refused before anything is written when the cluster belongs to another mesh.
pub async fn attach(
    primary: &Client,
    attached: &Reach,
    servers: &Servers,
    control_plane: &str,
    attachment: &Attachment,
    settings: &SessionSettings,
) -> Result<AttachReport, FleetError> {
    let cluster = attachment.name.as_str();
    let primary_cp = control_plane::load(primary, control_plane)
        .await?
        .ok_or_else(|| FleetError::NoControlPlane {
            name: control_plane.to_owned(),
        })?;
    let primary_spec = &primary_cp.spec;
    let placement = multicluster::check_attachment(control_plane, primary_spec, attachment)?;
    let remote = &attached.client;
    attached.check_reachable(cluster).await?;
    check_not_elsewhere(remote, attachment, control_plane, primary_spec).await?;
    let mut report = AttachReport::starting(attachment, placement);
    let attached_namespace = match attachment.model {
        ClusterModel::Remote => {
            let run =
                install_remote(attached, control_plane, primary_spec, attachment, settings).await?;
            if !settled(primary, control_plane, run, &mut report).await? {
                return Ok(report);
            }
            keep_manager_credentials(primary, remote, control_plane, attachment, servers).await?;
            primary_spec.mesh_namespace().to_owned()
        }
        ClusterModel::Primary => {
            let catalog = &settings.catalog;
            let namespace =
                their_istiod_namespace(remote, catalog, attachment, control_plane, primary_spec)
                    .await?;
            let mesh_id = placement.mesh_id(primary_spec.trust_domain());
            share_root(primary, remote, mesh_id, &namespace, cluster).await?;
            // Its own ControlPlane as it is stored: istiod installed (with the shared root)
            // before the reader's token is asked for, whose account istiod's chart makes.
            let run = settings
                .run(attached, cluster, control_plane, Request::Stored)
                .await?;
            if !settled(primary, control_plane, run, &mut report).await? {
                return Ok(report);
            }
            namespace
        }
    };
    let ends = Ends {
        primary_namespace: istiod_namespace(&settings.catalog, primary_spec),
        here: placement.cluster_name.clone(),
        attached_namespace,
    };
    let other_network = report.cluster.network != placement.network;
    if attachment.model == ClusterModel::Remote && other_network {
        expose_istiod(
            primary,
            control_plane,
            primary_spec,
            &ends.primary_namespace,
        )
        .await?;
    }
    join(
        primary,
        remote,
        servers,
        control_plane,
        attachment,
        &ends,
        &mut report,
    )
    .await?;
    record_status(primary, control_plane, &report.cluster).await?;
    Ok(report)
}

impl AttachReport {
    /// The report of an attach just begun: the cluster reachable, nothing made yet.
    fn starting(attachment: &Attachment, placement: &MultiCluster) -> Self {
        Self {
            cluster: AttachedCluster {
                name: attachment.name.clone(),
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
        }
    }
}

/// Records the attached cluster's own reconcile in the report; one that did not reach its
/// desired state is recorded in the primary's status too, and ends the attach (`false`).
async fn settled(
    primary: &Client,
    control_plane: &str,
    run: ReconcileReport,
    report: &mut AttachReport,
) -> Result<bool, FleetError> {
    let done = run.succeeded();
    report.remote = Some(run);
    if !done {
        report.cluster.message = Some(format!(
            "the attached cluster's ControlPlane {control_plane} did not reach its desired \
             state: see its status there"
        ));
        record_status(primary, control_plane, &report.cluster).await?;
    }
    Ok(done)
}

/// Reconciles the remote cluster's own ControlPlane: the primary's mesh with istiod in the
/// remote profile, recording first what the cluster lacked before (see [`CREATED_ANNOTATION`]).
async fn install_remote(
    attached: &Reach,
    control_plane: &str,
    primary_spec: &ControlPlaneSpec,
    attachment: &Attachment,
    settings: &SessionSettings,
) -> Result<ReconcileReport, FleetError> {
    let remote = &attached.client;
    let cluster = attachment.name.as_str();
    let existing = control_plane::load(remote, control_plane).await?;
    let spec = super::remote_spec(&settings.catalog, control_plane, primary_spec, attachment)?;
    let resolved = Resolved::new(&settings.catalog, control_plane, spec)?;
    let created = absent_before(remote, cluster, &resolved).await?;
    let request = Request::Replace(Box::new(resolved));
    let run = settings
        .run(attached, cluster, control_plane, request)
        .await?;
    record_created(remote, cluster, control_plane, existing.as_ref(), &created).await?;
    Ok(run)
}

/// A cluster attached as a primary runs its own ControlPlane of the same mesh: the namespace
/// its istiod runs in.
async fn their_istiod_namespace(
    remote: &Client,
    catalog: &Catalog,
    attachment: &Attachment,
    control_plane: &str,
    primary_spec: &ControlPlaneSpec,
) -> Result<String, FleetError> {
    let ours = primary_spec
        .multi_cluster
        .as_ref()
        .expect("checked by check_attachment");
    let mesh_id = ours.mesh_id(primary_spec.trust_domain()).to_owned();
    let theirs = control_plane::load(remote, control_plane).await?;
    let same_mesh = theirs.as_ref().and_then(|cp| {
        let spec = &cp.spec;
        let their_mesh = spec.multi_cluster.as_ref()?.mesh_id(spec.trust_domain());
        (their_mesh == mesh_id).then_some(spec)
    });
    let spec = same_mesh.ok_or_else(|| FleetError::NotAPrimary {
        cluster: attachment.name.clone(),
        control_plane: control_plane.to_owned(),
        mesh: mesh_id,
    })?;
    Ok(istiod_namespace(catalog, spec))
}

/// Where each cluster's istiod runs, and this cluster's name in the mesh.
struct Ends {
    primary_namespace: String,
    here: String,
    attached_namespace: String,
}

/// Exposes the primary's istiod on its east-west gateway, for a remote on another network
/// whose proxies and injector reach it there (`--pilot-address`, the gateway's address).
async fn expose_istiod(
    primary: &Client,
    control_plane: &str,
    primary_spec: &ControlPlaneSpec,
    namespace: &str,
) -> Result<(), FleetError> {
    let revision = crate::mesh::revisions::strategy::active(primary_spec)?;
    let service = match revision.value.as_str() {
        "" => "istiod".to_owned(),
        value => format!("istiod-{value}"),
    };
    for object in multicluster::istiod_exposure(namespace, &service, control_plane) {
        super::apply_istio_config(primary, "this cluster", &object).await?;
    }
    Ok(())
}

/// Gives an attached primary an intermediate CA from this mesh's root (unless it has one, or
/// its own `cacerts`), so the workloads of both clusters trust each other; one it has from
/// another root refuses the attach (`TrustError::OtherRoot`).
async fn share_root(
    primary: &Client,
    remote: &Client,
    mesh_id: &str,
    their_namespace: &str,
    cluster: &str,
) -> Result<(), FleetError> {
    let root = trust::ensure_mesh_root(primary, mesh_id).await?;
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": their_namespace}}))
            .expect("a namespace deserializes");
    apply(cluster, &namespace, Api::<Namespace>::all(remote.clone())).await?;
    let cacerts = trust::ensure_cacerts(remote, their_namespace, &root, cluster).await?;
    if cacerts == trust::Cacerts::Created {
        tracing::warn!(
            cluster,
            "made cacerts from the mesh root in {their_namespace}: its istiod signs with it once \
             it restarts"
        );
    }
    Ok(())
}

/// Makes each istiod able to read the other cluster: the primary's reads the attached one
/// through a remote secret made from the attached cluster's reader token; an attached primary
/// reads this one in turn.
async fn join(
    primary: &Client,
    remote: &Client,
    servers: &Servers,
    control_plane: &str,
    attachment: &Attachment,
    ends: &Ends,
    report: &mut AttachReport,
) -> Result<(), FleetError> {
    let cluster = attachment.name.as_str();
    let here = ends.here.as_str();
    let (primary_namespace, attached_namespace) =
        (&ends.primary_namespace, &ends.attached_namespace);
    let credentials = reader_credentials(
        remote,
        cluster,
        attached_namespace,
        control_plane,
        &servers.attached,
    )
    .await?;
    let secret = multicluster::remote_secret(
        primary_namespace,
        control_plane,
        cluster,
        attachment.model,
        &credentials,
    );
    let applied = apply_secret(primary, here, &secret).await?;
    report.cluster.remote_secret_created = applied.metadata.creation_timestamp.clone();
    report
        .remote_secrets
        .push(format!("{here}/{primary_namespace}/{}", applied.name_any()));
    if attachment.model == ClusterModel::Primary {
        let credentials = reader_credentials(
            primary,
            here,
            primary_namespace,
            control_plane,
            &servers.primary,
        )
        .await?;
        let secret = multicluster::remote_secret(
            attached_namespace,
            control_plane,
            here,
            ClusterModel::Primary,
            &credentials,
        );
        let applied = apply_secret(remote, cluster, &secret).await?;
        report.remote_secrets.push(format!(
            "{cluster}/{attached_namespace}/{}",
            applied.name_any()
        ));
    }
    Ok(())
}

/// The manager account in the remote cluster and its kubeconfig in the primary: what later
/// reconciles of the remote's part (`smm reconcile`, the operator) reach it with.
async fn keep_manager_credentials(
    primary: &Client,
    remote: &Client,
    control_plane: &str,
    attachment: &Attachment,
    servers: &Servers,
) -> Result<(), FleetError> {
    let cluster = attachment.name.as_str();
    let (account, binding, token) = multicluster::manager_account(control_plane);
    apply(
        cluster,
        &account,
        Api::<ServiceAccount>::namespaced(remote.clone(), SMM_NAMESPACE),
    )
    .await?;
    apply(
        cluster,
        &binding,
        Api::<ClusterRoleBinding>::all(remote.clone()),
    )
    .await?;
    apply_secret(remote, cluster, &token).await?;
    let credentials = filled_token(
        remote,
        cluster,
        SMM_NAMESPACE,
        MANAGER_TOKEN_SECRET,
        &servers.attached,
    )
    .await?;
    let secret = multicluster::manager_secret(control_plane, attachment, &credentials);
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": SMM_NAMESPACE}}))
        .expect("a namespace deserializes");
    apply(
        "this cluster",
        &namespace,
        Api::<Namespace>::all(primary.clone()),
    )
    .await?;
    apply_secret(primary, "this cluster", &secret).await?;
    Ok(())
}

/// Server-side applies an object smm owns.
async fn apply<K>(cluster: &str, object: &K, api: Api<K>) -> Result<(), FleetError>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(object).expect("an object serializes");
    value["apiVersion"] = json!(K::api_version(&()));
    value["kind"] = json!(K::kind(&()));
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .map_err(|e| api_error(cluster, "apply", format!("{} {name}", K::kind(&())), e))?;
    Ok(())
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
) -> Result<(), FleetError> {
    let cluster = attachment.name.as_str();
    let ours = primary_spec
        .multi_cluster
        .as_ref()
        .expect("checked by check_attachment");
    let mesh_id = ours.mesh_id(primary_spec.trust_domain());
    let other = |why: String| FleetError::OtherMesh {
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
                return Err(other(why));
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
        return Err(other(why));
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
        ))),
        None => Ok(()),
    }
}

/// The reader account's token in `namespace` of `cluster`, made if missing, with the
/// cluster's CA.
async fn reader_credentials(
    client: &Client,
    cluster: &str,
    namespace: &str,
    control_plane: &str,
    server: &str,
) -> Result<ReaderCredentials, FleetError> {
    let secret = multicluster::reader_token_secret(namespace, control_plane);
    apply_secret(client, cluster, &secret).await?;
    filled_token(client, cluster, namespace, READER_TOKEN_SECRET, server).await
}

/// A token Secret's token and CA, waited for until the controller-manager has filled them in.
async fn filled_token(
    client: &Client,
    cluster: &str,
    namespace: &str,
    name: &str,
    server: &str,
) -> Result<ReaderCredentials, FleetError> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + TOKEN_WAIT;
    loop {
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| api_error(cluster, "read", format!("Secret {namespace}/{name}"), e))?;
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
            return Err(FleetError::NoToken {
                cluster: cluster.to_owned(),
                namespace: namespace.to_owned(),
                secret: name.to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
