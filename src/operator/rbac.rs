//! The operator's rights: its cluster role, and the roles for the leases it takes. The cluster
//! role is derived: what the operator needs itself, plus what helm needs on every kind a
//! component's chart renders ([`Component::chart_kinds`]) and what the native builders apply.
//! A new chart or builder therefore changes the operator's rights with it; the committed
//! manifest, the Helm chart and the table in `deploy/README.md` are checked against these rules.
//!
//! A kind whose objects have names that no ControlPlane can change ([`NAMED_KINDS`]) is granted
//! by name: the verbs that name an object hold on the objects the builders apply only. Every
//! other kind is granted on any object, because its names follow the ControlPlane's revision,
//! namespaces or values.

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
use crate::mesh::revisions::strategy;

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
/// object), a read of the object, one list per kind to find drift, and the operator's watch of
/// the kind, which tells it about drift as it happens.
const APPLY: &[&str] = &["get", "list", "watch", "create", "patch"];

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The verbs whose check names the object, so that `resourceNames` can limit them. A server-side
/// apply is checked as `patch` on the name and, when it creates the object, as `create` on the
/// name too; `list` and `watch` name none, and neither does a `create` by POST (the name is in
/// the body), which is why only kinds that nothing but the builders' server-side apply creates
/// may be limited to names.
const NAME_ADDRESSED: &[&str] = &[
    "get", "create", "update", "patch", "delete", "bind", "escalate",
];

/// Native kinds granted by name, (API group, resource): a CRD's name is `<plural>.<group>`,
/// fixed by the chart's CRD file whatever a ControlPlane says, and no chart renders one.
const NAMED_KINDS: &[(&str, &str)] = &[("apiextensions.k8s.io", "customresourcedefinitions")];

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
        verbs: &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        why: "helm stores each release revision as a Secret in the release namespace (create, \
              mark the previous superseded, prune history beyond 10, delete on uninstall); smm \
              lists them across namespaces to see releases, and reads a record to find values \
              and deleted objects; the operator watches the records of its releases (metadata \
              only) to act on a hand-made helm upgrade, rollback or uninstall at once; on the \
              primary of a mesh of several clusters smm keeps the mesh's root CA in \
              `smm-system/smm-mesh-root-<meshID>` and creates istiod's `cacerts` from it (and \
              deletes its own on detach)",
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
        why: "readiness of a release's workloads",
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
                         helm creates, updates, patches and deletes them, smm lists them to find \
                         drift, and the operator watches them (metadata only) to act on drift at \
                         once; on any name, since the charts name them after the \
                         ControlPlane's revision, namespaces and values (e.g. \
                         `istiod-clusterrole-<revision>-<namespace>`, \
                         `istio-sidecar-injector-<revision>-<namespace>`)";
/// Why the operator may apply what a native builder returns, and delete it when it is absent.
const NATIVE_WHY: &str = "applied natively by a component's builder (server-side apply), read, \
                          listed to find drift, and watched by the operator (metadata only) to \
                          act on drift at once";
const NATIVE_DELETED_WHY: &str = "deleted by the builder once its component is disabled";
const NATIVE_KEPT_WHY: &str = "never deleted";
/// Why a native kind's verbs that name an object are limited to the objects the builders apply.
const NAMED_WHY: &str = "reads, creates and writes only the objects the builders apply, by \
                         name (their names are fixed whatever the ControlPlane; a server-side \
                         apply that creates one is checked as `create` and `patch` on its name); \
                         `list` cannot be limited to names";
/// Why the native kinds not in [`NAMED_KINDS`] are granted on any object.
const NATIVE_ANY_NAME_WHY: &str = "on any name: the builders name these after the component's \
                                   namespace (`prometheus-<namespace>`), which each ControlPlane \
                                   chooses";
/// Why the operator may create roles with rights it does not hold.
const ESCALATE_WHY: &str = "granting a right requires holding it, unless one may `escalate` \
                            (create roles with more rights) and `bind` (bind roles with more \
                            rights); without these the operator would need every right of every \
                            component itself (see below)";

/// The verbs and the reasons granted on one resource.
struct Right {
    verbs: BTreeSet<&'static str>,
    /// The only objects the verbs of [`NAME_ADDRESSED`] may name; `None` once a grant covers
    /// every object of the resource.
    names: Option<BTreeSet<String>>,
    why: BTreeSet<&'static str>,
}

