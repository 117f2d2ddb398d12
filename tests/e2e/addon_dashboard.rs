//! `smm dashboard ADDON`: an add-on's UI through smm's own port-forward. The plane's pods run no
//! container, so kwok stands in for the pod's port: a PortForward object (kwok's, named as the
//! pod) sends the pod's port to a server the test runs, and a request to the URL smm prints goes
//! the whole way: smm's listener, the API server, kwok as the node's kubelet, the test's server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{
    TestCluster, assert_success, fresh_control_plane, smm, smm_command, unique_name,
};
use smm::cluster::port_forward::{PortForwardError, service_target};
use smm::mesh::addons::ServicePort;

/// kwok's PortForward, in the namespace of the pod it is named after.
fn port_forwards(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kwok.x-k8s.io", "v1alpha1", "PortForward");
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk(&gvk))
}

/// Tells kwok that `pod`'s port `port` leads to `local` on this machine.
async fn forward_pod_port(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
    local: u16,
) {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "PortForward",
        "metadata": {"name": pod, "namespace": namespace},
        "spec": {"forwards": [{"ports": [port], "target": {"address": "127.0.0.1", "port": local}}]},
    }))
    .unwrap();
    port_forwards(client, namespace)
        .create(&PostParams::default(), &object)
        .await
        .expect("kwok's PortForward CRD is installed by scripts/cluster.sh");
}

/// A server that answers every HTTP request with `body`, as the add-on's container would.
async fn answering_server(body: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                // One request per connection: read its head, answer, close.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match connection.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = connection.write_all(answer.as_bytes()).await;
                let _ = connection.shutdown().await;
            });
        }
    });
    port
}

/// GET `url` (plain `http://HOST:PORT/PATH`): the response's head and body, read as a browser
/// reads them, up to the body's Content-Length (kwok keeps the pod's side of a forwarded
/// connection open until the client closes its own); none when it does not come within 30 s.
async fn get(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut connection = TcpStream::connect(authority).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    connection.write_all(request.as_bytes()).await.unwrap();
    let read = async {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&received).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("Content-Length: "))
                    .expect("a Content-Length")
                    .parse()
                    .unwrap();
                if body.len() >= length {
                    return (head.to_owned(), body.to_owned());
                }
            }
            let n = connection.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed after {text:?}");
            received.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .ok()
}

/// The `smm dashboard` of a test: killed if the test fails before it is stopped, so a failed
/// run leaves no forward running.
struct Dashboard(Option<Child>);

impl Dashboard {
    /// Stops it as Ctrl-C would and returns its exit status and stderr.
    fn interrupt(&mut self) -> (std::process::ExitStatus, String) {
        let child = self.0.take().expect("a running smm dashboard");
        let pid = i32::try_from(child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let output = child.wait_with_output().unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn dashboard_grafana_reaches_the_grafana_pod_through_the_api_server() {
    let cluster = TestCluster::connect().await;
    let (cp, namespace) = fresh_control_plane(&cluster).await;
    assert_success(&smm(&["install", "grafana", "--control-plane", &cp]));

    // The pod behind grafana's Service, and kwok told where its port 3000 leads.
    let selector = Api::<Service>::namespaced(cluster.client.clone(), &namespace)
        .get("grafana")
        .await
        .unwrap()
        .spec
        .unwrap()
        .selector
        .unwrap();
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &namespace)
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
        .unwrap();
    let [pod] = &pods.items[..] else {
        panic!(
            "one grafana pod, found {:?}",
            pods.items
                .iter()
                .map(ResourceExt::name_any)
                .collect::<Vec<_>>()
        );
    };
    let answer = unique_name("grafana-says");
    let server = answering_server(answer.clone()).await;
    forward_pod_port(&cluster.client, &namespace, &pod.name_any(), 3000, server).await;

    let mut child = smm_command(
        &[
            "dashboard",
            "grafana",
            "--control-plane",
            &cp,
            "--port",
            "0",
            "--no-browser",
        ],
        &[],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut dashboard = Dashboard(Some(child));
    let mut url = String::new();
    BufReader::new(stdout).read_line(&mut url).unwrap();
    let url = url.trim().to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url:?}"
    );

    // Two requests, two connections: each is a port-forward of its own.
    for _ in 0..2 {
        let Some((head, body)) = get(&url).await else {
            let (status, stderr) = dashboard.interrupt();
            panic!("no answer within 30s through {url}; smm ({status}) said:\n{stderr}");
        };
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert_eq!(body, answer);
    }

    let (status, stderr) = dashboard.interrupt();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains(&format!(
            "forwarded to pod {namespace}/{} port 3000",
            pod.name_any()
        )),
        "{stderr}"
    );

