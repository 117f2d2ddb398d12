//! The mesh's components as the catalog declares them, one module each.

/// The values layer of the file `values/<name>.yaml`: its path, for messages, and its text,
/// embedded.
macro_rules! values_layer {
    ($name:literal) => {
        (
            concat!("values/", $name, ".yaml"),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/values/",
                $name,
                ".yaml"
            )),
        )
    };
}

mod ambient;
mod base;
mod gateways;
mod grafana;
pub(crate) mod istio;
mod istiod;
mod kiali;
mod prometheus;
mod tracing;

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::ControlPlaneSpec;
use crate::api::objects::{MANAGED_BY, NativeObject, Presence};
use crate::mesh::catalog::Component;

/// Every component, in declaration order (the catalog sorts them by dependency).
pub fn all() -> Vec<Component> {
    vec![
        base::component(),
        istiod::component(),
        ambient::istio_cni(),
        ambient::ztunnel(),
        gateways::ingress(),
        gateways::egress(),
        gateways::eastwest(),
        prometheus::component(),
        grafana::component(),
        tracing::component(),
        kiali::component(),
    ]
}

/// Builds ahead of need what the builtin components build once per process (Istio's and the
/// Gateway API's CRDs as smm applies them): a command that will resolve a spec starts it beside its first API
/// requests rather than after them.
pub fn warm_up() {
    base::warm_up();
}

/// Where images come from when the ControlPlane names no registry.
pub const DEFAULT_IMAGE_REGISTRY: &str = "docker.io";

/// The registry every image of the mesh is pulled from.
fn image_registry(spec: &ControlPlaneSpec) -> &str {
    spec.image_registry
        .as_deref()
        .unwrap_or(DEFAULT_IMAGE_REGISTRY)
}

/// The managed values of a component that only needs to know where its images come from.
fn registry_only(context: &crate::mesh::catalog::ComponentContext<'_>) -> serde_json::Value {
    serde_json::json!({"global": {"imageRegistry": image_registry(context.spec)}})
}

/// A small chart for unit tests of the catalog, which only needs a chart to exist.
#[cfg(test)]
pub(crate) const TEST_CHART: crate::helm::chart::EmbeddedChart = {
    static TINY: include_dir::Dir<'static> =
        include_dir::include_dir!("$CARGO_MANIFEST_DIR/tests/fixtures/charts/tiny");
    crate::helm::chart::EmbeddedChart::new("tiny", &TINY)
};

/// Where the builtin components go for `spec`, for unit tests of one component's builders.
#[cfg(test)]
pub(crate) fn test_placements(spec: &ControlPlaneSpec) -> crate::mesh::catalog::Placements {
    crate::mesh::catalog::Catalog::builtin()
        .expect("the builtin catalog is consistent")
        .placements(spec)
}

/// What `build` (a component's managed values or native objects) makes for a component in
/// `namespace`, on or off, of a ControlPlane with `spec`, where the builtin components go.
#[cfg(test)]
pub(crate) fn built_for<R>(
    spec: &ControlPlaneSpec,
    namespace: &str,
    enabled: bool,
    build: impl FnOnce(&crate::mesh::catalog::ComponentContext<'_>) -> R,
) -> R {
    let placements = test_placements(spec);
    let revision = test_revision(spec);
    build(&crate::mesh::catalog::ComponentContext {
        spec,
        namespace,
        enabled,
        placements: &placements,
        revision: &revision,
    })
}

/// The revision `spec` asks for, for unit tests of one component's builders.
#[cfg(test)]
pub(crate) fn test_revision(
    spec: &ControlPlaneSpec,
) -> crate::mesh::revisions::strategy::ActiveRevision {
    crate::mesh::revisions::strategy::active(spec).expect("a test spec has a valid revision")
}

/// A component with the test chart and nothing else, for unit tests of catalog logic.
#[cfg(test)]
pub(crate) fn test_component(
    name: &'static str,
    depends_on: &'static [&'static str],
    enabled_by_default: bool,
) -> Component {
    Component {
        name,
        release_name: name,
        default_namespace: crate::mesh::catalog::DefaultNamespace::Mesh,
        enabled_by_default,
        enabled_in_profile: None,
        depends_on,
        chart: TEST_CHART,
        values_layer: ("values/test.yaml", "{}"),
        chart_kinds: &[],
        native_objects: |_| Vec::new(),
        revisioned: false,
        plug_in_ca: false,
        network_gateway: false,
        managed_values: |_| serde_json::Value::Null,
    }
}

/// One of our add-on charts, its images tagged as the add-on Istio's module tests with
/// (`samples/addons`, read by build.rs): the chart's appVersion, which its image tag defaults
/// to, is that tag.
fn addon_chart(
    name: &'static str,
    dir: &'static include_dir::Dir<'static>,
    tag: &'static str,
) -> crate::helm::chart::EmbeddedChart {
    crate::helm::chart::EmbeddedChart::new(name, dir).with_metadata(
        crate::helm::chart::MetadataOverride {
            app_version: Some(tag),
            ..Default::default()
        },
    )
}

