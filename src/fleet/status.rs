//! `status`: each attached cluster as the primary's istiod reaches it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use super::{FleetError, api_error, istiod_namespace, now, record_status};
use crate::api::AttachedCluster;
use crate::cluster::control_plane;
use crate::mesh::catalog::Catalog;
use crate::mesh::multicluster::{self, model_of};
use crate::mesh::revisions::strategy;

/// How long a probe of an attached cluster's API server may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One attached cluster as `smm cluster status` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    #[serde(flatten)]
    pub cluster: AttachedCluster,
    /// The cluster whose istiod reads it (this one) and the istiod revision serving it.
    pub served_by: String,
    pub revision: String,
}

/// Every cluster attached to `control_plane`, each probed through its remote secret (the
/// credentials istiod itself uses), and the result written into `status.clusters`.
pub async fn status(
    client: &Client,
    catalog: &Catalog,
    control_plane: &str,
) -> Result<Vec<ClusterState>, FleetError> {
    let cp = control_plane::load(client, control_plane)
        .await?
        .ok_or_else(|| FleetError::NoControlPlane {
            name: control_plane.to_owned(),
        })?;
    let spec = &cp.spec;
    let here = spec
        .multi_cluster
        .as_ref()
        .map(|mc| mc.cluster_name.clone())
        .unwrap_or_default();
    let revision = strategy::active(spec)?.name().to_owned();
    let namespace = istiod_namespace(catalog, spec);
    let selector = multicluster::remote_secret_selector(control_plane);
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            api_error(
                "this cluster",
                "list",
                format!("remote secrets in {namespace}"),
                e,
            )
        })?;
    let recorded: Vec<AttachedCluster> = cp.status.map(|s| s.clusters).unwrap_or_default();
    let mut states = Vec::new();
    for secret in secrets.items {
        let Some(name) = secret
            .annotations()
            .get(multicluster::CLUSTER_ANNOTATION)
            .cloned()
        else {
            continue;
        };
        let probe = probe(&secret, &name).await;
        let before = recorded.iter().find(|c| c.name == name);
        let cluster = AttachedCluster {
            name: name.clone(),
            model: model_of(&secret),
            network: before.and_then(|c| c.network.clone()),
            reachable: probe.is_ok(),
            remote_secret_created: secret.metadata.creation_timestamp.clone(),
            message: probe.err(),
            last_probe_time: Some(now()),
        };
        record_status(client, control_plane, &cluster).await?;
        states.push(ClusterState {
            cluster,
            served_by: here.clone(),
            revision: revision.clone(),
        });
    }
    Ok(states)
}

/// Reaches the cluster as istiod does, with the remote secret's kubeconfig: its API server
/// answers and the reader may list Services there.
async fn probe(secret: &Secret, cluster: &str) -> Result<(), String> {
    let data = secret.data.as_ref().and_then(|data| data.get(cluster));
    let text = data.ok_or_else(|| format!("the remote secret has no key {cluster}"))?;
    let kubeconfig: Kubeconfig = serde_yaml_ng::from_slice(&text.0)
        .map_err(|err| format!("the remote secret's kubeconfig does not parse: {err}"))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|err| format!("the remote secret's kubeconfig is not usable: {err}"))?;
    config.connect_timeout = Some(PROBE_TIMEOUT);
    config.read_timeout = Some(PROBE_TIMEOUT);
    let client = Client::try_from(config).map_err(|err| err.to_string())?;
    let services = Api::<k8s_openapi::api::core::v1::Service>::all(client);
    services
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map(|_| ())
        .map_err(|err| format!("the reader cannot list Services there: {err}"))
}
