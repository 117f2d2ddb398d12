//! The mesh as the dashboard shows it: namespaces with sidecar injection on or off (and for
//! which revision), pods with and without a proxy, and proxies whose version differs from the
//! control plane's.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;

use super::view::Dashboard;
use crate::mesh::revisions::proxies::{image_tag, proxy_image};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshView {
    /// istiod's version when this ControlPlane has it applied: what proxies should run.
    pub control_plane_version: Option<String>,
    pub revision: Option<String>,
    pub namespaces: Vec<NamespaceView>,
    pub pods: Vec<PodView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceView {
    pub name: String,
    pub injection: bool,
    /// The revision named by `istio.io/rev`; none for the default injector.
    pub revision: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub phase: Option<String>,
    pub proxy_image: Option<String>,
    pub proxy_version: Option<String>,
    /// The proxy runs another version than the control plane.
    pub skew: bool,
}

impl Dashboard {
    pub(super) async fn mesh(
        &self,
        revision: Option<String>,
        control_plane_version: Option<String>,
    ) -> Result<MeshView, kube::Error> {
        // From the API server's cache, not etcd (the page polls), and the namespaces' metadata
        // only: their labels say all there is to show.
        let everything_cached = ListParams::default().match_any();
        let namespaces = Api::<Namespace>::all(self.client.clone())
            .list_metadata(&everything_cached)
            .await?;
        let mut namespace_views: Vec<NamespaceView> =
            namespaces.items.iter().map(namespace_view).collect();
        // Injected namespaces first: they are what the mesh is about.
        namespace_views.sort_by(|a, b| b.injection.cmp(&a.injection).then(a.name.cmp(&b.name)));
        let pods = Api::<Pod>::all(self.client.clone())
            .list(&everything_cached)
            .await?;
        let injected = |namespace: &str| {
            namespace_views
                .iter()
                .any(|n| n.injection && n.name == namespace)
        };
        // Pods of injected namespaces with or without a proxy, and proxies anywhere else: the
        // pods of an uninjected namespace are not the mesh's business.
        let pod_views = pods
            .items
            .iter()
            .map(|pod| pod_view(pod, control_plane_version.as_deref()))
            .filter(|view| view.proxy_image.is_some() || injected(&view.namespace))
            .collect();
        Ok(MeshView {
            control_plane_version,
            revision,
            namespaces: namespace_views,
            pods: pod_views,
        })
    }
}

/// Injection as istiod's injector selects namespaces: `istio-injection=enabled` for the
/// default revision, else `istio.io/rev` names one; `istio-injection=disabled` turns both off.
pub(super) fn namespace_view(namespace: &impl Resource) -> NamespaceView {
    let labels = namespace.labels();
    let injection_label = labels.get("istio-injection").map(String::as_str);
    let revision = labels.get("istio.io/rev").cloned();
    let injection = match injection_label {
        Some("enabled") => true,
        Some(_) => false,
        None => revision.is_some(),
    };
    NamespaceView {
        name: namespace.name_any(),
        injection,
        revision: revision.filter(|_| injection && injection_label.is_none()),
    }
}

pub(super) fn pod_view(pod: &Pod, control_plane_version: Option<&str>) -> PodView {
    let proxy_image = proxy_image(pod).map(str::to_owned);
    let proxy_version = proxy_image.as_deref().and_then(image_tag);
    let skew =
        matches!((&proxy_version, control_plane_version), (Some(proxy), Some(cp)) if proxy != cp);
    PodView {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        phase: pod.status.as_ref().and_then(|s| s.phase.clone()),
        proxy_image,
        proxy_version,
        skew,
    }
}
