//! The ambient mesh's helpers: `smm dataplane-mode` (which namespaces ztunnel carries) and
//! `smm waypoint` (the L7 proxy of a namespace, a Gateway from which istiod makes the proxy).
//! Both change objects no reconciler owns: smm changes them on request and leaves them alone
//! afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::json;

use super::{OpsError, operator_namespaces};
use crate::api::{ComponentPhase, ControlPlane};
use crate::cluster::control_plane;
use crate::cluster::namespaces;
use crate::cluster::objects::FIELD_MANAGER;
use crate::mesh::gateway_api::{
    self, GATEWAYS_CRD, USE_WAYPOINT, WAYPOINT_CLASS, WaypointFor, waypoint_gateway,
};
use crate::mesh::injection::{
    DataplaneMode, check_ambient_enrollable, dataplane_labels, injection_selected,
};
use crate::mesh::revisions::strategy;

#[derive(Debug, thiserror::Error)]
pub enum AmbientError {
    #[error(
        "namespace {namespace} is labelled for sidecar injection ({}): its pods get sidecars, \
         which ztunnel leaves alone; turn injection off first (smm sidecar-proxy auto-inject off \
         {namespace}), or pass --allow-sidecar-injection to label it anyway",
        labels.join(", ")
    )]
    InjectionOn {
        namespace: String,
        labels: Vec<String>,
    },
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot {action} {what}: {source}")]
    Write {
        action: &'static str,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the cluster has no Gateway API CRDs ({GATEWAYS_CRD}), and a waypoint is a Gateway: let \
         smm apply them (the standard channel {bundle}) with spec.gatewayAPI.enabled: true \
         (smm install base --gateway-api true), or under the ambient profile (smm install \
         --profile ambient)"
    )]
    NoGatewayApi { bundle: String },
    #[error(
        "gateway/{name} in namespace {namespace} is of class {class:?}, not a waypoint \
         ({WAYPOINT_CLASS}): not deleting it"
    )]
    NotAWaypoint {
        namespace: String,
        name: String,
        class: String,
    },
    #[error(
        "gateway/{name} in namespace {namespace} was not Programmed within {}s: {reason}",
        timeout.as_secs()
    )]
    NotProgrammed {
        namespace: String,
        name: String,
        timeout: Duration,
        /// istiod's reason and message, or that no controller took the Gateway.
        reason: String,
    },
}

/// What `smm dataplane-mode` did to one namespace.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceMode {
    pub namespace: String,
    pub mode: DataplaneMode,
    /// The sidecar injection labels the namespace keeps (`istio-injection=enabled`,
    /// `istio.io/rev=...`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub injection: Vec<String>,
}

/// What `smm dataplane-mode` did, and what the user should know about it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneModeReport {
    pub namespaces: Vec<NamespaceMode>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Sets the data plane mode of `namespaces` for the mesh of the ControlPlane `control_plane`.
