//! What a step does to the cluster once it may act: native objects and helm's install, upgrade
//! or recovery; an uninstall; finishing a removal; moving a release out of its old namespace.

use super::decide::Operation;
use super::report::Outcome;
use super::status::StatusWriter;
use super::step::{ComponentError, StepEnd};
use super::{Engine, WaitPolicy};
use crate::api::{ComponentPhase, ComponentStatus};
use crate::cluster::inventory::Inventory;
use crate::cluster::{objects, trust};
use crate::desired::resolve::DesiredComponent;
use crate::desired::resolved::Resolved;
use crate::helm::Helm;
use crate::helm::release::{
    self, CHART_DIGEST_LABEL, OWNER_LABEL, ObservedRelease, ObservedReleases, ReleaseRef,
    ReleaseState, VALUES_DIGEST_LABEL, digest_label_value,
};
use crate::mesh::catalog::ComponentContext;
use crate::mesh::trust::CacertsRequest;

impl Engine {
    /// Native objects first (those not as they should be), then istiod's `cacerts` (see
    /// [`Self::ensure_plug_in_ca`]), then the chart; `Nothing` still looks at native objects,
    /// which puts back a deleted cluster role without spawning helm. Native objects left as they
    /// were (a newer Gateway API bundle) are noted in the status, as is a `cacerts` istiod has
    /// not read yet.
    pub(super) async fn apply(
        &self,
        wanted: &DesiredComponent<'_>,
        operation: Operation,
        release: Option<&ObservedRelease>,
        inventory: &Inventory,
        resolved: &Resolved<'_>,
        writer: &StatusWriter,
    ) -> Result<StepEnd, ComponentError> {
        let native = objects::apply_changed(&self.client, &wanted.native, inventory).await?;
        // After the natives, which make istiod's namespace.
        let trust_note = self.ensure_plug_in_ca(wanted, resolved, release).await?;
        let end = self
            .apply_chart(wanted, operation, release, native.not_ready, writer)
            .await?;
        if matches!(end, StepEnd::Done) {
            let left_alone = (!native.left_alone.is_empty())
                .then(|| format!("left as it is: {}", native.left_alone.join("; ")));
            let notes: Vec<String> = left_alone.into_iter().chain(trust_note).collect();
            let note = (!notes.is_empty()).then(|| notes.join("; "));
            writer.note(wanted.name(), note).await?;
        }
        Ok(end)
    }

    /// istiod reads its signing CA from `cacerts` only when it starts, so on the primary of a
    /// mesh of several clusters that Secret is made (from the mesh's shared root) before the
    /// chart is installed. One made while istiod is already installed (a mesh of one cluster
    /// turned into several) changes the CA only when istiod's pods restart, which smm does not
    /// cause: that is a warning, and the note returned for istiod's status message.
    pub(super) async fn ensure_plug_in_ca(
        &self,
        wanted: &DesiredComponent<'_>,
        resolved: &Resolved<'_>,
        release: Option<&ObservedRelease>,
    ) -> Result<Option<String>, ComponentError> {
        if !wanted.component.plug_in_ca || !wanted.enabled {
            return Ok(None);
        }
        let Some(request) = CacertsRequest::of(resolved.spec()) else {
            return Ok(None);
        };
        let namespace = &wanted.release.namespace;
        let made = trust::ensure_primary_cacerts(
            &self.client,
            namespace,
            request.mesh_id,
            request.cluster_name,
        )
        .await?;
        if made != trust::Cacerts::Created || release.is_none() {
            return Ok(None);
        }
        let note = format!(
            "made cacerts in {namespace} from the root of mesh {} while istiod was installed: \
             istiod pods started before keep their own CA until they restart (smm does not \
             restart them); after the restart workloads get certificates of the mesh root",
            request.mesh_id
        );
        tracing::warn!(component = wanted.name(), %namespace, "{note}");
        Ok(Some(note))
    }

