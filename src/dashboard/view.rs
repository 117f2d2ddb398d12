//! What the dashboard shows, gathered from the cluster: each ControlPlane's conditions, its
//! components (phase, chart, release, digests, masked values, live workloads, Events), the
//! mesh (namespaces' injection, pods' proxies and their version skew) and the dry-run plan.
//!
//! A part that cannot be read (no right to list pods, a spec the engine rejects) is reported
//! in its place as an error text, so the rest of the page still shows.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::Value;

use super::addons::{AddonLink, addon_links};
use super::mesh::MeshView;
use super::revisions::{RevisionsView, revisions_view};
use super::snapshot::{Fresh, ListedControlPlanes, ReadDetails};
use super::svg::{self, GraphNode, Tone};
use super::workloads::{WorkloadView, phase_of, workload_view};
use crate::api::{ComponentStatus, ControlPlane, Health};
use crate::cluster::control_plane::StoreError;
use crate::desired::resolve::DesiredComponent;
use crate::desired::resolved::Resolved;
use crate::engine::report::PlannedComponent;
use crate::engine::{Engine, EngineSettings, Scope};
use crate::helm::Helm;
use crate::helm::release::ReleaseRef;
use crate::helm::workloads::{component_workloads, live};
use crate::mesh::catalog::Catalog;
use crate::values::mask::mask_secrets;

/// The component whose version is the mesh's control plane version.
const CONTROL_PLANE_COMPONENT: &str = "istiod";
/// Events kept per component, newest first.
const EVENTS_PER_COMPONENT: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("ControlPlane {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] Arc<StoreError>),
}

/// A part of a view that may fail on its own: the value, or why it could not be read.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Part<T> {
    Ok(T),
    Error(String),
}

impl<T, E: std::fmt::Display> From<Result<T, E>> for Part<T> {
    fn from(result: Result<T, E>) -> Self {
        match result {
            Ok(value) => Part::Ok(value),
            Err(err) => Part::Error(err.to_string()),
        }
    }
}

/// Reads what the dashboard shows. The engine is only asked for plans, which spawn no helm.
pub struct Dashboard {
    pub(super) client: Client,
    engine: Engine,
    catalog: Arc<Catalog>,
    /// The ControlPlane the page opens on (`smm dashboard --control-plane`); the operator has
    /// none and the page opens on the first.
    pub(super) preferred: Option<String>,
    pub(super) control_planes: ListedControlPlanes,
    pub(super) details: ReadDetails,
    pub(super) checks: super::checks::RunChecks,
}

/// The list of ControlPlanes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneList {
    pub preferred: Option<String>,
    pub items: Vec<Summary>,
}

/// One ControlPlane at a glance.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub name: String,
    /// `Ready`, `Reconciling`, `Stalled`, `Not ready` or `Not reconciled yet`, from kstatus'
    /// conditions; Stalled wins over Reconciling, which wins over Ready.
    pub state: String,
    pub tone: Tone,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    pub conditions: Vec<ConditionView>,
    /// The latest transition recorded in the status, of a condition or a component.
    pub last_reconcile: Option<String>,
    pub reconciled_components: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

/// Everything about one ControlPlane.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    pub summary: Summary,
    pub graph_svg: String,
    pub components: Vec<ComponentView>,
    pub mesh: Part<MeshView>,
    /// istiod's revisions and the revision tags.
    pub revisions: RevisionsView,
    /// This cluster's place in a mesh of several, and the clusters attached to it.
    pub clusters: ClustersView,
    /// The UIs of the enabled add-ons and the command that opens each.
    pub addons: Vec<AddonLink>,
    pub plan: Part<Vec<PlannedComponent>>,
    /// Why components show no values: the spec does not resolve.
    pub spec_error: Option<String>,
}

/// A mesh over several clusters as the dashboard shows it: this cluster's place in it
/// (`spec.multiCluster`) and the attached clusters as the last attach, reconcile or
/// `smm cluster status` recorded them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClustersView {
    pub this: Option<crate::api::MultiCluster>,
    pub attached: Vec<crate::api::AttachedCluster>,
}

