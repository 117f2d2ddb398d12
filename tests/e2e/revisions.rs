//! Istio revisions on a real API server with real istiods (`scripts/istio/istiod.sh`): what
//! `smm proxy-status` reports of injected pods, and what the in-use rule
//! (`mesh::revisions::usage`) makes of the objects `cluster::mesh_snapshot::read` reads, while
//! revisions are installed and after one is removed.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use smm::cluster::mesh_snapshot;
use smm::mesh::revisions::usage::{PodRef, revision_usage, revisions};

use crate::istio::{Mesh, REGISTRY, container_image, container_names, proxy_image};
use crate::support::{
    HelmTool, LocalIstiod, TestCluster, TestNamespace, eventually, istio_mesh_lock, istiod_tag,
    repo_root, smm,
};

/// Labels `namespace` (a merge patch: other labels stay).
pub(crate) async fn label(client: &Client, namespace: &str, key: &str, value: &str) {
    let patch = json!({"metadata": {"labels": {key: value}}});
    Api::<Namespace>::all(client.clone())
        .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|err| panic!("labelling namespace {namespace}: {err}"));
}

/// Creates Deployment `web` with `replicas` pods in `namespace` and returns its pods once they
/// all run (kwok runs them).
pub(crate) async fn deploy_web(client: &Client, namespace: &str, replicas: i32) -> Vec<Pod> {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": format!("{REGISTRY}/web:1")}]},
            },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap_or_else(|err| panic!("creating Deployment web in {namespace}: {err}"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut running = Vec::new();
    let all_run = eventually(Duration::from_secs(60), async || {
        running = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        running.len() == replicas as usize
            && running
                .iter()
                .all(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    assert!(
        all_run,
        "Deployment web in {namespace} did not run {replicas} pods"
    );
    running
}

/// `smm proxy-status -o json` for the mesh: its exit code and its report.
fn proxy_status(mesh: &Mesh) -> (Option<i32>, Value) {
    let output = smm(&["proxy-status", "-o", "json", "--control-plane", &mesh.name]);
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "proxy-status printed no JSON ({err}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

/// The report's proxies in `namespace`, by pod name.
fn proxies_in<'a>(report: &'a Value, namespace: &str) -> Vec<&'a Value> {
    report["proxies"]
        .as_array()
        .expect("proxies is a list")
        .iter()
        .filter(|proxy| proxy["namespace"] == namespace)
        .collect()
}

fn names(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().map(ResourceExt::name_any).collect()
}

/// istiod installed by smm, a Deployment in an `istio-injection=enabled` namespace: its pods
/// are injected and `smm proxy-status` lists them with revision `default` and the proxy's
/// version, exit code 0; once istiod is uninstalled and stopped, the same proxies point at a
/// revision that no longer exists, and it exits 3.
#[tokio::test]
async fn proxy_status_reports_injected_pods_and_fails_once_their_revision_is_gone() {
    let cluster = TestCluster::connect().await;
    let _lock = istio_mesh_lock().await;
    let mesh = Mesh::create(&cluster, None).await;
    mesh.smm(&["install", "istiod"]);
    let istiod = LocalIstiod::start(&mesh.namespace, "");

    let apps = cluster.namespace("e2e-proxies").await;
    label(&cluster.client, &apps.name, "istio-injection", "enabled").await;
    let pods = deploy_web(&cluster.client, &apps.name, 2).await;
    for pod in &pods {
        assert_eq!(
            container_image(pod, "istio-proxy"),
            Some(proxy_image()),
            "{:?}",
            container_names(pod)
        );
    }

    // Proxies that other tests left behind (namespaces being deleted) may point at a revision
    // gone with their mesh for a moment: 0 once they are gone.
    let mut last = (None, Value::Null);
    let clean = eventually(Duration::from_secs(30), async || {
        last = proxy_status(&mesh);
        last.0 == Some(0)
    })
    .await;
    let (code, report) = last;
    assert!(clean, "proxy-status exited {code:?}:\n{report:#}");
    assert_eq!(report["meshNamespace"], mesh.namespace.as_str());
    let listed = proxies_in(&report, &apps.name);
    let listed_names: BTreeSet<String> = listed
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed_names, names(&pods), "{report:#}");
    for proxy in listed {
        assert_eq!(proxy["revision"], "default", "{proxy:#}");
        assert_eq!(proxy["proxyVersion"], istiod_tag().as_str(), "{proxy:#}");
        assert_eq!(proxy["controlPlaneVersion"], istiod_tag().as_str());
        assert_eq!(proxy["revisionExists"], true);
        assert_eq!(proxy["revisionReady"], true);
        assert_eq!(proxy["skew"], "none");
    }

    // Removing istiod while its proxies run is refused, naming them; --force goes on.
    let refused = crate::support::smm(&["uninstall", "istiod", "--control-plane", &mesh.name]);
    assert!(!refused.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        said.contains("refusing to remove istiod: 2 running proxies use revision default")
            && said.contains(&format!("{}/", apps.name)),
        "{said}"
    );
    // The revision goes (release first: its injector fails closed once istiod stops).
    mesh.smm(&["uninstall", "istiod", "--force"]);
    drop(istiod);
    let (code, report) = proxy_status(&mesh);
    assert_eq!(code, Some(3), "{report:#}");
    let listed = proxies_in(&report, &apps.name);
    assert_eq!(listed.len(), 2, "{report:#}");
    for proxy in listed {
        assert_eq!(proxy["revisionExists"], false, "{proxy:#}");
        assert_eq!(proxy["controlPlaneVersion"], Value::Null);
    }
}

/// istiod releases of the chart as helm installs them for a canary upgrade (`istiod-<revision>`
/// with `revision=<revision>`), each with its local istiod. Dropped, each release (also one whose
/// install failed half-way) is uninstalled before its istiod stops (an injector whose istiod is
/// gone refuses pods), whatever the test's outcome.
pub(crate) struct Revisions {
    namespace: String,
    releases: Vec<String>,
    istiods: Vec<(String, LocalIstiod)>,
}

impl Revisions {
    pub(crate) fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            releases: Vec::new(),
            istiods: Vec::new(),
        }
    }

    /// Installs revision `revision` with images tagged `tag`, and starts its istiod.
    pub(crate) fn install(&mut self, revision: &str, tag: &str, extra: &[&str]) {
        let chart = repo_root().join(".upstream/istio/charts/istio-discovery");
        let release = format!("istiod-{revision}");
        self.releases.push(release.clone());
        let set = |value: String| ["--set".to_owned(), value];
        helm(
            &[
                &["install".to_owned(), release, chart.display().to_string()][..],
                &["--wait".to_owned(), "--timeout".to_owned(), "2m".to_owned()],
                &set(format!("revision={revision}")),
                // The chart puts some objects there (istio-system otherwise).
                &set(format!("global.istioNamespace={}", self.namespace)),
                &set(format!("global.hub={REGISTRY}/istio")),
                &set(format!("global.tag={tag}")),
                &extra.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(),
            ]
            .concat(),
            &self.namespace,
        );
        let istiod = LocalIstiod::start(&self.namespace, revision);
        self.istiods.push((revision.to_owned(), istiod));
    }

    /// Uninstalls revision `revision`, then stops its istiod.
    fn remove(&mut self, revision: &str) {
        let release = format!("istiod-{revision}");
        helm(
            &["uninstall".to_owned(), release.clone(), "--wait".to_owned()],
            &self.namespace,
        );
        self.releases.retain(|installed| *installed != release);
        self.istiods.retain(|(running, _)| running != revision);
    }
}

