//! `smm version`: what a bug report needs first — smm's, helm's and the API server's versions.
//! A missing helm or an unreachable cluster is reported in the output rather than hidden.

use clap::Args;
use serde::Serialize;

use std::process::ExitCode;

use super::args::GlobalArgs;
use super::output::{OutputFormat, print_structured};

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Only print smm's own version; do not look for helm or the cluster
    #[arg(long)]
    client: bool,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Versions {
    smm: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    helm: Option<Component>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<Component>,
}

/// Either a version or why it could not be found out.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum Component {
    Version(String),
    Error(String),
}

pub async fn run(global: &GlobalArgs, args: &VersionArgs) -> anyhow::Result<ExitCode> {
    let mut versions = Versions {
        smm: env!("CARGO_PKG_VERSION"),
        helm: None,
        server: None,
    };
    if !args.client {
        versions.helm = Some(match global.helm() {
            Ok(helm) => match helm.version().await {
                Ok(version) => {
                    Component::Version(format!("{version} ({})", helm.binary().path.display()))
                }
                Err(err) => Component::Error(err.to_string()),
            },
            Err(err) => Component::Error(err.to_string()),
        });
        versions.server = Some(match server_version(global).await {
            Ok(version) => Component::Version(version),
            Err(err) => Component::Error(format!("{err:#}")),
        });
    }
    match args.output {
        OutputFormat::Json | OutputFormat::Yaml => print_structured(args.output, &versions)?,
        OutputFormat::Text => {
            println!("smm:    v{}", versions.smm);
            for (label, component) in [("helm:  ", &versions.helm), ("server:", &versions.server)] {
                match component {
                    Some(Component::Version(version)) => println!("{label} {version}"),
                    Some(Component::Error(error)) => println!("{label} unavailable: {error}"),
                    None => {}
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn server_version(global: &GlobalArgs) -> anyhow::Result<String> {
    let client = global.cluster_target().client().await?;
    let info = client.apiserver_version().await?;
    Ok(info.git_version)
}
