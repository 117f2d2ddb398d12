//! How the mesh's data plane runs (`spec.profile`) and on which Kubernetes distribution
//! (`spec.platform`): the two settings that decide which node agents exist and how Istio's charts
//! are told about them.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The data plane: a proxy in every pod, or Istio's sidecar-less ambient mode.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Envoy sidecars injected into the pods of labelled namespaces.
    #[default]
    Sidecar,
    /// istio-cni and ztunnel on every node, waypoints for L7; istiod in ambient mode. Sidecar
    /// injection keeps working beside it.
    Ambient,
}

impl Profile {
    /// The name Istio's charts know the profile by (`profile=ambient`); the sidecar profile is
    /// their default and has none.
    pub fn chart_profile(self) -> Option<&'static str> {
        match self {
            Self::Sidecar => None,
            Self::Ambient => Some("ambient"),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sidecar => "sidecar",
            Self::Ambient => "ambient",
        })
    }
}

/// The Gateway API's CRDs, applied by smm beside Istio's. They are never deleted (deleting a CRD
/// deletes every object of its kind), and never replace Gateway API CRDs of a newer bundle
/// version or of the experimental channel that someone else installed.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayApi {
    /// Whether smm applies them. Unset: under the ambient profile only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A Kubernetes distribution whose node agents need settings of their own (CNI paths, resource
/// quotas for node-critical pods): each is one of Istio's chart platform profiles
/// (`files/profile-platform-<name>.yaml`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Gke,
    K3d,
    K3s,
    Microk8s,
    Minikube,
    Openshift,
}

impl Platform {
    pub const ALL: [Self; 6] = [
        Self::Gke,
        Self::K3d,
        Self::K3s,
        Self::Microk8s,
        Self::Minikube,
        Self::Openshift,
    ];

    /// The name Istio's charts take as `global.platform`.
    pub fn chart_platform(self) -> &'static str {
        match self {
            Self::Gke => "gke",
            Self::K3d => "k3d",
            Self::K3s => "k3s",
            Self::Microk8s => "microk8s",
            Self::Minikube => "minikube",
            Self::Openshift => "openshift",
        }
    }
}
