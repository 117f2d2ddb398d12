//! Writes the ControlPlane's status as the engine goes, and kstatus conditions at the start
//! and end of a reconcile. Nothing is written when nothing changed. What must be stored before
//! the engine acts (the attempt before helm runs, a component Uninstalling, a failure, what a
//! component waits for) is written at once, together with whatever was recorded but not written
//! yet; what only records a result (applied, Available, Reconciling) waits for the next write
//! or the run's end. So a one-component change writes its status twice: the attempt with the
//! Reconciling condition, then the result with the final conditions. A run interrupted before
//! its result is written left its attempt recorded, and the next run applies the component
//! again (see `decide`). Components reconciled side by side share one writer, so it locks its
//! copy of the status (never across an API call) and writes one patch at a time, in order.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    Attempt, ChartRef, ComponentPhase, ComponentStatus, ControlPlane, ControlPlaneMeta,
    ControlPlaneStatus, ReleaseStatus, condition, remove_condition, set_condition, set_stalled,
};
use crate::desired::resolve::DesiredComponent;

/// How a run ended, for the conditions it leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RunEnd {
    /// Nothing waits any more.
    Settled,
    /// Components wait and the caller comes back later (or was told not to wait).
    Waiting,
    /// The wait's time limit passed.
    TimedOut,
}

/// The ControlPlane's status could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the status of ControlPlane {name}: {source}")]
pub struct StatusError {
    name: String,
    #[source]
    source: kube::Error,
}

pub(super) struct StatusWriter {
    /// Answers are decoded as far as the metadata: a ControlPlane whose spec cannot be decoded
    /// (being removed) still has its status written.
    api: Api<ControlPlaneMeta>,
    name: String,
    uid: String,
    generation: Option<i64>,
    status: Mutex<ControlPlaneStatus>,
    /// What `status` holds that is not written yet.
    unwritten: Mutex<Unwritten>,
    /// Held while a patch is on its way, so patches land in the order they were made.
    writing: tokio::sync::Mutex<()>,
    reconciling_marked: AtomicBool,
    /// Cancelled when the run's lease is lost: from then on nothing is written.
    lease_lost: CancellationToken,
    /// When the run should be run again although it settled (see `revisions`).
    pub(super) revisit: Mutex<Option<std::time::Duration>>,
}

impl StatusWriter {
    pub fn new(
        api: Api<ControlPlane>,
        control_plane: &ControlPlane,
        lease_lost: CancellationToken,
    ) -> Self {
        Self {
            api: Api::all(api.into_client()),
            lease_lost,
            name: control_plane.name_any(),
            uid: control_plane.uid().unwrap_or_default(),
            generation: control_plane.metadata.generation,
            status: Mutex::new(control_plane.status.clone().unwrap_or_default()),
            unwritten: Mutex::new(Unwritten::default()),
            writing: tokio::sync::Mutex::new(()),
            reconciling_marked: AtomicBool::new(false),
            revisit: Mutex::new(None),
        }
    }

    /// The uid of the ControlPlane whose status this writes: what its releases are labelled with.
    pub fn control_plane_uid(&self) -> &str {
        &self.uid
    }

    /// The name of the ControlPlane whose status this writes.
    pub fn control_plane(&self) -> &str {
        &self.name
    }

