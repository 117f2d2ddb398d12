//! Helm values layering: how a component's final values are built from the chart's defaults,
//! smm's own values layer, the user's `valuesOverride` and the values smm manages itself.
//!
//! Values are `serde_json::Value`s whose objects stand for YAML maps, so they can be digested
//! and compared exactly, and handed to helm as a values file.

pub mod digest;
pub mod mask;
pub mod set;

use serde_json::{Map, Value};

/// The name of the user's override in the `ControlPlane` spec, which error messages point into.
const USER_OVERRIDE: &str = "valuesOverride";

/// Why a component's values could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    /// The user's `valuesOverride` touches values that smm manages. `path` is the first
    /// conflicting path (in [`managed_conflicts`] order) and `more` holds the others, so the user
    /// can fix them all at once.
    #[error(
        "{component}: {} is managed by smm{}",
        join_path(USER_OVERRIDE, path),
        describe_more(more)
    )]
    ManagedPath {
        component: String,
        path: String,
        more: Vec<String>,
    },
    /// A layer of values that must be a map is something else.
    #[error("{component}: {what} must be an object (a map of values), found {found}")]
    NotAnObject {
        component: String,
        what: &'static str,
        found: &'static str,
    },
    /// A values file is not valid YAML.
    #[error("{file}: invalid YAML: {source}")]
    Syntax {
        file: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// A values file is valid YAML, but its top level is not a map.
    #[error("{file}: the top level must be an object (a map of values), found {found}")]
    NotAMap { file: String, found: &'static str },
    /// A values file nests maps and lists deeper than [`MAX_DEPTH`].
    #[error("{file}: values are nested deeper than {MAX_DEPTH} levels")]
    TooDeep { file: String },
}

/// The deepest nesting of maps and lists values may have. Charts' values are a few levels
/// deep; the bound keeps every recursive walk of values (merging, digests, serializers that
/// stop at 128 levels) far from its limits.
pub const MAX_DEPTH: usize = 100;

/// Whether `value` nests maps and lists deeper than `max` levels (a scalar is at level 0).
/// Walked with an explicit stack, so however deep the value, this does not recurse.
pub fn nested_deeper_than(value: &Value, max: usize) -> bool {
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Object(map) => Box::new(map.values()),
            Value::Array(items) => Box::new(items.iter()),
            _ => continue,
        };
        if depth + 1 > max {
            return true;
        }
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    false
}

/// The values a component is installed with, from lowest to highest precedence.
#[derive(Clone, Copy, Debug)]
pub struct Layers<'a> {
    /// The chart's own `values.yaml`.
    pub chart_defaults: &'a Value,
    /// smm's values layer for the component (`values/<name>.yaml`).
    pub component_layer: &'a Value,
    /// The user's `valuesOverride`, if any.
    pub user_override: Option<&'a Value>,
    /// The values smm sets itself and does not let the user override.
    pub managed: &'a Value,
}

