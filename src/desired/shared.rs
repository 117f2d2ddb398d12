//! Two ControlPlanes that would manage one release: both would undo each other's changes, and
//! removing one would remove the other's, so one keeps the release and the other is refused.
//! The one that keeps it is the incumbent, not whichever happens to reconcile: a second
//! ControlPlane created on a working mesh's namespace (kubectl does not ask smm first) is
//! refused, and the working mesh goes on being reconciled, its drift repaired.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::resolve::{SpecError, release_of};
use crate::api::{ControlPlane, ControlPlaneSpec};
use crate::helm::release::ReleaseRef;
use crate::mesh::catalog::Catalog;
use crate::mesh::revisions::strategy::{self, ActiveRevision};

/// A release that a spec would manage and another ControlPlane manages too.
#[derive(Debug)]
pub struct SharedRelease<'o> {
    pub component: &'static str,
    pub release: ReleaseRef,
    pub other: &'o ControlPlane,
}

/// The releases `spec` would manage that one of `others` manages too.
pub fn shared_releases<'o>(
    catalog: &Catalog,
    spec: &ControlPlaneSpec,
    others: &'o [ControlPlane],
) -> Vec<SharedRelease<'o>> {
    let releases = |spec: &ControlPlaneSpec| -> Vec<(&'static str, ReleaseRef)> {
        // Another ControlPlane's spec may not resolve; its releases are then those of its
        // revision as given, which is what it ran before its spec went bad.
        let revision = strategy::active(spec).unwrap_or_else(|_| ActiveRevision {
            value: spec.revision.clone().unwrap_or_default(),
            version: String::new(),
        });
        catalog
            .placements(spec)
            .into_iter()
            .filter(|(_, placement)| placement.enabled)
            .filter_map(|(name, placement)| {
                let component = catalog.get(name)?;
                let release = release_of(component, &placement.namespace, spec, &revision);
                Some((name, release))
            })
            .collect()
    };
    let ours = releases(spec);
    let mut shared = Vec::new();
    for other in others {
        let theirs = releases(&other.spec);
        shared.extend(
            ours.iter()
                .filter(|(_, release)| theirs.iter().any(|(_, r)| r == release))
                .map(|(component, release)| SharedRelease {
                    component,
                    release: release.clone(),
                    other,
                }),
        );
    }
    shared
}

/// Whether the ControlPlane `this` (its stored metadata; none before it is first stored) keeps a
/// release that `other` would manage too. The one the release's record names as its `owner`
/// keeps it; when it names neither (no release yet, or one made by hand or by a third), the
/// older does, by creation time and then by name. One not stored yet is always the newcomer.
pub fn keeps_shared_release(
    this: Option<&ObjectMeta>,
    other: &ObjectMeta,
    owner: Option<&str>,
) -> bool {
    let Some(this) = this else {
        return false;
    };
    let is = |meta: &ObjectMeta| owner.is_some() && meta.uid.as_deref() == owner;
    if is(this) || is(other) {
        return is(this);
    }
    let age = |meta: &ObjectMeta| (meta.creation_timestamp.clone(), meta.name.clone());
    match (age(this), age(other)) {
        ((Some(ours), our_name), (Some(theirs), their_name)) => {
            (ours.0, our_name) < (theirs.0, their_name)
        }
        // Stored ControlPlanes have a creation time; without one there is no telling.
        _ => false,
    }
}

