//! The desired state of every component, computed from a ControlPlane before anything touches
//! the cluster: a bad spec (unknown component, managed value overridden, broken chart) is
//! rejected here, so the cluster is left exactly as it was.

use serde_json::Value;

use crate::api::ControlPlaneSpec;
use crate::api::names::{self, InvalidName, TOPOLOGY_CONTROL_PLANES, TOPOLOGY_NETWORK};
use crate::api::objects::NativeObject;
use crate::helm::chart::{ChartError, ChartMetadata, EmbeddedChart};
use crate::helm::release::ReleaseRef;
use crate::helm::render::RenderRequest;
use crate::mesh::catalog::{Catalog, Component, ComponentContext, Placements};
use crate::mesh::graph;
use crate::mesh::revisions::strategy::{self, ActiveRevision, RevisionError};
use crate::values::digest::values_digest;
use crate::values::{Layers, MAX_DEPTH, ValuesError, layer, nested_deeper_than};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("spec.components.{name}: unknown component (known components: {})", known.join(", "))]
    UnknownComponent {
        name: String,
        known: Vec<&'static str>,
    },
    #[error(
        "spec.components.{component}: enabled, but it depends on {dependency}, which is disabled"
    )]
    DisabledDependency {
        component: &'static str,
        dependency: &'static str,
    },
    #[error(
        "spec.components.{component}: its release {release} is also managed by ControlPlane \
         {other}; give one of them another namespace (or turn the component off in one)"
    )]
    SharedRelease {
        component: &'static str,
        release: String,
        other: String,
    },
    #[error(transparent)]
    InvalidName(Box<InvalidName>),
    #[error(transparent)]
    Revision(Box<RevisionError>),
    #[error(
        "spec.multiCluster.primary: a remote cluster takes the sidecar profile only (its \
         istiod is the primary's; ambient mode over several clusters is not supported by smm \
         yet), but spec.profile is ambient"
    )]
    AmbientRemote,
    #[error(
        "spec.components.{component}: enabled, but it is its cluster's network gateway and \
         spec.multiCluster.network names no network; set it (a mesh whose clusters share one \
         network needs no east-west gateway)"
    )]
    NetworkGatewayWithoutNetwork { component: &'static str },
    #[error("{field}: values are nested deeper than {MAX_DEPTH} levels")]
    TooDeep { field: String },
    #[error(transparent)]
    Values(#[from] ValuesError),
    #[error(transparent)]
    Chart(#[from] ChartError),
}

impl From<RevisionError> for SpecError {
    fn from(invalid: RevisionError) -> Self {
        Self::Revision(Box::new(invalid))
    }
}

impl From<InvalidName> for SpecError {
    fn from(invalid: InvalidName) -> Self {
        Self::InvalidName(Box::new(invalid))
    }
}

/// Everything the engine needs to bring one component to its desired state.
#[derive(Debug)]
pub struct DesiredComponent<'c> {
    pub component: &'c Component,
    pub enabled: bool,
    pub release: ReleaseRef,
    pub chart: EmbeddedChart,
    pub chart_metadata: ChartMetadata,
    pub chart_digest: String,
    /// The merged values helm gets (only meaningful when enabled).
    pub values: Value,
    pub values_digest: String,
    /// Native objects in apply order: the release namespace first, then the component's own.
    pub native: Vec<NativeObject>,
}

impl DesiredComponent<'_> {
    pub fn name(&self) -> &'static str {
        self.component.name
    }

    /// What `--dump-resources` renders for this component.
    pub fn render_request(&self) -> RenderRequest<'_> {
        RenderRequest {
            name: self.name(),
            native: &self.native,
            chart: &self.chart,
            values: &self.values,
            release: &self.release,
        }
    }
}

impl graph::Node for DesiredComponent<'_> {
    fn name(&self) -> &'static str {
        self.component.name
    }
    fn depends_on(&self) -> &'static [&'static str] {
        self.component.depends_on
    }
}

