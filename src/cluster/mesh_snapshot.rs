//! Reads the objects that say which Istio revisions exist and what uses them
//! ([`MeshSnapshot`], judged by `mesh::revisions`): the pods that matter, every namespace, the
//! revisions' webhooks, and the mesh's istiod Deployments. Reads are consistent ones (from etcd,
//! not the API server's cache), since a revision may be removed on what they say.

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::mesh::revisions::proxies::proxy_mesh_namespace;
use crate::mesh::revisions::usage::{MeshSnapshot, POD_INJECT_LABEL, REVISION_LABEL};

/// The label istiod's injector adds to every pod it injects (`istio` unless the pod set it).
/// Pods carry no label that says "injected" for sure, only the annotation
/// `sidecar.istio.io/status`, which no selector reaches; a pod whose owner removed this label
/// after injection is therefore missed.
const INJECTED_LABEL: &str = "security.istio.io/tlsMode";
/// istiod's Deployments, as the istiod chart labels them.
const ISTIOD_SELECTOR: &str = "app=istiod";

#[derive(Debug, thiserror::Error)]
#[error("reading the mesh's {what}: {source}")]
pub struct SnapshotError {
    what: &'static str,
    #[source]
    source: kube::Error,
}

/// The snapshot of the mesh whose istiods run in `mesh_namespace`. Pods are read by label, in
/// three lists (a selector cannot say "or"): injected ones (finished ones included), and those
/// whose own `istio.io/rev` or `sidecar.istio.io/inject` may select a revision; proxies that
/// dial another mesh's istiod are left out.
pub async fn read(client: &Client, mesh_namespace: &str) -> Result<MeshSnapshot, SnapshotError> {
    let pods_api = Api::<Pod>::all(client.clone());
    let mut pods = Vec::new();
    let mut seen = BTreeSet::new();
    for selector in [INJECTED_LABEL, REVISION_LABEL, POD_INJECT_LABEL] {
        let listed = list(&pods_api, "pods", selector).await?;
        for pod in listed {
            // A proxy of another mesh's istiod (its revisions may share our revisions' names).
            let other_mesh = proxy_mesh_namespace(&pod).is_some_and(|ns| ns != mesh_namespace);
            if !other_mesh && seen.insert((pod.namespace(), pod.name_any())) {
                pods.push(pod);
            }
        }
    }
    Ok(MeshSnapshot {
        pods,
        namespaces: list(&Api::<Namespace>::all(client.clone()), "namespaces", "").await?,
        injectors: list(
            &Api::<MutatingWebhookConfiguration>::all(client.clone()),
            "MutatingWebhookConfigurations",
            REVISION_LABEL,
        )
        .await?,
        validators: list(
            &Api::<ValidatingWebhookConfiguration>::all(client.clone()),
            "ValidatingWebhookConfigurations",
            REVISION_LABEL,
        )
        .await?,
        istiods: list(
            &Api::<Deployment>::namespaced(client.clone(), mesh_namespace),
            "istiod Deployments",
            ISTIOD_SELECTOR,
        )
        .await?,
    })
}

/// Every object of `api` that `selector` selects (all of them for `""`).
async fn list<K>(api: &Api<K>, what: &'static str, selector: &str) -> Result<Vec<K>, SnapshotError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default().labels(selector))
        .await
        .map(|list| list.items)
        .map_err(|source| SnapshotError { what, source })
}
