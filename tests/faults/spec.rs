//! ControlPlane specs as JSON: what a fault starts from, what its command means, and how two
//! specs are compared; and the command lines that go with them.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use smm::mesh::catalog::Catalog;

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The spec without nulls and empty `valuesOverride` maps, so equal specs compare equal however
/// they were written.
pub fn normalized(spec: &Value) -> Value {
    match spec {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, value)| {
                    let empty_values = key.as_str() == "valuesOverride"
                        && value.as_object().is_some_and(|m| m.is_empty());
                    !(value.is_null() || empty_values)
                })
                .map(|(key, value)| (key.clone(), normalized(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// The release `component` has under the spec `spec` (istiod's follows the revision strategy).
pub fn release_name(component: &smm::mesh::catalog::Component, spec: &Value) -> String {
    let spec: smm::api::ControlPlaneSpec = serde_json::from_value(spec.clone()).unwrap_or_default();
    match smm::mesh::revisions::strategy::active(&spec) {
        Ok(revision) => component.release_name_for(&spec, &revision),
        Err(_) => component.release_name.to_owned(),
    }
}

pub fn enabled_components(spec: &Value) -> BTreeSet<String> {
    spec["components"]
        .as_object()
        .map(|components| {
            components
                .iter()
                .filter(|(_, c)| c["enabled"] == true)
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The components the campaign installs: all but the gateways, whose pods are admitted only
/// through istiod's injection webhook, which no istiod serves during the campaign (it would
/// have to survive the very kills under test); tests/e2e/istio.rs covers the gateways.
pub fn campaign_components(catalog: &Catalog) -> Vec<&'static str> {
    catalog
        .names()
        .into_iter()
        .filter(|name| !name.ends_with("-gateway"))
        .collect()
}

/// `smm install` of `components`.
pub fn install_args(components: &[&'static str]) -> Vec<String> {
    let mut args = strings(&["install"]);
    args.extend(components.iter().map(|c| (*c).to_owned()));
    args
}

/// `spec` with `components` (and what they depend on) set to `enabled`.
pub fn with_enabled(
    catalog: &Catalog,
    spec: &Value,
    components: &[&'static str],
    on: bool,
) -> Value {
    let mut spec = spec.clone();
    let names: BTreeSet<&'static str> = if on {
        catalog.with_dependencies(components)
    } else {
        components.iter().copied().collect()
    };
    for name in names {
        spec["components"][name]["enabled"] = json!(on);
    }
    spec
}
