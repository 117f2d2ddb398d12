//! Checks that Istio's charts, fetched by `scripts/istio/fetch.sh` into the git-ignored
//! `.upstream/istio/`, are there (every chart `scripts/istio/charts.txt` lists) and are the
//! version `scripts/istio/versions.env` pins, and tells the crate where they are
//! (`SMM_ISTIO_CHARTS`, the directory holding exactly those charts, for `include_dir!`) and which module version
//! they come from (`SMM_ISTIO_CHART_VERSION`, that version without its `v`, which smm gives the
//! embedded charts).
//!
//! A missing or stale fetch stops the build with one line naming the script: the charts are a
//! dependency like a crate, but one cargo cannot download itself.
//!
//! It passes on the oldest Kubernetes minor version the module's istioctl supports
//! (`SMM_ISTIO_MIN_KUBERNETES_MINOR`, from the `min-kubernetes` file fetch.sh reads out of it).
//!
//! It passes on the image tags of the add-ons Istio's module tests with (its `samples/addons`,
//! copied by fetch.sh): `SMM_ADDON_TAG_PROMETHEUS`, `SMM_ADDON_TAG_GRAFANA`,
//! `SMM_ADDON_TAG_JAEGER` and `SMM_ADDON_TAG_KIALI`, the tags smm's own charts of those add-ons
//! install.
//!
//! It compacts Istio's Grafana dashboards (fetch.sh copies them out of the module's
//! `manifests/addons/dashboards`) into `$OUT_DIR/grafana-dashboards/`, one JSON line each, which
//! the grafana chart embeds: the same dashboards in about 60% of the bytes, in the ConfigMaps and in
//! the helm release record that carries them.
//!
//! It also writes Istio's CRDs (the base chart's `files/crd-all.gen.yaml`) to
//! `$OUT_DIR/istio-crds.json` as one JSON array: smm applies them itself, and reading them as JSON
//! at run time costs a fraction of parsing the YAML. The Gateway API's standard channel CRDs
//! (fetch.sh copies them into `gateway-api/`) go the same way, to `$OUT_DIR/gateway-api-crds.json`.

use std::path::Path;

const VERSIONS: &str = "scripts/istio/versions.env";
/// The charts fetch.sh fetches, one `name path-in-module` line each.
const CHART_LIST: &str = "scripts/istio/charts.txt";
const UPSTREAM: &str = ".upstream/istio";
/// Istio's CRDs in the base chart, and the JSON build.rs makes of them in `$OUT_DIR`.
const CRD_FILE: &str = "files/crd-all.gen.yaml";
const CRDS_JSON: &str = "istio-crds.json";
/// The Gateway API's CRDs as fetch.sh copied them, and their JSON in `$OUT_DIR`.
const GATEWAY_API: &str = "gateway-api";
const GATEWAY_API_JSON: &str = "gateway-api-crds.json";
/// Istio's dashboards as fetch.sh copied them, and where build.rs writes them compacted.
const DASHBOARDS: &str = "dashboards";
const DASHBOARDS_OUT: &str = "grafana-dashboards";

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&root);
    let stamp = root.join(UPSTREAM).join("stamp");
    // fetch.sh replaces the whole directory and writes the stamp last, so the stamp changing is
    // the charts changing. include_dir does not tell cargo which files it read.
    println!("cargo::rerun-if-changed={VERSIONS}");
    println!("cargo::rerun-if-changed={CHART_LIST}");
    println!("cargo::rerun-if-changed={}", stamp.display());
    match check(root, &stamp) {
        Ok(version) => {
            let charts = root.join(UPSTREAM).join("charts");
            println!("cargo::rustc-env=SMM_ISTIO_CHARTS={}", charts.display());
            let version = version.strip_prefix('v').unwrap_or(&version);
            println!("cargo::rustc-env=SMM_ISTIO_CHART_VERSION={version}");
            for (addon, image) in ADDON_IMAGES {
                match addon_tag(root, addon, image) {
                    Ok(tag) => println!(
                        "cargo::rustc-env=SMM_ADDON_TAG_{}={tag}",
                        addon.to_uppercase()
                    ),
                    Err(message) => println!("cargo::error={message}"),
                }
            }
            match min_kubernetes(root) {
                Ok(minor) => println!("cargo::rustc-env=SMM_ISTIO_MIN_KUBERNETES_MINOR={minor}"),
                Err(message) => println!("cargo::error={message}"),
            }
            let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
            let istio_crds = [charts.join("base").join(CRD_FILE)];
            if let Err(message) = crds_to_json(&istio_crds, &Path::new(&out).join(CRDS_JSON)) {
                println!("cargo::error={message}");
            }
            let gateway_api = yaml_files(&root.join(UPSTREAM).join(GATEWAY_API))
                .and_then(|files| crds_to_json(&files, &Path::new(&out).join(GATEWAY_API_JSON)));
            if let Err(message) = gateway_api {
                println!("cargo::error={message}");
            }
            let dashboards = root.join(UPSTREAM).join(DASHBOARDS);
            if let Err(message) =
                compact_dashboards(&dashboards, &Path::new(&out).join(DASHBOARDS_OUT))
            {
                println!("cargo::error={message}");
            }
        }
        Err(message) => {
            println!("cargo::error={message}");
        }
    }
}

/// The add-ons whose image tag smm takes from Istio's samples: the sample's file name and the
/// image (without registry and tag) of its main container.
const ADDON_IMAGES: [(&str, &str); 4] = [
    ("prometheus", "prom/prometheus"),
    ("grafana", "grafana/grafana"),
    ("jaeger", "jaegertracing/jaeger"),
    ("kiali", "kiali/kiali"),
];

