//! Istio's own charts, fetched by `scripts/istio/fetch.sh` into the git-ignored `.upstream/istio`
//! and embedded from there (`build.rs` checks the fetch and says where it is). Their
//! `Chart.yaml` carries placeholders that Istio's release tooling would fill in, so smm states
//! the metadata itself: the chart version names the exact module source, the app version is the
//! image tag smm installs by default.

use include_dir::{Dir, include_dir};

use crate::helm::chart::{EmbeddedChart, MetadataOverride};

/// Every chart of `scripts/istio/charts.txt`, each in the directory named after it.
static CHARTS: Dir<'static> = include_dir!("$SMM_ISTIO_CHARTS");

/// The embedded files of Istio's chart `dir_name` (its name in `scripts/istio/charts.txt`).
pub(super) fn upstream(dir_name: &str) -> &'static Dir<'static> {
    CHARTS
        .get_dir(dir_name)
        .unwrap_or_else(|| panic!("{dir_name} is not in scripts/istio/charts.txt"))
}

/// The pinned `istio.io/istio` module version without its `v`: a valid semver that names exactly
/// the source the charts come from.
const CHART_VERSION: &str = env!("SMM_ISTIO_CHART_VERSION");

/// The Istio release whose images smm installs unless `global.tag` is overridden: the newest
/// patch of the line the pinned charts belong to (1.31), since a patch release keeps its line's
/// values and templates, while another minor's istiod may not match these charts. The default
/// itself is set in `values/istiod.yaml` (so a user can override it); a test keeps the two equal.
pub const DEFAULT_TAG: &str = "1.31.4";

/// The failure policy base's and istiod's validating webhooks are rendered with. The charts
/// render `Ignore` on install (and nothing on upgrade) and leave it to istiod, which sets `Fail`
/// once its validation answers; rendering `Fail` makes `--dump-resources` (and whatever syncs
/// it, e.g. Argo CD) equal what runs instead of a permanent diff. Until istiod first answers,
/// Istio's config is then refused rather than let in unchecked, which smm never creates.
pub(super) const VALIDATION_FAILURE_POLICY: &str = "Fail";

/// One of Istio's charts, embedded as component `name`, described in smm's words.
pub(super) fn chart(
    name: &'static str,
    dir: &'static Dir<'static>,
    description: &'static str,
) -> EmbeddedChart {
    EmbeddedChart::new(name, dir).with_metadata(MetadataOverride {
        version: Some(CHART_VERSION),
        app_version: Some(DEFAULT_TAG),
        description: Some(description),
    })
}

/// The image hub of Istio's charts for images from `registry`: Istio's images are
/// `<hub>/pilot` and `<hub>/proxyv2`.
pub(super) fn hub(registry: &str) -> String {
    format!("{registry}/istio")
}
