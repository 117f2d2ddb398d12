//! The campaign's context and one fault's scene: its ControlPlane and mesh namespace, the logs
//! of its processes, the gates that hold an operation past the moment a fault strikes, its
//! pass/fail record, and the clean-up after it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ResourceQuota};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use smm::helm::STOP_GRACE;
use smm::mesh::catalog::Catalog;

use crate::process::{Proc, describe, helm_processes};
use crate::spec::strings;
use crate::support::{self, TestCluster, fresh_control_plane, unique_name};

/// A finalizer of the campaign's own that holds a Deployment being deleted (an uninstall waits).
const HOLD_FINALIZER: &str = "smm.dev/fault-campaign-hold";
/// The ResourceQuota that holds new pods back during an upgrade.
const GATE_QUOTA: &str = "smm-fault-gate";
/// Longest any single smm command may take before the campaign kills it and fails the fault.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(240);

pub struct Ctx {
    pub client: Client,
    pub kubeconfig: String,
    pub helm: PathBuf,
    /// The campaign's helm behind a script that counts its runs (`process::counting_helm`).
    pub counting_helm: PathBuf,
    pub smm: PathBuf,
    pub catalog: Catalog,
    pub node: String,
    pub logs: PathBuf,
    pub control_planes: Api<DynamicObject>,
}

impl Ctx {
    /// The campaign's helm processes on its plane, by PID.
    pub fn helm_processes(&self) -> Vec<u32> {
        helm_processes(&self.helm, &self.kubeconfig)
    }

