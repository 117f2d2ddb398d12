//! The mesh's charts as helm and the API server see them: `helm lint --strict` with defaults and
//! with every optional feature on, and every component rendered with smm's merged values and
//! validated by the real API server (server-side dry-run apply).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use smm::api::objects::{NativeObject, Presence};
use smm::api::{ComponentSpec, ControlPlaneSpec};
use smm::desired::resolve::{DesiredComponent, resolve};
use smm::mesh::catalog::Catalog;

use crate::support::{HelmTool, TestCluster, eventually, repo_root};

/// The values file that turns on every optional feature of `component`'s chart.
fn kitchen_sink(component: &str) -> PathBuf {
    repo_root()
        .join("tests/fixtures/kitchen-sink")
        .join(format!("{component}.yaml"))
}

fn kitchen_sink_values(component: &str) -> Value {
    let path = kitchen_sink(component);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Runs a command to completion, panicking with its output unless it succeeds.
fn run(command: &mut Command, stdin: Option<&str>) -> String {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{description}: {err}"));
    let mut pipe = child.stdin.take().expect("piped stdin");
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{description} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_chart_passes_strict_lint_with_defaults_and_kitchen_sink() {
    let helm = HelmTool::Helm4.path();
    let catalog = Catalog::builtin().unwrap();
    for component in catalog.components() {
        let chart = component.chart.materialize().unwrap();
        run(
            Command::new(&helm)
                .args(["lint", "--strict"])
                .arg(chart.path()),
            None,
        );
        let sink = kitchen_sink(component.name);
        assert!(sink.is_file(), "{} is missing", sink.display());
        run(
            Command::new(&helm)
                .args(["lint", "--strict"])
                .arg(chart.path())
                .arg("--values")
                .arg(&sink),
            None,
        );
    }
}

#[test]
fn a_wrong_value_type_is_rejected_by_helm_itself() {
    let helm = HelmTool::Helm4.path();
    let catalog = Catalog::builtin().unwrap();
    for component in catalog.components() {
        // Istio's base and istiod charts have no schema and no replica count of their own
        // (istiod's is left to its autoscaler by default): a value their templates use as a list
        // (base) or a string (istiod) shows helm refusing a wrong type there.
        let wrong = match component.name {
            "base" => "base.excludedCRDs=abc",
            "istiod" => "image.name=abc",
            // The node agents' charts range over their env as a map.
            "istio-cni" | "ztunnel" => "env=abc",
            _ => "replicaCount=abc",
        };
        let chart = component.chart.materialize().unwrap();
        let output = Command::new(&helm)
            .args(["template", "x"])
            .arg(chart.path())
            .args(["--set", wrong])
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "{}: {wrong} was accepted",
            component.name
        );
    }
}

/// A ControlPlane with every component enabled, each with `values_override(component)`, on a
/// named network (the east-west gateway is its network's gateway).
fn everything_enabled(
    namespace: &str,
    values_override: impl Fn(&str) -> Option<Value>,
) -> ControlPlaneSpec {
    let catalog = Catalog::builtin().unwrap();
    ControlPlaneSpec {
        namespace: Some(namespace.to_owned()),
        components: catalog
            .names()
            .into_iter()
            .map(|name| {
                let component = ComponentSpec {
                    enabled: Some(true),
                    values_override: values_override(name),
                    ..ComponentSpec::default()
                };
                (name.to_owned(), component)
            })
            .collect(),
        multi_cluster: Some(smm::api::MultiCluster {
            cluster_name: "everything".to_owned(),
            network: Some("net1".to_owned()),
            ..smm::api::MultiCluster::default()
        }),
        ..ControlPlaneSpec::default()
    }
}

/// `helm template` of one component with smm's merged values, as the engine would install it.
fn render(desired: &DesiredComponent<'_>) -> String {
    let chart = desired.chart.materialize().unwrap();
    let values_dir = tempfile::tempdir().unwrap();
    let values = smm::helm::chart::write_values_file(values_dir.path(), &desired.values).unwrap();
    run(
        Command::new(HelmTool::Helm4.path())
            .arg("template")
            .arg(&desired.release.name)
            .arg(chart.path())
            .args(["--namespace", &desired.release.namespace])
            .arg("--values")
            .arg(&values),
        None,
    )
}

/// Every enabled component of `spec`, rendered in dependency order.
fn render_all(spec: &ControlPlaneSpec) -> Vec<(&'static str, String)> {
    let catalog = Catalog::builtin().unwrap();
    let desired = resolve(&catalog, spec).unwrap();
    desired
        .iter()
        .filter(|d| d.enabled)
        .map(|d| (d.name(), render(d)))
        .collect()
}

fn kubectl() -> PathBuf {
    repo_root().join(".tools/kubectl")
}

/// `manifests` without the documents of Istio's networking config.
fn without_istio_config(manifests: &str) -> String {
    manifests
        .split("\n---")
        .filter(|document| !document.contains("apiVersion: networking.istio.io/"))
        .collect::<Vec<_>>()
        .join("\n---")
}

/// Applies the natives for real (CRDs before what uses them), then every component's rendered
/// manifests as a server-side dry run, so the API server validates every object.
async fn validate_against_the_api_server(spec: ControlPlaneSpec) {
    let cluster = TestCluster::connect().await;
    let catalog = Catalog::builtin().unwrap();
    let desired = resolve(&catalog, &spec).unwrap();
    let natives: Vec<NativeObject> = desired.iter().flat_map(|d| d.native.clone()).collect();
    let established = eventually(Duration::from_secs(30), || async {
        smm::cluster::objects::apply(&cluster.client, &natives)
            .await
            .map(|outcome| outcome.not_ready.is_empty())
            .unwrap_or(false)
    })
    .await;
    assert!(
        established,
        "the mesh's CRDs were not established within 30s"
    );

    let rendered = render_all(&spec);
    for (component, manifests) in &rendered {
        // Istio's own config (the east-west gateway's cross-network Gateway) would go through the
        // validating webhook of whichever istiod another test has registered, which may not run:
        // it is applied for real, through its own running istiod, in the multicluster tests.
        let manifests = &without_istio_config(manifests);
        let output = run(
            // A dry run changes nothing, so whoever owns a field now does not matter: Istio's
            // cluster-wide objects (the default validator) may belong to another test's mesh.
            Command::new(kubectl()).args([
                "apply",
                "--server-side",
                "--dry-run=server",
                "--force-conflicts",
                "--field-manager=smm-e2e",
                "-f",
                "-",
            ]),
            Some(manifests),
        );
        let objects = manifests
            .lines()
            .filter(|line| line.starts_with("kind:"))
            .count();
        let validated = output.matches("(server dry run)").count();
        assert!(
            objects > 0 && validated == objects,
            "{component}: {validated} of {objects} objects validated: {output}"
        );
    }
    remove_cluster_scoped_natives(&cluster, &spec).await;
}

/// Cluster-scoped natives (cluster roles named after the namespace) outlive the test namespace;
/// everything disabled wants them absent. CRDs are shared and stay.
async fn remove_cluster_scoped_natives(cluster: &TestCluster, spec: &ControlPlaneSpec) {
    let mut disabled = spec.clone();
    for component in disabled.components.values_mut() {
        *component = ComponentSpec {
            enabled: Some(false),
            ..ComponentSpec::default()
        };
    }
    let catalog = Catalog::builtin().unwrap();
    let natives: Vec<NativeObject> = resolve(&catalog, &disabled)
        .unwrap()
        .into_iter()
        .flat_map(|d| d.native)
        .collect();
    assert!(natives.iter().all(|n| n.presence == Presence::Absent));
    smm::cluster::objects::apply(&cluster.client, &natives)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_component_with_defaults_is_valid_for_the_api_server() {
    let cluster = TestCluster::connect().await;
    let namespace = cluster.namespace("e2e-charts").await;
    validate_against_the_api_server(everything_enabled(&namespace.name, |_| None)).await;
}

#[tokio::test]
async fn every_component_with_every_feature_on_is_valid_for_the_api_server() {
    let cluster = TestCluster::connect().await;
    let namespace = cluster.namespace("e2e-sink").await;
    let spec = everything_enabled(&namespace.name, |name| Some(kitchen_sink_values(name)));
    validate_against_the_api_server(spec).await;
}

/// An air-gapped registry rewrites every image, Istio's and the add-ons' alike, including the
/// proxy image istiod's injector puts into workloads.
#[test]
fn an_image_registry_rewrites_every_image() {
    let registry = "registry.local:5000";
    for overrides in [false, true] {
        let mut spec =
            everything_enabled("mesh", |name| overrides.then(|| kitchen_sink_values(name)));
        spec.image_registry = Some(registry.to_owned());
        spec.revision = Some("canary".to_owned());
        let mut images = 0;
        for (component, manifests) in render_all(&spec) {
            for line in manifests.lines().map(str::trim) {
                let Some(image) = line
                    .strip_prefix("image:")
                    .or_else(|| line.strip_prefix("- image:"))
                    .or_else(|| line.strip_prefix("\"image\":"))
                    .or_else(|| line.strip_prefix("\"hub\":"))
                else {
                    continue;
                };
                let image = image.trim().trim_matches(|c| c == '"' || c == ',');
                // istiod's injection template, rendered by istiod from the values checked here;
                // in Istio's values, image names that the charts join to the hub checked here
                // (`proxyv2`, `pilot`), an empty hub meaning the global one, `auto` (the
                // injector fills in the proxy image) and a CRD schema's `image:` property.
                if image.starts_with("{{")
                    || image.is_empty()
                    || image == "auto"
                    || !image.contains(['/', ':'])
                {
                    continue;
                }
                // Istio's opt-in `grpc-simple` injection template (only for pods that ask for
                // it by annotation) names this image itself; the README says so.
                if image == GRPC_SIMPLE_IMAGE {
                    continue;
                }
                images += 1;
                assert!(
                    image.starts_with(&format!("{registry}/")),
                    "{component}: {line}"
                );
            }
        }
        // istiod, its injector's hub, prometheus, grafana, jaeger, kiali.
        assert!(images >= 5, "only {images} images found");
    }
}

/// smm refuses such a registry before rendering; the add-on charts quote the image anyway, so a
/// value with a newline stays one string and cannot add fields or objects to what is applied.
#[test]
fn the_add_on_charts_quote_the_image_registry() {
    let injected = "r.io\nkind: Secret\n---\nkind: Secret";
    let values_dir = tempfile::tempdir().unwrap();
    let values = serde_json::json!({"global": {"imageRegistry": injected}});
    let values = smm::helm::chart::write_values_file(values_dir.path(), &values).unwrap();
    let catalog = Catalog::builtin().unwrap();
    for component in ["prometheus", "grafana", "tracing", "kiali"] {
        let chart = catalog.get(component).unwrap().chart.materialize().unwrap();
        let rendered = run(
            Command::new(HelmTool::Helm4.path())
                .args(["template", component])
                .arg(chart.path())
                .arg("--values")
                .arg(&values),
            None,
        );
        let mut images = Vec::new();
        for document in serde_yaml_ng::Deserializer::from_str(&rendered) {
            let object = Value::deserialize(document).unwrap();
            assert_ne!(object["kind"], "Secret", "{component}: {rendered}");
            let containers = &object["spec"]["template"]["spec"]["containers"];
            images.extend(
                containers
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c["image"].clone()),
            );
        }
        assert!(!images.is_empty(), "{component}: no image rendered");
        for image in images {
            assert!(
                image
                    .as_str()
                    .is_some_and(|image| image.starts_with(injected)),
                "{component}: {image}"
            );
        }
    }
}

/// The one image Istio's charts name outside `global.hub`, in the opt-in `grpc-simple` injection
/// template.
pub const GRPC_SIMPLE_IMAGE: &str = "busybox:1.28";

#[test]
fn kitchen_sinks_exist_only_for_components() {
    let catalog = Catalog::builtin().unwrap();
    for entry in std::fs::read_dir(repo_root().join("tests/fixtures/kitchen-sink")).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            catalog.get(&stem).is_some(),
            "{} belongs to no component",
            path.display()
        );
    }
}

