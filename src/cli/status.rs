//! `smm status`: every component's phase, chart, release and digests, and the Ready condition.
//! Exits 0 only when the ControlPlane is Ready, so scripts can wait on it.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use smm::api::{ControlPlaneStatus, DEFAULT_CONTROL_PLANE, condition};
use smm::cluster::control_plane;

use super::{GlobalArgs, OutputFormat, print_structured, table};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The ControlPlane to show
    #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE)]
    control_plane: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

pub async fn run(global: &GlobalArgs, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let client = global.client().await?;
    let Some(control_plane) = control_plane::load(&client, &args.control_plane).await? else {
        bail!(
            "ControlPlane {} not found: install something with `smm install` or `smm reconcile`",
            args.control_plane
        );
    };
    let status = control_plane.status.clone().unwrap_or_default();
    let ready = status.is_ready();
    if args.output == OutputFormat::Text {
        print_text(&args.control_plane, &status);
    } else {
        print_structured(args.output, &status)?;
    }
    Ok(if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The digest without its algorithm, shortened as git shortens hashes.
fn short(digest: Option<&str>) -> String {
    digest
        .map(|d| d.trim_start_matches("sha256:").chars().take(12).collect())
        .unwrap_or_default()
}

fn print_text(name: &str, status: &ControlPlaneStatus) {
    let rows: Vec<Vec<String>> = status
        .components
        .iter()
        .map(|(component, s)| {
            vec![
                component.clone(),
                s.phase.to_string(),
                s.chart
                    .as_ref()
                    .map(|c| format!("{}-{}", c.name, c.version))
                    .unwrap_or_default(),
                s.release
                    .as_ref()
                    .map(|r| format!("{}/{}", r.namespace, r.name))
                    .unwrap_or_default(),
                s.release
                    .as_ref()
                    .and_then(|r| r.revision)
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
                short(s.chart_digest.as_deref()),
                short(s.values_digest.as_deref()),
                s.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "COMPONENT",
                "PHASE",
                "CHART",
                "RELEASE",
                "REVISION",
                "CHART DIGEST",
                "VALUES DIGEST",
                "MESSAGE"
            ],
            &rows
        )
    );
    match status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY)
    {
        Some(ready) => println!(
            "ControlPlane {name}: Ready={} ({}: {})",
            ready.status, ready.reason, ready.message
        ),
        None => println!("ControlPlane {name}: not reconciled yet"),
    }
}
