//! `smm status`: every component's phase, workload readiness, chart, release and digests, and
//! whether the ControlPlane is Ready, judged now from its workloads (so it also follows what
//! `--no-wait` left on its way). Exits 0 only when Ready, so scripts can wait on it; `--watch`
//! follows it until then: it looks again when the ControlPlane changes (a watch of it) or when
//! the workloads not ready yet are (a watch of each, `workloads::wait_ready`), not on a clock.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, WatchParams};
use serde::Serialize;
use tokio::time::Instant;

use smm::api::ControlPlane;
use smm::api::{self, ControlPlaneStatus, DEFAULT_CONTROL_PLANE, condition};
use smm::cluster::control_plane;
use smm::cluster::workloads::{self, Readiness, WorkloadRef, all_ready};
use smm::helm::release::ReleaseRef;
use smm::helm::workloads::{LiveComponent, component_workloads, live};
use smm::values::digest::short_digest;

use super::args::GlobalArgs;
use super::output::OutputFormat;
use super::table;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The ControlPlane to show
    #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE, value_parser = super::args::control_plane_flag)]
    control_plane: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
    /// Follow the ControlPlane until it is Ready or --timeout passes, printing each change
    #[arg(short, long)]
    watch: bool,
}

/// What `smm status` reports: the stored status, each component's workloads judged now, and
/// whether the ControlPlane is Ready now.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    ready: bool,
    /// The stored status, its fields at the top level as before.
    #[serde(flatten)]
    status: ControlPlaneStatus,
    /// Each component as it stands now: the phase, ready/desired replicas (`1/1`) and message
    /// the text shows, which say why its workloads are not ready when they are not.
    live: BTreeMap<String, LiveComponent>,
    /// What `--watch` follows: the version the ControlPlane was read at, and the workloads
    /// not ready.
    #[serde(skip)]
    version: Option<String>,
    #[serde(skip)]
    waiting: Vec<WorkloadRef>,
}

pub async fn run(global: &GlobalArgs, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let client = global.client().await?;
    // Watches hold their connections: a client of their own keeps the reads' connection free.
    let watches = global.cluster_target().watch_client().await?;
    let deadline = Instant::now() + global.timeout;
    let mut last_printed = String::new();
    loop {
        let report = observe(&client, &args.control_plane).await?;
        let text = match args.output {
            OutputFormat::Text => text(&args.control_plane, &report),
            format => structured(format, &report)?,
        };
        if text != last_printed {
            print!("{text}");
            last_printed = text;
        }
        if report.ready {
            return Ok(ExitCode::SUCCESS);
        }
        if !args.watch || Instant::now() >= deadline {
            if args.watch {
                eprintln!(
                    "ControlPlane {} not Ready after {}s",
                    args.control_plane,
                    global.timeout.as_secs()
                );
            }
            return Ok(ExitCode::FAILURE);
        }
        wait_for_change(&client, &watches, &args.control_plane, &report, deadline).await;
        if args.output == OutputFormat::Text {
            println!();
        }
    }
}

