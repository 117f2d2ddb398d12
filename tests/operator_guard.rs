//! While the operator is installed, the CLI must not reconcile. This lives in a test binary of
//! its own because an operator Deployment affects every CLI run against the cluster, and cargo
//! runs test binaries one after another, never alongside the end-to-end suite.

#[allow(dead_code)]
#[path = "e2e/support.rs"]
mod support;

use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use support::{HelmTool, TestCluster};

#[tokio::test]
async fn the_cli_refuses_to_reconcile_while_the_operator_is_installed() {
    let cluster = TestCluster::connect().await;
    let namespace = cluster.namespace("e2e-guard").await;
    let (key, value) = smm::operator::OPERATOR_LABEL;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "smm-operator", "labels": {key: value}},
        "spec": {
            "selector": {"matchLabels": {key: value}},
            "template": {
                "metadata": {"labels": {key: value}},
                "spec": {"containers": [{"name": "operator", "image": "smm:test"}]}
            }
        }
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &namespace.name);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let smm = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_smm"))
            .args(args)
            .env("SMM_HELM", HelmTool::Helm4.path())
            .output()
            .unwrap()
    };
    for refused in [
        smm(&["install", "istiod", "--control-plane", "e2e-guard"]),
        smm(&["uninstall", "-a", "--control-plane", "e2e-guard"]),
    ] {
        assert_eq!(refused.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("the smm operator is installed"), "{stderr}");
        assert!(stderr.contains("smm operator uninstall"), "{stderr}");
    }
    let dump = smm(&[
        "install",
        "istiod",
        "--dump-resources",
        "--control-plane",
        "e2e-guard",
    ]);
    assert!(dump.status.success(), "{dump:?}");
    deployments
        .delete("smm-operator", &Default::default())
        .await
        .unwrap();
}
