//! Helm releases as they are in the cluster, read from helm's own storage records (Secrets
//! labelled `owner=helm`) in one list call (the latest records only, not the superseded
//! history), so deciding what to do spawns no helm and reads no record twice.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;

use crate::api::ReleaseStatus;
use crate::api::objects::Kind;
use crate::cluster::workloads::{WorkloadKind, WorkloadRef};
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedRelease {
    pub revision: i64,
    pub state: ReleaseState,
    /// The uid of the ControlPlane that owns the release ([`OWNER_LABEL`] on helm's record);
    /// `None` for a release smm did not make (or an older smm made).
    pub owner: Option<String>,
    /// What the revision's record holds, or why it could not be decoded.
    pub record: Result<ReleaseRecord, String>,
}

impl ObservedRelease {
    /// The decoded record; a record that cannot be decoded is an error naming the release.
    pub fn record(&self, release: &ReleaseRef) -> Result<&ReleaseRecord, RecordError> {
        self.record.as_ref().map_err(|problem| RecordError::Decode {
            release: release.to_string(),
            revision: self.revision,
            problem: problem.clone(),
        })
    }
}

/// The parts of helm's record of a release revision that smm reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseRecord {
    /// The objects of the revision's manifest.
    pub objects: Vec<ManifestObject>,
    /// The values the revision was installed with (`config`).
    pub config: serde_json::Value,
}

/// One object of a release's manifest, by identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestObject {
    pub api_version: String,
    pub kind: String,
    /// As the manifest gives it; helm puts namespaced objects without one in the release's.
    pub namespace: Option<String>,
    pub name: String,
}

impl ManifestObject {
    /// Its API kind, as the inventory lists kinds.
    pub fn kind(&self) -> Kind {
        Kind::new(&self.api_version, &self.kind)
    }

    /// `Kind/name`, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

impl ReleaseRecord {
    /// The Deployments, StatefulSets, DaemonSets and Jobs of the manifest: what a component
    /// waits for before it is Available. (Hooks are not in the manifest; helm itself waits for
    /// hook Jobs.)
    pub fn workloads(&self, release: &ReleaseRef) -> Vec<WorkloadRef> {
        let mut workloads: Vec<WorkloadRef> = self
            .objects
            .iter()
            .filter_map(|object| {
                Some(WorkloadRef {
                    kind: WorkloadKind::of(&object.api_version, &object.kind)?,
                    namespace: object
                        .namespace
                        .clone()
                        .unwrap_or_else(|| release.namespace.clone()),
                    name: object.name.clone(),
                })
            })
            .collect();
        workloads.sort();
        workloads
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
    #[error("helm's record of {release} revision {revision} cannot be decoded: {problem}")]
    Decode {
        release: String,
        revision: i64,
        problem: String,
    },
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
    let record = parse_record(&secret).map_err(|problem| RecordError::Decode {
        release: release.to_string(),
        revision,
        problem,
    })?;
    Ok(record.workloads(release))
}

/// The parts smm reads of the record a storage Secret holds.
fn parse_record(secret: &Secret) -> Result<ReleaseRecord, String> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        manifest: String,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let encoded = secret
        .data
        .as_ref()
        .and_then(|data| data.get("release"))
        .map(|bytes| bytes.0.as_slice())
        .unwrap_or_default();
    let json = decode_record(encoded)?;
    // The chart (templates, files) is most of a record: skipped, not built.
    let raw: Raw = serde_json::from_slice(&json).map_err(|err| format!("not JSON: {err}"))?;
    Ok(ReleaseRecord {
        objects: manifest_objects(&raw.manifest)?,
        config: raw
            .config
            .filter(|config| !config.is_null())
            .unwrap_or_else(|| serde_json::json!({})),
    })
}

/// The identities of a manifest's objects.
fn manifest_objects(manifest: &str) -> Result<Vec<ManifestObject>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        #[serde(default)]
        api_version: String,
        #[serde(default)]
        kind: String,
        #[serde(default)]
        metadata: Meta,
    }
    #[derive(Default, Deserialize)]
    struct Meta {
        #[serde(default)]
        name: String,
        #[serde(default)]
        namespace: Option<String>,
    }
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(manifest) {
        let head = Option::<Head>::deserialize(document)
            .map_err(|err| format!("manifest is not YAML: {err}"))?;
        if let Some(head) = head.filter(|h| !h.kind.is_empty() && !h.metadata.name.is_empty()) {
            objects.push(ManifestObject {
                api_version: head.api_version,
                kind: head.kind,
                namespace: head.metadata.namespace,
                name: head.metadata.name,
            });
        }
    }
    Ok(objects)
}

