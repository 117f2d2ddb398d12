//! The reconcile engine against the real API server and real helm.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use smm::api::{ComponentPhase, ControlPlane, condition};
use smm::engine::decide::Operation;
use smm::engine::report::{Outcome, ReconcileReport};
use smm::engine::session::{Request, Session};
use smm::engine::{Engine, EngineError, EngineSettings, Scope, WaitPolicy};
use smm::helm::Helm;
use smm::mesh::catalog::{Catalog, Component};

use crate::support::{HelmTool, TestCluster, ensure_control_plane_crd, eventually, unique_name};

/// A ControlPlane of the test's own, whose mesh namespace is unique too, so tests run in parallel.
struct TestControlPlane {
    name: String,
    namespace: String,
    api: Api<ControlPlane>,
}

impl TestControlPlane {
    async fn create(cluster: &TestCluster, spec: serde_json::Value) -> Self {
        ensure_control_plane_crd(&cluster.client).await;
        let name = unique_name("e2e-cp");
        let namespace = unique_name("e2e-mesh");
        let control_plane = Self {
            name,
            namespace,
            api: Api::all(cluster.client.clone()),
        };
        control_plane.apply(spec).await;
        control_plane
    }

    /// The engine's reconcile of this ControlPlane as stored, given every other one, as a
    /// session runs it (without the lease).
    async fn reconciled_by(&self, engine: &Engine) -> Result<ReconcileReport, EngineError> {
        // Listed as sessions list them, one by one: another test's ControlPlane that cannot be
        // decoded is left out instead of failing the list.
        let client = self.api.clone().into_client();
        let (this, others): (Vec<_>, Vec<_>) = smm::cluster::control_plane::list(&client)
            .await
            .unwrap()
            .into_iter()
            .partition(|cp| cp.name_any() == self.name);
        let resolved = engine.resolve_stored(&this[0], &others).await?;
        engine.reconcile(&this[0], &resolved, &Scope::All).await
    }

    /// The engine's removal of everything this ControlPlane installed.
    async fn removed_by(&self, engine: &Engine) -> Result<ReconcileReport, EngineError> {
        engine
            .remove_all(&self.api.get(&self.name).await.unwrap())
            .await
    }

    /// Stores the spec as the user's intent, with `namespace` set to the test's own.
    async fn apply(&self, mut spec: serde_json::Value) {
        spec["namespace"] = json!(self.namespace);
        let object = json!({
            "apiVersion": "smm.dev/v1alpha1",
            "kind": "ControlPlane",
            "metadata": {"name": self.name},
            "spec": spec,
        });
        self.api
            .patch(
                &self.name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&object),
            )
            .await
            .unwrap();
    }

    async fn get(&self) -> ControlPlane {
        self.api.get(&self.name).await.unwrap()
    }

    async fn delete(&self, cluster: &TestCluster) {
        let _ = self.api.delete(&self.name, &DeleteParams::default()).await;
        let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
        let _ = namespaces
            .delete(&self.namespace, &DeleteParams::default())
            .await;
    }
}

fn test_settings() -> EngineSettings {
    EngineSettings {
        wait: WaitPolicy::Until(Duration::from_secs(60)),
        round_delay: Duration::from_millis(500),
        ..EngineSettings::default()
    }
}

fn engine(cluster: &TestCluster, helm: &Helm, catalog: Catalog) -> Engine {
    Engine::new(
        cluster.client.clone(),
        helm.clone(),
        std::sync::Arc::new(catalog),
        test_settings(),
    )
}

fn action_of(report: &ReconcileReport, component: &str) -> (Operation, String) {
    let found = report
        .components
        .iter()
        .find(|c| c.name == component)
        .unwrap_or_else(|| panic!("no report for {component}: {report:?}"));
    (found.action, found.reason.clone())
}

fn assert_all_done(report: &ReconcileReport) {
    assert!(report.ready, "not ready: {report:#?}");
    for component in &report.components {
        assert_eq!(component.outcome, Outcome::Done, "{component:?}");
    }
}

