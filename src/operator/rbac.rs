//! The operator's rights: its cluster role, and the roles for the leases it takes. The cluster
//! role is derived: what the operator needs itself, plus what helm needs on every kind a
//! component's chart renders ([`Component::chart_kinds`]) and what the native builders apply.
//! A new chart or builder therefore changes the operator's rights with it; the committed
//! manifest, the Helm chart and the table in `deploy/README.md` are checked against these rules.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};

use super::controller::LEADER_LEASE;
use super::manifests::{OPERATOR_NAME, namespaced_metadata};
use crate::api::objects::{NativeObject, Presence};
use crate::api::{ControlPlaneSpec, GROUP};
use crate::cluster::lease::LEASE_NAMESPACE;
use kube::api::ApiResource;

use crate::mesh::catalog::{Catalog, Component, ComponentContext, Placements};
use crate::mesh::components::{role_ref, rule, service_account_subject};

/// Every verb the operator is granted, in the order rules list them.
const VERBS: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete", "bind", "escalate",
];

/// What helm (install, upgrade, uninstall, drift repair) does to the objects a chart renders,
/// and what smm does to find drift (list). One verb set for every rendered kind, so a chart may
/// move an object between kinds without an RBAC change.
pub const MANAGE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// What the native builders do to what they apply: server-side apply (which creates a missing
/// object), a read of the object, and one list per kind to find drift.
const APPLY: &[&str] = &["get", "list", "create", "patch"];

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// A right the operator needs for itself, and why.
struct OwnGrant {
    group: &'static str,
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
    why: &'static str,
}

/// What the operator needs whatever the components render: its ControlPlanes, Events, helm's
/// release records, release namespaces, and reading workloads and pods for readiness.
const OWN_GRANTS: &[OwnGrant] = &[
    OwnGrant {
        group: GROUP,
        resources: &["controlplanes"],
        verbs: &["get", "list", "watch", "update", "patch"],
        why: "the controller watches ControlPlanes and adds or removes its finalizer \
              (`smm.dev/uninstall-components`); it never creates or deletes them",
    },
    OwnGrant {
        group: GROUP,
        resources: &["controlplanes/status"],
        verbs: &["get", "update", "patch"],
        why: "conditions (`Ready`, `Reconciling`, `Stalled`) and per-component status are \
              written to the status subresource",
    },
    OwnGrant {
        group: GROUP,
        resources: &["controlplanes/finalizers"],
        verbs: &["update"],
        why: "what the `OwnerReferencesPermissionEnforcement` admission plugin checks before an \
              object may name a ControlPlane as a blocking owner; the operator sets no such \
              owner references today, so this rule is kept for clusters and future code that \
              need it and could be dropped",
    },
    OwnGrant {
        group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        why: "an event per component action; the recorder writes `events.k8s.io/v1` events \
              only and patches one to count a repeat, so core `events` are only read",
    },
    OwnGrant {
        group: "",
        resources: &["secrets"],
        verbs: &["get", "list", "create", "update", "patch", "delete"],
        why: "helm stores each release revision as a Secret in the release namespace (create, \
              mark the previous superseded, prune history beyond 10, delete on uninstall); smm \
              lists them across namespaces to see releases, and reads a record to find values \
              and deleted objects",
    },
    OwnGrant {
        group: "",
        resources: &["namespaces"],
        verbs: &["get", "list", "watch", "create", "patch"],
        why: "each enabled component's namespace is server-side applied before its chart; smm \
              never deletes a namespace; the dashboard lists namespaces to show sidecar \
              injection",
    },
    OwnGrant {
        group: "",
        resources: &["pods", "events"],
        verbs: &["get", "list", "watch"],
        why: "readiness names a workload's pod that cannot be scheduled; the dashboard shows \
              pods' proxies and the ControlPlane's Events",
    },
    OwnGrant {
        group: "apps",
        resources: &["deployments", "statefulsets", "daemonsets"],
        verbs: &["get", "list", "watch"],
        why: "readiness of a release's workloads; the controller watches the Deployments helm \
              deployed to repair drift",
    },
    OwnGrant {
        group: "batch",
        resources: &["jobs"],
        verbs: &["get", "list", "watch"],
        why: "readiness of a release's Jobs",
    },
];

