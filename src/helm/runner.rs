//! The helm runner: finds the real `helm` binary and runs it against the target cluster.
//!
//! smm deliberately shells out to helm instead of reimplementing it, so releases stay
//! inspectable and manageable with the user's own helm. Every spawned process is counted,
//! which lets the engine's tests prove that a no-op reconcile spawns none.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::process;
use crate::cluster::target::ClusterTarget;
use crate::helm::release::ReleaseRef;

/// The environment variable that names the helm binary when `--helm-binary` is not given.
pub const HELM_ENV: &str = "SMM_HELM";

/// Where the helm binary in use came from, so messages can say which setting to fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelmSource {
    Flag,
    Env,
    Path,
}

impl std::fmt::Display for HelmSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HelmSource::Flag => "--helm-binary",
            HelmSource::Env => HELM_ENV,
            HelmSource::Path => "PATH",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    #[error(
        "no helm binary found: pass --helm-binary, set {HELM_ENV}, or put helm on PATH \
         (scripts/tools.sh installs one into .tools/)"
    )]
    NotFound,
    #[error("helm binary {name:?} from {source_setting} not found or not executable: {cause}")]
    Unusable {
        name: OsString,
        source_setting: HelmSource,
        cause: which::Error,
    },
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("helm {operation} {release} failed ({status}): {message}")]
    Failed {
        operation: &'static str,
        release: String,
        status: std::process::ExitStatus,
        /// helm's own error line, the part a user can act on.
        message: String,
    },
    #[error("helm {operation} {release} did not finish within {after:?} and was stopped")]
    TimedOut {
        operation: &'static str,
        release: String,
        after: Duration,
    },
    #[error("helm {operation} {release} was stopped: smm is stopping")]
    Stopped {
        operation: &'static str,
        release: String,
    },
    #[error("cannot understand `helm version` output {0:?}")]
    UnknownVersion(String),
}

/// A located helm executable.
#[derive(Clone, Debug)]
pub struct HelmBinary {
    pub path: PathBuf,
    pub source: HelmSource,
}

impl HelmBinary {
    /// Finds helm: the `--helm-binary` value, then `SMM_HELM`, then `helm` on `PATH`.
    /// A name without a slash is looked up on `PATH`, as a shell would.
    pub fn locate(flag: Option<&Path>) -> Result<Self, HelmError> {
        Self::locate_in(
            flag.map(Path::as_os_str),
            std::env::var_os(HELM_ENV).as_deref(),
            std::env::var_os("PATH").as_deref(),
        )
    }

    fn locate_in(
        flag: Option<&OsStr>,
        env: Option<&OsStr>,
        path_var: Option<&OsStr>,
    ) -> Result<Self, HelmError> {
        let (name, source) = match (flag, env.filter(|value| !value.is_empty())) {
            (Some(name), _) => (name, HelmSource::Flag),
            (None, Some(name)) => (name, HelmSource::Env),
            (None, None) => (OsStr::new("helm"), HelmSource::Path),
        };
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        match which::which_in(name, path_var, cwd) {
            Ok(path) => Ok(Self { path, source }),
            Err(_) if source == HelmSource::Path => Err(HelmError::NotFound),
            Err(cause) => Err(HelmError::Unusable {
                name: name.to_owned(),
                source_setting: source,
                cause,
            }),
        }
    }
}

/// The parsed `helm version --short`, e.g. `v4.3.1` or `v3.17.2+gcc0bbbd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelmVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl std::fmt::Display for HelmVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl std::str::FromStr for HelmVersion {
    type Err = HelmError;

    fn from_str(text: &str) -> Result<Self, HelmError> {
        let unknown = || HelmError::UnknownVersion(text.to_owned());
        let core = text
            .trim()
            .strip_prefix('v')
            .and_then(|rest| rest.split(['+', '-']).next())
            .ok_or_else(unknown)?;
        let numbers: Vec<u64> = core
            .split('.')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| unknown())?;
        match numbers[..] {
            [major, minor, patch] => Ok(Self {
                major,
                minor,
                patch,
            }),
            _ => Err(unknown()),
        }
    }
}

/// Runs helm against one cluster. Clones share the spawn counter.
#[derive(Clone, Debug)]
pub struct Helm {
    binary: HelmBinary,
    target: ClusterTarget,
    /// Passed to helm as `--timeout`; the process itself is stopped a little after it.
    timeout: Duration,
    spawned: Arc<AtomicU64>,
    /// Cancelled when smm must stop: a running helm is then told to stop (see [`STOP_GRACE`](super::STOP_GRACE)).
    cancel: CancellationToken,
}

