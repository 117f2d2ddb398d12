//! Helm charts embedded in the smm binary: their metadata, default values and digest, and
//! writing them (and values files) to private temporary directories for helm to read.

use std::borrow::Cow;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::Utf8Error;

use include_dir::{Dir, DirEntry};
use serde::Deserialize;
use serde_json::{Map, Value};
use tempfile::TempDir;

use crate::values::digest::format_digest;
use crate::values::{ValuesError, parse_yaml_values};
use sha2::{Digest, Sha256};

/// The chart's metadata file.
const CHART_FILE: &str = "Chart.yaml";
/// The chart's default values file.
const VALUES_FILE: &str = "values.yaml";

/// Why an embedded chart could not be read or written out.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("chart {chart}: {file} is missing")]
    Missing { chart: String, file: &'static str },
    #[error("chart {chart}: {file} is not UTF-8: {source}")]
    NotUtf8 {
        chart: String,
        file: &'static str,
        #[source]
        source: Utf8Error,
    },
    #[error("chart {chart}: {file} is not valid chart metadata: {source}")]
    Metadata {
        chart: String,
        file: &'static str,
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// The chart's default values are invalid; the values error names the file.
    #[error("chart {chart}: {source}")]
    Values {
        chart: String,
        #[source]
        source: ValuesError,
    },
    #[error("chart {chart}: cannot create a temporary directory to write it to: {source}")]
    TempDir {
        chart: String,
        #[source]
        source: io::Error,
    },
    #[error("chart {chart}: cannot write {}: {source}", path.display())]
    Materialize {
        chart: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("chart {chart}: {path} is both a file of the chart and one added at build time")]
    Overlaid { chart: String, path: String },
    #[error("cannot write values file {}: {source}", path.display())]
    WriteValues {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What `Chart.yaml` says about a chart, as far as smm needs it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartMetadata {
    pub name: String,
    pub version: String,
    pub app_version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A Helm chart embedded in the binary, with the name error messages call it by.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedChart {
    name: &'static str,
    dir: &'static Dir<'static>,
    metadata: Option<MetadataOverride>,
    overlay: Option<Overlay>,
}

/// Files a chart gets at build time beside those of its source directory, below one directory
/// of the chart: what is derived from upstream and never committed (Istio's Grafana dashboards,
/// compacted by build.rs, in the grafana chart). helm sees them as chart files, and they count in
/// the chart's digest like any other.
#[derive(Clone, Copy, Debug)]
pub struct Overlay {
    /// The directory of the chart the files go to, `/`-separated (`dashboards`).
    pub at: &'static str,
    pub dir: &'static Dir<'static>,
}

/// What smm says about a chart in place of its own `Chart.yaml`, for charts embedded from
/// source whose metadata is a placeholder that a release process would have filled in (Istio's
/// charts say `1.0.0`), and for ours whose image tag comes from Istio's module (the appVersion
/// their images default to). helm sees it too: the chart is written out with it, and it counts
/// in the chart's digest. A field left `None` keeps what `Chart.yaml` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MetadataOverride {
    pub version: Option<&'static str>,
    pub app_version: Option<&'static str>,
    pub description: Option<&'static str>,
}

/// An embedded chart as the caches of [`ReadOnce`] tell charts apart: its directory in the
/// binary and the metadata smm gives it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ChartKey {
    dir: usize,
    metadata: Option<MetadataOverride>,
    overlay: Option<(&'static str, usize)>,
}

/// What is read from embedded charts, once per chart for the life of the process: their files
/// are in the binary and never change, and every run (the check before the lease, the run
/// itself, each of the operator's reconciles) resolves every chart again. Errors are not kept:
/// they are bugs of the build, reported each time.
struct ReadOnce<T> {
    read: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<ChartKey, T>>>,
}

impl<T: Clone> ReadOnce<T> {
    const fn new() -> Self {
        Self {
            read: std::sync::LazyLock::new(Default::default),
        }
    }

    fn get(
        &self,
        chart: &EmbeddedChart,
        read: impl FnOnce() -> Result<T, ChartError>,
    ) -> Result<T, ChartError> {
        let key = chart.key();
        if let Some(known) = self.read.lock().expect("chart cache lock").get(&key) {
            return Ok(known.clone());
        }
        let value = read()?;
        self.read
            .lock()
            .expect("chart cache lock")
            .insert(key, value.clone());
        Ok(value)
    }
}

/// A chart written out to a private temporary directory, removed when this is dropped.
#[derive(Debug)]
pub struct MaterializedChart {
    dir: TempDir,
}

/// A file of a chart, with its `/`-separated path relative to the chart's root.
pub(crate) struct ChartFile<'a> {
    pub(crate) relative_path: String,
    pub(crate) contents: Cow<'a, [u8]>,
}

impl EmbeddedChart {
    /// The chart embedded as `dir`, called `name` in error messages.
    pub const fn new(name: &'static str, dir: &'static Dir<'static>) -> Self {
        Self {
            name,
            dir,
            metadata: None,
            overlay: None,
        }
    }

    /// The same chart with `overlay`'s files added.
    pub const fn with_overlay(self, overlay: Overlay) -> Self {
        Self {
            overlay: Some(overlay),
            ..self
        }
    }

    /// The same chart with `metadata` in place of what its `Chart.yaml` says.
    pub const fn with_metadata(self, metadata: MetadataOverride) -> Self {
        Self {
            metadata: Some(metadata),
            ..self
        }
    }

    /// The name error messages call the chart by.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The chart's `Chart.yaml`, with the override if there is one.
    pub fn metadata(&self) -> Result<ChartMetadata, ChartError> {
        static READ: ReadOnce<ChartMetadata> = ReadOnce::new();
        READ.get(self, || {
            serde_yaml_ng::from_slice(&self.chart_file()?)
                .map_err(|source| self.bad_metadata(source))
        })
    }

    /// Identifies the chart in the caches of [`ReadOnce`].
    fn key(&self) -> ChartKey {
        ChartKey {
            dir: std::ptr::from_ref(self.dir) as usize,
            metadata: self.metadata,
            overlay: self
                .overlay
                .map(|overlay| (overlay.at, std::ptr::from_ref(overlay.dir) as usize)),
        }
    }

    /// The text of `Chart.yaml` as helm gets it: the embedded file, or with the override's
    /// fields set (other fields and their order kept).
    fn chart_file(&self) -> Result<Cow<'static, [u8]>, ChartError> {
        let text = self
            .text_file(CHART_FILE)?
            .ok_or_else(|| ChartError::Missing {
                chart: self.name.to_owned(),
                file: CHART_FILE,
            })?;
        let Some(metadata) = self.metadata else {
            return Ok(Cow::Borrowed(text.as_bytes()));
        };
        let mut fields: serde_yaml_ng::Mapping =
            serde_yaml_ng::from_str(text).map_err(|source| self.bad_metadata(source))?;
        for (key, value) in [
            ("version", metadata.version),
            ("appVersion", metadata.app_version),
            ("description", metadata.description),
        ] {
            if let Some(value) = value {
                fields.insert(key.into(), value.into());
            }
        }
        let text = serde_yaml_ng::to_string(&fields).map_err(|source| self.bad_metadata(source))?;
        Ok(Cow::Owned(text.into_bytes()))
    }

    fn bad_metadata(&self, source: serde_yaml_ng::Error) -> ChartError {
        ChartError::Metadata {
            chart: self.name.to_owned(),
            file: CHART_FILE,
            source,
        }
    }

    /// Every file of the chart as helm gets it (see [`chart_files`]), `Chart.yaml` overridden,
    /// the overlay's files added, sorted by path.
    pub(crate) fn files(&self) -> Result<Vec<ChartFile<'static>>, ChartError> {
        let mut files = chart_files(self.dir);
        if self.metadata.is_some() {
            let chart_file = self.chart_file()?;
            if let Some(file) = files.iter_mut().find(|f| f.relative_path == CHART_FILE) {
                file.contents = chart_file;
            }
        }
        if let Some(overlay) = self.overlay {
            for mut file in chart_files(overlay.dir) {
                file.relative_path = format!("{}/{}", overlay.at, file.relative_path);
                if files.iter().any(|f| f.relative_path == file.relative_path) {
                    return Err(ChartError::Overlaid {
                        chart: self.name.to_owned(),
                        path: file.relative_path,
                    });
                }
                files.push(file);
            }
            files.sort_unstable_by(|a, b| a.relative_path.cmp(&b.relative_path));
        }
        Ok(files)
    }

    /// The chart's default values from its `values.yaml`; an empty object if it has none.
    pub fn default_values(&self) -> Result<Value, ChartError> {
        static READ: ReadOnce<Value> = ReadOnce::new();
        READ.get(self, || match self.text_file(VALUES_FILE)? {
            None => Ok(Value::Object(Map::new())),
            Some(text) => {
                parse_yaml_values(VALUES_FILE, text).map_err(|source| ChartError::Values {
                    chart: self.name.to_owned(),
                    source,
                })
            }
        })
    }

    /// The digest of all the chart's files as helm gets them (see [`chart_digest`]).
    pub fn digest(&self) -> Result<String, ChartError> {
        static READ: ReadOnce<String> = ReadOnce::new();
        READ.get(self, || Ok(files_digest(&self.files()?)))
    }

    /// Writes the chart's files into a fresh temporary directory only the current user can
    /// access (mode 0700, files 0600), for helm to install from.
    pub fn materialize(&self) -> Result<MaterializedChart, ChartError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("smm-chart-{}-", self.name))
            .permissions(Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|source| ChartError::TempDir {
                chart: self.name.to_owned(),
                source,
            })?;
        for file in self.files()? {
            let path = dir.path().join(&file.relative_path);
            write_private_file(&path, &file.contents).map_err(|source| {
                ChartError::Materialize {
                    chart: self.name.to_owned(),
                    path,
                    source,
                }
            })?;
        }
        Ok(MaterializedChart { dir })
    }

    /// The chart and its values written out for one helm run: the chart as [`Self::materialize`]
    /// does, the values in a private directory of their own (mode 0700, file 0600).
    pub fn prepare(&self, values: &Value) -> Result<PreparedChart, ChartError> {
        let chart = self.materialize()?;
        let values_dir = tempfile::Builder::new()
            .prefix("smm-values-")
            .permissions(Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|source| ChartError::TempDir {
                chart: self.name.to_owned(),
                source,
            })?;
        let values_file = write_values_file(values_dir.path(), values)?;
        Ok(PreparedChart {
            chart,
            values_file,
            _values_dir: values_dir,
        })
    }

    /// The text of the file `name` at the chart's root, if there is one.
    fn text_file(&self, name: &'static str) -> Result<Option<&'static str>, ChartError> {
        let Some(file) = self.dir.get_file(self.dir.path().join(name)) else {
            return Ok(None);
        };
        std::str::from_utf8(file.contents())
            .map(Some)
            .map_err(|source| ChartError::NotUtf8 {
                chart: self.name.to_owned(),
                file: name,
                source,
            })
    }
}

