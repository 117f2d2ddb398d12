//! Whether the caller may write what an install writes: a SelfSubjectAccessReview per kind,
//! namespace and verb, as `istioctl x precheck` asks, but for every kind the plan renders rather
//! than a fixed list, plus what smm and helm write beside the charts' objects (the ControlPlane,
//! the lease, helm's records).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::{Api, Client};
use serde_json::Value;

use super::{Category, Finding};
use crate::api::GROUP;
use crate::cluster::lease::LEASE_NAMESPACE;

/// An object the plan writes: its kind and, when namespaced, where.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Written {
    pub api_version: String,
    pub kind: String,
    /// The object's namespace, or its release's when the chart left it out; none for a
    /// cluster-scoped kind (decided by discovery, not by this).
    pub namespace: String,
}

impl Written {
    /// The objects of a rendered YAML stream, `default_namespace` for those that name none.
    pub fn from_yaml(yaml: &str, default_namespace: &str) -> Vec<Self> {
        serde_yaml_ng::Deserializer::from_str(yaml)
            .filter_map(|document| serde::Deserialize::deserialize(document).ok())
            .filter_map(|object: Value| {
                Some(Self {
                    api_version: object["apiVersion"].as_str()?.to_owned(),
                    kind: object["kind"].as_str()?.to_owned(),
                    namespace: object["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or(default_namespace)
                        .to_owned(),
                })
            })
            .collect()
    }
}

/// One permission to check: a resource of a group, in a namespace or cluster-wide.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Access {
    group: String,
    resource: String,
    namespace: Option<String>,
    verb: &'static str,
}

/// What installing and upgrading an object takes: helm creates, reads and patches (or applies)
/// it, and removes it on uninstall or when a chart drops it.
const WRITE_VERBS: [&str; 4] = ["create", "get", "patch", "delete"];

/// Resources of kinds the plan's own CRDs define (none exists yet before an install):
/// `(group, kind)` → `(plural, namespaced)`.
pub type PlannedKinds = BTreeMap<(String, String), (String, bool)>;

/// The permissions the caller lacks to write `written` (objects the plan renders) and smm's
/// own objects for the ControlPlane, with helm's records in each of `release_namespaces`.
pub async fn check(
    client: &Client,
    written: &BTreeSet<Written>,
    planned_kinds: &PlannedKinds,
    release_namespaces: &BTreeSet<String>,
) -> Result<Vec<Finding>, kube::Error> {
    let mut wanted = BTreeSet::new();
    let mut resolved: BTreeMap<(String, String), Option<(String, bool)>> = BTreeMap::new();
    for object in written {
        let key = (object.api_version.clone(), object.kind.clone());
        if !resolved.contains_key(&key) {
            let found =
                resource_of(client, &object.api_version, &object.kind, planned_kinds).await?;
            resolved.insert(key.clone(), found);
        }
        let Some((resource, namespaced)) = resolved[&key].clone() else {
            continue;
        };
        let group = group_of(&object.api_version);
        for verb in WRITE_VERBS {
            wanted.insert(Access {
                group: group.clone(),
                resource: resource.clone(),
                namespace: namespaced.then(|| object.namespace.clone()),
                verb,
            });
        }
    }
    wanted.extend(own_objects(release_namespaces));
    let unknown: Vec<String> = resolved
        .iter()
        .filter(|(_, found)| found.is_none())
        .map(|((api_version, kind), _)| format!("{kind} ({api_version})"))
        .collect();
    let mut findings = denied(client, wanted).await?;
    if !unknown.is_empty() {
        findings.push(Finding::fail(
            Category::Permissions,
            format!(
                "the plan writes kinds this cluster does not serve: {}",
                unknown.join(", ")
            ),
            "install the CRDs that define them first, or disable the components that render them",
        ));
    }
    Ok(findings)
}

/// What smm and helm write beside the rendered objects: the ControlPlane and its status, the
/// reconcile lease, and helm's release records (Secrets) in each release's namespace.
fn own_objects(release_namespaces: &BTreeSet<String>) -> Vec<Access> {
    let access = |group: &str, resource: &str, namespace: Option<&str>, verb| Access {
        group: group.to_owned(),
        resource: resource.to_owned(),
        namespace: namespace.map(str::to_owned),
        verb,
    };
    let mut own = Vec::new();
    for verb in ["create", "get", "list", "patch"] {
        own.push(access(GROUP, "controlplanes", None, verb));
    }
    own.push(access(GROUP, "controlplanes/status", None, "patch"));
    for verb in ["create", "get", "update"] {
        own.push(access(
            "coordination.k8s.io",
            "leases",
            Some(LEASE_NAMESPACE),
            verb,
        ));
    }
    for namespace in release_namespaces {
        for verb in ["create", "get", "list", "update", "delete"] {
            own.push(access("", "secrets", Some(namespace), verb));
        }
    }
    own
}

fn group_of(api_version: &str) -> String {
    api_version
        .rsplit_once('/')
        .map(|(group, _)| group.to_owned())
        .unwrap_or_default()
}