/// The acceptance flow of the engine: install, no-op, values change, disable, re-enable.
#[tokio::test]
async fn mesh_components_install_idle_upgrade_uninstall_and_return() {
    let cluster = TestCluster::connect().await;
    let _lock = crate::support::istio_mesh_lock().await;
    let helm = cluster.helm(HelmTool::Helm4);
    let engine = engine(&cluster, &helm, Catalog::builtin().unwrap());
    // The ingress gateway stays off: its pods get their proxy from istiod's injection webhook,
    // so they run only beside a running istiod (tests/e2e/istio.rs and the CLI flow cover that);
    // this test is about the engine's flow.
    // Every spec this test stores keeps it off (a stored spec replaces the previous one).
    let no_gateway = |mut spec: serde_json::Value| {
        let components = spec["components"].as_object().cloned().unwrap_or_default();
        let mut components = serde_json::Value::Object(components);
        if components.get("ingress-gateway").is_none() {
            components["ingress-gateway"] = json!({"enabled": false});
        }
        spec["components"] = components;
        spec
    };
    let cp = TestControlPlane::create(&cluster, no_gateway(json!({}))).await;
    let ns = cp.namespace.clone();

    // Install: CRDs, RBAC and every default chart; one helm process per component.
    let defaults = engine
        .catalog()
        .components()
        .iter()
        .filter(|c| c.enabled_by_default && c.name != "ingress-gateway")
        .count() as u64;
    let report = cp.reconciled_by(&engine).await.unwrap();
    assert_all_done(&report);
    assert_eq!(action_of(&report, "base").0, Operation::Install);
    assert_eq!(action_of(&report, "istiod").0, Operation::Install);
    assert_eq!(helm.processes_spawned(), defaults);
    let installed = cp.get().await;
    let status = installed.status.clone().unwrap();
    assert_eq!(status.observed_generation, installed.metadata.generation);
    assert!(status.is_true(condition::READY));
    assert!(status.condition(condition::RECONCILING).is_none());
    let known = engine.catalog().components().len();
    assert_eq!(
        status.reconciled_components,
        Some(format!("{known}/{known}"))
    );
    let istiod = &status.components["istiod"];
    assert_eq!(istiod.phase, ComponentPhase::Available);
    assert_eq!(istiod.release.as_ref().unwrap().revision, Some(1));
    assert!(
        istiod
            .values_digest
            .as_deref()
            .unwrap()
            .starts_with("sha256:")
    );

    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let deployment = deployments.get("istiod").await.unwrap();
    let image = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    let tag = crate::support::istiod_tag();
    assert_eq!(image, Some(format!("docker.io/istio/pilot:{tag}")));
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    crds.get("virtualservices.networking.istio.io")
        .await
        .unwrap();
    let roles: Api<ClusterRole> = Api::all(cluster.client.clone());
    // istiod's cluster role comes with Istio's chart.
    roles
        .get(&format!("istiod-clusterrole-{ns}"))
        .await
        .unwrap();

    // No-op: zero helm processes, and the status is not even rewritten.
    let report = cp.reconciled_by(&engine).await.unwrap();
    assert_all_done(&report);
    assert!(
        report
            .components
            .iter()
            .all(|c| c.action == Operation::Nothing),
        "{report:?}"
    );
    assert_eq!(helm.processes_spawned(), defaults);
    let idle = cp.get().await;
    assert_eq!(idle.status, installed.status);
    assert_eq!(idle.resource_version(), installed.resource_version());

    // A deleted native object (Prometheus's cluster role) is put back without helm.
    roles
        .delete(&format!("prometheus-{ns}"), &DeleteParams::default())
        .await
        .unwrap();
    cp.reconciled_by(&engine).await.unwrap();
    let role = format!("prometheus-{ns}");
    let restored = roles.get(&role).await.unwrap();
    assert_eq!(helm.processes_spawned(), defaults);

    // A native object edited by hand (another field manager empties its rules) is put back,
    // then left alone. Managed fields record times to the second: the edit comes a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let by_hand = PatchParams {
        field_manager: Some("kubectl-edit".to_owned()),
        ..PatchParams::default()
    };
    roles
        .patch(&role, &by_hand, &Patch::Merge(json!({"rules": []})))
        .await
        .unwrap();
    cp.reconciled_by(&engine).await.unwrap();
    let put_back = roles.get(&role).await.unwrap();
    assert_eq!(put_back.rules, restored.rules);
    cp.reconciled_by(&engine).await.unwrap();
    let after = roles.get(&role).await.unwrap();
    assert_eq!(after.resource_version(), put_back.resource_version());
    assert_eq!(helm.processes_spawned(), defaults);

    // A values change upgrades only that component.
    // Istio's chart sizes istiod by its autoscaler unless that is off.
    let two_replicas = json!({"autoscaleEnabled": false, "replicaCount": 2});
    cp.apply(no_gateway(
        json!({"components": {"istiod": {"valuesOverride": two_replicas}}}),
    ))
    .await;
    let report = cp.reconciled_by(&engine).await.unwrap();
    assert_all_done(&report);
    assert_eq!(
        action_of(&report, "istiod"),
        (Operation::Upgrade, "values changed".to_owned())
    );
    assert_eq!(action_of(&report, "base").0, Operation::Nothing);
    assert_eq!(helm.processes_spawned(), defaults + 1);
    let status = cp.get().await.status.unwrap();
    assert_eq!(
        status.components["istiod"]
            .release
            .as_ref()
            .unwrap()
            .revision,
        Some(2)
    );
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(cluster.client.clone(), &ns);
    pdbs.get("istiod").await.unwrap();

    // Disable: the release, its objects and its RBAC (from Istio's chart) go; base stays.
    // What depends on istiod must go with it.
    let istiod_and_dependents: serde_json::Map<_, _> = engine
        .catalog()
        .dependents_of("istiod")
        .into_iter()
        .chain(["istiod"])
        .map(|name| (name.to_owned(), json!({"enabled": false})))
        .collect();
    cp.apply(no_gateway(json!({ "components": istiod_and_dependents })))
        .await;
    let report = cp.reconciled_by(&engine).await.unwrap();
    assert_all_done(&report);
    assert_eq!(
        action_of(&report, "istiod"),
        (Operation::Uninstall, "disabled".to_owned())
    );
    assert!(deployments.get_opt("istiod").await.unwrap().is_none());
    assert!(
        roles
            .get_opt(&format!("istiod-clusterrole-{ns}"))
            .await
            .unwrap()
            .is_none()
    );
    let status = cp.get().await.status.unwrap();
    assert_eq!(status.components["istiod"].phase, ComponentPhase::Removed);
    assert_eq!(status.components["istiod"].values_digest, None);
    assert_eq!(status.components["base"].phase, ComponentPhase::Available);

    // Re-enable.
    cp.apply(no_gateway(json!({}))).await;
    let report = cp.reconciled_by(&engine).await.unwrap();
    assert_all_done(&report);
    assert_eq!(
        action_of(&report, "istiod"),
        (Operation::Install, "release missing".to_owned())
    );
    deployments.get("istiod").await.unwrap();

    // Leave no cluster-scoped objects behind.
    let everything_off: serde_json::Map<_, _> = engine
        .catalog()
        .names()
        .into_iter()
        .map(|name| (name.to_owned(), json!({"enabled": false})))
        .collect();
    cp.apply(json!({ "components": everything_off })).await;
    let report = cp.reconciled_by(&engine).await.unwrap();
    assert_all_done(&report);
    for role in [
        format!("istio-reader-clusterrole-{ns}"),
        format!("prometheus-{ns}"),
    ] {
        assert!(roles.get_opt(&role).await.unwrap().is_none(), "{role}");
    }
    cp.delete(&cluster).await;
}

