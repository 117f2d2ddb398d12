use serde_json::json;

use super::super::fixtures::{injector, istiod, namespace, pod, tag};
use super::*;

const A: &str = "1-31-3";
const B: &str = "1-31-4";

fn version(revision: &str) -> &'static str {
    if revision == A { "1.31.3" } else { "1.31.4" }
}

/// A running pod of the workload `kind/owner` injected by `revision`, named `<owner>-<n>`.
fn owned(kind: RestartKind, ns: &str, owner: &str, n: usize, revision: &str) -> Pod {
    let mut pod = pod(
        ns,
        &format!("{owner}-{n}"),
        &[],
        Some((revision, version(revision))),
        "Running",
    );
    let (owner_kind, owner_name) = match kind {
        RestartKind::Deployment => {
            pod.labels_mut()
                .insert(POD_TEMPLATE_HASH.to_owned(), "5d8f".to_owned());
            ("ReplicaSet", format!("{owner}-5d8f"))
        }
        RestartKind::StatefulSet => ("StatefulSet", owner.to_owned()),
        RestartKind::DaemonSet => ("DaemonSet", owner.to_owned()),
    };
    pod.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": owner_kind, "name": owner_name, "uid": "u",
            "controller": true,
        }))
        .unwrap(),
    ]);
    pod
}

fn object<K: serde::de::DeserializeOwned>(ns: &str, name: &str) -> K {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}})).unwrap()
}

/// Revisions A and B, the default tag on B and `prod` on A; `on-a` pinned to A with a
/// Deployment half moved and a StatefulSet on A; `demo` following the default tag with a
/// Deployment on B (and a finished and a terminating pod of A) and a DaemonSet on A.
fn cluster() -> (MeshSnapshot, Workloads) {
    use RestartKind::*;
    let mut finished = owned(Deployment, "demo", "api", 9, A);
    finished.status.as_mut().unwrap().phase = Some("Succeeded".to_owned());
    let mut leaving = owned(Deployment, "demo", "api", 8, A);
    leaving.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2026-12-05T10:00:00Z")).unwrap());
    let snapshot = MeshSnapshot {
        pods: vec![
            owned(Deployment, "on-a", "web", 1, A),
            owned(Deployment, "on-a", "web", 2, B),
            owned(StatefulSet, "on-a", "db", 0, A),
            owned(Deployment, "demo", "api", 1, B),
            finished,
            leaving,
            owned(DaemonSet, "demo", "agent", 1, A),
        ],
        namespaces: vec![
            namespace("on-a", &[("istio.io/rev", A)]),
            namespace("demo", &[("istio-injection", "enabled")]),
            namespace("tagged", &[("istio.io/rev", "prod")]),
            namespace("plain", &[]),
        ],
        injectors: vec![injector(A), injector(B), tag("default", B), tag("prod", A)],
        validators: vec![],
        istiods: vec![istiod(A, "1.31.3", true), istiod(B, "1.31.4", true)],
    };
    let workloads = Workloads {
        deployments: vec![
            object("on-a", "web"),
            object("demo", "api"),
            object("plain", "x"),
        ],
        stateful_sets: vec![object("on-a", "db")],
        daemon_sets: vec![object("demo", "agent")],
    };
    (snapshot, workloads)
}

