//! The mesh's trust root and each cluster's `cacerts` in the cluster (`mesh::trust` makes them).
//!
//! The root is kept in the primary cluster, in the Secret `smm-system/smm-mesh-root-<meshID>`:
//! created once, never overwritten, read back by every later run and by attach. A cluster's
//! `cacerts` (istiod's plug-in CA) is made from it in istiod's namespace unless one is there
//! already; one the user made is theirs and left alone. smm's Secrets carry
//! `app.kubernetes.io/managed-by: smm` and the root's fingerprint, so that detach and status find
//! them and know which root they come from.
//!
//! Key material goes only into the Secrets' data: no log line, field or error here holds it.
//!
//! On a second primary the mesh's root is kept elsewhere (in the first primary): its `cacerts`
//! is made from there ([`ensure_cacerts`] with that root, through attach) and its own reconcile
//! ([`ensure_primary_cacerts`]) accepts it as smm's from a root kept elsewhere. One that
//! reconciles before it is given `cacerts` makes a root of its own, and [`ensure_cacerts`]
//! with the first one's root then refuses it ([`TrustError::OtherRoot`]).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};

use super::objects::FIELD_MANAGER;
use crate::api::names::SMM_NAMESPACE;
use crate::api::objects::MANAGED_BY;
use crate::mesh::trust::{CACERTS_SECRET, Fingerprint, MeshRoot, TrustError as GenerateError};

/// The prefix of the root's Secret name; the mesh ID follows.
pub const MESH_ROOT_SECRET_PREFIX: &str = "smm-mesh-root-";
/// The label saying what an smm Secret of the trust holds: [`ROLE_MESH_ROOT`] or
/// [`ROLE_CACERTS`].
pub const TRUST_ROLE_LABEL: &str = "smm.dev/trust";
pub const ROLE_MESH_ROOT: &str = "mesh-root";
pub const ROLE_CACERTS: &str = "cacerts";
/// The annotation holding the SHA-256 fingerprint of the root an smm Secret holds or comes from
/// (64 hex digits: too long for a label value).
pub const ROOT_FINGERPRINT_ANNOTATION: &str = "smm.dev/mesh-root-sha256";
/// The annotation naming the mesh an smm Secret of the trust belongs to.
pub const MESH_ID_ANNOTATION: &str = "smm.dev/mesh-id";

/// The root's certificate and key in its Secret.
const ROOT_CERT_DATA: &str = "root-cert.pem";
const ROOT_KEY_DATA: &str = "root-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot {action} Secret {namespace}/{name}: {source}")]
    Api {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("cannot create namespace {namespace} for the mesh root: {source}")]
    Namespace {
        namespace: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("Secret {namespace}/{name} does not hold a usable mesh root: {reason}")]
    BadRoot {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("cannot make the mesh's certificates: {0}")]
    Generate(#[from] GenerateError),
    #[error(
        "Secret {namespace}/{name} was made by smm from another mesh root ({found}) than this \
         mesh's ({expected}): istiod would sign with a CA the other clusters do not trust. \
         Delete it if that root is no longer used, then reconcile again"
    )]
    OtherRoot {
        namespace: String,
        name: String,
        found: String,
        expected: Fingerprint,
    },
}

/// What [`ensure_cacerts`] found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cacerts {
    /// smm made it now, from the mesh root.
    Created,
    /// smm had made it from this mesh root before.
    FromThisRoot,
    /// The user's own (no smm label): left as it is.
    UsersOwn,
    /// smm's, from a root this cluster does not keep (a second primary's, from the root kept
    /// in the first): left as it is.
    FromRootElsewhere,
}

/// Whose the `cacerts` Secret in a namespace is, as [`inspect_cacerts`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacertsOwner {
    /// smm's, from the root with this fingerprint (hex, as annotated).
    Smm { root_fingerprint: String },
    /// Not labelled as smm's: the user's own.
    User,
}

/// What [`remove_cacerts`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// The user's own: left.
    LeftUsersOwn,
    Absent,
}

/// The name of the Secret the root of mesh `mesh_id` is kept in.
pub fn mesh_root_secret_name(mesh_id: &str) -> String {
    format!("{MESH_ROOT_SECRET_PREFIX}{mesh_id}")
}

