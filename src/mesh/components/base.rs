//! `base`: Istio's base chart (the default-revision validator, the reader ServiceAccount) and
//! Istio's CRDs. The CRDs come from the chart's `files/crd-all.gen.yaml` but go through the
//! native builder instead of helm, because helm never upgrades CRDs; they stay when `base` is
//! disabled, since deleting a CRD deletes every object of its kind.

use std::sync::LazyLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;
use serde_json::json;

use super::{istio, native_metadata, revision};
use crate::cluster::objects::NativeObject;
use crate::mesh::catalog::{Component, ComponentContext, DefaultNamespace};

/// Where the base chart keeps Istio's CRDs.
const CRD_FILE: &str = "files/crd-all.gen.yaml";

pub fn component() -> Component {
    Component {
        name: "base",
        release_name: "istio-base",
        default_namespace: DefaultNamespace::Mesh,
        enabled_by_default: true,
        depends_on: &[],
        chart: istio::chart(
            "base",
            &istio::BASE,
            "Istio's CRDs (applied by smm) and the mesh-wide validation webhook of the default \
             revision, from Istio's base chart.",
        ),
        values_layer: (
            "values/base.yaml",
            include_str!("../../../values/base.yaml"),
        ),
        native_objects,
        managed_values: |context| {
            json!({
                // The default validator sends Istio config to istiod, wherever istiod runs.
                "global": {"istioNamespace": super::istiod::istiod_namespace(context)},
                "defaultRevision": match revision(context.spec) {
                    "" => "default",
                    revision => revision,
                },
                // smm applies the CRDs itself; the chart leaves out exactly those it names here.
                "base": {"excludedCRDs": CRD_OBJECTS.iter().map(NativeObject::name).collect::<Vec<_>>()},
            })
        },
    }
}

/// Istio's CRDs as the embedded base chart ships them. The file is fixed at build time and a
/// unit test parses it, so failing here means a build from a broken fetch.
fn istio_crds() -> Vec<CustomResourceDefinition> {
    parse_crds(crd_file()).expect("the embedded base chart's CRDs parse (a unit test checks)")
}

/// Istio's CRDs as smm applies them, with smm's labels beside Istio's (so smm's objects are
/// found as one set): built once per process, as parsing them is most of resolving a spec.
static CRD_OBJECTS: LazyLock<Vec<NativeObject>> = LazyLock::new(|| {
    istio_crds()
        .into_iter()
        .map(|mut crd| {
            let ours = native_metadata(crd_name(&crd), "base").labels;
            crd.metadata
                .labels
                .get_or_insert_default()
                .extend(ours.into_iter().flatten());
            NativeObject::present(&crd)
        })
        .collect()
});

pub(super) fn warm_up() {
    LazyLock::force(&CRD_OBJECTS);
}

fn crd_file() -> &'static str {
    istio::BASE
        .get_file(istio::BASE.path().join(CRD_FILE))
        .and_then(|file| file.contents_utf8())
        .expect("the base chart has its CRD file (build.rs checked the fetch)")
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

fn native_objects(context: &ComponentContext<'_>) -> Vec<NativeObject> {
    if !context.enabled {
        return Vec::new();
    }
    CRD_OBJECTS.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ControlPlaneSpec;
    use crate::cluster::objects::Presence;

    #[test]
    fn crds_are_kept_when_disabled() {
        let spec = ControlPlaneSpec::default();
        let placements = crate::mesh::components::test_placements(&spec);
        let context = |enabled| ComponentContext {
            spec: &spec,
            namespace: "istio-system",
            enabled,
            placements: &placements,
        };
        let enabled = native_objects(&context(true));
        assert_eq!(enabled.len(), istio_crds().len());
        assert!(enabled.iter().all(|o| o.presence == Presence::Present));
        assert!(
            enabled.iter().all(
                |o| o.object().metadata.labels.as_ref().unwrap()["smm.dev/component"] == "base"
            )
        );
        // Disabled: no CRD is returned at all, so none is deleted.
        assert!(native_objects(&context(false)).is_empty());
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
        assert_eq!(values["global"], json!({"istioNamespace": "control"}));
        assert_eq!(values["defaultRevision"], "canary");
    }

    #[test]
    fn istios_fifteen_crds_are_applied_by_smm_and_left_out_of_the_chart() {
        let names: Vec<String> = istio_crds().iter().map(crd_name).collect();
        assert_eq!(names.len(), 15, "{names:?}");
        assert!(names.contains(&"virtualservices.networking.istio.io".to_owned()));
        let spec = ControlPlaneSpec::default();
        let values = (component().managed_values)(&ComponentContext {
            spec: &spec,
            namespace: "istio-system",
            enabled: true,
            placements: &crate::mesh::components::test_placements(&spec),
        });
        assert_eq!(values["base"]["excludedCRDs"], json!(names));
        assert_eq!(values["defaultRevision"], "default");
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

    #[test]
    fn parse_crds_skips_empty_documents_and_reports_bad_ones() {
        let two = "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
                   metadata: {name: as.x.io}\nspec: {group: x.io, names: {kind: A, plural: as}, \
                   scope: Namespaced, versions: []}\n---\n---\n";
        assert_eq!(parse_crds(two).unwrap().len(), 1);
        assert!(parse_crds("kind: [").is_err());
    }
}
