//! Engine progress as Kubernetes Events on the ControlPlane: what the operator did, and what
//! failed, visible with `kubectl describe controlplane`.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::engine::decide::Operation;
use crate::engine::report::{Outcome, Progress};

/// Publishes a Kubernetes Event on the ControlPlane for every action and failure.
pub(super) struct EventProgress {
    recorder: Recorder,
    reference: ObjectReference,
    actions: Mutex<HashMap<String, Operation>>,
}

impl EventProgress {
    pub(super) fn new(recorder: Recorder, reference: ObjectReference) -> Self {
        Self {
            recorder,
            reference,
            actions: Mutex::default(),
        }
    }

    fn publish(&self, type_: EventType, reason: &str, note: String) {
        let recorder = self.recorder.clone();
        let reference = self.reference.clone();
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(err) = recorder.publish(&event, &reference).await {
                tracing::warn!(%err, "could not publish an event");
            }
        });
    }
}

impl EventProgress {
    /// The ControlPlane's spec was refused: a Warning Event that says why.
    pub(super) fn rejected(&self, message: &str) {
        self.publish(EventType::Warning, "InvalidSpec", message.to_owned());
    }
}

impl Progress for EventProgress {
    fn started(&self, component: &str, action: Operation, reason: &str) {
        self.actions
            .lock()
            .expect("actions lock")
            .insert(component.to_owned(), action);
        tracing::info!(component, ?action, reason, "reconciling");
    }

    fn changed_outside(&self, component: &str, what: &str) {
        self.publish(
            EventType::Warning,
            "ChangedOutsideSmm",
            format!("{component}: {what}; putting back what the ControlPlane asks for"),
        );
    }

    fn waiting(&self, component: &str, message: &str) {
        tracing::info!(component, message, "waiting for workloads");
        // The same words as the component's status message, so `kubectl describe` says why
        // (the recorder counts a repeat rather than adding an Event each recheck).
        self.publish(
            EventType::Normal,
            "WaitingForWorkloads",
            format!("{component}: {message}"),
        );
    }

    fn finished(&self, component: &str, outcome: &Outcome) {
        if matches!(outcome, Outcome::Waiting(_)) {
            // The action completes once the workloads are ready, in a later reconcile.
            return;
        }
        let action = self.actions.lock().expect("actions lock").remove(component);
        match (outcome, action) {
            (Outcome::Done, Some(action)) => {
                let Some(reason) = action.done() else {
                    return;
                };
                self.publish(EventType::Normal, reason, format!("{component}: {reason}"));
            }
            (Outcome::Failed(why), _) => {
                self.publish(EventType::Warning, "Failed", format!("{component}: {why}"));
            }
            _ => {}
        }
    }
}
