//! The judgements of `smm check` that need no cluster: each takes what was read and says pass,
//! warn or fail, with the hint.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{Category, Finding};
use crate::api::objects::MANAGED_BY;
use crate::mesh::revisions::proxies::PROXY_CONTAINER;
use crate::mesh::revisions::usage::REVISION_LABEL;

/// The oldest Kubernetes minor version (of 1.x) the embedded Istio supports: istioctl's own
/// minimum, read from the pinned module at build time.
pub const MIN_KUBERNETES_MINOR: u32 = parse_minor(env!("SMM_ISTIO_MIN_KUBERNETES_MINOR"));

const fn parse_minor(text: &str) -> u32 {
    let bytes = text.as_bytes();
    let mut value = 0;
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i].is_ascii_digit(), "not a number");
        value = value * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    value
}

/// The API server's version against what Istio supports. `minor` may carry a vendor's `+`
/// (`35+` on some managed clusters).
pub fn kubernetes_version(major: &str, minor: &str, git_version: &str) -> Finding {
    let category = Category::KubernetesApi;
    let minor_number = minor.trim_end_matches('+').parse::<u32>().ok();
    match (major, minor_number) {
        ("1", Some(minor)) if minor >= MIN_KUBERNETES_MINOR => Finding::pass(
            category,
            format!(
                "Kubernetes {git_version} is supported (Istio needs 1.{MIN_KUBERNETES_MINOR} or newer)"
            ),
        ),
        ("1", Some(_)) => Finding::fail(
            category,
            format!(
                "Kubernetes {git_version} is older than 1.{MIN_KUBERNETES_MINOR}, the oldest the embedded Istio supports"
            ),
            format!("upgrade the cluster to Kubernetes 1.{MIN_KUBERNETES_MINOR} or newer"),
        ),
        _ => Finding::warn(
            category,
            format!(
                "the API server reports version {major}.{minor} ({git_version}), which smm cannot judge"
            ),
            format!("make sure the cluster runs Kubernetes 1.{MIN_KUBERNETES_MINOR} or newer"),
        ),
    }
}

/// A helm release, by namespace and name.
pub type ReleaseKey = (String, String);

/// helm's annotations naming the release an object belongs to.
const RELEASE_NAME: &str = "meta.helm.sh/release-name";
const RELEASE_NAMESPACE: &str = "meta.helm.sh/release-namespace";

/// Who installed an Istio object that is not smm's, in words; none when it is smm's: applied
/// natively by smm, or part of one of `ours` (the releases of the ControlPlanes in the cluster
/// and of the plan).
pub fn foreign_owner(metadata: &ObjectMeta, ours: &BTreeSet<ReleaseKey>) -> Option<String> {
    let labels = metadata.labels.clone().unwrap_or_default();
    let annotations = metadata.annotations.clone().unwrap_or_default();
    if labels.get(MANAGED_BY).map(String::as_str) == Some("smm") {
        return None;
    }
    match (
        annotations.get(RELEASE_NAMESPACE),
        annotations.get(RELEASE_NAME),
    ) {
        (Some(namespace), Some(name)) => {
            let key = (namespace.clone(), name.clone());
            (!ours.contains(&key)).then(|| format!("helm release {namespace}/{name}"))
        }
        _ => Some(match labels.get(MANAGED_BY) {
            Some(manager) => format!("{manager} (label {MANAGED_BY})"),
            None => match labels.get("operator.istio.io/component") {
                Some(_) => "istioctl or the Istio operator".to_owned(),
                None => "something other than helm or smm".to_owned(),
            },
        }),
    }
}

/// The namespace labels Istio's injection webhooks select on.
const INJECTION_KEYS: [&str; 2] = ["istio-injection", REVISION_LABEL];

