//! `base`: Istio's base chart (the default-revision validator, the reader ServiceAccount) and
//! Istio's CRDs. The CRDs come from the chart's `files/crd-all.gen.yaml` but go through the
//! native builder instead of helm, because helm never upgrades CRDs; they stay when `base` is
//! disabled, since deleting a CRD deletes every object of its kind. The Gateway API's CRDs
//! (`spec.gatewayAPI`, on under the ambient profile) come along the same way.

use k8s_openapi::api::admissionregistration::v1 as admission;
use k8s_openapi::api::core::v1 as core;
use std::sync::LazyLock;

use serde_json::json;

use super::istio;
use crate::api::objects::NativeObject;
use crate::mesh::catalog::{ChartKind, Component, ComponentContext, DefaultNamespace};
use crate::mesh::gateway_api;

/// What Istio's base chart renders (its CRDs go through the native builder instead): the
/// default revision's validator, as a webhook or, with `experimental.stableValidationPolicy`, an
/// admission policy, and the reader's ServiceAccount.
const CHART_KINDS: &[ChartKind] = &[
    ChartKind::of::<core::ServiceAccount>(),
    ChartKind::of::<admission::ValidatingWebhookConfiguration>(),
    ChartKind::of::<admission::ValidatingAdmissionPolicy>(),
    ChartKind::of::<admission::ValidatingAdmissionPolicyBinding>(),
];

pub fn component() -> Component {
    Component {
        name: "base",
        release_name: "istio-base",
        default_namespace: DefaultNamespace::Mesh,
        enabled_by_default: true,
        enabled_in_profile: None,
        depends_on: &[],
        chart: istio::chart(
            "base",
            istio::upstream("base"),
            "Istio's CRDs (applied by smm) and the mesh-wide validation webhook of the default \
             revision, from Istio's base chart.",
        ),
        values_layer: values_layer!("base"),
        chart_kinds: CHART_KINDS,
        native_objects,
        revisioned: false,
        plug_in_ca: false,
        network_gateway: false,
        managed_values: |context| {
            json!({
                // The default validator sends Istio config to istiod, wherever istiod runs.
                "global": {"istioNamespace": super::istiod::istiod_namespace(context)},
                "defaultRevision": default_revision(context),
                "base": {
                    // smm applies the CRDs itself; the chart leaves out exactly those it names here.
                    "excludedCRDs": CRD_OBJECTS.iter().map(NativeObject::name).collect::<Vec<_>>(),
                    "validationFailurePolicy": super::istio::VALIDATION_FAILURE_POLICY,
                },
            })
        },
    }
}

/// The revision base's validator sends Istio config to. Under `RevisionBased` none: the
/// validator belongs to the `default` tag, which smm moves only once its revision is Ready, while
/// base is upgraded before any istiod.
fn default_revision<'a>(context: &'a ComponentContext<'_>) -> &'a str {
    if context.spec.is_revision_based() {
        ""
    } else {
        context.revision.name()
    }
}

/// Istio's CRDs as the embedded base chart ships them, turned into one JSON array by build.rs.
const CRDS_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/istio-crds.json"));

/// Istio's CRDs as smm applies them, with smm's labels beside Istio's (so smm's objects are
/// found as one set): built once per process, on a thread of their own beside the first
/// requests (see [`warm_up`]).
static CRD_OBJECTS: LazyLock<Vec<NativeObject>> =
    LazyLock::new(|| super::labelled_crds(CRDS_JSON, "base"));

pub(super) fn warm_up() {
    LazyLock::force(&CRD_OBJECTS);
    LazyLock::force(&gateway_api::CRDS);
}

/// Istio's CRDs, and the Gateway API's when the spec wants them (after Istio's: nothing of
/// Istio's needs them to exist first, and istiod picks them up whenever they come).
fn native_objects(context: &ComponentContext<'_>) -> Vec<NativeObject> {
    if !context.enabled {
        return Vec::new();
    }
    let mut crds = CRD_OBJECTS.clone();
    if context.spec.gateway_api_enabled() {
        crds.extend(gateway_api::CRDS.iter().cloned());
    }
    crds
}

#[cfg(test)]
mod tests {
    use super::super::native_metadata;
    use super::*;
    use crate::api::objects::Presence;
    use crate::api::{ControlPlaneSpec, Profile};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use serde::Deserialize;

    /// Where the base chart keeps Istio's CRDs (build.rs reads the same file).
    const CRD_FILE: &str = "files/crd-all.gen.yaml";

    /// Istio's CRDs read from the embedded chart's YAML, typed.
    fn istio_crds() -> Vec<CustomResourceDefinition> {
        let chart = istio::upstream("base");
        let text = chart
            .get_file(chart.path().join(CRD_FILE))
            .and_then(|file| file.contents_utf8())
            .expect("the base chart has its CRD file");
        parse_crds(text).unwrap()
    }

