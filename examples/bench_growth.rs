//! Benchmark helper (not part of the product): how a no-op reconcile grows with the number of
//! components. Builds a catalog of N independent components, each the test chart
//! `tests/fixtures/charts/tiny` under its own release, stores a ControlPlane for it, installs it
//! once through a reconcile session (lease included, as `smm reconcile -f` does), then times
//! one no-op of a new session (as a one-shot `smm reconcile -f` process: no release record
//! decoded before) and RUNS no-op runs of the first session (as the operator's reconciles,
//! which share the records decoded before).
//!
//!   cargo run --release --example bench_growth -- N [RUNS]     (KUBECONFIG and SMM_HELM set)
//!
//! Prints one line of `key=value` pairs: the cold install's time, the new session's no-op,
//! every other no-op's time and their median, the helm processes and API requests (lease requests apart) of the no-ops, and the
//! process's resident memory after them (VmRSS, VmHWM in KiB).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use smm::api::ControlPlaneSpec;
use smm::cluster::lease::holder_identity;
use smm::cluster::target::ClusterTarget;
use smm::desired::resolved::Resolved;
use smm::engine::WaitPolicy;
use smm::engine::session::{Request, Session};
use smm::helm::Helm;
use smm::helm::HelmBinary;
use smm::mesh::catalog::Catalog;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::{EnvFilter, Layer};

#[path = "../tests/fixtures/tiny_component.rs"]
mod tiny_component;
use tiny_component::tiny_component;

static TINY: include_dir::Dir<'static> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/tests/fixtures/charts/tiny");

/// Counts the HTTP requests kube's client makes: one `HTTP` span per request (retries included).
#[derive(Clone, Default)]
struct RequestCounter {
    all: Arc<AtomicU64>,
    lease: Arc<AtomicU64>,
}

struct Url(String);
impl Visit for Url {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "http.url" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for RequestCounter {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: LayerContext<'_, S>,
    ) {
        if attrs.metadata().name() != "HTTP" {
            return;
        }
        self.all.fetch_add(1, Ordering::Relaxed);
        let mut url = Url(String::new());
        attrs.record(&mut url);
        if url.0.contains("/leases") {
            self.lease.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn proc_status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn catalog(n: usize) -> anyhow::Result<Catalog> {
    let components = (0..n)
        .map(|i| {
            let name: &'static str = Box::leak(format!("tiny{i:03}").into_boxed_str());
            tiny_component(name, &TINY, "greeting: from-the-benchmark\n")
        })
        .collect();
    Ok(Catalog::new(components)?)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (n, runs) = match args.as_slice() {
        [n] => (n.parse::<usize>()?, 5),
        [n, runs] => (n.parse()?, runs.parse()?),
        _ => bail!("usage: bench_growth N [RUNS]"),
    };
    let counter = RequestCounter::default();
    // BENCH_TRACE=1: every span of smm's (and each HTTP request) with its time when it closes,
    // on stderr: where a no-op's time goes.
    let trace = std::env::var_os("BENCH_TRACE").map(|_| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_filter(EnvFilter::new("smm=debug,kube_client=debug"))
    });
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(
                counter
                    .clone()
                    .with_filter(EnvFilter::new("kube_client=debug")),
            )
            .with(trace),
    )?;

    let target = ClusterTarget::default();
    let client = target.client().await?;
    smm::cluster::control_plane::ensure_crd(&client).await?;
    let helm = Helm::new(
        HelmBinary::locate(None).context("SMM_HELM or helm on PATH")?,
        target,
        Duration::from_secs(300),
    );
    let name = format!("bench-growth-{n}");
    let spec: ControlPlaneSpec = serde_json::from_value(json!({ "namespace": name }))?;
    let catalog = Arc::new(catalog(n)?);
    // Resolved once per run, as `smm reconcile -f` does before it takes the lease.
    let replace = || -> anyhow::Result<Request<'_>> {
        Ok(Request::Replace(Box::new(Resolved::new(
            &catalog,
            &name,
            spec.clone(),
        )?)))
    };
    // A session's runs share the release records they decoded (as the operator's reconciles
    // do); a new session starts with none, as a one-shot `smm reconcile -f` process does.
    let new_session = || {
        Session::new(
            client.clone(),
            helm.clone(),
            catalog.clone(),
            holder_identity("smm-bench"),
            Duration::from_secs(60),
        )
        .with_wait(WaitPolicy::Until(Duration::from_secs(900)))
    };
    let session = new_session();

    let started = Instant::now();
    let report = session.run(&name, replace()?, |_| {}).await?;
    let cold = started.elapsed().as_secs_f64();
    if !report.ready {
        bail!("the cold install of {n} components did not become ready: {report:?}");
    }
    // The first no-op of a new session: every record decoded, none known yet.
    let started = Instant::now();
    new_session().run(&name, replace()?, |_| {}).await?;
    let first = started.elapsed().as_secs_f64();
    let (helm_before, api_before, lease_before) = (
        helm.processes_spawned(),
        counter.all.load(Ordering::Relaxed),
        counter.lease.load(Ordering::Relaxed),
    );
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let report = session.run(&name, replace()?, |_| {}).await?;
        times.push(started.elapsed().as_secs_f64());
        if !report.ready {
            bail!("a no-op of {n} components was not ready: {report:?}");
        }
    }
    let runs_f = runs as u64;
    let api = counter.all.load(Ordering::Relaxed) - api_before;
    let lease = counter.lease.load(Ordering::Relaxed) - lease_before;
    println!(
        "components={n} cold_s={cold:.3} noop_new_session_s={first:.4} noop_median_s={:.4} noop_s={} helm_per_noop={} \
         api_per_noop={} lease_per_noop={} rss_kib={} hwm_kib={}",
        median(times.clone()),
        times
            .iter()
            .map(|t| format!("{t:.4}"))
            .collect::<Vec<_>>()
            .join(","),
        (helm.processes_spawned() - helm_before) / runs_f,
        (api - lease) / runs_f,
        lease / runs_f,
        proc_status_kib("VmRSS:"),
        proc_status_kib("VmHWM:"),
    );
    Ok(())
}