/// The tag of `image` in Istio's sample add-on `addon` (a line `image: "<registry>/<image>:<tag>"`,
/// or `- image: ...` where the container list starts with it, as Kiali's does).
fn addon_tag(root: &Path, addon: &str, image: &str) -> Result<String, String> {
    let path = root
        .join(UPSTREAM)
        .join("addons")
        .join(format!("{addon}.yaml"));
    let text = std::fs::read_to_string(&path)
        .map_err(|_| format!("{} is missing: run scripts/istio/fetch.sh", path.display()))?;
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            line.strip_prefix("- ")
                .unwrap_or(line)
                .strip_prefix("image:")
        })
        .map(|value| value.trim().trim_matches('"'))
        .find_map(|reference| {
            let (name, tag) = reference.rsplit_once(':')?;
            (name == image || name.ends_with(&format!("/{image}"))).then(|| tag.to_owned())
        })
        .ok_or_else(|| format!("{} names no {image} image", path.display()))
}

/// The oldest Kubernetes minor version Istio supports, as fetch.sh wrote it.
fn min_kubernetes(root: &Path) -> Result<u32, String> {
    let path = root.join(UPSTREAM).join("min-kubernetes");
    let text = std::fs::read_to_string(&path)
        .map_err(|_| format!("{} is missing: run scripts/istio/fetch.sh", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{} holds {:?}, not a number", path.display(), text.trim()))
}

/// The pinned module version when the fetched charts match it; otherwise the one-line reason.
fn check(root: &Path, stamp: &Path) -> Result<String, String> {
    let versions = std::fs::read_to_string(root.join(VERSIONS))
        .map_err(|error| format!("cannot read {VERSIONS}: {error}"))?;
    let pinned = value_of(&versions, "ISTIO_MODULE_VERSION")
        .ok_or_else(|| format!("{VERSIONS} sets no ISTIO_MODULE_VERSION"))?;
    let missing =
        || format!("Istio's charts are missing from {UPSTREAM}: run scripts/istio/fetch.sh");
    let stamp = std::fs::read_to_string(stamp).map_err(|_| missing())?;
    let fetched = stamp
        .lines()
        .find_map(|line| line.strip_prefix("version "))
        .ok_or_else(missing)?;
    if fetched != pinned {
        return Err(format!(
            "{UPSTREAM} holds istio.io/istio {fetched}, {VERSIONS} pins {pinned}: run scripts/istio/fetch.sh"
        ));
    }
    let charts = std::fs::read_to_string(root.join(CHART_LIST))
        .map_err(|error| format!("cannot read {CHART_LIST}: {error}"))?;
    if chart_names(&charts).any(|chart| {
        !root
            .join(UPSTREAM)
            .join("charts")
            .join(chart)
            .join("Chart.yaml")
            .is_file()
    }) {
        return Err(missing());
    }
    Ok(pinned.to_owned())
}

/// CRD files, as one JSON array of their non-empty documents, in the order given.
fn crds_to_json(files: &[std::path::PathBuf], out: &Path) -> Result<(), String> {
    use serde::Deserialize;
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|error| format!("cannot read {}: {error}", file.display()))?;
        for document in serde_yaml_ng::Deserializer::from_str(&text)
            .map(Option::<serde_json::Value>::deserialize)
            .filter_map(Result::transpose)
        {
            documents.push(
                document.map_err(|error| format!("{}: invalid YAML: {error}", file.display()))?,
            );
        }
    }
    let json = serde_json::to_string(&documents).expect("JSON values serialize");
    std::fs::write(out, json).map_err(|error| format!("cannot write {}: {error}", out.display()))
}

/// The `*.yaml` files of `dir`, sorted by name (so the embedded order does not depend on the
/// file system's).
fn yaml_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let missing = || format!("{} is missing: run scripts/istio/fetch.sh", dir.display());
    let mut files = std::fs::read_dir(dir)
        .map_err(|_| missing())?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("cannot list {}: {error}", dir.display()))?;
    files.retain(|path| {
        path.extension()
            .is_some_and(|extension| extension == "yaml")
    });
    files.sort();
    if files.is_empty() {
        return Err(missing());
    }
    Ok(files)
}

/// Every `*.json` of `from`, parsed (so a broken file stops the build) and written to `to` as
/// one line. Grafana reads the keys, not their order, so the order serde_json writes is fine.
fn compact_dashboards(from: &Path, to: &Path) -> Result<(), String> {
    let missing = || format!("{} is missing: run scripts/istio/fetch.sh", from.display());
    let entries = std::fs::read_dir(from).map_err(|_| missing())?;
    // A stale file of an earlier build must not survive into the chart.
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to)
        .map_err(|error| format!("cannot create {}: {error}", to.display()))?;
    let mut count = 0;
    for entry in entries {
        let path = entry
            .map_err(|error| format!("cannot list {}: {error}", from.display()))?
            .path();
        if path.extension().is_none_or(|extension| extension != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let dashboard: serde_json::Value = serde_json::from_str(&text)
            .map_err(|error| format!("{}: invalid JSON: {error}", path.display()))?;
        let out = to.join(path.file_name().expect("a listed file has a name"));
        std::fs::write(&out, dashboard.to_string())
            .map_err(|error| format!("cannot write {}: {error}", out.display()))?;
        count += 1;
    }
    if count == 0 {
        return Err(missing());
    }
    Ok(())
}

/// The chart names of the chart list: each line's first word, skipping comments and blank lines.
fn chart_names(list: &str) -> impl Iterator<Item = &str> {
    list.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_whitespace().next())
}

/// The value of `KEY=value` in a shell variables file.
fn value_of<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}
