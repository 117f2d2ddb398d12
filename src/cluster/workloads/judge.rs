//! Judging one workload object by kstatus' rules, from the object alone: its counts, whether it
//! is ready, and what the object itself says of why not (a Deployment's progress deadline, pod
//! creations its ReplicaSet reported refused). What its pods say is added by `reasons`.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, DeploymentCondition, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::Readiness;

/// What judging one object gives.
#[derive(Debug)]
pub(super) struct Judgement {
    pub ready: i32,
    pub desired: i32,
    pub readiness: Readiness,
    /// Its pods, where a reason for not being ready is looked for.
    pub selector: Option<LabelSelector>,
    /// Pod creations refused, as the object's own conditions report them (a Deployment's
    /// `ReplicaFailure`, copied from its newest ReplicaSet).
    pub refused: Option<String>,
}

/// A workload that does not exist: helm just created it, or someone deleted it and drift repair
/// will put it back.
pub(super) fn judge_opt<K>(object: Option<K>, judge: fn(&K) -> Judgement) -> Judgement {
    match object {
        Some(object) => judge(&object),
        None => Judgement {
            ready: 0,
            desired: 1,
            readiness: Readiness::Progressing("not created yet".to_owned()),
            selector: None,
            refused: None,
        },
    }
}

/// The controller has not caught up with the latest spec yet.
fn stale(generation: Option<i64>, observed: Option<i64>) -> bool {
    observed.unwrap_or(0) < generation.unwrap_or(0)
}

/// Replica counts as a workload's status reports them.
struct Replicas {
    desired: i32,
    /// All replicas, old ones included.
    current: i32,
    updated: i32,
    available: i32,
}

fn replicas_judgement(stale: bool, replicas: Replicas, selector: LabelSelector) -> Judgement {
    let Replicas {
        desired,
        current,
        updated,
        available,
    } = replicas;
    let readiness = if stale {
        Readiness::Progressing("its controller has not seen the latest change".to_owned())
    } else if updated < desired {
        Readiness::Progressing(format!("{updated}/{desired} updated"))
    } else if current > updated {
        // Old replicas still serve (and count as available) while new ones are not ready.
        Readiness::Progressing(format!("{} old replicas still running", current - updated))
    } else if available < desired {
        Readiness::Progressing(format!("{available}/{desired} available"))
    } else {
        Readiness::Ready
    };
    Judgement {
        ready: available.min(desired),
        desired,
        readiness,
        selector: Some(selector),
        refused: None,
    }
}

pub(super) fn deployment(object: &Deployment) -> Judgement {
    let spec = object.spec.clone().unwrap_or_default();
    let status = object.status.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1);
    let replicas = Replicas {
        desired,
        current: status.replicas.unwrap_or(0),
        updated: status.updated_replicas.unwrap_or(0),
        available: status.available_replicas.unwrap_or(0),
    };
    let stale = stale(object.metadata.generation, status.observed_generation);
    let mut judged = replicas_judgement(stale, replicas, spec.selector);
    if judged.readiness == Readiness::Ready || stale {
        // A condition of an earlier generation says nothing of the rollout under way.
        return judged;
    }
    let conditions = status.conditions.unwrap_or_default();
    let find = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
    judged.refused = find("ReplicaFailure")
        .filter(|c| c.status == "True")
        .map(|c| refused_creations(c.message.as_deref()));
    if let Some(deadline) = find("Progressing").filter(|c| past_deadline(c)) {
        let counts = judged.readiness.reason().unwrap_or_default();
        judged.readiness = Readiness::Failed(format!(
            "progress deadline exceeded ({}); {counts}",
            deadline.message.as_deref().unwrap_or("no message")
        ));
    }
    judged
}

/// The Deployment controller gave up on the rollout: kstatus counts that as failed, not as
/// progressing, since it will not go on without a change.
fn past_deadline(condition: &DeploymentCondition) -> bool {
    condition.status == "False" && condition.reason.as_deref() == Some("ProgressDeadlineExceeded")
}

/// The words for pods their controller could not create, with the API server's message (a
/// webhook that cannot be reached, a quota, a policy).
pub(super) fn refused_creations(message: Option<&str>) -> String {
    format!(
        "pods refused (FailedCreate): {}",
        message.unwrap_or("no message")
    )
}

pub(super) fn stateful_set(object: &StatefulSet) -> Judgement {
    let spec = object.spec.clone().unwrap_or_default();
    let status = object.status.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1);
    let replicas = Replicas {
        desired,
        current: status.replicas,
        updated: status.updated_replicas.unwrap_or(0),
        available: status.available_replicas.unwrap_or(0),
    };
    let stale = stale(object.metadata.generation, status.observed_generation);
    replicas_judgement(stale, replicas, spec.selector)
}

