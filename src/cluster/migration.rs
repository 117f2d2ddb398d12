//! Carries out a migration of workloads to a revision (planned by
//! `mesh::revisions::migration`): namespaces relabelled, then workloads restarted as
//! `kubectl rollout restart` does (the pod template's `kubectl.kubernetes.io/restartedAt`
//! annotation) in batches, each waited for until ready before the next starts. Also reads the
//! workloads a plan is made from.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::json;

use super::namespaces::{LabelError, merge_labels};
use super::workloads::{Readiness, WorkloadKind, WorkloadRef, observe};
use crate::mesh::revisions::migration::{MigrationPlan, Relabel, Restart, RestartKind, Workloads};

/// The pod-template annotation whose change makes a workload's controller replace its pods.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// How often a batch's readiness is read while waiting.
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum MigrationRunError {
    #[error("reading the cluster's {what}: {source}")]
    Read {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("relabelling {0}")]
    Label(#[from] LabelError),
    #[error("restarting {workload}: {source}")]
    Restart {
        workload: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "batch {batch} not ready within {timeout:?}: {}; run the migration again to resume",
        waiting.join("; ")
    )]
    Timeout {
        batch: usize,
        timeout: Duration,
        waiting: Vec<String>,
    },
}

/// How the restarts run.
#[derive(Clone, Copy, Debug)]
pub struct MigrationOptions {
    /// Workloads restarted at once (at least 1).
    pub batch: usize,
    /// How long one batch may take to become ready.
    pub timeout: Duration,
}

/// What a migration reports as it goes.
#[derive(Debug)]
pub enum MigrationEvent<'a> {
    Relabelled(&'a Relabel),
    /// Batch `index` of `of` (from 1) restarted, now waited for.
    Restarting {
        index: usize,
        of: usize,
        workloads: &'a [Restart],
    },
    Ready {
        index: usize,
        of: usize,
    },
}

/// What a migration did.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationReport {
    pub revision: String,
    pub relabelled: Vec<Relabel>,
    pub restarted: Vec<Restart>,
    /// Injected workloads that ran the revision already.
    pub up_to_date: usize,
}

/// Every Deployment, StatefulSet and DaemonSet of the cluster.
pub async fn read_workloads(client: &Client) -> Result<Workloads, MigrationRunError> {
    Ok(Workloads {
        deployments: list(client, "Deployments").await?,
        stateful_sets: list(client, "StatefulSets").await?,
        daemon_sets: list(client, "DaemonSets").await?,
    })
}

async fn list<K>(client: &Client, what: &'static str) -> Result<Vec<K>, MigrationRunError>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|list| list.items)
        .map_err(|source| MigrationRunError::Read { what, source })
}

/// Relabels the plan's namespaces, then restarts its workloads `options.batch` at a time,
/// waiting for each batch to be ready; `on_event` hears of each step.
pub async fn migrate(
    client: &Client,
    plan: &MigrationPlan,
    options: MigrationOptions,
    on_event: impl Fn(MigrationEvent<'_>),
) -> Result<MigrationReport, MigrationRunError> {
    for relabel in &plan.relabel {
        merge_labels(client, &relabel.namespace, json!(relabel.labels)).await?;
        on_event(MigrationEvent::Relabelled(relabel));
    }
    let batches: Vec<&[Restart]> = plan.restart.chunks(options.batch.max(1)).collect();
    let of = batches.len();
    for (index, batch) in batches.into_iter().enumerate() {
        let index = index + 1;
        let restarted_at = restart_time();
        for workload in batch {
            restart(client, workload, &restarted_at).await?;
        }
        on_event(MigrationEvent::Restarting {
            index,
            of,
            workloads: batch,
        });
        wait_ready(client, batch, index, options.timeout).await?;
        on_event(MigrationEvent::Ready { index, of });
    }
    Ok(MigrationReport {
        revision: plan.revision.clone(),
        relabelled: plan.relabel.clone(),
        restarted: plan.restart.clone(),
        up_to_date: plan.up_to_date,
    })
}

/// The time now as kubectl writes it into `restartedAt` (RFC 3339, whole seconds, UTC).
fn restart_time() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

async fn restart(
    client: &Client,
    workload: &Restart,
    restarted_at: &str,
) -> Result<(), MigrationRunError> {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        RESTARTED_AT: restarted_at,
    }}}}});
    let patch = Patch::Merge(&patch);
    let params = PatchParams::default();
    let (namespace, name) = (&workload.namespace, &workload.name);
    let patched = match workload.kind {
        RestartKind::Deployment => Api::<Deployment>::namespaced(client.clone(), namespace)
            .patch(name, &params, &patch)
            .await
            .map(drop),
        RestartKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .patch(name, &params, &patch)
            .await
            .map(drop),
        RestartKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), namespace)
            .patch(name, &params, &patch)
            .await
            .map(drop),
    };
    patched.map_err(|source| MigrationRunError::Restart {
        workload: workload.to_string(),
        source,
    })
}

/// Waits until every workload of `batch` is ready (kstatus' rules), up to `timeout`.
async fn wait_ready(
    client: &Client,
    batch: &[Restart],
    index: usize,
    timeout: Duration,
) -> Result<(), MigrationRunError> {
    let refs: Vec<WorkloadRef> = batch.iter().map(workload_ref).collect();
    let deadline = Instant::now() + timeout;
    loop {
        let states = observe(client, &refs)
            .await
            .map_err(|source| MigrationRunError::Read {
                what: "restarted workloads",
                source,
            })?;
        let waiting: Vec<String> = states
            .iter()
            .filter(|s| s.readiness != Readiness::Ready)
            .map(|s| s.describe())
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(MigrationRunError::Timeout {
                batch: index,
                timeout,
                waiting,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

fn workload_ref(workload: &Restart) -> WorkloadRef {
    WorkloadRef {
        kind: match workload.kind {
            RestartKind::Deployment => WorkloadKind::Deployment,
            RestartKind::StatefulSet => WorkloadKind::StatefulSet,
            RestartKind::DaemonSet => WorkloadKind::DaemonSet,
        },
        namespace: workload.namespace.clone(),
        name: workload.name.clone(),
    }
}
