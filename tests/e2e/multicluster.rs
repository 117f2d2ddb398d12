//! One mesh over two local planes: `smm cluster attach` makes the second plane a remote of the
//! first (Istio's CRDs and istiod's remote profile there, the reader's token, the remote secret
//! here), and the first plane's real istiod discovers a Service that exists only in the second
//! and injects the second plane's pods; `smm cluster detach` takes all of it back.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use smm::api::ControlPlane;

use crate::istio::{Mesh, assert_success, container_names, create_pod};
use crate::support::{LocalIstiod, SecondPlane, TestCluster, istio_mesh_lock, smm, unique_name};

/// What A's istiod serves on `/debug/<path>`, as JSON.
fn debug(istiod: &LocalIstiod, path: &str) -> Value {
    let output = std::process::Command::new("curl")
        .args(["-fsS", "--max-time", "5"])
        .arg(format!(
            "http://127.0.0.1:{}/debug/{path}",
            istiod.http_port
        ))
        .output()
        .unwrap();
    assert_success(&format!("istiod's /debug/{path}"), &output);
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

/// The host names in istiod's service registry.
fn registry_hosts(istiod: &LocalIstiod) -> Vec<String> {
    let registry = debug(istiod, "registryz");
    registry
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|service| service["hostname"].as_str().map(str::to_owned))
        .collect()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn cluster_args<'a>(args: &[&'a str], plane: &'a str, mesh: &'a Mesh) -> Vec<&'a str> {
    let mut all = vec!["cluster"];
    all.extend_from_slice(args);
    all.extend([
        "--remote-kubeconfig",
        plane,
        "--control-plane",
        mesh.name.as_str(),
    ]);
    all
}

async fn exists<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    // A kind whose CRD is gone answers 404 without a Status: nothing of it exists.
    match api.get_opt(name).await {
        Ok(found) => found.is_some(),
        Err(kube::Error::Api(status)) if status.code == 404 => false,
        Err(err) => panic!("reading {name}: {err}"),
    }
}

