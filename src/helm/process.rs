//! helm as a child process: isolated from smm's terminal and environment, never outliving smm,
//! stopped gently (SIGTERM) before it is killed.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::process::Command;

/// How long a helm told to stop (SIGTERM) gets before it is killed. helm cancels the operation
/// on SIGTERM and records the release as failed, which the next run upgrades; a SIGKILL would
/// leave it pending. The operator's termination grace period covers helm's timeout plus this.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Environment variables through which helm would pick another cluster, namespace or storage
/// driver than the one smm reads releases from and locks; they are removed from helm's
/// environment, and smm passes what it means explicitly.
const HELM_TARGETING_ENV: &[&str] = &[
    "HELM_DRIVER",
    "HELM_DRIVER_SQL_CONNECTION_STRING",
    "HELM_KUBECONTEXT",
    "HELM_KUBEAPISERVER",
    "HELM_KUBETOKEN",
    "HELM_KUBEASUSER",
    "HELM_KUBEASGROUPS",
    "HELM_KUBECAFILE",
    "HELM_KUBEINSECURE_SKIP_TLS_VERIFY",
    "HELM_KUBETLS_SERVER_NAME",
    "HELM_NAMESPACE",
    "HELM_BURST_LIMIT",
    "HELM_QPS",
];

/// Prepares `command` for helm: a process group of its own (a terminal's Ctrl-C reaches smm
/// alone, which stops helm the way it chooses, and stopping helm reaches any process helm
/// started), no [`HELM_TARGETING_ENV`] variable, and a parent-death signal.
pub(super) fn isolate(command: &mut Command) {
    command.process_group(0);
    for name in HELM_TARGETING_ENV {
        command.env_remove(name);
    }
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            // helm never outlives smm: it gets SIGTERM when the thread that started it ends,
            // which for a tokio worker thread is when smm's runtime ends.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The process groups of the helm processes running now, so that they can all be killed at
/// once when smm must end without waiting for them.
static RUNNING: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// A running helm's process group, listed in [`RUNNING`] while this lives.
pub(super) struct Running(Option<i32>);

impl Running {
    pub(super) fn listed(group: Option<i32>) -> Self {
        if let Some(group) = group {
            RUNNING.lock().expect("helm list lock").insert(group);
        }
        Self(group)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            RUNNING.lock().expect("helm list lock").remove(&group);
        }
    }
}

/// Ends smm at once (told twice to stop): every running helm's process group is killed first,
/// since helm runs in a group of its own and would otherwise go on writing. A lease smm holds
/// is not given back; it expires, and its next holder waits for it as for a crashed holder.
pub fn kill_running_and_exit() -> ! {
    for group in RUNNING.lock().expect("helm list lock").iter() {
        // SAFETY: kill(2) with a negative pid signals the process group a running helm leads.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
    eprintln!("stopped at once: helm killed");
    std::process::exit(130)
}

/// Collects a child's output pipe in the background, so a chatty helm never blocks on a full
/// pipe while smm waits for it.
pub(super) fn read_all<R>(pipe: Option<R>) -> tokio::task::JoinHandle<Vec<u8>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buffer = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut buffer).await;
        }
        buffer
    })
}

/// Stops helm: SIGTERM to its process group, so it cancels and records the release as failed
/// (not left pending), then SIGKILL after [`STOP_GRACE`]. SIGCONT follows SIGTERM, as systemd
/// does: a stopped helm (SIGSTOP, a debugger) hears SIGTERM only once resumed, and would
/// otherwise sit out the grace and be killed with its release left pending.
pub(super) async fn stop(child: &mut tokio::process::Child, group: Option<i32>) {
    if let Some(group) = group {
        // SAFETY: kill(2) with a negative pid signals the process group helm leads.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-group, libc::SIGTERM);
            libc::kill(-group, libc::SIGCONT);
        }
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        if let Some(group) = group {
            // SAFETY: as above.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;
    use std::time::Instant;

    use tokio::io::AsyncBufReadExt;

    use super::*;

    /// A helm frozen with SIGSTOP is resumed to hear SIGTERM, so it stops as told (its handler
    /// runs: helm records the release failed) instead of being killed after the grace.
    #[tokio::test]
    async fn a_stopped_helm_is_resumed_to_hear_sigterm() {
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                "trap 'exit 7' TERM; echo ready; while :; do sleep 0.1; done",
            ])
            .stdout(Stdio::piped());
        isolate(&mut command);
        let mut child = command.spawn().expect("sh starts");
        let group = child.id().map(|pid| pid as i32);
        let stdout = child.stdout.take().expect("a pipe");
        let mut ready = String::new();
        tokio::io::BufReader::new(stdout)
            .read_line(&mut ready)
            .await
            .expect("sh says it is ready");
        // SAFETY: kill(2) on the child just started, not yet reaped.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(group.expect("a pid"), libc::SIGSTOP);
        }
        let stopping = Instant::now();
        stop(&mut child, group).await;
        let status = child.wait().await.expect("sh ended");
        assert_eq!(status.code(), Some(7), "ended by its SIGTERM handler");
        assert!(stopping.elapsed() < STOP_GRACE / 2);
    }
}
