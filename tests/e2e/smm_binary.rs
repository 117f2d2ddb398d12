//! The `smm` binary itself against the real cluster.

use std::process::Command;

use crate::support::{HelmTool, TestCluster};

#[tokio::test]
async fn version_reports_the_real_api_server_and_helm() {
    let cluster = TestCluster::connect().await;
    let server = cluster
        .client
        .apiserver_version()
        .await
        .unwrap()
        .git_version;
    let output = Command::new(env!("CARGO_BIN_EXE_smm"))
        .args(["version", "-o", "json", "--helm-binary"])
        .arg(HelmTool::Helm3.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["server"]["version"], server.as_str());
    let helm = report["helm"]["version"].as_str().unwrap_or_default();
    assert!(helm.starts_with("v3."), "{report}");
}