impl Drop for Revisions {
    fn drop(&mut self) {
        for release in &self.releases {
            let _ = std::process::Command::new(HelmTool::Helm4.path())
                .args(["uninstall", release, "--wait", "-n", &self.namespace])
                .output();
        }
        // The istiods stop as their field drops, after this.
    }
}

/// Runs helm 4 in `namespace`, asserting it succeeds.
fn helm(args: &[String], namespace: &str) {
    let output = std::process::Command::new(HelmTool::Helm4.path())
        .args(args)
        .args(["-n", namespace])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "helm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn refs(namespace: &TestNamespace, pods: &[Pod]) -> Vec<PodRef> {
    names(pods)
        .into_iter()
        .map(|name| PodRef {
            namespace: namespace.name.clone(),
            name,
        })
        .collect()
}

/// The names in `set` that belong to the test's `namespaces`: the cluster may hold others.
fn only_ours(set: &BTreeSet<String>, namespaces: &[&TestNamespace]) -> BTreeSet<String> {
    let ours: BTreeSet<&str> = namespaces.iter().map(|n| n.name.as_str()).collect();
    set.iter()
        .filter(|name| ours.contains(name.as_str()))
        .cloned()
        .collect()
}

/// The holder of istiod's leader-election ConfigMap `name`, once one holds it.
async fn leader_of(client: &Client, namespace: &str, name: &str) -> String {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut holder = String::new();
    let held = eventually(Duration::from_secs(30), async || {
        let Some(lock) = config_maps.get_opt(name).await.unwrap() else {
            return false;
        };
        let record = lock
            .annotations()
            .get("control-plane.alpha.kubernetes.io/leader")
            .and_then(|record| serde_json::from_str::<Value>(record).ok());
        holder = record
            .and_then(|record| record["holderIdentity"].as_str().map(str::to_owned))
            .unwrap_or_default();
        !holder.is_empty()
    })
    .await;
    assert!(held, "nobody holds {namespace}/{name}");
    holder
}