    /// The rest of [`Self::apply`] once the native objects are applied: waits for those not
    /// ready yet, then the chart.
    async fn apply_chart(
        &self,
        wanted: &DesiredComponent<'_>,
        operation: Operation,
        release: Option<&ObservedRelease>,
        not_ready: Vec<String>,
        writer: &StatusWriter,
    ) -> Result<StepEnd, ComponentError> {
        let name = wanted.name();
        let phase = match operation {
            Operation::Install => ComponentPhase::Installing,
            _ => ComponentPhase::Upgrading,
        };
        if !not_ready.is_empty() {
            let waiting = not_ready.join(", ");
            let message = format!("waiting for {waiting} to be established");
            writer
                .progressing(name, phase, Some(message.clone()))
                .await?;
            return Ok(StepEnd::Waiting(message));
        }
        if operation == Operation::Nothing {
            // Up to date; still waiting for its workloads when last seen, or judged again in
            // case they stopped being ready: then a rollout is under way (someone restarted it,
            // its pods crash), which is Upgrading until they are ready again.
            let waiting = match writer.component(name).map(|s| s.phase) {
                Some(ComponentPhase::Available) if self.settings.recheck_available => {
                    Some(ComponentPhase::Upgrading)
                }
                Some(ComponentPhase::Available) | None => None,
                phase => phase,
            };
            return match (waiting, release) {
                (Some(phase), Some(release)) => {
                    self.await_workloads(wanted, phase, release, writer).await
                }
                _ => {
                    writer.available(name).await?;
                    Ok(StepEnd::Done)
                }
            };
        }
        writer.attempting(wanted, phase).await?;
        let release_state = release.map(|r| &r.state);
        let owner = writer.control_plane_uid();
        run_helm(&self.helm, wanted, operation, release_state, owner).await?;
        let applied = self.read_applied(wanted, operation, release).await?;
        let Some(applied) = applied.as_ref() else {
            // helm said it succeeded; its record not being there is someone else's doing.
            writer.applied(wanted, phase, None).await?;
            return Ok(StepEnd::Waiting(
                "waiting for helm's release record".to_owned(),
            ));
        };
        let revision = applied.revision;
        writer.applied(wanted, phase, Some(revision)).await?;
        tracing::info!(component = name, ?operation, revision, "applied");
        self.await_workloads(wanted, phase, applied, writer).await
    }

    /// The revision helm just wrote for `wanted`: an install or upgrade makes the one after
    /// the latest observed (the first, where none is), read by name; a recovery (which may
    /// roll back first), or a record not found where expected, is looked for among the
    /// release's latest records.
    async fn read_applied(
        &self,
        wanted: &DesiredComponent<'_>,
        operation: Operation,
        release: Option<&ObservedRelease>,
    ) -> Result<Option<ObservedRelease>, ComponentError> {
        if operation != Operation::Recover {
            let next = release.map_or(1, |r| r.revision + 1);
            let read = release::read_revision(&self.client, &wanted.release, next, &self.records);
            if let Some(applied) = read.await.map_err(ComponentError::Observe)? {
                return Ok(Some(applied));
            }
        }
        let mut latest = release::observe(
            &self.client,
            std::slice::from_ref(&wanted.release),
            release::Freshness::Latest,
            &self.records,
        )
        .await
        .map_err(ComponentError::Observe)?;
        Ok(latest.remove(&(
            wanted.release.namespace.clone(),
            wanted.release.name.clone(),
        )))
    }

