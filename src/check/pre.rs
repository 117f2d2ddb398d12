//! `smm check --pre`: before an install or an upgrade, whether the cluster is fit for the plan:
//! the API server and its version, the caller's rights for every kind the plan writes, no Istio
//! from anyone else, CRDs that keep every stored version, namespaces that admit the mesh's pods,
//! and release records that fit into helm's Secret. The plan is rendered (helm template), so the
//! checks see exactly what an install would write.

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};

use super::access::{self, PlannedKinds, Written};
use super::rules::{self, ReleaseKey};
use super::{Category, CheckError, Finding, forbidden, read, unless_forbidden};
use crate::api::ControlPlane;
use crate::api::objects::Presence;
use crate::cluster::bundle::keeps_live_bundle;
use crate::cluster::control_plane;
use crate::cluster::objects::dropped_stored_versions;
use crate::desired::resolve::DesiredComponent;
use crate::desired::resolved::Resolved;
use crate::helm::Helm;
use crate::helm::record_size;
use crate::helm::release::ReleaseRef;
use crate::helm::render::{self, RenderRequest};

/// Runs every check before installing `resolved`. When the API server cannot be reached, that
/// is the only finding: nothing else can be judged.
pub async fn pre(
    client: &Client,
    helm: &Helm,
    resolved: &Resolved<'_>,
) -> Result<Vec<Finding>, CheckError> {
    let mut findings = match super::post::api_server(client).await {
        Ok(found) => found,
        Err(unreachable) => return Ok(vec![unreachable]),
    };
    let enabled: Vec<&DesiredComponent<'_>> =
        resolved.components().iter().filter(|d| d.enabled).collect();
    // The charts alone: helm's record holds their manifest, not the objects smm applies itself.
    let requests: Vec<_> = enabled
        .iter()
        .map(|d| RenderRequest {
            native: &[],
            ..d.render_request()
        })
        .collect();
    let rendered = render::render(helm, &requests).await?;
    let mut written: BTreeSet<Written> = enabled
        .iter()
        .flat_map(|d| &d.native)
        .filter(|native| native.presence == Presence::Present)
        .map(|native| Written {
            api_version: native.resource.api_version.clone(),
            kind: native.resource.kind.clone(),
            namespace: native.namespace().unwrap_or_default().to_owned(),
        })
        .collect();
    for (desired, component) in enabled.iter().zip(&rendered) {
        written.extend(Written::from_yaml(
            &component.yaml,
            &desired.release.namespace,
        ));
        findings.push(release_size(desired, &component.yaml)?);
    }
    let release_namespaces = enabled
        .iter()
        .map(|d| d.release.namespace.clone())
        .collect();
    let access = access::check(
        client,
        &written,
        &planned_kinds(&enabled),
        &release_namespaces,
    )
    .await
    .map_err(read("access reviews"));
    findings.extend(unless_forbidden(Category::Permissions, access)?);
    // A caller who may not list ControlPlanes is told so by the permissions above; the other
    // checks then take only the plan's releases for smm's.
    let stored = match control_plane::list(client).await {
        Ok(stored) => stored,
        Err(err) if forbidden(&err) => Vec::new(),
        Err(err) => return Err(err.into()),
    };
    let ours = our_releases(&enabled, &stored);
    let existing = existing_istio(client, &ours).await;
    findings.extend(unless_forbidden(Category::ExistingIstio, existing)?);
    let crds = crds(client, &enabled, &ours).await;
    findings.extend(unless_forbidden(Category::Crds, crds)?);
    let namespaces = namespaces(client, resolved.spec().mesh_namespace()).await;
    findings.extend(unless_forbidden(Category::Namespaces, namespaces)?);
    Ok(findings)
}

