//! `ingress-gateway` and `egress-gateway`: Envoy proxies at the mesh's edge, configured by
//! istiod. Both are built here from one definition; their charts share every template and differ
//! only in defaults (names, the `istio` label Gateway resources select, the Service type).

use include_dir::{Dir, include_dir};
use serde_json::json;

use super::{image_registry, revision};
use crate::helm::chart::EmbeddedChart;
use crate::mesh::catalog::{Component, ComponentContext, DefaultNamespace};

static INGRESS_CHART: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/charts/ingress-gateway");
static EGRESS_CHART: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/charts/egress-gateway");

/// Traffic into the mesh; on by default, behind a LoadBalancer Service.
pub fn ingress() -> Component {
    gateway(
        "ingress-gateway",
        "istio-ingressgateway",
        true,
        &INGRESS_CHART,
        (
            "values/ingress-gateway.yaml",
            include_str!("../../../values/ingress-gateway.yaml"),
        ),
    )
}

/// Traffic out of the mesh through one controlled exit; off by default.
pub fn egress() -> Component {
    gateway(
        "egress-gateway",
        "istio-egressgateway",
        false,
        &EGRESS_CHART,
        (
            "values/egress-gateway.yaml",
            include_str!("../../../values/egress-gateway.yaml"),
        ),
    )
}

fn gateway(
    name: &'static str,
    release_name: &'static str,
    enabled_by_default: bool,
    chart: &'static Dir<'static>,
    values_layer: (&'static str, &'static str),
) -> Component {
    Component {
        name,
        release_name,
        default_namespace: DefaultNamespace::Mesh,
        enabled_by_default,
        depends_on: &["istiod"],
        chart: EmbeddedChart::new(name, chart),
        values_layer,
        native_objects: |_| Vec::new(),
        managed_values,
    }
}

fn managed_values(context: &ComponentContext<'_>) -> serde_json::Value {
    let spec = context.spec;
    json!({
        "global": {
            "istioNamespace": super::istiod::istiod_namespace(context),
            "imageRegistry": image_registry(spec),
            "revision": revision(spec),
        },
        "discoveryAddress": super::istiod::discovery_address(context),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ComponentSpec, ControlPlaneSpec};

    fn values_for(spec: &ControlPlaneSpec) -> serde_json::Value {
        managed_values(&ComponentContext {
            spec,
            namespace: "edge",
            enabled: true,
            placements: &crate::mesh::components::test_placements(spec),
        })
    }

    #[test]
    fn gateways_dial_istiod_of_their_revision_in_its_namespace() {
        let spec = ControlPlaneSpec {
            namespace: Some("mesh".to_owned()),
            revision: Some("canary".to_owned()),
            image_registry: Some("registry.local:5000".to_owned()),
            ..ControlPlaneSpec::default()
        };
        let values = values_for(&spec);
        assert_eq!(values["discoveryAddress"], "istiod-canary.mesh.svc:15012");
        assert_eq!(values["global"]["istioNamespace"], "mesh");
        assert_eq!(values["global"]["revision"], "canary");
        assert_eq!(values["global"]["imageRegistry"], "registry.local:5000");
    }

    #[test]
    fn gateways_follow_istiod_when_it_has_a_namespace_of_its_own() {
        let spec = ControlPlaneSpec {
            components: [(
                "istiod".to_owned(),
                ComponentSpec {
                    namespace: Some("control".to_owned()),
                    ..ComponentSpec::default()
                },
            )]
            .into(),
            ..ControlPlaneSpec::default()
        };
        let values = values_for(&spec);
        assert_eq!(values["discoveryAddress"], "istiod.control.svc:15012");
        assert_eq!(values["global"]["istioNamespace"], "control");
        assert_eq!(values["global"]["imageRegistry"], "docker.io");
    }

    #[test]
    fn the_two_gateways_differ_only_in_what_names_them() {
        let (ingress, egress) = (ingress(), egress());
        assert!(ingress.enabled_by_default && !egress.enabled_by_default);
        assert_eq!(ingress.depends_on, egress.depends_on);
        assert_eq!(egress.values_layer.0, "values/egress-gateway.yaml");
        assert_eq!(
            ingress.chart.default_values().unwrap()["service"]["type"],
            "LoadBalancer"
        );
        assert_eq!(
            egress.chart.default_values().unwrap()["service"]["type"],
            "ClusterIP"
        );
    }
}
