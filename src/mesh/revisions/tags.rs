//! The revision tags smm owns, as native objects: per tag the injector webhook configuration
//! `istio-revision-tag-<tag>` (the names and selectors Istio's own tags have, so istiod and
//! istioctl recognise it: istiod reads the default revision from the `default` tag's
//! `istio.io/rev` label), and for the `default` tag the mesh-wide validator
//! `istiod-default-validator`. They are applied only once the revision they point at is Ready,
//! so moving a tag never sends pods to an istiod that does not answer yet.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use super::strategy::{DEFAULT_TAG_NAME, istiod_service};
use super::usage::{DEFAULT_VALIDATOR, REVISION_LABEL, TAG_LABEL};
use crate::api::objects::NativeObject;
use crate::mesh::components::native_metadata;

/// The `smm.dev/component` label of the objects this module builds.
pub const COMPONENT_LABEL_VALUE: &str = "revision-tags";

/// The name of the injector webhook configuration of `tag` for a mesh in `namespace`.
pub fn tag_webhook_name(tag: &str, namespace: &str) -> String {
    if namespace == "istio-system" {
        format!("istio-revision-tag-{tag}")
    } else {
        format!("istio-revision-tag-{tag}-{namespace}")
    }
}

/// The objects of `tags` (tag → revision) for the mesh in `namespace`, present; and absent for
/// every tag in `previous` (tag names smm applied before) that is no longer asked for.
pub fn tag_objects(
    tags: &BTreeMap<String, String>,
    previous: &[String],
    namespace: &str,
) -> Vec<NativeObject> {
    let mut objects = Vec::new();
    for (tag, revision) in tags {
        objects.push(NativeObject::present(&tag_webhook(
            tag, revision, namespace,
        )));
        if tag == DEFAULT_TAG_NAME {
            objects.push(NativeObject::present(&default_validator(
                revision, namespace,
            )));
        }
    }
    for gone in previous.iter().filter(|tag| !tags.contains_key(*tag)) {
        let mut webhook = MutatingWebhookConfiguration::default();
        webhook.metadata.name = Some(tag_webhook_name(gone, namespace));
        objects.push(NativeObject::absent(&webhook));
        if gone == DEFAULT_TAG_NAME {
            let mut validator = ValidatingWebhookConfiguration::default();
            validator.metadata.name = Some(DEFAULT_VALIDATOR.to_owned());
            objects.push(NativeObject::absent(&validator));
        }
    }
    objects
}

fn labelled(name: String, tag: &str, revision: &str) -> ObjectMeta {
    let mut metadata = native_metadata(name, COMPONENT_LABEL_VALUE);
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(TAG_LABEL.to_owned(), tag.to_owned());
    labels.insert(REVISION_LABEL.to_owned(), revision.to_owned());
    metadata
}

/// A label requirement.
fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

fn selector(requirements: Vec<LabelSelectorRequirement>) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_expressions: Some(requirements),
        match_labels: None,
    })
}

fn service(revision: &str, namespace: &str, path: &str) -> WebhookClientConfig {
    WebhookClientConfig {
        service: Some(ServiceReference {
            name: istiod_service(revision),
            namespace: namespace.to_owned(),
            path: Some(path.to_owned()),
            port: Some(443),
        }),
        // istiod patches its CA in, as it does on its own webhooks.
        ca_bundle: None,
        url: None,
    }
}

