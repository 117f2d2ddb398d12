//! Ambient mode: istio-cni and ztunnel from Istio's own charts under `spec.profile: ambient`,
//! after istiod, with a real istiod run with the env the ambient profile renders (so its ambient
//! controllers run), and the node agents' DaemonSets judged ready from the pods kwok runs on the
//! plane's nodes.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use crate::istio::{Mesh, REGISTRY, container_names};
use crate::support::{LocalIstiod, TestCluster, eventually, istio_mesh_lock, unique_name};
use smm::api::{ComponentPhase, ControlPlane, Profile};

fn env_of(deployment: &Deployment, name: &str) -> Option<String> {
    deployment.spec.as_ref()?.template.spec.as_ref()?.containers[0]
        .env
        .iter()
        .flatten()
        .find(|env| env.name == name)?
        .value
        .clone()
}

#[tokio::test]
async fn the_ambient_profile_runs_istiod_in_ambient_mode_and_the_node_agents_on_every_node() {
    let _lock = istio_mesh_lock().await;
    let cluster = TestCluster::connect().await;
    let mesh = Mesh::create(&cluster, None).await;
    let ns = mesh.namespace.clone();
    // istiod first, so that the local istiod starts with the env its ambient chart renders.
    mesh.smm(&["install", "istiod", "--profile", "ambient"]);
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let istiod_deployment = deployments.get("istiod").await.unwrap();
    assert_eq!(
        env_of(&istiod_deployment, "PILOT_ENABLE_AMBIENT").as_deref(),
        Some("true")
    );
    assert_eq!(
        env_of(&istiod_deployment, "CA_TRUSTED_NODE_ACCOUNTS"),
        Some(format!("{ns}/ztunnel"))
    );
    let istiod = LocalIstiod::start(&ns, "");

    // The stored profile is ambient, so --all brings the node agents (and everything else).
    mesh.smm(&["install", "-a"]);
    let stored = Api::<ControlPlane>::all(cluster.client.clone())
        .get(&mesh.name)
        .await
        .unwrap();
    assert_eq!(stored.spec.profile, Some(Profile::Ambient));
    let status = stored.status.unwrap();
    for agent in ["istio-cni", "ztunnel"] {
        assert_eq!(
            status.components[agent].phase,
            ComponentPhase::Available,
            "{agent}: {:?}",
            status.components[agent]
        );
    }
    // Available means every node runs a ready agent: the DaemonSets' own counts agree.
    let daemon_sets: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), &ns);
    for name in ["istio-cni-node", "ztunnel"] {
        let status = daemon_sets.get(name).await.unwrap().status.unwrap();
        assert!(status.desired_number_scheduled > 0, "{name}: {status:?}");
        assert_eq!(
            status.number_ready, status.desired_number_scheduled,
            "{name}: {status:?}"
        );
    }
    // The agents run istiod's version from the mesh's registry and reach its Service.
    let ztunnel = daemon_sets.get("ztunnel").await.unwrap();
    let container = &ztunnel.spec.unwrap().template.spec.unwrap().containers[0];
    let image = container.image.clone().unwrap();
    assert!(
        image.starts_with(&format!("{REGISTRY}/istio/ztunnel:")),
        "{image}"
    );
    let xds = container
        .env
        .iter()
        .flatten()
        .find(|env| env.name == "XDS_ADDRESS")
        .and_then(|env| env.value.clone());
    assert_eq!(xds, Some(format!("istiod.{ns}.svc:15012")));

    // A pod of an ambient namespace gets no sidecar, and the real istiod indexes it as an
    // ambient workload reached over HBONE once istio-cni marked it redirected (which the node
    // agent does on a real node; kwok runs no agent, so the test marks it).
    let app_ns = unique_name("e2e-ambientapp");
    let namespace: Namespace = serde_json::from_value(json!({
        "metadata": {"name": app_ns, "labels": {"istio.io/dataplane-mode": "ambient"}},
    }))
    .unwrap();
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "app", "labels": {"app": "app"},
            "annotations": {"ambient.istio.io/redirection": "enabled"},
        },
        "spec": {"containers": [{"name": "app", "image": format!("{REGISTRY}/app:1")}]},
    }))
    .unwrap();
    let pod = Api::<Pod>::namespaced(cluster.client.clone(), &app_ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    assert_eq!(container_names(&pod), ["app"]);
    let url = format!("http://127.0.0.1:{}/debug/ambientz", istiod.http_port);
    let mut index = String::new();
    let indexed = eventually(Duration::from_secs(30), async || {
        let output = Command::new("curl")
            .args(["-fsS", "--max-time", "5", &url])
            .output()
            .unwrap();
        index = String::from_utf8_lossy(&output.stdout).into_owned();
        index.contains(&format!("{app_ns}/app")) && index.contains("HBONE")
    })
    .await;
    assert!(
        indexed,
        "istiod's ambient index has no {app_ns}/app over HBONE:\n{index}"
    );
    // istiod runs as the chart's ServiceAccount, ambient controllers included.
    let log = istiod.log();
    assert!(
        !log.contains("forbidden"),
        "istiod was denied something:\n{log}"
    );

    // Uninstalling istio-cni alone is refused while ztunnel needs it; both go together.
    let refused = crate::support::smm(&["uninstall", "istio-cni", "--control-plane", &mesh.name]);
    assert!(!refused.status.success());
    mesh.smm(&["uninstall", "ztunnel", "istio-cni"]);
    for name in ["istio-cni-node", "ztunnel"] {
        assert!(daemon_sets.get_opt(name).await.unwrap().is_none(), "{name}");
    }
    let _ = namespaces.delete(&app_ns, &DeleteParams::default()).await;
}
