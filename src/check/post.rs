//! `smm check`: whether the installed mesh works. Components are judged from their workloads
//! now (with the reason when not ready); the webhooks by what the API server does with a
//! server-side dry run sent through them: a pod in an injected namespace must come back with
//! istiod's sidecar, an invalid Istio resource must be refused by istiod's validator. Then the
//! root certificate in the injected namespaces, the proxies' revisions and versions, and the
//! revision tags.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use serde_json::json;

use super::rules;
use super::{Category, CheckError, Finding, api_message, forbidden, unless_forbidden};
use crate::api::{ComponentPhase, ControlPlane};
use crate::cluster::control_plane;
use crate::cluster::mesh_snapshot;
use crate::cluster::workloads::{Readiness, all_ready, overall, summary};
use crate::helm::workloads::component_workloads;
use crate::mesh::revisions::proxies::{ProxyStatus, Skew, proxy_statuses};
use crate::mesh::revisions::usage::{
    DEFAULT_REVISION, MeshSnapshot, POD_INJECT_LABEL, REVISION_LABEL, Resolver, revisions, tags,
};

/// The ConfigMap istiod writes into every namespace it serves: the mesh's root certificate,
/// which proxies need to trust istiod.
const ROOT_CERT_CONFIG_MAP: &str = "istio-ca-root-cert";
/// How many injected namespaces get a dry-run pod: each costs a call through the webhook.
const INJECTION_PROBES: usize = 5;

/// The API server answers, and its version is supported; the one failure when it does not
/// answer (then nothing else can be checked).
pub async fn api_server(client: &Client) -> Result<Vec<Finding>, Finding> {
    match client.apiserver_version().await {
        Ok(info) => Ok(vec![
            Finding::pass(Category::KubernetesApi, "the API server answers"),
            rules::kubernetes_version(&info.major, &info.minor, &info.git_version),
        ]),
        Err(err) => Err(Finding::fail(
            Category::KubernetesApi,
            format!("cannot reach the API server: {err}"),
            "check the kubeconfig and context (`--kubeconfig`, `--context`), and that the cluster is up (`kubectl version`)",
        )),
    }
}

/// Runs every check of the installed mesh of the ControlPlane `name`.
pub async fn post(client: &Client, name: &str) -> Result<Vec<Finding>, CheckError> {
    let mut findings = match api_server(client).await {
        Ok(found) => found,
        Err(unreachable) => return Ok(vec![unreachable]),
    };
    let control_plane = match control_plane::load(client, name).await {
        Ok(Some(control_plane)) => control_plane,
        Ok(None) => {
            findings.push(Finding::fail(
                Category::Components,
                format!("ControlPlane {name} not found"),
                "install the mesh with `smm install -a` or `smm reconcile -f FILE`",
            ));
            return Ok(findings);
        }
        Err(err) if forbidden(&err) => {
            findings.extend(unless_forbidden(Category::Components, Err(err.into()))?);
            return Ok(findings);
        }
        Err(err) => return Err(err.into()),
    };
    findings.extend(components(client, &control_plane).await);
    let mesh_namespace = control_plane.spec.mesh_namespace();
    let snapshot = match mesh_snapshot::read(client, mesh_namespace).await {
        Ok(snapshot) => snapshot,
        Err(err) => {
            findings.extend(unless_forbidden(Category::Webhooks, Err(err.into()))?);
            return Ok(findings);
        }
    };
    if snapshot.istiods.is_empty() {
        findings.push(Finding::warn(
            Category::Webhooks,
            format!("no istiod runs in {mesh_namespace}: nothing injects or validates"),
            "install istiod with `smm install istiod`",
        ));
        return Ok(findings);
    }
    findings.extend(injection(client, &snapshot, mesh_namespace).await);
    findings.push(validation(client, mesh_namespace).await);
    let certificates = root_certificates(client, &snapshot).await;
    findings.extend(unless_forbidden(Category::RootCertificate, certificates)?);
    findings.extend(data_plane(&snapshot));
    findings.extend(revision_tags(&snapshot));
    Ok(findings)
}