/// The mesh's root, if the cluster `client` reaches keeps it.
pub async fn read_mesh_root(
    client: &Client,
    mesh_id: &str,
) -> Result<Option<MeshRoot>, TrustError> {
    let name = mesh_root_secret_name(mesh_id);
    let api: Api<Secret> = Api::namespaced(client.clone(), SMM_NAMESPACE);
    match api.get_opt(&name).await {
        Ok(Some(stored)) => read_root(mesh_id, &name, &stored).map(Some),
        Ok(None) => Ok(None),
        Err(source) => Err(root_error("read", &name, source)),
    }
}

/// The mesh's root, kept in the primary cluster `client` reaches: read when it exists, made and
/// stored otherwise. Two runs making it at once both end with the one that was stored first.
pub async fn ensure_mesh_root(client: &Client, mesh_id: &str) -> Result<MeshRoot, TrustError> {
    if let Some(root) = read_mesh_root(client, mesh_id).await? {
        return Ok(root);
    }
    let name = mesh_root_secret_name(mesh_id);
    let api: Api<Secret> = Api::namespaced(client.clone(), SMM_NAMESPACE);
    let api_error = |action, source| root_error(action, &name, source);
    let root = MeshRoot::generate(mesh_id)?;
    let secret = root_secret(&name, &root);
    let mut created = api.create(&PostParams::default(), &secret).await;
    if matches!(&created, Err(kube::Error::Api(status)) if status.code == 404) {
        create_namespace(client).await?;
        created = api.create(&PostParams::default(), &secret).await;
    }
    match created {
        Ok(_) => {
            tracing::info!(secret = %name, namespace = SMM_NAMESPACE, root = %root.fingerprint(), "made the mesh root");
            Ok(root)
        }
        // Another run stored one first: that one is the mesh's.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let stored = api.get(&name).await.map_err(|e| api_error("read", e))?;
            read_root(mesh_id, &name, &stored)
        }
        Err(source) => Err(api_error("create", source)),
    }
}

/// istiod's `cacerts` on a primary (the engine, before istiod's chart): one already there is
/// judged against the mesh root kept here, if any (see [`Cacerts`]); none there is made from
/// the mesh root, which is made first if this cluster has none. Reads two objects when all is
/// in place, and makes no key then.
pub async fn ensure_primary_cacerts(
    client: &Client,
    istiod_namespace: &str,
    mesh_id: &str,
    cluster_name: &str,
) -> Result<Cacerts, TrustError> {
    if let Some(owner) = inspect_cacerts(client, istiod_namespace).await? {
        let root = read_mesh_root(client, mesh_id).await?;
        return judge(owner, istiod_namespace, root.as_ref());
    }
    let root = ensure_mesh_root(client, mesh_id).await?;
    ensure_cacerts(client, istiod_namespace, &root, cluster_name).await
}

/// Makes `cacerts` in `istiod_namespace` from `root`, for the cluster `cluster_name`, unless a
/// `cacerts` is there: one smm made from `root` is kept, the user's own is left alone, one smm
/// made from another root is an error (istiod would sign for another mesh).
pub async fn ensure_cacerts(
    client: &Client,
    istiod_namespace: &str,
    root: &MeshRoot,
    cluster_name: &str,
) -> Result<Cacerts, TrustError> {
    if let Some(owner) = inspect_cacerts(client, istiod_namespace).await? {
        return judge(owner, istiod_namespace, Some(root));
    }
    let ca = root.issue(cluster_name, istiod_namespace)?;
    let data = ca
        .secret_data()
        .into_iter()
        .map(|(key, text)| (key.to_owned(), ByteString(text.as_bytes().to_vec())))
        .collect();
    let mut secret = trust_secret(CACERTS_SECRET, istiod_namespace, ROLE_CACERTS, root);
    secret.data = Some(data);
    let api: Api<Secret> = Api::namespaced(client.clone(), istiod_namespace);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(namespace = istiod_namespace, cluster = cluster_name, root = %root.fingerprint(), "made cacerts from the mesh root");
            Ok(Cacerts::Created)
        }
        // Made meanwhile (by the user or another run): judged as if it had been there.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            match inspect_cacerts(client, istiod_namespace).await? {
                Some(owner) => judge(owner, istiod_namespace, Some(root)),
                None => Err(cacerts_error(
                    "create",
                    istiod_namespace,
                    kube::Error::Api(status),
                )),
            }
        }
        Err(source) => Err(cacerts_error("create", istiod_namespace, source)),
    }
}