/// Ambient mode is refused, before any namespace changes, for Kubernetes', the mesh's and the
/// operator's namespaces, and for a namespace labelled for sidecar injection unless
/// `allow_sidecar_injection`. `sidecar` only removes the ambient label: injection stays as
/// `smm sidecar-proxy auto-inject` set it.
pub async fn dataplane_mode(
    client: &Client,
    control_plane: &str,
    namespaces: &[String],
    mode: DataplaneMode,
    allow_sidecar_injection: bool,
) -> Result<DataplaneModeReport, OpsError> {
    let stored = control_plane::load(client, control_plane).await?;
    let spec = stored
        .as_ref()
        .map(|cp| cp.spec.clone())
        .unwrap_or_default();
    if mode == DataplaneMode::Ambient {
        let operator_namespaces = operator_namespaces(client).await?;
        let operator_namespaces: Vec<&str> =
            operator_namespaces.iter().map(String::as_str).collect();
        for namespace in namespaces {
            check_ambient_enrollable(namespace, spec.mesh_namespace(), &operator_namespaces)?;
        }
    }
    let api = Api::<Namespace>::all(client.clone());
    let mut report = DataplaneModeReport {
        namespaces: Vec::new(),
        warnings: Vec::new(),
    };
    for namespace in namespaces {
        let live = api
            .get(namespace)
            .await
            .map_err(|source| AmbientError::Read {
                what: format!("namespace/{namespace}"),
                source,
            })?;
        let injection = injection_selected(&live.metadata.labels.unwrap_or_default());
        if mode == DataplaneMode::Ambient && !injection.is_empty() && !allow_sidecar_injection {
            return Err(AmbientError::InjectionOn {
                namespace: namespace.clone(),
                labels: injection,
            }
            .into());
        }
        report.namespaces.push(NamespaceMode {
            namespace: namespace.clone(),
            mode,
            injection,
        });
    }
    for namespace in namespaces {
        namespaces::merge_labels(client, namespace, dataplane_labels(mode)).await?;
    }
    if mode == DataplaneMode::Ambient && !runs_ztunnel(stored.as_ref()) {
        report.warnings.push(format!(
            "the ControlPlane {control_plane} runs no ztunnel: nothing carries these namespaces' \
             traffic until it does (smm install --profile ambient -a)"
        ));
    }
    if mode == DataplaneMode::Sidecar {
        for namespace in report.namespaces.iter().filter(|n| n.injection.is_empty()) {
            report.warnings.push(format!(
                "namespace {} is not labelled for sidecar injection: smm sidecar-proxy \
                 auto-inject on {} turns it on",
                namespace.namespace, namespace.namespace
            ));
        }
    }
    Ok(report)
}

/// Whether the ControlPlane's status shows ztunnel running: Available, or being upgraded
/// (its old pods still carry the traffic).
fn runs_ztunnel(control_plane: Option<&ControlPlane>) -> bool {
    control_plane
        .and_then(|cp| cp.status.as_ref())
        .and_then(|status| status.components.get("ztunnel"))
        .is_some_and(|ztunnel| {
            matches!(
                ztunnel.phase,
                ComponentPhase::Available | ComponentPhase::Upgrading
            )
        })
}

/// A waypoint to apply.
#[derive(Debug)]
pub struct WaypointRequest<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub traffic: WaypointFor,
    /// Label the namespace `istio.io/use-waypoint=<name>`, so all its traffic goes through it.
    pub enroll_namespace: bool,
    /// How long to wait for istiod to program it; `None`: do not wait.
    pub wait: Option<Duration>,
}

/// What `smm waypoint apply|delete` did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaypointReport {
    pub namespace: String,
    pub name: String,
    /// Applied: which traffic it serves. Deleted: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<WaypointFor>,
    /// The istiod revision that programs it, when the mesh is revisioned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Applied and waited for: istiod programmed it. Deleted: whether it existed.
    pub done: bool,
    /// Whether the namespace's `istio.io/use-waypoint` label was set (apply) or removed (delete).
    pub namespace_label_changed: bool,
}

