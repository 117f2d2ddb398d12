//! Which revisions exist and what still uses each, from the API server's objects alone.
//!
//! The rule (checked on a local plane with two istiods side by side): a pod runs a proxy of
//! revision R when istiod injected it (annotation `sidecar.istio.io/status`) with
//! `istio.io/rev=R` and it has not finished; a namespace or a pod's own labels select R when the
//! injector webhooks' selectors would send a new pod there to R, through a tag or directly; a
//! tag points at R; the default validator calls R. A revision nothing uses may be removed.
//! A finished pod (a Job's, phase Succeeded or Failed) keeps its annotations but runs no proxy:
//! it is reported and never counted.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;
use serde::Serialize;

use super::proxies::image_tag;

/// The revision of an istiod installed without one, as its pods' `istio.io/rev` says; also the
/// tag that `istio-injection=enabled` and `sidecar.istio.io/inject=true` select.
pub const DEFAULT_REVISION: &str = "default";

/// The revision an injector, a tag, an istiod or an injected pod belongs to.
pub const REVISION_LABEL: &str = "istio.io/rev";
/// The label of a tag's MutatingWebhookConfiguration: the tag's name.
pub const TAG_LABEL: &str = "istio.io/tag";
/// The annotation istiod's injector writes on every pod it injects.
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// A namespace's opt-in to the default tag (`enabled`; any other value opts out).
pub const INJECTION_LABEL: &str = "istio-injection";
/// A pod's own opt-in (`true`, to the default tag) or opt-out (`false`, from everything).
pub const POD_INJECT_LABEL: &str = "sidecar.istio.io/inject";
/// The validator that checks Istio configuration not labelled with a revision.
pub const DEFAULT_VALIDATOR: &str = "istiod-default-validator";
/// istiod's container in its Deployment; its image tag is the control plane's version.
const DISCOVERY_CONTAINER: &str = "discovery";

/// The API server's view of the mesh, as plain objects: what [`revision_usage`], [`tags`] and
/// [`revisions`] read.
#[derive(Clone, Debug, Default)]
pub struct MeshSnapshot {
    /// At least every pod istiod injected and every pod labelled `istio.io/rev` or
    /// `sidecar.istio.io/inject`; other pods change nothing.
    pub pods: Vec<Pod>,
    /// Every namespace; a pod's namespace that is missing counts as one without labels.
    pub namespaces: Vec<Namespace>,
    /// The MutatingWebhookConfigurations labelled `istio.io/rev`: revisions' injectors and tags.
    pub injectors: Vec<MutatingWebhookConfiguration>,
    /// The ValidatingWebhookConfigurations labelled `istio.io/rev`.
    pub validators: Vec<ValidatingWebhookConfiguration>,
    /// The istiod Deployments (label `app=istiod`) of the mesh's namespace.
    pub istiods: Vec<Deployment>,
}

/// A pod, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    pub fn of(pod: &Pod) -> Self {
        Self {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
        }
    }
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What uses one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionUse {
    /// Pods running a proxy of this revision: they dial its istiod for as long as they run.
    pub pods: Vec<PodRef>,
    /// Pods whose own labels select this revision (namespace without injection labels): a
    /// replacement would be injected by it.
    pub selecting_pods: Vec<PodRef>,
    /// Namespaces whose labels select this revision, directly or through a tag.
    pub namespaces: BTreeSet<String>,
    /// Tags pointing at this revision.
    pub tags: BTreeSet<String>,
    /// `istiod-default-validator` calls this revision: Istio configuration without a revision
    /// label is validated by it.
    pub default_validator: bool,
    /// Finished pods injected by this revision: reported, never counted as use.
    pub completed_pods: Vec<PodRef>,
}

impl RevisionUse {
    /// Something still needs this revision's istiod; removing it would break running proxies,
    /// inject new pods with nothing (silently) or leave validation to a missing Service.
    pub fn in_use(&self) -> bool {
        !self.pods.is_empty()
            || !self.selecting_pods.is_empty()
            || !self.namespaces.is_empty()
            || !self.tags.is_empty()
            || self.default_validator
    }
}

