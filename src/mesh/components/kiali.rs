//! `kiali`: Kiali, the mesh's console, view-only. It reads the mesh's Prometheus, and links to
//! Grafana's dashboards and shows traces while the grafana and tracing components are on (smm
//! manages those values, so they follow the ControlPlane). What it reads cluster-wide is a
//! cluster role smm creates natively, as prometheus's, with read verbs only.

use include_dir::{Dir, include_dir};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::api::{apps::v1 as apps, core::v1 as core};
use serde_json::json;

use super::{READ, component_cluster_role, rule};
use crate::api::objects::NativeObject;
use crate::mesh::catalog::{ChartKind, Component, ComponentContext, DefaultNamespace};

static CHART: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/charts/kiali");

/// Where Kiali's images come from when the ControlPlane names no registry: Kiali publishes
/// them on quay.io only, as Istio's sample pulls them.
pub(super) const DEFAULT_REGISTRY: &str = "quay.io";

/// What the kiali chart renders: Kiali, its configuration, Service and account, and a
/// disruption budget with more than one replica.
const CHART_KINDS: &[ChartKind] = &[
    ChartKind::of::<core::ConfigMap>(),
    ChartKind::of::<core::Service>(),
    ChartKind::of::<core::ServiceAccount>(),
    ChartKind::of::<apps::Deployment>(),
    ChartKind::of::<PodDisruptionBudget>(),
];

pub fn component() -> Component {
    Component {
        name: "kiali",
        release_name: "kiali",
        default_namespace: DefaultNamespace::Mesh,
        enabled_by_default: false,
        enabled_in_profile: None,
        // Kiali shows the mesh istiod runs, from the metrics Prometheus scrapes; it refuses to
        // start without a Prometheus URL.
        depends_on: &["istiod", "prometheus"],
        chart: super::addon_chart("kiali", &CHART, env!("SMM_ADDON_TAG_KIALI")),
        values_layer: values_layer!("kiali"),
        chart_kinds: CHART_KINDS,
        native_objects,
        revisioned: false,
        plug_in_ca: false,
        network_gateway: false,
        managed_values,
    }
}

fn managed_values(context: &ComponentContext<'_>) -> serde_json::Value {
    let grafana = context.placement_of("grafana");
    let tracing = context.placement_of("tracing");
    let url_if = |on: bool, url: String| if on { url } else { String::new() };
    json!({
        "global": {
            "imageRegistry": context.spec.image_registry.as_deref().unwrap_or(DEFAULT_REGISTRY),
        },
        "prometheusUrl": super::prometheus::url(context),
        "grafana": {
            "enabled": grafana.enabled,
            "url": url_if(grafana.enabled, super::grafana::url(context)),
        },
        "tracing": {
            "enabled": tracing.enabled,
            "url": url_if(tracing.enabled, tracing_query_url(&tracing.namespace)),
        },
    })
}

/// Jaeger's query API at the tracing component's `tracing` Service (HTTP, at its root).
fn tracing_query_url(namespace: &str) -> String {
    format!("http://tracing.{namespace}.svc:16686")
}

/// What Kiali reads in view-only mode, with read verbs only: the workloads and their pods,
/// services and namespaces, ConfigMaps (istiod's mesh configuration), Istio's and the Gateway
/// API's configuration, and the injector webhooks. Left out of what Kiali's own viewer role
/// grants: pod port-forwards (a `create`, and a way into every pod's ports; Kiali's calls to
/// istiod and proxies are turned off in its configuration instead), token reviews (only for
/// login strategies other than anonymous) and OpenShift's kinds.
fn rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[""],
            &[
                "configmaps",
                "namespaces",
                "pods",
                "pods/log",
                "replicationcontrollers",
                "services",
            ],
            READ,
        ),
        rule(
            &["apps"],
            &["daemonsets", "deployments", "replicasets", "statefulsets"],
            READ,
        ),
        rule(&["batch"], &["cronjobs", "jobs"], READ),
        rule(
            &[
                "networking.istio.io",
                "security.istio.io",
                "extensions.istio.io",
                "telemetry.istio.io",
            ],
            &["*"],
            READ,
        ),
        rule(
            &["gateway.networking.k8s.io"],
            &[
                "gatewayclasses",
                "gateways",
                "grpcroutes",
                "httproutes",
                "referencegrants",
                "tcproutes",
                "tlsroutes",
                "udproutes",
            ],
            READ,
        ),
        rule(
            &["admissionregistration.k8s.io"],
            &["mutatingwebhookconfigurations"],
            &["list"],
        ),
    ]
}

