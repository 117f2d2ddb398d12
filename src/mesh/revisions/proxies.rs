//! Each injected pod's proxy against the control plane: its version, its revision, whether that
//! revision still exists and serves, and how far the proxy's version is from its revision's and
//! from the newest revision's.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use serde::{Serialize, Serializer};

use super::usage::{MeshSnapshot, PodRef, RevisionInfo, finished, injected_revision, revisions};

/// The container istiod's injector adds to a pod: a native sidecar (among the init containers)
/// on Kubernetes 1.29 and later, a plain container on older injections.
pub const PROXY_CONTAINER: &str = "istio-proxy";

/// One injected pod's proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    #[serde(flatten)]
    pub pod: PodRef,
    pub phase: Option<String>,
    /// The revision that injected it.
    pub revision: String,
    pub proxy_image: Option<String>,
    /// The proxy image's tag.
    pub proxy_version: Option<String>,
    /// The pod has finished (a Job's): its proxy no longer runs.
    pub finished: bool,
    /// Its revision's injector or istiod still exists.
    pub revision_exists: bool,
    /// Its revision's istiod has an available replica.
    pub revision_ready: bool,
    /// The version of its revision's istiod.
    pub control_plane_version: Option<String>,
    /// The proxy's version against its revision's istiod.
    pub skew: Option<Skew>,
    /// The proxy's version against the newest istiod present.
    pub skew_to_newest: Option<Skew>,
}

impl ProxyStatus {
    /// A running proxy whose istiod is gone: it keeps its last configuration and certificate
    /// until they expire, and nothing repairs it short of a restart into another revision.
    pub fn orphaned(&self) -> bool {
        !self.finished && !self.revision_exists
    }
}

/// Every pod istiod injected, by namespace and name, with its revision judged from `snapshot`.
pub fn proxy_statuses(snapshot: &MeshSnapshot) -> Vec<ProxyStatus> {
    let revisions = revisions(snapshot);
    let newest = newest_version(&revisions);
    let mut statuses: Vec<ProxyStatus> = snapshot
        .pods
        .iter()
        .filter_map(|pod| {
            let revision = injected_revision(pod)?;
            let info = revisions.get(revision).cloned().unwrap_or_default();
            let proxy_image = proxy_image(pod).map(str::to_owned);
            let proxy_version = proxy_image.as_deref().and_then(image_tag);
            let skew_against = |control_plane: Option<&str>| {
                Skew::between(proxy_version.as_deref()?, control_plane?)
            };
            Some(ProxyStatus {
                pod: PodRef::of(pod),
                phase: pod.status.as_ref().and_then(|s| s.phase.clone()),
                revision: revision.to_owned(),
                finished: finished(pod),
                revision_exists: info.exists,
                revision_ready: info.ready,
                skew: skew_against(info.version.as_deref()),
                skew_to_newest: skew_against(newest),
                control_plane_version: info.version,
                proxy_version,
                proxy_image,
            })
        })
        .collect();
    statuses.sort_by(|a, b| a.pod.cmp(&b.pod));
    statuses
}

/// The image of the pod's `istio-proxy` container, a native sidecar or a plain container.
pub fn proxy_image(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == PROXY_CONTAINER)?
        .image
        .as_deref()
}

/// The namespace of the istiod a pod's proxy dials, from its `CA_ADDR`
/// (`istiod-<rev>.<namespace>.svc:15012`): which mesh the proxy belongs to when several meshes
/// share a cluster (each mesh's revisionless istiod is revision `default`). `None` for a pod
/// without a proxy or without that variable.
pub fn proxy_mesh_namespace(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    let proxy = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == PROXY_CONTAINER)?;
    let address = proxy
        .env
        .iter()
        .flatten()
        .find(|var| var.name == "CA_ADDR")?
        .value
        .as_deref()?;
    let host = address.split(':').next()?;
    let mut labels = host.split('.');
    labels.next()?;
    labels.next().filter(|namespace| !namespace.is_empty())
}

