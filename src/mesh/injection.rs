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

/// Namespaces that never get sidecars, with the reason: Kubernetes' own, and those whose pods
/// repair the mesh. Istio's injector webhook fails closed, so an injected pod cannot restart
/// while istiod is down, and nothing there could come back to repair istiod.
pub const KUBERNETES_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// Switching injection on for `namespace` would cut the mesh's own repair off.
#[derive(Debug, thiserror::Error)]
#[error("refusing to turn sidecar injection on for namespace {namespace}: {why}")]
pub struct ProtectedNamespace {
    pub namespace: String,
    pub why: &'static str,
}

/// Refuses injection for Kubernetes' namespaces, the mesh's (`mesh_namespace`, istiod's) and the
/// operator's (`operator_namespaces`): their pods must restart even while istiod is down.
pub fn check_injectable(
    namespace: &str,
    mesh_namespace: &str,
    operator_namespaces: &[&str],
) -> Result<(), ProtectedNamespace> {
    let why = if KUBERNETES_NAMESPACES.contains(&namespace) {
        "it holds Kubernetes' own components"
    } else if namespace == mesh_namespace {
        "it holds istiod, which must start while there is no istiod to inject it"
    } else if operator_namespaces.contains(&namespace) {
        "it holds the smm operator, which must restart to repair istiod while istiod is down"
    } else {
        return Ok(());
    };
    Err(ProtectedNamespace {
        namespace: namespace.to_owned(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meshs_own_and_kubernetes_namespaces_are_never_injected() {
        let check = |namespace| check_injectable(namespace, "istio-system", &["smm-system"]);
        for protected in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "istio-system",
            "smm-system",
        ] {
            assert!(check(protected).is_err(), "{protected}");
        }
        assert_eq!(
            check("smm-system").unwrap_err().to_string(),
            "refusing to turn sidecar injection on for namespace smm-system: it holds the smm \
             operator, which must restart to repair istiod while istiod is down"
        );
        check("demo").unwrap();
    }

    #[test]
    fn revisioned_meshes_use_the_revision_label() {
        assert_eq!(injection_labels(true, None)["istio-injection"], "enabled");
        let revisioned = injection_labels(true, Some("canary"));
        assert_eq!(revisioned["istio.io/rev"], "canary");
        assert!(revisioned["istio-injection"].is_null());
        assert!(injection_labels(false, Some("x"))["istio.io/rev"].is_null());
    }
}
