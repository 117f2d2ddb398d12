//! `smm install` and `smm uninstall`: change the named components' part of the ControlPlane
//! and reconcile just those components (plus what they depend on).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use std::sync::Arc;

use smm::api::{ControlPlaneSpec, Platform, Profile};
use smm::desired::edit::{self, InstallOptions, Selection};
use smm::desired::resolved::Resolved;
use smm::engine::Scope;
use smm::engine::session::{Edit, Request};
use smm::mesh::catalog::Catalog;
use smm::ops;

use super::args::GlobalArgs;
use super::change::{ChangeArgs, print_dump, reconcile};

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Every component smm knows
    #[arg(short, long, conflicts_with = "components")]
    all: bool,
    /// Components to install (see `smm components`)
    #[arg(value_name = "COMPONENT", required_unless_present = "all")]
    components: Vec<String>,
    /// Namespace for the component's release (one component only)
    #[arg(short, long, value_parser = super::args::namespace_flag)]
    namespace: Option<String>,
    /// Values for the component's chart in helm's --set syntax: KEY=VALUE[,KEY=VALUE...] with dotted KEYs, a[0] indexes and {x,y} lists (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// A YAML file of values for the component's chart (repeatable; --set wins over files)
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    values: Vec<PathBuf>,
    /// The data plane, stored as spec.profile: sidecar or ambient (with --all: ambient installs
    /// the node agents istio-cni and ztunnel too)
    #[arg(long, value_name = "PROFILE", value_parser = super::args::spec_value_flag::<Profile>)]
    profile: Option<Profile>,
    /// The Kubernetes distribution, stored as spec.platform: gke, k3d, k3s, microk8s, minikube
    /// or openshift
    #[arg(long, value_name = "PLATFORM", value_parser = super::args::spec_value_flag::<Platform>)]
    platform: Option<Platform>,
    /// Whether smm applies the Gateway API CRDs (waypoints are Gateways), stored as
    /// spec.gatewayAPI.enabled: true or false (unset: under the ambient profile only)
    #[arg(long, value_name = "BOOL")]
    gateway_api: Option<bool>,
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

pub async fn run_install(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    args: &InstallArgs,
) -> anyhow::Result<ExitCode> {
    let mut values = args
        .values
        .iter()
        .map(|path| edit::read_values_file(path))
        .collect::<Result<Vec<_>, _>>()?;
    for assignment in &args.set {
        values.push(edit::parse_set(assignment)?);
    }
    let options = InstallOptions {
        namespace: args.namespace.clone(),
        values,
        profile: args.profile,
        platform: args.platform,
        gateway_api: args.gateway_api,
    };
    let selection = selection(args.all, &args.components);
    let install = |spec: &mut ControlPlaneSpec, catalog: &Catalog| {
        edit::install(spec, catalog, &selection, &options)
    };
    change(global, catalog, &args.change, &install).await
}

pub async fn run_uninstall(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    args: &UninstallArgs,
) -> anyhow::Result<ExitCode> {
    let selection = selection(args.all, &args.components);
    let uninstall = |spec: &mut ControlPlaneSpec, catalog: &Catalog| {
        edit::uninstall(spec, catalog, &selection).map(Into::into)
    };
    change(global, catalog, &args.change, &uninstall).await
}

/// Applies `edit` to the ControlPlane and either dumps or reconciles the affected components.
/// Dumping starts from the stored ControlPlane when a cluster answers, from defaults otherwise,
/// so it works on a machine with no cluster at all.
async fn change(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    args: &ChangeArgs,
    edit: &Edit<'_>,
) -> anyhow::Result<ExitCode> {
    // Arguments that name no component, or values for several, are refused before the cluster
    // is contacted.
    edit(&mut edit::new_spec(catalog), catalog)?;
    if args.dump_resources {
        let client = global.client().await.ok();
        let mut spec = ops::spec_to_dump(client.as_ref(), catalog, &args.control_plane).await;
        let scope = Scope::Only(edit(&mut spec, catalog)?);
        let resolved = Resolved::new(catalog, &args.control_plane, spec)?;
        let rendered = ops::dump(&global.helm()?, &resolved, &scope).await?;
        return print_dump(&rendered, args.output_dir.as_deref());
    }
    reconcile(
        global,
        catalog,
        &args.control_plane,
        Request::Edit(edit),
        args.output,
        args.run,
    )
    .await
}
