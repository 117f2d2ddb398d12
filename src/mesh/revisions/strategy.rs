//! The revision a ControlPlane asks istiod to run, and the version it runs: under `InPlace`
//! the spec's `revision` (none: the revisionless istiod), under `RevisionBased` one revision per
//! version, named after it (`1.31.4` runs as `1-31-4`), so a new version never replaces the
//! istiod that running proxies are connected to.

use std::collections::BTreeMap;

use crate::api::ControlPlaneSpec;
use crate::api::names::{self, InvalidName};
use crate::mesh::components::istio::DEFAULT_TAG;

/// The revision name injected pods record for a revisionless istiod.
pub use super::usage::DEFAULT_REVISION as REVISIONLESS;
/// The tag that `istio-injection=enabled` namespaces and `sidecar.istio.io/inject=true` pods
/// follow.
pub const DEFAULT_TAG_NAME: &str = "default";

/// The spec's revision settings cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevisionError {
    #[error(
        "spec.version: {value:?} is not a version smm can run: it embeds Istio's {line} charts, \
         so a patch release of that line is expected (e.g. {DEFAULT_TAG})"
    )]
    Version { value: String, line: String },
    #[error(
        "spec.revision: {revision:?} is set, but spec.updateStrategy.type is RevisionBased, which \
         names each revision after its version (here {derived}); remove spec.revision"
    )]
    RevisionWithRevisionBased { revision: String, derived: String },
    #[error(
        "spec.revisionTags.{tag}: a tag cannot have the name of the revision {tag}: both would \
         select the same namespaces (istio.io/rev={tag})"
    )]
    TagNamedLikeRevision { tag: String },
    #[error(
        "spec.revisionTags.default: the active istiod is revisionless and already injects \
         istio-injection=enabled namespaces; a default tag would inject them a second time \
         (set spec.revision, or use spec.updateStrategy.type RevisionBased)"
    )]
    DefaultTagOverRevisionless,
    #[error(transparent)]
    Name(#[from] InvalidName),
}

/// The revision a spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveRevision {
    /// As Istio's charts take it: empty for the revisionless istiod.
    pub value: String,
    /// The Istio version (image tag) it runs.
    pub version: String,
}

impl ActiveRevision {
    /// The name injected pods, tags and smm's status use: `default` for the revisionless one.
    pub fn name(&self) -> &str {
        revision_name(&self.value)
    }
}

/// The name pods record for the revision the charts call `value`.
pub fn revision_name(value: &str) -> &str {
    if value.is_empty() {
        REVISIONLESS
    } else {
        value
    }
}

/// The Istio service name of a revision's istiod (`istiod`, or `istiod-<revision>`).
pub fn istiod_service(revision: &str) -> String {
    match revision {
        "" | REVISIONLESS => "istiod".to_owned(),
        revision => format!("istiod-{revision}"),
    }
}

/// The Istio line smm's charts belong to, `major.minor` of the embedded default version.
pub fn embedded_line() -> &'static str {
    DEFAULT_TAG
        .rsplit_once('.')
        .map_or(DEFAULT_TAG, |(line, _)| line)
}

/// The version the spec runs: `spec.version`, else a `global.tag` the user gave istiod (the way
/// before `spec.version`), else the embedded default.
pub fn version(spec: &ControlPlaneSpec) -> Result<String, RevisionError> {
    if let Some(version) = &spec.version {
        check_version(version)?;
        return Ok(version.clone());
    }
    let overridden = spec
        .components
        .get("istiod")
        .and_then(|istiod| istiod.values_override.as_ref())
        .and_then(|values| values.pointer("/global/tag"))
        .and_then(serde_json::Value::as_str);
    Ok(overridden.unwrap_or(DEFAULT_TAG).to_owned())
}

/// A patch release of the embedded line: `<line>.<patch>`, the patch in decimal.
fn check_version(version: &str) -> Result<(), RevisionError> {
    let line = embedded_line();
    let patch = version
        .strip_prefix(line)
        .and_then(|rest| rest.strip_prefix('.'));
    let valid = patch.is_some_and(|patch| {
        !patch.is_empty()
            && patch.bytes().all(|b| b.is_ascii_digit())
            && (patch == "0" || !patch.starts_with('0'))
    });
    if valid {
        Ok(())
    } else {
        Err(RevisionError::Version {
            value: version.to_owned(),
            line: line.to_owned(),
        })
    }
}

/// The revision `spec` asks for, checked.
pub fn active(spec: &ControlPlaneSpec) -> Result<ActiveRevision, RevisionError> {
    let version = version(spec)?;
    let given = spec.revision.as_deref().unwrap_or_default();
    let value = if spec.is_revision_based() {
        let derived = version.replace('.', "-");
        if !given.is_empty() {
            return Err(RevisionError::RevisionWithRevisionBased {
                revision: given.to_owned(),
                derived,
            });
        }
        names::revision("spec.version", &derived)?;
        derived
    } else {
        given.to_owned()
    };
    Ok(ActiveRevision { value, version })
}

