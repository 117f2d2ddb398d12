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
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kube::api::{WatchEvent, WatchParams};
use kube::{Api, Client, ResourceExt};

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
    wait_ready(client, client, workloads, Duration::ZERO).await
}

/// Judges the workloads as [`observe`] does, but first follows those not ready for up to
/// `limit`: one watch each (by name, from the version just read), each change judged as it
/// comes, so the wait ends the moment the last one is ready (or one failed), with no reads in
/// between. A watch that breaks ends the wait early; what it saw last is judged as read. The
/// watches go through `watches`: each holds its connection while it lasts and closes it when
/// dropped, so a client of their own leaves `client`'s connection for the calls after the wait
/// (a new connection's first request costs about 40 ms; see `Inventory::take`).
pub async fn wait_ready(
    client: &Client,
    watches: &Client,
    workloads: &[WorkloadRef],
    limit: Duration,
) -> Result<Vec<WorkloadState>, kube::Error> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut judged = Vec::with_capacity(workloads.len());
    let mut versions = Vec::with_capacity(workloads.len());
    for workload in workloads {
        let (judgement, version) = read(client, workload).await?;
        judged.push(judgement);
        versions.push(version);
    }
    if !limit.is_zero() && !settled(&judged) {
        let watches = workloads
            .iter()
            .zip(versions)
            .enumerate()
            .filter(|(index, _)| judged[*index].readiness != Readiness::Ready)
            .map(|(index, (workload, version))| {
                watch(watches, workload, version.as_deref().unwrap_or("0"))
                    .map(move |event| (index, event))
            });
        let mut changes = futures::stream::select_all(watches);
        while let Ok(Some((index, change))) =
            tokio::time::timeout_at(deadline, changes.next()).await
        {
            match change {
                Ok(judgement) => judged[index] = judgement,
                Err(err) => {
                    tracing::debug!(workload = %workloads[index], %err, "watch broke; judged as last seen");
                    break;
                }
            }
            if settled(&judged) {
                break;
            }
        }
    }
    let mut states = Vec::with_capacity(workloads.len());
    for (workload, judged) in workloads.iter().zip(judged) {
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

/// How long the API server keeps one watch open: less than the calls' read timeout
/// (`cluster::target`), so a quiet watch ends cleanly; a longer wait ends with it and is
/// looked at again by the caller.
pub const WATCH_SECONDS: u32 = 25;

/// Nothing left to wait for: every workload ready, or one that cannot get ready.
fn settled(judged: &[judge::Judgement]) -> bool {
    judged.iter().all(|j| j.readiness == Readiness::Ready)
        || judged
            .iter()
            .any(|j| matches!(j.readiness, Readiness::Failed(_)))
}

/// A workload judged as read now (from etcd), and the version it was read at.
async fn read(
    client: &Client,
    workload: &WorkloadRef,
) -> Result<(judge::Judgement, Option<String>), kube::Error> {
    Ok(match workload.kind {
        WorkloadKind::Deployment => read_as(client, workload, judge::deployment).await?,
        WorkloadKind::StatefulSet => read_as(client, workload, judge::stateful_set).await?,
        WorkloadKind::DaemonSet => read_as(client, workload, judge::daemon_set).await?,
        WorkloadKind::Job => read_as(client, workload, judge::job).await?,
    })
}

/// Every change of a workload from `version` on, judged.
fn watch(
    client: &Client,
    workload: &WorkloadRef,
    version: &str,
) -> BoxStream<'static, Result<judge::Judgement, kube::Error>> {
    match workload.kind {
        WorkloadKind::Deployment => watch_as(client, workload, version, judge::deployment),
        WorkloadKind::StatefulSet => watch_as(client, workload, version, judge::stateful_set),
        WorkloadKind::DaemonSet => watch_as(client, workload, version, judge::daemon_set),
        WorkloadKind::Job => watch_as(client, workload, version, judge::job),
    }
}

trait Workload:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + fmt::Debug
    + Send
    + 'static
{
}

impl<K> Workload for K where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + fmt::Debug
        + Send
        + 'static
{
}

async fn read_as<K: Workload>(
    client: &Client,
    workload: &WorkloadRef,
    judge: fn(&K) -> judge::Judgement,
) -> Result<(judge::Judgement, Option<String>), kube::Error> {
    let object = Api::<K>::namespaced(client.clone(), &workload.namespace)
        .get_opt(&workload.name)
        .await?;
    let version = object.as_ref().and_then(ResourceExt::resource_version);
    Ok((judge::judge_opt(object, judge), version))
}

fn watch_as<K: Workload>(
    client: &Client,
    workload: &WorkloadRef,
    version: &str,
    judge: fn(&K) -> judge::Judgement,
) -> BoxStream<'static, Result<judge::Judgement, kube::Error>> {
    let api = Api::<K>::namespaced(client.clone(), &workload.namespace);
    let params = WatchParams::default()
        .fields(&format!("metadata.name={}", workload.name))
        .timeout(WATCH_SECONDS);
    let version = version.to_owned();
    futures::stream::once(async move { api.watch(&params, &version).await })
        .try_flatten()
        .filter_map(move |event| {
            std::future::ready(match event {
                Ok(WatchEvent::Added(object) | WatchEvent::Modified(object)) => {
                    Some(Ok(judge(&object)))
                }
                Ok(WatchEvent::Deleted(_)) => Some(Ok(judge::judge_opt(None, judge))),
                Ok(WatchEvent::Bookmark(_)) => None,
                Ok(WatchEvent::Error(status)) => Some(Err(kube::Error::Api(status))),
                Err(err) => Some(Err(err)),
            })
        })
        .boxed()
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

    /// A wait by watch ends once every workload is ready, or as soon as one failed; a
    /// workload not seen yet (or not created yet) keeps it going.
    #[test]
    fn a_wait_is_settled_when_all_are_ready_or_one_failed() {
        let judged = |readiness: Readiness| judge::Judgement {
            ready: 0,
            desired: 1,
            readiness,
            selector: None,
            refused: None,
        };
        let progressing = || judged(Readiness::Progressing("0/1 available".to_owned()));
        assert!(settled(&[
            judged(Readiness::Ready),
            judged(Readiness::Ready)
        ]));
        assert!(!settled(&[judged(Readiness::Ready), progressing()]));
        assert!(settled(&[
            progressing(),
            judged(Readiness::Failed("failed: BackoffLimitExceeded".to_owned()))
        ]));
        assert!(!settled(&[judge::judge_opt(None, judge::deployment)]));
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
