//! One mesh over several clusters, as plain data: the spec a remote cluster gets from its
//! primary's, the reader token istiod reads a cluster with, and the remote secret that hands
//! that token to istiod (`istio/multiCluster`, one kubeconfig per cluster, as istioctl's
//! `create-remote-secret` makes it).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use serde_json::json;

use crate::api::names::{REMOTE_SECRET_PREFIX, SMM_NAMESPACE};
use crate::api::{ClusterModel, ComponentSpec, ControlPlaneSpec, MultiCluster, PrimaryCluster};
use crate::mesh::catalog::Catalog;

/// The ServiceAccount Istio's charts make for other clusters' istiods to read this one with.
pub const READER_SERVICE_ACCOUNT: &str = "istio-reader-service-account";
/// The token Secret of the reader account that a remote secret is made from (istioctl's name,
/// so a cluster attached by either finds the other's).
pub const READER_TOKEN_SECRET: &str = "istio-reader-service-account-istio-remote-secret-token";
/// The label istiod selects remote secrets by.
pub const MULTI_CLUSTER_LABEL: &str = "istio/multiCluster";
/// The annotation that names the cluster a remote secret is for (read by people and istioctl;
/// istiod reads the data key).
pub const CLUSTER_ANNOTATION: &str = "networking.istio.io/cluster";
/// smm's label on what it makes for an attached cluster: the ControlPlane it belongs to.
pub const CONTROL_PLANE_LABEL: &str = "smm.dev/control-plane";
/// smm's annotation on a remote secret: how the cluster takes part in the mesh.
pub const MODEL_ANNOTATION: &str = "smm.dev/cluster-model";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "smm");

/// What an attach is told about the cluster it attaches.
#[derive(Clone, Debug)]
pub struct Attachment {
    /// Its name in the mesh: Istio's cluster ID.
    pub name: String,
    pub model: ClusterModel,
    /// Its network. Unset: the primary's.
    pub network: Option<String>,
    /// For a remote cluster: the address its proxies reach the primary's istiod at.
    pub pilot_address: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error(
        "ControlPlane {control_plane} has no spec.multiCluster: give this cluster its place in \
         the mesh first (spec.multiCluster.clusterName, and meshID and network if needed), then \
         attach other clusters to it"
    )]
    NotMultiCluster { control_plane: String },
    #[error(
        "ControlPlane {control_plane} is itself a remote cluster (spec.multiCluster.primary is \
         {primary}): attach clusters to the primary"
    )]
    AttachToRemote {
        control_plane: String,
        primary: String,
    },
    #[error("cannot attach cluster {name} to itself: it is this ControlPlane's own cluster name")]
    AttachToItself { name: String },
    #[error(
        "--pilot-address: a remote cluster needs the IP address its proxies reach this \
         cluster's istiod at (ports 15012 and 15017, usually an east-west gateway's)"
    )]
    NoPilotAddress,
    #[error("--pilot-address is only for a remote cluster: a primary cluster runs its own istiod")]
    PilotAddressForPrimary,
}

/// The spec of a remote cluster attached to the mesh `primary` describes: the same namespace,
/// version, registry, trust domain and istiod revision, its own cluster name and network, the
/// primary named as the istiod serving it; only Istio's CRDs (`base`) and the remote profile of
/// istiod, every other component off.
pub fn remote_spec(
    catalog: &Catalog,
    primary: &ControlPlaneSpec,
    primary_cluster: &MultiCluster,
    attachment: &Attachment,
    address: &str,
    revision: &str,
) -> ControlPlaneSpec {
    let components = catalog
        .names()
        .into_iter()
        .map(|name| {
            let enabled = matches!(name, "base" | "istiod");
            let setting = ComponentSpec {
                enabled: Some(enabled),
                ..ComponentSpec::default()
            };
            (name.to_owned(), setting)
        })
        .collect();
    ControlPlaneSpec {
        image_registry: primary.image_registry.clone(),
        namespace: primary.namespace.clone(),
        revision: (!revision.is_empty()).then(|| revision.to_owned()),
        version: primary.version.clone(),
        trust_domain: primary.trust_domain.clone(),
        multi_cluster: Some(MultiCluster {
            mesh_id: Some(primary_cluster.mesh_id(primary.trust_domain()).to_owned()),
            cluster_name: attachment.name.clone(),
            network: attachment
                .network
                .clone()
                .or_else(|| primary_cluster.network.clone()),
            primary: Some(PrimaryCluster {
                cluster_name: primary_cluster.cluster_name.clone(),
                address: address.to_owned(),
            }),
        }),
        components,
        ..ControlPlaneSpec::default()
    }
}

