//! Benchmark helper (not part of the product): writes what smm gives helm for every enabled
//! component of a ControlPlane, so the benchmark's peers (plain helm, helmfile) install exactly
//! the same charts with exactly the same merged values.
//!
//!   cargo run --release --example bench_peer_inputs -- CONTROLPLANE.yaml OUT_DIR
//!
//! OUT_DIR/components.tsv lists, in dependency order, `name release namespace depends-on`
//! (depends-on comma-separated, `-` for none); OUT_DIR/NAME/ holds `chart/` (the embedded chart
//! as smm writes it out for helm, Chart.yaml override included), `values.yaml` (the merged
//! values, JSON) and `native.yaml` (the objects smm applies itself before the chart: the release
//! namespace, Istio's CRDs, ...).

use std::path::Path;

use anyhow::{Context, bail};
use smm::api::ControlPlane;
use smm::cluster::objects::to_yaml_documents;
use smm::desired::resolve::resolve;
use smm::mesh::catalog::Catalog;

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, out] = args.as_slice() else {
        bail!("usage: bench_peer_inputs CONTROLPLANE.yaml OUT_DIR");
    };
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let control_plane: ControlPlane = serde_yaml_ng::from_str(&text)?;
    let catalog = Catalog::builtin()?;
    let desired = resolve(&catalog, &control_plane.spec)?;
    let out = Path::new(out);
    std::fs::create_dir_all(out)?;
    let mut index = String::new();
    for d in desired.iter().filter(|d| d.enabled) {
        let dir = out.join(d.name());
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let chart = d.chart.materialize()?;
        copy_dir(chart.path(), &dir.join("chart"))?;
        std::fs::write(dir.join("values.yaml"), format!("{:#}\n", d.values))?;
        let native: String = to_yaml_documents(&d.native)
            .iter()
            .map(|doc| format!("---\n{doc}"))
            .collect();
        std::fs::write(dir.join("native.yaml"), native)?;
        let deps = d.component.depends_on.join(",");
        index.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            d.name(),
            d.release.name,
            d.release.namespace,
            if deps.is_empty() { "-" } else { &deps }
        ));
    }
    std::fs::write(out.join("components.tsv"), index)?;
    Ok(())
}
