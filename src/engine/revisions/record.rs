//! What the status records of istiod's revisions: the active one first, each one's use and its
//! `InUse` condition, and when the run should come back to remove one.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::json;

use super::RevisionError;
use crate::api::{IN_USE, RevisionStatus, RevisionUseCount};
use crate::desired::resolve::DesiredComponent;
use crate::desired::resolved::Resolved;
use crate::engine::status::{StatusError, StatusWriter};
use crate::mesh::revisions::usage::RevisionUse;

/// The active revision's entry, first; every other one inactive.
pub(super) fn record_active(
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
pub(super) fn check_tags(
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
pub(super) fn record_use(
    revision: &mut RevisionStatus,
    used: Result<Option<&RevisionUse>, &str>,
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
pub(super) fn unused_for(revision: &RevisionStatus, now: &Time) -> Option<Duration> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::revisions::usage::PodRef;

    fn inactive(name: &str) -> RevisionStatus {
        RevisionStatus {
            name: name.to_owned(),
            version: None,
            release: format!("istiod-{name}"),
            active: false,
            ready: true,
            tags: Vec::new(),
            in_use: None,
            conditions: Vec::new(),
        }
    }

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn the_grace_period_counts_from_when_nothing_used_the_revision_any_more() {
        let mut revision = inactive("1-31-3");
        let used = RevisionUse {
            pods: vec![PodRef {
                namespace: "demo".to_owned(),
                name: "web".to_owned(),
            }],
            ..RevisionUse::default()
        };
        record_use(&mut revision, Ok(Some(&used)), 30, &at(100));
        assert_eq!(unused_for(&revision, &at(500)), None);
        assert_eq!(
            revision.in_use,
            Some(RevisionUseCount {
                pods: 1,
                namespaces: 0
            })
        );
        assert!(revision.conditions[0].message.contains("demo/web"));
        // Unused from 200 on; looked at again at 210: still counted from 200.
        record_use(&mut revision, Ok(None), 30, &at(200));
        record_use(&mut revision, Ok(None), 30, &at(210));
        assert_eq!(
            unused_for(&revision, &at(215)),
            Some(Duration::from_secs(15))
        );
        // Unknown is never counted as unused.
        record_use(&mut revision, Err("forbidden"), 30, &at(300));
        assert_eq!(revision.conditions[0].status, "Unknown");
        assert_eq!(unused_for(&revision, &at(900)), None);
    }

    #[test]
    fn a_tag_must_point_at_a_revision_that_runs() {
        let revisions = [inactive("1-31-3")];
        let tags = [("canary".to_owned(), "1-31-9".to_owned())].into();
        assert_eq!(
            check_tags(&tags, &revisions).unwrap_err().to_string(),
            "spec.revisionTags.canary: revision 1-31-9 does not run here (running: 1-31-3)"
        );
        let tags = [("canary".to_owned(), "1-31-3".to_owned())].into();
        check_tags(&tags, &revisions).unwrap();
    }
}