/// A component backed by a test chart, so the chart itself can change between reconciles.
fn tiny_catalog(chart: &'static include_dir::Dir<'static>) -> Catalog {
    Catalog::new(vec![tiny_component("tiny", chart)]).unwrap()
}

/// A component made of the tiny test chart, released under its own name.
fn tiny_component(name: &'static str, chart: &'static include_dir::Dir<'static>) -> Component {
    crate::tiny_component::tiny_component(name, chart, "greeting: from-the-values-layer\n")
}

static TINY: include_dir::Dir<'static> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/tests/fixtures/charts/tiny");
static TINY_V2: include_dir::Dir<'static> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/tests/fixtures/charts/tiny-v2");

async fn changed_chart_is_upgraded(tool: HelmTool) {
    let cluster = TestCluster::connect().await;
    let helm = cluster.helm(tool);
    let cp = TestControlPlane::create(&cluster, json!({})).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &cp.namespace);

    let v1 = engine(&cluster, &helm, tiny_catalog(&TINY));
    let report = cp.reconciled_by(&v1).await.unwrap();
    assert_all_done(&report);
    let data = config_maps
        .get("tiny-settings")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(data["greeting"], "from-the-values-layer");
    assert!(!data.contains_key("revision"));

    let v2 = engine(&cluster, &helm, tiny_catalog(&TINY_V2));
    let report = cp.reconciled_by(&v2).await.unwrap();
    assert_all_done(&report);
    assert_eq!(
        action_of(&report, "tiny"),
        (Operation::Upgrade, "chart digest changed".to_owned())
    );
    let data = config_maps
        .get("tiny-settings")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(data["revision"], "v2");
    assert_eq!(helm.processes_spawned(), 2);
    cp.delete(&cluster).await;
}