/// Whether a mutating webhook configuration injects Istio's sidecar into pods smm's injector
/// would inject: one of its webhooks is Istio's injector, or selects namespaces or pods by
/// Istio's injection labels. Two such webhooks both inject, and the pod gets whichever ran
/// last (Istio's analyzer IST0139).
pub fn injects_like_istio(configuration: &MutatingWebhookConfiguration) -> bool {
    let selects = |selector: Option<&LabelSelector>| {
        selector.is_some_and(|selector| {
            let by_label = selector.match_labels.iter().flatten().map(|(key, _)| key);
            let by_expression = selector.match_expressions.iter().flatten().map(|e| &e.key);
            by_label
                .chain(by_expression)
                .any(|key| INJECTION_KEYS.contains(&key.as_str()))
        })
    };
    configuration.webhooks.iter().flatten().any(|webhook| {
        webhook.name.ends_with("sidecar-injector.istio.io")
            || selects(webhook.namespace_selector.as_ref())
            || selects(webhook.object_selector.as_ref())
    })
}

/// The Pod Security Admission label that enforces a level on a namespace.
const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// Whether `namespace` admits what runs there: it is not being deleted, and when `injected`
/// (its pods get sidecars), its Pod Security level allows the sidecar's `istio-init` container,
/// which needs NET_ADMIN and NET_RAW to redirect traffic: only `privileged` does. In the mesh's
/// own namespace (`injected` false) istiod and the gateways run without it; `restricted` may
/// still refuse a gateway that a user gave more rights, so that is a warning.
pub fn namespace_admits(namespace: &Namespace, injected: bool) -> Finding {
    let category = Category::Namespaces;
    let name = namespace.metadata.name.clone().unwrap_or_default();
    let terminating = namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Finding::fail(
            category,
            format!("namespace {name} is being deleted"),
            format!(
                "wait until namespace {name} is gone (`kubectl get namespace {name}`), then install"
            ),
        );
    }
    let level = namespace
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(ENFORCE_LABEL))
        .map(String::as_str)
        .unwrap_or("privileged");
    match (injected, level) {
        (_, "privileged") => Finding::pass(
            category,
            format!("namespace {name} admits the mesh's pods (Pod Security: {level})"),
        ),
        (true, _) => Finding::fail(
            category,
            format!(
                "namespace {name} is labelled for injection, but its Pod Security level {level:?} refuses the sidecar's istio-init container (it needs NET_ADMIN and NET_RAW)"
            ),
            format!("label it `{ENFORCE_LABEL}=privileged`, or stop injecting it"),
        ),
        (false, "restricted") => Finding::warn(
            category,
            format!("namespace {name} enforces Pod Security \"restricted\""),
            format!(
                "istiod and the gateways run under it, but a gateway given more rights is refused; label it `{ENFORCE_LABEL}=baseline` if one is"
            ),
        ),
        (false, _) => Finding::pass(
            category,
            format!("namespace {name} admits the mesh's pods (Pod Security: {level})"),
        ),
    }
}

/// Whether the API server returned `pod` with Istio's sidecar in it.
pub fn has_sidecar(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|container| container.name == PROXY_CONTAINER)
}

/// How istiod's validator answered the dry run of an Istio resource it must refuse: `refusal`
/// is the API server's error message, none when the resource was accepted.
pub fn validator_answer(refusal: Option<&str>) -> Finding {
    let category = Category::Webhooks;
    let hint_down = "istiod's validation webhook cannot be reached: check istiod with `smm status` and its Service's endpoints";
    match refusal {
        Some(message) if message.contains("denied the request") => Finding::pass(
            category,
            "istiod's validator refuses an invalid DestinationRule".to_owned(),
        ),
        Some(message) if message.contains("failed calling webhook") => Finding::fail(
            category,
            format!("the dry run of an invalid DestinationRule failed: {message}"),
            hint_down,
        ),
        Some(message) => Finding::fail(
            category,
            format!(
                "the dry run of an invalid DestinationRule was refused, but not by istiod: {message}"
            ),
            "check that Istio's CRDs are installed (`smm install base`) and that istiod runs",
        ),
        None => Finding::fail(
            category,
            "an invalid DestinationRule was accepted: istiod's validator did not check it",
            "check that the ValidatingWebhookConfiguration istio-validator-* (or istiod-default-validator) exists and points at a running istiod; with failurePolicy Ignore an unreachable istiod lets anything in",
        ),
    }
}

