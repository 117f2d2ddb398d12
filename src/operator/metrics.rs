//! The operator's Prometheus metrics, served as text at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{ControlPlane, Health};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControlPlaneLabels {
    pub control_plane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub control_plane: String,
    pub phase: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_duration: Histogram,
    helm_processes: Counter,
    components: Family<PhaseLabels, Gauge>,
    ready: Family<ControlPlaneLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("smm");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "ControlPlane reconciles by result (success, failure)",
            reconciles.clone(),
        );
        // 0.1 s to about 7 min: a no-op takes milliseconds, a first install minutes.
        let reconcile_duration = Histogram::new(exponential_buckets(0.1, 2.0, 13));
        registry.register(
            "reconcile_duration_seconds",
            "How long ControlPlane reconciles take",
            reconcile_duration.clone(),
        );
        let helm_processes = Counter::default();
        registry.register(
            "helm_processes",
            "helm processes spawned (a reconcile with nothing to do spawns none)",
            helm_processes.clone(),
        );
        let components = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "components",
            "Components of each ControlPlane by phase",
            components.clone(),
        );
        let ready = Family::<ControlPlaneLabels, Gauge>::default();
        registry.register(
            "controlplane_ready",
            "1 when the ControlPlane's Ready condition is true for its current spec, else 0",
            ready.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_duration,
            helm_processes,
            components,
            ready,
        }
    }
}

impl Metrics {
    pub fn record_reconcile(&self, success: bool, seconds: f64) {
        let result = if success { "success" } else { "failure" };
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
        self.reconcile_duration.observe(seconds);
    }

    /// Brings the counter up to helm's own count of spawned processes.
    pub fn record_helm_processes(&self, spawned_total: u64) {
        let counted = self.helm_processes.get();
        if spawned_total > counted {
            self.helm_processes.inc_by(spawned_total - counted);
        }
    }

    /// Replaces one ControlPlane's figures: whether it is Ready (by the rule `smm status` and
    /// the dashboard follow) and its components' counts per phase.
    pub fn record_control_plane(&self, name: &str, control_plane: &ControlPlane) {
        let status = control_plane.status.clone().unwrap_or_default();
        let ready = status.health(control_plane.metadata.generation) == Health::Ready;
        self.ready
            .get_or_create(&ControlPlaneLabels {
                control_plane: name.to_owned(),
            })
            .set(i64::from(ready));
        self.record_components(name, &status);
    }

    fn record_components(&self, control_plane: &str, status: &crate::api::ControlPlaneStatus) {
        for phase in [
            "Installing",
            "Upgrading",
            "Available",
            "Uninstalling",
            "Removed",
            "Failed",
        ] {
            let count = status
                .components
                .values()
                .filter(|component| component.phase.to_string() == phase)
                .count();
            self.components
                .get_or_create(&PhaseLabels {
                    control_plane: control_plane.to_owned(),
                    phase: phase.to_owned(),
                })
                .set(count as i64);
        }
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_in_prometheus_text_format() {
        let metrics = Metrics::default();
        metrics.record_reconcile(true, 0.5);
        metrics.record_reconcile(false, 3.0);
        metrics.record_helm_processes(4);
        metrics.record_helm_processes(4);
        let text = metrics.encode();
        assert!(
            text.contains("smm_reconciles_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("smm_reconciles_total{result=\"failure\"} 1"),
            "{text}"
        );
        assert!(text.contains("smm_helm_processes_total 4"), "{text}");
        assert!(
            text.contains("smm_reconcile_duration_seconds_count 2"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_control_plane_counts_as_ready_only_when_ready_for_its_current_spec() {
        use crate::api::{ControlPlaneSpec, ControlPlaneStatus, condition, set_condition};
        let metrics = Metrics::default();
        let mut control_plane = ControlPlane::new("mesh", ControlPlaneSpec::default());
        control_plane.metadata.generation = Some(2);
        let mut status = ControlPlaneStatus {
            observed_generation: Some(2),
            ..ControlPlaneStatus::default()
        };
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let reconciled = "Reconciled";
        set_condition(
            &mut status.conditions,
            condition::READY,
            true,
            reconciled,
            "",
            Some(2),
            &now,
        );
        control_plane.status = Some(status);
        metrics.record_control_plane("mesh", &control_plane);
        let ready = "smm_controlplane_ready{control_plane=\"mesh\"}";
        assert!(
            metrics.encode().contains(&format!("{ready} 1")),
            "{}",
            metrics.encode()
        );
        // The spec changed since: Ready no longer speaks for it.
        control_plane.metadata.generation = Some(3);
        metrics.record_control_plane("mesh", &control_plane);
        assert!(
            metrics.encode().contains(&format!("{ready} 0")),
            "{}",
            metrics.encode()
        );
    }
}
