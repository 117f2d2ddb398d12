//! The workloads of a release judged live: what `smm status` and the dashboard show for each
//! component, and what the engine's wait looks at.

use kube::Client;

use super::release::{self, RecordError, ReleaseRef};
use crate::api::{ComponentPhase, ComponentStatus};
use crate::cluster::workloads::{self, WorkloadRef, WorkloadState};

/// The workloads of a release could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the workloads of {release}: {source}")]
pub struct ObserveError {
    release: String,
    #[source]
    source: kube::Error,
}

/// Why the workloads of a component as its status records them could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadsError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Observe(#[from] ObserveError),
}

/// `refs`, the workloads of `release`, judged now.
pub async fn observe(
    client: &Client,
    release: &ReleaseRef,
    refs: &[WorkloadRef],
) -> Result<Vec<WorkloadState>, ObserveError> {
    workloads::observe(client, refs)
        .await
        .map_err(|source| ObserveError {
            release: release.to_string(),
            source,
        })
}

/// The workloads of a component as its status records its release, judged now; none when it
/// has no applied release.
pub async fn component_workloads(
    client: &Client,
    status: &ComponentStatus,
) -> Result<Vec<WorkloadState>, WorkloadsError> {
    let Some((release, revision)) = status
        .release
        .as_ref()
        .and_then(|r| Some((ReleaseRef::from(r), r.revision?)))
    else {
        return Ok(Vec::new());
    };
    if status.phase == ComponentPhase::Removed {
        return Ok(Vec::new());
    }
    let refs = release::workloads(client, &release, revision).await?;
    Ok(observe(client, &release, &refs).await?)
}
