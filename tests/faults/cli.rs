//! A signal to the CLI in the middle of an install, an upgrade or an uninstall.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smm::mesh::catalog::Catalog;

use crate::plan::{CliOp, Signal};
use crate::process::{Proc, describe};
use crate::scene::Scene;
use crate::spec::{campaign_components, install_args, strings, with_enabled};

/// What a command means to do to the spec it starts from.
pub type SpecEdit = Box<dyn Fn(&Value) -> Value>;

pub async fn cli_fault(
    s: &mut Scene<'_>,
    op: CliOp,
    signal: Signal,
    after_ms: u64,
    gate_ms: Option<u64>,
    hold: u64,
) {
    // Set up, and what the fault's command is and means.
    let all = campaign_components(&s.ctx.catalog);
    let set_up = match op {
        CliOp::InstallAll => Some(set_up_install(s, all, gate_ms).await),
        CliOp::Upgrade { replicas } | CliOp::UpgradeReverted { replicas } => {
            set_up_upgrade(s, replicas, gate_ms).await
        }
        CliOp::UninstallAll => set_up_uninstall(s, all, gate_ms, hold).await,
        CliOp::RevisionUpgrade { patch } => set_up_revision_upgrade(s, patch, gate_ms).await,
    };
    let Some((mut args, intended_by_command)) = set_up else {
        return;
    };
    args.extend(s.cp_flag());
    let before = s.spec().await;
    let meant = intended_by_command(&before);

    let gate_task = gate_ms.map(|ms| match op {
        CliOp::UninstallAll => s.release_holds_after(ms),
        CliOp::InstallAll => s.open_gate_after(ms),
        CliOp::Upgrade { .. } | CliOp::UpgradeReverted { .. } | CliOp::RevisionUpgrade { .. } => {
            s.remove_quota_after(ms)
        }
    });
    let proc = s.spawn("faulted", &args);
    let exited = interrupt(s, proc, signal, after_ms, gate_ms.is_some()).await;
    s.check_helm_stopped(exited).await;
    if let Some(task) = gate_task {
        let _ = task.await;
    }
    s.check_spec_after_fault(&[&before, &meant]).await;

    // The next normal run: the same command again, or the spec before the upgrade.
    match op {
        CliOp::UpgradeReverted { .. } => s.verify_reconciled(&before).await,
        _ => s.verify(&args, &meant).await,
    }
}

/// `smm install` of `all`, istiod's pods held back by a node selector when there is a gate.
async fn set_up_install(
    s: &mut Scene<'_>,
    all: Vec<&'static str>,
    gate_ms: Option<u64>,
) -> (Vec<String>, SpecEdit) {
    if gate_ms.is_some() {
        let gate = json!({"nodeSelector": {s.gate_key.as_str(): "open"}});
        s.merge_spec(json!({"components": {"istiod": {"valuesOverride": gate}}}))
            .await;
    }
    let catalog = Catalog::builtin().unwrap();
    (
        install_args(&all),
        Box::new(move |before: &Value| with_enabled(&catalog, before, &all, true)),
    )
}

/// istiod installed, and with a gate, new pods held back by a quota: they cannot even be created
/// until it goes, so an upgrade waits however the engine judges a rollout. False when the
/// install failed.
async fn install_istiod_gated(s: &mut Scene<'_>, gate_ms: Option<u64>) -> bool {
    if !s.setup(&s.on_cp(&["install", "istiod"])).await {
        return false;
    }
    if gate_ms.is_some() {
        s.quota().await;
    }
    true
}

/// istiod installed, then the upgrade to `replicas`, new pods held back by a quota when there
/// is a gate; None when istiod's install failed.
pub async fn set_up_upgrade(
    s: &mut Scene<'_>,
    replicas: u64,
    gate_ms: Option<u64>,
) -> Option<(Vec<String>, SpecEdit)> {
    if !install_istiod_gated(s, gate_ms).await {
        return None;
    }
    let mut args = strings(&["install", "istiod"]);
    // Istio's chart leaves the replica count to its autoscaler unless told otherwise:
    // without this the upgrade makes no new pod, and the quota holds nothing.
    args.extend(strings(&[
        "--set",
        &format!("autoscaleEnabled=false,replicaCount={replicas}"),
    ]));
    Some((
        args,
        Box::new(move |before: &Value| {
            let mut spec = before.clone();
            let values = &mut spec["components"]["istiod"]["valuesOverride"];
            if !values.is_object() {
                *values = json!({});
            }
            values["autoscaleEnabled"] = json!(false);
            values["replicaCount"] = json!(replicas);
            spec
        }),
    ))
}

