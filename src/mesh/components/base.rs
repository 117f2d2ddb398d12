//! `base`: the mesh's CRDs and the cluster-wide reader role. The CRDs go through the native
//! builder because helm never upgrades CRDs; they stay when `base` is disabled, since deleting a
//! CRD deletes every object of its kind.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames, CustomResourceDefinitionSpec,
    CustomResourceDefinitionVersion, CustomResourceSubresources, CustomResourceValidation,
    JSONSchemaProps,
};
use serde_json::json;

use super::{READ, cluster_role_for, native_metadata, presence, revision, rule};
use include_dir::{Dir, include_dir};

use crate::cluster::objects::NativeObject;
use crate::helm::chart::EmbeddedChart;
use crate::mesh::catalog::{Component, ComponentContext, DefaultNamespace};

static CHART: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/charts/base");

pub fn component() -> Component {
    Component {
        name: "base",
        release_name: "istio-base",
        default_namespace: DefaultNamespace::Mesh,
        enabled_by_default: true,
        depends_on: &[],
        chart: EmbeddedChart::new("base", &CHART),
        values_layer: (
            "values/base.yaml",
            include_str!("../../../values/base.yaml"),
        ),
        native_objects,
        managed_values: |context| {
            // The validating webhook sends Istio config to istiod, wherever istiod runs.
            json!({"global": {
                "istioNamespace": super::istiod::istiod_namespace(context),
                "revision": revision(context.spec),
            }})
        },
    }
}

/// An Istio API kind: group, kind, plural, short names and served versions (the first is stored,
/// as in upstream Istio, so clusters that had Istio's own CRDs keep reading their data).
struct IstioKind {
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    versions: &'static [&'static str],
}

const NETWORKING_VERSIONS: &[&str] = &["v1alpha3", "v1beta1", "v1"];

const ISTIO_KINDS: &[IstioKind] = &[
    IstioKind {
        group: "networking.istio.io",
        kind: "DestinationRule",
        plural: "destinationrules",
        short_names: &["dr"],
        versions: NETWORKING_VERSIONS,
    },
    IstioKind {
        group: "networking.istio.io",
        kind: "EnvoyFilter",
        plural: "envoyfilters",
        short_names: &[],
        versions: &["v1alpha3"],
    },
    IstioKind {
        group: "networking.istio.io",
        kind: "Gateway",
        plural: "gateways",
        short_names: &["gw"],
        versions: NETWORKING_VERSIONS,
    },
    IstioKind {
        group: "networking.istio.io",
        kind: "ProxyConfig",
        plural: "proxyconfigs",
        short_names: &[],
        versions: &["v1beta1"],
    },
    IstioKind {
        group: "networking.istio.io",
        kind: "ServiceEntry",
        plural: "serviceentries",
        short_names: &["se"],
        versions: NETWORKING_VERSIONS,
    },
    IstioKind {
        group: "networking.istio.io",
        kind: "Sidecar",
        plural: "sidecars",
        short_names: &[],
        versions: NETWORKING_VERSIONS,
    },
    IstioKind {
        group: "networking.istio.io",
        kind: "VirtualService",
        plural: "virtualservices",
        short_names: &["vs"],
        versions: NETWORKING_VERSIONS,
    },
    IstioKind {
        group: "networking.istio.io",
        kind: "WorkloadEntry",
        plural: "workloadentries",
        short_names: &["we"],
        versions: NETWORKING_VERSIONS,
    },
    IstioKind {
        group: "networking.istio.io",
        kind: "WorkloadGroup",
        plural: "workloadgroups",
        short_names: &["wg"],
        versions: NETWORKING_VERSIONS,
    },
    IstioKind {
        group: "security.istio.io",
        kind: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        short_names: &["ap"],
        versions: &["v1beta1", "v1"],
    },
    IstioKind {
        group: "security.istio.io",
        kind: "PeerAuthentication",
        plural: "peerauthentications",
        short_names: &["pa"],
        versions: &["v1beta1", "v1"],
    },
    IstioKind {
        group: "security.istio.io",
        kind: "RequestAuthentication",
        plural: "requestauthentications",
        short_names: &["ra"],
        versions: &["v1beta1", "v1"],
    },
    IstioKind {
        group: "telemetry.istio.io",
        kind: "Telemetry",
        plural: "telemetries",
        short_names: &["telemetry"],
        versions: &["v1alpha1", "v1"],
    },
    IstioKind {
        group: "extensions.istio.io",
        kind: "WasmPlugin",
        plural: "wasmplugins",
        short_names: &[],
        versions: &["v1alpha1"],
    },
];

fn native_objects(context: &ComponentContext<'_>) -> Vec<NativeObject> {
    let mut objects: Vec<NativeObject> = Vec::new();
    if context.enabled {
        objects.extend(
            ISTIO_KINDS
                .iter()
                .map(|kind| NativeObject::present(&crd(kind))),
        );
    }
    objects.extend(reader_rbac(context.namespace, context.enabled));
    objects
}

