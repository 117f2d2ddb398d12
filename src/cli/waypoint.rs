//! `smm waypoint apply|delete -n NAMESPACE`: a namespace's waypoint, the Gateway from which
//! istiod makes the L7 proxy of an ambient namespace.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use smm::api::DEFAULT_CONTROL_PLANE;
use smm::mesh::gateway_api::{DEFAULT_WAYPOINT_NAME, WaypointFor};
use smm::ops::ambient::{self, WaypointReport, WaypointRequest};

use super::args::GlobalArgs;
use super::output::{OutputFormat, print_structured};

#[derive(Debug, Subcommand)]
pub enum WaypointCommand {
    /// Apply a waypoint Gateway and wait until istiod has programmed it (at most --timeout)
    Apply(ApplyArgs),
    /// Delete a waypoint Gateway (istiod's Deployment and Service go with it) and the
    /// namespace's istio.io/use-waypoint label when it names it
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct Target {
    #[arg(short, long, value_parser = super::args::namespace_flag)]
    namespace: String,
    /// The Gateway's name
    #[arg(long, default_value = DEFAULT_WAYPOINT_NAME)]
    name: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    target: Target,
    /// Which traffic it handles: service (addressed to services), workload (to pods) or all
    #[arg(long = "for", value_name = "TRAFFIC", default_value = "service", value_parser = super::args::spec_value_flag::<WaypointFor>)]
    traffic: WaypointFor,
    /// Label the namespace istio.io/use-waypoint=NAME, so its traffic goes through the waypoint
    #[arg(long)]
    enroll_namespace: bool,
    /// Return once the Gateway is applied, without waiting for istiod to program it
    #[arg(long)]
    no_wait: bool,
    /// The ControlPlane whose istiod revision programs it
    #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE, value_parser = super::args::control_plane_flag)]
    control_plane: String,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    target: Target,
}

pub async fn run(global: &GlobalArgs, command: &WaypointCommand) -> anyhow::Result<ExitCode> {
    let client = global.client().await?;
    let (report, output) = match command {
        WaypointCommand::Apply(args) => {
            let request = WaypointRequest {
                namespace: &args.target.namespace,
                name: &args.target.name,
                traffic: args.traffic,
                enroll_namespace: args.enroll_namespace,
                wait: (!args.no_wait).then_some(global.timeout),
            };
            let report = ambient::apply_waypoint(&client, &args.control_plane, &request).await?;
            (report, args.target.output)
        }
        WaypointCommand::Delete(args) => {
            let target = &args.target;
            let report = ambient::delete_waypoint(&client, &target.namespace, &target.name).await?;
            (report, target.output)
        }
    };
    match output {
        OutputFormat::Text => print!("{}", text(&report)),
        format => print_structured(format, &report)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn text(report: &WaypointReport) -> String {
    let WaypointReport {
        namespace, name, ..
    } = report;
    let gateway = format!("gateway/{name} in namespace {namespace}");
    let mut text = match (report.traffic, report.done) {
        (Some(traffic), true) => format!("{gateway}: waypoint for {traffic}, programmed\n"),
        (Some(traffic), false) => format!("{gateway}: waypoint for {traffic}, applied\n"),
        (None, true) => format!("{gateway}: deleted\n"),
        (None, false) => format!("{gateway}: not found\n"),
    };
    if report.namespace_label_changed {
        let change = match report.traffic {
            Some(_) => format!("istio.io/use-waypoint={name}"),
            None => "istio.io/use-waypoint-".to_owned(),
        };
        text += &format!("namespace/{namespace}: {change}\n");
    }
    text
}
