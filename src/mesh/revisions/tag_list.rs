//! What `smm tag list` shows, as `istioctl tag list` does: each revision tag, the revision it
//! points at in the cluster, the one the spec asks for, whether it follows the active revision,
//! and the namespaces whose labels select it.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use serde::Serialize;

use super::strategy::DEFAULT_TAG_NAME;
use super::usage::{MeshSnapshot, namespace_selection, tags};
use crate::api::ControlPlaneSpec;

/// One revision tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagEntry {
    pub tag: String,
    /// The revision its injector webhook points at; none while it is not applied.
    pub revision: Option<String>,
    /// The revision the ControlPlane's spec points it at; none for a tag smm does not own.
    pub wanted: Option<String>,
    /// It follows the active revision as the spec changes it.
    pub follows_active: bool,
    /// Namespaces labelled to select it (`istio.io/rev=<tag>`, or `istio-injection=enabled`
    /// for `default`).
    pub namespaces: Vec<String>,
}

/// The tags of `spec` that follow the active revision: those without a revision, and under
/// `RevisionBased` the `default` tag unless the spec pins it.
pub fn following_active(spec: &ControlPlaneSpec) -> BTreeSet<String> {
    let mut following: BTreeSet<String> = spec
        .revision_tags
        .iter()
        .filter(|(_, setting)| setting.revision.is_none())
        .map(|(tag, _)| tag.clone())
        .collect();
    if spec.is_revision_based() && !spec.revision_tags.contains_key(DEFAULT_TAG_NAME) {
        following.insert(DEFAULT_TAG_NAME.to_owned());
    }
    following
}

/// Every tag the cluster has (`snapshot`) or the spec asks for (`wanted`: tag → revision, as
/// `strategy::tags` resolves them; `following`: those that follow the active revision).
pub fn tag_list(
    snapshot: &MeshSnapshot,
    wanted: &BTreeMap<String, String>,
    following: &BTreeSet<String>,
) -> Vec<TagEntry> {
    let applied = tags(snapshot);
    let mut selecting: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for namespace in &snapshot.namespaces {
        if let Some(name) = namespace_selection(namespace.labels()) {
            selecting
                .entry(name)
                .or_default()
                .push(namespace.name_any());
        }
    }
    let names: BTreeSet<&String> = applied.keys().chain(wanted.keys()).collect();
    names
        .into_iter()
        .map(|tag| TagEntry {
            tag: tag.clone(),
            revision: applied.get(tag).cloned(),
            wanted: wanted.get(tag).cloned(),
            follows_active: following.contains(tag),
            namespaces: selecting.remove(tag.as_str()).unwrap_or_default(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{injector, namespace, tag};
    use super::*;
    use crate::api::UpdateStrategyType;

    #[test]
    fn tags_of_the_cluster_and_the_spec_with_the_namespaces_that_select_them() {
        let snapshot = MeshSnapshot {
            namespaces: vec![
                namespace("demo", &[("istio-injection", "enabled")]),
                namespace("web", &[("istio.io/rev", "canary")]),
                namespace("api", &[("istio.io/rev", "canary")]),
                namespace("pinned", &[("istio.io/rev", "1-31-3")]),
                namespace(
                    "off",
                    &[("istio-injection", "disabled"), ("istio.io/rev", "prod")],
                ),
            ],
            injectors: vec![
                injector("1-31-3"),
                injector("1-31-4"),
                tag("default", "1-31-4"),
                tag("canary", "1-31-3"),
                tag("prod", "1-31-3"),
            ],
            ..MeshSnapshot::default()
        };
        let spec = ControlPlaneSpec::default()
            .with_update_strategy(UpdateStrategyType::RevisionBased)
            .with_revision_tag("canary", None)
            .with_revision_tag("stable", Some("1-31-3"));
        let following = following_active(&spec);
        assert_eq!(
            following,
            ["canary".to_owned(), "default".to_owned()].into()
        );
        let wanted: BTreeMap<String, String> = [
            ("canary", "1-31-4"),
            ("default", "1-31-4"),
            ("stable", "1-31-3"),
        ]
        .map(|(t, r)| (t.to_owned(), r.to_owned()))
        .into();
        let entry =
            |tag: &str, revision: Option<&str>, wanted: Option<&str>, ns: &[&str]| TagEntry {
                tag: tag.to_owned(),
                revision: revision.map(str::to_owned),
                wanted: wanted.map(str::to_owned),
                follows_active: following.contains(tag),
                namespaces: ns.iter().map(|n| (*n).to_owned()).collect(),
            };
        assert_eq!(
            tag_list(&snapshot, &wanted, &following),
            [
                // Applied before the active revision moved: the spec wants it on 1-31-4.
                entry("canary", Some("1-31-3"), Some("1-31-4"), &["web", "api"]),
                entry("default", Some("1-31-4"), Some("1-31-4"), &["demo"]),
                // Not smm's; `istio-injection` wins over `istio.io/rev` on "off".
                entry("prod", Some("1-31-3"), None, &[]),
                // Asked for, not applied yet.
                entry("stable", None, Some("1-31-3"), &[]),
            ]
        );
    }
}
