//! Helm releases as they are in the cluster, read from helm's own storage records (Secrets
//! labelled `owner=helm`) in one list call per release namespace (the latest records only, not
//! the superseded history), so deciding what to do spawns no helm and reads no record twice.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::record::{DecodeError, ReleaseRecord, parse_record};
use crate::api::ReleaseStatus;
use crate::cluster::workloads::WorkloadRef;
use crate::values::digest::short_digest;

/// A helm release: its name and the namespace its records live in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseRef {
    pub name: String,
    pub namespace: String,
}

impl std::fmt::Display for ReleaseRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl From<&ReleaseStatus> for ReleaseRef {
    fn from(recorded: &ReleaseStatus) -> Self {
        Self {
            name: recorded.name.clone(),
            namespace: recorded.namespace.clone(),
        }
    }
}

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
#[derive(Clone, Debug)]
pub struct ObservedRelease {
    pub revision: i64,
    pub state: ReleaseState,
    /// The uid of the ControlPlane that owns the release ([`OWNER_LABEL`] on helm's record);
    /// `None` for a release smm did not make (or an older smm made).
    pub owner: Option<String>,
    /// What the revision's record holds, or why it could not be decoded.
    pub record: Result<ReleaseRecord, UndecodableRecord>,
}

impl ObservedRelease {
    /// The decoded record; a record that cannot be decoded is an error naming the release and
    /// its Secret.
    pub fn record(&self) -> Result<&ReleaseRecord, RecordError> {
        self.record
            .as_ref()
            .map_err(|undecodable| RecordError::Decode(undecodable.clone()))
    }
}

/// The label smm puts on every release record it writes (helm's `--labels`): the owning
/// ControlPlane's uid.
pub const OWNER_LABEL: &str = "smm.dev/owner";
/// The labels beside [`OWNER_LABEL`] that say which chart and values the record holds, as
/// [`digest_label_value`] shortens their digests.
pub const CHART_DIGEST_LABEL: &str = "smm.dev/chart-digest";
pub const VALUES_DIGEST_LABEL: &str = "smm.dev/values-digest";

/// A digest as a label value: its first 32 hex digits (label values are short).
pub fn digest_label_value(digest: &str) -> String {
    short_digest(digest, 32)
}

/// Latest revision per release, keyed by (namespace, name).
pub type ObservedReleases = BTreeMap<(String, String), ObservedRelease>;

/// How fresh a read of helm's records must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Everything written before the read (a consistent list). Right after any write in the
    /// cluster, the API server makes such a list wait until its cache has caught up (about
    /// 45 ms here).
    Latest,
    /// The API server's cache as it is, which may lag the latest writes by a moment.
    Cached,
}

pub fn lookup<'a>(
    observed: &'a ObservedReleases,
    release: &ReleaseRef,
) -> Option<&'a ObservedRelease> {
    observed.get(&(release.namespace.clone(), release.name.clone()))
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read helm's record of {release} revision {revision}: {source}")]
    Read {
        release: String,
        revision: i64,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Decode(#[from] UndecodableRecord),
}

/// A release revision whose storage Secret holds no record smm can read.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "helm's record of {release} revision {revision} (Secret {secret}) cannot be decoded: \
     {problem}"
)]
pub struct UndecodableRecord {
    release: String,
    revision: i64,
    /// `namespace/name` of the Secret, which need not be the name helm would have given it.
    secret: String,
    #[source]
    problem: DecodeError,
}

/// The record `secret` holds, of revision `revision` of `release`.
fn decode(
    secret: &Secret,
    release: &ReleaseRef,
    revision: i64,
) -> Result<ReleaseRecord, UndecodableRecord> {
    parse_record(secret).map_err(|problem| UndecodableRecord {
        release: release.to_string(),
        revision,
        secret: format!("{}/{}", release.namespace, secret.name_any()),
        problem,
    })
}