/// A binary built by one of our build scripts (once per version, cached), which prints its path
/// last.
fn built_by(script: &str) -> PathBuf {
    let path = run(&mut Command::new(repo_root().join(script)), None);
    PathBuf::from(
        path.lines()
            .last()
            .unwrap_or_else(|| panic!("{script} prints the binary's path")),
    )
}

/// The objects smm renders for `component` alone, enabled with `values` as its override.
fn render_component(component: &str, values: Option<Value>) -> Vec<Value> {
    render_component_in(ControlPlaneSpec::default(), component, values)
}

/// `component` rendered as a ControlPlane that is `spec` with the component on, with `values`.
fn render_component_in(
    spec: ControlPlaneSpec,
    component: &str,
    values: Option<Value>,
) -> Vec<Value> {
    let spec = spec.with_component(component, |c| {
        c.enabled = Some(true);
        c.values_override = values;
    });
    let (_, rendered) = render_all(&spec)
        .into_iter()
        .find(|(name, _)| *name == component)
        .unwrap();
    documents(&rendered)
}

/// The objects of a multi-document YAML rendering.
fn documents(rendered: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(rendered)
        .filter_map(|document| Value::deserialize(document).ok())
        .filter(|object| !object.is_null())
        .collect()
}

/// The rendered object of `kind` named `name`.
fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// The configuration file the chart's workload runs with, as its pod sees it: the path in the
/// container's `--<flag>=` argument, and the ConfigMap mounted at that path's directory. Every
/// file of that ConfigMap is written to `dir`, so files that name each other relatively (rule
/// files beside a configuration) find each other there as in the pod; returns the path in `dir`.
fn configuration_file(objects: &[Value], flag: &str, dir: &std::path::Path) -> PathBuf {
    let pod = &objects
        .iter()
        .find(|object| object["kind"] == "Deployment" || object["kind"] == "StatefulSet")
        .expect("the chart renders a workload")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let prefix = format!("--{flag}=");
    let path = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|arg| arg.as_str()?.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the container has no {prefix} argument"));
    let (mount_path, file) = path.rsplit_once('/').unwrap();
    let volume = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|mount| mount["mountPath"] == mount_path)
        .unwrap_or_else(|| panic!("nothing is mounted at {mount_path}"))["name"]
        .clone();
    let config_map = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == volume)
        .and_then(|v| v["configMap"]["name"].as_str())
        .unwrap_or_else(|| panic!("{mount_path} is not a ConfigMap"));
    let data = object(objects, "ConfigMap", config_map)["data"]
        .as_object()
        .unwrap_or_else(|| panic!("ConfigMap {config_map} has no data"));
    assert!(
        data.contains_key(file),
        "ConfigMap {config_map} has no {file}"
    );
    for (key, text) in data {
        std::fs::write(dir.join(key), text.as_str().unwrap()).unwrap();
    }
    dir.join(file)
}