#[tokio::test]
async fn a_remote_cluster_is_discovered_and_injected_by_the_primarys_istiod_until_detached() {
    let cluster = TestCluster::connect().await;
    let _lock = istio_mesh_lock().await;
    let mesh = Mesh::create(&cluster, None).await;
    let mesh_namespace = mesh.namespace.clone();
    let plane = SecondPlane::start();
    let remote: &Client = &plane.client().await;
    let kubeconfig = plane.kubeconfig.display().to_string();

    // Attaching to a ControlPlane of one cluster is refused, naming what to set.
    let single = smm(&cluster_args(
        &["attach", "cluster-b", "--pilot-address", "198.51.100.10"],
        &kubeconfig,
        &mesh,
    ));
    assert!(!single.status.success());
    assert!(
        String::from_utf8_lossy(&single.stderr).contains("spec.multiCluster"),
        "{}",
        String::from_utf8_lossy(&single.stderr)
    );

    let multi_cluster = json!({"spec": {"multiCluster": {
        "meshID": "mesh1", "clusterName": "cluster-a", "network": "network1",
    }}});
    Api::<ControlPlane>::all(cluster.client.clone())
        .patch(
            &mesh.name,
            &PatchParams::default(),
            &Patch::Merge(&multi_cluster),
        )
        .await
        .unwrap();
    mesh.smm(&["install", "istiod"]);
    let istiod = LocalIstiod::start(&mesh_namespace, "");
    // On a network of its own: its proxies reach A's istiod through A's east-west gateway
    // (--pilot-address), on which the attach exposes istiod.
    let attach = cluster_args(
        &[
            "attach",
            "cluster-b",
            "--network",
            "network2",
            "--pilot-address",
            "198.51.100.10",
        ],
        &kubeconfig,
        &mesh,
    );
    assert_success("smm cluster attach", &smm(&attach));
    let istio_config = |kind: &str, plural: &str| {
        let gvk = kube::api::GroupVersionKind::gvk("networking.istio.io", "v1", kind);
        Api::<kube::api::DynamicObject>::namespaced_with(
            cluster.client.clone(),
            &mesh_namespace,
            &kube::api::ApiResource::from_gvk_with_plural(&gvk, plural),
        )
    };
    let exposure = [
        istio_config("Gateway", "gateways"),
        istio_config("VirtualService", "virtualservices"),
    ];
    for api in &exposure {
        assert!(
            exists(api, "istiod-eastwest").await,
            "istiod is not exposed"
        );
    }

    // In B: istiod's remote profile (no istiod, an injector calling A's), the mesh namespace
    // naming its network and its primary, the reader's token; in A: the remote secret.
    let webhooks = Api::<MutatingWebhookConfiguration>::all(remote.clone());
    // The chart names the injector after a mesh namespace other than istio-system.
    let injector = format!("istio-sidecar-injector-{mesh_namespace}");
    assert!(exists(&webhooks, &injector).await);
    let namespace = Api::<Namespace>::all(remote.clone())
        .get(&mesh_namespace)
        .await
        .unwrap();
    let labels = namespace.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("topology.istio.io/network").map(String::as_str),
        Some("network2")
    );
    let annotations = namespace.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("topology.istio.io/controlPlaneClusters")
            .map(String::as_str),
        Some("cluster-a")
    );
    let secrets_a = Api::<Secret>::namespaced(cluster.client.clone(), &mesh_namespace);
    let remote_secret = secrets_a
        .get("istio-remote-secret-cluster-b")
        .await
        .unwrap();
    assert_eq!(
        remote_secret.metadata.labels.unwrap()["istio/multiCluster"],
        "true"
    );

    // B's API server reaches A's istiod for its injector's calls.
    let services_b = Api::<Service>::namespaced(remote.clone(), &mesh_namespace);
    let istiod_b = services_b.get("istiod").await.unwrap();
    let ip = istiod_b.spec.unwrap().cluster_ip.unwrap();
    plane.route("istiod.remote", &ip, istiod.https_port);

    // A Service only B has shows in A's istiod's registry, from cluster-b.
    let host = service_only_in(remote).await;
    wait_for(
        &format!("{host} not in istiod's registry"),
        Duration::from_secs(30),
        async || registry_hosts(&istiod).contains(&host),
    )
    .await;
    let clusters = debug(&istiod, "clusterz");
    assert!(
        clusters
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "cluster-b"),
        "{clusters}"
    );

    // A pod in an injected namespace of B gets its proxy from A's istiod, which knows it as
    // cluster-b's (once A's istiod has patched its CA into B's injector).
    wait_for(
        "no caBundle in B's injector",
        Duration::from_secs(30),
        async || {
            let injector = webhooks.get(&injector).await.unwrap();
            injector.webhooks.unwrap_or_default().iter().all(|w| {
                w.client_config
                    .ca_bundle
                    .as_ref()
                    .is_some_and(|ca| !ca.0.is_empty())
            })
        },
    )
    .await;
    let app = unique_name("app");
    let app_namespace: Namespace = serde_json::from_value(json!({
        "metadata": {"name": app, "labels": {"istio-injection": "enabled"}},
    }))
    .unwrap();
    Api::<Namespace>::all(remote.clone())
        .create(&PostParams::default(), &app_namespace)
        .await
        .unwrap();
    let pod = create_pod(remote, &app).await;
    assert!(
        container_names(&pod).contains(&"istio-proxy".to_owned()),
        "{pod:?}"
    );
    let proxy = pod
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .iter()
        .flatten()
        .chain(pod.spec.as_ref().unwrap().containers.iter())
        .find(|c| c.name == "istio-proxy")
        .unwrap();
    let cluster_id = proxy
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "ISTIO_META_CLUSTER_ID");
    assert_eq!(
        cluster_id.and_then(|e| e.value.as_deref()),
        Some("cluster-b")
    );

    // status: reachable through the remote secret, served by cluster-a, recorded on the CP.
    let status = smm(&[
        "cluster",
        "status",
        "-o",
        "json",
        "--control-plane",
        &mesh.name,
    ]);
    assert_success("smm cluster status", &status);
    let states: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(states[0]["name"], "cluster-b", "{states}");
    assert_eq!(states[0]["reachable"], true, "{states}");
    assert_eq!(states[0]["servedBy"], "cluster-a", "{states}");
    let stored = Api::<ControlPlane>::all(cluster.client.clone())
        .get(&mesh.name)
        .await
        .unwrap();
    let recorded = stored.status.unwrap().clusters;
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].remote_secret_created.is_some());

    // The remote's part follows the primary's spec on the primary's next reconcile, with the
    // manager account the attach made there.
    let registry = json!({"spec": {"imageRegistry": "registry.local:5001"}});
    let control_planes = Api::<ControlPlane>::all(cluster.client.clone());
    control_planes
        .patch(
            &mesh.name,
            &PatchParams::default(),
            &Patch::Merge(&registry),
        )
        .await
        .unwrap();
    mesh.smm(&["install", "istiod"]);
    let theirs = Api::<ControlPlane>::all(remote.clone())
        .get(&mesh.name)
        .await
        .unwrap();
    assert_eq!(
        theirs.spec.image_registry.as_deref(),
        Some("registry.local:5001")
    );
    let ready = theirs
        .status
        .unwrap()
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    assert!(ready, "the remote ControlPlane is not Ready");

    // A remote that cannot be reached fails its own part with the reason; the primary's
    // components are reconciled all the same.
    let managers = Api::<Secret>::namespaced(cluster.client.clone(), "smm-system");
    let manager = managers.get("smm-cluster-cluster-b").await.unwrap();
    let kubeconfig_text = String::from_utf8(manager.data.unwrap()["kubeconfig"].0.clone()).unwrap();
    let parsed: Value = serde_yaml_ng::from_str(&kubeconfig_text).unwrap();
    let server = parsed["clusters"][0]["cluster"]["server"].clone();
    let broken = kubeconfig_text.replace(server.as_str().unwrap(), "https://127.0.0.1:9");
    let patch = json!({"stringData": {"kubeconfig": broken}});
    managers
        .patch(
            "smm-cluster-cluster-b",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let install = smm(&["install", "istiod", "--control-plane", &mesh.name]);
    assert!(
        !install.status.success(),
        "a failed attached cluster must fail the run"
    );
    let printed = String::from_utf8_lossy(&install.stdout);
    assert!(
        printed.contains("attached cluster cluster-b: cluster cluster-b: cannot reach"),
        "{printed}"
    );
    let stored = control_planes.get(&mesh.name).await.unwrap();
    let status = stored.status.unwrap();
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    assert!(!status.clusters[0].reachable);
    // Attaching again restores what the attach made.
    assert_success("smm cluster attach (repair)", &smm(&attach));
    mesh.smm(&["install", "istiod"]);

    // Attach is idempotent; another name for the same cluster is refused.
    assert_success("smm cluster attach (again)", &smm(&attach));
    let renamed = smm(&cluster_args(
        &["attach", "cluster-c", "--pilot-address", "198.51.100.10"],
        &kubeconfig,
        &mesh,
    ));
    assert!(!renamed.status.success());
    let message = String::from_utf8_lossy(&renamed.stderr);
    assert!(
        message.contains("attached as cluster cluster-b"),
        "{message}"
    );
    // So is attaching it to another mesh, from another ControlPlane.
    let topology = json!({"multiCluster": {"meshID": "mesh9", "clusterName": "cluster-z"}});
    let other = Mesh::create_with(&cluster, unique_name("e2e-istions"), topology).await;
    let elsewhere = smm(&cluster_args(
        &["attach", "cluster-b", "--pilot-address", "198.51.100.10"],
        &kubeconfig,
        &other,
    ));
    assert!(!elsewhere.status.success());
    let message = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(
        message.contains("is in mesh mesh1, this one is mesh9"),
        "{message}"
    );
    drop(other);

    // Detach: A's istiod forgets B's Service; nothing smm made is left in either plane.
    Api::<Namespace>::all(remote.clone())
        .delete(&app, &Default::default())
        .await
        .unwrap();
    let detach = cluster_args(&["detach", "cluster-b"], &kubeconfig, &mesh);
    assert_success("smm cluster detach", &smm(&detach));
    wait_for(
        &format!("{host} still in istiod's registry"),
        Duration::from_secs(30),
        async || !registry_hosts(&istiod).contains(&host),
    )
    .await;
    assert!(!exists(&secrets_a, "istio-remote-secret-cluster-b").await);
    for api in &exposure {
        assert!(
            !exists(api, "istiod-eastwest").await,
            "istiod is still exposed"
        );
    }
    assert!(!exists(&webhooks, &injector).await);
    assert!(!exists(&Api::<ControlPlane>::all(remote.clone()), &mesh.name).await);
    // A CRD deleted is gone once the API server has cleaned up its objects: a moment later, or
    // it is still being deleted (no deletion asked: it would stay).
    let crds = Api::<CustomResourceDefinition>::all(remote.clone());
    let left = crds.list(&ListParams::default()).await.unwrap();
    let left: Vec<_> = left
        .items
        .iter()
        .filter(|crd| crd.metadata.deletion_timestamp.is_none())
        .filter_map(|crd| crd.metadata.name.clone())
        .filter(|name| name.ends_with(".istio.io") || name.ends_with(".smm.dev"))
        .collect();
    assert!(left.is_empty(), "CRDs left in the remote plane: {left:?}");
    let namespaces = Api::<Namespace>::all(remote.clone());
    for gone in [mesh_namespace.as_str(), "smm-system"] {
        let found = namespaces.get_opt(gone).await.unwrap();
        let terminating = found
            .as_ref()
            .and_then(|ns| ns.metadata.deletion_timestamp.as_ref())
            .is_some();
        assert!(
            found.is_none() || terminating,
            "namespace {gone} left in the remote plane"
        );
    }
    let stored = Api::<ControlPlane>::all(cluster.client.clone())
        .get(&mesh.name)
        .await
        .unwrap();
    assert!(stored.status.unwrap().clusters.is_empty());
}

