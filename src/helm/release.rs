//! Helm releases as they are in the cluster, read from helm's own storage records (Secrets
//! labelled `owner=helm`) in one list call per release namespace (the latest records only, not
//! the superseded history), so deciding what to do spawns no helm and reads no record twice.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::record::{DecodeError, ReleaseRecord, parse_record};
use super::record_cache::{RecordCache, SecretVersion};
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
    record: LazyRecord,
}

/// A record decoded when first asked for: a run that upgrades a component never reads what
/// its release held before (the largest records, a chart's files and dashboards, cost
/// milliseconds each to decode).
#[derive(Clone, Debug)]
enum LazyRecord {
    Known(Arc<ReleaseRecord>),
    Stored {
        stored: StoredRecord,
        decoded: OnceLock<Result<Arc<ReleaseRecord>, UndecodableRecord>>,
    },
}

#[derive(Clone, Debug)]
struct StoredRecord {
    secret: Arc<Secret>,
    release: ReleaseRef,
    revision: i64,
    /// Keeps the record once decoded, for later runs.
    cache: RecordCache,
}

impl StoredRecord {
    fn decode(&self) -> Result<Arc<ReleaseRecord>, UndecodableRecord> {
        let decoded = decode(&self.secret, &self.release, self.revision).map(Arc::new);
        if let (Ok(record), Some(version)) = (&decoded, SecretVersion::of(&self.secret.metadata)) {
            self.cache.put(&self.release, version, record.clone());
        }
        decoded
    }
}

impl ObservedRelease {
    /// A release whose record is known already.
    pub fn decoded(
        revision: i64,
        state: ReleaseState,
        owner: Option<String>,
        record: Arc<ReleaseRecord>,
    ) -> Self {
        Self {
            revision,
            state,
            owner,
            record: LazyRecord::Known(record),
        }
    }

