//! Operator mode: the same engine run in the cluster, watching ControlPlanes. While the
//! operator is installed it owns reconciliation and the CLI must not compete with it.

pub mod controller;
mod http;
pub mod manifests;
mod metrics;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

/// The label every operator Deployment carries, in whatever namespace it was installed.
pub const OPERATOR_LABEL: (&str, &str) = ("app.kubernetes.io/name", "smm-operator");

/// The operator Deployment as `namespace/name`, if one is installed.
pub async fn installed(client: &Client) -> Result<Option<String>, kube::Error> {
    let (key, value) = OPERATOR_LABEL;
    let found = Api::<Deployment>::all(client.clone())
        .list_metadata(
            &ListParams::default()
                .labels(&format!("{key}={value}"))
                .limit(1),
        )
        .await?;
    Ok(found
        .items
        .first()
        .map(|d| format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any())))
}