    /// Every CRD of a multi-document YAML stream, skipping empty documents.
    fn parse_crds(text: &str) -> Result<Vec<CustomResourceDefinition>, serde_yaml_ng::Error> {
        serde_yaml_ng::Deserializer::from_str(text)
            .map(Option::<CustomResourceDefinition>::deserialize)
            .filter_map(Result::transpose)
            .collect()
    }

    fn crd_name(crd: &CustomResourceDefinition) -> String {
        crd.metadata.name.clone().unwrap_or_default()
    }

    /// The CRDs smm applies (from build.rs's JSON) are the chart's, object for object, with
    /// smm's labels. (Their digests differ from those of the CRDs as k8s-openapi types them,
    /// which write `minimum: 1` as `1.0`: the CRDs are applied once more after an upgrade.)
    #[test]
    fn the_crds_from_build_time_json_are_the_charts() {
        let from_chart: Vec<CustomResourceDefinition> = istio_crds()
            .into_iter()
            .map(|mut crd| {
                let ours = native_metadata(crd_name(&crd), "base").labels;
                crd.metadata
                    .labels
                    .get_or_insert_default()
                    .extend(ours.into_iter().flatten());
                crd
            })
            .collect();
        let applied: Vec<CustomResourceDefinition> = CRD_OBJECTS
            .iter()
            .map(|object| serde_json::to_value(object.object()).unwrap())
            .map(|value| serde_json::from_value(value).unwrap())
            .collect();
        assert_eq!(applied, from_chart);
    }

    #[test]
    fn crds_are_kept_when_disabled() {
        let spec = ControlPlaneSpec::default();
        let built = |enabled| {
            crate::mesh::components::built_for(&spec, "istio-system", enabled, native_objects)
        };
        let enabled = built(true);
        assert_eq!(enabled.len(), istio_crds().len());
        assert!(enabled.iter().all(|o| o.presence == Presence::Present));
        assert!(
            enabled.iter().all(
                |o| o.object().metadata.labels.as_ref().unwrap()["smm.dev/component"] == "base"
            )
        );
        // Disabled: no CRD is returned at all, so none is deleted.
        assert!(built(false).is_empty());
    }

    #[test]
    fn the_gateway_api_crds_come_with_the_ambient_profile_or_when_asked() {
        let count = |spec: &ControlPlaneSpec| {
            let placements = crate::mesh::components::test_placements(spec);
            let revision = crate::mesh::components::test_revision(spec);
            native_objects(&ComponentContext {
                spec,
                namespace: "istio-system",
                enabled: true,
                placements: &placements,
                revision: &revision,
            })
            .iter()
            .filter(|crd| crd.name().ends_with(".gateway.networking.k8s.io"))
            .count()
        };
        let all = gateway_api::CRDS.len();
        let sidecar = ControlPlaneSpec::default();
        assert_eq!(count(&sidecar), 0);
        let ambient = ControlPlaneSpec {
            profile: Some(Profile::Ambient),
            ..ControlPlaneSpec::default()
        };
        assert_eq!(count(&ambient), all);
        let switch = |spec: &ControlPlaneSpec, enabled| ControlPlaneSpec {
            gateway_api: Some(crate::api::GatewayApi {
                enabled: Some(enabled),
            }),
            ..spec.clone()
        };
        assert_eq!(count(&switch(&sidecar, true)), all);
        assert_eq!(count(&switch(&ambient, false)), 0);
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
        let values = crate::mesh::components::built_for(
            &spec,
            "istio-system",
            true,
            component().managed_values,
        );
        assert_eq!(values["global"], json!({"istioNamespace": "control"}));
        assert_eq!(values["defaultRevision"], "canary");
    }

    #[test]
    fn istios_fifteen_crds_are_applied_by_smm_and_left_out_of_the_chart() {
        let names: Vec<String> = istio_crds().iter().map(crd_name).collect();
        assert_eq!(names.len(), 15, "{names:?}");
        assert!(names.contains(&"virtualservices.networking.istio.io".to_owned()));
        let spec = ControlPlaneSpec::default();
        let values = crate::mesh::components::built_for(
            &spec,
            "istio-system",
            true,
            component().managed_values,
        );
        assert_eq!(values["base"]["excludedCRDs"], json!(names));
        assert_eq!(values["defaultRevision"], "default");
        // As istiod sets it once it validates, so a dump equals what runs.
        assert_eq!(values["base"]["validationFailurePolicy"], "Fail");
    }

    #[test]
    fn each_crd_stores_exactly_one_version() {
        for crd in &istio_crds() {
            assert_eq!(
                crd.spec.versions.iter().filter(|v| v.storage).count(),
                1,
                "{}",
                crd_name(crd)
            );
            assert_eq!(
                crd_name(crd),
                format!("{}.{}", crd.spec.names.plural, crd.spec.group)
            );
        }
    }
}