/// Creates a pod with one plain container and `labels` in `namespace`, as admitted.
async fn create_pod(client: &Client, namespace: &str, name: &str, labels: Value) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": format!("{REGISTRY}/app:1")}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|err| panic!("creating pod {name} in {namespace}: {err}"))
}

fn proxy_version(pod: &Pod) -> Option<String> {
    let image = container_image(pod, "istio-proxy")?;
    Some(image.rsplit_once(':')?.1.to_owned())
}

pub(crate) const A: &str = "1-31-3";
pub(crate) const B: &str = "1-31-4";

/// Revisions A and B side by side (B with tag `prod`), pods injected by each through a
/// namespace's revision label, a tag, and a pod's own label, and a pod labelled for B before B
/// existed (not injected, but selecting B): the snapshot read from the API
/// server gives each revision exactly the test's pods, namespaces and tags. Once A is removed,
/// its running proxies still name it, nothing selects it, and a new pod of its namespace gets
/// no proxy, as the rule says.
#[tokio::test]
async fn the_in_use_rule_follows_real_injections_of_two_revisions() {
    let cluster = TestCluster::connect().await;
    let client = &cluster.client;
    let _lock = istio_mesh_lock().await;
    let mesh = Mesh::create(&cluster, None).await;
    mesh.smm(&["install", "base"]);
    let mut installed = Revisions::new(&mesh.namespace);
    installed.install(A, "1.31.3", &[]);
    // Created before B exists: no proxy, but a replacement would get B's; only its label says so.
    let plain = cluster.namespace("e2e-rev-plain").await;
    let early = create_pod(client, &plain.name, "early", json!({"istio.io/rev": B})).await;
    assert_eq!(container_names(&early), ["app"]);
    installed.install(B, "1.31.4", &["--set", "revisionTags={prod}"]);

    // Side by side, each istiod has a ControlZ port and a leader-election identity of its own.
    for (revision, istiod) in &installed.istiods {
        let log = istiod.log();
        assert!(
            !log.contains("Unable to start ControlZ"),
            "{revision}:\n{log}"
        );
    }
    let holder = leader_of(client, &mesh.namespace, "istio-leader").await;
    let identities = [A, B].map(|revision| format!("istiod-{revision}-local"));
    assert!(
        identities.contains(&holder),
        "istio-leader held by {holder:?}"
    );

    let on_a = cluster.namespace("e2e-rev-a").await;
    label(client, &on_a.name, "istio.io/rev", A).await;
    let on_b = cluster.namespace("e2e-rev-b").await;
    label(client, &on_b.name, "istio.io/rev", B).await;
    let on_prod = cluster.namespace("e2e-rev-prod").await;
    label(client, &on_prod.name, "istio.io/rev", "prod").await;
    let ours = [&on_a, &on_b, &on_prod, &plain];

    let a_pods = deploy_web(client, &on_a.name, 2).await;
    let b_pods = deploy_web(client, &on_b.name, 1).await;
    let prod_pods = deploy_web(client, &on_prod.name, 1).await;
    let pinned = create_pod(client, &plain.name, "pinned", json!({"istio.io/rev": A})).await;
    for (pod, version, revision) in a_pods
        .iter()
        .map(|pod| (pod, "1.31.3", A))
        .chain([(&pinned, "1.31.3", A)])
        .chain(
            b_pods
                .iter()
                .chain(&prod_pods)
                .map(|pod| (pod, "1.31.4", B)),
        )
    {
        let recorded = pod.annotations().get("istio.io/rev").map(String::as_str);
        assert_eq!(
            (proxy_version(pod).as_deref(), recorded),
            (Some(version), Some(revision)),
            "{}: {:?}",
            pod.name_any(),
            container_names(pod)
        );
    }

    let snapshot = mesh_snapshot::read(client, &mesh.namespace).await.unwrap();
    let usage = revision_usage(&snapshot);
    let of_ours = |pods: &[PodRef]| -> Vec<PodRef> {
        let namespaces: BTreeSet<&str> = ours.iter().map(|n| n.name.as_str()).collect();
        pods.iter()
            .filter(|p| namespaces.contains(p.namespace.as_str()))
            .cloned()
            .collect()
    };
    let pinned_ref = refs(&plain, std::slice::from_ref(&pinned));
    let mut a_proxies = [refs(&on_a, &a_pods), pinned_ref.clone()].concat();
    a_proxies.sort();
    let a = &usage[A];
    assert_eq!(of_ours(&a.pods), a_proxies, "{a:#?}");
    assert_eq!(of_ours(&a.selecting_pods), pinned_ref);
    assert_eq!(only_ours(&a.namespaces, &ours), [on_a.name.clone()].into());
    assert!(a.tags.is_empty(), "{a:#?}");
    let b = &usage[B];
    let mut expected = [refs(&on_b, &b_pods), refs(&on_prod, &prod_pods)].concat();
    expected.sort();
    assert_eq!(of_ours(&b.pods), expected, "{b:#?}");
    assert_eq!(
        only_ours(&b.namespaces, &ours),
        [on_b.name.clone(), on_prod.name.clone()].into()
    );
    assert_eq!(of_ours(&b.selecting_pods), refs(&plain, &[early]));
    assert_eq!(b.tags, ["prod".to_owned()].into());
    let found = revisions(&snapshot);
    for (revision, version) in [(A, "1.31.3"), (B, "1.31.4")] {
        let info = &found[revision];
        assert!(info.exists && info.ready, "{revision}: {info:?}");
        assert_eq!(info.version.as_deref(), Some(version));
    }

    installed.remove(A);
    let snapshot = mesh_snapshot::read(client, &mesh.namespace).await.unwrap();
    assert!(!revisions(&snapshot)[A].exists);
    let a = &revision_usage(&snapshot)[A];
    assert_eq!(of_ours(&a.pods), a_proxies, "{a:#?}");
    assert!(of_ours(&a.selecting_pods).is_empty(), "{a:#?}");
    assert!(only_ours(&a.namespaces, &ours).is_empty(), "{a:#?}");
    let after = create_pod(client, &on_a.name, "after-removal", json!({})).await;
    assert_eq!(container_names(&after), ["app"], "no injector selects it");
}
