//! `istiod`: the mesh's control plane (discovery, certificates, sidecar injection). Its cluster
//! role is created natively so that it exists before the Deployment starts and is removed
//! exactly when the component is disabled.

use serde_json::json;

use super::{READ, cluster_role_for, presence, rule};
use include_dir::{Dir, include_dir};

use crate::catalog::{Component, ComponentContext, DefaultNamespace};
use crate::chart::EmbeddedChart;
use crate::native::NativeObject;

/// Where images come from when the ControlPlane names no registry.
pub const DEFAULT_IMAGE_REGISTRY: &str = "docker.io";

static CHART: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/charts/istiod");

pub fn component() -> Component {
    Component {
        name: "istiod",
        release_name: "istiod",
        default_namespace: DefaultNamespace::Mesh,
        enabled_by_default: true,
        depends_on: &["base"],
        chart: EmbeddedChart::new("istiod", &CHART),
        values_layer: (
            "values/istiod.yaml",
            include_str!("../../values/istiod.yaml"),
        ),
        native_objects,
        managed_values,
    }
}

fn managed_values(context: &ComponentContext<'_>) -> serde_json::Value {
    let spec = context.spec;
    json!({
        "global": {
            "istioNamespace": context.namespace,
            "imageRegistry": spec.image_registry.as_deref().unwrap_or(DEFAULT_IMAGE_REGISTRY),
            "revision": spec.revision.as_deref().unwrap_or_default(),
        },
        "meshConfig": {
            "trustDomain": spec.trust_domain(),
            "rootNamespace": context.namespace,
        },
    })
}

fn native_objects(context: &ComponentContext<'_>) -> Vec<NativeObject> {
    const ISTIO_GROUPS: &[&str] = &[
        "config.istio.io",
        "security.istio.io",
        "networking.istio.io",
        "telemetry.istio.io",
        "extensions.istio.io",
    ];
    let rules = vec![
        // Istio's own APIs: read config, write status.
        rule(ISTIO_GROUPS, &["*"], READ),
        rule(ISTIO_GROUPS, &["*/status"], &["get", "update", "patch"]),
        // Service discovery.
        rule(
            &[""],
            &[
                "pods",
                "nodes",
                "services",
                "endpoints",
                "namespaces",
                "serviceaccounts",
            ],
            READ,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        // The root certificate published into every namespace.
        rule(
            &[""],
            &["configmaps"],
            &["get", "list", "watch", "create", "update", "delete"],
        ),
        // The injector and validator keep their webhooks' CA bundles current.
        rule(
            &["admissionregistration.k8s.io"],
            &[
                "mutatingwebhookconfigurations",
                "validatingwebhookconfigurations",
            ],
            &["get", "list", "watch", "update", "patch"],
        ),
        // Workload certificates through the Kubernetes CA, when configured.
        rule(
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
            &["get", "list", "watch", "create", "delete"],
        ),
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
            &["create"],
        ),
    ];
    cluster_role_for(
        &format!("istiod-{}", context.namespace),
        "istiod",
        rules,
        ("istiod", context.namespace),
        presence(context.enabled),
    )
    .into()
}
