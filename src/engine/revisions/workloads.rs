//! `spec.updateStrategy.updateWorkloads`: once the active revision is Ready and the tags have
//! moved, the workloads still on an inactive revision are moved to it, as `smm sidecar-proxy
//! migrate` moves them: namespaces relabelled, workloads restarted in batches, each batch
//! waited for. Namespaces that select a tag the spec pins to a revision stay where the user
//! pinned them; the mesh's own namespace is the gateways', which their upgrade restarts.

use std::collections::BTreeSet;
use std::time::Duration;

use super::RevisionError;
use crate::api::RevisionStatus;
use crate::cluster::mesh_snapshot;
use crate::cluster::migration::{self, MigrationEvent, MigrationOptions};
use crate::desired::resolved::Resolved;
use crate::engine::step::ComponentError;
use crate::engine::{Engine, WaitPolicy};
use crate::mesh::injection::check_injectable;
use crate::mesh::revisions::migration::{MigrationRequest, plan};
use crate::mesh::revisions::usage::{MeshSnapshot, namespace_selection, revision_usage};

/// Workloads restarted at once.
const BATCH: usize = 5;

impl Engine {
    pub(super) async fn update_workloads(
        &self,
        resolved: &Resolved<'_>,
        namespace: &str,
        revisions: &[RevisionStatus],
    ) -> Result<(), ComponentError> {
        let strategy = resolved.spec().update_strategy();
        if !strategy.update_workloads.unwrap_or(false) || revisions.iter().all(|r| r.active) {
            return Ok(());
        }
        let snapshot = mesh_snapshot::read(&self.client, namespace)
            .await
            .map_err(|err| RevisionError::Migration(err.into()))?;
        let namespaces = namespaces_to_move(&snapshot, resolved, namespace, revisions);
        if namespaces.is_empty() {
            return Ok(());
        }
        let workloads = migration::read_workloads(&self.client)
            .await
            .map_err(|err| RevisionError::Migration(err.into()))?;
        let active = resolved.revision().name();
        let request = MigrationRequest {
            to: active,
            namespaces: Some(&namespaces),
            mesh_namespace: namespace,
            operator_namespaces: &[],
        };
        let plan = plan(&snapshot, &workloads, &request)
            .map_err(|err| RevisionError::Migration(err.into()))?;
        let timeout = match self.settings.wait {
            WaitPolicy::Until(limit) => limit,
            WaitPolicy::Requeue | WaitPolicy::No => Duration::from_secs(300),
        };
        let options = MigrationOptions {
            batch: BATCH,
            timeout,
        };
        let report = migration::migrate(&self.client, &plan, options, |event| match event {
            MigrationEvent::Relabelled(relabel) => {
                tracing::info!(
                    namespace = relabel.namespace,
                    revision = active,
                    "relabelled"
                )
            }
            MigrationEvent::Restarting { index, of, .. } => {
                tracing::info!(batch = index, of, revision = active, "restarting workloads")
            }
            MigrationEvent::Ready { index, of } => tracing::info!(batch = index, of, "ready"),
        })
        .await
        .map_err(|err| RevisionError::Migration(err.into()))?;
        tracing::info!(
            revision = active,
            restarted = report.restarted.len(),
            "workloads moved to the active revision"
        );
        Ok(())
    }
}

/// The namespaces whose workloads still use an inactive revision: those whose labels select one
/// (unless through a tag the spec pins), and those that select the active revision but whose
/// pods still run an older proxy; never the mesh's own or Kubernetes' namespaces.
fn namespaces_to_move(
    snapshot: &MeshSnapshot,
    resolved: &Resolved<'_>,
    mesh_namespace: &str,
    revisions: &[RevisionStatus],
) -> Vec<String> {
    let usage = revision_usage(snapshot);
    let pinned: BTreeSet<&str> = resolved
        .spec()
        .revision_tags
        .iter()
        .filter(|(_, tag)| tag.revision.is_some())
        .map(|(name, _)| name.as_str())
        .collect();
    let selects_pinned = |namespace: &str| {
        snapshot
            .namespaces
            .iter()
            .find(|ns| ns.metadata.name.as_deref() == Some(namespace))
            .and_then(|ns| ns.metadata.labels.as_ref())
            .and_then(|labels| namespace_selection(labels))
            .is_some_and(|selected| pinned.contains(selected))
    };
    let active = usage.get(resolved.revision().name());
    let selects_active =
        |namespace: &str| active.is_some_and(|used| used.namespaces.contains(namespace));
    let mut namespaces = BTreeSet::new();
    for revision in revisions.iter().filter(|r| !r.active) {
        let Some(used) = usage.get(&revision.name) else {
            continue;
        };
        namespaces.extend(used.namespaces.iter().cloned());
        namespaces.extend(
            used.pods
                .iter()
                .map(|pod| pod.namespace.clone())
                .filter(|namespace| selects_active(namespace)),
        );
    }
    namespaces
        .into_iter()
        .filter(|namespace| !selects_pinned(namespace))
        .filter(|namespace| check_injectable(namespace, mesh_namespace, &[]).is_ok())
        .collect()
}
