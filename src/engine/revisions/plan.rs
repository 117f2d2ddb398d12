//! What a reconcile would do to istiod's revisions, as the dry run shows it beside the
//! components' plan: a revision installed beside the others or renamed in place, revisions
//! kept, tags moved, pods restarted onto the active revision, unused revisions removed.

use serde::Serialize;

use super::record::unused_for;
use crate::api::ControlPlaneStatus;
use crate::desired::resolved::Resolved;
use crate::engine::decide::Operation;
use crate::engine::report::PlannedComponent;
use crate::engine::status::now;
use crate::mesh::revisions::strategy::revision_name;

/// A tag that points elsewhere after the reconcile (`None`: absent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TagMove {
    pub tag: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionPlan {
    /// The revision new proxies get after the reconcile.
    pub active: String,
    /// The active revision's release is new: it is installed beside the revisions that run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed_beside: Option<String>,
    /// Revisions that stop being active and are kept while proxies use them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
    /// The release's revision is renamed in place (from, to): its Service and webhooks are
    /// replaced, which is refused while proxies use them, unless forced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renamed_in_place: Option<(String, String)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tag_moves: Vec<TagMove>,
    /// Components whose pods are restarted onto the active revision (their revision changes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<String>,
    /// Inactive revisions the reconcile removes: unused for the grace period when last looked
    /// at (it looks again before it removes them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removals: Vec<String>,
}

/// The revisions part of the plan of `resolved`, from the recorded `status` and the
/// components' own plan (`components`); `None` when istiod is not part of it.
pub fn plan_revisions(
    resolved: &Resolved<'_>,
    status: Option<&ControlPlaneStatus>,
    components: &[PlannedComponent],
) -> Option<RevisionPlan> {
    let istiod = resolved
        .components()
        .iter()
        .find(|d| d.component.revisioned)?;
    let planned = components.iter().find(|c| c.name == istiod.name())?;
    let recorded = status.map(|s| s.revisions.clone()).unwrap_or_default();
    let active = resolved.revision().name().to_owned();
    let mut plan = RevisionPlan {
        active: active.clone(),
        ..RevisionPlan::default()
    };
    if !istiod.enabled {
        plan.removals = recorded.iter().map(|r| r.name.clone()).collect();
        plan.tag_moves = recorded
            .iter()
            .flat_map(|r| r.tags.iter().map(move |tag| (tag, &r.name)))
            .map(|(tag, from)| TagMove {
                tag: tag.clone(),
                from: Some(from.clone()),
                to: None,
            })
            .collect();
        return Some(plan);
    }
    let recorded_release = status
        .and_then(|s| s.components.get(istiod.name()))
        .and_then(|c| c.release.as_ref())
        .map(|r| r.name.clone());
    let new_release = recorded_release
        .as_ref()
        .is_some_and(|name| *name != istiod.release.name);
    if new_release {
        plan.installed_beside = Some(active.clone());
        plan.kept = recorded
            .iter()
            .filter(|r| r.active && r.name != active)
            .map(|r| r.name.clone())
            .collect();
    }
    let renamed = planned
        .values_diff
        .iter()
        .find(|change| change.path == "revision");
    if let (false, Some(change)) = (new_release, renamed) {
        let name = |value: &Option<serde_json::Value>| {
            let value = value.as_ref().and_then(|v| v.as_str()).unwrap_or_default();
            revision_name(value).to_owned()
        };
        plan.renamed_in_place = Some((name(&change.old), name(&change.new)));
    }
    for (tag, to) in resolved.tags() {
        let from = recorded
            .iter()
            .find(|r| r.tags.contains(tag))
            .map(|r| r.name.clone());
        if from.as_ref() != Some(to) {
            plan.tag_moves.push(TagMove {
                tag: tag.clone(),
                from,
                to: Some(to.clone()),
            });
        }
    }
    for revision in &recorded {
        for tag in revision
            .tags
            .iter()
            .filter(|t| !resolved.tags().contains_key(*t))
        {
            plan.tag_moves.push(TagMove {
                tag: tag.clone(),
                from: Some(revision.name.clone()),
                to: None,
            });
        }
    }
    plan.restarts = components
        .iter()
        .filter(|c| c.name != istiod.name() && c.action != Operation::Uninstall)
        .filter(|c| c.values_diff.iter().any(|change| change.path == "revision"))
        .map(|c| c.name.clone())
        .collect();
    plan.removals = recorded
        .iter()
        .filter(|r| !r.active && r.name != active)
        .filter(|r| unused_past_grace(r, resolved))
        .map(|r| r.name.clone())
        .collect();
    Some(plan)
}

/// Whether an inactive revision's `InUse` has been False for the grace period, as recorded.
fn unused_past_grace(revision: &crate::api::RevisionStatus, resolved: &Resolved<'_>) -> bool {
    let grace = resolved.spec().update_strategy().grace_period_seconds();
    unused_for(revision, &now()).is_some_and(|unused| unused.as_secs() >= grace)
}