/// The injector webhooks of `tag`: pods in namespaces labelled `istio.io/rev=<tag>`, pods
/// labelled so in unlabelled namespaces, and for `default` also what the revisionless injector
/// takes (`istio-injection=enabled` namespaces, `sidecar.istio.io/inject=true` pods).
fn tag_webhook(tag: &str, revision: &str, namespace: &str) -> MutatingWebhookConfiguration {
    let not_disabled = || requirement("sidecar.istio.io/inject", "NotIn", &["false"]);
    let no_namespace_labels = || {
        vec![
            requirement(REVISION_LABEL, "DoesNotExist", &[]),
            requirement("istio-injection", "DoesNotExist", &[]),
        ]
    };
    let mut selectors = vec![
        (
            "rev.namespace.",
            vec![
                requirement(REVISION_LABEL, "In", &[tag]),
                requirement("istio-injection", "DoesNotExist", &[]),
            ],
            vec![not_disabled()],
        ),
        (
            "rev.object.",
            no_namespace_labels(),
            vec![not_disabled(), requirement(REVISION_LABEL, "In", &[tag])],
        ),
    ];
    if tag == DEFAULT_TAG_NAME {
        selectors.push((
            "namespace.",
            vec![requirement("istio-injection", "In", &["enabled"])],
            vec![not_disabled()],
        ));
        selectors.push((
            "object.",
            no_namespace_labels(),
            vec![
                requirement("sidecar.istio.io/inject", "In", &["true"]),
                requirement(REVISION_LABEL, "DoesNotExist", &[]),
            ],
        ));
    }
    let webhooks = selectors
        .into_iter()
        .map(|(prefix, namespaces, objects)| MutatingWebhook {
            name: format!("{prefix}sidecar-injector.istio.io"),
            client_config: service(revision, namespace, "/inject"),
            rules: Some(vec![RuleWithOperations {
                operations: Some(vec!["CREATE".to_owned()]),
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".to_owned()]),
                resources: Some(vec!["pods".to_owned()]),
                scope: None,
            }]),
            // As Istio's own injector: a pod that must get a proxy is not created without one.
            failure_policy: Some("Fail".to_owned()),
            reinvocation_policy: Some("Never".to_owned()),
            side_effects: "None".to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            namespace_selector: selector(namespaces),
            object_selector: selector(objects),
            match_conditions: None,
            match_policy: None,
            timeout_seconds: None,
        })
        .collect();
    let mut metadata = labelled(tag_webhook_name(tag, namespace), tag, revision);
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("app".to_owned(), "sidecar-injector".to_owned());
    MutatingWebhookConfiguration {
        metadata,
        webhooks: Some(webhooks),
    }
}

/// The validator of Istio config that carries no revision label, sent to `revision`'s istiod.
/// Its failure policy is left to the API server's default (`Fail`) and to istiod (which sets
/// `Fail` when it patches its CA in): owning it would make every apply of smm's (after istiod
/// wrote the object, smm applies it again) undo istiod's. It is applied only once the
/// revision's istiod is Ready, so the closed window before istiod patches its CA is short.
fn default_validator(revision: &str, namespace: &str) -> ValidatingWebhookConfiguration {
    let mut metadata = labelled(DEFAULT_VALIDATOR.to_owned(), DEFAULT_TAG_NAME, revision);
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("app".to_owned(), "istiod".to_owned());
    let groups = [
        "security.istio.io",
        "networking.istio.io",
        "telemetry.istio.io",
        "extensions.istio.io",
    ];
    ValidatingWebhookConfiguration {
        metadata,
        webhooks: Some(vec![ValidatingWebhook {
            name: "validation.istio.io".to_owned(),
            client_config: service(revision, namespace, "/validate"),
            rules: Some(vec![RuleWithOperations {
                operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
                api_groups: Some(groups.iter().map(|g| (*g).to_owned()).collect()),
                api_versions: Some(vec!["*".to_owned()]),
                resources: Some(vec!["*".to_owned()]),
                scope: None,
            }]),
            failure_policy: None,
            side_effects: "None".to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            // Config labelled for a revision is that revision's validator's to check.
            object_selector: selector(vec![requirement(REVISION_LABEL, "DoesNotExist", &[])]),
            namespace_selector: None,
            match_conditions: None,
            match_policy: None,
            timeout_seconds: None,
        }]),
    }
}

/// The webhooks of a revisionless istiod's injector (`istio-sidecar-injector`) that would still
/// inject pods the `default` tag now sends elsewhere: Kubernetes calls mutating webhooks in the
/// order of their configurations' names, and Istio re-injects an injected pod, so the
/// revisionless injector, called after `istio-revision-tag-default`, would win. Returns the
/// configuration with those webhooks made to match no namespace (what `istioctl tag set
/// default` does), or `None` when nothing needs to change.
pub fn deactivate_revisionless(
    injector: &MutatingWebhookConfiguration,
) -> Option<MutatingWebhookConfiguration> {
    let never = requirement("istio.io/deactivated", "In", &["never-match"]);
    let mut changed = injector.clone();
    let mut any = false;
    for webhook in changed.webhooks.iter_mut().flatten() {
        let selector = webhook
            .namespace_selector
            .get_or_insert_with(LabelSelector::default);
        let expressions = selector.match_expressions.get_or_insert_with(Vec::new);
        if !expressions.contains(&never) {
            expressions.push(never.clone());
            any = true;
        }
    }
    any.then_some(changed)
}

