//! `smm operator run|install|uninstall`: operator mode. `run` is the in-cluster process (or an
//! out-of-cluster one with --kubeconfig); `install` puts it into the cluster with native
//! builders, and `--dump-resources` prints the same objects for a GitOps repository.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use smm::api::ControlPlane;
use smm::catalog::Catalog;
use smm::engine::{Engine, EngineSettings};
use smm::lock::reconcile_lock;
use smm::native::{self, Presence};
use smm::operator::controller::{self, FINALIZER, RunOptions};
use smm::operator::manifests::{OperatorOptions, operator_objects, operator_yaml};

use super::{GlobalArgs, parse_duration};

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
    #[arg(long, env = "POD_NAMESPACE", default_value = "smm-system")]
    leader_namespace: String,
    /// This replica's identity in leases and events (default: the pod name, else host and pid)
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How often healthy ControlPlanes are reconciled anyway, to repair drift
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    resync: Duration,
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
    #[arg(long, default_value = "smm-system")]
    namespace: String,
}

pub async fn run(global: &GlobalArgs, command: &OperatorCommand) -> anyhow::Result<ExitCode> {
    match command {
        OperatorCommand::Run(args) => {
            let identity = args.identity.clone().unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
                format!("{host}-{}", std::process::id())
            });
            let options = RunOptions {
                listen: args.listen,
                leader_namespace: args.leader_namespace.clone(),
                identity,
                resync_every: args.resync,
            };
            controller::run(global.client().await?, global.helm()?, options).await?;
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
            let client = global.client().await?;
            native::reconcile(
                &client,
                &operator_objects(&options, Presence::Present, true),
            )
            .await?;
            println!(
                "smm operator installed in namespace {} (image {})",
                options.namespace, options.image
            );
            Ok(ExitCode::SUCCESS)
        }
        OperatorCommand::Uninstall(args) => uninstall(global, args).await,
    }
}

/// Without --purge the components stay and only our finalizer is removed, so ControlPlanes can
/// still be deleted. With it, everything goes: components (dependents first), ControlPlanes,
/// the operator and the CRD.
async fn uninstall(global: &GlobalArgs, args: &UninstallArgs) -> anyhow::Result<ExitCode> {
    let client = global.client().await?;
    let options = OperatorOptions {
        namespace: args.placement.namespace.clone(),
        ..OperatorOptions::default()
    };
    // Stop the operator first, so it does not reconcile what is being taken apart.
    native::reconcile(
        &client,
        &operator_objects(&options, Presence::Absent, false),
    )
    .await?;
    let control_planes: Api<ControlPlane> = Api::all(client.clone());
    let existing = match control_planes.list(&Default::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(err) => return Err(err).context("listing ControlPlanes"),
    };
    for control_plane in existing {
        let name = control_plane.name_any();
        if args.purge {
            let holder = format!("smm-cli/{}", std::process::id());
            let lock = reconcile_lock(&client, &name, &holder, global.timeout, |other| {
                eprintln!("waiting for {other} to finish reconciling {name}")
            })
            .await?;
            let engine = Engine::new(
                client.clone(),
                global.helm()?,
                Catalog::builtin()?,
                EngineSettings::default(),
            );
            let removed = engine.remove_all(&name).await;
            lock.release().await;
            removed?;
            eprintln!("ControlPlane {name}: components uninstalled");
        }
        let finalizers: Vec<String> = control_plane
            .finalizers()
            .iter()
            .filter(|f| f.as_str() != FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": finalizers}});
        control_planes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("removing the finalizer of ControlPlane {name}"))?;
        if args.purge {
            control_planes
                .delete(&name, &Default::default())
                .await
                .with_context(|| format!("deleting ControlPlane {name}"))?;
        }
    }
    if args.purge {
        native::reconcile(&client, &operator_objects(&options, Presence::Absent, true)).await?;
    }
    println!(
        "smm operator uninstalled from namespace {}",
        options.namespace
    );
    Ok(ExitCode::SUCCESS)
}
