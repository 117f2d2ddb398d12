//! `smm sidecar-proxy auto-inject on|off NAMESPACE...`: labels namespaces for istiod's sidecar
//! injector. The label is not owned by any reconciler: smm sets it and leaves it alone after.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use smm::api::DEFAULT_CONTROL_PLANE;
use smm::store;

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum SidecarCommand {
    /// Turn automatic sidecar injection on or off for namespaces
    AutoInject {
        #[arg(value_enum)]
        state: Switch,
        #[arg(value_name = "NAMESPACE", required = true)]
        namespaces: Vec<String>,
        /// The ControlPlane whose revision to inject (revisioned meshes use istio.io/rev)
        #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE)]
        control_plane: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// The labels for injection on: the default injector watches `istio-injection`, a revisioned one
/// `istio.io/rev`. Off removes both (a JSON merge patch with null deletes a label).
fn injection_labels(state: Switch, revision: Option<&str>) -> serde_json::Value {
    match (state, revision) {
        (Switch::On, None) => json!({"istio-injection": "enabled", "istio.io/rev": null}),
        (Switch::On, Some(revision)) => json!({"istio-injection": null, "istio.io/rev": revision}),
        (Switch::Off, _) => json!({"istio-injection": null, "istio.io/rev": null}),
    }
}

pub async fn run(global: &GlobalArgs, command: &SidecarCommand) -> anyhow::Result<ExitCode> {
    let SidecarCommand::AutoInject {
        state,
        namespaces,
        control_plane,
    } = command;
    let client = global.client().await?;
    let revision = store::load(&client, control_plane)
        .await?
        .and_then(|cp| cp.spec.revision);
    let patch = json!({"metadata": {"labels": injection_labels(*state, revision.as_deref())}});
    let api: Api<Namespace> = Api::all(client);
    for namespace in namespaces {
        api.patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|err| anyhow::anyhow!("namespace {namespace}: {err}"))?;
        let word = if *state == Switch::On { "on" } else { "off" };
        println!("namespace/{namespace}: sidecar auto-injection {word}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisioned_meshes_use_the_revision_label() {
        assert_eq!(
            injection_labels(Switch::On, None)["istio-injection"],
            "enabled"
        );
        let revisioned = injection_labels(Switch::On, Some("canary"));
        assert_eq!(revisioned["istio.io/rev"], "canary");
        assert!(revisioned["istio-injection"].is_null());
        assert!(injection_labels(Switch::Off, Some("x"))["istio.io/rev"].is_null());
    }
}
