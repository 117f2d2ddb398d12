//! Writes the ControlPlane's status as the engine goes: each component's entry as soon as it
//! changes (so an interrupted run loses at most one component's progress), and kstatus
//! conditions at the start and end of a reconcile. Nothing is written when nothing changed.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::desired::DesiredComponent;
use super::{EngineError, now};
use crate::api::{
    ComponentPhase, ComponentStatus, ControlPlane, ControlPlaneStatus, condition, remove_condition,
    set_condition,
};

pub(super) struct StatusWriter {
    api: Api<ControlPlane>,
    name: String,
    generation: Option<i64>,
    status: ControlPlaneStatus,
    reconciling_marked: bool,
}

impl StatusWriter {
    pub fn new(api: Api<ControlPlane>, control_plane: &ControlPlane) -> Self {
        Self {
            api,
            name: control_plane.name_any(),
            generation: control_plane.metadata.generation,
            status: control_plane.status.clone().unwrap_or_default(),
            reconciling_marked: false,
        }
    }

    pub fn component(&self, name: &str) -> Option<&ComponentStatus> {
        self.status.components.get(name)
    }

    pub fn is_available(&self, name: &str) -> bool {
        self.component(name)
            .is_some_and(|status| status.phase == ComponentPhase::Available)
    }

    /// Records a component's status; its transition time moves only when the phase does.
    pub async fn set_component(
        &mut self,
        name: &str,
        mut status: ComponentStatus,
    ) -> Result<(), EngineError> {
        let previous = self.status.components.get(name);
        status.last_transition_time = match previous {
            Some(previous) if previous.phase == status.phase => {
                previous.last_transition_time.clone()
            }
            _ => Some(now()),
        };
        if previous == Some(&status) {
            return Ok(());
        }
        self.patch(json!({"status": {"components": {name: &status}}}))
            .await?;
        self.status.components.insert(name.to_owned(), status);
        Ok(())
    }

    /// kstatus: `Reconciling` while the engine changes something, `Ready` false meanwhile.
    /// Written once per reconcile, before the first change.
    pub async fn mark_reconciling(&mut self, message: &str) -> Result<(), EngineError> {
        if self.reconciling_marked {
            return Ok(());
        }
        self.reconciling_marked = true;
        let time = now();
        let conditions = &mut self.status.conditions;
        set_condition(
            conditions,
            condition::RECONCILING,
            true,
            "Progressing",
            message,
            self.generation,
            &time,
        );
        set_condition(
            conditions,
            condition::READY,
            false,
            "Reconciling",
            message,
            self.generation,
            &time,
        );
        remove_condition(conditions, condition::STALLED);
        let conditions = self.status.conditions.clone();
        self.patch(json!({"status": {"conditions": conditions}}))
            .await
    }

    /// Sets the final conditions and returns whether the ControlPlane is Ready.
    pub async fn finish(
        &mut self,
        desired: &[DesiredComponent<'_>],
        still_waiting: bool,
    ) -> Result<bool, EngineError> {
        let in_desired_state = |wanted: &DesiredComponent<'_>| {
            let phase = self.component(wanted.name()).map(|s| s.phase);
            if wanted.enabled {
                phase == Some(ComponentPhase::Available)
            } else {
                matches!(phase, None | Some(ComponentPhase::Removed))
            }
        };
        let settled = desired.iter().filter(|d| in_desired_state(d)).count();
        let failed: Vec<String> = desired
            .iter()
            .filter_map(|d| {
                let status = self.component(d.name())?;
                (status.phase == ComponentPhase::Failed).then(|| {
                    format!(
                        "{}: {}",
                        d.name(),
                        status.message.as_deref().unwrap_or("failed")
                    )
                })
            })
            .collect();
        let unsettled: Vec<&str> = desired
            .iter()
            .filter(|d| !in_desired_state(d))
            .map(DesiredComponent::name)
            .collect();

        let mut next = self.status.clone();
        let time = now();
        let conditions = &mut next.conditions;
        let generation = self.generation;
        remove_condition(conditions, condition::RECONCILING);
        if still_waiting {
            let message = format!("gave up waiting for: {}", unsettled.join(", "));
            set_condition(
                conditions,
                condition::STALLED,
                true,
                "RoundLimitReached",
                &message,
                generation,
                &time,
            );
        } else {
            remove_condition(conditions, condition::STALLED);
        }
        let ready = failed.is_empty() && unsettled.is_empty() && !still_waiting;
        let (reason, message) = if ready {
            (
                "Reconciled",
                format!("{settled} components in their desired state"),
            )
        } else if !failed.is_empty() {
            ("ComponentFailed", failed.join("; "))
        } else {
            (
                "ComponentsNotReady",
                format!("not in their desired state: {}", unsettled.join(", ")),
            )
        };
        set_condition(
            conditions,
            condition::READY,
            ready,
            reason,
            &message,
            generation,
            &time,
        );
        next.observed_generation = generation;
        next.reconciled_components = Some(format!("{settled}/{}", desired.len()));

        if next != self.status {
            self.patch(json!({"status": {
                "conditions": next.conditions,
                "observedGeneration": next.observed_generation,
                "reconciledComponents": next.reconciled_components,
            }}))
            .await?;
            self.status = next;
        }
        Ok(ready)
    }

    async fn patch(&self, patch: serde_json::Value) -> Result<(), EngineError> {
        self.api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|source| EngineError::Status {
                name: self.name.clone(),
                source,
            })
    }
}
