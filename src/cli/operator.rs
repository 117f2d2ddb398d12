//! `smm operator run|install|uninstall`: operator mode. `run` is the in-cluster process (or an
//! out-of-cluster one with --kubeconfig); `install` puts it into the cluster with native
//! builders, and `--dump-resources` prints the same objects for a GitOps repository.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use clap::{Args, Subcommand};

use smm::api::names::SMM_NAMESPACE;
use smm::cluster::lease::{holder_identity, unique_identity};
use smm::mesh::catalog::Catalog;
use smm::operator;
use smm::operator::controller::{self, RunOptions};
use smm::operator::manifests::{OperatorOptions, operator_yaml};
use smm::ops::{self, Reach};

use super::args::{GlobalArgs, parse_duration};

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Run the operator: watch ControlPlanes and reconcile them
    Run(RunArgs),
    /// Install the operator into the cluster (CRD, RBAC, Deployment, metrics Service)
    Install(InstallArgs),
    /// Remove the operator; its components stay installed unless --purge
    Uninstall(UninstallArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of /healthz, /readyz and /metrics
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Namespace of the leader-election lease
    #[arg(long, env = "POD_NAMESPACE", default_value = SMM_NAMESPACE, value_parser = super::args::namespace_flag)]
    leader_namespace: String,
    /// This replica's identity in leases and events, followed by a random nonce (default: host
    /// and pid, followed by the nonce); at most 119 characters, as Events take 128 with the nonce
    #[arg(long, value_parser = identity_flag)]
    identity: Option<String>,
    /// How often healthy ControlPlanes are reconciled anyway, a safety net: the operator's watches
    /// see drift (objects deleted or changed by hand, hand-made helm commands) as it happens
    #[arg(long, value_name = "DURATION", default_value = "10h", value_parser = parse_duration)]
    resync: Duration,
    /// Serve the read-only dashboard on this loopback address (e.g. 127.0.0.1:8081), reached
    /// with `kubectl port-forward`; not served unless given
    #[arg(long, value_name = "ADDRESS")]
    dashboard_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    placement: Placement,
    /// The operator image
    #[arg(long)]
    image: Option<String>,
    /// Operator replicas (one leads, the others stand by)
    #[arg(long, default_value_t = 1)]
    replicas: i32,
    /// Print the objects as YAML instead of applying them
    #[arg(long)]
    dump_resources: bool,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    #[command(flatten)]
    placement: Placement,
    /// Also uninstall every component of every ControlPlane, delete the ControlPlanes and the CRD
    #[arg(long)]
    purge: bool,
}

#[derive(Debug, Args)]
struct Placement {
    /// The operator's namespace
    #[arg(long, default_value = SMM_NAMESPACE, value_parser = super::args::namespace_flag)]
    namespace: String,
}

pub async fn run(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    command: &OperatorCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        OperatorCommand::Run(args) => {
            let options = RunOptions {
                listen: args.listen,
                leader_namespace: args.leader_namespace.clone(),
                identity: args
                    .identity
                    .clone()
                    .unwrap_or_else(|| holder_identity("smm-operator")),
                resync_every: args.resync,
                dashboard: args.dashboard_listen,
            };
            let clients = controller::Clients {
                calls: global.client().await?,
                watches: global.cluster_target().watch_client().await?,
            };
            controller::run(clients, global.helm()?, catalog.clone(), options).await?;
            Ok(ExitCode::SUCCESS)
        }
        OperatorCommand::Install(args) => {
            let mut options = OperatorOptions {
                namespace: args.placement.namespace.clone(),
                replicas: args.replicas,
                ..OperatorOptions::default()
            };
            if let Some(image) = &args.image {
                options.image = image.clone();
            }
            if args.dump_resources {
                print!("{}", operator_yaml(&options));
                return Ok(ExitCode::SUCCESS);
            }
            operator::install(&global.client().await?, &options).await?;
            println!(
                "smm operator installed in namespace {} (image {})",
                options.namespace, options.image
            );
            Ok(ExitCode::SUCCESS)
        }
        OperatorCommand::Uninstall(args) => {
            let options = OperatorOptions {
                namespace: args.placement.namespace.clone(),
                ..OperatorOptions::default()
            };
            let reach = Reach {
                client: global.client().await?,
                watches: global.cluster_target().watch_client().await?,
                helm: global.helm()?,
                catalog: catalog.clone(),
            };
            let cancel = super::args::interrupted();
            let purge = args.purge;
            ops::uninstall_operator(reach, &options, purge, global.timeout, cancel, |name| {
                if purge {
                    eprintln!("ControlPlane {name}: uninstalling its components");
                }
            })
            .await?;
            println!(
                "smm operator uninstalled from namespace {}",
                options.namespace
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// clap's parser of `--identity`: the replica's identity, the name followed by a random nonce.
/// Always unique, even when two replicas are given one name, since a holder counts a lease held
/// under its identity as its own and two replicas would both hold every lease.
fn identity_flag(text: &str) -> Result<String, String> {
    unique_identity(text).map_err(|invalid| invalid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_given_one_identity_still_differ() {
        let (first, second) = (identity_flag("op").unwrap(), identity_flag("op").unwrap());
        assert_ne!(first, second);
        assert!(
            first.starts_with("op/") && second.starts_with("op/"),
            "{first} {second}"
        );
    }

    /// An identity too long for an Event's reportingInstance is a usage error naming the flag,
    /// the limit and what was given, before anything runs.
    #[test]
    fn an_identity_too_long_for_events_is_refused_as_the_flag_is_parsed() {
        use clap::{CommandFactory, FromArgMatches};
        let given = "o".repeat(120);
        let command = super::super::Cli::command();
        let args = ["smm", "operator", "run", "--identity", given.as_str()];
        let refused = command.try_get_matches_from(args).unwrap_err();
        assert_eq!(refused.kind(), clap::error::ErrorKind::ValueValidation);
        let message = refused.to_string();
        for part in [
            "--identity",
            given.as_str(),
            "120 characters",
            "at most 119",
            "128",
        ] {
            assert!(message.contains(part), "{part:?} missing from {message}");
        }
        let fits = super::super::Cli::command()
            .try_get_matches_from(["smm", "operator", "run", "--identity", &given[..119]])
            .unwrap();
        assert!(super::super::Cli::from_arg_matches(&fits).is_ok());
    }
}
