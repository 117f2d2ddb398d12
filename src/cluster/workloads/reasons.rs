//! Why a workload is not ready, read from its pods and, when pods are missing, from its
//! controller's Events: a pod the scheduler cannot place, a container that crash-loops, an image
//! that cannot be pulled, a container running but never ready, pods their controller could not
//! create. The reads are bounded: one pod list per workload that is not ready, and an Event list
//! only for a StatefulSet or DaemonSet short of pods (a Deployment's own condition carries its
//! ReplicaSet's refusal).

use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::judge::{Judgement, refused_creations};
use super::{Readiness, WorkloadKind, WorkloadRef};

/// `judged`'s readiness with what its pods (and, for a StatefulSet or DaemonSet short of pods,
/// its Events) say of why it is not ready.
pub(super) async fn explain(
    client: &Client,
    workload: &WorkloadRef,
    judged: Judgement,
) -> Result<Readiness, kube::Error> {
    let mut reasons: Vec<String> = judged.refused.into_iter().collect();
    let Some(selector) = judged.selector.as_ref().and_then(selector_string) else {
        return Ok(judged.readiness.with_reasons(&reasons));
    };
    let pods = Api::<Pod>::namespaced(client.clone(), &workload.namespace)
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    reasons.extend(live.iter().find_map(|pod| pod_reason(pod)));
    let controller_creates = matches!(
        workload.kind,
        WorkloadKind::StatefulSet | WorkloadKind::DaemonSet
    );
    let short = i32::try_from(live.len()).unwrap_or(i32::MAX) < judged.desired;
    if reasons.is_empty() && controller_creates && short {
        reasons.extend(refused_event(client, workload).await?);
    }
    Ok(judged.readiness.with_reasons(&reasons))
}

/// A label selector as the API's query syntax; none when it would select everything (no
/// selector at all is no reason to list every pod of the namespace).
pub(super) fn selector_string(selector: &LabelSelector) -> Option<String> {
    let labels = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"));
    let expressions = selector.match_expressions.iter().flatten().map(|e| {
        let values = e.values.clone().unwrap_or_default().join(",");
        match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        }
    });
    let parts: Vec<String> = labels.chain(expressions).collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// What keeps one pod from being ready, when the pod says: the scheduler's word, then its
/// containers' (init containers first, as they run first).
pub(crate) fn pod_reason(pod: &Pod) -> Option<String> {
    let name = pod.name_any();
    let status = pod.status.as_ref()?;
    if let Some(unscheduled) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        return Some(format!(
            "pod {name} cannot be scheduled: {}",
            unscheduled.message.as_deref().unwrap_or("no reason given")
        ));
    }
    let running = status.phase.as_deref() == Some("Running");
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find_map(|container| container_reason(container, running))
        .map(|why| format!("pod {name}: container {why}"))
}

/// What keeps one container from being ready, starting with its name; none when it is ready or
/// simply still starting.
fn container_reason(container: &ContainerStatus, pod_running: bool) -> Option<String> {
    let name = &container.name;
    let state = container.state.as_ref()?;
    if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.as_deref().unwrap_or_default();
        let message = waiting.message.as_deref().unwrap_or("no message");
        return match reason {
            // Starting, not stuck.
            "" | "ContainerCreating" | "PodInitializing" => None,
            "CrashLoopBackOff" => Some(format!(
                "{name} is in CrashLoopBackOff, restarted {} times, last terminated: {}",
                container.restart_count,
                last_termination(container)
            )),
            "ImagePullBackOff" | "ErrImagePull" => Some(format!(
                "{name} cannot pull image {}: {reason}: {message}",
                container.image
            )),
            _ => Some(format!("{name} is waiting: {reason}: {message}")),
        };
    }
    (pod_running && state.running.is_some() && !container.ready)
        .then(|| format!("{name} is running but not ready"))
}

/// How the container last ended, e.g. `Error (exit code 1)`.
fn last_termination(container: &ContainerStatus) -> String {
    match container
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
    {
        Some(ended) => format!(
            "{} (exit code {})",
            ended.reason.as_deref().unwrap_or("no reason"),
            ended.exit_code
        ),
        None => "not recorded".to_owned(),
    }
}

/// The latest `FailedCreate` Event on the workload itself: how a StatefulSet's or DaemonSet's
/// controller reports pods the API server refused.
async fn refused_event(
    client: &Client,
    workload: &WorkloadRef,
) -> Result<Option<String>, kube::Error> {
    let fields = format!(
        "involvedObject.kind={:?},involvedObject.name={},reason=FailedCreate",
        workload.kind, workload.name
    );
    let events = Api::<Event>::namespaced(client.clone(), &workload.namespace)
        .list(&ListParams::default().fields(&fields))
        .await?
        .items;
    Ok(latest_message(&events).map(|message| refused_creations(Some(message))))
}

