//! A signal to the leading operator during its reconcile; then a second operator, or the same
//! identity restarted, takes over.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use smm::api::{ControlPlaneStatus, Health};
use smm::cluster::lease::{LEASE_NAMESPACE, lease_name};
use smm::operator::controller::FINALIZER;

use crate::plan::Signal;
use crate::process::{Proc, describe};
use crate::scene::{Scene, without_finalizer};
use crate::spec::{campaign_components, with_enabled};
use crate::support::unique_name;

pub async fn operator_fault(
    s: &mut Scene<'_>,
    signal: Signal,
    after_ms: u64,
    gate_ms: Option<u64>,
    same_identity: bool,
) {
    let finalized_before = finalized_control_planes(s).await;
    let leader_ns = leader_namespace(s).await;
    let intended = store_defaults(s, gate_ms).await;

    let first_identity = unique_name("fault-op");
    kill_leader(s, &first_identity, &leader_ns, signal, after_ms, gate_ms).await;
    s.check_spec_after_fault(&[&intended]).await;

    let second_identity = if same_identity {
        first_identity
    } else {
        unique_name("fault-op")
    };
    take_over(s, &second_identity, &leader_ns).await;
    restore_finalizers(s, &finalized_before).await;
    s.verify_reconciled(&intended).await;
}

/// The ControlPlanes that carry the operator's finalizer already: the operators would also
/// adopt the others, whose finalizers are put back as found afterwards.
pub async fn finalized_control_planes(s: &Scene<'_>) -> BTreeSet<String> {
    s.ctx
        .control_planes
        .list(&ListParams::default())
        .await
        .map(|list| {
            list.items
                .into_iter()
                .filter(|cp| cp.finalizers().iter().any(|f| f == FINALIZER))
                .map(|cp| cp.name_any())
                .collect()
        })
        .unwrap_or_default()
}

