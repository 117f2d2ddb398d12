//! A fault held inside helm: the upgrade `smm install istiod --set replicaCount=R` runs, and its
//! helm (a child of that smm) is frozen with SIGSTOP once the release record is marked pending,
//! so helm stops mid-operation, as a helm that hangs on an unanswered call or a paused node
//! would. Held there a while, then smm is struck ([`HelmStrike`]): told to stop, killed with its
//! helm resumed as an orphan, or its lease taken by another run of the same command. In every
//! case no helm of the struck smm may be left, nor work on the release beside the next holder's,
//! and the campaign's checks hold after the next run.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use smm::cluster::lease::{LEASE_NAMESPACE, lease_name};

use crate::cli::set_up_upgrade;
use crate::plan::{HelmStrike, Signal};
use crate::process::{OverlapWatch, Proc, describe, helm_children, send, stat_fields};
use crate::scene::{COMMAND_LIMIT, Scene};

/// How long the campaign looks for the upgrade's helm with a pending release.
const CATCH_LIMIT: Duration = Duration::from_secs(60);

pub async fn held_in_helm_fault(
    s: &mut Scene<'_>,
    strike: HelmStrike,
    hold_ms: u64,
    replicas: u64,
) {
    let Some((mut args, intended_by_command)) = set_up_upgrade(s, replicas, None).await else {
        return;
    };
    args.extend(s.cp_flag());
    let before = s.spec().await;
    let meant = intended_by_command(&before);

    let mut smm = s.spawn("faulted", &args);
    let started = Instant::now();
    match freeze_pending_helm(s, &mut smm).await {
        Some(helm) => {
            s.record.note(format!(
                "helm {helm} frozen {:.1}s into the command, its release pending",
                started.elapsed().as_secs_f64()
            ));
            tokio::time::sleep(Duration::from_millis(hold_ms)).await;
            match strike {
                HelmStrike::Term => stop_smm(s, smm).await,
                HelmStrike::Kill { resume_ms } => kill_smm(s, smm, helm, resume_ms).await,
                HelmStrike::LeaseTaken => take_lease(s, smm, &args).await,
            }
        }
        None => {
            let exit = smm.wait(COMMAND_LIMIT).await;
            let what = format!(
                "no helm of the command was seen with its release pending ({})",
                describe(exit)
            );
            s.record.ended_first(true, &what);
        }
    }
    s.check_spec_after_fault(&[&before, &meant]).await;
    s.verify(&args, &meant).await;
}

/// Freezes (SIGSTOP) the helm that `smm` runs once a release of the scene's namespace is marked
/// pending, which helm does before it applies anything; its PID, or None when smm ended, or
/// its helm did, first.
async fn freeze_pending_helm(s: &Scene<'_>, smm: &mut Proc) -> Option<u32> {
    let deadline = Instant::now() + CATCH_LIMIT;
    while smm.running() && Instant::now() < deadline {
        if let Some(&helm) = helm_children(&s.ctx.helm, smm.child.id()).first()
            && release_pending(s).await
        {
            send(helm as i32, libc::SIGSTOP);
            // Frozen, not ended meanwhile (a zombie until smm reaps it).
            if stat_fields(helm).is_some_and(|fields| fields[0] == "T") {
                return Some(helm);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Whether a helm release record of the scene's namespace is pending.
async fn release_pending(s: &Scene<'_>) -> bool {
    let secrets: Api<Secret> = Api::namespaced(s.ctx.client.clone(), &s.ns);
    let pending = ListParams::default()
        .labels("owner=helm,status in (pending-install,pending-upgrade,pending-rollback)");
    secrets
        .list_metadata(&pending)
        .await
        .is_ok_and(|list| !list.items.is_empty())
}

/// SIGTERM to smm: it stops its frozen helm (told to stop, killed after helm's grace) and
/// exits; nothing of it is left.
async fn stop_smm(s: &mut Scene<'_>, mut smm: Proc) {
    smm.signal(Signal::Term);
    let signalled = Instant::now();
    let exit = smm.wait(Duration::from_secs(60)).await;
    let exited = Instant::now();
    s.record.note(format!(
        "smm {} {:.1}s after SIGTERM",
        describe(exit),
        signalled.elapsed().as_secs_f64()
    ));
    if exit.is_none() {
        s.record
            .fail("smm did not exit within 60s of SIGTERM, its helm frozen");
    }
    s.check_helm_stopped(exited).await;
}

/// SIGKILL to smm, then its orphaned helm resumed `resume_ms` later: it was told to stop
/// (SIGTERM, smm's parent-death signal) when smm died, and must stop within its grace once it
/// runs again.
async fn kill_smm(s: &mut Scene<'_>, mut smm: Proc, helm: u32, resume_ms: u64) {
    smm.signal(Signal::Kill);
    let _ = smm.wait(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(resume_ms)).await;
    send(helm as i32, libc::SIGCONT);
    s.check_helm_stopped(Instant::now()).await;
}

/// smm's reconcile lease deleted and the same command started at once: the first finds its
/// lease gone, stops its frozen helm and exits non-zero; the second waits for whatever the
/// first may still be writing before it touches the pending release. Never do two helm
/// processes work on the release at once.
async fn take_lease(s: &mut Scene<'_>, mut smm: Proc, args: &[String]) {
    let overlaps = OverlapWatch::start(&s.ctx.helm, &s.ctx.kubeconfig);
    let leases: Api<Lease> = Api::namespaced(s.ctx.client.clone(), LEASE_NAMESPACE);
    if let Err(err) = leases
        .delete(&lease_name(&s.cp), &DeleteParams::default())
        .await
    {
        s.record.fail(format!("deleting smm's lease: {err}"));
    }
    let taken = Instant::now();
    let mut successor = s.spawn("successor", args);
    let exit = smm.wait(Duration::from_secs(60)).await;
    s.record.note(format!(
        "the holder whose lease was taken: {} after {:.1}s",
        describe(exit),
        taken.elapsed().as_secs_f64()
    ));
    if exit.is_none_or(|status| status.success()) {
        s.record.fail(format!(
            "the holder whose lease was taken did not stop as having lost it ({}):\n    {}",
            describe(exit),
            smm.tail(8)
        ));
    }
    let exit = successor.wait(COMMAND_LIMIT).await;
    let finished = Instant::now();
    if !exit.is_some_and(|status| status.success()) {
        s.record.fail(format!(
            "the run that took the lease failed ({}):\n    {}",
            describe(exit),
            successor.tail(10)
        ));
    }
    for overlap in overlaps.stop().await {
        s.record.fail(overlap);
    }
    s.check_helm_stopped(finished).await;
}
