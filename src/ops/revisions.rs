//! The operations behind `smm tag` and `smm sidecar-proxy migrate`: what they read of the
//! stored ControlPlane and the cluster before the library decides.

use kube::Client;

use super::OpsError;
use crate::api::objects::Presence;
use crate::cluster::migration::{self, MigrationEvent, MigrationOptions, MigrationReport};
use crate::cluster::{control_plane, mesh_snapshot};
use crate::desired::resolved::Resolved;
use crate::engine::session::Edit;
use crate::mesh::catalog::Catalog;
use crate::mesh::revisions::migration::{MigrationPlan, MigrationRequest, plan};
use crate::mesh::revisions::strategy;
use crate::mesh::revisions::tag_list::{TagEntry, following_active, tag_list};
use crate::mesh::revisions::tags::tag_objects;

/// The revision tags of a mesh, as `smm tag list` shows them.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagListReport {
    pub mesh_namespace: String,
    /// The revision the spec asks istiod to run.
    pub active_revision: String,
    pub tags: Vec<TagEntry>,
}

/// The tags of the mesh of the ControlPlane `control_plane` (none stored: the default mesh
/// namespace, no tags asked for); changes nothing.
pub async fn tags(client: &Client, control_plane: &str) -> Result<TagListReport, OpsError> {
    let spec = control_plane::load(client, control_plane)
        .await?
        .map(|cp| cp.spec)
        .unwrap_or_default();
    let active = strategy::active(&spec)?;
    let wanted = strategy::tags(&spec, &active)?;
    let mesh_namespace = spec.mesh_namespace().to_owned();
    let snapshot = mesh_snapshot::read(client, &mesh_namespace).await?;
    Ok(TagListReport {
        tags: tag_list(&snapshot, &wanted, &following_active(&spec)),
        active_revision: active.name().to_owned(),
        mesh_namespace,
    })
}

/// Namespaces still select a tag about to be removed: their new pods would get no proxy.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to remove tag {tag}: namespaces {} select it (istio.io/rev={tag}), and their new \
     pods would be created without a proxy; relabel them (smm sidecar-proxy migrate --to \
     REVISION ...) or remove it anyway with --force",
    namespaces.join(", ")
)]
pub struct TagInUse {
    pub tag: String,
    pub namespaces: Vec<String>,
}

/// Refuses while namespaces of the mesh of the ControlPlane `control_plane` select `tag`.
pub async fn check_tag_unused(
    client: &Client,
    control_plane: &str,
    tag: &str,
) -> Result<(), OpsError> {
    let report = tags(client, control_plane).await?;
    let entry = report.tags.into_iter().find(|entry| entry.tag == tag);
    match entry {
        Some(entry) if !entry.namespaces.is_empty() => Err(TagInUse {
            tag: tag.to_owned(),
            namespaces: entry.namespaces,
        }
        .into()),
        _ => Ok(()),
    }
}

/// The revision tags' objects the ControlPlane `name` asks for once `edit` is made, as YAML
/// documents: what the reconcile applies after istiod's step. The edit starts from the stored
/// spec when a cluster answers (`client`), from the defaults otherwise.
pub async fn dump_tags(
    client: Option<&Client>,
    catalog: &Catalog,
    name: &str,
    edit: &Edit<'_>,
) -> Result<String, OpsError> {
    let mut spec = super::spec_to_dump(client, catalog, name).await;
    edit(&mut spec, catalog)?;
    let resolved = Resolved::new(catalog, name, spec)?;
    let namespace = resolved.spec().mesh_namespace();
    let mut yaml = String::new();
    for object in tag_objects(resolved.tags(), &[], namespace) {
        if object.presence == Presence::Present {
            let document = serde_yaml_ng::to_string(&object.object())
                .expect("Kubernetes objects serialize to YAML");
            yaml += &format!("---\n{document}");
        }
    }
    Ok(yaml)
}

/// The revisions the ControlPlane `control_plane` runs, from its status (none stored: none).
pub async fn running_revisions(
    client: &Client,
    control_plane: &str,
) -> Result<Vec<String>, OpsError> {
    let stored = control_plane::load(client, control_plane).await?;
    let revisions = stored
        .and_then(|cp| cp.status)
        .map(|status| status.revisions)
        .unwrap_or_default();
    Ok(revisions.into_iter().map(|r| r.name).collect())
}

/// What `smm sidecar-proxy migrate` moves: to `to` (a revision or a tag), the namespaces
/// `namespaces` (none: every namespace labelled for injection) of the mesh of the ControlPlane
/// `control_plane`; changes nothing.
pub async fn plan_migration(
    client: &Client,
    control_plane: &str,
    to: &str,
    namespaces: Option<&[String]>,
) -> Result<MigrationPlan, OpsError> {
    let spec = control_plane::load(client, control_plane)
        .await?
        .map(|cp| cp.spec)
        .unwrap_or_default();
    let operator_namespaces = super::operator_namespaces(client).await?;
    let operator_namespaces: Vec<&str> = operator_namespaces.iter().map(String::as_str).collect();
    let snapshot = mesh_snapshot::read(client, spec.mesh_namespace()).await?;
    let workloads = migration::read_workloads(client).await?;
    let request = MigrationRequest {
        to,
        namespaces,
        mesh_namespace: spec.mesh_namespace(),
        operator_namespaces: &operator_namespaces,
    };
    Ok(plan(&snapshot, &workloads, &request)?)
}

/// Plans as [`plan_migration`] does, then relabels and restarts in batches (see
/// [`migration::migrate`]); run again after an interruption, it resumes.
pub async fn migrate(
    client: &Client,
    control_plane: &str,
    to: &str,
    namespaces: Option<&[String]>,
    options: MigrationOptions,
    on_event: impl Fn(MigrationEvent<'_>),
) -> Result<MigrationReport, OpsError> {
    let plan = plan_migration(client, control_plane, to, namespaces).await?;
    Ok(migration::migrate(client, &plan, options, on_event).await?)
}
