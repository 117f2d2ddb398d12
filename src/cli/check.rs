//! `smm check [--pre]`: the checks of `smm::check`, printed as `linkerd check` prints its own
//! (a category, then one line per check: ✔ passed, ‼ warning, × failed, with a hint under each
//! that did not pass), or as JSON/YAML. Exits 0 only when no check failed; `--wait` runs them
//! again until then.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kube::ResourceExt;
use tokio::time::Instant;

use smm::api::{ControlPlane, ControlPlaneSpec, DEFAULT_CONTROL_PLANE};
use smm::check::{self, CheckReport, Outcome};
use smm::cluster::control_plane;
use smm::desired::resolved::Resolved;
use smm::mesh::catalog::Catalog;

use super::args::GlobalArgs;
use super::output::{OutputFormat, print_structured};

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 no check failed (warnings allowed); 1 a check failed, or \
                        smm could not run the checks; 2 usage error."
)]
pub struct CheckArgs {
    /// Check the cluster before an install or upgrade instead of the installed mesh
    #[arg(long)]
    pre: bool,
    /// With --pre: the ControlPlane YAML to check for (default: the stored ControlPlane, or
    /// the components enabled by default when none is stored); `-` reads standard input
    #[arg(short = 'f', long = "from-file", value_name = "FILE", requires = "pre")]
    from_file: Option<PathBuf>,
    /// The ControlPlane to check
    #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE, value_parser = super::args::control_plane_flag)]
    control_plane: String,
    /// Run the checks again until none fails, for at most this long (e.g. 90s, 5m)
    #[arg(long, value_name = "DURATION", value_parser = super::args::parse_duration)]
    wait: Option<Duration>,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

/// How long `--wait` pauses between two runs of the checks.
const WAIT_EVERY: Duration = Duration::from_secs(2);

pub async fn run(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    args: &CheckArgs,
) -> anyhow::Result<ExitCode> {
    // The spec --pre checks for is read before the cluster is asked anything.
    let from_file = match &args.from_file {
        Some(path) => {
            let (source, text) = super::reconcile::read_file(path)?;
            Some(ControlPlane::from_yaml(&source, &text)?)
        }
        None => None,
    };
    let client = global.client().await?;
    let deadline = args.wait.map(|wait| Instant::now() + wait);
    loop {
        let report = if args.pre {
            let (name, spec) = match &from_file {
                Some(control_plane) => (control_plane.name_any(), control_plane.spec.clone()),
                None => (
                    args.control_plane.clone(),
                    stored_or_default(&client, &args.control_plane).await,
                ),
            };
            let resolved = Resolved::new(catalog, &name, spec)
                .with_context(|| format!("ControlPlane {name}"))?;
            CheckReport::new(
                true,
                check::pre::pre(&client, &global.helm()?, &resolved).await?,
            )
        } else {
            CheckReport::new(
                false,
                check::post::post(&client, &args.control_plane).await?,
            )
        };
        let again = deadline.is_some_and(|deadline| Instant::now() + WAIT_EVERY < deadline);
        if report.passed || !again {
            match args.output {
                OutputFormat::Text => print!("{}", text(&report)),
                format => print_structured(format, &report)?,
            }
            return Ok(if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        eprintln!(
            "waiting: {} checks fail, the first: {}",
            report.failures().count(),
            report
                .failures()
                .next()
                .map(|f| f.message.as_str())
                .unwrap_or_default()
        );
        tokio::time::sleep(WAIT_EVERY).await;
    }
}

/// The stored ControlPlane's spec; the default one (the components enabled by default) when
/// none is stored or it cannot be read (the checks then say why the cluster cannot be read).
async fn stored_or_default(client: &kube::Client, name: &str) -> ControlPlaneSpec {
    match control_plane::load(client, name).await {
        Ok(Some(control_plane)) => control_plane.spec,
        Ok(None) => ControlPlaneSpec::default(),
        Err(err) => {
            tracing::warn!(
                "checking for the default components: cannot read ControlPlane {name}: {err:#}"
            );
            ControlPlaneSpec::default()
        }
    }
}

fn text(report: &CheckReport) -> String {
    let mut out = String::new();
    let mut category = None;
    for finding in &report.findings {
        if category != Some(finding.category) {
            if category.is_some() {
                out.push('\n');
            }
            let title = finding.category.title();
            out.push_str(&format!("{title}\n{}\n", "-".repeat(title.len())));
            category = Some(finding.category);
        }
        let mark = match finding.outcome {
            Outcome::Pass => "✔",
            Outcome::Warn => "‼",
            Outcome::Fail => "×",
        };
        out.push_str(&format!("{mark} {}\n", finding.message));
        if let Some(hint) = &finding.hint {
            out.push_str(&format!("    hint: {hint}\n"));
        }
    }
    let count = |outcome| {
        report
            .findings
            .iter()
            .filter(|f| f.outcome == outcome)
            .count()
    };
    let what = if report.pre { "Pre-install" } else { "Mesh" };
    out.push_str(&format!(
        "\n{what} checks: {} passed, {} warnings, {} failed\n",
        count(Outcome::Pass),
        count(Outcome::Warn),
        count(Outcome::Fail)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use smm::check::{Category, Finding};

    #[test]
    fn text_groups_by_category_and_hints_what_did_not_pass() {
        let report = CheckReport::new(
            false,
            vec![
                Finding::pass(Category::Components, "istiod: ready (1/1 replicas)"),
                Finding::fail(Category::Webhooks, "a pod was refused", "start istiod"),
                Finding::warn(Category::DataPlane, "1 proxies behind", "restart them"),
            ],
        );
        assert_eq!(
            text(&report),
            "components\n----------\n✔ istiod: ready (1/1 replicas)\n\n\
             webhooks\n--------\n× a pod was refused\n    hint: start istiod\n\n\
             data-plane\n----------\n‼ 1 proxies behind\n    hint: restart them\n\n\
             Mesh checks: 1 passed, 1 warnings, 1 failed\n"
        );
    }
}