/// The tag of an image reference (`docker.io/istio/proxyv2:1.28.0@sha256:...` → `1.28.0`); a
/// registry's port is not a tag.
pub fn image_tag(image: &str) -> Option<String> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last_segment
        .split_once(':')
        .map(|(_, tag)| tag.to_owned())
        .filter(|tag| !tag.is_empty())
}

/// How far a proxy's version is from a control plane's. Istio supports proxies up to two minor
/// versions behind their istiod, and none ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skew {
    None,
    /// Same minor version, another patch release.
    Patch,
    /// Minor versions of the proxy minus the control plane's: negative when the proxy is behind.
    Minor(i64),
    /// Another major version.
    Major,
    /// A version that is not `major.minor[.patch]` (a custom tag): only equality is known.
    Unknown,
}

impl Skew {
    pub fn between(proxy: &str, control_plane: &str) -> Option<Self> {
        if proxy == control_plane {
            return Some(Skew::None);
        }
        let (Some(p), Some(c)) = (Version::parse(proxy), Version::parse(control_plane)) else {
            return Some(Skew::Unknown);
        };
        Some(if p.major != c.major {
            Skew::Major
        } else if p.minor != c.minor {
            Skew::Minor(p.minor - c.minor)
        } else if p == c {
            Skew::None
        } else {
            Skew::Patch
        })
    }
}

impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skew::None => f.write_str("none"),
            Skew::Patch => f.write_str("patch"),
            Skew::Minor(minors) => write!(f, "{minors:+} minor"),
            Skew::Major => f.write_str("major"),
            Skew::Unknown => f.write_str("unknown"),
        }
    }
}

impl Serialize for Skew {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The newest control plane version among existing revisions (`major.minor.patch` only).
fn newest_version(revisions: &BTreeMap<String, RevisionInfo>) -> Option<&str> {
    revisions
        .values()
        .filter(|info| info.exists)
        .filter_map(|info| info.version.as_deref())
        .filter_map(|version| Some((Version::parse(version)?, version)))
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, version)| version)
}

/// `1.31.4`, `1.31.4-distroless`, `1.31`: what Istio's image tags look like. Ordered by its
/// fields, in their order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Version {
    major: i64,
    minor: i64,
    patch: i64,
}