/// The configuration the prometheus chart renders, with defaults and with every feature on, is
/// one the real Prometheus accepts, rules included: `promtool check config` and `promtool check
/// rules` of the very release smm installs (the Prometheus Istio's module tests with, which the
/// chart's image runs), on the files as the pod mounts them.
#[test]
fn the_prometheus_configuration_passes_promtool() {
    let promtool = built_by("scripts/prometheus/build.sh");
    let version = run(Command::new(&promtool).arg("--version"), None);
    let catalog = Catalog::builtin().unwrap();
    let tag = catalog
        .get("prometheus")
        .unwrap()
        .chart
        .metadata()
        .unwrap()
        .app_version
        .unwrap();
    assert!(
        version.contains(&format!("version {}", tag.trim_start_matches('v'))),
        "promtool is not Prometheus {tag}: {version}"
    );
    // With defaults, Envoy's own statistics; every feature on, in an ambient mesh (whose
    // ztunnel smm has it scrape), adds ztunnel and scrapes the proxies' merged metrics instead.
    let ambient = ControlPlaneSpec {
        profile: Some(smm::api::Profile::Ambient),
        ..ControlPlaneSpec::default()
    };
    for (spec, values, jobs) in [
        (
            ControlPlaneSpec::default(),
            None,
            &["prometheus", "istiod", "envoy-stats"][..],
        ),
        (
            ambient,
            Some(kitchen_sink_values("prometheus")),
            &[
                "prometheus",
                "istiod",
                "kubernetes-pods",
                "ztunnel",
                "node-exporter",
            ],
        ),
    ] {
        let objects = render_component_in(spec, "prometheus", values);
        let dir = tempfile::tempdir().unwrap();
        let file = configuration_file(&objects, "config.file", dir.path());
        let config: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let rendered_jobs: Vec<&str> = config["scrape_configs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|job| job["job_name"].as_str().unwrap())
            .collect();
        assert_eq!(rendered_jobs, jobs);

        // promtool reads the rule files the configuration names too, relative to it.
        let checked = run(
            Command::new(&promtool).args(["check", "config"]).arg(&file),
            None,
        );
        assert!(
            checked.contains("SUCCESS: 1 rule files found") && checked.contains("is valid"),
            "{checked}"
        );
        let rule_files = config["rule_files"].as_array().expect("rule_files");
        for rules in rule_files {
            let rules = dir.path().join(rules.as_str().unwrap());
            let checked = run(
                Command::new(&promtool).args(["check", "rules"]).arg(&rules),
                None,
            );
            let found: usize = checked
                .split_once("SUCCESS: ")
                .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("{checked}"));
            assert!(found > 0, "{}: no rules: {checked}", rules.display());
        }
    }
}

