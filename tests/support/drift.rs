//! Whether the objects that run are the objects a dump rendered (`--dump-resources`), as a GitOps
//! tool that applied the dump would judge it: every field the dump sets must hold the same value
//! live, while the live object may hold more (what the API server defaults, status, metadata
//! written by others).

use kube::Api;
use kube::api::{DynamicObject, GroupVersionKind};
use kube::discovery::{Scope, pinned_kind};
use serde::Deserialize;
use serde_json::Value;

use super::TestCluster;

/// A field the dump sets that the live object does not hold as dumped.
#[derive(Debug, PartialEq)]
pub struct Difference {
    /// Where, as a JSON pointer (`/webhooks/0/failurePolicy`).
    pub path: String,
    pub dumped: Value,
    /// `None`: the live object has no such field.
    pub live: Option<Value>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.live {
            Some(live) => write!(f, "{}: dumped {}, live {live}", self.path, self.dumped),
            None => write!(f, "{}: dumped {}, absent live", self.path, self.dumped),
        }
    }
}

/// Every field `dumped` sets that `live` does not hold as dumped, except at the paths `allowed`
/// names (JSON pointers in which `*` stands for any one key or list index). A list must hold
/// the dumped items, in order, and no more. What the API server writes in another form counts as
/// equal, as Argo CD's diff normalizes it too: a null, empty string, empty map or empty list sets
/// nothing (the server drops them), numbers compare by value (`1.0` is `1`), and a quantity in its canonical
/// form equals the one written (`2000m` is `2`, `1024Mi` is `1Gi`).
pub fn differences(dumped: &Value, live: &Value, allowed: &[&str]) -> Vec<Difference> {
    let mut found = Vec::new();
    walk(dumped, Some(live), &mut Vec::new(), allowed, &mut found);
    found
}

fn walk(
    dumped: &Value,
    live: Option<&Value>,
    path: &mut Vec<String>,
    allowed: &[&str],
    found: &mut Vec<Difference>,
) {
    if sets_nothing(dumped) && live.is_none_or(sets_nothing) {
        return;
    }
    match (dumped, live) {
        (Value::Object(dumped), Some(Value::Object(live))) => {
            for (key, value) in dumped {
                path.push(key.clone());
                walk(value, live.get(key), path, allowed, found);
                path.pop();
            }
        }
        (Value::Array(dumped), Some(Value::Array(live))) if dumped.len() == live.len() => {
            for (index, (dumped, live)) in dumped.iter().zip(live).enumerate() {
                path.push(index.to_string());
                walk(dumped, Some(live), path, allowed, found);
                path.pop();
            }
        }
        (dumped, Some(live)) if same_scalar(dumped, live) => {}
        (dumped, live) => {
            if !allowed.iter().any(|pattern| matches(pattern, path)) {
                found.push(Difference {
                    path: path.iter().map(|key| format!("/{}", escape(key))).collect(),
                    dumped: dumped.clone(),
                    live: live.cloned(),
                });
            }
        }
    }
}