/// Why the operator may manage what a chart renders.
const CHART_WHY: &str = "rendered by a component's chart (see the kinds per component below): \
                         helm creates, updates, patches and deletes them, and smm lists them to \
                         find drift";
/// Why the operator may apply what a native builder returns, and delete it when it is absent.
const NATIVE_WHY: &str = "applied natively by a component's builder (server-side apply), read, \
                          and listed to find drift";
const NATIVE_DELETED_WHY: &str = "deleted by the builder once its component is disabled";
const NATIVE_KEPT_WHY: &str = "never deleted";
/// Why the operator may create roles with rights it does not hold.
const ESCALATE_WHY: &str = "granting a right requires holding it, unless one may `escalate` \
                            (create roles with more rights) and `bind` (bind roles with more \
                            rights); without these the operator would need every right of every \
                            component itself (see below)";

/// The verbs and the reasons granted on one resource.
#[derive(Default)]
struct Right {
    verbs: BTreeSet<&'static str>,
    why: BTreeSet<&'static str>,
}

/// Every right of the cluster role, by API group and resource.
type Rights = BTreeMap<(String, String), Right>;

fn grant(
    rights: &mut Rights,
    group: &str,
    resource: &str,
    verbs: &[&'static str],
    why: &'static str,
) {
    let right = rights
        .entry((group.to_owned(), resource.to_owned()))
        .or_default();
    right.verbs.extend(verbs);
    right.why.insert(why);
}

/// The rights the operator needs to reconcile every ControlPlane with `components`.
fn rights(catalog: &Catalog) -> Rights {
    let mut rights = Rights::new();
    for own in OWN_GRANTS {
        for resource in own.resources {
            grant(&mut rights, own.group, resource, own.verbs, own.why);
        }
    }
    for component in catalog.components() {
        for kind in component.chart_kinds {
            grant(&mut rights, kind.group, kind.resource, MANAGE, CHART_WHY);
        }
    }
    let placements = default_placements(catalog);
    for component in catalog.components() {
        for (native, deleted) in native_kinds(component, &placements) {
            let (group, resource) = (&native.group, &native.plural);
            grant(&mut rights, group, resource, APPLY, NATIVE_WHY);
            if deleted {
                grant(
                    &mut rights,
                    group,
                    resource,
                    &["delete"],
                    NATIVE_DELETED_WHY,
                );
            } else {
                grant(&mut rights, group, resource, &[], NATIVE_KEPT_WHY);
            }
        }
    }
    for ((group, resource), right) in &mut rights {
        let role = group == RBAC_GROUP && (resource == "roles" || resource == "clusterroles");
        if role && right.verbs.contains("create") {
            right.verbs.extend(["bind", "escalate"]);
            right.why.insert(ESCALATE_WHY);
        }
    }
    rights
}

/// The kinds `component`'s native builder returns for a ControlPlane that enables it and for
/// one that disables it (the default ControlPlane otherwise), each with whether the builder
/// ever wants one deleted.
fn native_kinds(component: &Component, placements: &Placements) -> Vec<(ApiResource, bool)> {
    let spec = ControlPlaneSpec::default();
    let mut kinds: BTreeMap<(String, String), (ApiResource, bool)> = BTreeMap::new();
    for enabled in [true, false] {
        let context = ComponentContext {
            spec: &spec,
            namespace: &placements[component.name].namespace,
            enabled,
            placements,
        };
        for native in (component.native_objects)(&context) {
            let key = (
                native.resource.group.clone(),
                native.resource.plural.clone(),
            );
            kinds
                .entry(key)
                .or_insert_with(|| (native.resource.clone(), false))
                .1 |= native.presence == Presence::Absent;
        }
    }
    kinds.into_values().collect()
}

/// Where the builtin components go for the default ControlPlane, for their native builders.
fn default_placements(catalog: &Catalog) -> Placements {
    catalog.placements(&ControlPlaneSpec::default())
}

/// One rule of the cluster role: the resources of one API group granted the same verbs, and
/// why.
struct GroupedRule {
    group: String,
    resources: Vec<String>,
    verbs: Vec<&'static str>,
    why: BTreeSet<&'static str>,
}

/// The rights as rules, one per API group and verb set.
fn grouped_rules(rights: Rights) -> Vec<GroupedRule> {
    let mut grouped: BTreeMap<(String, Vec<&'static str>), GroupedRule> = BTreeMap::new();
    for ((group, resource), right) in rights {
        let mut verbs: Vec<&'static str> = right.verbs.into_iter().collect();
        verbs.sort_by_key(|verb| VERBS.iter().position(|known| known == verb));
        let rule = grouped
            .entry((group.clone(), verbs.clone()))
            .or_insert_with(|| GroupedRule {
                group,
                resources: Vec::new(),
                verbs,
                why: BTreeSet::new(),
            });
        rule.resources.push(resource);
        rule.why.extend(right.why);
    }
    grouped.into_values().collect()
}

/// The builtin catalog, whose components the operator reconciles.
fn builtin_catalog() -> Catalog {
    Catalog::builtin().expect("the builtin catalog is consistent (a unit test checks it)")
}

/// The operator's cluster-wide rights: the least that lets it reconcile every ControlPlane with
/// the builtin components.
pub fn cluster_rules() -> Vec<PolicyRule> {
    let catalog = builtin_catalog();
    grouped_rules(rights(&catalog))
        .into_iter()
        .map(|grouped| {
            let resources: Vec<&str> = grouped.resources.iter().map(String::as_str).collect();
            rule(&[&grouped.group], &resources, &grouped.verbs)
        })
        .collect()
}

/// Lease rights per namespace: the leader lease in the operator's namespace (its name is known,
/// so only creating it is unrestricted) and the reconcile leases in kube-system, one per
/// ControlPlane (names not known in advance). One role when both namespaces are the same.
pub fn lease_roles(namespace: &str) -> Vec<(&str, Vec<PolicyRule>)> {
    const LEASE_VERBS: &[&str] = &["get", "create", "update", "delete"];
    let leases = |verbs: &[&str]| rule(&["coordination.k8s.io"], &["leases"], verbs);
    let leader = vec![
        // `create` cannot be limited to a name: the name is in the body, not the URL.
        leases(&["create"]),
        PolicyRule {
            resource_names: Some(vec![LEADER_LEASE.to_owned()]),
            ..leases(&["get", "update", "delete"])
        },
    ];
    if namespace == LEASE_NAMESPACE {
        vec![(namespace, vec![leases(LEASE_VERBS)])]
    } else {
        vec![
            (namespace, leader),
            (LEASE_NAMESPACE, vec![leases(LEASE_VERBS)]),
        ]
    }
}

/// A Role and the RoleBinding that grants it to the operator, both `smm-operator` in
/// `role_namespace`.
pub(super) fn role_for(
    role_namespace: &str,
    rules: Vec<PolicyRule>,
    operator_namespace: &str,
    presence: Presence,
) -> [NativeObject; 2] {
    let role = Role {
        metadata: namespaced_metadata(OPERATOR_NAME, role_namespace),
        rules: Some(rules),
    };
    let binding = RoleBinding {
        metadata: namespaced_metadata(OPERATOR_NAME, role_namespace),
        role_ref: role_ref("Role", OPERATOR_NAME),
        subjects: Some(vec![service_account_subject(
            OPERATOR_NAME,
            operator_namespace,
        )]),
    };
    [
        NativeObject::new(&role, presence),
        NativeObject::new(&binding, presence),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cluster role as the Markdown table `deploy/README.md` shows, and below it the kinds each
    /// component's chart renders and its builders apply.
    fn cluster_rules_markdown() -> String {
        let catalog = builtin_catalog();
        let code = |items: &[String]| {
            items
                .iter()
                .map(|item| format!("`{item}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let or_none = |text: &str| match text {
            "" => "—".to_owned(),
            text => text.to_owned(),
        };
        let mut table =
            String::from("| API group | resources | verbs | why |\n| --- | --- | --- | --- |\n");
        for grouped in grouped_rules(rights(&catalog)) {
            let group = match grouped.group.as_str() {
                "" => "core".to_owned(),
                group => format!("`{group}`"),
            };
            let why: Vec<&str> = grouped.why.into_iter().collect();
            table.push_str(&format!(
                "| {group} | {} | {} | {} |\n",
                code(&grouped.resources),
                grouped.verbs.join(", "),
                why.join("; "),
            ));
        }
        table.push_str(
            "\n| component | its chart renders | its builders apply |\n| --- | --- | --- |\n",
        );
        let placements = default_placements(&catalog);
        for component in catalog.components() {
            let rendered: Vec<String> = component
                .chart_kinds
                .iter()
                .map(|kind| kind.kind.to_owned())
                .collect();
            let applied: Vec<String> = native_kinds(component, &placements)
                .into_iter()
                .map(|(native, deleted)| match deleted {
                    true => format!("`{}`", native.kind),
                    false => format!("`{}` (never deleted)", native.kind),
                })
                .collect();
            table.push_str(&format!(
                "| `{}` | {} | {} |\n",
                component.name,
                or_none(&code(&rendered)),
                or_none(&applied.join(", ")),
            ));
        }
        table
    }

    /// The tables in `deploy/README.md` are generated; `SMM_UPDATE_README=1 cargo test --lib
    /// readme` rewrites them.
    #[test]
    fn deploy_readme_rbac_tables_are_current() {
        let tables = cluster_rules_markdown();
        crate::generated_docs::assert_section_current("deploy/README.md", "cluster-role", &tables);
    }

    /// Whether `rules` grant every verb of `verbs` on `group`/`resource`.
    fn grants(rules: &[PolicyRule], group: &str, resource: &str, verbs: &[&str]) -> bool {
        verbs.iter().all(|verb| {
            rules.iter().any(|rule| {
                let has = |items: &Option<Vec<String>>, item: &str| {
                    items.iter().flatten().any(|i| i == item)
                };
                has(&rule.api_groups, group)
                    && has(&rule.resources, resource)
                    && rule.verbs.iter().any(|v| v == verb)
            })
        })
    }

    /// Whatever a component's chart renders or its builders apply, the operator may do what
    /// helm and the builders do to it: a chart or builder cannot leave the operator forbidden.
    #[test]
    fn every_kind_the_components_apply_is_granted() {
        let rules = cluster_rules();
        let catalog = builtin_catalog();
        let placements = default_placements(&catalog);
        for component in catalog.components() {
            for kind in component.chart_kinds {
                assert!(
                    grants(&rules, kind.group, kind.resource, MANAGE),
                    "{}: {} is not managed",
                    component.name,
                    kind.kind
                );
            }
            for (native, deleted) in native_kinds(component, &placements) {
                let verbs: &[&str] = if deleted { MANAGE } else { APPLY };
                let verbs: Vec<&str> = verbs
                    .iter()
                    .copied()
                    .filter(|v| *v != "watch" && *v != "update")
                    .collect();
                assert!(
                    grants(&rules, &native.group, &native.plural, &verbs),
                    "{}: {} is not applied",
                    component.name,
                    native.kind
                );
            }
        }
        for role in ["roles", "clusterroles"] {
            assert!(
                grants(&rules, RBAC_GROUP, role, &["bind", "escalate"]),
                "{role}"
            );
        }
    }
}
