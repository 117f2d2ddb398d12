//! The processes the campaign starts and watches: smm commands, operators, and helm's leftovers.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
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
        // SAFETY: kill(2) on a child of ours that has not been reaped, so the PID is still ours.
        unsafe {
            libc::kill(self.pid(), signal.number());
        }
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
    let entries = std::fs::read_dir("/proc").expect("/proc lists the processes");
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let on_our_plane = environ
                .split(|&byte| byte == 0)
                .any(|variable| variable == ours.as_bytes());
            (exe == helm && on_our_plane).then_some(pid)
        })
        .collect()
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