fn request<'a>(to: &'a str, namespaces: Option<&'a [String]>) -> MigrationRequest<'a> {
    MigrationRequest {
        to,
        namespaces,
        mesh_namespace: "istio-system",
        operator_namespaces: &["smm-system"],
    }
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn labels(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
        .collect()
}

fn restart(namespace: &str, kind: RestartKind, name: &str, from: &[&str]) -> Restart {
    Restart {
        namespace: namespace.to_owned(),
        kind,
        name: name.to_owned(),
        from: from.iter().map(|r| (*r).to_owned()).collect(),
    }
}

#[test]
fn to_the_default_tags_revision_namespaces_follow_the_default_tag_and_other_workloads_restart() {
    let (snapshot, workloads) = cluster();
    let chosen = names(&["on-a", "demo"]);
    let plan = plan(&snapshot, &workloads, &request(B, Some(&chosen))).unwrap();
    assert_eq!(plan.revision, B);
    // demo already follows the default tag, which leads to B.
    assert_eq!(
        plan.relabel,
        [Relabel {
            namespace: "on-a".to_owned(),
            labels: labels(&[("istio-injection", Some("enabled")), ("istio.io/rev", None)]),
        }]
    );
    use RestartKind::*;
    assert_eq!(
        plan.restart,
        [
            restart("demo", DaemonSet, "agent", &[A]),
            restart("on-a", Deployment, "web", &[A]),
            restart("on-a", StatefulSet, "db", &[A]),
        ]
    );
    // demo/api: its finished and terminating pods of A do not count.
    assert_eq!(plan.up_to_date, 1);
}

#[test]
fn to_another_tag_namespaces_select_the_tag() {
    let (snapshot, workloads) = cluster();
    let chosen = names(&["demo", "tagged"]);
    let plan = plan(&snapshot, &workloads, &request("prod", Some(&chosen))).unwrap();
    assert_eq!(plan.revision, A);
    assert_eq!(
        plan.relabel,
        [Relabel {
            namespace: "demo".to_owned(),
            labels: labels(&[("istio.io/rev", Some("prod")), ("istio-injection", None)]),
        }]
    );
    assert_eq!(
        plan.restart,
        [restart("demo", RestartKind::Deployment, "api", &[B])]
    );
    assert_eq!(plan.up_to_date, 1, "demo/agent is on A already");
}

/// Once relabelled and restarted, planning again finds nothing left: an interrupted
/// migration resumes with what did not move yet.
#[test]
fn what_moved_already_is_left_out_so_a_migration_resumes() {
    let (mut snapshot, workloads) = cluster();
    snapshot.namespaces[0] = namespace("on-a", &[("istio-injection", "enabled")]);
    snapshot.pods[0] = owned(RestartKind::Deployment, "on-a", "web", 3, B);
    let plan = plan(&snapshot, &workloads, &request(B, None)).unwrap();
    assert_eq!(plan.relabel.len(), 1, "tagged still selects A: {plan:?}");
    use RestartKind::*;
    assert_eq!(
        plan.restart,
        [
            restart("demo", DaemonSet, "agent", &[A]),
            restart("on-a", StatefulSet, "db", &[A]),
        ]
    );
    assert_eq!(plan.up_to_date, 2);
}

#[test]
fn all_covers_the_labelled_namespaces_and_refuses_protected_ones() {
    let (mut snapshot, workloads) = cluster();
    let plan = plan(&snapshot, &workloads, &request(A, None)).unwrap();
    let relabelled: Vec<&str> = plan.relabel.iter().map(|r| r.namespace.as_str()).collect();
    // on-a is pinned to A and tagged selects prod, which leads to A; plain is not labelled.
    assert_eq!(relabelled, ["demo"]);
    let restarted: Vec<String> = plan.restart.iter().map(ToString::to_string).collect();
    assert_eq!(restarted, ["Deployment demo/api", "Deployment on-a/web"]);
    snapshot
        .namespaces
        .push(namespace("smm-system", &[("istio-injection", "enabled")]));
    let err = super::plan(&snapshot, &workloads, &request(A, None)).unwrap_err();
    assert!(matches!(err, MigrationError::Protected(_)), "{err}");
}

#[test]
fn targets_and_namespaces_that_cannot_be_migrated_are_refused() {
    let (mut snapshot, workloads) = cluster();
    let refused = |snapshot: &MeshSnapshot, to: &str, ns: &[&str]| {
        let chosen = names(ns);
        plan(snapshot, &workloads, &request(to, Some(&chosen)))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        refused(&snapshot, "1-30-0", &["demo"]),
        "--to 1-30-0: no running revision or tag has that name (revisions: 1-31-3, 1-31-4; \
         tags: default, prod)"
    );
    assert_eq!(
        refused(&snapshot, B, &["plain"]),
        "namespace plain is not labelled for injection (istio-injection=enabled or \
         istio.io/rev); turn injection on first (smm sidecar-proxy auto-inject on plain)"
    );
    assert_eq!(
        refused(&snapshot, B, &["gone"]),
        "namespace gone does not exist"
    );
    assert!(refused(&snapshot, B, &["kube-system"]).starts_with("refusing"));
    snapshot.istiods[1] = istiod(B, "1.31.4", false);
    assert_eq!(
        refused(&snapshot, "default", &["demo"]),
        "--to default: revision 1-31-4's istiod is not ready; its pods could not be created"
    );
}