/// Each component's workloads, judged now, with the reason when they are not ready.
async fn components(client: &Client, control_plane: &ControlPlane) -> Vec<Finding> {
    let category = Category::Components;
    let Some(status) = &control_plane.status else {
        return vec![Finding::fail(
            category,
            "the ControlPlane was never reconciled",
            "run `smm reconcile -f FILE` or `smm install`, or check the operator's log",
        )];
    };
    let mut findings = Vec::new();
    for (name, component) in &status.components {
        if component.phase == ComponentPhase::Removed {
            continue;
        }
        let hint = format!(
            "see `smm status`; the workloads' events say more (`kubectl get events -n {}`)",
            component
                .release
                .as_ref()
                .map(|r| r.namespace.as_str())
                .unwrap_or("default")
        );
        if component.phase == ComponentPhase::Failed {
            findings.push(Finding::fail(
                category,
                format!(
                    "{name}: Failed: {}",
                    component.message.as_deref().unwrap_or("no reason recorded")
                ),
                hint,
            ));
            continue;
        }
        findings.push(match component_workloads(client, component).await {
            Ok(states) if states.is_empty() => {
                Finding::pass(category, format!("{name}: installed, with no workloads"))
            }
            Ok(states) if all_ready(&states) => Finding::pass(
                category,
                format!("{name}: ready ({} replicas)", summary(&states)),
            ),
            // The words smm status, the conditions and the Events use.
            Ok(states) => {
                let why = match overall(&states) {
                    Readiness::Progressing(why) | Readiness::Failed(why) => why,
                    Readiness::Ready => String::new(),
                };
                Finding::fail(category, format!("{name}: not ready: {why}"), hint)
            }
            Err(err) => Finding::fail(
                category,
                format!("{name}: cannot judge its workloads: {err}"),
                hint,
            ),
        });
    }
    findings
}

/// A dry-run pod in each injected namespace (the first few), or in the mesh's namespace asking
/// for injection by label when none is injected, must come back with the sidecar.
async fn injection(client: &Client, snapshot: &MeshSnapshot, mesh_namespace: &str) -> Vec<Finding> {
    let injected = rules::injected_namespaces(&snapshot.namespaces);
    let resolver = Resolver::new(snapshot);
    let mut findings = Vec::new();
    for (namespace, selected) in &injected {
        if resolver.resolve(selected).is_none() {
            findings.push(Finding::fail(
                Category::Webhooks,
                format!(
                    "namespace {namespace} selects revision {selected:?}, which does not exist: its new pods get no sidecar"
                ),
                format!(
                    "point its label at an existing revision or tag (`smm tag list`), e.g. `smm sidecar-proxy auto-inject on {namespace}`"
                ),
            ));
        }
    }
    let probes: Vec<(String, Option<(&str, String)>)> = match injected.is_empty() {
        true => vec![(mesh_namespace.to_owned(), Some(probe_label(snapshot)))],
        false => injected
            .iter()
            .filter(|(_, selected)| resolver.resolve(selected).is_some())
            .take(INJECTION_PROBES)
            .map(|(namespace, _)| (namespace.clone(), None))
            .collect(),
    };
    for (namespace, label) in probes {
        findings.push(injection_probe(client, &namespace, label).await);
    }
    findings
}

/// The label that asks for injection in a namespace that selects no revision:
/// `sidecar.istio.io/inject=true` reaches the `default` revision's (or tag's) injector; a mesh
/// without one injects only by revision, so the pod names the first revision that exists.
fn probe_label(snapshot: &MeshSnapshot) -> (&'static str, String) {
    if Resolver::new(snapshot).resolve(DEFAULT_REVISION).is_some() {
        return (POD_INJECT_LABEL, "true".to_owned());
    }
    revisions(snapshot)
        .into_iter()
        .find(|(_, info)| info.exists)
        .map(|(revision, _)| (REVISION_LABEL, revision))
        .unwrap_or_else(|| (POD_INJECT_LABEL, "true".to_owned()))
}

