//! What exists of the objects helm and smm manage, read with one metadata-only list per kind.
//! helm labels every object it applies `app.kubernetes.io/managed-by=Helm` and smm labels its
//! native objects `...=smm`, so one selector finds both. Telling whether a release's objects are
//! all still there (drift) or whether a native object is as smm last applied it then costs one
//! request per kind, whatever the number of objects or components.
//!
//! The lists are served from the API server's cache (`resourceVersion=0`), which may lag the
//! latest writes by a moment: a consistent list waits for the cache to catch up with every write
//! in the cluster, which made each no-op reconcile tens of milliseconds slower. A lagging
//! answer costs little either way: an object deleted a moment ago is found missing by the next
//! reconcile, and a native object applied a moment ago is applied once more.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};

use super::objects::FIELD_MANAGER;
use crate::api::objects::Kind;

/// The annotation holding the digest of a native object as smm last applied it.
pub const APPLIED_DIGEST: &str = "smm.dev/applied-digest";
const MANAGED_BY_HELM_OR_SMM: &str = "app.kubernetes.io/managed-by in (Helm,smm)";

/// A managed object seen in a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// [`APPLIED_DIGEST`], on objects smm applied natively.
    pub applied_digest: Option<String>,
    /// Another field manager (`kubectl edit`, `kubectl apply`, a controller) wrote the object
    /// after smm last applied it; writes of its status do not count.
    pub edited_since_applied: bool,
}

impl Seen {
    pub(crate) fn of(meta: &ObjectMeta) -> Self {
        Self {
            applied_digest: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(APPLIED_DIGEST))
                .cloned(),
            edited_since_applied: edited_since_applied(
                meta.managed_fields.as_deref().unwrap_or_default(),
            ),
        }
    }
}

/// Whether a manager other than smm wrote the object's fields (not its status) later than smm
/// last applied it, as its managed fields record (to the second).
fn edited_since_applied(entries: &[ManagedFieldsEntry]) -> bool {
    let by_smm = |entry: &&ManagedFieldsEntry| entry.manager.as_deref() == Some(FIELD_MANAGER);
    let main =
        |entry: &&ManagedFieldsEntry| entry.subresource.as_deref().unwrap_or_default().is_empty();
    let Some(applied) = entries
        .iter()
        .filter(main)
        .filter(by_smm)
        .filter_map(|e| e.time.as_ref())
        .max()
    else {
        return false;
    };
    entries
        .iter()
        .filter(main)
        .filter(|entry| !by_smm(entry))
        .filter_map(|entry| entry.time.as_ref())
        .any(|written| written > applied)
}

/// A kind that could not be listed (for example, smm may not list it): what needs it fails,
/// the rest of the run goes on.
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot list {kind} objects: {message}")]
pub struct InventoryError {
    kind: String,
    message: String,
}

/// Per kind, the objects listed by namespace ("" for cluster-scoped ones) and name.
type Listing = BTreeMap<(String, String), Seen>;

/// The managed objects of some kinds, as listed once.
#[derive(Debug, Default)]
pub struct Inventory {
    kinds: BTreeMap<Kind, Result<Listing, InventoryError>>,
}

impl Inventory {
    /// Lists the managed objects of `kinds`. A kind the API server does not serve has no
    /// objects.
    ///
    /// One list after another, on the connection the run already has. kube's client leaves
    /// Nagle's algorithm on (TCP_NODELAY off), so the first request on each new connection waits
    /// for the API server's delayed ACK of the TLS handshake, 40 ms; lists side by side opened a
    /// connection each and paid that, where one after another they cost about a millisecond each
    /// here.
    pub async fn take(client: &Client, kinds: BTreeSet<Kind>) -> Self {
        let mut listed = BTreeMap::new();
        for kind in kinds {
            let objects = list_kind(client, &kind)
                .await
                .map_err(|source| InventoryError {
                    kind: format!("{}/{}", kind.api_version, kind.kind),
                    message: source.to_string(),
                });
            listed.insert(kind, objects);
        }
        Self { kinds: listed }
    }

