//! What the commands that change the mesh share: dumping instead of applying, refusing while the
//! operator owns reconciliation, holding the reconcile lease, storing the ControlPlane and
//! running the engine with progress, and printing what happened.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;

use smm::api::{ControlPlaneSpec, DEFAULT_CONTROL_PLANE};
use smm::catalog::Catalog;
use smm::engine::desired::resolve;
use smm::engine::{Engine, EngineSettings, Outcome, ReconcileReport, Scope};
use smm::lock::reconcile_lock;
use smm::{operator, render, store};

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
}

/// Renders the components in `scope` from `spec` with `helm template`; needs no cluster.
pub async fn dump(
    global: &GlobalArgs,
    spec: &ControlPlaneSpec,
    scope: &Scope,
    output_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let catalog = Catalog::builtin()?;
    let desired = resolve(&catalog, spec)?;
    let selected: Vec<_> = desired
        .iter()
        .filter(|d| scope.includes(d.name()))
        .collect();
    let rendered = render::render(&global.helm()?, &selected).await?;
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

/// The ControlPlane the imperative commands start from: the stored one, or a new one in which
/// every component is explicitly off, so the stored object says exactly what was asked for.
pub async fn stored_or_new(client: &kube::Client, name: &str) -> anyhow::Result<ControlPlaneSpec> {
    if let Some(found) = store::load(client, name).await? {
        return Ok(found.spec);
    }
    let catalog = Catalog::builtin()?;
    let mut spec = ControlPlaneSpec::default();
    for name in catalog.names() {
        spec.components.entry(name.to_owned()).or_default().enabled = Some(false);
    }
    Ok(spec)
}

/// Fails when the operator is installed: it owns reconciliation and the CLI must not compete.
pub async fn refuse_if_operator(client: &kube::Client, control_plane: &str) -> anyhow::Result<()> {
    if let Some(deployment) = operator::installed(client).await? {
        bail!(
            "the smm operator is installed ({deployment}) and reconciles ControlPlanes itself: \
             change the ControlPlane instead (kubectl edit controlplane {control_plane}), or \
             remove the operator first with `smm operator uninstall`. \
             --dump-resources still works."
        );
    }
    Ok(())
}

/// Stores `spec`, then reconciles `scope` under the reconcile lease and prints the summary.
/// Succeeds when every component in scope reached its desired state.
pub async fn store_and_reconcile(
    global: &GlobalArgs,
    client: kube::Client,
    control_plane: &str,
    spec: &ControlPlaneSpec,
    scope: &Scope,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let catalog = Catalog::builtin()?;
    // Reject a bad spec before anything is stored.
    resolve(&catalog, spec)?;
    let helm = global.helm()?;
    refuse_if_operator(&client, control_plane).await?;
    let holder = format!(
        "smm-cli/{}/{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned()),
        std::process::id()
    );
    let lock = reconcile_lock(&client, control_plane, &holder, global.timeout, |other| {
        eprintln!("waiting for another reconcile of {control_plane} to finish (held by {other})")
    })
    .await?;
    store::store(&client, control_plane, spec).await?;
    let engine = Engine::new(client, helm, catalog, EngineSettings::default())
        .with_progress(Arc::new(CliProgress::new(global.no_color)));
    let result = engine.reconcile(control_plane, scope).await;
    lock.release().await;
    let report = result?;
    print_report(&report, output)?;
    let succeeded = report
        .components
        .iter()
        .all(|component| component.outcome == Outcome::Done);
    Ok(if succeeded {
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