/// Metadata for a cluster-scoped object smm owns natively, labelled as Helm-rendered objects are
/// so that `kubectl get -l app.kubernetes.io/managed-by=smm` finds both.
pub(crate) fn native_metadata(name: impl Into<String>, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(BTreeMap::from([
            (MANAGED_BY.to_owned(), "smm".to_owned()),
            ("app.kubernetes.io/part-of".to_owned(), "smm".to_owned()),
            ("smm.dev/component".to_owned(), component.to_owned()),
        ])),
        ..ObjectMeta::default()
    }
}

/// CRDs from a JSON array build.rs wrote, as smm applies them: smm's labels (for `component`)
/// beside their own, so smm's objects are found as one set.
pub(crate) fn labelled_crds(json: &str, component: &str) -> Vec<NativeObject> {
    let crds: Vec<serde_json::Value> = serde_json::from_str(json)
        .expect("build.rs wrote the CRDs as a JSON array (unit tests read them as CRDs)");
    crds.into_iter()
        .map(|mut crd| {
            let name = crd["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let labels = &mut crd["metadata"]["labels"];
            if !labels.is_object() {
                *labels = serde_json::Value::Object(Default::default());
            }
            let labels = labels.as_object_mut().expect("made an object above");
            for (key, value) in native_metadata(name, component).labels.into_iter().flatten() {
                labels.insert(key, serde_json::Value::String(value));
            }
            NativeObject::from_json::<
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
            >(crd, Presence::Present)
        })
        .collect()
}

/// A policy rule from string slices, to keep role definitions readable.
pub(crate) fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let owned = |items: &[&str]| items.iter().map(|item| (*item).to_owned()).collect();
    PolicyRule {
        api_groups: Some(owned(groups)),
        resources: Some(owned(resources)),
        verbs: owned(verbs),
        ..PolicyRule::default()
    }
}

const READ: &[&str] = &["get", "list", "watch"];

/// A cluster role and the binding that grants it to one service account, both named `name`,
/// both present or both absent.
pub(crate) fn cluster_role_for(
    name: &str,
    component: &str,
    rules: Vec<PolicyRule>,
    service_account: (&str, &str),
    presence: Presence,
) -> [NativeObject; 2] {
    let (account, namespace) = service_account;
    let role = ClusterRole {
        metadata: native_metadata(name, component),
        rules: Some(rules),
        ..ClusterRole::default()
    };
    let binding = ClusterRoleBinding {
        metadata: native_metadata(name, component),
        role_ref: role_ref("ClusterRole", name),
        subjects: Some(vec![service_account_subject(account, namespace)]),
    };
    [
        NativeObject::new(&role, presence),
        NativeObject::new(&binding, presence),
    ]
}

/// The cluster role of a component whose pods run as the service account named after it: role
/// and binding are called `<component>-<namespace>` (several meshes may share a cluster) and
/// exist exactly while the component is enabled.
fn component_cluster_role(
    context: &crate::mesh::catalog::ComponentContext<'_>,
    component: &str,
    rules: Vec<PolicyRule>,
) -> Vec<NativeObject> {
    cluster_role_for(
        &format!("{component}-{}", context.namespace),
        component,
        rules,
        (component, context.namespace),
        presence(context.enabled),
    )
    .into()
}

/// A reference to the role a binding grants.
pub(crate) fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
    }
}

/// A binding subject: one service account.
pub(crate) fn service_account_subject(name: &str, namespace: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".to_owned(),
        name: name.to_owned(),
        namespace: Some(namespace.to_owned()),
        ..Subject::default()
    }
}

/// Present while the component is enabled, absent once it is disabled.
fn presence(enabled: bool) -> Presence {
    if enabled {
        Presence::Present
    } else {
        Presence::Absent
    }
}

#[cfg(test)]
mod addon_tests {
    use super::*;

    /// Our add-on charts run the very images Istio's module tests with: registry, repository
    /// and tag as its `samples/addons` name them (`jaeger.yaml` for tracing).
    #[test]
    fn addon_images_are_those_of_istios_samples() {
        for (component, sample, registry) in [
            (
                prometheus::component(),
                "prometheus",
                DEFAULT_IMAGE_REGISTRY,
            ),
            (grafana::component(), "grafana", DEFAULT_IMAGE_REGISTRY),
            (tracing::component(), "jaeger", DEFAULT_IMAGE_REGISTRY),
            (kiali::component(), "kiali", kiali::DEFAULT_REGISTRY),
        ] {
            let defaults = component.chart.default_values().unwrap();
            let tag = component.chart.metadata().unwrap().app_version.unwrap();
            let repository = defaults["image"]["repository"].as_str().unwrap();
            let image = format!("{registry}/{repository}:{tag}");
            let manifest = std::fs::read_to_string(format!(
                "{}/.upstream/istio/addons/{sample}.yaml",
                env!("CARGO_MANIFEST_DIR"),
            ))
            .unwrap();
            assert!(
                manifest.contains(&format!("image: \"{image}\"")),
                "{} runs {image}, not what samples/addons/{sample}.yaml runs",
                component.name,
            );
        }
    }
}
