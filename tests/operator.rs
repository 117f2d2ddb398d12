//! Operator mode end to end: the operator's dumped manifests applied with kubectl (as Argo CD
//! would), `smm operator run` out of cluster against the real API server and real helm.
//!
//! A test binary of its own: an installed operator makes every CLI reconcile refuse, and cargo
//! runs test binaries one after another, never alongside the end-to-end suite. One test, in
//! sequence, because operator processes compete for one leader lease.

#[path = "fixtures/every_feature.rs"]
mod every_feature;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use every_feature::{every_feature, every_feature_topology};
use smm::api::{ComponentPhase, ControlPlane, Health, condition};
use smm::cluster::control_plane::load_for_removal;
use smm::operator::OPERATOR_LABEL;
use smm::operator::controller::FINALIZER;
use smm::operator::manifests::OPERATOR_NAME;
use support::{LocalIstiod, OperatorProcess, TestCluster, eventually, smm, unique_name};

/// What only this test asks of an operator process: its endpoints.
impl OperatorProcess {
    /// Status code and body of GET `path`, or None while nothing listens.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())?;
        Some((code, body))
    }

    /// The value of a metric line that starts with `prefix`, 0 when absent.
    fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = self.get("/metrics").expect("metrics answer");
        body.lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    }
}

/// Removes the operator's objects however the test ends, so later CLI runs are not refused.
struct InstalledOperator {
    namespace: String,
}

impl Drop for InstalledOperator {
    fn drop(&mut self) {
        let output = smm(&["operator", "uninstall", "--namespace", &self.namespace]);
        if !output.status.success() {
            eprintln!("operator uninstall failed: {output:?}");
        }
    }
}

fn kubectl_apply(yaml: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    let output = Command::new(support::repo_root().join(".tools/kubectl"))
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "kubectl apply: {output:?}");
}

async fn wait_for(what: &str, seconds: u64, check: impl AsyncFnMut() -> bool) {
    assert!(
        eventually(Duration::from_secs(seconds), check).await,
        "timed out after {seconds}s waiting for {what}"
    );
}

/// Each installed component's helm release revision.
/// Waits up to `seconds` for ControlPlane `name` to be Ready (`what` says why, for the panic).
async fn wait_until_ready(
    control_planes: &Api<ControlPlane>,
    name: &str,
    what: &str,
    seconds: u64,
) {
    wait_for(what, seconds, async || {
        let cp = control_planes.get(name).await.unwrap();
        let generation = cp.metadata.generation;
        cp.status
            .is_some_and(|status| status.health(generation) == Health::Ready)
    })
    .await;
}

fn revisions(control_plane: &ControlPlane) -> std::collections::BTreeMap<String, Option<i64>> {
    control_plane
        .status
        .iter()
        .flat_map(|status| &status.components)
        .filter_map(|(name, component)| {
            let release = component.release.as_ref()?;
            Some((name.clone(), release.revision))
        })
        .collect()
}