/// Applies the waypoint Gateway of `request` for the mesh of the ControlPlane `control_plane`,
/// labelled with its revision when it is revisioned, and waits for istiod to program it.
/// Refused where the Gateway API CRDs are missing.
pub async fn apply_waypoint(
    client: &Client,
    control_plane: &str,
    request: &WaypointRequest<'_>,
) -> Result<WaypointReport, OpsError> {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd = crds
        .get_opt(GATEWAYS_CRD)
        .await
        .map_err(|source| AmbientError::Read {
            what: format!("customresourcedefinition/{GATEWAYS_CRD}"),
            source,
        })?;
    if crd.is_none() {
        return Err(AmbientError::NoGatewayApi {
            bundle: gateway_api::bundle_version(),
        }
        .into());
    }
    let spec = control_plane::load(client, control_plane)
        .await?
        .map(|cp| cp.spec)
        .unwrap_or_default();
    let revision = strategy::active(&spec)?.value;
    let revision = (!revision.is_empty()).then_some(revision);
    let WaypointRequest {
        namespace, name, ..
    } = *request;
    let gateway = waypoint_gateway(name, namespace, request.traffic, revision.as_deref());
    let api = gateways(client, namespace);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &apply, &Patch::Apply(&gateway))
        .await
        .map_err(|source| AmbientError::Write {
            action: "apply",
            what: describe(namespace, name),
            source,
        })?;
    tracing::info!(namespace, name, traffic = %request.traffic, "waypoint applied");
    if request.enroll_namespace {
        namespaces::merge_labels(client, namespace, json!({USE_WAYPOINT: name})).await?;
    }
    let done = match request.wait {
        Some(timeout) => {
            await_programmed(&api, namespace, name, timeout).await?;
            true
        }
        None => false,
    };
    Ok(WaypointReport {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        traffic: Some(request.traffic),
        revision,
        done,
        namespace_label_changed: request.enroll_namespace,
    })
}

/// Deletes the waypoint `name` of `namespace` (refusing a Gateway of another class) and the
/// namespace's `istio.io/use-waypoint` label when it names it; istiod's Deployment and Service go
/// with the Gateway, which owns them. A waypoint that does not exist is no error.
pub async fn delete_waypoint(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<WaypointReport, OpsError> {
    let api = gateways(client, namespace);
    let existing = api
        .get_opt(name)
        .await
        .map_err(|source| read_gateways(namespace, name, source))?;
    if let Some(gateway) = &existing {
        let class = gateway.data["spec"]["gatewayClassName"]
            .as_str()
            .unwrap_or_default();
        if class != WAYPOINT_CLASS {
            return Err(AmbientError::NotAWaypoint {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                class: class.to_owned(),
            }
            .into());
        }
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(namespace, name, "waypoint deleted"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(AmbientError::Write {
                    action: "delete",
                    what: describe(namespace, name),
                    source,
                }
                .into());
            }
        }
    }
    let labels = Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await
        .map_err(|source| AmbientError::Read {
            what: format!("namespace/{namespace}"),
            source,
        })?
        .and_then(|live| live.metadata.labels)
        .unwrap_or_default();
    let enrolled = labels.get(USE_WAYPOINT).is_some_and(|used| used == name);
    if enrolled {
        namespaces::merge_labels(client, namespace, json!({USE_WAYPOINT: null})).await?;
    }
    Ok(WaypointReport {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        traffic: None,
        revision: None,
        done: existing.is_some(),
        namespace_label_changed: enrolled,
    })
}

fn gateways(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &gateway_api::gateway_resource())
}

fn describe(namespace: &str, name: &str) -> String {
    format!("gateway/{name} in namespace {namespace}")
}

fn read_gateways(namespace: &str, name: &str, source: kube::Error) -> AmbientError {
    AmbientError::Read {
        what: describe(namespace, name),
        source,
    }
}

/// How often the Gateway's status is read while waiting: istiod programs a waypoint within a
/// second or two.
const POLL: Duration = Duration::from_millis(500);

/// Waits until istiod sets the Gateway's `Programmed` condition True; after `timeout`, the
/// error carries what its conditions say instead.
async fn await_programmed(
    api: &Api<DynamicObject>,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), AmbientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let gateway = api
            .get(name)
            .await
            .map_err(|source| read_gateways(namespace, name, source))?;
        let conditions = conditions(&gateway);
        match not_programmed(&conditions) {
            None => return Ok(()),
            Some(reason) if tokio::time::Instant::now() >= deadline => {
                return Err(AmbientError::NotProgrammed {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    timeout,
                    reason,
                });
            }
            Some(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// A Gateway's status conditions by type: (status, reason, message).
fn conditions(gateway: &DynamicObject) -> BTreeMap<String, (String, String, String)> {
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
    gateway.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                text(&c["type"]),
                (text(&c["status"]), text(&c["reason"]), text(&c["message"])),
            )
        })
        .collect()
}

