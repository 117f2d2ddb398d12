//! The fault campaign: smm under signals, operator deaths, an API server outage, concurrent
//! writers, hand-made helm commands and a second ControlPlane on one mesh namespace, against the
//! real local plane (`scripts/cluster.sh`) and the real helm.
//!
//! Every fault runs on a ControlPlane and mesh namespace of its own, one after another (a fault
//! kills processes, restarts the API server and counts helm processes, so nothing may run
//! alongside it). A fault *passes* when the next normal run of the intended spec converges:
//! it exits 0, `smm status` exits 0, no helm release is `pending-*` or `uninstalling`, every
//! enabled component's latest release is `deployed` and no disabled one has a release, no helm
//! process is left running, the live Deployments of the mesh namespace are exactly the ones
//! `--dump-resources` renders for the spec, each available with the rendered replicas and node
//! selector, and the stored spec is the intended one (before the next run it may only be the
//! spec before the fault or the one the fault's command meant to store).
//!
//! Seeded and repeatable: `SMM_FAULT_SEED` (default below; decimal or 0x-hex), `SMM_FAULTS` (how
//! many, default 20) and `SMM_FAULT_ONLY=3,7` (run only those numbers of the seed's sequence).
//! Fault `i` of a seed is the same whatever `SMM_FAULTS` is. Logs of every process go to
//! `target/tmp/faults/` (`SMM_FAULT_RUST_LOG=info` gives the commands that `RUST_LOG`). A binary
//! of its own with `test = false`: `scripts/test.sh` runs it after the rest of the suite with
//! `cargo test --test faults -- --nocapture`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, ResourceQuota, Secret};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use smm::api::ControlPlane;
use smm::mesh::catalog::Catalog;
use support::{HelmTool, TestCluster, fresh_control_plane, repo_root, unique_name};

const DEFAULT_SEED: u64 = 0x5EED_FA17;
const DEFAULT_FAULTS: usize = 20;
/// The finalizer `smm operator run` puts on ControlPlanes.
const OPERATOR_FINALIZER: &str = "smm.dev/uninstall-components";
/// A finalizer of the campaign's own that holds a Deployment being deleted (an uninstall waits).
const HOLD_FINALIZER: &str = "smm.dev/fault-campaign-hold";
/// The ResourceQuota that holds new pods back during an upgrade.
const GATE_QUOTA: &str = "smm-fault-gate";
/// Longest any single smm command may take before the campaign kills it and fails the fault.
const COMMAND_LIMIT: Duration = Duration::from_secs(240);

// ---------------------------------------------------------------------------------------------
// A small deterministic PRNG (splitmix64): the same seed gives the same faults everywhere.

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in lo..=hi.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------------
// The faults.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Kill,
    Term,
}

impl Signal {
    fn number(self) -> i32 {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Term => libc::SIGTERM,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Kill => "SIGKILL",
            Signal::Term => "SIGTERM",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CliOp {
    /// `smm install` of every component but the gateways on a ControlPlane with everything off.
    InstallAll,
    /// `smm install istiod --set autoscaleEnabled=false,replicaCount=R` on an installed istiod; the next run repeats it.
    Upgrade { replicas: u64 },
    /// The same upgrade, but the user then goes back to the spec before it (`smm reconcile -f`).
    UpgradeReverted { replicas: u64 },
    /// `smm uninstall -a` on an installed mesh.
    UninstallAll,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Fault {
    /// A signal to the CLI `after_ms` into the operation. `gate_ms`: workloads wait for a node
    /// label (install, upgrade) or a Deployment's deletion is held (uninstall) until then.
    Cli {
        op: CliOp,
        signal: Signal,
        after_ms: u64,
        gate_ms: Option<u64>,
        /// For UninstallAll: which rendered Deployment is held (modulo their number).
        hold: u64,
    },
    /// A signal to the leading operator during its reconcile; then another operator (or the
    /// same identity restarted) takes over.
    Operator {
        signal: Signal,
        after_ms: u64,
        gate_ms: Option<u64>,
        same_identity: bool,
    },
    /// `scripts/cluster.sh restart-apiserver SECONDS` `after_ms` into `smm install -a`.
    ApiServerRestart {
        after_ms: u64,
        outage_s: u64,
        gate_ms: Option<u64>,
    },
    /// Two `smm install` of different components on one ControlPlane at once.
    ConcurrentInstalls {
        first: &'static str,
        second: &'static str,
        offset_ms: u64,
    },
    /// A hand-made helm command on a managed release, then `smm reconcile -f`.
    HandHelm { rollback: bool, replicas: u64 },
    /// A second ControlPlane on the first one's mesh namespace.
    SecondControlPlane { replicas: u64 },
}

const KINDS: usize = 9;

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Cli {
                op,
                signal,
                after_ms,
                gate_ms,
                ..
            } => {
                let command = match op {
                    CliOp::InstallAll => {
                        "smm install (every component but the gateways)".to_owned()
                    }
                    CliOp::Upgrade { replicas } | CliOp::UpgradeReverted { replicas } => {
                        format!(
                            "the upgrade smm install istiod --set autoscaleEnabled=false,replicaCount={replicas}"
                        )
                    }
                    CliOp::UninstallAll => "smm uninstall -a".to_owned(),
                };
                write!(f, "{signal} {command} after {}", secs(*after_ms))?;
                match (op, gate_ms) {
                    (CliOp::UninstallAll, Some(ms)) => {
                        write!(f, " (a Deployment's deletion held for {})", secs(*ms))?
                    }
                    (CliOp::InstallAll, Some(ms)) => {
                        write!(f, " (istiod's pods wait {} for a node)", secs(*ms))?
                    }
                    (_, Some(ms)) => write!(f, " (a pod quota holds new pods for {})", secs(*ms))?,
                    (_, None) => {}
                }
                if let CliOp::UpgradeReverted { .. } = op {
                    write!(f, ", then the spec before it reconciled")?;
                }
                Ok(())
            }
            Fault::Operator {
                signal,
                after_ms,
                gate_ms,
                same_identity,
            } => {
                write!(
                    f,
                    "{signal} the operator {} into its reconcile",
                    secs(*after_ms)
                )?;
                if let Some(ms) = gate_ms {
                    write!(f, " (istiod's pods wait {} for a node)", secs(*ms))?;
                }
                if *same_identity {
                    write!(f, ", restarted with the same identity")
                } else {
                    write!(f, ", a second operator takes over")
                }
            }
            Fault::ApiServerRestart {
                after_ms,
                outage_s,
                gate_ms,
            } => {
                write!(
                    f,
                    "API server down {outage_s}s from {} into smm install -a",
                    secs(*after_ms)
                )?;
                if let Some(ms) = gate_ms {
                    write!(f, " (istiod's pods wait {} for a node)", secs(*ms))?;
                }
                Ok(())
            }
            Fault::ConcurrentInstalls {
                first,
                second,
                offset_ms,
            } => write!(
                f,
                "smm install {first} and smm install {second} {} later, on one ControlPlane",
                secs(*offset_ms)
            ),
            Fault::HandHelm {
                rollback: false,
                replicas,
            } => write!(
                f,
                "hand-made helm upgrade istiod --reuse-values --set replicaCount={replicas}, then smm reconcile"
            ),
            Fault::HandHelm {
                rollback: true,
                replicas,
            } => write!(
                f,
                "hand-made helm rollback istiod 1 after smm set replicaCount={replicas}, then smm reconcile"
            ),
            Fault::SecondControlPlane { replicas } => write!(
                f,
                "a second ControlPlane (istiod replicaCount={replicas}) on the first one's mesh namespace"
            ),
        }
    }
}