#[tokio::test]
async fn operator_mode_end_to_end() {
    let cluster = TestCluster::connect().await;
    let name = unique_name("e2e-op");
    let namespace = unique_name("e2e-opmesh");
    let operator_namespace = unique_name("e2e-opsys");

    // A ControlPlane made by `smm reconcile` before the operator exists.
    let catalog = smm::mesh::catalog::Catalog::builtin().unwrap();
    let components: serde_json::Map<String, serde_json::Value> = catalog
        .names()
        .into_iter()
        .map(|c| {
            (
                c.to_owned(),
                json!({"enabled": c == "base" || c == "istiod"}),
            )
        })
        .collect();
    let document = json!({
        "apiVersion": "smm.dev/v1alpha1", "kind": "ControlPlane",
        "metadata": {"name": name},
        "spec": {"namespace": namespace, "components": components},
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_yaml_ng::to_string(&document).unwrap()).unwrap();
    let reconciled = smm(&["reconcile", "-f", file.path().to_str().unwrap()]);
    assert!(reconciled.status.success(), "{reconciled:?}");

    // Install the operator as a CD system would: the dumped YAML through kubectl.
    let dump = smm(&[
        "operator",
        "install",
        "--dump-resources",
        "--namespace",
        &operator_namespace,
    ]);
    assert!(dump.status.success(), "{dump:?}");
    kubectl_apply(&String::from_utf8_lossy(&dump.stdout));
    let _installed = InstalledOperator {
        namespace: operator_namespace.clone(),
    };

    // While it is installed, the CLI refuses to reconcile; dumping still works.
    for refused in [
        smm(&["install", "istiod", "--control-plane", &name]),
        smm(&["reconcile", "-f", file.path().to_str().unwrap()]),
    ] {
        assert_eq!(refused.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("the smm operator is installed"), "{stderr}");
    }
    assert!(
        smm(&[
            "install",
            "istiod",
            "--dump-resources",
            "--control-plane",
            &name
        ])
        .status
        .success()
    );

    // The operator adopts the ControlPlane without a single helm process: the digests match.
    let leader = OperatorProcess::start("e2e-operator-a", &operator_namespace);
    wait_for("the leader to be ready", 90, async || {
        leader.get("/readyz").is_some_and(|(code, _)| code == 200)
    })
    .await;
    assert_eq!(leader.get("/healthz").map(|(code, _)| code), Some(200));
    let control_planes: Api<ControlPlane> = Api::all(cluster.client.clone());
    let adopted = control_planes.get(&name).await.unwrap();
    assert!(adopted.finalizers().iter().any(|f| f == FINALIZER));
    assert!(leader.metric("smm_reconciles_total{result=\"success\"}") >= 1.0);
    // Adopted without an upgrade: every release is still at its first revision.
    assert_eq!(
        revisions(&adopted),
        revisions(&control_planes.get(&name).await.unwrap())
    );
    assert!(
        revisions(&adopted)
            .values()
            .all(|revision| *revision == Some(1))
    );

    // A second replica stands by: ready, but it reconciles nothing.
    let standby = OperatorProcess::start("e2e-operator-b", &operator_namespace);
    wait_for("the standby to answer", 30, async || {
        standby.get("/readyz").is_some_and(|(code, _)| code == 200)
    })
    .await;

    // A values change upgrades that component only.
    let patch =
        json!({"spec": {"components": {"istiod": {"valuesOverride": {"replicaCount": 2}}}}});
    control_planes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for("istiod's second revision", 60, async || {
        let cp = control_planes.get(&name).await.unwrap();
        cp.status
            .and_then(|s| s.components.get("istiod").cloned())
            .and_then(|s| s.release)
            .and_then(|r| r.revision)
            == Some(2)
    })
    .await;
    let after = revisions(&control_planes.get(&name).await.unwrap());
    assert_eq!(after["base"], Some(1), "only istiod was upgraded");

    // A deleted managed Deployment is put back.
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &namespace);
    deployments
        .delete("istiod", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("istiod's Deployment to come back", 60, async || {
        deployments
            .get_opt("istiod")
            .await
            .is_ok_and(|d| d.is_some())
    })
    .await;

    // So is an object of another kind, deleted by hand once all is quiet (Ready, no workload
    // changing): the operator watches every kind it manages (its resync is 10 minutes here, so
    // only a watch brings it back in time).
    wait_until_ready(
        &control_planes,
        &name,
        "the ControlPlane to be Ready again",
        60,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(cluster.client.clone(), &namespace);
    config_maps
        .delete("istio-sidecar-injector", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("istiod's injector ConfigMap to come back", 60, async || {
        config_maps
            .get_opt("istio-sidecar-injector")
            .await
            .is_ok_and(|c| c.is_some())
    })
    .await;

    // Disabling a component uninstalls it.
    let patch = json!({"spec": {"components": {"istiod": {"enabled": false}}}});
    control_planes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for("istiod to be removed", 60, async || {
        let cp = control_planes.get(&name).await.unwrap();
        cp.status
            .and_then(|s| s.components.get("istiod").map(|c| c.phase))
            == Some(ComponentPhase::Removed)
    })
    .await;
    assert!(deployments.get_opt("istiod").await.unwrap().is_none());
    assert_eq!(
        standby.metric("smm_reconciles_total"),
        0.0,
        "only the leader reconciles"
    );

    // The API server goes away for 10 s; the operator recovers by itself and acts on the next
    // change. (scripts/cluster.sh finds the plane through SMM_CLUSTER_DIR, as the tests do.)
    let restarted = Command::new(support::repo_root().join("scripts/cluster.sh"))
        .args(["restart-apiserver", "10"])
        .output()
        .unwrap();
    assert!(restarted.status.success(), "{restarted:?}");
    let patch = json!({"spec": {"components": {"istiod": {"enabled": true}}}});
    wait_for("the API server to take a change again", 60, async || {
        control_planes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .is_ok()
    })
    .await;
    wait_for("istiod to be back after the outage", 120, async || {
        let cp = control_planes.get(&name).await.unwrap();
        cp.status
            .and_then(|s| s.components.get("istiod").map(|c| c.phase))
            == Some(ComponentPhase::Available)
    })
    .await;
    deployments.get("istiod").await.unwrap();

    // Every component, with every optional kind its chart renders, installed by the operator
    // under its own identity: a right its RBAC lacks would leave the ControlPlane not Ready. A
    // real istiod injects the gateways' pods (its injector fails closed without one).
    let _istiod = LocalIstiod::start(&namespace, "");
    let everything: serde_json::Map<String, serde_json::Value> = catalog
        .names()
        .into_iter()
        .map(|c| {
            let values = every_feature(c, false);
            (
                c.to_owned(),
                json!({"enabled": true, "valuesOverride": values}),
            )
        })
        .collect();
    let patch =
        json!({"spec": {"components": everything, "multiCluster": every_feature_topology()}});
    control_planes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_until_ready(
        &control_planes,
        &name,
        "every component with every feature to be Ready",
        180,
    )
    .await;

    // A workload that stops being ready is noticed without a change to the ControlPlane: the
    // component goes back to Upgrading with the reason, in its status and in an Event, and is
    // Available again once its pods are.
    let crash = |value: serde_json::Value| json!({"spec": {"template": {"metadata": {"labels": {"smm.test/simulate": value}}}}});
    deployments
        .patch(
            "jaeger",
            &PatchParams::default(),
            &Patch::Merge(&crash(json!("crash-loop"))),
        )
        .await
        .unwrap();
    let crash_loop = "container jaeger is in CrashLoopBackOff, restarted 5 times";
    wait_for(
        "tracing to be Upgrading with the crash loop",
        60,
        async || {
            let cp = control_planes.get(&name).await.unwrap();
            cp.status
                .and_then(|s| s.components.get("tracing").cloned())
                .is_some_and(|tracing| {
                    tracing.phase == ComponentPhase::Upgrading
                        && tracing.message.is_some_and(|m| m.contains(crash_loop))
                })
        },
    )
    .await;
    let events: Api<Event> = Api::all(cluster.client.clone());
    let by_name = ListParams::default().fields(&format!("involvedObject.name={name}"));
    wait_for("an Event saying why tracing waits", 30, async || {
        events.list(&by_name).await.is_ok_and(|list| {
            list.items.iter().any(|e| {
                e.reason.as_deref() == Some("WaitingForWorkloads")
                    && e.message.as_deref().is_some_and(|m| m.contains(crash_loop))
            })
        })
    })
    .await;
    deployments
        .patch(
            "jaeger",
            &PatchParams::default(),
            &Patch::Merge(&crash(serde_json::Value::Null)),
        )
        .await
        .unwrap();
    wait_until_ready(
        &control_planes,
        &name,
        "the ControlPlane to be Ready once tracing is",
        60,
    )
    .await;

    // A revision-based upgrade, under the operator's own identity: the new revision beside the
    // revisionless one, the gateways restarted onto it; nothing else uses the old one, which the
    // operator removes by itself once the grace period has passed (it comes back for it).
    let version = format!("{}.21", smm::mesh::revisions::strategy::embedded_line());
    let new_revision = version.replace('.', "-");
    let starting = LocalIstiod::start_when_installed(&namespace, &new_revision);
    let patch = json!({"spec": {"version": version, "updateStrategy": {
        "type": "RevisionBased", "inactiveRevisionDeletionGracePeriodSeconds": 2,
    }}});
    control_planes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let _new_istiod = starting.join().expect("the new revision's istiod starts");
    wait_for(
        "the new revision alone, the old one removed",
        120,
        async || {
            let cp = control_planes.get(&name).await.unwrap();
            let generation = cp.metadata.generation;
            let Some(status) = cp.status else {
                return false;
            };
            let names: Vec<&str> = status.revisions.iter().map(|r| r.name.as_str()).collect();
            status.health(generation) == Health::Ready && names == [new_revision.as_str()]
        },
    )
    .await;
    assert!(deployments.get_opt("istiod").await.unwrap().is_none());
    deployments
        .get(&format!("istiod-{new_revision}"))
        .await
        .unwrap();

    // Every action left an Event on the ControlPlane (published in the background, so the
    // last one may trail the status by a moment).
    wait_for("an event for each action", 30, async || {
        let reasons: Vec<String> = match events.list(&by_name).await {
            Ok(list) => list.items.into_iter().filter_map(|e| e.reason).collect(),
            Err(_) => return false,
        };
        ["Upgraded", "Uninstalled", "Installed"]
            .iter()
            .all(|expected| reasons.iter().any(|r| r == expected))
    })
    .await;

    // A ControlPlane whose spec can no longer be decoded (values nested deeper than the
    // decoder follows) is Stalled as Unreadable; deleting it still uninstalls everything it
    // installed (removal reads only where the components are and what the status recorded),
    // then releases the finalizer.
    let deep = (0..130).fold(json!(1), |inner, _| json!({"a": inner}));
    let patch = json!({"spec": {"components": {"tracing": {"valuesOverride": deep}}}});
    let raw: Api<kube::api::DynamicObject> = Api::all_with(
        cluster.client.clone(),
        &kube::api::ApiResource::erase::<ControlPlane>(&()),
    );
    // Stored; the answer, the object itself, is too deep for this client to decode.
    let patched = raw
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    assert!(
        matches!(patched, Err(kube::Error::SerdeError(_))),
        "{patched:?}"
    );
    wait_for(
        "the ControlPlane to be Stalled as Unreadable",
        60,
        async || {
            load_for_removal(&cluster.client, &name)
                .await
                .ok()
                .flatten()
                .and_then(|cp| cp.status)
                .and_then(|status| status.condition(condition::STALLED).cloned())
                .is_some_and(|stalled| stalled.reason == "Unreadable")
        },
    )
    .await;
    // Deleted; the answer, the object itself, is too deep for this client to decode.
    let deleted = control_planes.delete(&name, &DeleteParams::default()).await;
    assert!(
        matches!(deleted, Err(kube::Error::SerdeError(_))),
        "{deleted:?}"
    );
    wait_for("the ControlPlane to be gone", 90, async || {
        control_planes
            .get_opt(&name)
            .await
            .is_ok_and(|cp| cp.is_none())
    })
    .await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(cluster.client.clone(), &namespace);
    let releases = secrets
        .list(&ListParams::default().labels("owner=helm"))
        .await
        .unwrap();
    assert!(releases.items.is_empty(), "helm releases left behind");
    drop(standby);
    drop(leader);
    uninstall_waits_for_the_operators_pods(&cluster, &operator_namespace).await;
}

/// `smm operator uninstall` keeps the operator's rights while its pods stop (a stopping pod
/// lets a running helm finish, which needs them): with the operator's pod held by a finalizer,
/// its ClusterRole stays; once the pod goes, so does the rest.
async fn uninstall_waits_for_the_operators_pods(cluster: &TestCluster, namespace: &str) {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let (key, value) = OPERATOR_LABEL;
    let selector = ListParams::default().labels(&format!("{key}={value}"));
    let mut held = None;
    wait_for("the operator's pod", 60, async || {
        held = pods
            .list(&selector)
            .await
            .ok()
            .and_then(|list| list.items.into_iter().next());
        held.is_some()
    })
    .await;
    let held = held.unwrap().name_any();
    let hold = json!({"metadata": {"finalizers": ["e2e.smm.dev/hold"]}});
    pods.patch(&held, &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .unwrap();
    let uninstalling = {
        let namespace = namespace.to_owned();
        std::thread::spawn(move || smm(&["operator", "uninstall", "--namespace", &namespace]))
    };
    wait_for("the held pod to be terminating", 60, async || {
        pods.get(&held)
            .await
            .is_ok_and(|pod| pod.metadata.deletion_timestamp.is_some())
    })
    .await;
    let roles: Api<ClusterRole> = Api::all(cluster.client.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        roles.get_opt(OPERATOR_NAME).await.unwrap().is_some(),
        "the operator's rights went while its pod was still stopping"
    );
    let release = json!({"metadata": {"finalizers": null}});
    pods.patch(&held, &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    let uninstalled = uninstalling.join().unwrap();
    assert!(uninstalled.status.success(), "{uninstalled:?}");
    assert!(roles.get_opt(OPERATOR_NAME).await.unwrap().is_none());
}