impl Version {
    fn parse(tag: &str) -> Option<Self> {
        let release = tag.split(['-', '+']).next()?;
        let mut numbers = release.split('.').map(|n| n.parse::<i64>().ok());
        let major = numbers.next()??;
        let minor = numbers.next()??;
        let patch = numbers.next().unwrap_or(Some(0))?;
        numbers.next().is_none().then_some(Self {
            major,
            minor,
            patch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{injector, istiod, pod};
    use super::*;

    #[test]
    fn a_proxy_belongs_to_the_mesh_whose_istiod_it_dials() {
        let mut injected = pod("demo", "web", &[], Some(("1-31-3", "1.31.3")), "Running");
        assert_eq!(proxy_mesh_namespace(&injected), None);
        let spec = injected.spec.as_mut().unwrap();
        let proxy = spec.init_containers.as_mut().unwrap().last_mut().unwrap();
        proxy.env = Some(vec![k8s_openapi::api::core::v1::EnvVar {
            name: "CA_ADDR".to_owned(),
            value: Some("istiod-1-31-3.mesh-a.svc:15012".to_owned()),
            value_from: None,
        }]);
        assert_eq!(proxy_mesh_namespace(&injected), Some("mesh-a"));
        assert_eq!(
            proxy_mesh_namespace(&pod("demo", "plain", &[], None, "Running")),
            None
        );
    }

    fn pod_with_proxy_in_containers() -> Pod {
        let mut pod = pod("demo", "old", &[], Some(("1-30", "1.30.2")), "Running");
        let spec = pod.spec.as_mut().unwrap();
        let proxy = spec.init_containers.take().unwrap().pop().unwrap();
        spec.containers.push(proxy);
        pod
    }

    #[test]
    fn the_proxy_is_a_native_sidecar_or_a_plain_container() {
        let native = pod("demo", "web", &[], Some(("1-31", "1.31.4")), "Running");
        assert_eq!(proxy_image(&native), Some("docker.io/istio/proxyv2:1.31.4"));
        assert_eq!(
            proxy_image(&pod_with_proxy_in_containers()),
            Some("docker.io/istio/proxyv2:1.30.2")
        );
        assert_eq!(
            proxy_image(&pod("demo", "plain", &[], None, "Running")),
            None
        );
    }

    #[test]
    fn image_tags_ignore_registry_ports_and_digests() {
        assert_eq!(
            image_tag("docker.io/istio/proxyv2:1.28.0").as_deref(),
            Some("1.28.0")
        );
        assert_eq!(
            image_tag("registry.local:5000/istio/proxyv2:1.27.1@sha256:ab").as_deref(),
            Some("1.27.1")
        );
        assert_eq!(image_tag("registry.local:5000/istio/proxyv2"), None);
    }

    #[test]
    fn skew_counts_minor_versions_and_ignores_build_suffixes() {
        assert_eq!(Skew::between("1.31.4", "1.31.4"), Some(Skew::None));
        assert_eq!(
            Skew::between("1.31.4-distroless", "1.31.4"),
            Some(Skew::None)
        );
        assert_eq!(Skew::between("1.31.3", "1.31.4"), Some(Skew::Patch));
        assert_eq!(Skew::between("1.29.0", "1.31.4"), Some(Skew::Minor(-2)));
        assert_eq!(Skew::between("1.32", "1.31.4"), Some(Skew::Minor(1)));
        assert_eq!(Skew::between("2.0.0", "1.31.4"), Some(Skew::Major));
        assert_eq!(Skew::between("custom", "1.31.4"), Some(Skew::Unknown));
        assert_eq!(Skew::Minor(-2).to_string(), "-2 minor");
        assert_eq!(Skew::Minor(1).to_string(), "+1 minor");
    }

    /// Revision 1-30 removed; 1-31 (1.31.4) and 1-32 (1.32.0, not ready yet) present.
    #[test]
    fn each_proxy_is_judged_against_its_revision_and_the_newest() {
        let snapshot = MeshSnapshot {
            pods: vec![
                pod("demo", "web", &[], Some(("1-31", "1.31.3")), "Running"),
                pod_with_proxy_in_containers(),
                pod("demo", "job", &[], Some(("1-30", "1.30.2")), "Succeeded"),
                pod("demo", "plain", &[], None, "Running"),
            ],
            injectors: vec![injector("1-31"), injector("1-32")],
            istiods: vec![
                istiod("1-31", "1.31.4", true),
                istiod("1-32", "1.32.0", false),
            ],
            ..MeshSnapshot::default()
        };
        let statuses = proxy_statuses(&snapshot);
        let names: Vec<_> = statuses.iter().map(|s| s.pod.to_string()).collect();
        assert_eq!(names, ["demo/job", "demo/old", "demo/web"]);
        let [job, old, web] = &statuses[..] else {
            unreachable!()
        };
        assert!(job.finished && !job.orphaned());
        assert!(old.orphaned() && !old.revision_ready);
        assert_eq!(old.proxy_version.as_deref(), Some("1.30.2"));
        assert_eq!((old.control_plane_version.as_ref(), old.skew), (None, None));
        assert_eq!(old.skew_to_newest, Some(Skew::Minor(-2)));
        assert!(web.revision_exists && web.revision_ready && !web.orphaned());
        assert_eq!(web.control_plane_version.as_deref(), Some("1.31.4"));
        assert_eq!(web.skew, Some(Skew::Patch));
        assert_eq!(web.skew_to_newest, Some(Skew::Minor(-1)));
        let json = serde_json::to_value(web).unwrap();
        assert_eq!(json["namespace"], "demo");
        assert_eq!(json["skewToNewest"], "-1 minor");
    }
}
