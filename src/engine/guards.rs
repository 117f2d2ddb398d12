//! What must hold before the engine touches a release: what the component depends on is
//! there, the release is this ControlPlane's, and, for a release left pending, no earlier helm
//! can still be writing it.

use std::time::Duration;

use tokio::time::Instant;

use super::decide::{Decision, Operation};
use super::status::StatusWriter;
use super::step::ComponentError;
use super::{Engine, WaitPolicy};
use crate::api::ComponentStatus;
use crate::cluster::lease::{LEASE_DURATION, Predecessor, RENEW_DEADLINE};
use crate::desired::resolve::DesiredComponent;
use crate::helm::STOP_GRACE;
use crate::helm::release::{ObservedRelease, ReleaseRef, ReleaseState};

/// Time for what a stopped holder had already sent: requests the API server may still be
/// carrying out after the helm that sent them died.
const IN_FLIGHT: Duration = Duration::from_secs(5);
// A lease left to expire is taken only once its holder's helm has stopped, killed at worst: the
// holder gives the lease up at its renew deadline, and stops helm within helm's grace.
const _: () = assert!(
    LEASE_DURATION.as_secs()
        >= RENEW_DEADLINE.as_secs() + STOP_GRACE.as_secs() + IN_FLIGHT.as_secs()
);

/// When, on our own monotonic clock, nothing of the lease's former holder can still be
/// writing, for a lease taken at `taken_at`. A holder that may still be running gives the lease
/// up by its renew deadline, counted from its last renewal's start, and has stopped helm (killed
/// at worst) [`STOP_GRACE`] later; its last renewal started at least `silent_for` before the
/// lease was taken. Clocks are never compared across hosts: only durations are.
pub(super) fn predecessor_stopped_by(predecessor: Predecessor, taken_at: Instant) -> Instant {
    match predecessor {
        Predecessor::GaveBack => taken_at,
        Predecessor::MayBeStopping { silent_for } => {
            taken_at + (RENEW_DEADLINE + STOP_GRACE + IN_FLIGHT).saturating_sub(silent_for)
        }
    }
}

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
            return Ok(self.predecessor_may_be_writing(wanted, release));
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

    /// A pending release is recovered only once no earlier helm can still be writing it: the
    /// lease's former holder may be stopping one (see [`predecessor_stopped_by`]). When helm
    /// last wrote the record says nothing here: it is another host's clock, and the time an
    /// operation started, not the time its helm stopped.
    fn predecessor_may_be_writing(
        &self,
        wanted: &DesiredComponent<'_>,
        release: &ObservedRelease,
    ) -> Option<String> {
        let left = time_left(self.predecessor_stopped_by, Instant::now())?;
        Some(format!(
            "release {} {}; recovering it in {}s, once the lease's former holder can no longer \
             be writing it",
            wanted.release,
            release.state,
            left.as_secs_f64().ceil()
        ))
    }
}

/// How long until `stopped_by`, if it is still ahead.
fn time_left(stopped_by: Option<Instant>, now: Instant) -> Option<Duration> {
    let left = stopped_by?.saturating_duration_since(now);
    (!left.is_zero()).then_some(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease given back frees its releases at once; one taken from a holder that may still
    /// be running frees them once that holder has given up the lease and stopped helm, as
    /// judged from how long its record had stayed unchanged before the takeover.
    #[test]
    fn pending_releases_wait_until_the_former_holder_has_stopped() {
        let taken_at = Instant::now();
        let stopping = RENEW_DEADLINE + STOP_GRACE + IN_FLIGHT;
        let stopped_by = |predecessor| predecessor_stopped_by(predecessor, taken_at);
        assert_eq!(stopped_by(Predecessor::GaveBack), taken_at);
        let deleted_or_former_leader = Predecessor::MayBeStopping {
            silent_for: Duration::ZERO,
        };
        assert_eq!(stopped_by(deleted_or_former_leader), taken_at + stopping);
        let expired = Predecessor::MayBeStopping {
            silent_for: LEASE_DURATION,
        };
        assert_eq!(stopped_by(expired), taken_at);
        let briefly_silent = Predecessor::MayBeStopping {
            silent_for: Duration::from_secs(4),
        };
        let waits = stopped_by(briefly_silent);
        assert_eq!(waits, taken_at + stopping - Duration::from_secs(4));

        assert_eq!(
            time_left(None, taken_at),
            None,
            "no lease taken from anyone"
        );
        assert_eq!(
            time_left(Some(waits), taken_at),
            Some(stopping - Duration::from_secs(4))
        );
        assert_eq!(time_left(Some(waits), waits), None);
    }
}