/// Whose the `cacerts` in `namespace` is, if there is one. Reads its metadata only.
pub async fn inspect_cacerts(
    client: &Client,
    namespace: &str,
) -> Result<Option<CacertsOwner>, TrustError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let found = api
        .get_metadata_opt(CACERTS_SECRET)
        .await
        .map_err(|source| cacerts_error("read", namespace, source))?;
    Ok(found.map(|secret| {
        let metadata = secret.metadata;
        let smms = metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(MANAGED_BY))
            .is_some_and(|manager| manager == FIELD_MANAGER);
        if smms {
            let root_fingerprint = metadata
                .annotations
                .and_then(|mut annotations| annotations.remove(ROOT_FINGERPRINT_ANNOTATION))
                .unwrap_or_default();
            CacertsOwner::Smm { root_fingerprint }
        } else {
            CacertsOwner::User
        }
    }))
}

/// Removes `cacerts` from `namespace` if smm made it (detach); the user's own stays. The
/// deletion is conditional on the Secret read, so one replaced meanwhile is not deleted.
pub async fn remove_cacerts(client: &Client, namespace: &str) -> Result<Removal, TrustError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(found) = api
        .get_metadata_opt(CACERTS_SECRET)
        .await
        .map_err(|source| cacerts_error("read", namespace, source))?
    else {
        return Ok(Removal::Absent);
    };
    let smms = found
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_BY))
        .is_some_and(|manager| manager == FIELD_MANAGER);
    if !smms {
        tracing::info!(namespace, "cacerts is the user's own: left");
        return Ok(Removal::LeftUsersOwn);
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: found.metadata.uid,
            resource_version: found.metadata.resource_version,
        }),
        ..DeleteParams::default()
    };
    match api.delete(CACERTS_SECRET, &params).await {
        Ok(_) => {
            tracing::info!(namespace, "removed cacerts");
            Ok(Removal::Removed)
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Removal::Absent),
        Err(source) => Err(cacerts_error("delete", namespace, source)),
    }
}

/// Whether the `cacerts` `owner` describes may stay, against the mesh's `root` when this
/// cluster keeps it.
fn judge(
    owner: CacertsOwner,
    namespace: &str,
    root: Option<&MeshRoot>,
) -> Result<Cacerts, TrustError> {
    match (owner, root) {
        (CacertsOwner::User, _) => {
            tracing::debug!(namespace, "cacerts is the user's own: istiod signs with it");
            Ok(Cacerts::UsersOwn)
        }
        (CacertsOwner::Smm { .. }, None) => Ok(Cacerts::FromRootElsewhere),
        (CacertsOwner::Smm { root_fingerprint }, Some(root))
            if root_fingerprint == root.fingerprint().hex() =>
        {
            Ok(Cacerts::FromThisRoot)
        }
        (CacertsOwner::Smm { root_fingerprint }, Some(root)) => Err(TrustError::OtherRoot {
            namespace: namespace.to_owned(),
            name: CACERTS_SECRET.to_owned(),
            found: if root_fingerprint.is_empty() {
                "no fingerprint annotated".to_owned()
            } else {
                format!("sha256:{root_fingerprint}")
            },
            expected: root.fingerprint(),
        }),
    }
}

fn root_error(action: &'static str, name: &str, source: kube::Error) -> TrustError {
    TrustError::Api {
        action,
        namespace: SMM_NAMESPACE.to_owned(),
        name: name.to_owned(),
        source: Box::new(source),
    }
}

fn cacerts_error(action: &'static str, namespace: &str, source: kube::Error) -> TrustError {
    TrustError::Api {
        action,
        namespace: namespace.to_owned(),
        name: CACERTS_SECRET.to_owned(),
        source: Box::new(source),
    }
}

/// An smm Secret of the trust, without data: labelled and annotated with the root.
fn trust_secret(name: &str, namespace: &str, role: &str, root: &MeshRoot) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.to_owned());
    secret.metadata.namespace = Some(namespace.to_owned());
    secret.metadata.labels = Some(BTreeMap::from([
        (MANAGED_BY.to_owned(), FIELD_MANAGER.to_owned()),
        (TRUST_ROLE_LABEL.to_owned(), role.to_owned()),
    ]));
    secret.metadata.annotations = Some(BTreeMap::from([
        (
            ROOT_FINGERPRINT_ANNOTATION.to_owned(),
            root.fingerprint().hex(),
        ),
        (MESH_ID_ANNOTATION.to_owned(), root.mesh_id().to_owned()),
    ]));
    secret
}

