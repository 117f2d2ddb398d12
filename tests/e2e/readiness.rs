//! Readiness on the real plane, where kube-scheduler places pods on kwok's fake nodes and kwok
//! reports them running: a component is Available only once its workloads are, `--timeout`
//! bounds the wait, `--no-wait` only applies, and `smm status` judges the workloads live.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use std::process::Stdio;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use smm::api::{ComponentPhase, ControlPlane, condition};

use crate::support::{
    LocalIstiod, TestCluster, assert_success, eventually, fresh_control_plane, istio_mesh_lock,
    smm, smm_command, stdout, unique_name,
};

/// Every Deployment in `namespace` has its current generation rolled out and all replicas
/// available, by the Deployment's own status (not smm's word).
async fn every_deployment_available(client: &kube::Client, namespace: &str) -> Vec<String> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        !deployments.items.is_empty(),
        "no Deployment in {namespace}"
    );
    deployments
        .items
        .iter()
        .filter_map(|d| {
            let name = d.metadata.name.clone().unwrap();
            let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = d.status.clone().unwrap_or_default();
            let current = status.observed_generation == d.metadata.generation;
            let updated = status.updated_replicas.unwrap_or(0);
            // No old replica left: the available ones are the updated ones.
            let available = status.available_replicas.unwrap_or(0) >= wanted
                && updated >= wanted
                && status.replicas.unwrap_or(0) <= updated;
            (!(current && available)).then_some(name)
        })
        .collect()
}