/// A materialized chart with its values file; both are removed on drop.
#[derive(Debug)]
pub struct PreparedChart {
    chart: MaterializedChart,
    values_file: PathBuf,
    _values_dir: tempfile::TempDir,
}

impl PreparedChart {
    pub fn chart_path(&self) -> &Path {
        self.chart.path()
    }

    pub fn values_file(&self) -> &Path {
        &self.values_file
    }
}

impl MaterializedChart {
    /// The chart's root directory, to pass to helm.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Writes `values` to `values.yaml` in `dir`, returning its path.
///
/// The file is written as JSON, which is valid YAML, and created with mode 0600 in the same
/// step, so values (which may hold secrets) are never readable by others, even briefly. It must
/// not exist yet: an existing file's mode could not be vouched for.
pub fn write_values_file(dir: &Path, values: &Value) -> Result<PathBuf, ChartError> {
    let path = dir.join(VALUES_FILE);
    match write_private_file(&path, format!("{values:#}\n").as_bytes()) {
        Ok(()) => Ok(path),
        Err(source) => Err(ChartError::WriteValues { path, source }),
    }
}

/// The digest of every file below `chart`, recursively.
///
/// Files are taken in order of their `/`-separated path relative to `chart`, so the digest does
/// not depend on where the chart is embedded. Each is framed as the path's length (u64,
/// big-endian), the path, the content's length (u64, big-endian) and the content, so moving
/// bytes between a name and a content changes the digest. Directories themselves do not count.
pub fn chart_digest(chart: &Dir<'_>) -> String {
    files_digest(&chart_files(chart))
}

fn files_digest(files: &[ChartFile<'_>]) -> String {
    let mut hasher = Sha256::new();
    for file in files {
        for part in [file.relative_path.as_bytes(), &file.contents] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
    }
    format_digest(hasher.finalize().as_slice())
}

/// Every file below `dir`, recursively, sorted by path relative to `dir`.
///
/// include_dir names every entry by its path from the root of the embedding, so a chart
/// embedded as `charts/istiod` has `charts/istiod/Chart.yaml`; that prefix is removed.
pub(crate) fn chart_files<'a>(dir: &Dir<'a>) -> Vec<ChartFile<'a>> {
    let mut files = Vec::new();
    collect_files(dir, dir.path(), &mut files);
    files.sort_unstable_by(|a, b| a.relative_path.cmp(&b.relative_path));
    files
}

