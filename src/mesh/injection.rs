//! Sidecar auto-injection for namespaces: the labels istiod's injector selects on
//! (`cluster::namespaces` sets them). The label is owned by no reconciler: smm sets it on
//! request and leaves it alone afterwards. The same for ambient mode's label,
//! `istio.io/dataplane-mode`, which istio-cni and ztunnel select on.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::json;

/// The namespace label of ambient mode.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

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

/// Putting `namespace` in the mesh would cut the mesh's own repair off.
#[derive(Debug, thiserror::Error)]
#[error("refusing to {action} namespace {namespace}: {why}")]
pub struct ProtectedNamespace {
    pub namespace: String,
    pub action: &'static str,
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
        action: "turn sidecar injection on for",
        why,
    })
}

/// Refuses ambient mode for the same namespaces as injection: there the traffic would go
/// through ztunnel, which istiod (and the operator that repairs it) must not depend on.
pub fn check_ambient_enrollable(
    namespace: &str,
    mesh_namespace: &str,
    operator_namespaces: &[&str],
) -> Result<(), ProtectedNamespace> {
    let why = if KUBERNETES_NAMESPACES.contains(&namespace) {
        "it holds Kubernetes' own components"
    } else if namespace == mesh_namespace {
        "it holds istiod and the node agents, whose own traffic must not depend on ztunnel"
    } else if operator_namespaces.contains(&namespace) {
        "it holds the smm operator, which must reach the API server to repair the mesh while \
         ztunnel is down"
    } else {
        return Ok(());
    };
    Err(ProtectedNamespace {
        namespace: namespace.to_owned(),
        action: "put in ambient mode",
        why,
    })
}

/// How a namespace's pods join the mesh, as `smm dataplane-mode` sets it.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneMode {
    /// Through ztunnel, without sidecars (`istio.io/dataplane-mode=ambient`).
    Ambient,
    /// Not ambient: the label removed, so sidecar injection (if on) decides.
    Sidecar,
    /// Kept out of ambient mode explicitly (`istio.io/dataplane-mode=none`), e.g. a namespace
    /// of a mesh-wide ambient default.
    None,
}

impl fmt::Display for DataplaneMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ambient => "ambient",
            Self::Sidecar => "sidecar",
            Self::None => "none",
        })
    }
}

/// The label change for `mode` (a JSON merge patch; null removes the label).
pub fn dataplane_labels(mode: DataplaneMode) -> serde_json::Value {
    match mode {
        DataplaneMode::Ambient => json!({DATAPLANE_MODE: "ambient"}),
        DataplaneMode::Sidecar => json!({DATAPLANE_MODE: null}),
        DataplaneMode::None => json!({DATAPLANE_MODE: "none"}),
    }
}

/// The sidecar injection labels of a namespace's `labels`, as `key=value`: a pod there gets a
/// sidecar, and ztunnel leaves a pod with a sidecar alone, so the ambient label would not apply.
pub fn injection_selected(labels: &BTreeMap<String, String>) -> Vec<String> {
    labels
        .iter()
        .filter(|(key, value)| match key.as_str() {
            "istio-injection" => *value == "enabled",
            "istio.io/rev" => true,
            _ => false,
        })
        .map(|(key, value)| format!("{key}={value}"))
        .collect()
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
    fn ambient_mode_is_refused_where_injection_is_and_says_why() {
        let check = |namespace| check_ambient_enrollable(namespace, "mesh", &["smm-system"]);
        for protected in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "mesh",
            "smm-system",
        ] {
            assert!(check(protected).is_err(), "{protected}");
        }
        assert_eq!(
            check("mesh").unwrap_err().to_string(),
            "refusing to put in ambient mode namespace mesh: it holds istiod and the node \
             agents, whose own traffic must not depend on ztunnel"
        );
        check("demo").unwrap();
    }

    #[test]
    fn dataplane_modes_set_or_remove_one_label() {
        assert_eq!(
            dataplane_labels(DataplaneMode::Ambient),
            json!({"istio.io/dataplane-mode": "ambient"})
        );
        assert_eq!(
            dataplane_labels(DataplaneMode::None),
            json!({"istio.io/dataplane-mode": "none"})
        );
        assert!(dataplane_labels(DataplaneMode::Sidecar)[DATAPLANE_MODE].is_null());
    }

    #[test]
    fn injection_is_selected_by_the_default_label_enabled_or_any_revision() {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(injection_selected(&labels(&[("istio-injection", "disabled")])).is_empty());
        assert!(injection_selected(&labels(&[("team", "a")])).is_empty());
        assert_eq!(
            injection_selected(&labels(&[
                ("istio-injection", "enabled"),
                ("istio.io/rev", "blue")
            ])),
            ["istio-injection=enabled", "istio.io/rev=blue"]
        );
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