/// One revision as the cluster has it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionInfo {
    /// An istiod Deployment of the revision has an available replica.
    pub ready: bool,
    /// The image tag of istiod's `discovery` container.
    pub version: Option<String>,
    /// Its injector or its istiod Deployment exists; false for a revision that only proxies or
    /// tags still name.
    pub exists: bool,
}

/// Each tag and the revision it points at, from the MutatingWebhookConfigurations labelled
/// `istio.io/tag`.
pub fn tags(snapshot: &MeshSnapshot) -> BTreeMap<String, String> {
    snapshot
        .injectors
        .iter()
        .filter_map(|webhook| {
            let labels = webhook.labels();
            Some((
                labels.get(TAG_LABEL)?.clone(),
                labels.get(REVISION_LABEL)?.clone(),
            ))
        })
        .collect()
}

/// Every revision: those with an injector (labelled `istio.io/rev`, not a tag) or an istiod
/// Deployment, then, as not existing, those that running proxies or tags still name.
pub fn revisions(snapshot: &MeshSnapshot) -> BTreeMap<String, RevisionInfo> {
    let mut revisions: BTreeMap<String, RevisionInfo> = BTreeMap::new();
    for revision in injector_revisions(snapshot) {
        revisions.entry(revision.to_owned()).or_default().exists = true;
    }
    for istiod in &snapshot.istiods {
        let Some(revision) = istiod.labels().get(REVISION_LABEL) else {
            continue;
        };
        let info = revisions.entry(revision.clone()).or_default();
        info.exists = true;
        info.ready |= serves(istiod);
        if info.version.is_none() {
            info.version = discovery_version(istiod);
        }
    }
    let running = snapshot
        .pods
        .iter()
        .filter(|pod| !finished(pod))
        .filter_map(injected_revision);
    for revision in running.chain(tags(snapshot).values().map(String::as_str)) {
        revisions.entry(revision.to_owned()).or_default();
    }
    revisions
}

/// What uses each revision, for every revision [`revisions`] lists and every one a finished pod
/// names.
pub fn revision_usage(snapshot: &MeshSnapshot) -> BTreeMap<String, RevisionUse> {
    let resolver = Resolver::new(snapshot);
    let mut usage: BTreeMap<String, RevisionUse> = revisions(snapshot)
        .into_keys()
        .map(|revision| (revision, RevisionUse::default()))
        .collect();
    for (tag, revision) in &resolver.tags {
        let used = usage.entry(revision.clone()).or_default();
        used.tags.insert(tag.clone());
    }
    for validator in &snapshot.validators {
        if validator.name_any() == DEFAULT_VALIDATOR
            && let Some(revision) = validator.labels().get(REVISION_LABEL)
        {
            usage.entry(revision.clone()).or_default().default_validator = true;
        }
    }
    let no_labels = BTreeMap::new();
    let mut namespace_labels = BTreeMap::new();
    for namespace in &snapshot.namespaces {
        let labels = namespace.labels();
        namespace_labels.insert(namespace.name_any(), labels);
        if let Some(name) = namespace_selection(labels)
            && let Some(revision) = resolver.resolve(name)
        {
            let used = usage.entry(revision).or_default();
            used.namespaces.insert(namespace.name_any());
        }
    }
    for pod in &snapshot.pods {
        let pod_ref = PodRef::of(pod);
        if let Some(revision) = injected_revision(pod) {
            let used = usage.entry(revision.to_owned()).or_default();
            if finished(pod) {
                used.completed_pods.push(pod_ref.clone());
            } else {
                used.pods.push(pod_ref.clone());
            }
        }
        if finished(pod) {
            continue;
        }
        let labels = namespace_labels
            .get(&pod_ref.namespace)
            .copied()
            .unwrap_or(&no_labels);
        if let Selection::ByPod(name) = selection(labels, pod.labels())
            && let Some(revision) = resolver.resolve(name)
        {
            usage
                .entry(revision)
                .or_default()
                .selecting_pods
                .push(pod_ref);
        }
    }
    for used in usage.values_mut() {
        used.pods.sort();
        used.selecting_pods.sort();
        used.completed_pods.sort();
    }
    usage
}