/// Every tag the spec asks for, each with the revision it points at: the spec's own, and under
/// `RevisionBased` the `default` tag (following the active revision) unless the spec sets it.
pub fn tags(
    spec: &ControlPlaneSpec,
    active: &ActiveRevision,
) -> Result<BTreeMap<String, String>, RevisionError> {
    let mut tags = BTreeMap::new();
    if spec.is_revision_based() {
        tags.insert(DEFAULT_TAG_NAME.to_owned(), active.name().to_owned());
    }
    for (tag, setting) in &spec.revision_tags {
        names::revision(&format!("spec.revisionTags.{tag}"), tag)?;
        if let Some(revision) = &setting.revision {
            names::revision(&format!("spec.revisionTags.{tag}.revision"), revision)?;
        }
        let revision = setting.revision.as_deref().unwrap_or(active.name());
        tags.insert(tag.clone(), revision.to_owned());
    }
    if active.value.is_empty() && tags.contains_key(DEFAULT_TAG_NAME) {
        return Err(RevisionError::DefaultTagOverRevisionless);
    }
    if tags.contains_key(active.name()) {
        return Err(RevisionError::TagNamedLikeRevision {
            tag: active.name().to_owned(),
        });
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RevisionTag, UpdateStrategyType};
    use serde_json::json;

    fn revision_based() -> ControlPlaneSpec {
        ControlPlaneSpec::default().with_update_strategy(UpdateStrategyType::RevisionBased)
    }

    #[test]
    fn in_place_keeps_the_specs_revision_and_the_embedded_version() {
        let active = active(&ControlPlaneSpec::default()).unwrap();
        assert_eq!(active.value, "");
        assert_eq!(active.name(), "default");
        assert_eq!(active.version, DEFAULT_TAG);
        let spec = ControlPlaneSpec {
            revision: Some("canary".to_owned()),
            version: Some(format!("{}.0", embedded_line())),
            ..ControlPlaneSpec::default()
        };
        let active = super::active(&spec).unwrap();
        assert_eq!(active.name(), "canary");
        assert_eq!(active.version, format!("{}.0", embedded_line()));
    }

    #[test]
    fn revision_based_names_the_revision_after_the_version() {
        let spec = ControlPlaneSpec {
            version: Some(format!("{}.2", embedded_line())),
            ..revision_based()
        };
        let active = active(&spec).unwrap();
        assert_eq!(
            active.value,
            format!("{}-2", embedded_line().replace('.', "-"))
        );
        // The tag a user gave istiod's values, the way before spec.version, names it too.
        let spec = revision_based().with_values("istiod", json!({"global": {"tag": "1.31.7"}}));
        assert_eq!(super::active(&spec).unwrap().value, "1-31-7");
        let spec = ControlPlaneSpec {
            revision: Some("canary".to_owned()),
            ..revision_based()
        };
        let err = super::active(&spec).unwrap_err().to_string();
        assert!(
            err.starts_with("spec.revision: \"canary\" is set, but"),
            "{err}"
        );
    }

    #[test]
    fn only_patches_of_the_embedded_line_are_versions() {
        let line = embedded_line();
        for good in [format!("{line}.0"), format!("{line}.12")] {
            check_version(&good).unwrap();
        }
        for bad in [
            "1.30.1", "1.31", "1.31.", "1.31.01", "1.31.x", "1.311.1", "v1.31.1",
        ] {
            let spec = ControlPlaneSpec {
                version: Some(bad.to_owned()),
                ..ControlPlaneSpec::default()
            };
            assert_eq!(
                active(&spec).unwrap_err().to_string(),
                format!(
                    "spec.version: {bad:?} is not a version smm can run: it embeds Istio's {line} \
                     charts, so a patch release of that line is expected (e.g. {DEFAULT_TAG})"
                )
            );
        }
    }

    #[test]
    fn the_default_tag_follows_the_active_revision_under_revision_based() {
        let spec = revision_based()
            .with_revision_tag("canary", None)
            .with_revision_tag("stable", Some("1-31-3"));
        let active = active(&spec).unwrap();
        let tags = tags(&spec, &active).unwrap();
        let expected: BTreeMap<String, String> = [
            ("canary", active.name()),
            ("default", active.name()),
            ("stable", "1-31-3"),
        ]
        .into_iter()
        .map(|(tag, revision)| (tag.to_owned(), revision.to_owned()))
        .collect();
        assert_eq!(tags, expected);
    }

    #[test]
    fn tags_that_would_inject_twice_are_refused() {
        // A tag named like the revision selects what the revision's own webhooks select.
        let mut spec = ControlPlaneSpec {
            revision: Some("canary".to_owned()),
            ..ControlPlaneSpec::default()
        };
        spec.revision_tags = [("canary".to_owned(), RevisionTag::default())].into();
        let active = active(&spec).unwrap();
        assert_eq!(
            tags(&spec, &active).unwrap_err(),
            RevisionError::TagNamedLikeRevision {
                tag: "canary".to_owned()
            }
        );
        // A default tag beside the revisionless istiod's own default webhooks.
        let spec = ControlPlaneSpec {
            revision_tags: [("default".to_owned(), RevisionTag::default())].into(),
            ..ControlPlaneSpec::default()
        };
        let active = super::active(&spec).unwrap();
        assert_eq!(
            tags(&spec, &active).unwrap_err(),
            RevisionError::DefaultTagOverRevisionless
        );
        let spec = ControlPlaneSpec {
            revision_tags: [("Bad".to_owned(), RevisionTag::default())].into(),
            ..ControlPlaneSpec::default()
        };
        let err = tags(&spec, &active).unwrap_err().to_string();
        assert!(
            err.starts_with("spec.revisionTags.Bad: \"Bad\" is not a valid revision"),
            "{err}"
        );
    }
}
