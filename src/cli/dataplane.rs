//! `smm dataplane-mode ambient|sidecar|none NAMESPACE...`: labels namespaces for ambient mode
//! (`istio.io/dataplane-mode`), which istio-cni and ztunnel select on.

use std::process::ExitCode;

use clap::Args;

use smm::api::DEFAULT_CONTROL_PLANE;
use smm::mesh::injection::DataplaneMode;
use smm::ops::ambient::{self, DataplaneModeReport};

use super::args::GlobalArgs;
use super::output::{OutputFormat, print_structured};

#[derive(Debug, Args)]
pub struct DataplaneArgs {
    /// ambient (ztunnel carries the pods' traffic), sidecar (the ambient label removed) or none
    /// (kept out of ambient mode)
    #[arg(value_name = "MODE", value_parser = super::args::spec_value_flag::<DataplaneMode>)]
    mode: DataplaneMode,
    #[arg(value_name = "NAMESPACE", required = true, value_parser = super::args::namespace_flag)]
    namespaces: Vec<String>,
    /// Label a namespace for ambient mode although it is labelled for sidecar injection too
    /// (its pods keep getting sidecars, which ztunnel leaves alone)
    #[arg(long)]
    allow_sidecar_injection: bool,
    /// The ControlPlane whose mesh the namespaces join
    #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE, value_parser = super::args::control_plane_flag)]
    control_plane: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

pub async fn run(global: &GlobalArgs, args: &DataplaneArgs) -> anyhow::Result<ExitCode> {
    let report = ambient::dataplane_mode(
        &global.client().await?,
        &args.control_plane,
        &args.namespaces,
        args.mode,
        args.allow_sidecar_injection,
    )
    .await?;
    match args.output {
        OutputFormat::Text => print!("{}", text(&report)),
        format => print_structured(format, &report)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn text(report: &DataplaneModeReport) -> String {
    let mut text = String::new();
    for namespace in &report.namespaces {
        text += &format!(
            "namespace/{}: data plane {}",
            namespace.namespace, namespace.mode
        );
        if !namespace.injection.is_empty() {
            text += &format!(" (sidecar injection: {})", namespace.injection.join(", "));
        }
        text += "\n";
    }
    for warning in &report.warnings {
        text += &format!("warning: {warning}\n");
    }
    text
}
