//! `prometheus`: scrapes istiod and every Envoy proxy of the mesh. Its service discovery needs
//! to read pods and endpoints cluster-wide, so that cluster role is created natively, like
//! istiod's.

use include_dir::{Dir, include_dir};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::api::{apps::v1 as apps, core::v1 as core};
use serde_json::json;

use super::{READ, component_cluster_role, image_registry, rule};
use crate::api::objects::NativeObject;
use crate::mesh::catalog::{ChartKind, Component, ComponentContext, DefaultNamespace};

static CHART: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/charts/prometheus");

/// What the prometheus chart renders: the server as a Deployment or (`kind: StatefulSet`) a
/// StatefulSet, its configuration, Services and account, and a disruption budget with more than
/// one replica.
const CHART_KINDS: &[ChartKind] = &[
    ChartKind::of::<core::ConfigMap>(),
    ChartKind::of::<core::Service>(),
    ChartKind::of::<core::ServiceAccount>(),
    ChartKind::of::<apps::Deployment>(),
    ChartKind::of::<apps::StatefulSet>(),
    ChartKind::of::<PodDisruptionBudget>(),
];

pub fn component() -> Component {
    Component {
        name: "prometheus",
        release_name: "prometheus",
        default_namespace: DefaultNamespace::Mesh,
        enabled_by_default: true,
        enabled_in_profile: None,
        depends_on: &[],
        chart: super::addon_chart("prometheus", &CHART, env!("SMM_ADDON_TAG_PROMETHEUS")),
        values_layer: values_layer!("prometheus"),
        chart_kinds: CHART_KINDS,
        native_objects,
        revisioned: false,
        plug_in_ca: false,
        network_gateway: false,
        managed_values,
    }
}

/// Where Prometheus finds the mesh's `prometheus` Service: the URL Grafana queries.
pub(super) fn url(context: &ComponentContext<'_>) -> String {
    let namespace = &context.placement_of("prometheus").namespace;
    format!("http://prometheus.{namespace}.svc:9090")
}

fn managed_values(context: &ComponentContext<'_>) -> serde_json::Value {
    let mut values = json!({
        "global": {
            // istiod's metrics are scraped in its namespace.
            "istioNamespace": super::istiod::istiod_namespace(context),
            "imageRegistry": image_registry(context.spec),
        },
    });
    // ztunnel is scraped (and alerted on) exactly while the mesh runs it, where it runs.
    let ztunnel = context.placement_of("ztunnel");
    if ztunnel.enabled {
        values["ambient"] = json!({"enabled": true, "namespace": ztunnel.namespace});
    }
    values
}

fn native_objects(context: &ComponentContext<'_>) -> Vec<NativeObject> {
    let rules = vec![
        // Kubernetes service discovery (pod and endpointslice roles) and node metrics.
        rule(
            &[""],
            &["nodes", "nodes/metrics", "services", "endpoints", "pods"],
            READ,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        PolicyRule {
            non_resource_urls: Some(vec!["/metrics".to_owned()]),
            verbs: vec!["get".to_owned()],
            ..PolicyRule::default()
        },
    ];
    component_cluster_role(context, "prometheus", rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ControlPlaneSpec;
    use crate::api::objects::Presence;

    #[test]
    fn the_cluster_role_carries_the_namespace_and_goes_when_disabled() {
        let spec = ControlPlaneSpec::default();
        let built = |enabled| {
            crate::mesh::components::built_for(&spec, "monitoring", enabled, native_objects)
        };
        let objects = built(true);
        assert_eq!(
            objects
                .iter()
                .map(NativeObject::describe)
                .collect::<Vec<_>>(),
            [
                "ClusterRole/prometheus-monitoring",
                "ClusterRoleBinding/prometheus-monitoring"
            ]
        );
        assert_eq!(
            objects[1].object().data["subjects"][0]["namespace"],
            "monitoring"
        );
        assert!(built(false).iter().all(|o| o.presence == Presence::Absent));
    }

    fn values_for(spec: &ControlPlaneSpec) -> serde_json::Value {
        crate::mesh::components::built_for(spec, "monitoring", true, managed_values)
    }

    #[test]
    fn prometheus_scrapes_istiod_where_it_runs() {
        let spec = ControlPlaneSpec {
            namespace: Some("mesh".to_owned()),
            ..ControlPlaneSpec::default()
        };
        let values = values_for(&spec);
        assert_eq!(values["global"]["istioNamespace"], "mesh");
        assert_eq!(values["global"]["imageRegistry"], "docker.io");
        assert_eq!(values.get("ambient"), None, "no ztunnel, nothing to scrape");
    }

    #[test]
    fn prometheus_scrapes_ztunnel_where_it_runs_while_it_runs() {
        let ambient = ControlPlaneSpec {
            profile: Some(crate::api::Profile::Ambient),
            ..ControlPlaneSpec::default()
        }
        .with_component("ztunnel", |c| c.namespace = Some("kube-system".to_owned()));
        assert_eq!(
            values_for(&ambient)["ambient"],
            json!({"enabled": true, "namespace": "kube-system"})
        );
        let without = ambient.with_enabled("ztunnel", false);
        assert_eq!(values_for(&without).get("ambient"), None);
    }
}
