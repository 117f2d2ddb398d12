//! The API server restarted in the middle of `smm install -a`, for a few seconds or for longer
//! than the renew deadline (the run loses its lease and must stop).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use smm::cluster::lease::RENEW_DEADLINE;

use crate::process::describe;
use crate::scene::{COMMAND_LIMIT, Scene};
use crate::spec::{campaign_components, install_args, with_enabled};
use crate::support::{self, repo_root};

pub async fn apiserver_fault(
    s: &mut Scene<'_>,
    after_ms: u64,
    outage_s: u64,
    gate_ms: Option<u64>,
) {
    if !plane_is_ours(s) {
        return;
    }
    if gate_ms.is_some() {
        s.merge_spec(
            json!({"components": {"istiod": {"valuesOverride": {"nodeSelector": {s.gate_key.as_str(): "open"}}}}}),
        )
        .await;
    }
    let before = s.spec().await;
    let all = campaign_components(&s.ctx.catalog);
    let intended = with_enabled(&s.ctx.catalog, &before, &all, true);
    let mut args = install_args(&all);
    args.extend(s.cp_flag());

    let gate_task = gate_ms.map(|ms| s.open_gate_after(ms));
    let mut proc = s.spawn("faulted", &args);
    tokio::time::sleep(Duration::from_millis(after_ms)).await;
    let running = proc.running();
    if !running {
        let held = gate_ms.is_some();
        s.record
            .ended_first(held, "smm install -a had ended before the outage");
    }
    restart_apiserver(s, outage_s).await;
    let exit = proc.wait(COMMAND_LIMIT).await;
    let exited = Instant::now();
    s.record
        .note(format!("install during the outage: {}", describe(exit)));
    // Held in its wait for istiod's pods until the gate opens (during the outage), a run
    // cannot finish before the outage; one that outlasts the renew deadline costs it its lease,
    // and a run that lost its lease stops.
    let lease_lost = running && gate_ms.is_some() && outage_s > RENEW_DEADLINE.as_secs();
    if lease_lost && exit.is_some_and(|status| status.success()) {
        s.record.fail(format!(
            "smm install -a succeeded through a {outage_s}s outage, longer than the renew \
             deadline ({}s): it kept writing without its lease",
            RENEW_DEADLINE.as_secs()
        ));
    }
    if let Some(task) = gate_task {
        let _ = task.await;
    }
    let client = s.ctx.client.clone();
    if !support::eventually(Duration::from_secs(60), async || {
        client.apiserver_version().await.is_ok()
    })
    .await
    {
        s.record
            .fail("the API server did not answer within 60s of its restart");
        return;
    }
    s.check_helm_stopped(exited).await;
    s.check_spec_after_fault(&[&before, &intended]).await;
    s.verify(&args, &intended).await;
}

/// restart-apiserver acts on the plane in SMM_CLUSTER_DIR: it must be the one we talk to.
/// False (and a failure) when it is not.
fn plane_is_ours(s: &mut Scene<'_>) -> bool {
    let env = Command::new(repo_root().join("scripts/cluster.sh"))
        .arg("env")
        .output();
    let named = env
        .as_ref()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&s.ctx.kubeconfig))
        .unwrap_or(false);
    if !named {
        s.record.fail(format!(
            "scripts/cluster.sh (SMM_CLUSTER_DIR={:?}) does not run the plane of KUBECONFIG={}: \
             not restarting another plane's API server",
            std::env::var("SMM_CLUSTER_DIR").ok(),
            s.ctx.kubeconfig
        ));
    }
    named
}

/// `scripts/cluster.sh restart-apiserver OUTAGE_S`, its output in the fault's logs.
async fn restart_apiserver(s: &mut Scene<'_>, outage_s: u64) {
    let restart_log = s.log("restart-apiserver");
    let outage = outage_s.to_string();
    let restarted = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&restart_log).ok()?;
        Command::new(repo_root().join("scripts/cluster.sh"))
            .args(["restart-apiserver", &outage])
            .stdout(file.try_clone().ok()?)
            .stderr(file)
            .status()
            .ok()
    })
    .await
    .ok()
    .flatten();
    if !restarted.is_some_and(|st| st.success()) {
        s.record.fail(format!(
            "scripts/cluster.sh restart-apiserver {outage_s} failed"
        ));
    }
}
