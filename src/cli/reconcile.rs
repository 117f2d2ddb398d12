//! `smm reconcile --from-file FILE`: the one-shot operator loop run from the client. The file's
//! ControlPlane becomes the remote state, and every component is brought to it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use kube::ResourceExt;

use std::sync::Arc;

use smm::api::{ControlPlane, DEFAULT_CONTROL_PLANE, GROUP};
use smm::cluster::control_plane;
use smm::desired::resolve::resolve;
use smm::engine::report::PlannedComponent;
use smm::engine::session::Request;
use smm::engine::{Engine, EngineSettings, Scope};
use smm::mesh::catalog::Catalog;

use super::change::{RunFlags, dump, reconcile};
use super::{GlobalArgs, OutputFormat, print_structured, table};

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
    let control_plane = read_control_plane(&args.from_file)?;
    let name = control_plane.name_any();
    let source = args.from_file.display();
    // Every check that needs no cluster happens before the cluster is touched.
    resolve(catalog, &control_plane.spec).with_context(|| format!("{source}"))?;
    if args.dump_resources {
        return dump(
            global,
            catalog,
            &control_plane.spec,
            &Scope::All,
            args.output_dir.as_deref(),
        )
        .await;
    }
    if args.dry_run {
        let client = global.client().await?;
        let stored = control_plane::load(&client, &name).await?;
        let engine = Engine::new(
            client,
            global.helm()?,
            catalog.clone(),
            EngineSettings::default(),
        );
        let status = stored.as_ref().and_then(|cp| cp.status.as_ref());
        let plan = engine
            .plan(&name, &control_plane.spec, status, &Scope::All)
            .await?;
        print_plan(&name, &plan, args.output)?;
        return Ok(ExitCode::SUCCESS);
    }
    reconcile(
        global,
        catalog,
        &name,
        Request::Replace(&control_plane.spec),
        args.output,
        args.run,
    )
    .await
}

/// Parses and checks the file's ControlPlane. Errors name the file and, from the parser, the
/// field and line.
fn read_control_plane(path: &Path) -> anyhow::Result<ControlPlane> {
    let (source, text) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the ControlPlane from standard input")?;
        ("<stdin>".to_owned(), text)
    } else {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        (path.display().to_string(), text)
    };
    let document: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{source}: not valid YAML"))?;
    let expected_api_version = format!("{GROUP}/v1alpha1");
    let field = |name: &str| {
        document
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    };
    if field("apiVersion") != expected_api_version || field("kind") != "ControlPlane" {
        bail!(
            "{source}: expected apiVersion: {expected_api_version} and kind: ControlPlane, found apiVersion: {:?} and kind: {:?}",
            field("apiVersion"),
            field("kind")
        );
    }
    // Parsed again as the typed resource, so errors carry the field path and line.
    let mut control_plane: ControlPlane = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{source}: not a valid ControlPlane"))?;
    if control_plane.metadata.name.is_none() {
        control_plane.metadata.name = Some(DEFAULT_CONTROL_PLANE.to_owned());
    }
    Ok(control_plane)
}

fn print_plan(name: &str, plan: &[PlannedComponent], output: OutputFormat) -> anyhow::Result<()> {
    if output != OutputFormat::Text {
        return print_structured(output, &plan);
    }
    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|c| vec![c.name.clone(), format!("{:?}", c.action), c.reason.clone()])
        .collect();
    println!("Plan for ControlPlane {name} (dry run, nothing changed):");
    print!(
        "{}",
        table::render(&["COMPONENT", "ACTION", "REASON"], &rows)
    );
    for component in plan.iter().filter(|c| !c.values_diff.is_empty()) {
        println!("\n{} values:", component.name);
        for change in &component.values_diff {
            println!("  {change}");
        }
    }
    Ok(())
}
