//! `tracing`: Jaeger 2, receiving the proxies' spans. When it is enabled, istiod's managed values
//! turn tracing on in the mesh configuration and point proxies at it (see `istiod.rs`).

use include_dir::{Dir, include_dir};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::{apps::v1 as apps, core::v1 as core};

use crate::mesh::catalog::{ChartKind, Component, DefaultNamespace};

static CHART: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/charts/tracing");

/// What the tracing chart renders: Jaeger, its configuration, Services and account, and a
/// disruption budget with more than one replica.
const CHART_KINDS: &[ChartKind] = &[
    ChartKind::of::<core::ConfigMap>(),
    ChartKind::of::<core::Service>(),
    ChartKind::of::<core::ServiceAccount>(),
    ChartKind::of::<apps::Deployment>(),
    ChartKind::of::<PodDisruptionBudget>(),
];

pub fn component() -> Component {
    Component {
        name: "tracing",
        release_name: "tracing",
        default_namespace: DefaultNamespace::Mesh,
        enabled_by_default: false,
        enabled_in_profile: None,
        depends_on: &[],
        chart: super::addon_chart("tracing", &CHART, env!("SMM_ADDON_TAG_JAEGER")),
        values_layer: values_layer!("tracing"),
        chart_kinds: CHART_KINDS,
        native_objects: |_| Vec::new(),
        revisioned: false,
        plug_in_ca: false,
        network_gateway: false,
        managed_values: super::registry_only,
    }
}