    pub fn command(&self, args: &[String], log: &Path) -> Command {
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
pub struct Record {
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    /// The fault came after the operation had ended although the operation was held to outlast
    /// it: its next run is checked all the same, but nothing was interrupted.
    pub missed: bool,
}

impl Record {
    /// The operation had ended before the fault struck (`what` says how). Missed when the plan
    /// held the operation to outlast the fault (`held`); a fault planned without a hold is meant
    /// to find the operation over now and then, and checks that it changes nothing.
    pub fn ended_first(&mut self, held: bool, what: &str) {
        self.missed |= held;
        let word = if held {
            "missed"
        } else {
            "after the operation, as planned"
        };
        self.note(format!("{word}: {what}"));
    }
    pub fn fail(&mut self, message: impl Into<String>) {
        self.failures.push(message.into());
    }
    pub fn note(&mut self, message: impl Into<String>) {
        self.notes.push(message.into());
    }
}

pub struct Scene<'a> {
    pub ctx: &'a Ctx,
    pub dir: PathBuf,
    pub cp: String,
    pub ns: String,
    pub gate_key: String,
    pub held: Vec<(String, String)>,
    pub other_cps: Vec<String>,
    pub leader_ns: Option<String>,
    pub labelled: bool,
    pub record: Record,
    pub runs: usize,
}

impl<'a> Scene<'a> {
    pub async fn new(ctx: &'a Ctx, cluster: &TestCluster, number: usize) -> Scene<'a> {
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

    pub fn log(&mut self, label: &str) -> PathBuf {
        self.runs += 1;
        self.dir.join(format!("{:02}-{label}.log", self.runs))
    }

    pub fn cp_flag(&self) -> [String; 2] {
        ["--control-plane".to_owned(), self.cp.clone()]
    }

    /// `smm` arguments for the scene's ControlPlane: `items`, then `--control-plane`.
    pub fn on_cp(&self, items: &[&str]) -> Vec<String> {
        let mut args = strings(items);
        args.extend(self.cp_flag());
        args
    }

    pub fn spawn(&mut self, label: &str, args: &[String]) -> Proc {
        self.spawn_with(label, args, |_| {})
    }

    /// [`Scene::spawn`] of a command that `adjust` changes first.
    pub fn spawn_with(
        &mut self,
        label: &str,
        args: &[String],
        adjust: impl FnOnce(&mut Command),
    ) -> Proc {
        let log = self.log(label);
        let mut command = self.ctx.command(args, &log);
        adjust(&mut command);
        let child = command.spawn().expect("smm starts");
        Proc {
            child,
            log,
            started: Instant::now(),
        }
    }

    /// Runs smm to the end (bounded by COMMAND_LIMIT); the exit and the output's tail.
    pub async fn run(&mut self, label: &str, args: &[String]) -> (Option<ExitStatus>, Proc) {
        let mut proc = self.spawn(label, args);
        let status = proc.wait(COMMAND_LIMIT).await;
        (status, proc)
    }

    /// Runs smm to the end; when it fails, a failure: `failure`, how it ended and the last
    /// `lines` of its output.
    pub async fn run_checked(&mut self, label: &str, args: &[String], failure: &str, lines: usize) {
        let (status, proc) = self.run(label, args).await;
        if !status.is_some_and(|s| s.success()) {
            self.record.fail(format!(
                "{failure}{}:\n    {}",
                describe(status),
                proc.tail(lines)
            ));
        }
    }

    /// A run that must succeed for the fault to be set up; false (and a failure) otherwise.
    pub async fn setup(&mut self, args: &[String]) -> bool {
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

    pub async fn spec_of(&self, name: &str) -> Option<Value> {
        let object = self.ctx.control_planes.get_opt(name).await.ok()??;
        Some(object.data.get("spec").cloned().unwrap_or(Value::Null))
    }

    pub async fn spec(&self) -> Value {
        self.spec_of(&self.cp).await.unwrap_or(Value::Null)
    }

    pub async fn merge_spec(&self, patch: Value) {
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

    /// Deletes ControlPlane `name`, if it is there.
    pub async fn delete_control_plane(&self, name: &str) {
        let _ = self
            .ctx
            .control_planes
            .delete(name, &DeleteParams::default())
            .await;
    }

    pub fn write_control_plane(&self, file: &str, name: &str, spec: &Value) -> String {
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
    pub fn open_gate_after(&mut self, ms: u64) -> tokio::task::JoinHandle<()> {
        self.labelled = true;
        let nodes: Api<Node> = Api::all(self.ctx.client.clone());
        let node = self.ctx.node.clone();
        let patch = json!({"metadata": {"labels": {self.gate_key.as_str(): "open"}}});
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            for _ in 0..80 {
                // The API server may be restarting (down for up to 16 s): retry for up to 40 s.
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
    pub async fn hold(&mut self, name: &str) {
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
    pub async fn quota(&mut self) {
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
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

    pub fn remove_quota_after(&self, ms: u64) -> tokio::task::JoinHandle<()> {
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

    pub fn release_holds_after(&self, ms: u64) -> tokio::task::JoinHandle<()> {
        let client = self.ctx.client.clone();
        let held = self.held.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            release_holds(&client, &held).await;
        })
    }

    /// Fails the fault when helm outlives the smm that ended at `exited` by more than
    /// STOP_GRACE: smm stops its helm (SIGTERM, SIGKILL after STOP_GRACE) before it exits, and
    /// a helm whose smm was killed gets SIGTERM from the kernel, so no helm may go on writing
    /// to releases that the next run then takes for its own.
    pub async fn check_helm_stopped(&mut self, exited: Instant) {
        // Scheduling slack on a busy machine, beyond helm's own grace.
        let deadline = exited + STOP_GRACE + Duration::from_secs(2);
        loop {
            let helms = self.ctx.helm_processes();
            if helms.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                return self.record.fail(format!(
                    "helm process(es) {helms:?} still ran {:.1}s after their smm ended",
                    exited.elapsed().as_secs_f64()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Removes everything of the fault, whatever happened; problems are notes (the next fault
    /// has names of its own), except an uninstall that fails: that is a failure.
    pub async fn clean_up(&mut self) {
        let client = self.ctx.client.clone();
        release_holds(&client, &self.held).await;
        let args = self.on_cp(&["uninstall", "-a"]);
        self.run_checked(
            "cleanup-uninstall",
            &args,
            "cleaning up: smm uninstall -a ",
            8,
        )
        .await;
        let mut names = self.other_cps.clone();
        names.push(self.cp.clone());
        for name in names {
            let patch = json!({"metadata": {"finalizers": null}});
            let _ = self
                .ctx
                .control_planes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            self.delete_control_plane(&name).await;
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

/// A merge patch that keeps `object`'s finalizers but `finalizer`.
pub fn without_finalizer(object: &impl ResourceExt, finalizer: &str) -> Value {
    let rest: Vec<&String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .collect();
    json!({"metadata": {"finalizers": rest}})
}

async fn release_holds(client: &Client, held: &[(String, String)]) {
    for (ns, name) in held {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let Ok(Some(deployment)) = deployments.get_opt(name).await else {
            continue;
        };
        let patch = without_finalizer(&deployment, HOLD_FINALIZER);
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
