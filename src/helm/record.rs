//! What a helm storage Secret holds, decoded within fixed bounds: a record is read from a
//! Secret that anyone allowed to write Secrets in the release's namespace could have made, so a
//! small Secret that expands to gigabytes (a gzip bomb) fails, naming the Secret, instead of
//! taking smm's memory.

use std::io::Read as _;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

use super::release::ReleaseRef;
use crate::api::objects::Kind;
use crate::cluster::workloads::{WorkloadKind, WorkloadRef};

/// The most base64 a record may be: the API server refuses a Secret whose data is larger
/// (1 MiB, which is also why helm's records are gzipped), so anything more did not come from
/// helm, and is refused before it is decoded.
pub const MAX_ENCODED_BYTES: usize = 1 << 20;

/// The most a record may decompress to. A record is gzipped JSON of the chart (templates,
/// files, values), the values and the rendered manifest. The largest smm writes, Istio's base
/// chart (its CRDs are chart files), is 233 KiB of base64 that decompresses to 1.2 MiB (istiod's
/// 99 KiB to 0.4 MiB): at that ratio a record as large as a Secret can hold would be under
/// 6 MiB. This limit leaves five times that; only a record that expands more than 32-fold gets
/// past it, which is a gzip bomb, not a chart, and memory smm must not hand to whoever could
/// write the Secret.
pub const MAX_DECOMPRESSED_BYTES: u64 = 32 << 20;

/// Why a storage Secret's record cannot be read. The sources are shared so an observed release
/// (and its error) can be cloned.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("it holds {size} bytes of base64, more than the {limit} bytes a Secret can hold")]
    EncodedTooLarge { size: usize, limit: usize },
    #[error("it decompresses to more than the limit of {limit} bytes")]
    DecompressedTooLarge { limit: u64 },
    #[error("not base64: {0}")]
    NotBase64(#[from] base64::DecodeError),
    #[error("not gzip: {0}")]
    NotGzip(#[source] Arc<std::io::Error>),
    #[error("not JSON: {0}")]
    NotJson(#[source] Arc<serde_json::Error>),
    #[error("manifest is not YAML: {0}")]
    ManifestNotYaml(#[source] Arc<serde_yaml_ng::Error>),
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

/// The parts smm reads of the record a storage Secret holds.
pub(super) fn parse_record(secret: &Secret) -> Result<ReleaseRecord, DecodeError> {
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
    let json = decode_record(encoded, MAX_DECOMPRESSED_BYTES)?;
    // The chart (templates, files) is most of a record: skipped, not built.
    let raw: Raw =
        serde_json::from_slice(&json).map_err(|err| DecodeError::NotJson(Arc::new(err)))?;
    Ok(ReleaseRecord {
        objects: manifest_objects(&raw.manifest)?,
        config: raw
            .config
            .filter(|config| !config.is_null())
            .unwrap_or_else(|| serde_json::json!({})),
    })
}

/// The identities of a manifest's objects.
fn manifest_objects(manifest: &str) -> Result<Vec<ManifestObject>, DecodeError> {
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
            .map_err(|err| DecodeError::ManifestNotYaml(Arc::new(err)))?;
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

/// helm stores a release as base64 text of gzipped JSON (older records may be plain JSON); the
/// JSON, read up to `limit` bytes and no further.
fn decode_record(encoded: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
    use base64::Engine as _;
    if encoded.len() > MAX_ENCODED_BYTES {
        return Err(DecodeError::EncodedTooLarge {
            size: encoded.len(),
            limit: MAX_ENCODED_BYTES,
        });
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(encoded)?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut unzipped = Vec::new();
    // One byte past the limit tells a record of exactly `limit` bytes from a larger one.
    flate2::read::GzDecoder::new(raw.as_slice())
        .take(limit.saturating_add(1))
        .read_to_end(&mut unzipped)
        .map_err(|err| DecodeError::NotGzip(Arc::new(err)))?;
    if unzipped.len() as u64 > limit {
        return Err(DecodeError::DecompressedTooLarge { limit });
    }
    Ok(unzipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use std::io::Write as _;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn base64(bytes: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into_bytes()
    }

    /// A storage Secret whose `release` holds `encoded`.
    fn secret_holding(encoded: Vec<u8>) -> Secret {
        Secret {
            data: Some([("release".to_owned(), k8s_openapi::ByteString(encoded))].into()),
            ..Secret::default()
        }
    }

    /// A storage Secret as helm writes it: base64 of gzipped JSON.
    fn storage_secret(record: &serde_json::Value) -> Secret {
        secret_holding(base64(&gzip(record.to_string().as_bytes())))
    }

    #[test]
    fn records_decode_from_base64_gzip_and_plain_json() {
        let record = br#"{"name":"x","config":{"a":1}}"#;
        let plain = base64(record);
        assert_eq!(
            decode_record(&plain, MAX_DECOMPRESSED_BYTES).unwrap(),
            record
        );
        assert!(
            decode_record(b"%%%", MAX_DECOMPRESSED_BYTES)
                .unwrap_err()
                .to_string()
                .starts_with("not base64")
        );
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

    /// A Secret of about 100 KiB that gunzips to 100 MiB is read no further than the limit.
    #[test]
    fn a_gzip_bomb_fails_at_the_decompression_limit() {
        let bomb = {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let zeros = vec![0_u8; 1 << 20];
            for _ in 0..100 {
                gz.write_all(&zeros).unwrap();
            }
            base64(&gz.finish().unwrap())
        };
        assert!(bomb.len() < MAX_ENCODED_BYTES, "{} bytes", bomb.len());
        let err = parse_record(&secret_holding(bomb.clone())).unwrap_err();
        assert!(
            matches!(err, DecodeError::DecompressedTooLarge { limit } if limit == MAX_DECOMPRESSED_BYTES)
        );
        assert_eq!(
            err.to_string(),
            format!("it decompresses to more than the limit of {MAX_DECOMPRESSED_BYTES} bytes")
        );
        // Exactly at the limit still decodes; one byte more does not.
        let exact = base64(&gzip(&[b' '; 1000]));
        assert_eq!(decode_record(&exact, 1000).unwrap().len(), 1000);
        assert!(matches!(
            decode_record(&exact, 999),
            Err(DecodeError::DecompressedTooLarge { limit: 999 })
        ));
    }

    #[test]
    fn more_base64_than_a_secret_can_hold_is_not_decoded() {
        let oversized = vec![b'A'; MAX_ENCODED_BYTES + 4];
        let err = parse_record(&secret_holding(oversized)).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::EncodedTooLarge {
                size,
                limit: MAX_ENCODED_BYTES
            } if size == MAX_ENCODED_BYTES + 4
        ));
        let at_the_limit = base64(&vec![b' '; MAX_ENCODED_BYTES / 4 * 3]);
        assert_eq!(at_the_limit.len(), MAX_ENCODED_BYTES);
        decode_record(&at_the_limit, MAX_DECOMPRESSED_BYTES).unwrap();
    }
}
