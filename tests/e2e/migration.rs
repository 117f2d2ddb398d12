//! `smm sidecar-proxy migrate` with two real istiods: a Deployment and a StatefulSet injected by
//! revision A move to revision B (their namespace relabelled, their pods restarted one batch at
//! a time and injected by B), and a second run finds nothing left to move.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
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

/// Creates a workload of kind `K` named `name` in `namespace`, one pod labelled `app=<name>`,
/// with `spec` merged into its spec.
async fn create<K>(client: &Client, namespace: &str, name: &str, spec: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut object = json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": format!("{REGISTRY}/{name}:1")}]},
            },
        },
    });
    for (key, value) in spec.as_object().unwrap() {
        object["spec"][key] = value.clone();
    }
    Api::<K>::namespaced(client.clone(), namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(object).unwrap(),
        )
        .await
        .unwrap_or_else(|err| panic!("creating {name} in {namespace}: {err}"));
}

/// Waits until the pods of `app` that are not being deleted were injected by `revisions`.
async fn wait_for(pods: &Api<Pod>, app: &str, revisions: &[&str]) {
    let expected: Vec<Option<String>> = revisions.iter().map(|r| Some((*r).to_owned())).collect();
    let reached = eventually(Duration::from_secs(60), async || {
        revisions_of(pods, app).await == expected
    })
    .await;
    assert!(reached, "{app}: {:?}", revisions_of(pods, app).await);
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
    create::<StatefulSet>(client, &apps.name, "db", json!({"serviceName": "db"})).await;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &apps.name);
    wait_for(&pods_api, "db", &[A]).await;

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
    wait_for(&pods_api, "web", &[B, B]).await;
    wait_for(&pods_api, "db", &[B]).await;

    // Run again (as after an interruption): nothing is left to move.
    let (again, _) = migrate(&mesh, &["--to", B, &apps.name]);
    assert_eq!(again["restarted"], json!([]), "{again:#}");
    assert_eq!(again["relabelled"], json!([]), "{again:#}");
    assert_eq!(again["upToDate"], 2, "{again:#}");
}

/// A batch that is not ready in time stops the migration with an error; once it is, running
/// the migration again moves only what did not move yet.
#[tokio::test]
async fn a_migration_stopped_by_a_batch_that_is_not_ready_in_time_resumes() {
    let cluster = TestCluster::connect().await;
    let client = &cluster.client;
    let _lock = istio_mesh_lock().await;
    let mesh = Mesh::create(&cluster, None).await;
    mesh.smm(&["install", "base"]);
    let mut installed = Revisions::new(&mesh.namespace);
    installed.install(A, "1.31.3", &[]);
    installed.install(B, "1.31.4", &[]);
    let apps = cluster.namespace("e2e-migrate-resume").await;
    label(client, &apps.name, "istio.io/rev", A).await;
    // `a-slow` restarts first; its new pod counts as available only after 5 s.
    create::<Deployment>(client, &apps.name, "a-slow", json!({"minReadySeconds": 5})).await;
    create::<Deployment>(client, &apps.name, "web", json!({})).await;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &apps.name);
    wait_for(&pods_api, "a-slow", &[A]).await;
    wait_for(&pods_api, "web", &[A]).await;

    let args = [
        "sidecar-proxy",
        "migrate",
        "--to",
        B,
        &apps.name,
        "--batch",
        "1",
        "--timeout",
        "2s",
        "--control-plane",
        &mesh.name,
    ];
    let stopped = smm(&args);
    assert!(!stopped.status.success());
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(
        stderr.contains("batch 1 not ready within 2s") && stderr.contains("a-slow"),
        "{stderr}"
    );
    assert!(!stderr.contains("batch 2/2"), "{stderr}");
    wait_for(&pods_api, "a-slow", &[B]).await;
    assert_eq!(revisions_of(&pods_api, "web").await, [Some(A.to_owned())]);

    let (report, _) = migrate(&mesh, &["--to", B, &apps.name]);
    assert_eq!(
        report["restarted"],
        json!([{"namespace": apps.name, "kind": "Deployment", "name": "web", "from": [A]}]),
        "{report:#}"
    );
    assert_eq!(report["upToDate"], 1, "{report:#}");
    wait_for(&pods_api, "web", &[B]).await;
}