/// The workloads of a release revision, read from its record (one read, for `smm status` and
/// the dashboard, which know the revision from the ControlPlane's status).
pub async fn workloads(
    client: &Client,
    release: &ReleaseRef,
    revision: i64,
) -> Result<Vec<WorkloadRef>, RecordError> {
    let secret_name = format!("sh.helm.release.v1.{}.v{revision}", release.name);
    let secret = Api::<Secret>::namespaced(client.clone(), &release.namespace)
        .get(&secret_name)
        .await
        .map_err(|source| RecordError::Read {
            release: release.to_string(),
            revision,
            source,
        })?;
    Ok(decode(&secret, release, revision)?.workloads(release))
}

/// Reads the latest revision of each of `releases`, records included, with one list per
/// namespace they are in; superseded revisions (the history) are left out by the selector. No
/// other namespace is read: whoever may create Secrets in a namespace can make one that looks
/// like helm's record of any release, and other users' own releases of the same names are none
/// of smm's business. Only the latest record of each release is decoded.
pub async fn observe(
    client: &Client,
    releases: &[ReleaseRef],
    freshness: Freshness,
) -> Result<ObservedReleases, kube::Error> {
    let mut names_by_namespace: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for release in releases {
        names_by_namespace
            .entry(&release.namespace)
            .or_default()
            .insert(&release.name);
    }
    let mut observed = ObservedReleases::new();
    // One after another, on the run's one connection (a new connection's first request waits
    // for a delayed ACK; see docs/benchmarks.md). Most meshes have one namespace.
    for (namespace, names) in names_by_namespace {
        let names: Vec<&str> = names.into_iter().collect();
        let selector = format!(
            "owner=helm,status!=superseded,name in ({})",
            names.join(",")
        );
        let params = ListParams::default().labels(&selector);
        let params = match freshness {
            Freshness::Latest => params,
            Freshness::Cached => params.match_any(),
        };
        let records = Api::<Secret>::namespaced(client.clone(), namespace)
            .list(&params)
            .await?;
        let latest = latest_revisions(
            records
                .items
                .iter()
                .map(|record| (namespace.to_owned(), record.labels().clone())),
        );
        for ((namespace, name), (at, head)) in latest {
            let release = ReleaseRef { name, namespace };
            let observed_release = ObservedRelease {
                record: decode(&records.items[at], &release, head.revision),
                revision: head.revision,
                state: head.state,
                owner: head.owner,
            };
            observed.insert((release.namespace, release.name), observed_release);
        }
    }
    Ok(observed)
}

/// What a record's labels say of its revision.
struct RecordHead {
    revision: i64,
    state: ReleaseState,
    owner: Option<String>,
}

/// Picks each release's highest revision (and its position in `records`) from the records'
/// labels; records with labels helm would never write are skipped rather than guessed at.
fn latest_revisions(
    records: impl Iterator<Item = (String, BTreeMap<String, String>)>,
) -> BTreeMap<(String, String), (usize, RecordHead)> {
    let mut latest: BTreeMap<(String, String), (usize, RecordHead)> = BTreeMap::new();
    for (at, (namespace, labels)) in records.enumerate() {
        let (Some(name), Some(status), Some(revision)) = (
            labels.get("name"),
            labels.get("status"),
            labels.get("version").and_then(|v| v.parse::<i64>().ok()),
        ) else {
            continue;
        };
        let candidate = RecordHead {
            revision,
            state: ReleaseState::from_label(status),
            owner: labels.get(OWNER_LABEL).cloned(),
        };
        match latest.entry((namespace, name.clone())) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert((at, candidate));
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                if slot.get().1.revision < revision {
                    slot.insert((at, candidate));
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
        let (at, a) = &observed[&("a".to_owned(), "istiod".to_owned())];
        assert_eq!(
            (*at, a.revision, &a.state),
            (1, 10, &ReleaseState::PendingUpgrade)
        );
        assert!(a.state.is_pending());
        let (_, b) = &observed[&("b".to_owned(), "istiod".to_owned())];
        assert_eq!(b.state, ReleaseState::Failed);
        assert!(!b.state.is_pending());
    }
}