#[tokio::test]
async fn a_changed_chart_is_upgraded_with_helm4() {
    changed_chart_is_upgraded(HelmTool::Helm4).await;
}

#[tokio::test]
async fn a_changed_chart_is_upgraded_with_helm3() {
    changed_chart_is_upgraded(HelmTool::Helm3).await;
}

/// The reconcile recovered `tiny`'s release stuck in `state`, and one revision is deployed.
async fn assert_recovered(report: &ReconcileReport, secrets: &Api<Secret>, state: &str) {
    assert_all_done(report);
    assert_eq!(
        action_of(report, "tiny"),
        (Operation::Recover, format!("release stuck in {state}"))
    );
    let deployed = secrets
        .list(&ListParams::default().labels("owner=helm,name=tiny,status=deployed"))
        .await
        .unwrap();
    assert_eq!(deployed.items.len(), 1, "{deployed:?}");
}

/// Runs helm with `args` on the release `tiny` in `namespace` and kills it once its record says
/// `status`: an operation interrupted where it waits (for a hook that cannot run).
async fn interrupt_helm(
    cluster: &TestCluster,
    namespace: &str,
    args: &[std::ffi::OsString],
    status: &str,
) {
    let mut helm = std::process::Command::new(HelmTool::Helm4.path())
        .args(args)
        .args(["--namespace", namespace])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), namespace);
    let selector = format!("owner=helm,name=tiny,status={status}");
    let reached = eventually(Duration::from_secs(60), || async {
        secrets
            .list(&ListParams::default().labels(&selector))
            .await
            .is_ok_and(|list| !list.items.is_empty())
    })
    .await;
    helm.kill().unwrap();
    helm.wait().unwrap();
    assert!(reached, "helm never recorded a {status} release");
}

/// A release must not stay stuck after an interrupted uninstall: one interrupted while its
/// pre-delete hook runs leaves the release `uninstalling`. It is finished by uninstalling and
/// then installed again, not rolled back (helm has no revision before the first to roll back to).
#[tokio::test]
async fn a_release_left_uninstalling_is_finished_then_installed() {
    let cluster = TestCluster::connect().await;
    let helm = cluster.helm(HelmTool::Helm4);
    let hook_node = unique_name("hook");
    let cp = TestControlPlane::create(
        &cluster,
        json!({"components": {"tiny": {"valuesOverride": {"hook": "on-delete", "hookNode": hook_node}}}}),
    )
    .await;
    let engine = engine(&cluster, &helm, tiny_catalog(&TINY));
    assert_all_done(&cp.reconciled_by(&engine).await.unwrap());

    // helm uninstall waits for the pre-delete hook, whose pod fits no node yet.
    interrupt_helm(
        &cluster,
        &cp.namespace,
        &["uninstall".into(), "tiny".into()],
        "uninstalling",
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &cp.namespace);

    // The hook can run now; the next reconcile waits out the record's age, then finishes the
    // uninstall (hook included) and installs again.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.client.clone());
    let label = |value: Option<&str>| json!({"metadata": {"labels": {"smm.dev/hook-node": value}}});
    nodes
        .patch(
            "kwok-node-1",
            &PatchParams::default(),
            &Patch::Merge(&label(Some(&hook_node))),
        )
        .await
        .unwrap();
    let report = cp.reconciled_by(&engine).await;
    nodes
        .patch(
            "kwok-node-1",
            &PatchParams::default(),
            &Patch::Merge(&label(None)),
        )
        .await
        .unwrap();
    assert_recovered(&report.unwrap(), &secrets, "uninstalling").await;
    cp.delete(&cluster).await;
}

