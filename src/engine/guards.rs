//! What must hold before the engine touches a release: what the component depends on is
//! there, the release is this ControlPlane's, and, for a release left pending, no earlier helm
//! can still be writing it.

use std::time::Duration;

use super::decide::{Decision, Operation};
use super::status::StatusWriter;
use super::step::ComponentError;
use super::{Engine, WaitPolicy};
use crate::api::ComponentStatus;
use crate::desired::resolve::DesiredComponent;
use crate::helm::STOP_GRACE;
use crate::helm::release::{ObservedRelease, ReleaseRef, ReleaseState};

impl Engine {
    /// What the step must wait for before it touches anything, if anything; an error when the
    /// release is not this ControlPlane's to touch.
    pub(super) fn held_back(
        &self,
        wanted: &DesiredComponent<'_>,
        decision: &Decision,
        recorded: Option<&ComponentStatus>,
        release: Option<&ObservedRelease>,
        writer: &StatusWriter,
    ) -> Result<Option<String>, ComponentError> {
        // Without waiting, what a component depends on need only be applied.
        let ready_enough = |dependency: &str| match self.settings.wait {
            WaitPolicy::No => writer.is_applied(dependency),
            _ => writer.is_available(dependency),
        };
        let unavailable_dependency = wanted
            .component
            .depends_on
            .iter()
            .find(|dependency| !ready_enough(dependency));
        if let (true, Some(dependency)) = (wanted.enabled, unavailable_dependency) {
            return Ok(Some(format!("waiting for {dependency} to be available")));
        }
        let Some(release) = release else {
            return Ok(None);
        };
        self.check_owner(wanted, release, recorded, writer)?;
        let resolves_pending = matches!(decision.action, Operation::Recover | Operation::Uninstall);
        if resolves_pending && release.state.is_pending() {
            return self.too_fresh_to_recover(wanted, release);
        }
        Ok(None)
    }

    /// A release is ours when its record names this ControlPlane, or (written by an smm from
    /// before the label) when our status records it. Anything else belongs to another
    /// ControlPlane or to nobody (a hand-made `helm install`), and is left alone unless the
    /// user adopts it knowingly.
    fn check_owner(
        &self,
        wanted: &DesiredComponent<'_>,
        release: &ObservedRelease,
        recorded: Option<&ComponentStatus>,
        writer: &StatusWriter,
    ) -> Result<(), ComponentError> {
        if release.state == ReleaseState::Uninstalled || self.settings.adopt {
            return Ok(());
        }
        let ours = writer.control_plane_uid();
        let recorded_here = recorded
            .and_then(|s| s.release.as_ref())
            .is_some_and(|r| ReleaseRef::from(r) == wanted.release);
        match release.owner.as_deref() {
            Some(owner) if owner == ours => Ok(()),
            None if recorded_here => Ok(()),
            owner => Err(ComponentError::NotOwned {
                release: wanted.release.to_string(),
                owner: match owner {
                    Some(uid) => format!("the ControlPlane with uid {uid}"),
                    None => "no ControlPlane (it was installed outside smm)".to_owned(),
                },
            }),
        }
    }

    /// A pending release is recovered only once no earlier helm can still be writing it. We
    /// hold the ControlPlane's lease. When its earlier holder gave it back, that holder's helm
    /// had stopped first. When we took it over after it expired, its holder lost it; a holder
    /// that loses its lease stops its helm (SIGTERM, SIGKILL after [`STOP_GRACE`]), and helm
    /// dies with a holder that dies. So a record older than that grace (and a little more) is
    /// abandoned; a younger one is left alone a moment longer.
    fn too_fresh_to_recover(
        &self,
        wanted: &DesiredComponent<'_>,
        release: &ObservedRelease,
    ) -> Result<Option<String>, ComponentError> {
        if self.earlier_holder_done {
            return Ok(None);
        }
        let quiet = STOP_GRACE + Duration::from_secs(5);
        let Some(written) = release.record()?.written_at else {
            return Ok(None);
        };
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(written);
        let age = age.unsigned_abs();
        Ok((age < quiet).then(|| {
            format!(
                "release {} {} for {}s; recovering it once no earlier helm can still be writing it",
                wanted.release,
                release.state,
                age.as_secs()
            )
        }))
    }
}
