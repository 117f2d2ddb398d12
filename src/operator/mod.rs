//! Operator mode: the same engine run in the cluster, watching ControlPlanes. While the
//! operator is installed it owns reconciliation and the CLI must not compete with it. This
//! module holds the operations on the operator itself (is it there, install, uninstall, purge);
//! the controller, its events and endpoints live in the submodules.

pub mod controller;
mod dashboard;
mod drift;
mod events;
mod failure_backoff;
mod http;
pub mod manifests;
mod metrics;
mod rbac;
mod reconcile;
mod watch_retry;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::api::ControlPlane;
use crate::api::objects::{NativeObject, Presence};
use crate::cluster::control_plane::{self, StoreError};
use crate::cluster::objects::{self, NativeError};
use crate::engine::report::ReconcileReport;
use crate::engine::session::{Request, Session, SessionError};
use controller::FINALIZER;
use manifests::{OperatorOptions, operator_objects};

/// The label every operator Deployment carries, in whatever namespace it was installed.
pub const OPERATOR_LABEL: (&str, &str) = ("app.kubernetes.io/name", "smm-operator");

/// Why the operator could not be looked up, installed or uninstalled (with or without a purge),
/// or why the CLI may not reconcile while the operator is installed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorLifecycleError {
    #[error(
        "the smm operator is installed ({deployment}) and reconciles ControlPlanes itself: \
         change the ControlPlane instead (kubectl edit controlplane {control_plane}), or \
         remove the operator first with `smm operator uninstall`. --dump-resources still works."
    )]
    Installed {
        deployment: String,
        control_plane: String,
    },
    #[error("cannot look for an installed smm operator: {0}")]
    Lookup(#[source] kube::Error),
    #[error("cannot list the smm operator's pods: {0}")]
    Pods(#[source] kube::Error),
    #[error(
        "{left} smm operator pod(s) in namespace {namespace} still running after {waited}s; its \
         rights and the rest are kept until they stop (run the uninstall again)"
    )]
    PodsStillRunning {
        namespace: String,
        left: usize,
        waited: u64,
    },
    #[error(transparent)]
    Objects(#[from] NativeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("ControlPlane {name}: cannot {what}: {source}")]
    ControlPlane {
        name: String,
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(
        "ControlPlane {name}: not every component could be uninstalled ({failures}); the \
         ControlPlane and the CRD are kept so nothing is orphaned"
    )]
    PurgeIncomplete { name: String, failures: String },
    #[error("ControlPlane {name}: {source}")]
    Purge {
        name: String,
        #[source]
        source: Box<SessionError>,
    },
}

/// A purge goes on to delete the ControlPlane (and later the CRD) only when its removal
/// finished: deleting them otherwise would orphan what is left, with nothing recording it.
fn removed_entirely(name: &str, report: &ReconcileReport) -> Result<(), OperatorLifecycleError> {
    if report.succeeded() {
        Ok(())
    } else {
        Err(OperatorLifecycleError::PurgeIncomplete {
            name: name.to_owned(),
            failures: report.unfinished().join("; "),
        })
    }
}

/// The operator Deployment as `namespace/name`, if one is installed. Read from the API
/// server's cache (`resourceVersion=0`): an operator is installed minutes before it matters,
/// and a consistent list waits for the cache to catch up with every write in the cluster.
pub async fn installed(client: &Client) -> Result<Option<String>, kube::Error> {
    let (key, value) = OPERATOR_LABEL;
    let found = Api::<Deployment>::all(client.clone())
        .list_metadata(
            &ListParams::default()
                .labels(&format!("{key}={value}"))
                .match_any(),
        )
        .await?;
    Ok(found
        .items
        .first()
        .map(|d| format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any())))
}