pub(super) fn daemon_set(object: &DaemonSet) -> Judgement {
    let spec = object.spec.clone().unwrap_or_default();
    let status = object.status.clone().unwrap_or_default();
    let replicas = Replicas {
        desired: status.desired_number_scheduled,
        current: status.current_number_scheduled,
        updated: status.updated_number_scheduled.unwrap_or(0),
        available: status.number_available.unwrap_or(0),
    };
    let stale = stale(object.metadata.generation, status.observed_generation);
    replicas_judgement(stale, replicas, spec.selector)
}

pub(super) fn job(object: &Job) -> Judgement {
    let spec = object.spec.clone().unwrap_or_default();
    let status = object.status.clone().unwrap_or_default();
    let desired = spec.completions.unwrap_or(1);
    let succeeded = status.succeeded.unwrap_or(0);
    let condition = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    let readiness = if condition("Complete").is_some() {
        Readiness::Ready
    } else if let Some(failed) = condition("Failed") {
        Readiness::Failed(format!(
            "failed: {}",
            failed.message.as_deref().unwrap_or("no reason given")
        ))
    } else {
        Readiness::Progressing(format!("{succeeded}/{desired} completed"))
    };
    Judgement {
        ready: succeeded,
        desired,
        readiness,
        selector: spec.selector,
        refused: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};

    fn deployment_with(generation: i64, status: DeploymentStatus) -> Deployment {
        let mut object = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                ..DeploymentSpec::default()
            }),
            status: Some(status),
            ..Deployment::default()
        };
        object.metadata.generation = Some(generation);
        object
    }

    fn ready_status() -> DeploymentStatus {
        DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(2),
            updated_replicas: Some(2),
            available_replicas: Some(2),
            ..DeploymentStatus::default()
        }
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> DeploymentCondition {
        DeploymentCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            ..DeploymentCondition::default()
        }
    }

    #[test]
    fn a_deployment_is_ready_when_current_updated_and_available() {
        let ready = ready_status();
        assert_eq!(
            deployment(&deployment_with(3, ready.clone())).readiness,
            Readiness::Ready
        );
        let stale = deployment(&deployment_with(4, ready.clone())).readiness;
        assert!(matches!(stale, Readiness::Progressing(_)), "{stale:?}");
        // A rollout stuck behind old replicas: as many updated and available as wanted, but
        // the available ones are old.
        let stuck = DeploymentStatus {
            replicas: Some(4),
            ..ready.clone()
        };
        assert_eq!(
            deployment(&deployment_with(3, stuck)).readiness,
            Readiness::Progressing("2 old replicas still running".to_owned())
        );
        let half = DeploymentStatus {
            available_replicas: Some(1),
            ..ready
        };
        let judged = deployment(&deployment_with(3, half));
        assert_eq!((judged.ready, judged.desired), (1, 2));
        assert_eq!(
            judged.readiness,
            Readiness::Progressing("1/2 available".to_owned())
        );
    }

    /// A rollout past its deadline fails; refused pod creations are named from the condition
    /// the Deployment copies from its ReplicaSet; neither is read from an earlier generation.
    #[test]
    fn a_deployment_names_its_deadline_and_refused_pods() {
        let refused = "Internal error occurred: failed calling webhook \
                       \"object.sidecar-injector.istio.io\": connection refused";
        let stuck = DeploymentStatus {
            updated_replicas: Some(0),
            conditions: Some(vec![
                condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    "ReplicaSet \"gw-1\" has timed out progressing.",
                ),
                condition("ReplicaFailure", "True", "FailedCreate", refused),
            ]),
            ..ready_status()
        };
        let judged = deployment(&deployment_with(3, stuck.clone()));
        assert_eq!(
            judged.readiness,
            Readiness::Failed(
                "progress deadline exceeded (ReplicaSet \"gw-1\" has timed out progressing.); \
                 0/2 updated"
                    .to_owned()
            )
        );
        assert_eq!(
            judged.refused.as_deref(),
            Some(format!("pods refused (FailedCreate): {refused}").as_str())
        );
        let stale = deployment(&deployment_with(4, stuck));
        assert!(matches!(stale.readiness, Readiness::Progressing(_)));
        assert_eq!(stale.refused, None);
    }

    #[test]
    fn a_job_is_ready_once_complete_and_failed_when_it_failed() {
        let with = |type_: &str| Job {
            spec: Some(JobSpec::default()),
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: type_.to_owned(),
                    status: "True".to_owned(),
                    message: Some("BackoffLimitExceeded".to_owned()),
                    ..JobCondition::default()
                }]),
                ..JobStatus::default()
            }),
            ..Job::default()
        };
        assert_eq!(job(&with("Complete")).readiness, Readiness::Ready);
        assert_eq!(
            job(&with("Failed")).readiness,
            Readiness::Failed("failed: BackoffLimitExceeded".to_owned())
        );
        assert_eq!(
            job(&Job::default()).readiness,
            Readiness::Progressing("0/1 completed".to_owned())
        );
    }
}
