//! `smm dashboard` end to end in a real browser (Debian's headless Chromium through
//! chromedriver): components installed on the real plane, the page showing the graph, phases,
//! the mesh and the plan, following a change without a reload, at desktop and phone width;
//! requests without the token refused. Screenshots go to `target/dashboard-screenshots/`.
//! Also the operator's dashboard: loopback only.
//!
//! A binary of its own: the operator test below runs an operator process, which must not see
//! the ControlPlanes of the other end-to-end tests while they run.

#[path = "../support/mod.rs"]
mod support;
mod webdriver;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use smm::api::ControlPlane;

use support::{
    HelmTool, TestCluster, assert_success, fresh_control_plane, repo_root, smm, unique_name,
};
use webdriver::{Browser, free_port, http};

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `smm dashboard` and returns it with the URL it printed.
fn start_dashboard(control_plane: &str) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smm"))
        .args(["dashboard", "--no-open", "--control-plane", control_plane])
        .env("SMM_HELM", HelmTool::Helm4.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("smm dashboard starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("smm dashboard prints its URL");
    let url = line.trim().to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/?token="),
        "printed {url:?}"
    );
    (running, url)
}

fn proxy_pod(name: &str, proxy_image: Option<&str>) -> Pod {
    let mut containers = vec![json!({"name": "app", "image": "app:1"})];
    if let Some(image) = proxy_image {
        containers.push(json!({"name": "istio-proxy", "image": image}));
    }
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": containers}
    }))
    .unwrap()
}

/// A script that is true when the graph shows `component` as `phase`, in words in the node.
fn graph_shows(component: &str, phase: &str) -> String {
    format!(
        r#"const n = document.querySelector('#graph-body g.node[data-component="{component}"]');
           return !!n && n.getAttribute('data-phase') === '{phase}'
               && n.querySelectorAll('text')[1].textContent === '{phase}';"#
    )
}