/// The namespaces whose pods get sidecars, with what their labels select (a revision or a tag).
pub fn injected_namespaces(namespaces: &[Namespace]) -> BTreeMap<String, String> {
    namespaces
        .iter()
        .filter(|namespace| namespace.metadata.deletion_timestamp.is_none())
        .filter_map(|namespace| {
            let labels = namespace.metadata.labels.as_ref()?;
            let selected = crate::mesh::revisions::usage::namespace_selection(labels)?;
            Some((
                namespace.metadata.name.clone().unwrap_or_default(),
                selected.to_owned(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhook;
    use k8s_openapi::api::core::v1::{Container, NamespaceStatus, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use crate::check::Outcome;

    fn labelled(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_minimum_comes_from_the_module_and_versions_are_judged_against_it() {
        let fetched = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/.upstream/istio/min-kubernetes"
        ))
        .unwrap();
        assert_eq!(fetched.trim(), MIN_KUBERNETES_MINOR.to_string());
        let new = MIN_KUBERNETES_MINOR.to_string();
        let old = (MIN_KUBERNETES_MINOR - 1).to_string();
        assert_eq!(kubernetes_version("1", &new, "v1.x").outcome, Outcome::Pass);
        assert_eq!(
            kubernetes_version("1", &format!("{new}+"), "v1.x-gke").outcome,
            Outcome::Pass
        );
        let refused = kubernetes_version("1", &old, "v1.old");
        assert_eq!(refused.outcome, Outcome::Fail);
        assert!(refused.message.contains("v1.old"), "{}", refused.message);
        assert!(refused.hint.unwrap().contains(&format!("1.{new}")));
        assert_eq!(kubernetes_version("", "", "unknown").outcome, Outcome::Warn);
    }

    #[test]
    fn istio_objects_are_foreign_unless_smm_or_one_of_our_releases_made_them() {
        let ours = BTreeSet::from([("istio-system".to_owned(), "istiod".to_owned())]);
        let meta = |labels: &[(&str, &str)], annotations: &[(&str, &str)]| ObjectMeta {
            labels: Some(labelled(labels)),
            annotations: Some(labelled(annotations)),
            ..ObjectMeta::default()
        };
        let ours_by_helm = meta(
            &[],
            &[
                (RELEASE_NAME, "istiod"),
                (RELEASE_NAMESPACE, "istio-system"),
            ],
        );
        assert_eq!(foreign_owner(&ours_by_helm, &ours), None);
        assert_eq!(
            foreign_owner(&meta(&[(MANAGED_BY, "smm")], &[]), &ours),
            None
        );
        let other_release = meta(
            &[],
            &[(RELEASE_NAME, "istiod"), (RELEASE_NAMESPACE, "other")],
        );
        assert_eq!(
            foreign_owner(&other_release, &ours).as_deref(),
            Some("helm release other/istiod")
        );
        assert_eq!(
            foreign_owner(
                &meta(&[("operator.istio.io/component", "Pilot")], &[]),
                &ours
            )
            .as_deref(),
            Some("istioctl or the Istio operator")
        );
        assert_eq!(
            foreign_owner(&meta(&[(MANAGED_BY, "argocd")], &[]), &ours).as_deref(),
            Some("argocd (label app.kubernetes.io/managed-by)")
        );
    }

    #[test]
    fn a_webhook_overlaps_when_it_is_istios_injector_or_selects_by_injection_labels() {
        let configuration = |webhook: MutatingWebhook| MutatingWebhookConfiguration {
            webhooks: Some(vec![webhook]),
            ..MutatingWebhookConfiguration::default()
        };
        let by_name = MutatingWebhook {
            name: "namespace.sidecar-injector.istio.io".to_owned(),
            ..MutatingWebhook::default()
        };
        assert!(injects_like_istio(&configuration(by_name)));
        let by_label = MutatingWebhook {
            name: "inject.example.com".to_owned(),
            namespace_selector: Some(LabelSelector {
                match_labels: Some(labelled(&[("istio-injection", "enabled")])),
                ..LabelSelector::default()
            }),
            ..MutatingWebhook::default()
        };
        assert!(injects_like_istio(&configuration(by_label)));
        let unrelated = MutatingWebhook {
            name: "defaults.example.com".to_owned(),
            object_selector: Some(LabelSelector {
                match_labels: Some(labelled(&[("app", "web")])),
                ..LabelSelector::default()
            }),
            ..MutatingWebhook::default()
        };
        assert!(!injects_like_istio(&configuration(unrelated)));
    }

    #[test]
    fn pod_security_refuses_sidecars_below_privileged_and_a_deleted_namespace_fails() {
        let namespace = |level: Option<&str>| Namespace {
            metadata: ObjectMeta {
                name: Some("apps".to_owned()),
                labels: level.map(|level| labelled(&[(ENFORCE_LABEL, level)])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        assert_eq!(
            namespace_admits(&namespace(None), true).outcome,
            Outcome::Pass
        );
        let baseline = namespace_admits(&namespace(Some("baseline")), true);
        assert_eq!(baseline.outcome, Outcome::Fail);
        assert!(
            baseline.message.contains("NET_ADMIN"),
            "{}",
            baseline.message
        );
        assert_eq!(
            namespace_admits(&namespace(Some("baseline")), false).outcome,
            Outcome::Pass
        );
        assert_eq!(
            namespace_admits(&namespace(Some("restricted")), false).outcome,
            Outcome::Warn
        );
        let mut deleted = namespace(None);
        deleted.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        deleted.status = Some(NamespaceStatus {
            phase: Some("Terminating".to_owned()),
            ..NamespaceStatus::default()
        });
        let finding = namespace_admits(&deleted, false);
        assert_eq!(finding.outcome, Outcome::Fail);
        assert!(finding.message.contains("being deleted"));
    }

    #[test]
    fn a_sidecar_counts_as_a_container_or_a_native_sidecar() {
        let pod = |containers: Vec<&str>, init: Vec<&str>| Pod {
            spec: Some(PodSpec {
                containers: containers
                    .into_iter()
                    .map(|name| Container {
                        name: name.to_owned(),
                        ..Container::default()
                    })
                    .collect(),
                init_containers: Some(
                    init.into_iter()
                        .map(|name| Container {
                            name: name.to_owned(),
                            ..Container::default()
                        })
                        .collect(),
                ),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        assert!(has_sidecar(&pod(vec!["app", PROXY_CONTAINER], vec![])));
        assert!(has_sidecar(&pod(
            vec!["app"],
            vec!["istio-init", PROXY_CONTAINER]
        )));
        assert!(!has_sidecar(&pod(vec!["app"], vec!["istio-init"])));
    }

    #[test]
    fn the_validator_passes_only_when_it_denied_the_request() {
        let denied = "admission webhook \"validation.istio.io\" denied the request: configuration is invalid";
        assert_eq!(validator_answer(Some(denied)).outcome, Outcome::Pass);
        let down = validator_answer(Some(
            "Internal error occurred: failed calling webhook \"validation.istio.io\": connection refused",
        ));
        assert_eq!(down.outcome, Outcome::Fail);
        assert!(down.hint.unwrap().contains("cannot be reached"));
        assert_eq!(validator_answer(None).outcome, Outcome::Fail);
        assert_eq!(
            validator_answer(Some("the server could not find the requested resource")).outcome,
            Outcome::Fail
        );
    }
}
