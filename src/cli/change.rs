//! What the commands that change the mesh share: their flags, printing a dump instead of
//! applying, and running a reconcile (`smm::ops::reconcile`) with progress and printing what
//! happened.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use smm::api::DEFAULT_CONTROL_PLANE;
use smm::engine::WaitPolicy;
use smm::engine::report::{Outcome, ReconcileReport};
use smm::engine::session::Request;
use smm::helm::render::{self, RenderedComponent};
use smm::mesh::catalog::Catalog;
use smm::ops::{self, Reach, ReconcileOptions};

use super::args::GlobalArgs;
use super::output::{OutputFormat, print_structured};
use super::progress::CliProgress;
use super::table;

/// Flags of every command that changes the mesh.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// The ControlPlane to work on
    #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE, value_parser = super::args::control_plane_flag)]
    pub control_plane: String,
    /// Print the objects that would be applied, as YAML, instead of applying them
    #[arg(long)]
    pub dump_resources: bool,
    /// With --dump-resources: write one file per component into DIR instead of stdout
    #[arg(long, value_name = "DIR", requires = "dump_resources")]
    pub output_dir: Option<PathBuf>,
    /// Format of the summary
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub run: RunFlags,
}

/// How a reconcile from the command line runs.
#[derive(Clone, Copy, Debug, Args)]
pub struct RunFlags {
    /// Return once everything is applied, without waiting for workloads to become ready
    /// (`smm status --watch` follows them)
    #[arg(long)]
    pub no_wait: bool,
    /// Take over releases that belong to another ControlPlane or to nobody (e.g. installed
    /// with helm by hand) instead of refusing
    #[arg(long)]
    pub adopt: bool,
    /// Go on with a change that cuts proxies off their istiod (a revision renamed in place,
    /// istiod removed while proxies use it, a tag removed while namespaces select it) instead
    /// of refusing
    #[arg(long)]
    pub force: bool,
}

/// Prints what `ops::dump` rendered, or writes one file per component into `output_dir`.
pub fn print_dump(
    rendered: &[RenderedComponent],
    output_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    match output_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for component in rendered {
                let path = dir.join(format!("{}.yaml", component.name));
                std::fs::write(&path, &component.yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        None if rendered.is_empty() => {
            println!("# nothing to apply: no enabled component selected")
        }
        None => print!("{}", render::single_stream(rendered)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `request` on the ControlPlane with progress on the terminal and prints the summary.
/// Succeeds when every component in scope reached its desired state.
pub async fn reconcile(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    control_plane: &str,
    request: Request<'_>,
    output: OutputFormat,
    flags: RunFlags,
) -> anyhow::Result<ExitCode> {
    let reach = Reach {
        client: global.client().await?,
        watches: global.cluster_target().watch_client().await?,
        helm: global.helm()?,
        catalog: catalog.clone(),
    };
    let options = ReconcileOptions {
        adopt: flags.adopt,
        force: flags.force,
        wait: if flags.no_wait {
            WaitPolicy::No
        } else {
            WaitPolicy::Until(global.timeout)
        },
        lease_wait: global.timeout,
        progress: Some(Arc::new(CliProgress::new(global.no_color))),
        cancel: super::args::interrupted(),
    };
    let report = ops::reconcile(reach, control_plane, request, options, |holder| {
        eprintln!("waiting for another reconcile of {control_plane} to finish (held by {holder})")
    })
    .await?;
    print_report(&report, output)?;
    let clusters_reconciled = report.clusters.iter().all(|c| c.message.is_none());
    Ok(if report.succeeded() && clusters_reconciled {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(report: &ReconcileReport, output: OutputFormat) -> anyhow::Result<()> {
    if output != OutputFormat::Text {
        return print_structured(output, report);
    }
    let rows: Vec<Vec<String>> = report
        .components
        .iter()
        .map(|component| {
            let (result, detail) = match &component.outcome {
                Outcome::Done => ("done", String::new()),
                Outcome::Waiting(why) => ("waiting", why.clone()),
                Outcome::Failed(why) => ("failed", why.clone()),
            };
            vec![
                component.name.clone(),
                format!("{:?}", component.action),
                component.reason.clone(),
                result.to_owned(),
                detail,
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["COMPONENT", "ACTION", "REASON", "RESULT", "MESSAGE"],
            &rows
        )
    );
    println!(
        "ControlPlane {}: {} after {} round(s)",
        report.control_plane,
        if report.ready { "Ready" } else { "not Ready" },
        report.rounds
    );
    for cluster in &report.clusters {
        match &cluster.message {
            None => println!("attached cluster {}: reconciled", cluster.name),
            Some(why) => println!("attached cluster {}: {why}", cluster.name),
        }
    }
    Ok(())
}