/// The message of the Event seen last.
fn latest_message(events: &[Event]) -> Option<&str> {
    events
        .iter()
        .max_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .or(e.first_timestamp.as_ref())
                .map(|t| t.0)
        })
        .and_then(|e| e.message.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn pod(phase: &str, conditions: Vec<PodCondition>, containers: Vec<ContainerStatus>) -> Pod {
        let mut pod = Pod {
            status: Some(PodStatus {
                phase: Some(phase.to_owned()),
                conditions: Some(conditions),
                container_statuses: Some(containers),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        pod.metadata.name = Some("jaeger-1".to_owned());
        pod
    }

    fn waiting(reason: &str, message: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.to_owned()),
                message: Some(message.to_owned()),
            }),
            ..ContainerState::default()
        }
    }

    fn container(state: ContainerState, ready: bool) -> ContainerStatus {
        ContainerStatus {
            name: "jaeger".to_owned(),
            image: "jaegertracing/all-in-one:1.0".to_owned(),
            ready,
            state: Some(state),
            ..ContainerStatus::default()
        }
    }

    #[test]
    fn a_crash_loop_names_the_container_its_restarts_and_last_exit() {
        let mut crashing = container(waiting("CrashLoopBackOff", "back-off 10s"), false);
        crashing.restart_count = 3;
        crashing.last_state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                reason: Some("Error".to_owned()),
                exit_code: 1,
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        });
        assert_eq!(
            pod_reason(&pod("Running", vec![], vec![crashing])).as_deref(),
            Some(
                "pod jaeger-1: container jaeger is in CrashLoopBackOff, restarted 3 times, \
                 last terminated: Error (exit code 1)"
            )
        );
    }

    #[test]
    fn an_image_pull_failure_names_the_image_and_the_message() {
        let pulling = container(waiting("ImagePullBackOff", "Back-off pulling image"), false);
        assert_eq!(
            pod_reason(&pod("Pending", vec![], vec![pulling])).as_deref(),
            Some(
                "pod jaeger-1: container jaeger cannot pull image jaegertracing/all-in-one:1.0: \
                 ImagePullBackOff: Back-off pulling image"
            )
        );
    }

    #[test]
    fn a_running_container_not_ready_is_named_and_a_starting_one_is_not() {
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ContainerState::default()
        };
        assert_eq!(
            pod_reason(&pod(
                "Running",
                vec![],
                vec![container(running.clone(), false)]
            ))
            .as_deref(),
            Some("pod jaeger-1: container jaeger is running but not ready")
        );
        assert_eq!(
            pod_reason(&pod("Running", vec![], vec![container(running, true)])),
            None
        );
        let creating = container(waiting("ContainerCreating", ""), false);
        assert_eq!(pod_reason(&pod("Pending", vec![], vec![creating])), None);
    }

    #[test]
    fn an_unschedulable_pod_gives_the_schedulers_word() {
        let unscheduled = PodCondition {
            type_: "PodScheduled".to_owned(),
            status: "False".to_owned(),
            message: Some("0/2 nodes are available".to_owned()),
            ..PodCondition::default()
        };
        assert_eq!(
            pod_reason(&pod("Pending", vec![unscheduled], vec![])).as_deref(),
            Some("pod jaeger-1 cannot be scheduled: 0/2 nodes are available")
        );
    }

    /// A StatefulSet's controller reports each refused creation as an Event: the latest says
    /// why now.
    #[test]
    fn the_latest_refusal_is_the_one_told() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let event = |at: i64, message: &str| Event {
            last_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::from_second(at).unwrap())),
            message: Some(message.to_owned()),
            ..Event::default()
        };
        let events = [
            event(
                20,
                "create Pod web-0 in StatefulSet web failed error: quota",
            ),
            event(
                10,
                "create Pod web-0 in StatefulSet web failed error: webhook",
            ),
        ];
        assert_eq!(
            latest_message(&events),
            Some("create Pod web-0 in StatefulSet web failed error: quota")
        );
        assert_eq!(latest_message(&[]), None);
    }

    #[test]
    fn selectors_become_the_query_syntax_and_an_empty_one_selects_nothing() {
        let selector = LabelSelector {
            match_labels: Some([("app".to_owned(), "jaeger".to_owned())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".to_owned(),
                    operator: "In".to_owned(),
                    values: Some(vec!["a".to_owned(), "b".to_owned()]),
                },
                LabelSelectorRequirement {
                    key: "canary".to_owned(),
                    operator: "DoesNotExist".to_owned(),
                    values: None,
                },
            ]),
        };
        assert_eq!(
            selector_string(&selector).as_deref(),
            Some("app=jaeger,tier in (a,b),!canary")
        );
        assert_eq!(selector_string(&LabelSelector::default()), None);
    }
}