pub(crate) async fn remove(client: &kube::Client, name: &str) {
    smm(&["uninstall", "-a", "--force", "--control-plane", name]);
    let _ = Api::<ControlPlane>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// One `smm install -a` ends Ready with every Deployment of the mesh available, the gateways
/// included: their pods are admitted only through istiod's injection webhook, so a local istiod
/// is started as soon as the istiod chart is installed, while the install waits.
#[tokio::test]
async fn install_all_ends_ready_with_every_deployment_available() {
    let cluster = TestCluster::connect().await;
    let _lock = istio_mesh_lock().await;
    let (name, namespace) = fresh_control_plane(&cluster).await;
    let cp_flag = ["--control-plane", name.as_str()];

    let install = smm_command(&[&["install", "-a"], &cp_flag[..]].concat(), &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // istiod starts once its chart made its Service, while the install goes on to the gateway.
    let local_istiod = LocalIstiod::start_when_installed(&namespace, "");
    let installed = install.wait_with_output().unwrap();
    let local_istiod = local_istiod.join().expect("the local istiod started");
    assert_success(&installed);
    let not_available = every_deployment_available(&cluster.client, &namespace).await;
    assert!(not_available.is_empty(), "not available: {not_available:?}");

    let status = smm(&[&["status"], &cp_flag[..]].concat());
    assert_success(&status);
    let text = stdout(&status);
    assert!(text.contains("READY"), "{text}");
    let istiod = text.lines().find(|l| l.starts_with("istiod ")).unwrap();
    assert!(istiod.contains(" 1/1 "), "{istiod}");
    let gateway = text
        .lines()
        .find(|l| l.starts_with("ingress-gateway "))
        .unwrap();
    assert!(gateway.contains(" 1/1 "), "{gateway}");
    remove(&cluster.client, &name).await;
    drop(local_istiod);
}

#[tokio::test]
async fn a_workload_that_cannot_run_fails_after_the_timeout_and_a_fixed_spec_converges() {
    let cluster = TestCluster::connect().await;
    let (name, namespace) = fresh_control_plane(&cluster).await;
    let cp_flag = ["--control-plane", name.as_str()];
    let nowhere = format!("nodeSelector.smm-test/{}=nowhere", unique_name("sel"));

    let failed = smm(&[
        &["install", "tracing", "--timeout", "8s", "--set", &nowhere][..],
        &cp_flag[..],
    ]
    .concat());
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let report = stdout(&failed);
    // The tracing chart deploys Jaeger; the message names its Deployment.
    let deployment = format!("Deployment {namespace}/jaeger");
    assert!(report.contains(&deployment), "{report}");
    assert!(report.contains("cannot be scheduled"), "{report}");

    let stored = Api::<ControlPlane>::all(cluster.client.clone())
        .get(&name)
        .await
        .unwrap();
    let status = stored.status.unwrap();
    let tracing = &status.components["tracing"];
    assert_eq!(tracing.phase, ComponentPhase::Failed);
    assert!(tracing.message.as_deref().unwrap().contains(&deployment));
    let ready = status.condition(condition::READY);
    assert!(ready.is_some_and(|c| c.status == "False") && status.is_true(condition::STALLED));
    assert_eq!(
        smm(&[&["status"], &cp_flag[..]].concat()).status.code(),
        Some(1)
    );

    // The spec without the impossible nodeSelector converges on the next reconcile.
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut components: serde_json::Map<String, Value> = status
        .components
        .keys()
        .map(|c| (c.clone(), json!({"enabled": false})))
        .collect();
    for off in smm::mesh::catalog::Catalog::builtin().unwrap().names() {
        components.insert(off.to_owned(), json!({"enabled": false}));
    }
    components.insert("tracing".to_owned(), json!({"enabled": true}));
    let fixed = json!({
        "apiVersion": "smm.dev/v1alpha1",
        "kind": "ControlPlane",
        "metadata": {"name": name},
        "spec": {"namespace": namespace, "components": components},
    });
    std::fs::write(file.path(), serde_json::to_string(&fixed).unwrap()).unwrap();
    let path = file.path().to_str().unwrap();
    assert_success(&smm(&["reconcile", "-f", path]));
    assert_success(&smm(&[&["status"], &cp_flag[..]].concat()));
    assert!(
        every_deployment_available(&cluster.client, &namespace)
            .await
            .is_empty()
    );
    remove(&cluster.client, &name).await;
}

#[tokio::test]
async fn no_wait_returns_before_ready_and_status_watch_follows() {
    let cluster = TestCluster::connect().await;
    let (name, namespace) = fresh_control_plane(&cluster).await;
    let cp_flag = ["--control-plane", name.as_str()];
    // Pods wait for a node label no node has yet, so "before ready" does not depend on timing;
    // labelling a node later lets them run.
    let key = format!("smm-test/{}", unique_name("ready"));
    let select = format!("nodeSelector.{key}=yes");

    let applied = smm(&[
        &["install", "tracing", "--no-wait", "--set", &select][..],
        &cp_flag[..],
    ]
    .concat());
    assert_success(&applied);
    let stored = Api::<ControlPlane>::all(cluster.client.clone())
        .get(&name)
        .await
        .unwrap();
    let tracing = stored.status.unwrap().components["tracing"].clone();
    assert_eq!(tracing.phase, ComponentPhase::Installing, "{tracing:?}");
    assert!(
        !every_deployment_available(&cluster.client, &namespace)
            .await
            .is_empty()
    );
    assert_eq!(
        smm(&[&["status"], &cp_flag[..]].concat()).status.code(),
        Some(1)
    );

    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let node = nodes.list(&ListParams::default()).await.unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let label = |value: Value| json!({"metadata": {"labels": {key.as_str(): value}}});
    nodes
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(&label(json!("yes"))),
        )
        .await
        .unwrap();
    let watched = smm(&[&["status", "--watch", "--timeout", "60s"], &cp_flag[..]].concat());
    nodes
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(&label(Value::Null)),
        )
        .await
        .unwrap();
    assert_success(&watched);
    assert!(
        eventually(Duration::from_secs(5), async || {
            every_deployment_available(&cluster.client, &namespace)
                .await
                .is_empty()
        })
        .await
    );
    remove(&cluster.client, &name).await;
}