/// Checks what an attach is asked against the primary's spec, before any cluster is touched;
/// returns the primary's place in the mesh.
pub fn check_attachment<'a>(
    control_plane: &str,
    primary: &'a ControlPlaneSpec,
    attachment: &Attachment,
) -> Result<&'a MultiCluster, AttachmentError> {
    let multi_cluster =
        primary
            .multi_cluster
            .as_ref()
            .ok_or_else(|| AttachmentError::NotMultiCluster {
                control_plane: control_plane.to_owned(),
            })?;
    if let Some(remote) = &multi_cluster.primary {
        return Err(AttachmentError::AttachToRemote {
            control_plane: control_plane.to_owned(),
            primary: remote.cluster_name.clone(),
        });
    }
    if attachment.name == multi_cluster.cluster_name {
        return Err(AttachmentError::AttachToItself {
            name: attachment.name.clone(),
        });
    }
    match (attachment.model, &attachment.pilot_address) {
        (ClusterModel::Remote, None) => Err(AttachmentError::NoPilotAddress),
        (ClusterModel::Primary, Some(_)) => Err(AttachmentError::PilotAddressForPrimary),
        _ => Ok(multi_cluster),
    }
}

/// The reader account's token Secret, which the controller-manager fills in (token, ca.crt):
/// a token that lives as long as the Secret, as a remote secret needs.
pub fn reader_token_secret(namespace: &str, control_plane: &str) -> Secret {
    let mut secret = Secret {
        type_: Some("kubernetes.io/service-account-token".to_owned()),
        ..Secret::default()
    };
    secret.metadata.name = Some(READER_TOKEN_SECRET.to_owned());
    secret.metadata.namespace = Some(namespace.to_owned());
    secret.metadata.labels = Some(smm_labels(control_plane));
    secret.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.io/service-account.name".to_owned(),
        READER_SERVICE_ACCOUNT.to_owned(),
    )]));
    secret
}

/// How istiod reaches a cluster: its API server, the CA that signs it, the reader's token.
pub struct ReaderCredentials {
    pub server: String,
    pub certificate_authority: Vec<u8>,
    pub token: String,
}

impl std::fmt::Debug for ReaderCredentials {
    /// The token is a credential: never in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderCredentials")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The name of the remote secret for cluster `cluster`.
pub fn remote_secret_name(cluster: &str) -> String {
    format!("{REMOTE_SECRET_PREFIX}{cluster}")
}

/// The remote secret that lets the istiod in `namespace` read `cluster`: one data key named
/// after the cluster, a kubeconfig with nothing but the server, its CA and a bearer token (the
/// only form istiod accepts without being told to trust files and plugins).
pub fn remote_secret(
    namespace: &str,
    control_plane: &str,
    cluster: &str,
    model: ClusterModel,
    credentials: &ReaderCredentials,
) -> Secret {
    let kubeconfig = token_kubeconfig(cluster, credentials);
    let mut labels = smm_labels(control_plane);
    labels.insert(MULTI_CLUSTER_LABEL.to_owned(), "true".to_owned());
    let mut secret = Secret {
        data: Some(BTreeMap::from([(
            cluster.to_owned(),
            ByteString(kubeconfig.into_bytes()),
        )])),
        ..Secret::default()
    };
    secret.metadata.name = Some(remote_secret_name(cluster));
    secret.metadata.namespace = Some(namespace.to_owned());
    secret.metadata.labels = Some(labels);
    secret.metadata.annotations = Some(BTreeMap::from([
        (CLUSTER_ANNOTATION.to_owned(), cluster.to_owned()),
        (MODEL_ANNOTATION.to_owned(), model_name(model).to_owned()),
    ]));
    secret
}

/// A kubeconfig with nothing but the server, its CA and a bearer token, every name in it
/// `cluster`.
fn token_kubeconfig(cluster: &str, credentials: &ReaderCredentials) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(&credentials.certificate_authority);
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {
            "server": credentials.server, "certificate-authority-data": ca,
        }}],
        "users": [{"name": cluster, "user": {"token": credentials.token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
        "current-context": cluster,
    });
    serde_yaml_ng::to_string(&kubeconfig).expect("a kubeconfig serializes")
}

