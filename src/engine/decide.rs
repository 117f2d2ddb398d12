//! The decision for one component: a pure function of its desired state, the status the
//! engine recorded last time and the release helm has in the cluster.

use crate::api::{ComponentPhase, ComponentStatus};
use crate::desired::resolve::DesiredComponent;
use crate::helm::release::{self, ObservedRelease, ObservedReleases, ReleaseRef, ReleaseState};

/// What the engine does with a component this round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Operation {
    Install,
    Upgrade,
    Uninstall,
    /// Resolve a release left pending by an interrupted helm, then install or upgrade.
    Recover,
    Nothing,
}

impl Operation {
    /// The word for it while it runs, as progress shows it.
    pub fn verb(self) -> &'static str {
        match self {
            Operation::Install => "installing",
            Operation::Upgrade => "upgrading",
            Operation::Uninstall => "uninstalling",
            Operation::Recover => "recovering",
            Operation::Nothing => "checking",
        }
    }

    /// The word for it once done, as Events name it; `None` when nothing was done.
    pub fn done(self) -> Option<&'static str> {
        match self {
            Operation::Install => Some("Installed"),
            Operation::Upgrade => Some("Upgraded"),
            Operation::Uninstall => Some("Uninstalled"),
            Operation::Recover => Some("Recovered"),
            Operation::Nothing => None,
        }
    }
}

/// Why: what a user reads in the reconcile summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    ReleaseMissing,
    ChartChanged,
    ValuesChanged,
    /// The release exists but smm has no record of what it applied (e.g. status was lost).
    NotRecorded,
    /// A run started helm and stopped before recording the outcome: the release may hold what
    /// that run applied, whatever the record says.
    Interrupted,
    LastAttemptFailed,
    Stuck(ReleaseState),
    Disabled,
    /// Objects of the release were deleted behind helm's back.
    Drift(Vec<String>),
    /// The release moved on from the revision smm recorded: an upgrade or rollback made
    /// outside smm (by hand with helm).
    ChangedOutside {
        recorded: i64,
        found: i64,
    },
    UpToDate,
    AlreadyRemoved,
}

