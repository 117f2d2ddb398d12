//! The read-only dashboard, served by the operator on the pod's loopback, behind the token of
//! a Secret in the operator's namespace.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use super::OPERATOR_LABEL;
use super::controller::ControllerError;
use crate::dashboard::{self, Access, Dashboard, Token};
use crate::helm::Helm;
use crate::mesh::catalog::Catalog;

/// The Secret, in the operator's namespace, whose `token` opens the dashboard.
pub const TOKEN_SECRET: &str = "smm-operator-dashboard";
const TOKEN_KEY: &str = "token";

/// Serves the dashboard on every replica (it only reads, so standbys serve it too). Bound before
/// anything else happens, so a wrong address stops the operator at once. Loopback only, so it is
/// reached through `kubectl port-forward`; and behind a token, since a port-forward listens on
/// the workstation's loopback, where every local user can connect.
pub(super) async fn serve(
    address: SocketAddr,
    namespace: &str,
    client: &Client,
    helm: &Helm,
    catalog: &Arc<Catalog>,
) -> Result<(), ControllerError> {
    if !address.ip().is_loopback() {
        return Err(ControllerError::DashboardNotLoopback(address));
    }
    let token = token(client, namespace, address.port()).await?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ControllerError::Dashboard { address, source })?;
    let view = Arc::new(Dashboard::new(
        client.clone(),
        helm.clone(),
        catalog.clone(),
        None,
    ));
    tracing::info!(%address, secret = %format!("{namespace}/{TOKEN_SECRET}"), "serving the dashboard; its token is in the Secret");
    tokio::spawn(async move {
        if let Err(err) = dashboard::serve(
            listener,
            view,
            Access::Forwarded(token),
            std::future::pending(),
        )
        .await
        {
            tracing::error!(%err, "the dashboard stopped");
        }
    });
    Ok(())
}

/// The token of the Secret, made on first start: every replica serves with the same one, so a
/// port-forward to any of them opens with it, and it lasts until someone deletes the Secret
/// (the replicas started next make a new one).
async fn token(client: &Client, namespace: &str, port: u16) -> Result<Token, ControllerError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let failed = |source| ControllerError::DashboardSecret {
        namespace: namespace.to_owned(),
        source,
    };
    let fresh = Token::generate(port).map_err(|source| ControllerError::DashboardToken {
        namespace: namespace.to_owned(),
        source,
    })?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(TOKEN_SECRET.to_owned()),
            labels: Some(BTreeMap::from([(
                OPERATOR_LABEL.0.to_owned(),
                OPERATOR_LABEL.1.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(
            TOKEN_KEY.to_owned(),
            fresh.secret().to_owned(),
        )])),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => return Ok(fresh),
        // Another replica (or an earlier start) made it: use its token.
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => return Err(failed(err)),
    }
    let kept = secrets.get(TOKEN_SECRET).await.map_err(failed)?;
    let secret = kept
        .data
        .as_ref()
        .and_then(|data| data.get(TOKEN_KEY))
        .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
        .unwrap_or_default();
    Token::from_secret(&secret, port).map_err(|source| ControllerError::DashboardToken {
        namespace: namespace.to_owned(),
        source,
    })
}
