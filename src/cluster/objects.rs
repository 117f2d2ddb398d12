//! Native resource builders: objects smm creates itself rather than through helm, because helm
//! handles them badly (it never upgrades CRDs) or because they must exist before any chart.
//!
//! A builder returns each object it manages marked present or absent. Present objects go through
//! server-side apply as field manager `smm`; absent ones are deleted if they exist. An object a
//! builder does not return is left alone (which is how CRDs survive an uninstall).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, TypeMeta, ValidationDirective,
};
use kube::{Api, Client, Resource, ResourceExt};
use std::sync::Arc;

use serde::Serialize;

use super::inventory::{APPLIED_DIGEST, Inventory, Kind, MANAGED_BY};
use crate::values::digest::values_digest;

/// The field manager of every server-side apply smm does.
pub const FIELD_MANAGER: &str = "smm";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Present,
    Absent,
}

/// One object a builder wants present or absent.
#[derive(Clone, Debug)]
pub struct NativeObject {
    pub resource: ApiResource,
    pub presence: Presence,
    name: String,
    namespace: Option<String>,
    /// The object as compact JSON, shared: Istio's CRDs, built once per process, are about a
    /// megabyte as text and several times that parsed, and most reconciles only compare digests.
    json: Arc<str>,
    /// The digest of the object, recorded on it when applied ([`APPLIED_DIGEST`]): an object
    /// that still carries it needs no new apply.
    digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("cannot apply {object}: {source}")]
    Apply {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot delete {object}: {source}")]
    Delete {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read {object}: {source}")]
    Read {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "refusing to replace {object}: the new definition no longer has version(s) {}, which \
         objects may still be stored in (status.storedVersions); migrate them to a version it \
         keeps and remove the old ones from storedVersions first",
        dropped.join(", ")
    )]
    DropsStoredVersion {
        object: String,
        dropped: Vec<String>,
    },
}

impl NativeObject {
    /// Wraps a typed object. Builders construct objects, so a failure to convert is a bug.
    pub fn new<K>(object: &K, presence: Presence) -> Self
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let value = serde_json::to_value(object).expect("Kubernetes objects serialize to JSON");
        let mut dynamic: DynamicObject = serde_json::from_value(value)
            .expect("Kubernetes objects deserialize as dynamic objects");
        dynamic.types = Some(TypeMeta {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
        });
        let value = serde_json::to_value(&dynamic).expect("dynamic objects serialize to JSON");
        Self::from_json::<K>(value, presence)
    }

    /// Wraps an object of kind `K` that is JSON already, `apiVersion` and `kind` included (as
    /// Istio's CRDs are, converted at build time).
    pub fn from_json<K: Resource<DynamicType = ()>>(
        value: serde_json::Value,
        presence: Presence,
    ) -> Self {
        let metadata = &value["metadata"];
        let name = metadata["name"].as_str().unwrap_or_default().to_owned();
        let namespace = metadata["namespace"].as_str().map(str::to_owned);
        Self {
            resource: ApiResource::erase::<K>(&()),
            presence,
            name,
            namespace,
            json: value.to_string().into(),
            digest: values_digest(&value),
        }
    }

    /// The object, parsed.
    pub fn object(&self) -> DynamicObject {
        serde_json::from_str(&self.json).expect("native objects are JSON smm wrote")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `None` for a cluster-scoped object.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The digest of the object as built, which smm stamps on it when it applies it.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The object as smm applies it: labelled as smm's and carrying its digest.
    fn stamped(&self) -> DynamicObject {
        let mut object = self.object();
        object
            .labels_mut()
            .insert(MANAGED_BY.to_owned(), FIELD_MANAGER.to_owned());
        object
            .annotations_mut()
            .insert(APPLIED_DIGEST.to_owned(), self.digest.clone());
        object
    }

    /// Whether the cluster already holds this object as it should be: present, applied by smm
    /// as it is now and not written by anyone else since, or absent. Not known (its kind could
    /// not be listed) counts as no.
    fn holds(&self, inventory: &Inventory) -> bool {
        let Ok(seen) = inventory.find(
            &self.kind(),
            self.namespace().unwrap_or_default(),
            &self.name,
        ) else {
            return false;
        };
        match self.presence {
            Presence::Present => seen.is_some_and(|seen| {
                seen.applied_digest.as_deref() == Some(self.digest.as_str())
                    && !seen.edited_since_applied
            }),
            Presence::Absent => seen.is_none(),
        }
    }

    /// The object's API kind.
    pub fn kind(&self) -> Kind {
        Kind::new(&self.resource.api_version, &self.resource.kind)
    }

    pub fn present<K: Resource<DynamicType = ()> + Serialize>(object: &K) -> Self {
        Self::new(object, Presence::Present)
    }

    pub fn absent<K: Resource<DynamicType = ()> + Serialize>(object: &K) -> Self {
        Self::new(object, Presence::Absent)
    }

    /// `Kind/name` or `Kind/namespace/name`, for messages.
    pub fn describe(&self) -> String {
        match self.namespace() {
            Some(namespace) => format!("{}/{namespace}/{}", self.resource.kind, self.name),
            None => format!("{}/{}", self.resource.kind, self.name),
        }
    }

    fn api(&self, client: &Client) -> Api<DynamicObject> {
        match self.namespace() {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &self.resource),
            None => Api::all_with(client.clone(), &self.resource),
        }
    }

    fn is_crd(&self) -> bool {
        self.resource.kind == <CustomResourceDefinition as k8s_openapi::Resource>::KIND
            && self.resource.group == <CustomResourceDefinition as k8s_openapi::Resource>::GROUP
    }
}

