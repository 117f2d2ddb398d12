//! What the dashboard serves, read from the cluster at most once per [`MAX_AGE`] however many
//! pages poll it: a tab polls every 2 s and a port-forwarder can poll in parallel, while the
//! operator serving it shares its memory and its API server with the reconciler. A refresh is
//! one fixed set of requests whatever the cluster's size, made by one poll while the others
//! wait for its result.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::ResourceExt;

use super::view::{ControlPlaneList, Dashboard, DashboardError, Detail, summarize};
use crate::api::ControlPlane;
use crate::cluster::control_plane::{self, StoreError};

/// How old what the dashboard serves may be.
pub(super) const MAX_AGE: Duration = Duration::from_secs(5);

/// A value read at most once per [`MAX_AGE`], by one reader at a time: whoever finds it stale
/// reads it again while the others wait, then they all take that.
pub(super) struct Fresh<T> {
    read: tokio::sync::Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Fresh<T> {
    pub(super) fn new() -> Self {
        Self {
            read: tokio::sync::Mutex::new(None),
        }
    }

    pub(super) async fn get<F: Future<Output = T>>(&self, read: impl FnOnce() -> F) -> T {
        let mut last = self.read.lock().await;
        if let Some((at, value)) = &*last
            && at.elapsed() < MAX_AGE
        {
            return value.clone();
        }
        let value = read().await;
        *last = Some((Instant::now(), value.clone()));
        // What the refresh read (every pod of the cluster, the Events) is freed once made into
        // the view: given back, an open page does not keep the operator at its peak.
        crate::memory::give_back_freed();
        value
    }
}

/// What is kept of `name` in `kept`, made fresh when new; what is kept of ControlPlanes no
/// longer listed goes (the names a poller may send are unbounded, the listed ones are not).
pub(super) fn fresh_for<T: Clone>(
    kept: &Mutex<HashMap<String, Arc<Fresh<T>>>>,
    name: &str,
    listed: &[ControlPlane],
) -> Arc<Fresh<T>> {
    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
    kept.retain(|known, _| listed.iter().any(|cp| cp.name_any() == *known));
    kept.entry(name.to_owned())
        .or_insert_with(|| Arc::new(Fresh::new()))
        .clone()
}

/// The ControlPlanes as last listed.
pub(super) type ListedControlPlanes = Fresh<Result<Arc<Vec<ControlPlane>>, Arc<StoreError>>>;
/// Each listed ControlPlane's detail as last read, by name.
pub(super) type ReadDetails = Mutex<HashMap<String, Arc<Fresh<Arc<Detail>>>>>;

impl Dashboard {
    pub async fn list(&self) -> Result<ControlPlaneList, DashboardError> {
        let control_planes = self.control_planes().await?;
        Ok(ControlPlaneList {
            preferred: self.preferred.clone(),
            items: control_planes.iter().map(summarize).collect(),
        })
    }

    /// A name that is not listed is not found without a request, and keeps no detail: the
    /// names a poller may send are unbounded.
    pub async fn detail(&self, name: &str) -> Result<Arc<Detail>, DashboardError> {
        let control_planes = self.control_planes().await?;
        let control_plane = control_planes
            .iter()
            .find(|control_plane| control_plane.name_any() == name)
            .ok_or_else(|| DashboardError::NotFound(name.to_owned()))?;
        Ok(fresh_for(&self.details, name, &control_planes)
            .get(|| async { Arc::new(self.read_detail(control_plane).await) })
            .await)
    }

    pub(super) async fn control_planes(&self) -> Result<Arc<Vec<ControlPlane>>, DashboardError> {
        let listed = self
            .control_planes
            .get(|| async {
                control_plane::list_cached(&self.client)
                    .await
                    .map(Arc::new)
                    .map_err(Arc::new)
            })
            .await;
        Ok(listed?)
    }
}

#[cfg(test)]
mod tests {
    use axum::extract::{Request, State};
    use axum::http::header;
    use axum::response::Json;
    use serde_json::json;

    use super::*;
    use crate::helm::{Helm, HelmBinary, HelmSource};
    use crate::mesh::catalog::Catalog;

    type Seen = Arc<Mutex<Vec<String>>>;

    /// An API server on loopback that holds one ControlPlane, `smm`, and nothing else, and
    /// notes each request (URI and Accept header).
    async fn fake_api_server(seen: Seen) -> String {
        let app = axum::Router::new()
            .fallback(|State(seen): State<Seen>, request: Request| async move {
                let accept = request
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                seen.lock()
                    .unwrap()
                    .push(format!("{} {accept}", request.uri()));
                let items = if request.uri().path().ends_with("/controlplanes") {
                    json!([{"apiVersion": "smm.dev/v1alpha1", "kind": "ControlPlane",
                            "metadata": {"name": "smm", "resourceVersion": "1"}, "spec": {}}])
                } else {
                    json!([])
                };
                Json(json!({"apiVersion": "v1", "kind": "List",
                            "metadata": {"resourceVersion": "1"}, "items": items}))
            })
            .with_state(seen);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn polls_cost_one_refresh_of_requests_however_many() {
        let seen = Seen::default();
        let url = fake_api_server(seen.clone()).await;
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let helm = Helm::new(
            HelmBinary {
                path: "helm-is-never-run".into(),
                source: HelmSource::Flag,
            },
            Default::default(),
            Duration::from_secs(1),
        );
        let catalog = Arc::new(Catalog::builtin().unwrap());
        let dashboard = Dashboard::new(client, helm, catalog, None);
        let poll = || async {
            assert_eq!(dashboard.list().await.unwrap().items.len(), 1);
            dashboard.detail("smm").await.unwrap();
        };
        poll().await;
        let one_refresh = seen.lock().unwrap().len();
        assert!(one_refresh > 0);
        // Fifty polls, ten at a time, as tabs and a port-forwarder might.
        for _ in 0..5 {
            futures::future::join_all((0..10).map(|_| poll())).await;
        }
        // A name nobody listed costs nothing either.
        assert!(matches!(
            dashboard.detail("no-such-control-plane").await,
            Err(DashboardError::NotFound(_))
        ));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), one_refresh, "{seen:#?}");
        // What the dashboard lists itself comes from the API server's cache, the namespaces
        // as metadata only.
        for path in ["/controlplanes?", "/namespaces?", "/pods?", "/events?"] {
            let request = seen.iter().find(|uri| uri.contains(path)).unwrap();
            assert!(request.contains("resourceVersion=0"), "{request}");
        }
        let namespaces = seen
            .iter()
            .find(|uri| uri.contains("/namespaces?"))
            .unwrap();
        assert!(
            namespaces.contains("PartialObjectMetadataList"),
            "{namespaces}"
        );
    }
}
