//! A ControlPlane as far as its metadata: what watching and listing ControlPlanes decode, so
//! that one ControlPlane whose spec cannot be decoded (values nested deeper than the JSON
//! decoder follows, a field from a newer CRD) does not stop the watch or the list of all the
//! others. Decoding skips everything but the fields of the metadata that are read, without
//! recursing into the rest (managed fields mirror the spec's nesting, so they are skipped too).

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use serde::{Deserialize, Serialize};

use super::{ComponentSpec, ControlPlane, ControlPlaneSpec, ControlPlaneStatus};

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

/// A ControlPlane as far as removing what it installed reads it: its metadata, its status (the
/// releases it recorded) and, of its spec, only where the components are (the mesh namespace,
/// the revision, each component's namespace). Everything else of the spec is skipped without
/// being decoded, so a ControlPlane whose spec cannot be decoded as a whole (values nested
/// deeper than the decoder follows, a field from a newer CRD) can still be deleted.
#[derive(Debug, Deserialize)]
pub struct Removable {
    #[serde(default, deserialize_with = "identity_fields")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Placement,
    #[serde(default)]
    status: Option<ControlPlaneStatus>,
}

/// Where a spec puts the components.
#[derive(Debug, Default, Deserialize)]
struct Placement {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    revision: Option<String>,
    #[serde(default)]
    components: std::collections::BTreeMap<String, ComponentPlacement>,
}

#[derive(Debug, Default, Deserialize)]
struct ComponentPlacement {
    #[serde(default)]
    namespace: Option<String>,
}

impl Removable {
    /// The ControlPlane with this much of its spec: all that removing its components reads
    /// (values, images and the trust domain do not matter once everything goes).
    pub fn into_control_plane(self) -> ControlPlane {
        let components = self.spec.components.into_iter().map(|(name, placed)| {
            let spec = ComponentSpec {
                namespace: placed.namespace,
                ..ComponentSpec::default()
            };
            (name, spec)
        });
        let spec = ControlPlaneSpec {
            namespace: self.spec.namespace,
            revision: self.spec.revision,
            components: components.collect(),
            ..ControlPlaneSpec::default()
        };
        ControlPlane {
            metadata: self.metadata,
            spec,
            status: self.status,
        }
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

    /// Removal reads where the components are, and the status, of a ControlPlane that cannot be
    /// decoded as a whole; the values and fields it does not know are skipped.
    #[test]
    fn where_the_components_are_is_read_whatever_else_the_spec_holds() {
        let deep = format!("{}1{}", r#"{"a":"#.repeat(130), "}".repeat(130));
        let spec = format!(
            r#"{{"namespace":"mesh","revision":"canary","imageRegistry":"r.local","fromANewerCrd":[1],"components":{{"grafana":{{"namespace":"dash","enabled":true,"valuesOverride":{deep},"newer":1}},"istiod":{{}}}}}}"#
        );
        let json = item("deep", &spec).get().replace(
            r#""spec":"#,
            r#""status":{"components":{"grafana":{"phase":"Available","release":{"name":"grafana","namespace":"dash","revision":3}}}},"spec":"#,
        );
        assert!(serde_json::from_str::<ControlPlane>(&json).is_err());
        let read = serde_json::from_str::<Removable>(&json)
            .unwrap()
            .into_control_plane();
        assert_eq!(read.metadata.name.as_deref(), Some("deep"));
        let expected = ControlPlaneSpec {
            namespace: Some("mesh".to_owned()),
            revision: Some("canary".to_owned()),
            ..ControlPlaneSpec::default()
        }
        .with_component("grafana", |c| c.namespace = Some("dash".to_owned()))
        .with_component("istiod", |_| {});
        assert_eq!(read.spec, expected);
        let status = read.status.unwrap();
        let release = status.components["grafana"].release.clone().unwrap();
        assert_eq!(
            (release.namespace.as_str(), release.revision),
            ("dash", Some(3))
        );
    }
}
