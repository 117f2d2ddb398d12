//! The ambient mesh's helpers against a real API server: the Gateway API CRDs smm applies (and
//! the newer bundle it leaves alone), `smm waypoint` with a real istiod in ambient mode making
//! the waypoint's Deployment and Service, and `smm dataplane-mode`'s labels and refusals.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::istio::Mesh;
use crate::support::{
    LocalIstiod, TestCluster, eventually, fresh_control_plane, istio_mesh_lock, repo_root, smm,
    stdout,
};
use smm::mesh::gateway_api::{self, BUNDLE_VERSION, GATEWAYS_CRD};

fn labels_of(namespace: &Namespace) -> std::collections::BTreeMap<String, String> {
    namespace.metadata.labels.clone().unwrap_or_default()
}

fn annotation(crd: &CustomResourceDefinition, key: &str) -> Option<String> {
    crd.metadata.annotations.as_ref()?.get(key).cloned()
}

/// The status of condition `kind` among an object's `status.conditions`.
fn condition(status: &serde_json::Value, kind: &str) -> Option<String> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?["status"]
        .as_str()
        .map(str::to_owned)
}

async fn namespace_labels(
    client: &Client,
    name: &str,
) -> std::collections::BTreeMap<String, String> {
    labels_of(
        &Api::<Namespace>::all(client.clone())
            .get(name)
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn a_waypoint_applied_by_smm_is_deployed_by_a_real_istiod_and_deleted_with_its_gateway() {
    let _lock = istio_mesh_lock().await;
    let cluster = TestCluster::connect().await;
    let client = cluster.client.clone();
    let mesh = Mesh::create(&cluster, None).await;
    let ns = mesh.namespace.clone();
    // The ambient profile brings the Gateway API CRDs with base, before istiod starts.
    mesh.smm(&["install", "istiod", "--profile", "ambient"]);
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let gateways_crd = crds.get(GATEWAYS_CRD).await.unwrap();
    assert_eq!(
        annotation(&gateways_crd, "gateway.networking.k8s.io/channel").as_deref(),
        Some("standard")
    );
    let istiod = LocalIstiod::start(&ns, "");

    let app = cluster.namespace("e2e-waypoint").await;
    let app_ns = app.name.clone();
    let ambient = smm(&[
        "dataplane-mode",
        "ambient",
        &app_ns,
        "--control-plane",
        &mesh.name,
    ]);
    crate::support::assert_success(&ambient);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), &app_ns)
        .create(&PostParams::default(), &service)
        .await
        .unwrap();

    let applied = smm(&[
        "waypoint",
        "apply",
        "-n",
        &app_ns,
        "--enroll-namespace",
        "--control-plane",
        &mesh.name,
        "-o",
        "json",
    ]);
    crate::support::assert_success(&applied);
    let report: serde_json::Value = serde_json::from_str(&stdout(&applied)).unwrap();
    assert_eq!(report["done"], true, "{report}");
    assert_eq!(report["traffic"], "service");
    assert_eq!(
        namespace_labels(&client, &app_ns).await["istio.io/use-waypoint"],
        "waypoint"
    );

    // istiod programmed it and made its proxy, owned by the Gateway.
    let gateways = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &app_ns,
        &gateway_api::gateway_resource(),
    );
    let gateway = gateways.get("waypoint").await.unwrap();
    assert_eq!(
        condition(&gateway.data["status"], "Programmed").as_deref(),
        Some("True")
    );
    assert_eq!(gateway.data["spec"]["gatewayClassName"], "istio-waypoint");
    let owned_by_gateway =
        |owners: &Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            owners
                .iter()
                .flatten()
                .any(|owner| owner.kind == "Gateway" && owner.name == "waypoint")
        };
    let deployments = Api::<Deployment>::namespaced(client.clone(), &app_ns);
    let deployment = deployments.get("waypoint").await.unwrap();
    assert!(
        owned_by_gateway(&deployment.metadata.owner_references),
        "{deployment:?}"
    );
    let services = Api::<Service>::namespaced(client.clone(), &app_ns);
    let waypoint_service = services.get("waypoint").await.unwrap();
    assert!(owned_by_gateway(
        &waypoint_service.metadata.owner_references
    ));
    // kwok runs the proxy's pod, so the Deployment becomes ready.
    let ready = eventually(Duration::from_secs(60), async || {
        deployments
            .get("waypoint")
            .await
            .ok()
            .and_then(|d| d.status)
            .is_some_and(|s| s.ready_replicas.unwrap_or(0) >= 1)
    })
    .await;
    assert!(ready, "the waypoint Deployment never became ready");
    // The enrolled namespace's Service is bound to the waypoint, as istiod reports it.
    let raw_services = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &app_ns,
        &kube::api::ApiResource::erase::<Service>(&()),
    );
    let bound = eventually(Duration::from_secs(30), async || {
        raw_services.get("web").await.is_ok_and(|web| {
            condition(&web.data["status"], "istio.io/WaypointBound").as_deref() == Some("True")
        })
    })
    .await;
    assert!(
        bound,
        "service web never got istio.io/WaypointBound=True: {:?}",
        raw_services
            .get("web")
            .await
            .map(|web| web.data["status"].clone())
    );
    let log = istiod.log();
    assert!(
        !log.contains("forbidden"),
        "istiod was denied something:\n{log}"
    );

    // Delete: the Gateway, by garbage collection its Deployment, and the enrollment go.
    let deleted = smm(&["waypoint", "delete", "-n", &app_ns]);
    crate::support::assert_success(&deleted);
    assert!(stdout(&deleted).contains("deleted"), "{}", stdout(&deleted));
    assert!(gateways.get_opt("waypoint").await.unwrap().is_none());
    let collected = eventually(Duration::from_secs(60), async || {
        deployments
            .get_opt("waypoint")
            .await
            .is_ok_and(|d| d.is_none())
    })
    .await;
    assert!(collected, "the waypoint Deployment outlived its Gateway");
    assert!(
        !namespace_labels(&client, &app_ns)
            .await
            .contains_key("istio.io/use-waypoint")
    );
    // Deleting again is no error.
    crate::support::assert_success(&smm(&["waypoint", "delete", "-n", &app_ns]));
}