/// Refuses the first of `shared` that `this` does not keep (see [`keeps_shared_release`]);
/// `owner_of` says whose a release is, as helm's record labels it.
pub fn refuse_newcomer<'r>(
    this: Option<&ObjectMeta>,
    shared: &[SharedRelease<'_>],
    owner_of: impl Fn(&ReleaseRef) -> Option<&'r str>,
) -> Result<(), SpecError> {
    let refused = shared.iter().find(|shared| {
        !keeps_shared_release(this, &shared.other.metadata, owner_of(&shared.release))
    });
    match refused {
        Some(shared) => Err(SpecError::SharedRelease {
            component: shared.component,
            release: shared.release.to_string(),
            other: shared.other.metadata.name.clone().unwrap_or_default(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// `spec`'s releases shared with `others`, refused as for a ControlPlane not stored yet.
    fn refuse_shared_releases(
        catalog: &Catalog,
        spec: &ControlPlaneSpec,
        others: &[ControlPlane],
    ) -> Result<(), SpecError> {
        refuse_newcomer(None, &shared_releases(catalog, spec, others), |_| None)
    }

    /// Two ControlPlanes on one namespace would share releases, each undoing the other's
    /// changes (and removing one would remove the other's), so the second is refused.
    #[test]
    fn a_release_managed_by_another_control_plane_is_refused() {
        let catalog = Catalog::builtin().unwrap();
        let mesh = ControlPlaneSpec::default();
        let first = |spec: &ControlPlaneSpec| [ControlPlane::new("first", spec.clone())];
        let err = refuse_shared_releases(&catalog, &mesh, &first(&mesh)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.components.base: its release istio-system/istio-base is also managed by ControlPlane first"),
            "{err}"
        );
        let elsewhere = ControlPlaneSpec {
            namespace: Some("other-mesh".to_owned()),
            ..ControlPlaneSpec::default()
        };
        refuse_shared_releases(&catalog, &elsewhere, &first(&mesh)).unwrap();
        let off = ControlPlaneSpec::default().with_enabled("base", false);
        let nothing_on = off
            .with_enabled("prometheus", false)
            .with_enabled("tracing", false);
        refuse_shared_releases(&catalog, &nothing_on, &first(&mesh)).unwrap();
    }

    fn stored(name: &str, uid: &str, created_second: i64) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            uid: Some(uid.to_owned()),
            creation_timestamp: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(created_second).unwrap(),
            )),
            ..ObjectMeta::default()
        }
    }

    /// The owner keeps its release whichever is older; without an owner between them, the
    /// older keeps it; one not stored yet never does. Exactly one of two keeps it.
    #[test]
    fn the_incumbent_keeps_a_shared_release_and_only_the_newcomer_is_refused() {
        let (older, newer) = (stored("a", "uid-a", 100), stored("b", "uid-b", 200));
        let keeps = |this: &ObjectMeta, other: &ObjectMeta, owner| {
            let kept = keeps_shared_release(Some(this), other, owner);
            assert_ne!(kept, keeps_shared_release(Some(other), this, owner));
            kept
        };
        assert!(keeps(&older, &newer, Some("uid-a")));
        assert!(
            keeps(&newer, &older, Some("uid-b")),
            "the owner, though newer"
        );
        assert!(keeps(&older, &newer, None));
        assert!(keeps(&older, &newer, Some("uid-of-a-third")));
        assert!(!keeps(&newer, &older, None));
        let twin = stored("c", "uid-c", 100);
        assert!(keeps(&older, &twin, None), "same second: by name");
        assert!(!keeps_shared_release(None, &older, None));
        assert!(!keeps_shared_release(None, &older, Some("uid-a")));
    }

    #[test]
    fn the_incumbent_of_a_shared_release_is_not_refused() {
        let catalog = Catalog::builtin().unwrap();
        let mesh = ControlPlaneSpec::default();
        let mut newcomer = ControlPlane::new("b", mesh.clone());
        newcomer.metadata = stored("b", "uid-b", 200);
        let others = [newcomer];
        let shared = shared_releases(&catalog, &mesh, &others);
        assert!(!shared.is_empty());
        let incumbent = stored("a", "uid-a", 300);
        refuse_newcomer(Some(&incumbent), &shared, |_| Some("uid-a")).unwrap();
        let err = refuse_newcomer(Some(&incumbent), &shared, |_| None).unwrap_err();
        assert!(
            err.to_string()
                .contains("is also managed by ControlPlane b;"),
            "{err}"
        );
    }
}
