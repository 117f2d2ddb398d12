//! Shared harness for the end-to-end tests: a real API server from `KUBECONFIG`, the real helm
//! binaries from `.tools/`, unique names so tests run in parallel, and namespaces that clean up.
//!
//! Shared by the `e2e` and `operator` test binaries; each uses a part of it.
#![allow(dead_code)]

pub mod drift;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

use smm::cluster::target::ClusterTarget;
use smm::helm::{Helm, HelmBinary, HelmSource};

const NO_CLUSTER_HINT: &str = "the end-to-end tests need a real Kubernetes API server: run \
     `scripts/cluster.sh up` and `eval \"$(scripts/cluster.sh env)\"` (or run scripts/test.sh, which does both)";

/// The cluster named by `KUBECONFIG`, checked to answer. Panics with how to start one otherwise:
/// an end-to-end test without a cluster fails, it never passes silently.
pub struct TestCluster {
    pub client: Client,
    pub target: ClusterTarget,
}

impl TestCluster {
    pub async fn connect() -> Self {
        let Some(kubeconfig) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) else {
            panic!("KUBECONFIG is not set; {NO_CLUSTER_HINT}");
        };
        let target = ClusterTarget {
            kubeconfig: Some(PathBuf::from(&kubeconfig)),
            context: None,
        };
        let client = match target.client().await {
            Ok(client) => client,
            Err(err) => panic!("cannot use KUBECONFIG={kubeconfig:?}: {err}; {NO_CLUSTER_HINT}"),
        };
        if let Err(err) = client.apiserver_version().await {
            panic!(
                "the API server in KUBECONFIG={kubeconfig:?} does not answer: {err}; {NO_CLUSTER_HINT}"
            );
        }
        Self { client, target }
    }

    /// A helm runner for one of the binaries `scripts/tools.sh` installs.
    pub fn helm(&self, tool: HelmTool) -> Helm {
        Helm::new(tool.binary(), self.target.clone(), Duration::from_secs(120))
    }

    /// Creates a namespace with a unique name that is deleted when the guard drops.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        let name = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.clone());
        namespace.metadata.labels = Some([("smm.dev/e2e".to_owned(), "true".to_owned())].into());
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|err| panic!("creating namespace {name}: {err}"));
        TestNamespace {
            name,
            target: self.target.clone(),
        }
    }
}

/// The helm major versions smm supports; each has its own binary in `.tools/`.
#[derive(Clone, Copy, Debug)]
pub enum HelmTool {
    Helm4,
    Helm3,
}

impl HelmTool {
    pub fn path(self) -> PathBuf {
        let file = match self {
            HelmTool::Helm4 => "helm",
            HelmTool::Helm3 => "helm3",
        };
        let path = repo_root().join(".tools").join(file);
        assert!(
            path.is_file(),
            "{} is missing: run scripts/tools.sh",
            path.display()
        );
        path
    }

    pub fn binary(self) -> HelmBinary {
        HelmBinary {
            path: self.path(),
            source: HelmSource::Flag,
        }
    }

    pub fn major(self) -> u64 {
        match self {
            HelmTool::Helm4 => 4,
            HelmTool::Helm3 => 3,
        }
    }
}

pub struct TestNamespace {
    pub name: String,
    target: ClusterTarget,
}

impl Drop for TestNamespace {
    /// Drop cannot await, so the namespace is deleted from a thread with a runtime and a client
    /// of its own (a client is bound to the runtime that created it, which is blocked here).
    /// Deletion is not awaited to completion; the controller-manager finishes it.
    fn drop(&mut self) {
        let target = self.target.clone();
        let name = self.name.clone();
        let deleted = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for namespace cleanup")
                .block_on(async {
                    let client = target.client().await.map_err(|err| err.to_string())?;
                    match Api::<Namespace>::all(client)
                        .delete(&name, &DeleteParams::default())
                        .await
                    {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                        Err(err) => Err(err.to_string()),
                    }
                })
        })
        .join();
        if let Ok(Err(err)) = deleted {
            eprintln!(
                "warning: could not delete test namespace {}: {err}",
                self.name
            );
        }
    }
}

/// A DNS-1123 name unique across parallel tests and repeated runs.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{:x}{:x}-{}",
        std::process::id(),
        nanos % 0xfff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture_chart(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/charts").join(name)
}