/// One Gateway API CRD that no test uses: made to claim a newer bundle, it must be left as it is.
const UNUSED_CRD: &str = "udproutes.gateway.networking.k8s.io";

async fn delete_crd(crds: &Api<CustomResourceDefinition>, name: &str) {
    let _ = crds.delete(name, &DeleteParams::default()).await;
    let gone = eventually(Duration::from_secs(60), async || {
        crds.get_opt(name).await.is_ok_and(|crd| crd.is_none())
    })
    .await;
    assert!(gone, "CRD {name} was not deleted");
}

#[tokio::test]
async fn a_gateway_api_crd_of_a_newer_bundle_is_left_as_it_is_and_an_absent_one_applied() {
    // Istio's tests apply the same cluster-wide CRDs; this one changes one of them.
    let _lock = istio_mesh_lock().await;
    let cluster = TestCluster::connect().await;
    let crds = Api::<CustomResourceDefinition>::all(cluster.client.clone());
    delete_crd(&crds, UNUSED_CRD).await;
    let file =
        repo_root().join(".upstream/istio/gateway-api/gateway.networking.k8s.io_udproutes.yaml");
    let mut crd: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    crd["metadata"]["annotations"][BUNDLE_VERSION] = json!("v1.99.0");
    let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
    crds.patch(
        UNUSED_CRD,
        &PatchParams::apply("someone-else"),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    // Established first: the API server's own status writes must not pass for smm's.
    let established = eventually(Duration::from_secs(30), async || {
        crds.get(UNUSED_CRD).await.is_ok_and(|crd| {
            crd.status
                .and_then(|status| status.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
    })
    .await;
    assert!(established, "{UNUSED_CRD} was never established");
    let before = crds.get(UNUSED_CRD).await.unwrap();

    let mesh = Mesh::create(&cluster, None).await;
    // A sidecar mesh that asks for the Gateway API.
    let installed = smm(&[
        "install",
        "base",
        "--gateway-api",
        "true",
        "--control-plane",
        &mesh.name,
    ]);
    crate::support::assert_success(&installed);
    let stderr = String::from_utf8_lossy(&installed.stderr);
    assert!(
        stderr.contains(UNUSED_CRD),
        "smm did not say it left {UNUSED_CRD} alone:\n{stderr}"
    );
    let after = crds.get(UNUSED_CRD).await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(
        annotation(&after, BUNDLE_VERSION).as_deref(),
        Some("v1.99.0")
    );
    // So does the ControlPlane's status, for as long as it holds.
    let base_message = async || {
        Api::<smm::api::ControlPlane>::all(cluster.client.clone())
            .get(&mesh.name)
            .await
            .unwrap()
            .status
            .unwrap()
            .components["base"]
            .message
            .clone()
    };
    let message = base_message().await.unwrap_or_default();
    assert!(
        message.starts_with("left as it is: ") && message.contains(UNUSED_CRD),
        "{message}"
    );
    // smm check --pre says so too (whatever else it finds in this shared cluster).
    let check = smm(&["check", "--pre", "--control-plane", &mesh.name]);
    assert!(
        stdout(&check).contains(&format!("CRD {UNUSED_CRD} will be left as it is")),
        "{}",
        stdout(&check)
    );
    // The others of the bundle are smm's.
    let gateways_crd = crds.get(GATEWAYS_CRD).await.unwrap();
    assert_eq!(
        annotation(&gateways_crd, BUNDLE_VERSION),
        Some(gateway_api::bundle_version())
    );
    assert_eq!(
        gateways_crd.metadata.labels.unwrap_or_default()["app.kubernetes.io/managed-by"],
        "smm"
    );

    // Once it is gone, the next reconcile (base up to date) applies smm's.
    delete_crd(&crds, UNUSED_CRD).await;
    mesh.smm(&["install", "base"]);
    let restored = crds.get(UNUSED_CRD).await.unwrap();
    assert_eq!(base_message().await, None);
    assert_eq!(
        annotation(&restored, BUNDLE_VERSION),
        Some(gateway_api::bundle_version())
    );
}

#[tokio::test]
async fn dataplane_mode_labels_namespaces_and_refuses_injected_and_protected_ones() {
    let cluster = TestCluster::connect().await;
    let client = cluster.client.clone();
    let (control_plane, mesh_namespace) = fresh_control_plane(&cluster).await;
    let plain = cluster.namespace("e2e-dpmode").await;
    let injected = cluster.namespace("e2e-dpmode").await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &injected.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"istio-injection": "enabled"}}})),
        )
        .await
        .unwrap();
    let run = |args: &[&str]| smm(&[args, &["--control-plane", &control_plane]].concat());
    let mode = async |namespace: &str| {
        namespace_labels(&client, namespace)
            .await
            .get("istio.io/dataplane-mode")
            .cloned()
    };

    let ambient = run(&["dataplane-mode", "ambient", &plain.name, "-o", "json"]);
    crate::support::assert_success(&ambient);
    let report: serde_json::Value = serde_json::from_str(&stdout(&ambient)).unwrap();
    assert_eq!(report["namespaces"][0]["mode"], "ambient");
    // This ControlPlane runs no ztunnel: the user is told.
    assert!(
        report["warnings"][0].as_str().unwrap().contains("ztunnel"),
        "{report}"
    );
    assert_eq!(mode(&plain.name).await.as_deref(), Some("ambient"));

    // A namespace labelled for injection is refused, nothing changed, unless allowed; and
    // refusing one namespace changes none of the others named with it.
    let other = cluster.namespace("e2e-dpmode").await;
    let refused = run(&["dataplane-mode", "ambient", &other.name, &injected.name]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("istio-injection=enabled"), "{stderr}");
    assert_eq!(mode(&injected.name).await, None);
    assert_eq!(mode(&other.name).await, None);
    let allowed = run(&[
        "dataplane-mode",
        "ambient",
        &injected.name,
        "--allow-sidecar-injection",
    ]);
    crate::support::assert_success(&allowed);
    assert!(stdout(&allowed).contains("sidecar injection: istio-injection=enabled"));
    assert_eq!(mode(&injected.name).await.as_deref(), Some("ambient"));

    // Kubernetes' and the mesh's own namespaces are never ambient.
    for protected in ["kube-system", mesh_namespace.as_str()] {
        let refused = run(&["dataplane-mode", "ambient", protected]);
        assert!(!refused.status.success(), "{protected}");
        assert!(String::from_utf8_lossy(&refused.stderr).contains("refusing"));
    }

    // none keeps a namespace out; sidecar removes the label and says how injection is turned on.
    crate::support::assert_success(&run(&["dataplane-mode", "none", &plain.name]));
    assert_eq!(mode(&plain.name).await.as_deref(), Some("none"));
    let sidecar = run(&["dataplane-mode", "sidecar", &plain.name]);
    crate::support::assert_success(&sidecar);
    assert_eq!(mode(&plain.name).await, None);
    assert!(
        stdout(&sidecar).contains("auto-inject on"),
        "{}",
        stdout(&sidecar)
    );
    let _ = Api::<smm::api::ControlPlane>::all(client)
        .delete(&control_plane, &DeleteParams::default())
        .await;
}