/// Resolves every catalog component against the spec, in dependency order.
pub fn resolve<'c>(
    catalog: &'c Catalog,
    spec: &ControlPlaneSpec,
) -> Result<Vec<DesiredComponent<'c>>, SpecError> {
    if let Some(name) = spec
        .components
        .keys()
        .find(|name| catalog.get(name).is_none())
    {
        return Err(SpecError::UnknownComponent {
            name: name.clone(),
            known: catalog.names(),
        });
    }
    check_inputs(spec)?;
    let revision = strategy::active(spec)?;
    strategy::tags(spec, &revision)?;
    let placements = catalog.placements(spec);
    let enabled = |name: &str| placements[name].enabled;
    let network = spec
        .multi_cluster
        .as_ref()
        .is_some_and(|mc| mc.network.is_some());
    let components = catalog.components().iter();
    let gateway_without_network = components
        .filter(|c| c.network_gateway && enabled(c.name))
        .find(|_| !network);
    if let Some(gateway) = gateway_without_network {
        return Err(SpecError::NetworkGatewayWithoutNetwork {
            component: gateway.name,
        });
    }
    for component in catalog.components().iter().filter(|c| enabled(c.name)) {
        let disabled = component.depends_on.iter().find(|d| !enabled(d));
        if let Some(dependency) = disabled {
            return Err(SpecError::DisabledDependency {
                component: component.name,
                dependency,
            });
        }
    }
    let desired: Vec<DesiredComponent<'c>> = catalog
        .components()
        .iter()
        .map(|component| resolve_one(component, spec, &placements, &revision))
        .collect::<Result<_, _>>()?;
    Ok(desired)
}

/// Checks every name and address the spec gives, and how deep its values nest, before any of
/// them names an object or is written into a chart's values.
fn check_inputs(spec: &ControlPlaneSpec) -> Result<(), SpecError> {
    let checks: [(&str, Option<&String>, names::Check); 4] = [
        ("spec.namespace", spec.namespace.as_ref(), names::namespace),
        // An empty revision is the default one, as if it were unset.
        (
            "spec.revision",
            spec.revision.as_ref().filter(|r| !r.is_empty()),
            names::revision,
        ),
        (
            "spec.trustDomain",
            spec.trust_domain.as_ref(),
            names::trust_domain,
        ),
        (
            "spec.imageRegistry",
            spec.image_registry.as_ref(),
            names::image_registry,
        ),
    ];
    for (field, value, check) in checks {
        value.map_or(Ok(()), |value| check(field, value))?;
    }
    if let Some(multi_cluster) = &spec.multi_cluster {
        check_multi_cluster(spec, multi_cluster)?;
    }
    for (name, component) in &spec.components {
        if let Some(namespace) = &component.namespace {
            names::namespace(&format!("spec.components.{name}.namespace"), namespace)?;
        }
        let values = component.values_override.as_ref();
        if values.is_some_and(|values| nested_deeper_than(values, MAX_DEPTH)) {
            return Err(SpecError::TooDeep {
                field: format!("spec.components.{name}.valuesOverride"),
            });
        }
    }
    Ok(())
}

fn check_multi_cluster(
    spec: &ControlPlaneSpec,
    multi_cluster: &crate::api::MultiCluster,
) -> Result<(), SpecError> {
    let field = "spec.multiCluster";
    names::cluster_name(&format!("{field}.clusterName"), &multi_cluster.cluster_name)?;
    if let Some(mesh_id) = &multi_cluster.mesh_id {
        names::topology_name(&format!("{field}.meshID"), mesh_id)?;
    }
    if let Some(network) = &multi_cluster.network {
        names::topology_name(&format!("{field}.network"), network)?;
    }
    if let Some(primary) = &multi_cluster.primary {
        names::cluster_name(
            &format!("{field}.primary.clusterName"),
            &primary.cluster_name,
        )?;
        names::ip_address(&format!("{field}.primary.address"), &primary.address)?;
        if spec.profile() == crate::api::Profile::Ambient {
            return Err(SpecError::AmbientRemote);
        }
    }
    Ok(())
}

/// The release of `component` placed in `namespace`, for `spec` whose revision is `revision`.
pub(super) fn release_of(
    component: &Component,
    namespace: &str,
    spec: &ControlPlaneSpec,
    revision: &ActiveRevision,
) -> ReleaseRef {
    ReleaseRef {
        name: component.release_name_for(spec, revision),
        namespace: namespace.to_owned(),
    }
}

fn resolve_one<'c>(
    component: &'c Component,
    spec: &ControlPlaneSpec,
    placements: &Placements,
    revision: &ActiveRevision,
) -> Result<DesiredComponent<'c>, SpecError> {
    let configured = spec.components.get(component.name);
    let placement = &placements[component.name];
    let (namespace, enabled) = (placement.namespace.as_str(), placement.enabled);
    let context = ComponentContext {
        spec,
        namespace,
        enabled,
        placements,
        revision,
    };
    let chart = component.chart;
    let chart_metadata = chart.metadata()?;
    let values = layer(
        component.name,
        Layers {
            chart_defaults: &chart.default_values()?,
            component_layer: &component.values_layer()?,
            user_override: configured.and_then(|c| c.values_override.as_ref()),
            managed: &(component.managed_values)(&context),
        },
    )?;
    let mut native = Vec::new();
    if enabled {
        native.push(NativeObject::present(&namespace_object(namespace, spec)));
    }
    native.extend((component.native_objects)(&context));
    Ok(DesiredComponent {
        component,
        enabled,
        release: release_of(component, namespace, spec, revision),
        chart_digest: chart.digest()?,
        chart,
        chart_metadata,
        values_digest: values_digest(&values),
        values,
        native,
    })
}

