//! What makes the operator look at its ControlPlanes again, besides their own changes: any
//! change to what a reconcile compares, seen through metadata-only watches. That is helm's
//! release records of the catalog's releases, and the objects of every kind the charts render
//! or the native builders apply that helm or smm manage. So drift (an object deleted or edited by
//! hand, a hand-made helm upgrade or rollback, a workload becoming ready) is acted on at once,
//! and an idle operator lists nothing: a no-op reconcile comes only after a change.

use std::collections::BTreeSet;

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::discovery::Discovery;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};

use super::rbac::{default_placements, native_kinds};
use super::watch_retry::WatchRetry;
use crate::mesh::catalog::{Catalog, may_be_release_of};

/// What helm and smm label the objects they manage with (see `cluster::inventory`).
const MANAGED: &str = "app.kubernetes.io/managed-by in (Helm,smm)";
/// The annotation helm puts on every object of a release, naming the release.
const RELEASE_ANNOTATION: &str = "meta.helm.sh/release-name";
/// What smm labels its native objects with.
const MANAGED_BY_SMM: (&str, &str) = ("app.kubernetes.io/managed-by", "smm");

/// One item per change that may concern any ControlPlane. A kind the API server does not serve
/// (yet) is not watched; that is logged.
pub(super) async fn changes(client: &Client, catalog: &Catalog) -> impl Stream<Item = ()> + use<> {
    let releases = ReleaseNames::of(catalog);
    let names = releases.fixed().collect::<Vec<_>>().join(",");
    let records = watcher::Config::default().labels(&format!("owner=helm,name in ({names})"));
    let mut watched = vec![(ApiResource::erase::<Secret>(&()), records)];
    let objects = watcher::Config::default().labels(MANAGED);
    for resource in managed_kinds(client, catalog).await {
        watched.push((resource, objects.clone()));
    }
    let streams = watched.into_iter().map(move |(resource, config)| {
        let api = Api::<PartialObjectMeta<DynamicObject>>::all_with(client.clone(), &resource);
        let releases = releases.clone();
        watcher::watcher(api, config)
            .backoff(WatchRetry::default())
            .filter_map(move |event| {
                let change = match event {
                    Ok(event) => concerns_us(&event, &releases),
                    Err(err) => {
                        tracing::warn!(kind = %resource.kind, %err, "watch failed; retrying");
                        false
                    }
                };
                std::future::ready(change.then_some(()))
            })
            .boxed()
    });
    stream::select_all(streams.collect::<Vec<_>>())
}

/// Whether a watch event may concern a ControlPlane: an object of one of the catalog's releases
/// (a release record, or an object helm applied for it) or one smm applied natively, added,
/// changed or deleted; and the end of every (re)list, which can hide deletions.
fn concerns_us(event: &Event<PartialObjectMeta<DynamicObject>>, releases: &ReleaseNames) -> bool {
    let object = match event {
        Event::Apply(object) | Event::Delete(object) => object,
        Event::InitDone => return true,
        Event::Init | Event::InitApply(_) => return false,
    };
    let (key, value) = MANAGED_BY_SMM;
    let native = object.labels().get(key).is_some_and(|v| v == value);
    let release = object
        .annotations()
        .get(RELEASE_ANNOTATION)
        .or_else(|| object.labels().get("name"));
    native || release.is_some_and(|name| releases.contains(name.as_str()))
}

/// The catalog's release names: each component's, and a revisioned one's with any revision
/// (`istiod-1-31-4`). Release records are watched by the fixed names only (a label selector has
/// no prefix match); a revision's release is seen through its objects.
#[derive(Clone, Debug)]
struct ReleaseNames(Vec<(&'static str, bool)>);

impl ReleaseNames {
    fn of(catalog: &Catalog) -> Self {
        Self(
            catalog
                .components()
                .iter()
                .map(|component| (component.release_name, component.revisioned))
                .collect(),
        )
    }

    fn fixed(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|(name, _)| *name)
    }

    fn contains(&self, release: &str) -> bool {
        self.0
            .iter()
            .any(|(name, revisioned)| may_be_release_of(name, *revisioned, release))
    }
}

/// Every kind the catalog's charts render or its builders apply, as the API server serves it.
async fn managed_kinds(client: &Client, catalog: &Catalog) -> Vec<ApiResource> {
    let placements = default_placements(catalog);
    let mut kinds: Vec<ApiResource> = catalog
        .components()
        .iter()
        .flat_map(|component| native_kinds(component, &placements))
        .map(|native| native.resource)
        .collect();
    let charted: BTreeSet<(&str, &str)> = catalog
        .components()
        .iter()
        .flat_map(|component| component.chart_kinds)
        .map(|kind| (kind.group, kind.kind))
        .collect();
    let groups: BTreeSet<&str> = charted.iter().map(|(group, _)| *group).collect();
    let discovery = Discovery::new(client.clone())
        .filter(&groups.into_iter().collect::<Vec<_>>())
        .run()
        .await;
    for (group, kind) in charted {
        let served = discovery.as_ref().ok().and_then(|discovery| {
            let group = discovery.get(group)?;
            group.recommended_kind(kind).map(|(resource, _)| resource)
        });
        match served {
            Some(resource) => kinds.push(resource),
            None => tracing::warn!(group, kind, "not served: its objects are not watched"),
        }
    }
    kinds.sort_by(|a, b| (&a.group, &a.plural).cmp(&(&b.group, &b.plural)));
    kinds.dedup_by(|a, b| (&a.group, &a.plural) == (&b.group, &b.plural));
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> PartialObjectMeta<DynamicObject> {
        let map = |pairs: &[(&str, &str)]| {
            let pairs = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
            Some(pairs.collect())
        };
        PartialObjectMeta {
            types: None,
            metadata: kube::api::ObjectMeta {
                labels: map(labels),
                annotations: map(annotations),
                ..Default::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    /// Objects of the catalog's releases and smm's native objects concern the ControlPlanes;
    /// another chart's objects and release records do not; a (re)list's end always does.
    #[test]
    fn only_changes_to_what_smm_manages_trigger_a_look() {
        let releases = ReleaseNames(vec![("istiod", true), ("prometheus", false)]);
        let helm = ("app.kubernetes.io/managed-by", "Helm");
        let ours = object(&[helm], &[(RELEASE_ANNOTATION, "istiod")]);
        let revision = object(&[helm], &[(RELEASE_ANNOTATION, "istiod-1-31-4")]);
        let lookalike = object(&[helm], &[(RELEASE_ANNOTATION, "prometheus-2")]);
        let theirs = object(&[helm], &[(RELEASE_ANNOTATION, "nginx")]);
        let native = object(&[MANAGED_BY_SMM], &[]);
        let record = object(&[("owner", "helm"), ("name", "prometheus")], &[]);
        let other_record = object(&[("owner", "helm"), ("name", "nginx")], &[]);
        for (event, expected) in [
            (Event::Apply(ours.clone()), true),
            (Event::Delete(ours.clone()), true),
            (Event::Apply(theirs), false),
            (Event::Apply(revision), true),
            (Event::Apply(lookalike), false),
            (Event::Delete(native), true),
            (Event::Apply(record), true),
            (Event::Apply(other_record), false),
            (Event::InitApply(ours), false),
            (Event::Init, false),
            (Event::InitDone, true),
        ] {
            assert_eq!(concerns_us(&event, &releases), expected, "{event:?}");
        }
    }
}