/// The object schema accepts any spec and status: istiod validates Istio's APIs itself (through
/// its validating webhook), and a loose schema never rejects a field a newer Istio adds.
fn crd(kind: &IstioKind) -> CustomResourceDefinition {
    let open_object = || JSONSchemaProps {
        type_: Some("object".to_owned()),
        x_kubernetes_preserve_unknown_fields: Some(true),
        ..JSONSchemaProps::default()
    };
    let schema = JSONSchemaProps {
        type_: Some("object".to_owned()),
        properties: Some(
            [
                ("spec".to_owned(), open_object()),
                ("status".to_owned(), open_object()),
            ]
            .into(),
        ),
        ..JSONSchemaProps::default()
    };
    let versions = kind
        .versions
        .iter()
        .enumerate()
        .map(|(index, version)| CustomResourceDefinitionVersion {
            name: (*version).to_owned(),
            served: true,
            storage: index == 0,
            schema: Some(CustomResourceValidation {
                open_api_v3_schema: Some(schema.clone()),
            }),
            subresources: Some(CustomResourceSubresources {
                status: Some(Default::default()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    CustomResourceDefinition {
        metadata: native_metadata(format!("{}.{}", kind.plural, kind.group), "base"),
        spec: CustomResourceDefinitionSpec {
            group: kind.group.to_owned(),
            names: CustomResourceDefinitionNames {
                kind: kind.kind.to_owned(),
                list_kind: Some(format!("{}List", kind.kind)),
                plural: kind.plural.to_owned(),
                singular: Some(kind.kind.to_lowercase()),
                short_names: (!kind.short_names.is_empty())
                    .then(|| kind.short_names.iter().map(|s| (*s).to_owned()).collect()),
                categories: Some(vec![
                    "istio-io".to_owned(),
                    kind.group.split('.').next().unwrap_or_default().to_owned() + "-istio-io",
                ]),
            },
            scope: "Namespaced".to_owned(),
            versions,
            ..Default::default()
        },
        status: None,
    }
}

/// Read access to the mesh's configuration for `istio-reader-service-account` (created by the
/// chart), which multi-cluster peers and tooling use.
fn reader_rbac(namespace: &str, enabled: bool) -> [NativeObject; 2] {
    let rules = vec![
        rule(
            &[
                "config.istio.io",
                "security.istio.io",
                "networking.istio.io",
                "telemetry.istio.io",
                "extensions.istio.io",
            ],
            &["*"],
            READ,
        ),
        rule(
            &[""],
            &[
                "endpoints",
                "pods",
                "services",
                "nodes",
                "replicationcontrollers",
                "namespaces",
                "secrets",
            ],
            READ,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        rule(&["apps"], &["replicasets"], READ),
    ];
    cluster_role_for(
        &format!("istio-reader-{namespace}"),
        "base",
        rules,
        ("istio-reader-service-account", namespace),
        presence(enabled),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ControlPlaneSpec;
    use crate::cluster::objects::Presence;

    #[test]
    fn crds_are_kept_when_disabled_but_rbac_goes() {
        let spec = ControlPlaneSpec::default();
        let placements = crate::mesh::components::test_placements(&spec);
        let context = |enabled| ComponentContext {
            spec: &spec,
            namespace: "istio-system",
            enabled,
            placements: &placements,
        };
        let enabled = native_objects(&context(true));
        assert_eq!(enabled.len(), ISTIO_KINDS.len() + 2);
        assert!(enabled.iter().all(|o| o.presence == Presence::Present));
        let disabled = native_objects(&context(false));
        assert_eq!(
            disabled
                .iter()
                .map(NativeObject::describe)
                .collect::<Vec<_>>(),
            [
                "ClusterRole/istio-reader-istio-system",
                "ClusterRoleBinding/istio-reader-istio-system"
            ]
        );
        assert!(disabled.iter().all(|o| o.presence == Presence::Absent));
    }

    #[test]
    fn the_validator_points_at_istiod_wherever_it_runs() {
        let spec = ControlPlaneSpec {
            revision: Some("canary".to_owned()),
            components: [(
                "istiod".to_owned(),
                crate::api::ComponentSpec {
                    namespace: Some("control".to_owned()),
                    ..Default::default()
                },
            )]
            .into(),
            ..ControlPlaneSpec::default()
        };
        let values = (component().managed_values)(&ComponentContext {
            spec: &spec,
            namespace: "istio-system",
            enabled: true,
            placements: &crate::mesh::components::test_placements(&spec),
        });
        assert_eq!(
            values,
            json!({"global": {"istioNamespace": "control", "revision": "canary"}})
        );
    }

    #[test]
    fn each_crd_stores_exactly_one_version() {
        for kind in ISTIO_KINDS {
            let crd = crd(kind);
            assert_eq!(
                crd.spec.versions.iter().filter(|v| v.storage).count(),
                1,
                "{}",
                kind.kind
            );
            assert_eq!(
                crd.metadata.name.as_deref(),
                Some(format!("{}.{}", kind.plural, kind.group).as_str())
            );
        }
    }
}
