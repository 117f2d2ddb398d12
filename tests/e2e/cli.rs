//! The `smm` binary's imperative and reconciler modes against the real cluster and real helm.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};

use smm::api::ControlPlane;
use smm::cluster::lease::{Holder, Predecessor, reconcile_lock};
use smm::mesh::catalog::Catalog;

use crate::support::{
    LocalIstiod, TestCluster, assert_success, ensure_control_plane_crd, fresh_control_plane,
    istio_mesh_lock, smm, smm_with_env, stdout, unique_name,
};

fn phases(status_json: &str) -> BTreeMap<String, String> {
    let status: Value = serde_json::from_str(status_json).unwrap();
    status["components"]
        .as_object()
        .map(|components| {
            components
                .iter()
                .map(|(name, s)| (name.clone(), s["phase"].as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The components of the sidecar profile on a cluster of no named network, which `install -a`
/// installs there.
fn sidecar_profile(catalog: &Catalog) -> Vec<&'static str> {
    catalog
        .components()
        .iter()
        .filter(|component| component.enabled_in_profile != Some(smm::api::Profile::Ambient))
        .filter(|component| !component.network_gateway)
        .map(|component| component.name)
        .collect()
}

/// Components of the sidecar profile nothing else depends on, istiod aside (the flow changes
/// its values instead).
fn leaves(catalog: &Catalog) -> Vec<&'static str> {
    sidecar_profile(catalog)
        .into_iter()
        .filter(|name| catalog.dependents_of(name).is_empty() && *name != "istiod")
        .collect()
}

#[tokio::test]
async fn imperative_and_reconciler_modes_end_to_end() {
    let cluster = TestCluster::connect().await;
    let _lock = istio_mesh_lock().await;
    let catalog = Catalog::builtin().unwrap();
    let (cp, namespace) = fresh_control_plane(&cluster).await;
    let cp_flag = ["--control-plane", cp.as_str()];

    // install one: istiod brings base along.
    let output = smm(&[&["install", "istiod", "-o", "json"], &cp_flag[..]].concat());
    assert_success(&output);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let installed: Vec<&str> = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(installed, ["base", "istiod"]);
    // The gateways' pods are admitted only through istiod's injector, which must be running.
    let istiod = LocalIstiod::start(&namespace, "");

    // install all, then status says every component of the (sidecar) profile is Available and
    // exits 0; the ambient node agents were never installed, so status has nothing on them.
    assert_success(&smm(&[&["install", "-a"], &cp_flag[..]].concat()));
    let status = smm(&[&["status", "-o", "json"], &cp_flag[..]].concat());
    assert_success(&status);
    let all_available: BTreeMap<String, String> = sidecar_profile(&catalog)
        .into_iter()
        .map(|name| (name.to_owned(), "Available".to_owned()))
        .collect();
    assert_eq!(phases(&stdout(&status)), all_available);

    // Uninstalling what others depend on is refused, naming them.
    let refused = smm(&[&["uninstall", "base"], &cp_flag[..]].concat());
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot uninstall base"));

    // uninstall one leaf component.
    let leaves = leaves(&catalog);
    assert!(
        leaves.len() >= 3,
        "the flow needs three leaf components besides istiod: {leaves:?}"
    );
    let first_leaf = leaves[0];
    assert_success(&smm(&[&["uninstall", first_leaf], &cp_flag[..]].concat()));
    let status = smm(&[&["status", "-o", "json"], &cp_flag[..]].concat());
    assert_eq!(phases(&stdout(&status))[first_leaf], "Removed");

    // reconcile from a file: disable two components, change one's values. Dry run first.
    let to_disable: Vec<&str> = leaves.iter().rev().take(2).copied().collect();
    let mut components: serde_json::Map<String, Value> = sidecar_profile(&catalog)
        .into_iter()
        .map(|name| (name.to_owned(), json!({"enabled": true})))
        .collect();
    for name in &to_disable {
        components.insert((*name).to_owned(), json!({"enabled": false}));
    }
    components.insert(
        "istiod".to_owned(),
        json!({"enabled": true, "valuesOverride": {"replicaCount": 2}}),
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let document = json!({
        "apiVersion": "smm.dev/v1alpha1",
        "kind": "ControlPlane",
        "metadata": {"name": cp},
        "spec": {"namespace": namespace, "components": components},
    });
    std::fs::write(file.path(), serde_yaml_ng::to_string(&document).unwrap()).unwrap();
    let path = file.path().to_str().unwrap();

    let dry_run = smm(&["reconcile", "-f", path, "--dry-run", "-o", "json"]);
    assert_success(&dry_run);
    let plan: Value = serde_json::from_slice(&dry_run.stdout).unwrap();
    let planned: BTreeMap<String, String> = plan["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut expected: BTreeMap<String, String> = catalog
        .names()
        .into_iter()
        .map(|name| (name.to_owned(), "Nothing".to_owned()))
        .collect();
    // The leaf uninstalled above comes back; the two now disabled go; istiod's values change.
    expected.insert(first_leaf.to_owned(), "Install".to_owned());
    for name in &to_disable {
        expected.insert((*name).to_owned(), "Uninstall".to_owned());
    }
    expected.insert("istiod".to_owned(), "Upgrade".to_owned());
    assert_eq!(planned, expected, "{}", stdout(&dry_run));
    let istiod_plan = plan["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "istiod")
        .unwrap();
    // Istio's chart keeps its default replica count under `_internal_defaults_do_not_set`, so
    // the top-level value the override sets is new.
    let replicas = json!({"path": "replicaCount", "old": null, "new": 2});
    assert!(
        istiod_plan["valuesDiff"]
            .as_array()
            .unwrap()
            .contains(&replicas),
        "{istiod_plan}"
    );
    // The dry run changed nothing.
    let status = smm(&[&["status", "-o", "json"], &cp_flag[..]].concat());
    assert_eq!(phases(&stdout(&status))[to_disable[0]], "Available");

    let applied = smm(&["reconcile", "-f", path, "-o", "json"]);
    assert_success(&applied);
    let report: Value = serde_json::from_slice(&applied.stdout).unwrap();
    let acted: BTreeMap<String, String> = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(acted, expected, "the reconcile did what the dry run said");

    // Dump from the stored ControlPlane; the API server accepts every object (server dry run).
    let dump = smm(&[&["install", "-a", "--dump-resources"], &cp_flag[..]].concat());
    assert_success(&dump);
    kubectl_server_dry_run(&stdout(&dump));

    // Uninstalling everything leaves no object of ours behind, CRDs aside.
    let before = leftovers(&cluster.client, &namespace).await;
    for expected in [
        "Deployment/istiod",
        "ClusterRole/istiod-",
        "MutatingWebhookConfiguration/",
    ] {
        assert!(
            before.iter().any(|o| o.starts_with(expected)),
            "{expected} not found in {before:#?}"
        );
    }
    drop(istiod);
    assert_success(&smm(&[&["uninstall", "-a"], &cp_flag[..]].concat()));
    let left = leftovers(&cluster.client, &namespace).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
    let _ = Api::<ControlPlane>::all(cluster.client.clone())
        .delete(&cp, &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(cluster.client.clone())
        .delete(&namespace, &DeleteParams::default())
        .await;
}

/// `smm install -a --dump-resources` on a machine with no cluster: deterministic YAML that a real
/// API server accepts.
#[tokio::test]
async fn dump_needs_no_cluster_and_the_api_server_accepts_it() {
    let cluster = TestCluster::connect().await;
    let no_cluster = [("KUBECONFIG", "/nonexistent/kubeconfig")];
    let first = smm_with_env(&["install", "-a", "--dump-resources"], &no_cluster);
    assert_success(&first);
    let second = smm_with_env(&["install", "-a", "--dump-resources"], &no_cluster);
    assert_eq!(first.stdout, second.stdout, "the dump is deterministic");
    let yaml = stdout(&first);
    // Every component of the (default) sidecar profile; the ambient node agents come with
    // the ambient profile, a network's gateway with a named network.
    let catalog = Catalog::builtin().unwrap();
    let ambient = smm_with_env(
        &["install", "-a", "--profile", "ambient", "--dump-resources"],
        &no_cluster,
    );
    assert_success(&ambient);
    let ambient = stdout(&ambient);
    for component in catalog.components() {
        let marker = format!("# smm component: {}\n", component.name);
        let node_agent = component.enabled_in_profile == Some(smm::api::Profile::Ambient);
        let gateway = component.network_gateway;
        let name = component.name;
        assert_eq!(yaml.contains(&marker), !node_agent && !gateway, "{name}");
        assert_eq!(ambient.contains(&marker), !gateway, "{name}");
    }
    // Istio's own CRDs with their schemas, and its injection template.
    let documents: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .filter_map(|document| Option::<Value>::deserialize(document).unwrap())
        .collect();
    let virtual_services = documents
        .iter()
        .find(|d| d["metadata"]["name"] == "virtualservices.networking.istio.io")
        .expect("Istio's VirtualService CRD is dumped");
    let schema = &virtual_services["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert!(
        schema["properties"]["spec"]["properties"]["http"].is_object(),
        "{schema}"
    );
    let injector = documents
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "istio-sidecar-injector")
        .expect("istiod's injector ConfigMap is dumped");
    assert!(
        injector["data"]["config"]
            .as_str()
            .unwrap()
            .contains("name: istio-proxy"),
        "no injection template"
    );
    // The default namespace must exist for the server to validate namespaced objects.
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some("istio-system".to_owned());
    let _ = namespaces.create(&PostParams::default(), &namespace).await;
    kubectl_server_dry_run(&yaml);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let per_file = smm_with_env(
        &[
            "install",
            "-a",
            "--dump-resources",
            "--output-dir",
            out.to_str().unwrap(),
        ],
        &no_cluster,
    );
    assert_success(&per_file);
    assert!(Path::new(&out).join("istiod.yaml").is_file());
}

/// Every object in `namespace` and every cluster-scoped object named after it (our cluster-scoped
/// names carry the mesh namespace), over every listable kind the API server serves. What any
/// namespace has (its default ServiceAccount, root CA ConfigMap and events), the namespace
/// itself (smm never deletes namespaces) and CRDs (kept on purpose) do not count.
/// What a running istiod writes into its namespace itself (its CA, the root certificate it
/// publishes, leader elections): istiod's state, not objects smm or the charts created.
const ISTIOD_RUNTIME_STATE: &[(&str, &str)] = &[
    ("Secret", "istio-ca-secret"),
    ("ConfigMap", "istio-ca-root-cert"),
    ("ConfigMap", "istio-ca-crl"),
    ("ConfigMap", "istio-ip-autoallocate"),
    ("ConfigMap", "istio-leader"),
    ("ConfigMap", "istio-namespace-controller-election"),
    ("Lease", "istio-gateway-deployment-default"),
    ("Lease", "istio-gateway-status-leader-default"),
];

async fn leftovers(client: &kube::Client, namespace: &str) -> Vec<String> {
    use kube::discovery::{Discovery, Scope, verbs};
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut left = Vec::new();
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            if !capabilities.supports_operation(verbs::LIST)
                || ["Event", "Namespace", "CustomResourceDefinition"]
                    .contains(&resource.kind.as_str())
            {
                continue;
            }
            let api: Api<kube::api::DynamicObject> = match capabilities.scope {
                Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
                Scope::Cluster => Api::all_with(client.clone(), &resource),
            };
            let Ok(objects) = api.list_metadata(&Default::default()).await else {
                continue;
            };
            for object in objects.items {
                let name = object.metadata.name.unwrap_or_default();
                let ours = match capabilities.scope {
                    Scope::Namespaced => {
                        !matches!(
                            (resource.kind.as_str(), name.as_str()),
                            ("ServiceAccount", "default") | ("ConfigMap", "kube-root-ca.crt")
                        ) && !ISTIOD_RUNTIME_STATE
                            .contains(&(resource.kind.as_str(), name.as_str()))
                    }
                    Scope::Cluster => name.contains(namespace),
                };
                if ours {
                    left.push(format!("{}/{name}", resource.kind));
                }
            }
        }
    }
    left
}

fn kubectl_server_dry_run(yaml: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    let kubectl = crate::support::repo_root().join(".tools/kubectl");
    let output = Command::new(kubectl)
        .args([
            "apply",
            "--server-side",
            "--dry-run=server",
            "--force-conflicts",
            "-f",
        ])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl rejected the dump:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Takes `control_plane`'s reconcile lease as `holder` if it is free now.
async fn lock_now(
    cluster: &TestCluster,
    control_plane: &str,
    holder: &str,
) -> Result<smm::cluster::lease::LeaseLock, smm::cluster::lease::LockError> {
    reconcile_lock(
        &cluster.client,
        control_plane,
        &Holder::new(holder),
        Duration::ZERO,
        |_| {},
    )
    .await
}

/// Two runs never reconcile at once: a held lease makes smm wait, then give up clearly; a
/// crashed holder's lease expires and is taken over; a lease given back is found free.
#[tokio::test]
async fn a_held_reconcile_lease_blocks_a_second_run() {
    let cluster = TestCluster::connect().await;
    let (cp, _namespace) = fresh_control_plane(&cluster).await;
    let held = lock_now(&cluster, &cp, "e2e-holder").await.unwrap();
    assert!(held.found_free(), "no one held it before");
    let blocked = smm(&[
        "install",
        "istiod",
        "--control-plane",
        &cp,
        "--timeout",
        "3s",
    ]);
    assert_eq!(blocked.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&blocked.stderr);
    assert!(stderr.contains("waiting for another reconcile"), "{stderr}");
    assert!(stderr.contains("held by e2e-holder"), "{stderr}");
    held.release().await;

    // A lease whose holder stopped renewing is free once it stayed unchanged for its duration
    // by the waiter's own clock, whatever time the holder wrote into it (here: years ago).
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(cluster.client.clone(), smm::cluster::lease::LEASE_NAMESPACE);
    let stale = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": smm::cluster::lease::lease_name(&cp)},
        "spec": {"holderIdentity": "crashed", "leaseDurationSeconds": 3,
                 "renewTime": "2020-01-01T00:00:00.000000Z"},
    });
    leases
        .patch(
            &smm::cluster::lease::lease_name(&cp),
            // The lease given back is still there, its fields written by smm.
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&stale),
        )
        .await
        .unwrap();
    let busy = lock_now(&cluster, &cp, "e2e-next").await;
    assert!(
        busy.is_err(),
        "not before it stayed unchanged for its duration"
    );
    let started = std::time::Instant::now();
    let taken = reconcile_lock(
        &cluster.client,
        &cp,
        &Holder::new("e2e-next"),
        Duration::from_secs(20),
        |_| {},
    )
    .await
    .expect("an abandoned lease is taken over after its duration");
    assert!(started.elapsed() >= Duration::from_secs(3));
    // Its holder may still be stopping its helm: a release it left pending must wait.
    assert!(!taken.found_free());
    assert_eq!(taken.taken_from(), Some("crashed"));
    taken.release().await;
    // Given back, it is free again.
    let given_back = lock_now(&cluster, &cp, "e2e-last").await.unwrap();
    assert!(given_back.found_free());
    assert_eq!(given_back.taken_from(), None);
    given_back.release().await;
    let _ = Api::<ControlPlane>::all(cluster.client.clone())
        .delete(&cp, &DeleteParams::default())
        .await;
}

/// The first lease taken in a cluster creates its namespace: smm's own, which nothing else
/// creates for a CLI-only user. Here a namespace of the test's own stands for it.
#[tokio::test]
async fn the_first_lease_creates_its_namespace() {
    let cluster = TestCluster::connect().await;
    let namespace = format!("e2e-leases-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    assert!(namespaces.get_opt(&namespace).await.unwrap().is_none());
    let held = smm::cluster::lease::LeaseLock::acquire(
        &cluster.client,
        &namespace,
        "e2e-first",
        &Holder::new("e2e-holder"),
        Some(Duration::from_secs(10)),
        |_| {},
    )
    .await
    .expect("the lease is taken in a namespace that did not exist");
    assert!(held.found_free());
    assert!(namespaces.get_opt(&namespace).await.unwrap().is_some());
    held.release().await;
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
}

/// A lease is given back by clearing its holder, which tells the next holder that the last
/// one stopped; a lease that is not there tells nothing (it may have been deleted under a live
/// holder), and a holder whose lease is deleted loses it as soon as it looks, not once its
/// renew deadline passes.
#[tokio::test]
async fn a_deleted_lease_is_lost_at_once_and_only_a_lease_given_back_is_free() {
    let cluster = TestCluster::connect().await;
    let cp = format!("e2e-deleted-{}", std::process::id());
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(cluster.client.clone(), smm::cluster::lease::LEASE_NAMESPACE);
    let name = smm::cluster::lease::lease_name(&cp);
    let _ = leases.delete(&name, &DeleteParams::default()).await;

    let mut held = lock_now(&cluster, &cp, "e2e-first").await.unwrap();
    assert_eq!(
        held.predecessor(),
        Predecessor::MayBeStopping {
            silent_for: Duration::ZERO
        },
        "a lease that did not exist may have been deleted under a live holder"
    );
    leases
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let deleted = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), held.lost())
        .await
        .expect("a deleted lease is lost");
    assert!(
        deleted.elapsed() < Duration::from_secs(6),
        "lost {:?} after the deletion: at the next renewal, not at the renew deadline",
        deleted.elapsed()
    );
    held.release().await;

    let taken = lock_now(&cluster, &cp, "e2e-second").await.unwrap();
    taken.release().await;
    let given_back = leases.get(&name).await.expect("given back, not deleted");
    let holder = given_back.spec.and_then(|spec| spec.holder_identity);
    assert_eq!(holder, None);
    let next = lock_now(&cluster, &cp, "e2e-third").await.unwrap();
    assert_eq!(next.predecessor(), Predecessor::GaveBack);
    next.release().await;
    let _ = leases.delete(&name, &DeleteParams::default()).await;
}

#[tokio::test]
async fn sidecar_auto_injection_labels_namespaces() {
    let cluster = TestCluster::connect().await;
    let first = cluster.namespace("e2e-inject").await;
    let second = cluster.namespace("e2e-inject").await;
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let label = |namespace: Namespace| {
        namespace
            .metadata
            .labels
            .unwrap_or_default()
            .get("istio-injection")
            .cloned()
    };

    let on = smm(&[
        "sidecar-proxy",
        "auto-inject",
        "on",
        &first.name,
        &second.name,
    ]);
    assert_success(&on);
    for name in [&first.name, &second.name] {
        let found = namespaces.get(name).await.unwrap();
        assert_eq!(label(found).as_deref(), Some("enabled"));
    }
    assert_success(&smm(&["sidecar-proxy", "auto-inject", "off", &first.name]));
    assert_eq!(label(namespaces.get(&first.name).await.unwrap()), None);
    assert_eq!(
        label(namespaces.get(&second.name).await.unwrap()).as_deref(),
        Some("enabled")
    );
    let missing = smm(&[
        "sidecar-proxy",
        "auto-inject",
        "on",
        "e2e-no-such-namespace",
    ]);
    assert_eq!(missing.status.code(), Some(1));
    // A namespace whose pods must restart while istiod is down is refused, and nothing of the
    // list is labelled, not even the namespace named before it.
    let third = cluster.namespace("e2e-inject").await;
    let protected = smm(&[
        "sidecar-proxy",
        "auto-inject",
        "on",
        &third.name,
        "kube-system",
    ]);
    assert_eq!(protected.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&protected.stderr);
    assert!(
        stderr.contains("refusing to turn sidecar injection on for namespace kube-system"),
        "{stderr}"
    );
    for name in [third.name.as_str(), "kube-system"] {
        assert_eq!(label(namespaces.get(name).await.unwrap()), None, "{name}");
    }
}

/// An air-gapped install: with `imageRegistry` set, the dump names no image outside it.
#[test]
fn a_dump_for_a_private_registry_names_no_other_registry() {
    let components: serde_json::Map<String, Value> = Catalog::builtin()
        .unwrap()
        .names()
        .into_iter()
        .map(|name| (name.to_owned(), json!({"enabled": true})))
        .collect();
    let document = json!({
        "apiVersion": "smm.dev/v1alpha1", "kind": "ControlPlane", "metadata": {"name": "smm"},
        // On a named network, so that the east-west gateway can be on too.
        "spec": {
            "imageRegistry": "registry.local:5000", "components": components,
            "multiCluster": {"clusterName": "c1", "network": "n1"},
        },
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_yaml_ng::to_string(&document).unwrap()).unwrap();
    let dump = smm_with_env(
        &[
            "reconcile",
            "-f",
            file.path().to_str().unwrap(),
            "--dump-resources",
        ],
        &[("KUBECONFIG", "/nonexistent/kubeconfig")],
    );
    assert_success(&dump);
    let images: Vec<String> = stdout(&dump)
        .lines()
        .filter_map(|line| line.trim().trim_start_matches("- ").strip_prefix("image:"))
        .map(|image| {
            image
                .trim()
                .trim_matches(|c| c == '"' || c == ',')
                .to_owned()
        })
        // istiod's injection template: istiod fills it in from the checked values. As in
        // charts::an_image_registry_rewrites_every_image: a CRD schema's `image:` property,
        // `auto` (the gateways' proxy, from the injector), and names that Istio's charts join to
        // the hub checked here, and the opt-in grpc-simple template's own image.
        .filter(|image| {
            !image.starts_with("{{")
                && !image.is_empty()
                && image != "auto"
                && image.contains(['/', ':'])
                && image != crate::charts::GRPC_SIMPLE_IMAGE
        })
        .collect();
    assert!(images.len() >= 4, "{images:?}");
    for image in images {
        assert!(image.starts_with("registry.local:5000/"), "{image}");
    }
}

/// A bad ControlPlane file is refused before the cluster is touched, naming file, field and line.
#[tokio::test]
async fn a_bad_controlplane_file_is_refused_and_nothing_is_stored() {
    let cluster = TestCluster::connect().await;
    ensure_control_plane_crd(&cluster.client).await;
    let name = unique_name("e2e-badfile");
    let control_planes: Api<ControlPlane> = Api::all(cluster.client.clone());
    let cases = [
        (
            format!(
                "apiVersion: smm.dev/v1alpha1\nkind: ControlPlane\nmetadata:\n  name: {name}\n\
                 spec:\n  components:\n    istiod: {{enable: true}}\n"
            ),
            "spec.components.istiod: unknown field `enable`, expected one of `enabled`, `namespace`, `valuesOverride` at line 7",
        ),
        (
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"),
            "expected apiVersion: smm.dev/v1alpha1 and kind: ControlPlane",
        ),
        (
            format!(
                "apiVersion: smm.dev/v1alpha1\nkind: ControlPlane\nmetadata:\n  name: {name}\n\
                 spec:\n  components:\n    istiod:\n      valuesOverride:\n        global: {{istioNamespace: x}}\n"
            ),
            "istiod: valuesOverride.global.istioNamespace is managed by smm",
        ),
    ];
    for (yaml, expected) in cases {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), yaml).unwrap();
        let path = file.path().to_str().unwrap();
        let refused = smm(&["reconcile", "-f", path]);
        assert_eq!(refused.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(path), "the file is named: {stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            control_planes.get_opt(&name).await.unwrap().is_none(),
            "nothing stored"
        );
    }
}