/// The release namespace is applied, never deleted: other components and the user's own
/// workloads may live in it. In a mesh of several clusters, the mesh's namespace also says
/// which network the cluster's workloads are on and, on a remote cluster, which primary's
/// istiod manages it: istiod reads both from there (`topology.istio.io/*`).
fn namespace_object(name: &str, spec: &ControlPlaneSpec) -> k8s_openapi::api::core::v1::Namespace {
    let mut namespace = k8s_openapi::api::core::v1::Namespace::default();
    namespace.metadata.name = Some(name.to_owned());
    let topology = spec
        .multi_cluster
        .as_ref()
        .filter(|_| name == spec.mesh_namespace());
    if let Some(multi_cluster) = topology {
        if let Some(network) = &multi_cluster.network {
            namespace.metadata.labels =
                Some([(TOPOLOGY_NETWORK.to_owned(), network.clone())].into());
        }
        if let Some(primary) = &multi_cluster.primary {
            let clusters = (
                TOPOLOGY_CONTROL_PLANES.to_owned(),
                primary.cluster_name.clone(),
            );
            namespace.metadata.annotations = Some([clusters].into());
        }
    }
    namespace
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_resolve_in_dependency_order() {
        let catalog = Catalog::builtin().unwrap();
        let desired = resolve(&catalog, &ControlPlaneSpec::default()).unwrap();
        let names: Vec<_> = desired.iter().map(DesiredComponent::name).collect();
        assert_eq!(
            names,
            [
                "base",
                "istiod",
                "istio-cni",
                "ztunnel",
                "ingress-gateway",
                "egress-gateway",
                "eastwest-gateway",
                "prometheus",
                "grafana",
                "tracing",
                "kiali"
            ]
        );
        let istiod = &desired[1];
        assert!(istiod.enabled);
        assert_eq!(istiod.release.to_string(), "istio-system/istiod");
        assert_eq!(istiod.values["global"]["istioNamespace"], "istio-system");
        assert_eq!(istiod.values["global"]["hub"], "docker.io/istio");
        assert_eq!(istiod.values["global"]["tag"], "1.31.4");
        // From values/istiod.yaml at the top level, where Istio's chart lets user values win
        // over the defaults it keeps under `_internal_defaults_do_not_set`.
        assert_eq!(istiod.values["resources"]["requests"]["cpu"], "100m");
        assert_eq!(
            istiod.values["_internal_defaults_do_not_set"]["resources"]["requests"]["cpu"],
            "500m"
        );
    }

    #[test]
    fn unknown_components_are_rejected_naming_the_known_ones() {
        let catalog = Catalog::builtin().unwrap();
        let err = resolve(
            &catalog,
            &ControlPlaneSpec::default().with_component("istio-d", |_| {}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.components.istio-d: unknown component (known components: base, istiod, \
             istio-cni, ztunnel, ingress-gateway, egress-gateway, eastwest-gateway, prometheus, grafana, tracing, kiali)"
        );
    }

    /// Every name and address is checked before anything is rendered: each refusal names the
    /// field and the rule.
    fn multi_cluster(cluster_name: &str, primary_address: Option<&str>) -> ControlPlaneSpec {
        let primary = primary_address.map(|address| crate::api::PrimaryCluster {
            cluster_name: "a".to_owned(),
            address: address.to_owned(),
        });
        ControlPlaneSpec {
            multi_cluster: Some(crate::api::MultiCluster {
                cluster_name: cluster_name.to_owned(),
                primary,
                ..crate::api::MultiCluster::default()
            }),
            ..ControlPlaneSpec::default()
        }
    }

    #[test]
    fn the_mesh_namespace_says_its_network_and_a_remotes_primary() {
        let catalog = Catalog::builtin().unwrap();
        let mut spec = multi_cluster("b", Some("198.51.100.10"));
        spec.multi_cluster.as_mut().unwrap().network = Some("net1".to_owned());
        let desired = resolve(&catalog, &spec).unwrap();
        let istiod = desired.iter().find(|d| d.name() == "istiod").unwrap();
        let namespace = serde_json::to_value(istiod.native[0].object()).unwrap();
        let metadata = &namespace["metadata"];
        assert_eq!(metadata["name"], "istio-system", "{namespace}");
        assert_eq!(metadata["labels"][TOPOLOGY_NETWORK], "net1");
        assert_eq!(metadata["annotations"][TOPOLOGY_CONTROL_PLANES], "a");
        // Another component's namespace is only a namespace.
        let spec = spec.with_component("grafana", |c| {
            c.enabled = Some(true);
            c.namespace = Some("monitoring".to_owned());
        });
        let desired = resolve(&catalog, &spec).unwrap();
        let grafana = desired.iter().find(|d| d.name() == "grafana").unwrap();
        let namespace = serde_json::to_value(grafana.native[0].object()).unwrap();
        assert_eq!(namespace["metadata"].get("labels"), None, "{namespace}");
    }

    #[test]
    fn bad_names_and_values_are_refused_naming_the_field() {
        let catalog = Catalog::builtin().unwrap();
        let label = "must be a DNS-1123 label (lowercase letters, digits and '-', starting and \
                     ending with a letter or digit, at most";
        let deep = (0..101).fold(json!(1), |inner, _| json!({"a": inner}));
        let cases = [
            (
                ControlPlaneSpec {
                    namespace: Some("Istio".to_owned()),
                    ..ControlPlaneSpec::default()
                },
                format!(
                    "spec.namespace: \"Istio\" is not a valid namespace: {label} 63 characters)"
                ),
            ),
            (
                ControlPlaneSpec::default()
                    .with_component("istiod", |c| c.namespace = Some("Foo".to_owned())),
                format!(
                    "spec.components.istiod.namespace: \"Foo\" is not a valid namespace: {label} \
                     63 characters)"
                ),
            ),
            (
                ControlPlaneSpec {
                    revision: Some("1.28".to_owned()),
                    ..ControlPlaneSpec::default()
                },
                format!(
                    "spec.revision: \"1.28\" is not a valid revision: {label} 56 characters, so \
                     that istiod-<revision> fits in 63)"
                ),
            ),
            (
                ControlPlaneSpec {
                    trust_domain: Some("a/b".to_owned()),
                    ..ControlPlaneSpec::default()
                },
                format!(
                    "spec.trustDomain: \"a/b\" is not a valid trust domain: {}",
                    names::Rule::TrustDomain
                ),
            ),
            (
                ControlPlaneSpec {
                    image_registry: Some("r.io\nkind: Secret".to_owned()),
                    ..ControlPlaneSpec::default()
                },
                format!(
                    "spec.imageRegistry: \"r.io\\nkind: Secret\" is not a valid image registry: {}",
                    names::Rule::ImageRegistry
                ),
            ),
            (
                multi_cluster("Cluster_B", None),
                format!(
                    "spec.multiCluster.clusterName: \"Cluster_B\" is not a valid cluster name: \
                     {label} 43 characters, so that its remote secret \
                     istio-remote-secret-<name> fits in 63)"
                ),
            ),
            (
                multi_cluster("b", Some("127.0.0.1")),
                format!(
                    "spec.multiCluster.primary.address: \"127.0.0.1\" is not a valid address: {}",
                    names::Rule::IpAddress
                ),
            ),
            (
                multi_cluster("b", Some("istiod.example.org")),
                format!(
                    "spec.multiCluster.primary.address: \"istiod.example.org\" is not a valid \
                     address: {}",
                    names::Rule::IpAddress
                ),
            ),
            (
                ControlPlaneSpec {
                    profile: Some(crate::api::Profile::Ambient),
                    ..multi_cluster("b", Some("198.51.100.10"))
                },
                SpecError::AmbientRemote.to_string(),
            ),
            (
                multi_cluster("b", None).with_enabled("eastwest-gateway", true),
                SpecError::NetworkGatewayWithoutNetwork {
                    component: "eastwest-gateway",
                }
                .to_string(),
            ),
            (
                ControlPlaneSpec::default().with_values("grafana", deep),
                "spec.components.grafana.valuesOverride: values are nested deeper than 100 levels"
                    .to_owned(),
            ),
        ];
        for (spec, message) in cases {
            assert_eq!(resolve(&catalog, &spec).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn overriding_a_managed_value_is_rejected() {
        let catalog = Catalog::builtin().unwrap();
        let spec = ControlPlaneSpec::default()
            .with_values("istiod", json!({"global": {"istioNamespace": "mine"}}));
        let err = resolve(&catalog, &spec).unwrap_err();
        assert_eq!(
            err.to_string(),
            "istiod: valuesOverride.global.istioNamespace is managed by smm"
        );
    }

    #[test]
    fn istios_own_keys_that_smm_manages_cannot_be_overridden() {
        let catalog = Catalog::builtin().unwrap();
        for (component, values, path) in [
            ("istiod", json!({"global": {"hub": "mine"}}), "global.hub"),
            ("istiod", json!({"revision": "x"}), "revision"),
            (
                "istiod",
                json!({"revisionTags": ["stable"]}),
                "revisionTags",
            ),
            ("ingress-gateway", json!({"revision": "x"}), "revision"),
            ("base", json!({"defaultRevision": "x"}), "defaultRevision"),
        ] {
            let spec = ControlPlaneSpec::default().with_values(component, values);
            let err = resolve(&catalog, &spec).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{component}: valuesOverride.{path} is managed by smm")
            );
        }
        // The image tag is smm's default, not managed.
        let spec =
            ControlPlaneSpec::default().with_values("istiod", json!({"global": {"tag": "1.31.5"}}));
        let desired = resolve(&catalog, &spec).unwrap();
        assert_eq!(desired[1].values["global"]["tag"], "1.31.5");
    }

    #[test]
    fn an_override_changes_only_that_components_values_digest() {
        let catalog = Catalog::builtin().unwrap();
        let before = resolve(&catalog, &ControlPlaneSpec::default()).unwrap();
        let spec = ControlPlaneSpec::default().with_values("istiod", json!({"replicaCount": 2}));
        let after = resolve(&catalog, &spec).unwrap();
        assert_eq!(before[0].values_digest, after[0].values_digest);
        assert_ne!(before[1].values_digest, after[1].values_digest);
        assert_eq!(before[1].chart_digest, after[1].chart_digest);
    }

    #[test]
    fn an_enabled_component_needs_its_dependencies_enabled() {
        let catalog = Catalog::builtin().unwrap();
        let spec = ControlPlaneSpec::default().with_enabled("base", false);
        // Left to their defaults, istiod and the ingress gateway follow base out.
        let desired = resolve(&catalog, &spec).unwrap();
        assert!(
            desired
                .iter()
                .all(|d| !d.enabled || d.component.depends_on.is_empty())
        );
        let spec = spec.with_enabled("istiod", true);
        let err = resolve(&catalog, &spec).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.components.istiod: enabled, but it depends on base, which is disabled"
        );
    }

    #[test]
    fn a_disabled_component_wants_its_native_objects_gone() {
        let catalog = Catalog::builtin().unwrap();
        let spec = ControlPlaneSpec::default()
            .with_enabled("istiod", false)
            .with_enabled("ingress-gateway", false);
        let desired = resolve(&catalog, &spec).unwrap();
        assert!(!desired[1].enabled);
        assert!(
            desired[1]
                .native
                .iter()
                .all(|object| object.presence == crate::api::objects::Presence::Absent)
        );
    }

    #[test]
    fn revision_based_runs_istiod_as_a_release_per_version() {
        use crate::api::UpdateStrategyType;
        let catalog = Catalog::builtin().unwrap();
        let spec = ControlPlaneSpec {
            version: Some("1.31.2".to_owned()),
            ..ControlPlaneSpec::default()
        }
        .with_update_strategy(UpdateStrategyType::RevisionBased);
        let desired = resolve(&catalog, &spec).unwrap();
        let by_name = |name: &str| desired.iter().find(|d| d.name() == name).unwrap();
        let istiod = by_name("istiod");
        assert_eq!(istiod.release.to_string(), "istio-system/istiod-1-31-2");
        assert_eq!(istiod.values["revision"], "1-31-2");
        assert_eq!(istiod.values["global"]["tag"], "1.31.2");
        // The default tag owns the mesh-wide validator; the gateways follow the revision.
        assert_eq!(by_name("base").values["defaultRevision"], "");
        assert_eq!(by_name("ingress-gateway").values["revision"], "1-31-2");
        // Other releases keep their names.
        assert_eq!(
            by_name("base").release.to_string(),
            "istio-system/istio-base"
        );
        // Given in the spec, the version is smm's to set.
        let spec = spec.with_values("istiod", json!({"global": {"tag": "1.31.3"}}));
        assert_eq!(
            resolve(&catalog, &spec).unwrap_err().to_string(),
            "istiod: valuesOverride.global.tag is managed by smm"
        );
    }
}
