//! Why a component is not ready, read from the objects: pods that crash-loop, cannot pull their
//! image, never get ready or cannot be scheduled, a rollout past its progress deadline, and
//! pods refused by istiod's injection webhook once istiod is gone. The local plane's kwok stages
//! (`scripts/cluster/kwok/stages.yaml`) make a pod labelled `smm.test/simulate` fail as named;
//! each reason must read the same in the install's report, the stored status and `smm status`
//! (text and JSON), and `smm status` must exit non-zero.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use smm::api::{ComponentPhase, ControlPlane, condition};
use smm::cluster::workloads::{WorkloadKind, WorkloadRef, observe};

use crate::istio::mesh_with_gateway;
use crate::readiness::remove;
use crate::support::{
    TestCluster, eventually, fresh_control_plane, istio_mesh_lock, smm, stdout, unique_name,
};

/// `text` holds every one of `words`.
fn assert_says(text: &str, words: &[&str]) {
    for word in words {
        assert!(text.contains(word), "no {word:?} in:\n{text}");
    }
}

/// `smm status` of `name`, text and JSON: it exits 1, the row of `component` shows `phase` and
/// `words`, and so does its live entry in the JSON.
fn assert_status_says(name: &str, component: &str, phase: &str, words: &[&str]) {
    let text = smm(&["status", "--control-plane", name]);
    assert_eq!(text.status.code(), Some(1), "{text:?}");
    let text = stdout(&text);
    let row = text
        .lines()
        .find(|l| l.starts_with(&format!("{component} ")))
        .unwrap_or_else(|| panic!("no {component} row in:\n{text}"));
    assert_says(row, &[&format!(" {phase} ")]);
    assert_says(row, words);
    let json = smm(&["status", "--control-plane", name, "-o", "json"]);
    assert_eq!(json.status.code(), Some(1), "{json:?}");
    let report: Value = serde_json::from_str(&stdout(&json)).unwrap();
    let live = &report["live"][component];
    assert_eq!(live["phase"], phase, "{live}");
    assert_says(live["message"].as_str().unwrap_or_default(), words);
}

/// The stored status of ControlPlane `name` records tracing Failed, saying `words`, and so
/// does its Ready condition.
async fn assert_tracing_failed_saying(client: &kube::Client, name: &str, words: &[&str]) {
    let stored = Api::<ControlPlane>::all(client.clone())
        .get(name)
        .await
        .unwrap();
    let status = stored.status.unwrap();
    let tracing = &status.components["tracing"];
    assert_eq!(tracing.phase, ComponentPhase::Failed);
    assert_says(tracing.message.as_deref().unwrap_or_default(), words);
    let ready = status
        .condition(condition::READY)
        .expect("a Ready condition");
    assert_eq!(ready.status, "False");
    assert_says(&ready.message, words);
}

/// Installs tracing (one Deployment, Jaeger) with `set`, which keeps its pod from getting
/// ready. The install gives up after a few seconds, and `words` name why: in its report, in the
/// stored status and in `smm status`.
async fn install_fails_saying(set: &str, words: &[&str]) {
    let cluster = TestCluster::connect().await;
    let (name, namespace) = fresh_control_plane(&cluster).await;
    let jaeger = format!("Deployment {namespace}/jaeger: ");
    let words = [&[jaeger.as_str()][..], words].concat();

    let install = ["install", "tracing", "--timeout", "10s", "--set", set];
    let failed = smm(&[&install[..], &["--control-plane", &name]].concat());
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    assert_says(&stdout(&failed), &words);

    assert_tracing_failed_saying(&cluster.client, &name, &words).await;
    assert_status_says(&name, "tracing", "Failed", &words);
    remove(&cluster.client, &name).await;
}

#[tokio::test]
async fn a_crash_loop_names_the_container_its_restarts_and_last_exit() {
    install_fails_saying(
        r"podLabels.smm\.test/simulate=crash-loop",
        &["container jaeger is in CrashLoopBackOff, restarted 5 times, last terminated: Error (exit code 1)"],
    )
    .await;
}

