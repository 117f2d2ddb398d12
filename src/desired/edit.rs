//! Imperative edits of a ControlPlane spec, as `smm install` and `smm uninstall` make them: each
//! command changes only the named components' part of the spec, and says which components the
//! following reconcile must cover.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::api::{ComponentSpec, ControlPlaneSpec, GatewayApi, Platform, Profile};
use crate::mesh::catalog::Catalog;
use crate::mesh::revisions::strategy::RevisionError;
use crate::values::set::{self, SetError};
use crate::values::{merge, parse_yaml_values};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error("unknown component {name:?} (known components: {})", known.join(", "))]
    UnknownComponent {
        name: String,
        known: Vec<&'static str>,
    },
    #[error(
        "cannot uninstall {component}: {} depend(s) on it; uninstall them too (or use --all)",
        dependents.join(", ")
    )]
    HasDependents {
        component: String,
        dependents: Vec<&'static str>,
    },
    #[error(transparent)]
    BadSet(#[from] SetError),
    #[error("{0}")]
    Values(String),
    #[error(
        "values for {} apply to one component, but {count} are named",
        "--set/-f"
    )]
    ValuesNeedOneComponent { count: usize },
    #[error(transparent)]
    Revision(#[from] RevisionError),
    #[error("spec.revisionTags.{tag}: revision {revision} does not run here (running: {running})")]
    TagToMissingRevision {
        tag: String,
        revision: String,
        running: String,
    },
    #[error(
        "spec.revisionTags.default: under spec.updateStrategy.type RevisionBased the default tag \
         always exists (istio-injection=enabled namespaces follow it); `smm tag set default` \
         makes it follow the active revision again"
    )]
    DefaultTagAlwaysExists,
    #[error("spec.revisionTags has no tag {tag:?} (tags: {})", known.join(", "))]
    UnknownTag { tag: String, known: Vec<String> },
}

/// Which components to act on: every one, or those named.
#[derive(Clone, Debug)]
pub enum Selection {
    All,
    Named(Vec<String>),
}

impl Selection {
    fn resolve(&self, catalog: &Catalog) -> Result<Vec<&'static str>, EditError> {
        match self {
            Selection::All => Ok(catalog.names()),
            Selection::Named(names) => names
                .iter()
                .map(|name| {
                    catalog
                        .get(name)
                        .map(|component| component.name)
                        .ok_or_else(|| EditError::UnknownComponent {
                            name: name.clone(),
                            known: catalog.names(),
                        })
                })
                .collect(),
        }
    }
}

/// The spec an imperative command starts from when no ControlPlane is stored: every component
/// explicitly off, so the stored object says exactly what was asked for.
pub fn new_spec(catalog: &Catalog) -> ControlPlaneSpec {
    let mut spec = ControlPlaneSpec::default();
    for name in catalog.names() {
        spec.components.entry(name.to_owned()).or_default().enabled = Some(false);
    }
    spec
}

/// What `smm install` changes in one component besides enabling it.
#[derive(Clone, Debug, Default)]
pub struct InstallOptions {
    pub namespace: Option<String>,
    /// `spec.profile` to set, before the selection is resolved (`--all` follows it).
    pub profile: Option<Profile>,
    /// `spec.platform` to set.
    pub platform: Option<Platform>,
    /// `spec.gatewayAPI.enabled` to set (base, which applies the CRDs, reconciles with any Istio
    /// component).
    pub gateway_api: Option<bool>,
    /// Values to merge into the component's `valuesOverride`, in order (files, then `--set`).
    pub values: Vec<Value>,
}

/// The components a reconcile after an edit covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Covered {
    /// What the command named, or what the edit is about.
    pub named: BTreeSet<String>,
    /// What the named components depend on, brought in (so that they are installed first)
    /// without being named.
    pub dependencies: BTreeSet<String>,
}

impl From<BTreeSet<String>> for Covered {
    fn from(named: BTreeSet<String>) -> Self {
        Self {
            named,
            dependencies: BTreeSet::new(),
        }
    }
}

