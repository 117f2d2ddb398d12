//! GitOps with a real Argo CD (its repo server and application controller, built from the
//! pinned module by scripts/argocd/build.sh and run by scripts/argocd/argocd.sh on the local
//! plane): the operator's packaging and a ControlPlane synced from a local git repository, the
//! operator reconciling as its own ServiceAccount, and Argo CD judging the ControlPlane's health
//! through deploy/argocd's Lua as commits break and repair it; then, without the operator, a
//! mesh synced from `--dump-resources` output that stays Synced once a real istiod has patched
//! its webhooks; last, the fleet ApplicationSet over this plane and a second one, with the real
//! applicationset controller.
//!
//! A test binary of its own: Argo CD installs the operator, which makes every CLI reconcile
//! refuse, and cargo runs test binaries one after another. One test, since its steps build on
//! each other (the packagings one after the other, then the ControlPlane).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use smm::api::{ControlPlane, MultiCluster, PrimaryCluster};
use smm::operator::controller::LEADER_LEASE;
use support::drift::{documents, istiod_patched_its_webhooks};
use support::{
    LocalIstiod, OperatorProcess, SecondPlane, TestCluster, eventually, repo_root, smm, unique_name,
};

/// Argo CD's processes, stopped (with its namespace and CRDs) when dropped.
struct ArgoCd {
    dir: String,
}

impl ArgoCd {
    fn start() -> Self {
        let output = Command::new(repo_root().join("scripts/argocd/argocd.sh"))
            .arg("start")
            .output()
            .expect("scripts/argocd/argocd.sh runs");
        assert!(
            output.status.success(),
            "argocd.sh start failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let dir = stdout
            .lines()
            .find_map(|line| line.strip_prefix("ARGOCD_DIR="))
            .expect("argocd.sh prints ARGOCD_DIR")
            .to_owned();
        Self { dir }
    }

    /// The tail of a component's log, for failure messages.
    fn log(&self, component: &str) -> String {
        let text = std::fs::read_to_string(Path::new(&self.dir).join(format!("{component}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ArgoCd {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/argocd/argocd.sh"))
            .arg("stop")
            .output();
    }
}

/// A local git repository laid out as the project's (deploy/ with the operator's kustomize base
/// and Helm chart), plus `mesh/controlplane.yaml`; Argo CD reads it by `file://` URL.
struct GitRepo {
    dir: tempfile::TempDir,
}

impl GitRepo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = Self { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        let copied = Command::new("cp")
            .args(["-R", "--no-preserve=ownership"])
            .arg(repo_root().join("deploy"))
            .arg(repo.dir.path())
            .status()
            .unwrap();
        assert!(copied.success());
        repo
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    fn git(&self, args: &[&str]) {
        let output = Command::new("git")
            .args(["-c", "user.name=e2e", "-c", "user.email=e2e@smm.invalid"])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("git runs");
        assert!(output.status.success(), "git {args:?}: {output:?}");
    }

    /// Writes `relative` and commits everything.
    fn commit(&self, relative: &str, text: &str, message: &str) {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
    }
}

fn applications(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
    Api::namespaced_with(
        client.clone(),
        "argocd",
        &ApiResource::from_gvk_with_plural(&gvk, "applications"),
    )
}

/// deploy/argocd/application.yaml, as a user adapts it: their repository, a name and path, and
/// `source` fields for a Helm chart.
fn application(repo: &GitRepo, name: &str, path: &str, source: Value) -> Value {
    let text = std::fs::read_to_string(repo_root().join("deploy/argocd/application.yaml")).unwrap();
    let mut app: Value = serde_yaml_ng::from_str(&text).unwrap();
    app["metadata"]["name"] = json!(name);
    app["spec"]["source"]["repoURL"] = json!(repo.url());
    app["spec"]["source"]["path"] = json!(path);
    for (key, value) in source.as_object().into_iter().flatten() {
        app["spec"]["source"][key] = value.clone();
    }
    app
}

async fn create_application(client: &Client, app: Value) {
    let name = app["metadata"]["name"].as_str().unwrap().to_owned();
    applications(client)
        .patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&app),
        )
        .await
        .unwrap_or_else(|err| panic!("creating Application {name}: {err}"));
}