/// The revision that injected `pod` (its `istio.io/rev` annotation, written by the injecting
/// istiod: its own revision, never a tag), if istiod injected it.
pub fn injected_revision(pod: &Pod) -> Option<&str> {
    let annotations = pod.annotations();
    annotations.get(STATUS_ANNOTATION)?;
    annotations.get(REVISION_LABEL).map(String::as_str)
}

/// The pod has run to its end (Succeeded or Failed): its proxy is gone.
pub fn finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// The tag or revision name that a namespace's labels select for its pods (`default` for
/// `istio-injection=enabled`), before any pod's own labels count; none when they select nothing.
pub fn namespace_selection(labels: &BTreeMap<String, String>) -> Option<&str> {
    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    match selection(labels, &NO_LABELS) {
        Selection::ByNamespace(name) => Some(name),
        Selection::Nothing | Selection::ByPod(_) => None,
    }
}

/// Where a name that labels select leads: a tag to the revision it points at, else the revision
/// of that name while its injector exists, else nowhere (the pod is then created without a proxy,
/// and without an error).
pub struct Resolver<'a> {
    tags: BTreeMap<String, String>,
    injectors: BTreeSet<&'a str>,
}

impl<'a> Resolver<'a> {
    pub fn new(snapshot: &'a MeshSnapshot) -> Self {
        Self {
            tags: tags(snapshot),
            injectors: injector_revisions(snapshot),
        }
    }

    /// The revision `name` (a tag or a revision) leads to, if any.
    pub fn resolve(&self, name: &str) -> Option<String> {
        match self.tags.get(name) {
            Some(revision) => Some(revision.clone()),
            None => self.injectors.contains(name).then(|| name.to_owned()),
        }
    }
}

/// The revisions whose injector exists: MutatingWebhookConfigurations labelled `istio.io/rev`
/// and not `istio.io/tag`.
fn injector_revisions(snapshot: &MeshSnapshot) -> BTreeSet<&str> {
    snapshot
        .injectors
        .iter()
        .map(|webhook| webhook.labels())
        .filter(|labels| !labels.contains_key(TAG_LABEL))
        .filter_map(|labels| labels.get(REVISION_LABEL).map(String::as_str))
        .collect()
}

/// The Deployment has an available replica, so its revision's injector and xDS answer.
fn serves(istiod: &Deployment) -> bool {
    let status = istiod.status.as_ref();
    let available = status.and_then(|s| s.available_replicas).unwrap_or(0) > 0;
    let condition_true = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Available" && c.status == "True");
    available && condition_true
}

fn discovery_version(istiod: &Deployment) -> Option<String> {
    let spec = istiod.spec.as_ref()?.template.spec.as_ref()?;
    let discovery = spec
        .containers
        .iter()
        .find(|c| c.name == DISCOVERY_CONTAINER)?;
    image_tag(discovery.image.as_deref()?)
}

