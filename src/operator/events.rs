//! Engine progress as Kubernetes Events on the ControlPlane: what the operator did, and what
//! failed, visible with `kubectl describe controlplane`.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::engine::decide::Operation;
use crate::engine::report::{Outcome, Progress};

/// Publishes a Kubernetes Event on the ControlPlane for every action and failure, and for what
/// a component waits for.
pub(super) struct EventProgress {
    client: Client,
    reporter: Reporter,
    reference: ObjectReference,
    actions: Mutex<HashMap<String, Operation>>,
    /// The note last published for each reason and component, with the recorder that
    /// published it. kube's recorder keys an Event by its reason, not its note, so another
    /// note of the same reason would only count as a repeat of the first and its words be lost
    /// (`tracing: Installed` shown as `base: Installed`, a new reason to wait as the old one):
    /// a different note gets a recorder of its own, hence an Event of its own, and the same
    /// note again is counted on its Event. One entry per reason and component.
    recorders: Mutex<HashMap<(&'static str, String), LastNote>>,
}

/// The note last published for a reason and component, and the recorder that counts its
/// repeats.
type LastNote = (String, Recorder);

impl EventProgress {
    pub(super) fn new(client: Client, reporter: Reporter, reference: ObjectReference) -> Self {
        Self {
            client,
            reporter,
            reference,
            actions: Mutex::default(),
            recorders: Mutex::default(),
        }
    }

    /// Publishes `note` with `reason`; `component` is whom it is about (empty: the whole
    /// ControlPlane).
    fn publish(&self, type_: EventType, reason: &'static str, component: &str, note: String) {
        let recorder = {
            let mut recorders = self.recorders.lock().expect("recorders lock");
            let slot = recorders
                .entry((reason, component.to_owned()))
                .or_insert_with(|| (String::new(), self.recorder()));
            if slot.0 != note {
                *slot = (note.clone(), self.recorder());
            }
            slot.1.clone()
        };
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

    fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }

    /// The ControlPlane's spec was refused: a Warning Event that says why.
    pub(super) fn rejected(&self, message: &str) {
        self.publish(EventType::Warning, "InvalidSpec", "", message.to_owned());
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
            component,
            format!("{component}: {what}; putting back what the ControlPlane asks for"),
        );
    }

    fn waiting(&self, component: &str, message: &str) {
        tracing::info!(component, message, "waiting for workloads");
        // The same words as the component's status message, so `kubectl describe` says why
        // (a repeat each recheck is counted on one Event).
        self.publish(
            EventType::Normal,
            "WaitingForWorkloads",
            component,
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
                self.publish(
                    EventType::Normal,
                    reason,
                    component,
                    format!("{component}: {reason}"),
                );
            }
            (Outcome::Failed(why), _) => {
                self.publish(
                    EventType::Warning,
                    "Failed",
                    component,
                    format!("{component}: {why}"),
                );
            }
            _ => {}
        }
    }
}
