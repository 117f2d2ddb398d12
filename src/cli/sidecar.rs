//! `smm sidecar-proxy auto-inject on|off NAMESPACE...`: labels namespaces for istiod's sidecar
//! injector, for the ControlPlane's revision.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use smm::api::DEFAULT_CONTROL_PLANE;
use smm::ops;

use super::args::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum SidecarCommand {
    /// Turn automatic sidecar injection on or off for namespaces
    AutoInject {
        #[arg(value_enum)]
        state: Switch,
        #[arg(value_name = "NAMESPACE", required = true, value_parser = super::args::namespace_flag)]
        namespaces: Vec<String>,
        /// The ControlPlane whose revision to inject (revisioned meshes use istio.io/rev)
        #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE, value_parser = super::args::control_plane_flag)]
        control_plane: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

pub async fn run(global: &GlobalArgs, command: &SidecarCommand) -> anyhow::Result<ExitCode> {
    let SidecarCommand::AutoInject {
        state,
        namespaces,
        control_plane,
    } = command;
    let on = *state == Switch::On;
    ops::auto_inject(&global.client().await?, control_plane, namespaces, on).await?;
    let word = if on { "on" } else { "off" };
    for namespace in namespaces {
        println!("namespace/{namespace}: sidecar auto-injection {word}");
    }
    Ok(ExitCode::SUCCESS)
}