/// Bad names, addresses and flags are refused by the real binary before anything is rendered,
/// stored or applied, offline (`--dump-resources`, `--dry-run`) as when applying.
#[tokio::test]
async fn bad_names_and_flags_are_refused_and_nothing_is_stored() {
    let cluster = TestCluster::connect().await;
    ensure_control_plane_crd(&cluster.client).await;
    let name = unique_name("e2e-badname");
    let control_planes: Api<ControlPlane> = Api::all(cluster.client.clone());
    let file = |spec: &str| {
        let file = tempfile::NamedTempFile::new().unwrap();
        let yaml = format!(
            "apiVersion: smm.dev/v1alpha1\nkind: ControlPlane\nmetadata:\n  name: {name}\nspec:\n{spec}"
        );
        std::fs::write(file.path(), yaml).unwrap();
        file
    };
    let cases = [
        (
            file("  components:\n    istiod: {namespace: Foo}\n"),
            "spec.components.istiod.namespace: \"Foo\" is not a valid namespace: must be a \
             DNS-1123 label",
        ),
        (
            file("  imageRegistry: \"r.io\\nkind: Secret\"\n"),
            "spec.imageRegistry: \"r.io\\nkind: Secret\" is not a valid image registry",
        ),
        (
            file("  revision: \"1.28\"\n"),
            "spec.revision: \"1.28\" is not a valid revision",
        ),
    ];
    for (file, expected) in &cases {
        let path = file.path().to_str().unwrap();
        for mode in [&[][..], &["--dry-run"], &["--dump-resources"]] {
            let refused = smm(&[&["reconcile", "-f", path][..], mode].concat());
            assert_eq!(refused.status.code(), Some(1), "{mode:?}");
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(stderr.contains(expected), "{mode:?}: {stderr}");
        }
        assert!(
            control_planes.get_opt(&name).await.unwrap().is_none(),
            "nothing stored"
        );
    }
    for (args, expected) in [
        (
            &[
                "install",
                "istiod",
                "--namespace",
                "Foo",
                "--dump-resources",
            ][..],
            "\"Foo\" is not a valid namespace",
        ),
        (
            &[
                "install",
                "istiod",
                "--control-plane",
                "a/b",
                "--dump-resources",
            ][..],
            "\"a/b\" is not a valid ControlPlane name",
        ),
        (
            &["status", "--timeout", "18446744073709551615s"][..],
            "longer than the longest supported duration, 24h",
        ),
    ] {
        let refused = smm(args);
        assert_eq!(refused.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// A ControlPlane nested deeper than the JSON decoder follows does not stop the reconciles of
/// the others: each session lists every ControlPlane, and decodes them one by one.
#[tokio::test]
async fn a_control_plane_that_cannot_be_decoded_does_not_stop_the_others() {
    let cluster = TestCluster::connect().await;
    ensure_control_plane_crd(&cluster.client).await;
    let deep_name = unique_name("e2e-deep");
    let deep = (0..130).fold(json!(1), |inner, _| json!({"a": inner}));
    let object = json!({
        "apiVersion": "smm.dev/v1alpha1",
        "kind": "ControlPlane",
        "metadata": {"name": deep_name},
        "spec": {"components": {"grafana": {"valuesOverride": deep}}},
    });
    let raw: Api<kube::api::DynamicObject> = Api::all_with(
        cluster.client.clone(),
        &kube::api::ApiResource::erase::<ControlPlane>(&()),
    );
    // Stored; the answer, the object itself, is too deep for this client to decode.
    let created = raw
        .create(
            &PostParams::default(),
            &serde_json::from_value(object).unwrap(),
        )
        .await;
    assert!(
        matches!(created, Ok(_) | Err(kube::Error::SerdeError(_))),
        "{created:?}"
    );
    let name = unique_name("e2e-beside-deep");
    let file = tempfile::NamedTempFile::new().unwrap();
    let off: String = Catalog::builtin()
        .unwrap()
        .names()
        .iter()
        .map(|component| format!("    {component}: {{enabled: false}}\n"))
        .collect();
    std::fs::write(
        file.path(),
        format!(
            "apiVersion: smm.dev/v1alpha1\nkind: ControlPlane\nmetadata:\n  name: {name}\n\
             spec:\n  namespace: {name}\n  components:\n{off}"
        ),
    )
    .unwrap();
    let output = smm(&["reconcile", "-f", file.path().to_str().unwrap()]);
    let control_planes: Api<ControlPlane> = Api::all(cluster.client.clone());
    let _ = control_planes.delete(&name, &DeleteParams::default()).await;
    let _ = raw.delete(&deep_name, &DeleteParams::default()).await;
    assert_success(&output);
}

/// `smm components` shows what the engine does: istiod left to its default follows a disabled
/// base out, in the listing as in the resolved desired state (they once disagreed).
#[tokio::test]
async fn components_and_the_engine_agree_on_enabled() {
    let cluster = TestCluster::connect().await;
    ensure_control_plane_crd(&cluster.client).await;
    let name = unique_name("e2e-agree");
    let spec = smm::api::ControlPlaneSpec {
        namespace: Some(unique_name("e2e-agreens")),
        ..Default::default()
    }
    .with_enabled("base", false);
    smm::cluster::control_plane::store(&cluster.client, &name, &spec, None)
        .await
        .unwrap();

    let output = smm(&["components", "--control-plane", &name, "-o", "json"]);
    assert_success(&output);
    let listed: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let listed: BTreeMap<String, bool> = listed
        .iter()
        .map(|row| {
            let enabled = row["enabled"].as_bool().expect("a stored ControlPlane");
            (row["name"].as_str().unwrap().to_owned(), enabled)
        })
        .collect();
    let catalog = Catalog::builtin().unwrap();
    let resolved: BTreeMap<String, bool> = smm::desired::resolve::resolve(&catalog, &spec)
        .unwrap()
        .iter()
        .map(|d| (d.name().to_owned(), d.enabled))
        .collect();
    assert_eq!(listed, resolved);
    assert_eq!(
        (
            listed["istiod"],
            listed["ingress-gateway"],
            listed["prometheus"]
        ),
        (false, false, true),
        "defaults follow base out; independent defaults stay on"
    );
    Api::<ControlPlane>::all(cluster.client.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

/// Ownership (two ControlPlanes managing one release would undo each other's changes): a second
/// ControlPlane whose spec would manage a release of the first is refused before it is stored;
/// made with kubectl (which asks smm nothing), it is refused on its reconciles while the first,
/// which owns the release, goes on; and a `helm rollback` made by hand is detected and corrected.
#[tokio::test]
async fn releases_have_one_owner_and_changes_by_hand_are_corrected() {
    let cluster = TestCluster::connect().await;
    let (first, namespace) = fresh_control_plane(&cluster).await;
    assert_success(&smm(&["install", "prometheus", "--control-plane", &first]));

    let second = unique_name("e2e-second");
    let file = tempfile::NamedTempFile::new().unwrap();
    let document = json!({
        "apiVersion": "smm.dev/v1alpha1",
        "kind": "ControlPlane",
        "metadata": {"name": second},
        "spec": {"namespace": namespace, "components": {
            "base": {"enabled": false}, "prometheus": {"enabled": true}}},
    });
    std::fs::write(file.path(), serde_json::to_string(&document).unwrap()).unwrap();
    let assert_refused = |refused: Output| {
        assert_eq!(refused.status.code(), Some(1), "{refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains(&format!(
                "{namespace}/prometheus is also managed by ControlPlane {first}"
            )),
            "{stderr}"
        );
    };
    assert_refused(smm(&["reconcile", "-f", file.path().to_str().unwrap()]));
    let control_planes: Api<ControlPlane> = Api::all(cluster.client.clone());
    assert!(control_planes.get_opt(&second).await.unwrap().is_none());
    control_planes
        .patch(
            &second,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&document),
        )
        .await
        .unwrap();
    assert_refused(smm(&["install", "prometheus", "--control-plane", &second]));

    // By hand: helm rolls the release back to revision 1, which makes revision 2.
    let rolled = Command::new(crate::support::HelmTool::Helm4.path())
        .args(["rollback", "prometheus", "1", "--namespace", &namespace])
        .output()
        .unwrap();
    assert!(rolled.status.success(), "{rolled:?}");
    let corrected = smm(&[
        "install",
        "prometheus",
        "--control-plane",
        &first,
        "-o",
        "json",
    ]);
    assert_success(&corrected);
    let report: Value = serde_json::from_slice(&corrected.stdout).unwrap();
    let prometheus = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "prometheus")
        .unwrap();
    assert_eq!(prometheus["action"], "Upgrade");
    assert!(
        prometheus["reason"]
            .as_str()
            .unwrap()
            .starts_with("changed outside smm: revision 2 found, 1 applied by smm"),
        "{prometheus}"
    );
    let stored = control_planes.get(&first).await.unwrap();
    let recorded = stored.status.unwrap().components["prometheus"].clone();
    assert_eq!(recorded.release.unwrap().revision, Some(3));

    let _ = control_planes
        .delete(&second, &DeleteParams::default())
        .await;
    smm(&["uninstall", "-a", "--control-plane", &first]);
    let _ = control_planes
        .delete(&first, &DeleteParams::default())
        .await;
}

/// No lost update (one command's edit of the stored spec must not overwrite another's): two
/// `smm install` of different components at once both stick, because each edits the stored spec
/// under the reconcile lease.
#[tokio::test]
async fn concurrent_installs_of_different_components_both_stick() {
    let cluster = TestCluster::connect().await;
    let (cp, _namespace) = fresh_control_plane(&cluster).await;
    let install = |component: &str| {
        crate::support::smm_command(&["install", component, "--control-plane", &cp], &[])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (tracing, prometheus) = (install("tracing"), install("prometheus"));
    assert_success(&tracing.wait_with_output().unwrap());
    assert_success(&prometheus.wait_with_output().unwrap());
    let stored = Api::<ControlPlane>::all(cluster.client.clone())
        .get(&cp)
        .await
        .unwrap();
    for component in ["tracing", "prometheus"] {
        assert_eq!(
            stored.spec.components[component].enabled,
            Some(true),
            "{component}"
        );
    }
    smm(&["uninstall", "-a", "--control-plane", &cp]);
    let _ = Api::<ControlPlane>::all(cluster.client.clone())
        .delete(&cp, &DeleteParams::default())
        .await;
}

/// `smm reconcile -f` stores the file as the whole spec: a value someone else set since (a
/// `kubectl patch`, another field manager) does not survive it, and the stored spec is the one
/// reconciled. (Stored by server-side apply, such a value stayed, or the apply was refused.)
#[tokio::test]
async fn reconcile_from_a_file_replaces_what_another_manager_set() {
    let cluster = TestCluster::connect().await;
    ensure_control_plane_crd(&cluster.client).await;
    let cp = unique_name("e2e-replace");
    let namespace = unique_name("e2e-replacens");
    let catalog = Catalog::builtin().unwrap();
    let document = |grafana: Value| {
        let mut components: serde_json::Map<String, Value> = catalog
            .names()
            .into_iter()
            .map(|name| (name.to_owned(), json!({"enabled": false})))
            .collect();
        components.insert("grafana".to_owned(), grafana);
        json!({
            "apiVersion": "smm.dev/v1alpha1", "kind": "ControlPlane",
            "metadata": {"name": cp},
            "spec": {"namespace": namespace, "components": components},
        })
    };
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    let with_values = json!({"enabled": false, "valuesOverride": {"podAnnotations": {"a": "1"}}});
    std::fs::write(path, serde_json::to_string(&document(with_values)).unwrap()).unwrap();
    assert_success(&smm(&["reconcile", "-f", path]));

    let control_planes: Api<ControlPlane> = Api::all(cluster.client.clone());
    let patch = json!({"spec": {"components": {"grafana": {"valuesOverride": {
        "podAnnotations": {"a": "2", "b": "by-hand"},
    }}}}});
    control_planes
        .patch(&cp, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();

    std::fs::write(
        path,
        serde_json::to_string(&document(json!({"enabled": false}))).unwrap(),
    )
    .unwrap();
    assert_success(&smm(&["reconcile", "-f", path]));
    let stored = control_planes.get(&cp).await.unwrap();
    assert_eq!(stored.spec.components["grafana"].values_override, None);
    let _ = control_planes.delete(&cp, &DeleteParams::default()).await;
}