/// Fault `index` (0-based) of `seed`. The kinds come in blocks of KINDS, each block a shuffle of
/// every kind, so any KINDS consecutive faults of a block cover them all; the parameters come from
/// a generator of the fault's own, so fault i does not depend on how many are run. The variants of
/// the operator and hand-made helm faults alternate between blocks, so both appear in 18 faults.
fn plan(seed: u64, index: usize) -> Fault {
    let block = (index / KINDS) as u64;
    let mut order: Vec<usize> = (0..KINDS).collect();
    let mut shuffle = SplitMix64(seed ^ block.wrapping_mul(0xA076_1D64_78BD_642F));
    for i in (1..KINDS).rev() {
        let j = shuffle.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let kind = order[index % KINDS];
    let mut rng = SplitMix64(seed ^ (index as u64 + 1).wrapping_mul(0xE703_7ED1_A0B4_28DB));
    let signal = if rng.percent(50) {
        Signal::Kill
    } else {
        Signal::Term
    };
    let after_ms = rng.between(200, 4000);
    // Most faults hold the operation past the moment they strike (new pods wait on a quota, a
    // deletion on a finalizer), so it is still running when hit: smm itself finishes in well
    // under a second once the cluster is ready. A few let it finish first.
    let outlast = |rng: &mut SplitMix64, after_ms: u64| {
        rng.percent(85).then(|| after_ms + rng.between(500, 3000))
    };
    let gate_ms = outlast(&mut rng, after_ms);
    let replicas = rng.between(2, 3);
    let hold = rng.next() % 64;
    let cli = |op| Fault::Cli {
        op,
        signal,
        after_ms,
        gate_ms,
        hold,
    };
    match kind {
        0 => cli(CliOp::InstallAll),
        1 => cli(CliOp::Upgrade { replicas }),
        2 => cli(CliOp::UpgradeReverted { replicas }),
        3 => cli(CliOp::UninstallAll),
        4 => {
            let after_ms = rng.between(500, 5000);
            Fault::Operator {
                signal,
                after_ms,
                gate_ms: outlast(&mut rng, after_ms),
                // Alternating between blocks, so that 18 faults see both.
                same_identity: (block + (seed & 1)).is_multiple_of(2),
            }
        }
        5 => {
            let after_ms = rng.between(200, 3000);
            Fault::ApiServerRestart {
                after_ms,
                outage_s: rng.between(3, 6),
                gate_ms: outlast(&mut rng, after_ms),
            }
        }
        6 => {
            let pairs = [
                ("grafana", "tracing"),
                ("tracing", "grafana"),
                ("prometheus", "istiod"),
                ("grafana", "istiod"),
                ("tracing", "prometheus"),
                ("istiod", "tracing"),
            ];
            let (first, second) = rng.pick(&pairs);
            Fault::ConcurrentInstalls {
                first,
                second,
                // Within smm's start-up, so both read the stored spec before either stores.
                offset_ms: rng.between(0, 120),
            }
        }
        7 => Fault::HandHelm {
            rollback: (block + (seed >> 1 & 1)).is_multiple_of(2),
            replicas,
        },
        _ => Fault::SecondControlPlane { replicas },
    }
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// A process started by the campaign, its stdout and stderr in one log file.
struct Proc {
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl Proc {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal(&self, signal: Signal) {
        // SAFETY: kill(2) on a child of ours that has not been reaped, so the PID is still ours.
        unsafe {
            libc::kill(self.pid(), signal.number());
        }
    }

    /// Waits for the exit up to `limit`; past it, SIGKILL and None.
    async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n    ")
}

fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => "still running at the campaign's limit (killed)".to_owned(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => s.to_string(),
        },
    }
}

/// Helm processes running from `.tools/helm` (the campaign's helm), by PID.
fn helm_processes(helm: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            (exe == helm).then_some(pid)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The campaign's context and one fault's scene.

struct Ctx {
    client: Client,
    kubeconfig: String,
    helm: PathBuf,
    smm: PathBuf,
    catalog: Catalog,
    node: String,
    logs: PathBuf,
    control_planes: Api<DynamicObject>,
}

impl Ctx {
    fn command(&self, args: &[String], log: &Path) -> Command {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("a log file");
        let mut command = Command::new(&self.smm);
        command
            .args(args)
            .env("SMM_HELM", &self.helm)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log file"))
            .stderr(file);
        // Verbose logs of the commands, to look into one fault.
        if let Ok(filter) = std::env::var("SMM_FAULT_RUST_LOG") {
            command.env("RUST_LOG", filter);
        }
        command
    }
}

/// The pass/fail record of one fault.
#[derive(Default)]
struct Record {
    failures: Vec<String>,
    notes: Vec<String>,
    /// The fault came after the operation had ended: its next run is checked all the same,
    /// but nothing was interrupted.
    missed: bool,
}

impl Record {
    fn fail(&mut self, message: impl Into<String>) {
        self.failures.push(message.into());
    }
    fn note(&mut self, message: impl Into<String>) {
        self.notes.push(message.into());
    }
}

struct Scene<'a> {
    ctx: &'a Ctx,
    dir: PathBuf,
    cp: String,
    ns: String,
    gate_key: String,
    held: Vec<(String, String)>,
    other_cps: Vec<String>,
    leader_ns: Option<String>,
    labelled: bool,
    record: Record,
    runs: usize,
}

impl<'a> Scene<'a> {
    async fn new(ctx: &'a Ctx, cluster: &TestCluster, number: usize) -> Scene<'a> {
        let (cp, ns) = fresh_control_plane(cluster).await;
        let dir = ctx.logs.join(format!("{number:02}-{cp}"));
        std::fs::create_dir_all(&dir).expect("a log directory");
        Scene {
            ctx,
            dir,
            cp,
            ns,
            gate_key: format!("smm-fault/{}", unique_name("gate")),
            held: Vec::new(),
            other_cps: Vec::new(),
            leader_ns: None,
            labelled: false,
            record: Record::default(),
            runs: 0,
        }
    }

    fn log(&mut self, label: &str) -> PathBuf {
        self.runs += 1;
        self.dir.join(format!("{:02}-{label}.log", self.runs))
    }

    fn cp_flag(&self) -> [String; 2] {
        ["--control-plane".to_owned(), self.cp.clone()]
    }

    fn spawn(&mut self, label: &str, args: &[String]) -> Proc {
        let log = self.log(label);
        let child = self.ctx.command(args, &log).spawn().expect("smm starts");
        Proc {
            child,
            log,
            started: Instant::now(),
        }
    }

    /// Runs smm to the end (bounded by COMMAND_LIMIT); the exit and the output's tail.
    async fn run(&mut self, label: &str, args: &[String]) -> (Option<ExitStatus>, Proc) {
        let mut proc = self.spawn(label, args);
        let status = proc.wait(COMMAND_LIMIT).await;
        (status, proc)
    }

    /// A run that must succeed for the fault to be set up; false (and a failure) otherwise.
    async fn setup(&mut self, args: &[String]) -> bool {
        let (status, proc) = self.run("setup", args).await;
        if status.is_some_and(|s| s.success()) {
            return true;
        }
        self.record.fail(format!(
            "setup `smm {}` failed ({}):\n    {}",
            args.join(" "),
            describe(status),
            proc.tail(12)
        ));
        false
    }

    async fn spec_of(&self, name: &str) -> Option<Value> {
        let object = self.ctx.control_planes.get_opt(name).await.ok()??;
        Some(object.data.get("spec").cloned().unwrap_or(Value::Null))
    }

    async fn spec(&self) -> Value {
        self.spec_of(&self.cp).await.unwrap_or(Value::Null)
    }

    async fn merge_spec(&self, patch: Value) {
        self.ctx
            .control_planes
            .patch(
                &self.cp,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": patch })),
            )
            .await
            .expect("patching the ControlPlane's spec");
    }

    fn write_control_plane(&self, file: &str, name: &str, spec: &Value) -> String {
        let path = self.dir.join(file);
        let document = json!({
            "apiVersion": "smm.dev/v1alpha1",
            "kind": "ControlPlane",
            "metadata": {"name": name},
            "spec": spec,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&document).unwrap())
            .expect("writing a ControlPlane file");
        path.to_string_lossy().into_owned()
    }

    /// Labels the gate node after `ms` (so pods selecting the gate label can be scheduled).
    fn open_gate_after(&mut self, ms: u64) -> tokio::task::JoinHandle<()> {
        self.labelled = true;
        let nodes: Api<Node> = Api::all(self.ctx.client.clone());
        let node = self.ctx.node.clone();
        let patch = json!({"metadata": {"labels": {self.gate_key.as_str(): "open"}}});
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            for _ in 0..40 {
                // The API server may be restarting: retry for up to 20 s.
                if nodes
                    .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    /// Puts the hold finalizer on a Deployment, so its deletion waits.
    async fn hold(&mut self, name: &str) {
        let deployments: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let patch = json!({"metadata": {"finalizers": [HOLD_FINALIZER]}});
        match deployments
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.held.push((self.ns.clone(), name.to_owned())),
            Err(err) => self
                .record
                .fail(format!("holding Deployment {name}: {err}")),
        }
    }

    /// A ResourceQuota allowing exactly the pods the mesh namespace has now: no new pod can be
    /// created until `remove_quota_after`.
    async fn quota(&mut self) {
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.ctx.client.clone(), &self.ns);
        let count = pods
            .list(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        let quotas: Api<ResourceQuota> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let quota: ResourceQuota = serde_json::from_value(json!({
            "metadata": {"name": GATE_QUOTA},
            "spec": {"hard": {"pods": count.to_string()}},
        }))
        .unwrap();
        if let Err(err) = quotas.create(&PostParams::default(), &quota).await {
            self.record.fail(format!("creating the pod quota: {err}"));
        }
        // The quota admits pods only once its usage is computed.
        let computed = support::eventually(Duration::from_secs(20), async || {
            quotas
                .get_opt(GATE_QUOTA)
                .await
                .ok()
                .flatten()
                .and_then(|q| q.status)
                .and_then(|st| st.used)
                .is_some_and(|used| used.contains_key("pods"))
        })
        .await;
        if !computed {
            self.record
                .fail("the pod quota's usage was not computed within 20s");
        }
    }

    fn remove_quota_after(&self, ms: u64) -> tokio::task::JoinHandle<()> {
        let quotas: Api<ResourceQuota> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            for _ in 0..40 {
                match quotas.delete(GATE_QUOTA, &DeleteParams::default()).await {
                    Ok(_) => return,
                    Err(kube::Error::Api(status)) if status.code == 404 => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        })
    }

    fn release_holds_after(&self, ms: u64) -> tokio::task::JoinHandle<()> {
        let client = self.ctx.client.clone();
        let held = self.held.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            release_holds(&client, &held).await;
        })
    }

    /// The Deployments `smm --dump-resources` renders for `spec` (which must be stored under
    /// `name`'s file), by name.
    async fn rendered_deployments(&mut self, name: &str, spec: &Value) -> Option<Vec<Value>> {
        let file = self.write_control_plane("rendered.json", name, spec);
        let args = strings(&["reconcile", "-f", &file, "--dump-resources"]);
        let (status, proc) = self.run("render", &args).await;
        if !status.is_some_and(|s| s.success()) {
            self.record.fail(format!(
                "smm reconcile --dump-resources of the intended spec failed: {}",
                proc.tail(8)
            ));
            return None;
        }
        let text = std::fs::read_to_string(&proc.log).unwrap_or_default();
        let mut deployments = Vec::new();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            // The log also holds stderr lines (none on success); skip what is not an object.
            let Ok(value) = <Value as serde::Deserialize>::deserialize(document) else {
                continue;
            };
            if value["kind"] == "Deployment" {
                deployments.push(value);
            }
        }
        Some(deployments)
    }

    /// Whether the fault's next normal run converged to `intended` (see the module's doc).
    async fn verify(&mut self, recovery: &[String], intended: &Value) {
        let (status, proc) = self.run("recovery", recovery).await;
        if !status.is_some_and(|s| s.success()) {
            self.record.fail(format!(
                "the next run `smm {}` did not converge ({}):\n    {}",
                recovery.join(" "),
                describe(status),
                proc.tail(14)
            ));
        }
        let elapsed = proc.started.elapsed().as_secs_f64();
        self.record.note(format!("next run {elapsed:.1}s"));
        self.check_state(intended).await;
    }

    /// The checks after the next run, also used for the first ControlPlane of a
    /// second-ControlPlane fault.
    async fn check_state(&mut self, intended: &Value) {
        let mut status_args = strings(&["status"]);
        status_args.extend(self.cp_flag());
        let (status, proc) = self.run("status", &status_args).await;
        if !status.is_some_and(|s| s.success()) {
            self.record.fail(format!(
                "smm status: {}:\n    {}",
                describe(status),
                proc.tail(12)
            ));
        }

        // Helm's release records.
        let enabled = enabled_components(intended);
        let releases = release_records(&self.ctx.client, &self.ns).await;
        for (release, versions) in &releases {
            for (version, state) in versions {
                if state.starts_with("pending-") || state == "uninstalling" {
                    self.record
                        .fail(format!("release {release} v{version} is {state}"));
                }
            }
        }
        for component in self.ctx.catalog.components() {
            let latest = releases
                .get(component.release_name)
                .and_then(|versions| versions.last_key_value());
            match (enabled.contains(component.name), latest) {
                (true, Some((_, state))) if state == "deployed" => {}
                (true, Some((version, state))) => self.record.fail(format!(
                    "{}: latest release v{version} is {state}, not deployed",
                    component.name
                )),
                (true, None) => self
                    .record
                    .fail(format!("{}: enabled but no helm release", component.name)),
                (false, Some((version, state))) => self.record.fail(format!(
                    "{}: disabled but release v{version} ({state}) is left",
                    component.name
                )),
                (false, None) => {}
            }
        }

        // No helm left running.
        let helms = helm_processes(&self.ctx.helm);
        if !helms.is_empty() {
            self.record
                .fail(format!("helm processes still running: {helms:?}"));
        }

        // The live Deployments are the rendered ones, available and as rendered.
        let cp = self.cp.clone();
        if let Some(rendered) = self.rendered_deployments(&cp, intended).await {
            let deployments: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &self.ns);
            let live: BTreeMap<String, Deployment> =
                match deployments.list(&ListParams::default()).await {
                    Ok(list) => list.items.into_iter().map(|d| (d.name_any(), d)).collect(),
                    Err(err) => {
                        self.record.fail(format!("listing Deployments: {err}"));
                        BTreeMap::new()
                    }
                };
            let mut expected = BTreeSet::new();
            for want in &rendered {
                let name = want["metadata"]["name"].as_str().unwrap_or("").to_owned();
                expected.insert(name.clone());
                let Some(have) = live.get(&name) else {
                    self.record
                        .fail(format!("Deployment {name} of the spec is missing"));
                    continue;
                };
                for problem in deployment_problems(want, have) {
                    self.record.fail(format!("Deployment {name}: {problem}"));
                }
            }
            for name in live.keys().filter(|name| !expected.contains(*name)) {
                self.record.fail(format!(
                    "Deployment {name} is left although the spec does not render it"
                ));
            }
        }

        // The stored spec is the intended one.
        let stored = self.spec().await;
        if normalized(&stored) != normalized(intended) {
            self.record.fail(format!(
                "stored spec {} is not the intended {}",
                normalized(&stored),
                normalized(intended)
            ));
        }
    }

    /// The spec right after the fault may only be the one before it or the one its command meant.
    async fn check_spec_after_fault(&mut self, allowed: &[&Value]) {
        let stored = normalized(&self.spec().await);
        if !allowed.iter().any(|spec| normalized(spec) == stored) {
            self.record.fail(format!(
                "after the fault the stored spec is {stored}, expected one of {}",
                allowed
                    .iter()
                    .map(|spec| normalized(spec).to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        }
    }

    async fn note_orphans(&mut self) {
        let helms = helm_processes(&self.ctx.helm);
        if !helms.is_empty() {
            self.record.note(format!(
                "{} helm process(es) outlived the killed command",
                helms.len()
            ));
        }
    }

    /// Removes everything of the fault, whatever happened; problems are notes (the next fault
    /// has names of its own), except an uninstall that fails: that is a failure.
    async fn clean_up(&mut self) {
        let client = self.ctx.client.clone();
        release_holds(&client, &self.held).await;
        let mut args = strings(&["uninstall", "-a"]);
        args.extend(self.cp_flag());
        let (status, proc) = self.run("cleanup-uninstall", &args).await;
        if !status.is_some_and(|s| s.success()) {
            self.record.fail(format!(
                "cleaning up: smm uninstall -a {}:\n    {}",
                describe(status),
                proc.tail(8)
            ));
        }
        let mut names = self.other_cps.clone();
        names.push(self.cp.clone());
        for name in names {
            let patch = json!({"metadata": {"finalizers": null}});
            let _ = self
                .ctx
                .control_planes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            let _ = self
                .ctx
                .control_planes
                .delete(&name, &DeleteParams::default())
                .await;
        }
        if self.labelled {
            let nodes: Api<Node> = Api::all(client.clone());
            let patch = json!({"metadata": {"labels": {self.gate_key.as_str(): null}}});
            let _ = nodes
                .patch(
                    &self.ctx.node,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await;
        }
        let namespaces: Api<Namespace> = Api::all(client);
        let mut gone = vec![self.ns.clone()];
        gone.extend(self.leader_ns.clone());
        for ns in gone {
            let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
        }
    }
}

async fn release_holds(client: &Client, held: &[(String, String)]) {
    for (ns, name) in held {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let Ok(Some(deployment)) = deployments.get_opt(name).await else {
            continue;
        };
        let rest: Vec<String> = deployment
            .finalizers()
            .iter()
            .filter(|f| *f != HOLD_FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": rest}});
        for _ in 0..40 {
            if deployments
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The spec without nulls and empty `valuesOverride` maps, so equal specs compare equal however
/// they were written.
fn normalized(spec: &Value) -> Value {
    match spec {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, value)| {
                    let empty_values = key.as_str() == "valuesOverride"
                        && value.as_object().is_some_and(|m| m.is_empty());
                    !(value.is_null() || empty_values)
                })
                .map(|(key, value)| (key.clone(), normalized(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

fn enabled_components(spec: &Value) -> BTreeSet<String> {
    spec["components"]
        .as_object()
        .map(|components| {
            components
                .iter()
                .filter(|(_, c)| c["enabled"] == true)
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The components the campaign installs: all but the gateways, whose pods are admitted only
/// through istiod's injection webhook, which no istiod serves during the campaign (it would
/// have to survive the very kills under test); tests/e2e/istio.rs covers the gateways.
fn campaign_components(catalog: &Catalog) -> Vec<&'static str> {
    catalog
        .names()
        .into_iter()
        .filter(|name| !name.ends_with("-gateway"))
        .collect()
}

/// `smm install` of `components`.
fn install_args(components: &[&'static str]) -> Vec<String> {
    let mut args = strings(&["install"]);
    args.extend(components.iter().map(|c| (*c).to_owned()));
    args
}

/// `spec` with `components` (and what they depend on) set to `enabled`.
fn with_enabled(catalog: &Catalog, spec: &Value, components: &[&'static str], on: bool) -> Value {
    let mut spec = spec.clone();
    let names: BTreeSet<&'static str> = if on {
        catalog.with_dependencies(components)
    } else {
        components.iter().copied().collect()
    };
    for name in names {
        spec["components"][name]["enabled"] = json!(on);
    }
    spec
}

/// helm's release records in `namespace`: release name → version → status.
async fn release_records(client: &Client, ns: &str) -> BTreeMap<String, BTreeMap<u64, String>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut releases: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::new();
    let Ok(list) = secrets
        .list(&ListParams::default().labels("owner=helm"))
        .await
    else {
        return releases;
    };
    for secret in list.items {
        let labels = secret.labels();
        let (Some(name), Some(version), Some(status)) = (
            labels.get("name"),
            labels.get("version").and_then(|v| v.parse().ok()),
            labels.get("status"),
        ) else {
            continue;
        };
        releases
            .entry(name.clone())
            .or_default()
            .insert(version, status.clone());
    }
    releases
}

/// What is wrong with a live Deployment against its rendering: not available, or replicas or
/// node selector not as rendered.
fn deployment_problems(want: &Value, have: &Deployment) -> Vec<String> {
    let mut problems = Vec::new();
    let spec = have.spec.clone().unwrap_or_default();
    let replicas = i64::from(spec.replicas.unwrap_or(1));
    if let Some(rendered) = want["spec"]["replicas"].as_i64()
        && rendered != replicas
    {
        problems.push(format!("{replicas} replicas, the spec renders {rendered}"));
    }
    let selector = spec
        .template
        .spec
        .as_ref()
        .and_then(|pod| pod.node_selector.clone())
        .unwrap_or_default();
    let rendered: BTreeMap<String, String> = want["spec"]["template"]["spec"]["nodeSelector"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    if selector != rendered {
        problems.push(format!(
            "node selector {selector:?}, the spec renders {rendered:?}"
        ));
    }
    if have.metadata.deletion_timestamp.is_some() {
        problems.push("being deleted".to_owned());
    }
    let status = have.status.clone().unwrap_or_default();
    let current = status.observed_generation >= have.metadata.generation;
    let wanted = i32::try_from(replicas).unwrap_or(i32::MAX);
    // kstatus' rule: every replica updated and available, and no replica of an older
    // ReplicaSet left (an old pod still serving while the new ones cannot run is no rollout).
    let available = status.available_replicas.unwrap_or(0) >= wanted
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.replicas.unwrap_or(0) <= wanted
        && status.unavailable_replicas.unwrap_or(0) == 0;
    if !(current && available) {
        problems.push(format!(
            "not rolled out (generation {:?} observed {:?}; of {wanted}: {} updated, {} available, {} in all, {} unavailable)",
            have.metadata.generation,
            status.observed_generation,
            status.updated_replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
            status.replicas.unwrap_or(0),
            status.unavailable_replicas.unwrap_or(0)
        ));
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Each kind of fault.

/// What a command means to do to the spec it starts from.
type SpecEdit = Box<dyn Fn(&Value) -> Value>;

async fn cli_fault(
    s: &mut Scene<'_>,
    op: CliOp,
    signal: Signal,
    after_ms: u64,
    gate_ms: Option<u64>,
    hold: u64,
) {
    let catalog = &s.ctx.catalog;
    let cp_flag = s.cp_flag();
    let gate = json!({"nodeSelector": {s.gate_key.as_str(): "open"}});
    let all: Vec<&'static str> = campaign_components(catalog);
    // Set up, and what the fault's command is and means.
    let (args, intended_by_command): (Vec<String>, SpecEdit) = match op {
        CliOp::InstallAll => {
            if gate_ms.is_some() {
                s.merge_spec(json!({"components": {"istiod": {"valuesOverride": gate}}}))
                    .await;
            }
            let all = all.clone();
            let catalog = Catalog::builtin().unwrap();
            (
                install_args(&all),
                Box::new(move |before: &Value| with_enabled(&catalog, before, &all, true)),
            )
        }
        CliOp::Upgrade { replicas } | CliOp::UpgradeReverted { replicas } => {
            let mut setup = strings(&["install", "istiod"]);
            setup.extend(cp_flag.clone());
            if !s.setup(&setup).await {
                return;
            }
            if gate_ms.is_some() {
                // New pods cannot even be created until the quota goes, so the upgrade waits
                // however the engine judges a rollout.
                s.quota().await;
            }
            let mut args = strings(&["install", "istiod"]);
            // Istio's chart leaves the replica count to its autoscaler unless told otherwise:
            // without this the upgrade makes no new pod, and the quota holds nothing.
            args.extend(strings(&[
                "--set",
                &format!("autoscaleEnabled=false,replicaCount={replicas}"),
            ]));
            (
                args,
                Box::new(move |before: &Value| {
                    let mut spec = before.clone();
                    let values = &mut spec["components"]["istiod"]["valuesOverride"];
                    if !values.is_object() {
                        *values = json!({});
                    }
                    values["autoscaleEnabled"] = json!(false);
                    values["replicaCount"] = json!(replicas);
                    spec
                }),
            )
        }
        CliOp::UninstallAll => {
            let mut setup = install_args(&all);
            setup.extend(cp_flag.clone());
            if !s.setup(&setup).await {
                return;
            }
            if gate_ms.is_some() {
                let intended = s.spec().await;
                let cp = s.cp.clone();
                if let Some(rendered) = s.rendered_deployments(&cp, &intended).await
                    && !rendered.is_empty()
                {
                    let pick = &rendered[(hold % rendered.len() as u64) as usize];
                    let name = pick["metadata"]["name"].as_str().unwrap_or("").to_owned();
                    s.hold(&name).await;
                }
            }
            let all = all.clone();
            let catalog = Catalog::builtin().unwrap();
            (
                strings(&["uninstall", "-a"]),
                Box::new(move |before: &Value| with_enabled(&catalog, before, &all, false)),
            )
        }
    };
    let mut args = args;
    args.extend(cp_flag);
    let before = s.spec().await;
    let meant = intended_by_command(&before);

    let gate_task = gate_ms.map(|ms| match op {
        CliOp::UninstallAll => s.release_holds_after(ms),
        CliOp::InstallAll => s.open_gate_after(ms),
        CliOp::Upgrade { .. } | CliOp::UpgradeReverted { .. } => s.remove_quota_after(ms),
    });
    let mut proc = s.spawn("faulted", &args);
    tokio::time::sleep(Duration::from_millis(after_ms)).await;
    let signalled = Instant::now();
    if proc.running() {
        proc.signal(signal);
    } else {
        s.record.missed = true;
        s.record.note(format!(
            "missed: the command had ended ({}) before the signal",
            describe(proc.child.try_wait().ok().flatten())
        ));
    }
    let exit = proc.wait(Duration::from_secs(120)).await;
    s.record
        .note(format!("faulted command: {}", describe(exit)));
    // SIGTERM stops helm (with a grace period) and releases the lease: it must not take long.
    let stopping = signalled.elapsed();
    if signal == Signal::Term && !s.record.missed {
        if stopping > Duration::from_secs(60) {
            s.record.fail(format!(
                "the CLI took {:.0}s to stop after SIGTERM",
                stopping.as_secs_f64()
            ));
        } else {
            s.record.note(format!(
                "stopped {:.1}s after SIGTERM",
                stopping.as_secs_f64()
            ));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.note_orphans().await;
    if let Some(task) = gate_task {
        let _ = task.await;
    }
    s.check_spec_after_fault(&[&before, &meant]).await;

    // The next normal run: the same command again, or the spec before the upgrade.
    match op {
        CliOp::UpgradeReverted { .. } => {
            let file = s.write_control_plane("intended.json", &s.cp.clone(), &before);
            s.verify(&strings(&["reconcile", "-f", &file]), &before)
                .await;
        }
        _ => s.verify(&args, &meant).await,
    }
}

/// An out-of-cluster operator as tests/operator.rs runs it.
fn start_operator(s: &mut Scene<'_>, identity: &str, leader_ns: &str) -> Proc {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let args = vec![
        "operator".to_owned(),
        "run".to_owned(),
        "--kubeconfig".to_owned(),
        s.ctx.kubeconfig.clone(),
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--leader-namespace".to_owned(),
        leader_ns.to_owned(),
        "--identity".to_owned(),
        identity.to_owned(),
        "--resync".to_owned(),
        "10m".to_owned(),
    ];
    let log = s.log(&format!("operator-{identity}"));
    let mut command = s.ctx.command(&args, &log);
    command.env("RUST_LOG", "info");
    Proc {
        child: command.spawn().expect("the operator starts"),
        log,
        started: Instant::now(),
    }
}

async fn operator_fault(
    s: &mut Scene<'_>,
    signal: Signal,
    after_ms: u64,
    gate_ms: Option<u64>,
    same_identity: bool,
) {
    // Other ControlPlanes the operator would also adopt: their finalizers are put back as found.
    let finalized_before: BTreeSet<String> = s
        .ctx
        .control_planes
        .list(&ListParams::default())
        .await
        .map(|list| {
            list.items
                .into_iter()
                .filter(|cp| cp.finalizers().iter().any(|f| f == OPERATOR_FINALIZER))
                .map(|cp| cp.name_any())
                .collect()
        })
        .unwrap_or_default();
    let leader_ns = unique_name("fault-opsys");
    let namespaces: Api<Namespace> = Api::all(s.ctx.client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(leader_ns.clone());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("creating the leader namespace");
    s.leader_ns = Some(leader_ns.clone());

    // The desired state, as a user would write it: the default components.
    let defaults: Vec<&'static str> = s
        .ctx
        .catalog
        .components()
        .iter()
        .filter(|c| c.enabled_by_default && campaign_components(&s.ctx.catalog).contains(&c.name))
        .map(|c| c.name)
        .collect();
    let before = s.spec().await;
    let mut intended = with_enabled(&s.ctx.catalog, &before, &defaults, true);
    if gate_ms.is_some() {
        intended["components"]["istiod"]["valuesOverride"] =
            json!({"nodeSelector": {s.gate_key.as_str(): "open"}});
    }
    s.merge_spec(intended.clone()).await;
    let intended = s.spec().await;

    let gate_task = gate_ms.map(|ms| s.open_gate_after(ms));
    let first_identity = unique_name("fault-op");
    let mut first = start_operator(s, &first_identity, &leader_ns);
    tokio::time::sleep(Duration::from_millis(after_ms)).await;
    let signalled = Instant::now();
    if first.running() {
        first.signal(signal);
    } else {
        s.record.fail(format!(
            "the first operator had exited before the signal:\n    {}",
            first.tail(10)
        ));
    }
    let exit = first.wait(Duration::from_secs(90)).await;
    if exit.is_none() {
        s.record
            .fail("the first operator did not exit within 90s of the signal");
    }
    s.record.note(format!(
        "first operator: {} {:.1}s after the signal",
        describe(exit),
        signalled.elapsed().as_secs_f64()
    ));
    s.note_orphans().await;
    if let Some(task) = gate_task {
        let _ = task.await;
    }
    s.check_spec_after_fault(&[&intended]).await;

    let second_identity = if same_identity {
        first_identity
    } else {
        unique_name("fault-op")
    };
    let mut second = start_operator(s, &second_identity, &leader_ns);
    let started = Instant::now();
    let mut status_args = strings(&["status"]);
    status_args.extend(s.cp_flag());
    let mut ready = false;
    while started.elapsed() < Duration::from_secs(150) {
        let log = s.dir.join("status-poll.log");
        let _ = std::fs::remove_file(&log);
        let polled = s.ctx.command(&status_args, &log).status();
        if polled.is_ok_and(|st| st.success()) {
            ready = true;
            break;
        }
        if !second.running() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if ready {
        s.record.note(format!(
            "taken over in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
    } else {
        s.record.fail(format!(
            "the second operator did not make the ControlPlane Ready within 150s:\n    {}",
            second.tail(10)
        ));
    }
    second.signal(Signal::Term);
    if second.wait(Duration::from_secs(90)).await.is_none() {
        s.record
            .fail("the second operator did not exit within 90s of SIGTERM");
    }

    // Put back other ControlPlanes' finalizers as they were.
    if let Ok(list) = s.ctx.control_planes.list(&ListParams::default()).await {
        for cp in list.items {
            let name = cp.name_any();
            if name == s.cp || finalized_before.contains(&name) {
                continue;
            }
            if cp.finalizers().iter().any(|f| f == OPERATOR_FINALIZER) {
                let rest: Vec<String> = cp
                    .finalizers()
                    .iter()
                    .filter(|f| *f != OPERATOR_FINALIZER)
                    .cloned()
                    .collect();
                let patch = json!({"metadata": {"finalizers": rest}});
                let _ = s
                    .ctx
                    .control_planes
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
        }
    }

    let file = s.write_control_plane("intended.json", &s.cp.clone(), &intended);
    s.verify(&strings(&["reconcile", "-f", &file]), &intended)
        .await;
}

async fn apiserver_fault(s: &mut Scene<'_>, after_ms: u64, outage_s: u64, gate_ms: Option<u64>) {
    // restart-apiserver acts on the plane in SMM_CLUSTER_DIR: it must be the one we talk to.
    let env = Command::new(repo_root().join("scripts/cluster.sh"))
        .arg("env")
        .output();
    let named = env
        .as_ref()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&s.ctx.kubeconfig))
        .unwrap_or(false);
    if !named {
        s.record.fail(format!(
            "scripts/cluster.sh (SMM_CLUSTER_DIR={:?}) does not run the plane of KUBECONFIG={}: \
             not restarting another plane's API server",
            std::env::var("SMM_CLUSTER_DIR").ok(),
            s.ctx.kubeconfig
        ));
        return;
    }
    if gate_ms.is_some() {
        s.merge_spec(
            json!({"components": {"istiod": {"valuesOverride": {"nodeSelector": {s.gate_key.as_str(): "open"}}}}}),
        )
        .await;
    }
    let before = s.spec().await;
    let all = campaign_components(&s.ctx.catalog);
    let intended = with_enabled(&s.ctx.catalog, &before, &all, true);
    let mut args = install_args(&all);
    args.extend(s.cp_flag());

    let gate_task = gate_ms.map(|ms| s.open_gate_after(ms));
    let mut proc = s.spawn("faulted", &args);
    tokio::time::sleep(Duration::from_millis(after_ms)).await;
    if !proc.running() {
        s.record.missed = true;
        s.record
            .note("missed: smm install -a had ended before the outage");
    }
    let restart_log = s.log("restart-apiserver");
    let outage = outage_s.to_string();
    let restarted = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&restart_log).ok()?;
        Command::new(repo_root().join("scripts/cluster.sh"))
            .args(["restart-apiserver", &outage])
            .stdout(file.try_clone().ok()?)
            .stderr(file)
            .status()
            .ok()
    })
    .await
    .ok()
    .flatten();
    if !restarted.is_some_and(|st| st.success()) {
        s.record.fail(format!(
            "scripts/cluster.sh restart-apiserver {outage_s} failed"
        ));
    }
    let exit = proc.wait(COMMAND_LIMIT).await;
    s.record
        .note(format!("install during the outage: {}", describe(exit)));
    if let Some(task) = gate_task {
        let _ = task.await;
    }
    let client = s.ctx.client.clone();
    if !support::eventually(Duration::from_secs(60), async || {
        client.apiserver_version().await.is_ok()
    })
    .await
    {
        s.record
            .fail("the API server did not answer within 60s of its restart");
        return;
    }
    s.note_orphans().await;
    s.check_spec_after_fault(&[&before, &intended]).await;
    s.verify(&args, &intended).await;
}

async fn concurrent_fault(
    s: &mut Scene<'_>,
    first: &'static str,
    second: &'static str,
    offset_ms: u64,
) {
    let before = s.spec().await;
    let intended = with_enabled(&s.ctx.catalog, &before, &[first, second], true);
    let mut one = strings(&["install", first]);
    one.extend(s.cp_flag());
    let mut two = strings(&["install", second]);
    two.extend(s.cp_flag());
    let mut a = s.spawn(&format!("install-{first}"), &one);
    tokio::time::sleep(Duration::from_millis(offset_ms)).await;
    let mut b = s.spawn(&format!("install-{second}"), &two);
    let (ea, eb) = (a.wait(COMMAND_LIMIT).await, b.wait(COMMAND_LIMIT).await);
    for (component, exit, proc) in [(first, ea, &a), (second, eb, &b)] {
        if !exit.is_some_and(|st| st.success()) {
            s.record.fail(format!(
                "smm install {component}: {}:\n    {}",
                describe(exit),
                proc.tail(10)
            ));
        }
    }
    // Both must stick: the stored spec has both before any further run.
    s.check_spec_after_fault(&[&intended]).await;
    let file = s.write_control_plane("intended.json", &s.cp.clone(), &intended);
    s.verify(&strings(&["reconcile", "-f", &file]), &intended)
        .await;
}

async fn hand_helm_fault(s: &mut Scene<'_>, rollback: bool, replicas: u64) {
    let mut setup = strings(&["install", "istiod"]);
    setup.extend(s.cp_flag());
    if !s.setup(&setup).await {
        return;
    }
    if rollback {
        setup.extend(strings(&["--set", &format!("replicaCount={replicas}")]));
        if !s.setup(&setup).await {
            return;
        }
    }
    let intended = s.spec().await;
    let release = s
        .ctx
        .catalog
        .get("istiod")
        .map(|c| c.release_name)
        .unwrap_or("istiod");
    // Istio's istiod chart as scripts/istio/fetch.sh fetched it: what someone upgrading the
    // release by hand would use.
    let chart = repo_root().join(".upstream/istio/charts/istio-discovery");
    let mut helm_args: Vec<String> = if rollback {
        strings(&["rollback", release, "1"])
    } else {
        vec![
            "upgrade".to_owned(),
            release.to_owned(),
            chart.to_string_lossy().into_owned(),
            "--reuse-values".to_owned(),
            // Istio's chart leaves the replica count to its autoscaler unless told otherwise.
            "--set".to_owned(),
            format!("autoscaleEnabled=false,replicaCount={replicas}"),
        ]
    };
    helm_args.extend(strings(&[
        "--namespace",
        &s.ns,
        "--kubeconfig",
        &s.ctx.kubeconfig,
    ]));
    let log = s.log("hand-helm");
    let file = std::fs::File::create(&log).expect("a log file");
    let helm = Command::new(&s.ctx.helm)
        .args(&helm_args)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status();
    if !helm.as_ref().is_ok_and(|st| st.success()) {
        s.record.fail(format!(
            "the hand-made `helm {}` failed: {}",
            helm_args.join(" "),
            tail(&log, 6)
        ));
        return;
    }
    // The fault took: the Deployment now has the hand-made replica count.
    let hand = if rollback { 1 } else { replicas as i32 };
    let deployments: Api<Deployment> = Api::namespaced(s.ctx.client.clone(), &s.ns);
    let changed = support::eventually(Duration::from_secs(20), async || {
        deployments
            .get_opt("istiod")
            .await
            .ok()
            .flatten()
            .and_then(|d| d.spec.and_then(|spec| spec.replicas))
            == Some(hand)
    })
    .await;
    if !changed {
        s.record.fail(format!(
            "the hand-made helm command did not set istiod to {hand} replicas"
        ));
    }
    s.check_spec_after_fault(&[&intended]).await;
    let file = s.write_control_plane("intended.json", &s.cp.clone(), &intended);
    s.verify(&strings(&["reconcile", "-f", &file]), &intended)
        .await;
}

async fn second_control_plane_fault(s: &mut Scene<'_>, replicas: u64) {
    let mut setup = strings(&["install", "istiod"]);
    setup.extend(s.cp_flag());
    if !s.setup(&setup).await {
        return;
    }
    let intended = s.spec().await;
    let releases_before = release_records(&s.ctx.client, &s.ns).await;
    let deployments: Api<Deployment> = Api::namespaced(s.ctx.client.clone(), &s.ns);
    let generations = |list: Vec<Deployment>| -> BTreeMap<String, Option<i64>> {
        list.into_iter()
            .map(|d| (d.name_any(), d.metadata.generation))
            .collect()
    };
    let deployments_before = generations(
        deployments
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default(),
    );

    let other = unique_name("fault-second");
    s.other_cps.push(other.clone());
    let mut spec = json!({"namespace": s.ns, "components": {}});
    for name in s.ctx.catalog.names() {
        spec["components"][name] = json!({"enabled": false});
    }
    let mut spec = with_enabled(&s.ctx.catalog, &spec, &["istiod"], true);
    spec["components"]["istiod"]["valuesOverride"] = json!({"replicaCount": replicas});
    let file = s.write_control_plane("second.json", &other, &spec);
    let (status, proc) = s
        .run("second-reconcile", &strings(&["reconcile", "-f", &file]))
        .await;
    let output = std::fs::read_to_string(&proc.log).unwrap_or_default();
    if status.is_some_and(|st| st.success()) {
        s.record.fail(format!(
            "the second ControlPlane {other} on {} was reconciled, not refused",
            s.ns
        ));
    } else if status.and_then(|st| st.code()) != Some(1) || !output.contains(&s.cp) {
        s.record.fail(format!(
            "the second ControlPlane's refusal ({}) does not name the owner {}:\n    {}",
            describe(status),
            s.cp,
            proc.tail(8)
        ));
    }
    // Removing the second one must not remove the first one's mesh either.
    let (_, _) = s
        .run(
            "second-uninstall",
            &strings(&["uninstall", "-a", "--control-plane", &other]),
        )
        .await;
    let _ = s
        .ctx
        .control_planes
        .delete(&other, &DeleteParams::default())
        .await;

    let releases_after = release_records(&s.ctx.client, &s.ns).await;
    if releases_after != releases_before {
        s.record.fail(format!(
            "the first ControlPlane's releases changed: {releases_before:?} -> {releases_after:?}"
        ));
    }
    let deployments_after = generations(
        deployments
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default(),
    );
    if deployments_after != deployments_before {
        s.record.fail(format!(
            "the first ControlPlane's Deployments changed (name: generation): \
             {deployments_before:?} -> {deployments_after:?}"
        ));
    }
    s.check_spec_after_fault(&[&intended]).await;
    let file = s.write_control_plane("intended.json", &s.cp.clone(), &intended);
    s.verify(&strings(&["reconcile", "-f", &file]), &intended)
        .await;
}

// ---------------------------------------------------------------------------------------------

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_campaign() {
    let seed = env_number("SMM_FAULT_SEED").unwrap_or(DEFAULT_SEED);
    let count = env_number("SMM_FAULTS").map_or(DEFAULT_FAULTS, |n| n as usize);
    let only: Option<BTreeSet<usize>> = std::env::var("SMM_FAULT_ONLY").ok().map(|list| {
        list.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("SMM_FAULT_ONLY: numbers, comma-separated")
            })
            .collect()
    });
    let cluster = TestCluster::connect().await;
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG");
    let helm = std::fs::canonicalize(HelmTool::Helm4.path()).expect(".tools/helm");
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let node = nodes
        .list(&ListParams::default())
        .await
        .expect("listing nodes")
        .items
        .first()
        .map(|n| n.name_any())
        .expect("a node to schedule on");
    let logs = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("faults")
        .join(format!("seed-{seed:#x}-{}", std::process::id()));
    std::fs::create_dir_all(&logs).expect("the log directory");
    let ctx = Ctx {
        client: cluster.client.clone(),
        kubeconfig,
        helm: helm.clone(),
        smm: PathBuf::from(env!("CARGO_BIN_EXE_smm")),
        catalog: Catalog::builtin().unwrap(),
        node,
        logs: logs.clone(),
        control_planes: Api::all_with(
            cluster.client.clone(),
            &ApiResource::erase::<ControlPlane>(&()),
        ),
    };
    eprintln!(
        "fault campaign: seed {seed:#x}, {count} faults (SMM_FAULT_SEED={seed:#x} SMM_FAULTS={count}); logs in {}",
        logs.display()
    );
    // helm processes of this helm that run already would be taken for leftovers.
    let idle = support::eventually(Duration::from_secs(30), async || {
        helm_processes(&helm).is_empty()
    })
    .await;
    assert!(
        idle,
        "{} runs already ({:?}): the campaign counts helm processes and must run alone",
        helm.display(),
        helm_processes(&helm)
    );

    let started = Instant::now();
    let (mut passed, mut failed, mut missed) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for number in 1..=count {
        if only.as_ref().is_some_and(|only| !only.contains(&number)) {
            continue;
        }
        let fault = plan(seed, number - 1);
        let fault_started = Instant::now();
        let mut scene = Scene::new(&ctx, &cluster, number).await;
        match fault.clone() {
            Fault::Cli {
                op,
                signal,
                after_ms,
                gate_ms,
                hold,
            } => cli_fault(&mut scene, op, signal, after_ms, gate_ms, hold).await,
            Fault::Operator {
                signal,
                after_ms,
                gate_ms,
                same_identity,
            } => operator_fault(&mut scene, signal, after_ms, gate_ms, same_identity).await,
            Fault::ApiServerRestart {
                after_ms,
                outage_s,
                gate_ms,
            } => apiserver_fault(&mut scene, after_ms, outage_s, gate_ms).await,
            Fault::ConcurrentInstalls {
                first,
                second,
                offset_ms,
            } => concurrent_fault(&mut scene, first, second, offset_ms).await,
            Fault::HandHelm { rollback, replicas } => {
                hand_helm_fault(&mut scene, rollback, replicas).await
            }
            Fault::SecondControlPlane { replicas } => {
                second_control_plane_fault(&mut scene, replicas).await
            }
        }
        scene.clean_up().await;
        let record = std::mem::take(&mut scene.record);
        let took = fault_started.elapsed().as_secs_f64();
        missed += usize::from(record.missed);
        let notes = if record.notes.is_empty() {
            String::new()
        } else {
            format!(" [{}]", record.notes.join("; "))
        };
        if record.failures.is_empty() {
            passed += 1;
            eprintln!("fault {number}/{count}: {fault}: passed in {took:.0}s{notes}");
        } else {
            failed += 1;
            eprintln!(
                "fault {number}/{count}: {fault}: FAILED in {took:.0}s{notes} (logs: {})\n  - {}",
                scene.dir.display(),
                record.failures.join("\n  - ")
            );
            failures.push(format!("fault {number}: {fault}"));
        }
    }
    eprintln!(
        "fault campaign: seed {seed:#x}, {:.0}s; rerun one with SMM_FAULT_SEED={seed:#x} SMM_FAULT_ONLY=<number>",
        started.elapsed().as_secs_f64()
    );
    if missed > 0 {
        eprintln!("{missed} fault(s) came after their operation had ended (checked all the same)");
    }
    if !failures.is_empty() {
        eprintln!("failed: {}", failures.join("; "));
    }
    eprintln!("{passed} passed, {failed} failed");
    assert!(
        failed == 0 && passed > 0,
        "{failed} of {} faults failed (listed above)",
        passed + failed
    );
}
