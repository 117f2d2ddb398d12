//! The command line: argument parsing and one module per command. Commands translate flags into
//! calls on the library and render results; decisions belong to the library.

mod change;
mod completion;
mod components;
mod crd;
mod dashboard;
mod install;
mod operator;
mod progress;
mod reconcile;
mod sidecar;
mod status;
mod table;
mod version;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use smm::cluster::target::ClusterTarget;
use smm::helm::{Helm, HelmBinary};
use smm::mesh::catalog::Catalog;

#[derive(Debug, Parser)]
#[command(
    name = "smm",
    version,
    about = "Install and reconcile a service mesh from embedded Helm charts",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts, named as kubectl and helm name them.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then in-cluster)
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context)
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The helm binary to run (default: SMM_HELM, then helm on PATH)
    #[arg(long, global = true, value_name = "PATH")]
    pub helm_binary: Option<PathBuf>,
    /// How long one helm operation, a wait for the reconcile lease, or the wait for components to become ready may take, e.g. 90s, 5m
    #[arg(long, global = true, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides it
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Never color the output
    #[arg(long, global = true)]
    pub no_color: bool,
}

impl GlobalArgs {
    pub fn cluster_target(&self) -> ClusterTarget {
        ClusterTarget {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }

    pub fn helm(&self) -> anyhow::Result<Helm> {
        let binary = HelmBinary::locate(self.helm_binary.as_deref())?;
        Ok(Helm::new(
            binary,
            self.cluster_target().resolved(),
            self.timeout,
        ))
    }

    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(self.cluster_target().client().await?)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enable components (and what they depend on) and install them
    Install(install::InstallArgs),
    /// Disable components and uninstall them
    #[command(alias = "delete")]
    Uninstall(install::UninstallArgs),
    /// Store a ControlPlane from a file and reconcile every component to it
    Reconcile(reconcile::ReconcileArgs),
    /// Show each component's state and whether the mesh is Ready (exit code 0 only when Ready)
    Status(status::StatusArgs),
    /// List the components smm knows, their charts, dependencies and state
    Components(components::ComponentsArgs),
    /// Operator mode: run, install or uninstall the in-cluster operator
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// Manage the sidecar proxies of workloads
    #[command(subcommand)]
    SidecarProxy(sidecar::SidecarCommand),
    /// Print a shell completion script
    Completion(completion::CompletionArgs),
    /// Print the ControlPlane CustomResourceDefinition as YAML
    Crd,
    /// Serve the web dashboard on 127.0.0.1 and open it in a browser
    Dashboard(dashboard::DashboardArgs),
    /// Show the versions of smm, helm and the cluster's API server
    Version(version::VersionArgs),
}

/// How a command prints data that a machine may read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
    Yaml,
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let global = &self.global;
        // Built once for the whole process; a broken catalog stops smm before it does anything.
        let catalog = Arc::new(Catalog::builtin()?);
        if matches!(
            self.command,
            Command::Install(_) | Command::Uninstall(_) | Command::Reconcile(_)
        ) {
            std::thread::spawn(smm::mesh::components::warm_up);
        }
        match &self.command {
            Command::Install(args) => install::run_install(global, &catalog, args).await,
            Command::Uninstall(args) => install::run_uninstall(global, &catalog, args).await,
            Command::Reconcile(args) => reconcile::run(global, &catalog, args).await,
            Command::Status(args) => status::run(global, args).await,
            Command::Components(args) => components::run(global, &catalog, args).await,
            Command::Operator(command) => operator::run(global, &catalog, command).await,
            Command::SidecarProxy(command) => sidecar::run(global, command).await,
            Command::Completion(args) => completion::run(args),
            Command::Crd => crd::run(),
            Command::Dashboard(args) => dashboard::run(global, &catalog, args).await,
            Command::Version(args) => version::run(global, args).await,
        }
    }
}

/// Cancelled when smm gets SIGINT or SIGTERM: the running reconcile stops helm (SIGTERM, then
/// SIGKILL after a grace period), releases its lease and smm exits non-zero.
pub fn interrupted() -> CancellationToken {
    static INTERRUPTED: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
    INTERRUPTED
        .get_or_init(|| {
            smm::signals::stop_on_signal("stopping: stopping helm, releasing the lease")
        })
        .clone()
}

/// Prints a serializable result as JSON or YAML; `Text` is each command's own business.
fn print_structured<T: serde::Serialize>(format: OutputFormat, value: &T) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        OutputFormat::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
        OutputFormat::Text => unreachable!("callers print text themselves"),
    }
    Ok(())
}

/// Parses durations the way kubectl and helm users write them: `90s`, `5m`, `1h`, `1m30s`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration; expected e.g. 90s, 5m, 1h or 1m30s");
    let mut total = 0u64;
    let mut digits = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let value: u64 = digits.parse().map_err(|_| invalid())?;
        digits.clear();
        total += value
            * match ch {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                _ => return Err(invalid()),
            };
    }
    if !digits.is_empty() || total == 0 {
        return Err(invalid());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_helm_timeouts() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "5", "5x", "m", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
