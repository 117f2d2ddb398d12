//! Namespaces' labels, changed in place with a JSON merge patch: labels not named are kept, and
//! a label given as null is removed.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
#[error("namespace {namespace}: {source}")]
pub struct LabelError {
    namespace: String,
    #[source]
    source: kube::Error,
}

/// Merges `labels` (a JSON object) into the labels of `namespace`; a null value removes that
/// label.
pub async fn merge_labels(
    client: &Client,
    namespace: &str,
    labels: serde_json::Value,
) -> Result<(), LabelError> {
    let patch = json!({"metadata": {"labels": labels}});
    Api::<Namespace>::all(client.clone())
        .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|source| LabelError {
            namespace: namespace.to_owned(),
            source,
        })
}
