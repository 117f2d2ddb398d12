//! Sidecar auto-injection for namespaces: the labels istiod's injector selects on. The label is
//! owned by no reconciler: smm sets it on request and leaves it alone afterwards.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

/// The labels for injection on: the default injector watches `istio-injection`, a revisioned
/// one `istio.io/rev`. Off removes both (a JSON merge patch with null deletes a label).
pub fn injection_labels(on: bool, revision: Option<&str>) -> serde_json::Value {
    match (on, revision) {
        (true, None) => json!({"istio-injection": "enabled", "istio.io/rev": null}),
        (true, Some(revision)) => json!({"istio-injection": null, "istio.io/rev": revision}),
        (false, _) => json!({"istio-injection": null, "istio.io/rev": null}),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("namespace {namespace}: {source}")]
pub struct InjectionError {
    namespace: String,
    #[source]
    source: kube::Error,
}

/// Turns auto-injection on or off for `namespace`, for the control plane `revision` (`None`:
/// the default revision).
pub async fn set_auto_injection(
    client: &Client,
    namespace: &str,
    on: bool,
    revision: Option<&str>,
) -> Result<(), InjectionError> {
    let patch = json!({"metadata": {"labels": injection_labels(on, revision)}});
    Api::<Namespace>::all(client.clone())
        .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|source| InjectionError {
            namespace: namespace.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisioned_meshes_use_the_revision_label() {
        assert_eq!(injection_labels(true, None)["istio-injection"], "enabled");
        let revisioned = injection_labels(true, Some("canary"));
        assert_eq!(revisioned["istio.io/rev"], "canary");
        assert!(revisioned["istio-injection"].is_null());
        assert!(injection_labels(false, Some("x"))["istio.io/rev"].is_null());
    }
}
