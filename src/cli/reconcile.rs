//! `smm reconcile --from-file FILE`: the one-shot operator loop run from the client. The file's
//! ControlPlane becomes the remote state, and every component is brought to it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use kube::ResourceExt;

use smm::api::ControlPlane;
use smm::desired::resolved::Resolved;
use smm::engine::Scope;
use smm::engine::session::Request;
use smm::mesh::catalog::Catalog;
use smm::ops::Plan;
use smm::ops::{self, Reach};

use super::args::GlobalArgs;
use super::change::{RunFlags, print_dump, reconcile};
use super::output::{OutputFormat, print_structured};
use super::table;

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The ControlPlane YAML to reconcile to; `-` reads standard input
    #[arg(short = 'f', long = "from-file", value_name = "FILE")]
    from_file: PathBuf,
    /// Show what would be done, and how values would change, without changing anything
    #[arg(long, conflicts_with = "dump_resources")]
    dry_run: bool,
    /// Print the objects that would be applied, as YAML, instead of applying them
    #[arg(long)]
    dump_resources: bool,
    /// With --dump-resources: write one file per component into DIR instead of stdout
    #[arg(long, value_name = "DIR", requires = "dump_resources")]
    output_dir: Option<PathBuf>,
    /// Format of the summary or plan
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    run: RunFlags,
}

pub async fn run(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    args: &ReconcileArgs,
) -> anyhow::Result<ExitCode> {
    let (source, text) = read_file(&args.from_file)?;
    let control_plane = ControlPlane::from_yaml(&source, &text)?;
    let name = control_plane.name_any();
    // Every check that needs no cluster happens before the cluster is touched; the spec is
    // resolved here, once, for whichever of the three this run does.
    let resolved =
        Resolved::new(catalog, &name, control_plane.spec).with_context(|| source.clone())?;
    if args.dump_resources {
        let rendered = ops::dump(&global.helm()?, &resolved, &Scope::All).await?;
        return print_dump(&rendered, args.output_dir.as_deref());
    }
    if args.dry_run {
        let reach = Reach {
            client: global.client().await?,
            watches: global.cluster_target().watch_client().await?,
            helm: global.helm()?,
            catalog: catalog.clone(),
        };
        let plan = ops::plan(reach, &resolved).await?;
        print_plan(&name, &plan, args.output)?;
        return Ok(ExitCode::SUCCESS);
    }
    let request = Request::Replace(Box::new(resolved));
    reconcile(global, catalog, &name, request, args.output, args.run).await
}

/// The file's text and the name errors give it (`<stdin>` for `-`).
pub(super) fn read_file(path: &Path) -> anyhow::Result<(String, String)> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the ControlPlane from standard input")?;
        return Ok(("<stdin>".to_owned(), text));
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((path.display().to_string(), text))
}

fn print_plan(name: &str, plan: &Plan, output: OutputFormat) -> anyhow::Result<()> {
    if output != OutputFormat::Text {
        return print_structured(output, &plan);
    }
    let rows: Vec<Vec<String>> = plan
        .components
        .iter()
        .map(|c| vec![c.name.clone(), format!("{:?}", c.action), c.reason.clone()])
        .collect();
    println!("Plan for ControlPlane {name} (dry run, nothing changed):");
    print!(
        "{}",
        table::render(&["COMPONENT", "ACTION", "REASON"], &rows)
    );
    for component in plan.components.iter().filter(|c| !c.values_diff.is_empty()) {
        println!("\n{} values:", component.name);
        for change in &component.values_diff {
            println!("  {change}");
        }
    }
    if let Some(revisions) = &plan.revisions {
        let changes = revisions.to_string();
        if !changes.is_empty() {
            println!(
                "\nistiod revisions (active after the reconcile: {}):",
                revisions.active
            );
            print!("{changes}");
        }
    }
    Ok(())
}
