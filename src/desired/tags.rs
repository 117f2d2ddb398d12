//! The edits `smm tag set` and `smm tag remove` make to a ControlPlane spec: one entry of
//! `spec.revisionTags`, checked as the reconcile would check it, and the revisioned components
//! (istiod, after whose step the engine applies the tags) as the scope to reconcile.

use std::collections::BTreeSet;

use crate::api::{ControlPlaneSpec, RevisionTag};
use crate::mesh::catalog::Catalog;
use crate::mesh::revisions::strategy::{self, DEFAULT_TAG_NAME};

use super::edit::EditError;

/// Points `tag` at `revision` (none: the active revision, followed as it changes). A revision
/// given must be one of `running` (the ControlPlane's `status.revisions`): a tag to nothing
/// would let pods be created without a proxy. The spec's own checks (a tag named like the
/// active revision, a default tag beside a revisionless istiod) refuse it as the reconcile
/// would. Returns the components to reconcile.
pub fn set_tag(
    spec: &mut ControlPlaneSpec,
    catalog: &Catalog,
    tag: &str,
    revision: Option<&str>,
    running: &[String],
) -> Result<BTreeSet<String>, EditError> {
    if let Some(revision) = revision
        && !running.iter().any(|r| r == revision)
    {
        return Err(EditError::TagToMissingRevision {
            tag: tag.to_owned(),
            revision: revision.to_owned(),
            running: match running {
                [] => "none".to_owned(),
                running => running.join(", "),
            },
        });
    }
    let mut edited = spec.clone();
    edited.revision_tags.insert(
        tag.to_owned(),
        RevisionTag {
            revision: revision.map(str::to_owned),
        },
    );
    let active = strategy::active(&edited)?;
    strategy::tags(&edited, &active)?;
    *spec = edited;
    Ok(revisioned(catalog))
}

/// Removes `tag` from `spec.revisionTags`. Under `RevisionBased` the `default` tag always
/// exists (it follows the active revision unless pinned), so removing it is refused. Returns
/// the components to reconcile.
pub fn remove_tag(
    spec: &mut ControlPlaneSpec,
    catalog: &Catalog,
    tag: &str,
) -> Result<BTreeSet<String>, EditError> {
    if tag == DEFAULT_TAG_NAME && spec.is_revision_based() {
        return Err(EditError::DefaultTagAlwaysExists);
    }
    if spec.revision_tags.remove(tag).is_none() {
        return Err(EditError::UnknownTag {
            tag: tag.to_owned(),
            known: spec.revision_tags.keys().cloned().collect(),
        });
    }
    Ok(revisioned(catalog))
}

/// The components whose step settles revisions and tags.
fn revisioned(catalog: &Catalog) -> BTreeSet<String> {
    catalog
        .names()
        .into_iter()
        .filter(|name| catalog.get(name).is_some_and(|c| c.revisioned))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::UpdateStrategyType;

    fn running() -> Vec<String> {
        vec!["1-31-4".to_owned(), "1-31-3".to_owned()]
    }

    fn revision_based() -> ControlPlaneSpec {
        ControlPlaneSpec::default().with_update_strategy(UpdateStrategyType::RevisionBased)
    }

    #[test]
    fn set_writes_the_entry_and_scopes_istiod() {
        let catalog = Catalog::builtin().unwrap();
        let mut spec = revision_based();
        let scope = set_tag(&mut spec, &catalog, "canary", None, &running()).unwrap();
        assert_eq!(scope, ["istiod".to_owned()].into());
        assert_eq!(spec.revision_tags["canary"], RevisionTag::default());
        set_tag(&mut spec, &catalog, "prod", Some("1-31-3"), &running()).unwrap();
        assert_eq!(
            spec.revision_tags["prod"].revision.as_deref(),
            Some("1-31-3")
        );
        // Setting again moves it.
        set_tag(&mut spec, &catalog, "prod", None, &running()).unwrap();
        assert_eq!(spec.revision_tags["prod"].revision, None);
    }

    #[test]
    fn set_refuses_a_revision_that_does_not_run() {
        let catalog = Catalog::builtin().unwrap();
        let mut spec = revision_based();
        let err = set_tag(&mut spec, &catalog, "canary", Some("1-30-0"), &running()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.revisionTags.canary: revision 1-30-0 does not run here (running: 1-31-4, \
             1-31-3)"
        );
        assert!(spec.revision_tags.is_empty(), "nothing changes on error");
    }

    #[test]
    fn set_refuses_what_the_specs_checks_refuse_naming_the_field() {
        let catalog = Catalog::builtin().unwrap();
        // A default tag beside the revisionless istiod's own default webhooks.
        let mut spec = ControlPlaneSpec::default();
        let err = set_tag(&mut spec, &catalog, "default", None, &running()).unwrap_err();
        assert!(
            err.to_string().starts_with("spec.revisionTags.default: "),
            "{err}"
        );
        // A tag named like the active revision.
        let mut spec = ControlPlaneSpec {
            revision: Some("canary".to_owned()),
            ..ControlPlaneSpec::default()
        };
        let err = set_tag(&mut spec, &catalog, "canary", None, &["canary".to_owned()]);
        assert!(
            err.unwrap_err()
                .to_string()
                .starts_with("spec.revisionTags.canary: a tag cannot have the name"),
        );
        let err = set_tag(&mut spec, &catalog, "Bad", None, &running()).unwrap_err();
        assert!(
            err.to_string().starts_with("spec.revisionTags.Bad: "),
            "{err}"
        );
        assert!(spec.revision_tags.is_empty(), "nothing changes on error");
    }

    #[test]
    fn remove_deletes_the_entry_but_never_the_revision_based_default() {
        let catalog = Catalog::builtin().unwrap();
        let mut spec = revision_based();
        set_tag(&mut spec, &catalog, "canary", None, &running()).unwrap();
        set_tag(&mut spec, &catalog, "default", Some("1-31-3"), &running()).unwrap();
        let err = remove_tag(&mut spec, &catalog, "default").unwrap_err();
        assert_eq!(err, EditError::DefaultTagAlwaysExists);
        assert!(err.to_string().contains("smm tag set default"), "{err}");
        assert_eq!(
            remove_tag(&mut spec, &catalog, "canary").unwrap(),
            ["istiod".to_owned()].into()
        );
        assert!(!spec.revision_tags.contains_key("canary"));
        assert_eq!(
            remove_tag(&mut spec, &catalog, "canary")
                .unwrap_err()
                .to_string(),
            "spec.revisionTags has no tag \"canary\" (tags: default)"
        );
    }
}