#[tokio::test]
async fn dashboard_in_a_real_browser_follows_the_control_plane() {
    let cluster = TestCluster::connect().await;
    let (name, mesh_namespace) = fresh_control_plane(&cluster).await;
    let cp_flag = ["--control-plane", name.as_str()];
    // A cluster of a mesh of several (one attached cluster is recorded below), for the
    // clusters' section; the attach itself is proven in the e2e tests, with two planes.
    let control_planes = Api::<ControlPlane>::all(cluster.client.clone());
    let multi_cluster =
        json!({"spec": {"multiCluster": {"clusterName": "cluster-a", "network": "net1"}}});
    control_planes
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&multi_cluster),
        )
        .await
        .unwrap();
    assert_success(&smm(
        &[&["install", "istiod", "prometheus"], &cp_flag[..]].concat()
    ));
    // A tag following the active (revisionless) revision, for the revisions' section.
    assert_success(&smm(&[&["tag", "set", "canary"], &cp_flag[..]].concat()));
    // The attached cluster, recorded as unreachable.
    let attached = json!({"status": {"clusters": [{
        "name": "cluster-b", "model": "remote", "network": "net1", "reachable": false,
        "message": "cluster cluster-b: cannot reach its API server",
    }]}});
    control_planes
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&attached))
        .await
        .unwrap();

    // An application namespace: pods made before it is labelled for injection, since the
    // injector of any installed istiod would refuse new pods there (nothing answers it).
    let istiod_version = support::istiod_tag();
    let apps = cluster.namespace("dash-apps").await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &apps.name);
    for (pod, image) in [
        (
            "old-proxy",
            Some("docker.io/istio/proxyv2:0.9.0".to_owned()),
        ),
        (
            "current-proxy",
            Some(format!("docker.io/istio/proxyv2:{istiod_version}")),
        ),
        ("no-proxy", None),
    ] {
        pods.create(&PostParams::default(), &proxy_pod(pod, image.as_deref()))
            .await
            .unwrap();
    }
    Api::<Namespace>::all(cluster.client.clone())
        .patch(
            &apps.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"istio-injection": "enabled"}}})),
        )
        .await
        .unwrap();
    // An Event about the ControlPlane, as the operator records them.
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    let event_name = unique_name("dash-event");
    events
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": event_name},
                "involvedObject": {"apiVersion": "smm.dev/v1alpha1", "kind": "ControlPlane", "name": name},
                "reason": "Installed",
                "message": "prometheus installed (event from the dashboard test)",
                "type": "Normal"
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    let (_dashboard, url) = start_dashboard(&name);
    let port: u16 = url["http://127.0.0.1:".len()..]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let token = url.split("token=").nth(1).unwrap().to_owned();

    // Without the token: 401, for the page and the API alike; a wrong token too.
    assert_eq!(http(port, "GET", "/", &[], None).status, 401);
    assert_eq!(
        http(port, "GET", "/api/controlplanes", &[], None).status,
        401
    );
    assert_eq!(http(port, "GET", "/?token=0000", &[], None).status, 401);
    let cookie = format!("smm_dashboard_{port}=wrong");
    assert_eq!(
        http(
            port,
            "GET",
            "/api/controlplanes",
            &[("Cookie", &cookie)],
            None
        )
        .status,
        401
    );
    // With it, the graph is also an SVG of its own.
    let bearer = format!("Bearer {token}");
    let svg = http(
        port,
        "GET",
        &format!("/api/controlplanes/{name}/graph.svg"),
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!(svg.status, 200, "{}", svg.body);
    assert!(
        svg.head
            .to_ascii_lowercase()
            .contains("content-type: image/svg+xml")
    );
    assert!(
        svg.body
            .contains(r#"data-component="prometheus" data-phase="Available""#),
        "{}",
        svg.body
    );
    // A page whose name was made to resolve to 127.0.0.1 (DNS rebinding), or another port.
    for host in [
        format!("rebind.attacker.example:{port}"),
        "localhost:1".to_owned(),
    ] {
        let headers = [("Host", host.as_str()), ("Authorization", bearer.as_str())];
        assert_eq!(
            http(port, "GET", "/api/controlplanes", &headers, None).status,
            421
        );
    }

    let browser = Browser::start(1280, 1000);
    browser.goto(&url);
    // The token was swapped for a cookie and left the address bar.
    let location = browser.execute("return location.href;");
    assert_eq!(location, json!(format!("http://127.0.0.1:{port}/")));
    let wait = Duration::from_secs(60);
    assert!(
        browser.wait_for(wait, &graph_shows("prometheus", "Available")),
        "the graph shows prometheus Available: {}",
        browser.execute("return document.body.innerText;")
    );
    assert!(browser.wait_for(wait, &graph_shows("istiod", "Available")));
    assert!(browser.wait_for(wait, &graph_shows("base", "Available")));
    assert!(browser.wait_for(wait, &graph_shows("grafana", "Not installed")));
    // An edge from each dependency to its dependent.
    assert_eq!(
        browser.execute(r#"return document.querySelectorAll('#graph-body line.edge[data-from="base"][data-to="istiod"]').length;"#),
        json!(1)
    );
    assert_eq!(
        browser
            .execute("return document.querySelector('#overview-body .state .badge').textContent;"),
        json!("Ready")
    );
    assert_eq!(
        browser.execute("return document.getElementById('control-plane').value;"),
        json!(name)
    );
    // Per component: workloads, the event that names it, values.
    let prometheus = browser.execute(
        r#"const d = document.querySelector('#components-body details[data-component="prometheus"]');
           d.open = true; return d.innerText;"#,
    );
    let prometheus = prometheus.as_str().unwrap();
    assert!(prometheus.contains("Deployment"), "{prometheus}");
    assert!(prometheus.contains("1/1"), "{prometheus}");
    assert!(
        prometheus.contains("event from the dashboard test"),
        "{prometheus}"
    );
    assert!(prometheus.contains("Merged values"), "{prometheus}");
    // The mesh: the labelled namespace, each pod with or without its proxy, the skewed one marked.
    let skewed = browser.execute(
        "return [...document.querySelectorAll('#mesh-body tr.skew')].map(r => r.innerText).join('\\n');",
    );
    assert!(browser.wait_for(wait, "return document.querySelector('#mesh-body') !== null && document.querySelector('#mesh-body').innerText.includes('no-proxy');"));
    let mesh = browser.execute("return document.getElementById('mesh-body').innerText;");
    let mesh = mesh.as_str().unwrap();
    assert!(mesh.contains(&apps.name), "{mesh}");
    assert!(
        mesh.contains("current-proxy") && mesh.contains("no sidecar"),
        "{mesh}"
    );
    let skewed = skewed.as_str().unwrap();
    assert!(
        skewed.contains("old-proxy") && skewed.contains("skew"),
        "{skewed}"
    );
    assert!(!skewed.contains("current-proxy"), "{skewed}");
    // Revisions: the revisionless one, active and ready, with the tag that follows it.
    assert!(
        browser.wait_for(
            wait,
            r#"const r = document.querySelector('#revisions-body tr[data-revision="default"]');
               return !!r && r.querySelectorAll('td')[2].innerText === 'yes';"#
        ),
        "the revisions show default active: {}",
        browser.execute("return document.getElementById('revisions-body').innerText;")
    );
    let tag = browser.execute(
        r#"return [...document.querySelectorAll('#revisions-body tr[data-tag="canary"] td')].map(c => c.innerText);"#,
    );
    assert_eq!(tag, json!(["canary", "default", "default", "yes"]));
    // Clusters: this one's place in the mesh, the attached one unreachable with its reason.
    assert!(
        browser.wait_for(
            wait,
            r#"const r = document.querySelector('#clusters-body tr[data-cluster="cluster-b"]');
               return !!r && r.querySelectorAll('td')[3].innerText === 'no';"#
        ),
        "the clusters show cluster-b unreachable: {}",
        browser.execute("return document.getElementById('clusters-body').innerText;")
    );
    let clusters = browser.execute("return document.getElementById('clusters-body').innerText;");
    let clusters = clusters.as_str().unwrap();
    assert!(
        clusters.contains("cluster-a") && clusters.contains("cannot reach"),
        "{clusters}"
    );
    // The plan: nothing to do.
    let plan = browser.execute("return document.getElementById('plan-body').innerText;");
    assert!(plan.as_str().unwrap().contains("Nothing to do"), "{plan}");
    // The add-on UIs: prometheus alone is enabled, with the command that opens it for this
    // ControlPlane.
    let addons = browser.execute(
        "return [...document.querySelectorAll('#addons-body tr[data-addon]')].map(r => r.dataset.addon + ': ' + r.querySelector('code').textContent);",
    );
    assert_eq!(
        addons,
        json!([format!(
            "prometheus: smm dashboard prometheus --control-plane {name}"
        )])
    );
    // The checks, run on demand: istiod is installed, but nothing answers its injector here,
    // so the dry-run pod in the injected namespace is refused, and the page says why.
    browser.execute("document.getElementById('run-checks').click();");
    assert!(
        browser.wait_for(
            wait,
            "return document.querySelectorAll('#checks-body li').length > 0;"
        ),
        "the checks ran: {}",
        browser.execute("return document.getElementById('checks-body').innerText;")
    );
    let checks = browser.execute("return document.getElementById('checks-body').innerText;");
    let checks = checks.as_str().unwrap();
    assert!(
        checks.contains("1 failed") || checks.contains("failed"),
        "{checks}"
    );
    assert!(checks.contains("✔ istiod: ready"), "{checks}");
    assert!(
        checks.contains(&format!(
            "× a pod in injected namespace {} was refused",
            apps.name
        )),
        "{checks}"
    );
    assert!(
        checks.contains("hint: istiod's injector cannot be reached"),
        "{checks}"
    );

    let screenshots = repo_root().join("target/dashboard-screenshots");
    browser.execute(
        "document.querySelectorAll('details').forEach(d => d.open = false); window.scrollTo(0, 0);",
    );
    browser.screenshot(&screenshots.join("dashboard-1280.png"));

    // A change to the ControlPlane shows up without a reload: the marker set in this page
    // survives.
    browser.execute("window.smmTestMarker = 'same page';");
    assert_success(&smm(&[&["install", "grafana"], &cp_flag[..]].concat()));
    assert!(
        browser.wait_for(wait, &graph_shows("grafana", "Available")),
        "the page follows the install: {}",
        browser.execute("return document.getElementById('graph-body').innerHTML;")
    );
    assert_eq!(
        browser.execute("return window.smmTestMarker;"),
        json!("same page")
    );
    assert!(
        browser.wait_for(
            wait,
            r#"return document.querySelector('#addons-body tr[data-addon="grafana"]') !== null;"#
        ),
        "the add-on UIs follow the install: {}",
        browser.execute("return document.getElementById('addons-body').innerText;")
    );

    // A changed password: the plan shows the upgrade and its values diff, the password masked
    // in the page and in the JSON alike.
    let password = "e2e-changed-password";
    Api::<smm::api::ControlPlane>::all(cluster.client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"components": {"grafana": {"valuesOverride": {
                    "adminPassword": password,
                    "env": [{"name": "GF_SECURITY_ADMIN_PASSWORD", "value": password}]
                }}}}}),
            ),
        )
        .await
        .unwrap();
    assert!(
        browser.wait_for(
            wait,
            "return document.getElementById('plan-body').innerText.includes('adminPassword');"
        ),
        "the plan shows the changed values: {}",
        browser.execute("return document.getElementById('plan-body').innerText;")
    );
    let plan = browser.execute("return document.getElementById('plan-body').innerText;");
    let plan = plan.as_str().unwrap();
    assert!(
        plan.contains("********") && !plan.contains(password),
        "{plan}"
    );
    let detail = http(
        port,
        "GET",
        &format!("/api/controlplanes/{name}"),
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!(detail.status, 200);
    assert!(
        detail.body.contains("valuesDiff") && !detail.body.contains(password),
        "{}",
        detail.body
    );

    // grafana restarted with pods that crash: a rollout in progress is not Available; the graph
    // and the component say so, with the reason `smm status` gives.
    let crash = json!({"spec": {"template": {"metadata": {"labels": {
        "smm.test/simulate": "crash-loop",
    }}}}});
    Api::<Deployment>::namespaced(cluster.client.clone(), &mesh_namespace)
        .patch("grafana", &PatchParams::default(), &Patch::Merge(crash))
        .await
        .unwrap();
    assert!(
        browser.wait_for(wait, &graph_shows("grafana", "Progressing")),
        "the graph shows grafana Progressing: {}",
        browser.execute("return document.getElementById('graph-body').innerHTML;")
    );
    let grafana = browser.execute(
        r#"const d = document.querySelector('#components-body details[data-component="grafana"]');
           d.open = true; return d.innerText;"#,
    );
    let grafana = grafana.as_str().unwrap();
    assert!(
        grafana.contains("container grafana is in CrashLoopBackOff, restarted 5 times"),
        "{grafana}"
    );

    // Phone width: one column, tables stacked into labelled lines, nothing wider than the screen.
    browser.resize(390, 844);
    assert!(browser.wait_for(
        Duration::from_secs(5),
        "return getComputedStyle(document.querySelector('table.stack thead')).position === 'absolute';"
    ));
    assert_eq!(
        browser.execute("return document.documentElement.scrollWidth <= window.innerWidth;"),
        json!(true),
        "the page fits a phone's width"
    );
    browser.screenshot(&screenshots.join("dashboard-phone.png"));
    drop(browser);

    assert_success(&smm(&[&["uninstall", "-a"], &cp_flag[..]].concat()));
    let _ = events.delete(&event_name, &DeleteParams::default()).await;
    let _ = Api::<smm::api::ControlPlane>::all(cluster.client.clone())
        .delete(&name, &DeleteParams::default())
        .await;
}

