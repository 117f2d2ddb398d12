//! The Argo CD health check of ControlPlanes (`deploy/argocd/health-controlplane.lua`), run in a
//! real Lua 5.1 interpreter (the language Argo CD's gopher-lua implements) on ControlPlanes as
//! the smm operator leaves them.
//!
//! Argo CD hands the script the object as `obj`, converted from JSON: objects and arrays become
//! tables, and JSON nulls are absent (nil). The conversion here does the same.

use mlua::{Lua, Table, Value as LuaValue};
use serde_json::{Value, json};

const SCRIPT_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/argocd/health-controlplane.lua"
);
const PATCH_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/argocd/argocd-cm-patch.yaml"
);
const HEALTH_KEY: &str = "resource.customizations.health.smm.dev_ControlPlane";

fn script() -> String {
    std::fs::read_to_string(SCRIPT_PATH).expect("the health script exists")
}

fn to_lua(lua: &Lua, value: &Value) -> mlua::Result<LuaValue> {
    Ok(match value {
        Value::Null => LuaValue::Nil,
        Value::Bool(b) => LuaValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => LuaValue::Integer(i),
            None => LuaValue::Number(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => LuaValue::String(lua.create_string(s)?),
        Value::Array(items) => {
            let table = lua.create_table()?;
            for (index, item) in items.iter().enumerate() {
                table.set(index + 1, to_lua(lua, item)?)?;
            }
            LuaValue::Table(table)
        }
        Value::Object(fields) => {
            let table = lua.create_table()?;
            for (key, field) in fields {
                if !field.is_null() {
                    table.set(key.as_str(), to_lua(lua, field)?)?;
                }
            }
            LuaValue::Table(table)
        }
    })
}

/// Runs the script on `object`; returns `(hs.status, hs.message)`.
fn health(object: &Value) -> (String, String) {
    let lua = Lua::new();
    lua.globals()
        .set("obj", to_lua(&lua, object).unwrap())
        .unwrap();
    let hs: Table = lua
        .load(script())
        .set_name("health-controlplane.lua")
        .eval()
        .unwrap_or_else(|err| panic!("the health script failed on {object}: {err}"));
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": 2,
    })
}

fn control_plane(generation: i64, status: Value) -> Value {
    json!({
        "apiVersion": "smm.dev/v1alpha1",
        "kind": "ControlPlane",
        "metadata": {"name": "smm", "generation": generation},
        "spec": {"components": {"istiod": {"enabled": true}}},
        "status": status,
    })
}

fn with_conditions(observed: Option<i64>, conditions: Vec<Value>) -> Value {
    json!({
        "observedGeneration": observed,
        "conditions": conditions,
        "reconciledComponents": "2/7",
    })
}

#[test]
fn ready_at_the_current_generation_is_healthy() {
    let object = control_plane(
        2,
        with_conditions(
            Some(2),
            vec![condition(
                "Ready",
                "True",
                "Reconciled",
                "7 components in their desired state",
            )],
        ),
    );
    assert_eq!(
        health(&object),
        (
            "Healthy".to_owned(),
            "7 components in their desired state".to_owned()
        )
    );
}

#[test]
fn no_status_yet_is_progressing() {
    for status in [Value::Null, json!({}), json!({"conditions": []})] {
        let (state, message) = health(&control_plane(1, status.clone()));
        assert_eq!(state, "Progressing", "{status}");
        assert!(message.contains("operator"), "{message}");
    }
    let mut bare = control_plane(1, Value::Null);
    bare.as_object_mut().unwrap().remove("status");
    assert_eq!(health(&bare).0, "Progressing");
}

#[test]
fn a_generation_not_yet_observed_is_progressing_even_if_ready() {
    let ready = vec![condition("Ready", "True", "Reconciled", "done")];
    let (state, message) = health(&control_plane(3, with_conditions(Some(2), ready.clone())));
    assert_eq!(state, "Progressing");
    assert!(message.contains("generation 3"), "{message}");
    // A stale failure is not reported as current either.
    let stalled = vec![condition("Stalled", "True", "WaitTimedOut", "old")];
    assert_eq!(
        health(&control_plane(3, with_conditions(Some(2), stalled))).0,
        "Progressing"
    );
    assert_eq!(
        health(&control_plane(3, with_conditions(None, ready))).0,
        "Progressing",
        "conditions without observedGeneration"
    );
}

#[test]
fn reconciling_is_progressing() {
    let conditions = vec![
        condition("Reconciling", "True", "Progressing", "upgrading istiod"),
        condition("Ready", "False", "Reconciling", "upgrading istiod"),
    ];
    assert_eq!(
        health(&control_plane(2, with_conditions(Some(2), conditions))),
        ("Progressing".to_owned(), "upgrading istiod".to_owned())
    );
}

#[test]
fn stalled_is_degraded() {
    let conditions = vec![
        condition(
            "Stalled",
            "True",
            "WaitTimedOut",
            "gave up waiting for: istiod",
        ),
        condition("Ready", "False", "ComponentsNotReady", "not ready: istiod"),
    ];
    assert_eq!(
        health(&control_plane(2, with_conditions(Some(2), conditions))),
        (
            "Degraded".to_owned(),
            "gave up waiting for: istiod".to_owned()
        )
    );
}

#[test]
fn a_failed_component_is_degraded() {
    let conditions = vec![condition(
        "Ready",
        "False",
        "ComponentFailed",
        "grafana: helm upgrade failed",
    )];
    assert_eq!(
        health(&control_plane(2, with_conditions(Some(2), conditions))),
        (
            "Degraded".to_owned(),
            "grafana: helm upgrade failed".to_owned()
        )
    );
}

#[test]
fn not_ready_for_other_reasons_is_progressing() {
    let conditions = vec![condition(
        "Ready",
        "False",
        "ComponentsNotReady",
        "not in their desired state: prometheus",
    )];
    assert_eq!(
        health(&control_plane(2, with_conditions(Some(2), conditions))),
        (
            "Progressing".to_owned(),
            "not in their desired state: prometheus".to_owned()
        )
    );
    // Conditions present but no Ready among them, and an empty message.
    let conditions = vec![condition("Reconciling", "False", "Done", "")];
    let (state, message) = health(&control_plane(2, with_conditions(Some(2), conditions)));
    assert_eq!(state, "Progressing");
    assert!(!message.is_empty());
}

#[test]
fn the_argocd_cm_patch_embeds_the_script() {
    let text = std::fs::read_to_string(PATCH_PATH).expect("the argocd-cm patch exists");
    let patch: Value = serde_yaml_ng::from_str(&text).expect("the patch is YAML");
    assert_eq!(patch["kind"], "ConfigMap");
    assert_eq!(patch["metadata"]["name"], "argocd-cm");
    assert!(
        patch["data"][HEALTH_KEY].as_str() == Some(script().as_str()),
        "{PATCH_PATH}: data.{HEALTH_KEY} differs from {SCRIPT_PATH}; copy the script in again"
    );
}
