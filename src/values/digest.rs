//! Deterministic digests of values (charts digest their files with the same format), formatted `sha256:<64 lowercase hex>`.
//!
//! smm records these on each release to tell whether anything changed since the last
//! reconcile, so they must not depend on map order, the machine, or where a chart is embedded.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The digest of `values`: sha256 over their canonical JSON.
///
/// Canonical JSON sorts object keys by their UTF-8 bytes at every level and has no whitespace;
/// strings and numbers are formatted by serde_json.
pub fn values_digest(values: &Value) -> String {
    let mut canonical = Vec::new();
    write_canonical_json(values, &mut canonical);
    format_digest(Sha256::digest(&canonical).as_slice())
}

/// `sha256:` and the hash in lowercase hex, the one digest format smm records.
pub fn format_digest(hash: &[u8]) -> String {
    format!("sha256:{}", hex::encode(hash))
}

/// The first `hex_digits` of a digest's hash, without its `sha256:`: short enough for a label
/// value or a table column, as git shortens hashes.
pub fn short_digest(digest: &str, hex_digits: usize) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(hex_digits)
        .collect()
}

/// Writes `value` as canonical JSON. The keys are sorted here rather than trusting the order
/// of serde_json's `Map`, which another crate enabling `preserve_order` would change.
fn write_canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));
            out.push(b'{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_json_token(key.as_str(), out);
                out.push(b':');
                write_canonical_json(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical_json(item, out);
            }
            out.push(b']');
        }
        scalar => write_json_token(scalar, out),
    }
}

/// Writes a string or scalar as serde_json formats it.
fn write_json_token<T: Serialize + ?Sized>(token: &T, out: &mut Vec<u8>) {
    serde_json::to_writer(out, token)
        .expect("a string or JSON scalar always serializes into a Vec");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_short_digest_is_the_hash_prefix() {
        let digest = values_digest(&json!({}));
        assert_eq!(short_digest(&digest, 12), digest["sha256:".len()..][..12]);
        assert_eq!(short_digest(&digest, 100).len(), 64);
    }

    fn canonical(value: &Value) -> String {
        let mut out = Vec::new();
        write_canonical_json(value, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn assert_digest_format(digest: &str) {
        let hex = digest.strip_prefix("sha256:").expect(digest);
        assert_eq!(hex.len(), 64, "{digest}");
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{digest}"
        );
    }

    #[test]
    fn canonical_json_sorts_keys_by_bytes_without_whitespace() {
        let value = json!({"é": 1, "b": {"z": [1, 2.5, "s"], "a": null}, "B": true, "a": "x\"\n"});
        assert_eq!(
            canonical(&value),
            r#"{"B":true,"a":"x\"\n","b":{"a":null,"z":[1,2.5,"s"]},"é":1}"#
        );
    }

    #[test]
    fn values_digest_known_vector() {
        // Pins the exact format (canonical JSON, sha256, `sha256:` + lowercase hex) across
        // machines and releases: digests are stored on releases, so a change here would make
        // every existing release look changed. The expected hex was computed independently
        // (Python's hashlib over the canonical text below).
        let value = json!({"b": [1, "x", null, true], "a": {"d": 1.5, "c": "é"}});
        assert_eq!(
            canonical(&value),
            r#"{"a":{"c":"é","d":1.5},"b":[1,"x",null,true]}"#
        );
        assert_eq!(
            values_digest(&value),
            "sha256:21b4df20de6f7196890608f86a6b53c959a3fd839334026ddeb5d7f228716d9a"
        );
    }

    #[test]
    fn values_digest_ignores_key_order() {
        let one: Value = serde_json::from_str(r#"{"a": 1, "b": {"c": 2, "d": 3}}"#).unwrap();
        let two: Value = serde_json::from_str(r#"{"b": {"d": 3, "c": 2}, "a": 1}"#).unwrap();
        assert_eq!(values_digest(&one), values_digest(&two));
        assert_digest_format(&values_digest(&one));
    }

    #[test]
    fn values_digest_distinguishes_values() {
        let digests = [
            json!({}),
            json!({"a": 1}),
            json!({"a": "1"}),
            json!({"a": 1.0}),
            json!({"a": null}),
            json!({"a": [1, 2]}),
            json!({"a": [2, 1]}),
            json!({"a": {"b": 1}}),
            json!({"a.b": 1}),
            json!([]),
            json!(null),
        ]
        .map(|value| values_digest(&value));
        for (i, a) in digests.iter().enumerate() {
            for b in &digests[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
