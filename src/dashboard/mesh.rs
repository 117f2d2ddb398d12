//! The mesh as the dashboard shows it: namespaces with sidecar injection on or off (and for
//! which revision), pods with and without a proxy, and proxies whose version differs from the
//! control plane's.

use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt};
use serde::{Deserialize, Serialize};

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
        let pods = self.pods(&everything_cached).await?;
        let injected = |namespace: &str| {
            namespace_views
                .iter()
                .any(|n| n.injection && n.name == namespace)
        };
        // Pods of injected namespaces with or without a proxy, and proxies anywhere else: the
        // pods of an uninjected namespace are not the mesh's business.
        let pod_views = pods
            .items
            .into_iter()
            .map(|pod| pod_view(&pod.into(), control_plane_version.as_deref()))
            .filter(|view| view.proxy_image.is_some() || injected(&view.namespace))
            .collect();
        Ok(MeshView {
            control_plane_version,
            revision,
            namespaces: namespace_views,
            pods: pod_views,
        })
    }

    /// Every pod of the cluster, as far as the dashboard reads them ([`ListedPod`]): one list
    /// whatever their number, parsed as it arrives into those few fields.
    async fn pods(&self, params: &ListParams) -> Result<PodList, kube::Error> {
        let mut request = kube::core::Request::new(Pod::url_path(&(), None))
            .list(params)
            .map_err(kube::Error::BuildRequest)?;
        // The span name kube gives its own lists.
        request.extensions_mut().insert("list");
        self.client.request(request).await
    }
}

/// The pods of a list, each with only what the dashboard shows of it. A whole [`Pod`] (managed
/// fields, volumes, every container's environment and probes) is tens of kilobytes once
/// parsed, and the page polls: with hundreds of pods that held several times the operator's
/// idle memory. Everything else in the API server's answer is skipped while it is parsed.
#[derive(Deserialize)]
struct PodList {
    items: Vec<ListedPod>,
}

#[derive(Deserialize)]
struct ListedPod {
    metadata: ListedMeta,
    #[serde(default)]
    spec: ListedSpec,
    #[serde(default)]
    status: ListedStatus,
}

#[derive(Deserialize)]
struct ListedMeta {
    name: Option<String>,
    namespace: Option<String>,
}

/// The containers, whose names and images say which is the proxy and what it runs.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedSpec {
    #[serde(default)]
    containers: Vec<ListedContainer>,
    #[serde(default)]
    init_containers: Vec<ListedContainer>,
}

#[derive(Deserialize)]
struct ListedContainer {
    name: String,
    image: Option<String>,
}

#[derive(Default, Deserialize)]
struct ListedStatus {
    phase: Option<String>,
}

/// A pod holding only what was listed, for the rules that read pods
/// ([`proxy_image`](crate::mesh::revisions::proxies::proxy_image)).
impl From<ListedPod> for Pod {
    fn from(listed: ListedPod) -> Self {
        let containers = |listed: Vec<ListedContainer>| -> Vec<Container> {
            listed
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    image: c.image,
                    ..Container::default()
                })
                .collect()
        };
        Pod {
            metadata: ObjectMeta {
                name: listed.metadata.name,
                namespace: listed.metadata.namespace,
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: containers(listed.spec.containers),
                init_containers: Some(containers(listed.spec.init_containers)),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: listed.status.phase,
                ..PodStatus::default()
            }),
        }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A pod as the API server lists it, proxy as a native sidecar, keeps only what the
    /// dashboard shows: the proxy and its version are found, and managed fields, environment,
    /// volumes and the rest of the status are not held.
    #[test]
    fn a_listed_pod_keeps_only_what_the_dashboard_shows() {
        let answer = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{
            "metadata": {
                "name": "app-1", "namespace": "apps", "uid": "u",
                "labels": {"app": "app"},
                "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]
            },
            "spec": {
                "initContainers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.27.0",
                                    "env": [{"name": "CA_ADDR", "value": "istiod.istio-system.svc:15012"}]}],
                "containers": [{"name": "app", "image": "app:1", "args": ["serve"]}],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "nodeName": "node-1"
            },
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
        }, {
            "metadata": {"name": "pending", "namespace": "apps"}
        }]});
        let list: PodList = serde_json::from_value(answer).unwrap();
        let pods: Vec<Pod> = list.items.into_iter().map(Pod::from).collect();
        let view = pod_view(&pods[0], Some("1.28.0"));
        assert_eq!(
            (view.namespace.as_str(), view.name.as_str()),
            ("apps", "app-1")
        );
        assert_eq!(view.phase.as_deref(), Some("Running"));
        assert_eq!(view.proxy_version.as_deref(), Some("1.27.0"));
        assert!(view.skew);
        let held = serde_json::to_value(&pods[0]).unwrap();
        assert_eq!(
            held,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "app-1", "namespace": "apps"},
                "spec": {
                    "initContainers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.27.0"}],
                    "containers": [{"name": "app", "image": "app:1"}]
                },
                "status": {"phase": "Running"}
            })
        );
        let bare = pod_view(&pods[1], Some("1.28.0"));
        assert!(bare.proxy_image.is_none() && bare.phase.is_none());
    }
}
