//! `smm sidecar-proxy migrate` with two real istiods: a Deployment and a StatefulSet injected by
//! revision A move to revision B (their namespace relabelled, their pods restarted one batch at
//! a time and injected by B), and a second run finds nothing left to move.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::istio::{Mesh, REGISTRY, assert_success};
use crate::revisions::{A, B, Revisions, deploy_web, label};
use crate::support::{TestCluster, eventually, istio_mesh_lock, smm};
use crate::upgrades::revision_annotation;

/// `smm sidecar-proxy migrate ARGS -o json --control-plane <mesh>`, asserted to succeed: its
/// JSON output and its progress (stderr).
fn migrate(mesh: &Mesh, args: &[&str]) -> (Value, String) {
    let args = [
        &["sidecar-proxy", "migrate"][..],
        args,
        &["-o", "json", "--control-plane", &mesh.name],
    ]
    .concat();
    let output = smm(&args);
    assert_success(&format!("smm {}", args.join(" ")), &output);
    let progress = String::from_utf8_lossy(&output.stderr).into_owned();
    (serde_json::from_slice(&output.stdout).unwrap(), progress)
}

/// Creates StatefulSet `db` with one pod in `namespace`.
async fn deploy_db(client: &Client, namespace: &str) {
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "db", "image": format!("{REGISTRY}/db:1")}]},
            },
        },
    }))
    .unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &set)
        .await
        .unwrap_or_else(|err| panic!("creating StatefulSet db in {namespace}: {err}"));
}

/// The revisions that injected the pods labelled `app=<app>` that are not being deleted.
async fn revisions_of(pods: &Api<Pod>, app: &str) -> Vec<Option<String>> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .map(revision_annotation)
        .collect()
}

#[tokio::test]
async fn migrate_moves_workloads_from_one_revision_to_another_in_batches_and_resumes() {
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
    deploy_db(client, &apps.name).await;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &apps.name);
    let on_a = vec![Some(A.to_owned())];
    let db_runs = eventually(Duration::from_secs(60), async || {
        revisions_of(&pods_api, "db").await == on_a
    })
    .await;
    assert!(db_runs, "db: {:?}", revisions_of(&pods_api, "db").await);

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

    let (plan, _) = migrate(&mesh, &["--to", B, &apps.name, "--dry-run"]);
    assert_eq!(plan["revision"], B);
    assert_eq!(
        plan["restart"],
        json!([
            {"namespace": apps.name, "kind": "Deployment", "name": "web", "from": [A]},
            {"namespace": apps.name, "kind": "StatefulSet", "name": "db", "from": [A]},
        ])
    );
    let (report, progress) = migrate(&mesh, &["--to", B, &apps.name, "--batch", "1"]);
    assert_eq!(
        report["restarted"].as_array().unwrap().len(),
        2,
        "{report:#}"
    );
    // One workload per batch, each ready before the next starts.
    let steps: Vec<&str> = progress.lines().collect();
    assert_eq!(
        steps,
        [
            format!("namespace/{}: istio-injection- istio.io/rev={B}", apps.name).as_str(),
            &format!("batch 1/2: restarted Deployment {}/web", apps.name),
            "batch 1/2: ready",
            &format!("batch 2/2: restarted StatefulSet {}/db", apps.name),
            "batch 2/2: ready",
        ],
        "{progress}"
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
    let on_b = Some(B.to_owned());
    let moved = eventually(Duration::from_secs(30), async || {
        revisions_of(&pods_api, "web").await == [on_b.clone(), on_b.clone()]
            && revisions_of(&pods_api, "db").await == [on_b.clone()]
    })
    .await;
    assert!(
        moved,
        "web: {:?}, db: {:?}",
        revisions_of(&pods_api, "web").await,
        revisions_of(&pods_api, "db").await
    );

    // Run again (as after an interruption): nothing is left to move.
    let (again, _) = migrate(&mesh, &["--to", B, &apps.name]);
    assert_eq!(again["restarted"], json!([]), "{again:#}");
    assert_eq!(again["relabelled"], json!([]), "{again:#}");
    assert_eq!(again["upToDate"], 2, "{again:#}");
}