/// What applying a set of native objects left to wait for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NativeOutcome {
    /// Objects that exist but cannot be used yet (CRDs not yet `Established`).
    pub not_ready: Vec<String>,
}

/// Applies present objects and deletes absent ones, in the order given (callers put CRDs and
/// cluster roles before what uses them), after checking that no CRD would lose a stored version.
/// Strict field validation makes a wrong builder fail loudly.
pub async fn apply(
    client: &Client,
    objects: &[NativeObject],
) -> Result<NativeOutcome, NativeError> {
    apply_each(client, objects.iter().collect()).await
}

/// Like [`apply`], for the objects `inventory` (which must have listed their kinds) does not
/// show as they should be: an unchanged native object costs no request. A field changed by
/// hand on an object that still carries smm's digest is put back the next time the object
/// itself changes.
pub async fn apply_changed(
    client: &Client,
    objects: &[NativeObject],
    inventory: &Inventory,
) -> Result<NativeOutcome, NativeError> {
    apply_each(
        client,
        objects
            .iter()
            .filter(|native| !native.holds(inventory))
            .collect(),
    )
    .await
}

async fn apply_each(
    client: &Client,
    objects: Vec<&NativeObject>,
) -> Result<NativeOutcome, NativeError> {
    let mut outcome = NativeOutcome::default();
    let apply = PatchParams::apply(FIELD_MANAGER)
        .force()
        .validation(ValidationDirective::Strict);
    for crd in objects
        .iter()
        .filter(|native| native.is_crd() && native.presence == Presence::Present)
    {
        refuse_dropping_stored_versions(&crd.api(client), crd).await?;
    }
    for native in objects {
        let api = native.api(client);
        let name = native.name();
        match native.presence {
            Presence::Present => {
                let applied = api
                    .patch(name, &apply, &Patch::Apply(&native.stamped()))
                    .await
                    .map_err(|source| NativeError::Apply {
                        object: native.describe(),
                        source,
                    })?;
                if native.is_crd() && !crd_established(&applied) {
                    outcome.not_ready.push(native.describe());
                }
            }
            Presence::Absent => match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => tracing::info!(object = %native.describe(), "deleted"),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    return Err(NativeError::Delete {
                        object: native.describe(),
                        source,
                    });
                }
            },
        }
    }
    Ok(outcome)
}

