//! Applying native objects (`api::objects`): objects smm creates itself rather than through
//! helm, because helm handles them badly (it never upgrades CRDs) or because they must exist
//! before any chart.
//!
//! A builder returns each object it manages marked present or absent. Present objects go through
//! server-side apply as field manager `smm`; absent ones are deleted if they exist. An object a
//! builder does not return is left alone (which is how CRDs survive an uninstall).

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, ValidationDirective};
use kube::{Api, Client, ResourceExt};

use super::bundle::keeps_live_bundle;
use super::inventory::{APPLIED_DIGEST, Inventory, Seen};
use crate::api::objects::{MANAGED_BY, NativeObject, Presence};

/// The field manager of every server-side apply smm does.
pub const FIELD_MANAGER: &str = "smm";

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

/// The object as smm applies it: labelled as smm's and carrying its digest.
fn stamped(native: &NativeObject) -> DynamicObject {
    let mut object = native.object();
    object
        .labels_mut()
        .insert(MANAGED_BY.to_owned(), FIELD_MANAGER.to_owned());
    object
        .annotations_mut()
        .insert(APPLIED_DIGEST.to_owned(), native.digest().to_owned());
    object
}

/// Whether the cluster already holds this object as it should be: present, applied by smm
/// as it is now and not written by anyone else since, or absent. Not known (its kind could
/// not be listed) counts as no.
fn holds(native: &NativeObject, inventory: &Inventory) -> bool {
    let Ok(seen) = inventory.find(
        &native.kind(),
        native.namespace().unwrap_or_default(),
        native.name(),
    ) else {
        return false;
    };
    as_applied(native, seen)
}

/// Whether `seen` (the object as found, none when missing) is `native` as smm applies it.
fn as_applied(native: &NativeObject, seen: Option<&Seen>) -> bool {
    match native.presence {
        Presence::Present => seen.is_some_and(|seen| {
            seen.applied_digest.as_deref() == Some(native.digest()) && !seen.edited_since_applied
        }),
        Presence::Absent => seen.is_none(),
    }
}

/// The API of `native`'s kind, in its namespace when it has one.
fn api(native: &NativeObject, client: &Client) -> Api<DynamicObject> {
    match native.namespace() {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &native.resource),
        None => Api::all_with(client.clone(), &native.resource),
    }
}

/// What applying a set of native objects left to wait for, and what it left alone.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NativeOutcome {
    /// Objects that exist but cannot be used yet (CRDs not yet `Established`).
    pub not_ready: Vec<String>,
    /// CRDs not applied because the cluster holds a newer or experimental bundle of them
    /// (`cluster::bundle`), each with the reason.
    pub left_alone: Vec<String>,
}

/// Whether `native` is in the cluster as smm last applied it (its metadata read, one GET).
pub async fn is_applied(client: &Client, native: &NativeObject) -> Result<bool, NativeError> {
    let found = api(native, client)
        .get_metadata_opt(native.name())
        .await
        .map_err(|source| NativeError::Read {
            object: native.describe(),
            source,
        })?;
    Ok(as_applied(
        native,
        found.map(|o| Seen::of(&o.metadata)).as_ref(),
    ))
}

/// Applies present objects and deletes absent ones, in the order given (callers put CRDs and
/// cluster roles before what uses them), after checking that no CRD would lose a stored version.
/// A Gateway API CRD whose live bundle is newer or experimental is left as it is (and logged).
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
            .filter(|native| !holds(native, inventory))
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
    let mut kept = Vec::new();
    for crd in objects
        .iter()
        .filter(|native| native.is_crd() && native.presence == Presence::Present)
    {
        if let Some(reason) = judge_live_crd(&api(crd, client), crd).await? {
            tracing::warn!(crd = crd.name(), %reason, "left as it is");
            outcome
                .left_alone
                .push(format!("{}: {reason}", crd.describe()));
            kept.push(crd.name().to_owned());
        }
    }
    let kept = |native: &NativeObject| native.is_crd() && kept.iter().any(|k| k == native.name());
    for native in objects.into_iter().filter(|native| !kept(native)) {
        let api = api(native, client);
        let name = native.name();
        match native.presence {
            Presence::Present => {
                let applied = api
                    .patch(name, &apply, &Patch::Apply(&stamped(native)))
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

/// The live CRD against the one to apply: why it is kept as it is (a newer or experimental
/// Gateway API bundle, see `cluster::bundle`), or an error if replacing it would strand objects
/// stored in a version the new one lacks. The API server refuses that update too, but with a
/// terse validation error and only when it comes to that CRD; checking every CRD first changes
/// nothing and says what to do.
async fn judge_live_crd(
    api: &Api<DynamicObject>,
    native: &NativeObject,
) -> Result<Option<String>, NativeError> {
    let Some(live) = api
        .get_opt(native.name())
        .await
        .map_err(|source| NativeError::Read {
            object: native.describe(),
            source,
        })?
    else {
        return Ok(None);
    };
    let new = native.object();
    if let Some(reason) = keeps_live_bundle(&live, &new) {
        return Ok(Some(reason));
    }
    let dropped = dropped_stored_versions(&live, &new);
    if dropped.is_empty() {
        Ok(None)
    } else {
        Err(NativeError::DropsStoredVersion {
            object: native.describe(),
            dropped,
        })
    }
}

/// The versions of the live CRD's `status.storedVersions` that the new CRD does not list.
pub(crate) fn dropped_stored_versions(live: &DynamicObject, new: &DynamicObject) -> Vec<String> {
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
            serde_yaml_ng::to_string(&stamped(native)).expect("dynamic objects serialize to YAML")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::ClusterRole;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::ApiResource;

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
