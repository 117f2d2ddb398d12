//! Whether workloads are ready, by kstatus' rules (the rules Flux and `kubectl rollout status`
//! apply): a Deployment, StatefulSet or DaemonSet is ready when its controller has seen the
//! current generation and every replica is updated and available; a Job when it completed.
//! Services, PodDisruptionBudgets, autoscalers and the like never block. When a workload is not
//! ready, the message says why, read from the objects: refused pod creations, a pod the
//! scheduler cannot place, a crash loop, an image pull failure, a container never ready, a
//! rollout past its progress deadline (`judge` reads the object, `reasons` its pods and Events).
//! [`overall`] words a component's workloads for everything that shows them: `smm status`, the
//! ControlPlane's status, the operator's Events and the dashboard.

mod judge;
mod reasons;

pub(crate) use reasons::pod_reason;

use std::fmt;

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
    /// It cannot get ready without a change (a failed Job, a rollout past its deadline).
    Failed(String),
}

impl Readiness {
    /// Why it is not ready; none when it is.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Ready => None,
            Self::Progressing(why) | Self::Failed(why) => Some(why),
        }
    }

    /// `Progressing` or `Failed` (`Ready` when ready), as status tables show it.
    pub fn state(&self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Progressing(_) => "Progressing",
            Self::Failed(_) => "Failed",
        }
    }

    /// The same readiness with `reasons` added to why it is not ready.
    fn with_reasons(self, reasons: &[String]) -> Self {
        let add = |why: String| {
            [why]
                .iter()
                .chain(reasons)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        };
        match self {
            Self::Ready => Self::Ready,
            Self::Progressing(why) => Self::Progressing(add(why)),
            Self::Failed(why) => Self::Failed(add(why)),
        }
    }
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
        let why = self.readiness.reason().unwrap_or("ready");
        format!("{}: {why}", self.workload)
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

/// The readiness of a component's workloads together: Failed when one failed, Progressing when
/// one is not ready, each workload that is not ready described. These are the words shown
/// wherever a component's workloads are: `smm status`, the stored status and its conditions, the
/// operator's Events, the dashboard.
pub fn overall(states: &[WorkloadState]) -> Readiness {
    let waiting: Vec<String> = states
        .iter()
        .filter(|s| s.readiness != Readiness::Ready)
        .map(WorkloadState::describe)
        .collect();
    if waiting.is_empty() {
        Readiness::Ready
    } else if states
        .iter()
        .any(|s| matches!(s.readiness, Readiness::Failed(_)))
    {
        Readiness::Failed(waiting.join("; "))
    } else {
        Readiness::Progressing(waiting.join("; "))
    }
}

/// Reads each workload and judges it, with the reason read from its pods when it is not ready.
/// A workload that does not exist is progressing (helm just created it, or someone deleted it
/// and drift repair will put it back).
pub async fn observe(
    client: &Client,
    workloads: &[WorkloadRef],
) -> Result<Vec<WorkloadState>, kube::Error> {
    let mut states = Vec::with_capacity(workloads.len());
    for workload in workloads {
        let judged = match workload.kind {
            WorkloadKind::Deployment => {
                judge::judge_opt(get(client, workload).await?, judge::deployment)
            }
            WorkloadKind::StatefulSet => {
                judge::judge_opt(get(client, workload).await?, judge::stateful_set)
            }
            WorkloadKind::DaemonSet => {
                judge::judge_opt(get(client, workload).await?, judge::daemon_set)
            }
            WorkloadKind::Job => judge::judge_opt(get(client, workload).await?, judge::job),
        };
        let (ready, desired) = (judged.ready, judged.desired);
        let readiness = match judged.readiness {
            Readiness::Ready => Readiness::Ready,
            _ => reasons::explain(client, workload, judged).await?,
        };
        states.push(WorkloadState {
            workload: workload.clone(),
            ready,
            desired,
            readiness,
        });
    }
    Ok(states)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(readiness: Readiness) -> WorkloadState {
        WorkloadState {
            workload: WorkloadRef {
                kind: WorkloadKind::Deployment,
                namespace: "istio-system".to_owned(),
                name: "istiod".to_owned(),
            },
            ready: i32::from(readiness == Readiness::Ready),
            desired: 1,
            readiness,
        }
    }

    #[test]
    fn summary_sums_replicas_and_all_ready_needs_every_workload() {
        let waiting = state(Readiness::Progressing("0/1 available".to_owned()));
        assert_eq!(summary(std::slice::from_ref(&waiting)), "0/1");
        assert!(all_ready(&[state(Readiness::Ready)]));
        assert!(!all_ready(&[state(Readiness::Ready), waiting]));
    }

    /// A component is Failed when one workload failed, and its words name every workload that
    /// is not ready, with why.
    #[test]
    fn overall_fails_on_one_failure_and_names_every_workload_not_ready() {
        let waiting = state(Readiness::Progressing("0/1 available".to_owned()));
        let failed = state(Readiness::Failed("progress deadline exceeded".to_owned()));
        assert_eq!(overall(&[state(Readiness::Ready)]), Readiness::Ready);
        assert_eq!(
            overall(&[state(Readiness::Ready), waiting.clone()]),
            Readiness::Progressing("Deployment istio-system/istiod: 0/1 available".to_owned())
        );
        assert_eq!(
            overall(&[waiting, failed]),
            Readiness::Failed(
                "Deployment istio-system/istiod: 0/1 available; \
                 Deployment istio-system/istiod: progress deadline exceeded"
                    .to_owned()
            )
        );
        assert_eq!(
            Readiness::Progressing("0/1 updated".to_owned())
                .with_reasons(&["pod p cannot be scheduled: no".to_owned()]),
            Readiness::Progressing("0/1 updated; pod p cannot be scheduled: no".to_owned())
        );
    }
}
