//! A ControlPlane's spec resolved once for a run: every component's desired state, checked
//! before anything is locked, stored or applied, then handed down to the engine as it is. A
//! spec that cannot be applied is one error, [`Rejected`], wherever it is found.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::objects::Presence;
use crate::api::{ControlPlane, ControlPlaneSpec, names};
use crate::helm::release::ReleaseRef;
use crate::mesh::catalog::Catalog;
use crate::mesh::revisions::strategy::{self, ActiveRevision};

use super::resolve::{DesiredComponent, SpecError, resolve};
use super::shared::{SharedRelease, refuse_newcomer, shared_releases};

/// The spec of ControlPlane `name` cannot be applied; nothing was changed because of it.
#[derive(Debug, thiserror::Error)]
#[error("ControlPlane {name} rejected, nothing was changed: {source}")]
pub struct Rejected {
    pub name: String,
    #[source]
    pub source: SpecError,
}

/// What a run brings the cluster to: the spec as it will be stored and every catalog
/// component's desired state, in dependency order.
#[derive(Debug)]
pub struct Resolved<'c> {
    catalog: &'c Catalog,
    name: String,
    spec: ControlPlaneSpec,
    components: Vec<DesiredComponent<'c>>,
    revision: ActiveRevision,
    /// Every revision tag the spec asks for, with the revision it points at.
    tags: BTreeMap<String, String>,
}

impl<'c> Resolved<'c> {
    /// Resolves `spec`, the spec of the ControlPlane `name`.
    pub fn new(catalog: &'c Catalog, name: &str, spec: ControlPlaneSpec) -> Result<Self, Rejected> {
        let rejected = |source| Rejected {
            name: name.to_owned(),
            source,
        };
        names::control_plane_name("metadata.name", name)
            .map_err(|invalid| rejected(invalid.into()))?;
        let components = tracing::debug_span!("resolve", components = catalog.components().len())
            .in_scope(|| resolve(catalog, &spec))
            .map_err(rejected)?;
        // Checked by `resolve` already.
        let revision = strategy::active(&spec).map_err(|err| rejected(err.into()))?;
        let tags = strategy::tags(&spec, &revision).map_err(|err| rejected(err.into()))?;
        Ok(Self {
            catalog,
            name: name.to_owned(),
            spec,
            components,
            revision,
            tags,
        })
    }

    /// Every component disabled, as deleting the ControlPlane asks. Removal works even for a
    /// spec that could not be applied: values, images, the trust domain and unknown components
    /// do not matter once everything goes.
    pub fn removal(
        catalog: &'c Catalog,
        name: &str,
        spec: &ControlPlaneSpec,
    ) -> Result<Self, Rejected> {
        let mut spec = spec.clone();
        spec.image_registry = None;
        spec.trust_domain = None;
        // Tags and revisions go with everything else: the engine removes the tags it applied
        // and every revision the status records, whatever the version and strategy said.
        spec.revision_tags.clear();
        spec.version = None;
        spec.update_strategy = None;
        spec.components
            .retain(|component, _| catalog.get(component).is_some());
        for component in catalog.names() {
            let entry = spec.components.entry(component.to_owned()).or_default();
            entry.enabled = Some(false);
            entry.values_override = None;
        }
        Self::new(catalog, name, spec)
    }