/// `None` when the Gateway is Programmed; otherwise why not, from its `Programmed` condition
/// (or `Accepted`, which istiod sets first when it rejects one). `Pending` is the CRD's default:
/// no controller took the Gateway.
fn not_programmed(conditions: &BTreeMap<String, (String, String, String)>) -> Option<String> {
    let condition = |kind: &str| conditions.get(kind).filter(|(status, ..)| status != "True");
    let (reason, message) = match (conditions.get("Programmed"), condition("Accepted")) {
        (Some((status, ..)), _) if status == "True" => return None,
        (_, Some((_, reason, message))) | (Some((_, reason, message)), None) => {
            (reason.as_str(), message.as_str())
        }
        (None, None) => ("Pending", "no status yet"),
    };
    let mut why = format!("{reason}: {message}");
    if reason == "Pending" {
        why += " (no controller took it: is istiod running, in ambient mode, with \
                PILOT_ENABLE_AMBIENT=true?)";
    }
    Some(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(pairs: &[(&str, &str, &str, &str)]) -> BTreeMap<String, (String, String, String)> {
        pairs
            .iter()
            .map(|(kind, status, reason, message)| {
                (
                    (*kind).to_owned(),
                    (
                        (*status).to_owned(),
                        (*reason).to_owned(),
                        (*message).to_owned(),
                    ),
                )
            })
            .collect()
    }

    #[test]
    fn a_waypoint_not_programmed_reports_istiods_reason() {
        assert_eq!(
            not_programmed(&of(&[
                ("Accepted", "True", "Accepted", ""),
                ("Programmed", "True", "Programmed", "ok")
            ])),
            None
        );
        assert_eq!(
            not_programmed(&of(&[
                ("Accepted", "Unknown", "Pending", "Waiting for controller"),
                ("Programmed", "Unknown", "Pending", "Waiting for controller"),
            ]))
            .unwrap(),
            "Pending: Waiting for controller (no controller took it: is istiod running, in \
             ambient mode, with PILOT_ENABLE_AMBIENT=true?)"
        );
        assert_eq!(
            not_programmed(&of(&[
                ("Accepted", "True", "Accepted", ""),
                ("Programmed", "False", "Invalid", "no address"),
            ]))
            .unwrap(),
            "Invalid: no address"
        );
        assert!(
            not_programmed(&of(&[]))
                .unwrap()
                .contains("PILOT_ENABLE_AMBIENT")
        );
    }

    #[test]
    fn without_the_gateway_api_crds_the_refusal_says_how_to_get_them() {
        let bundle = gateway_api::bundle_version();
        let message = AmbientError::NoGatewayApi {
            bundle: bundle.clone(),
        }
        .to_string();
        assert!(
            message.contains("spec.gatewayAPI.enabled: true"),
            "{message}"
        );
        assert!(
            message.contains(&format!("standard channel {bundle}")),
            "{message}"
        );
    }

    #[test]
    fn only_a_running_ztunnel_carries_ambient_traffic() {
        assert!(!runs_ztunnel(None));
        let mut cp = ControlPlane::new("smm", Default::default());
        assert!(!runs_ztunnel(Some(&cp)));
        for (phase, runs) in [
            (ComponentPhase::Available, true),
            (ComponentPhase::Upgrading, true),
            (ComponentPhase::Installing, false),
            (ComponentPhase::Removed, false),
        ] {
            let mut status = crate::api::ControlPlaneStatus::default();
            status.components.insert(
                "ztunnel".to_owned(),
                crate::api::ComponentStatus::with_phase(phase),
            );
            cp.status = Some(status);
            assert_eq!(runs_ztunnel(Some(&cp)), runs, "{phase}");
        }
    }
}
