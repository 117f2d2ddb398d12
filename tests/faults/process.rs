//! The processes the campaign starts and watches: smm commands, operators, and helm's leftovers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::plan::Signal;

/// A process started by the campaign, its stdout and stderr in one log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub started: Instant,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn signal(&self, signal: Signal) {
        send(self.pid(), signal.number());
    }

    /// Waits for the exit up to `limit`; past it, SIGKILL and None.
    pub async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
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

    pub fn tail(&self, lines: usize) -> String {
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

/// Sends `signal` to process `pid`: a child of ours not yet reaped, or a helm child of one, so
/// the PID still names the process it was found as.
pub fn send(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory effects; the PID is one of ours (see above).
    unsafe {
        libc::kill(pid, signal);
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n    ")
}

pub fn describe(status: Option<ExitStatus>) -> String {
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

/// The processes of `helm` (the campaign's helm) that talk to the plane of `kubeconfig`, by
/// PID: smm hands its environment down to helm, and other checkouts may run the same helm
/// binary against planes of their own at the same time.
pub fn helm_processes(helm: &Path, kubeconfig: &str) -> Vec<u32> {
    let ours = format!("KUBECONFIG={kubeconfig}");
    running(helm)
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|&byte| byte == 0)
                    .any(|variable| variable == ours.as_bytes())
            })
        })
        .collect()
}

/// The processes of `helm` whose parent is `parent` (an smm the campaign started).
pub fn helm_children(helm: &Path, parent: u32) -> Vec<u32> {
    running(helm)
        .filter(|&pid| {
            stat_fields(pid)
                .and_then(|fields| fields.get(1)?.parse::<u32>().ok())
                .is_some_and(|ppid| ppid == parent)
        })
        .collect()
}

/// The processes that run the binary `helm`, by PID.
fn running(helm: &Path) -> impl Iterator<Item = u32> {
    let entries = std::fs::read_dir("/proc").expect("/proc lists the processes");
    entries.filter_map(move |entry| {
        let entry = entry.ok()?;
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
        (exe == helm).then_some(pid)
    })
}

/// The fields of `/proc/PID/stat` after the command name (state, parent PID, ...); None once
/// the process is gone. The name may hold spaces and parentheses, so it ends at the last `)`.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// The file in which the counting helm notes each of its runs.
pub const HELM_RUNS_ENV: &str = "SMM_FAULT_HELM_RUNS";

/// Writes into `dir` a script that notes its arguments in the file [`HELM_RUNS_ENV`] names,
/// then runs as `helm`: how many helm processes a run starts, counted outside smm.
pub fn counting_helm(dir: &Path, helm: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("counting-helm");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"${HELM_RUNS_ENV}\"\nexec '{}' \"$@\"\n",
        helm.display()
    );
    std::fs::write(&path, script).expect("writing the counting helm");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("making the counting helm executable");
    path
}

/// A watch, in a thread of its own, for two helm processes working on one release at once.
pub struct OverlapWatch {
    watching: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl OverlapWatch {
    /// Starts watching the processes of `helm` that talk to the plane of `kubeconfig`.
    pub fn start(helm: &Path, kubeconfig: &str) -> Self {
        let watching = Arc::new(AtomicBool::new(true));
        let task = tokio::task::spawn_blocking({
            let (helm, kubeconfig) = (helm.to_owned(), kubeconfig.to_owned());
            let watching = watching.clone();
            move || helm_overlaps(&helm, &kubeconfig, &watching)
        });
        Self { watching, task }
    }

    /// Stops watching: a failure for each overlap seen.
    pub async fn stop(self) -> Vec<String> {
        self.watching.store(false, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// Polls the campaign's helm processes on its plane every 20 ms while `watching`: each time two
/// of them work on one release (namespace and name), a failure naming them.
fn helm_overlaps(helm: &Path, kubeconfig: &str, watching: &AtomicBool) -> Vec<String> {
    let mut overlaps = Vec::new();
    while watching.load(Ordering::Relaxed) {
        let mut by_release: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
        for pid in helm_processes(helm, kubeconfig) {
            if let Some(release) = release_of(pid) {
                by_release.entry(release).or_default().push(pid);
            }
        }
        for ((namespace, name), pids) in by_release {
            if pids.len() > 1 {
                overlaps.push(format!(
                    "helm processes {pids:?} worked on release {namespace}/{name} at once"
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    overlaps.dedup();
    overlaps
}

/// The release (namespace, name) a helm process works on, from its command line: `upgrade
/// --install NAME`, `uninstall NAME`, `rollback NAME`, with `--namespace NS`.
fn release_of(pid: u32) -> Option<(String, String)> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|&byte| byte == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let namespace = args
        .iter()
        .position(|arg| arg == "--namespace" || arg == "-n")
        .and_then(|at| args.get(at + 1))?
        .clone();
    let name = args
        .iter()
        .skip(1)
        .find(|arg| {
            !arg.starts_with('-') && !["upgrade", "uninstall", "rollback"].contains(&arg.as_str())
        })?
        .clone();
    Some((namespace, name))
}