    /// The decoded record; a record that cannot be decoded is an error naming the release and
    /// its Secret.
    pub fn record(&self) -> Result<&ReleaseRecord, RecordError> {
        match &self.record {
            LazyRecord::Known(record) => Ok(record),
            LazyRecord::Stored { stored, decoded } => decoded
                .get_or_init(|| stored.decode())
                .as_deref()
                .map_err(|undecodable| RecordError::Decode(undecodable.clone())),
        }
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
    let secret = Api::<Secret>::namespaced(client.clone(), &release.namespace)
        .get(&secret_name(release, revision))
        .await
        .map_err(|source| RecordError::Read {
            release: release.to_string(),
            revision,
            source,
        })?;
    Ok(decode(&secret, release, revision)?.workloads(release))
}

/// The name helm gives the storage Secret of a release revision.
fn secret_name(release: &ReleaseRef, revision: i64) -> String {
    format!("sh.helm.release.v1.{}.v{revision}", release.name)
}

/// Revision `revision` of `release` as helm just wrote it, read by name (from etcd, as fresh as
/// a consistent list, which right after helm's write waits for the API server's cache to catch
/// up: about 20 ms here, against 2 for this read). `None` when no record of that revision is
/// there, or one whose labels say it is not that release's revision deployed (a revision
/// someone else made and helm's own superseded since): then the caller lists them. A newer
/// revision made meanwhile by someone else is not looked for: the next run finds it, as any
/// change made by hand.
pub async fn read_revision(
    client: &Client,
    release: &ReleaseRef,
    revision: i64,
    cache: &RecordCache,
) -> Result<Option<ObservedRelease>, kube::Error> {
    let api = Api::<Secret>::namespaced(client.clone(), &release.namespace);
    let Some(secret) = api.get_opt(&secret_name(release, revision)).await? else {
        return Ok(None);
    };
    let Some(head) = deployed_revision(&secret.metadata, release, revision) else {
        return Ok(None);
    };
    Ok(Some(observed_release(release.clone(), head, secret, cache)))
}

/// What `meta`'s labels say of the record, when they say it is helm's record of `release` at
/// `revision`, deployed.
fn deployed_revision(meta: &ObjectMeta, release: &ReleaseRef, revision: i64) -> Option<RecordHead> {
    let helms = meta.labels.as_ref()?.get("owner").map(String::as_str) == Some("helm");
    let ((_, name), (_, head)) = latest_revisions(&release.namespace, &[meta]).pop_first()?;
    (helms
        && name == release.name
        && head.revision == revision
        && head.state == ReleaseState::Deployed)
        .then_some(head)
}

/// Reads the latest revision of each of `releases`, records included, with one list per
/// namespace they are in; superseded revisions (the history) are left out by the selector. No
/// other namespace is read: whoever may create Secrets in a namespace can make one that looks
/// like helm's record of any release, and other users' own releases of the same names are none
/// of smm's business. Only the latest record of each release is decoded, and only when `cache`
/// does not hold it from exactly that Secret version. A read from the API server's cache
/// (`Freshness::Cached`, a run's first look, which mostly finds what the last run left) lists
/// only the Secrets' metadata first where `cache` knows a release of the namespace, and reads
/// the Secrets whole only when a record among them is not in the cache; a read of the latest
/// (after helm wrote, or when the first look disagreed) expects something new and lists them
/// whole at once.
pub async fn observe(
    client: &Client,
    releases: &[ReleaseRef],
    freshness: Freshness,
    cache: &RecordCache,
) -> Result<ObservedReleases, kube::Error> {
    let mut by_namespace: BTreeMap<&str, BTreeMap<&str, &ReleaseRef>> = BTreeMap::new();
    for release in releases {
        by_namespace
            .entry(&release.namespace)
            .or_default()
            .insert(&release.name, release);
    }
    let mut observed = ObservedReleases::new();
    // One after another, on the run's one connection (a new connection's first request waits
    // for a delayed ACK; see docs/benchmarks.md). Most meshes have one namespace.
    for (namespace, releases) in by_namespace {
        let names: Vec<&str> = releases.keys().copied().collect();
        let selector = format!(
            "owner=helm,status!=superseded,name in ({})",
            names.join(",")
        );
        let params = ListParams::default().labels(&selector);
        let params = match freshness {
            Freshness::Latest => params,
            Freshness::Cached => params.match_any(),
        };
        let api = Api::<Secret>::namespaced(client.clone(), namespace);
        if freshness == Freshness::Cached && releases.values().any(|release| cache.knows(release)) {
            let listed = api.list_metadata(&params).await?;
            let metas: Vec<_> = listed.items.iter().map(|item| &item.metadata).collect();
            if let Some(known) = from_cache(namespace, &metas, cache) {
                observed.extend(known);
                continue;
            }
        }
        let records = api.list(&params).await?;
        let metas: Vec<_> = records.items.iter().map(|item| &item.metadata).collect();
        let latest = latest_revisions(namespace, &metas);
        let mut secrets: Vec<Option<Secret>> = records.items.into_iter().map(Some).collect();
        for ((namespace, name), (at, head)) in latest {
            let release = ReleaseRef { name, namespace };
            let Some(secret) = secrets[at].take() else {
                continue;
            };
            let observed_release = observed_release(release.clone(), head, secret, cache);
            observed.insert((release.namespace, release.name), observed_release);
        }
    }
    Ok(observed)
}

/// The release `head` describes, its record from `cache` when it holds exactly this Secret
/// version, else decoded from `secret` when first asked for.
fn observed_release(
    release: ReleaseRef,
    head: RecordHead,
    secret: Secret,
    cache: &RecordCache,
) -> ObservedRelease {
    let cached = SecretVersion::of(&secret.metadata).and_then(|v| cache.get(&release, &v));
    match cached {
        Some(record) => ObservedRelease::decoded(head.revision, head.state, head.owner, record),
        None => ObservedRelease {
            revision: head.revision,
            state: head.state,
            owner: head.owner,
            record: LazyRecord::Stored {
                stored: StoredRecord {
                    secret: Arc::new(secret),
                    release,
                    revision: head.revision,
                    cache: cache.clone(),
                },
                decoded: OnceLock::new(),
            },
        },
    }
}

/// The latest revision of each release whose Secrets' metadata is `metas`, when `cache` holds
/// the record of every one of them from exactly the Secret version listed; `None` otherwise.
fn from_cache(
    namespace: &str,
    metas: &[&ObjectMeta],
    cache: &RecordCache,
) -> Option<Vec<((String, String), ObservedRelease)>> {
    latest_revisions(namespace, metas)
        .into_iter()
        .map(|((namespace, name), (at, head))| {
            let release = ReleaseRef { name, namespace };
            let record = cache.get(&release, &SecretVersion::of(metas[at])?)?;
            let observed = ObservedRelease::decoded(head.revision, head.state, head.owner, record);
            Some(((release.namespace, release.name), observed))
        })
        .collect()
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
    namespace: &str,
    records: &[&ObjectMeta],
) -> BTreeMap<(String, String), (usize, RecordHead)> {
    let mut latest: BTreeMap<(String, String), (usize, RecordHead)> = BTreeMap::new();
    let no_labels = BTreeMap::new();
    for (at, meta) in records.iter().enumerate() {
        let labels = meta.labels.as_ref().unwrap_or(&no_labels);
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
        match latest.entry((namespace.to_owned(), name.clone())) {
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

    fn record(name: &str, version: &str, status: &str) -> ObjectMeta {
        let labels = [
            ("name", name),
            ("version", version),
            ("status", status),
            ("owner", "helm"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        ObjectMeta {
            labels: Some(labels),
            ..ObjectMeta::default()
        }
    }

    /// After helm, the revision it wrote is read by name; only a record whose labels say it is
    /// that release's revision, deployed, stands for it.
    #[test]
    fn a_revision_read_by_name_must_be_that_revision_deployed() {
        let release = ReleaseRef {
            name: "istiod".to_owned(),
            namespace: "a".to_owned(),
        };
        let deployed = record("istiod", "4", "deployed");
        assert_eq!(
            deployed_revision(&deployed, &release, 4).map(|h| h.revision),
            Some(4)
        );
        assert!(deployed_revision(&deployed, &release, 5).is_none());
        let superseded = record("istiod", "4", "superseded");
        assert!(deployed_revision(&superseded, &release, 4).is_none());
        let other = record("base", "4", "deployed");
        assert!(deployed_revision(&other, &release, 4).is_none());
        let mut not_helms = record("istiod", "4", "deployed");
        not_helms.labels.as_mut().unwrap().remove("owner");
        assert!(deployed_revision(&not_helms, &release, 4).is_none());
    }

    /// A run's first look takes records from the cache only when every release's latest
    /// Secret, as listed, is exactly the version a record was decoded from; one Secret written
    /// since (a new resourceVersion) sends the run to read the Secrets whole.
    #[test]
    fn the_cache_answers_only_for_the_very_versions_listed() {
        let versioned = |name: &str, resource_version: &str| ObjectMeta {
            name: Some(format!("sh.helm.release.v1.{name}.v1")),
            uid: Some(format!("uid-{name}")),
            resource_version: Some(resource_version.to_owned()),
            ..record(name, "1", "deployed")
        };
        let release = |name: &str| ReleaseRef {
            name: name.to_owned(),
            namespace: "a".to_owned(),
        };
        let cache = RecordCache::default();
        for (name, resource_version) in [("istiod", "10"), ("base", "11")] {
            let meta = versioned(name, resource_version);
            let version = SecretVersion::of(&meta).unwrap();
            cache.put(&release(name), version, Arc::default());
        }
        let listed = [versioned("istiod", "10"), versioned("base", "11")];
        let known = from_cache("a", &listed.iter().collect::<Vec<_>>(), &cache).unwrap();
        assert_eq!(known.len(), 2);
        let rewritten = [versioned("istiod", "10"), versioned("base", "12")];
        assert!(from_cache("a", &rewritten.iter().collect::<Vec<_>>(), &cache).is_none());
    }

    #[test]
    fn the_highest_revision_wins() {
        let records = [
            record("istiod", "2", "deployed"),
            record("istiod", "10", "pending-upgrade"),
            record("istiod", "9", "superseded"),
            record("broken", "x", "deployed"),
            record("base", "1", "failed"),
        ];
        let observed = latest_revisions("a", &records.iter().collect::<Vec<_>>());
        assert_eq!(observed.len(), 2);
        let (at, istiod) = &observed[&("a".to_owned(), "istiod".to_owned())];
        assert_eq!(
            (*at, istiod.revision, &istiod.state),
            (1, 10, &ReleaseState::PendingUpgrade)
        );
        assert!(istiod.state.is_pending());
        let (_, base) = &observed[&("a".to_owned(), "base".to_owned())];
        assert_eq!(base.state, ReleaseState::Failed);
        assert!(!base.state.is_pending());
    }
}
