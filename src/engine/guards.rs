//! What must hold before the engine touches a release: that it is this ControlPlane's, and,
//! for a release left pending, that no earlier helm can still be writing it.

use std::time::Duration;

use super::component::ComponentError;
use super::status::StatusWriter;
use super::{Engine, EngineError};
use crate::api::ComponentStatus;
use crate::desired::resolve::DesiredComponent;
use crate::helm::STOP_GRACE;
use crate::helm::release::{ObservedRelease, ReleaseState};

impl Engine {
    /// A release is ours when its record names this ControlPlane, or (written by an smm from
    /// before the label) when our status records it. Anything else belongs to another
    /// ControlPlane or to nobody (a hand-made `helm install`), and is left alone unless the
    /// user adopts it knowingly.
    pub(super) fn check_owner(
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
        let recorded_here = recorded.and_then(|s| s.release.as_ref()).is_some_and(|r| {
            r.name == wanted.release.name && r.namespace == wanted.release.namespace
        });
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
    pub(super) fn too_fresh_to_recover(
        &self,
        wanted: &DesiredComponent<'_>,
        release: &ObservedRelease,
    ) -> Result<Option<String>, EngineError> {
        if self.earlier_holder_done {
            return Ok(None);
        }
        let quiet = STOP_GRACE + Duration::from_secs(5);
        let record = release
            .record(&wanted.release)
            .map_err(EngineError::Record)?;
        let Some(written) = record.written_at else {
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
