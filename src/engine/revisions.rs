//! istiod's revisions, settled after istiod's step: the active revision recorded, the revision
//! tags moved to where the spec points them (only now that the revision they point at is
//! Ready), and inactive revisions removed once nothing has used them for the grace period.
//! Under `RevisionBased` a new version's release is installed beside the old one, which is
//! kept (see [`Engine::keep_revision`]) and serves its proxies until then.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use super::Engine;
use super::Observed;
use super::status::{StatusError, StatusWriter, now};
use super::step::ComponentError;
use crate::api::{IN_USE, RevisionStatus, RevisionUseCount};
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
use crate::mesh::revisions::usage::{RevisionUse, revision_usage};

/// What went wrong while settling istiod's revisions.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error("spec.revisionTags.{tag}: revision {revision} does not run here (running: {running})")]
    TagToMissingRevision {
        tag: String,
        revision: String,
        running: String,
    },
    #[error("removing the unused revision {revision} (release {release}): {source}")]
    Prune {
        revision: String,
        release: String,
        #[source]
        source: HelmError,
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
        let usage = mesh_snapshot::read(&self.client, namespace)
            .await
            .map(|snapshot| revision_usage(&snapshot))
            .map_err(|err| err.to_string());
        let now = now();
        let grace = Duration::from_secs(grace_seconds);
        let mut removed = Vec::new();
        for revision in revisions.iter_mut() {
            let used = usage.as_ref().map(|usage| usage.get(&revision.name));
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

    async fn remove_revision(
        &self,
        revision: &RevisionStatus,
        namespace: &str,
    ) -> Result<(), RevisionError> {
        let release = ReleaseRef {
            name: revision.release.clone(),
            namespace: namespace.to_owned(),
        };
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

/// The active revision's entry, first; every other one inactive.
fn record_active(
    revisions: &mut Vec<RevisionStatus>,
    wanted: &DesiredComponent<'_>,
    resolved: &Resolved<'_>,
) {
    let active = resolved.revision();
    for revision in revisions.iter_mut() {
        revision.active = false;
    }
    let position = revisions
        .iter()
        .position(|r| r.release == wanted.release.name);
    let mut entry = match position {
        Some(position) => revisions.remove(position),
        None => RevisionStatus {
            name: String::new(),
            version: None,
            release: wanted.release.name.clone(),
            active: true,
            ready: true,
            tags: Vec::new(),
            in_use: None,
            conditions: Vec::new(),
        },
    };
    entry.name = active.name().to_owned();
    entry.version = Some(active.version.clone());
    entry.active = true;
    entry.ready = true;
    revisions.insert(0, entry);
}

/// Every tag must point at a revision that runs: a tag to nothing would let pods be created
/// without a proxy, silently.
fn check_tags(
    tags: &BTreeMap<String, String>,
    revisions: &[RevisionStatus],
) -> Result<(), RevisionError> {
    for (tag, revision) in tags {
        if !revisions.iter().any(|r| r.name == *revision) {
            let running: Vec<&str> = revisions.iter().map(|r| r.name.as_str()).collect();
            return Err(RevisionError::TagToMissingRevision {
                tag: tag.clone(),
                revision: revision.clone(),
                running: running.join(", "),
            });
        }
    }
    Ok(())
}

/// Sets a revision's counts and `InUse` condition from what uses it (`Err`: what could not be
/// read). The transition time moves only when the condition's status does.
fn record_use(
    revision: &mut RevisionStatus,
    used: Result<Option<&RevisionUse>, &String>,
    grace_seconds: u64,
    now: &Time,
) {
    let (status, reason, message) = match used {
        Err(why) => {
            revision.in_use = None;
            (
                "Unknown",
                "UsageUnknown",
                format!("cannot tell what uses it, so it is kept: {why}"),
            )
        }
        Ok(Some(usage)) if usage.in_use() => {
            revision.in_use = Some(RevisionUseCount {
                pods: count(usage.pods.len()),
                namespaces: count(usage.namespaces.len()),
            });
            ("True", "InUse", describe_use(usage))
        }
        Ok(_) => {
            revision.in_use = Some(RevisionUseCount::default());
            let message = if revision.active {
                "no proxy, namespace or tag uses it".to_owned()
            } else {
                format!(
                    "no proxy, namespace or tag uses it: removed {grace_seconds}s after this \
                     condition last changed"
                )
            };
            ("False", "NotInUse", message)
        }
    };
    let transition = match revision.conditions.iter().find(|c| c.type_ == IN_USE) {
        Some(previous) if previous.status == status => previous.last_transition_time.clone(),
        _ => now.clone(),
    };
    revision.conditions.retain(|c| c.type_ != IN_USE);
    revision.conditions.push(Condition {
        type_: IN_USE.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: None,
        last_transition_time: transition,
    });
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What uses a revision, in a few words with examples.
fn describe_use(usage: &RevisionUse) -> String {
    let mut parts = Vec::new();
    if !usage.pods.is_empty() {
        let examples: Vec<String> = usage.pods.iter().take(3).map(ToString::to_string).collect();
        parts.push(format!(
            "{} proxies (e.g. {})",
            usage.pods.len(),
            examples.join(", ")
        ));
    }
    if !usage.namespaces.is_empty() {
        let names: Vec<&str> = usage
            .namespaces
            .iter()
            .take(3)
            .map(String::as_str)
            .collect();
        parts.push(format!(
            "{} namespaces select it (e.g. {})",
            usage.namespaces.len(),
            names.join(", ")
        ));
    }
    if !usage.selecting_pods.is_empty() {
        parts.push(format!(
            "{} pods select it by label",
            usage.selecting_pods.len()
        ));
    }
    if !usage.tags.is_empty() {
        let tags: Vec<&str> = usage.tags.iter().map(String::as_str).collect();
        parts.push(format!("tags {}", tags.join(", ")));
    }
    if usage.default_validator {
        parts.push("the default validator calls it".to_owned());
    }
    format!("in use: {}", parts.join("; "))
}

/// How long an inactive revision has been unused, when its `InUse` is False.
fn unused_for(revision: &RevisionStatus, now: &Time) -> Option<Duration> {
    let condition = revision.conditions.iter().find(|c| c.type_ == IN_USE)?;
    if condition.status != "False" {
        return None;
    }
    let since = now.0.duration_since(condition.last_transition_time.0);
    Some(Duration::from_secs(
        u64::try_from(since.as_secs()).unwrap_or(0),
    ))
}

impl StatusWriter {
    pub fn revisions(&self) -> Vec<RevisionStatus> {
        self.current().revisions.clone()
    }

    /// Something is due within `delay` (an unused revision's grace period ends): the run's
    /// report asks its caller to come back by then.
    pub fn revisit_within(&self, delay: Duration) {
        let mut revisit = self.revisit.lock().expect("revisit lock");
        *revisit = Some(revisit.map_or(delay, |earlier| earlier.min(delay)));
    }

    /// When the run asked to be run again, if it did.
    pub fn revisit(&self) -> Option<Duration> {
        *self.revisit.lock().expect("revisit lock")
    }

    /// Records every revision (the active one first), and the summary fields the printer
    /// columns show.
    pub async fn set_revisions(&self, revisions: Vec<RevisionStatus>) -> Result<(), StatusError> {
        let active = revisions.iter().find(|r| r.active).map(|r| r.name.clone());
        let names: Vec<&str> = revisions.iter().map(|r| r.name.as_str()).collect();
        let names = (!names.is_empty()).then(|| names.join(","));
        {
            let current = self.current();
            if current.revisions == revisions
                && current.active_revision == active
                && current.revision_names == names
            {
                return Ok(());
            }
        }
        self.patch(json!({"status": {
            "revisions": revisions,
            "activeRevision": active,
            "revisionNames": names,
        }}))
        .await?;
        let mut current = self.current();
        current.revisions = revisions;
        current.active_revision = active;
        current.revision_names = names;
        Ok(())
    }
}