    /// The releases this spec would manage that one of `others` (the other ControlPlanes)
    /// manages too.
    pub fn shared_releases<'o>(&self, others: &'o [ControlPlane]) -> Vec<SharedRelease<'o>> {
        shared_releases(self.catalog, &self.spec, others)
    }

    /// Refuses this spec when it would manage one of `shared` that the other ControlPlane keeps
    /// (see [`keeps_shared_release`](super::shared::keeps_shared_release)); `stored` is this
    /// ControlPlane's metadata, none before it is first stored.
    pub fn refuse_newcomer<'r>(
        &self,
        stored: Option<&ObjectMeta>,
        shared: &[SharedRelease<'_>],
        owner_of: impl Fn(&ReleaseRef) -> Option<&'r str>,
    ) -> Result<(), Rejected> {
        refuse_newcomer(stored, shared, owner_of).map_err(|source| Rejected {
            name: self.name.clone(),
            source,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn spec(&self) -> &ControlPlaneSpec {
        &self.spec
    }

    /// The istiod revision the spec asks for.
    pub fn revision(&self) -> &ActiveRevision {
        &self.revision
    }

    /// Every revision tag the spec asks for (tag → revision).
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }

    /// Every catalog component's desired state, dependencies first.
    pub fn components(&self) -> &[DesiredComponent<'c>] {
        &self.components
    }

    /// The components whose desired state differs from `before`'s: switched on or off, or
    /// enabled with other chart or values. An edit of one component can change another's
    /// managed values (tracing on changes istiod's mesh config, grafana on changes Kiali's), so
    /// an imperative command reconciles these too, or their status would claim a state the
    /// cluster is not in until the next full reconcile.
    pub fn changed_from(&self, before: &Resolved<'_>) -> BTreeSet<String> {
        self.components
            .iter()
            .filter(|now| {
                let then = before.components.iter().find(|c| c.name() == now.name());
                then.is_none_or(|then| {
                    then.enabled != now.enabled
                        || (now.enabled
                            && (then.chart_digest != now.chart_digest
                                || then.values_digest != now.values_digest
                                || native_state(then) != native_state(now)))
                })
            })
            .map(|changed| changed.name().to_owned())
            .collect()
    }
}

/// What a component's native objects are, as the engine tells them apart: each one's digest and
/// whether it should exist.
fn native_state<'a>(component: &'a DesiredComponent<'_>) -> Vec<(&'a str, Presence)> {
    component
        .native
        .iter()
        .map(|object| (object.digest(), object.presence))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_rejected_spec_names_its_control_plane() {
        let catalog = Catalog::builtin().unwrap();
        let spec = ControlPlaneSpec::default().with_component("istio-d", |_| {});
        let err = Resolved::new(&catalog, "mesh", spec).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "ControlPlane mesh rejected, nothing was changed: spec.components.istio-d: \
                 unknown component"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_name_too_long_for_its_lease_and_events_is_rejected() {
        let catalog = Catalog::builtin().unwrap();
        let name = [&"a".repeat(63)[..]; 3].join(".") + "." + &"b".repeat(45);
        let err = Resolved::new(&catalog, &name, ControlPlaneSpec::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "ControlPlane {name} rejected, nothing was changed: metadata.name: {name:?} is \
                 not a valid ControlPlane name: must be a DNS-1123 subdomain (lowercase letters, \
                 digits, '-' and '.', each dot-separated part starting and ending with a letter \
                 or digit, at most 236 characters, so that its lease smm-reconcile-<name> and its \
                 Events <name>.<time> fit in 253)"
            )
        );
        let longest = [&"a".repeat(63)[..]; 3].join(".") + "." + &"b".repeat(44);
        Resolved::new(&catalog, &longest, ControlPlaneSpec::default()).unwrap();
    }

    #[test]
    fn removal_disables_everything_even_of_a_spec_that_cannot_be_applied() {
        let catalog = Catalog::builtin().unwrap();
        let spec = ControlPlaneSpec::default()
            .with_component("istio-d", |_| {})
            .with_values("istiod", json!({"global": {"istioNamespace": "mine"}}));
        let removal = Resolved::removal(&catalog, "mesh", &spec).unwrap();
        assert_eq!(removal.components().len(), catalog.names().len());
        assert!(removal.components().iter().all(|d| !d.enabled));
    }

    #[test]
    fn shared_releases_are_refused_naming_the_control_plane() {
        let catalog = Catalog::builtin().unwrap();
        let mesh = ControlPlaneSpec::default();
        let resolved = Resolved::new(&catalog, "second", mesh.clone()).unwrap();
        let others = [ControlPlane::new("first", mesh)];
        let err = resolved
            .refuse_newcomer(None, &resolved.shared_releases(&others), |_| None)
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "ControlPlane second rejected, nothing was changed: spec.components.base"
            ),
            "{err}"
        );
    }

    #[test]
    fn an_edit_changes_the_components_whose_managed_values_follow_it() {
        let catalog = Catalog::builtin().unwrap();
        let before = ControlPlaneSpec::default().with_enabled("kiali", true);
        let after = before.clone().with_enabled("tracing", true);
        let resolve =
            |spec: &ControlPlaneSpec| Resolved::new(&catalog, "mesh", spec.clone()).unwrap();
        let changed = resolve(&after).changed_from(&resolve(&before));
        // tracing itself, istiod (its mesh config sends spans there) and Kiali (its tracing
        // URL): nothing else.
        assert_eq!(
            changed.into_iter().collect::<Vec<_>>(),
            ["istiod", "kiali", "tracing"]
        );
        assert!(resolve(&after).changed_from(&resolve(&after)).is_empty());
    }
}