/// A port nothing listens on now, one per name (all held open together, so all different).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [std::net::TcpListener; N] =
        std::array::from_fn(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    listeners.map(|listener| listener.local_addr().unwrap().port())
}

/// Status and body of one HTTP/1.0 request to 127.0.0.1 (1.0: the answer is never chunked and
/// ends with the connection), or None while nothing answers.
fn http(port: u16, method: &str, path: &str, json: Option<&str>) -> Option<(u16, String)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let body = json.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some((status, body.to_owned()))
}

/// A process killed and reaped however the test ends.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The configuration the tracing chart renders runs the real Jaeger 2, and it does what the mesh
/// needs: healthy on the probes' endpoint, spans received over Zipkin (what Istio's proxies
/// send) and OTLP/HTTP, and both read back from the query API. The binary is the approved
/// Jaeger module (scripts/jaeger/versions.env), an older v2 release than the chart's image; the
/// chart keeps to configuration both accept. Only the listen address and ports are moved, by
/// chart values, to loopback and free ports.
#[test]
fn the_jaeger_configuration_runs_jaeger() {
    let jaeger = built_by("scripts/jaeger/build.sh");
    let versions =
        std::fs::read_to_string(repo_root().join("scripts/jaeger/versions.env")).unwrap();
    let release = versions
        .lines()
        .find_map(|line| line.strip_prefix("JAEGER_RELEASE="))
        .expect("versions.env names the release");
    let version = run(Command::new(&jaeger).arg("version"), None);
    assert!(
        version.contains(release),
        "jaeger is not {release}: {version}"
    );

    let names = [
        "otlpGrpc",
        "otlpHttp",
        "zipkin",
        "query",
        "queryGrpc",
        "health",
        "metrics",
    ];
    let ports: std::collections::BTreeMap<&str, u16> =
        names.into_iter().zip(free_ports::<7>()).collect();
    let values = serde_json::json!({"listen": {"host": "127.0.0.1", "ports": ports}});
    let objects = render_component("tracing", Some(values));
    let dir = tempfile::tempdir().unwrap();
    let config = configuration_file(&objects, "config", dir.path());
    let log_path = dir.path().join("jaeger.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut process = KilledOnDrop(
        Command::new(&jaeger)
            .arg(format!("--config={}", config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Healthy where the readiness probe asks, by the port's name in the pod.
    let container =
        &object(&objects, "Deployment", "jaeger")["spec"]["template"]["spec"]["containers"][0];
    let probe = &container["readinessProbe"]["httpGet"];
    let probe_port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|port| port["name"] == probe["port"])
        .and_then(|port| port["containerPort"].as_u64())
        .expect("the probe names a container port");
    assert_eq!(probe_port, u64::from(ports["health"]));
    let probe_path = probe["path"].as_str().unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = process.0.try_wait().unwrap() {
            panic!(
                "jaeger exited ({status}) with the rendered configuration:\n{}",
                log()
            );
        }
        if http(ports["health"], "GET", probe_path, None).is_some_and(|(code, _)| code == 200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "jaeger was not healthy within 60s:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    // 128-bit ids whose high half is not zero (Jaeger shortens those), unique per run.
    let trace_id = |n: u128| {
        format!(
            "{:032x}",
            u128::from(std::process::id()) << 96 | (now.as_nanos() * 2 + n)
        )
    };
    let zipkin_trace = trace_id(0);
    let zipkin_span = serde_json::json!([{
        "traceId": zipkin_trace,
        "id": "00000000000000a1",
        "name": "zipkin-operation",
        "kind": "SERVER",
        "timestamp": now.as_micros() as u64,
        "duration": 1500,
        "localEndpoint": {"serviceName": "smm-e2e-zipkin"},
    }]);
    let (code, body) = http(
        ports["zipkin"],
        "POST",
        "/api/v2/spans",
        Some(&zipkin_span.to_string()),
    )
    .expect("the Zipkin receiver answers");
    assert!((200..300).contains(&code), "Zipkin: {code} {body}");
    let otlp_trace = trace_id(1);
    let otlp_span = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "smm-e2e-otlp"}},
        ]},
        "scopeSpans": [{"spans": [{
            "traceId": otlp_trace,
            "spanId": "00000000000000b1",
            "name": "otlp-operation",
            "kind": 2,
            "startTimeUnixNano": now.as_nanos().to_string(),
            "endTimeUnixNano": (now.as_nanos() + 1_500_000).to_string(),
        }]}],
    }]});
    let (code, body) = http(
        ports["otlpHttp"],
        "POST",
        "/v1/traces",
        Some(&otlp_span.to_string()),
    )
    .expect("the OTLP receiver answers");
    assert!((200..300).contains(&code), "OTLP: {code} {body}");

    // Stored and queryable: each trace by its id, with its span and service.
    for (trace, operation, service) in [
        (&zipkin_trace, "zipkin-operation", "smm-e2e-zipkin"),
        (&otlp_trace, "otlp-operation", "smm-e2e-otlp"),
    ] {
        let path = format!("/api/traces/{trace}");
        let started = std::time::Instant::now();
        let trace = loop {
            if let Some((200, body)) = http(ports["query"], "GET", &path, None) {
                break serde_json::from_str::<Value>(&body).unwrap();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{path} was not found within 30s:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        let trace = &trace["data"][0];
        assert_eq!(trace["spans"][0]["operationName"], operation, "{trace}");
        let sender = &trace["processes"][trace["spans"][0]["processID"].as_str().unwrap()];
        assert_eq!(sender["serviceName"], service, "{trace}");
    }
    let (_, services) = http(ports["query"], "GET", "/api/services", None).unwrap();
    let services: Value = serde_json::from_str(&services).unwrap();
    let mut services: Vec<&str> = services["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    services.sort_unstable();
    // Only what was sent: Jaeger does not trace itself into itself.
    assert_eq!(services, ["smm-e2e-otlp", "smm-e2e-zipkin"]);
}

/// Where istiod's meshConfig sends the proxies' spans while tracing is enabled is a Service the
/// tracing chart renders, whose port leads to the pod port Jaeger's Zipkin receiver listens on;
/// so is the name Istio's defaults and documentation use, `zipkin:9411`.
#[test]
fn the_proxies_tracing_address_reaches_jaegers_zipkin_receiver() {
    let spec = everything_enabled("mesh", |_| None);
    let catalog = Catalog::builtin().unwrap();
    let desired = resolve(&catalog, &spec).unwrap();
    let component = |name: &str| desired.iter().find(|d| d.name() == name).unwrap();
    let address =
        component("istiod").values["meshConfig"]["defaultConfig"]["tracing"]["zipkin"]["address"]
            .as_str()
            .expect("istiod's values name a Zipkin address")
            .to_owned();
    let tracing = component("tracing");
    let objects = documents(&render(tracing));
    let dir = tempfile::tempdir().unwrap();
    let config = configuration_file(&objects, "config", dir.path());
    let config: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let receiver = config["receivers"]["zipkin"]["endpoint"].as_str().unwrap();
    let container =
        &object(&objects, "Deployment", "jaeger")["spec"]["template"]["spec"]["containers"][0];

    let namespace = &tracing.release.namespace;
    for address in [address, format!("zipkin.{namespace}.svc:9411")] {
        let (host, port) = address.rsplit_once(':').unwrap();
        let service = host
            .strip_suffix(&format!(".{namespace}.svc"))
            .unwrap_or_else(|| panic!("{address} is not a Service in {namespace}"));
        let service = object(&objects, "Service", service);
        assert_eq!(service["metadata"]["namespace"], namespace.as_str());
        let target = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"].as_u64() == port.parse().ok())
            .unwrap_or_else(|| panic!("{address}: the Service has no port {port}"))["targetPort"]
            .clone();
        let pod_port = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == target)
            .unwrap_or_else(|| panic!("{address}: no container port {target}"))["containerPort"]
            .as_u64()
            .unwrap();
        assert!(
            receiver.ends_with(&format!(":{pod_port}")),
            "{address} leads to port {pod_port}, the Zipkin receiver listens on {receiver}"
        );
    }
}

/// The grafana release holds every dashboard of the pinned Istio module (fetched into
/// `.upstream/istio/dashboards`), each by its title and uid, mounted into the directory its
/// provider reads and queried through the default Prometheus data source; its helm record
/// stays far below what a release Secret holds.
#[test]
fn the_grafana_release_holds_every_dashboard_of_istios_module() {
    let ids = |dashboard: &Value| (dashboard["title"].clone(), dashboard["uid"].clone());
    let mut istio: Vec<(Value, Value)> =
        std::fs::read_dir(repo_root().join(".upstream/istio/dashboards"))
            .unwrap()
            .map(|entry| {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                ids(&serde_json::from_str(&text).unwrap())
            })
            .collect();
    istio.sort_by_key(|(title, _)| title.to_string());
    assert!(istio.len() >= 5, "{istio:?}");

    let spec = ControlPlaneSpec::default().with_enabled("grafana", true);
    let catalog = Catalog::builtin().unwrap();
    let desired = resolve(&catalog, &spec).unwrap();
    let grafana = desired.iter().find(|d| d.name() == "grafana").unwrap();
    let manifest = render(grafana);
    let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&manifest)
        .filter_map(|document| Value::deserialize(document).ok())
        .filter(|object| !object.is_null())
        .collect();
    let config_maps = || objects.iter().filter(|o| o["kind"] == "ConfigMap");
    let mut rendered: Vec<(Value, Value)> = config_maps()
        .filter(|o| {
            o["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("grafana-dashboard-")
        })
        .flat_map(|o| o["data"].as_object().unwrap().values())
        .map(|json| ids(&serde_json::from_str(json.as_str().unwrap()).unwrap()))
        .collect();
    rendered.sort_by_key(|(title, _)| title.to_string());
    assert_eq!(rendered, istio);

    let provisioning = config_maps()
        .find(|o| o["metadata"]["name"] == "grafana-provisioning")
        .unwrap();
    let datasources: Value =
        serde_yaml_ng::from_str(provisioning["data"]["datasources.yaml"].as_str().unwrap())
            .unwrap();
    let prometheus = &datasources["datasources"][0];
    assert_eq!(
        (
            &prometheus["name"],
            &prometheus["type"],
            &prometheus["isDefault"]
        ),
        (&json!("Prometheus"), &json!("prometheus"), &json!(true))
    );
    assert_eq!(prometheus["url"], "http://prometheus.istio-system.svc:9090");
    let providers: Value =
        serde_yaml_ng::from_str(provisioning["data"]["dashboards.yaml"].as_str().unwrap()).unwrap();
    let path = providers["providers"][0]["options"]["path"].clone();
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("nothing is mounted at the provider's {path}"));
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(
        volume["projected"]["sources"].as_array().unwrap().len(),
        istio.len()
    );

    let size =
        smm::helm::record_size::estimate(&grafana.chart, &grafana.values, &manifest).unwrap();
    assert!(
        size.encoded < size.limit / 4,
        "the grafana release's record is {} of {} bytes",
        size.encoded,
        size.limit
    );
}
