//! Whether workloads are ready, by kstatus' rules (the rules Flux and `kubectl rollout status`
//! apply): a Deployment, StatefulSet or DaemonSet is ready when its controller has seen the
//! current generation and every replica is updated and available; a Job when it completed.
//! Services, PodDisruptionBudgets, autoscalers and the like never block. When a workload is not
//! ready, the message says why, down to a pod the scheduler could not place.

use std::fmt;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ListParams;
use kube::{Api, Client};

/// The kinds of object whose readiness a component waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
}

impl WorkloadKind {
    /// The kind for an `apiVersion`/`kind` pair, when it is a workload.
    pub fn of(api_version: &str, kind: &str) -> Option<Self> {
        match (api_version, kind) {
            ("apps/v1", "Deployment") => Some(Self::Deployment),
            ("apps/v1", "StatefulSet") => Some(Self::StatefulSet),
            ("apps/v1", "DaemonSet") => Some(Self::DaemonSet),
            ("batch/v1", "Job") => Some(Self::Job),
            _ => None,
        }
    }
}

/// One workload of a release.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Where a workload stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not ready yet, and why (`0/1 available`, a pod that cannot be scheduled, ...).
    Progressing(String),
    /// It cannot get ready without a change (a failed Job).
    Failed(String),
}

/// A workload's readiness and its ready/desired counts, as `smm status` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadState {
    pub workload: WorkloadRef,
    pub ready: i32,
    pub desired: i32,
    pub readiness: Readiness,
}

impl WorkloadState {
    /// `Deployment ns/name: why`, for messages.
    pub fn describe(&self) -> String {
        match &self.readiness {
            Readiness::Ready => format!("{}: ready", self.workload),
            Readiness::Progressing(why) | Readiness::Failed(why) => {
                format!("{}: {why}", self.workload)
            }
        }
    }
}

/// Ready and desired replicas summed over `states`, as `1/1`.
pub fn summary(states: &[WorkloadState]) -> String {
    let (ready, desired) = states
        .iter()
        .fold((0, 0), |(r, d), s| (r + s.ready, d + s.desired));
    format!("{ready}/{desired}")
}

/// Whether every workload is ready.
pub fn all_ready(states: &[WorkloadState]) -> bool {
    states.iter().all(|s| s.readiness == Readiness::Ready)
}

/// Reads each workload and judges it. A workload that does not exist is progressing (helm just
/// created it, or someone deleted it and drift repair will put it back).
pub async fn observe(
    client: &Client,
    workloads: &[WorkloadRef],
) -> Result<Vec<WorkloadState>, kube::Error> {
    let mut states = Vec::with_capacity(workloads.len());
    for workload in workloads {
        let (ready, desired, mut readiness, selector) = match workload.kind {
            WorkloadKind::Deployment => {
                judge_opt(get::<Deployment>(client, workload).await?, deployment)
            }
            WorkloadKind::StatefulSet => {
                judge_opt(get::<StatefulSet>(client, workload).await?, stateful_set)
            }
            WorkloadKind::DaemonSet => {
                judge_opt(get::<DaemonSet>(client, workload).await?, daemon_set)
            }
            WorkloadKind::Job => judge_opt(get::<Job>(client, workload).await?, job),
        };
        if let (Readiness::Progressing(why), Some(selector)) = (&readiness, selector)
            && let Some(stuck) = unschedulable_pod(client, &workload.namespace, &selector).await?
        {
            readiness = Readiness::Progressing(format!("{why}; {stuck}"));
        }
        states.push(WorkloadState {
            workload: workload.clone(),
            ready,
            desired,
            readiness,
        });
    }
    Ok(states)
}

/// What judging one object gives: ready and desired counts, readiness, and the pod selector
/// through which to look for a reason.
type Judgement = (i32, i32, Readiness, Option<LabelSelector>);

fn judge_opt<K>(object: Option<K>, judge: fn(&K) -> Judgement) -> Judgement {
    match object {
        Some(object) => judge(&object),
        None => (
            0,
            1,
            Readiness::Progressing("not created yet".to_owned()),
            None,
        ),
    }
}

async fn get<K>(client: &Client, workload: &WorkloadRef) -> Result<Option<K>, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), &workload.namespace)
        .get_opt(&workload.name)
        .await
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
    (available.min(desired), desired, readiness, Some(selector))
}

fn deployment(object: &Deployment) -> Judgement {
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
    replicas_judgement(stale, replicas, spec.selector)
}

fn stateful_set(object: &StatefulSet) -> Judgement {
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

fn daemon_set(object: &DaemonSet) -> Judgement {
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

fn job(object: &Job) -> Judgement {
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
    (succeeded, desired, readiness, spec.selector)
}

/// The scheduler's word on a pod of `selector` that it could not place, if there is one.
async fn unschedulable_pod(
    client: &Client,
    namespace: &str,
    selector: &LabelSelector,
) -> Result<Option<String>, kube::Error> {
    let Some(labels) = selector.match_labels.as_ref().filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector.join(",")))
        .await?;
    Ok(pods.items.iter().find_map(|pod| {
        let scheduled = pod
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
        Some(format!(
            "pod {} cannot be scheduled: {}",
            kube::ResourceExt::name_any(pod),
            scheduled.message.as_deref().unwrap_or("no reason given")
        ))
    }))
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

    #[test]
    fn summary_sums_replicas_and_all_ready_needs_every_workload() {
        let state = |readiness: Readiness| WorkloadState {
            workload: WorkloadRef {
                kind: WorkloadKind::Deployment,
                namespace: "istio-system".to_owned(),
                name: "istiod".to_owned(),
            },
            ready: i32::from(readiness == Readiness::Ready),
            desired: 1,
            readiness,
        };
        let waiting = state(Readiness::Progressing("0/1 available".to_owned()));
        assert_eq!(summary(std::slice::from_ref(&waiting)), "0/1");
        assert!(all_ready(&[state(Readiness::Ready)]));
        assert!(!all_ready(&[state(Readiness::Ready), waiting]));
    }

    #[test]
    fn a_deployment_is_ready_when_current_updated_and_available() {
        let ready = DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(2),
            updated_replicas: Some(2),
            available_replicas: Some(2),
            ..DeploymentStatus::default()
        };
        assert_eq!(
            deployment(&deployment_with(3, ready.clone())).2,
            Readiness::Ready
        );
        let (_, _, stale, _) = deployment(&deployment_with(4, ready.clone()));
        assert!(matches!(stale, Readiness::Progressing(_)), "{stale:?}");
        // A rollout stuck behind old replicas: as many updated and available as wanted, but
        // the available ones are old.
        let stuck = DeploymentStatus {
            replicas: Some(4),
            ..ready.clone()
        };
        assert_eq!(
            deployment(&deployment_with(3, stuck)).2,
            Readiness::Progressing("2 old replicas still running".to_owned())
        );
        let half = DeploymentStatus {
            available_replicas: Some(1),
            ..ready
        };
        let (available, desired, readiness, _) = deployment(&deployment_with(3, half));
        assert_eq!((available, desired), (1, 2));
        assert_eq!(
            readiness,
            Readiness::Progressing("1/2 available".to_owned())
        );
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
        assert_eq!(job(&with("Complete")).2, Readiness::Ready);
        assert_eq!(
            job(&with("Failed")).2,
            Readiness::Failed("failed: BackoffLimitExceeded".to_owned())
        );
        assert_eq!(
            job(&Job::default()).2,
            Readiness::Progressing("0/1 completed".to_owned())
        );
    }
}