fn sets_nothing(value: &Value) -> bool {
    match value {
        Value::Null => true,
        // The API server drops an empty string where Kubernetes' types omit it (an env var's
        // `value: ""`).
        Value::String(text) => text.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn same_scalar(dumped: &Value, live: &Value) -> bool {
    match (dumped, live) {
        (Value::Number(a), Value::Number(b)) => a == b || a.as_f64() == b.as_f64(),
        (Value::String(a), Value::String(b)) => {
            a == b || quantity(a).is_some_and(|a| quantity(b) == Some(a))
        }
        (a, b) => a == b,
    }
}

/// A Kubernetes quantity's value (`500m`, `1Gi`, `2`, `1e3`), or `None` for any other string.
fn quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    // Milli divides, so that `500m` is exactly `0.5`.
    let (number, scale, divisor) = match text.strip_suffix('m') {
        Some(number) => (number, 1.0, 1000.0),
        None => SUFFIXES
            .iter()
            .find_map(|(suffix, scale)| Some((text.strip_suffix(suffix)?, *scale, 1.0)))
            .unwrap_or((text, 1.0, 1.0)),
    };
    let digits = number.strip_prefix(['+', '-']).unwrap_or(number);
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.');
    let (mantissa, exponent) = digits.split_once(['e', 'E']).unwrap_or((digits, "0"));
    let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    (plain(mantissa) && exponent.chars().all(|c| c.is_ascii_digit()))
        .then(|| number.parse::<f64>().ok())
        .flatten()
        .map(|value| value * scale / divisor)
}

fn matches(pattern: &str, path: &[String]) -> bool {
    let parts: Vec<&str> = pattern.split('/').skip(1).collect();
    parts.len() == path.len()
        && parts
            .iter()
            .zip(path)
            .all(|(part, key)| *part == "*" || *part == escape(key))
}

/// A key as a JSON pointer writes it.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The documents of a multi-document YAML stream, empty ones left out.
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("the dump is YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

/// The live counterpart of a dumped object, read through discovery (the dump names no
/// namespace for some namespaced objects: helm puts them in the release's, the mesh's).
pub async fn live_object(cluster: &TestCluster, dumped: &Value, namespace: &str) -> Value {
    let (group, version) = match dumped["apiVersion"].as_str().unwrap().split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", dumped["apiVersion"].as_str().unwrap()),
    };
    let gvk = GroupVersionKind::gvk(group, version, dumped["kind"].as_str().unwrap());
    let (resource, capabilities) = pinned_kind(&cluster.client, &gvk).await.unwrap();
    let name = dumped["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Cluster => Api::all_with(cluster.client.clone(), &resource),
        Scope::Namespaced => Api::namespaced_with(
            cluster.client.clone(),
            dumped["metadata"]["namespace"]
                .as_str()
                .unwrap_or(namespace),
            &resource,
        ),
    };
    let live = api
        .get(name)
        .await
        .unwrap_or_else(|err| panic!("{} {name} is dumped but not live: {err}", gvk.kind));
    serde_json::to_value(live).unwrap()
}

/// Whether istiod has patched every webhook of the dumped webhook configurations (the CA it
/// fills in comes with its failure policy in the same update).
pub async fn istiod_patched_its_webhooks(
    cluster: &TestCluster,
    dumped: &[Value],
    namespace: &str,
) -> bool {
    for object in dumped.iter().filter(|object| {
        object["kind"]
            .as_str()
            .is_some_and(|kind| kind.ends_with("WebhookConfiguration"))
    }) {
        let live = live_object(cluster, object, namespace).await;
        let webhooks = live["webhooks"].as_array().cloned().unwrap_or_default();
        if webhooks.is_empty()
            || webhooks
                .iter()
                .any(|webhook| webhook["clientConfig"]["caBundle"].as_str().is_none())
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn webhook(policy: &str) -> Value {
        json!({"webhooks": [{
            "name": "rev.validation.istio.io",
            "clientConfig": {"service": {"name": "istiod", "path": "/validate"}},
            "failurePolicy": policy,
        }]})
    }

    #[test]
    fn a_live_object_may_hold_more_but_not_other_values() {
        let mut live = webhook("Fail");
        live["webhooks"][0]["clientConfig"]["caBundle"] = json!("LS0t");
        live["webhooks"][0]["clientConfig"]["service"]["port"] = json!(443);
        live["metadata"] = json!({"resourceVersion": "7"});
        assert_eq!(differences(&webhook("Fail"), &live, &[]), []);
        // istiod turned the rendered Ignore into Fail: a permanent diff.
        assert_eq!(
            differences(&webhook("Ignore"), &live, &[]),
            [Difference {
                path: "/webhooks/0/failurePolicy".to_owned(),
                dumped: json!("Ignore"),
                live: Some(json!("Fail")),
            }]
        );
        // Unless that path is allowed to differ.
        assert_eq!(
            differences(&webhook("Ignore"), &live, &["/webhooks/*/failurePolicy"]),
            []
        );
    }

    #[test]
    fn a_missing_field_and_another_list_differ() {
        let dumped = json!({"a": {"b": 1}, "list": [1, 2], "labels": {"x/y": "z"}});
        let live = json!({"a": {}, "list": [1, 2, 3], "labels": {"x/y": "w"}});
        let paths: Vec<String> = differences(&dumped, &live, &[])
            .into_iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "/a/b: dumped 1, absent live",
                "/labels/x~1y: dumped \"z\", live \"w\"",
                "/list: dumped [1,2], live [1,2,3]",
            ]
        );
    }

    #[test]
    fn what_the_api_server_normalizes_is_equal() {
        let dumped = json!({
            "resources": {"limits": {"cpu": "2000m", "memory": "1024Mi"}, "requests": {"cpu": "0.5"}},
            "minimum": 1.0, "annotations": null, "labels": {}, "args": [],
            "env": [{"name": "PLATFORM", "value": ""}],
        });
        let live = json!({
            "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "500m"}},
            "minimum": 1, "env": [{"name": "PLATFORM"}],
        });
        assert_eq!(differences(&dumped, &live, &[]), []);
        // A string that is no quantity is compared as written.
        assert_eq!(
            differences(&json!({"v": "1.0x"}), &json!({"v": "1x"}), &[]).len(),
            1
        );
        assert_eq!(
            differences(&json!({"v": "2Gi"}), &json!({"v": "2G"}), &[]).len(),
            1
        );
    }
}
