//! The local control plane itself: what the other tests rely on beyond a bare API server.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::DeleteParams;

use crate::support::{TestCluster, eventually};

/// Namespace deletion needs kube-controller-manager's namespace controller: without it the
/// namespace stays Terminating forever.
#[tokio::test]
async fn a_deleted_namespace_goes_away() {
    let cluster = TestCluster::connect().await;
    let namespace = cluster.namespace("e2e-nsdel").await;
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    namespaces
        .delete(&namespace.name, &DeleteParams::default())
        .await
        .unwrap();
    let gone = eventually(Duration::from_secs(60), || async {
        matches!(namespaces.get_opt(&namespace.name).await, Ok(None))
    })
    .await;
    assert!(
        gone,
        "namespace {} is still there after 60s",
        namespace.name
    );
}
