//! Deciding what to do with one component: a pure function of its desired state, the status the
//! engine recorded last time and the release helm has in the cluster.

use crate::api::{ComponentPhase, ComponentStatus};
use crate::release::{ObservedRelease, ReleaseState};

/// What the engine does with a component this round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Action {
    Install,
    Upgrade,
    Uninstall,
    /// Resolve a release left pending by an interrupted helm, then install or upgrade.
    Recover,
    Nothing,
}

/// Why: what a user reads in the reconcile summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    ReleaseMissing,
    ChartChanged,
    ValuesChanged,
    /// The release exists but smm has no record of what it applied (e.g. status was lost).
    NotRecorded,
    LastAttemptFailed,
    Stuck(ReleaseState),
    Disabled,
    /// Objects of the release were deleted behind helm's back.
    Drift(Vec<String>),
    UpToDate,
    AlreadyRemoved,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::ReleaseMissing => f.write_str("release missing"),
            Reason::ChartChanged => f.write_str("chart digest changed"),
            Reason::ValuesChanged => f.write_str("values changed"),
            Reason::NotRecorded => f.write_str("no record of the applied chart and values"),
            Reason::LastAttemptFailed => f.write_str("last attempt failed"),
            Reason::Stuck(state) => write!(f, "release stuck in {state}"),
            Reason::Disabled => f.write_str("disabled"),
            Reason::Drift(missing) => write!(f, "drift: {} missing", missing.join(", ")),
            Reason::UpToDate => f.write_str("up to date"),
            Reason::AlreadyRemoved => f.write_str("disabled and not installed"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: Reason,
}

/// The desired side of a decision.
#[derive(Clone, Copy, Debug)]
pub struct Wanted<'a> {
    pub enabled: bool,
    pub chart_digest: &'a str,
    pub values_digest: &'a str,
}

pub fn decide(
    wanted: Wanted<'_>,
    status: Option<&ComponentStatus>,
    observed: Option<&ObservedRelease>,
) -> Decision {
    let decision = |action, reason| Decision { action, reason };
    let Some(release) = observed.filter(|r| r.state != ReleaseState::Uninstalled) else {
        return if wanted.enabled {
            decision(Action::Install, Reason::ReleaseMissing)
        } else {
            decision(Action::Nothing, Reason::AlreadyRemoved)
        };
    };
    if release.state.is_pending() {
        return if wanted.enabled {
            decision(Action::Recover, Reason::Stuck(release.state.clone()))
        } else {
            decision(Action::Uninstall, Reason::Disabled)
        };
    }
    if !wanted.enabled {
        return decision(Action::Uninstall, Reason::Disabled);
    }
    let recorded =
        status.and_then(|s| Some((s.chart_digest.as_deref()?, s.values_digest.as_deref()?)));
    match recorded {
        None => decision(Action::Upgrade, Reason::NotRecorded),
        Some((chart, _)) if chart != wanted.chart_digest => {
            decision(Action::Upgrade, Reason::ChartChanged)
        }
        Some((_, values)) if values != wanted.values_digest => {
            decision(Action::Upgrade, Reason::ValuesChanged)
        }
        _ if release.state == ReleaseState::Failed
            || status.is_some_and(|s| s.phase == ComponentPhase::Failed) =>
        {
            decision(Action::Upgrade, Reason::LastAttemptFailed)
        }
        _ => decision(Action::Nothing, Reason::UpToDate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WANTED: Wanted<'static> = Wanted {
        enabled: true,
        chart_digest: "sha256:c1",
        values_digest: "sha256:v1",
    };

    fn status(phase: ComponentPhase, chart: &str, values: &str) -> ComponentStatus {
        ComponentStatus {
            phase,
            chart: None,
            chart_digest: Some(chart.to_owned()),
            values_digest: Some(values.to_owned()),
            release: None,
            last_transition_time: None,
            message: None,
        }
    }

    fn release(state: ReleaseState) -> ObservedRelease {
        ObservedRelease { revision: 3, state }
    }

    #[test]
    fn matching_digests_and_a_deployed_release_mean_nothing_to_do() {
        let available = status(ComponentPhase::Available, "sha256:c1", "sha256:v1");
        let deployed = release(ReleaseState::Deployed);
        let d = decide(WANTED, Some(&available), Some(&deployed));
        assert_eq!((d.action, d.reason), (Action::Nothing, Reason::UpToDate));
    }

    #[test]
    fn a_changed_digest_means_upgrade_naming_what_changed() {
        let deployed = release(ReleaseState::Deployed);
        let old_chart = status(ComponentPhase::Available, "sha256:c0", "sha256:v1");
        assert_eq!(
            decide(WANTED, Some(&old_chart), Some(&deployed)).reason,
            Reason::ChartChanged
        );
        let old_values = status(ComponentPhase::Available, "sha256:c1", "sha256:v0");
        let d = decide(WANTED, Some(&old_values), Some(&deployed));
        assert_eq!(
            (d.action, d.reason),
            (Action::Upgrade, Reason::ValuesChanged)
        );
        let d = decide(WANTED, None, Some(&deployed));
        assert_eq!((d.action, d.reason), (Action::Upgrade, Reason::NotRecorded));
    }

    #[test]
    fn a_missing_release_is_installed_even_when_status_says_available() {
        let available = status(ComponentPhase::Available, "sha256:c1", "sha256:v1");
        let d = decide(WANTED, Some(&available), None);
        assert_eq!(
            (d.action, d.reason),
            (Action::Install, Reason::ReleaseMissing)
        );
        let uninstalled = release(ReleaseState::Uninstalled);
        assert_eq!(
            decide(WANTED, Some(&available), Some(&uninstalled)).action,
            Action::Install
        );
    }

    #[test]
    fn pending_releases_are_recovered_or_removed() {
        for state in [
            ReleaseState::PendingInstall,
            ReleaseState::PendingUpgrade,
            ReleaseState::PendingRollback,
        ] {
            let pending = release(state.clone());
            let d = decide(WANTED, None, Some(&pending));
            assert_eq!(
                (d.action, d.reason),
                (Action::Recover, Reason::Stuck(state))
            );
            let disabled = Wanted {
                enabled: false,
                ..WANTED
            };
            assert_eq!(
                decide(disabled, None, Some(&pending)).action,
                Action::Uninstall
            );
        }
    }

    #[test]
    fn disabled_components_are_uninstalled_once() {
        let disabled = Wanted {
            enabled: false,
            ..WANTED
        };
        let deployed = release(ReleaseState::Deployed);
        let d = decide(disabled, None, Some(&deployed));
        assert_eq!((d.action, d.reason), (Action::Uninstall, Reason::Disabled));
        let d = decide(disabled, None, None);
        assert_eq!(
            (d.action, d.reason),
            (Action::Nothing, Reason::AlreadyRemoved)
        );
    }

    #[test]
    fn a_failed_attempt_is_retried_with_the_same_digests() {
        let failed = status(ComponentPhase::Failed, "sha256:c1", "sha256:v1");
        let deployed = release(ReleaseState::Deployed);
        let d = decide(WANTED, Some(&failed), Some(&deployed));
        assert_eq!(
            (d.action, d.reason),
            (Action::Upgrade, Reason::LastAttemptFailed)
        );
        let available = status(ComponentPhase::Available, "sha256:c1", "sha256:v1");
        let helm_failed = release(ReleaseState::Failed);
        assert_eq!(
            decide(WANTED, Some(&available), Some(&helm_failed)).action,
            Action::Upgrade
        );
    }
}
