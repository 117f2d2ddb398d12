//! The guard before istiod's release changes: running proxies are never cut off their istiod
//! unless the user says so.

use std::collections::BTreeSet;

use super::RevisionError;
use crate::cluster::mesh_snapshot;
use crate::desired::resolve::DesiredComponent;
use crate::desired::resolved::Resolved;
use crate::engine::Engine;
use crate::engine::decide::Operation;
use crate::engine::status::StatusWriter;
use crate::engine::step::ComponentError;
use crate::helm::release::ObservedRelease;
use crate::mesh::revisions::strategy::revision_name;
use crate::mesh::revisions::usage::revision_usage;

impl Engine {
    /// Refuses, unless forced, a step that would cut running proxies off their istiod: an
    /// upgrade that renames the release's revision in place (its Service and webhooks are
    /// replaced by the new name's), or removing istiod while proxies of its revisions run.
    /// Proxies of the ControlPlane's own components that depend on this one (the gateways) do
    /// not count: they are removed before it, or upgraded after it onto the new name.
    pub(in crate::engine) async fn refuse_cutting_off(
        &self,
        wanted: &DesiredComponent<'_>,
        action: Operation,
        release: Option<&ObservedRelease>,
        resolved: &Resolved<'_>,
        writer: &StatusWriter,
    ) -> Result<(), ComponentError> {
        if !wanted.component.revisioned || self.settings.force {
            return Ok(());
        }
        let Some(release) = release else {
            return Ok(());
        };
        let applied = release.record()?.config["revision"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (change, mut leaving) = match action {
            Operation::Uninstall => {
                let revisions: Vec<String> =
                    writer.revisions().into_iter().map(|r| r.name).collect();
                (format!("to remove {}", wanted.name()), revisions)
            }
            Operation::Upgrade | Operation::Recover => {
                let wanted_revision = wanted.values["revision"].as_str().unwrap_or_default();
                if wanted_revision == applied {
                    return Ok(());
                }
                let change = format!(
                    "to rename revision {} to {} in place",
                    revision_name(&applied),
                    revision_name(wanted_revision)
                );
                (change, Vec::new())
            }
            _ => return Ok(()),
        };
        leaving.push(revision_name(&applied).to_owned());
        let snapshot = mesh_snapshot::read(&self.client, &wanted.release.namespace).await;
        let snapshot = snapshot.map_err(|source| RevisionError::UsageUnknown {
            change: change.clone(),
            revision: revision_name(&applied).to_owned(),
            source: Box::new(source),
        })?;
        let usage = revision_usage(&snapshot);
        let placements = self.catalog.placements(resolved.spec());
        let own: BTreeSet<&str> = self
            .catalog
            .dependents_of(wanted.name())
            .into_iter()
            .map(|dependent| placements[dependent].namespace.as_str())
            .chain([wanted.release.namespace.as_str()])
            .collect();
        for revision in leaving {
            let Some(used) = usage.get(&revision) else {
                continue;
            };
            let cut_off: Vec<String> = used
                .pods
                .iter()
                .filter(|pod| !own.contains(pod.namespace.as_str()))
                .map(ToString::to_string)
                .collect();
            if cut_off.is_empty() {
                continue;
            }
            let examples = cut_off.iter().take(5).cloned().collect::<Vec<_>>();
            return Err(RevisionError::WouldCutOff {
                change,
                revision,
                count: cut_off.len(),
                examples: examples.join(", "),
            }
            .into());
        }
        Ok(())
    }
}
