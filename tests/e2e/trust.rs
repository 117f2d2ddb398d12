//! The mesh's shared trust root with a real istiod: on the primary of a mesh of several
//! clusters smm makes the root and this cluster's `cacerts` before istiod is installed, and the
//! local istiod (`scripts/istio/istiod.sh`, which hands it `cacerts` as a pod's mount would)
//! signs with it; a user's own `cacerts` is left alone; one smm made from another root is refused.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use x509_parser::prelude::*;

use smm::api::names::SMM_NAMESPACE;
use smm::cluster::trust::{
    self, ROOT_FINGERPRINT_ANNOTATION, Removal, ensure_mesh_root, mesh_root_secret_name,
};
use smm::mesh::trust::{
    CA_CERT_KEY, CACERTS_SECRET, CERT_CHAIN_KEY, Fingerprint, MeshRoot, ROOT_CERT_KEY,
};

use crate::istio::Mesh;
use crate::support::{LocalIstiod, TestCluster, eventually, istio_mesh_lock, unique_name};

/// Deletes what a test made beside its ControlPlane (which [`Mesh`] uninstalls): the mesh
/// root's Secret and the mesh namespace with its `cacerts`. Declared before the `Mesh`, so it
/// drops after it, also when the test fails.
struct Leftovers {
    mesh_id: String,
    namespace: String,
}

impl Leftovers {
    /// A mesh ID and a mesh namespace of the test's own, cleaned up when dropped.
    fn new() -> (String, String, Self) {
        let (mesh_id, namespace) = (unique_name("mesh"), unique_name("e2e-trustns"));
        let leftovers = Self {
            mesh_id: mesh_id.clone(),
            namespace: namespace.clone(),
        };
        (mesh_id, namespace, leftovers)
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let kubectl = crate::support::repo_root().join(".tools/kubectl");
        let root = mesh_root_secret_name(&self.mesh_id);
        let _ = Command::new(&kubectl)
            .args([
                "-n",
                SMM_NAMESPACE,
                "delete",
                "secret",
                &root,
                "--ignore-not-found",
            ])
            .output();
        let _ = Command::new(&kubectl)
            .args(["delete", "namespace", &self.namespace, "--ignore-not-found"])
            .args(["--wait=false"])
            .output();
    }
}

fn multi_cluster(mesh_id: &str) -> serde_json::Value {
    json!({"multiCluster": {"meshID": mesh_id, "clusterName": "cluster-a"}})
}

fn first_der(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}

/// Whether the first certificate in `cert_pem` was signed by the first in `root_pem`.
fn signed_by(cert_pem: &str, root_pem: &str) -> bool {
    let (cert_der, root_der) = (first_der(cert_pem), first_der(root_pem));
    let (_, cert) = parse_x509_certificate(&cert_der).unwrap();
    let (_, root) = parse_x509_certificate(&root_der).unwrap();
    cert.verify_signature(Some(root.public_key())).is_ok()
}

fn text(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().expect("the Secret has data");
    String::from_utf8(data[key].0.clone()).unwrap()
}

/// The root istiod publishes to every namespace (`istio-ca-root-cert`), once it has.
async fn published_root(client: &Client, namespace: &str) -> String {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut published = None;
    let found = eventually(Duration::from_secs(30), async || {
        published = config_maps
            .get_opt("istio-ca-root-cert")
            .await
            .unwrap()
            .and_then(|c| c.data?.remove("root-cert.pem"));
        published.is_some()
    })
    .await;
    assert!(
        found,
        "istiod published no istio-ca-root-cert in {namespace}"
    );
    published.unwrap()
}