/// The account smm reconciles a remote cluster's part with, long after the attach: in smm's
/// namespace there, bound to `cluster-admin` as Argo CD's manager account is (the remote
/// profile writes CRDs, webhooks and cluster roles, and helm needs what it grants).
pub const MANAGER_ACCOUNT: &str = "smm-remote-manager";
/// The manager account's token Secret in the remote cluster.
pub const MANAGER_TOKEN_SECRET: &str = "smm-remote-manager-token";
/// The label on a manager Secret in the primary: the cluster it reaches.
pub const CLUSTER_LABEL: &str = "smm.dev/cluster";
/// Annotations on a manager Secret: what the remote cluster's spec is made from.
pub const PILOT_ADDRESS_ANNOTATION: &str = "smm.dev/pilot-address";
pub const NETWORK_ANNOTATION: &str = "smm.dev/network";

/// The manager account in the remote cluster: its ServiceAccount, its binding, its token.
pub fn manager_account(control_plane: &str) -> (ServiceAccount, ClusterRoleBinding, Secret) {
    let namespace = SMM_NAMESPACE;
    let mut account = ServiceAccount::default();
    account.metadata.name = Some(MANAGER_ACCOUNT.to_owned());
    account.metadata.namespace = Some(namespace.to_owned());
    account.metadata.labels = Some(smm_labels(control_plane));
    let binding = ClusterRoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some(MANAGER_ACCOUNT.to_owned()),
            labels: Some(smm_labels(control_plane)),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: "cluster-admin".to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: MANAGER_ACCOUNT.to_owned(),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        }]),
    };
    let mut token = Secret {
        type_: Some("kubernetes.io/service-account-token".to_owned()),
        ..Secret::default()
    };
    token.metadata.name = Some(MANAGER_TOKEN_SECRET.to_owned());
    token.metadata.namespace = Some(namespace.to_owned());
    token.metadata.labels = Some(smm_labels(control_plane));
    token.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.io/service-account.name".to_owned(),
        MANAGER_ACCOUNT.to_owned(),
    )]));
    (account, binding, token)
}

/// The name of the Secret in the primary that holds the manager's kubeconfig of `cluster`.
pub fn manager_secret_name(cluster: &str) -> String {
    format!("smm-cluster-{cluster}")
}

/// The manager's kubeconfig of a remote cluster, kept in smm's namespace of the primary with
/// what the remote's spec is made from, as Argo CD keeps its clusters.
pub fn manager_secret(
    control_plane: &str,
    attachment: &Attachment,
    credentials: &ReaderCredentials,
) -> Secret {
    let cluster = attachment.name.as_str();
    let kubeconfig = token_kubeconfig(cluster, credentials);
    let mut labels = smm_labels(control_plane);
    labels.insert(CLUSTER_LABEL.to_owned(), cluster.to_owned());
    let mut annotations = BTreeMap::new();
    if let Some(address) = &attachment.pilot_address {
        annotations.insert(PILOT_ADDRESS_ANNOTATION.to_owned(), address.clone());
    }
    if let Some(network) = &attachment.network {
        annotations.insert(NETWORK_ANNOTATION.to_owned(), network.clone());
    }
    let mut secret = Secret {
        data: Some(BTreeMap::from([(
            "kubeconfig".to_owned(),
            ByteString(kubeconfig.into_bytes()),
        )])),
        ..Secret::default()
    };
    secret.metadata.name = Some(manager_secret_name(cluster));
    secret.metadata.namespace = Some(SMM_NAMESPACE.to_owned());
    secret.metadata.labels = Some(labels);
    secret.metadata.annotations = Some(annotations);
    secret
}

/// The label selector of the manager Secrets of `control_plane`'s attached clusters.
pub fn manager_secret_selector(control_plane: &str) -> String {
    format!(
        "{}={},{CONTROL_PLANE_LABEL}={control_plane},{CLUSTER_LABEL}",
        MANAGED_BY.0, MANAGED_BY.1
    )
}

/// The attachment a manager Secret was made for: its cluster, network and pilot address.
pub fn attachment_of(secret: &Secret) -> Option<Attachment> {
    let name = secret.metadata.labels.as_ref()?.get(CLUSTER_LABEL)?.clone();
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    Some(Attachment {
        name,
        model: ClusterModel::Remote,
        network: annotations.get(NETWORK_ANNOTATION).cloned(),
        pilot_address: annotations.get(PILOT_ADDRESS_ANNOTATION).cloned(),
    })
}

/// Whether smm made `secret` for `control_plane`.
pub fn made_for(secret: &Secret, control_plane: &str) -> bool {
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    labels.get(CONTROL_PLANE_LABEL).map(String::as_str) == Some(control_plane)
        && labels.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
}

