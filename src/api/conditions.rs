//! The kstatus conditions smm writes on a ControlPlane, and the rules that read them: which
//! condition holds, whether the status describes the spec as it is now, the ControlPlane's
//! health as its conditions record it, and whether it is Ready now. `smm status`, the dashboard
//! and the tests read them here, so they all say what the engine would.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use super::{ComponentPhase, ControlPlane, ControlPlaneStatus};

/// The kstatus condition types smm sets.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
}

/// Sets a condition, keeping its `lastTransitionTime` when the status does not change, as
/// Kubernetes API conventions ask.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" };
    let existing = conditions.iter_mut().find(|c| c.type_ == type_);
    let transition = match &existing {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: transition,
    };
    match existing {
        Some(slot) => *slot = condition,
        None => conditions.push(condition),
    }
}

/// Removes a condition: kstatus treats an absent `Reconciling`/`Stalled` as False.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Stalled for `reason` (kstatus: Ready=False, Stalled=True, no longer Reconciling): the
/// ControlPlane needs a change before a reconcile can go on, `message` says which.
pub fn set_stalled(
    conditions: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    for (type_, status) in [(condition::READY, false), (condition::STALLED, true)] {
        set_condition(conditions, type_, status, reason, message, generation, now);
    }
    remove_condition(conditions, condition::RECONCILING);
}

/// A ControlPlane's health as its recorded conditions say, most pressing first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No reconcile has written conditions yet.
    NotReconciled,
    /// A reconcile stopped on something that needs a change (an invalid spec, a failed
    /// component).
    Stalled,
    /// A reconcile is under way, or the spec changed since the last one.
    Reconciling,
    Ready,
    NotReady,
}

impl ControlPlaneStatus {
    /// The condition of `type_`, when one is set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether the condition of `type_` is set and True (kstatus reads an absent one as False).
    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }

    /// Whether the status describes the spec at `generation`, the ControlPlane's as it is now.
    pub fn is_current(&self, generation: Option<i64>) -> bool {
        self.observed_generation.is_some() && self.observed_generation == generation
    }

    /// The health the conditions record for the spec at `generation`.
    pub fn health(&self, generation: Option<i64>) -> Health {
        if self.conditions.is_empty() {
            Health::NotReconciled
        } else if self.is_true(condition::STALLED) {
            Health::Stalled
        } else if self.is_true(condition::RECONCILING) || !self.is_current(generation) {
            Health::Reconciling
        } else if self.is_true(condition::READY) {
            Health::Ready
        } else {
            Health::NotReady
        }
    }
}

/// Whether the ControlPlane is Ready now, given whether every component's live workloads are
/// ready: its latest spec was reconciled, nothing stalled, every component is applied
/// (Available, or Installing/Upgrading with its chart and values recorded, as `--no-wait`
/// leaves it) or removed, and every workload is ready. A reconcile that waited records the same
/// answer as the `Ready` condition; after `--no-wait` only this live look can say it.
pub fn ready_now(control_plane: &ControlPlane, workloads_ready: bool) -> bool {
    let Some(status) = &control_plane.status else {
        return false;
    };
    let current = status.is_current(control_plane.metadata.generation);
    let stalled = status.is_true(condition::STALLED);
    let applied = status
        .components
        .values()
        .all(|c| c.phase == ComponentPhase::Removed || c.is_applied());
    tracing::debug!(control_plane = %control_plane.name_any(), current, stalled, applied, workloads_ready, "readiness");
    current && !stalled && applied && workloads_ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ComponentStatus, ControlPlaneSpec};

    fn control_plane(phase: ComponentPhase, recorded: bool) -> ControlPlane {
        let mut cp = ControlPlane::new("smm", ControlPlaneSpec::default());
        cp.metadata.generation = Some(2);
        let component = ComponentStatus {
            values_digest: recorded.then(|| "sha256:v".to_owned()),
            ..ComponentStatus::with_phase(phase)
        };
        cp.status = Some(ControlPlaneStatus {
            observed_generation: Some(2),
            components: [("istiod".to_owned(), component)].into(),
            ..ControlPlaneStatus::default()
        });
        cp
    }

    #[test]
    fn ready_means_applied_current_and_every_workload_ready() {
        let installed = control_plane(ComponentPhase::Installing, true);
        assert!(ready_now(&installed, true));
        assert!(!ready_now(&installed, false));
        assert!(!ready_now(
            &control_plane(ComponentPhase::Installing, false),
            true
        ));
        assert!(!ready_now(
            &control_plane(ComponentPhase::Failed, true),
            true
        ));
        let mut newer_spec = control_plane(ComponentPhase::Available, true);
        newer_spec.metadata.generation = Some(3);
        assert!(!ready_now(&newer_spec, true));
    }

    #[test]
    fn conditions_keep_transition_time_while_status_holds() {
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        let t2 = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap());
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            "Ready",
            false,
            "Working",
            "a",
            Some(1),
            &t1,
        );
        set_condition(
            &mut conditions,
            "Ready",
            false,
            "Working",
            "b",
            Some(2),
            &t2,
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, t1);
        assert_eq!(conditions[0].message, "b");
        set_condition(&mut conditions, "Ready", true, "Done", "c", Some(2), &t2);
        assert_eq!(conditions[0].last_transition_time, t2);
        remove_condition(&mut conditions, "Ready");
        assert!(conditions.is_empty());
    }
}