    /// The managed object of `kind` called `name`, in `namespace` or (a cluster-scoped kind)
    /// in none; an error when its kind could not be listed. Kinds that were not asked for hold
    /// nothing.
    pub fn find(
        &self,
        kind: &Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<&Seen>, InventoryError> {
        let Some(listed) = self.kinds.get(kind) else {
            return Ok(None);
        };
        let objects = listed.as_ref().map_err(Clone::clone)?;
        Ok(objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .or_else(|| objects.get(&(String::new(), name.to_owned()))))
    }
}

/// One kind's managed objects. The plural is guessed from the kind (as kube does) and looked up
/// only when the guess is not served.
async fn list_kind(client: &Client, kind: &Kind) -> Result<Listing, kube::Error> {
    let gvk = kind.gvk();
    let listed = match list_resource(client, &ApiResource::from_gvk(&gvk)).await {
        Err(kube::Error::Api(status)) if status.code == 404 => {
            match kube::discovery::pinned_kind(client, &gvk).await {
                Ok((resource, _)) => list_resource(client, &resource).await,
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(Vec::new()),
                Err(kube::Error::Discovery(_)) => Ok(Vec::new()),
                Err(other) => Err(other),
            }
        }
        other => other,
    }?;
    Ok(listed.into_iter().collect())
}

async fn list_resource(
    client: &Client,
    resource: &ApiResource,
) -> Result<Vec<((String, String), Seen)>, kube::Error> {
    let list = Api::<DynamicObject>::all_with(client.clone(), resource)
        .list_metadata(
            &ListParams::default()
                .labels(MANAGED_BY_HELM_OR_SMM)
                .match_any(),
        )
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|object| {
            let seen = Seen::of(&object.metadata);
            (
                (object.namespace().unwrap_or_default(), object.name_any()),
                seen,
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn entry(manager: &str, subresource: Option<&str>, second: i64) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            subresource: subresource.map(str::to_owned),
            time: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + second).unwrap(),
            )),
            ..ManagedFieldsEntry::default()
        }
    }

    #[test]
    fn an_object_written_by_another_manager_after_smm_applied_it_is_edited() {
        let applied = entry("smm", None, 10);
        assert!(!edited_since_applied(std::slice::from_ref(&applied)));
        // Written before smm applied it, at the same second, or only its status: not edited.
        assert!(!edited_since_applied(&[
            entry("kubectl-edit", None, 9),
            applied.clone()
        ]));
        assert!(!edited_since_applied(&[
            applied.clone(),
            entry("kubectl-edit", None, 10)
        ]));
        assert!(!edited_since_applied(&[
            applied.clone(),
            entry("kube-apiserver", Some("status"), 20),
        ]));
        assert!(edited_since_applied(&[
            applied.clone(),
            entry("kubectl-edit", None, 11)
        ]));
        // Never applied by smm: nothing to compare with.
        assert!(!edited_since_applied(&[entry("kubectl-edit", None, 11)]));
    }

    #[test]
    fn objects_are_found_by_name_and_an_unlisted_kind_is_an_error() {
        let deployment = Kind::new("apps/v1", "Deployment");
        let role = Kind::new("rbac.authorization.k8s.io/v1", "ClusterRole");
        let forbidden = Kind::new("v1", "Secret");
        let seen = Seen::default();
        let listing = |namespace: &str, name: &str| {
            Ok(BTreeMap::from([(
                (namespace.to_owned(), name.to_owned()),
                seen.clone(),
            )]))
        };
        let inventory = Inventory {
            kinds: BTreeMap::from([
                (deployment.clone(), listing("mesh", "web")),
                (role.clone(), listing("", "reader")),
                (
                    forbidden.clone(),
                    Err(InventoryError {
                        kind: "v1/Secret".to_owned(),
                        message: "forbidden".to_owned(),
                    }),
                ),
            ]),
        };
        let find = |kind: &Kind, namespace: &str, name: &str| {
            inventory.find(kind, namespace, name).unwrap().cloned()
        };
        assert_eq!(find(&deployment, "mesh", "web"), Some(seen.clone()));
        assert_eq!(find(&deployment, "other", "web"), None);
        // A manifest names a cluster-scoped object without a namespace; the release's is given.
        assert_eq!(find(&role, "mesh", "reader"), Some(seen.clone()));
        assert_eq!(find(&Kind::new("v1", "Service"), "mesh", "web"), None);
        // A kind that could not be listed answers nothing about its objects.
        let err = inventory.find(&forbidden, "mesh", "web").unwrap_err();
        assert_eq!(err.to_string(), "cannot list v1/Secret objects: forbidden");
        assert_eq!(deployment.gvk().group, "apps");
        assert_eq!(Kind::new("v1", "Service").gvk().group, "");
    }
}
