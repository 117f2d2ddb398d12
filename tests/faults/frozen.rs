//! A lease holder frozen past its lease: the upgrade `smm install istiod --set
//! replicaCount=R`, its new pods held back by a quota so that it waits holding the reconcile
//! lease once helm is done, is stopped with SIGSTOP (a paused VM or container, `kill -STOP`)
//! for longer than the lease lasts. The same command run again takes the lease once it expired
//! and finishes the upgrade; then the frozen one is resumed with SIGCONT. It must find its lease
//! lost and stop: exit non-zero, and write nothing more, neither the ControlPlane (spec or
//! status) nor the lease, and start no helm.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, ResourceExt};
use smm::cluster::lease::{LEASE_DURATION, LEASE_NAMESPACE, lease_name};

use crate::process::{HELM_RUNS_ENV, describe, send};
use crate::scene::{COMMAND_LIMIT, Scene};
use crate::support::eventually;

pub async fn frozen_holder_fault(s: &mut Scene<'_>, replicas: u64) {
    if !s.setup(&s.on_cp(&["install", "istiod"])).await {
        return;
    }
    s.quota().await;
    let set = format!("autoscaleEnabled=false,replicaCount={replicas}");
    let args = s.on_cp(&["install", "istiod", "--set", &set]);
    let ctx = s.ctx;
    let frozen_runs = s.dir.join("frozen-helm-runs.log");
    let mut frozen = s.spawn_with("frozen", &args, |command| {
        command
            .env("SMM_HELM", &ctx.counting_helm)
            .env(HELM_RUNS_ENV, &frozen_runs);
    });
    // Frozen once helm is done and the run waits for the held pods, holding the lease.
    let waiting = eventually(Duration::from_secs(60), async || {
        helm_runs(&frozen_runs) > 0 && ctx.helm_processes().is_empty() && holder(s).await.is_some()
    })
    .await;
    if !waiting || !frozen.running() {
        return s.record.fail(format!(
            "the upgrade never waited for its pods holding the lease:\n    {}",
            frozen.tail(10)
        ));
    }
    send(frozen.pid(), libc::SIGSTOP);
    let frozen_at = Instant::now();
    let _ = s.remove_quota_after(0).await;

    // Another run of the same command takes the lease once it expired, and finishes.
    s.run_checked(
        "successor",
        &args,
        "the run after the frozen holder failed ",
        12,
    )
    .await;
    let taken_after = frozen_at.elapsed();
    if taken_after < LEASE_DURATION {
        s.record.fail(format!(
            "the successor finished {:.1}s after the freeze, before the lease ({}s) expired",
            taken_after.as_secs_f64(),
            LEASE_DURATION.as_secs()
        ));
    }
    let written = (resource_version(s).await, lease_version(s).await);
    let helm_before = helm_runs(&frozen_runs);

    send(frozen.pid(), libc::SIGCONT);
    let exit = frozen.wait(Duration::from_secs(60)).await;
    s.record.note(format!(
        "frozen {:.0}s; resumed holder: {}",
        taken_after.as_secs_f64(),
        describe(exit)
    ));
    if exit.is_none_or(|status| status.success()) {
        s.record.fail(format!(
            "the resumed holder did not stop as having lost its lease ({}):\n    {}",
            describe(exit),
            frozen.tail(8)
        ));
    }
    if (resource_version(s).await, lease_version(s).await) != written {
        s.record.fail(
            "the resumed holder wrote the ControlPlane or the lease after its lease was taken",
        );
    }
    if helm_runs(&frozen_runs) != helm_before {
        s.record.fail("the resumed holder started helm");
    }
    s.check_helm_stopped(Instant::now()).await;
    let intended = s.spec().await;
    s.verify(&args, &intended).await;
}

/// How many helm processes the frozen holder started.
fn helm_runs(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |text| text.lines().count())
}

/// Who holds the scene's reconcile lease now.
async fn holder(s: &Scene<'_>) -> Option<String> {
    lease(s)
        .await?
        .spec?
        .holder_identity
        .filter(|holder| !holder.is_empty())
}

async fn lease(s: &Scene<'_>) -> Option<Lease> {
    let leases: Api<Lease> = Api::namespaced(s.ctx.client.clone(), LEASE_NAMESPACE);
    leases.get_opt(&lease_name(&s.cp)).await.ok().flatten()
}

async fn lease_version(s: &Scene<'_>) -> Option<String> {
    lease(s).await?.resource_version()
}

async fn resource_version(s: &Scene<'_>) -> Option<String> {
    let object = s.ctx.control_planes.get_opt(&s.cp).await.ok()??;
    object.resource_version()
}

// The successor waits out the frozen holder's lease within the campaign's limit on a command.
const _: () = assert!(COMMAND_LIMIT.as_secs() > 2 * LEASE_DURATION.as_secs());
