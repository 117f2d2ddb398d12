//! Moving workloads to a revision (`smm sidecar-proxy migrate`, and the reconcile under
//! `spec.updateStrategy.updateWorkloads`), planned from what the API server shows: the
//! namespaces labelled for injection whose labels do not lead to the target are relabelled to
//! select it, then the Deployments, StatefulSets and DaemonSets whose running pods carry a proxy
//! of another revision are restarted. Planned again after an interruption, the plan leaves out
//! what already moved, so a migration resumes where it stopped.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde::Serialize;

use super::strategy::DEFAULT_TAG_NAME;
use super::usage::{
    INJECTION_LABEL, MeshSnapshot, REVISION_LABEL, Resolver, finished, injected_revision,
    namespace_selection, revisions, tags,
};
use crate::mesh::injection::{ProtectedNamespace, check_injectable};

/// The label a Deployment's ReplicaSets add to their pods: the ReplicaSet is named
/// `<deployment>-<hash>`.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The workloads of the cluster that may be restarted, as plain objects.
#[derive(Clone, Debug, Default)]
pub struct Workloads {
    pub deployments: Vec<Deployment>,
    pub stateful_sets: Vec<StatefulSet>,
    pub daemon_sets: Vec<DaemonSet>,
}

/// The kinds of workload a migration restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum RestartKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// What to migrate.
#[derive(Clone, Debug)]
pub struct MigrationRequest<'a> {
    /// A revision that runs, or a tag.
    pub to: &'a str,
    /// The namespaces to move; none: every namespace labelled for injection.
    pub namespaces: Option<&'a [String]>,
    /// Where the mesh's istiods run, and the operator's namespaces: never injected.
    pub mesh_namespace: &'a str,
    pub operator_namespaces: &'a [&'a str],
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "--to {to}: no running revision or tag has that name (revisions: {revisions}; tags: \
         {tags})"
    )]
    UnknownTarget {
        to: String,
        revisions: String,
        tags: String,
    },
    #[error("--to {to}: revision {revision}'s istiod is not ready; its pods could not be created")]
    TargetNotReady { to: String, revision: String },
    #[error(
        "namespace {0} is not labelled for injection (istio-injection=enabled or istio.io/rev); \
         turn injection on first (smm sidecar-proxy auto-inject on {0})"
    )]
    NotInjected(String),
    #[error("namespace {0} does not exist")]
    MissingNamespace(String),
    #[error(transparent)]
    Protected(#[from] ProtectedNamespace),
}

/// A namespace's labels to merge (a null value removes the label) so it selects the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Relabel {
    pub namespace: String,
    pub labels: BTreeMap<String, Option<String>>,
}

/// A workload whose running pods carry a proxy of another revision.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Restart {
    pub namespace: String,
    pub kind: RestartKind,
    pub name: String,
    /// The other revisions its pods run.
    pub from: BTreeSet<String>,
}

impl std::fmt::Display for Restart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// What a migration does, in order: relabel, then restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationPlan {
    /// The revision the workloads move to.
    pub revision: String,
    pub relabel: Vec<Relabel>,
    /// Sorted by namespace, kind and name.
    pub restart: Vec<Restart>,
    /// Injected workloads of the namespaces whose pods all run the target already.
    pub up_to_date: usize,
}

/// Plans moving the namespaces of `request` (and their workloads) to its target.
pub fn plan(
    snapshot: &MeshSnapshot,
    workloads: &Workloads,
    request: &MigrationRequest<'_>,
) -> Result<MigrationPlan, MigrationError> {
    let resolver = Resolver::new(snapshot);
    let revision = target(snapshot, &resolver, request.to)?;
    let namespaces = chosen_namespaces(snapshot, request)?;
    // `istio-injection=enabled` is enough where the default tag leads to the target, unless
    // the user named another tag, which the namespaces are then to follow.
    let other_tag = request.to != DEFAULT_TAG_NAME && tags(snapshot).contains_key(request.to);
    let by_default = !other_tag && resolver.resolve(DEFAULT_TAG_NAME).as_deref() == Some(&revision);
    let mut relabel = Vec::new();
    for (namespace, selected) in &namespaces {
        if resolver.resolve(selected).as_deref() == Some(&revision) {
            continue;
        }
        let (set, unset) = if by_default {
            (INJECTION_LABEL, REVISION_LABEL)
        } else {
            (REVISION_LABEL, INJECTION_LABEL)
        };
        let value = if by_default { "enabled" } else { request.to };
        relabel.push(Relabel {
            namespace: namespace.clone(),
            labels: [
                (set.to_owned(), Some(value.to_owned())),
                (unset.to_owned(), None),
            ]
            .into(),
        });
    }
    let running = revisions_by_workload(&snapshot.pods);
    let mut restart = Vec::new();
    let mut up_to_date = 0;
    for (kind, namespace, name) in workload_names(workloads) {
        if !namespaces.contains_key(namespace) {
            continue;
        }
        let Some(on) = running.get(&(kind, namespace, name)) else {
            continue;
        };
        let from: BTreeSet<String> = on.iter().filter(|r| **r != revision).cloned().collect();
        if from.is_empty() {
            up_to_date += 1;
        } else {
            restart.push(Restart {
                namespace: namespace.to_owned(),
                kind,
                name: name.to_owned(),
                from,
            });
        }
    }
    restart.sort();
    Ok(MigrationPlan {
        revision,
        relabel,
        restart,
        up_to_date,
    })
}

