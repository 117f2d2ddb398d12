//! The Gateway API in an ambient mesh: its standard channel CRDs, which smm applies beside
//! Istio's (`spec.gatewayAPI`, on under the ambient profile), and the waypoint: a Gateway of
//! class `istio-waypoint` from which istiod itself makes the waypoint proxy's Deployment and
//! Service. Plain data; `ops::ambient` applies it.

use std::fmt;
use std::sync::LazyLock;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::objects::NativeObject;

/// The Gateway API's group.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// The CRD of the Gateway kind: where it is missing, no waypoint can exist.
pub const GATEWAYS_CRD: &str = "gateways.gateway.networking.k8s.io";
/// The class istiod's waypoint controller takes Gateways of.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";
/// The label on a waypoint Gateway saying which traffic it serves.
pub const WAYPOINT_FOR: &str = "istio.io/waypoint-for";
/// The label on a namespace (or service, or workload) naming the waypoint its traffic goes
/// through.
pub const USE_WAYPOINT: &str = "istio.io/use-waypoint";
/// The name `istioctl waypoint apply` gives a waypoint unless told otherwise.
pub const DEFAULT_WAYPOINT_NAME: &str = "waypoint";
/// The annotation every Gateway API CRD carries with the release it belongs to (`v1.6.0`).
pub const BUNDLE_VERSION: &str = "gateway.networking.k8s.io/bundle-version";
/// The annotation every Gateway API CRD carries with its channel: `standard` or `experimental`
/// (a superset, with fields and kinds the standard channel lacks).
pub const CHANNEL: &str = "gateway.networking.k8s.io/channel";
/// The channel smm applies.
pub const STANDARD_CHANNEL: &str = "standard";
/// The port and protocol of a waypoint's one listener: HBONE, the tunnel ztunnel speaks.
const MESH_LISTENER_PORT: u16 = 15008;

/// The standard channel CRDs, as build.rs turned `.upstream/istio/gateway-api/*.yaml` into one
/// JSON array.
const CRDS_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/gateway-api-crds.json"));

/// The Gateway API's CRDs as smm applies them (labelled as base's, the component that applies
/// them), built once per process.
pub(crate) static CRDS: LazyLock<Vec<NativeObject>> =
    LazyLock::new(|| super::components::labelled_crds(CRDS_JSON, "base"));

/// The bundle version of the embedded CRDs (`gateway.networking.k8s.io/bundle-version`).
pub fn bundle_version() -> String {
    CRDS.first()
        .and_then(|crd| crd.object().metadata.annotations?.remove(BUNDLE_VERSION))
        .unwrap_or_default()
}

/// Which traffic a waypoint handles, as istiod reads `istio.io/waypoint-for`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WaypointFor {
    /// Traffic addressed to services (Istio's default).
    #[default]
    Service,
    /// Traffic addressed to pods directly.
    Workload,
    /// Both.
    All,
}

impl fmt::Display for WaypointFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Service => "service",
            Self::Workload => "workload",
            Self::All => "all",
        })
    }
}

/// The Gateway kind (`gateway.networking.k8s.io/v1`).
pub fn gateway_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", "Gateway"), "gateways")
}

/// A waypoint Gateway: what `istioctl waypoint apply` makes, for a revisioned control plane
/// labelled with its revision so that only that revision's istiod programs it.
pub fn waypoint_gateway(
    name: &str,
    namespace: &str,
    traffic: WaypointFor,
    revision: Option<&str>,
) -> DynamicObject {
    let mut labels = json!({WAYPOINT_FOR: traffic.to_string()});
    if let Some(revision) = revision {
        labels["istio.io/rev"] = json!(revision);
    }
    let mut gateway = DynamicObject::new(name, &gateway_resource()).within(namespace);
    gateway.metadata.labels = serde_json::from_value(labels).expect("string labels");
    gateway.data = json!({
        "spec": {
            "gatewayClassName": WAYPOINT_CLASS,
            "listeners": [{"name": "mesh", "port": MESH_LISTENER_PORT, "protocol": "HBONE"}],
        },
    });
    gateway
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    #[test]
    fn the_embedded_crds_are_the_standard_channel_of_one_bundle() {
        let crds: Vec<CustomResourceDefinition> = CRDS
            .iter()
            .map(|object| serde_json::from_value(serde_json::to_value(object.object()).unwrap()))
            .collect::<Result<_, _>>()
            .unwrap();
        let names: Vec<&str> = CRDS.iter().map(NativeObject::name).collect();
        assert!(names.contains(&GATEWAYS_CRD), "{names:?}");
        assert!(names.contains(&"httproutes.gateway.networking.k8s.io"));
        let version = bundle_version();
        assert!(version.starts_with("v1."), "{version}");
        for crd in &crds {
            let annotations = crd.metadata.annotations.clone().unwrap_or_default();
            let name = crd.metadata.name.clone().unwrap();
            assert_eq!(annotations[CHANNEL], "standard", "{name}");
            assert_eq!(annotations[BUNDLE_VERSION], version);
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.versions.iter().filter(|v| v.storage).count(), 1);
            assert_eq!(
                crd.metadata.labels.as_ref().unwrap()["smm.dev/component"],
                "base"
            );
        }
    }

    #[test]
    fn a_waypoint_is_an_hbone_gateway_of_istios_waypoint_class() {
        let gateway = waypoint_gateway("waypoint", "demo", WaypointFor::Service, None);
        let value = serde_json::to_value(&gateway).unwrap();
        assert_eq!(
            value,
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": {
                    "name": "waypoint",
                    "namespace": "demo",
                    "labels": {"istio.io/waypoint-for": "service"},
                },
                "spec": {
                    "gatewayClassName": "istio-waypoint",
                    "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
                },
            })
        );
        let revisioned = waypoint_gateway("w", "demo", WaypointFor::All, Some("canary"));
        let labels = revisioned.metadata.labels.unwrap();
        assert_eq!(labels["istio.io/rev"], "canary");
        assert_eq!(labels[WAYPOINT_FOR], "all");
    }
}