/// Replacing a CRD with one that lacks a version objects are stored in would strand those
/// objects. The API server refuses that update too, but with a terse validation error and only
/// when it comes to that CRD; checking every CRD first changes nothing and says what to do.
async fn refuse_dropping_stored_versions(
    api: &Api<DynamicObject>,
    native: &NativeObject,
) -> Result<(), NativeError> {
    let live = api
        .get_opt(native.name())
        .await
        .map_err(|source| NativeError::Read {
            object: native.describe(),
            source,
        })?;
    let dropped = live
        .map(|live| dropped_stored_versions(&live, &native.object()))
        .unwrap_or_default();
    if dropped.is_empty() {
        Ok(())
    } else {
        Err(NativeError::DropsStoredVersion {
            object: native.describe(),
            dropped,
        })
    }
}

/// The versions of the live CRD's `status.storedVersions` that the new CRD does not list.
fn dropped_stored_versions(live: &DynamicObject, new: &DynamicObject) -> Vec<String> {
    let kept: Vec<&serde_json::Value> = new.data["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|version| &version["name"])
        .collect();
    live.data["status"]["storedVersions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|stored| !kept.contains(stored))
        .filter_map(|stored| stored.as_str().map(str::to_owned))
        .collect()
}

fn crd_established(object: &DynamicObject) -> bool {
    object.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Established" && c["status"] == "True")
}

/// Renders objects as they would be applied, for `--dump-resources`.
pub fn to_yaml_documents(objects: &[NativeObject]) -> Vec<String> {
    objects
        .iter()
        .filter(|native| native.presence == Presence::Present)
        .map(|native| {
            serde_yaml_ng::to_string(&native.stamped()).expect("dynamic objects serialize to YAML")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::ClusterRole;

    #[test]
    fn typed_objects_keep_their_type_and_identity() {
        let mut role = ClusterRole::default();
        role.metadata.name = Some("reader".to_owned());
        let native = NativeObject::present(&role);
        assert_eq!(native.describe(), "ClusterRole/reader");
        assert_eq!(native.resource.plural, "clusterroles");
        let yaml = to_yaml_documents(&[native, NativeObject::absent(&role)]);
        assert_eq!(yaml.len(), 1, "absent objects are not dumped");
        assert!(
            yaml[0].starts_with("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"),
            "{}",
            yaml[0]
        );
    }

    #[test]
    fn a_stored_version_missing_from_the_new_crd_is_found() {
        let crd = |data: serde_json::Value| {
            let mut object =
                DynamicObject::new("x", &ApiResource::erase::<CustomResourceDefinition>(&()));
            object.data = data;
            object
        };
        let live = crd(serde_json::json!({
            "spec": {"versions": [{"name": "v1alpha1"}, {"name": "v1"}]},
            "status": {"storedVersions": ["v1alpha1", "v1"]},
        }));
        let both =
            crd(serde_json::json!({"spec": {"versions": [{"name": "v1"}, {"name": "v1alpha1"}]}}));
        assert!(dropped_stored_versions(&live, &both).is_empty());
        let only_v1 = crd(serde_json::json!({"spec": {"versions": [{"name": "v1"}]}}));
        assert_eq!(dropped_stored_versions(&live, &only_v1), ["v1alpha1"]);
        // A CRD never stored in (no status yet) drops nothing.
        let fresh = crd(serde_json::json!({"spec": {"versions": [{"name": "v1alpha1"}]}}));
        assert!(dropped_stored_versions(&fresh, &only_v1).is_empty());
    }

    #[test]
    fn established_is_read_from_the_crd_conditions() {
        let mut object =
            DynamicObject::new("x", &ApiResource::erase::<CustomResourceDefinition>(&()));
        assert!(!crd_established(&object));
        object.data = serde_json::json!({"status": {"conditions": [
            {"type": "NamesAccepted", "status": "True"},
            {"type": "Established", "status": "True"}
        ]}});
        assert!(crd_established(&object));
    }
}
