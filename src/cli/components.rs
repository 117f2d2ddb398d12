//! `smm components`: the catalog, and where a cluster answers, each component's state there.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use smm::api::{ControlPlane, DEFAULT_CONTROL_PLANE, Profile};
use smm::cluster::control_plane;
use smm::mesh::catalog::{Catalog, DefaultNamespace};

use super::args::GlobalArgs;
use super::output::{OutputFormat, print_structured};
use super::table;

#[derive(Debug, Args)]
pub struct ComponentsArgs {
    /// The ControlPlane whose state to show
    #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE, value_parser = super::args::control_plane_flag)]
    control_plane: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ComponentRow {
    name: &'static str,
    chart_version: String,
    /// The version of what the chart runs (its appVersion): the image tag its workloads
    /// default to.
    #[serde(skip_serializing_if = "Option::is_none")]
    app_version: Option<String>,
    default_namespace: String,
    depends_on: Vec<&'static str>,
    enabled_by_default: bool,
    /// The profile under which it is on by default too.
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled_in_profile: Option<Profile>,
    /// The two above in words, for the table.
    #[serde(skip)]
    default_label: String,
    /// From the stored ControlPlane; absent without a cluster or ControlPlane.
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<String>,
}

pub async fn run(
    global: &GlobalArgs,
    catalog: &Catalog,
    args: &ComponentsArgs,
) -> anyhow::Result<ExitCode> {
    let stored = stored(global, &args.control_plane).await;
    // The engine's own rule: explicit choice, else the default while the dependencies are on.
    let placements = stored.as_ref().map(|cp| catalog.placements(&cp.spec));
    let rows = catalog
        .components()
        .iter()
        .map(|component| {
            let enabled = placements.as_ref().map(|p| p[component.name].enabled);
            let phase = stored
                .as_ref()
                .and_then(|cp| cp.status.as_ref())
                .and_then(|s| s.components.get(component.name))
                .map(|s| s.phase.to_string());
            let metadata = component.chart.metadata()?;
            Ok(ComponentRow {
                name: component.name,
                chart_version: metadata.version,
                app_version: metadata.app_version,
                default_namespace: match component.default_namespace {
                    DefaultNamespace::Mesh => "(mesh namespace)".to_owned(),
                    DefaultNamespace::Fixed(namespace) => namespace.to_owned(),
                },
                depends_on: component.depends_on.to_vec(),
                enabled_by_default: component.enabled_by_default,
                enabled_in_profile: component.enabled_in_profile,
                default_label: component.default_label(),
                enabled,
                phase,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.output != OutputFormat::Text {
        print_structured(args.output, &rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.name.to_owned(),
                row.chart_version.clone(),
                row.app_version.clone().unwrap_or_else(|| "-".to_owned()),
                row.default_namespace.clone(),
                row.depends_on.join(","),
                row.default_label.clone(),
                row.enabled.map(yes_no).unwrap_or_else(|| "-".to_owned()),
                row.phase.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "NAME",
                "CHART",
                "APP VERSION",
                "NAMESPACE",
                "DEPENDS ON",
                "DEFAULT",
                "ENABLED",
                "PHASE"
            ],
            &cells
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// The stored ControlPlane if a cluster answers; the catalog is useful without one.
async fn stored(global: &GlobalArgs, name: &str) -> Option<ControlPlane> {
    let client = global.client().await.ok()?;
    match control_plane::load(&client, name).await {
        Ok(found) => found,
        Err(err) => {
            tracing::info!("not showing cluster state: {err}");
            None
        }
    }
}
