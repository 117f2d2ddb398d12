//! How large helm's record of a release will be, before helm writes it: helm stores each
//! revision as one Secret whose data is the base64 of the gzipped JSON of the release (the
//! chart's files, the values, the rendered manifest), and the API server refuses a Secret over
//! 1 MiB, so a release too large fails only once helm has done part of its work.

use std::io::Write as _;

use base64::Engine as _;
use serde_json::{Value, json};

use super::chart::{ChartError, EmbeddedChart};
use super::record::MAX_ENCODED_BYTES;

/// The size of a release's record as helm would store it, against the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordSize {
    /// Bytes of base64 in the Secret.
    pub encoded: usize,
    /// What the Secret can hold.
    pub limit: usize,
}

impl RecordSize {
    pub fn fits(&self) -> bool {
        self.encoded <= self.limit
    }
}

/// The size of the record of `chart` installed with `values` rendering to `manifest`. helm's
/// JSON holds each chart file's bytes as base64 (templates and other files alike), the chart's
/// default values and the release's values as objects, and the manifest as a string; the few
/// fields left out (metadata, timestamps) are a few hundred bytes. Compressed as helm does
/// (gzip, best compression).
pub fn estimate(
    chart: &EmbeddedChart,
    values: &Value,
    manifest: &str,
) -> Result<RecordSize, ChartError> {
    let base64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let files: Vec<Value> = chart
        .files()?
        .iter()
        .map(|file| json!({"name": file.relative_path, "data": base64(&file.contents)}))
        .collect();
    let release = json!({
        "chart": {"files": files, "values": chart.default_values()?},
        "config": values,
        "manifest": manifest,
    });
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let compressed = serde_json::to_writer(&mut gzip, &release)
        .map_err(std::io::Error::from)
        .and_then(|()| gzip.flush())
        .and_then(|()| gzip.finish())
        .expect("writing to memory cannot fail");
    Ok(RecordSize {
        encoded: compressed.len().div_ceil(3) * 4,
        limit: MAX_ENCODED_BYTES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use include_dir::{Dir, include_dir};

    static FIXTURE: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/tests/fixtures/charts/tiny");

    #[test]
    fn a_small_chart_fits_and_incompressible_values_past_a_mebibyte_do_not() {
        let chart = EmbeddedChart::new("tiny", &FIXTURE);
        let small = estimate(&chart, &json!({"replicas": 1}), "kind: ConfigMap\n").unwrap();
        assert!(small.fits(), "{small:?}");
        assert!(small.encoded > 0);
        // Noise as hex compresses to about half: 2.5 MiB of it is past the limit.
        let mut state = 0x2545_f491_u32;
        let noise: String = (0..5 * 512 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                char::from_digit(state & 0xf, 16).expect("a hex digit")
            })
            .collect();
        let large = estimate(&chart, &json!({"blob": noise}), "").unwrap();
        assert!(!large.fits(), "{large:?}");
        assert_eq!(large.limit, 1 << 20);
    }
}
