//! Reconciling every remote cluster attached to a ControlPlane after the primary's own
//! reconcile: one session per cluster, against that cluster, with the manager account the
//! attach made there. A cluster that cannot be reached, or whose part fails, is recorded as
//! such in the primary's `status.clusters`; the primary and the other clusters go on.

use std::io::Write as _;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, Client};

use super::{FleetError, Reach, SessionSettings, api_error, now, record_status};
use crate::api::names::SMM_NAMESPACE;
use crate::api::{AttachedCluster, ClusterModel, ControlPlane};
use crate::cluster::target::ClusterTarget;
use crate::desired::resolved::Resolved;
use crate::engine::session::Request;
use crate::mesh::multicluster::{self, Attachment};

/// Reconciles the part of every remote cluster attached to `control_plane` (as stored in the
/// primary), each in a session of its own, and records each outcome in the primary's status.
/// Returns the clusters as recorded. Only a failure to read the primary is an error.
pub async fn reconcile_attached(
    primary: &Client,
    control_plane: &ControlPlane,
    settings: &SessionSettings,
) -> Result<Vec<AttachedCluster>, FleetError> {
    let name = kube::ResourceExt::name_any(control_plane);
    if control_plane.spec.multi_cluster.is_none() {
        return Ok(Vec::new());
    }
    let selector = multicluster::manager_secret_selector(&name);
    let secrets = Api::<Secret>::namespaced(primary.clone(), SMM_NAMESPACE)
        .list(&ListParams::default().labels(&selector))
        .await;
    let secrets = match secrets {
        Ok(list) => list.items,
        // No smm namespace yet: nothing was ever attached.
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(source) => {
            let what = format!("the attached clusters' Secrets in {SMM_NAMESPACE}");
            return Err(api_error("this cluster", "list", what, source));
        }
    };
    let recorded = control_plane
        .status
        .as_ref()
        .map(|status| status.clusters.clone())
        .unwrap_or_default();
    let mut clusters = Vec::new();
    for secret in &secrets {
        let Some(attachment) = multicluster::attachment_of(secret) else {
            continue;
        };
        let outcome = reconcile_one(control_plane, secret, &attachment, settings).await;
        let before = recorded.iter().find(|c| c.name == attachment.name);
        let cluster = AttachedCluster {
            name: attachment.name.clone(),
            model: ClusterModel::Remote,
            network: before.and_then(|c| c.network.clone()),
            reachable: !matches!(outcome, Err(FleetError::Unreachable { .. })),
            remote_secret_created: before.and_then(|c| c.remote_secret_created.clone()),
            message: outcome.err().map(|err| err.to_string()),
            last_probe_time: Some(now()),
        };
        if let Some(message) = &cluster.message {
            tracing::warn!(control_plane = %name, cluster = %cluster.name, %message, "attached cluster not reconciled");
        }
        record_status(primary, &name, &cluster).await?;
        clusters.push(cluster);
    }
    Ok(clusters)
}

/// One remote cluster's session: its spec from the primary's, its reach from the manager's
/// kubeconfig (written to a private file for helm while the session runs).
async fn reconcile_one(
    control_plane: &ControlPlane,
    secret: &Secret,
    attachment: &Attachment,
    settings: &SessionSettings,
) -> Result<(), FleetError> {
    let name = kube::ResourceExt::name_any(control_plane);
    let cluster = attachment.name.as_str();
    let credentials = |why: String| FleetError::Credentials {
        cluster: cluster.to_owned(),
        why,
    };
    let kubeconfig = secret
        .data
        .as_ref()
        .and_then(|data| data.get("kubeconfig"))
        .ok_or_else(|| credentials("its Secret has no key kubeconfig".to_owned()))?;
    // tempfile creates the file readable by its owner only: it holds the manager's token.
    let mut file = tempfile::NamedTempFile::new().map_err(|err| credentials(err.to_string()))?;
    file.write_all(&kubeconfig.0)
        .map_err(|err| credentials(err.to_string()))?;
    let target = ClusterTarget {
        kubeconfig: Some(file.path().to_owned()),
        context: None,
    };
    let reach = Reach {
        client: target
            .client()
            .await
            .map_err(|err| credentials(err.to_string()))?,
        watches: target
            .watch_client()
            .await
            .map_err(|err| credentials(err.to_string()))?,
        target,
    };
    reach.check_reachable(cluster).await?;
    let spec = super::remote_spec(&settings.catalog, &name, &control_plane.spec, attachment)?;
    let resolved = Resolved::new(&settings.catalog, &name, spec)?;
    let request = Request::Replace(Box::new(resolved));
    let run = settings.run(&reach, cluster, &name, request).await?;
    if run.succeeded() {
        Ok(())
    } else {
        Err(FleetError::RemoteNotReconciled {
            cluster: cluster.to_owned(),
            control_plane: name,
        })
    }
}