/// `label`: the pod's own request for injection, when its namespace makes none.
async fn injection_probe(
    client: &Client,
    namespace: &str,
    label: Option<(&str, String)>,
) -> Finding {
    let category = Category::Webhooks;
    let mut pod: Pod = serde_json::from_value(json!({
        "metadata": {"generateName": "smm-check-injection-"},
        "spec": {"containers": [{"name": "probe", "image": "smm-check.invalid/probe:0"}]},
    }))
    .expect("a literal pod");
    let how = match &label {
        Some((key, value)) => format!("a pod labelled {key}={value} in {namespace}"),
        None => format!("a pod in injected namespace {namespace}"),
    };
    if let Some((key, value)) = label {
        pod.metadata.labels = Some([(key.to_owned(), value)].into());
    }
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let created = Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&dry_run, &pod)
        .await;
    if let Err(err) = &created
        && forbidden(err)
    {
        return may_not_dry_run(format!("pods in {namespace}"), err);
    }
    match created {
        Ok(returned) if rules::has_sidecar(&returned) => {
            Finding::pass(category, format!("{how} gets istiod's sidecar (dry run)"))
        }
        Ok(_) => Finding::fail(
            category,
            format!("{how} was admitted without a sidecar (dry run)"),
            "check that istiod's MutatingWebhookConfiguration exists and selects it (`kubectl get mutatingwebhookconfigurations -l app=sidecar-injector`), and `smm tag list`",
        ),
        Err(err) => Finding::fail(
            category,
            format!("{how} was refused (dry run): {}", api_message(&err)),
            if api_message(&err).contains("failed calling webhook") {
                "istiod's injector cannot be reached: check istiod (`smm status`) and its Service's endpoints; pods of injected namespaces cannot be created until it answers"
            } else {
                "read the refusal: a Pod Security level below privileged refuses the sidecar's istio-init"
            },
        ),
    }
}

/// A dry run of a DestinationRule the CRD's schema accepts but istiod must refuse (an empty
/// host): only istiod's validator says no.
async fn validation(client: &Client, mesh_namespace: &str) -> Finding {
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "DestinationRule");
    let resource = ApiResource::from_gvk(&gvk);
    let invalid: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"generateName": "smm-check-validation-"},
        "spec": {"host": ""},
    }))
    .expect("a literal object");
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answer = Api::<DynamicObject>::namespaced_with(client.clone(), mesh_namespace, &resource)
        .create(&dry_run, &invalid)
        .await;
    match answer {
        Err(err) if forbidden(&err) => {
            may_not_dry_run(format!("destinationrules in {mesh_namespace}"), &err)
        }
        answer => rules::validator_answer(answer.err().map(|err| api_message(&err)).as_deref()),
    }
}

/// A dry run needs the right to create what it sends: without it, the webhooks cannot be
/// judged (the operator's own identity may not create pods).
fn may_not_dry_run(what: String, err: &kube::Error) -> Finding {
    Finding::fail(
        Category::Webhooks,
        format!(
            "cannot check: may not create {what}, not even as a dry run: {}",
            api_message(err)
        ),
        "run `smm check` as a user who may create them",
    )
}

/// istiod's root certificate in every injected namespace.
async fn root_certificates(
    client: &Client,
    snapshot: &MeshSnapshot,
) -> Result<Vec<Finding>, CheckError> {
    let category = Category::RootCertificate;
    let mut missing = Vec::new();
    let injected = rules::injected_namespaces(&snapshot.namespaces);
    for namespace in injected.keys() {
        let found = Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get_opt(ROOT_CERT_CONFIG_MAP)
            .await
            .map_err(|source| CheckError::Read {
                what: "root certificate ConfigMaps",
                source,
            })?;
        if found.is_none() {
            missing.push(namespace.clone());
        }
    }
    Ok(vec![if missing.is_empty() {
        Finding::pass(
            category,
            format!(
                "ConfigMap {ROOT_CERT_CONFIG_MAP} is in every injected namespace ({})",
                injected.len()
            ),
        )
    } else {
        Finding::fail(
            category,
            format!(
                "ConfigMap {ROOT_CERT_CONFIG_MAP} is missing from {}: proxies there cannot trust istiod",
                missing.join(", ")
            ),
            "istiod writes it into every namespace it watches: check that istiod runs and that its discoverySelectors (meshConfig) include these namespaces",
        )
    }])
}