    pub(super) fn current(&self) -> MutexGuard<'_, ControlPlaneStatus> {
        self.status.lock().expect("status lock")
    }

    pub fn component(&self, name: &str) -> Option<ComponentStatus> {
        self.current().components.get(name).cloned()
    }

    pub fn is_available(&self, name: &str) -> bool {
        self.component(name)
            .is_some_and(|status| status.phase == ComponentPhase::Available)
    }

    /// Whether helm applied the component's current chart and values (its workloads may still
    /// be on their way).
    pub fn is_applied(&self, name: &str) -> bool {
        self.component(name)
            .is_some_and(|status| status.is_applied())
    }

    /// The component is being changed (`Installing`, `Upgrading`, `Uninstalling`), optionally
    /// waiting for something named in `message`. What was recorded of the last success stays.
    pub async fn progressing(
        &self,
        name: &str,
        phase: ComponentPhase,
        message: Option<String>,
    ) -> Result<(), StatusError> {
        let mut status = self
            .component(name)
            .unwrap_or_else(|| ComponentStatus::with_phase(phase));
        status.phase = phase;
        status.message = message;
        self.set_component(name, status, When::Now).await
    }

    /// helm is about to apply `wanted`'s chart and values: recorded first, so that a run
    /// interrupted before [`Self::applied`] is detected by the next one.
    pub async fn attempting(
        &self,
        wanted: &DesiredComponent<'_>,
        phase: ComponentPhase,
    ) -> Result<(), StatusError> {
        let mut status = self
            .component(wanted.name())
            .unwrap_or_else(|| ComponentStatus::with_phase(phase));
        status.phase = phase;
        status.message = None;
        status.attempt = Some(Attempt {
            chart_digest: wanted.chart_digest.clone(),
            values_digest: wanted.values_digest.clone(),
        });
        self.set_component(wanted.name(), status, When::Now).await
    }

    /// helm applied `wanted`'s chart and values as `revision`: these digests are now the record
    /// the next reconcile compares against. The phase stays `phase` until the workloads are
    /// ready ([`Self::available`]). Written with the next write: until then the attempt stands
    /// recorded, which only makes an interrupted run apply it again.
    pub async fn applied(
        &self,
        wanted: &DesiredComponent<'_>,
        phase: ComponentPhase,
        revision: Option<i64>,
    ) -> Result<(), StatusError> {
        let status = ComponentStatus {
            chart: Some(ChartRef {
                name: wanted.chart_metadata.name.clone(),
                version: wanted.chart_metadata.version.clone(),
            }),
            chart_digest: Some(wanted.chart_digest.clone()),
            values_digest: Some(wanted.values_digest.clone()),
            release: Some(ReleaseStatus {
                name: wanted.release.name.clone(),
                namespace: wanted.release.namespace.clone(),
                revision,
            }),
            ..ComponentStatus::with_phase(phase)
        };
        self.set_component(wanted.name(), status, When::Later).await
    }

    /// Up to date and no longer waiting: Available with its record unchanged. Written with the
    /// next write.
    pub async fn available(&self, name: &str) -> Result<(), StatusError> {
        match self.component(name) {
            Some(mut status) if status.phase != ComponentPhase::Available => {
                status.phase = ComponentPhase::Available;
                status.message = None;
                self.set_component(name, status, When::Later).await
            }
            _ => Ok(()),
        }
    }

    /// What an Available component's step left as it found it (CRDs of someone else's newer
    /// bundle), as its message; `None` clears an earlier one. Every step says it again, so the
    /// note lasts exactly as long as the cause. Written with the next write, as a result.
    pub async fn note(&self, name: &str, note: Option<String>) -> Result<(), StatusError> {
        match self.component(name) {
            Some(mut status)
                if status.phase == ComponentPhase::Available && status.message != note =>
            {
                status.message = note;
                self.set_component(name, status, When::Later).await
            }
            _ => Ok(()),
        }
    }

    /// The step failed with `message`. The digests stay those of the last success, so the next
    /// reconcile tries again.
    pub async fn failed(&self, name: &str, message: String) -> Result<(), StatusError> {
        self.progressing(name, ComponentPhase::Failed, Some(message))
            .await
    }

    /// Uninstalled: nothing of the component is left, nor recorded.
    pub async fn removed(&self, name: &str) -> Result<(), StatusError> {
        self.set_component(
            name,
            ComponentStatus::with_phase(ComponentPhase::Removed),
            When::Now,
        )
        .await
    }

    /// Records a component's status, written `when` asked; its transition time moves only
    /// when the phase does.
    async fn set_component(
        &self,
        name: &str,
        mut status: ComponentStatus,
        when: When,
    ) -> Result<(), StatusError> {
        {
            let mut current = self.current();
            let previous = current.components.get(name);
            status.last_transition_time = match previous {
                Some(previous) if previous.phase == status.phase => {
                    previous.last_transition_time.clone()
                }
                _ => Some(now()),
            };
            if previous != Some(&status) {
                current.components.insert(name.to_owned(), status);
                self.unwritten().components.insert(name.to_owned());
            }
        }
        match when {
            When::Now => self.flush().await,
            When::Later => Ok(()),
        }
    }

    fn unwritten(&self) -> MutexGuard<'_, Unwritten> {
        self.unwritten.lock().expect("unwritten lock")
    }

    /// Writes what is recorded and not written yet, if anything.
    pub async fn flush(&self) -> Result<(), StatusError> {
        self.flush_with(serde_json::Map::new()).await
    }

    /// Writes what is recorded and not written yet, with `fields` of the status, in one patch.
    async fn flush_with(
        &self,
        mut fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), StatusError> {
        let _writing = self.writing.lock().await;
        let taken = {
            let current = self.current();
            let taken = std::mem::take(&mut *self.unwritten());
            if !taken.components.is_empty() {
                let components: serde_json::Map<_, _> = taken
                    .components
                    .iter()
                    .map(|name| (name.clone(), json!(current.components.get(name))))
                    .collect();
                fields.insert("components".to_owned(), components.into());
            }
            if taken.conditions {
                fields
                    .entry("conditions")
                    .or_insert_with(|| json!(current.conditions));
            }
            taken
        };
        if fields.is_empty() {
            return Ok(());
        }
        let written = self.write(json!({ "status": fields })).await;
        if written.is_err() {
            // Written with the next write, or at the run's end.
            let mut unwritten = self.unwritten();
            unwritten.components.extend(taken.components);
            unwritten.conditions |= taken.conditions;
        }
        written
    }

    /// kstatus: `Reconciling` while the engine changes something, `Ready` false meanwhile.
    /// Recorded once per reconcile, before the first change, and written with the change's
    /// first write (its attempt).
    pub fn mark_reconciling(&self, message: &str) {
        if self.reconciling_marked.swap(true, Ordering::SeqCst) {
            return;
        }
        let time = now();
        {
            let mut current = self.current();
            let conditions = &mut current.conditions;
            for (type_, status, reason) in [
                (condition::RECONCILING, true, "Progressing"),
                (condition::READY, false, "Reconciling"),
            ] {
                set_condition(
                    conditions,
                    type_,
                    status,
                    reason,
                    message,
                    self.generation,
                    &time,
                );
            }
            remove_condition(conditions, condition::STALLED);
        }
        self.unwritten().conditions = true;
    }

    /// The spec cannot be applied: Ready=False and Stalled=True with reason InvalidSpec, for
    /// this generation. Nothing else changes.
    pub async fn rejected(&self, message: &str) -> Result<(), StatusError> {
        let time = now();
        let mut next = self.current().clone();
        set_stalled(
            &mut next.conditions,
            "InvalidSpec",
            message,
            self.generation,
            &time,
        );
        next.observed_generation = self.generation;
        self.patch(json!({"status": {
            "conditions": next.conditions,
            "observedGeneration": next.observed_generation,
        }}))
        .await?;
        *self.current() = next;
        Ok(())
    }

    /// Sets the final conditions, writes them with whatever is not written yet, and returns
    /// whether the ControlPlane is Ready.
    pub async fn finish(
        &self,
        desired: &[DesiredComponent<'_>],
        end: RunEnd,
    ) -> Result<bool, StatusError> {
        let status = self.current().clone();
        let settled = settle(&status, desired, end, self.generation, &now());
        let mut fields = serde_json::Map::new();
        if settled.status != status {
            fields = serde_json::Map::from_iter([
                ("conditions".to_owned(), json!(settled.status.conditions)),
                (
                    "observedGeneration".to_owned(),
                    json!(settled.status.observed_generation),
                ),
                (
                    "reconciledComponents".to_owned(),
                    json!(settled.status.reconciled_components),
                ),
            ]);
            *self.current() = settled.status;
        }
        self.flush_with(fields).await?;
        Ok(settled.ready)
    }

    /// Writes `patch` after any patch under way, unless the lease was lost.
    pub(super) async fn patch(&self, patch: serde_json::Value) -> Result<(), StatusError> {
        let _writing = self.writing.lock().await;
        self.write(patch).await
    }

    /// Writes `patch`, unless the lease was lost: another holder may be writing the status by
    /// then. A write under way when the lease is lost is abandoned.
    async fn write(&self, patch: serde_json::Value) -> Result<(), StatusError> {
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        let write = self.api.patch_status(&self.name, &params, &patch);
        tokio::select! {
            biased;
            () = self.lease_lost.cancelled() => {
                tracing::debug!(control_plane = %self.name, "lease lost: status not written");
                Ok(())
            }
            written = write => written.map(drop).map_err(|source| StatusError {
                name: self.name.clone(),
                source,
            }),
        }
    }
}

