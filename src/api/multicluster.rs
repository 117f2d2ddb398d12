//! One mesh over several clusters: what this cluster is called in the mesh (`spec.multiCluster`)
//! and which clusters are attached to it (`status.clusters`).
//!
//! Attached clusters are not part of the spec: attaching needs the other cluster's credentials,
//! which live in a Secret beside smm (as Argo CD keeps its clusters), not in the ControlPlane a
//! GitOps repository holds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// This cluster's place in a mesh of several clusters. Unset: a mesh of one cluster.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MultiCluster {
    /// The mesh's ID, the same in every cluster of the mesh. Unset: the trust domain, as Istio
    /// defaults it.
    #[serde(default, rename = "meshID", skip_serializing_if = "Option::is_none")]
    pub mesh_id: Option<String>,
    /// This cluster's name in the mesh (Istio's cluster ID), unique in the mesh.
    pub cluster_name: String,
    /// The network this cluster's pods are on: clusters on one network reach each other's pods
    /// directly, others through an east-west gateway. Unset: every cluster on one network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Set on a remote cluster: the primary whose istiod serves it. This cluster then runs no
    /// istiod, only what the primary's istiod needs here (Istio's `remote` profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<PrimaryCluster>,
}

impl MultiCluster {
    /// The mesh ID, defaulted to `trust_domain` as Istio does.
    pub fn mesh_id<'a>(&'a self, trust_domain: &'a str) -> &'a str {
        self.mesh_id.as_deref().unwrap_or(trust_domain)
    }
}

/// The primary cluster a remote one is served by.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrimaryCluster {
    /// The primary's cluster name (its `spec.multiCluster.clusterName`).
    pub cluster_name: String,
    /// The IP address this cluster's proxies reach the primary's istiod at (ports 15012 and
    /// 15017), usually an east-west gateway's.
    pub address: String,
}

/// How an attached cluster takes part in the mesh.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ClusterModel {
    /// No istiod of its own: its proxies and its injector use this cluster's istiod.
    #[default]
    Remote,
    /// Its own istiod, of a ControlPlane of its own; each istiod discovers the other cluster.
    Primary,
}

/// One cluster attached to this one's mesh, as the last reconcile or attach saw it.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttachedCluster {
    pub name: String,
    pub model: ClusterModel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Whether smm reached the cluster's API server the last time it tried.
    pub reachable: bool,
    /// When the remote secret istiod reads the cluster through was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_secret_created: Option<Time>,
    /// Why the cluster's part is not in its desired state, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When smm last tried to reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
}
