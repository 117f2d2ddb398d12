//! Two writers at once: the operator reconciling a ControlPlane (istiod's upgrade, its new pods
//! held back by a quota) while `smm reconcile -f` of the same spec starts. One of them waits
//! for the other's reconcile lease: never do two helm processes work on one release at once, and
//! the campaign's checks hold afterwards.

use std::time::Duration;

use serde_json::json;

use crate::operator::{
    finalized_control_planes, leader_namespace, restore_finalizers, start_operator,
};
use crate::plan::Signal;
use crate::process::{OverlapWatch, describe};
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
    let overlaps = OverlapWatch::start(&s.ctx.helm, &s.ctx.kubeconfig);
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
    for overlap in overlaps.stop().await {
        s.record.fail(overlap);
    }
    restore_finalizers(s, &finalized_before).await;
    s.check_spec_after_fault(&[&intended]).await;
    s.verify_reconciled(&intended).await;
}
