//! The `ControlPlane` custom resource: smm's whole configuration of the mesh, and the status the
//! engine reports back. These Rust types are the source of truth; `smm crd` prints the CRD that
//! is generated from them, and `deploy/crds/` holds a committed copy.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod conditions;
mod dataplane;
mod document;
mod metadata;
mod multicluster;
pub mod names;
pub mod objects;
mod revisions;

pub use conditions::{Health, condition, ready_now, remove_condition, set_condition, set_stalled};
pub use dataplane::{GatewayApi, Platform, Profile};
pub use document::DocumentError;
pub use metadata::{ControlPlaneMeta, Removable, Undecodable, decode_each};
pub use multicluster::{AttachedCluster, ClusterModel, MultiCluster, PrimaryCluster};
pub use revisions::{
    DEFAULT_GRACE_PERIOD_SECONDS, IN_USE, RevisionStatus, RevisionTag, RevisionUseCount,
    UpdateStrategy, UpdateStrategyType,
};

/// The API group of smm's resources.
pub const GROUP: &str = "smm.dev";
/// The name of the ControlPlane that commands use unless told otherwise.
pub const DEFAULT_CONTROL_PLANE: &str = "smm";
/// The namespace the mesh's control plane runs in unless the spec says otherwise.
pub const DEFAULT_MESH_NAMESPACE: &str = "istio-system";
/// The mesh's trust domain unless the spec says otherwise (Istio's default).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// The desired state of the mesh: global settings and, per component, whether it is enabled and
/// how its chart values differ from smm's defaults.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "smm.dev",
    version = "v1alpha1",
    kind = "ControlPlane",
    plural = "controlplanes",
    shortname = "cp",
    status = "ControlPlaneStatus",
    derive = "PartialEq",
    // Raw JSON: the structured form repeats `type_ = "string"`, which clippy takes for a
    // duplicated attribute.
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reconciled","type":"string","jsonPath":".status.reconciledComponents","description":"components in their desired state / components known"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.activeRevision","description":"the active istiod revision"}"#,
    printcolumn = r#"{"name":"Revisions","type":"string","jsonPath":".status.revisionNames","description":"every istiod revision smm runs, the active one first"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneSpec {
    /// Registry that every image is pulled from, e.g. `registry.local:5000` for an air-gapped
    /// cluster. Unset: each chart's upstream registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_registry: Option<String>,
    /// Namespace of the mesh's control plane (default `istio-system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The revision name of istiod under the `InPlace` update strategy (default: none, the
    /// revisionless istiod). `RevisionBased` names each revision after its version instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The Istio version to run, a patch release of the line smm embeds (e.g. `1.31.4`): the
    /// tag of istiod's and the proxies' images. Unset: the version smm embeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How a new version reaches the cluster: in place, or as a new revision beside the old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
    /// Revision tags by name (`default` included), each pointing at a revision or, unset, at
    /// the active one. Under `RevisionBased` the tag `default` always exists and follows the
    /// active revision unless set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revision_tags: BTreeMap<String, RevisionTag>,
    /// The mesh's trust domain (default `cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// The data plane: `sidecar` (default) or `ambient`, which turns the node agents
    /// (istio-cni, ztunnel) on unless a component says otherwise and istiod to ambient mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// The Kubernetes distribution, when Istio's charts need to know it (`gke`, `k3d`, `k3s`,
    /// `microk8s`, `minikube`, `openshift`). Unset: a plain Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The Gateway API's CRDs (standard channel, the version Istio is built against), which
    /// waypoints are made of. Unset: applied under the ambient profile only.
    #[serde(
        default,
        rename = "gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApi>,
    /// This cluster's place in a mesh of several clusters (mesh ID, cluster name, network, and
    /// on a remote cluster the primary serving it). Unset: a mesh of one cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_cluster: Option<MultiCluster>,
    /// Per component settings, keyed by component name (see `smm components`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, ComponentSpec>,
}

/// One component's desired state.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentSpec {
    /// Whether the component is installed. Unset: the component's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Namespace for the component's release. Unset: the component's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Helm values merged over smm's values for this component. Values smm manages (namespace,
    /// revision, image registry, addresses of other components) cannot be overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub values_override: Option<serde_json::Value>,
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

impl ControlPlaneSpec {
    /// This spec with `component`'s entry changed by `edit` (created if missing): a chainable
    /// way to write specs in tests and tools, e.g.
    /// `ControlPlaneSpec::default().with_enabled("base", false).with_values("istiod", values)`.
    pub fn with_component(
        mut self,
        component: &str,
        edit: impl FnOnce(&mut ComponentSpec),
    ) -> Self {
        edit(self.components.entry(component.to_owned()).or_default());
        self
    }

    /// This spec with `component` explicitly enabled or disabled.
    pub fn with_enabled(self, component: &str, enabled: bool) -> Self {
        self.with_component(component, |c| c.enabled = Some(enabled))
    }

    /// This spec with `type_` as its update strategy (the grace period and workloads setting at
    /// their defaults).
    pub fn with_update_strategy(mut self, type_: UpdateStrategyType) -> Self {
        self.update_strategy = Some(UpdateStrategy {
            type_,
            ..UpdateStrategy::default()
        });
        self
    }

    /// This spec with the revision tag `tag`, pointing at `revision` (none: the active one).
    pub fn with_revision_tag(mut self, tag: &str, revision: Option<&str>) -> Self {
        let setting = RevisionTag {
            revision: revision.map(str::to_owned),
        };
        self.revision_tags.insert(tag.to_owned(), setting);
        self
    }

