//! `smm cluster attach|detach|status`: one mesh over several clusters. The global
//! `--kubeconfig`/`--context` pick this cluster (the primary), `--remote-kubeconfig` and
//! `--remote-context` the cluster attached.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};

use smm::api::{ClusterModel, DEFAULT_CONTROL_PLANE};
use smm::cluster::target::ClusterTarget;
use smm::engine::WaitPolicy;
use smm::fleet::{self, Reach, Servers, SessionSettings};
use smm::mesh::catalog::Catalog;
use smm::mesh::multicluster::{Attachment, model_name};

use super::args::GlobalArgs;
use super::change::RunFlags;
use super::output::{OutputFormat, print_structured};
use super::progress::CliProgress;
use super::table;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Attach a cluster to this cluster's mesh: a remote (no istiod, served by this one's) or
    /// another primary; idempotent
    Attach(AttachArgs),
    /// Detach a cluster: remove exactly what attach made, in both clusters
    Detach(DetachArgs),
    /// Show the attached clusters: reachable through their remote secret, its age, who serves them
    Status(StatusArgs),
}

/// The cluster being attached or detached, and how to reach it.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The cluster's name in the mesh (Istio's cluster ID)
    #[arg(value_name = "NAME", value_parser = cluster_name_flag)]
    name: String,
    /// The attached cluster's kubeconfig (the global --kubeconfig is this cluster's)
    #[arg(long, value_name = "FILE")]
    remote_kubeconfig: PathBuf,
    /// The context in --remote-kubeconfig (default: its current context)
    #[arg(long, value_name = "NAME")]
    remote_context: Option<String>,
    /// The ControlPlane whose mesh the cluster joins
    #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE)]
    control_plane: String,
    /// Format of the summary
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    run: RunFlags,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// remote: no istiod there, its proxies and injector use this cluster's istiod; primary:
    /// it runs its own istiod (a ControlPlane of its own in the same mesh)
    #[arg(long, value_name = "MODEL", default_value = "remote", value_parser = super::args::spec_value_flag::<ClusterModel>)]
    model: ClusterModel,
    /// The network its pods are on (default: this cluster's)
    #[arg(long, value_name = "NAME")]
    network: Option<String>,
    /// For a remote: the IP address its proxies reach this cluster's istiod at (15012, 15017)
    #[arg(long, value_name = "IP")]
    pilot_address: Option<String>,
    /// The attached cluster's API server as this cluster's istiod reaches it (default: the
    /// server in --remote-kubeconfig)
    #[arg(long, value_name = "URL")]
    remote_server: Option<String>,
    /// For a primary: this cluster's API server as the other istiod reaches it (default: the
    /// server in this cluster's kubeconfig)
    #[arg(long, value_name = "URL")]
    primary_server: Option<String>,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The ControlPlane whose attached clusters to show
    #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE)]
    control_plane: String,
    /// Format of the list
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

fn cluster_name_flag(text: &str) -> Result<String, String> {
    smm::api::names::cluster_name("", text)
        .map(|()| text.to_owned())
        .map_err(|invalid| format!("{text:?} is not a valid {}: {}", invalid.what, invalid.rule))
}

pub async fn run(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    command: &ClusterCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        ClusterCommand::Attach(args) => attach(global, catalog, args).await,
        ClusterCommand::Detach(args) => detach(global, catalog, &args.remote).await,
        ClusterCommand::Status(args) => status(global, catalog, args).await,
    }
}