/// Asks Argo CD to look at the repository again now, rather than at its next poll (minutes).
async fn refresh(client: &Client, name: &str) {
    let patch = json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}});
    applications(client)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Waits until `done` holds of the Application's status, refreshing it every few seconds;
/// panics with the status and the controller's log otherwise.
async fn wait_for(
    client: &Client,
    argocd: &ArgoCd,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_refresh = Instant::now();
    loop {
        let status = applications(client)
            .get_opt(name)
            .await
            .unwrap()
            .map(|app| app.data["status"].clone())
            .unwrap_or(Value::Null);
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "Application {name}: not {what} in 120 s; status:\n{}\ncontroller:\n{}\nrepo server:\n{}",
            serde_json::to_string_pretty(&status).unwrap(),
            argocd.log("application-controller"),
            argocd.log("repo-server")
        );
        if last_refresh.elapsed() > Duration::from_secs(5) {
            refresh(client, name).await;
            last_refresh = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn synced_and_healthy(status: &Value) -> bool {
    status["sync"]["status"] == "Synced" && status["health"]["status"] == "Healthy"
}

/// The health Argo CD gives the ControlPlane `name`, through the Lua: status and message.
fn control_plane_health(status: &Value, name: &str) -> Option<(String, String)> {
    let resource = status["resources"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == "ControlPlane" && r["name"] == name)?;
    Some((
        resource["health"]["status"].as_str()?.to_owned(),
        resource["health"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ))
}

/// A ControlPlane's components with only prometheus, which installs in a moment on the local
/// plane, configured by `prometheus`.
fn prometheus_only(prometheus: Value) -> Value {
    json!({
        "base": {"enabled": false}, "istiod": {"enabled": false},
        "ingress-gateway": {"enabled": false}, "prometheus": prometheus,
    })
}

fn control_plane_yaml(name: &str, mesh_namespace: &str, prometheus: Value) -> String {
    serde_yaml_ng::to_string(&json!({
        "apiVersion": "smm.dev/v1alpha1", "kind": "ControlPlane",
        "metadata": {"name": name},
        "spec": {"namespace": mesh_namespace, "components": prometheus_only(prometheus)},
    }))
    .unwrap()
}

/// The names of the operator's pods in the plane of `client`.
async fn operator_pods(client: &Client) -> Vec<String> {
    let pods = Api::<Pod>::namespaced(client.clone(), "smm-system")
        .list(&ListParams::default().labels("app.kubernetes.io/name=smm-operator"))
        .await
        .unwrap();
    let mut names: Vec<String> = pods.iter().map(ResourceExt::name_any).collect();
    names.sort();
    names
}

/// Deletes an Application and, through Argo CD's finalizer, what it made, and waits until it
/// is gone.
async fn delete_with_resources(client: &Client, name: &str) {
    let api = applications(client);
    let finalizer = json!({"metadata": {"finalizers": ["resources-finalizer.argocd.argoproj.io"]}});
    if api
        .patch(name, &PatchParams::default(), &Patch::Merge(&finalizer))
        .await
        .is_err()
    {
        return;
    }
    let _ = api.delete(name, &DeleteParams::default()).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while api.get_opt(name).await.unwrap().is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Without the operator: Argo CD syncs `--dump-resources` output of base and istiod through
/// deploy/argocd/mesh-from-dump-application.yaml; once a real istiod has patched its webhooks
/// (their CA, the validators' failure policy), the Application is still Synced and Argo CD
/// synced nothing again (it heals itself, so a diff would show as another sync).
async fn a_dumped_mesh_stays_synced_after_istiod_patched_its_webhooks(
    cluster: &TestCluster,
    argocd: &ArgoCd,
    repo: &GitRepo,
) {
    let client = &cluster.client;
    let namespace = unique_name("gitops-dump");
    let spec = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        spec.path(),
        serde_yaml_ng::to_string(&json!({
            "apiVersion": "smm.dev/v1alpha1", "kind": "ControlPlane",
            "metadata": {"name": unique_name("gitops-dump")},
            "spec": {"namespace": namespace, "components": {
                "base": {"enabled": true}, "istiod": {"enabled": true},
                "ingress-gateway": {"enabled": false}, "prometheus": {"enabled": false},
            }},
        }))
        .unwrap(),
    )
    .unwrap();
    let dump = smm(&[
        "reconcile",
        "-f",
        spec.path().to_str().unwrap(),
        "--dump-resources",
    ]);
    assert!(dump.status.success(), "{dump:?}");
    let dump = String::from_utf8(dump.stdout).unwrap();
    repo.commit("dumped/mesh.yaml", &dump, "a mesh as smm dumps it");
    let text =
        std::fs::read_to_string(repo_root().join("deploy/argocd/mesh-from-dump-application.yaml"))
            .unwrap();
    let mut app: Value = serde_yaml_ng::from_str(&text).unwrap();
    app["metadata"]["name"] = json!("dumped-mesh");
    app["spec"]["source"]["repoURL"] = json!(repo.url());
    app["spec"]["source"]["path"] = json!("dumped");
    create_application(client, app).await;
    // Synced is enough: istiod's autoscaler is Degraded without a metrics API.
    let synced = wait_for(client, argocd, "dumped-mesh", "synced", |s| {
        s["sync"]["status"] == "Synced" && s["operationState"]["phase"] == "Succeeded"
    })
    .await;
    let first_sync = synced["operationState"]["startedAt"].clone();

    let istiod = LocalIstiod::start(&namespace, "");
    let dumped = documents(&dump);
    let mut patched = false;
    for _ in 0..120 {
        patched = istiod_patched_its_webhooks(cluster, &dumped, &namespace).await;
        if patched {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        patched,
        "istiod did not patch its webhooks:
{}",
        istiod.log()
    );
    // A comparison made after istiod's patch (reconciledAt counts whole seconds).
    let before =
        applications(client).get("dumped-mesh").await.unwrap().data["status"]["reconciledAt"]
            .clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    refresh(client, "dumped-mesh").await;
    let after = wait_for(client, argocd, "dumped-mesh", "compared again", |s| {
        s["reconciledAt"] != before && s["sync"]["status"] != Value::Null
    })
    .await;
    let out_of_sync: Vec<&Value> = after["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] != "Synced")
        .collect();
    assert!(
        out_of_sync.is_empty() && after["sync"]["status"] == "Synced",
        "istiod's patches show as a diff: {out_of_sync:?}"
    );
    assert_eq!(
        after["operationState"]["startedAt"], first_sync,
        "Argo CD synced again after istiod's patches"
    );
    delete_with_resources(client, "dumped-mesh").await;
    drop(istiod);
}

/// The whole flow: the operator from the kustomize base, then from the Helm chart without its
/// pod rolling; a ControlPlane Progressing until the operator runs, then Healthy; a bad commit
/// Degraded with the failing component's message; the revert Healthy again; nothing OutOfSync.
#[tokio::test]
async fn argo_cd_syncs_the_operator_and_a_control_plane_and_judges_its_health() {
    let cluster = TestCluster::connect().await;
    let client = &cluster.client;
    let argocd = ArgoCd::start();
    let repo = GitRepo::new();
    let name = unique_name("gitops");
    let mesh_namespace = unique_name("gitops-mesh");
    let manifest = "mesh/controlplane.yaml";
    let good = control_plane_yaml(&name, &mesh_namespace, json!({"enabled": true}));
    repo.commit(manifest, &good, "the operator and a mesh");

    // The operator from the kustomize base, as deploy/argocd/application.yaml has it.
    create_application(
        client,
        application(&repo, "smm-operator", "deploy/operator", json!({})),
    )
    .await;
    wait_for(
        client,
        &argocd,
        "smm-operator",
        "Synced and Healthy",
        synced_and_healthy,
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), "smm-system");
    let kustomized = deployments.get("smm-operator").await.unwrap();
    let pods_before = operator_pods(client).await;
    assert_eq!(pods_before.len(), 1, "{pods_before:?}");

    // Then from the Helm chart: the first Application let go without pruning (no finalizer),
    // the chart's release takes the same objects over. The pod template is the same, so the
    // Deployment is not rolled.
    applications(client)
        .delete("smm-operator", &DeleteParams::default())
        .await
        .unwrap();
    create_application(
        client,
        application(
            &repo,
            "smm-operator-helm",
            "deploy/helm/smm-operator",
            json!({"helm": {"releaseName": "smm-operator"}}),
        ),
    )
    .await;
    wait_for(
        client,
        &argocd,
        "smm-operator-helm",
        "Synced and Healthy",
        synced_and_healthy,
    )
    .await;
    let charted = deployments.get("smm-operator").await.unwrap();
    assert_eq!(
        charted.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "Helm",
        "the chart took the Deployment over"
    );
    assert_eq!(
        charted.spec.as_ref().unwrap().template,
        kustomized.spec.as_ref().unwrap().template,
        "switching packagings changed the pod template"
    );
    // The Deployment's rollout revision and its pod stay: no new ReplicaSet was made.
    let revision = |deployment: &Deployment| {
        deployment
            .annotations()
            .get("deployment.kubernetes.io/revision")
            .cloned()
    };
    assert_eq!(
        revision(&charted),
        revision(&kustomized),
        "switching packagings rolled the operator"
    );
    assert_eq!(
        operator_pods(client).await,
        pods_before,
        "switching packagings replaced the operator's pod"
    );

    // The ControlPlane, before any operator runs: Progressing, waiting for it.
    create_application(client, application(&repo, "mesh", "mesh", json!({}))).await;
    // (Missing until the first sync has created it.)
    let waiting = wait_for(client, &argocd, "mesh", "showing the ControlPlane", |s| {
        control_plane_health(s, &name).is_some_and(|(health, _)| health != "Missing")
    })
    .await;
    let (health, message) = control_plane_health(&waiting, &name).unwrap();
    assert_eq!(health, "Progressing", "{message}");
    assert!(
        message.contains("Waiting for the smm operator"),
        "{message}"
    );

    // The operator as a local process with its own ServiceAccount's token (the RBAC Argo CD
    // just synced from the chart): the ControlPlane turns Healthy.
    let operator = OperatorProcess::start("gitops-test", "smm-system");
    let healthy = wait_for(client, &argocd, "mesh", "Healthy", |s| {
        control_plane_health(s, &name).is_some_and(|(health, _)| health == "Healthy")
    })
    .await;
    assert_eq!(healthy["sync"]["status"], "Synced", "{healthy}");

    // A bad commit: a nodeSelector key Kubernetes refuses. helm's upgrade fails, and Argo CD
    // shows the ControlPlane Degraded with the component's message.
    let bad = control_plane_yaml(
        &name,
        &mesh_namespace,
        json!({"enabled": true, "valuesOverride": {"nodeSelector": {"not a valid key!": "x"}}}),
    );
    repo.commit(manifest, &bad, "prometheus on nodes that cannot exist");
    refresh(client, "mesh").await;
    let degraded = wait_for(client, &argocd, "mesh", "Degraded", |s| {
        control_plane_health(s, &name).is_some_and(|(health, _)| health == "Degraded")
    })
    .await;
    let (_, message) = control_plane_health(&degraded, &name).unwrap();
    assert!(message.contains("prometheus"), "{message}");

    // The revert: Healthy again, everything Synced (no permanent diff on any object).
    repo.git(&["revert", "--no-edit", "HEAD"]);
    refresh(client, "mesh").await;
    wait_for(client, &argocd, "mesh", "Healthy again", |s| {
        control_plane_health(s, &name).is_some_and(|(health, _)| health == "Healthy")
    })
    .await;
    for app in ["mesh", "smm-operator-helm"] {
        refresh(client, app).await;
        wait_for(client, &argocd, app, "Synced", |s| {
            s["sync"]["status"] == "Synced"
        })
        .await;
    }

    // Cleanup through Argo CD: the ControlPlane first, while the operator runs to remove its
    // components, then the operator's objects.
    delete_with_resources(client, "mesh").await;
    drop(operator);
    delete_with_resources(client, "smm-operator-helm").await;
    let uninstalled = smm(&["operator", "uninstall", "--namespace", "smm-system"]);
    assert!(uninstalled.status.success(), "{uninstalled:?}");
    a_dumped_mesh_stays_synced_after_istiod_patched_its_webhooks(&cluster, &argocd, &repo).await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&mesh_namespace, &DeleteParams::default())
        .await;
    the_fleet_application_set_installs_a_control_plane_in_each_plane(&cluster, &argocd, &repo)
        .await;
}

fn application_sets(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "ApplicationSet");
    Api::namespaced_with(
        client.clone(),
        "argocd",
        &ApiResource::from_gvk_with_plural(&gvk, "applicationsets"),
    )
}

/// Registers a cluster with Argo CD, as `argocd cluster add` would: a Secret in Argo CD's
/// namespace labelled as a cluster, with its name, server and connection `config`, plus the
/// labels and annotations the fleet ApplicationSet reads.
async fn register_cluster(
    client: &Client,
    name: &str,
    server: &str,
    config: Value,
    labels: Value,
    annotations: Value,
) {
    let mut labels = labels;
    labels["argocd.argoproj.io/secret-type"] = json!("cluster");
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("cluster-{name}"), "namespace": "argocd",
                     "labels": labels, "annotations": annotations},
        "stringData": {"name": name, "server": server, "config": config.to_string()},
    });
    Api::<Secret>::namespaced(client.clone(), "argocd")
        .patch(
            &format!("cluster-{name}"),
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap_or_else(|err| panic!("registering cluster {name}: {err}"));
}