/// The names of the Istio Gateway and VirtualService that expose istiod through the east-west
/// gateway.
pub const ISTIOD_EXPOSURE: &str = "istiod-eastwest";

/// What lets the proxies and the injector of a remote cluster on another network reach the
/// primary's istiod: an Istio Gateway on the east-west gateway passing TLS through on 15012
/// (xDS, certificates) and 15017 (the injector), and a VirtualService routing both to the
/// istiod Service `istiod_service` in `namespace` (its webhook port is 443). Istio config,
/// applied with istiod's validation running.
pub fn istiod_exposure(
    namespace: &str,
    istiod_service: &str,
    control_plane: &str,
) -> [serde_json::Value; 2] {
    let host = format!("{istiod_service}.{namespace}.svc.cluster.local");
    let metadata = json!({
        "name": ISTIOD_EXPOSURE, "namespace": namespace, "labels": smm_labels(control_plane),
    });
    let server = |port: u16, name: &str| {
        json!({
            "port": {"number": port, "name": name, "protocol": "TLS"},
            "tls": {"mode": "PASSTHROUGH"},
            "hosts": ["*"],
        })
    };
    let route = |port: u16, target: u16| {
        json!({
            "match": [{"port": port, "sniHosts": ["*"]}],
            "route": [{"destination": {"host": host, "port": {"number": target}}}],
        })
    };
    [
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": metadata,
            "spec": {
                "selector": {"istio": "eastwestgateway"},
                "servers": [server(15012, "tls-istiod"), server(15017, "tls-istiodwebhook")],
            },
        }),
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": metadata,
            "spec": {
                "hosts": ["*"],
                "gateways": [ISTIOD_EXPOSURE],
                "tls": [route(15012, 15012), route(15017, 443)],
            },
        }),
    ]
}

/// The model as the remote secret's annotation and the CLI spell it.
pub fn model_name(model: ClusterModel) -> &'static str {
    match model {
        ClusterModel::Remote => "remote",
        ClusterModel::Primary => "primary",
    }
}

/// The model a remote secret's annotation names (a secret made by hand: remote).
pub fn model_of(secret: &Secret) -> ClusterModel {
    let annotation = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(MODEL_ANNOTATION));
    match annotation.map(String::as_str) {
        Some("primary") => ClusterModel::Primary,
        _ => ClusterModel::Remote,
    }
}

/// The label selector of the remote secrets smm made for `control_plane`.
pub fn remote_secret_selector(control_plane: &str) -> String {
    format!(
        "{MULTI_CLUSTER_LABEL}=true,{}={},{CONTROL_PLANE_LABEL}={control_plane}",
        MANAGED_BY.0, MANAGED_BY.1
    )
}

