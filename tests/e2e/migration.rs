//! `smm sidecar-proxy migrate` with two real istiods: a Deployment injected by revision A moves
//! to revision B (its namespace relabelled, its pods restarted and injected by B), and a second
//! run finds nothing left to move.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::istio::{Mesh, assert_success};
use crate::revisions::{A, B, Revisions, deploy_web, label};
use crate::support::{TestCluster, eventually, istio_mesh_lock, smm};
use crate::upgrades::revision_annotation;

/// `smm sidecar-proxy migrate ARGS -o json --control-plane <mesh>`, asserted to succeed: its
/// JSON output.
fn migrate(mesh: &Mesh, args: &[&str]) -> Value {
    let args = [
        &["sidecar-proxy", "migrate"][..],
        args,
        &["-o", "json", "--control-plane", &mesh.name],
    ]
    .concat();
    let output = smm(&args);
    assert_success(&format!("smm {}", args.join(" ")), &output);
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn migrate_moves_a_deployment_from_one_revision_to_another_and_resumes() {
    let cluster = TestCluster::connect().await;
    let client = &cluster.client;
    let _lock = istio_mesh_lock().await;
    let mesh = Mesh::create(&cluster, None).await;
    mesh.smm(&["install", "base"]);
    let mut installed = Revisions::new(&mesh.namespace);
    installed.install(A, "1.31.3", &[]);
    installed.install(B, "1.31.4", &[]);
    let apps = cluster.namespace("e2e-migrate").await;
    label(client, &apps.name, "istio.io/rev", A).await;
    let pods = deploy_web(client, &apps.name, 2).await;
    for pod in &pods {
        assert_eq!(revision_annotation(pod).as_deref(), Some(A));
    }

    // The mesh's own namespace is never injected, so never migrated.
    let refused = smm(&[
        "sidecar-proxy",
        "migrate",
        "--to",
        B,
        &mesh.namespace,
        "--control-plane",
        &mesh.name,
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refusing"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let plan = migrate(&mesh, &["--to", B, &apps.name, "--dry-run"]);
    assert_eq!(plan["revision"], B);
    assert_eq!(
        plan["restart"],
        json!([{"namespace": apps.name, "kind": "Deployment", "name": "web", "from": [A]}])
    );
    let report = migrate(&mesh, &["--to", B, &apps.name, "--batch", "1"]);
    assert_eq!(
        report["restarted"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
    let namespace = Api::<Namespace>::all(client.clone())
        .get(&apps.name)
        .await
        .unwrap();
    assert_eq!(
        namespace.labels().get("istio.io/rev").map(String::as_str),
        Some(B)
    );
    // Ready when migrate returns; the replaced pods may still be on their way out.
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &apps.name);
    let mut revisions = Vec::new();
    let moved = eventually(Duration::from_secs(30), async || {
        revisions = pods_api
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .map(revision_annotation)
            .collect();
        revisions == [Some(B.to_owned()), Some(B.to_owned())]
    })
    .await;
    assert!(moved, "web's pods run {revisions:?}");

    // Run again (as after an interruption): nothing is left to move.
    let again = migrate(&mesh, &["--to", B, &apps.name]);
    assert_eq!(again["restarted"], json!([]), "{again:#}");
    assert_eq!(again["relabelled"], json!([]), "{again:#}");
    assert_eq!(again["upToDate"], 1, "{again:#}");
}
