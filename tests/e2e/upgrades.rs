//! Revision-based upgrades with two real istiods (`pilot-discovery` per revision, run on
//! loopback by `scripts/istio/istiod.sh`): the new revision beside the old, the default tag
//! moved once it is Ready, the gateways restarted onto it, the old revision kept while a proxy
//! uses it and removed only after nothing has for the grace period.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use smm::api::ControlPlane;

use crate::istio::{Mesh, container_image, create_pod};
use crate::support::{LocalIstiod, TestCluster, eventually, istio_mesh_lock};

/// Two patch releases of the embedded line: the one installed first, and the upgrade.
fn versions() -> (String, String) {
    let line = smm::mesh::revisions::strategy::embedded_line();
    (format!("{line}.3"), format!("{line}.4"))
}

async fn patch_spec(client: &kube::Client, name: &str, spec: serde_json::Value) {
    Api::<ControlPlane>::all(client.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
        .unwrap();
}

async fn revisions_of(client: &kube::Client, name: &str) -> Vec<smm::api::RevisionStatus> {
    let stored = Api::<ControlPlane>::all(client.clone())
        .get(name)
        .await
        .unwrap();
    stored.status.unwrap_or_default().revisions
}

pub(crate) fn revision_annotation(pod: &Pod) -> Option<String> {
    pod.metadata
        .annotations
        .as_ref()?
        .get("istio.io/rev")
        .cloned()
}

/// A mesh as installed today: the revisionless istiod in place at `version`, its local istiod
/// running, and a namespace of the test's labelled for injection.
async fn in_place_mesh(
    cluster: &TestCluster,
    version: &str,
    namespace: &str,
) -> (Mesh, LocalIstiod, crate::support::TestNamespace) {
    let mesh = Mesh::create(cluster, None).await;
    patch_spec(&cluster.client, &mesh.name, json!({"version": version})).await;
    mesh.smm(&["install", "istiod"]);
    let istiod = LocalIstiod::start(&mesh.namespace, "");
    let injected = cluster.namespace(namespace).await;
    mesh.smm(&["sidecar-proxy", "auto-inject", "on", &injected.name]);
    (mesh, istiod, injected)
}

#[tokio::test]
async fn a_revision_based_upgrade_keeps_old_proxies_served_and_prunes_only_what_nothing_uses() {
    let cluster = TestCluster::connect().await;
    let client = cluster.client.clone();
    let _lock = istio_mesh_lock().await;
    let (old_version, new_version) = versions();
    let (mesh, old_istiod, injected) =
        in_place_mesh(&cluster, &old_version, "e2e-rev-inject").await;
    mesh.smm(&["install", "ingress-gateway"]);
    let old_pod = create_pod(&client, &injected.name).await;
    assert_eq!(revision_annotation(&old_pod).as_deref(), Some("default"));

    // Revision-based, at the next patch: a new revision beside the old.
    patch_spec(
        &client,
        &mesh.name,
        json!({"version": new_version, "updateStrategy": {
            "type": "RevisionBased", "inactiveRevisionDeletionGracePeriodSeconds": 2,
        }}),
    )
    .await;
    let new_revision = new_version.replace('.', "-");
    let starting = LocalIstiod::start_when_installed(&mesh.namespace, &new_revision);
    mesh.smm(&["install", "istiod", "ingress-gateway"]);
    let _new_istiod = starting.join().expect("the new revision's istiod starts");

    let revisions = revisions_of(&client, &mesh.name).await;
    let summary: Vec<(&str, bool, &[String])> = revisions
        .iter()
        .map(|r| (r.name.as_str(), r.active, r.tags.as_slice()))
        .collect();
    assert_eq!(
        summary,
        [
            (new_revision.as_str(), true, &["default".to_owned()][..]),
            ("default", false, &[][..]),
        ],
        "{revisions:#?}"
    );
    let in_use = |revisions: &[smm::api::RevisionStatus], name: &str| {
        let revision = revisions.iter().find(|r| r.name == name).unwrap();
        let condition = revision.conditions.iter().find(|c| c.type_ == "InUse");
        condition.map(|c| c.status.clone())
    };
    assert_eq!(in_use(&revisions, "default").as_deref(), Some("True"));
    let status = crate::support::smm(&["status", "--control-plane", &mesh.name]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains("ISTIOD REVISION")
            && shown
                .lines()
                .any(|line| line.starts_with("default ") && line.contains("inactive")),
        "{shown}"
    );
    // The old revision's Service, which its running proxies dial, is still there.
    let services: Api<Service> = Api::namespaced(client.clone(), &mesh.namespace);
    assert!(services.get_opt("istiod").await.unwrap().is_some());

    // New pods in the injected namespace get the new revision through the moved default tag.
    let new_pod = create_pod(&client, &injected.name).await;
    assert_eq!(revision_annotation(&new_pod), Some(new_revision.clone()));
    assert_eq!(
        container_image(&new_pod, "istio-proxy"),
        Some(format!(
            "{}/istio/proxyv2:{new_version}",
            crate::istio::REGISTRY
        ))
    );
    // The gateway was restarted onto the new revision.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &mesh.namespace);
    let gateway_pods = || async {
        pods.list(&ListParams::default().labels("app=istio-ingressgateway"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| revision_annotation(&p))
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(60), || async {
        let revisions = gateway_pods().await;
        !revisions.is_empty()
            && revisions
                .iter()
                .all(|r| r.as_deref() == Some(&new_revision))
    })
    .await;

    // Still in use by the old pod: another reconcile keeps it.
    mesh.smm(&["install", "istiod"]);
    let revisions = revisions_of(&client, &mesh.name).await;
    assert_eq!(revisions.len(), 2, "{revisions:#?}");

    // The old pod gone: unused, removed once the grace period has passed, not before.
    Api::<Pod>::namespaced(client.clone(), &injected.name)
        .delete(
            &old_pod.metadata.name.clone().unwrap(),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    mesh.smm(&["install", "istiod"]);
    let revisions = revisions_of(&client, &mesh.name).await;
    assert_eq!(
        in_use(&revisions, "default").as_deref(),
        Some("False"),
        "{revisions:#?}"
    );
    assert_eq!(
        revisions.len(),
        2,
        "kept for the grace period: {revisions:#?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    mesh.smm(&["install", "istiod"]);
    let revisions = revisions_of(&client, &mesh.name).await;
    let names: Vec<&str> = revisions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [new_revision.as_str()]);
    assert!(services.get_opt("istiod").await.unwrap().is_none());
    drop(old_istiod);
    // The new revision and its tag are untouched: a new pod is still injected by it.
    let after = create_pod(&client, &injected.name).await;
    assert_eq!(revision_annotation(&after), Some(new_revision.clone()));
}

/// In place, renaming the revision replaces the Service and webhooks that running proxies use:
/// refused with the pods it would cut off, and nothing changes; `--force` goes on.
#[tokio::test]
async fn an_in_place_revision_rename_is_refused_while_proxies_use_the_old_name() {
    let cluster = TestCluster::connect().await;
    let client = cluster.client.clone();
    let _lock = istio_mesh_lock().await;
    let (mesh, _istiod, injected) = in_place_mesh(&cluster, &versions().0, "e2e-rename").await;
    let pod = create_pod(&client, &injected.name).await;
    let pod_name = format!("{}/{}", injected.name, pod.metadata.name.clone().unwrap());

    patch_spec(&client, &mesh.name, json!({"revision": "canary"})).await;
    let refused = crate::support::smm(&["install", "istiod", "--control-plane", &mesh.name]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains(
            "refusing to rename revision default to canary in place: 1 running proxies use \
             revision default"
        ) && said.contains(&pod_name),
        "{said}"
    );
    let services: Api<Service> = Api::namespaced(client.clone(), &mesh.namespace);
    assert!(services.get_opt("istiod").await.unwrap().is_some());
    assert!(services.get_opt("istiod-canary").await.unwrap().is_none());

    mesh.smm(&["install", "istiod", "--force"]);
    assert!(services.get_opt("istiod").await.unwrap().is_none());
    assert!(services.get_opt("istiod-canary").await.unwrap().is_some());
}

/// `updateWorkloads`: the reconcile that installs the new revision also moves the workloads of
/// injected namespaces onto it (restarted in batches, each waited for), so the old revision is
/// unused at once and the next reconcile after the grace period removes it.
#[tokio::test]
async fn update_workloads_moves_injected_workloads_onto_the_new_revision() {
    let cluster = TestCluster::connect().await;
    let client = cluster.client.clone();
    let _lock = istio_mesh_lock().await;
    let (old_version, new_version) = versions();
    let (mesh, _old_istiod, injected) =
        in_place_mesh(&cluster, &old_version, "e2e-rev-workloads").await;
    let created = std::process::Command::new(crate::support::repo_root().join(".tools/kubectl"))
        .args([
            "-n",
            &injected.name,
            "create",
            "deployment",
            "web",
            "--replicas=2",
        ])
        .arg(format!("--image={}/app:1", crate::istio::REGISTRY))
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &injected.name);
    let web_revisions = || async {
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| revision_annotation(&p).unwrap_or_default())
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(60), || async {
        web_revisions().await == ["default", "default"]
    })
    .await;

    patch_spec(
        &client,
        &mesh.name,
        json!({"version": new_version, "updateStrategy": {
            "type": "RevisionBased", "updateWorkloads": true,
            "inactiveRevisionDeletionGracePeriodSeconds": 1,
        }}),
    )
    .await;
    let new_revision = new_version.replace('.', "-");
    let starting = LocalIstiod::start_when_installed(&mesh.namespace, &new_revision);
    mesh.smm(&["install", "istiod"]);
    let _new_istiod = starting.join().expect("the new revision's istiod starts");
    // Moved by the reconcile itself: no restart by hand.
    let moved = web_revisions().await;
    assert!(
        !moved.is_empty() && moved.iter().all(|r| *r == new_revision),
        "{moved:?}"
    );
    eventually(Duration::from_secs(30), || async {
        web_revisions().await.len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    mesh.smm(&["install", "istiod"]);
    let names: Vec<String> = revisions_of(&client, &mesh.name)
        .await
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, [new_revision]);
}
