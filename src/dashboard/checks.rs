//! The mesh checks of `smm check` on the page: run when the page asks (its "Run checks"
//! button), never by the 2 s poll, since a run costs requests in proportion to the injected
//! namespaces and sends dry runs through the webhooks; at most once per `MAX_AGE` whoever asks.
//! The operator's ServiceAccount may not create pods, so in the operator the injection probe
//! says it cannot check; `smm dashboard` runs it with the user's rights.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;

use super::snapshot::{Fresh, fresh_for};
use super::view::{Dashboard, DashboardError, Part};
use crate::check::{self, CheckReport};

/// Each ControlPlane's last check, by name.
pub(super) type RunChecks = Mutex<HashMap<String, Arc<Fresh<Arc<Part<CheckReport>>>>>>;

impl Dashboard {
    /// The mesh checks of the ControlPlane `name`, or why they could not run.
    pub async fn check(&self, name: &str) -> Result<Arc<Part<CheckReport>>, DashboardError> {
        let listed = self.control_planes().await?;
        if !listed
            .iter()
            .any(|control_plane| control_plane.name_any() == name)
        {
            return Err(DashboardError::NotFound(name.to_owned()));
        }
        Ok(fresh_for(&self.checks, name, &listed)
            .get(|| async {
                let findings = check::post::post(&self.client, name).await;
                Arc::new(findings.map(|f| CheckReport::new(false, f)).into())
            })
            .await)
    }
}
