//! `detach`: a cluster leaves the mesh, and everything the attach made goes with it.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use super::created::{CREATED_ANNOTATION, Created, remove_created};
use super::{
    FleetError, Reach, SessionSettings, api_error, delete, in_namespace, istiod_namespace,
    update_status,
};
use crate::api::names::SMM_NAMESPACE;
use crate::api::{ClusterModel, ControlPlane};
use crate::cluster::control_plane;
use crate::cluster::lease::lease_name;
use crate::engine::report::ReconcileReport;
use crate::engine::session::Request;
use crate::mesh::multicluster::{
    self, MANAGER_ACCOUNT, MANAGER_TOKEN_SECRET, READER_TOKEN_SECRET, made_for, model_of,
    remote_secret_name,
};

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
/// mesh (its ControlPlane's components, then the ControlPlane), smm's manager account and the
/// namespaces and CRDs the first attach created, when nothing of anyone else's is left in them.
pub async fn detach(
    primary: &Client,
    attached: &Reach,
    control_plane: &str,
    cluster: &str,
    settings: &SessionSettings,
) -> Result<DetachReport, FleetError> {
    let primary_cp = control_plane::load(primary, control_plane)
        .await?
        .ok_or_else(|| FleetError::NoControlPlane {
            name: control_plane.to_owned(),
        })?;
    let here = primary_cp
        .spec
        .multi_cluster
        .as_ref()
        .map(|mc| mc.cluster_name.clone())
        .unwrap_or_default();
    let primary_namespace = istiod_namespace(&settings.catalog, &primary_cp.spec);
    let secret_name = remote_secret_name(cluster);
    let secrets = in_namespace::<Secret>(primary, &primary_namespace);
    let secret = attached_secret(&secrets, &here, control_plane, cluster).await?;
    let mut report = DetachReport {
        cluster: cluster.to_owned(),
        removed: Vec::new(),
        remote: None,
    };
    // istiod lets go of the cluster first, so nothing it manages there is left half-managed.
    delete(secrets, &here, &secret_name, &mut report.removed).await?;
    let manager = multicluster::manager_secret_name(cluster);
    delete(
        in_namespace::<Secret>(primary, SMM_NAMESPACE),
        &here,
        &manager,
        &mut report.removed,
    )
    .await?;
    match model_of(&secret) {
        ClusterModel::Remote => {
            let namespace = primary_cp.spec.mesh_namespace().to_owned();
            remove_remote(
                attached,
                control_plane,
                cluster,
                &namespace,
                settings,
                &mut report,
            )
            .await?;
        }
        ClusterModel::Primary => {
            let remote = &attached.client;
            let theirs = control_plane::load(remote, control_plane).await?;
            let attached_namespace = theirs
                .map(|cp| istiod_namespace(&settings.catalog, &cp.spec))
                .unwrap_or_else(|| primary_namespace.clone());
            let removed = &mut report.removed;
            let in_theirs = || in_namespace::<Secret>(remote, &attached_namespace);
            delete(in_theirs(), cluster, &remote_secret_name(&here), removed).await?;
            delete(in_theirs(), cluster, READER_TOKEN_SECRET, removed).await?;
            let ours = in_namespace::<Secret>(primary, &primary_namespace);
            delete(ours, &here, READER_TOKEN_SECRET, removed).await?;
        }
    }
    if !other_networks_left(&primary_cp, cluster) {
        for object in multicluster::istiod_exposure(&primary_namespace, "", control_plane) {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let kind = object["kind"].as_str().unwrap_or_default();
            let api = super::istio_config_api(primary, &object);
            super::delete_as(api, kind, &here, name, &mut report.removed).await?;
        }
    }
    update_status(primary, control_plane, cluster, None).await?;
    Ok(report)
}

/// Whether a remote cluster on another network than this one's stays attached once `leaving`
/// has gone: istiod stays exposed on the east-west gateway for it.
fn other_networks_left(primary: &ControlPlane, leaving: &str) -> bool {
    let here = primary
        .spec
        .multi_cluster
        .as_ref()
        .and_then(|mc| mc.network.clone());
    let clusters = primary.status.iter().flat_map(|status| &status.clusters);
    clusters
        .filter(|c| c.name != leaving && c.model == ClusterModel::Remote)
        .any(|c| c.network != here)
}

/// The remote secret smm made for `cluster` and `control_plane` in `secrets`: what says the
/// cluster is attached, and how.
async fn attached_secret(
    secrets: &Api<Secret>,
    here: &str,
    control_plane: &str,
    cluster: &str,
) -> Result<Secret, FleetError> {
    let name = remote_secret_name(cluster);
    let namespace = secrets.namespace().unwrap_or_default().to_owned();
    let found = secrets.get_opt(&name).await;
    let found =
        found.map_err(|e| api_error(here, "read", format!("Secret {namespace}/{name}"), e))?;
    found
        .filter(|secret| made_for(secret, control_plane))
        .ok_or_else(|| FleetError::NotAttached {
            cluster: cluster.to_owned(),
            control_plane: control_plane.to_owned(),
            namespace,
            secret: name,
        })
}

/// A remote cluster's part: its reader token and smm's manager account, its ControlPlane's
/// components, the ControlPlane and its lease, then what the first attach created.
async fn remove_remote(
    attached: &Reach,
    control_plane: &str,
    cluster: &str,
    mesh_namespace: &str,
    settings: &SessionSettings,
    report: &mut DetachReport,
) -> Result<(), FleetError> {
    let remote = &attached.client;
    let existing = control_plane::load(remote, control_plane).await?;
    let created: Created = existing
        .as_ref()
        .and_then(|cp| cp.annotations().get(CREATED_ANNOTATION).cloned())
        .and_then(|record| serde_json::from_str(&record).ok())
        .unwrap_or_default();
    let namespace = existing
        .as_ref()
        .map(|cp| istiod_namespace(&settings.catalog, &cp.spec))
        .unwrap_or_else(|| mesh_namespace.to_owned());
    let removed = &mut report.removed;
    delete(
        in_namespace::<Secret>(remote, &namespace),
        cluster,
        READER_TOKEN_SECRET,
        removed,
    )
    .await?;
    delete(
        Api::<ClusterRoleBinding>::all(remote.clone()),
        cluster,
        MANAGER_ACCOUNT,
        removed,
    )
    .await?;
    delete(
        in_namespace::<Secret>(remote, SMM_NAMESPACE),
        cluster,
        MANAGER_TOKEN_SECRET,
        removed,
    )
    .await?;
    delete(
        in_namespace::<ServiceAccount>(remote, SMM_NAMESPACE),
        cluster,
        MANAGER_ACCOUNT,
        removed,
    )
    .await?;
    if existing.is_some() {
        let run = settings
            .run(attached, cluster, control_plane, Request::RemoveAll)
            .await?;
        let uninstalled = run.succeeded();
        report.remote = Some(run);
        if !uninstalled {
            return Err(FleetError::RemoteNotRemoved {
                cluster: cluster.to_owned(),
                why: format!("the uninstall of ControlPlane {control_plane} there did not finish"),
            });
        }
        let removed = &mut report.removed;
        delete(
            Api::<ControlPlane>::all(remote.clone()),
            cluster,
            control_plane,
            removed,
        )
        .await?;
        let lease = lease_name(control_plane);
        delete(
            in_namespace::<Lease>(remote, SMM_NAMESPACE),
            cluster,
            &lease,
            removed,
        )
        .await?;
    }
    remove_created(remote, cluster, &created, &mut report.removed).await
}