/// helm stores a release as base64 text of gzipped JSON (older records may be plain JSON).
fn decode_record(encoded: &[u8]) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    use std::io::Read as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|err| format!("not base64: {err}"))?;
    let json = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut unzipped)
            .map_err(|err| format!("not gzip: {err}"))?;
        unzipped
    } else {
        raw
    };
    Ok(json)
}

/// Reads the latest revision of each named release across all namespaces, records included, in
/// one call: superseded revisions (the history) are left out by the selector.
pub async fn observe(
    client: &Client,
    release_names: &[&str],
    freshness: Freshness,
) -> Result<ObservedReleases, kube::Error> {
    if release_names.is_empty() {
        return Ok(ObservedReleases::new());
    }
    let selector = format!(
        "owner=helm,status!=superseded,name in ({})",
        release_names.join(",")
    );
    let params = ListParams::default().labels(&selector);
    let params = match freshness {
        Freshness::Latest => params,
        Freshness::Cached => params.match_any(),
    };
    let records = Api::<Secret>::all(client.clone()).list(&params).await?;
    let latest = latest_revisions(records.items.iter().map(|record| {
        (
            record.namespace().unwrap_or_default(),
            record.labels().clone(),
        )
    }));
    // Only the latest record of each release is decoded.
    Ok(latest
        .into_iter()
        .map(|(key, (at, head))| {
            let observed = ObservedRelease {
                revision: head.revision,
                state: head.state,
                owner: head.owner,
                record: parse_record(&records.items[at]),
            };
            (key, observed)
        })
        .collect())
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

    /// A storage Secret as helm writes it: base64 of gzipped JSON.
    fn storage_secret(record: &serde_json::Value) -> Secret {
        use base64::Engine as _;
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(record.to_string().as_bytes()).unwrap();
        let encoded = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
        Secret {
            data: Some(
                [(
                    "release".to_owned(),
                    k8s_openapi::ByteString(encoded.into_bytes()),
                )]
                .into(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn records_decode_from_base64_gzip_and_plain_json() {
        use base64::Engine as _;
        let record = br#"{"name":"x","config":{"a":1}}"#;
        let plain = base64::engine::general_purpose::STANDARD.encode(record);
        assert_eq!(decode_record(plain.as_bytes()).unwrap(), record);
        assert!(decode_record(b"%%%").unwrap_err().starts_with("not base64"));
        let secret = storage_secret(&serde_json::json!({
            "config": {"a": 1},
            "info": {"last_deployed": "2026-11-29T10:00:00.5Z"},
            "chart": {"templates": [{"name": "big", "data": "..."}]},
            "manifest": "---\n# Source: x/templates/a.yaml\napiVersion: apps/v1\nkind: Deployment\n\
                metadata:\n  name: web\n---\n# only a comment\n---\napiVersion: v1\nkind: Service\n\
                metadata:\n  name: web\n  namespace: elsewhere\n",
        }));
        let parsed = parse_record(&secret).unwrap();
        assert_eq!(parsed.config["a"], 1);
        let described: Vec<_> = parsed
            .objects
            .iter()
            .map(ManifestObject::describe)
            .collect();
        assert_eq!(described, ["Deployment/web", "Service/web"]);
        assert_eq!(parsed.objects[1].namespace.as_deref(), Some("elsewhere"));
        let release = ReleaseRef {
            name: "x".to_owned(),
            namespace: "mine".to_owned(),
        };
        let workloads = parsed.workloads(&release);
        assert_eq!(workloads.len(), 1, "a Service is no workload");
        assert_eq!(
            (workloads[0].namespace.as_str(), workloads[0].name.as_str()),
            ("mine", "web")
        );
        // A record without config means no values.
        let bare = parse_record(&storage_secret(&serde_json::json!({"manifest": ""}))).unwrap();
        assert_eq!(bare.config, serde_json::json!({}));
        assert!(bare.objects.is_empty());
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