impl Reason {
    /// Whether someone other than smm changed what smm applied.
    pub fn is_change_outside_smm(&self) -> bool {
        matches!(self, Reason::Drift(_) | Reason::ChangedOutside { .. })
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::ReleaseMissing => f.write_str("release missing"),
            Reason::ChartChanged => f.write_str("chart digest changed"),
            Reason::ValuesChanged => f.write_str("values changed"),
            Reason::NotRecorded => f.write_str("no record of the applied chart and values"),
            Reason::Interrupted => f.write_str("an earlier run was interrupted while applying"),
            Reason::LastAttemptFailed => f.write_str("last attempt failed"),
            Reason::Stuck(state) => write!(f, "release stuck in {state}"),
            Reason::Disabled => f.write_str("disabled"),
            Reason::Drift(missing) => write!(f, "drift: {} missing", missing.join(", ")),
            Reason::ChangedOutside { recorded, found } => write!(
                f,
                "changed outside smm: revision {found} found, {recorded} applied by smm"
            ),
            Reason::UpToDate => f.write_str("up to date"),
            Reason::AlreadyRemoved => f.write_str("disabled and not installed"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Operation,
    pub reason: Reason,
}

/// The desired side of a decision.
#[derive(Clone, Copy, Debug)]
pub struct Desired<'a> {
    pub enabled: bool,
    pub chart_digest: &'a str,
    pub values_digest: &'a str,
}

impl<'a> From<&'a DesiredComponent<'_>> for Desired<'a> {
    fn from(desired: &'a DesiredComponent<'_>) -> Self {
        Self {
            enabled: desired.enabled,
            chart_digest: &desired.chart_digest,
            values_digest: &desired.values_digest,
        }
    }
}

pub fn decide(
    wanted: Desired<'_>,
    status: Option<&ComponentStatus>,
    observed: Option<&ObservedRelease>,
) -> Decision {
    let decision = |action, reason| Decision { action, reason };
    let Some(release) = observed.filter(|r| r.state != ReleaseState::Uninstalled) else {
        return if wanted.enabled {
            decision(Operation::Install, Reason::ReleaseMissing)
        } else {
            decision(Operation::Nothing, Reason::AlreadyRemoved)
        };
    };
    if release.state.is_pending() {
        return if wanted.enabled {
            decision(Operation::Recover, Reason::Stuck(release.state.clone()))
        } else {
            decision(Operation::Uninstall, Reason::Disabled)
        };
    }
    if !wanted.enabled {
        return decision(Operation::Uninstall, Reason::Disabled);
    }
    let recorded =
        status.and_then(|s| Some((s.chart_digest.as_deref()?, s.values_digest.as_deref()?)));
    match recorded {
        None => decision(Operation::Upgrade, Reason::NotRecorded),
        Some((chart, _)) if chart != wanted.chart_digest => {
            decision(Operation::Upgrade, Reason::ChartChanged)
        }
        Some((_, values)) if values != wanted.values_digest => {
            decision(Operation::Upgrade, Reason::ValuesChanged)
        }
        _ if release.state == ReleaseState::Failed
            || status.is_some_and(|s| s.phase == ComponentPhase::Failed) =>
        {
            decision(Operation::Upgrade, Reason::LastAttemptFailed)
        }
        _ if status.is_some_and(|s| s.attempt.is_some()) => {
            decision(Operation::Upgrade, Reason::Interrupted)
        }
        _ => match status.and_then(|s| s.release.as_ref()?.revision) {
            Some(recorded) if recorded != release.revision => decision(
                Operation::Upgrade,
                Reason::ChangedOutside {
                    recorded,
                    found: release.revision,
                },
            ),
            _ => decision(Operation::Nothing, Reason::UpToDate),
        },
    }
}

/// Whether helm's records as read from the API server's cache are exactly what the status
/// recorded (read from etcd itself), for every component: the same revision, deployed, no
/// attempt left unrecorded; and no record where none was recorded. The cache may lag the
/// latest writes by a moment, but a cache that agrees with the status holds everything the
/// last run wrote. Any difference (an interrupted run, a change made by hand, or just a
/// lagging cache) is read again from etcd before anything is decided.
pub(super) fn cache_agrees<'a>(
    recorded: impl IntoIterator<Item = (&'a ReleaseRef, Option<&'a ComponentStatus>)>,
    cached: &ObservedReleases,
) -> bool {
    recorded.into_iter().all(|(wanted, status)| {
        let found = release::lookup(cached, wanted);
        match status {
            Some(status) if status.attempt.is_some() => false,
            Some(ComponentStatus {
                release: Some(recorded),
                ..
            }) => {
                ReleaseRef::from(recorded) == *wanted
                    && found.is_some_and(|found| {
                        recorded.revision == Some(found.revision)
                            && found.state == ReleaseState::Deployed
                    })
            }
            _ => found.is_none(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Attempt, ReleaseStatus};

    fn reference() -> ReleaseRef {
        ReleaseRef {
            name: "istiod".to_owned(),
            namespace: "istio-system".to_owned(),
        }
    }

    fn recorded_at(revision: i64) -> ComponentStatus {
        ComponentStatus {
            release: Some(ReleaseStatus {
                name: "istiod".to_owned(),
                namespace: "istio-system".to_owned(),
                revision: Some(revision),
            }),
            ..ComponentStatus::with_phase(ComponentPhase::Available)
        }
    }

    fn cached(state: ReleaseState) -> ObservedReleases {
        [(
            ("istio-system".to_owned(), "istiod".to_owned()),
            release(state),
        )]
        .into()
    }

    #[test]
    fn the_cache_is_trusted_only_when_it_holds_exactly_what_was_recorded() {
        let wanted = reference();
        let at_3 = recorded_at(3);
        let agrees = |status: Option<&ComponentStatus>, found: &ObservedReleases| {
            cache_agrees([(&wanted, status)], found)
        };
        assert!(agrees(Some(&at_3), &cached(ReleaseState::Deployed)));
        assert!(agrees(None, &ObservedReleases::new()));
        let removed = ComponentStatus::with_phase(ComponentPhase::Removed);
        assert!(agrees(Some(&removed), &ObservedReleases::new()));

        // A revision the status does not hold (a lagging cache, or a hand-made upgrade).
        assert!(!agrees(
            Some(&recorded_at(4)),
            &cached(ReleaseState::Deployed)
        ));
        // Not deployed, missing, or there where nothing was recorded.
        assert!(!agrees(Some(&at_3), &cached(ReleaseState::PendingUpgrade)));
        assert!(!agrees(Some(&at_3), &ObservedReleases::new()));
        assert!(!agrees(None, &cached(ReleaseState::Deployed)));
        // A run that set out to apply something and did not record the outcome.
        let attempted = ComponentStatus {
            attempt: Some(Attempt {
                chart_digest: "sha256:c".to_owned(),
                values_digest: "sha256:v".to_owned(),
            }),
            ..recorded_at(3)
        };
        assert!(!agrees(Some(&attempted), &cached(ReleaseState::Deployed)));
        // Recorded in another namespace than the one wanted now (a move).
        let elsewhere = ReleaseRef {
            namespace: "mesh".to_owned(),
            ..reference()
        };
        assert!(!cache_agrees(
            [(&elsewhere, Some(&at_3))],
            &cached(ReleaseState::Deployed)
        ));
    }

    const WANTED: Desired<'static> = Desired {
        enabled: true,
        chart_digest: "sha256:c1",
        values_digest: "sha256:v1",
    };

    fn status(phase: ComponentPhase, chart: &str, values: &str) -> ComponentStatus {
        ComponentStatus {
            chart_digest: Some(chart.to_owned()),
            values_digest: Some(values.to_owned()),
            ..ComponentStatus::with_phase(phase)
        }
    }

    fn release(state: ReleaseState) -> ObservedRelease {
        ObservedRelease::decoded(3, state, None, Default::default())
    }

    #[test]
    fn matching_digests_and_a_deployed_release_mean_nothing_to_do() {
        let available = status(ComponentPhase::Available, "sha256:c1", "sha256:v1");
        let deployed = release(ReleaseState::Deployed);
        let d = decide(WANTED, Some(&available), Some(&deployed));
        assert_eq!((d.action, d.reason), (Operation::Nothing, Reason::UpToDate));
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
            (Operation::Upgrade, Reason::ValuesChanged)
        );
        let d = decide(WANTED, None, Some(&deployed));
        assert_eq!(
            (d.action, d.reason),
            (Operation::Upgrade, Reason::NotRecorded)
        );
    }

    #[test]
    fn a_missing_release_is_installed_even_when_status_says_available() {
        let available = status(ComponentPhase::Available, "sha256:c1", "sha256:v1");
        let d = decide(WANTED, Some(&available), None);
        assert_eq!(
            (d.action, d.reason),
            (Operation::Install, Reason::ReleaseMissing)
        );
        let uninstalled = release(ReleaseState::Uninstalled);
        assert_eq!(
            decide(WANTED, Some(&available), Some(&uninstalled)).action,
            Operation::Install
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
                (Operation::Recover, Reason::Stuck(state))
            );
            let disabled = Desired {
                enabled: false,
                ..WANTED
            };
            assert_eq!(
                decide(disabled, None, Some(&pending)).action,
                Operation::Uninstall
            );
        }
    }

    #[test]
    fn disabled_components_are_uninstalled_once() {
        let disabled = Desired {
            enabled: false,
            ..WANTED
        };
        let deployed = release(ReleaseState::Deployed);
        let d = decide(disabled, None, Some(&deployed));
        assert_eq!(
            (d.action, d.reason),
            (Operation::Uninstall, Reason::Disabled)
        );
        let d = decide(disabled, None, None);
        assert_eq!(
            (d.action, d.reason),
            (Operation::Nothing, Reason::AlreadyRemoved)
        );
    }

    /// helm applied V2, the run died before recording it, the spec went back to V1. The record
    /// says V1 and so does the spec, but the attempt left behind says the cluster may hold V2:
    /// upgrade, or the cluster would keep V2 with a status claiming V1.
    #[test]
    fn an_interrupted_attempt_is_applied_again_even_when_the_spec_is_reverted() {
        let mut interrupted = status(ComponentPhase::Upgrading, "sha256:c1", "sha256:v1");
        interrupted.attempt = Some(crate::api::Attempt {
            chart_digest: "sha256:c1".to_owned(),
            values_digest: "sha256:v2".to_owned(),
        });
        let deployed = release(ReleaseState::Deployed);
        let d = decide(WANTED, Some(&interrupted), Some(&deployed));
        assert_eq!(
            (d.action, d.reason),
            (Operation::Upgrade, Reason::Interrupted)
        );
    }

    /// A `helm upgrade` or `helm rollback` by hand moves the release to a revision smm did not
    /// record: detected and corrected by an upgrade.
    #[test]
    fn a_revision_smm_did_not_make_is_corrected() {
        let mut available = status(ComponentPhase::Available, "sha256:c1", "sha256:v1");
        available.release = Some(crate::api::ReleaseStatus {
            name: "istiod".to_owned(),
            namespace: "istio-system".to_owned(),
            revision: Some(2),
        });
        let deployed = release(ReleaseState::Deployed);
        let d = decide(WANTED, Some(&available), Some(&deployed));
        assert_eq!(
            (d.action, d.reason.clone()),
            (
                Operation::Upgrade,
                Reason::ChangedOutside {
                    recorded: 2,
                    found: 3
                }
            )
        );
        // Reported as a change made outside smm (the operator publishes a Warning Event).
        assert!(d.reason.is_change_outside_smm());
        assert!(Reason::Drift(vec!["Deployment/istiod".to_owned()]).is_change_outside_smm());
        assert!(!Reason::ValuesChanged.is_change_outside_smm());
        available.release.as_mut().unwrap().revision = Some(3);
        let d = decide(WANTED, Some(&available), Some(&deployed));
        assert_eq!(d.action, Operation::Nothing);
    }

    #[test]
    fn a_failed_attempt_is_retried_with_the_same_digests() {
        let failed = status(ComponentPhase::Failed, "sha256:c1", "sha256:v1");
        let deployed = release(ReleaseState::Deployed);
        let d = decide(WANTED, Some(&failed), Some(&deployed));
        assert_eq!(
            (d.action, d.reason),
            (Operation::Upgrade, Reason::LastAttemptFailed)
        );
        let available = status(ComponentPhase::Available, "sha256:c1", "sha256:v1");
        let helm_failed = release(ReleaseState::Failed);
        assert_eq!(
            decide(WANTED, Some(&available), Some(&helm_failed)).action,
            Operation::Upgrade
        );
    }
}