/// A namespace of the fault's own for the operators' leader lease.
pub async fn leader_namespace(s: &mut Scene<'_>) -> String {
    let leader_ns = unique_name("fault-opsys");
    let namespaces: Api<Namespace> = Api::all(s.ctx.client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(leader_ns.clone());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("creating the leader namespace");
    s.leader_ns = Some(leader_ns.clone());
    leader_ns
}

/// Stores the desired state, as a user would write it: the default components (istiod's pods
/// held back by a node selector when there is a gate). Returns the spec as stored.
async fn store_defaults(s: &mut Scene<'_>, gate_ms: Option<u64>) -> Value {
    let defaults: Vec<&'static str> = s
        .ctx
        .catalog
        .components()
        .iter()
        .filter(|c| c.enabled_by_default && campaign_components(&s.ctx.catalog).contains(&c.name))
        .map(|c| c.name)
        .collect();
    let before = s.spec().await;
    let mut intended = with_enabled(&s.ctx.catalog, &before, &defaults, true);
    if gate_ms.is_some() {
        intended["components"]["istiod"]["valuesOverride"] =
            json!({"nodeSelector": {s.gate_key.as_str(): "open"}});
    }
    s.merge_spec(intended.clone()).await;
    s.spec().await
}

/// Starts the first operator, signals it `after_ms` into its reconcile and waits for its exit.
async fn kill_leader(
    s: &mut Scene<'_>,
    identity: &str,
    leader_ns: &str,
    signal: Signal,
    after_ms: u64,
    gate_ms: Option<u64>,
) {
    let gate_task = gate_ms.map(|ms| s.open_gate_after(ms));
    let mut first = start_operator(s, identity, leader_ns);
    tokio::time::sleep(Duration::from_millis(after_ms)).await;
    let landed = where_it_lands(s).await;
    let signalled = Instant::now();
    if first.running() {
        first.signal(signal);
        s.record.note(landed.to_owned());
    } else {
        s.record.fail(format!(
            "the first operator had exited before the signal:\n    {}",
            first.tail(10)
        ));
    }
    let exit = first.wait(Duration::from_secs(90)).await;
    let exited = Instant::now();
    if exit.is_none() {
        s.record
            .fail("the first operator did not exit within 90s of the signal");
    }
    s.record.note(format!(
        "first operator: {} {:.1}s after the signal",
        describe(exit),
        signalled.elapsed().as_secs_f64()
    ));
    s.check_helm_stopped(exited).await;
    if let Some(task) = gate_task {
        let _ = task.await;
    }
}

/// Where a signal sent now lands: inside helm, in a reconcile (the ControlPlane's reconcile
/// lease is held), while the ControlPlane is still on its way to Ready (an operator waiting for
/// workloads between requeues holds no lease and runs no helm, but its work is not done: the
/// next leader must finish it), or after the work was done, which counts the fault as missed.
async fn where_it_lands(s: &mut Scene<'_>) -> &'static str {
    if !s.ctx.helm_processes().is_empty() {
        return "the signal landed inside helm";
    }
    let leases: Api<Lease> = Api::namespaced(s.ctx.client.clone(), LEASE_NAMESPACE);
    let held = leases
        .get_opt(&lease_name(&s.cp))
        .await
        .ok()
        .flatten()
        .and_then(|lease| lease.spec?.holder_identity)
        .is_some_and(|holder| !holder.is_empty());
    if held {
        return "the signal landed in a reconcile";
    }
    let ready = s
        .ctx
        .control_planes
        .get_opt(&s.cp)
        .await
        .ok()
        .flatten()
        .is_some_and(|cp| {
            let status = serde_json::from_value::<ControlPlaneStatus>(cp.data["status"].clone());
            status.is_ok_and(|status| status.health(cp.metadata.generation) == Health::Ready)
        });
    if !ready {
        return "the signal landed while the ControlPlane was on its way to Ready (between requeues)";
    }
    s.record.missed = true;
    "missed: the ControlPlane was already Ready when the operator was signalled"
}

/// Starts the second operator and waits until `smm status` says the ControlPlane is Ready
/// (within 150 s), then stops it with SIGTERM.
async fn take_over(s: &mut Scene<'_>, identity: &str, leader_ns: &str) {
    let mut second = start_operator(s, identity, leader_ns);
    let started = Instant::now();
    let status_args = s.on_cp(&["status"]);
    let mut ready = false;
    while started.elapsed() < Duration::from_secs(150) {
        let log = s.dir.join("status-poll.log");
        let _ = std::fs::remove_file(&log);
        let polled = s.ctx.command(&status_args, &log).status();
        if polled.is_ok_and(|st| st.success()) {
            ready = true;
            break;
        }
        if !second.running() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if ready {
        s.record.note(format!(
            "taken over in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
    } else {
        s.record.fail(format!(
            "the second operator did not make the ControlPlane Ready within 150s:\n    {}",
            second.tail(10)
        ));
    }
    second.signal(Signal::Term);
    if second.wait(Duration::from_secs(90)).await.is_none() {
        s.record
            .fail("the second operator did not exit within 90s of SIGTERM");
    }
}

/// Takes the operator's finalizer off the other ControlPlanes that did not carry it before.
pub async fn restore_finalizers(s: &Scene<'_>, finalized_before: &BTreeSet<String>) {
    let Ok(list) = s.ctx.control_planes.list(&ListParams::default()).await else {
        return;
    };
    for cp in list.items {
        let name = cp.name_any();
        if name == s.cp || finalized_before.contains(&name) {
            continue;
        }
        if cp.finalizers().iter().any(|f| f == FINALIZER) {
            let patch = without_finalizer(&cp, FINALIZER);
            let _ = s
                .ctx
                .control_planes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }
}

/// An out-of-cluster operator as tests/operator.rs runs it.
pub fn start_operator(s: &mut Scene<'_>, identity: &str, leader_ns: &str) -> Proc {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let args = vec![
        "operator".to_owned(),
        "run".to_owned(),
        "--kubeconfig".to_owned(),
        s.ctx.kubeconfig.clone(),
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--leader-namespace".to_owned(),
        leader_ns.to_owned(),
        "--identity".to_owned(),
        identity.to_owned(),
        "--resync".to_owned(),
        "10m".to_owned(),
    ];
    let log = s.log(&format!("operator-{identity}"));
    let mut command = s.ctx.command(&args, &log);
    command.env("RUST_LOG", "info");
    Proc {
        child: command.spawn().expect("the operator starts"),
        log,
        started: Instant::now(),
    }
}