/// smm makes the mesh root (once) and `cacerts` before istiod; the real istiod signs with it
/// and publishes smm's root; another cluster's intermediate chains to that root; a second
/// reconcile rewrites neither Secret; removal takes smm's `cacerts` away.
#[tokio::test]
async fn istiod_publishes_the_mesh_root_smm_made() {
    let cluster = TestCluster::connect().await;
    let client = &cluster.client;
    let _lock = istio_mesh_lock().await;
    let (mesh_id, namespace, _leftovers) = Leftovers::new();
    let mesh = Mesh::create_with(&cluster, namespace.clone(), multi_cluster(&mesh_id)).await;
    mesh.smm(&["install", "istiod"]);

    let secrets_in = |ns: &str| Api::<Secret>::namespaced(client.clone(), ns);
    let root_name = mesh_root_secret_name(&mesh_id);
    let root_secret = secrets_in(SMM_NAMESPACE).get(&root_name).await.unwrap();
    let root_pem = text(&root_secret, "root-cert.pem");
    let root_fingerprint = Fingerprint::of_pem("root", &root_pem).unwrap();
    let cacerts = secrets_in(&namespace).get(CACERTS_SECRET).await.unwrap();
    let labels = cacerts.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("smm")
    );
    let annotations = cacerts.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations[ROOT_FINGERPRINT_ANNOTATION],
        root_fingerprint.hex()
    );
    assert_eq!(text(&cacerts, ROOT_CERT_KEY), root_pem);
    assert!(signed_by(&text(&cacerts, CA_CERT_KEY), &root_pem));
    assert!(text(&cacerts, CERT_CHAIN_KEY).ends_with(&root_pem));

    // The real istiod, handed cacerts, signs with it and publishes smm's root.
    let istiod = LocalIstiod::start(&namespace, "");
    let published = published_root(client, &namespace).await;
    assert_eq!(
        Fingerprint::of_pem("published root", &published).unwrap(),
        root_fingerprint,
        "istiod publishes another root than the mesh's; its log:\n{}",
        istiod.log()
    );
    // The CA istiod reports using is the plug-in one, not a self-signed root of its own.
    assert!(
        istiod.log().contains("Use local CA certificate"),
        "{}",
        istiod.log()
    );

    // A second cluster's intermediate, from the stored root, chains to what istiod publishes.
    let stored = ensure_mesh_root(client, &mesh_id).await.unwrap();
    assert_eq!(stored.fingerprint(), root_fingerprint);
    let cluster_b = stored.issue("cluster-b", &namespace).unwrap();
    assert!(signed_by(&cluster_b.ca_cert_pem, &published));
    assert_ne!(cluster_b.ca_cert_pem, text(&cacerts, CA_CERT_KEY));

    // Another reconcile reuses both Secrets as they are.
    mesh.smm(&["install", "istiod"]);
    let root_again = secrets_in(SMM_NAMESPACE).get(&root_name).await.unwrap();
    assert_eq!(
        root_again.metadata.resource_version,
        root_secret.metadata.resource_version
    );
    let cacerts_again = secrets_in(&namespace).get(CACERTS_SECRET).await.unwrap();
    assert_eq!(
        cacerts_again.metadata.resource_version,
        cacerts.metadata.resource_version
    );

    drop(istiod);
    assert_eq!(
        trust::remove_cacerts(client, &namespace).await.unwrap(),
        Removal::Removed
    );
    assert!(
        secrets_in(&namespace)
            .get_opt(CACERTS_SECRET)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        trust::remove_cacerts(client, &namespace).await.unwrap(),
        Removal::Absent
    );
}