#[tokio::test]
async fn an_image_pull_failure_names_the_image() {
    install_fails_saying(
        r"podLabels.smm\.test/simulate=image-pull",
        &[
            "container jaeger cannot pull image ",
            "jaeger",
            ": ImagePullBackOff: Back-off pulling image",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_pod_never_ready_names_the_container() {
    install_fails_saying(
        r"podLabels.smm\.test/simulate=never-ready",
        &["0/1 available", "container jaeger is running but not ready"],
    )
    .await;
}

#[tokio::test]
async fn an_unschedulable_pod_gives_the_schedulers_word() {
    let nowhere = format!("nodeSelector.smm-test/{}=nowhere", unique_name("sel"));
    install_fails_saying(
        &nowhere,
        &[
            "cannot be scheduled: ",
            "didn't match Pod's node affinity/selector",
        ],
    )
    .await;
}

/// A rollout past its progress deadline is Failed, not Progressing: `smm status` says so live
/// at once, and the next reconcile records it without waiting for its timeout.
#[tokio::test]
async fn a_rollout_past_its_progress_deadline_fails() {
    let cluster = TestCluster::connect().await;
    let (name, namespace) = fresh_control_plane(&cluster).await;
    let install = |wait: &str| {
        smm(&[
            "install",
            "tracing",
            wait,
            "--set",
            r"podLabels.smm\.test/simulate=never-ready",
            "--control-plane",
            &name,
        ])
    };
    let applied = install("--no-wait");
    assert_eq!(applied.status.code(), Some(0), "{applied:?}");
    // The chart leaves the deadline at its 10 minutes; a second makes it pass now.
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &namespace);
    let deadline = json!({"spec": {"progressDeadlineSeconds": 1}});
    deployments
        .patch("jaeger", &PatchParams::default(), &Patch::Merge(&deadline))
        .await
        .unwrap();
    let words = [
        "progress deadline exceeded (ReplicaSet ",
        "has timed out progressing.)",
        "container jaeger is running but not ready",
    ];
    let passed = eventually(Duration::from_secs(30), async || {
        let json = smm(&["status", "--control-plane", &name, "-o", "json"]);
        let report: Value = serde_json::from_str(&stdout(&json)).unwrap_or_default();
        report["live"]["tracing"]["phase"] == "Failed"
    })
    .await;
    assert!(passed, "the deadline never passed");
    assert_status_says(&name, "tracing", "Failed", &words);

    // Failed at once, not after the wait's timeout.
    let again = install("--timeout=20s");
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert_says(&stdout(&again), &words);
    assert_tracing_failed_saying(&cluster.client, &name, &words).await;
    remove(&cluster.client, &name).await;
}

/// The issue's case: with the mesh installed, istiod stops and the ingress gateway restarts.
/// Its new ReplicaSet cannot create pods, as istiod's injection webhook (failing closed) is not
/// there; `smm status` shows the gateway not Available, with the API server's refusal.
#[tokio::test]
async fn a_gateway_whose_pods_the_injector_refuses_is_not_available() {
    let cluster = TestCluster::connect().await;
    let _lock = istio_mesh_lock().await;
    let (mesh, istiod) = mesh_with_gateway(&cluster).await;
    let status = smm(&["status", "--control-plane", &mesh.name]);
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    drop(istiod);

    // What `kubectl rollout restart` does.
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &mesh.namespace);
    let gateway = deployments
        .list(&ListParams::default().labels("istio=ingressgateway"))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .expect("the ingress gateway's Deployment")
        .metadata
        .name
        .unwrap();
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": unique_name("restart"),
    }}}}});
    deployments
        .patch(&gateway, &PatchParams::default(), &Patch::Merge(&restart))
        .await
        .unwrap();

    let words = [
        &format!("Deployment {}/{gateway}: ", mesh.namespace),
        "pods refused (FailedCreate): ",
        "failed calling webhook",
        "sidecar-injector.istio.io",
    ];
    let refused = eventually(Duration::from_secs(60), async || {
        let json = smm(&["status", "--control-plane", &mesh.name, "-o", "json"]);
        let report: Value = serde_json::from_str(&stdout(&json)).unwrap_or_default();
        let message = report["live"]["ingress-gateway"]["message"].as_str();
        message.is_some_and(|m| m.contains("FailedCreate"))
    })
    .await;
    assert!(refused, "no refused pod creation seen");
    // The old pod still serves, but a rollout that cannot go on is not Available.
    assert_status_says(&mesh.name, "ingress-gateway", "Progressing", &words);
}

/// Pods their controller may not create (here a quota of no pods) are named for each kind of
/// workload, from where its controller reports them: a Deployment's `ReplicaFailure` condition,
/// a StatefulSet's and a DaemonSet's `FailedCreate` Events.
#[tokio::test]
async fn refused_pods_are_named_for_every_kind_of_workload() {
    let cluster = TestCluster::connect().await;
    let namespace = cluster.namespace("e2e-refused").await;
    let ns = namespace.name.as_str();
    let create = |kind: &str, plural: &str, object: Value| {
        let client = cluster.client.clone();
        let (group, version) = match kind {
            "ResourceQuota" => ("", "v1"),
            _ => ("apps", "v1"),
        };
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
        async move {
            let object: kube::api::DynamicObject = serde_json::from_value(object).unwrap();
            Api::<kube::api::DynamicObject>::namespaced_with(client, ns, &resource)
                .create(&kube::api::PostParams::default(), &object)
                .await
                .unwrap();
        }
    };
    create(
        "ResourceQuota",
        "resourcequotas",
        json!({"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}),
    )
    .await;
    let template = |app: &str| {
        json!({
            "metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1"}]},
        })
    };
    let spec =
        |app: &str| json!({"selector": {"matchLabels": {"app": app}}, "template": template(app)});
    let mut stateful = spec("web");
    stateful["serviceName"] = json!("web");
    for (kind, plural, name, spec) in [
        ("Deployment", "deployments", "api", spec("api")),
        ("StatefulSet", "statefulsets", "web", stateful),
        ("DaemonSet", "daemonsets", "agent", spec("agent")),
    ] {
        create(
            kind,
            plural,
            json!({"metadata": {"name": name}, "spec": spec}),
        )
        .await;
    }
    let refs: Vec<WorkloadRef> = [
        (WorkloadKind::Deployment, "api"),
        (WorkloadKind::StatefulSet, "web"),
        (WorkloadKind::DaemonSet, "agent"),
    ]
    .into_iter()
    .map(|(kind, name)| WorkloadRef {
        kind,
        namespace: ns.to_owned(),
        name: name.to_owned(),
    })
    .collect();
    let mut states = Vec::new();
    let named = eventually(Duration::from_secs(60), async || {
        states = observe(&cluster.client, &refs).await.unwrap();
        states.iter().all(|s| {
            s.readiness
                .reason()
                .is_some_and(|why| why.contains("pods refused (FailedCreate): "))
        })
    })
    .await;
    assert!(named, "{states:#?}");
    for state in &states {
        assert_says(&state.describe(), &["is forbidden", "quota"]);
    }
}
