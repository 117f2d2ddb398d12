//! A ControlPlane as far as its metadata: what watching and listing ControlPlanes decode, so
//! that one ControlPlane whose spec cannot be decoded (values nested deeper than the JSON
//! decoder follows, a field from a newer CRD) does not stop the watch or the list of all the
//! others. Decoding skips everything but the fields of the metadata that are read, without
//! recursing into the rest (managed fields mirror the spec's nesting, so they are skipped too).

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use serde::{Deserialize, Serialize};

use super::ControlPlane;

/// The metadata of a ControlPlane; its spec, status and managed fields are not decoded.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ControlPlaneMeta {
    #[serde(default, deserialize_with = "identity_fields")]
    pub metadata: ObjectMeta,
}

/// The fields of a ControlPlane's metadata that reconciling it reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityFields {
    name: Option<String>,
    uid: Option<String>,
    generation: Option<i64>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
}

fn identity_fields<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<ObjectMeta, D::Error> {
    let fields = IdentityFields::deserialize(deserializer)?;
    Ok(ObjectMeta {
        name: fields.name,
        uid: fields.uid,
        generation: fields.generation,
        resource_version: fields.resource_version,
        creation_timestamp: fields.creation_timestamp,
        deletion_timestamp: fields.deletion_timestamp,
        finalizers: fields.finalizers,
        ..ObjectMeta::default()
    })
}

impl Resource for ControlPlaneMeta {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(dynamic: &()) -> Cow<'_, str> {
        ControlPlane::kind(dynamic)
    }

    fn group(dynamic: &()) -> Cow<'_, str> {
        ControlPlane::group(dynamic)
    }

    fn version(dynamic: &()) -> Cow<'_, str> {
        ControlPlane::version(dynamic)
    }

    fn plural(dynamic: &()) -> Cow<'_, str> {
        ControlPlane::plural(dynamic)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A ControlPlane in a list that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("ControlPlane {name} cannot be read: {source}")]
pub struct Undecodable {
    pub name: String,
    #[source]
    pub source: serde_json::Error,
}

/// Decodes each item of a list of ControlPlanes on its own: the ones that decode, and the
/// others with the reason.
pub fn decode_each(
    items: &[Box<serde_json::value::RawValue>],
) -> (Vec<ControlPlane>, Vec<Undecodable>) {
    let mut decoded = Vec::new();
    let mut undecodable = Vec::new();
    for item in items {
        match serde_json::from_str::<ControlPlane>(item.get()) {
            Ok(control_plane) => decoded.push(control_plane),
            Err(source) => undecodable.push(Undecodable {
                name: serde_json::from_str::<ControlPlaneMeta>(item.get())
                    .ok()
                    .and_then(|meta| meta.metadata.name)
                    .unwrap_or_default(),
                source,
            }),
        }
    }
    (decoded, undecodable)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored ControlPlane: the API server's managed fields mirror the spec's nesting.
    fn item(name: &str, spec: &str) -> Box<serde_json::value::RawValue> {
        let json = format!(
            r#"{{"apiVersion":"smm.dev/v1alpha1","kind":"ControlPlane","metadata":{{"name":"{name}","managedFields":[{{"fieldsType":"FieldsV1","fieldsV1":{{"f:spec":{spec}}}}}]}},"spec":{spec}}}"#
        );
        serde_json::value::RawValue::from_string(json).unwrap()
    }

    /// One ControlPlane nested deeper than the decoder follows, and one with a field from a
    /// newer CRD, are reported by name; the others still decode.
    #[test]
    fn a_control_plane_that_cannot_be_decoded_does_not_hide_the_others() {
        let deep = format!(
            r#"{{"components":{{"grafana":{{"valuesOverride":{}1{}}}}}}}"#,
            r#"{"a":"#.repeat(130),
            "}".repeat(130)
        );
        let items = [
            item("first", "{}"),
            item("deep", &deep),
            item("newer", r#"{"fromANewerCrd":true}"#),
            item("last", r#"{"revision":"canary"}"#),
        ];
        // Decoded as one typed list, as the watch and every list did, one bad item fails all.
        let texts: Vec<_> = items.iter().map(|item| item.get()).collect();
        let list = format!(r#"{{"metadata":{{}},"items":[{}]}}"#, texts.join(","));
        assert!(serde_json::from_str::<kube::core::ObjectList<ControlPlane>>(&list).is_err());
        let (decoded, undecodable) = decode_each(&items);
        let names: Vec<_> = decoded.iter().map(|cp| cp.metadata.name.clone()).collect();
        assert_eq!(names, [Some("first".to_owned()), Some("last".to_owned())]);
        let reasons: Vec<_> = undecodable.iter().map(ToString::to_string).collect();
        assert!(
            reasons[0].starts_with("ControlPlane deep cannot be read: recursion limit exceeded"),
            "{reasons:?}"
        );
        assert!(
            reasons[1]
                .starts_with("ControlPlane newer cannot be read: unknown field `fromANewerCrd`"),
            "{reasons:?}"
        );
        // The watch decodes the metadata alone, whatever the spec holds.
        let meta: ControlPlaneMeta = serde_json::from_str(items[1].get()).unwrap();
        assert_eq!(meta.metadata.name.as_deref(), Some("deep"));
    }
}
