//! A run: read the ControlPlane, resolve its spec (refusing a bad one, or one that shares
//! releases with another ControlPlane), then rounds of waves until nothing waits, the wait's
//! time is up, or the caller is to come back later; the conditions are always made current.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use kube::{Api, ResourceExt};
use tracing::Instrument;

use super::decide::Operation;
use super::report::{self, Outcome, ReconcileReport};
use super::status::{RunEnd, StatusWriter};
use super::{Engine, EngineError, Intent, MAX_ROUND_DELAY, Scope, WaitPolicy};
use crate::api::{ControlPlane, ControlPlaneSpec};
use crate::desired::resolve::{DesiredComponent, refuse_shared_releases};
use crate::mesh::graph;

impl Engine {
    pub(super) async fn run(
        &self,
        control_plane: &ControlPlane,
        others: &[(String, ControlPlaneSpec)],
        scope: &Scope,
        intent: Intent,
    ) -> Result<ReconcileReport, EngineError> {
        let name = control_plane.name_any();
        let span = tracing::info_span!("reconcile", control_plane = name, ?intent);
        self.run_rounds(control_plane, others, scope, intent)
            .instrument(span)
            .await
    }

    async fn run_rounds(
        &self,
        control_plane: &ControlPlane,
        others: &[(String, ControlPlaneSpec)],
        scope: &Scope,
        intent: Intent,
    ) -> Result<ReconcileReport, EngineError> {
        let api: Api<ControlPlane> = Api::all(self.client.clone());
        let name = control_plane.name_any();
        let name = name.as_str();
        let mut spec = control_plane.spec.clone();
        if intent == Intent::RemoveEverything {
            // Removal must work even for a spec that could not be applied: values and unknown
            // components do not matter once everything goes.
            spec.components
                .retain(|component, _| self.catalog.get(component).is_some());
            for component in self.catalog.names() {
                let entry = spec.components.entry(component.to_owned()).or_default();
                entry.enabled = Some(false);
                entry.values_override = None;
            }
        }
        let writer = StatusWriter::new(api.clone(), control_plane);
        let desired = match self.resolve(name, &spec).and_then(|desired| {
            refuse_shared_releases(&self.catalog, &spec, others)
                .map(|()| desired)
                .map_err(|source| EngineError::Spec {
                    name: name.to_owned(),
                    source,
                })
        }) {
            Ok(desired) => desired,
            Err(err) => {
                // Visible where users look (kubectl, Argo CD), not only in a log: the operator
                // has no terminal to print it to.
                writer.rejected(&err.to_string()).await?;
                return Err(err);
            }
        };
        let in_scope = scope.select(&desired);

        let mut report = ReconcileReport {
            control_plane: name.to_owned(),
            rounds: 0,
            ready: false,
            components: Vec::new(),
        };
        let started = tokio::time::Instant::now();
        let mut rounds = 0;
        // Components that failed in this run are not tried again in it (a retry would meet the
        // same cause, each time holding the lease as long as helm's timeout), and what depends
        // on them is blocked: reported failed, left untouched.
        let mut failed: BTreeSet<&'static str> = BTreeSet::new();
        let mut fatal = None;
        let mut pause = self.settings.round_delay;
        let end = loop {
            rounds += 1;
            // The status as read holds what the last run wrote; once this run has written,
            // helm's records are read from etcd.
            let recorded = (rounds == 1)
                .then_some(control_plane.status.as_ref())
                .flatten();
            let observed = match self.observe(&in_scope, recorded).await {
                Ok(observed) => observed,
                Err(err) => {
                    fatal = Some(err);
                    break RunEnd::Waiting;
                }
            };
            let mut waiting = false;
            let mut acted = false;
            // Removals first, dependents before what they depend on; then installs, after what
            // they depend on. A component starts as soon as everything it must follow has
            // finished in this round (no wave waits for its slowest member), up to
            // `parallelism` at once.
            let removals: Vec<_> = in_scope
                .iter()
                .rev()
                .filter(|d| !d.enabled)
                .copied()
                .collect();
            let installs: Vec<_> = in_scope.iter().filter(|d| d.enabled).copied().collect();
            let order: Vec<(&DesiredComponent<'_>, bool)> = removals
                .iter()
                .map(|d| (*d, true))
                .chain(installs.iter().map(|d| (*d, false)))
                .collect();
            let mut follows = graph::must_follow(&removals, true);
            follows.extend(
                graph::must_follow(&installs, false)
                    .into_iter()
                    .map(|earlier| {
                        (0..removals.len())
                            .chain(earlier.into_iter().map(|i| i + removals.len()))
                            .collect()
                    }),
            );
            let mut begun = vec![false; order.len()];
            let mut finished = vec![false; order.len()];
            let mut running = futures::stream::FuturesUnordered::new();
            loop {
                for index in 0..order.len() {
                    if begun[index] || !follows[index].iter().all(|&earlier| finished[earlier]) {
                        continue;
                    }
                    if running.len() >= self.settings.parallelism.max(1) {
                        break;
                    }
                    begun[index] = true;
                    let (wanted, removing) = order[index];
                    if failed.contains(wanted.name()) {
                        finished[index] = true;
                        continue;
                    }
                    if let Some(blocker) = blocker(wanted, removing, &in_scope, &failed) {
                        failed.insert(wanted.name());
                        finished[index] = true;
                        report.record(report::ComponentReport {
                            name: wanted.name().to_owned(),
                            action: Operation::Nothing,
                            reason: format!("blocked by {blocker}"),
                            outcome: Outcome::Failed(format!(
                                "blocked by {blocker}, which failed in this run"
                            )),
                        });
                        continue;
                    }
                    self.check_going(name)?;
                    let step = self.step(wanted, &spec, &observed, &writer);
                    running.push(async move { (index, step.await) });
                }
                let Some((index, step)) = running.next().await else {
                    break;
                };
                finished[index] = true;
                waiting |= matches!(step.outcome, Outcome::Waiting(_));
                acted |= step.action != Operation::Nothing;
                if matches!(step.outcome, Outcome::Failed(_)) {
                    failed.insert(order[index].0.name());
                }
                report.record(step);
            }
            if !waiting {
                break RunEnd::Settled;
            }
            match self.settings.wait {
                WaitPolicy::Until(limit) if started.elapsed() >= limit => {
                    self.time_out(&mut report, limit, &writer).await?;
                    break RunEnd::TimedOut;
                }
                WaitPolicy::Until(_) => {}
                WaitPolicy::Requeue | WaitPolicy::No if !acted => break RunEnd::Waiting,
                WaitPolicy::Requeue | WaitPolicy::No => {}
            }
            tokio::time::sleep(pause).await;
            // Look again soon after a change (a rollout just started, a dependency just became
            // available), less and less often while nothing changes.
            pause = if acted {
                self.settings.round_delay
            } else {
                (pause * 2).min(MAX_ROUND_DELAY.max(self.settings.round_delay))
            };
        };
        // Side by side work finishes in any order; the report follows the catalog.
        report.components.sort_by_key(|component| {
            in_scope
                .iter()
                .position(|d| d.name() == component.name)
                .unwrap_or(usize::MAX)
        });
        report.rounds = rounds;
        // The conditions are made current whatever happened above.
        report.ready = writer.finish(&desired, end).await?;
        match fatal {
            Some(err) => Err(err),
            None => Ok(report),
        }
    }

    /// The wait is over: every component still waiting is Failed, with what it waited for.
    async fn time_out(
        &self,
        report: &mut ReconcileReport,
        limit: Duration,
        writer: &StatusWriter,
    ) -> Result<(), EngineError> {
        for component in &mut report.components {
            if let Outcome::Waiting(why) = &component.outcome {
                let message = format!("not ready after {}s: {why}", limit.as_secs());
                writer.failed(&component.name, message.clone()).await?;
                let outcome = Outcome::Failed(message);
                if let Some(progress) = &self.progress {
                    progress.finished(&component.name, &outcome);
                }
                component.outcome = outcome;
            }
        }
        Ok(())
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
    use crate::mesh::catalog::Catalog;

    /// Finding M5: what depends on a component that failed in this run is blocked, not tried;
    /// and what a failed removal still uses is not removed (finding L16).
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