/// Which objects of a resource a grant covers.
#[derive(Clone, Copy)]
enum Objects<'a> {
    Any,
    Named(&'a BTreeSet<String>),
}

/// Every right of the cluster role, by API group and resource.
type Rights = BTreeMap<(String, String), Right>;

fn grant(
    rights: &mut Rights,
    (group, resource): (&str, &str),
    objects: Objects<'_>,
    verbs: &[&'static str],
    why: &'static str,
) {
    let right = rights
        .entry((group.to_owned(), resource.to_owned()))
        .or_insert_with(|| Right {
            verbs: BTreeSet::new(),
            names: Some(BTreeSet::new()),
            why: BTreeSet::new(),
        });
    right.verbs.extend(verbs);
    right.why.insert(why);
    match (objects, &mut right.names) {
        (Objects::Named(names), Some(granted)) => granted.extend(names.iter().cloned()),
        (Objects::Named(_), None) => {}
        (Objects::Any, names) => *names = None,
    }
}

/// The rights the operator needs to reconcile every ControlPlane with `components`.
fn rights(catalog: &Catalog) -> Rights {
    let mut rights = Rights::new();
    for own in OWN_GRANTS {
        for resource in own.resources {
            grant(
                &mut rights,
                (own.group, resource),
                Objects::Any,
                own.verbs,
                own.why,
            );
        }
    }
    for component in catalog.components() {
        for kind in component.chart_kinds {
            let key = (kind.group, kind.resource);
            grant(&mut rights, key, Objects::Any, MANAGE, CHART_WHY);
        }
    }
    let placements = default_placements(catalog);
    for component in catalog.components() {
        for native in native_kinds(component, &placements) {
            let key = (
                native.resource.group.as_str(),
                native.resource.plural.as_str(),
            );
            let (objects, which) = match NAMED_KINDS.contains(&key) {
                true => (Objects::Named(&native.names), NAMED_WHY),
                false => (Objects::Any, NATIVE_ANY_NAME_WHY),
            };
            let mut verbs = APPLY.to_vec();
            let kept = match native.deleted {
                true => {
                    verbs.push("delete");
                    NATIVE_DELETED_WHY
                }
                false => NATIVE_KEPT_WHY,
            };
            grant(&mut rights, key, objects, &verbs, NATIVE_WHY);
            grant(&mut rights, key, objects, &[], kept);
            grant(&mut rights, key, objects, &[], which);
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

/// One kind a native builder returns: which, the names of its objects, and whether the
/// builder ever wants one deleted.
pub(super) struct NativeKind {
    pub(super) resource: ApiResource,
    names: BTreeSet<String>,
    deleted: bool,
}

/// The kinds `component`'s native builder returns for a ControlPlane that enables it and for
/// one that disables it (the default ControlPlane otherwise, and one with every optional set of
/// native objects on: the Gateway API's CRDs).
pub(super) fn native_kinds(component: &Component, placements: &Placements) -> Vec<NativeKind> {
    let all_on = ControlPlaneSpec {
        gateway_api: Some(crate::api::GatewayApi {
            enabled: Some(true),
        }),
        ..ControlPlaneSpec::default()
    };
    let mut kinds: BTreeMap<(String, String), NativeKind> = BTreeMap::new();
    for (spec, enabled) in [
        (&ControlPlaneSpec::default(), true),
        (&all_on, true),
        (&ControlPlaneSpec::default(), false),
    ] {
        let revision = strategy::active(spec).expect("the default spec has a valid revision");
        let context = ComponentContext {
            spec,
            namespace: &placements[component.name].namespace,
            enabled,
            placements,
            revision: &revision,
        };
        for native in (component.native_objects)(&context) {
            let key = (
                native.resource.group.clone(),
                native.resource.plural.clone(),
            );
            let kind = kinds.entry(key).or_insert_with(|| NativeKind {
                resource: native.resource.clone(),
                names: BTreeSet::new(),
                deleted: false,
            });
            kind.names.insert(native.name().to_owned());
            kind.deleted |= native.presence == Presence::Absent;
        }
    }
    kinds.into_values().collect()
}

/// Where the builtin components go for the default ControlPlane, for their native builders.
pub(super) fn default_placements(catalog: &Catalog) -> Placements {
    catalog.placements(&ControlPlaneSpec::default())
}

/// One rule of the cluster role: the resources of one API group granted the same verbs on the
/// same objects (any object when `names` is empty), and why.
struct GroupedRule {
    group: String,
    resources: Vec<String>,
    verbs: Vec<&'static str>,
    names: Vec<String>,
    why: BTreeSet<&'static str>,
}

/// The verbs of `right` on any object, and those on its names only (none when it has none).
fn split_by_name(right: &Right) -> [(Vec<&'static str>, Vec<String>); 2] {
    let sorted = |verbs: Vec<&'static str>| {
        let mut verbs = verbs;
        verbs.sort_by_key(|verb| VERBS.iter().position(|known| known == verb));
        verbs
    };
    let all: Vec<&'static str> = right.verbs.iter().copied().collect();
    match &right.names {
        None => [(sorted(all), Vec::new()), (Vec::new(), Vec::new())],
        Some(names) => {
            let (named, any) = all
                .into_iter()
                .partition(|verb| NAME_ADDRESSED.contains(verb));
            [
                (sorted(any), Vec::new()),
                (sorted(named), names.iter().cloned().collect()),
            ]
        }
    }
}

/// The rights as rules, one per API group, verb set and set of names.
fn grouped_rules(rights: Rights) -> Vec<GroupedRule> {
    type Key = (String, Vec<&'static str>, Vec<String>);
    let mut grouped: BTreeMap<Key, GroupedRule> = BTreeMap::new();
    for ((group, resource), right) in rights {
        for (verbs, names) in split_by_name(&right) {
            if verbs.is_empty() {
                continue;
            }
            let rule = grouped
                .entry((group.clone(), verbs.clone(), names.clone()))
                .or_insert_with(|| GroupedRule {
                    group: group.clone(),
                    resources: Vec::new(),
                    verbs,
                    names,
                    why: BTreeSet::new(),
                });
            rule.resources.push(resource.clone());
            rule.why.extend(right.why.iter().copied());
        }
    }
    grouped.into_values().collect()
}

/// The builtin catalog, whose components the operator reconciles.
fn builtin_catalog() -> Catalog {
    Catalog::builtin().expect("the builtin catalog is consistent (a unit test checks it)")
}

/// The operator's cluster-wide rights: what lets it reconcile every ControlPlane with the
/// builtin components, on any object of a kind unless the kind's names are fixed.
pub fn cluster_rules() -> Vec<PolicyRule> {
    let catalog = builtin_catalog();
    grouped_rules(rights(&catalog))
        .into_iter()
        .map(|grouped| {
            let resources: Vec<&str> = grouped.resources.iter().map(String::as_str).collect();
            PolicyRule {
                resource_names: (!grouped.names.is_empty()).then_some(grouped.names),
                ..rule(&[&grouped.group], &resources, &grouped.verbs)
            }
        })
        .collect()
}

/// Lease rights per namespace: the leader lease in the operator's namespace (its name is known,
/// so only creating it is unrestricted) and the reconcile leases in smm's own namespace, one per
/// ControlPlane. Those are `smm-reconcile-<ControlPlane>` and ControlPlanes are created after
/// the operator, so `resourceNames` cannot list them and `resourceNames` has no prefix match:
/// the rule covers every Lease in that namespace, which holds nothing but smm's. One role when
/// both namespaces are the same (the default).
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
        let mut table = String::from(
            "| API group | resources | verbs | objects | why |\n| --- | --- | --- | --- | --- |\n",
        );
        for grouped in grouped_rules(rights(&catalog)) {
            let group = match grouped.group.as_str() {
                "" => "core".to_owned(),
                group => format!("`{group}`"),
            };
            let why: Vec<&str> = grouped.why.into_iter().collect();
            let objects = match grouped.names.is_empty() {
                true => "any".to_owned(),
                false => code(&grouped.names),
            };
            table.push_str(&format!(
                "| {group} | {} | {} | {objects} | {} |\n",
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
                .map(|native| match native.deleted {
                    true => format!("`{}`", native.resource.kind),
                    false => format!("`{}` (never deleted)", native.resource.kind),
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
            for NativeKind {
                resource: native,
                deleted,
                ..
            } in native_kinds(component, &placements)
            {
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

    /// The objects of `group`/`resource` that the builtin builders apply for `spec`.
    fn applied_names(spec: &ControlPlaneSpec, group: &str, resource: &str) -> BTreeSet<String> {
        let catalog = builtin_catalog();
        let placements = catalog.placements(spec);
        let revision = strategy::active(spec).unwrap();
        let mut names = BTreeSet::new();
        for component in catalog.components() {
            for enabled in [true, false] {
                let context = ComponentContext {
                    spec,
                    namespace: &placements[component.name].namespace,
                    enabled,
                    placements: &placements,
                    revision: &revision,
                };
                names.extend(
                    (component.native_objects)(&context)
                        .iter()
                        .filter(|native| {
                            native.resource.group == group && native.resource.plural == resource
                        })
                        .map(|native| native.name().to_owned()),
                );
            }
        }
        names
    }

    /// A kind granted by name is granted exactly on the objects the builders apply, whatever
    /// the ControlPlane says (its names must not follow the revision or the namespaces), and
    /// only with verbs that name an object: a rule limited to names never matches `list` or
    /// `watch`, which would then be refused.
    #[test]
    fn named_kinds_are_granted_on_exactly_the_applied_objects() {
        let rules = cluster_rules();
        // Every optional native object on (the Gateway API's CRDs), here and elsewhere.
        let everything = ControlPlaneSpec {
            gateway_api: Some(crate::api::GatewayApi {
                enabled: Some(true),
            }),
            ..ControlPlaneSpec::default()
        };
        let elsewhere = ControlPlaneSpec {
            namespace: Some("mesh-b".to_owned()),
            revision: Some("canary".to_owned()),
            profile: Some(crate::api::Profile::Ambient),
            ..ControlPlaneSpec::default()
        };
        for &(group, resource) in NAMED_KINDS {
            let applied = applied_names(&everything, group, resource);
            assert!(!applied.is_empty(), "{resource}: no builder applies one");
            assert_eq!(applied_names(&elsewhere, group, resource), applied);
            let by_default = applied_names(&ControlPlaneSpec::default(), group, resource);
            assert!(by_default.is_subset(&applied), "{resource}");
            let of_kind = |rule: &&PolicyRule| {
                rule.api_groups.iter().flatten().any(|g| g == group)
                    && rule.resources.iter().flatten().any(|r| r == resource)
            };
            let named: Vec<&PolicyRule> = rules
                .iter()
                .filter(of_kind)
                .filter(|rule| rule.resource_names.is_some())
                .collect();
            assert_eq!(named.len(), 1, "{resource}: {named:?}");
            let names: BTreeSet<String> =
                named[0].resource_names.iter().flatten().cloned().collect();
            assert_eq!(names, applied, "{resource}");
            for rule in rules.iter().filter(of_kind) {
                let by_name = rule.resource_names.is_some();
                for verb in &rule.verbs {
                    assert_eq!(
                        NAME_ADDRESSED.contains(&verb.as_str()),
                        by_name,
                        "{resource}: {verb}"
                    );
                }
            }
        }
        let crds = applied_names(
            &everything,
            "apiextensions.k8s.io",
            "customresourcedefinitions",
        );
        assert!(crds.contains("virtualservices.networking.istio.io"));
        assert!(crds.contains(crate::mesh::gateway_api::GATEWAYS_CRD));
        assert!(grants(
            &named_rules(&rules),
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            &["get", "create", "patch"]
        ));
    }

    /// The rules limited to names.
    fn named_rules(rules: &[PolicyRule]) -> Vec<PolicyRule> {
        rules
            .iter()
            .filter(|rule| rule.resource_names.is_some())
            .cloned()
            .collect()
    }

    /// Only the kinds of [`NAMED_KINDS`] are limited to names: a kind a chart renders or a
    /// builder names after a namespace stays granted on any object.
    #[test]
    fn only_named_kinds_are_limited_to_names() {
        for rule in named_rules(&cluster_rules()) {
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    assert!(
                        NAMED_KINDS.contains(&(group.as_str(), resource.as_str())),
                        "{group}/{resource}"
                    );
                }
            }
        }
    }
}
