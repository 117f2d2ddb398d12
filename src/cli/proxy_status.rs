//! `smm proxy-status`: every pod istiod injected, with its revision, its proxy's version, whether
//! that revision still exists and serves, and the version skew against its revision's istiod and
//! the newest istiod present. Exits 3 when a running proxy's revision no longer exists.

use std::process::ExitCode;

use clap::Args;

use smm::api::DEFAULT_CONTROL_PLANE;
use smm::mesh::revisions::proxies::{ProxyStatus, Skew};
use smm::ops::{self, ProxyStatusReport};

use super::args::GlobalArgs;
use super::output::{OutputFormat, print_structured};
use super::table;

/// The exit code when a running proxy points at a revision that no longer exists: distinct from
/// 1 (smm failed) and 2 (usage error).
const ORPHANED_PROXIES: u8 = 3;

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 every running proxy's revision exists; 1 smm failed; \
                        2 usage error; 3 a running proxy points at a revision that no longer \
                        exists (no injector and no istiod Deployment): restart it into an \
                        existing revision."
)]
pub struct ProxyStatusArgs {
    /// The ControlPlane whose mesh namespace holds the istiods (none stored: istio-system)
    #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE, value_parser = super::args::control_plane_flag)]
    control_plane: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

pub async fn run(global: &GlobalArgs, args: &ProxyStatusArgs) -> anyhow::Result<ExitCode> {
    let report = ops::proxy_status(&global.client().await?, &args.control_plane).await?;
    match args.output {
        OutputFormat::Text => print!("{}", text(&report)),
        format => print_structured(format, &report)?,
    }
    let orphaned: Vec<String> = report
        .proxies
        .iter()
        .filter(|proxy| proxy.orphaned())
        .map(|proxy| format!("{} ({})", proxy.pod, proxy.revision))
        .collect();
    if orphaned.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "proxies of revisions that no longer exist: {}",
        orphaned.join(", ")
    );
    Ok(ExitCode::from(ORPHANED_PROXIES))
}

fn text(report: &ProxyStatusReport) -> String {
    if report.proxies.is_empty() {
        return "no injected pods\n".to_owned();
    }
    let rows: Vec<Vec<String>> = report.proxies.iter().map(row).collect();
    table::render(
        &[
            "NAMESPACE",
            "NAME",
            "REVISION",
            "PROXY",
            "ISTIOD",
            "SKEW",
            "SKEW TO NEWEST",
            "STATE",
        ],
        &rows,
    )
}

fn row(proxy: &ProxyStatus) -> Vec<String> {
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    let skew = |skew: Option<Skew>| or_dash(skew.map(|s| s.to_string()));
    let state = if proxy.finished {
        "finished"
    } else if !proxy.revision_exists {
        "revision missing"
    } else if !proxy.revision_ready {
        "istiod not ready"
    } else {
        "ok"
    };
    vec![
        proxy.pod.namespace.clone(),
        proxy.pod.name.clone(),
        proxy.revision.clone(),
        or_dash(proxy.proxy_version.clone()),
        or_dash(proxy.control_plane_version.clone()),
        skew(proxy.skew),
        skew(proxy.skew_to_newest),
        state.to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use smm::mesh::revisions::usage::PodRef;

    fn proxy(name: &str, finished: bool, exists: bool, ready: bool) -> ProxyStatus {
        ProxyStatus {
            pod: PodRef {
                namespace: "demo".to_owned(),
                name: name.to_owned(),
            },
            phase: Some("Running".to_owned()),
            revision: "1-31-3".to_owned(),
            proxy_image: Some("docker.io/istio/proxyv2:1.31.3".to_owned()),
            proxy_version: Some("1.31.3".to_owned()),
            finished,
            revision_exists: exists,
            revision_ready: ready,
            control_plane_version: exists.then(|| "1.31.4".to_owned()),
            skew: exists.then_some(Skew::Patch),
            skew_to_newest: Some(Skew::Minor(-1)),
        }
    }

    #[test]
    fn the_state_column_says_what_is_wrong_with_a_proxys_revision() {
        let report = ProxyStatusReport {
            mesh_namespace: "istio-system".to_owned(),
            revisions: Default::default(),
            proxies: vec![
                proxy("job", true, false, false),
                proxy("ok", false, true, true),
                proxy("orphan", false, false, false),
                proxy("waiting", false, true, false),
            ],
        };
        assert_eq!(
            text(&report),
            "\
NAMESPACE   NAME      REVISION   PROXY    ISTIOD   SKEW    SKEW TO NEWEST   STATE
demo        job       1-31-3     1.31.3   -        -       -1 minor         finished
demo        ok        1-31-3     1.31.3   1.31.4   patch   -1 minor         ok
demo        orphan    1-31-3     1.31.3   -        -       -1 minor         revision missing
demo        waiting   1-31-3     1.31.3   1.31.4   patch   -1 minor         istiod not ready
"
        );
    }
}