fn collect_files<'a>(dir: &Dir<'a>, root: &Path, files: &mut Vec<ChartFile<'a>>) {
    for entry in dir.entries() {
        match entry {
            DirEntry::Dir(subdir) => collect_files(subdir, root, files),
            DirEntry::File(file) => {
                // include_dir builds every path from a `&str`, so it is always valid UTF-8 and
                // nested under the root; joining the components makes the separator `/`.
                let relative = file.path().strip_prefix(root).unwrap_or(file.path());
                let relative_path = relative
                    .iter()
                    .map(|component| component.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                files.push(ChartFile {
                    relative_path,
                    contents: Cow::Borrowed(file.contents()),
                });
            }
        }
    }
}

/// Creates the file `path` with mode 0600 and writes `contents`, creating missing parent
/// directories with mode 0700. Fails if the file exists.
fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(contents)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;

    use include_dir::{File, include_dir};
    use serde_json::json;

    use super::*;

    static TINY_DIR: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/tests/fixtures/charts/tiny");
    const TINY: EmbeddedChart = EmbeddedChart::new("tiny", &TINY_DIR);
    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/charts/tiny");

    /// Every file below `root` on disk, by `/`-separated relative path.
    fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, files);
                } else {
                    let relative = path
                        .strip_prefix(root)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_owned();
                    files.insert(relative, fs::read(&path).unwrap());
                }
            }
        }
        let mut files = BTreeMap::new();
        walk(root, root, &mut files);
        files
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn metadata_of_fixture() {
        assert_eq!(
            TINY.metadata().unwrap(),
            ChartMetadata {
                name: "tiny".to_owned(),
                version: "0.1.0".to_owned(),
                app_version: None,
                description: Some(
                    "A minimal chart for smm's end-to-end tests of the helm runner.".to_owned()
                ),
            }
        );
    }

    #[test]
    fn metadata_reads_app_version_even_unquoted() {
        // Charts often write `appVersion: 1.20`, which YAML reads as a number.
        static DIR: Dir<'static> = Dir::new(
            "",
            &[DirEntry::File(File::new(
                "Chart.yaml",
                b"apiVersion: v2\nname: x\nversion: 1.2.3\nappVersion: 1.20\n",
            ))],
        );
        let metadata = EmbeddedChart::new("x", &DIR).metadata().unwrap();
        assert_eq!(metadata.app_version.as_deref(), Some("1.20"));
    }

    #[test]
    fn metadata_of_a_nested_embedding() {
        static DIR: Dir<'static> = Dir::new(
            "charts/istiod",
            &[DirEntry::File(File::new(
                "charts/istiod/Chart.yaml",
                b"name: istiod\nversion: 1.0.0\nappVersion: \"1.24.0\"\n",
            ))],
        );
        let chart = EmbeddedChart::new("istiod", &DIR);
        assert_eq!(
            chart.metadata().unwrap(),
            ChartMetadata {
                name: "istiod".to_owned(),
                version: "1.0.0".to_owned(),
                app_version: Some("1.24.0".to_owned()),
                description: None,
            }
        );
        assert_eq!(chart.default_values().unwrap(), json!({}));
    }

    #[test]
    fn a_metadata_override_is_what_smm_reports_writes_out_and_digests() {
        const OVERRIDE: MetadataOverride = MetadataOverride {
            version: Some("0.0.0-20260101000000-abcdef"),
            app_version: Some("1.2.3"),
            description: Some("Ours."),
        };
        let chart = TINY.with_metadata(OVERRIDE);
        let metadata = chart.metadata().unwrap();
        assert_eq!(metadata.name, "tiny");
        assert_eq!(Some(metadata.version.as_str()), OVERRIDE.version);
        assert_eq!(metadata.app_version.as_deref(), Some("1.2.3"));
        assert_eq!(metadata.description.as_deref(), Some("Ours."));
        let written = chart.materialize().unwrap();
        let text = fs::read_to_string(written.path().join("Chart.yaml")).unwrap();
        let reread: ChartMetadata = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(reread, metadata);
        // Every other file is untouched.
        let mut on_disk = read_tree(written.path());
        let mut fixture = read_tree(Path::new(FIXTURE));
        on_disk.remove("Chart.yaml");
        fixture.remove("Chart.yaml");
        assert_eq!(on_disk, fixture);
        assert_ne!(chart.digest().unwrap(), TINY.digest().unwrap());
        // Only the appVersion: the rest as the chart says.
        let tagged = TINY.with_metadata(MetadataOverride {
            app_version: Some("9.9.9"),
            ..MetadataOverride::default()
        });
        let metadata = tagged.metadata().unwrap();
        assert_eq!(metadata.app_version.as_deref(), Some("9.9.9"));
        assert_eq!(metadata.version, TINY.metadata().unwrap().version);
        assert_eq!(metadata.description, TINY.metadata().unwrap().description);
    }

    #[test]
    fn an_overlay_is_written_out_and_digested_below_its_directory() {
        static EXTRA: Dir<'static> = Dir::new(
            "out/extra",
            &[
                DirEntry::File(File::new("out/extra/a.json", b"{}")),
                DirEntry::Dir(Dir::new(
                    "out/extra/sub",
                    &[DirEntry::File(File::new("out/extra/sub/b.json", b"[]"))],
                )),
            ],
        );
        let overlay = |at| Overlay { at, dir: &EXTRA };
        let chart = TINY.with_overlay(overlay("files"));
        let paths: Vec<String> = chart
            .files()
            .unwrap()
            .into_iter()
            .map(|file| file.relative_path)
            .collect();
        assert_eq!(
            paths,
            [
                "Chart.yaml",
                "files/a.json",
                "files/sub/b.json",
                "templates/configmap.yaml",
                "templates/hook.yaml",
                "templates/serviceaccount.yaml",
                "values.yaml"
            ]
        );
        let written = chart.materialize().unwrap();
        let mut on_disk = read_tree(written.path());
        assert_eq!(on_disk.remove("files/a.json").unwrap(), b"{}");
        assert_eq!(on_disk.remove("files/sub/b.json").unwrap(), b"[]");
        assert_eq!(on_disk, read_tree(Path::new(FIXTURE)));
        // The overlay counts in the digest, and so does where it goes; the chart's own
        // metadata and values are untouched.
        let digests =
            [TINY, chart, TINY.with_overlay(overlay("other"))].map(|c| c.digest().unwrap());
        assert_ne!(digests[0], digests[1]);
        assert_ne!(digests[1], digests[2]);
        assert_eq!(chart.metadata().unwrap(), TINY.metadata().unwrap());
        assert_eq!(
            chart.default_values().unwrap(),
            TINY.default_values().unwrap()
        );
    }

    #[test]
    fn an_overlay_may_not_replace_a_file_of_the_chart() {
        static TEMPLATE: Dir<'static> = Dir::new(
            "",
            &[DirEntry::File(File::new("configmap.yaml", b"kind: Secret"))],
        );
        let chart = TINY.with_overlay(Overlay {
            at: "templates",
            dir: &TEMPLATE,
        });
        assert_eq!(
            chart.files().err().map(|err| err.to_string()).as_deref(),
            Some(
                "chart tiny: templates/configmap.yaml is both a file of the chart and one added at build time"
            )
        );
    }

    #[test]
    fn metadata_errors_name_chart_and_file() {
        static NONE: Dir<'static> = Dir::new("", &[]);
        let err = EmbeddedChart::new("empty", &NONE).metadata().unwrap_err();
        assert_eq!(err.to_string(), "chart empty: Chart.yaml is missing");

        static NO_VERSION: Dir<'static> =
            Dir::new("", &[DirEntry::File(File::new("Chart.yaml", b"name: x\n"))]);
        let err = EmbeddedChart::new("bad", &NO_VERSION)
            .metadata()
            .unwrap_err();
        assert!(matches!(err, ChartError::Metadata { .. }));
        let message = err.to_string();
        assert!(
            message.starts_with("chart bad: Chart.yaml is not valid chart metadata: "),
            "{message}"
        );
        assert!(message.contains("version"), "{message}");

        static BINARY: Dir<'static> = Dir::new(
            "",
            &[DirEntry::File(File::new("Chart.yaml", b"name: \xff\n"))],
        );
        let err = EmbeddedChart::new("bin", &BINARY).metadata().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("chart bin: Chart.yaml is not UTF-8: "),
            "{err}"
        );
    }

    #[test]
    fn default_values_of_fixture() {
        assert_eq!(
            TINY.default_values().unwrap(),
            json!({"greeting": "hello", "configMapName": "", "hook": "", "hookNode": ""})
        );
    }

    #[test]
    fn default_values_without_values_file_are_empty() {
        static DIR: Dir<'static> = Dir::new(
            "",
            &[DirEntry::File(File::new(
                "Chart.yaml",
                b"name: x\nversion: 1.0.0\n",
            ))],
        );
        assert_eq!(
            EmbeddedChart::new("x", &DIR).default_values().unwrap(),
            json!({})
        );
    }

    #[test]
    fn default_values_error_names_chart_and_file() {
        static DIR: Dir<'static> = Dir::new(
            "",
            &[DirEntry::File(File::new(
                "values.yaml",
                b"- not\n- a map\n",
            ))],
        );
        let err = EmbeddedChart::new("x", &DIR).default_values().unwrap_err();
        assert!(matches!(err, ChartError::Values { .. }));
        assert_eq!(
            err.to_string(),
            "chart x: values.yaml: the top level must be an object (a map of values), found array"
        );
    }

    #[test]
    fn digest_ignores_embedding_location() {
        // The fixture's own files, as they would appear embedded under `charts/tiny`.
        static NESTED: Dir<'static> = Dir::new(
            "charts/tiny",
            &[
                DirEntry::File(File::new(
                    "charts/tiny/Chart.yaml",
                    include_bytes!("../../tests/fixtures/charts/tiny/Chart.yaml"),
                )),
                DirEntry::File(File::new(
                    "charts/tiny/values.yaml",
                    include_bytes!("../../tests/fixtures/charts/tiny/values.yaml"),
                )),
                DirEntry::Dir(Dir::new(
                    "charts/tiny/templates",
                    &[
                        DirEntry::File(File::new(
                            "charts/tiny/templates/configmap.yaml",
                            include_bytes!(
                                "../../tests/fixtures/charts/tiny/templates/configmap.yaml"
                            ),
                        )),
                        DirEntry::File(File::new(
                            "charts/tiny/templates/hook.yaml",
                            include_bytes!("../../tests/fixtures/charts/tiny/templates/hook.yaml"),
                        )),
                        DirEntry::File(File::new(
                            "charts/tiny/templates/serviceaccount.yaml",
                            include_bytes!(
                                "../../tests/fixtures/charts/tiny/templates/serviceaccount.yaml"
                            ),
                        )),
                    ],
                )),
            ],
        );
        assert_eq!(TINY.digest().unwrap(), chart_digest(&NESTED));
        assert!(TINY.digest().unwrap().starts_with("sha256:"));
    }

    #[test]
    fn chart_files_are_relative_and_sorted() {
        let paths: Vec<String> = chart_files(&TINY_DIR)
            .into_iter()
            .map(|file| file.relative_path)
            .collect();
        assert_eq!(
            paths,
            [
                "Chart.yaml",
                "templates/configmap.yaml",
                "templates/hook.yaml",
                "templates/serviceaccount.yaml",
                "values.yaml"
            ]
        );
    }

    #[test]
    fn materialize_reproduces_every_file_privately() {
        let chart = TINY.materialize().unwrap();
        let root = chart.path();
        assert_eq!(read_tree(root), read_tree(Path::new(FIXTURE)));
        assert_eq!(mode(root), 0o700);
        assert_eq!(mode(&root.join("templates")), 0o700);
        for relative in read_tree(root).keys() {
            assert_eq!(mode(&root.join(relative)), 0o600, "{relative}");
        }
    }

    #[test]
    fn materialize_uses_a_fresh_directory_removed_on_drop() {
        let first = TINY.materialize().unwrap();
        let second = TINY.materialize().unwrap();
        assert_ne!(first.path(), second.path());
        let path = first.path().to_owned();
        assert!(path.join("Chart.yaml").is_file());
        drop(first);
        assert!(!path.exists());
        assert!(second.path().join("Chart.yaml").is_file());
    }

    #[test]
    fn write_values_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let values = json!({"global": {"token": "secret", "list": [1, "a", null]}, "n": 1.5});
        let path = write_values_file(dir.path(), &values).unwrap();
        assert_eq!(path, dir.path().join("values.yaml"));
        assert_eq!(mode(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(parse_yaml_values("values.yaml", &text).unwrap(), values);
    }

    #[test]
    fn write_values_file_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("values.yaml");
        fs::write(&path, "old").unwrap();
        let err = write_values_file(dir.path(), &json!({})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot write values file {}: ", path.display())),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
    }

    const CHART_YAML: &[u8] = b"name: t\n";
    const TEMPLATE: &[u8] = b"x";

    static AT_ROOT: Dir<'static> = Dir::new(
        "",
        &[
            DirEntry::File(File::new("Chart.yaml", CHART_YAML)),
            DirEntry::Dir(Dir::new(
                "templates",
                &[DirEntry::File(File::new("templates/a.yaml", TEMPLATE))],
            )),
        ],
    );

    // The same chart as a subdirectory of a larger embedding, listed in another order, with an
    // empty directory that must not count.
    static NESTED: Dir<'static> = Dir::new(
        "charts/t",
        &[
            DirEntry::Dir(Dir::new("charts/t/empty", &[])),
            DirEntry::Dir(Dir::new(
                "charts/t/templates",
                &[DirEntry::File(File::new(
                    "charts/t/templates/a.yaml",
                    TEMPLATE,
                ))],
            )),
            DirEntry::File(File::new("charts/t/Chart.yaml", CHART_YAML)),
        ],
    );

    #[test]
    fn chart_digest_known_vector() {
        // Pins the file framing and ordering across machines and releases, like
        // `values_digest_known_vector`; computed independently with Python's hashlib and
        // struct.pack(">Q", ...) framing.
        assert_eq!(
            chart_digest(&AT_ROOT),
            "sha256:58df99befb7acf767b007a8737678f14ad5871fa07248068869e6d0248f480b3"
        );
    }

    #[test]
    fn chart_digest_ignores_embedding_location_order_and_empty_dirs() {
        assert_eq!(chart_digest(&AT_ROOT), chart_digest(&NESTED));
    }

    #[test]
    fn chart_digest_changes_with_a_byte() {
        static CHANGED: Dir<'static> = Dir::new(
            "",
            &[
                DirEntry::File(File::new("Chart.yaml", b"name: u\n")),
                DirEntry::File(File::new("templates/a.yaml", TEMPLATE)),
            ],
        );
        assert_ne!(chart_digest(&AT_ROOT), chart_digest(&CHANGED));
    }

    #[test]
    fn chart_digest_changes_with_a_name() {
        static RENAMED: Dir<'static> = Dir::new(
            "",
            &[
                DirEntry::File(File::new("Chart.yaml", CHART_YAML)),
                DirEntry::File(File::new("templates/b.yaml", TEMPLATE)),
            ],
        );
        assert_ne!(chart_digest(&AT_ROOT), chart_digest(&RENAMED));
    }

    #[test]
    fn chart_digest_frames_names_and_contents() {
        static NAME_AB: Dir<'static> = Dir::new("", &[DirEntry::File(File::new("ab", b"c"))]);
        static NAME_A: Dir<'static> = Dir::new("", &[DirEntry::File(File::new("a", b"bc"))]);
        static SPLIT: Dir<'static> = Dir::new(
            "",
            &[
                DirEntry::File(File::new("a", b"b")),
                DirEntry::File(File::new("c", b"")),
            ],
        );
        static EMPTY: Dir<'static> = Dir::new("", &[]);
        let digests = [&NAME_AB, &NAME_A, &SPLIT, &EMPTY].map(chart_digest);
        for (i, a) in digests.iter().enumerate() {
            assert!(a.starts_with("sha256:") && a.len() == 71, "{a}");
            for b in &digests[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