fn native_objects(context: &ComponentContext<'_>) -> Vec<NativeObject> {
    component_cluster_role(context, "kiali", rules())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::objects::Presence;
    use crate::api::{ComponentSpec, ControlPlaneSpec};

    fn context_values(spec: &ControlPlaneSpec) -> serde_json::Value {
        crate::mesh::components::built_for(spec, "console", true, managed_values)
    }

    fn mesh_with(enabled: &[&str]) -> ControlPlaneSpec {
        ControlPlaneSpec {
            namespace: Some("mesh".to_owned()),
            components: enabled
                .iter()
                .map(|name| {
                    let spec = ComponentSpec {
                        enabled: Some(true),
                        ..ComponentSpec::default()
                    };
                    ((*name).to_owned(), spec)
                })
                .collect(),
            ..ControlPlaneSpec::default()
        }
    }

    #[test]
    fn grafana_and_tracing_are_wired_exactly_while_they_are_on() {
        let off = context_values(&mesh_with(&[]));
        assert_eq!(off["prometheusUrl"], "http://prometheus.mesh.svc:9090");
        assert_eq!(off["grafana"], json!({"enabled": false, "url": ""}));
        assert_eq!(off["tracing"], json!({"enabled": false, "url": ""}));
        let on = context_values(&mesh_with(&["grafana", "tracing"]));
        assert_eq!(
            on["grafana"],
            json!({"enabled": true, "url": "http://grafana.mesh.svc:3000"})
        );
        assert_eq!(
            on["tracing"],
            json!({"enabled": true, "url": "http://tracing.mesh.svc:16686"})
        );
    }

    #[test]
    fn images_come_from_quay_unless_the_mesh_names_a_registry() {
        let spec = mesh_with(&[]);
        assert_eq!(context_values(&spec)["global"]["imageRegistry"], "quay.io");
        let mirrored = ControlPlaneSpec {
            image_registry: Some("registry.example.com".to_owned()),
            ..spec
        };
        assert_eq!(
            context_values(&mirrored)["global"]["imageRegistry"],
            "registry.example.com"
        );
    }

    #[test]
    fn the_cluster_role_only_reads_and_goes_when_disabled() {
        let spec = ControlPlaneSpec::default();
        let built =
            |enabled| crate::mesh::components::built_for(&spec, "console", enabled, native_objects);
        let objects = built(true);
        assert_eq!(
            objects
                .iter()
                .map(NativeObject::describe)
                .collect::<Vec<_>>(),
            [
                "ClusterRole/kiali-console",
                "ClusterRoleBinding/kiali-console"
            ]
        );
        let role = &objects[0].object().data;
        for rule in role["rules"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                assert!(READ.contains(&verb.as_str().unwrap()), "{rule}");
            }
        }
        assert_eq!(
            objects[1].object().data["subjects"][0],
            json!({"kind": "ServiceAccount", "name": "kiali", "namespace": "console"})
        );
        assert!(built(false).iter().all(|o| o.presence == Presence::Absent));
    }

    /// Kiali links to Grafana's dashboards by title: every title its chart names is one of the
    /// Istio dashboards the grafana component provisions.
    #[test]
    fn the_dashboards_kiali_links_to_are_istios() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/.upstream/istio/dashboards");
        let titles: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
                dashboard["title"].as_str().unwrap().to_owned()
            })
            .collect();
        let defaults = component().chart.default_values().unwrap();
        let linked = defaults["grafana"]["dashboards"].as_array().unwrap();
        assert!(!linked.is_empty());
        for dashboard in linked {
            let name = dashboard["name"].as_str().unwrap();
            assert!(
                titles.iter().any(|t| t == name),
                "{name} is not one of {titles:?}"
            );
        }
    }
}