/// A Service `hello` in a new namespace of the cluster `client` reaches; returns its host.
async fn service_only_in(client: &Client) -> String {
    let namespace = unique_name("demo");
    let object: Namespace =
        serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    let hello: Service = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &hello)
        .await
        .unwrap();
    format!("hello.{namespace}.svc.cluster.local")
}

/// The root certificate an istiod publishes in its namespace.
async fn published_root(client: &Client, namespace: &str) -> String {
    let config_maps =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), namespace);
    let mut root = String::new();
    wait_for(
        "no istio-ca-root-cert",
        Duration::from_secs(30),
        async || {
            let found = config_maps.get_opt("istio-ca-root-cert").await.unwrap();
            root = found
                .and_then(|cm| cm.data)
                .and_then(|data| data.get("root-cert.pem").cloned())
                .unwrap_or_default();
            !root.is_empty()
        },
    )
    .await;
    root
}

/// Two primaries of one mesh: attaching the second gives it an intermediate CA from the first's
/// root before its istiod is installed, and each real istiod a remote secret for the other
/// cluster, so each discovers a Service that exists only in the other, and both sign with one
/// root; detach takes the remote secrets back.
#[tokio::test]
async fn two_primaries_discover_each_other_and_share_one_root() {
    let cluster = TestCluster::connect().await;
    let _lock = istio_mesh_lock().await;
    let topology = |name: &str| json!({"multiCluster": {"meshID": "mesh2", "clusterName": name}});
    let mesh = Mesh::create_with(&cluster, unique_name("e2e-istions"), topology("east")).await;
    let namespace = mesh.namespace.clone();
    mesh.smm(&["install", "istiod"]);
    let istiod_a = LocalIstiod::start(&namespace, "");
    let plane = SecondPlane::start();
    let remote = &plane.client().await;
    let kubeconfig = plane.kubeconfig.display().to_string();

    // The second primary's ControlPlane, stored before its first reconcile.
    crate::support::ensure_control_plane_crd(remote).await;
    let mut theirs = json!({
        "apiVersion": "smm.dev/v1alpha1", "kind": "ControlPlane",
        "metadata": {"name": mesh.name},
        "spec": {"namespace": namespace, "imageRegistry": crate::istio::REGISTRY},
    });
    theirs["spec"]["multiCluster"] = topology("west")["multiCluster"].clone();
    theirs["spec"]["components"] = json!({"base": {"enabled": true}, "istiod": {"enabled": true},
        "prometheus": {"enabled": false}, "ingress-gateway": {"enabled": false},
        "egress-gateway": {"enabled": false}});
    Api::<ControlPlane>::all(remote.clone())
        .patch(
            &mesh.name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap();
    let attach = cluster_args(
        &["attach", "west", "--model", "primary"],
        &kubeconfig,
        &mesh,
    );
    assert_success("smm cluster attach --model primary", &smm(&attach));
    let remote_flags = [
        "--kubeconfig",
        kubeconfig.as_str(),
        "--control-plane",
        mesh.name.as_str(),
    ];
    assert_success(
        "smm install istiod (west)",
        &smm(&[&["install", "istiod"], &remote_flags[..]].concat()),
    );
    let istiod_b = LocalIstiod::start_on(Some(&plane.dir()), &namespace, "");

    // Each istiod discovers the other cluster's Service; both publish one root.
    let (in_a, in_b) = (
        service_only_in(&cluster.client).await,
        service_only_in(remote).await,
    );
    for (istiod, host) in [(&istiod_a, &in_b), (&istiod_b, &in_a)] {
        wait_for(
            &format!("{host} not in istiod's registry"),
            Duration::from_secs(30),
            async || registry_hosts(istiod).contains(host),
        )
        .await;
    }
    let root_a = published_root(&cluster.client, &namespace).await;
    let root_b = published_root(remote, &namespace).await;
    assert_eq!(root_a, root_b, "the two istiods publish different roots");

    // Detach: the remote secrets on both sides go, and with them the other cluster's Service.
    let detach = cluster_args(&["detach", "west"], &kubeconfig, &mesh);
    assert_success("smm cluster detach", &smm(&detach));
    wait_for(
        &format!("{in_b} still in istiod's registry"),
        Duration::from_secs(30),
        async || !registry_hosts(&istiod_a).contains(&in_b),
    )
    .await;
    let secrets_b = Api::<Secret>::namespaced(remote.clone(), &namespace);
    assert!(!exists(&secrets_b, "istio-remote-secret-east").await);
    // West's istiod, its ControlPlane and its cacerts are its own and stay.
    assert!(exists(&Api::<ControlPlane>::all(remote.clone()), &mesh.name).await);
    drop(istiod_b);
    assert_success(
        "smm uninstall (west)",
        &smm(&[&["uninstall", "-a", "--force"], &remote_flags[..]].concat()),
    );
}

/// The east-west gateway of a cluster on network `net-east`: its pods injected by the real
/// istiod and ready, its Service labelled with the network and opening the network gateway's
/// ports, the cross-network Gateway beside it, and istiod counting it as the network's gateway
/// once the Service has an address.
#[tokio::test]
async fn an_eastwest_gateway_is_its_networks_gateway_for_istiod() {
    let cluster = TestCluster::connect().await;
    let _lock = istio_mesh_lock().await;
    let topology = json!({"multiCluster": {"clusterName": "east", "network": "net-east"}});
    let mesh = Mesh::create_with(&cluster, unique_name("e2e-istions"), topology).await;
    let namespace = mesh.namespace.clone();
    mesh.smm(&["install", "istiod"]);
    let istiod = LocalIstiod::start(&namespace, "");
    mesh.smm(&["install", "eastwest-gateway"]);

    let services = Api::<Service>::namespaced(cluster.client.clone(), &namespace);
    let service = services.get("istio-eastwestgateway").await.unwrap();
    let labels = service.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("topology.istio.io/network").map(String::as_str),
        Some("net-east")
    );
    let ports: Vec<i32> = service
        .spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [15021, 15443, 15012, 15017]);
    let gvk = kube::api::GroupVersionKind::gvk("networking.istio.io", "v1", "Gateway");
    let gateways = Api::<kube::api::DynamicObject>::namespaced_with(
        cluster.client.clone(),
        &namespace,
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, "gateways"),
    );
    let gateway = gateways.get("cross-network-gateway").await.unwrap();
    assert_eq!(
        gateway.data["spec"]["servers"][0]["tls"]["mode"],
        "AUTO_PASSTHROUGH"
    );
    assert_eq!(gateway.data["spec"]["selector"]["istio"], "eastwestgateway");

    // The load balancer's address (no cloud here: written as a cloud controller would) makes it
    // the network's gateway in istiod's view.
    let address = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.44"}]}}});
    services
        .patch_status(
            "istio-eastwestgateway",
            &PatchParams::default(),
            &Patch::Merge(&address),
        )
        .await
        .unwrap();
    wait_for(
        "istiod does not list the network gateway",
        Duration::from_secs(30),
        async || {
            debug(&istiod, "networkz")
                .to_string()
                .contains("192.0.2.44")
        },
    )
    .await;
    let networks = debug(&istiod, "networkz").to_string();
    assert!(
        networks.contains("net-east") && networks.contains("15443"),
        "{networks}"
    );
}
