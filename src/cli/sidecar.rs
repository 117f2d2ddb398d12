//! `smm sidecar-proxy auto-inject on|off NAMESPACE...`: labels namespaces for istiod's sidecar
//! injector, for the ControlPlane's revision. `smm sidecar-proxy migrate --to REV`: moves
//! namespaces and their workloads to a revision.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use smm::api::DEFAULT_CONTROL_PLANE;
use smm::cluster::migration::{MigrationEvent, MigrationOptions, MigrationReport};
use smm::mesh::revisions::migration::MigrationPlan;
use smm::ops::{self, revisions};

use super::args::GlobalArgs;
use super::output::{OutputFormat, print_structured};

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
    /// Move namespaces to a revision (or tag): relabel them, then restart their Deployments,
    /// StatefulSets and DaemonSets that run proxies of another revision, in batches, each
    /// waited for until ready (at most --timeout); run again, it resumes
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The revision (one that runs) or tag to move to
    #[arg(long, value_name = "REVISION")]
    to: String,
    #[arg(value_name = "NAMESPACE", required_unless_present = "all", conflicts_with = "all", value_parser = super::args::namespace_flag)]
    namespaces: Vec<String>,
    /// Every namespace labelled for injection
    #[arg(long)]
    all: bool,
    /// How many workloads restart at once
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    batch: u16,
    /// Print what would be relabelled and restarted, change nothing
    #[arg(long)]
    dry_run: bool,
    /// The ControlPlane whose mesh the revisions belong to
    #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE, value_parser = super::args::control_plane_flag)]
    control_plane: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

pub async fn run(global: &GlobalArgs, command: &SidecarCommand) -> anyhow::Result<ExitCode> {
    match command {
        SidecarCommand::AutoInject {
            state,
            namespaces,
            control_plane,
        } => auto_inject(global, *state == Switch::On, namespaces, control_plane).await,
        SidecarCommand::Migrate(args) => migrate(global, args).await,
    }
}

async fn auto_inject(
    global: &GlobalArgs,
    on: bool,
    namespaces: &[String],
    control_plane: &str,
) -> anyhow::Result<ExitCode> {
    ops::auto_inject(&global.client().await?, control_plane, namespaces, on).await?;
    let word = if on { "on" } else { "off" };
    for namespace in namespaces {
        println!("namespace/{namespace}: sidecar auto-injection {word}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn migrate(global: &GlobalArgs, args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let MigrateArgs {
        to,
        namespaces,
        all,
        batch,
        dry_run,
        control_plane,
        output,
    } = args;
    let client = global.client().await?;
    let namespaces = (!*all).then_some(namespaces.as_slice());
    if *dry_run {
        let plan = revisions::plan_migration(&client, control_plane, to, namespaces).await?;
        match output {
            OutputFormat::Text => print!("{}", plan_text(&plan)),
            format => print_structured(*format, &plan)?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    let options = MigrationOptions {
        batch: usize::from(*batch),
        timeout: global.timeout,
    };
    let report =
        revisions::migrate(&client, control_plane, to, namespaces, options, progress).await?;
    match output {
        OutputFormat::Text => print!("{}", report_text(&report)),
        format => print_structured(*format, &report)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn progress(event: MigrationEvent<'_>) {
    match event {
        MigrationEvent::Relabelled(relabel) => {
            eprintln!(
                "namespace/{}: {}",
                relabel.namespace,
                labels(&relabel.labels)
            )
        }
        MigrationEvent::Restarting {
            index,
            of,
            workloads,
        } => {
            let names: Vec<String> = workloads.iter().map(ToString::to_string).collect();
            eprintln!("batch {index}/{of}: restarted {}", names.join(", "));
        }
        MigrationEvent::Ready { index, of } => eprintln!("batch {index}/{of}: ready"),
    }
}

/// `a=b, c-` as kubectl label writes a label set and a label removed.
fn labels(labels: &std::collections::BTreeMap<String, Option<String>>) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|(key, value)| match value {
            Some(value) => format!("{key}={value}"),
            None => format!("{key}-"),
        })
        .collect();
    parts.join(" ")
}

fn plan_text(plan: &MigrationPlan) -> String {
    let mut text = format!("to revision {}\n", plan.revision);
    for relabel in &plan.relabel {
        text += &format!(
            "relabel namespace/{}: {}\n",
            relabel.namespace,
            labels(&relabel.labels)
        );
    }
    for workload in &plan.restart {
        let from: Vec<&str> = workload.from.iter().map(String::as_str).collect();
        text += &format!("restart {workload} (from {})\n", from.join(", "));
    }
    text + &format!(
        "{} workload(s) already on {}\n",
        plan.up_to_date, plan.revision
    )
}

fn report_text(report: &MigrationReport) -> String {
    format!(
        "migrated to revision {}: {} namespace(s) relabelled, {} workload(s) restarted, {} already on it\n",
        report.revision,
        report.relabelled.len(),
        report.restarted.len(),
        report.up_to_date
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use smm::mesh::revisions::migration::{Relabel, Restart, RestartKind};

    #[test]
    fn a_dry_run_lists_relabels_as_kubectl_label_writes_them_and_restarts_with_their_origin() {
        let plan = MigrationPlan {
            revision: "1-31-4".to_owned(),
            relabel: vec![Relabel {
                namespace: "demo".to_owned(),
                labels: [
                    ("istio-injection".to_owned(), Some("enabled".to_owned())),
                    ("istio.io/rev".to_owned(), None),
                ]
                .into(),
            }],
            restart: vec![Restart {
                namespace: "demo".to_owned(),
                kind: RestartKind::Deployment,
                name: "web".to_owned(),
                from: ["1-31-3".to_owned()].into(),
            }],
            up_to_date: 2,
        };
        assert_eq!(
            plan_text(&plan),
            "\
to revision 1-31-4
relabel namespace/demo: istio-injection=enabled istio.io/rev-
restart Deployment demo/web (from 1-31-3)
2 workload(s) already on 1-31-4
"
        );
    }
}