/// What the injector webhooks' selectors decide for a pod: the tag or revision name to resolve,
/// and whose labels decided it.
#[derive(Debug, PartialEq, Eq)]
enum Selection<'a> {
    Nothing,
    ByNamespace(&'a str),
    ByPod(&'a str),
}

/// The selectors' order, which the webhooks encode with `DoesNotExist` on the labels before
/// them: the pod's opt-out, the namespace's `istio-injection`, the namespace's `istio.io/rev`,
/// the pod's `istio.io/rev`, the pod's opt-in.
fn selection<'a>(
    namespace: &'a BTreeMap<String, String>,
    pod: &'a BTreeMap<String, String>,
) -> Selection<'a> {
    let pod_inject = pod.get(POD_INJECT_LABEL).map(String::as_str);
    if pod_inject == Some("false") {
        return Selection::Nothing;
    }
    if let Some(injection) = namespace.get(INJECTION_LABEL) {
        return match injection.as_str() {
            "enabled" => Selection::ByNamespace(DEFAULT_REVISION),
            _ => Selection::Nothing,
        };
    }
    if let Some(name) = namespace.get(REVISION_LABEL) {
        return Selection::ByNamespace(name);
    }
    if let Some(name) = pod.get(REVISION_LABEL) {
        return Selection::ByPod(name);
    }
    match pod_inject {
        Some("true") => Selection::ByPod(DEFAULT_REVISION),
        _ => Selection::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{default_validator, injector, istiod, namespace, pod, tag};
    use super::*;

    const A: &str = "1-31-3";
    const B: &str = "1-31-4";

    /// The namespaces of the note's table of verified pods.
    fn namespaces() -> Vec<Namespace> {
        vec![
            namespace("demo", &[("istio-injection", "enabled")]),
            namespace("legacy", &[("istio.io/rev", A)]),
            namespace("plain", &[]),
            namespace("tagged", &[("istio.io/rev", "default")]),
            namespace("canary", &[("istio.io/rev", B)]),
            namespace("off", &[("istio-injection", "disabled")]),
        ]
    }

    /// A pod: namespace, name, its own labels, and the revision that injected it.
    type Row = (&'static str, &'static str, Labels, Option<&'static str>);
    type Labels = &'static [(&'static str, &'static str)];

    /// Each verified pod: namespace, name, its own labels, and the revision that injected it
    /// (tag default on B), as seen on the plane.
    const VERIFIED: &[Row] = &[
        ("demo", "web", &[], Some(B)),
        ("demo", "demo-pinned-a", &[("istio.io/rev", A)], Some(B)),
        (
            "demo",
            "demo-optout",
            &[("sidecar.istio.io/inject", "false")],
            None,
        ),
        ("legacy", "old", &[], Some(A)),
        ("plain", "pinned-a", &[("istio.io/rev", A)], Some(A)),
        (
            "plain",
            "opt-in",
            &[("sidecar.istio.io/inject", "true")],
            Some(B),
        ),
        ("plain", "none", &[], None),
        ("tagged", "t", &[], Some(B)),
        ("canary", "probe", &[], Some(B)),
        ("off", "quiet", &[("sidecar.istio.io/inject", "true")], None),
    ];

    /// Not in the note's table: what the chart's webhook selectors say (`rev.object` requires
    /// the namespace to have no `istio.io/rev`), so the namespace's revision wins.
    const FROM_SELECTORS: &[Row] = &[("canary", "pinned-a", &[("istio.io/rev", A)], Some(B))];

    fn version(revision: &str) -> &'static str {
        if revision == A { "1.31.3" } else { "1.31.4" }
    }

    /// Both revisions installed, the default tag on B (its validator too), the verified pods,
    /// a pod of demo injected by A before the tag moved, and a Job's finished pod of A.
    fn two_revisions() -> MeshSnapshot {
        let mut pods: Vec<Pod> = VERIFIED
            .iter()
            .map(|(ns, name, labels, by)| {
                pod(ns, name, labels, by.map(|r| (r, version(r))), "Running")
            })
            .collect();
        pods.push(pod(
            "demo",
            "web-before-move",
            &[],
            Some((A, "1.31.3")),
            "Running",
        ));
        pods.push(pod("legacy", "once", &[], Some((A, "1.31.3")), "Succeeded"));
        MeshSnapshot {
            pods,
            namespaces: namespaces(),
            injectors: vec![injector(A), injector(B), tag("default", B)],
            validators: vec![default_validator(B)],
            istiods: vec![istiod(A, "1.31.3", true), istiod(B, "1.31.4", true)],
        }
    }

    fn refs(pods: &[(&str, &str)]) -> Vec<PodRef> {
        pods.iter()
            .map(|(namespace, name)| PodRef {
                namespace: (*namespace).to_owned(),
                name: (*name).to_owned(),
            })
            .collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    /// The selectors' order predicts which revision injected every verified pod.
    #[test]
    fn the_selection_rule_predicts_every_verified_injection() {
        let snapshot = two_revisions();
        let resolver = Resolver::new(&snapshot);
        let namespaces = namespaces();
        for (ns, name, labels, injected_by) in VERIFIED.iter().chain(FROM_SELECTORS) {
            let namespace = namespaces.iter().find(|n| n.name_any() == *ns).unwrap();
            let pod = pod(ns, name, labels, None, "Pending");
            let selected = match selection(namespace.labels(), pod.labels()) {
                Selection::Nothing => None,
                Selection::ByNamespace(name) | Selection::ByPod(name) => resolver.resolve(name),
            };
            assert_eq!(selected.as_deref(), *injected_by, "{ns}/{name}");
        }
    }

    #[test]
    fn running_proxies_selecting_labels_tags_and_the_validator_count_as_use() {
        let usage = revision_usage(&two_revisions());
        assert_eq!(usage.keys().collect::<Vec<_>>(), [A, B]);
        let a = &usage[A];
        assert_eq!(
            a.pods,
            refs(&[
                ("demo", "web-before-move"),
                ("legacy", "old"),
                ("plain", "pinned-a")
            ])
        );
        // demo-pinned-a's own label loses to its namespace's: it selects B, not A.
        assert_eq!(a.selecting_pods, refs(&[("plain", "pinned-a")]));
        assert_eq!(a.namespaces, set(&["legacy"]));
        assert!(a.tags.is_empty());
        assert!(!a.default_validator);
        assert_eq!(a.completed_pods, refs(&[("legacy", "once")]));
        assert!(a.in_use());

        let b = &usage[B];
        assert_eq!(
            b.pods,
            refs(&[
                ("canary", "probe"),
                ("demo", "demo-pinned-a"),
                ("demo", "web"),
                ("plain", "opt-in"),
                ("tagged", "t"),
            ])
        );
        assert_eq!(b.selecting_pods, refs(&[("plain", "opt-in")]));
        assert_eq!(b.namespaces, set(&["canary", "demo", "tagged"]));
        assert_eq!(b.tags, set(&["default"]));
        assert!(b.default_validator);
        assert!(b.completed_pods.is_empty());
    }

    /// Once the pods of A are restarted into B and legacy is relabelled, only A's finished pod
    /// names it: A may go.
    #[test]
    fn a_revision_with_only_finished_pods_is_not_in_use() {
        let mut snapshot = two_revisions();
        // plain/pinned-a, the one pod selecting A by its own label, is among them.
        snapshot
            .pods
            .retain(|p| injected_revision(p) != Some(A) || finished(p));
        snapshot
            .pods
            .push(pod("legacy", "failed", &[], Some((A, "1.31.3")), "Failed"));
        snapshot.namespaces[1] = namespace("legacy", &[("istio.io/rev", B)]);
        let a = &revision_usage(&snapshot)[A];
        assert_eq!(
            a.completed_pods,
            refs(&[("legacy", "failed"), ("legacy", "once")])
        );
        assert!(!a.in_use(), "{a:?}");
        assert!(revision_usage(&snapshot)[B].in_use());
        // A finished pod of a revision long gone is reported, but names no revision.
        let gone = pod(
            "legacy",
            "older",
            &[],
            Some(("1-30-0", "1.30.0")),
            "Succeeded",
        );
        snapshot.pods.push(gone);
        assert!(!revisions(&snapshot).contains_key("1-30-0"));
        assert_eq!(
            revision_usage(&snapshot)["1-30-0"].completed_pods,
            refs(&[("legacy", "older")])
        );
    }

    /// A removed (injector and istiod gone): its running proxy still names it, the namespace
    /// pinned to it selects nothing (a new pod there is created without a proxy).
    #[test]
    fn proxies_of_a_removed_revision_are_use_of_a_revision_that_does_not_exist() {
        let mut snapshot = two_revisions();
        snapshot
            .injectors
            .retain(|w| w.name_any() != "istio-sidecar-injector-1-31-3");
        snapshot.istiods.retain(|d| d.name_any() != "istiod-1-31-3");
        snapshot
            .namespaces
            .push(namespace("stale", &[("istio.io/rev", A)]));
        snapshot
            .pods
            .push(pod("stale", "after-removal", &[], None, "Running"));

        let revisions = revisions(&snapshot);
        assert_eq!(
            revisions[A],
            RevisionInfo::default(),
            "named by proxies only"
        );
        let a = &revision_usage(&snapshot)[A];
        assert!(a.pods.contains(&refs(&[("legacy", "old")])[0]));
        assert!(a.namespaces.is_empty(), "{:?}", a.namespaces);
        assert!(
            a.selecting_pods.is_empty(),
            "pinned-a's label leads nowhere now"
        );
        let resolver = Resolver::new(&snapshot);
        assert_eq!(resolver.resolve(A), None);
        assert_eq!(resolver.resolve("default").as_deref(), Some(B));
    }

    /// A revisionless istiod is revision `default`: `istio-injection=enabled` and pods'
    /// opt-in reach its injector without any tag.
    #[test]
    fn a_revisionless_istiod_is_the_default_revision() {
        let snapshot = MeshSnapshot {
            pods: vec![
                pod("demo", "web", &[], Some(("default", "1.31.4")), "Running"),
                pod(
                    "plain",
                    "opt-in",
                    &[("sidecar.istio.io/inject", "true")],
                    None,
                    "Running",
                ),
            ],
            namespaces: vec![
                namespace("demo", &[("istio-injection", "enabled")]),
                namespace("plain", &[]),
            ],
            injectors: vec![injector("default")],
            validators: vec![default_validator("default")],
            istiods: vec![istiod("default", "1.31.4", false)],
        };
        let usage = revision_usage(&snapshot);
        let default = &usage[DEFAULT_REVISION];
        assert_eq!(default.pods, refs(&[("demo", "web")]));
        assert_eq!(default.selecting_pods, refs(&[("plain", "opt-in")]));
        assert_eq!(default.namespaces, set(&["demo"]));
        assert!(default.tags.is_empty() && default.default_validator);
        let info = &revisions(&snapshot)[DEFAULT_REVISION];
        assert_eq!(
            info,
            &RevisionInfo {
                ready: false,
                version: Some("1.31.4".to_owned()),
                exists: true
            }
        );
    }

    #[test]
    fn tags_and_revisions_come_from_labels() {
        let mut snapshot = two_revisions();
        snapshot.injectors.push(tag("prod", A));
        snapshot.istiods[0] = istiod(A, "1.31.3", false);
        assert_eq!(
            tags(&snapshot),
            [("default", B), ("prod", A)]
                .map(|(t, r)| (t.to_owned(), r.to_owned()))
                .into()
        );
        let revisions = revisions(&snapshot);
        assert_eq!(revisions.keys().collect::<Vec<_>>(), [A, B]);
        assert!(!revisions[A].ready && revisions[A].exists);
        assert!(revisions[B].ready);
        assert_eq!(revisions[B].version.as_deref(), Some("1.31.4"));
        // A tag pointing at a revision that is gone still names it, as not existing.
        snapshot.injectors.push(tag("old", "1-30-0"));
        assert!(!super::revisions(&snapshot)["1-30-0"].exists);
        assert_eq!(revision_usage(&snapshot)["1-30-0"].tags, set(&["old"]));
    }
}
