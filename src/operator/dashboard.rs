//! The read-only dashboard, served by the operator on the pod's loopback.

use std::net::SocketAddr;
use std::sync::Arc;

use kube::Client;

use super::controller::ControllerError;
use crate::dashboard::{self, Access, Dashboard};
use crate::helm::Helm;
use crate::mesh::catalog::Catalog;

/// Serves the dashboard on every replica (it only reads, so standbys serve it too). Bound before
/// anything else happens, so a wrong address stops the operator at once. Loopback only: whoever
/// reaches it through `kubectl port-forward` may already port-forward into the operator's pod.
pub(super) async fn serve(
    address: SocketAddr,
    client: &Client,
    helm: &Helm,
    catalog: &Arc<Catalog>,
) -> Result<(), ControllerError> {
    if !address.ip().is_loopback() {
        return Err(ControllerError::DashboardNotLoopback(address));
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ControllerError::Dashboard { address, source })?;
    let view = Arc::new(Dashboard::new(
        client.clone(),
        helm.clone(),
        catalog.clone(),
        None,
    ));
    tracing::info!(%address, "serving the dashboard");
    tokio::spawn(async move {
        if let Err(err) =
            dashboard::serve(listener, view, Access::Loopback, std::future::pending()).await
        {
            tracing::error!(%err, "the dashboard stopped");
        }
    });
    Ok(())
}
