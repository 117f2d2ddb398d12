//! A run: rounds over the components in scope until nothing waits, the wait's time is up, or
//! the caller is to come back later; then the conditions are made current, whatever happened.
//! A round observes the releases once, then steps through the components in the order
//! [`Schedule`] gives, up to `parallelism` at once.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kube::{Api, ResourceExt};
use tracing::Instrument;

use super::decide::Operation;
use super::report::{ComponentReport, Outcome, ReconcileReport};
use super::schedule::{Entry, Schedule};
use super::status::{RunEnd, StatusWriter};
use super::{Engine, EngineError, MAX_ROUND_DELAY, Scope, WaitPolicy};
use crate::api::{ControlPlane, ControlPlaneStatus};
use crate::desired::resolve::DesiredComponent;
use crate::desired::resolved::Resolved;

/// What a run shares between its rounds.
struct Run<'a, 'c> {
    resolved: &'a Resolved<'c>,
    scope: &'a Scope,
    in_scope: Vec<&'a DesiredComponent<'c>>,
    writer: StatusWriter,
    report: ReconcileReport,
    /// Components that failed in this run are not tried again in it (a retry would meet the
    /// same cause, each time holding the lease as long as helm's timeout), and what depends on
    /// them is blocked: reported failed, left untouched.
    failed: BTreeSet<&'static str>,
}

/// What one round did.
struct Round {
    /// Something waits: another round may bring it further.
    waiting: bool,
    /// Something was changed (not only looked at).
    acted: bool,
}

impl Engine {
    pub(super) async fn run(
        &self,
        control_plane: &ControlPlane,
        resolved: &Resolved<'_>,
        scope: &Scope,
    ) -> Result<ReconcileReport, EngineError> {
        let span = tracing::info_span!("reconcile", control_plane = control_plane.name_any());
        self.run_rounds(control_plane, resolved, scope)
            .instrument(span)
            .await
    }

    async fn run_rounds(
        &self,
        control_plane: &ControlPlane,
        resolved: &Resolved<'_>,
        scope: &Scope,
    ) -> Result<ReconcileReport, EngineError> {
        let api: Api<ControlPlane> = Api::all(self.client.clone());
        let mut run = Run {
            resolved,
            scope,
            in_scope: scope.select(resolved.components()),
            writer: StatusWriter::new(api, control_plane, self.lease_lost.clone()),
            report: ReconcileReport {
                control_plane: resolved.name().to_owned(),
                rounds: 0,
                ready: false,
                components: Vec::new(),
                revisit_after: None,
                multi_cluster_primary: resolved
                    .spec()
                    .multi_cluster
                    .as_ref()
                    .is_some_and(|mc| mc.primary.is_none()),
                clusters: Vec::new(),
            },
            failed: BTreeSet::new(),
        };
        let started = tokio::time::Instant::now();
        let mut pause = self.settings.round_delay;
        let mut fatal = None;
        let end = loop {
            run.report.rounds += 1;
            // The status as read holds what the last run wrote; once this run has written,
            // helm's records are read from etcd.
            let recorded = (run.report.rounds == 1)
                .then_some(control_plane.status.as_ref())
                .flatten();
            let round = match self.round(&mut run, recorded).await {
                Ok(round) => round,
                Err(err) => {
                    fatal = Some(err);
                    break RunEnd::Waiting;
                }
            };
            if !round.waiting {
                break RunEnd::Settled;
            }
            match self.settings.wait {
                WaitPolicy::Until(limit) if started.elapsed() >= limit => {
                    self.time_out(&mut run, limit).await;
                    break RunEnd::TimedOut;
                }
                WaitPolicy::Until(_) => {}
                WaitPolicy::Requeue | WaitPolicy::No if !round.acted => break RunEnd::Waiting,
                WaitPolicy::Requeue | WaitPolicy::No => {}
            }
            tokio::time::sleep(pause).await;
            // Look again soon after a change (a rollout just started, a dependency just became
            // available), less and less often while nothing changes.
            pause = if round.acted {
                self.settings.round_delay
            } else {
                (pause * 2).min(MAX_ROUND_DELAY.max(self.settings.round_delay))
            };
        };
        let Run {
            in_scope,
            writer,
            mut report,
            ..
        } = run;
        // Side by side work finishes in any order; the report follows the catalog.
        report.components.sort_by_key(|component| {
            in_scope
                .iter()
                .position(|d| d.name() == component.name)
                .unwrap_or(usize::MAX)
        });
        // The conditions are made current whatever happened above.
        report.ready = writer
            .finish(resolved.components(), end)
            .instrument(tracing::debug_span!("finish"))
            .await?;
        report.revisit_after = writer.revisit();
        match fatal {
            Some(err) => Err(err),
            None => Ok(report),
        }
    }

