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

/// A ControlPlane with every component enabled, each with `values_override(component)`.
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
        let output = run(
            Command::new(kubectl()).args([
                "apply",
                "--server-side",
                "--dry-run=server",
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

/// promtool from `scripts/prometheus/build.sh` (built once per version, cached).
fn promtool() -> PathBuf {
    let path = run(
        &mut Command::new(repo_root().join("scripts/prometheus/build.sh")),
        None,
    );
    PathBuf::from(
        path.lines()
            .last()
            .expect("build.sh prints promtool's path"),
    )
}

/// The configuration the prometheus chart renders, with defaults and with every feature on, is
/// one the real Prometheus accepts: `promtool check config` of the very release smm installs
/// (the Prometheus Istio's module tests with, which the chart's image runs).
#[test]
fn the_prometheus_configuration_passes_promtool() {
    let promtool = promtool();
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
    for values in [None, Some(kitchen_sink_values("prometheus"))] {
        let spec = ControlPlaneSpec {
            components: [(
                "prometheus".to_owned(),
                ComponentSpec {
                    enabled: Some(true),
                    values_override: values.clone(),
                    ..ComponentSpec::default()
                },
            )]
            .into(),
            ..ControlPlaneSpec::default()
        };
        let (_, rendered) = render_all(&spec)
            .into_iter()
            .find(|(name, _)| *name == "prometheus")
            .unwrap();
        let config = serde_yaml_ng::Deserializer::from_str(&rendered)
            .filter_map(|document| Value::deserialize(document).ok())
            .find(|object| {
                object["kind"] == "ConfigMap" && object["metadata"]["name"] == "prometheus"
            })
            .expect("the chart renders the prometheus ConfigMap");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config["data"]["prometheus.yml"].as_str().unwrap()).unwrap();
        let checked = run(
            Command::new(&promtool).args(["check", "config"]).arg(&file),
            None,
        );
        assert!(checked.contains("SUCCESS"), "{checked}");
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
