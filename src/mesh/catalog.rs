//! The component catalog: every mesh component declared once, with its chart, values layer,
//! dependencies, native pre-steps and managed values, and the order they reconcile in.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::graph;
use crate::api::objects::NativeObject;
use crate::api::{ControlPlaneSpec, Profile};
use crate::helm::chart::EmbeddedChart;
use crate::mesh::revisions::strategy::ActiveRevision;
use crate::values::{ValuesError, parse_yaml_values};

/// Whether `release` may be a release of the component whose release is `release_name`,
/// whatever the revision when the component is `revisioned` (`istiod-1-31-4` is istiod's).
pub fn may_be_release_of(release_name: &str, revisioned: bool, release: &str) -> bool {
    release == release_name
        || (revisioned
            && release
                .strip_prefix(release_name)
                .is_some_and(|rest| rest.starts_with('-')))
}

/// Where a component's release goes when the ControlPlane does not say.
#[derive(Clone, Copy, Debug)]
pub enum DefaultNamespace {
    /// The mesh's namespace (`spec.namespace`).
    Mesh,
    /// A namespace of its own.
    Fixed(&'static str),
}

/// What a component's builders see: the ControlPlane, what was resolved for this component, and
/// where every other component goes (for values that point at them).
#[derive(Clone, Copy, Debug)]
pub struct ComponentContext<'a> {
    pub spec: &'a ControlPlaneSpec,
    pub namespace: &'a str,
    pub enabled: bool,
    pub placements: &'a Placements,
    /// The istiod revision the spec asks for (checked when the spec was resolved).
    pub revision: &'a ActiveRevision,
}

impl ComponentContext<'_> {
    /// Where another component of the catalog goes, as this ControlPlane resolves it.
    pub fn placement_of(&self, component: &str) -> &Placement {
        self.placements
            .get(component)
            .unwrap_or_else(|| panic!("{component} is not a component of this catalog"))
    }
}

/// Where a component's release goes and whether the ControlPlane enables it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub namespace: String,
    pub enabled: bool,
}

/// Every component's placement for one ControlPlane, by name: the one place the enabled rule and
/// the namespace defaults are applied, read by the engine, `smm components` and the builders.
pub type Placements = BTreeMap<&'static str, Placement>;

/// A kind of object, named as RBAC names it (API group and resource) and as manifests do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChartKind {
    pub group: &'static str,
    pub kind: &'static str,
    /// The resource, plural and lower case, as RBAC rules and API paths name it.
    pub resource: &'static str,
}

impl ChartKind {
    /// The kind of `K`, as k8s-openapi types it.
    pub const fn of<K: k8s_openapi::Resource>() -> Self {
        Self {
            group: K::GROUP,
            kind: K::KIND,
            resource: K::URL_PATH_SEGMENT,
        }
    }
}

/// One mesh component.
pub struct Component {
    pub name: &'static str,
    pub release_name: &'static str,
    pub default_namespace: DefaultNamespace,
    pub enabled_by_default: bool,
    /// Also on by default under this profile (the node agents under `ambient`).
    pub enabled_in_profile: Option<Profile>,
    pub depends_on: &'static [&'static str],
    /// The chart, compiled in (`charts/<name>`).
    pub chart: EmbeddedChart,
    /// smm's values layer for the chart: (file name for messages, YAML text).
    pub values_layer: (&'static str, &'static str),
    /// Every kind of object the chart can render, optional features included: the operator is
    /// granted what helm needs on each (`operator/rbac.rs`), and `tests/packaging.rs` renders
    /// the chart with its features on and fails on a kind missing here.
    pub chart_kinds: &'static [ChartKind],
    /// Objects created natively before the chart (CRDs, RBAC), each marked present or absent.
    pub native_objects: fn(&ComponentContext<'_>) -> Vec<NativeObject>,
    /// Values computed from the ControlPlane that the user may not override.
    pub managed_values: fn(&ComponentContext<'_>) -> Value,
    /// The component runs one release per istiod revision under the `RevisionBased` update
    /// strategy (`<release_name>-<revision>`), and a revision's release is kept after the next
    /// one replaces it, until nothing uses it (istiod).
    pub revisioned: bool,
    /// The component is Istio's CA (istiod), which reads its signing CA from the Secret
    /// `cacerts` in its namespace at start: on the primary of a mesh of several clusters, the
    /// engine makes that Secret from the mesh's shared root before the chart is installed
    /// (`mesh::trust`).
    pub plug_in_ca: bool,
    /// A network's gateway (the east-west gateway): it can be on only where
    /// `spec.multiCluster.network` names the network, and `smm install --all` leaves it out
    /// elsewhere.
    pub network_gateway: bool,
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component")
            .field("name", &self.name)
            .field("depends_on", &self.depends_on)
            .finish_non_exhaustive()
    }
}