/// Merges `overlay` into `base` with Helm's semantics.
///
/// Two objects merge deeply, key by key; anything else in the overlay (a list, a scalar, an
/// object over a non-object) replaces what the base had. A `null` in the overlay deletes the key
/// from the base, and never remains in the result, even for a key the base did not have. A
/// `null` overlay as a whole is an empty document and changes nothing.
pub fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                if value.is_null() {
                    base.remove(key);
                } else {
                    merge(base.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        // Nested nulls are deletions, handled above; only a whole null document gets here.
        (_, Value::Null) => {}
        // Merging into an empty object rather than cloning drops the overlay's nested nulls.
        (base, Value::Object(_)) => {
            *base = Value::Object(Map::new());
            merge(base, overlay);
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// The paths where `user_override` touches a value in `managed`, sorted.
///
/// A key present in both is a conflict at its path unless both sides are objects, in which case
/// their keys are compared in turn. That covers setting the same leaf, replacing a managed object
/// with a scalar or `null`, and writing beneath a managed scalar.
///
/// Paths join keys with `.` (`global.istioNamespace`); a key that is empty or holds anything but
/// ASCII letters, digits, `_` and `-` is written as a JSON string in brackets instead
/// (`annotations["sidecar.istio.io/inject"]`), so every path names exactly one value.
pub fn managed_conflicts(user_override: &Value, managed: &Value) -> Vec<String> {
    let mut conflicts = Vec::new();
    collect_conflicts(user_override, managed, "", &mut conflicts);
    conflicts.sort();
    conflicts
}

/// Builds a component's values from its [`Layers`]: chart defaults, then smm's values layer,
/// then the user's override, then the managed values, each merged over the previous with
/// [`merge`].
///
/// Fails if the user's override is not a map, or touches any managed value: silently dropping
/// the user's setting would hide that it has no effect.
pub fn layer(component: &str, layers: Layers<'_>) -> Result<Value, ValuesError> {
    if let Some(user_override) = layers.user_override {
        if !user_override.is_object() {
            return Err(ValuesError::NotAnObject {
                component: component.to_owned(),
                what: USER_OVERRIDE,
                found: json_type_name(user_override),
            });
        }
        let conflicts = managed_conflicts(user_override, layers.managed);
        if let Some((path, more)) = conflicts.split_first() {
            return Err(ValuesError::ManagedPath {
                component: component.to_owned(),
                path: path.clone(),
                more: more.to_vec(),
            });
        }
    }
    let mut values = layers.chart_defaults.clone();
    merge(&mut values, layers.component_layer);
    if let Some(user_override) = layers.user_override {
        merge(&mut values, user_override);
    }
    merge(&mut values, layers.managed);
    Ok(values)
}

/// Parses a YAML values document into an object; an empty document is an empty object.
///
/// `file` names where the document came from (e.g. `values/istiod.yaml`) for error messages.
/// YAML merge keys (`<<: *anchor`) are applied, as Helm does.
pub fn parse_yaml_values(file: &str, yaml: &str) -> Result<Value, ValuesError> {
    let syntax = |source| ValuesError::Syntax {
        file: file.to_owned(),
        source,
    };
    let mut document: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).map_err(syntax)?;
    document.apply_merge().map_err(syntax)?;
    match serde_yaml_ng::from_value(document).map_err(syntax)? {
        Value::Null => Ok(Value::Object(Map::new())),
        values if nested_deeper_than(&values, MAX_DEPTH) => Err(ValuesError::TooDeep {
            file: file.to_owned(),
        }),
        values @ Value::Object(_) => Ok(values),
        other => Err(ValuesError::NotAMap {
            file: file.to_owned(),
            found: json_type_name(&other),
        }),
    }
}

/// One difference between two sets of values, at a leaf (or where an object meets a non-object).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ValueChange {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl std::fmt::Display for ValueChange {
    /// `+ path: new`, `- path: old` or `~ path: old -> new`, values as compact JSON.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.old, &self.new) {
            (None, Some(new)) => write!(f, "+ {}: {new}", self.path),
            (Some(old), None) => write!(f, "- {}: {old}", self.path),
            (Some(old), Some(new)) => write!(f, "~ {}: {old} -> {new}", self.path),
            (None, None) => write!(f, "  {}", self.path),
        }
    }
}

/// The differences from `old` to `new`, keys in sorted order at every level, for a readable
/// upgrade plan.
pub fn diff(old: &Value, new: &Value) -> Vec<ValueChange> {
    let mut changes = Vec::new();
    collect_changes(Some(old), Some(new), "", &mut changes);
    changes
}

fn collect_changes(
    old: Option<&Value>,
    new: Option<&Value>,
    prefix: &str,
    changes: &mut Vec<ValueChange>,
) {
    match (old, new) {
        (Some(Value::Object(old)), Some(Value::Object(new))) => {
            let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            for key in keys {
                let path = join_path(prefix, &path_segment(key));
                collect_changes(old.get(key), new.get(key), &path, changes);
            }
        }
        (old, new) if !same_value(old, new) => changes.push(ValueChange {
            path: prefix.to_owned(),
            old: old.cloned(),
            new: new.cloned(),
        }),
        _ => {}
    }
}

