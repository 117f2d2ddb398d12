//! istiod's revisions, settled after istiod's step: the active revision recorded, the revision
//! tags moved to where the spec points them (only now that the revision they point at is
//! Ready), and inactive revisions removed once nothing has used them for the grace period.
//! Under `RevisionBased` a new version's release is installed beside the old one, which is
//! kept (see [`Engine::keep_revision`]) and serves its proxies until then.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Api;
use kube::api::PostParams;

use super::Engine;
use super::Observed;
use super::status::{StatusWriter, now};
use super::step::ComponentError;
use crate::api::RevisionStatus;
use crate::cluster::inventory::Inventory;
use crate::cluster::{mesh_snapshot, objects};
use crate::desired::resolve::DesiredComponent;
use crate::desired::resolved::Resolved;
use crate::helm::HelmError;
use crate::helm::release::{self, ReleaseRef};
use crate::mesh::revisions::strategy::{DEFAULT_TAG_NAME, REVISIONLESS, revision_name};
use crate::mesh::revisions::tags::{
    deactivate_revisionless, revisionless_injector_name, tag_objects,
};
use crate::mesh::revisions::usage;

mod guard;
pub mod plan;
mod record;
mod workloads;

use record::{check_tags, record_active, record_use, unused_for};

/// What went wrong while settling istiod's revisions.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error("spec.revisionTags.{tag}: revision {revision} does not run here (running: {running})")]
    TagToMissingRevision {
        tag: String,
        revision: String,
        running: String,
    },
    #[error("moving workloads to the active revision (updateWorkloads): {0}")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("removing the unused revision {revision} (release {release}): {source}")]
    Prune {
        revision: String,
        release: String,
        #[source]
        source: HelmError,
    },
    #[error(
        "refusing {change}: {count} running proxies use revision {revision} and would lose their \
         istiod ({examples}); move them first (`smm sidecar-proxy migrate`), or use a \
         RevisionBased update, or --force"
    )]
    WouldCutOff {
        change: String,
        revision: String,
        count: usize,
        examples: String,
    },
    #[error("cannot tell which proxies use revision {revision}, so {change} is refused: {source}")]
    UsageUnknown {
        change: String,
        revision: String,
        #[source]
        source: Box<mesh_snapshot::SnapshotError>,
    },
    #[error(
        "moving the default tag away from the revisionless istiod: cannot update its injector \
         {name}: {source}"
    )]
    Deactivate {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Engine {
    /// The component's release moved from `previous` to a new revision's release in the same
    /// namespace under `RevisionBased`: the old release stays (its proxies still use it) and is
    /// recorded as an inactive revision before anything is installed, so an interrupted run
    /// never forgets it.
    pub(super) async fn keep_revision(
        &self,
        previous: &ReleaseRef,
        observed: &Observed,
        writer: &StatusWriter,
    ) -> Result<(), ComponentError> {
        let mut revisions = writer.revisions();
        if let Some(entry) = revisions.iter_mut().find(|r| r.release == previous.name) {
            if !entry.active {
                return Ok(());
            }
            entry.active = false;
        } else {
            // Recorded before smm tracked revisions: what it runs is in helm's record.
            let config = match release::lookup(&observed.releases, previous) {
                Some(release) => release.record()?.config.clone(),
                None => serde_json::Value::Null,
            };
            let value = config["revision"].as_str().unwrap_or_default();
            revisions.push(RevisionStatus {
                name: revision_name(value).to_owned(),
                version: config["global"]["tag"].as_str().map(str::to_owned),
                release: previous.name.clone(),
                active: false,
                ready: true,
                tags: Vec::new(),
                in_use: None,
                conditions: Vec::new(),
            });
        }
        tracing::info!(release = %previous, "kept as an inactive revision");
        Ok(writer.set_revisions(revisions).await?)
    }

    /// After istiod's step ended in its desired state: records the active revision, applies the
    /// tags (and removes those no longer asked for), and removes inactive revisions that nothing
    /// used for the grace period. With istiod disabled, every revision and tag goes.
    pub(super) async fn settle_revisions(
        &self,
        wanted: &DesiredComponent<'_>,
        resolved: &Resolved<'_>,
        writer: &StatusWriter,
    ) -> Result<(), ComponentError> {
        let namespace = wanted.release.namespace.as_str();
        let mut revisions = writer.revisions();
        let applied_tags: BTreeSet<String> =
            revisions.iter().flat_map(|r| r.tags.clone()).collect();
        let tags = if wanted.enabled {
            record_active(&mut revisions, wanted, resolved);
            check_tags(resolved.tags(), &revisions)?;
            resolved.tags().clone()
        } else {
            BTreeMap::new()
        };
        let applied_tags: Vec<String> = applied_tags.into_iter().collect();
        let tag_objects = tag_objects(&tags, &applied_tags, namespace);
        if !tag_objects.is_empty() {
            let kinds = tag_objects.iter().map(|o| o.kind()).collect();
            let inventory = Inventory::take(&self.client, kinds).await;
            objects::apply_changed(&self.client, &tag_objects, &inventory).await?;
        }
        for revision in &mut revisions {
            revision.tags = tags
                .iter()
                .filter(|(_, target)| **target == revision.name)
                .map(|(tag, _)| tag.clone())
                .collect();
        }
        let revisionless_kept = revisions
            .iter()
            .any(|r| !r.active && r.name == REVISIONLESS);
        if revisionless_kept && tags.contains_key(DEFAULT_TAG_NAME) {
            self.deactivate_revisionless(namespace).await?;
        }
        if wanted.enabled {
            self.update_workloads(resolved, namespace, &revisions)
                .await?;
            let grace = resolved.spec().update_strategy().grace_period_seconds();
            self.prune_unused(&mut revisions, namespace, grace, writer)
                .await?;
        } else {
            for inactive in revisions.iter().filter(|r| !r.active) {
                self.remove_revision(inactive, namespace).await?;
            }
            revisions.clear();
        }
        Ok(writer.set_revisions(revisions).await?)
    }

    /// Makes the revisionless istiod's injector, kept as an inactive revision, stop injecting
    /// what the `default` tag now sends to another revision (see [`deactivate_revisionless`]).
    async fn deactivate_revisionless(&self, namespace: &str) -> Result<(), RevisionError> {
        let name = revisionless_injector_name(namespace);
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let failed = |source| RevisionError::Deactivate {
            name: name.clone(),
            source,
        };
        let Some(injector) = api.get_opt(&name).await.map_err(failed)? else {
            return Ok(());
        };
        if let Some(deactivated) = deactivate_revisionless(&injector) {
            // A replace carries the resourceVersion read: a concurrent write (istiod patching
            // its CA) makes it fail, and the next reconcile tries again.
            api.replace(&name, &PostParams::default(), &deactivated)
                .await
                .map_err(failed)?;
            tracing::info!(injector = name, "revisionless injector deactivated");
        }
        Ok(())
    }

    /// Updates every revision's use; removes an inactive one whose `InUse` has been False for
    /// `grace_seconds`, and asks to be run again when the next one's grace period ends.
    async fn prune_unused(
        &self,
        revisions: &mut Vec<RevisionStatus>,
        namespace: &str,
        grace_seconds: u64,
        writer: &StatusWriter,
    ) -> Result<(), ComponentError> {
        if revisions.iter().all(|r| r.active) {
            return Ok(());
        }
        let snapshot = mesh_snapshot::read(&self.client, namespace)
            .await
            .map_err(|err| err.to_string());
        let usage = snapshot
            .as_ref()
            .map(usage::revision_usage)
            .map_err(|why| why.as_str());
        if let Ok(snapshot) = &snapshot {
            // Whether each inactive revision's istiod still serves, as its Deployment says.
            let running = usage::revisions(snapshot);
            for revision in revisions.iter_mut().filter(|r| !r.active) {
                revision.ready = running.get(&revision.name).is_some_and(|info| info.ready);
            }
        }
        let now = now();
        let grace = Duration::from_secs(grace_seconds);
        let mut removed = Vec::new();
        for revision in revisions.iter_mut() {
            let used = usage
                .as_ref()
                .map(|usage| usage.get(&revision.name))
                .map_err(|why| *why);
            record_use(revision, used, grace_seconds, &now);
            if revision.active {
                continue;
            }
            match unused_for(revision, &now) {
                Some(unused) if unused >= grace => {
                    self.remove_revision(revision, namespace).await?;
                    removed.push(revision.name.clone());
                }
                Some(unused) => writer.revisit_within(grace - unused),
                None => {}
            }
        }
        revisions.retain(|r| !removed.contains(&r.name));
        Ok(())
    }

    /// Uninstalls an inactive revision's release, unless it is gone already (removed by hand,
    /// or with the ControlPlane's istiod release when both had the same name).
    async fn remove_revision(
        &self,
        revision: &RevisionStatus,
        namespace: &str,
    ) -> Result<(), ComponentError> {
        let release = ReleaseRef {
            name: revision.release.clone(),
            namespace: namespace.to_owned(),
        };
        let observed = release::observe(
            &self.client,
            std::slice::from_ref(&release),
            release::Freshness::Latest,
            &self.records,
        )
        .await
        .map_err(ComponentError::Observe)?;
        if release::lookup(&observed, &release).is_none() {
            return Ok(());
        }
        self.helm
            .uninstall(&release, self.waits())
            .await
            .map_err(|source| RevisionError::Prune {
                revision: revision.name.clone(),
                release: release.to_string(),
                source,
            })?;
        tracing::info!(revision = revision.name, %release, "inactive revision removed");
        Ok(())
    }
}
