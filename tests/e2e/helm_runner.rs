//! The helm runner against the real cluster, with helm 4 and helm 3.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::Api;
use kube::api::ListParams;

use smm::helm::HelmError;
use smm::helm::release::ReleaseRef;

use crate::support::{HelmTool, TestCluster, eventually, fixture_chart};

fn values_file(dir: &tempfile::TempDir, yaml: &str) -> std::path::PathBuf {
    let path = dir.path().join("values.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn install_read_back_uninstall(tool: HelmTool) {
    let cluster = TestCluster::connect().await;
    let namespace = cluster
        .namespace(&format!("e2e-helm{}", tool.major()))
        .await;
    let helm = cluster.helm(tool);
    assert_eq!(helm.version().await.unwrap().major, tool.major());

    let release = ReleaseRef {
        name: "tiny".to_owned(),
        namespace: namespace.name.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let values = values_file(&dir, "greeting: from-the-test\n");
    let owner = [("smm.dev/owner", "e2e-owner")];
    helm.upgrade_install(&release, &fixture_chart("tiny"), &values, &owner)
        .await
        .unwrap();

    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &namespace.name);
    let service_accounts: Api<ServiceAccount> =
        Api::namespaced(cluster.client.clone(), &namespace.name);
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &namespace.name);

    let settings = config_maps.get("tiny-settings").await.unwrap();
    let data = settings.data.unwrap_or_default();
    assert_eq!(
        data.get("greeting").map(String::as_str),
        Some("from-the-test")
    );
    service_accounts.get("tiny").await.unwrap();
    let records = secrets
        .list(&ListParams::default().labels("owner=helm,name=tiny"))
        .await
        .unwrap();
    assert_eq!(records.items.len(), 1, "one helm release record");
    // What smm passes as labels lands on helm's record, where ownership is read from.
    let labels = records.items[0].metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("smm.dev/owner").map(String::as_str),
        Some("e2e-owner")
    );

    helm.uninstall(&release, true).await.unwrap();
    assert!(
        config_maps
            .get_opt("tiny-settings")
            .await
            .unwrap()
            .is_none()
    );
    assert!(service_accounts.get_opt("tiny").await.unwrap().is_none());
    let records_gone = eventually(Duration::from_secs(10), || async {
        secrets
            .list(&ListParams::default().labels("owner=helm,name=tiny"))
            .await
            .map(|list| list.items.is_empty())
            .unwrap_or(false)
    })
    .await;
    assert!(records_gone, "helm's release record is removed");
    // version, upgrade --install, uninstall: nothing else may spawn helm.
    assert_eq!(helm.processes_spawned(), 3);
}

#[tokio::test]
async fn helm4_installs_and_uninstalls_a_chart() {
    install_read_back_uninstall(HelmTool::Helm4).await;
}

#[tokio::test]
async fn helm3_installs_and_uninstalls_a_chart() {
    install_read_back_uninstall(HelmTool::Helm3).await;
}

#[tokio::test]
async fn a_rejected_install_reports_helms_error_line() {
    let cluster = TestCluster::connect().await;
    let namespace = cluster.namespace("e2e-helm-fail").await;
    let helm = cluster.helm(HelmTool::Helm4);
    let release = ReleaseRef {
        name: "broken".to_owned(),
        namespace: namespace.name.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    // Upper case is not allowed in object names, so the API server refuses the ConfigMap.
    let values = values_file(&dir, "configMapName: Not_A_Valid_Name\n");
    let err = helm
        .upgrade_install(&release, &fixture_chart("tiny"), &values, &[])
        .await
        .unwrap_err();
    let HelmError::Failed { message, .. } = &err else {
        panic!("expected a helm failure, got {err}");
    };
    assert!(message.contains("Not_A_Valid_Name"), "{message}");
    assert!(!message.starts_with("Error:"), "{message}");
}