/// The revisionless injector's name for a mesh in `namespace`.
pub fn revisionless_injector_name(namespace: &str) -> String {
    if namespace == "istio-system" {
        "istio-sidecar-injector".to_owned()
    } else {
        format!("istio-sidecar-injector-{namespace}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::objects::Presence;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(t, r)| ((*t).to_owned(), (*r).to_owned()))
            .collect()
    }

    fn json(object: &NativeObject) -> serde_json::Value {
        serde_json::to_value(object.object()).unwrap()
    }

    #[test]
    fn the_default_tag_takes_the_default_selectors_and_the_validator() {
        let objects = tag_objects(&tags(&[("default", "1-31-4")]), &[], "istio-system");
        let names: Vec<_> = objects.iter().map(NativeObject::name).collect();
        assert_eq!(names, ["istio-revision-tag-default", DEFAULT_VALIDATOR]);
        let webhook = json(&objects[0]);
        assert_eq!(webhook["metadata"]["labels"]["istio.io/tag"], "default");
        assert_eq!(webhook["metadata"]["labels"]["istio.io/rev"], "1-31-4");
        let hooks: Vec<_> = webhook["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            hooks,
            [
                "rev.namespace.sidecar-injector.istio.io",
                "rev.object.sidecar-injector.istio.io",
                "namespace.sidecar-injector.istio.io",
                "object.sidecar-injector.istio.io",
            ]
        );
        for hook in webhook["webhooks"].as_array().unwrap() {
            assert_eq!(hook["clientConfig"]["service"]["name"], "istiod-1-31-4");
            assert_eq!(hook["clientConfig"]["service"]["path"], "/inject");
            assert!(hook["clientConfig"].get("caBundle").is_none());
        }
        let namespace_hook = &webhook["webhooks"][2];
        assert_eq!(
            namespace_hook["namespaceSelector"]["matchExpressions"][0],
            serde_json::json!({"key": "istio-injection", "operator": "In", "values": ["enabled"]})
        );
        let validator = json(&objects[1]);
        assert_eq!(
            validator["webhooks"][0]["clientConfig"]["service"]["name"],
            "istiod-1-31-4"
        );
        assert_eq!(validator["metadata"]["labels"]["istio.io/rev"], "1-31-4");
    }

    #[test]
    fn other_tags_select_only_their_name_and_gone_tags_are_removed() {
        let objects = tag_objects(
            &tags(&[("canary", "default")]),
            &["default".to_owned(), "canary".to_owned(), "old".to_owned()],
            "mesh",
        );
        let summary: Vec<_> = objects
            .iter()
            .map(|o| (o.name().to_owned(), o.presence))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "istio-revision-tag-canary-mesh".to_owned(),
                    Presence::Present
                ),
                (
                    "istio-revision-tag-default-mesh".to_owned(),
                    Presence::Absent
                ),
                (DEFAULT_VALIDATOR.to_owned(), Presence::Absent),
                ("istio-revision-tag-old-mesh".to_owned(), Presence::Absent),
            ]
        );
        let webhook = json(&objects[0]);
        assert_eq!(webhook["webhooks"].as_array().unwrap().len(), 2);
        // A tag on the revisionless istiod sends pods to its Service, `istiod`.
        assert_eq!(
            webhook["webhooks"][0]["clientConfig"]["service"]["name"],
            "istiod"
        );
    }

    #[test]
    fn the_revisionless_injector_is_deactivated_once() {
        let objects = tag_objects(&tags(&[("default", "x")]), &[], "istio-system");
        let mut injector: MutatingWebhookConfiguration =
            serde_json::from_value(json(&objects[0])).unwrap();
        let deactivated = deactivate_revisionless(&injector).unwrap();
        for webhook in deactivated.webhooks.as_ref().unwrap() {
            let expressions = webhook
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_expressions
                .as_ref()
                .unwrap();
            assert!(expressions.iter().any(|e| e.key == "istio.io/deactivated"));
        }
        assert!(deactivate_revisionless(&deactivated).is_none());
        injector.webhooks = None;
        assert!(deactivate_revisionless(&injector).is_none());
    }
}
