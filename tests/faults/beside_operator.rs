//! Two writers at once: the operator reconciling a ControlPlane (istiod's upgrade, its new pods
//! held back by a quota) while `smm reconcile -f` of the same spec starts. One of them waits
//! for the other's reconcile lease: never do two helm processes work on one release at once, and
//! the campaign's checks hold afterwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::operator::{
    finalized_control_planes, leader_namespace, restore_finalizers, start_operator,
};
use crate::plan::Signal;
use crate::process::describe;
use crate::scene::{COMMAND_LIMIT, Scene};
use crate::spec::strings;
use crate::support::unique_name;

pub async fn cli_beside_operator_fault(s: &mut Scene<'_>, replicas: u64, offset_ms: u64) {
    if !s.setup(&s.on_cp(&["install", "istiod"])).await {
        return;
    }
    s.quota().await;
    let finalized_before = finalized_control_planes(s).await;
    let leader_ns = leader_namespace(s).await;
    let watching = Arc::new(AtomicBool::new(true));
    let overlaps = tokio::task::spawn_blocking({
        let (helm, kubeconfig) = (s.ctx.helm.clone(), s.ctx.kubeconfig.clone());
        let watching = watching.clone();
        move || helm_overlaps(&helm, &kubeconfig, &watching)
    });
    let mut operator = start_operator(s, &unique_name("fault-op"), &leader_ns);

    // The change the operator acts on, and `smm reconcile -f` of the same spec meanwhile.
    let values = json!({"autoscaleEnabled": false, "replicaCount": replicas});
    s.merge_spec(json!({"components": {"istiod": {"valuesOverride": values}}}))
        .await;
    let intended = s.spec().await;
    let file = s.write_control_plane("intended.json", &s.cp.clone(), &intended);
    tokio::time::sleep(Duration::from_millis(offset_ms)).await;
    let args = strings(&["reconcile", "-f", &file]);
    let mut cli = s.spawn("reconcile-beside-operator", &args);
    let _ = s.remove_quota_after(3000).await;
    let exit = cli.wait(COMMAND_LIMIT).await;
    if !exit.is_some_and(|status| status.success()) {
        s.record.fail(format!(
            "smm reconcile beside the operator failed ({}):\n    {}",
            describe(exit),
            cli.tail(10)
        ));
    }
    operator.signal(Signal::Term);
    if operator.wait(Duration::from_secs(90)).await.is_none() {
        s.record
            .fail("the operator did not exit within 90s of SIGTERM");
    }
    watching.store(false, Ordering::Relaxed);
    for overlap in overlaps.await.unwrap_or_default() {
        s.record.fail(overlap);
    }
    restore_finalizers(s, &finalized_before).await;
    s.check_spec_after_fault(&[&intended]).await;
    s.verify_reconciled(&intended).await;
}

/// Polls the campaign's helm processes on its plane every 20 ms while `watching`: each time two
/// of them work on one release (namespace and name), a failure naming them.
fn helm_overlaps(helm: &std::path::Path, kubeconfig: &str, watching: &AtomicBool) -> Vec<String> {
    let mut overlaps = Vec::new();
    while watching.load(Ordering::Relaxed) {
        let mut by_release: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
        for pid in crate::process::helm_processes(helm, kubeconfig) {
            if let Some(release) = release_of(pid) {
                by_release.entry(release).or_default().push(pid);
            }
        }
        for ((namespace, name), pids) in by_release {
            if pids.len() > 1 {
                overlaps.push(format!(
                    "helm processes {pids:?} worked on release {namespace}/{name} at once"
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    overlaps.dedup();
    overlaps
}

/// The release (namespace, name) a helm process works on, from its command line: `upgrade
/// --install NAME`, `uninstall NAME`, `rollback NAME`, with `--namespace NS`.
fn release_of(pid: u32) -> Option<(String, String)> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|&byte| byte == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let namespace = args
        .iter()
        .position(|arg| arg == "--namespace" || arg == "-n")
        .and_then(|at| args.get(at + 1))?
        .clone();
    let name = args
        .iter()
        .skip(1)
        .find(|arg| {
            !arg.starts_with('-') && !["upgrade", "uninstall", "rollback"].contains(&arg.as_str())
        })?
        .clone();
    Some((namespace, name))
}