/// Enables the selected components and everything they depend on. Returns the components the
/// reconcile must cover. `--all` enables every component of the spec's profile, not just those
/// enabled by default: the ambient node agents only under `ambient` (a sidecar mesh has no use
/// for them; naming them still installs them).
pub fn install(
    spec: &mut ControlPlaneSpec,
    catalog: &Catalog,
    selection: &Selection,
    options: &InstallOptions,
) -> Result<Covered, EditError> {
    let profile = options.profile.unwrap_or(spec.profile());
    let mut named = selection.resolve(catalog)?;
    if matches!(selection, Selection::All) {
        // The node agents belong to the ambient profile, a network's gateway to a cluster on a
        // named network: `--all` means the components of this mesh.
        let network = spec
            .multi_cluster
            .as_ref()
            .is_some_and(|mc| mc.network.is_some());
        named.retain(|name| {
            catalog.get(name).is_some_and(|component| {
                component
                    .enabled_in_profile
                    .is_none_or(|only_in| only_in == profile)
                    && (!component.network_gateway || network)
            })
        });
    }
    if (options.namespace.is_some() || !options.values.is_empty()) && named.len() != 1 {
        return Err(EditError::ValuesNeedOneComponent { count: named.len() });
    }
    if options.profile.is_some() {
        spec.profile = options.profile;
    }
    if options.platform.is_some() {
        spec.platform = options.platform;
    }
    if let Some(enabled) = options.gateway_api {
        spec.gateway_api = Some(GatewayApi {
            enabled: Some(enabled),
        });
    }
    let scope: BTreeSet<String> = catalog
        .with_dependencies(&named)
        .into_iter()
        .map(str::to_owned)
        .collect();
    for name in &scope {
        spec.components.entry(name.clone()).or_default().enabled = Some(true);
    }
    if let [name] = named.as_slice() {
        let entry: &mut ComponentSpec = spec.components.entry((*name).to_owned()).or_default();
        if let Some(namespace) = &options.namespace {
            entry.namespace = Some(namespace.clone());
        }
        for values in &options.values {
            let target = entry
                .values_override
                .get_or_insert_with(|| Value::Object(Default::default()));
            merge(target, values);
        }
    }
    let named: BTreeSet<String> = named.into_iter().map(str::to_owned).collect();
    let dependencies = scope.difference(&named).cloned().collect();
    Ok(Covered {
        named,
        dependencies,
    })
}

/// Disables the selected components. Refuses when an enabled component outside the selection
/// depends on one of them. Returns the components the reconcile must cover.
pub fn uninstall(
    spec: &mut ControlPlaneSpec,
    catalog: &Catalog,
    selection: &Selection,
) -> Result<BTreeSet<String>, EditError> {
    let named = selection.resolve(catalog)?;
    let placements = catalog.placements(spec);
    for name in &named {
        let blocking: Vec<&'static str> = catalog
            .dependents_of(name)
            .into_iter()
            .filter(|dependent| !named.contains(dependent) && placements[dependent].enabled)
            .collect();
        if !blocking.is_empty() {
            return Err(EditError::HasDependents {
                component: (*name).to_owned(),
                dependents: blocking,
            });
        }
    }
    for name in &named {
        spec.components
            .entry((*name).to_owned())
            .or_default()
            .enabled = Some(false);
    }
    Ok(named.into_iter().map(str::to_owned).collect())
}

/// The values one `--set` argument sets, in helm's syntax (see [`crate::values::set`]).
pub fn parse_set(assignments: &str) -> Result<Value, EditError> {
    Ok(Value::Object(set::parse(assignments)?))
}

