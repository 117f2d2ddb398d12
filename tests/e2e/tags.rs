//! `smm tag set|list|remove` on a real API server with a real istiod: a tag set by smm injects
//! the namespaces that select it with its revision, and goes from the cluster when removed.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Api;
use serde_json::Value;

use crate::istio::{Mesh, create_pod};
use crate::revisions::label;
use crate::support::{LocalIstiod, TestCluster, istio_mesh_lock, smm};
use crate::upgrades::revision_annotation;

/// `smm ARGS --control-plane <mesh>`: its output, asserting nothing.
fn smm_on(mesh: &Mesh, args: &[&str]) -> std::process::Output {
    smm(&[args, &["--control-plane", &mesh.name]].concat())
}

#[tokio::test]
async fn a_tag_set_by_smm_injects_its_namespaces_and_goes_when_removed() {
    let cluster = TestCluster::connect().await;
    let client = &cluster.client;
    let _lock = istio_mesh_lock().await;
    let mesh = Mesh::create(&cluster, Some("stable")).await;
    mesh.smm(&["install", "istiod"]);
    let _istiod = LocalIstiod::start(&mesh.namespace, "stable");

    // A revision that does not run is refused, naming the field and what runs.
    let refused = smm_on(&mesh, &["tag", "set", "canary", "--revision", "gone"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(
            "spec.revisionTags.canary: revision gone does not run here (running: stable)"
        ),
        "{stderr}"
    );
    // Dumped, the tag's webhook calls the revision's istiod, and nothing is applied.
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let name = format!("istio-revision-tag-canary-{}", mesh.namespace);
    let dumped = smm_on(&mesh, &["tag", "set", "canary", "--dump-resources"]);
    assert!(dumped.status.success());
    let dumped = String::from_utf8_lossy(&dumped.stdout);
    assert!(
        dumped.contains(&format!("name: {name}\n")) && dumped.contains("name: istiod-stable\n"),
        "{dumped}"
    );
    assert!(webhooks.get_opt(&name).await.unwrap().is_none());
    mesh.smm(&["tag", "set", "canary"]);

    let apps = cluster.namespace("e2e-tag-canary").await;
    label(client, &apps.name, "istio.io/rev", "canary").await;
    let pod = create_pod(client, &apps.name).await;
    assert_eq!(revision_annotation(&pod).as_deref(), Some("stable"));

    let listed = smm_on(&mesh, &["tag", "list", "-o", "json"]);
    assert!(listed.status.success());
    let report: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let canary = report["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["tag"] == "canary")
        .unwrap_or_else(|| panic!("no canary tag: {report:#}"));
    assert_eq!(canary["revision"], "stable", "{report:#}");
    assert_eq!(canary["followsActive"], true, "{report:#}");
    assert_eq!(canary["namespaces"], serde_json::json!([apps.name]));

    assert!(webhooks.get_opt(&name).await.unwrap().is_some());
    // Refused while a namespace selects it: its new pods would get no proxy.
    let refused = smm_on(&mesh, &["tag", "remove", "canary"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "refusing to remove tag canary: namespaces {} select it",
            apps.name
        )),
        "{stderr}"
    );
    assert!(webhooks.get_opt(&name).await.unwrap().is_some());
    mesh.smm(&["tag", "remove", "canary", "--force"]);
    assert!(
        webhooks.get_opt(&name).await.unwrap().is_none(),
        "{name} is left"
    );
    let after = create_pod(client, &apps.name).await;
    assert_eq!(
        revision_annotation(&after),
        None,
        "nothing selects canary now"
    );
}