/// One broken component must not hold back the rest of the mesh: an error in one component's
/// step (here, helm's record of its release cannot be decoded) fails that component only. The
/// others are reconciled, and the run still ends with its conditions and statuses saying so.
#[tokio::test]
async fn an_error_in_one_step_fails_that_component_only() {
    let cluster = TestCluster::connect().await;
    let helm = cluster.helm(HelmTool::Helm4);
    let cp = TestControlPlane::create(&cluster, json!({})).await;
    let engine = engine(
        &cluster,
        &helm,
        Catalog::new(vec![
            tiny_component("tiny", &TINY),
            tiny_component("tiny-two", &TINY),
        ])
        .unwrap(),
    );
    assert_all_done(&cp.reconciled_by(&engine).await.unwrap());

    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &cp.namespace);
    let broken = json!({"data": {"release": "bm90IGEgcmVjb3Jk"}}); // "not a record"
    secrets
        .patch(
            "sh.helm.release.v1.tiny.v1",
            &PatchParams::default(),
            &Patch::Merge(&broken),
        )
        .await
        .unwrap();
    let report = cp.reconciled_by(&engine).await.unwrap();
    assert!(!report.ready, "{report:?}");
    let outcome = |name: &str| {
        report
            .components
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.outcome.clone())
            .unwrap()
    };
    let Outcome::Failed(message) = outcome("tiny") else {
        panic!("{report:?}");
    };
    assert!(message.contains("cannot be decoded"), "{message}");
    assert_eq!(outcome("tiny-two"), Outcome::Done);

    let status = cp.get().await.status.unwrap();
    assert_eq!(status.components["tiny"].phase, ComponentPhase::Failed);
    assert_eq!(
        status.components["tiny-two"].phase,
        ComponentPhase::Available
    );
    let ready = status.condition(condition::READY);
    assert_eq!(ready.map(|c| c.status.as_str()), Some("False"));
    assert!(!status.is_true(condition::RECONCILING));
    cp.delete(&cluster).await;
}

/// helm killed mid-install leaves the release `pending-install`, which helm then refuses to
/// touch; the next reconcile must clear it and install.
#[tokio::test]
async fn a_release_left_pending_install_is_recovered() {
    let cluster = TestCluster::connect().await;
    let helm = cluster.helm(HelmTool::Helm4);
    let cp = TestControlPlane::create(&cluster, json!({})).await;
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(cp.namespace.clone());
    namespaces
        .create(&Default::default(), &namespace)
        .await
        .unwrap();

    // The hook Job never completes (its pod fits no node), so helm waits in pending-install.
    let install = [
        "install".into(),
        "tiny".into(),
        crate::support::fixture_chart("tiny").into(),
        "--set".into(),
        "hook=hangs".into(),
    ];
    interrupt_helm(&cluster, &cp.namespace, &install, "pending-install").await;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &cp.namespace);

    // helm made that release outside smm: it belongs to nobody, and is refused, naming it.
    let engine = engine(&cluster, &helm, tiny_catalog(&TINY));
    let report = cp.reconciled_by(&engine).await.unwrap();
    let Outcome::Failed(refused) = &report.components[0].outcome else {
        panic!("{report:?}");
    };
    assert!(
        refused.contains(&format!(
            "release {}/tiny belongs to no ControlPlane",
            cp.namespace
        )),
        "{refused}"
    );
    assert_eq!(helm.processes_spawned(), 0);

    // Taken over knowingly, it is recovered.
    let adopting = Engine::new(
        cluster.client.clone(),
        helm.clone(),
        std::sync::Arc::new(tiny_catalog(&TINY)),
        EngineSettings {
            adopt: true,
            ..test_settings()
        },
    );
    let report = cp.reconciled_by(&adopting).await.unwrap();
    assert_recovered(&report, &secrets, "pending-install").await;
    cp.delete(&cluster).await;
}

/// A bad spec is refused before anything is applied: no helm, no namespace, no component
/// status; the conditions say why (Ready=False, Stalled=True, reason InvalidSpec), so an
/// operator's refusal is visible where users look.
#[tokio::test]
async fn a_bad_spec_changes_nothing() {
    let cluster = TestCluster::connect().await;
    let helm = cluster.helm(HelmTool::Helm4);
    let engine = engine(&cluster, &helm, Catalog::builtin().unwrap());
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());

    let managed =
        json!({"components": {"istiod": {"valuesOverride": {"global": {"istioNamespace": "x"}}}}});
    let unknown = json!({"components": {"istio-d": {"enabled": true}}});
    for (spec, expected) in [
        (
            managed,
            "istiod: valuesOverride.global.istioNamespace is managed by smm",
        ),
        (unknown, "spec.components.istio-d: unknown component"),
    ] {
        let cp = TestControlPlane::create(&cluster, spec).await;
        let err = cp.reconciled_by(&engine).await.unwrap_err();
        assert!(matches!(err, EngineError::Rejected(_)), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
        let status = cp.get().await.status.unwrap();
        assert!(status.components.is_empty());
        for (type_, value) in [(condition::READY, "False"), (condition::STALLED, "True")] {
            let found = status.condition(type_).unwrap();
            assert_eq!(
                (found.status.as_str(), found.reason.as_str()),
                (value, "InvalidSpec")
            );
            assert!(found.message.contains(expected), "{}", found.message);
        }
        assert!(namespaces.get_opt(&cp.namespace).await.unwrap().is_none());
        cp.delete(&cluster).await;
    }
    assert_eq!(helm.processes_spawned(), 0);
}

