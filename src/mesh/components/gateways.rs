//! `ingress-gateway`, `egress-gateway` and `eastwest-gateway`: Envoy proxies at the mesh's edge,
//! configured by istiod. All are releases of Istio's gateway chart, differing in name (which the
//! chart turns into the `istio` label Gateway resources select) and in smm's values layer (the
//! Service type). Their pods get the proxy and its image from istiod's injector, so istiod's
//! revision is the value smm manages on them; the east-west gateway is also its cluster's
//! network gateway.

use include_dir::{Dir, include_dir};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, rbac::v1 as rbac};
use serde_json::json;

use super::istio;
use crate::helm::chart::Overlay;
use crate::mesh::catalog::{ChartKind, Component, ComponentContext, DefaultNamespace};

/// smm's template added to Istio's gateway chart for the east-west gateway: the cross-network
/// Istio Gateway (port 15443, mTLS passed through by SNI).
static EASTWEST_TEMPLATES: Dir<'static> =
    include_dir!("$CARGO_MANIFEST_DIR/charts/eastwest-gateway");

/// Traffic into the mesh; on by default, behind a LoadBalancer Service.
/// What Istio's gateway chart renders: the proxy as a Deployment or (`kind: DaemonSet`) a
/// DaemonSet, its Service, account and Role, and with optional values an autoscaler, a
/// disruption budget and a NetworkPolicy.
const CHART_KINDS: &[ChartKind] = &[
    ChartKind::of::<core::Service>(),
    ChartKind::of::<core::ServiceAccount>(),
    ChartKind::of::<apps::Deployment>(),
    ChartKind::of::<apps::DaemonSet>(),
    ChartKind::of::<rbac::Role>(),
    ChartKind::of::<rbac::RoleBinding>(),
    ChartKind::of::<HorizontalPodAutoscaler>(),
    ChartKind::of::<PodDisruptionBudget>(),
    ChartKind::of::<NetworkPolicy>(),
];

pub fn ingress() -> Component {
    gateway(
        "ingress-gateway",
        "istio-ingressgateway",
        true,
        "Istio's ingress gateway, an Envoy proxy at the mesh's edge for traffic coming in, from \
         Istio's gateway chart.",
        values_layer!("ingress-gateway"),
    )
}

/// What the east-west gateway's release renders: the gateway's objects and the cross-network
/// Istio Gateway.
const EASTWEST_CHART_KINDS: &[ChartKind] = &{
    let istio_gateway = ChartKind {
        group: "networking.istio.io",
        kind: "Gateway",
        resource: "gateways",
    };
    let mut kinds = [istio_gateway; CHART_KINDS.len() + 1];
    let mut i = 0;
    while i < CHART_KINDS.len() {
        kinds[i] = CHART_KINDS[i];
        i += 1;
    }
    kinds
};

/// Traffic between networks of a mesh over several clusters: workloads of other networks reach
/// this network's services through it (and, as the network gateway istiod finds by its
/// Service's `topology.istio.io/network` label, proxies route there); off by default, and only
/// with `spec.multiCluster.network` set.
pub fn eastwest() -> Component {
    Component {
        chart: istio::chart(
            "eastwest-gateway",
            istio::upstream("gateway"),
            "Istio's east-west gateway, the network gateway through which other networks of a \
             mesh over several clusters reach this one, from Istio's gateway chart.",
        )
        .with_overlay(Overlay {
            at: "templates",
            dir: &EASTWEST_TEMPLATES,
        }),
        chart_kinds: EASTWEST_CHART_KINDS,
        managed_values: eastwest_managed_values,
        network_gateway: true,
        ..gateway(
            "eastwest-gateway",
            "istio-eastwestgateway",
            false,
            "",
            values_layer!("eastwest-gateway"),
        )
    }
}

/// Traffic out of the mesh through one controlled exit; off by default.
pub fn egress() -> Component {
    gateway(
        "egress-gateway",
        "istio-egressgateway",
        false,
        "Istio's egress gateway, an Envoy proxy that traffic leaving the mesh can be routed \
         through, from Istio's gateway chart.",
        values_layer!("egress-gateway"),
    )
}

fn gateway(
    name: &'static str,
    release_name: &'static str,
    enabled_by_default: bool,
    description: &'static str,
    values_layer: (&'static str, &'static str),
) -> Component {
    Component {
        name,
        release_name,
        default_namespace: DefaultNamespace::Mesh,
        enabled_by_default,
        enabled_in_profile: None,
        depends_on: &["istiod"],
        chart: istio::chart(name, istio::upstream("gateway"), description),
        values_layer,
        chart_kinds: CHART_KINDS,
        native_objects: |_| Vec::new(),
        revisioned: false,
        plug_in_ca: false,
        network_gateway: false,
        managed_values,
    }
}

