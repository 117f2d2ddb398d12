//! The command line: the dispatcher. Each command is a module that parses its flags, calls one
//! library operation and prints the result; the flags every command shares are in `args`, the
//! printers in `output` and `table`; decisions belong to the library.

mod args;
mod change;
mod check;
mod cluster;
mod completion;
mod components;
mod crd;
mod dashboard;
mod dataplane;
mod install;
mod operator;
mod output;
mod progress;
mod proxy_status;
mod reconcile;
mod sidecar;
mod status;
mod table;
mod tag;
mod version;
mod waypoint;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use smm::mesh::catalog::Catalog;

pub use args::GlobalArgs;

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enable components (and what they depend on) and install them
    Install(install::InstallArgs),
    /// Disable components and uninstall them
    #[command(alias = "delete")]
    Uninstall(install::UninstallArgs),
    /// Store a ControlPlane from a file and reconcile every component to it
    Reconcile(reconcile::ReconcileArgs),
    /// Check the cluster before an install (--pre) or the installed mesh, with a hint for each problem
    Check(check::CheckArgs),
    /// One mesh over several clusters: attach a cluster, detach it, show the attached ones
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Show each component's state and whether the mesh is Ready (exit code 0 only when Ready)
    Status(status::StatusArgs),
    /// List injected pods: revision, proxy version, skew to istiod (exit code 3: a proxy's revision is gone)
    ProxyStatus(proxy_status::ProxyStatusArgs),
    /// List the components smm knows, their charts, dependencies and state
    Components(components::ComponentsArgs),
    /// Operator mode: run, install or uninstall the in-cluster operator
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// Manage the sidecar proxies of workloads
    #[command(subcommand)]
    SidecarProxy(sidecar::SidecarCommand),
    /// Put namespaces in ambient mode (istio.io/dataplane-mode), take them out, or keep them out
    DataplaneMode(dataplane::DataplaneArgs),
    /// Waypoints: the L7 proxies of ambient namespaces, Gateways that istiod deploys
    #[command(subcommand)]
    Waypoint(waypoint::WaypointCommand),
    /// Revision tags: stable names that namespaces select, each pointing at a revision
    #[command(subcommand)]
    Tag(tag::TagCommand),
    /// Print a shell completion script
    Completion(completion::CompletionArgs),
    /// Print the ControlPlane CustomResourceDefinition as YAML
    Crd,
    /// Serve the web dashboard on 127.0.0.1 and open it in a browser, or an add-on's own UI
    /// through a port-forward
    Dashboard(dashboard::DashboardArgs),
    /// Show the versions of smm, helm and the cluster's API server
    Version(version::VersionArgs),
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
            Command::Check(args) => check::run(global, &catalog, args).await,
            Command::Cluster(command) => cluster::run(global, &catalog, command).await,
            Command::Status(args) => status::run(global, args).await,
            Command::ProxyStatus(args) => proxy_status::run(global, args).await,
            Command::Components(args) => components::run(global, &catalog, args).await,
            Command::Operator(command) => operator::run(global, &catalog, command).await,
            Command::SidecarProxy(command) => sidecar::run(global, command).await,
            Command::DataplaneMode(args) => dataplane::run(global, args).await,
            Command::Waypoint(command) => waypoint::run(global, command).await,
            Command::Tag(command) => tag::run(global, &catalog, command).await,
            Command::Completion(args) => completion::run(args),
            Command::Crd => crd::run(),
            Command::Dashboard(args) => dashboard::run(global, &catalog, args).await,
            Command::Version(args) => version::run(global, args).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