fn clusters_view(control_plane: &ControlPlane) -> ClustersView {
    ClustersView {
        this: control_plane.spec.multi_cluster.clone(),
        attached: control_plane
            .status
            .as_ref()
            .map(|status| status.clusters.clone())
            .unwrap_or_default(),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentView {
    pub name: &'static str,
    pub depends_on: &'static [&'static str],
    pub enabled: bool,
    pub phase: String,
    pub tone: Tone,
    pub message: Option<String>,
    pub chart: String,
    pub chart_version: String,
    pub app_version: Option<String>,
    pub release: Option<String>,
    pub revision: Option<i64>,
    pub chart_digest: Option<String>,
    pub values_digest: Option<String>,
    /// The merged values smm gives helm, secret-looking keys masked; none when disabled.
    pub values: Option<Value>,
    pub workloads: Part<Vec<WorkloadView>>,
    pub events: Vec<EventView>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub time: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
}

impl Dashboard {
    /// A view of the cluster `client` reaches; `helm` and `catalog` make its plans (a plan
    /// spawns no helm). The page opens on `preferred` when it exists.
    pub fn new(
        client: Client,
        helm: Helm,
        catalog: Arc<Catalog>,
        preferred: Option<String>,
    ) -> Self {
        let engine = Engine::new(
            client.clone(),
            helm,
            catalog.clone(),
            EngineSettings::default(),
        );
        Self {
            client,
            engine,
            catalog,
            preferred,
            control_planes: Fresh::new(),
            details: ReadDetails::default(),
            checks: Default::default(),
        }
    }

    /// Everything about `control_plane`, read from the cluster now; a part that cannot be read
    /// says why in its place.
    pub(super) async fn read_detail(&self, control_plane: &ControlPlane) -> Detail {
        let name = control_plane.name_any();
        let name = name.as_str();
        let status = control_plane.status.clone().unwrap_or_default();
        let resolved = Resolved::new(&self.catalog, name, control_plane.spec.clone());
        let events = self.events(name).await;
        let mut components = Vec::new();
        for component in self.catalog.components() {
            let wanted = resolved.as_ref().ok().and_then(|resolved| {
                resolved
                    .components()
                    .iter()
                    .find(|d| d.name() == component.name)
            });
            let recorded = status.components.get(component.name);
            components.push(
                self.component(component.name, wanted, recorded, &events)
                    .await,
            );
        }
        let graph_svg = svg::render(
            &self
                .catalog
                .components()
                .iter()
                .zip(&components)
                .map(|(component, view)| GraphNode {
                    name: component.name,
                    depends_on: component.depends_on,
                    phase: view.phase.clone(),
                    tone: view.tone,
                })
                .collect::<Vec<_>>(),
        );
        let control_plane_version = components
            .iter()
            .find(|c| c.name == CONTROL_PLANE_COMPONENT && c.release.is_some())
            .and_then(|c| c.app_version.clone());
        let mesh = self
            .mesh(control_plane.spec.revision.clone(), control_plane_version)
            .await
            .into();
        let plan = match &resolved {
            Ok(resolved) => self
                .engine
                .plan(resolved, Some(&status), &Scope::All)
                .await
                .into(),
            Err(rejected) => Part::Error(rejected.to_string()),
        };
        Detail {
            summary: summarize(control_plane),
            graph_svg,
            components,
            mesh,
            revisions: revisions_view(control_plane),
            clusters: clusters_view(control_plane),
            addons: addon_links(&self.catalog, name, &control_plane.spec),
            plan,
            spec_error: resolved
                .as_ref()
                .err()
                .map(|rejected| rejected.source.to_string()),
        }
    }

    async fn component(
        &self,
        name: &'static str,
        wanted: Option<&DesiredComponent<'_>>,
        recorded: Option<&ComponentStatus>,
        events: &Part<Vec<EventView>>,
    ) -> ComponentView {
        let catalog_entry = self.catalog.get(name).expect("a catalog component");
        let metadata = catalog_entry.chart.metadata().ok();
        let enabled = wanted.is_some_and(|w| w.enabled);
        let states = match recorded {
            Some(recorded) => Some(component_workloads(&self.client, recorded).await),
            None => None,
        };
        let judged = states.as_ref().and_then(|states| states.as_ref().ok());
        let shown = recorded.zip(judged).map(|(r, states)| live(r, states));
        let (phase, tone) = phase_of(enabled, recorded, shown.as_ref());
        let workloads = match states {
            Some(states) => states.map(|s| s.iter().map(workload_view).collect()).into(),
            None => Part::Ok(Vec::new()),
        };
        let recorded_chart = recorded.and_then(|r| r.chart.as_ref());
        ComponentView {
            name,
            depends_on: catalog_entry.depends_on,
            enabled,
            phase,
            tone,
            message: match shown {
                Some(shown) => shown.message,
                None => recorded.and_then(|r| r.message.clone()),
            },
            chart: recorded_chart
                .map(|c| c.name.clone())
                .or_else(|| metadata.as_ref().map(|m| m.name.clone()))
                .unwrap_or_else(|| catalog_entry.chart.name().to_owned()),
            chart_version: recorded_chart
                .map(|c| c.version.clone())
                .or_else(|| metadata.as_ref().map(|m| m.version.clone()))
                .unwrap_or_default(),
            app_version: metadata.and_then(|m| m.app_version),
            release: recorded
                .and_then(|r| r.release.as_ref())
                .map(|r| ReleaseRef::from(r).to_string()),
            revision: recorded
                .and_then(|r| r.release.as_ref())
                .and_then(|r| r.revision),
            chart_digest: recorded.and_then(|r| r.chart_digest.clone()),
            values_digest: recorded.and_then(|r| r.values_digest.clone()),
            values: wanted
                .filter(|w| w.enabled)
                .map(|w| mask_secrets(&w.values)),
            workloads,
            events: match events {
                Part::Ok(events) => events
                    .iter()
                    .filter(|e| mentions(&e.message, name))
                    .take(EVENTS_PER_COMPONENT)
                    .cloned()
                    .collect(),
                Part::Error(_) => Vec::new(),
            },
        }
    }

    /// The ControlPlane's Events, newest first. They sit in `default`, where Events about
    /// cluster-scoped objects go, but any namespace is searched.
    async fn events(&self, name: &str) -> Part<Vec<EventView>> {
        let api: Api<Event> = Api::all(self.client.clone());
        let selector = format!("involvedObject.kind=ControlPlane,involvedObject.name={name}");
        // From the API server's cache: the page polls, and Events may lag a moment.
        let listed = api
            .list(&ListParams::default().match_any().fields(&selector))
            .await;
        listed
            .map(|list| {
                let mut events: Vec<(Option<Time>, EventView)> = list
                    .items
                    .into_iter()
                    .map(|event| {
                        let time = event
                            .last_timestamp
                            .clone()
                            .or_else(|| event.event_time.as_ref().map(|t| Time(t.0)))
                            .or_else(|| event.metadata.creation_timestamp.clone());
                        let view = EventView {
                            time: time.as_ref().map(|t| t.0.to_string()),
                            type_: event.type_.unwrap_or_default(),
                            reason: event.reason.unwrap_or_default(),
                            message: event.message.unwrap_or_default(),
                        };
                        (time, view)
                    })
                    .collect();
                events.sort_by(|a, b| b.0.cmp(&a.0));
                events.into_iter().map(|(_, view)| view).collect()
            })
            .into()
    }
}

pub(super) fn summarize(control_plane: &ControlPlane) -> Summary {
    let status = control_plane.status.clone().unwrap_or_default();
    let (state, tone) = match status.health(control_plane.metadata.generation) {
        Health::NotReconciled => ("Not reconciled yet", Tone::Off),
        Health::Stalled => ("Stalled", Tone::Bad),
        Health::Reconciling => ("Reconciling", Tone::Busy),
        Health::Ready => ("Ready", Tone::Good),
        Health::NotReady => ("Not ready", Tone::Bad),
    };
    let last_reconcile = status
        .conditions
        .iter()
        .map(|c| c.last_transition_time.0)
        .chain(
            status
                .components
                .values()
                .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0)),
        )
        .max()
        .map(|t| t.to_string());
    Summary {
        name: control_plane.name_any(),
        state: state.to_owned(),
        tone,
        generation: control_plane.metadata.generation,
        observed_generation: status.observed_generation,
        conditions: status
            .conditions
            .iter()
            .map(|c| ConditionView {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.0.to_string(),
            })
            .collect(),
        last_reconcile,
        reconciled_components: status.reconciled_components,
    }
}

