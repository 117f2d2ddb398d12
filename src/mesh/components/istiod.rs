//! `istiod`: the mesh's control plane (discovery, certificates, sidecar injection). Its cluster
//! role is created natively so that it exists before the Deployment starts and is removed
//! exactly when the component is disabled.

use serde_json::json;

use super::{READ, component_cluster_role, image_registry, revision, rule};
use include_dir::{Dir, include_dir};

use crate::cluster::objects::NativeObject;
use crate::helm::chart::EmbeddedChart;
use crate::mesh::catalog::{Component, ComponentContext, DefaultNamespace};

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
            include_str!("../../../values/istiod.yaml"),
        ),
        native_objects,
        managed_values,
    }
}

fn managed_values(context: &ComponentContext<'_>) -> serde_json::Value {
    let spec = context.spec;
    let mut values = json!({
        "global": {
            "istioNamespace": context.namespace,
            "imageRegistry": image_registry(spec),
            "revision": revision(spec),
        },
        "meshConfig": {
            "trustDomain": spec.trust_domain(),
            "rootNamespace": context.namespace,
        },
    });
    // Proxies report spans to the tracing component's Zipkin receiver while it is enabled.
    let tracing = context.placement_of("tracing");
    if tracing.enabled {
        let tracing_namespace = &tracing.namespace;
        values["meshConfig"]["enableTracing"] = json!(true);
        values["meshConfig"]["defaultConfig"] = json!({
            "tracing": {"zipkin": {"address": format!("tracing.{tracing_namespace}.svc:9411")}},
        });
    }
    values
}

/// The namespace istiod runs in, which is the mesh's control plane namespace for the other
/// components (the root certificate, the sidecar injector and the metrics come from there).
pub(super) fn istiod_namespace<'a>(context: &'a ComponentContext<'_>) -> &'a str {
    &context.placement_of("istiod").namespace
}

/// istiod's address for configuration and certificates (xDS over TLS), as proxies dial it.
pub(super) fn discovery_address(context: &ComponentContext<'_>) -> String {
    let service = match revision(context.spec) {
        "" => "istiod".to_owned(),
        revision => format!("istiod-{revision}"),
    };
    format!("{service}.{}.svc:15012", istiod_namespace(context))
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
    component_cluster_role(context, "istiod", rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ComponentSpec, ControlPlaneSpec};

    fn values_for(spec: &ControlPlaneSpec) -> serde_json::Value {
        managed_values(&ComponentContext {
            spec,
            namespace: spec.mesh_namespace(),
            enabled: true,
            placements: &crate::mesh::components::test_placements(spec),
        })
    }

    fn tracing(component: ComponentSpec) -> ControlPlaneSpec {
        ControlPlaneSpec {
            namespace: Some("mesh".to_owned()),
            components: [("tracing".to_owned(), component)].into(),
            ..ControlPlaneSpec::default()
        }
    }

    #[test]
    fn tracing_values_appear_only_while_tracing_is_enabled() {
        // Off by default: nothing about tracing is managed, so the user may set it.
        let values = values_for(&ControlPlaneSpec::default());
        assert_eq!(values["meshConfig"].get("enableTracing"), None);
        assert_eq!(values["meshConfig"].get("defaultConfig"), None);

        let values = values_for(&tracing(ComponentSpec {
            enabled: Some(true),
            ..ComponentSpec::default()
        }));
        assert_eq!(values["meshConfig"]["enableTracing"], true);
        assert_eq!(
            values["meshConfig"]["defaultConfig"]["tracing"]["zipkin"]["address"],
            "tracing.mesh.svc:9411"
        );

        let values = values_for(&tracing(ComponentSpec {
            enabled: Some(true),
            namespace: Some("observability".to_owned()),
            ..ComponentSpec::default()
        }));
        assert_eq!(
            values["meshConfig"]["defaultConfig"]["tracing"]["zipkin"]["address"],
            "tracing.observability.svc:9411"
        );

        let values = values_for(&tracing(ComponentSpec {
            enabled: Some(false),
            namespace: Some("observability".to_owned()),
            ..ComponentSpec::default()
        }));
        assert_eq!(values["meshConfig"].get("enableTracing"), None);
    }

    #[test]
    fn the_discovery_address_names_the_revision() {
        let spec = ControlPlaneSpec::default();
        let address = |spec: &ControlPlaneSpec| {
            discovery_address(&ComponentContext {
                spec,
                namespace: spec.mesh_namespace(),
                enabled: true,
                placements: &crate::mesh::components::test_placements(spec),
            })
        };
        assert_eq!(address(&spec), "istiod.istio-system.svc:15012");
        let spec = ControlPlaneSpec {
            revision: Some("1-28".to_owned()),
            namespace: Some("mesh".to_owned()),
            ..ControlPlaneSpec::default()
        };
        assert_eq!(address(&spec), "istiod-1-28.mesh.svc:15012");
        assert_eq!(values_for(&spec)["global"]["revision"], "1-28");
    }
}