/// Equality where numbers compare by value: helm records a release's values through Go's JSON,
/// which writes the chart's `1.0` as `1`, and that is no change.
fn same_value(old: Option<&Value>, new: Option<&Value>) -> bool {
    match (old, new) {
        (Some(Value::Number(old)), Some(Value::Number(new))) => old.as_f64() == new.as_f64(),
        (Some(Value::Array(old)), Some(Value::Array(new))) => {
            old.len() == new.len()
                && old
                    .iter()
                    .zip(new)
                    .all(|(old, new)| same_value(Some(old), Some(new)))
        }
        (Some(Value::Object(old)), Some(Value::Object(new))) => {
            old.len() == new.len()
                && old
                    .iter()
                    .all(|(key, old)| same_value(Some(old), new.get(key)))
        }
        (old, new) => old == new,
    }
}

fn collect_conflicts(user: &Value, managed: &Value, prefix: &str, conflicts: &mut Vec<String>) {
    let (Value::Object(user), Value::Object(managed)) = (user, managed) else {
        return;
    };
    for (key, user_value) in user {
        let Some(managed_value) = managed.get(key) else {
            continue;
        };
        let path = join_path(prefix, &path_segment(key));
        if user_value.is_object() && managed_value.is_object() {
            collect_conflicts(user_value, managed_value, &path, conflicts);
        } else {
            conflicts.push(path);
        }
    }
}

/// How `key` appears in a path: bare if that cannot be misread, else as a bracketed JSON string.
fn path_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        format!("[{}]", Value::from(key))
    }
}

/// Appends a path (or a single segment from [`path_segment`]) to `prefix`: a bracketed segment
/// attaches directly, a bare one after a `.`.
fn join_path(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_owned()
    } else if rest.starts_with('[') {
        format!("{prefix}{rest}")
    } else {
        format!("{prefix}.{rest}")
    }
}