/// Whether an Event's message names `component` as a word of its own (`base` is not in
/// `database`).
fn mentions(message: &str, component: &str) -> bool {
    message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .any(|word| word == component)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Namespace, Pod};

    use super::*;
    use crate::api::ControlPlaneSpec;
    use crate::dashboard::mesh::{namespace_view, pod_view};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn namespace(labels: &[(&str, &str)]) -> Namespace {
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some("apps".to_owned());
        namespace.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        namespace
    }

    #[test]
    fn injection_follows_the_injectors_labels() {
        let on = namespace_view(&namespace(&[("istio-injection", "enabled")]));
        assert!(on.injection && on.revision.is_none());
        let revisioned = namespace_view(&namespace(&[("istio.io/rev", "canary")]));
        assert!(revisioned.injection);
        assert_eq!(revisioned.revision.as_deref(), Some("canary"));
        let disabled = namespace_view(&namespace(&[
            ("istio-injection", "disabled"),
            ("istio.io/rev", "canary"),
        ]));
        assert!(!disabled.injection && disabled.revision.is_none());
        assert!(!namespace_view(&namespace(&[])).injection);
    }

    #[test]
    fn proxies_of_another_version_are_skewed() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app", "namespace": "apps"},
            "spec": {"containers": [
                {"name": "app", "image": "app:1"},
                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.27.0"}
            ]}
        }))
        .unwrap();
        let view = pod_view(&pod, Some("1.28.0"));
        assert_eq!(view.proxy_version.as_deref(), Some("1.27.0"));
        assert!(view.skew);
        assert!(!pod_view(&pod, Some("1.27.0")).skew);
        assert!(!pod_view(&pod, None).skew);
    }

    #[test]
    fn events_name_components_as_words() {
        assert!(mentions("Installed grafana (chart 0.1.0)", "grafana"));
        assert!(mentions("istiod: upgrade failed", "istiod"));
        assert!(!mentions("database migrated", "base"));
        assert!(!mentions("ingress-gateway ready", "gateway"));
    }

    fn with_conditions(
        generation: i64,
        observed: i64,
        conditions: &[(&str, &str)],
    ) -> ControlPlane {
        let mut cp = ControlPlane::new("smm", ControlPlaneSpec::default());
        cp.metadata.generation = Some(generation);
        let time = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        cp.status = Some(crate::api::ControlPlaneStatus {
            observed_generation: Some(observed),
            conditions: conditions
                .iter()
                .map(|(type_, status)| Condition {
                    type_: (*type_).to_owned(),
                    status: (*status).to_owned(),
                    reason: "R".to_owned(),
                    message: String::new(),
                    observed_generation: Some(observed),
                    last_transition_time: time.clone(),
                })
                .collect(),
            ..Default::default()
        });
        cp
    }

    #[test]
    fn state_follows_kstatus() {
        let state = |cp: &ControlPlane| summarize(cp).state;
        assert_eq!(state(&with_conditions(2, 2, &[("Ready", "True")])), "Ready");
        assert_eq!(
            state(&with_conditions(3, 2, &[("Ready", "True")])),
            "Reconciling"
        );
        assert_eq!(
            state(&with_conditions(
                2,
                2,
                &[("Ready", "False"), ("Stalled", "True")]
            )),
            "Stalled"
        );
        assert_eq!(
            state(&with_conditions(
                2,
                2,
                &[("Ready", "False"), ("Reconciling", "True")]
            )),
            "Reconciling"
        );
        assert_eq!(state(&with_conditions(2, 2, &[])), "Not reconciled yet");
        let summary = summarize(&with_conditions(2, 2, &[("Ready", "True")]));
        assert_eq!(
            summary.last_reconcile.as_deref(),
            Some("1970-01-01T00:16:40Z")
        );
    }
}
