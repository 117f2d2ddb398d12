//! What the engine tells its caller: per-component outcomes, the report of a run, the entries of
//! a dry-run plan, and the progress hook through which a CLI shows a spinner and the operator
//! publishes Events.

use serde::Serialize;

use super::decide::Operation;
use crate::values::ValueChange;

/// How one component's step ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "result", content = "message")]
pub enum Outcome {
    Done,
    Waiting(String),
    Failed(String),
}

/// What happened to one component in a reconcile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentReport {
    pub name: String,
    pub action: Operation,
    pub reason: String,
    pub outcome: Outcome,
}

/// What a reconcile did, component by component, in catalog order.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    pub control_plane: String,
    pub rounds: u32,
    pub ready: bool,
    pub components: Vec<ComponentReport>,
    /// Run again within this long although nothing waits: an unused inactive revision is
    /// removed once its grace period has passed.
    pub revisit_after: Option<std::time::Duration>,
    /// Whether the spec makes this cluster a primary of a mesh of several
    /// (`spec.multiCluster` without `primary`), whose attached clusters follow it.
    #[serde(skip)]
    pub multi_cluster_primary: bool,
    /// The remote clusters attached to the ControlPlane, as their own reconciles left them
    /// (filled by `fleet` after this run; the engine knows only its own cluster).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<crate::api::AttachedCluster>,
}

impl ReconcileReport {
    /// Whether every component the run covered reached its desired state: the one rule the CLI's
    /// exit code and the operator's requeue decision follow.
    pub fn succeeded(&self) -> bool {
        self.components
            .iter()
            .all(|component| component.outcome == Outcome::Done)
    }

    /// `component: why` for every component that did not finish, for messages.
    pub fn unfinished(&self) -> Vec<String> {
        self.messages(|_| true)
    }

    /// `component: why` for every component that failed.
    pub fn failed(&self) -> Vec<String> {
        self.messages(|outcome| matches!(outcome, Outcome::Failed(_)))
    }

    /// `component: why` for the components not done whose outcome `pick` accepts.
    fn messages(&self, pick: impl Fn(&Outcome) -> bool) -> Vec<String> {
        self.components
            .iter()
            .filter(|c| pick(&c.outcome))
            .filter_map(|c| match &c.outcome {
                Outcome::Done => None,
                Outcome::Waiting(why) | Outcome::Failed(why) => Some(format!("{}: {why}", c.name)),
            })
            .collect()
    }

    /// Keeps one report per component: the first decision that did something, and the last
    /// outcome, as rounds repeat.
    pub(super) fn record(&mut self, report: ComponentReport) {
        match self.components.iter_mut().find(|r| r.name == report.name) {
            Some(existing)
                if report.action == Operation::Nothing && existing.action != Operation::Nothing =>
            {
                existing.outcome = report.outcome;
            }
            Some(existing) => *existing = report,
            None => self.components.push(report),
        }
    }
}

/// One component's entry in a dry-run plan.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedComponent {
    pub name: String,
    pub action: Operation,
    pub reason: String,
    /// For upgrades: how the merged values differ from those of the installed release, secrets
    /// masked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values_diff: Vec<ValueChange>,
}

/// Told what the engine does as it does it, so a CLI can show progress; the operator logs.
pub trait Progress: Send + Sync {
    fn started(&self, component: &str, operation: Operation, reason: &str);
    fn finished(&self, component: &str, outcome: &Outcome);
    /// The component was applied and waits for its workloads, `message` saying which.
    fn waiting(&self, component: &str, message: &str);
    /// What smm applied was changed by someone else (`what`: a helm upgrade or rollback by
    /// hand, objects deleted); the step that [`Progress::started`] announced corrects it.
    fn changed_outside(&self, _component: &str, _what: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, action: Operation, outcome: Outcome) -> ComponentReport {
        ComponentReport {
            name: name.to_owned(),
            action,
            reason: String::new(),
            outcome,
        }
    }

    #[test]
    fn a_later_round_keeps_the_first_action_and_the_last_outcome() {
        let mut run = ReconcileReport {
            control_plane: "smm".to_owned(),
            rounds: 2,
            ready: false,
            revisit_after: None,
            multi_cluster_primary: false,
            clusters: Vec::new(),
            components: Vec::new(),
        };
        run.record(report(
            "istiod",
            Operation::Install,
            Outcome::Waiting("crds".to_owned()),
        ));
        assert!(!run.succeeded());
        assert_eq!(run.unfinished(), ["istiod: crds"]);
        run.record(report("istiod", Operation::Nothing, Outcome::Done));
        assert_eq!(run.components.len(), 1);
        assert_eq!(run.components[0].action, Operation::Install);
        assert!(run.succeeded());
    }
}