/// A `cacerts` the user brought is left as it is, and istiod signs with it; one that smm made
/// from another root makes istiod's step fail, naming the Secret and both roots.
#[tokio::test]
async fn a_users_cacerts_is_left_alone_and_another_roots_is_refused() {
    let cluster = TestCluster::connect().await;
    let client = &cluster.client;
    let _lock = istio_mesh_lock().await;
    let (mesh_id, namespace, _leftovers) = Leftovers::new();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let mut object = k8s_openapi::api::core::v1::Namespace::default();
    object.metadata.name = Some(namespace.clone());
    namespaces
        .create(&PostParams::default(), &object)
        .await
        .unwrap();

    // The user's own, from a root of theirs, without smm's label.
    let users_root = MeshRoot::generate("theirs").unwrap();
    let users_ca = users_root.issue("cluster-a", &namespace).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut users = Secret::default();
    users.metadata.name = Some(CACERTS_SECRET.to_owned());
    users.data = Some(
        users_ca
            .secret_data()
            .into_iter()
            .map(|(key, text)| (key.to_owned(), ByteString(text.as_bytes().to_vec())))
            .collect::<BTreeMap<_, _>>(),
    );
    let created = secrets
        .create(&PostParams::default(), &users)
        .await
        .unwrap();

    let mesh = Mesh::create_with(&cluster, namespace.clone(), multi_cluster(&mesh_id)).await;
    mesh.smm(&["install", "istiod"]);
    let after = secrets.get(CACERTS_SECRET).await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(after.data, users.data);
    let istiod = LocalIstiod::start(&namespace, "");
    let published = published_root(client, &namespace).await;
    assert_eq!(
        Fingerprint::of_pem("published root", &published).unwrap(),
        users_root.fingerprint(),
        "{}",
        istiod.log()
    );
    drop(istiod);
    assert_eq!(
        trust::remove_cacerts(client, &namespace).await.unwrap(),
        Removal::LeftUsersOwn
    );

    // Now one that says smm made it from another root than the one this primary keeps:
    // istiod's step fails, naming both.
    let ours = ensure_mesh_root(client, &mesh_id).await.unwrap();
    let mut foreign = after.clone();
    let labels = foreign.metadata.labels.get_or_insert_default();
    labels.insert("app.kubernetes.io/managed-by".to_owned(), "smm".to_owned());
    foreign.metadata.annotations.get_or_insert_default().insert(
        ROOT_FINGERPRINT_ANNOTATION.to_owned(),
        users_root.fingerprint().hex(),
    );
    secrets
        .replace(CACERTS_SECRET, &PostParams::default(), &foreign)
        .await
        .unwrap();
    // A change of values makes the reconcile run helm for istiod (it would check anyway).
    let output = crate::support::smm(&[
        "install",
        "istiod",
        "--set",
        "pilot.env.E2E_TRUST=1",
        "--control-plane",
        &mesh.name,
    ]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{said}");
    for expected in [
        format!("{namespace}/{CACERTS_SECRET}"),
        users_root.fingerprint().hex(),
        ours.fingerprint().hex(),
    ] {
        assert!(said.contains(&expected), "no {expected} in:\n{said}");
    }
}

/// A mesh of one cluster turned into several: istiod is installed (and would be running) with
/// its own CA, so the `cacerts` smm now makes takes effect only when istiod restarts, which smm
/// does not do: istiod's status says so.
#[tokio::test]
async fn cacerts_made_under_an_installed_istiod_is_reported_not_restarted() {
    let cluster = TestCluster::connect().await;
    let client = &cluster.client;
    let _lock = istio_mesh_lock().await;
    let (mesh_id, namespace, _leftovers) = Leftovers::new();
    let mesh = Mesh::create_with(&cluster, namespace.clone(), json!({})).await;
    mesh.smm(&["install", "istiod"]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    assert!(secrets.get_opt(CACERTS_SECRET).await.unwrap().is_none());

    let control_planes: Api<smm::api::ControlPlane> = Api::all(client.clone());
    control_planes
        .patch(
            &mesh.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": multi_cluster(&mesh_id)})),
        )
        .await
        .unwrap();
    mesh.smm(&["install", "istiod"]);
    assert!(secrets.get_opt(CACERTS_SECRET).await.unwrap().is_some());
    let status = control_planes
        .get(&mesh.name)
        .await
        .unwrap()
        .status
        .unwrap();
    let message = status.components["istiod"]
        .message
        .clone()
        .unwrap_or_default();
    assert!(message.contains("made cacerts"), "{message:?}");
    assert!(message.contains("until they restart"), "{message:?}");
}