/// Fails when the operator is installed: it owns reconciliation, and a client-side reconcile
/// of `control_plane` would compete with it.
pub async fn ensure_absent(
    client: &Client,
    control_plane: &str,
) -> Result<(), OperatorLifecycleError> {
    match installed(client)
        .await
        .map_err(OperatorLifecycleError::Lookup)?
    {
        Some(deployment) => Err(OperatorLifecycleError::Installed {
            deployment,
            control_plane: control_plane.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Puts the operator into the cluster: CRD, RBAC, Deployment, metrics Service.
pub async fn install(
    client: &Client,
    options: &OperatorOptions,
) -> Result<(), OperatorLifecycleError> {
    objects::apply(client, &operator_objects(options, Presence::Present, true)).await?;
    Ok(())
}

/// Waits for the operator's pods in `namespace` to be gone, for at most their termination grace
/// period and a little more.
async fn wait_until_pods_gone(
    client: &Client,
    namespace: &str,
) -> Result<(), OperatorLifecycleError> {
    let (key, value) = OPERATOR_LABEL;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = ListParams::default().labels(&format!("{key}={value}"));
    let limit = Duration::from_secs(manifests::termination_grace_seconds().unsigned_abs() + 30);
    let started = tokio::time::Instant::now();
    loop {
        let left = pods
            .list_metadata(&selector)
            .await
            .map_err(OperatorLifecycleError::Pods)?
            .items
            .len();
        if left == 0 {
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(OperatorLifecycleError::PodsStillRunning {
                namespace: namespace.to_owned(),
                left,
                waited: limit.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What `uninstall` does to the ControlPlanes the operator managed.
pub enum UninstallMode<'a> {
    /// Components stay installed; only the operator's finalizer goes, so ControlPlanes can
    /// still be deleted.
    KeepComponents,
    /// Everything goes: each ControlPlane's components (dependents first, through `session`),
    /// the ControlPlanes, then the CRD.
    Purge { session: &'a Session },
}

/// Removes the operator. `on_control_plane` is told of each ControlPlane as it is handled.
pub async fn uninstall(
    client: &Client,
    options: &OperatorOptions,
    mode: UninstallMode<'_>,
    on_control_plane: impl Fn(&str),
) -> Result<(), OperatorLifecycleError> {
    // Stop the operator first, so it does not reconcile what is being taken apart. Its rights
    // go only once its pods are gone: a stopping pod lets a running helm finish, and cut off
    // mid-upgrade that helm would leave its release pending, with a lease that can be neither
    // renewed nor given back.
    let deployment = NativeObject::absent(&manifests::deployment(options));
    objects::apply(client, std::slice::from_ref(&deployment)).await?;
    wait_until_pods_gone(client, &options.namespace).await?;
    objects::apply(client, &operator_objects(options, Presence::Absent, false)).await?;
    let control_planes: Api<ControlPlane> = Api::all(client.clone());
    let existing = control_plane::list(client).await?;
    let failed = |name: &str, what| {
        let name = name.to_owned();
        move |source| OperatorLifecycleError::ControlPlane { name, what, source }
    };
    for control_plane in existing {
        let name = control_plane.name_any();
        on_control_plane(&name);
        if let UninstallMode::Purge { session } = mode {
            let report = session
                .run(&name, Request::RemoveAll, |holder| {
                    tracing::info!(control_plane = %name, %holder, "waiting for another reconcile to finish")
                })
                .await
                .map_err(|source| OperatorLifecycleError::Purge {
                    name: name.clone(),
                    source: Box::new(source),
                })?;
            removed_entirely(&name, &report)?;
        }
        let finalizers: Vec<String> = control_plane
            .finalizers()
            .iter()
            .filter(|f| f.as_str() != FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": finalizers}});
        control_planes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(failed(&name, "remove its finalizer"))?;
        if let UninstallMode::Purge { .. } = mode {
            control_planes
                .delete(&name, &Default::default())
                .await
                .map_err(failed(&name, "delete it"))?;
        }
    }
    if let UninstallMode::Purge { .. } = mode {
        objects::apply(client, &operator_objects(options, Presence::Absent, true)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::decide::Operation;
    use crate::engine::report::{ComponentReport, Outcome};

    /// A purge whose removal left a component behind keeps the ControlPlane (and so the CRD):
    /// deleting them would orphan the component with nothing recording it. The error says
    /// which component and why.
    #[test]
    fn a_purge_stops_before_deleting_what_a_failed_removal_left() {
        let removal = |outcome: Outcome| ReconcileReport {
            control_plane: "mesh".to_owned(),
            rounds: 1,
            ready: false,
            revisit_after: None,
            multi_cluster_primary: false,
            clusters: Vec::new(),
            components: vec![ComponentReport {
                name: "istiod".to_owned(),
                action: Operation::Uninstall,
                reason: "disabled".to_owned(),
                outcome,
            }],
        };
        assert!(removed_entirely("mesh", &removal(Outcome::Done)).is_ok());
        let err = removed_entirely("mesh", &removal(Outcome::Failed("timed out".to_owned())))
            .unwrap_err();
        assert!(
            matches!(err, OperatorLifecycleError::PurgeIncomplete { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("istiod: timed out"), "{err}");
    }
}