/// The revision `to` leads to, which must exist and serve.
fn target(
    snapshot: &MeshSnapshot,
    resolver: &Resolver<'_>,
    to: &str,
) -> Result<String, MigrationError> {
    let known = revisions(snapshot);
    let exists = |revision: &String| known.get(revision).is_some_and(|info| info.exists);
    let Some(revision) = resolver.resolve(to).filter(exists) else {
        let running: Vec<&str> = known
            .iter()
            .filter(|(_, info)| info.exists)
            .map(|(name, _)| name.as_str())
            .collect();
        let tags: Vec<String> = tags(snapshot).into_keys().collect();
        let listed = |names: Vec<&str>| match names.is_empty() {
            true => "none".to_owned(),
            false => names.join(", "),
        };
        return Err(MigrationError::UnknownTarget {
            to: to.to_owned(),
            revisions: listed(running),
            tags: listed(tags.iter().map(String::as_str).collect()),
        });
    };
    if !known[&revision].ready {
        return Err(MigrationError::TargetNotReady {
            to: to.to_owned(),
            revision,
        });
    }
    Ok(revision)
}

/// Each namespace to move, with the tag or revision name its labels select now.
fn chosen_namespaces<'a>(
    snapshot: &'a MeshSnapshot,
    request: &MigrationRequest<'_>,
) -> Result<BTreeMap<String, &'a str>, MigrationError> {
    let labelled: BTreeMap<String, Option<&str>> = snapshot
        .namespaces
        .iter()
        .map(|ns| (ns.name_any(), namespace_selection(ns.labels())))
        .collect();
    let chosen: Vec<String> = match request.namespaces {
        Some(named) => named.to_vec(),
        None => labelled
            .iter()
            .filter(|(_, selected)| selected.is_some())
            .map(|(name, _)| name.clone())
            .collect(),
    };
    let mut namespaces = BTreeMap::new();
    for namespace in chosen {
        check_injectable(
            &namespace,
            request.mesh_namespace,
            request.operator_namespaces,
        )?;
        let selected = match labelled.get(&namespace) {
            None => return Err(MigrationError::MissingNamespace(namespace)),
            Some(None) => return Err(MigrationError::NotInjected(namespace)),
            Some(Some(selected)) => *selected,
        };
        namespaces.insert(namespace, selected);
    }
    Ok(namespaces)
}

type WorkloadKey<'a> = (RestartKind, &'a str, &'a str);

fn workload_names(workloads: &Workloads) -> Vec<WorkloadKey<'_>> {
    fn keys<K: ResourceExt>(kind: RestartKind, objects: &[K]) -> Vec<WorkloadKey<'_>> {
        objects
            .iter()
            .filter_map(|o| {
                Some((
                    kind,
                    o.meta().namespace.as_deref()?,
                    o.meta().name.as_deref()?,
                ))
            })
            .collect()
    }
    [
        keys(RestartKind::Deployment, &workloads.deployments),
        keys(RestartKind::StatefulSet, &workloads.stateful_sets),
        keys(RestartKind::DaemonSet, &workloads.daemon_sets),
    ]
    .concat()
}

/// The revisions the running, injected pods of each workload carry, by their owner: a
/// Deployment's pods through their ReplicaSet (`<deployment>-<pod-template-hash>`). Pods being
/// deleted are left out: they are already on their way out.
fn revisions_by_workload(pods: &[Pod]) -> BTreeMap<WorkloadKey<'_>, BTreeSet<String>> {
    let mut by_workload: BTreeMap<WorkloadKey<'_>, BTreeSet<String>> = BTreeMap::new();
    for pod in pods {
        if finished(pod) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (Some(revision), Some(owner), Some(namespace)) = (
            injected_revision(pod),
            pod.owner_references()
                .iter()
                .find(|o| o.controller == Some(true)),
            pod.metadata.namespace.as_deref(),
        ) else {
            continue;
        };
        let key = match owner.kind.as_str() {
            "ReplicaSet" => {
                let hash = pod.labels().get(POD_TEMPLATE_HASH);
                let deployment =
                    hash.and_then(|hash| owner.name.strip_suffix(hash.as_str())?.strip_suffix('-'));
                deployment.map(|name| (RestartKind::Deployment, namespace, name))
            }
            "StatefulSet" => Some((RestartKind::StatefulSet, namespace, owner.name.as_str())),
            "DaemonSet" => Some((RestartKind::DaemonSet, namespace, owner.name.as_str())),
            _ => None,
        };
        if let Some(key) = key {
            by_workload
                .entry(key)
                .or_default()
                .insert(revision.to_owned());
        }
    }
    by_workload
}

#[cfg(test)]
#[path = "migration_tests.rs"]
mod tests;
