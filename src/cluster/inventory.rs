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

use futures::{StreamExt, TryStreamExt};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client, ResourceExt};

/// The label helm and smm put on what they apply.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The annotation holding the digest of a native object as smm last applied it.
pub const APPLIED_DIGEST: &str = "smm.dev/applied-digest";
const MANAGED_BY_HELM_OR_SMM: &str = "app.kubernetes.io/managed-by in (Helm,smm)";
/// Lists run side by side, a few at a time.
const CONCURRENT_LISTS: usize = 8;

/// An API kind, as objects name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Kind {
    pub api_version: String,
    pub kind: String,
}

impl Kind {
    pub fn new(api_version: &str, kind: &str) -> Self {
        Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        }
    }

    fn gvk(&self) -> GroupVersionKind {
        let (group, version) = self
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", &self.api_version));
        GroupVersionKind::gvk(group, version, &self.kind)
    }
}

/// A managed object seen in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// [`APPLIED_DIGEST`], on objects smm applied natively.
    pub applied_digest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot list {kind} objects: {source}")]
pub struct InventoryError {
    kind: String,
    #[source]
    source: kube::Error,
}

/// The managed objects of some kinds, as listed once.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Per kind, objects by namespace ("" for cluster-scoped ones) and name.
    kinds: BTreeMap<Kind, BTreeMap<(String, String), Seen>>,
}

impl Inventory {
    /// Lists the managed objects of `kinds`, a few lists at a time. A kind the API server does
    /// not serve has no objects.
    pub async fn take(client: &Client, kinds: BTreeSet<Kind>) -> Result<Self, InventoryError> {
        let listings: Vec<_> = futures::stream::iter(kinds.into_iter().map(|kind| async move {
            let objects = list_kind(client, &kind)
                .await
                .map_err(|source| InventoryError {
                    kind: format!("{}/{}", kind.api_version, kind.kind),
                    source,
                })?;
            Ok::<_, InventoryError>((kind, objects))
        }))
        .buffer_unordered(CONCURRENT_LISTS)
        .try_collect()
        .await?;
        Ok(Self {
            kinds: listings.into_iter().collect(),
        })
    }

    /// The managed object of `kind` called `name`, in `namespace` or (a cluster-scoped kind)
    /// in none. Kinds that were not listed hold nothing.
    pub fn find(&self, kind: &Kind, namespace: &str, name: &str) -> Option<&Seen> {
        let objects = self.kinds.get(kind)?;
        objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .or_else(|| objects.get(&(String::new(), name.to_owned())))
    }
}

/// One kind's managed objects. The plural is guessed from the kind (as kube does) and looked up
/// only when the guess is not served.
async fn list_kind(
    client: &Client,
    kind: &Kind,
) -> Result<BTreeMap<(String, String), Seen>, kube::Error> {
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
            let seen = Seen {
                applied_digest: object.annotations().get(APPLIED_DIGEST).cloned(),
            };
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

    #[test]
    fn namespaced_and_cluster_scoped_objects_are_found_by_name() {
        let deployment = Kind::new("apps/v1", "Deployment");
        let role = Kind::new("rbac.authorization.k8s.io/v1", "ClusterRole");
        let seen = Seen {
            applied_digest: None,
        };
        let inventory = Inventory {
            kinds: BTreeMap::from([
                (
                    deployment.clone(),
                    BTreeMap::from([(("mesh".to_owned(), "web".to_owned()), seen.clone())]),
                ),
                (
                    role.clone(),
                    BTreeMap::from([((String::new(), "reader".to_owned()), seen.clone())]),
                ),
            ]),
        };
        assert_eq!(inventory.find(&deployment, "mesh", "web"), Some(&seen));
        assert_eq!(inventory.find(&deployment, "other", "web"), None);
        // A manifest names a cluster-scoped object without a namespace; the release's is given.
        assert_eq!(inventory.find(&role, "mesh", "reader"), Some(&seen));
        assert_eq!(
            inventory.find(&Kind::new("v1", "Service"), "mesh", "web"),
            None
        );
        assert_eq!(deployment.gvk().group, "apps");
        assert_eq!(Kind::new("v1", "Service").gvk().group, "");
    }
}
