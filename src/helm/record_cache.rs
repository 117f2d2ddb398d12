//! Release records decoded once per process. Decoding a record (two base64 layers, gzip, JSON,
//! the manifest's YAML) was the largest part of a no-op at 200 releases, and a record does not
//! change without its storage Secret changing: the API server gives every write a new
//! `resourceVersion`, and a Secret deleted and made again has a new uid. So a record is kept by
//! its release, with the uid and `resourceVersion` of the Secret it was decoded from, and is
//! used again only for that very Secret version; any other version (a new revision, a record
//! rewritten by hand or by helm) is decoded anew. A stale entry can therefore never stand in
//! for a record that changed, and so never make a run skip an apply.
//!
//! The cache lives as long as what holds it: a session's runs, or every reconcile of the
//! operator. A one-shot `smm` command starts empty and decodes as before.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::record::ReleaseRecord;
use super::release::ReleaseRef;

/// The most the kept records may weigh (see [`weight`]); past it the cache starts over, so a
/// long-running process with many releases never holds more than this for them.
const BUDGET: usize = 1 << 20;

/// Which version of which storage Secret a record was decoded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVersion {
    pub name: String,
    pub uid: String,
    pub resource_version: String,
}

impl SecretVersion {
    /// The version `meta` describes; `None` when it lacks a uid or a `resourceVersion` (the API
    /// server always sets both), which is then never cached.
    pub fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Self> {
        Some(Self {
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            resource_version: meta.resource_version.clone()?,
        })
    }
}

#[derive(Debug)]
struct Entry {
    version: SecretVersion,
    record: Arc<ReleaseRecord>,
    weight: usize,
}

#[derive(Debug, Default)]
struct Entries {
    /// By release: (namespace, name). One entry per release, its latest record read.
    by_release: BTreeMap<(String, String), Entry>,
    weight: usize,
}

/// Decoded records by release and Secret version; clones share one cache.
#[derive(Clone, Debug, Default)]
pub struct RecordCache {
    entries: Arc<Mutex<Entries>>,
}

fn key(release: &ReleaseRef) -> (String, String) {
    (release.namespace.clone(), release.name.clone())
}

impl RecordCache {
    /// Whether a record of `release` was decoded before: then reading its Secrets' metadata
    /// first may spare reading (and decoding) them whole.
    pub fn knows(&self, release: &ReleaseRef) -> bool {
        self.lock().by_release.contains_key(&key(release))
    }

    /// The record decoded from exactly `version` of the release's Secret, if it was.
    pub fn get(&self, release: &ReleaseRef, version: &SecretVersion) -> Option<Arc<ReleaseRecord>> {
        self.lock()
            .by_release
            .get(&key(release))
            .filter(|entry| entry.version == *version)
            .map(|entry| entry.record.clone())
    }

    /// Keeps `record`, decoded from `version`, in place of what the release had.
    pub fn put(&self, release: &ReleaseRef, version: SecretVersion, record: Arc<ReleaseRecord>) {
        let weight = weight(&record);
        let mut entries = self.lock();
        if let Some(replaced) = entries.by_release.remove(&key(release)) {
            entries.weight -= replaced.weight;
        }
        if weight > BUDGET {
            return;
        }
        if entries.weight + weight > BUDGET {
            tracing::debug!(
                weight = entries.weight,
                "release record cache full; started over"
            );
            *entries = Entries::default();
        }
        entries.weight += weight;
        entries.by_release.insert(
            key(release),
            Entry {
                version,
                record,
                weight,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Entries are whole after every operation: a panic elsewhere leaves nothing half done.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// About what a kept record takes in memory: its values as JSON text and its objects' names.
fn weight(record: &ReleaseRecord) -> usize {
    let config = serde_json::to_string(&record.config).map_or(0, |text| text.len());
    let objects: usize = record
        .objects
        .iter()
        .map(|o| {
            o.api_version.len()
                + o.kind.len()
                + o.name.len()
                + o.namespace.as_ref().map_or(0, String::len)
                + 32
        })
        .sum();
    config + objects
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::record::ManifestObject;

    fn release(name: &str) -> ReleaseRef {
        ReleaseRef {
            name: name.to_owned(),
            namespace: "mesh".to_owned(),
        }
    }

    fn version(revision: u32, resource_version: &str) -> SecretVersion {
        SecretVersion {
            name: format!("sh.helm.release.v1.web.v{revision}"),
            uid: format!("uid-{revision}"),
            resource_version: resource_version.to_owned(),
        }
    }

    fn record(object: &str) -> Arc<ReleaseRecord> {
        Arc::new(ReleaseRecord {
            objects: vec![ManifestObject {
                api_version: "apps/v1".to_owned(),
                kind: "Deployment".to_owned(),
                namespace: None,
                name: object.to_owned(),
            }],
            config: serde_json::json!({"replicas": 1}),
        })
    }

    /// A record is used again only for the very Secret version it was decoded from: a Secret
    /// written again (a new resourceVersion), made again (a new uid) or of another revision
    /// (another name) must be decoded again.
    #[test]
    fn a_record_is_used_again_only_for_the_same_secret_version() {
        let cache = RecordCache::default();
        let web = release("web");
        assert!(!cache.knows(&web));
        assert!(cache.get(&web, &version(1, "100")).is_none());
        cache.put(&web, version(1, "100"), record("v1"));
        assert!(cache.knows(&web));
        assert!(!cache.knows(&release("other")));
        assert_eq!(cache.get(&web, &version(1, "100")), Some(record("v1")));

        let rewritten = version(1, "101");
        assert!(cache.get(&web, &rewritten).is_none());
        let made_again = SecretVersion {
            uid: "uid-other".to_owned(),
            ..version(1, "100")
        };
        assert!(cache.get(&web, &made_again).is_none());
        assert!(cache.get(&web, &version(2, "100")).is_none());
        // The same version of another release's Secret is not this release's record.
        assert!(cache.get(&release("other"), &version(1, "100")).is_none());

        // The newer record replaces the older one.
        cache.put(&web, version(2, "140"), record("v2"));
        assert!(cache.get(&web, &version(1, "100")).is_none());
        assert_eq!(cache.get(&web, &version(2, "140")), Some(record("v2")));
    }

    /// The kept records never weigh more than the budget: past it, the cache starts over; a
    /// record heavier than the whole budget is not kept.
    #[test]
    fn the_cache_stays_within_its_budget() {
        let cache = RecordCache::default();
        let heavy = |filler: usize| {
            Arc::new(ReleaseRecord {
                objects: Vec::new(),
                config: serde_json::json!({ "x": "y".repeat(filler) }),
            })
        };
        let third = BUDGET / 3;
        for (at, name) in ["a", "b", "c"].into_iter().enumerate() {
            cache.put(&release(name), version(1, &at.to_string()), heavy(third));
        }
        // c would have taken the cache over budget: it started over, and holds c alone.
        assert!(!cache.knows(&release("a")) && !cache.knows(&release("b")));
        assert!(cache.knows(&release("c")));
        assert!(cache.lock().weight <= BUDGET);
        cache.put(&release("d"), version(1, "9"), heavy(BUDGET));
        assert!(!cache.knows(&release("d")));
    }
}