fn root_secret(name: &str, root: &MeshRoot) -> Secret {
    let mut secret = trust_secret(name, SMM_NAMESPACE, ROLE_MESH_ROOT, root);
    secret.data = Some(BTreeMap::from([
        (
            ROOT_CERT_DATA.to_owned(),
            ByteString(root.cert_pem().as_bytes().to_vec()),
        ),
        (
            ROOT_KEY_DATA.to_owned(),
            ByteString(root.key().expose().as_bytes().to_vec()),
        ),
    ]));
    secret
}

fn read_root(mesh_id: &str, name: &str, secret: &Secret) -> Result<MeshRoot, TrustError> {
    let bad = |reason: String| TrustError::BadRoot {
        namespace: SMM_NAMESPACE.to_owned(),
        name: name.to_owned(),
        reason,
    };
    let text = |key: &str| -> Result<String, TrustError> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .ok_or_else(|| bad(format!("no key {key}")))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| bad(format!("{key} is not text")))
    };
    MeshRoot::from_pem(mesh_id, text(ROOT_CERT_DATA)?, text(ROOT_KEY_DATA)?)
        .map_err(|err| bad(err.to_string()))
}

/// Creates smm's namespace for the root; someone else creating it meanwhile is as good.
async fn create_namespace(client: &Client) -> Result<(), TrustError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(SMM_NAMESPACE.to_owned());
    match api.create(&PostParams::default(), &namespace).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(TrustError::Namespace {
            namespace: SMM_NAMESPACE.to_owned(),
            source: Box::new(source),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cacerts_from_another_root_is_refused_naming_both_roots() {
        let root = MeshRoot::generate("mesh1").unwrap();
        let other = MeshRoot::generate("mesh1").unwrap();
        let ours = CacertsOwner::Smm {
            root_fingerprint: root.fingerprint().hex(),
        };
        assert_eq!(
            judge(ours, "istio-system", Some(&root)).unwrap(),
            Cacerts::FromThisRoot
        );
        assert_eq!(
            judge(CacertsOwner::User, "istio-system", Some(&root)).unwrap(),
            Cacerts::UsersOwn
        );
        let theirs = CacertsOwner::Smm {
            root_fingerprint: other.fingerprint().hex(),
        };
        // A second primary keeps no root: smm's cacerts there comes from the first one's.
        assert_eq!(
            judge(theirs.clone(), "istio-system", None).unwrap(),
            Cacerts::FromRootElsewhere
        );
        assert_eq!(
            judge(CacertsOwner::User, "istio-system", None).unwrap(),
            Cacerts::UsersOwn
        );
        let message = judge(theirs, "istio-system", Some(&root))
            .unwrap_err()
            .to_string();
        assert!(message.contains("istio-system/cacerts"), "{message}");
        assert!(message.contains(&other.fingerprint().hex()), "{message}");
        assert!(message.contains(&root.fingerprint().hex()), "{message}");
    }

    #[test]
    fn the_secrets_name_their_root_and_the_root_reads_back() {
        let root = MeshRoot::generate("mesh1").unwrap();
        let secret = root_secret(&mesh_root_secret_name("mesh1"), &root);
        assert_eq!(secret.metadata.name.as_deref(), Some("smm-mesh-root-mesh1"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some(SMM_NAMESPACE));
        let labels = secret.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY], "smm");
        assert_eq!(labels[TRUST_ROLE_LABEL], ROLE_MESH_ROOT);
        let annotations = secret.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations[ROOT_FINGERPRINT_ANNOTATION],
            root.fingerprint().hex()
        );
        let read = read_root("mesh1", "smm-mesh-root-mesh1", &secret).unwrap();
        assert_eq!(read.fingerprint(), root.fingerprint());

        let mut broken = secret.clone();
        broken.data.as_mut().unwrap().remove(ROOT_KEY_DATA);
        let message = read_root("mesh1", "smm-mesh-root-mesh1", &broken)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("smm-system/smm-mesh-root-mesh1"),
            "{message}"
        );
        assert!(message.contains(ROOT_KEY_DATA), "{message}");
    }
}
