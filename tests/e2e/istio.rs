//! Istio's own charts installed by smm, with a real istiod (`pilot-discovery`, run on loopback by
//! `scripts/istio/istiod.sh`) serving the webhooks the charts register: sidecar injection into
//! pods the API server admits, and validation of Istio's configuration.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::api::{PostParams, ResourceExt};
use kube::{Api, Client};
use serde_json::{Value, json};

use smm::api::ControlPlane;
use smm::mesh::catalog::Catalog;

use crate::support::{
    LocalIstiod, TestCluster, ensure_control_plane_crd, eventually, istio_mesh_lock, smm,
    unique_name,
};

/// A registry of the test's own, so the injected proxy's image shows it came from smm's values.
pub(crate) const REGISTRY: &str = "registry.local:5000";

/// The proxy image smm's values make istiod inject: `<imageRegistry>/istio/proxyv2:<tag>`.
pub(crate) fn proxy_image() -> String {
    format!("{REGISTRY}/istio/proxyv2:{}", crate::support::istiod_tag())
}

pub(crate) fn assert_success(what: &str, output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A ControlPlane (every component off) for a mesh in a namespace of its own; uninstalls
/// whatever the test installed when dropped, also when the test fails, so no injector of a
/// stopped istiod is left to refuse other tests' pods.
pub(crate) struct Mesh {
    pub(crate) name: String,
    pub(crate) namespace: String,
}

impl Mesh {
    pub(crate) async fn create(cluster: &TestCluster, revision: Option<&str>) -> Self {
        let fields = match revision {
            Some(revision) => json!({"revision": revision}),
            None => json!({}),
        };
        Self::create_with(cluster, unique_name("e2e-istions"), fields).await
    }

    /// As [`Mesh::create`], in `namespace`, with the spec's other `fields` (a JSON object).
    pub(crate) async fn create_with(
        cluster: &TestCluster,
        namespace: String,
        fields: Value,
    ) -> Self {
        ensure_control_plane_crd(&cluster.client).await;
        let name = unique_name("e2e-istio");
        let components: serde_json::Map<String, Value> = Catalog::builtin()
            .unwrap()
            .names()
            .into_iter()
            .map(|component| (component.to_owned(), json!({"enabled": false})))
            .collect();
        let mut spec = json!({
            "namespace": namespace, "imageRegistry": REGISTRY, "components": components,
        });
        for (field, value) in fields.as_object().into_iter().flatten() {
            spec[field] = value.clone();
        }
        let object = json!({
            "apiVersion": "smm.dev/v1alpha1", "kind": "ControlPlane",
            "metadata": {"name": name}, "spec": spec,
        });
        Api::<ControlPlane>::all(cluster.client.clone())
            .patch(
                &name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&object),
            )
            .await
            .unwrap();
        Self { name, namespace }
    }

    pub(crate) fn smm(&self, args: &[&str]) {
        let args = [args, &["--control-plane", &self.name]].concat();
        assert_success(&format!("smm {}", args.join(" ")), &smm(&args));
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = smm(&["uninstall", "-a", "--force", "--control-plane", &self.name]);
        let _ = Command::new(crate::support::repo_root().join(".tools/kubectl"))
            .args(["delete", "controlplane", &self.name, "--wait=false"])
            .output();
    }
}

/// A mesh of its own with istiod, a local istiod serving it, and an ingress gateway (whose pods
/// that istiod's injector made).
pub(crate) async fn mesh_with_gateway(cluster: &TestCluster) -> (Mesh, LocalIstiod) {
    let mesh = Mesh::create(cluster, None).await;
    mesh.smm(&["install", "istiod"]);
    let istiod = LocalIstiod::start(&mesh.namespace, "");
    mesh.smm(&["install", "ingress-gateway"]);
    (mesh, istiod)
}

