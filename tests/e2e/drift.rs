//! GitOps output that does not drift: after a reconcile, with a real istiod that has patched its
//! webhooks (their CA, the validators' failure policy), every object `--dump-resources` renders
//! for the same ControlPlane holds live exactly what the dump sets, so a GitOps tool that
//! applied the dump would report no permanent diff.

use std::time::Duration;

use kube::Api;
use kube::api::{DynamicObject, GroupVersionKind};
use kube::discovery::{Scope, pinned_kind};
use serde::Deserialize;
use serde_json::Value;

use crate::istio::Mesh;
use crate::support::drift::differences;
use crate::support::{
    LocalIstiod, TestCluster, assert_success, eventually, istio_mesh_lock, smm, stdout,
};

/// The mesh: istiod, a gateway, and the ambient profile's node agents.
const COMPONENTS: &[&str] = &["base", "istiod", "ingress-gateway", "istio-cni", "ztunnel"];

/// Fields that may differ between the dump and what runs. None does: istiod fills in the
/// webhooks' `caBundle`, which the dump leaves unset (so it is no difference), and sets the
/// validators' `failurePolicy` to `Fail`, which smm renders itself for that reason.
const ALLOWED: &[&str] = &[];

/// The documents of a multi-document YAML stream, empty ones left out.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("the dump is YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

/// The live counterpart of a dumped object, read through discovery (the dump names no
/// namespace for some namespaced objects: helm puts them in the release's, the mesh's).
async fn live_object(cluster: &TestCluster, dumped: &Value, namespace: &str) -> Value {
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
async fn istiod_patched_its_webhooks(
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

#[tokio::test]
async fn a_dump_equals_the_live_objects_after_istiod_patched_its_webhooks() {
    let _lock = istio_mesh_lock().await;
    let cluster = TestCluster::connect().await;
    let mesh = Mesh::create(&cluster, None).await;
    let ns = mesh.namespace.clone();
    // istiod first, so that the local istiod runs with the env its ambient chart renders.
    mesh.smm(&["install", "istiod", "--profile", "ambient"]);
    let _istiod = LocalIstiod::start(&ns, "");
    mesh.smm(&[&["install"], COMPONENTS].concat());

    let dump_args = [&["install"], COMPONENTS, &["--dump-resources"]].concat();
    let output = smm(&[&dump_args[..], &["--control-plane", &mesh.name]].concat());
    assert_success(&output);
    let dumped = documents(&stdout(&output));
    let kinds: Vec<&str> = dumped.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "CustomResourceDefinition",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "Deployment",
        "DaemonSet",
    ] {
        assert!(kinds.contains(&kind), "the dump has a {kind}: {kinds:?}");
    }
    let patched = eventually(Duration::from_secs(60), async || {
        istiod_patched_its_webhooks(&cluster, &dumped, &ns).await
    })
    .await;
    assert!(patched, "istiod did not patch its webhooks' CA");
    // A reconcile after istiod's patches: smm puts nothing back that istiod wrote.
    mesh.smm(&[&["install"], COMPONENTS].concat());

    let mut drift = Vec::new();
    for object in &dumped {
        let live = live_object(&cluster, object, &ns).await;
        for difference in differences(object, &live, ALLOWED) {
            drift.push(format!(
                "{} {}: {difference}",
                object["kind"].as_str().unwrap(),
                object["metadata"]["name"].as_str().unwrap()
            ));
        }
    }
    assert!(
        drift.is_empty(),
        "live objects differ from the dump:\n{}",
        drift.join("\n")
    );
}
