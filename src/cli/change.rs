//! What the commands that change the mesh share: their flags, dumping instead of applying, and
//! running a reconcile session with progress and printing what happened. The decisions (refuse
//! while the operator is installed, the lease, storing, the engine) are the library's.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use smm::api::{ControlPlaneSpec, DEFAULT_CONTROL_PLANE};
use smm::cluster::lease::holder_identity;
use smm::desired::resolve::resolve;
use smm::engine::report::{Outcome, ReconcileReport};
use smm::engine::session::{Request, Session};
use smm::engine::{Scope, WaitPolicy};
use smm::helm::render;
use smm::mesh::catalog::Catalog;
use smm::operator;

use super::progress::CliProgress;
use super::{GlobalArgs, OutputFormat, print_structured, table};

/// Flags of every command that changes the mesh.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// The ControlPlane to work on
    #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE)]
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
}

/// Renders the enabled components in `scope` from `spec` with `helm template`; needs no cluster.
pub async fn dump(
    global: &GlobalArgs,
    catalog: &Catalog,
    spec: &ControlPlaneSpec,
    scope: &Scope,
    output_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let desired = resolve(catalog, spec)?;
    let requests: Vec<_> = desired
        .iter()
        .filter(|d| d.enabled && scope.includes(d.name()))
        .map(|d| d.render_request())
        .collect();
    let rendered = render::render(&global.helm()?, &requests).await?;
    match output_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for component in &rendered {
                let path = dir.join(format!("{}.yaml", component.name));
                std::fs::write(&path, &component.yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        None if rendered.is_empty() => {
            println!("# nothing to apply: no enabled component selected")
        }
        None => rendered
            .iter()
            .for_each(|component| print!("{}", component.yaml)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `request` on the ControlPlane in a reconcile session, unless the operator owns
/// reconciliation, and prints the summary. Succeeds when every component in scope reached its
/// desired state.
pub async fn reconcile(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    control_plane: &str,
    request: Request<'_>,
    output: OutputFormat,
    flags: RunFlags,
) -> anyhow::Result<ExitCode> {
    let client = global.client().await?;
    let helm = global.helm()?;
    operator::ensure_absent(&client, control_plane).await?;
    let session = Session::new(
        client,
        helm,
        catalog.clone(),
        holder_identity("smm-cli"),
        global.timeout,
    )
    .with_adopt(flags.adopt)
    .with_wait(if flags.no_wait {
        WaitPolicy::No
    } else {
        WaitPolicy::Until(global.timeout)
    })
    .with_progress(Arc::new(CliProgress::new(global.no_color)))
    .with_cancel(super::interrupted());
    let report = session
        .run(control_plane, request, |holder| {
            eprintln!(
                "waiting for another reconcile of {control_plane} to finish (held by {holder})"
            )
        })
        .await?;
    print_report(&report, output)?;
    Ok(if report.succeeded() {
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
    Ok(())
}
