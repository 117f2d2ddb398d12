//! No object smm manages is lost: every object the intended spec renders (the charts' and the
//! ones smm applies natively) and every object of each enabled release's latest manifest in
//! helm's records is live after the next run, and not being deleted. Objects are compared by
//! identity (API version and kind, namespace, name), whatever their kind.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::discovery::{Scope, pinned_kind};
use kube::{Api, ResourceExt};
use serde_json::Value;
use smm::api::objects::Kind;
use smm::helm::record_cache::RecordCache;
use smm::helm::release::{Freshness, ReleaseRef, observe};

use crate::scene::Scene;
use crate::spec::{enabled_components, release_name};

/// An object's identity in words; `namespace` is None for cluster-scoped objects.
fn describe_object(kind: &Kind, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{} {ns}/{name}", kind.kind),
        None => format!("{} {name}", kind.kind),
    }
}

/// Where the campaign expects an object: the rendering of the intended spec, or a release's
/// latest record.
type Expected = BTreeMap<(Kind, Option<String>, String), BTreeSet<String>>;

impl Scene<'_> {
    /// Fails the fault for every expected object (see the module's doc) that is not live.
    pub async fn check_objects(&mut self, rendered: &[Value], intended: &Value) {
        let mut expected = Expected::new();
        for object in rendered {
            // Hooks run and go; they are not part of what a release keeps.
            if object["metadata"]["annotations"]["helm.sh/hook"].is_string() {
                continue;
            }
            let (Some(api_version), Some(kind), Some(name)) = (
                object["apiVersion"].as_str(),
                object["kind"].as_str(),
                object["metadata"]["name"].as_str(),
            ) else {
                continue;
            };
            let namespace = object["metadata"]["namespace"].as_str().map(str::to_owned);
            expected
                .entry((Kind::new(api_version, kind), namespace, name.to_owned()))
                .or_default()
                .insert("the rendering of the intended spec".to_owned());
        }
        self.expect_release_manifests(intended, &mut expected).await;
        let served = self.served_kinds(&expected).await;
        let mut live: BTreeMap<(Kind, Option<String>), BTreeSet<String>> = BTreeMap::new();
        for ((kind, namespace, name), sources) in expected {
            let Some((resource, scope)) = served.get(&kind) else {
                continue;
            };
            // helm and smm put namespaced objects written without a namespace in the mesh's.
            let namespace = match scope {
                Scope::Namespaced => Some(namespace.unwrap_or_else(|| self.ns.clone())),
                Scope::Cluster => None,
            };
            let key = (kind.clone(), namespace.clone());
            if !live.contains_key(&key) {
                let names = self.live_names(resource, namespace.as_deref()).await;
                live.insert(key.clone(), names);
            }
            if !live[&key].contains(&name) {
                let id = describe_object(&kind, namespace.as_deref(), &name);
                let sources: Vec<String> = sources.into_iter().collect();
                self.record
                    .fail(format!("{id} of {} is lost", sources.join(" and ")));
            }
        }
    }

    /// Adds the objects of each enabled component's latest release record to `expected`.
    async fn expect_release_manifests(&mut self, intended: &Value, expected: &mut Expected) {
        let enabled = enabled_components(intended);
        let releases: Vec<ReleaseRef> = self
            .ctx
            .catalog
            .components()
            .iter()
            .filter(|component| enabled.contains(component.name))
            .map(|component| ReleaseRef {
                name: release_name(component, intended),
                namespace: self.ns.clone(),
            })
            .collect();
        // A cache of its own: the check reads helm's records as they are now.
        let cache = RecordCache::default();
        let latest = Freshness::Latest;
        let observed = match observe(&self.ctx.client, &releases, latest, &cache).await {
            Ok(observed) => observed,
            Err(err) => {
                return self
                    .record
                    .fail(format!("reading helm's release records: {err}"));
            }
        };
        for ((_, release), latest) in observed {
            let record = match latest.record() {
                Ok(record) => record,
                Err(err) => {
                    self.record.fail(err.to_string());
                    continue;
                }
            };
            for object in &record.objects {
                expected
                    .entry((object.kind(), object.namespace.clone(), object.name.clone()))
                    .or_default()
                    .insert(format!("release {release} v{}", latest.revision));
            }
        }
    }

    /// How the API server serves each kind of `expected`; a kind it does not serve fails the
    /// fault (its objects cannot be there).
    async fn served_kinds(&mut self, expected: &Expected) -> BTreeMap<Kind, (ApiResource, Scope)> {
        let kinds: BTreeSet<&Kind> = expected.keys().map(|(kind, _, _)| kind).collect();
        let mut served = BTreeMap::new();
        for kind in kinds {
            match pinned_kind(&self.ctx.client, &kind.gvk()).await {
                Ok((resource, capabilities)) => {
                    served.insert(kind.clone(), (resource, capabilities.scope));
                }
                Err(err) => self.record.fail(format!(
                    "{} {} is not served, so none of its objects is there: {err}",
                    kind.api_version, kind.kind
                )),
            }
        }
        served
    }

    /// The names of the live objects of `resource` in `namespace` (all of them for a
    /// cluster-scoped kind) that are not being deleted; none (and a failure) when they cannot
    /// be listed.
    async fn live_names(
        &mut self,
        resource: &ApiResource,
        namespace: Option<&str>,
    ) -> BTreeSet<String> {
        let client = self.ctx.client.clone();
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client, ns, resource),
            None => Api::all_with(client, resource),
        };
        match api.list_metadata(&ListParams::default()).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter(|object| object.metadata.deletion_timestamp.is_none())
                .map(|object| object.name_any())
                .collect(),
            Err(err) => {
                self.record
                    .fail(format!("listing {} objects: {err}", resource.kind));
                BTreeSet::new()
            }
        }
    }
}