/// istiod installed in place, then the spec switched to RevisionBased at another patch, as a
/// user edits it before `smm install istiod` runs the upgrade: a new revision's istiod, its pods
/// held back by a quota when there is a gate, beside the old one; None when the install failed.
async fn set_up_revision_upgrade(
    s: &mut Scene<'_>,
    patch: u64,
    gate_ms: Option<u64>,
) -> Option<(Vec<String>, SpecEdit)> {
    if !install_istiod_gated(s, gate_ms).await {
        return None;
    }
    let version = format!(
        "{}.{patch}",
        smm::mesh::revisions::strategy::embedded_line()
    );
    // The grace period outlasts the campaign: the old revision stays, so the next run's
    // no-op check sees what the upgrade left and nothing else.
    s.merge_spec(json!({
        "version": version,
        "updateStrategy": {"type": "RevisionBased", "inactiveRevisionDeletionGracePeriodSeconds": 3600},
    }))
    .await;
    Some((
        strings(&["install", "istiod"]),
        Box::new(|before: &Value| before.clone()),
    ))
}

/// `all` installed, then `smm uninstall -a`, one rendered Deployment's deletion held when there
/// is a gate; None when the install failed.
async fn set_up_uninstall(
    s: &mut Scene<'_>,
    all: Vec<&'static str>,
    gate_ms: Option<u64>,
    hold: u64,
) -> Option<(Vec<String>, SpecEdit)> {
    let mut setup = install_args(&all);
    setup.extend(s.cp_flag());
    if !s.setup(&setup).await {
        return None;
    }
    if gate_ms.is_some() {
        let intended = s.spec().await;
        let cp = s.cp.clone();
        if let Some(rendered) = s.rendered_objects(&cp, &intended).await {
            let deployments: Vec<&Value> = rendered
                .iter()
                .filter(|object| object["kind"] == "Deployment")
                .collect();
            if let Some(pick) = deployments.get(hold as usize % deployments.len().max(1)) {
                let name = pick["metadata"]["name"].as_str().unwrap_or("").to_owned();
                s.hold(&name).await;
            }
        }
    }
    let catalog = Catalog::builtin().unwrap();
    Some((
        strings(&["uninstall", "-a"]),
        Box::new(move |before: &Value| with_enabled(&catalog, before, &all, false)),
    ))
}

/// Signals the command `after_ms` in (or notes that it had ended first; `held`: the plan held
/// it to outlast the signal), waits for its exit, and fails the fault when SIGTERM took long to
/// stop it. Returns when the command exited.
async fn interrupt(
    s: &mut Scene<'_>,
    mut proc: Proc,
    signal: Signal,
    after_ms: u64,
    held: bool,
) -> Instant {
    tokio::time::sleep(Duration::from_millis(after_ms)).await;
    let signalled = Instant::now();
    let proc_was_signalled = proc.running();
    if proc_was_signalled {
        let inside_helm = !s.ctx.helm_processes().is_empty();
        proc.signal(signal);
        if inside_helm {
            s.record.note("the signal landed inside helm");
        }
    } else {
        let ended = describe(proc.child.try_wait().ok().flatten());
        let what = format!("the command had ended ({ended}) before the signal");
        s.record.ended_first(held, &what);
    }
    let exit = proc.wait(Duration::from_secs(120)).await;
    let exited = Instant::now();
    s.record
        .note(format!("faulted command: {}", describe(exit)));
    // SIGTERM stops helm (with a grace period) and releases the lease: it must not take long.
    let stopping = signalled.elapsed();
    if signal == Signal::Term && proc_was_signalled {
        if stopping > Duration::from_secs(60) {
            s.record.fail(format!(
                "the CLI took {:.0}s to stop after SIGTERM",
                stopping.as_secs_f64()
            ));
        } else {
            s.record.note(format!(
                "stopped {:.1}s after SIGTERM",
                stopping.as_secs_f64()
            ));
        }
    }
    exited
}
