//! Other writers of a managed mesh: two `smm install` at once, a hand-made helm command, and a
//! second ControlPlane on the first one's mesh namespace.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::checks::release_records;
use crate::process::{describe, tail};
use crate::scene::{COMMAND_LIMIT, Scene};
use crate::spec::{strings, with_enabled};
use crate::support::{self, repo_root, unique_name};

pub async fn concurrent_fault(
    s: &mut Scene<'_>,
    first: &'static str,
    second: &'static str,
    offset_ms: u64,
) {
    let before = s.spec().await;
    let intended = with_enabled(&s.ctx.catalog, &before, &[first, second], true);
    let one = s.on_cp(&["install", first]);
    let two = s.on_cp(&["install", second]);
    let mut a = s.spawn(&format!("install-{first}"), &one);
    tokio::time::sleep(Duration::from_millis(offset_ms)).await;
    let mut b = s.spawn(&format!("install-{second}"), &two);
    let (ea, eb) = (a.wait(COMMAND_LIMIT).await, b.wait(COMMAND_LIMIT).await);
    for (component, exit, proc) in [(first, ea, &a), (second, eb, &b)] {
        if !exit.is_some_and(|st| st.success()) {
            s.record.fail(format!(
                "smm install {component}: {}:\n    {}",
                describe(exit),
                proc.tail(10)
            ));
        }
    }
    // Both must stick: the stored spec has both before any further run.
    s.check_spec_after_fault(&[&intended]).await;
    s.verify_reconciled(&intended).await;
}

pub async fn hand_helm_fault(s: &mut Scene<'_>, rollback: bool, replicas: u64) {
    let mut setup = s.on_cp(&["install", "istiod"]);
    if !s.setup(&setup).await {
        return;
    }
    if rollback {
        setup.extend(strings(&["--set", &format!("replicaCount={replicas}")]));
        if !s.setup(&setup).await {
            return;
        }
    }
    let intended = s.spec().await;
    let release = s
        .ctx
        .catalog
        .get("istiod")
        .map(|c| c.release_name)
        .unwrap_or("istiod");
    // Istio's istiod chart as scripts/istio/fetch.sh fetched it: what someone upgrading the
    // release by hand would use.
    let chart = repo_root().join(".upstream/istio/charts/istio-discovery");
    let mut helm_args: Vec<String> = if rollback {
        strings(&["rollback", release, "1"])
    } else {
        vec![
            "upgrade".to_owned(),
            release.to_owned(),
            chart.to_string_lossy().into_owned(),
            "--reuse-values".to_owned(),
            // Istio's chart leaves the replica count to its autoscaler unless told otherwise.
            "--set".to_owned(),
            format!("autoscaleEnabled=false,replicaCount={replicas}"),
        ]
    };
    helm_args.extend(strings(&[
        "--namespace",
        &s.ns,
        "--kubeconfig",
        &s.ctx.kubeconfig,
    ]));
    let log = s.log("hand-helm");
    let file = std::fs::File::create(&log).expect("a log file");
    let helm = Command::new(&s.ctx.helm)
        .args(&helm_args)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status();
    if !helm.as_ref().is_ok_and(|st| st.success()) {
        s.record.fail(format!(
            "the hand-made `helm {}` failed: {}",
            helm_args.join(" "),
            tail(&log, 6)
        ));
        return;
    }
    // The fault took: the Deployment now has the hand-made replica count.
    let hand = if rollback { 1 } else { replicas as i32 };
    let deployments: Api<Deployment> = Api::namespaced(s.ctx.client.clone(), &s.ns);
    let changed = support::eventually(Duration::from_secs(20), async || {
        deployments
            .get_opt("istiod")
            .await
            .ok()
            .flatten()
            .and_then(|d| d.spec.and_then(|spec| spec.replicas))
            == Some(hand)
    })
    .await;
    if !changed {
        s.record.fail(format!(
            "the hand-made helm command did not set istiod to {hand} replicas"
        ));
    }
    s.check_spec_after_fault(&[&intended]).await;
    s.verify_reconciled(&intended).await;
}

pub async fn second_control_plane_fault(s: &mut Scene<'_>, replicas: u64) {
    if !s.setup(&s.on_cp(&["install", "istiod"])).await {
        return;
    }
    let intended = s.spec().await;
    let releases_before = release_records(&s.ctx.client, &s.ns).await;
    let deployments_before = deployment_generations(s).await;

    let other = unique_name("fault-second");
    s.other_cps.push(other.clone());
    let mut spec = json!({"namespace": s.ns, "components": {}});
    for name in s.ctx.catalog.names() {
        spec["components"][name] = json!({"enabled": false});
    }
    let mut spec = with_enabled(&s.ctx.catalog, &spec, &["istiod"], true);
    spec["components"]["istiod"]["valuesOverride"] = json!({"replicaCount": replicas});
    let file = s.write_control_plane("second.json", &other, &spec);
    let (status, proc) = s
        .run("second-reconcile", &strings(&["reconcile", "-f", &file]))
        .await;
    let output = std::fs::read_to_string(&proc.log).unwrap_or_default();
    if status.is_some_and(|st| st.success()) {
        s.record.fail(format!(
            "the second ControlPlane {other} on {} was reconciled, not refused",
            s.ns
        ));
    } else if status.and_then(|st| st.code()) != Some(1) || !output.contains(&s.cp) {
        s.record.fail(format!(
            "the second ControlPlane's refusal ({}) does not name the owner {}:\n    {}",
            describe(status),
            s.cp,
            proc.tail(8)
        ));
    }
    // Removing the second one must not remove the first one's mesh either.
    let (_, _) = s
        .run(
            "second-uninstall",
            &strings(&["uninstall", "-a", "--control-plane", &other]),
        )
        .await;
    s.delete_control_plane(&other).await;

    let releases_after = release_records(&s.ctx.client, &s.ns).await;
    match (releases_before, releases_after) {
        (Ok(before), Ok(after)) if before != after => s.record.fail(format!(
            "the first ControlPlane's releases changed: {before:?} -> {after:?}"
        )),
        (Ok(_), Ok(_)) => {}
        (Err(err), _) | (_, Err(err)) => s.record.fail(format!("listing helm's records: {err}")),
    }
    let deployments_after = deployment_generations(s).await;
    if deployments_after != deployments_before {
        s.record.fail(format!(
            "the first ControlPlane's Deployments changed (name: generation): \
             {deployments_before:?} -> {deployments_after:?}"
        ));
    }
    s.check_spec_after_fault(&[&intended]).await;
    s.verify_reconciled(&intended).await;
}

/// The mesh namespace's Deployments, name → generation.
async fn deployment_generations(s: &Scene<'_>) -> BTreeMap<String, Option<i64>> {
    let deployments: Api<Deployment> = Api::namespaced(s.ctx.client.clone(), &s.ns);
    deployments
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .map(|d| (d.name_any(), d.metadata.generation))
        .collect()
}
