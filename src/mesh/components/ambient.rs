//! `istio-cni` and `ztunnel`: the node agents of Istio's ambient data plane, from Istio's own
//! charts. istio-cni redirects the traffic of ambient pods to ztunnel, the per-node L4 proxy that
//! carries it over mTLS (HBONE); istiod's ambient mode (`spec.profile: ambient`, see `istiod.rs`)
//! serves them. Both are on by default under the ambient profile, and reconcile after istiod
//! (istio-cni, then ztunnel), so on an upgrade the node agents move after the control plane.
//! They are one per cluster, not per revision: ztunnel follows the active revision's istiod.

use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, rbac::v1 as rbac};
use serde_json::{Value, json};

use super::{image_registry, istio, istiod::istiod_namespace};
use crate::api::Profile;
use crate::mesh::catalog::{ChartKind, Component, ComponentContext, DefaultNamespace};

/// What the istio-cni chart renders: the node agent's DaemonSet, its configuration, account and
/// cluster rights, and with optional values a ResourceQuota (platforms that admit node-critical
/// pods only under one), a NetworkPolicy and Multus' attachment (OpenShift).
const CNI_KINDS: &[ChartKind] = &[
    ChartKind::of::<core::ConfigMap>(),
    ChartKind::of::<core::ServiceAccount>(),
    ChartKind::of::<apps::DaemonSet>(),
    ChartKind::of::<rbac::ClusterRole>(),
    ChartKind::of::<rbac::ClusterRoleBinding>(),
    ChartKind::of::<ResourceQuota>(),
    ChartKind::of::<NetworkPolicy>(),
    ChartKind {
        group: "k8s.cni.cncf.io",
        kind: "NetworkAttachmentDefinition",
        resource: "network-attachment-definitions",
    },
];

/// What the ztunnel chart renders: the DaemonSet and its account, with optional values its
/// cluster rights, a ResourceQuota and a NetworkPolicy.
const ZTUNNEL_KINDS: &[ChartKind] = &[
    ChartKind::of::<core::ServiceAccount>(),
    ChartKind::of::<apps::DaemonSet>(),
    ChartKind::of::<rbac::ClusterRole>(),
    ChartKind::of::<rbac::ClusterRoleBinding>(),
    ChartKind::of::<ResourceQuota>(),
    ChartKind::of::<NetworkPolicy>(),
];

pub fn istio_cni() -> Component {
    Component {
        name: "istio-cni",
        release_name: "istio-cni",
        default_namespace: DefaultNamespace::Mesh,
        enabled_by_default: false,
        enabled_in_profile: Some(Profile::Ambient),
        depends_on: &["istiod"],
        chart: istio::chart(
            "istio-cni",
            istio::upstream("istio-cni"),
            "Istio's CNI node agent, which redirects ambient pods' traffic to ztunnel (and can \
             replace the sidecars' istio-init), from Istio's istio-cni chart.",
        ),
        values_layer: values_layer!("istio-cni"),
        chart_kinds: CNI_KINDS,
        native_objects: |_| Vec::new(),
        revisioned: false,
        plug_in_ca: false,
        network_gateway: false,
        managed_values: cni_values,
    }
}

pub fn ztunnel() -> Component {
    Component {
        name: "ztunnel",
        release_name: "ztunnel",
        default_namespace: DefaultNamespace::Mesh,
        enabled_by_default: false,
        enabled_in_profile: Some(Profile::Ambient),
        depends_on: &["istio-cni"],
        chart: istio::chart(
            "ztunnel",
            istio::upstream("ztunnel"),
            "Istio's ztunnel, the per-node proxy of the ambient data plane (mTLS and L4 \
             policy), from Istio's ztunnel chart.",
        ),
        values_layer: values_layer!("ztunnel"),
        chart_kinds: ZTUNNEL_KINDS,
        native_objects: |_| Vec::new(),
        revisioned: false,
        plug_in_ca: false,
        network_gateway: false,
        managed_values: ztunnel_values,
    }
}

/// What both charts take alike: the profile and platform whose settings they apply, and the
/// revision whose istiod serves them.
fn common_values(context: &ComponentContext<'_>) -> Value {
    let mut values = json!({"revision": context.revision.value});
    if let Some(profile) = context.spec.profile().chart_profile() {
        values["profile"] = json!(profile);
    }
    if let Some(platform) = context.spec.platform {
        values["global"] = json!({"platform": platform.chart_platform()});
    }
    values
}