/// Polls `check` until it returns true or `timeout` passes; returns whether it became true.
pub async fn eventually(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Installs (or updates) the ControlPlane CRD and waits until the API server serves it.
pub async fn ensure_control_plane_crd(client: &Client) {
    smm::cluster::control_plane::ensure_crd(client)
        .await
        .expect("the ControlPlane CRD is established");
}

/// The smm binary with helm 4 and the environment's kubeconfig, plus `env`.
pub fn smm_command(args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_smm"));
    command
        .args(args)
        .env("SMM_HELM", HelmTool::Helm4.path())
        .env_remove("RUST_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Runs the smm binary with helm 4 and the environment's kubeconfig, plus `env`.
pub fn smm_with_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    smm_command(args, env).output().expect("smm runs")
}

pub fn smm(args: &[&str]) -> std::process::Output {
    smm_with_env(args, &[])
}

pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn assert_success(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "smm failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A ControlPlane as the CLI creates it (every component explicitly off), in a namespace of the
/// test's own so CLI tests run in parallel with the others.
pub async fn fresh_control_plane(cluster: &TestCluster) -> (String, String) {
    ensure_control_plane_crd(&cluster.client).await;
    let name = unique_name("e2e-cli");
    let namespace = unique_name("e2e-clins");
    let components: serde_json::Map<String, serde_json::Value> =
        smm::mesh::catalog::Catalog::builtin()
            .unwrap()
            .names()
            .into_iter()
            .map(|component| (component.to_owned(), serde_json::json!({"enabled": false})))
            .collect();
    let object = serde_json::json!({
        "apiVersion": "smm.dev/v1alpha1",
        "kind": "ControlPlane",
        "metadata": {"name": name},
        "spec": {"namespace": namespace, "components": components},
    });
    kube::Api::<smm::api::ControlPlane>::all(cluster.client.clone())
        .patch(
            &name,
            &kube::api::PatchParams::apply("e2e").force(),
            &kube::api::Patch::Apply(&object),
        )
        .await
        .unwrap();
    (name, namespace)
}

/// Serializes the tests that install Istio's charts. Istio keeps some things cluster-wide (the
/// default revision's validator `istiod-default-validator`, and an injector of the default
/// revision matches gateway pods in every namespace), so two such meshes installed at once
/// would fight over them, and a mesh whose istiod is not running refuses other tests' gateway
/// pods (the injector fails closed).
pub async fn istio_mesh_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// istiod (`pilot-discovery`) running as a local process for the istiod chart installed in
/// `namespace`, through `scripts/istio/istiod.sh`: its webhooks are reachable by the API server
/// through the plane's egress proxy. Stopped (and its route removed) when dropped.
pub struct LocalIstiod {
    namespace: String,
    revision: String,
    /// The plane it serves, when not the test's own (`SMM_CLUSTER_DIR`).
    plane: Option<PathBuf>,
    /// istiod's plain HTTP port (`/ready`, `/debug/*`).
    pub http_port: u16,
    /// Its webhook port (what a plane's egress route maps istiod's Service to).
    pub https_port: u16,
    /// Its state directory, with `istiod.log`.
    pub dir: PathBuf,
}

impl LocalIstiod {
    /// Starts istiod for the chart installed in `namespace` (revision `""`: the default one) and
    /// returns once its readiness endpoint answers.
    pub fn start(namespace: &str, revision: &str) -> Self {
        Self::start_on(None, namespace, revision)
    }

    /// As [`LocalIstiod::start`], for the plane whose state directory is `plane` (none: the
    /// test's own).
    pub fn start_on(plane: Option<&Path>, namespace: &str, revision: &str) -> Self {
        let output = Self::script(plane)
            .args(["start", namespace, revision])
            // Its leader-election identity is then the script's, one per revision: istiods of
            // two revisions side by side must not share one.
            .env_remove("POD_NAME")
            .output()
            .expect("scripts/istio/istiod.sh runs");
        assert!(
            output.status.success(),
            "istiod.sh start {namespace} {revision} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let value = |key: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("istiod.sh printed no {key}:\n{stdout}"))
                .to_owned()
        };
        Self {
            namespace: namespace.to_owned(),
            revision: revision.to_owned(),
            plane: plane.map(Path::to_owned),
            http_port: value("ISTIOD_HTTP_PORT").parse().unwrap(),
            https_port: value("ISTIOD_HTTPS_PORT").parse().unwrap(),
            dir: PathBuf::from(value("ISTIOD_DIR")),
        }
    }

    /// Starts the local istiod of `revision` in `namespace` as soon as its chart made its
    /// Service, on a thread of its own: the reconcile that installs it (a command or the
    /// operator) goes on to the gateways, whose pods its injector must answer for. It asks
    /// kubectl, since a test's client lives on the test's runtime, which a command may block.
    pub fn start_when_installed(namespace: &str, revision: &str) -> std::thread::JoinHandle<Self> {
        let (namespace, revision) = (namespace.to_owned(), revision.to_owned());
        std::thread::spawn(move || {
            // The chart names the revisionless istiod's Service `istiod`.
            let service = if revision.is_empty() {
                "istiod".to_owned()
            } else {
                format!("istiod-{revision}")
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            loop {
                let found = std::process::Command::new(repo_root().join(".tools/kubectl"))
                    .args(["-n", &namespace, "get", "service", &service])
                    .output()
                    .is_ok_and(|output| output.status.success());
                if found {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no Service {service} in 120s"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            Self::start(&namespace, &revision)
        })
    }

    /// Everything istiod logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("istiod.log")).unwrap_or_default()
    }
}

impl Drop for LocalIstiod {
    fn drop(&mut self) {
        let _ = Self::script(self.plane.as_deref())
            .args(["stop", &self.namespace, &self.revision])
            .status();
    }
}

impl LocalIstiod {
    /// `scripts/istio/istiod.sh`, for the plane in `plane` or the test's own.
    fn script(plane: Option<&Path>) -> std::process::Command {
        let mut command = std::process::Command::new(repo_root().join("scripts/istio/istiod.sh"));
        if let Some(plane) = plane {
            command
                .env("SMM_CLUSTER_DIR", plane)
                .env_remove("KUBECONFIG");
        }
        command
    }
}

/// The istiod image tag smm installs by default: the app version of the istiod chart.
pub fn istiod_tag() -> String {
    smm::mesh::catalog::Catalog::builtin()
        .unwrap()
        .get("istiod")
        .unwrap()
        .chart
        .metadata()
        .unwrap()
        .app_version
        .expect("istiod's chart has an appVersion")
}

/// The test's kubeconfig with every user replaced by a token of the ServiceAccount
/// `namespace/service_account` (`kubectl create token`, as the kubelet would mount it), so the
/// API server authenticates whoever uses it as that ServiceAccount, with its RBAC and no more.
pub fn token_kubeconfig(service_account: &str, namespace: &str) -> tempfile::NamedTempFile {
    let path = std::env::var("KUBECONFIG").expect("KUBECONFIG names the test cluster");
    let mut config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let created = std::process::Command::new(repo_root().join(".tools/kubectl"))
        .args(["create", "token", service_account, "--namespace", namespace])
        .args(["--duration", "2h"])
        .output()
        .expect("kubectl runs");
    assert!(
        created.status.success(),
        "kubectl create token: {created:?}"
    );
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    for user in config["users"].as_sequence_mut().expect("kubeconfig users") {
        user["user"] = serde_yaml_ng::to_value(serde_json::json!({ "token": token })).unwrap();
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    file
}

/// An operator process, stopped when dropped. It runs as the operator's ServiceAccount in
/// `namespace`, with a token of that account (for smm and for helm alike), so the RBAC the
/// manifests grant is what it works with, as in the cluster.
pub struct OperatorProcess {
    child: std::process::Child,
    /// Where its endpoints (`--listen`) answer, on 127.0.0.1.
    pub port: u16,
    _kubeconfig: tempfile::NamedTempFile,
}

impl OperatorProcess {
    pub fn start(identity: &str, leader_namespace: &str) -> Self {
        let kubeconfig = token_kubeconfig("smm-operator", leader_namespace);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_smm"))
            .args(["operator", "run", "--resync", "10m"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--leader-namespace",
                leader_namespace,
                "--identity",
                identity,
            ])
            .env("SMM_HELM", HelmTool::Helm4.path())
            .env("KUBECONFIG", kubeconfig.path())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("the operator starts");
        Self {
            child,
            port,
            _kubeconfig: kubeconfig,
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A second local control plane beside the one `KUBECONFIG` names: `scripts/cluster.sh up` with
/// an `SMM_CLUSTER_DIR` of its own in a temporary directory (about 5 s), stopped when dropped,
/// also when the test fails. Start planes one after another: `up` picks free ports and
/// releases them before its processes bind them.
pub struct SecondPlane {
    dir: tempfile::TempDir,
    /// Its admin kubeconfig.
    pub kubeconfig: PathBuf,
}

impl SecondPlane {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let plane = Self {
            kubeconfig: dir.path().join("cluster/kubeconfig"),
            dir,
        };
        // Constructed first, so that a failed `up` is taken down too.
        let output = plane.script("up");
        assert!(
            output.status.success(),
            "scripts/cluster.sh up (a second plane) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        plane
    }

    fn script(&self, command: &str) -> std::process::Output {
        std::process::Command::new(repo_root().join("scripts/cluster.sh"))
            .arg(command)
            .env("SMM_CLUSTER_DIR", self.dir.path().join("cluster"))
            .env_remove("KUBECONFIG")
            .output()
            .expect("scripts/cluster.sh runs")
    }

    pub async fn client(&self) -> Client {
        ClusterTarget {
            kubeconfig: Some(self.kubeconfig.clone()),
            context: None,
        }
        .client()
        .await
        .expect("a client of the second plane")
    }

    /// Its state directory, as `SMM_CLUSTER_DIR` names it to the plane's scripts.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    /// Makes this plane's API server reach `service_ip:443` (a Service of this plane) at
    /// `127.0.0.1:port` through its egress proxy: an istiod of the other plane serving this
    /// one's webhooks.
    pub fn route(&self, name: &str, service_ip: &str, port: u16) {
        let routes = self.dir.path().join("cluster/egress/routes");
        let tmp = routes.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, format!("{service_ip}:443 127.0.0.1:{port}\n")).unwrap();
        std::fs::rename(&tmp, routes.join(name)).unwrap();
    }
}

impl Drop for SecondPlane {
    fn drop(&mut self) {
        let _ = self.script("down");
    }
}
