//! Helm releases as they are in the cluster, read from helm's own storage records (Secrets
//! labelled `owner=helm`) in one metadata-only list call, so deciding what to do spawns no helm.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;

use crate::cluster::workloads::{WorkloadKind, WorkloadRef};

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
}

/// The label smm puts on every release record it writes (helm's `--labels`): the owning
/// ControlPlane's uid.
pub const OWNER_LABEL: &str = "smm.dev/owner";

/// Latest revision per release, keyed by (namespace, name).
pub type ObservedReleases = BTreeMap<(String, String), ObservedRelease>;

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

/// The values a release revision was installed with (the `config` helm stores in its record),
/// read without spawning helm.
pub async fn applied_values(
    client: &Client,
    release: &ReleaseRef,
    revision: i64,
) -> Result<serde_json::Value, RecordError> {
    let mut record = read_record(client, release, revision).await?;
    let config = record["config"].take();
    Ok(if config.is_null() {
        serde_json::json!({})
    } else {
        config
    })
}

/// Objects of the release's manifest that are no longer in the cluster (someone deleted them),
/// as `Kind/name`. helm upgrade puts them back; finding them needs no helm.
pub async fn missing_objects(
    client: &Client,
    release: &ReleaseRef,
    revision: i64,
) -> Result<Vec<String>, RecordError> {
    use kube::api::{DynamicObject, GroupVersionKind};
    use kube::discovery::{self, Scope};

    let objects = manifest_objects(client, release, revision).await?;
    let read_error = |source| RecordError::Read {
        release: release.to_string(),
        revision,
        source,
    };
    let mut kinds = BTreeMap::new();
    let mut missing = Vec::new();
    for object in &objects {
        let (Some(api_version), Some(kind), Some(name)) = (
            object["apiVersion"].as_str(),
            object["kind"].as_str(),
            object["metadata"]["name"].as_str(),
        ) else {
            continue;
        };
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, capabilities) = match kinds.get(&(api_version.to_owned(), kind.to_owned())) {
            Some(found) => found,
            None => {
                let found = discovery::pinned_kind(client, &gvk)
                    .await
                    .map_err(read_error)?;
                kinds
                    .entry((api_version.to_owned(), kind.to_owned()))
                    .or_insert(found)
            }
        };
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => {
                let namespace = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(&release.namespace);
                Api::namespaced_with(client.clone(), namespace, resource)
            }
            Scope::Cluster => Api::all_with(client.clone(), resource),
        };
        let found = api.get_opt(name).await.map_err(read_error)?;
        if found.is_none() {
            missing.push(format!("{kind}/{name}"));
        }
    }
    Ok(missing)
}

/// When helm last wrote a release revision's record (`info.last_deployed`, which helm sets when
/// an operation starts), if it says.
pub async fn written_at(
    client: &Client,
    release: &ReleaseRef,
    revision: i64,
) -> Result<Option<k8s_openapi::jiff::Timestamp>, RecordError> {
    let record = read_record(client, release, revision).await?;
    Ok(record["info"]["last_deployed"]
        .as_str()
        .and_then(|at| at.parse().ok()))
}

/// The Deployments, StatefulSets, DaemonSets and Jobs of a release revision's manifest: what a
/// component waits for before it is Available. (Hooks are not in the manifest; helm itself
/// waits for hook Jobs.)
pub async fn workloads(
    client: &Client,
    release: &ReleaseRef,
    revision: i64,
) -> Result<Vec<WorkloadRef>, RecordError> {
    let objects = manifest_objects(client, release, revision).await?;
    let mut workloads: Vec<WorkloadRef> = objects
        .iter()
        .filter_map(|object| {
            let kind = WorkloadKind::of(object["apiVersion"].as_str()?, object["kind"].as_str()?)?;
            Some(WorkloadRef {
                kind,
                namespace: object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(&release.namespace)
                    .to_owned(),
                name: object["metadata"]["name"].as_str()?.to_owned(),
            })
        })
        .collect();
    workloads.sort();
    Ok(workloads)
}

/// The objects of a release revision's manifest, parsed.
async fn manifest_objects(
    client: &Client,
    release: &ReleaseRef,
    revision: i64,
) -> Result<Vec<serde_json::Value>, RecordError> {
    let record = read_record(client, release, revision).await?;
    let manifest = record["manifest"].as_str().unwrap_or_default();
    serde_yaml_ng::Deserializer::from_str(manifest)
        .map(serde_json::Value::deserialize)
        .filter(|object| !matches!(object, Ok(serde_json::Value::Null)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| RecordError::Decode {
            release: release.to_string(),
            revision,
            problem: format!("manifest is not YAML: {err}"),
        })
}

async fn read_record(
    client: &Client,
    release: &ReleaseRef,
    revision: i64,
) -> Result<serde_json::Value, RecordError> {
    let secret_name = format!("sh.helm.release.v1.{}.v{revision}", release.name);
    let secret = Api::<Secret>::namespaced(client.clone(), &release.namespace)
        .get(&secret_name)
        .await
        .map_err(|source| RecordError::Read {
            release: release.to_string(),
            revision,
            source,
        })?;
    let encoded = secret
        .data
        .as_ref()
        .and_then(|data| data.get("release"))
        .map(|bytes| bytes.0.as_slice())
        .unwrap_or_default();
    decode_record(encoded).map_err(|problem| RecordError::Decode {
        release: release.to_string(),
        revision,
        problem,
    })
}

/// helm stores a release as base64 text of gzipped JSON (older records may be plain JSON).
fn decode_record(encoded: &[u8]) -> Result<serde_json::Value, String> {
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
    serde_json::from_slice(&json).map_err(|err| format!("not JSON: {err}"))
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
            owner: labels.get(OWNER_LABEL).cloned(),
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
    fn records_decode_from_base64_gzip_and_plain_json() {
        use base64::Engine as _;
        use std::io::Write as _;
        let record = br#"{"name":"x","config":{"a":1}}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(record).unwrap();
        let zipped = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
        assert_eq!(decode_record(zipped.as_bytes()).unwrap()["config"]["a"], 1);
        let plain = base64::engine::general_purpose::STANDARD.encode(record);
        assert_eq!(decode_record(plain.as_bytes()).unwrap()["name"], "x");
        assert!(decode_record(b"%%%").unwrap_err().starts_with("not base64"));
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