/// The gateway values, and this cluster's network as the one the gateway serves (the chart then
/// opens the network gateway's ports and labels the Service and pods with the network).
fn eastwest_managed_values(context: &ComponentContext<'_>) -> serde_json::Value {
    let mut values = managed_values(context);
    let network = context
        .spec
        .multi_cluster
        .as_ref()
        .and_then(|mc| mc.network.as_deref());
    values["networkGateway"] = json!(network.unwrap_or_default());
    values
}

fn managed_values(context: &ComponentContext<'_>) -> serde_json::Value {
    // The injector of exactly this revision must pick the pods up: under another one they would
    // be created without a proxy (`image: auto`).
    // Under RevisionBased a new revision thus restarts the gateways onto its proxy once istiod
    // (which they depend on) is Ready.
    json!({"revision": context.revision.value})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ControlPlaneSpec;

    fn values_for(spec: &ControlPlaneSpec) -> serde_json::Value {
        crate::mesh::components::built_for(spec, "edge", true, managed_values)
    }

    #[test]
    fn gateways_are_injected_by_istiod_of_their_revision() {
        let spec = ControlPlaneSpec {
            namespace: Some("mesh".to_owned()),
            revision: Some("canary".to_owned()),
            image_registry: Some("registry.local:5000".to_owned()),
            ..ControlPlaneSpec::default()
        };
        assert_eq!(values_for(&spec), json!({"revision": "canary"}));
        assert_eq!(
            values_for(&ControlPlaneSpec::default()),
            json!({"revision": ""})
        );
    }

    #[test]
    fn every_value_smm_passes_is_one_the_charts_schema_allows() {
        // The chart's schema refuses unknown top-level keys.
        let schema: serde_json::Value = serde_json::from_slice(
            istio::upstream("gateway")
                .get_file(istio::upstream("gateway").path().join("values.schema.json"))
                .unwrap()
                .contents(),
        )
        .unwrap();
        let allowed = schema["$defs"]["values"]["properties"].as_object().unwrap();
        let spec = ControlPlaneSpec::default();
        for (component, managed) in [
            (ingress(), values_for(&spec)),
            (egress(), values_for(&spec)),
            (
                eastwest(),
                crate::mesh::components::built_for(&spec, "edge", true, eastwest_managed_values),
            ),
        ] {
            let layer = component.values_layer().unwrap();
            for key in layer
                .as_object()
                .unwrap()
                .keys()
                .chain(managed.as_object().unwrap().keys())
            {
                assert!(allowed.contains_key(key), "{}: {key}", component.name);
            }
        }
    }

    #[test]
    fn the_eastwest_gateway_serves_its_clusters_network_through_a_cross_network_gateway() {
        let spec = ControlPlaneSpec {
            multi_cluster: Some(crate::api::MultiCluster {
                cluster_name: "east".to_owned(),
                network: Some("net-east".to_owned()),
                ..crate::api::MultiCluster::default()
            }),
            ..ControlPlaneSpec::default()
        };
        let values =
            crate::mesh::components::built_for(&spec, "edge", true, eastwest_managed_values);
        assert_eq!(
            values,
            json!({"revision": "", "networkGateway": "net-east"})
        );
        let component = eastwest();
        assert!(!component.enabled_by_default);
        assert_eq!(component.release_name, "istio-eastwestgateway");
        let template = EASTWEST_TEMPLATES
            .get_file("cross-network-gateway.yaml")
            .unwrap()
            .contents_utf8()
            .unwrap();
        assert!(template.contains("AUTO_PASSTHROUGH") && template.contains("15443"));
        assert!(
            component
                .chart_kinds
                .iter()
                .any(|k| k.group == "networking.istio.io")
        );
    }

    #[test]
    fn the_two_gateways_differ_only_in_what_names_them() {
        let (ingress, egress) = (ingress(), egress());
        assert!(ingress.enabled_by_default && !egress.enabled_by_default);
        assert_eq!(ingress.depends_on, egress.depends_on);
        assert_eq!(egress.values_layer.0, "values/egress-gateway.yaml");
        assert_eq!(
            ingress.chart.default_values().unwrap(),
            egress.chart.default_values().unwrap()
        );
        // Istio's charts keep their defaults under one key and take user values at the top.
        let service_type = |component: &Component| {
            let layer = component.values_layer().unwrap();
            match &layer["service"]["type"] {
                serde_json::Value::Null => component.chart.default_values().unwrap()
                    ["_internal_defaults_do_not_set"]["service"]["type"]
                    .clone(),
                set => set.clone(),
            }
        };
        assert_eq!(service_type(&ingress), "LoadBalancer");
        assert_eq!(service_type(&egress), "ClusterIP");
    }
}