/// When a component's recorded status is written.
#[derive(Clone, Copy)]
enum When {
    /// At once, with anything else not written yet: the engine is about to act on it.
    Now,
    /// With the next write, or at the run's end: it records a result.
    Later,
}

/// What the writer's copy of the status holds that is not written yet.
#[derive(Default)]
struct Unwritten {
    components: BTreeSet<String>,
    conditions: bool,
}

/// The status a run ends with, and whether it says Ready.
#[derive(Debug)]
struct Settled {
    status: ControlPlaneStatus,
    ready: bool,
}

/// The kstatus conditions a run ends with, from each component's recorded phase: Ready when
/// every component is in its desired state (enabled ones Available, disabled ones gone) and
/// the run settled; Stalled when the wait gave up; Reconciling while components are on their
/// way and nothing failed (the operator comes back, or `smm status --watch` follows them).
fn settle(
    status: &ControlPlaneStatus,
    desired: &[DesiredComponent<'_>],
    end: RunEnd,
    generation: Option<i64>,
    time: &Time,
) -> Settled {
    let phase =
        |wanted: &DesiredComponent<'_>| status.components.get(wanted.name()).map(|s| s.phase);
    let in_desired_state = |wanted: &DesiredComponent<'_>| match phase(wanted) {
        Some(ComponentPhase::Available) => wanted.enabled,
        None | Some(ComponentPhase::Removed) => !wanted.enabled,
        Some(_) => false,
    };
    let settled = desired.iter().filter(|d| in_desired_state(d)).count();
    let failed: Vec<String> = desired
        .iter()
        .filter_map(|d| {
            let status = status.components.get(d.name())?;
            (status.phase == ComponentPhase::Failed).then(|| {
                let message = status.message.as_deref().unwrap_or("failed");
                format!("{}: {message}", d.name())
            })
        })
        .collect();
    // With what each waits for, in the words of its status message, so the conditions say
    // why as well as who.
    let unsettled: Vec<String> = desired
        .iter()
        .filter(|d| !in_desired_state(d))
        .map(|d| {
            let message = status
                .components
                .get(d.name())
                .and_then(|s| s.message.as_deref());
            match message {
                Some(why) => format!("{} ({why})", d.name()),
                None => d.name().to_owned(),
            }
        })
        .collect();

    let mut next = status.clone();
    let conditions = &mut next.conditions;
    let mut set = |type_, reason, message: &str, holds: bool| {
        set_condition(conditions, type_, holds, reason, message, generation, time);
    };
    if end == RunEnd::TimedOut {
        let message = format!("gave up waiting for: {}", unsettled.join(", "));
        set(condition::STALLED, "WaitTimedOut", &message, true);
    }
    let progressing = end != RunEnd::TimedOut && failed.is_empty() && !unsettled.is_empty();
    if progressing {
        let message = format!("waiting for: {}", unsettled.join(", "));
        set(condition::RECONCILING, "Progressing", &message, true);
    }
    let ready = failed.is_empty() && unsettled.is_empty() && end == RunEnd::Settled;
    let (reason, message) = if ready {
        (
            "Reconciled",
            format!("{settled} components in their desired state"),
        )
    } else if !failed.is_empty() {
        ("ComponentFailed", failed.join("; "))
    } else {
        let waiting = unsettled.join(", ");
        (
            "ComponentsNotReady",
            format!("not in their desired state: {waiting}"),
        )
    };
    set(condition::READY, reason, &message, ready);
    if end != RunEnd::TimedOut {
        remove_condition(conditions, condition::STALLED);
    }
    if !progressing {
        remove_condition(conditions, condition::RECONCILING);
    }
    next.observed_generation = generation;
    next.reconciled_components = Some(format!("{settled}/{}", desired.len()));
    Settled {
        status: next,
        ready,
    }
}

