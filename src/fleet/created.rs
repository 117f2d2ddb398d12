//! What the first attach created in a remote cluster (namespaces, CRDs), recorded on the
//! remote's ControlPlane, so that a detach takes back exactly that and nothing that was there
//! before, nor anything someone put there since.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::json;

use super::{FleetError, api_error, delete, patched};
use crate::api::ControlPlane;
use crate::api::names::SMM_NAMESPACE;
use crate::desired::resolved::Resolved;

/// The annotation on a remote cluster's ControlPlane that lists what the attach created there
/// (namespaces, CRDs), so a detach removes exactly that and nothing that was there before.
pub(super) const CREATED_ANNOTATION: &str = "smm.dev/created-by-attach";

/// What an attach created in a remote cluster, recorded on its ControlPlane there.
#[derive(Debug, Default, serde::Deserialize, Serialize)]
pub(super) struct Created {
    #[serde(default)]
    pub(super) namespaces: Vec<String>,
    #[serde(default)]
    pub(super) crds: Vec<String>,
}

/// What a remote cluster lacks before its first attach and the attach will create: the
/// namespaces and the CRDs of the resolved components, the lease namespace and the
/// ControlPlane CRD.
pub(super) async fn absent_before(
    remote: &Client,
    cluster: &str,
    resolved: &Resolved<'_>,
) -> Result<Created, FleetError> {
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
pub(super) async fn record_created(
    remote: &Client,
    cluster: &str,
    control_plane: &str,
    existing: Option<&ControlPlane>,
    created: &Created,
) -> Result<(), FleetError> {
    let recorded = existing.is_some_and(|cp| cp.annotations().contains_key(CREATED_ANNOTATION));
    if recorded {
        return Ok(());
    }
    let record = serde_json::to_string(created).expect("a list of names serializes");
    let patch = json!({"metadata": {"annotations": {CREATED_ANNOTATION: record}}});
    let api = Api::<ControlPlane>::all(remote.clone());
    let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
    let write = api.patch(control_plane, &params, &patch).await;
    patched(write, cluster, "annotate", control_plane)?;
    Ok(())
}

/// Removes the CRDs and namespaces the first attach created, each only when nothing is left in
/// it: a CRD with objects, or a namespace with pods, someone else uses now.
pub(super) async fn remove_created(
    remote: &Client,
    cluster: &str,
    created: &Created,
    removed: &mut Vec<String>,
) -> Result<(), FleetError> {
    for crd in &created.crds {
        if crd_in_use(remote, crd).await.unwrap_or(true) {
            tracing::info!(cluster, crd, "kept: it has objects now");
            continue;
        }
        delete(
            Api::<CustomResourceDefinition>::all(remote.clone()),
            cluster,
            crd,
            removed,
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
            removed,
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