async fn attach(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    args: &AttachArgs,
) -> anyhow::Result<ExitCode> {
    let remote = &args.remote;
    let attachment = Attachment {
        name: remote.name.clone(),
        model: args.model,
        network: args.network.clone(),
        pilot_address: args.pilot_address.clone(),
    };
    let (primary, attached) = (global.client().await?, reach(&remote_target(remote)).await?);
    // Each istiod reaches the other cluster's API server where the kubeconfigs say, unless told.
    let servers = Servers {
        attached: match &args.remote_server {
            Some(server) => server.clone(),
            None => remote_target(remote)
                .config()
                .await?
                .cluster_url
                .to_string(),
        },
        primary: match &args.primary_server {
            Some(server) => server.clone(),
            None => global
                .cluster_target()
                .config()
                .await?
                .cluster_url
                .to_string(),
        },
    };
    let settings = settings(global, catalog, remote)?;
    let report = fleet::attach(
        &primary,
        &attached,
        &servers,
        &remote.control_plane,
        &attachment,
        &settings,
    )
    .await?;
    if remote.output != OutputFormat::Text {
        print_structured(remote.output, &report)?;
    } else {
        for secret in &report.remote_secrets {
            println!("remote secret {secret}");
        }
        let cluster = &report.cluster;
        match &cluster.message {
            Some(message) => println!("cluster {} not attached: {message}", cluster.name),
            None => println!(
                "cluster {} attached to ControlPlane {} as a {}",
                cluster.name,
                remote.control_plane,
                model_name(cluster.model)
            ),
        }
    }
    let attached = report.cluster.message.is_none();
    Ok(if attached {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn detach(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    remote: &RemoteArgs,
) -> anyhow::Result<ExitCode> {
    let (primary, attached) = (global.client().await?, reach(&remote_target(remote)).await?);
    let settings = settings(global, catalog, remote)?;
    let report = fleet::detach(
        &primary,
        &attached,
        &remote.control_plane,
        &remote.name,
        &settings,
    )
    .await?;
    if remote.output != OutputFormat::Text {
        print_structured(remote.output, &report)?;
    } else {
        for removed in &report.removed {
            println!("removed {removed}");
        }
        println!("cluster {} detached", report.cluster);
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(
    global: &GlobalArgs,
    catalog: &Catalog,
    args: &StatusArgs,
) -> anyhow::Result<ExitCode> {
    let client = global.client().await?;
    let states = fleet::status(&client, catalog, &args.control_plane).await?;
    if args.output != OutputFormat::Text {
        print_structured(args.output, &states)?;
    } else if states.is_empty() {
        println!("no cluster attached to ControlPlane {}", args.control_plane);
    } else {
        let rows: Vec<Vec<String>> = states
            .iter()
            .map(|state| {
                let cluster = &state.cluster;
                vec![
                    cluster.name.clone(),
                    model_name(cluster.model).to_owned(),
                    cluster.network.clone().unwrap_or_default(),
                    if cluster.reachable { "yes" } else { "no" }.to_owned(),
                    cluster
                        .remote_secret_created
                        .as_ref()
                        .map(|time| age(&time.0))
                        .unwrap_or_default(),
                    format!("{} ({})", state.served_by, state.revision),
                    cluster.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let headers = [
            "CLUSTER",
            "MODEL",
            "NETWORK",
            "REACHABLE",
            "SECRET AGE",
            "SERVED BY",
            "MESSAGE",
        ];
        print!("{}", table::render(&headers, &rows));
    }
    let all_reachable = states.iter().all(|state| state.cluster.reachable);
    Ok(if all_reachable {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A time's age as kubectl prints it: the largest unit, e.g. `5m`, `3h`, `2d`.
fn age(since: &k8s_openapi::jiff::Timestamp) -> String {
    let seconds = k8s_openapi::jiff::Timestamp::now()
        .duration_since(*since)
        .as_secs()
        .max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn remote_target(remote: &RemoteArgs) -> ClusterTarget {
    ClusterTarget {
        kubeconfig: Some(remote.remote_kubeconfig.clone()),
        context: remote.remote_context.clone(),
    }
}

async fn reach(target: &ClusterTarget) -> anyhow::Result<Reach> {
    Ok(Reach {
        client: target.client().await?,
        watches: target.watch_client().await?,
        target: target.clone(),
    })
}

/// The attached cluster's sessions run as the command's own would.
fn settings(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    remote: &RemoteArgs,
) -> anyhow::Result<SessionSettings> {
    Ok(SessionSettings {
        helm: global.helm()?,
        catalog: catalog.clone(),
        holder: smm::cluster::lease::holder_identity("smm-cli"),
        lease_wait: global.timeout,
        wait: if remote.run.no_wait {
            WaitPolicy::No
        } else {
            WaitPolicy::Until(global.timeout)
        },
        adopt: remote.run.adopt,
        force: remote.run.force,
        cancel: super::args::interrupted(),
        progress: Some(Arc::new(CliProgress::new(global.no_color))),
    })
}
