//! `tracing`: Jaeger, receiving the proxies' spans. When it is enabled, istiod's managed values
//! turn tracing on in the mesh configuration and point proxies at it (see `istiod.rs`).

use include_dir::{Dir, include_dir};

use crate::helm::chart::EmbeddedChart;
use crate::mesh::catalog::{Component, DefaultNamespace};

static CHART: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/charts/tracing");

pub fn component() -> Component {
    Component {
        name: "tracing",
        release_name: "tracing",
        default_namespace: DefaultNamespace::Mesh,
        enabled_by_default: false,
        depends_on: &[],
        chart: EmbeddedChart::new("tracing", &CHART),
        values_layer: values_layer!("tracing"),
        native_objects: |_| Vec::new(),
        managed_values: super::registry_only,
    }
}