/// The operator serves the dashboard only on a loopback address: another address stops it at
/// start; on loopback it answers the API to the token of the Secret it made in its namespace,
/// and to a loopback Host only. The operator here stands by (a lease held by someone else), so
/// it reconciles nothing of the other tests'.
#[tokio::test]
async fn operator_serves_the_dashboard_on_loopback_only() {
    let cluster = TestCluster::connect().await;
    support::ensure_control_plane_crd(&cluster.client).await;
    let lease_namespace = cluster.namespace("dash-op").await;
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &lease_namespace.name);
    let now = k8s_openapi::jiff::Timestamp::now();
    leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": smm::operator::controller::LEADER_LEASE},
                "spec": {"holderIdentity": "another-replica", "leaseDurationSeconds": 3600,
                         "acquireTime": now.to_string(), "renewTime": now.to_string()}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let operator = |dashboard: &str, stderr: Stdio| {
        Command::new(env!("CARGO_BIN_EXE_smm"))
            .args([
                "operator",
                "run",
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args([
                "--leader-namespace",
                &lease_namespace.name,
                "--identity",
                "dash-test",
            ])
            .args(["--dashboard-listen", dashboard])
            .env("SMM_HELM", HelmTool::Helm4.path())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("the operator starts")
    };

    let refused = operator("0.0.0.0:0", Stdio::piped())
        .wait_with_output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("must listen on a loopback address"),
        "{stderr}"
    );

    let port = free_port();
    let _running = Running(operator(&format!("127.0.0.1:{port}"), Stdio::inherit()));
    let mut answer = None;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            answer = Some(http(port, "GET", "/api/controlplanes", &[], None));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = answer.expect("the operator serves the dashboard");
    assert_eq!(answer.status, 401, "no token: {}", answer.body);
    let secret = Api::<Secret>::namespaced(cluster.client.clone(), &lease_namespace.name)
        .get("smm-operator-dashboard")
        .await
        .expect("the operator keeps its dashboard token in a Secret");
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    let bearer = format!("Bearer {token}");
    let answer = http(
        port,
        "GET",
        "/api/controlplanes",
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let list: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert!(
        list["items"].is_array() && list["preferred"].is_null(),
        "{list}"
    );
    // Through a port-forward the local port is another: any port of a loopback name will do.
    let forwarded_host = [("Host", "localhost:18081"), ("Authorization", &bearer)];
    let page = http(port, "GET", "/", &forwarded_host, None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("smm dashboard"));
    // A page whose name was made to resolve to 127.0.0.1 (DNS rebinding) is refused, token or not.
    let rebound = [
        ("Host", "rebind.attacker.example:8081"),
        ("Authorization", &bearer),
    ];
    assert_eq!(
        http(port, "GET", "/api/controlplanes", &rebound, None).status,
        421
    );
    // A redirect after the token is swapped for the cookie stays on this host.
    let redirect = http(
        port,
        "GET",
        &format!("//evil.example?token={token}"),
        &[],
        None,
    );
    assert_eq!(redirect.status, 303, "{}", redirect.head);
    assert!(
        redirect.head.contains("location: /evil.example")
            || redirect.head.contains("Location: /evil.example"),
        "{}",
        redirect.head
    );
}
