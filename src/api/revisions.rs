//! The ControlPlane's revision settings (how a new control plane version reaches the cluster,
//! revision tags) and the status of every istiod revision smm runs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How long an inactive revision stays after nothing uses it any more, unless the spec says.
pub const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 30;

/// How a change of the control plane's version (or an smm upgrade that changes istiod's chart)
/// reaches the cluster.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateStrategy {
    /// `InPlace` (default): istiod's one release is upgraded where it is. `RevisionBased`: each
    /// version runs as a revision of its own (`istiod-<1-31-4>`) beside the one before, which
    /// keeps serving its proxies until nothing uses it.
    #[serde(rename = "type", default)]
    pub type_: UpdateStrategyType,
    /// How long an inactive revision is kept once nothing uses it, before it is removed
    /// (default 30). A revision whose use cannot be determined is never removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_revision_deletion_grace_period_seconds: Option<u64>,
    /// Move the workloads of injected namespaces to the active revision once it is Ready:
    /// namespaces pinned to an inactive revision are relabelled and their Deployments,
    /// StatefulSets and DaemonSets restarted in batches (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_workloads: Option<bool>,
}

impl UpdateStrategy {
    pub fn grace_period_seconds(&self) -> u64 {
        self.inactive_revision_deletion_grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS)
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum UpdateStrategyType {
    #[default]
    InPlace,
    RevisionBased,
}

/// A revision tag: a stable name that namespaces and pods select (`istio.io/rev=<tag>`, and for
/// the tag `default` also `istio-injection=enabled`) and that points at one revision.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevisionTag {
    /// The revision the tag points at. Unset: the active revision, followed as it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// One istiod revision smm runs, active or kept for the proxies that still use it.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    /// The revision's name as injected pods record it (`default` for a revisionless istiod).
    pub name: String,
    /// The Istio version (image tag) it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The helm release that holds it, in the mesh's namespace.
    pub release: String,
    /// The revision the ControlPlane's spec asks for; the others are inactive.
    pub active: bool,
    /// Its istiod is ready.
    #[serde(default)]
    pub ready: bool,
    /// The tags that point at it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// How many running proxies (pods) and namespaces use it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_use: Option<RevisionUseCount>,
    /// `InUse`: True while a proxy, a namespace or a tag uses the revision, False once nothing
    /// does (the grace period counts from its transition), Unknown when smm could not tell. An
    /// inactive revision is removed only after InUse has been False for the grace period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What uses a revision, counted.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionUseCount {
    pub pods: u32,
    pub namespaces: u32,
}

/// The condition type of a revision's use.
pub const IN_USE: &str = "InUse";