/// Creates a pod with one plain container in `namespace` and returns it as admitted (after the
/// mutating webhooks).
pub(crate) async fn create_pod(client: &Client, namespace: &str) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": unique_name("app")},
        "spec": {"containers": [{"name": "app", "image": format!("{REGISTRY}/app:1")}]},
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    // istiod patches its CA into a webhook configuration after it appears (a tag's, when a
    // revision-based upgrade makes it): until then the API server cannot verify the webhook,
    // and on a loaded machine that takes a moment. Only that error is waited out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match pods.create(&PostParams::default(), &pod).await {
            Ok(created) => return created,
            Err(err)
                if err
                    .to_string()
                    .contains("certificate signed by unknown authority")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(err) => panic!("creating a pod in {namespace}: {err}"),
        }
    }
}

/// The image of the container `name`, wherever the pod has it: Istio injects its proxy as a
/// native sidecar (an init container that keeps running) on this Kubernetes version.
pub(crate) fn container_image(pod: &Pod, name: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .and_then(|c| c.image.clone())
}

/// The names of a pod's containers and init containers, for messages.
pub(crate) fn container_names(pod: &Pod) -> Vec<String> {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|spec| {
            spec.containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
        })
        .map(|c| c.name.clone())
        .collect()
}

fn virtual_services(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk_with_plural(&gvk, "virtualservices"),
    )
}

fn virtual_service(name: &str, destination: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": destination}}]}]},
    }))
    .unwrap()
}

