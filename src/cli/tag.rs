//! `smm tag set|list|remove`: revision tags, as `istioctl tag` names them, kept in the
//! ControlPlane's `spec.revisionTags` and applied by the reconcile after istiod's step.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};

use smm::api::{ControlPlaneSpec, DEFAULT_CONTROL_PLANE};
use smm::desired::edit::Covered;
use smm::desired::tags::{remove_tag, set_tag};
use smm::engine::session::Request;
use smm::mesh::catalog::Catalog;
use smm::ops::revisions::{self, TagListReport};

use super::args::GlobalArgs;
use super::change::{RunFlags, reconcile};
use super::output::{OutputFormat, print_structured};
use super::table;

#[derive(Debug, Subcommand)]
pub enum TagCommand {
    /// Point a tag at a revision that runs (default: follow the active revision) and apply it
    Set {
        #[arg(value_name = "TAG")]
        tag: String,
        /// The revision to point at (see `smm tag list`, `kubectl get controlplane`); unset, the
        /// tag follows the active revision as it changes
        #[arg(long, value_name = "REVISION")]
        revision: Option<String>,
        #[command(flatten)]
        change: TagChangeArgs,
    },
    /// List the tags, the revision each points at, and the namespaces that select it
    List {
        #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE, value_parser = super::args::control_plane_flag)]
        control_plane: String,
        #[arg(short, long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Remove a tag from the spec and from the cluster; refused while namespaces select it
    /// (their new pods would get no proxy) unless --force
    Remove {
        #[arg(value_name = "TAG")]
        tag: String,
        #[command(flatten)]
        change: TagChangeArgs,
    },
}

/// Flags of the tag commands that change the mesh.
#[derive(Debug, Args)]
pub struct TagChangeArgs {
    /// The ControlPlane to work on
    #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE, value_parser = super::args::control_plane_flag)]
    control_plane: String,
    /// Print the tag objects the reconcile would apply (every tag of the edited spec), as
    /// YAML, instead of applying them
    #[arg(long)]
    dump_resources: bool,
    /// Format of the summary
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    run: RunFlags,
}

pub async fn run(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    command: &TagCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        TagCommand::Set {
            tag,
            revision,
            change,
        } => {
            let running = match revision {
                Some(_) => {
                    let client = global.client().await?;
                    revisions::running_revisions(&client, &change.control_plane).await?
                }
                None => Vec::new(),
            };
            let edit = |spec: &mut ControlPlaneSpec, catalog: &Catalog| {
                set_tag(spec, catalog, tag, revision.as_deref(), &running).map(Covered::from)
            };
            apply(global, catalog, change, &edit).await
        }
        TagCommand::Remove { tag, change } => {
            if !change.run.force && !change.dump_resources {
                let client = global.client().await?;
                revisions::check_tag_unused(&client, &change.control_plane, tag).await?;
            }
            let edit = |spec: &mut ControlPlaneSpec, catalog: &Catalog| {
                remove_tag(spec, catalog, tag).map(Covered::from)
            };
            apply(global, catalog, change, &edit).await
        }
        TagCommand::List {
            control_plane,
            output,
        } => {
            let report = revisions::tags(&global.client().await?, control_plane).await?;
            match output {
                OutputFormat::Text => print!("{}", text(&report)),
                format => print_structured(*format, &report)?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn apply(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    change: &TagChangeArgs,
    edit: &smm::engine::session::Edit<'_>,
) -> anyhow::Result<ExitCode> {
    if change.dump_resources {
        let client = global.client().await.ok();
        let yaml =
            revisions::dump_tags(client.as_ref(), catalog, &change.control_plane, edit).await?;
        print!("{yaml}");
        return Ok(ExitCode::SUCCESS);
    }
    let request = Request::Edit(edit);
    reconcile(
        global,
        catalog,
        &change.control_plane,
        request,
        change.output,
        change.run,
    )
    .await
}

fn text(report: &TagListReport) -> String {
    if report.tags.is_empty() {
        return format!(
            "no revision tags (active revision: {})\n",
            report.active_revision
        );
    }
    let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
    let rows: Vec<Vec<String>> = report
        .tags
        .iter()
        .map(|entry| {
            vec![
                entry.tag.clone(),
                or_dash(&entry.revision),
                or_dash(&entry.wanted),
                if entry.follows_active { "yes" } else { "no" }.to_owned(),
                entry.namespaces.join(","),
            ]
        })
        .collect();
    table::render(
        &["TAG", "REVISION", "WANTED", "FOLLOWS ACTIVE", "NAMESPACES"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use smm::mesh::revisions::tag_list::TagEntry;

    #[test]
    fn the_table_shows_where_each_tag_points_and_who_selects_it() {
        let entry = |tag: &str, revision: Option<&str>, follows: bool, ns: &[&str]| TagEntry {
            tag: tag.to_owned(),
            revision: revision.map(str::to_owned),
            wanted: Some("1-31-4".to_owned()),
            follows_active: follows,
            namespaces: ns.iter().map(|n| (*n).to_owned()).collect(),
        };
        let report = TagListReport {
            mesh_namespace: "istio-system".to_owned(),
            active_revision: "1-31-4".to_owned(),
            tags: vec![
                entry("canary", None, true, &[]),
                entry("default", Some("1-31-4"), true, &["demo", "web"]),
            ],
        };
        assert_eq!(
            text(&report),
            "\
TAG       REVISION   WANTED   FOLLOWS ACTIVE   NAMESPACES
canary    -          1-31-4   yes
default   1-31-4     1-31-4   yes              demo,web
"
        );
    }
}