/// A plane's API server address and admin credentials from its kubeconfig, as an Argo CD
/// cluster Secret's server and config.
fn cluster_connection(kubeconfig: &Path) -> (String, Value) {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let kubeconfig: Value = serde_yaml_ng::from_str(&text).unwrap();
    let cluster = &kubeconfig["clusters"][0]["cluster"];
    let user = &kubeconfig["users"][0]["user"];
    let config = json!({"tlsClientConfig": {
        "caData": cluster["certificate-authority-data"],
        "certData": user["client-certificate-data"],
        "keyData": user["client-key-data"],
    }});
    (cluster["server"].as_str().unwrap().to_owned(), config)
}

/// The ControlPlane named `name` in the plane of `client`, if there is one.
async fn control_plane_in(client: &Client, name: &str) -> Option<ControlPlane> {
    Api::<ControlPlane>::all(client.clone())
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

/// deploy/argocd/fleet-applicationset.yaml with the real applicationset controller over two
/// planes: this test's (registered as the in-cluster destination, on its own network) and a
/// second plane it starts (a remote served by the first), plus a cluster Secret of another
/// mesh. The controller generates exactly one Application per plane of the mesh, with that
/// plane as destination and its values; the application controller syncs them, and each plane
/// gets the operator and a ControlPlane with its own spec.multiCluster; with the operator
/// running, the in-cluster one turns Healthy. Deleting the ApplicationSet removes everything
/// through Argo CD's finalizer, the ControlPlane's components uninstalled by the operator.
async fn the_fleet_application_set_installs_a_control_plane_in_each_plane(
    cluster: &TestCluster,
    argocd: &ArgoCd,
    repo: &GitRepo,
) {
    let client = &cluster.client;
    let text = std::fs::read_to_string(repo_root().join("deploy/argocd/fleet-applicationset.yaml"))
        .unwrap();
    let mut application_set: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mesh = application_set["spec"]["generators"][0]["clusters"]["selector"]["matchLabels"]
        ["smm.dev/mesh"]
        .as_str()
        .unwrap()
        .to_owned();
    for source in application_set["spec"]["template"]["spec"]["sources"]
        .as_array_mut()
        .unwrap()
    {
        source["repoURL"] = json!(repo.url());
    }
    // Values every cluster's ControlPlane shares, as a user adds them: a mesh namespace of the
    // test's, and only prometheus, so that the operator reconciles it in a moment.
    let mesh_namespace = unique_name("gitops-fleet");
    let values =
        &mut application_set["spec"]["template"]["spec"]["sources"][1]["helm"]["valuesObject"];
    values["namespace"] = json!(mesh_namespace);
    values["components"] = prometheus_only(json!({"enabled": true}));

    let second = SecondPlane::start();
    let (second_server, second_config) = cluster_connection(&second.kubeconfig);
    // The in-cluster destination gets a Secret of its own to carry labels (a generator with a
    // selector leaves out the in-cluster destination otherwise); with no credentials in it,
    // Argo CD connects as it does in-cluster (here: KUBECONFIG, ARGOCD_FAKE_IN_CLUSTER).
    register_cluster(
        client,
        "in-cluster",
        "https://kubernetes.default.svc",
        json!({"tlsClientConfig": {"insecure": false}}),
        json!({"smm.dev/mesh": mesh, "smm.dev/network": "net-a"}),
        json!({}),
    )
    .await;
    register_cluster(
        client,
        "plane-b",
        &second_server,
        second_config.clone(),
        json!({"smm.dev/mesh": mesh, "smm.dev/primary": "in-cluster"}),
        json!({"smm.dev/primary-address": "198.51.100.10"}),
    )
    .await;
    register_cluster(
        client,
        "other-mesh",
        &second_server,
        second_config,
        json!({"smm.dev/mesh": "another-mesh"}),
        json!({}),
    )
    .await;

    let name = application_set["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    application_sets(client)
        .patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&application_set),
        )
        .await
        .unwrap();

    // (Application, server, the ControlPlane's spec.multiCluster)
    let expected = [
        (
            "smm-in-cluster",
            "https://kubernetes.default.svc".to_owned(),
            MultiCluster {
                mesh_id: Some(mesh.clone()),
                cluster_name: "in-cluster".to_owned(),
                network: Some("net-a".to_owned()),
                primary: None,
            },
        ),
        (
            "smm-plane-b",
            second_server.clone(),
            MultiCluster {
                mesh_id: Some(mesh.clone()),
                cluster_name: "plane-b".to_owned(),
                network: None,
                primary: Some(PrimaryCluster {
                    cluster_name: "in-cluster".to_owned(),
                    address: "198.51.100.10".to_owned(),
                }),
            },
        ),
    ];
    let generated = |apps: &[DynamicObject]| {
        let mut names: Vec<String> = apps.iter().map(ResourceExt::name_any).collect();
        names.sort();
        names
    };
    let mut apps = Vec::new();
    let listed = eventually(Duration::from_secs(60), async || {
        apps = applications(client)
            .list(&ListParams::default().labels(&format!("smm.dev/mesh={mesh}")))
            .await
            .unwrap()
            .items;
        apps.len() >= expected.len()
    })
    .await;
    assert!(
        listed,
        "the applicationset controller generated {:?}; its log:\n{}",
        generated(&apps),
        argocd.log("applicationset-controller")
    );
    assert_eq!(
        generated(&apps),
        expected
            .iter()
            .map(|(app, ..)| app.to_owned())
            .collect::<Vec<_>>(),
        "one Application per plane of the mesh, none for the other mesh's cluster"
    );

    let second_client = second.client().await;
    for (app, server, multi_cluster) in &expected {
        let generated = apps.iter().find(|a| a.name_any() == *app).unwrap();
        assert_eq!(
            generated.data["spec"]["destination"]["server"],
            json!(server),
            "{app}"
        );
        let synced = wait_for(client, argocd, app, "synced", |s| {
            s["sync"]["status"] == "Synced" && s["operationState"]["phase"] == "Succeeded"
        })
        .await;
        // Progressing at best: the operator's pod is kwok's, so nothing reconciles.
        assert_ne!(synced["health"]["status"], "Degraded", "{app}: {synced}");
        let plane = if server.as_str() == "https://kubernetes.default.svc" {
            client
        } else {
            &second_client
        };
        let control_plane = control_plane_in(plane, "smm")
            .await
            .unwrap_or_else(|| panic!("{app}: no ControlPlane smm in its plane"));
        assert_eq!(
            control_plane.spec.multi_cluster.as_ref(),
            Some(multi_cluster),
            "{app}"
        );
        assert!(
            !operator_pods(plane).await.is_empty(),
            "{app}: no operator pod in its plane"
        );
    }

    // The operator as a local process with the ServiceAccount and RBAC the in-cluster
    // Application synced: its ControlPlane, and so the Application, turn Healthy.
    // The first operator process was killed holding the leader lease: without it gone, this
    // one would wait out the lease's 30 s.
    let _ = Api::<Lease>::namespaced(client.clone(), "smm-system")
        .delete(LEADER_LEASE, &DeleteParams::default())
        .await;
    let operator = OperatorProcess::start("gitops-fleet", "smm-system");
    wait_for(client, argocd, "smm-in-cluster", "Healthy", |s| {
        s["health"]["status"] == "Healthy"
    })
    .await;
    let prometheus = Api::<Deployment>::namespaced(client.clone(), &mesh_namespace);
    assert!(prometheus.get_opt("prometheus").await.unwrap().is_some());

    // Deleting the ApplicationSet deletes its Applications, and their finalizer what they made:
    // the ControlPlane (wave 1) first, while the operator's RBAC (wave 0) still lets the
    // operator uninstall its components and drop its finalizer, then the operator's objects.
    // With the ControlPlane in wave 0 too (tried), its ServiceAccount went with it, the
    // operator's token was refused, and the ControlPlane and the Application stayed.
    application_sets(client)
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let removed = eventually(Duration::from_secs(120), async || {
        applications(client)
            .list(&ListParams::default().labels(&format!("smm.dev/mesh={mesh}")))
            .await
            .unwrap()
            .items
            .is_empty()
    })
    .await;
    assert!(
        removed,
        "the fleet's Applications are still there; controller:\n{}",
        argocd.log("application-controller")
    );
    assert!(
        control_plane_in(client, "smm").await.is_none(),
        "the in-cluster ControlPlane outlived its Application"
    );
    assert!(
        prometheus.get_opt("prometheus").await.unwrap().is_none(),
        "the operator did not uninstall the in-cluster ControlPlane's prometheus"
    );
    drop(operator);
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&mesh_namespace, &DeleteParams::default())
        .await;
    for name in ["in-cluster", "plane-b", "other-mesh"] {
        let _ = Api::<Secret>::namespaced(client.clone(), "argocd")
            .delete(&format!("cluster-{name}"), &DeleteParams::default())
            .await;
    }
    let uninstalled = smm(&["operator", "uninstall", "--namespace", "smm-system"]);
    assert!(uninstalled.status.success(), "{uninstalled:?}");
    drop(second);
}