fn describe_more(more: &[String]) -> String {
    if more.is_empty() {
        return String::new();
    }
    let paths: Vec<String> = more
        .iter()
        .map(|path| join_path(USER_OVERRIDE, path))
        .collect();
    format!(
        ", and so {} {}",
        if more.len() == 1 { "is" } else { "are" },
        paths.join(", ")
    )
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merged(mut base: Value, overlay: Value) -> Value {
        merge(&mut base, &overlay);
        base
    }

    #[test]
    fn merge_combines_objects_deeply() {
        let base = json!({"global": {"hub": "docker.io", "tag": "1.0"}, "replicas": 1});
        let overlay = json!({"global": {"tag": "2.0", "proxy": {"cpu": "100m"}}});
        assert_eq!(
            merged(base, overlay),
            json!({
                "global": {"hub": "docker.io", "tag": "2.0", "proxy": {"cpu": "100m"}},
                "replicas": 1
            })
        );
    }

    #[test]
    fn merge_replaces_lists_and_scalars_wholesale() {
        let base = json!({"args": ["a", "b", "c"], "port": 80, "name": "x"});
        let overlay = json!({"args": ["z"], "port": "http", "name": false});
        assert_eq!(
            merged(base, overlay),
            json!({"args": ["z"], "port": "http", "name": false})
        );
    }

    #[test]
    fn merge_replaces_object_with_scalar_and_scalar_with_object() {
        let base = json!({"a": {"deep": 1}, "b": 2});
        let overlay = json!({"a": 3, "b": {"deep": 4}});
        assert_eq!(merged(base, overlay), json!({"a": 3, "b": {"deep": 4}}));
    }

    #[test]
    fn merge_null_deletes_key() {
        let base = json!({"keep": 1, "drop": {"deep": 2}, "nested": {"drop": 3, "keep": 4}});
        let overlay = json!({"drop": null, "nested": {"drop": null}});
        assert_eq!(
            merged(base, overlay),
            json!({"keep": 1, "nested": {"keep": 4}})
        );
    }

    #[test]
    fn merge_never_leaves_nulls_from_the_overlay() {
        let base = json!({"scalar": 1});
        let overlay = json!({
            "absent": null,
            "fresh": {"gone": null, "kept": 1, "deeper": {"gone": null}},
            "scalar": {"gone": null, "kept": 2}
        });
        assert_eq!(
            merged(base, overlay),
            json!({"fresh": {"kept": 1, "deeper": {}}, "scalar": {"kept": 2}})
        );
    }

    #[test]
    fn merge_keeps_nulls_inside_lists() {
        // Lists are opaque to Helm's merge: they replace as a whole, contents untouched.
        let base = json!({});
        let overlay = json!({"list": [null, {"a": null}]});
        assert_eq!(merged(base, overlay), json!({"list": [null, {"a": null}]}));
    }

    #[test]
    fn merge_with_null_or_empty_overlay_changes_nothing() {
        let base = json!({"a": {"b": 1}});
        assert_eq!(merged(base.clone(), Value::Null), base);
        assert_eq!(merged(base.clone(), json!({})), base);
    }

    #[test]
    fn merge_into_non_object_base() {
        assert_eq!(
            merged(Value::Null, json!({"a": null, "b": 1})),
            json!({"b": 1})
        );
        assert_eq!(merged(json!(1), json!("x")), json!("x"));
    }

    #[test]
    fn conflicts_on_same_leaf() {
        let user = json!({"global": {"istioNamespace": "other", "hub": "mine"}});
        let managed = json!({"global": {"istioNamespace": "istio-system"}});
        assert_eq!(
            managed_conflicts(&user, &managed),
            vec!["global.istioNamespace"]
        );
    }

    #[test]
    fn conflicts_when_replacing_managed_object() {
        let managed = json!({"global": {"istioNamespace": "istio-system"}});
        assert_eq!(
            managed_conflicts(&json!({"global": "flat"}), &managed),
            vec!["global"]
        );
        assert_eq!(
            managed_conflicts(&json!({"global": null}), &managed),
            vec!["global"]
        );
        assert_eq!(
            managed_conflicts(&json!({"global": ["x"]}), &managed),
            vec!["global"]
        );
    }

    #[test]
    fn conflicts_when_writing_beneath_managed_scalar() {
        let managed = json!({"revision": "stable"});
        assert_eq!(
            managed_conflicts(&json!({"revision": {"name": "x"}}), &managed),
            vec!["revision"]
        );
        // Even an empty map would replace the managed scalar.
        assert_eq!(
            managed_conflicts(&json!({"revision": {}}), &managed),
            vec!["revision"]
        );
    }

    #[test]
    fn no_conflicts_beside_or_above_managed_values() {
        let managed = json!({"global": {"istioNamespace": "istio-system"}, "revision": "x"});
        let user = json!({
            "global": {"hub": "mine", "proxy": {"cpu": "1"}},
            "pilot": {"replicas": 2},
            "absent": null
        });
        assert!(managed_conflicts(&user, &managed).is_empty());
        assert!(managed_conflicts(&json!({"global": {}}), &managed).is_empty());
        assert!(managed_conflicts(&json!({}), &managed).is_empty());
        assert!(managed_conflicts(&user, &json!({})).is_empty());
    }

    #[test]
    fn conflicts_are_sorted_and_complete() {
        let managed = json!({"z": 1, "a": {"y": 1, "b": 2}, "m": 3});
        let user = json!({"m": 0, "z": 0, "a": {"y": 0, "b": 0}});
        assert_eq!(
            managed_conflicts(&user, &managed),
            vec!["a.b", "a.y", "m", "z"]
        );
    }

    #[test]
    fn conflict_paths_quote_keys_that_are_not_plain() {
        let managed = json!({
            "annotations": {"a.b/c": "1", "plain_key-1": "2"},
            "top.level": 3,
            "": 4,
            "say \"hi\"": 5,
            "dé": 6
        });
        let user = managed.clone();
        assert_eq!(
            managed_conflicts(&user, &managed),
            vec![
                r#"[""]"#.to_owned(),
                r#"["dé"]"#.to_owned(),
                r#"["say \"hi\""]"#.to_owned(),
                r#"["top.level"]"#.to_owned(),
                "annotations.plain_key-1".to_owned(),
                r#"annotations["a.b/c"]"#.to_owned(),
            ]
        );
    }

    fn layers<'a>(
        chart_defaults: &'a Value,
        component_layer: &'a Value,
        user_override: Option<&'a Value>,
        managed: &'a Value,
    ) -> Layers<'a> {
        Layers {
            chart_defaults,
            component_layer,
            user_override,
            managed,
        }
    }

    #[test]
    fn layer_applies_precedence_in_order() {
        let defaults =
            json!({"a": "chart", "b": "chart", "c": "chart", "d": "chart", "e": "chart"});
        let component = json!({"b": "smm", "c": "smm", "d": "smm"});
        let user = json!({"c": "user", "f": "user"});
        let managed = json!({"d": "managed", "g": "managed"});
        let values = layer(
            "istiod",
            layers(&defaults, &component, Some(&user), &managed),
        )
        .unwrap();
        assert_eq!(
            values,
            json!({
                "a": "chart", "b": "smm", "c": "user", "d": "managed",
                "e": "chart", "f": "user", "g": "managed"
            })
        );
    }

    #[test]
    fn layer_without_user_override() {
        let defaults = json!({"a": 1, "b": {"c": 2}});
        let component = json!({"b": {"d": 3}});
        let managed = json!({"b": {"c": 4}});
        let values = layer("base", layers(&defaults, &component, None, &managed)).unwrap();
        assert_eq!(values, json!({"a": 1, "b": {"c": 4, "d": 3}}));
    }

    #[test]
    fn layer_lets_user_delete_unmanaged_defaults() {
        let defaults = json!({"a": 1, "b": 2});
        let user = json!({"a": null});
        let values = layer(
            "cni",
            layers(&defaults, &json!({}), Some(&user), &json!({})),
        )
        .unwrap();
        assert_eq!(values, json!({"b": 2}));
    }

    #[test]
    fn layer_rejects_managed_path() {
        let user = json!({"global": {"istioNamespace": "other"}});
        let managed = json!({"global": {"istioNamespace": "istio-system"}});
        let err = layer(
            "istiod",
            layers(&json!({}), &json!({}), Some(&user), &managed),
        )
        .unwrap_err();
        assert!(matches!(
            &err,
            ValuesError::ManagedPath { component, path, more }
                if component == "istiod" && path == "global.istioNamespace" && more.is_empty()
        ));
        assert_eq!(
            err.to_string(),
            "istiod: valuesOverride.global.istioNamespace is managed by smm"
        );
    }

    #[test]
    fn layer_names_every_managed_path() {
        let managed = json!({"global": {"istioNamespace": "x"}, "revision": "y", "a.b": 1});
        let user = managed.clone();
        let err = layer(
            "istiod",
            layers(&json!({}), &json!({}), Some(&user), &managed),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "istiod: valuesOverride[\"a.b\"] is managed by smm, and so are \
             valuesOverride.global.istioNamespace, valuesOverride.revision"
        );

        let user = json!({"revision": "z", "global": {"istioNamespace": "z"}});
        let err = layer(
            "istiod",
            layers(&json!({}), &json!({}), Some(&user), &managed),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "istiod: valuesOverride.global.istioNamespace is managed by smm, and so is \
             valuesOverride.revision"
        );
    }

    #[test]
    fn layer_rejects_non_object_override() {
        let empty = json!({});
        for (user, found) in [
            (json!("text"), "string"),
            (json!([1]), "array"),
            (json!(null), "null"),
            (json!(3), "number"),
            (json!(true), "boolean"),
        ] {
            let err = layer("gateway", layers(&empty, &empty, Some(&user), &empty)).unwrap_err();
            assert!(matches!(
                &err,
                ValuesError::NotAnObject { component, what: "valuesOverride", found: f }
                    if component == "gateway" && *f == found
            ));
            assert_eq!(
                err.to_string(),
                format!(
                    "gateway: valuesOverride must be an object (a map of values), found {found}"
                )
            );
        }
    }

    #[test]
    fn parse_yaml_values_reads_a_map() {
        let yaml =
            "global:\n  hub: docker.io\n  tag: \"1.2\"\nreplicas: 2\nlist: [a, 1, true, null]\n";
        assert_eq!(
            parse_yaml_values("values/istiod.yaml", yaml).unwrap(),
            json!({
                "global": {"hub": "docker.io", "tag": "1.2"},
                "replicas": 2,
                "list": ["a", 1, true, null]
            })
        );
    }

    #[test]
    fn parse_yaml_values_empty_document_is_empty_object() {
        for yaml in ["", "\n", "# only a comment\n", "---\n", "~\n"] {
            assert_eq!(
                parse_yaml_values("values/x.yaml", yaml).unwrap(),
                json!({}),
                "{yaml:?}"
            );
        }
    }

    #[test]
    fn parse_yaml_values_applies_merge_keys() {
        let yaml = "base: &base\n  a: 1\n  b: 2\nderived:\n  <<: *base\n  b: 3\n";
        assert_eq!(
            parse_yaml_values("charts/x/values.yaml", yaml).unwrap(),
            json!({"base": {"a": 1, "b": 2}, "derived": {"a": 1, "b": 3}})
        );
    }

    #[test]
    fn parse_yaml_values_syntax_error_names_file_and_line() {
        let err =
            parse_yaml_values("values/istiod.yaml", "a: 1\nb: [unclosed\nc: 2\n").unwrap_err();
        assert!(matches!(&err, ValuesError::Syntax { file, .. } if file == "values/istiod.yaml"));
        let message = err.to_string();
        assert!(
            message.starts_with("values/istiod.yaml: invalid YAML: "),
            "{message}"
        );
        assert!(message.contains("line "), "{message}");
    }

    /// `{"a": {"a": ... 1}}` with `levels` maps.
    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!(1), |inner, _| json!({"a": inner}))
    }

    #[test]
    fn nesting_is_measured_in_maps_and_lists() {
        assert!(!nested_deeper_than(&json!(1), 0));
        assert!(!nested_deeper_than(&nested(100), MAX_DEPTH));
        assert!(nested_deeper_than(&nested(101), MAX_DEPTH));
        assert!(nested_deeper_than(&json!({"a": [[]]}), 1));
        assert!(!nested_deeper_than(&json!({"a": [[]]}), 3));
    }

    #[test]
    fn parse_yaml_values_rejects_values_nested_too_deep() {
        let yaml = format!("{}1{}", "[".repeat(101), "]".repeat(101));
        let yaml = format!("a: {yaml}\n");
        let err = parse_yaml_values("deep.yaml", &yaml).unwrap_err();
        assert_eq!(
            err.to_string(),
            "deep.yaml: values are nested deeper than 100 levels"
        );
    }

    #[test]
    fn parse_yaml_values_rejects_non_map_top_level() {
        for (yaml, found) in [
            ("- a\n- b\n", "array"),
            ("hello\n", "string"),
            ("42\n", "number"),
        ] {
            let err = parse_yaml_values("charts/istiod/values.yaml", yaml).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "charts/istiod/values.yaml: the top level must be an object (a map of values), \
                     found {found}"
                )
            );
        }
    }

    #[test]
    fn diff_sees_no_change_in_how_a_number_is_written() {
        let old = json!({"sampling": 1, "list": [{"weight": 2}]});
        let new = json!({"sampling": 1.0, "list": [{"weight": 2.0}]});
        assert!(diff(&old, &new).is_empty());
        assert_eq!(
            diff(&old, &json!({"sampling": 1.5, "list": [{"weight": 2}]})).len(),
            1
        );
    }

    #[test]
    fn diff_lists_leaf_changes_by_path() {
        let old = json!({"a": {"b": 1, "c": [1]}, "gone": true, "same": "x"});
        let new = json!({"a": {"b": 2, "c": [1, 2], "d": {"e": null}}, "same": "x", "odd.key": 1});
        let lines: Vec<String> = diff(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "~ a.b: 1 -> 2",
                "~ a.c: [1] -> [1,2]",
                "+ a.d: {\"e\":null}",
                "- gone: true",
                "+ [\"odd.key\"]: 1",
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