/// Whether the record of `desired`'s release fits into helm's Secret.
fn release_size(desired: &DesiredComponent<'_>, manifest: &str) -> Result<Finding, CheckError> {
    let name = desired.name();
    let size =
        record_size::estimate(&desired.chart, &desired.values, manifest).map_err(|source| {
            CheckError::Chart {
                component: name,
                source,
            }
        })?;
    let kib = |bytes: usize| bytes.div_ceil(1024);
    Ok(if size.fits() {
        Finding::pass(
            Category::ReleaseSize,
            format!(
                "{name}: helm's record will be about {} KiB of the {} KiB a Secret holds",
                kib(size.encoded),
                kib(size.limit)
            ),
        )
    } else {
        Finding::fail(
            Category::ReleaseSize,
            format!(
                "{name}: helm's record would be about {} KiB, more than the {} KiB a Secret holds; helm would fail after changing part of the release",
                kib(size.encoded),
                kib(size.limit)
            ),
            format!(
                "make {name}'s valuesOverride smaller (large files belong in a ConfigMap of their own)"
            ),
        )
    })
}

/// The resources of the kinds the plan's CRDs define, which discovery cannot know yet.
fn planned_kinds(enabled: &[&DesiredComponent<'_>]) -> PlannedKinds {
    enabled
        .iter()
        .flat_map(|d| &d.native)
        .filter(|native| native.resource.kind == "CustomResourceDefinition")
        .filter_map(|native| {
            let crd: CustomResourceDefinition =
                serde_json::from_value(serde_json::to_value(native.object()).ok()?).ok()?;
            Some((
                (crd.spec.group.clone(), crd.spec.names.kind.clone()),
                (
                    crd.spec.names.plural.clone(),
                    crd.spec.scope == "Namespaced",
                ),
            ))
        })
        .collect()
}

/// The releases that are smm's: the plan's, and those every stored ControlPlane records, with
/// istiod's revisions.
fn our_releases(
    enabled: &[&DesiredComponent<'_>],
    stored: &[ControlPlane],
) -> BTreeSet<ReleaseKey> {
    let key = |release: ReleaseRef| (release.namespace, release.name);
    let mut ours: BTreeSet<ReleaseKey> = enabled.iter().map(|d| key(d.release.clone())).collect();
    for control_plane in stored {
        let Some(status) = &control_plane.status else {
            continue;
        };
        for component in status.components.values() {
            ours.extend(component.release.as_ref().map(|r| key(ReleaseRef::from(r))));
        }
        let mesh_namespace = control_plane.spec.mesh_namespace();
        for revision in &status.revisions {
            ours.insert((mesh_namespace.to_owned(), revision.release.clone()));
        }
    }
    ours
}

/// istiods, injectors and validators that something other than smm installed, and injectors
/// that would inject the same pods as smm's.
async fn existing_istio(
    client: &Client,
    ours: &BTreeSet<ReleaseKey>,
) -> Result<Vec<Finding>, CheckError> {
    let category = Category::ExistingIstio;
    let hint = "remove the other installation (`istioctl uninstall --purge`, `helm uninstall`), or let smm take its releases over with `--adopt` when they are helm releases of the same charts";
    let mut findings = Vec::new();
    let istiods = Api::<Deployment>::all(client.clone())
        .list(&ListParams::default().labels("app=istiod"))
        .await
        .map_err(read("istiod Deployments"))?;
    for istiod in &istiods {
        if let Some(owner) = rules::foreign_owner(&istiod.metadata, ours) {
            findings.push(Finding::fail(
                category,
                format!(
                    "Deployment {}/{} is an istiod installed by {owner}",
                    istiod.namespace().unwrap_or_default(),
                    istiod.name_any()
                ),
                hint,
            ));
        }
    }
    let injectors = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(read("mutating webhooks"))?;
    for injector in injectors.iter().filter(|w| rules::injects_like_istio(w)) {
        if let Some(owner) = rules::foreign_owner(&injector.metadata, ours) {
            findings.push(Finding::fail(
                category,
                format!(
                    "MutatingWebhookConfiguration {} (installed by {owner}) injects the pods smm's injector injects; the one called last wins (IST0139)",
                    injector.name_any()
                ),
                hint,
            ));
        }
    }
    let validators = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(read("validating webhooks"))?;
    let istio_validator = |w: &&ValidatingWebhookConfiguration| {
        w.webhooks
            .iter()
            .flatten()
            .any(|hook| hook.name.ends_with("validation.istio.io"))
    };
    for validator in validators.iter().filter(istio_validator) {
        if let Some(owner) = rules::foreign_owner(&validator.metadata, ours) {
            findings.push(Finding::fail(
                category,
                format!(
                    "ValidatingWebhookConfiguration {} is Istio's validator, installed by {owner}",
                    validator.name_any()
                ),
                hint,
            ));
        }
    }
    if findings.is_empty() {
        findings.push(Finding::pass(
            category,
            format!(
                "no istiod, injector or validator from another installation ({} istiod, {} webhooks read)",
                istiods.items.len(),
                injectors.items.len() + validators.items.len()
            ),
        ));
    }
    Ok(findings)
}

/// The plan's CRDs against the cluster's: none drops a version objects are stored in, and none
/// belongs to another installation.
async fn crds(
    client: &Client,
    enabled: &[&DesiredComponent<'_>],
    ours: &BTreeSet<ReleaseKey>,
) -> Result<Vec<Finding>, CheckError> {
    let api = Api::<DynamicObject>::all_with(
        client.clone(),
        &kube::discovery::ApiResource::erase::<CustomResourceDefinition>(&()),
    );
    let mut findings = Vec::new();
    let mut compared = 0;
    for native in enabled.iter().flat_map(|d| &d.native) {
        if native.resource.kind != "CustomResourceDefinition" {
            continue;
        }
        let Some(live) = api
            .get_opt(native.name())
            .await
            .map_err(read("CustomResourceDefinitions"))?
        else {
            continue;
        };
        compared += 1;
        // A newer or experimental Gateway API bundle stays as it is: nothing of it is replaced.
        if let Some(reason) = keeps_live_bundle(&live, &native.object()) {
            findings.push(Finding::warn(
                Category::Crds,
                format!("CRD {} will be left as it is: {reason}", native.name()),
                "smm never replaces a newer or experimental Gateway API bundle; make sure the Istio version runs with it",
            ));
            continue;
        }
        let dropped = dropped_stored_versions(&live, &native.object());
        if !dropped.is_empty() {
            findings.push(Finding::fail(
                Category::Crds,
                format!(
                    "CRD {} stores objects as {}, which the new CRD no longer has",
                    native.name(),
                    dropped.join(", ")
                ),
                "migrate the stored objects to a version the new CRD keeps (read and write each back), then remove the old versions from its status.storedVersions",
            ));
        }
        if let Some(owner) = rules::foreign_owner(&live.metadata, ours) {
            findings.push(Finding::fail(
                Category::ExistingIstio,
                format!("CRD {} was installed by {owner}", native.name()),
                "smm applies Istio's CRDs itself and would take them over: remove the other installation first, or make sure it is gone for good",
            ));
        }
    }
    if findings.iter().all(|f| f.category != Category::Crds) {
        findings.push(Finding::pass(
            Category::Crds,
            format!("{compared} CRDs in the cluster keep every stored version"),
        ));
    }
    Ok(findings)
}

/// The mesh's namespace, when it exists, and every namespace labelled for injection.
async fn namespaces(client: &Client, mesh_namespace: &str) -> Result<Vec<Finding>, CheckError> {
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(read("namespaces"))?;
    let injected = rules::injected_namespaces(&namespaces.items);
    let mut findings: Vec<Finding> = namespaces
        .iter()
        .filter_map(|namespace| {
            let name = namespace.name_any();
            if injected.contains_key(&name) {
                Some(rules::namespace_admits(namespace, true))
            } else if name == mesh_namespace {
                Some(rules::namespace_admits(namespace, false))
            } else {
                None
            }
        })
        .collect();
    if !namespaces.iter().any(|n| n.name_any() == mesh_namespace) {
        findings.push(Finding::pass(
            Category::Namespaces,
            format!("namespace {mesh_namespace} will be created"),
        ));
    }
    Ok(findings)
}
