//! `grafana`: Istio's own dashboards over the mesh's Prometheus, which it is provisioned with as
//! its data source. The dashboards come from the pinned Istio module at build time (compacted
//! by build.rs), never from the repository.

use include_dir::{Dir, include_dir};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::{apps::v1 as apps, core::v1 as core};
use serde_json::json;

use super::image_registry;
use crate::helm::chart::Overlay;
use crate::mesh::catalog::{ChartKind, Component, ComponentContext, DefaultNamespace};

static CHART: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/charts/grafana");
/// Istio's dashboards, one compact JSON file each, as build.rs wrote them.
static DASHBOARDS: Dir<'static> = include_dir!("$OUT_DIR/grafana-dashboards");

/// What the grafana chart renders: grafana, its provisioning, Service and account, and a
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
        name: "grafana",
        release_name: "grafana",
        default_namespace: DefaultNamespace::Mesh,
        enabled_by_default: false,
        enabled_in_profile: None,
        depends_on: &["prometheus"],
        chart: super::addon_chart("grafana", &CHART, env!("SMM_ADDON_TAG_GRAFANA")).with_overlay(
            Overlay {
                at: "dashboards",
                dir: &DASHBOARDS,
            },
        ),
        values_layer: values_layer!("grafana"),
        chart_kinds: CHART_KINDS,
        native_objects: |_| Vec::new(),
        revisioned: false,
        plug_in_ca: false,
        network_gateway: false,
        managed_values,
    }
}

/// Where the mesh's Grafana answers in the cluster: its `grafana` Service, for Kiali.
pub(super) fn url(context: &ComponentContext<'_>) -> String {
    let namespace = &context.placement_of("grafana").namespace;
    format!("http://grafana.{namespace}.svc:3000")
}

fn managed_values(context: &ComponentContext<'_>) -> serde_json::Value {
    json!({
        "global": {"imageRegistry": image_registry(context.spec)},
        "prometheusUrl": super::prometheus::url(context),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ComponentSpec, ControlPlaneSpec};

    fn values_for(spec: &ControlPlaneSpec) -> serde_json::Value {
        crate::mesh::components::built_for(spec, "dashboards", true, managed_values)
    }

    #[test]
    fn the_data_source_follows_prometheus() {
        let mesh = ControlPlaneSpec {
            namespace: Some("mesh".to_owned()),
            ..ControlPlaneSpec::default()
        };
        assert_eq!(
            values_for(&mesh)["prometheusUrl"],
            "http://prometheus.mesh.svc:9090"
        );
        let own = ControlPlaneSpec {
            components: [(
                "prometheus".to_owned(),
                ComponentSpec {
                    namespace: Some("monitoring".to_owned()),
                    ..ComponentSpec::default()
                },
            )]
            .into(),
            ..mesh
        };
        assert_eq!(
            values_for(&own)["prometheusUrl"],
            "http://prometheus.monitoring.svc:9090"
        );
    }
}