pub(super) fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ControlPlaneSpec;
    use crate::desired::resolve::resolve;
    use crate::mesh::catalog::Catalog;

    fn condition_of<'a>(status: &'a ControlPlaneStatus, type_: &str) -> Option<(&'a str, &'a str)> {
        let found = status.conditions.iter().find(|c| c.type_ == type_)?;
        Some((found.status.as_str(), found.reason.as_str()))
    }

    #[test]
    fn a_run_ends_ready_stalled_or_reconciling_as_its_components_stand() {
        let catalog = Catalog::builtin().unwrap();
        let spec = ControlPlaneSpec::default().with_enabled("tracing", false);
        let desired = resolve(&catalog, &spec).unwrap();
        let mut status = ControlPlaneStatus::default();
        for wanted in desired.iter().filter(|d| d.enabled) {
            let available = ComponentStatus::with_phase(ComponentPhase::Available);
            status
                .components
                .insert(wanted.name().to_owned(), available);
        }
        let time = now();

        let ready = settle(&status, &desired, RunEnd::Settled, Some(3), &time);
        assert!(ready.ready);
        assert_eq!(
            condition_of(&ready.status, condition::READY),
            Some(("True", "Reconciled"))
        );
        assert_eq!(condition_of(&ready.status, condition::RECONCILING), None);
        assert_eq!(ready.status.observed_generation, Some(3));
        assert_eq!(ready.status.reconciled_components.as_deref(), Some("11/11"));

        let istiod = status.components.get_mut("istiod").unwrap();
        istiod.phase = ComponentPhase::Installing;
        istiod.message = Some("Deployment istio-system/istiod: 0/1 available".to_owned());
        let waiting = settle(&status, &desired, RunEnd::Waiting, Some(3), &time);
        assert!(!waiting.ready);
        assert_eq!(
            condition_of(&waiting.status, condition::RECONCILING),
            Some(("True", "Progressing"))
        );
        let reconciling = waiting
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::RECONCILING);
        assert_eq!(
            reconciling.unwrap().message,
            "waiting for: istiod (Deployment istio-system/istiod: 0/1 available)"
        );
        assert_eq!(
            condition_of(&waiting.status, condition::READY),
            Some(("False", "ComponentsNotReady"))
        );

        let timed_out = settle(&status, &desired, RunEnd::TimedOut, Some(3), &time);
        assert_eq!(
            condition_of(&timed_out.status, condition::STALLED),
            Some(("True", "WaitTimedOut"))
        );
        assert_eq!(
            condition_of(&timed_out.status, condition::RECONCILING),
            None
        );

        let failed = ComponentStatus {
            message: Some("helm said no".to_owned()),
            ..ComponentStatus::with_phase(ComponentPhase::Failed)
        };
        let mut retried = timed_out.status;
        retried.components.insert("istiod".to_owned(), failed);
        let failing = settle(&retried, &desired, RunEnd::Settled, Some(4), &time);
        let ready = failing
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::READY);
        assert_eq!(ready.unwrap().message, "istiod: helm said no");
        assert_eq!(condition_of(&failing.status, condition::STALLED), None);
        assert_eq!(condition_of(&failing.status, condition::RECONCILING), None);
    }
}