/// Returns when the ControlPlane changed since `report` was made, when the workloads it found
/// not ready are ready (or one failed), or at `deadline`. A watch that cannot be made or breaks
/// is waited out for a moment instead, so a flaky connection does not make a busy loop.
async fn wait_for_change(
    client: &kube::Client,
    watches: &kube::Client,
    name: &str,
    report: &Report,
    deadline: Instant,
) {
    let api: Api<ControlPlane> = Api::all(watches.clone());
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(workloads::WATCH_SECONDS);
    let version = report.version.clone().unwrap_or_else(|| "0".to_owned());
    let control_plane_changed = async {
        match api.watch_metadata(&params, &version).await {
            Ok(events) => {
                let mut events = std::pin::pin!(events);
                if let Some(Err(err)) = events.next().await {
                    tracing::debug!(%err, "watch of the ControlPlane broke");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
            Err(err) => {
                tracing::debug!(%err, "cannot watch the ControlPlane");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    };
    let workloads_settled = async {
        if report.waiting.is_empty() {
            return std::future::pending().await;
        }
        let limit = deadline.saturating_duration_since(Instant::now());
        if let Err(err) = workloads::wait_ready(client, watches, &report.waiting, limit).await {
            tracing::debug!(%err, "cannot follow the workloads");
            tokio::time::sleep(RETRY_AFTER).await;
        }
    };
    tokio::select! {
        () = control_plane_changed => {}
        () = workloads_settled => {}
        () = tokio::time::sleep_until(deadline) => {}
    }
}

/// How long `--watch` waits before it looks again after a watch failed.
const RETRY_AFTER: Duration = Duration::from_secs(2);

async fn observe(client: &kube::Client, name: &str) -> anyhow::Result<Report> {
    let Some(control_plane) = control_plane::load(client, name).await? else {
        bail!(
            "ControlPlane {name} not found: install something with `smm install` or `smm reconcile`"
        );
    };
    let status = control_plane.status.clone().unwrap_or_default();
    let mut live_now = BTreeMap::new();
    let mut all_workloads_ready = true;
    let mut waiting = Vec::new();
    for (component, recorded) in &status.components {
        let states = component_workloads(client, recorded).await?;
        all_workloads_ready &= all_ready(&states);
        waiting.extend(
            states
                .iter()
                .filter(|s| s.readiness != Readiness::Ready)
                .map(|s| s.workload.clone()),
        );
        live_now.insert(component.clone(), live(recorded, &states));
    }
    Ok(Report {
        ready: api::ready_now(&control_plane, all_workloads_ready),
        live: live_now,
        version: control_plane.resource_version(),
        waiting,
        status,
    })
}

fn structured(format: OutputFormat, report: &Report) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(report)?),
        _ => serde_yaml_ng::to_string(report)?,
    })
}

/// The digest without its algorithm, shortened as git shortens hashes.
fn short(digest: Option<&str>) -> String {
    digest.map(|d| short_digest(d, 12)).unwrap_or_default()
}

fn text(name: &str, report: &Report) -> String {
    let status = &report.status;
    let rows: Vec<Vec<String>> = status
        .components
        .iter()
        .map(|(component, s)| {
            let shown = report.live.get(component);
            vec![
                component.clone(),
                shown.map_or_else(|| s.phase.to_string(), |l| l.phase.clone()),
                shown.and_then(|l| l.ready.clone()).unwrap_or_default(),
                s.chart
                    .as_ref()
                    .map(|c| format!("{}-{}", c.name, c.version))
                    .unwrap_or_default(),
                s.release
                    .as_ref()
                    .map(|r| ReleaseRef::from(r).to_string())
                    .unwrap_or_default(),
                s.release
                    .as_ref()
                    .and_then(|r| r.revision)
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
                short(s.chart_digest.as_deref()),
                short(s.values_digest.as_deref()),
                shown.and_then(|l| l.message.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = table::render(
        &[
            "COMPONENT",
            "PHASE",
            "READY",
            "CHART",
            "RELEASE",
            "REVISION",
            "CHART DIGEST",
            "VALUES DIGEST",
            "MESSAGE",
        ],
        &rows,
    );
    if !status.revisions.is_empty() {
        out.push('\n');
        out.push_str(&revisions_table(&status.revisions));
        out.push('\n');
    }
    let recorded = match status.condition(condition::READY) {
        Some(ready) => format!(
            "last reconcile: Ready={} ({}: {})",
            ready.status, ready.reason, ready.message
        ),
        None => "not reconciled yet".to_owned(),
    };
    let now = if report.ready { "Ready" } else { "not Ready" };
    out.push_str(&format!("ControlPlane {name}: {now} ({recorded})\n"));
    out
}

/// istiod's revisions: which is active, which tags point at each, and what still uses it.
fn revisions_table(revisions: &[smm::api::RevisionStatus]) -> String {
    let rows: Vec<Vec<String>> = revisions
        .iter()
        .map(|revision| {
            let in_use = revision
                .conditions
                .iter()
                .find(|c| c.type_ == smm::api::IN_USE);
            vec![
                revision.name.clone(),
                revision.version.clone().unwrap_or_default(),
                if revision.active {
                    "active"
                } else {
                    "inactive"
                }
                .to_owned(),
                revision.tags.join(","),
                revision
                    .in_use
                    .as_ref()
                    .map(|used| format!("{} pods, {} namespaces", used.pods, used.namespaces))
                    .unwrap_or_default(),
                in_use.map(|c| c.message.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    table::render(
        &[
            "ISTIOD REVISION",
            "VERSION",
            "STATE",
            "TAGS",
            "IN USE",
            "MESSAGE",
        ],
        &rows,
    )
}