/// Time helm gets beyond its own `--timeout` to report before smm stops it.
pub const KILL_GRACE: Duration = Duration::from_secs(15);

impl Helm {
    pub fn new(binary: HelmBinary, target: ClusterTarget, timeout: Duration) -> Self {
        Self {
            binary,
            target,
            timeout,
            spawned: Arc::default(),
            cancel: CancellationToken::new(),
        }
    }

    /// Stops running helm processes when `cancel` is cancelled: SIGTERM to helm's process
    /// group, SIGKILL after [`STOP_GRACE`](super::STOP_GRACE).
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// This runner for another cluster: the same binary, timeout, cancellation and process
    /// count.
    pub fn for_target(&self, target: ClusterTarget) -> Self {
        Self {
            target,
            ..self.clone()
        }
    }

    pub fn binary(&self) -> &HelmBinary {
        &self.binary
    }

    /// How many helm processes this runner (and its clones) started.
    pub fn processes_spawned(&self) -> u64 {
        self.spawned.load(Ordering::Relaxed)
    }

    pub async fn version(&self) -> Result<HelmVersion, HelmError> {
        let stdout = self
            .run(
                "version",
                "",
                [OsString::from("version"), "--short".into()],
                false,
            )
            .await?;
        stdout.parse()
    }

    /// Installs the release, or upgrades it when it exists, from a chart directory and a values
    /// file; `labels` go on helm's release record (`key=value`).
    pub async fn upgrade_install(
        &self,
        release: &ReleaseRef,
        chart_dir: &Path,
        values_file: &Path,
        labels: &[(&str, &str)],
    ) -> Result<String, HelmError> {
        let mut args = release_args(&["upgrade", "--install"], release);
        args.extend([chart_dir.into(), "--values".into(), values_file.into()]);
        if !labels.is_empty() {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            args.extend(["--labels".into(), labels.join(",").into()]);
        }
        args.extend(["--history-max".into(), "10".into()]);
        args.extend(self.timeout_args());
        self.run("upgrade --install", &release.to_string(), args, true)
            .await
    }

    /// Uninstalls the release; with `wait`, helm returns once its objects are gone.
    pub async fn uninstall(&self, release: &ReleaseRef, wait: bool) -> Result<String, HelmError> {
        let mut args = release_args(&["uninstall"], release);
        if wait {
            args.push("--wait".into());
        }
        args.extend(self.timeout_args());
        self.run("uninstall", &release.to_string(), args, true)
            .await
    }

    /// Renders the chart locally, as `upgrade --install` would apply it; needs no cluster.
    pub async fn template(
        &self,
        release: &ReleaseRef,
        chart_dir: &Path,
        values_file: &Path,
    ) -> Result<String, HelmError> {
        let mut args = release_args(&["template"], release);
        args.extend([chart_dir.into(), "--values".into(), values_file.into()]);
        self.run("template", &release.to_string(), args, false)
            .await
    }

    /// Rolls the release back to its previous revision: the way out of `pending-upgrade` and
    /// `pending-rollback` after an interrupted helm.
    pub async fn rollback(&self, release: &ReleaseRef) -> Result<String, HelmError> {
        let mut args = release_args(&["rollback"], release);
        args.extend(self.timeout_args());
        self.run("rollback", &release.to_string(), args, true).await
    }

    /// helm's own `--timeout`, in its Go duration format.
    fn timeout_args(&self) -> [OsString; 2] {
        [
            "--timeout".into(),
            format!("{}s", self.timeout.as_secs().max(1)).into(),
        ]
    }

