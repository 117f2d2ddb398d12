//! `smm install` and `smm uninstall`: change the named components' part of the ControlPlane
//! and reconcile just those components (plus what they depend on).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use smm::api::ControlPlaneSpec;
use smm::catalog::Catalog;
use smm::engine::Scope;
use smm::imperative::{self, InstallOptions, Selection};

use super::GlobalArgs;
use super::converge::{ChangeArgs, dump, store_and_reconcile, stored_or_new};

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Every component smm knows
    #[arg(short, long, conflicts_with = "components")]
    all: bool,
    /// Components to install (see `smm components`)
    #[arg(value_name = "COMPONENT", required_unless_present = "all")]
    components: Vec<String>,
    /// Namespace for the component's release (one component only)
    #[arg(short, long)]
    namespace: Option<String>,
    /// A value for the component's chart, as with helm: KEY=VALUE with a dotted KEY (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// A YAML file of values for the component's chart (repeatable; --set wins over files)
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    values: Vec<PathBuf>,
    #[command(flatten)]
    change: ChangeArgs,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Every component smm knows
    #[arg(short, long, conflicts_with = "components")]
    all: bool,
    /// Components to uninstall
    #[arg(value_name = "COMPONENT", required_unless_present = "all")]
    components: Vec<String>,
    #[command(flatten)]
    change: ChangeArgs,
}

fn selection(all: bool, components: &[String]) -> Selection {
    if all {
        Selection::All
    } else {
        Selection::Named(components.to_vec())
    }
}

pub async fn run_install(global: &GlobalArgs, args: &InstallArgs) -> anyhow::Result<ExitCode> {
    let mut values = args
        .values
        .iter()
        .map(|path| imperative::read_values_file(path))
        .collect::<Result<Vec<_>, _>>()?;
    for assignment in &args.set {
        values.push(imperative::parse_set(assignment)?);
    }
    let options = InstallOptions {
        namespace: args.namespace.clone(),
        values,
    };
    let selection = selection(args.all, &args.components);
    change(global, &args.change, |spec, catalog| {
        Ok(imperative::install(spec, catalog, &selection, &options)?)
    })
    .await
}

pub async fn run_uninstall(global: &GlobalArgs, args: &UninstallArgs) -> anyhow::Result<ExitCode> {
    let selection = selection(args.all, &args.components);
    change(global, &args.change, |spec, catalog| {
        Ok(imperative::uninstall(spec, catalog, &selection)?)
    })
    .await
}

/// Applies `edit` to the ControlPlane and either dumps or reconciles the affected components.
/// Dumping starts from the stored ControlPlane when a cluster answers, from defaults otherwise,
/// so it works on a machine with no cluster at all.
async fn change(
    global: &GlobalArgs,
    args: &ChangeArgs,
    edit: impl FnOnce(
        &mut ControlPlaneSpec,
        &Catalog,
    ) -> anyhow::Result<std::collections::BTreeSet<String>>,
) -> anyhow::Result<ExitCode> {
    let catalog = Catalog::builtin()?;
    if args.dump_resources {
        let mut spec = match global.client().await {
            Ok(client) => match stored_or_new(&client, &args.control_plane).await {
                Ok(spec) => spec,
                Err(err) => {
                    tracing::warn!(
                        "rendering from defaults: cannot read the ControlPlane: {err:#}"
                    );
                    ControlPlaneSpec::default()
                }
            },
            Err(_) => ControlPlaneSpec::default(),
        };
        let scope = edit(&mut spec, &catalog)?;
        return dump(
            global,
            &spec,
            &Scope::Only(scope),
            args.output_dir.as_deref(),
        )
        .await;
    }
    let client = global.client().await?;
    let mut spec = stored_or_new(&client, &args.control_plane).await?;
    let scope = edit(&mut spec, &catalog)?;
    store_and_reconcile(
        global,
        client,
        &args.control_plane,
        &spec,
        &Scope::Only(scope),
        args.output,
    )
    .await
}
