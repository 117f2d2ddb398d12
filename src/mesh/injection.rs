//! Sidecar auto-injection for namespaces: the labels istiod's injector selects on
//! (`cluster::namespaces` sets them). The label is owned by no reconciler: smm sets it on
//! request and leaves it alone afterwards.

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