    /// One round: observe, then every component's step as soon as what it must follow has
    /// finished, up to `parallelism` at once. Stops at once, leaving the steps running now,
    /// when the run must not go on (see [`Engine::check_going`]).
    async fn round(
        &self,
        run: &mut Run<'_, '_>,
        recorded: Option<&ControlPlaneStatus>,
    ) -> Result<Round, EngineError> {
        let observed = self
            .observe(
                &run.in_scope,
                recorded,
                |name| run.writer.component(name),
                run.scope,
            )
            .await?;
        let mut schedule = Schedule::new(&run.in_scope, |d| d.enabled);
        let mut round = Round {
            waiting: false,
            acted: false,
        };
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < self.settings.parallelism.max(1)
                && let Some((index, Entry { node, removing })) = schedule.begin_next()
            {
                let wanted: &DesiredComponent<'_> = node;
                if run.failed.contains(wanted.name()) {
                    schedule.finish(index);
                } else if let Some(blocker) = blocker(wanted, removing, &run.in_scope, &run.failed)
                {
                    run.failed.insert(wanted.name());
                    run.report.record(blocked(wanted, blocker));
                    schedule.finish(index);
                } else {
                    self.check_going(run.resolved.name())?;
                    let step = self.step(wanted, run.resolved, &observed, &run.writer);
                    let name = wanted.name();
                    running.push(async move { (index, name, step.await) });
                }
            }
            let Some((index, name, step)) = running.next().await else {
                return Ok(round);
            };
            schedule.finish(index);
            round.waiting |= matches!(step.outcome, Outcome::Waiting(_));
            round.acted |= step.action != Operation::Nothing;
            if matches!(step.outcome, Outcome::Failed(_)) {
                run.failed.insert(name);
            }
            run.report.record(step);
        }
    }

    /// The wait is over: every component still waiting is Failed, with what it waited for.
    async fn time_out(&self, run: &mut Run<'_, '_>, limit: Duration) {
        for component in &mut run.report.components {
            if let Outcome::Waiting(why) = &component.outcome {
                let message = format!("not ready after {}s: {why}", limit.as_secs());
                component.outcome = self.fail(&run.writer, &component.name, message).await;
            }
        }
    }
}

/// The report of a component left untouched because `blocker` failed in this run.
fn blocked(wanted: &DesiredComponent<'_>, blocker: &str) -> ComponentReport {
    ComponentReport {
        name: wanted.name().to_owned(),
        action: Operation::Nothing,
        reason: format!("blocked by {blocker}"),
        outcome: Outcome::Failed(format!("blocked by {blocker}, which failed in this run")),
    }
}

/// The component that keeps `wanted` from being acted on in this run: for an install, a
/// dependency that failed; for a removal, a dependent whose removal failed (removing what it
/// still uses would break it).
fn blocker(
    wanted: &DesiredComponent<'_>,
    removing: bool,
    in_scope: &[&DesiredComponent<'_>],
    failed: &BTreeSet<&'static str>,
) -> Option<&'static str> {
    if removing {
        in_scope
            .iter()
            .find(|d| failed.contains(d.name()) && d.component.depends_on.contains(&wanted.name()))
            .map(|d| d.name())
    } else {
        wanted
            .component
            .depends_on
            .iter()
            .copied()
            .find(|dependency| failed.contains(dependency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ControlPlaneSpec;
    use crate::mesh::catalog::Catalog;

    /// What depends on a component that failed in this run is blocked, not tried: it would
    /// wait on (or break against) what failed. And what a failed removal still uses is not
    /// removed: the component whose removal failed is still there and uses it.
    #[test]
    fn a_failed_component_blocks_its_dependents_and_what_it_uses() {
        let catalog = Catalog::builtin().unwrap();
        let desired =
            crate::desired::resolve::resolve(&catalog, &ControlPlaneSpec::default()).unwrap();
        let in_scope: Vec<&DesiredComponent<'_>> = desired.iter().collect();
        let named = |name: &str| *in_scope.iter().find(|d| d.name() == name).unwrap();
        let failed: BTreeSet<&'static str> = ["istiod"].into();
        assert_eq!(
            blocker(named("ingress-gateway"), false, &in_scope, &failed),
            Some("istiod")
        );
        assert_eq!(
            blocker(named("prometheus"), false, &in_scope, &failed),
            None
        );
        assert_eq!(
            blocker(named("base"), true, &in_scope, &failed),
            Some("istiod")
        );
        assert_eq!(blocker(named("base"), false, &in_scope, &failed), None);
    }
}