/// helm waits for hook Jobs: under the local plane's kwok one completes and the component is
/// Available; one that fails makes the component Failed with helm's own message.
#[tokio::test]
async fn hook_jobs_complete_or_fail_with_helms_message() {
    let cluster = TestCluster::connect().await;
    let helm = cluster.helm(HelmTool::Helm4);
    let engine = engine(&cluster, &helm, tiny_catalog(&TINY));
    let completes = json!({"components": {"tiny": {"valuesOverride": {"hook": "completes"}}}});
    let cp = TestControlPlane::create(&cluster, completes).await;
    let report = cp.reconciled_by(&engine).await.unwrap();
    assert!(report.succeeded(), "{report:?}");

    cp.apply(json!({"components": {"tiny": {"valuesOverride": {"hook": "fails"}}}}))
        .await;
    let report = cp.reconciled_by(&engine).await.unwrap();
    let Outcome::Failed(message) = &report.components[0].outcome else {
        panic!("{report:?}");
    };
    assert!(
        message.contains("pre-upgrade hooks failed") && message.contains("tiny-hook"),
        "{message}"
    );
    let tiny = cp.get().await.status.unwrap().components["tiny"].clone();
    assert_eq!(tiny.phase, ComponentPhase::Failed);
    cp.delete(&cluster).await;
}

/// kstatus: `Reconciling` is True while the engine works and gone once it is done.
#[tokio::test]
async fn reconciling_shows_while_working() {
    let cluster = TestCluster::connect().await;
    let helm = cluster.helm(HelmTool::Helm4);
    let engine = engine(&cluster, &helm, tiny_catalog(&TINY));
    let cp = TestControlPlane::create(&cluster, json!({})).await;

    let watcher_api = cp.api.clone();
    let name = cp.name.clone();
    let watcher = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            if let Ok(found) = watcher_api.get(&name).await {
                for c in found.status.into_iter().flat_map(|s| s.conditions) {
                    seen.insert(format!("{}={}", c.type_, c.status));
                }
            }
            if seen.contains("Ready=True") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    });
    cp.reconciled_by(&engine).await.unwrap();
    let seen = watcher.await.unwrap();
    assert!(seen.contains("Reconciling=True"), "{seen:?}");
    assert!(seen.contains("Ready=False"), "{seen:?}");
    let status = cp.get().await.status.unwrap();
    assert!(status.condition(condition::RECONCILING).is_none());
    cp.delete(&cluster).await;
}

/// A component whose namespace changes moves: its release in the old namespace goes first.
#[tokio::test]
async fn a_component_moved_to_another_namespace_leaves_nothing_behind() {
    let cluster = TestCluster::connect().await;
    let helm = cluster.helm(HelmTool::Helm4);
    let first = cluster.namespace("e2e-move").await;
    let second = cluster.namespace("e2e-move").await;
    let engine = engine(&cluster, &helm, tiny_catalog(&TINY));
    let cp = TestControlPlane::create(
        &cluster,
        json!({"components": {"tiny": {"namespace": first.name}}}),
    )
    .await;
    assert_all_done(&cp.reconciled_by(&engine).await.unwrap());

    cp.apply(json!({"components": {"tiny": {"namespace": second.name}}}))
        .await;
    let report = cp.reconciled_by(&engine).await.unwrap();
    assert_all_done(&report);
    assert_eq!(action_of(&report, "tiny").0, Operation::Install);
    let in_namespace =
        |namespace: &str| -> Api<ConfigMap> { Api::namespaced(cluster.client.clone(), namespace) };
    assert!(
        in_namespace(&second.name)
            .get_opt("tiny-settings")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        in_namespace(&first.name)
            .get_opt("tiny-settings")
            .await
            .unwrap()
            .is_none()
    );
    let old_records: Api<Secret> = Api::namespaced(cluster.client.clone(), &first.name);
    let left = old_records
        .list(&ListParams::default().labels("owner=helm"))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "the old release is gone");
    let status = cp.get().await.status.unwrap();
    let release = status.components["tiny"].release.clone().unwrap();
    assert_eq!(release.namespace, second.name);

    // Removing everything works even for a spec that could no longer be applied.
    cp.apply(json!({"components": {"tiny": {"namespace": second.name}, "no-such-component": {}}}))
        .await;
    assert!(cp.reconciled_by(&engine).await.is_err());
    assert_all_done(&cp.removed_by(&engine).await.unwrap());
    assert!(
        in_namespace(&second.name)
            .get_opt("tiny-settings")
            .await
            .unwrap()
            .is_none()
    );
    cp.delete(&cluster).await;
}

