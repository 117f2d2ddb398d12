//! Objects for the revisions' unit tests, shaped as Istio's charts and injector write them (see
//! `/work/shared/notes/revisions-local.md`, "What an injected pod records").

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use serde_json::{Value, json};

fn labels(pairs: &[(&str, &str)]) -> Value {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), json!(value)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

pub fn namespace(name: &str, pairs: &[(&str, &str)]) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels(pairs)}})).unwrap()
}

/// A pod as admitted: with `injected_by: Some((revision, proxy_version))` it carries what the
/// injector adds, the proxy as a native sidecar.
pub fn pod(
    namespace: &str,
    name: &str,
    pairs: &[(&str, &str)],
    injected_by: Option<(&str, &str)>,
    phase: &str,
) -> Pod {
    let mut pod = json!({
        "metadata": {"namespace": namespace, "name": name, "labels": labels(pairs)},
        "spec": {"containers": [{"name": "app", "image": "docker.io/library/nginx:1.27"}]},
        "status": {"phase": phase},
    });
    if let Some((revision, version)) = injected_by {
        let proxy = json!({
            "name": "istio-proxy", "image": format!("docker.io/istio/proxyv2:{version}"),
            "restartPolicy": "Always",
        });
        pod["spec"]["initContainers"] = json!([{"name": "istio-init"}, proxy]);
        pod["metadata"]["annotations"] = json!({
            "istio.io/rev": revision,
            "sidecar.istio.io/status": json!({
                "initContainers": ["istio-init", "istio-proxy"], "containers": null,
                "revision": revision,
            }).to_string(),
        });
        pod["metadata"]["labels"]["security.istio.io/tlsMode"] = json!("istio");
    }
    serde_json::from_value(pod).unwrap()
}

/// A revision's injector, named as the istiod chart names it in `istio-system`.
pub fn injector(revision: &str) -> MutatingWebhookConfiguration {
    let name = match revision {
        "default" => "istio-sidecar-injector".to_owned(),
        revision => format!("istio-sidecar-injector-{revision}"),
    };
    serde_json::from_value(json!({"metadata": {
        "name": name, "labels": {"istio.io/rev": revision, "app": "sidecar-injector"},
    }}))
    .unwrap()
}

pub fn tag(tag: &str, revision: &str) -> MutatingWebhookConfiguration {
    serde_json::from_value(json!({"metadata": {
        "name": format!("istio-revision-tag-{tag}"),
        "labels": {"istio.io/tag": tag, "istio.io/rev": revision},
    }}))
    .unwrap()
}

pub fn default_validator(revision: &str) -> ValidatingWebhookConfiguration {
    serde_json::from_value(json!({"metadata": {
        "name": "istiod-default-validator", "labels": {"istio.io/rev": revision},
    }}))
    .unwrap()
}

/// istiod's Deployment of `revision` running `docker.io/istio/pilot:<version>`, with one
/// available replica when `ready`.
pub fn istiod(revision: &str, version: &str, ready: bool) -> Deployment {
    let name = match revision {
        "default" => "istiod".to_owned(),
        revision => format!("istiod-{revision}"),
    };
    let available = if ready { 1 } else { 0 };
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "istio-system",
                     "labels": {"app": "istiod", "istio.io/rev": revision}},
        "spec": {
            "selector": {"matchLabels": {"app": "istiod", "istio.io/rev": revision}},
            "template": {"spec": {"containers": [
                {"name": "discovery", "image": format!("docker.io/istio/pilot:{version}")},
            ]}},
        },
        "status": {
            "availableReplicas": available,
            "conditions": [{"type": "Available", "status": if ready { "True" } else { "False" }}],
        },
    }))
    .unwrap()
}
