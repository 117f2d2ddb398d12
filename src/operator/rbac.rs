//! The operator's rights: its cluster role, and the roles for the leases it takes. Kept apart from
//! the other manifests because `deploy/README.md` documents each rule and the chart repeats them.

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};

use super::controller::LEADER_LEASE;
use super::manifests::{OPERATOR_NAME, namespaced_metadata};
use crate::api::GROUP;
use crate::cluster::lease::LEASE_NAMESPACE;
use crate::cluster::objects::{NativeObject, Presence};
use crate::mesh::components::{role_ref, rule, service_account_subject};

/// What helm (install, upgrade, uninstall, drift repair) and the native builders do to the
/// objects the mesh's charts and builders create.
const MANAGE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// The operator's cluster-wide rights: the least that lets it reconcile every ControlPlane. See
/// the table in `deploy/README.md`; a change here must change the chart and that table too.
pub fn cluster_rules() -> Vec<PolicyRule> {
    vec![
        // Watch ControlPlanes and add or remove the uninstall finalizer (a patch of metadata).
        rule(
            &[GROUP],
            &["controlplanes"],
            &["get", "list", "watch", "update", "patch"],
        ),
        // Report conditions and component status through the status subresource.
        rule(
            &[GROUP],
            &["controlplanes/status"],
            &["get", "update", "patch"],
        ),
        // Set owner references that block deletion of a ControlPlane (clusters that enforce
        // OwnerReferencesPermissionEnforcement check this subresource).
        rule(&[GROUP], &["controlplanes/finalizers"], &["update"]),
        // Events about each reconcile; the event recorder writes events.k8s.io/v1 only, and
        // patches an event to count a repeat.
        rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
        // Helm keeps release records as Secrets in each release namespace (create a revision,
        // mark the previous one superseded, prune history, delete on uninstall), and smm lists
        // them across namespaces to observe releases. Charts may ship Secrets too.
        rule(
            &[""],
            &["secrets"],
            &["get", "list", "create", "update", "patch", "delete"],
        ),
        // Release namespaces are applied (server-side apply creates or patches them), never
        // deleted; the dashboard lists them to show sidecar injection.
        rule(
            &[""],
            &["namespaces"],
            &["get", "list", "watch", "create", "patch"],
        ),
        // Readiness: a workload's pods tell why it is not ready (one the scheduler cannot place);
        // the dashboard shows pods' proxies and the ControlPlane's Events. Read only.
        rule(&[""], &["pods", "events"], &["get", "list", "watch"]),
        rule(&["apps"], &["daemonsets"], &["get", "list", "watch"]),
        rule(&["batch"], &["jobs"], &["get", "list", "watch"]),
        // Namespaced kinds the charts render.
        rule(
            &[""],
            &["serviceaccounts", "services", "configmaps"],
            MANAGE,
        ),
        // Workloads; the operator also watches Deployments to repair drift.
        rule(&["apps"], &["deployments", "statefulsets"], MANAGE),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], MANAGE),
        rule(&["policy"], &["poddisruptionbudgets"], MANAGE),
        // istiod's sidecar injector and config validator.
        rule(
            &["admissionregistration.k8s.io"],
            &[
                "mutatingwebhookconfigurations",
                "validatingwebhookconfigurations",
            ],
            MANAGE,
        ),
        // Istio's CRDs come from a native builder that applies them and never deletes them.
        // list: whether the CRDs are as smm last applied them is read in one list.
        rule(
            &["apiextensions.k8s.io"],
            &["customresourcedefinitions"],
            &["get", "list", "create", "patch"],
        ),
        // Bindings that the charts and native builders create.
        rule(
            &["rbac.authorization.k8s.io"],
            &["clusterrolebindings", "rolebindings"],
            MANAGE,
        ),
        // Roles that the charts and native builders create. Granting a permission requires
        // holding it, unless one may `escalate` (create roles with more rights) and `bind`
        // (bind roles with more rights); without these the operator would need every right of
        // every component itself.
        rule(
            &["rbac.authorization.k8s.io"],
            &["clusterroles", "roles"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete", "bind", "escalate",
            ],
        ),
    ]
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