/// A run whose lease is lost writes no status: the next holder may be writing it, and a stale
/// entry or condition from this run would overwrite its own.
#[tokio::test]
async fn a_run_that_lost_its_lease_writes_no_status() {
    let cluster = TestCluster::connect().await;
    let helm = cluster.helm(HelmTool::Helm4);
    let cp = TestControlPlane::create(&cluster, json!({})).await;
    let lease_lost = tokio_util::sync::CancellationToken::new();
    lease_lost.cancel();
    let fenced = engine(&cluster, &helm, tiny_catalog(&TINY)).with_lease_lost(lease_lost);
    cp.reconciled_by(&fenced).await.unwrap();
    assert_eq!(cp.get().await.status, None);
    cp.delete(&cluster).await;
}

/// Deleting a ControlPlane whose spec can no longer be decoded (values nested deeper than the
/// decoder follows) still removes what it installed, as the operator's finalizer asks: removal
/// reads only where the components are and what the status recorded.
#[tokio::test]
async fn a_control_plane_that_cannot_be_decoded_is_still_removed() {
    let cluster = TestCluster::connect().await;
    let helm = cluster.helm(HelmTool::Helm4);
    let placed = cluster.namespace("e2e-unreadable").await;
    let cp = TestControlPlane::create(
        &cluster,
        json!({"components": {"tiny": {"namespace": placed.name}}}),
    )
    .await;
    let installed = engine(&cluster, &helm, tiny_catalog(&TINY));
    assert_all_done(&cp.reconciled_by(&installed).await.unwrap());

    let deep = (0..130).fold(json!(1), |inner, _| json!({"a": inner}));
    let patch = json!({"spec": {"components": {"tiny": {"valuesOverride": deep}}}});
    let raw: Api<kube::api::DynamicObject> = Api::all_with(
        cluster.client.clone(),
        &kube::api::ApiResource::erase::<ControlPlane>(&()),
    );
    // Stored; the answer, the object itself, is too deep for this client to decode.
    let patched = raw
        .patch(&cp.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    assert!(
        matches!(patched, Err(kube::Error::SerdeError(_))),
        "{patched:?}"
    );
    assert!(matches!(
        cp.api.get(&cp.name).await,
        Err(kube::Error::SerdeError(_))
    ));

    let session = Session::new(
        cluster.client.clone(),
        helm.clone(),
        std::sync::Arc::new(tiny_catalog(&TINY)),
        unique_name("e2e-remover"),
        Duration::from_secs(30),
    )
    .with_wait(WaitPolicy::Until(Duration::from_secs(60)));
    let report = session
        .run(&cp.name, Request::RemoveAll, |_| {})
        .await
        .unwrap();
    assert_all_done(&report);
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &placed.name);
    assert!(
        config_maps
            .get_opt("tiny-settings")
            .await
            .unwrap()
            .is_none()
    );
    let records: Api<Secret> = Api::namespaced(cluster.client.clone(), &placed.name);
    let left = records
        .list(&ListParams::default().labels("owner=helm"))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "the release is gone");
    let stored = smm::cluster::control_plane::load_for_removal(&cluster.client, &cp.name)
        .await
        .unwrap()
        .unwrap();
    let status = stored.status.unwrap();
    assert_eq!(status.components["tiny"].phase, ComponentPhase::Removed);
    cp.delete(&cluster).await;
}