/// istio-cni reads its images from `global`. Their defaults are development builds, so the
/// image is always smm's: istiod's registry and version, the agents matching the control plane.
fn cni_values(context: &ComponentContext<'_>) -> Value {
    let mut values = common_values(context);
    let global = values
        .as_object_mut()
        .expect("an object")
        .entry("global")
        .or_insert_with(|| json!({}));
    global["hub"] = json!(istio::hub(image_registry(context.spec)));
    global["tag"] = json!(context.revision.version);
    values
}

/// ztunnel reads its image from top-level values, and reaches istiod (XDS and its CA) at the
/// revision's Service in istiod's namespace.
fn ztunnel_values(context: &ComponentContext<'_>) -> Value {
    let mut values = common_values(context);
    values["hub"] = json!(istio::hub(image_registry(context.spec)));
    values["tag"] = json!(context.revision.version);
    values["istioNamespace"] = json!(istiod_namespace(context));
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ControlPlaneSpec, Platform};
    use crate::mesh::catalog::Catalog;

    fn values_of(component: &Component, spec: &ControlPlaneSpec) -> Value {
        let placement = &crate::mesh::components::test_placements(spec)[component.name];
        crate::mesh::components::built_for(
            spec,
            &placement.namespace,
            placement.enabled,
            component.managed_values,
        )
    }

    #[test]
    fn the_node_agents_are_on_by_default_only_under_the_ambient_profile() {
        let catalog = Catalog::builtin().unwrap();
        let sidecar = catalog.placements(&ControlPlaneSpec::default());
        assert!(!sidecar["istio-cni"].enabled && !sidecar["ztunnel"].enabled);
        let ambient = ControlPlaneSpec {
            profile: Some(Profile::Ambient),
            ..ControlPlaneSpec::default()
        };
        let placements = catalog.placements(&ambient);
        assert!(placements["istio-cni"].enabled && placements["ztunnel"].enabled);
        // One by one, as for any component: off under ambient, on under sidecar.
        let placements = catalog.placements(&ambient.clone().with_enabled("ztunnel", false));
        assert!(placements["istio-cni"].enabled && !placements["ztunnel"].enabled);
        let cni_alone = ControlPlaneSpec::default().with_enabled("istio-cni", true);
        assert!(catalog.placements(&cni_alone)["istio-cni"].enabled);
        // Without istiod nothing serves them, so they are not on by default.
        let placements = catalog.placements(&ambient.with_enabled("istiod", false));
        assert!(!placements["istio-cni"].enabled && !placements["ztunnel"].enabled);
    }

    #[test]
    fn the_node_agents_reconcile_after_istiod_cni_first() {
        let names = Catalog::builtin().unwrap().names();
        let at = |name| names.iter().position(|n| *n == name).unwrap();
        assert!(at("base") < at("istiod"));
        assert!(at("istiod") < at("istio-cni"));
        assert!(at("istio-cni") < at("ztunnel"));
    }

    #[test]
    fn the_agents_run_istiods_version_from_its_registry_and_reach_its_revision() {
        let spec = ControlPlaneSpec {
            profile: Some(Profile::Ambient),
            platform: Some(Platform::Gke),
            image_registry: Some("registry.local:5000".to_owned()),
            namespace: Some("mesh".to_owned()),
            version: Some("1.31.2".to_owned()),
            revision: Some("blue".to_owned()),
            ..ControlPlaneSpec::default()
        };
        let cni = values_of(&istio_cni(), &spec);
        assert_eq!(
            cni,
            json!({
                "revision": "blue",
                "profile": "ambient",
                "global": {"platform": "gke", "hub": "registry.local:5000/istio", "tag": "1.31.2"},
            })
        );
        let ztunnel = values_of(&ztunnel(), &spec);
        assert_eq!(
            ztunnel,
            json!({
                "revision": "blue",
                "profile": "ambient",
                "global": {"platform": "gke"},
                "hub": "registry.local:5000/istio",
                "tag": "1.31.2",
                "istioNamespace": "mesh",
            })
        );
        // Under the sidecar profile istio-cni may still run (in place of istio-init): the profile
        // is then the user's to choose.
        let sidecar = values_of(&istio_cni(), &ControlPlaneSpec::default());
        assert_eq!(sidecar.get("profile"), None);
        assert_eq!(sidecar["global"]["tag"], istio::DEFAULT_TAG);
    }

    /// Every platform smm accepts is one Istio's node agent charts have a profile for.
    #[test]
    fn every_platform_is_one_the_charts_know() {
        for chart in ["istio-cni", "ztunnel"] {
            for platform in Platform::ALL {
                let file = format!("files/profile-platform-{}.yaml", platform.chart_platform());
                assert!(
                    istio::upstream(chart)
                        .get_file(format!("{chart}/{file}"))
                        .is_some(),
                    "{chart} has no {file}"
                );
            }
        }
    }
}