/// The resource (plural) of a kind and whether it is namespaced: from discovery, or from the
/// plan's own CRDs for a kind the cluster does not serve yet; none when neither knows it.
async fn resource_of(
    client: &Client,
    api_version: &str,
    kind: &str,
    planned_kinds: &PlannedKinds,
) -> Result<Option<(String, bool)>, kube::Error> {
    let group = group_of(api_version);
    if let Some(planned) = planned_kinds.get(&(group.clone(), kind.to_owned())) {
        return Ok(Some(planned.clone()));
    }
    let version = api_version.rsplit('/').next().unwrap_or(api_version);
    let gvk = GroupVersionKind::gvk(&group, version, kind);
    match kube::discovery::pinned_kind(client, &gvk).await {
        Ok((resource, capabilities)) => Ok(Some((
            resource.plural,
            capabilities.scope == Scope::Namespaced,
        ))),
        Err(kube::Error::Discovery(_)) => Ok(None),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(err) => Err(err),
    }
}

/// How many reviews are in flight at once.
const CONCURRENT_REVIEWS: usize = 8;

/// One finding per resource and namespace with a denied verb; one pass when nothing is.
async fn denied(client: &Client, wanted: BTreeSet<Access>) -> Result<Vec<Finding>, kube::Error> {
    use futures::{StreamExt, TryStreamExt};
    let api = Api::<SelfSubjectAccessReview>::all(client.clone());
    let reviewed = wanted.len();
    let answers: Vec<(Access, bool)> = futures::stream::iter(wanted.into_iter().map(|access| {
        let api = api.clone();
        async move {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(access.group.clone()),
                        resource: Some(access.resource.clone()),
                        namespace: access.namespace.clone(),
                        verb: Some(access.verb.to_owned()),
                        ..ResourceAttributes::default()
                    }),
                    ..SelfSubjectAccessReviewSpec::default()
                },
                ..SelfSubjectAccessReview::default()
            };
            let answer = api.create(&PostParams::default(), &review).await?;
            let allowed = answer.status.is_some_and(|status| status.allowed);
            Ok::<_, kube::Error>((access, allowed))
        }
    }))
    .buffer_unordered(CONCURRENT_REVIEWS)
    .try_collect()
    .await?;
    let mut missing: BTreeMap<(String, String, Option<String>), Vec<&'static str>> =
        BTreeMap::new();
    for (access, _) in answers.into_iter().filter(|(_, allowed)| !allowed) {
        missing
            .entry((access.group, access.resource, access.namespace))
            .or_default()
            .push(access.verb);
    }
    if missing.is_empty() {
        return Ok(vec![Finding::pass(
            Category::Permissions,
            format!("may write every kind the plan writes ({reviewed} access reviews)"),
        )]);
    }
    Ok(missing
        .into_iter()
        .map(|((group, resource, namespace), mut verbs)| {
            verbs.sort_unstable();
            let resource = match group.as_str() {
                "" => resource,
                group => format!("{resource}.{group}"),
            };
            let place = match &namespace {
                Some(namespace) => format!("in namespace {namespace}"),
                None => "cluster-wide".to_owned(),
            };
            Finding::fail(
                Category::Permissions,
                format!("may not {} {resource} {place}", verbs.join(", ")),
                format!(
                    "grant them, e.g. a {} with rule resources [{resource}] verbs [{}], bound to this user; or run as a cluster admin",
                    if namespace.is_some() { "Role" } else { "ClusterRole" },
                    verbs.join(", ")
                ),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_objects_take_their_namespace_or_the_releases() {
        let yaml = "---\n# smm component: x\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: b\n  namespace: other\n---\n# only a comment\n";
        assert_eq!(
            Written::from_yaml(yaml, "istio-system"),
            vec![
                Written {
                    api_version: "v1".to_owned(),
                    kind: "ConfigMap".to_owned(),
                    namespace: "istio-system".to_owned(),
                },
                Written {
                    api_version: "apps/v1".to_owned(),
                    kind: "Deployment".to_owned(),
                    namespace: "other".to_owned(),
                },
            ]
        );
        assert_eq!(group_of("v1"), "");
        assert_eq!(
            group_of("rbac.authorization.k8s.io/v1"),
            "rbac.authorization.k8s.io"
        );
    }

    #[test]
    fn smm_checks_its_own_objects_and_helms_records_in_each_release_namespace() {
        let own = own_objects(&BTreeSet::from([
            "istio-system".to_owned(),
            "gw".to_owned(),
        ]));
        let secrets: BTreeSet<_> = own
            .iter()
            .filter(|a| a.resource == "secrets")
            .map(|a| a.namespace.clone().unwrap())
            .collect();
        assert_eq!(
            secrets,
            BTreeSet::from(["gw".to_owned(), "istio-system".to_owned()])
        );
        assert!(
            own.iter()
                .any(|a| a.resource == "controlplanes/status" && a.verb == "patch")
        );
        assert!(
            own.iter()
                .any(|a| a.resource == "leases" && a.verb == "update")
        );
    }
}