impl std::fmt::Display for RevisionPlan {
    /// One line per change, for the dry run's text output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(revision) = &self.installed_beside {
            writeln!(f, "  install revision {revision} beside the running ones")?;
        }
        for kept in &self.kept {
            writeln!(f, "  keep revision {kept} (inactive) while proxies use it")?;
        }
        if let Some((from, to)) = &self.renamed_in_place {
            writeln!(
                f,
                "  rename revision {from} to {to} in place: its Service and webhooks are \
                 replaced (refused while proxies use {from}, unless --force)"
            )?;
        }
        for TagMove { tag, from, to } in &self.tag_moves {
            let side = |side: &Option<String>| side.clone().unwrap_or_else(|| "-".to_owned());
            writeln!(f, "  move tag {tag}: {} -> {}", side(from), side(to))?;
        }
        for restart in &self.restarts {
            writeln!(f, "  restart {restart} onto revision {}", self.active)?;
        }
        for removal in &self.removals {
            writeln!(
                f,
                "  remove revision {removal} (unused for the grace period)"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        ComponentPhase, ComponentStatus, ControlPlaneSpec, ReleaseStatus, RevisionStatus,
        UpdateStrategyType,
    };
    use crate::mesh::catalog::Catalog;
    use crate::values::ValueChange;
    use serde_json::json;

    fn revision(name: &str, release: &str, active: bool, tags: &[&str]) -> RevisionStatus {
        RevisionStatus {
            name: name.to_owned(),
            version: None,
            release: release.to_owned(),
            active,
            ready: true,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            in_use: None,
            conditions: Vec::new(),
        }
    }

    fn planned(name: &str, action: Operation, revision: Option<(&str, &str)>) -> PlannedComponent {
        PlannedComponent {
            name: name.to_owned(),
            action,
            reason: String::new(),
            values_diff: revision
                .map(|(old, new)| ValueChange {
                    path: "revision".to_owned(),
                    old: Some(json!(old)),
                    new: Some(json!(new)),
                })
                .into_iter()
                .collect(),
        }
    }

    fn status(revisions: Vec<RevisionStatus>, istiod_release: &str) -> ControlPlaneStatus {
        let mut istiod = ComponentStatus::with_phase(ComponentPhase::Available);
        istiod.release = Some(ReleaseStatus {
            name: istiod_release.to_owned(),
            namespace: "istio-system".to_owned(),
            revision: Some(1),
        });
        ControlPlaneStatus {
            components: [("istiod".to_owned(), istiod)].into(),
            revisions,
            ..ControlPlaneStatus::default()
        }
    }

    #[test]
    fn a_switch_to_revision_based_installs_beside_moves_the_tag_and_restarts_gateways() {
        let catalog = Catalog::builtin().unwrap();
        let spec = ControlPlaneSpec {
            version: Some("1.31.4".to_owned()),
            ..ControlPlaneSpec::default()
        }
        .with_update_strategy(UpdateStrategyType::RevisionBased);
        let resolved = Resolved::new(&catalog, "mesh", spec).unwrap();
        let status = status(vec![revision("default", "istiod", true, &[])], "istiod");
        let components = [
            planned("istiod", Operation::Install, None),
            planned("ingress-gateway", Operation::Upgrade, Some(("", "1-31-4"))),
        ];
        let plan = plan_revisions(&resolved, Some(&status), &components).unwrap();
        assert_eq!(
            plan,
            RevisionPlan {
                active: "1-31-4".to_owned(),
                installed_beside: Some("1-31-4".to_owned()),
                kept: vec!["default".to_owned()],
                renamed_in_place: None,
                tag_moves: vec![TagMove {
                    tag: "default".to_owned(),
                    from: None,
                    to: Some("1-31-4".to_owned()),
                }],
                restarts: vec!["ingress-gateway".to_owned()],
                removals: Vec::new(),
            }
        );
        let text = plan.to_string();
        assert!(text.contains("install revision 1-31-4 beside"), "{text}");
        assert!(text.contains("move tag default: - -> 1-31-4"), "{text}");
    }

    #[test]
    fn an_in_place_rename_is_shown_as_such() {
        let catalog = Catalog::builtin().unwrap();
        let spec = ControlPlaneSpec {
            revision: Some("canary".to_owned()),
            ..ControlPlaneSpec::default()
        };
        let resolved = Resolved::new(&catalog, "mesh", spec).unwrap();
        let status = status(vec![revision("default", "istiod", true, &[])], "istiod");
        let components = [planned("istiod", Operation::Upgrade, Some(("", "canary")))];
        let plan = plan_revisions(&resolved, Some(&status), &components).unwrap();
        assert_eq!(
            plan.renamed_in_place,
            Some(("default".to_owned(), "canary".to_owned()))
        );
        assert_eq!(plan.installed_beside, None);
    }
}