    /// The component's namespace changed: its release (and native objects) in the old namespace
    /// go before anything happens in the new one, so two copies never run side by side.
    pub(super) async fn remove_moved(
        &self,
        wanted: &DesiredComponent<'_>,
        resolved: &Resolved<'_>,
        previous: &ReleaseRef,
        writer: &StatusWriter,
    ) -> Result<(), ComponentError> {
        let name = wanted.name();
        let reason = format!("moved from namespace {}", previous.namespace);
        if let Some(progress) = &self.progress {
            progress.started(name, Operation::Uninstall, &reason);
        }
        writer.mark_reconciling(&format!("{name}: {reason}"));
        // Written before helm removes anything.
        writer.flush().await?;
        self.helm
            .uninstall(previous, self.waits())
            .await
            .map_err(ComponentError::RemoveMoved)?;
        let spec = resolved.spec();
        let placements = self.catalog.placements(spec);
        let old_natives = (wanted.component.native_objects)(&ComponentContext {
            spec,
            namespace: &previous.namespace,
            enabled: false,
            placements: &placements,
            revision: resolved.revision(),
        });
        objects::apply(&self.client, &old_natives).await?;
        if let Some(progress) = &self.progress {
            progress.finished(name, &Outcome::Done);
        }
        tracing::info!(component = name, from = %previous, to = %wanted.release, "moved");
        Ok(())
    }

    pub(super) async fn uninstall(
        &self,
        wanted: &DesiredComponent<'_>,
        writer: &StatusWriter,
    ) -> Result<StepEnd, ComponentError> {
        let name = wanted.name();
        writer
            .progressing(name, ComponentPhase::Uninstalling, None)
            .await?;
        self.helm
            .uninstall(&wanted.release, self.waits())
            .await
            .map_err(ComponentError::Helm)?;
        objects::apply(&self.client, &wanted.native).await?;
        writer.removed(name).await?;
        tracing::info!(component = name, "uninstalled");
        Ok(StepEnd::Done)
    }

    /// A disabled component with no release: native objects may outlive a release (a failed
    /// earlier removal), so finish the job.
    pub(super) async fn finish_removal(
        &self,
        wanted: &DesiredComponent<'_>,
        recorded: Option<&ComponentStatus>,
        inventory: &Inventory,
        writer: &StatusWriter,
    ) -> Result<StepEnd, ComponentError> {
        objects::apply_changed(&self.client, &wanted.native, inventory).await?;
        if recorded.is_some_and(|s| s.phase != ComponentPhase::Removed) {
            writer.removed(wanted.name()).await?;
        }
        Ok(StepEnd::Done)
    }

    /// Whether helm should wait for what it removes to be gone.
    pub(super) fn waits(&self) -> bool {
        self.settings.wait != WaitPolicy::No
    }
}

/// Runs helm for an install, upgrade or recovery.
async fn run_helm(
    helm: &Helm,
    wanted: &DesiredComponent<'_>,
    operation: Operation,
    release_state: Option<&ReleaseState>,
    owner: &str,
) -> Result<(), ComponentError> {
    if operation == Operation::Recover {
        // A pending install has nothing to go back to, and an interrupted uninstall is finished
        // rather than undone (a rollback fails when no earlier revision is left); anything else
        // returns to the last good revision.
        match release_state {
            Some(ReleaseState::PendingInstall | ReleaseState::Uninstalling) => {
                helm.uninstall(&wanted.release, false).await
            }
            _ => helm.rollback(&wanted.release).await,
        }
        .map_err(ComponentError::Recover)?;
    }
    let prepared = wanted.chart.prepare(&wanted.values)?;
    // The record says who owns the release and what it holds.
    let chart = digest_label_value(&wanted.chart_digest);
    let values = digest_label_value(&wanted.values_digest);
    let labels = [
        (OWNER_LABEL, owner),
        (CHART_DIGEST_LABEL, chart.as_str()),
        (VALUES_DIGEST_LABEL, values.as_str()),
    ];
    helm.upgrade_install(
        &wanted.release,
        prepared.chart_path(),
        prepared.values_file(),
        &labels,
    )
    .await
    .map_err(ComponentError::Helm)?;
    Ok(())
}

/// Where the component's release was installed, when that is no longer where it should be and a
/// release is still there.
pub(super) fn moved_release(
    recorded: Option<&ComponentStatus>,
    wanted: &DesiredComponent<'_>,
    observed: &ObservedReleases,
) -> Option<ReleaseRef> {
    let previous = ReleaseRef::from(recorded?.release.as_ref()?);
    (previous != wanted.release && release::lookup(observed, &previous).is_some())
        .then_some(previous)
}
