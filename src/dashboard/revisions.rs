//! istiod's revisions as the dashboard shows them, from the ControlPlane's status (what smm
//! runs, what uses each revision and its `InUse` condition) and spec (where the tags should
//! point, which follow the active revision).

use serde::Serialize;

use crate::api::{ControlPlane, IN_USE, RevisionStatus};
use crate::mesh::revisions::strategy;
use crate::mesh::revisions::tag_list::following_active;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionsView {
    /// `InPlace` or `RevisionBased`.
    pub strategy: String,
    /// The revision the status records as active.
    pub active: Option<String>,
    pub revisions: Vec<RevisionView>,
    pub tags: Vec<TagView>,
    /// Why the spec's tags cannot be shown: the spec's revision settings do not resolve.
    pub spec_error: Option<String>,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    pub name: String,
    pub version: Option<String>,
    pub release: String,
    pub active: bool,
    pub ready: bool,
    pub tags: Vec<String>,
    /// Running proxies and namespaces using it; none when not known.
    pub pods: Option<u32>,
    pub namespaces: Option<u32>,
    /// The `InUse` condition's status (True, False, Unknown) and message.
    pub in_use: Option<String>,
    pub in_use_message: Option<String>,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagView {
    pub tag: String,
    /// The revision whose status lists the tag: where it points now.
    pub revision: Option<String>,
    /// Where the spec points it.
    pub wanted: Option<String>,
    pub follows_active: bool,
}

/// The revisions and tags of `control_plane`.
pub fn revisions_view(control_plane: &ControlPlane) -> RevisionsView {
    let spec = &control_plane.spec;
    let status = control_plane.status.clone().unwrap_or_default();
    let wanted = strategy::active(spec).and_then(|active| strategy::tags(spec, &active));
    let following = following_active(spec);
    let mut names: Vec<String> = status
        .revisions
        .iter()
        .flat_map(|r| r.tags.clone())
        .collect();
    if let Ok(wanted) = &wanted {
        names.extend(wanted.keys().cloned());
    }
    names.sort();
    names.dedup();
    let tags = names
        .into_iter()
        .map(|tag| TagView {
            revision: status
                .revisions
                .iter()
                .find(|r| r.tags.contains(&tag))
                .map(|r| r.name.clone()),
            wanted: wanted.as_ref().ok().and_then(|w| w.get(&tag).cloned()),
            follows_active: following.contains(&tag),
            tag,
        })
        .collect();
    RevisionsView {
        strategy: format!("{:?}", spec.update_strategy().type_),
        active: status.active_revision.clone(),
        revisions: status.revisions.iter().map(revision_view).collect(),
        tags,
        spec_error: wanted.err().map(|err| err.to_string()),
    }
}

fn revision_view(revision: &RevisionStatus) -> RevisionView {
    let in_use = revision.conditions.iter().find(|c| c.type_ == IN_USE);
    RevisionView {
        name: revision.name.clone(),
        version: revision.version.clone(),
        release: revision.release.clone(),
        active: revision.active,
        ready: revision.ready,
        tags: revision.tags.clone(),
        pods: revision.in_use.as_ref().map(|u| u.pods),
        namespaces: revision.in_use.as_ref().map(|u| u.namespaces),
        in_use: in_use.map(|c| c.status.clone()),
        in_use_message: in_use.map(|c| c.message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn revisions_their_use_and_the_tags_from_status_and_spec() {
        let control_plane: ControlPlane = serde_json::from_value(json!({
            "apiVersion": "smm.dev/v1alpha1", "kind": "ControlPlane",
            "metadata": {"name": "mesh"},
            "spec": {
                "version": format!("{}.4", strategy::embedded_line()),
                "updateStrategy": {"type": "RevisionBased"},
                "revisionTags": {"stable": {"revision": "default"}, "canary": {}},
            },
            "status": {
                "activeRevision": "1-31-4",
                "revisions": [
                    {"name": "1-31-4", "version": "1.31.4", "release": "istiod-1-31-4",
                     "active": true, "ready": true, "tags": ["default"]},
                    {"name": "default", "version": "1.31.3", "release": "istiod",
                     "active": false, "ready": true, "tags": ["stable"],
                     "inUse": {"pods": 3, "namespaces": 1},
                     "conditions": [{"type": "InUse", "status": "True", "reason": "InUse",
                                     "message": "3 pods, 1 namespace",
                                     "lastTransitionTime": "2026-12-05T10:00:00Z"}]},
                ],
            },
        }))
        .unwrap();
        let view = revisions_view(&control_plane);
        assert_eq!(view.strategy, "RevisionBased");
        assert_eq!(view.active.as_deref(), Some("1-31-4"));
        assert_eq!(view.spec_error, None);
        let old = &view.revisions[1];
        assert_eq!(
            (old.pods, old.namespaces, old.in_use.as_deref()),
            (Some(3), Some(1), Some("True"))
        );
        assert_eq!(old.in_use_message.as_deref(), Some("3 pods, 1 namespace"));
        assert_eq!(view.revisions[0].in_use, None);
        let active = format!("{}-4", strategy::embedded_line().replace('.', "-"));
        let tag = |tag: &str, revision: Option<&str>, wanted: &str, follows: bool| TagView {
            tag: tag.to_owned(),
            revision: revision.map(str::to_owned),
            wanted: Some(wanted.to_owned()),
            follows_active: follows,
        };
        assert_eq!(
            view.tags,
            [
                // Asked for, not applied yet.
                tag("canary", None, &active, true),
                tag("default", Some("1-31-4"), &active, true),
                tag("stable", Some("default"), "default", false),
            ]
        );
    }
}
