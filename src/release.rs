//! Helm releases as they are in the cluster, read from helm's own storage records (Secrets
//! labelled `owner=helm`) in one metadata-only list call, so deciding what to do spawns no helm.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::helm::ReleaseRef;

/// The state helm records for a release revision (its `status` label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseState {
    Deployed,
    Failed,
    PendingInstall,
    PendingUpgrade,
    PendingRollback,
    Uninstalling,
    Superseded,
    Uninstalled,
    Unknown(String),
}

impl ReleaseState {
    fn from_label(label: &str) -> Self {
        match label {
            "deployed" => Self::Deployed,
            "failed" => Self::Failed,
            "pending-install" => Self::PendingInstall,
            "pending-upgrade" => Self::PendingUpgrade,
            "pending-rollback" => Self::PendingRollback,
            "uninstalling" => Self::Uninstalling,
            "superseded" => Self::Superseded,
            "uninstalled" => Self::Uninstalled,
            other => Self::Unknown(other.to_owned()),
        }
    }

    /// A helm operation was interrupted: helm refuses to touch the release until it is resolved.
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            Self::PendingInstall
                | Self::PendingUpgrade
                | Self::PendingRollback
                | Self::Uninstalling
        )
    }
}

impl std::fmt::Display for ReleaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Deployed => "deployed",
            Self::Failed => "failed",
            Self::PendingInstall => "pending-install",
            Self::PendingUpgrade => "pending-upgrade",
            Self::PendingRollback => "pending-rollback",
            Self::Uninstalling => "uninstalling",
            Self::Superseded => "superseded",
            Self::Uninstalled => "uninstalled",
            Self::Unknown(other) => other,
        })
    }
}

/// The latest revision of one release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedRelease {
    pub revision: i64,
    pub state: ReleaseState,
}

/// Latest revision per release, keyed by (namespace, name).
pub type ObservedReleases = BTreeMap<(String, String), ObservedRelease>;

pub fn lookup<'a>(
    observed: &'a ObservedReleases,
    release: &ReleaseRef,
) -> Option<&'a ObservedRelease> {
    observed.get(&(release.namespace.clone(), release.name.clone()))
}

/// Reads the latest revision of each named release across all namespaces in one call.
pub async fn observe(
    client: &Client,
    release_names: &[&str],
) -> Result<ObservedReleases, kube::Error> {
    if release_names.is_empty() {
        return Ok(ObservedReleases::new());
    }
    let selector = format!("owner=helm,name in ({})", release_names.join(","));
    let records = Api::<Secret>::all(client.clone())
        .list_metadata(&ListParams::default().labels(&selector))
        .await?;
    Ok(latest_revisions(records.items.iter().map(|record| {
        (
            record.namespace().unwrap_or_default(),
            record.labels().clone(),
        )
    })))
}

/// Picks each release's highest revision from its records' labels; records with labels helm
/// would never write are skipped rather than guessed at.
fn latest_revisions(
    records: impl Iterator<Item = (String, BTreeMap<String, String>)>,
) -> ObservedReleases {
    let mut latest = ObservedReleases::new();
    for (namespace, labels) in records {
        let (Some(name), Some(status), Some(revision)) = (
            labels.get("name"),
            labels.get("status"),
            labels.get("version").and_then(|v| v.parse::<i64>().ok()),
        ) else {
            continue;
        };
        let entry = latest.entry((namespace, name.clone()));
        let candidate = ObservedRelease {
            revision,
            state: ReleaseState::from_label(status),
        };
        match entry {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(candidate);
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                if slot.get().revision < revision {
                    slot.insert(candidate);
                }
            }
        }
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        namespace: &str,
        name: &str,
        version: &str,
        status: &str,
    ) -> (String, BTreeMap<String, String>) {
        let labels = [
            ("name", name),
            ("version", version),
            ("status", status),
            ("owner", "helm"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        (namespace.to_owned(), labels)
    }

    #[test]
    fn the_highest_revision_wins_per_namespace() {
        let observed = latest_revisions(
            [
                record("a", "istiod", "2", "deployed"),
                record("a", "istiod", "10", "pending-upgrade"),
                record("a", "istiod", "9", "superseded"),
                record("b", "istiod", "1", "failed"),
                record("b", "broken", "x", "deployed"),
            ]
            .into_iter(),
        );
        assert_eq!(observed.len(), 2);
        let a = &observed[&("a".to_owned(), "istiod".to_owned())];
        assert_eq!((a.revision, &a.state), (10, &ReleaseState::PendingUpgrade));
        assert!(a.state.is_pending());
        let b = &observed[&("b".to_owned(), "istiod".to_owned())];
        assert_eq!(b.state, ReleaseState::Failed);
        assert!(!b.state.is_pending());
    }
}