fn smm_labels(control_plane: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
        (CONTROL_PLANE_LABEL.to_owned(), control_plane.to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary() -> ControlPlaneSpec {
        ControlPlaneSpec {
            namespace: Some("mesh".to_owned()),
            image_registry: Some("registry.local:5000".to_owned()),
            multi_cluster: Some(MultiCluster {
                cluster_name: "west".to_owned(),
                network: Some("net1".to_owned()),
                ..MultiCluster::default()
            }),
            ..ControlPlaneSpec::default()
        }
        .with_enabled("grafana", true)
    }

    fn remote(name: &str) -> Attachment {
        Attachment {
            name: name.to_owned(),
            model: ClusterModel::Remote,
            network: None,
            pilot_address: Some("198.51.100.10".to_owned()),
        }
    }

    #[test]
    fn a_remote_runs_the_primarys_mesh_with_istiod_in_the_remote_profile() {
        let catalog = Catalog::builtin().unwrap();
        let primary = primary();
        let placement = check_attachment("smm", &primary, &remote("east")).unwrap();
        let spec = remote_spec(
            &catalog,
            &primary,
            placement,
            &remote("east"),
            "198.51.100.10",
            "1-31",
        );
        let enabled: Vec<_> = catalog
            .placements(&spec)
            .into_iter()
            .filter(|(_, placement)| placement.enabled)
            .map(|(name, _)| name)
            .collect();
        assert_eq!(enabled, ["base", "istiod"]);
        assert_eq!(spec.mesh_namespace(), "mesh");
        assert_eq!(spec.revision.as_deref(), Some("1-31"));
        assert_eq!(spec.image_registry, primary.image_registry);
        let multi_cluster = spec.multi_cluster.as_ref().unwrap();
        assert_eq!(multi_cluster.cluster_name, "east");
        // The mesh ID is written out: the remote's trust domain default must not drift from it.
        assert_eq!(multi_cluster.mesh_id.as_deref(), Some("cluster.local"));
        assert_eq!(multi_cluster.network.as_deref(), Some("net1"));
        let serving = multi_cluster.primary.as_ref().unwrap();
        assert_eq!(serving.cluster_name, "west");
        // The spec passes smm's own checks, so the remote's reconcile accepts it.
        crate::desired::resolve::resolve(&catalog, &spec).unwrap();
    }

    #[test]
    fn istiod_is_exposed_on_the_eastwest_gateway_for_both_of_its_ports() {
        let [gateway, virtual_service] = istiod_exposure("mesh", "istiod-1-31", "smm");
        assert_eq!(gateway["spec"]["selector"]["istio"], "eastwestgateway");
        let ports: Vec<_> = gateway["spec"]["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["port"]["number"].clone(), s["tls"]["mode"].clone()))
            .collect();
        assert_eq!(
            ports,
            [
                (json!(15012), json!("PASSTHROUGH")),
                (json!(15017), json!("PASSTHROUGH"))
            ]
        );
        let routes = &virtual_service["spec"]["tls"];
        assert_eq!(
            routes[1]["route"][0]["destination"],
            json!({"host": "istiod-1-31.mesh.svc.cluster.local", "port": {"number": 443}})
        );
        assert_eq!(
            virtual_service["metadata"]["labels"][CONTROL_PLANE_LABEL],
            "smm"
        );
    }

    #[test]
    fn attaching_is_refused_before_anything_is_touched() {
        let single = ControlPlaneSpec::default();
        let err = check_attachment("smm", &single, &remote("east")).unwrap_err();
        assert!(
            matches!(err, AttachmentError::NotMultiCluster { .. }),
            "{err}"
        );
        let primary = primary();
        let err = check_attachment("smm", &primary, &remote("west")).unwrap_err();
        assert!(
            matches!(err, AttachmentError::AttachToItself { .. }),
            "{err}"
        );
        let no_address = Attachment {
            pilot_address: None,
            ..remote("east")
        };
        let err = check_attachment("smm", &primary, &no_address).unwrap_err();
        assert!(matches!(err, AttachmentError::NoPilotAddress), "{err}");
        let other_primary = Attachment {
            model: ClusterModel::Primary,
            ..remote("east")
        };
        let err = check_attachment("smm", &primary, &other_primary).unwrap_err();
        assert!(
            matches!(err, AttachmentError::PilotAddressForPrimary),
            "{err}"
        );
        let mut is_remote = primary.clone();
        is_remote.multi_cluster.as_mut().unwrap().primary = Some(PrimaryCluster {
            cluster_name: "north".to_owned(),
            address: "198.51.100.1".to_owned(),
        });
        let err = check_attachment("smm", &is_remote, &remote("east")).unwrap_err();
        assert!(
            matches!(err, AttachmentError::AttachToRemote { .. }),
            "{err}"
        );
    }

    #[test]
    fn the_remote_secret_is_what_istiod_selects_and_holds_only_a_token_kubeconfig() {
        let credentials = ReaderCredentials {
            server: "https://10.1.2.3:6443".to_owned(),
            certificate_authority: b"CA PEM".to_vec(),
            token: "secret-token".to_owned(),
        };
        assert!(!format!("{credentials:?}").contains("secret-token"));
        let secret = remote_secret("mesh", "smm", "east", ClusterModel::Remote, &credentials);
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("istio-remote-secret-east")
        );
        let labels = secret.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MULTI_CLUSTER_LABEL], "true");
        assert_eq!(labels[CONTROL_PLANE_LABEL], "smm");
        assert_eq!(model_of(&secret), ClusterModel::Remote);
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["east"]);
        // As kube reads it, and with nothing but server, CA and token: no file, client
        // certificate or plugin, which istiod refuses by default.
        let parsed: kube::config::Kubeconfig = serde_yaml_ng::from_slice(&data["east"].0).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("east"));
        let kubeconfig: serde_json::Value = serde_yaml_ng::from_slice(&data["east"].0).unwrap();
        assert_eq!(
            kubeconfig["clusters"][0]["cluster"],
            json!({"server": "https://10.1.2.3:6443", "certificate-authority-data": "Q0EgUEVN"})
        );
        assert_eq!(
            kubeconfig["users"][0]["user"],
            json!({"token": "secret-token"})
        );
    }
}