/// base and istiod installed by smm, istiod running: it is ready without permission errors,
/// injects its proxy into pods of namespaces smm labels (and only those, and into the gateway's
/// pods), and refuses invalid Istio configuration through the default revision's validator.
#[tokio::test]
async fn istiod_injects_labelled_namespaces_and_gateways_and_validates_config() {
    let cluster = TestCluster::connect().await;
    let _lock = istio_mesh_lock().await;
    let mesh = Mesh::create(&cluster, None).await;
    mesh.smm(&["install", "istiod"]);
    let istiod = LocalIstiod::start(&mesh.namespace, "");

    let ready = Command::new("curl")
        .args(["-fsS", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{}/ready", istiod.http_port))
        .output()
        .unwrap();
    assert_success("istiod's /ready", &ready);
    // istiod runs as the chart's ServiceAccount: the chart's RBAC must cover all it does.
    let log = istiod.log();
    for denied in ["forbidden", "Forbidden", "cannot list", "cannot watch"] {
        assert!(!log.contains(denied), "istiod was denied something:\n{log}");
    }

    // Injection on for a namespace: its pods get the proxy, with the image smm's values name.
    let injected = cluster.namespace("e2e-inject").await;
    assert_success(
        "auto-inject on",
        &smm(&[
            "sidecar-proxy",
            "auto-inject",
            "on",
            &injected.name,
            "--control-plane",
            &mesh.name,
        ]),
    );
    let pod = create_pod(&cluster.client, &injected.name).await;
    assert_eq!(
        container_image(&pod, "istio-proxy"),
        Some(proxy_image()),
        "{:?}",
        container_names(&pod)
    );
    // An unlabelled namespace's pods are left alone.
    let plain = cluster.namespace("e2e-plain").await;
    let pod = create_pod(&cluster.client, &plain.name).await;
    assert_eq!(container_names(&pod), ["app"]);

    // The gateway chart's pods say `image: auto`; the injector makes them the proxy.
    mesh.smm(&["install", "ingress-gateway"]);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &mesh.namespace);
    let mut gateway_images = Vec::new();
    let found = eventually(Duration::from_secs(60), async || {
        let list = pods
            .list(&ListParams::default().labels("istio=ingressgateway"))
            .await
            .unwrap();
        gateway_images = list
            .items
            .iter()
            .map(|pod| container_image(pod, "istio-proxy"))
            .collect();
        !gateway_images.is_empty()
    })
    .await;
    assert!(found, "no ingress gateway pod was created");
    assert!(
        gateway_images
            .iter()
            .all(|i| i.as_ref() == Some(&proxy_image())),
        "{gateway_images:?}"
    );

    // Validation: istiod patches the default validator's CA bundle once it serves, so the refusal
    // may take a moment to start.
    let services = virtual_services(&cluster.client, &plain.name);
    let mut refusal = String::new();
    let refused = eventually(Duration::from_secs(30), async || {
        match services
            .create(&PostParams::default(), &virtual_service("broken", ""))
            .await
        {
            Err(err) => {
                refusal = err.to_string();
                true
            }
            Ok(created) => {
                let _ = services
                    .delete(&created.name_any(), &Default::default())
                    .await;
                false
            }
        }
    })
    .await;
    assert!(
        refused,
        "a VirtualService with an empty destination was stored"
    );
    assert!(
        refusal.contains("admission webhook \"validation.istio.io\" denied the request"),
        "not refused by istiod's validation: {refusal}"
    );
    services
        .create(
            &PostParams::default(),
            &virtual_service("reviews", "reviews"),
        )
        .await
        .expect("a valid VirtualService is stored");
    drop(istiod);
}

/// A revisioned control plane injects the pods of namespaces labelled with its revision.
#[tokio::test]
async fn a_canary_control_plane_injects_namespaces_of_its_revision() {
    let cluster = TestCluster::connect().await;
    let _lock = istio_mesh_lock().await;
    let mesh = Mesh::create(&cluster, Some("canary")).await;
    mesh.smm(&["install", "istiod"]);
    let istiod = LocalIstiod::start(&mesh.namespace, "canary");

    let namespace = cluster.namespace("e2e-canary").await;
    mesh.smm(&["sidecar-proxy", "auto-inject", "on", &namespace.name]);
    let labels = Api::<Namespace>::all(cluster.client.clone())
        .get(&namespace.name)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default();
    assert_eq!(
        labels.get("istio.io/rev").map(String::as_str),
        Some("canary")
    );
    let pod = create_pod(&cluster.client, &namespace.name).await;
    assert_eq!(
        container_image(&pod, "istio-proxy"),
        Some(proxy_image()),
        "{:?}",
        container_names(&pod)
    );
    drop(istiod);
}

/// A CRD is not replaced by one that no longer has a version its objects are stored in.
#[tokio::test]
async fn a_crd_dropping_a_stored_version_is_refused() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use smm::api::objects::NativeObject;
    use smm::cluster::objects::{NativeError, apply};

    let cluster = TestCluster::connect().await;
    let group = format!("{}.e2e.smm.dev", unique_name("crd"));
    let crd = |versions: &[(&str, bool)]| -> CustomResourceDefinition {
        let versions: Vec<Value> = versions
            .iter()
            .map(|(name, storage)| {
                json!({"name": name, "served": true, "storage": storage,
                       "schema": {"openAPIV3Schema": {"type": "object"}}})
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("widgets.{group}")},
            "spec": {"group": group, "scope": "Namespaced", "versions": versions,
                     "names": {"kind": "Widget", "plural": "widgets"}},
        }))
        .unwrap()
    };
    let old = crd(&[("v1alpha1", true)]);
    apply(&cluster.client, &[NativeObject::present(&old)])
        .await
        .unwrap();
    // v1 added and made the storage version: allowed, v1alpha1 is still listed.
    let both = crd(&[("v1alpha1", false), ("v1", true)]);
    apply(&cluster.client, &[NativeObject::present(&both)])
        .await
        .unwrap();
    let only_v1 = crd(&[("v1", true)]);
    let err = apply(&cluster.client, &[NativeObject::present(&only_v1)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, NativeError::DropsStoredVersion { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("v1alpha1"), "{err}");
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    let name = format!("widgets.{group}");
    let live = crds.get(&name).await.unwrap();
    assert_eq!(live.spec.versions.len(), 2, "the CRD was left as it was");
    crds.delete(&name, &Default::default()).await.unwrap();
}