/// Every running proxy's revision exists, and its version is within what Istio supports of its
/// istiod: up to two minor versions behind, none ahead.
fn data_plane(snapshot: &MeshSnapshot) -> Vec<Finding> {
    let category = Category::DataPlane;
    let proxies: Vec<ProxyStatus> = proxy_statuses(snapshot)
        .into_iter()
        .filter(|p| !p.finished)
        .collect();
    let mut problems: BTreeMap<(bool, String), Vec<String>> = BTreeMap::new();
    for proxy in &proxies {
        let pod = format!("{}/{}", proxy.pod.namespace, proxy.pod.name);
        let problem = if proxy.orphaned() {
            Some((
                true,
                format!("revision {} no longer exists", proxy.revision),
            ))
        } else {
            match proxy.skew {
                Some(Skew::Major) => Some((true, "another major version than istiod".to_owned())),
                Some(Skew::Minor(minors)) if minors > 0 => {
                    Some((true, format!("{minors} minor versions ahead of istiod")))
                }
                Some(Skew::Minor(minors)) if minors < -2 => Some((
                    true,
                    format!(
                        "{} minor versions behind istiod (at most 2 are supported)",
                        -minors
                    ),
                )),
                Some(Skew::Minor(minors)) => {
                    Some((false, format!("{} minor versions behind istiod", -minors)))
                }
                _ => None,
            }
        };
        if let Some(problem) = problem {
            problems.entry(problem).or_default().push(pod);
        }
    }
    if problems.is_empty() {
        return vec![Finding::pass(
            category,
            format!(
                "{} proxies run a revision that exists, within the supported version skew",
                proxies.len()
            ),
        )];
    }
    problems
        .into_iter()
        .map(|((fails, problem), pods)| {
            let message = format!("{} proxies: {problem}: {}", pods.len(), listed(&pods));
            let hint = "restart them into a current revision: `smm sidecar-proxy migrate` (or `kubectl rollout restart`)";
            if fails {
                Finding::fail(category, message, hint)
            } else {
                Finding::warn(category, message, hint)
            }
        })
        .collect()
}

/// Up to five names, then how many more.
fn listed(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// Every revision tag points at a revision whose istiod exists and serves.
fn revision_tags(snapshot: &MeshSnapshot) -> Vec<Finding> {
    let category = Category::RevisionTags;
    let revisions = revisions(snapshot);
    let tags = tags(snapshot);
    let mut findings: Vec<Finding> = tags
        .iter()
        .filter_map(|(tag, revision)| match revisions.get(revision) {
            Some(info) if info.exists && info.ready => None,
            Some(info) if info.exists => Some(Finding::warn(
                category,
                format!("tag {tag} points at revision {revision}, whose istiod is not ready"),
                "check istiod with `smm status`",
            )),
            _ => Some(Finding::fail(
                category,
                format!("tag {tag} points at revision {revision}, which does not exist: pods selecting {tag} get no sidecar"),
                format!("point it at an existing revision: `smm tag set {tag} --revision REVISION` (`smm tag list` shows them)"),
            )),
        })
        .collect();
    if findings.is_empty() {
        findings.push(Finding::pass(
            category,
            format!("{} revision tags point at serving revisions", tags.len()),
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::revisions::fixtures::{injector, tag};

    fn snapshot(
        injectors: Vec<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>,
    ) -> MeshSnapshot {
        MeshSnapshot {
            injectors,
            ..MeshSnapshot::default()
        }
    }

    #[test]
    fn the_probe_asks_the_default_injector_or_else_an_existing_revision() {
        let by_default = (POD_INJECT_LABEL, "true".to_owned());
        assert_eq!(
            probe_label(&snapshot(vec![injector("default")])),
            by_default
        );
        assert_eq!(
            probe_label(&snapshot(vec![
                injector("1-31-4"),
                tag("default", "1-31-4")
            ])),
            by_default
        );
        // Only a revisioned istiod (InPlace with spec.revision): the pod names it.
        assert_eq!(
            probe_label(&snapshot(vec![injector("canary")])),
            (REVISION_LABEL, "canary".to_owned())
        );
    }
}