impl Component {
    /// The component's release name for `spec`, whose revision is `revision`.
    pub fn release_name_for(&self, spec: &ControlPlaneSpec, revision: &ActiveRevision) -> String {
        if self.revisioned && spec.is_revision_based() {
            format!("{}-{}", self.release_name, revision.value)
        } else {
            self.release_name.to_owned()
        }
    }

    /// Whether the component is on when `spec` does not say, its dependencies aside.
    pub fn on_by_default(&self, spec: &ControlPlaneSpec) -> bool {
        self.enabled_by_default || self.enabled_in_profile == Some(spec.profile())
    }

    /// The default as `smm components` and the README say it: `yes`, `no`, or the profile.
    pub fn default_label(&self) -> String {
        match (self.enabled_by_default, self.enabled_in_profile) {
            (true, _) => "yes".to_owned(),
            (false, Some(profile)) => format!("with profile {profile}"),
            (false, None) => "no".to_owned(),
        }
    }

    /// smm's values layer for the component, parsed.
    pub fn values_layer(&self) -> Result<Value, ValuesError> {
        let (file, yaml) = self.values_layer;
        parse_yaml_values(file, yaml)
    }

    pub fn namespace<'a>(
        &self,
        spec: &'a ControlPlaneSpec,
        configured: Option<&'a str>,
    ) -> &'a str {
        match (configured, self.default_namespace) {
            (Some(namespace), _) => namespace,
            (None, DefaultNamespace::Mesh) => spec.mesh_namespace(),
            (None, DefaultNamespace::Fixed(namespace)) => namespace,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("component {0} is declared twice")]
    Duplicate(&'static str),
    #[error("component {component} depends on {missing}, which is not in the catalog")]
    UnknownDependency {
        component: &'static str,
        missing: &'static str,
    },
    #[error("dependency cycle between components: {}", .0.join(" -> "))]
    Cycle(Vec<&'static str>),
    #[error(transparent)]
    ReleaseName(#[from] crate::api::names::InvalidName),
}

/// The components in dependency order. Construction fails on duplicates, unknown dependencies
/// and cycles, so an inconsistent catalog stops smm at startup instead of mid-reconcile.
#[derive(Debug)]
pub struct Catalog {
    /// Dependencies before dependents; among independent components, declaration order.
    ordered: Vec<Component>,
}

impl Catalog {
    pub fn new(components: Vec<Component>) -> Result<Self, CatalogError> {
        let mut by_name: BTreeMap<&'static str, &Component> = BTreeMap::new();
        for component in &components {
            if by_name.insert(component.name, component).is_some() {
                return Err(CatalogError::Duplicate(component.name));
            }
            let field = format!("component {}: release", component.name);
            crate::api::names::release_name(&field, component.release_name)?;
        }
        for component in &components {
            if let Some(missing) = component
                .depends_on
                .iter()
                .find(|dependency| !by_name.contains_key(*dependency))
            {
                return Err(CatalogError::UnknownDependency {
                    component: component.name,
                    missing,
                });
            }
        }
        let order = graph::dependency_order(&components).map_err(CatalogError::Cycle)?;
        let mut slots: Vec<Option<Component>> = components.into_iter().map(Some).collect();
        let ordered = order
            .into_iter()
            .map(|index| slots[index].take().expect("each index once"))
            .collect();
        Ok(Self { ordered })
    }

    /// The mesh's components.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::new(crate::mesh::components::all())
    }

    /// All components, dependencies first.
    pub fn components(&self) -> &[Component] {
        &self.ordered
    }

    pub fn get(&self, name: &str) -> Option<&Component> {
        self.ordered.iter().find(|component| component.name == name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.ordered
            .iter()
            .map(|component| component.name)
            .collect()
    }

    /// The catalog as a Markdown table, as the README shows it.
    pub fn markdown_table(&self) -> Result<String, crate::helm::chart::ChartError> {
        let mut table = String::from(
            "| component | what it deploys | chart | app version | depends on | enabled by default |\n\
             |---|---|---|---|---|---|\n",
        );
        for component in &self.ordered {
            let metadata = component.chart.metadata()?;
            let depends_on = if component.depends_on.is_empty() {
                "—".to_owned()
            } else {
                component.depends_on.join(", ")
            };
            table.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} |\n",
                component.name,
                metadata.description.unwrap_or_default(),
                metadata.version,
                metadata.app_version.unwrap_or_default(),
                depends_on,
                component.default_label(),
            ));
        }
        Ok(table)
    }

    /// Which components the spec enables: its explicit `enabled` wins; otherwise a component is
    /// on by default only while everything it depends on is on, so turning off a dependency
    /// also turns off the defaults that need it (and a new default component never makes an
    /// existing spec invalid).
    fn enabled(&self, spec: &ControlPlaneSpec) -> BTreeMap<&'static str, bool> {
        let mut enabled = BTreeMap::new();
        // Dependencies come first, so their state is known when a dependent is looked at.
        for component in &self.ordered {
            let explicit = spec.components.get(component.name).and_then(|c| c.enabled);
            let dependencies_on = component
                .depends_on
                .iter()
                .all(|dependency| enabled.get(dependency) == Some(&true));
            let on = explicit.unwrap_or(component.on_by_default(spec) && dependencies_on);
            enabled.insert(component.name, on);
        }
        enabled
    }

    /// Where every component goes and whether it is on, for `spec`.
    pub fn placements(&self, spec: &ControlPlaneSpec) -> Placements {
        let enabled = self.enabled(spec);
        self.ordered
            .iter()
            .map(|component| {
                let configured = spec.components.get(component.name);
                let namespace =
                    component.namespace(spec, configured.and_then(|c| c.namespace.as_deref()));
                let placement = Placement {
                    namespace: namespace.to_owned(),
                    enabled: enabled[component.name],
                };
                (component.name, placement)
            })
            .collect()
    }

    /// The components that depend on `name`, directly or through others.
    pub fn dependents_of(&self, name: &str) -> BTreeSet<&'static str> {
        graph::dependents_of(&self.ordered, name)
    }

    /// `names` and everything they depend on.
    pub fn with_dependencies(&self, names: &[&'static str]) -> BTreeSet<&'static str> {
        graph::with_dependencies(&self.ordered, names)
    }
}

impl graph::Node for Component {
    fn name(&self) -> &'static str {
        self.name
    }
    fn depends_on(&self) -> &'static [&'static str] {
        self.depends_on
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(name: &'static str, depends_on: &'static [&'static str]) -> Component {
        crate::mesh::components::test_component(name, depends_on, true)
    }

    #[test]
    fn dependencies_come_first_and_ties_keep_declaration_order() {
        let catalog = Catalog::new(vec![
            component("grafana", &["prometheus"]),
            component("gateway", &["istiod"]),
            component("istiod", &["base"]),
            component("base", &[]),
            component("prometheus", &[]),
        ])
        .unwrap();
        assert_eq!(
            catalog.names(),
            ["base", "istiod", "gateway", "prometheus", "grafana"]
        );
        assert_eq!(
            catalog
                .dependents_of("base")
                .into_iter()
                .collect::<Vec<_>>(),
            ["gateway", "istiod"]
        );
    }

    #[test]
    fn defaults_follow_their_dependencies_but_explicit_choices_stand() {
        let catalog = Catalog::new(vec![
            component("base", &[]),
            component("istiod", &["base"]),
            component("gateway", &["istiod"]),
        ])
        .unwrap();
        let mut spec = ControlPlaneSpec::default();
        assert!(catalog.enabled(&spec).values().all(|on| *on));
        spec.components
            .entry("base".to_owned())
            .or_default()
            .enabled = Some(false);
        assert!(
            catalog.enabled(&spec).values().all(|on| !*on),
            "defaults follow base out"
        );
        spec.components
            .entry("gateway".to_owned())
            .or_default()
            .enabled = Some(true);
        let enabled = catalog.enabled(&spec);
        assert_eq!((enabled["istiod"], enabled["gateway"]), (false, true));
    }

    #[test]
    fn a_cycle_is_reported_with_its_members() {
        let err = Catalog::new(vec![
            component("a", &["c"]),
            component("b", &["a"]),
            component("c", &["b"]),
            component("d", &[]),
        ])
        .unwrap_err();
        assert_eq!(err, CatalogError::Cycle(vec!["a", "c", "b", "a"]));
        assert_eq!(
            err.to_string(),
            "dependency cycle between components: a -> c -> b -> a"
        );
        let err = Catalog::new(vec![component("self", &["self"])]).unwrap_err();
        assert_eq!(err, CatalogError::Cycle(vec!["self", "self"]));
    }

    #[test]
    fn duplicates_and_unknown_dependencies_are_rejected() {
        let err = Catalog::new(vec![component("a", &[]), component("a", &[])]).unwrap_err();
        assert_eq!(err, CatalogError::Duplicate("a"));
        let err = Catalog::new(vec![component("a", &["zz"])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "component a depends on zz, which is not in the catalog"
        );
        let mut bad_release = component("a", &[]);
        bad_release.release_name = "A";
        let err = Catalog::new(vec![bad_release]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("component a: release: \"A\" is not a valid release name: "),
            "{err}"
        );
    }

    /// The README's component table is generated; `SMM_UPDATE_README=1 cargo test --lib
    /// readme` rewrites it.
    #[test]
    fn readme_components_table_is_current() {
        let table = Catalog::builtin().unwrap().markdown_table().unwrap();
        crate::generated_docs::assert_section_current("README.md", "components", &table);
    }

    #[test]
    fn the_builtin_catalog_is_consistent_and_every_chart_belongs_to_a_component() {
        static CHARTS: include_dir::Dir<'static> =
            include_dir::include_dir!("$CARGO_MANIFEST_DIR/charts");
        static VALUES: include_dir::Dir<'static> =
            include_dir::include_dir!("$CARGO_MANIFEST_DIR/values");
        let catalog = Catalog::builtin().unwrap();
        for chart in CHARTS.dirs() {
            let name = chart.path().to_string_lossy();
            assert!(
                catalog.get(&name).is_some(),
                "charts/{name} belongs to no component"
            );
        }
        for file in VALUES.files() {
            let name = file.path().file_stem().unwrap().to_string_lossy();
            assert!(
                catalog.get(&name).is_some(),
                "values/{name}.yaml belongs to no component"
            );
        }
        for component in catalog.components() {
            assert_eq!(component.chart.name(), component.name);
            assert_eq!(
                component.values_layer.0,
                format!("values/{}.yaml", component.name)
            );
            component.chart.metadata().unwrap();
            component.chart.default_values().unwrap();
            component.values_layer().unwrap();
        }
    }
}