    assert_success(&smm(&["uninstall", "-a", "--control-plane", &cp]));
    let _ = port_forwards(&cluster.client, &namespace)
        .delete(&pod.name_any(), &DeleteParams::default())
        .await;
    let _ = Api::<smm::api::ControlPlane>::all(cluster.client.clone())
        .delete(&cp, &DeleteParams::default())
        .await;
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(cluster.client.clone())
        .delete(&namespace, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn dashboard_addon_names_what_keeps_it_from_opening() {
    let cluster = TestCluster::connect().await;
    let (cp, _namespace) = fresh_control_plane(&cluster).await;

    let refused = smm(&[
        "dashboard",
        "jaeger",
        "--control-plane",
        &cp,
        "--no-browser",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "jaeger is not enabled in ControlPlane {cp}: install it with `smm install tracing`"
        )),
        "{stderr}"
    );

    let kiali = smm(&["dashboard", "kiali", "--control-plane", &cp, "--no-browser"]);
    assert_eq!(kiali.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&kiali.stderr);
    let expected = format!("kiali is not enabled in ControlPlane {cp}");
    assert!(stderr.contains(&expected), "{stderr}");

    let _ = Api::<smm::api::ControlPlane>::all(cluster.client.clone())
        .delete(&cp, &DeleteParams::default())
        .await;
}

/// The pod is picked by the Service's selector, ready pods only; without one, each pod says why.
#[tokio::test]
async fn a_service_without_a_ready_pod_is_refused_with_each_pods_reason() {
    let cluster = TestCluster::connect().await;
    let namespace = cluster.namespace("e2e-pf").await;
    let ns = namespace.name.as_str();
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), ns);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "ui"},
        "spec": {"selector": {"app": "ui"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]},
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();

    let target = || service_target(&cluster.client, ns, "ui", ServicePort::Named("http"));
    let err = target().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the Service's selector matches no pod"),
        "{err}"
    );
    let err = service_target(&cluster.client, ns, "ui", ServicePort::Named("grpc"))
        .await
        .unwrap_err();
    assert!(matches!(err, PortForwardError::NoPort { .. }), "{err}");

    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let pod = |name: &str, simulate: Option<&str>| -> Pod {
        let mut labels = json!({"app": "ui"});
        if let Some(simulate) = simulate {
            labels["smm.test/simulate"] = json!(simulate);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "ui", "image": "ui:1", "ports": [{"name": "web", "containerPort": 8080}]}]},
        }))
        .unwrap()
    };
    pods.create(&PostParams::default(), &pod("ui-a", Some("never-ready")))
        .await
        .unwrap();
    let said = crate::support::eventually(Duration::from_secs(30), async || {
        target().await.is_err_and(|e| {
            e.to_string()
                .contains("pod ui-a: container ui is running but not ready")
        })
    })
    .await;
    assert!(said, "{:?}", target().await);

    pods.create(&PostParams::default(), &pod("ui-b", None))
        .await
        .unwrap();
    let ready =
        crate::support::eventually(Duration::from_secs(30), async || target().await.is_ok()).await;
    assert!(ready, "{:?}", target().await);
    let target = target().await.unwrap();
    assert_eq!((target.pod.as_str(), target.port), ("ui-b", 8080));
}
