//! Reaching a Service's pods from this machine, as `kubectl port-forward service/NAME` does but
//! through the API server alone: a ready pod behind the Service is picked by the Service's
//! selector, and every local connection becomes a port-forward stream of that pod.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::workloads::pod_reason;
use crate::mesh::addons::ServicePort;

#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    #[error("Service {namespace}/{service} not found")]
    NoService { namespace: String, service: String },
    #[error("Service {namespace}/{service} has no {port}")]
    NoPort {
        namespace: String,
        service: String,
        port: ServicePort,
    },
    #[error("Service {namespace}/{service} selects no pods (it has no selector)")]
    NoSelector { namespace: String, service: String },
    #[error("no ready pod behind Service {namespace}/{service}: {why}")]
    NoReadyPod {
        namespace: String,
        service: String,
        /// What each pod the Service selects says of itself, or that there is none.
        why: String,
    },
    #[error(
        "pod {namespace}/{pod} has no container port named {name} (the target of Service {service}'s {port})"
    )]
    NoContainerPort {
        namespace: String,
        pod: String,
        service: String,
        port: ServicePort,
        name: String,
    },
    #[error("{address} is in use; choose another port with --port (0 picks a free one)")]
    PortInUse { address: SocketAddr },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("reading Service {namespace}/{service} and its pods: {source}")]
    Read {
        namespace: String,
        service: String,
        source: kube::Error,
    },
}

/// The pod and port that local connections are forwarded to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardTarget {
    pub namespace: String,
    pub pod: String,
    /// The port in the pod (the Service port's target).
    pub port: u16,
}

/// A ready pod behind the Service `service` and the pod's port that the Service's `port` sends
/// to: what a connection to the Service would reach.
pub async fn service_target(
    client: &Client,
    namespace: &str,
    service: &str,
    port: ServicePort,
) -> Result<ForwardTarget, PortForwardError> {
    let read_error = |source| PortForwardError::Read {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        source,
    };
    let found = Api::<Service>::namespaced(client.clone(), namespace)
        .get_opt(service)
        .await
        .map_err(read_error)?
        .ok_or_else(|| PortForwardError::NoService {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
        })?;
    let spec = found.spec.unwrap_or_default();
    let service_port = spec
        .ports
        .iter()
        .flatten()
        .find(|p| matches_port(p, port))
        .ok_or_else(|| PortForwardError::NoPort {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            port,
        })?;
    let selector = spec
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| PortForwardError::NoSelector {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
        })?;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector_string(selector)))
        .await
        .map_err(read_error)?
        .items;
    let pod = pick_ready(&pods).map_err(|why| PortForwardError::NoReadyPod {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        why,
    })?;
    let target = match &service_port.target_port {
        // No target port means the Service's own port number.
        None => Some(service_port.port),
        Some(IntOrString::Int(number)) => Some(*number),
        Some(IntOrString::String(name)) => container_port(pod, name),
    };
    let pod_name = pod.name_any();
    let target = target
        .and_then(|number| u16::try_from(number).ok())
        .ok_or_else(|| PortForwardError::NoContainerPort {
            namespace: namespace.to_owned(),
            pod: pod_name.clone(),
            service: service.to_owned(),
            port,
            name: match &service_port.target_port {
                Some(IntOrString::String(name)) => name.clone(),
                _ => service_port.port.to_string(),
            },
        })?;
    Ok(ForwardTarget {
        namespace: namespace.to_owned(),
        pod: pod_name,
        port: target,
    })
}

fn matches_port(candidate: &k8s_openapi::api::core::v1::ServicePort, port: ServicePort) -> bool {
    match port {
        ServicePort::Named(name) => candidate.name.as_deref() == Some(name),
        ServicePort::Number(number) => candidate.port == i32::from(number),
    }
}

fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The first ready pod by name (so a second run picks the same one), or what keeps each pod
/// from being ready.
fn pick_ready(pods: &[Pod]) -> Result<&Pod, String> {
    let mut live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    live.sort_by_key(|p| p.name_any());
    if let Some(ready) = live.iter().find(|p| is_ready(p)) {
        return Ok(ready);
    }
    if live.is_empty() {
        return Err("the Service's selector matches no pod".to_owned());
    }
    Err(live
        .iter()
        .map(|pod| {
            pod_reason(pod).unwrap_or_else(|| {
                let phase = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .unwrap_or("Unknown");
                format!("pod {} is {phase} and not ready", pod.name_any())
            })
        })
        .collect::<Vec<_>>()
        .join("; "))
}

fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The number of the container port called `name` in `pod`.
fn container_port(pod: &Pod, name: &str) -> Option<i32> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

/// Listens on `address:port` (port 0: a free one), saying plainly when the port is taken.
pub async fn listen(address: IpAddr, port: u16) -> Result<TcpListener, PortForwardError> {
    let address = SocketAddr::new(address, port);
    TcpListener::bind(address).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            PortForwardError::PortInUse { address }
        } else {
            PortForwardError::Listen { address, source }
        }
    })
}

/// Forwards every connection `listener` accepts to `target` through the API server (one
/// port-forward request each, as kubectl makes them), until `stop` is cancelled. A connection
/// that cannot be forwarded (the pod went away, the API server refused) is closed and logged;
/// the others go on.
pub async fn forward(
    client: Client,
    listener: TcpListener,
    target: ForwardTarget,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client, &target.namespace);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
            // Reaps finished connections so the set does not grow with every one served.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (connection, peer) = accepted?;
        let pods = pods.clone();
        let target = target.clone();
        connections.spawn(async move {
            if let Err(err) = forward_one(&pods, &target, connection).await {
                tracing::warn!(%peer, pod = %target.pod, port = target.port, "port-forward failed: {err}");
            }
        });
    }
    connections.shutdown().await;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("the API server gave no stream for the port")]
    NoStream,
    #[error("the pod's port: {0}")]
    Remote(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

async fn forward_one(
    pods: &Api<Pod>,
    target: &ForwardTarget,
    mut connection: TcpStream,
) -> Result<(), ConnectionError> {
    let mut forwarder = pods.portforward(&target.pod, &[target.port]).await?;
    let mut upstream = forwarder
        .take_stream(target.port)
        .ok_or(ConnectionError::NoStream)?;
    let remote_error = forwarder.take_error(target.port);
    let copied = tokio::io::copy_bidirectional(&mut connection, &mut upstream).await;
    drop(upstream);
    let joined = forwarder.join().await;
    // The error channel carries the kubelet's word when the pod's port refused (nothing
    // listening, no such port): that is the message worth showing, not the closed stream. It
    // resolves once the forwarder has ended.
    if let Some(remote_error) = remote_error
        && let Some(message) = remote_error.await
    {
        return Err(ConnectionError::Remote(message));
    }
    copied?;
    joined.map_err(|err| ConnectionError::Io(std::io::Error::other(err)))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodCondition, PodSpec, PodStatus};

    use super::*;

    fn pod(name: &str, phase: &str, ready: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.to_owned());
        pod.spec = Some(PodSpec {
            containers: vec![Container {
                name: "app".to_owned(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".to_owned()),
                    container_port: 3000,
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        });
        pod.status = Some(PodStatus {
            phase: Some(phase.to_owned()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: if ready { "True" } else { "False" }.to_owned(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        pod
    }

    #[test]
    fn the_first_ready_pod_by_name_is_picked() {
        let pods = [
            pod("c", "Running", true),
            pod("a", "Running", false),
            pod("b", "Running", true),
        ];
        assert_eq!(pick_ready(&pods).unwrap().name_any(), "b");
    }

    #[test]
    fn a_pod_being_deleted_is_not_picked() {
        let mut leaving = pod("a", "Running", true);
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        assert_eq!(
            pick_ready(&[leaving]).unwrap_err(),
            "the Service's selector matches no pod"
        );
    }

    #[test]
    fn without_a_ready_pod_each_pod_says_why() {
        let pods = [pod("a", "Pending", false), pod("b", "Running", false)];
        assert_eq!(
            pick_ready(&pods).unwrap_err(),
            "pod a is Pending and not ready; pod b is Running and not ready"
        );
    }

    #[test]
    fn a_named_target_port_is_the_container_port_of_that_name() {
        let pod = pod("a", "Running", true);
        assert_eq!(container_port(&pod, "http"), Some(3000));
        assert_eq!(container_port(&pod, "grpc"), None);
    }

    #[tokio::test]
    async fn a_port_in_use_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = listen("127.0.0.1".parse().unwrap(), port)
            .await
            .unwrap_err();
        assert!(matches!(err, PortForwardError::PortInUse { .. }), "{err:?}");
        assert!(err.to_string().contains("is in use"), "{err}");
    }
}