/// Reads a `-f values.yaml` file.
pub fn read_values_file(path: &std::path::Path) -> Result<Value, EditError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| EditError::Values(format!("{}: {err}", path.display())))?;
    parse_yaml_values(&path.display().to_string(), &text)
        .map_err(|err| EditError::Values(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::catalog::Component;
    use serde_json::json;

    fn component(name: &'static str, depends_on: &'static [&'static str], on: bool) -> Component {
        crate::mesh::components::test_component(name, depends_on, on)
    }

    fn catalog() -> Catalog {
        Catalog::new(vec![
            component("base", &[], true),
            component("istiod", &["base"], true),
            component("gateway", &["istiod"], true),
            component("grafana", &[], false),
        ])
        .unwrap()
    }

    fn named(names: &[&str]) -> Selection {
        Selection::Named(names.iter().map(|n| (*n).to_owned()).collect())
    }

    #[test]
    fn install_brings_dependencies_and_values_land_in_the_override() {
        let mut spec = ControlPlaneSpec::default();
        let options = InstallOptions {
            namespace: Some("edge".to_owned()),
            values: vec![
                json!({"replicas": 2, "a": {"b": 1}}),
                parse_set("a.c=x").unwrap(),
            ],
            ..InstallOptions::default()
        };
        let covered = install(&mut spec, &catalog(), &named(&["gateway"]), &options).unwrap();
        assert_eq!(covered.named.into_iter().collect::<Vec<_>>(), ["gateway"]);
        assert_eq!(
            covered.dependencies.into_iter().collect::<Vec<_>>(),
            ["base", "istiod"]
        );
        let gateway = &spec.components["gateway"];
        assert_eq!(gateway.enabled, Some(true));
        assert_eq!(gateway.namespace.as_deref(), Some("edge"));
        assert_eq!(
            gateway.values_override,
            Some(json!({"replicas": 2, "a": {"b": 1, "c": "x"}}))
        );
        assert_eq!(spec.components["base"].values_override, None);
    }

    #[test]
    fn values_need_exactly_one_component() {
        let mut spec = ControlPlaneSpec::default();
        let options = InstallOptions {
            values: vec![json!({"x": 1})],
            ..InstallOptions::default()
        };
        let err = install(&mut spec, &catalog(), &Selection::All, &options).unwrap_err();
        assert_eq!(err, EditError::ValuesNeedOneComponent { count: 4 });
        assert!(spec.components.is_empty(), "nothing changes on error");
    }

    #[test]
    fn uninstall_refuses_while_enabled_dependents_remain() {
        let mut spec = ControlPlaneSpec::default();
        let err = uninstall(&mut spec, &catalog(), &named(&["istiod"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot uninstall istiod: gateway depend(s) on it; uninstall them too (or use --all)"
        );
        let scope = uninstall(&mut spec, &catalog(), &named(&["istiod", "gateway"])).unwrap();
        assert_eq!(scope.len(), 2);
        assert_eq!(spec.components["istiod"].enabled, Some(false));
        // With its dependent disabled, base can go alone.
        uninstall(&mut spec, &catalog(), &named(&["base"])).unwrap();
    }

    #[test]
    fn unknown_components_name_the_known_ones() {
        let err = uninstall(
            &mut ControlPlaneSpec::default(),
            &catalog(),
            &named(&["nope"]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown component \"nope\" (known components: base, istiod, gateway, grafana)"
        );
    }

    #[test]
    fn set_is_read_as_helm_reads_it() {
        assert_eq!(parse_set("a.b=true").unwrap(), json!({"a": {"b": true}}));
        assert_eq!(parse_set("n=3").unwrap(), json!({"n": 3}));
        assert_eq!(parse_set("s=200m").unwrap(), json!({"s": "200m"}));
        assert_eq!(parse_set("e=").unwrap(), json!({"e": ""}));
        assert_eq!(parse_set("z=null").unwrap(), json!({"z": null}));
        assert_eq!(parse_set("a=b,c=d").unwrap(), json!({"a": "b", "c": "d"}));
        for bad in ["novalue", "=1", "a..b=1", ".a=1"] {
            assert!(parse_set(bad).is_err(), "{bad}");
        }
    }

    /// `--all` follows the profile: the ambient node agents come with `--profile ambient` (or a
    /// stored ambient spec), not into a sidecar mesh; named, they are installed anyway.
    #[test]
    fn all_installs_the_components_of_the_profile() {
        let catalog = Catalog::builtin().unwrap();
        let enabled = |spec: &ControlPlaneSpec, name: &str| {
            spec.components.get(name).and_then(|c| c.enabled) == Some(true)
        };
        let mut sidecar = new_spec(&catalog);
        let options = InstallOptions::default();
        install(&mut sidecar, &catalog, &Selection::All, &options).unwrap();
        assert!(enabled(&sidecar, "tracing") && !enabled(&sidecar, "ztunnel"));
        assert_eq!(sidecar.profile, None);
        // A network's gateway only where the spec names the network.
        assert!(!enabled(&sidecar, "eastwest-gateway"));
        let mut networked = new_spec(&catalog);
        networked.multi_cluster = Some(crate::api::MultiCluster {
            cluster_name: "east".to_owned(),
            network: Some("net1".to_owned()),
            ..crate::api::MultiCluster::default()
        });
        install(&mut networked, &catalog, &Selection::All, &options).unwrap();
        assert!(enabled(&networked, "eastwest-gateway"));

        let mut ambient = new_spec(&catalog);
        let options = InstallOptions {
            profile: Some(Profile::Ambient),
            platform: Some(Platform::K3s),
            ..InstallOptions::default()
        };
        install(&mut ambient, &catalog, &Selection::All, &options).unwrap();
        assert!(enabled(&ambient, "istio-cni") && enabled(&ambient, "ztunnel"));
        assert_eq!(ambient.profile, Some(Profile::Ambient));
        assert_eq!(ambient.platform, Some(Platform::K3s));
        assert!(ambient.gateway_api_enabled());
        // The Gateway API's CRDs follow the profile unless told otherwise.
        let options = InstallOptions {
            gateway_api: Some(false),
            ..InstallOptions::default()
        };
        install(&mut ambient, &catalog, &named(&["base"]), &options).unwrap();
        assert!(!ambient.gateway_api_enabled());

        let options = InstallOptions::default();
        install(&mut sidecar, &catalog, &named(&["ztunnel"]), &options).unwrap();
        assert!(enabled(&sidecar, "istio-cni") && enabled(&sidecar, "ztunnel"));
    }
}