    async fn run(
        &self,
        operation: &'static str,
        release: &str,
        args: impl IntoIterator<Item = OsString>,
        targets_cluster: bool,
    ) -> Result<String, HelmError> {
        if self.cancel.is_cancelled() {
            return Err(HelmError::Stopped {
                operation,
                release: release.to_owned(),
            });
        }
        let mut command = Command::new(&self.binary.path);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The last resort for the case where smm dies without stopping helm.
            .kill_on_drop(true);
        process::isolate(&mut command);
        if targets_cluster {
            command.args(self.target.helm_args());
        }
        tracing::debug!(binary = %self.binary.path.display(), operation, release, "running helm");
        let mut child = command.spawn().map_err(|source| HelmError::Spawn {
            binary: self.binary.path.clone(),
            source,
        })?;
        self.spawned.fetch_add(1, Ordering::Relaxed);
        let group = child.id().map(|pid| pid as i32);
        let _running = process::Running::listed(group);
        let stdout = process::read_all(child.stdout.take());
        let stderr = process::read_all(child.stderr.take());

        // Saturating: a library caller may pass any timeout, and overflowing here would panic
        // with helm already running.
        let limit = self.timeout.saturating_add(KILL_GRACE);
        let status = tokio::select! {
            status = child.wait() => status.map_err(|source| HelmError::Spawn {
                binary: self.binary.path.clone(),
                source,
            })?,
            () = tokio::time::sleep(limit) => {
                process::stop(&mut child, group).await;
                return Err(HelmError::TimedOut {
                    operation,
                    release: release.to_owned(),
                    after: limit,
                });
            }
            () = self.cancel.cancelled() => {
                tracing::warn!(operation, release, "stopping helm");
                process::stop(&mut child, group).await;
                return Err(HelmError::Stopped {
                    operation,
                    release: release.to_owned(),
                });
            }
        };
        let output = std::process::Output {
            status,
            stdout: stdout.await.unwrap_or_default(),
            stderr: stderr.await.unwrap_or_default(),
        };
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        Err(HelmError::Failed {
            operation,
            release: release.to_owned(),
            status: output.status,
            message: error_line(&String::from_utf8_lossy(&output.stderr)),
        })
    }
}

/// `COMMAND... NAME --namespace NAMESPACE`, how every release command starts.
fn release_args(command: &[&str], release: &ReleaseRef) -> Vec<OsString> {
    let mut args: Vec<OsString> = command.iter().map(OsString::from).collect();
    args.extend([
        release.name.clone().into(),
        "--namespace".into(),
        release.namespace.clone().into(),
    ]);
    args
}

/// The line of helm's stderr that says what went wrong: its last `Error:` line, else the last line.
fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("Error: "))
        .or(lines.last().copied())
        .unwrap_or("helm printed no error message")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_helm_3_and_4_short_versions() {
        let v4: HelmVersion = "v4.3.1\n".parse().unwrap();
        assert_eq!((v4.major, v4.minor, v4.patch), (4, 3, 1));
        let v3: HelmVersion = "v3.17.2+gcc0bbbd".parse().unwrap();
        assert_eq!(v3.to_string(), "v3.17.2");
        assert!("4.3".parse::<HelmVersion>().is_err());
        assert!("vX.1.2".parse::<HelmVersion>().is_err());
    }

    #[test]
    fn error_line_prefers_helms_error_line() {
        let stderr = "WARNING: something\nError: INSTALLATION FAILED: boom\n";
        assert_eq!(error_line(stderr), "INSTALLATION FAILED: boom");
        assert_eq!(error_line("panic: oops\n\n"), "panic: oops");
        assert_eq!(error_line(""), "helm printed no error message");
    }

    #[test]
    fn locate_follows_flag_then_env_then_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for name in ["helm", "helm-from-env", "helm-from-flag"] {
            let file = bin.join(name);
            std::fs::write(&file, "#!/bin/sh\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path_var = bin.as_os_str();
        let flag = bin.join("helm-from-flag");
        let env = bin.join("helm-from-env");

        let found = HelmBinary::locate_in(
            Some(flag.as_os_str()),
            Some(env.as_os_str()),
            Some(path_var),
        )
        .unwrap();
        assert_eq!((found.path, found.source), (flag, HelmSource::Flag));
        let found = HelmBinary::locate_in(None, Some(env.as_os_str()), Some(path_var)).unwrap();
        assert_eq!((found.path, found.source), (env, HelmSource::Env));
        // An empty SMM_HELM counts as unset.
        let found = HelmBinary::locate_in(None, Some(OsStr::new("")), Some(path_var)).unwrap();
        assert_eq!(
            (found.path, found.source),
            (bin.join("helm"), HelmSource::Path)
        );
    }

    #[test]
    fn locate_names_the_setting_that_points_nowhere() {
        let empty = tempfile::tempdir().unwrap();
        let path_var = empty.path().as_os_str();
        let err = HelmBinary::locate_in(None, Some(OsStr::new("/nope/helm")), Some(path_var))
            .unwrap_err();
        assert!(err.to_string().contains("SMM_HELM"), "{err}");
        let err = HelmBinary::locate_in(None, None, Some(path_var)).unwrap_err();
        assert!(matches!(err, HelmError::NotFound), "{err}");
        assert!(err.to_string().contains("--helm-binary"));
    }
}