    /// This spec with `values` as `component`'s `valuesOverride`.
    pub fn with_values(self, component: &str, values: serde_json::Value) -> Self {
        self.with_component(component, |c| c.values_override = Some(values))
    }

    pub fn mesh_namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_MESH_NAMESPACE)
    }

    pub fn profile(&self) -> Profile {
        self.profile.unwrap_or_default()
    }

    /// Whether smm applies the Gateway API's CRDs: as `spec.gatewayAPI.enabled` says, else
    /// exactly under the ambient profile (whose waypoints are Gateways).
    pub fn gateway_api_enabled(&self) -> bool {
        self.gateway_api
            .as_ref()
            .and_then(|gateway_api| gateway_api.enabled)
            .unwrap_or(self.profile() == Profile::Ambient)
    }

    pub fn trust_domain(&self) -> &str {
        self.trust_domain.as_deref().unwrap_or(DEFAULT_TRUST_DOMAIN)
    }

    /// The update strategy, its defaults filled in.
    pub fn update_strategy(&self) -> UpdateStrategy {
        self.update_strategy.clone().unwrap_or_default()
    }

    pub fn is_revision_based(&self) -> bool {
        self.update_strategy().type_ == UpdateStrategyType::RevisionBased
    }
}

/// What the engine observed and did, written through the status subresource.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneStatus {
    /// The spec generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: `Ready`, `Reconciling`, `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `<in desired state>/<known>`, for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_components: Option<String>,
    /// Per component state, keyed by component name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, ComponentStatus>,
    /// The istiod revision new proxies get by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_revision: Option<String>,
    /// Every revision's name, the active one first, for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_names: Option<String>,
    /// Every istiod revision smm runs: the active one, and inactive ones kept while proxies use
    /// them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<RevisionStatus>,
    /// The clusters attached to this one's mesh (`smm cluster attach`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<AttachedCluster>,
}

/// Where one component stands. Unset fields serialize as `null` on purpose: the engine writes
/// component status with JSON merge patches, where `null` is what removes a stale field.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    pub phase: ComponentPhase,
    #[serde(default)]
    pub chart: Option<ChartRef>,
    /// Digest of the chart that was last applied successfully.
    #[serde(default)]
    pub chart_digest: Option<String>,
    /// Digest of the merged values that were last applied successfully.
    #[serde(default)]
    pub values_digest: Option<String>,
    #[serde(default)]
    pub release: Option<ReleaseStatus>,
    #[serde(default)]
    pub last_transition_time: Option<Time>,
    #[serde(default)]
    pub message: Option<String>,
    /// The digests helm was started with and that are not yet recorded as applied: written
    /// before helm runs, so a run interrupted between helm and the status write is detected
    /// (the cluster may hold these, not the recorded ones) and the next run applies again.
    #[serde(default)]
    pub attempt: Option<Attempt>,
}

/// What a run set out to apply.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub chart_digest: String,
    pub values_digest: String,
}

impl ComponentStatus {
    /// A status in `phase` with nothing recorded yet.
    pub fn with_phase(phase: ComponentPhase) -> Self {
        Self {
            phase,
            chart: None,
            chart_digest: None,
            values_digest: None,
            release: None,
            last_transition_time: None,
            message: None,
            attempt: None,
        }
    }
}

impl ComponentStatus {
    /// Whether helm applied what the record holds: Available, or on its way with its chart and
    /// values recorded (workloads not ready yet, as `--no-wait` leaves it). The one rule for
    /// "applied" that a dependent under `--no-wait` and `smm status` both follow.
    pub fn is_applied(&self) -> bool {
        match self.phase {
            ComponentPhase::Available => true,
            ComponentPhase::Installing | ComponentPhase::Upgrading => self.values_digest.is_some(),
            ComponentPhase::Uninstalling
            | ComponentPhase::Removed
            | ComponentPhase::Failed
            | ComponentPhase::Unknown => false,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ComponentPhase {
    Installing,
    Upgrading,
    Available,
    Uninstalling,
    Removed,
    Failed,
    /// A phase this version does not know (written by another version of smm): read, never
    /// written, so one such ControlPlane does not stop the operator from reading the others.
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for ComponentPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChartRef {
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub revision: Option<i64>,
}

/// The CRD as YAML, exactly as `smm crd` prints it and `deploy/crds/` stores it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = ControlPlane::crd();
    format!(
        "# Generated by `smm crd` from the ControlPlane type in src/api/; do not edit.\n{}",
        serde_yaml_ng::to_string(&crd).expect("a CRD always serializes")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy/crds/` is what GitOps users apply; it must match what this binary generates.
    #[test]
    fn committed_crd_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/crds/controlplanes.smm.dev.yaml"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == crd_yaml(),
            "{path} is stale: regenerate it with `cargo run -- crd > deploy/crds/controlplanes.smm.dev.yaml`"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_yaml_ng::from_str::<ControlPlaneSpec>("imageRegistri: x\n").unwrap_err();
        assert!(err.to_string().contains("imageRegistri"), "{err}");
        let err = serde_yaml_ng::from_str::<ControlPlaneSpec>(
            "components:\n  istiod:\n    enable: true\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("enable"), "{err}");
    }

    #[test]
    fn values_override_is_free_form_in_the_schema() {
        let crd = serde_json::to_value(<ControlPlane as kube::CustomResourceExt>::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let component = &spec["properties"]["components"]["additionalProperties"];
        let values = &component["properties"]["valuesOverride"];
        assert_eq!(values["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(crd["spec"]["scope"], "Cluster");
        assert!(crd["spec"]["versions"][0]["subresources"]["status"].is_object());
    }
}
