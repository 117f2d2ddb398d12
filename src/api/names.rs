//! The rules every name and address a user gives smm must follow: Kubernetes' own (DNS-1123
//! labels and subdomains), narrowed so that the names smm and Istio derive from them are valid
//! too. They are checked before anything is rendered, stored or applied, so a bad name is
//! refused with the field and the rule instead of failing half way through a reconcile.

use std::fmt;

/// What smm prefixes a ControlPlane's name with to name its reconcile lease.
pub const LEASE_PREFIX: &str = "smm-reconcile-";
/// smm's own namespace: the operator's unless told otherwise, and where every reconcile lease
/// lives, so that the CLI and an operator installed anywhere take the same one.
pub const SMM_NAMESPACE: &str = "smm-system";
/// The label on the mesh's namespace that names the network its cluster's workloads are on.
pub const TOPOLOGY_NETWORK: &str = "topology.istio.io/network";
/// The annotation on a remote cluster's mesh namespace that names the primary clusters whose
/// istiod manages it (patches its webhooks, publishes its root certificate).
pub const TOPOLOGY_CONTROL_PLANES: &str = "topology.istio.io/controlPlaneClusters";
/// What istioctl and smm prefix a cluster's name with to name its remote secret.
pub const REMOTE_SECRET_PREFIX: &str = "istio-remote-secret-";
/// The longest name of any Kubernetes object that has a DNS-1123 subdomain name.
const SUBDOMAIN_MAX: usize = 253;
/// The longest DNS-1123 label.
const LABEL_MAX: usize = 63;
/// What the event recorder appends to a ControlPlane's name to name its Events: a dot and the
/// time in nanoseconds, in hex (16 digits until the 22nd century).
const EVENT_SUFFIX_LEN: usize = 17;
/// What Istio's charts prefix a revision with to name istiod's Service and Deployment.
const ISTIOD_PREFIX: &str = "istiod-";
/// The longest image repository name registries accept.
const IMAGE_REFERENCE_MAX: usize = 255;

/// A name or address that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {value:?} is not a valid {what}: {rule}")]
pub struct InvalidName {
    /// Where the value was given: a field path or a flag.
    pub field: String,
    pub value: String,
    pub what: &'static str,
    pub rule: Rule,
}

/// One of this module's checks: `check(field, value)`.
pub type Check = fn(&str, &str) -> Result<(), InvalidName>;

/// A rule a name must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A DNS-1123 label of at most `max` characters; `because` says why less than 63.
    Label {
        max: usize,
        because: Option<&'static str>,
    },
    /// A DNS-1123 subdomain of at most `max` characters; `because` says why less than 253.
    Subdomain {
        max: usize,
        because: Option<&'static str>,
    },
    TrustDomain,
    ImageRegistry,
    IpAddress,
    LabelValue,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let because = |because: &Option<&str>| {
            because
                .map(|why| format!(", so that {why}"))
                .unwrap_or_default()
        };
        match self {
            Rule::Label { max, because: why } => write!(
                f,
                "must be a DNS-1123 label (lowercase letters, digits and '-', starting and ending \
                 with a letter or digit, at most {max} characters{})",
                because(why)
            ),
            Rule::Subdomain { max, because: why } => write!(
                f,
                "must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', each \
                 dot-separated part starting and ending with a letter or digit, at most {max} \
                 characters{})",
                because(why)
            ),
            Rule::LabelValue => f.write_str(
                "must be a label value (letters, digits, '-', '_' and '.', starting and ending \
                 with a letter or digit, at most 63 characters): Istio writes it into labels",
            ),
            Rule::IpAddress => f.write_str(
                "must be an IPv4 or IPv6 address that other hosts can reach (not loopback or \
                 unspecified): an EndpointSlice takes no host names or loopback addresses",
            ),
            Rule::TrustDomain => f.write_str(
                "must be a trust domain (lowercase letters, digits, '.', '-' and '_', at most \
                 255 characters)",
            ),
            Rule::ImageRegistry => f.write_str(
                "must be an image registry host, with an optional port and repository path \
                 (e.g. registry.local:5000/mirror: letters, digits, '.' and '-' in the host, \
                 lowercase letters, digits, '.', '_' and '-' in the path, at most 255 \
                 characters)",
            ),
        }
    }
}

/// The longest ControlPlane name whose lease and Event names are valid object names.
const CONTROL_PLANE_MAX: usize = {
    let lease = SUBDOMAIN_MAX - LEASE_PREFIX.len();
    let events = SUBDOMAIN_MAX - EVENT_SUFFIX_LEN;
    if lease < events { lease } else { events }
};

/// A namespace: of the mesh, of a component, or of the operator.
pub fn namespace(field: &str, value: &str) -> Result<(), InvalidName> {
    let rule = Rule::Label {
        max: LABEL_MAX,
        because: None,
    };
    check(field, value, "namespace", rule, is_label)
}

/// A ControlPlane's name.
pub fn control_plane_name(field: &str, value: &str) -> Result<(), InvalidName> {
    let rule = Rule::Subdomain {
        max: CONTROL_PLANE_MAX,
        because: Some("its lease smm-reconcile-<name> and its Events <name>.<time> fit in 253"),
    };
    check(field, value, "ControlPlane name", rule, is_subdomain)
}

/// An Istio revision.
pub fn revision(field: &str, value: &str) -> Result<(), InvalidName> {
    let rule = Rule::Label {
        max: LABEL_MAX - ISTIOD_PREFIX.len(),
        because: Some("istiod-<revision> fits in 63"),
    };
    check(field, value, "revision", rule, is_label)
}

/// A helm release name (helm's own rule: its object names add up to 10 characters to it).
pub fn release_name(field: &str, value: &str) -> Result<(), InvalidName> {
    let rule = Rule::Subdomain {
        max: 53,
        because: Some("the names helm derives from it fit"),
    };
    check(field, value, "release name", rule, is_subdomain)
}

/// A cluster's name in a mesh of several: Istio's cluster ID, a key of its remote secret and a
/// part of the secret's name and of the injector's path.
pub fn cluster_name(field: &str, value: &str) -> Result<(), InvalidName> {
    let rule = Rule::Label {
        max: LABEL_MAX - REMOTE_SECRET_PREFIX.len(),
        because: Some("its remote secret istio-remote-secret-<name> fits in 63"),
    };
    check(field, value, "cluster name", rule, is_label)
}

/// A mesh ID or a network's name: label values on Istio's objects and proxies.
pub fn topology_name(field: &str, value: &str) -> Result<(), InvalidName> {
    check(
        field,
        value,
        "mesh ID or network name",
        Rule::LabelValue,
        |text| {
            let bytes = text.as_bytes();
            text.len() <= LABEL_MAX
                && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
                && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        },
    )
}

/// The address a remote cluster reaches its primary's istiod at, written into an EndpointSlice.
pub fn ip_address(field: &str, value: &str) -> Result<(), InvalidName> {
    check(field, value, "address", Rule::IpAddress, |text| {
        text.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| !ip.is_loopback() && !ip.is_unspecified())
    })
}

/// The mesh's trust domain, the host part of its workloads' SPIFFE identities.
pub fn trust_domain(field: &str, value: &str) -> Result<(), InvalidName> {
    let valid = |text: &str| {
        text.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    };
    check(field, value, "trust domain", Rule::TrustDomain, |text| {
        text.len() <= 255 && valid(text)
    })
}

/// The registry (and optional repository path) every image is pulled from. Nothing but the
/// characters of a reference may pass: the value is written into the charts' image lines.
pub fn image_registry(field: &str, value: &str) -> Result<(), InvalidName> {
    check(
        field,
        value,
        "image registry",
        Rule::ImageRegistry,
        |text| text.len() <= IMAGE_REFERENCE_MAX && is_registry(text),
    )
}

fn check(
    field: &str,
    value: &str,
    what: &'static str,
    rule: Rule,
    valid: impl Fn(&str) -> bool,
) -> Result<(), InvalidName> {
    let fits = match rule {
        Rule::Label { max, .. } | Rule::Subdomain { max, .. } => value.len() <= max,
        Rule::TrustDomain | Rule::ImageRegistry | Rule::IpAddress | Rule::LabelValue => true,
    };
    if fits && !value.is_empty() && valid(value) {
        return Ok(());
    }
    Err(InvalidName {
        field: field.to_owned(),
        value: value.to_owned(),
        what,
        rule,
    })
}

/// Lowercase letters, digits and `-`, starting and ending with a letter or digit.
fn is_label(text: &str) -> bool {
    let alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            text.len() <= LABEL_MAX
                && alphanumeric(first)
                && alphanumeric(last)
                && bytes.iter().all(|&b| alphanumeric(b) || b == b'-')
        }
        _ => false,
    }
}

fn is_subdomain(text: &str) -> bool {
    text.len() <= SUBDOMAIN_MAX && text.split('.').all(is_label)
}

/// `host[:port][/path...]`: a host of letters, digits, `.` and `-`; a numeric port; path
/// components of lowercase letters and digits joined by `.`, `_` or `-`.
fn is_registry(text: &str) -> bool {
    let (host_port, path) = text.split_once('/').unwrap_or((text, ""));
    let (host, port) = match host_port.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_port, None),
    };
    let host_part = |part: &str| {
        let bytes = part.as_bytes();
        !part.is_empty()
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    };
    let path_part = |part: &str| {
        let bytes = part.as_bytes();
        let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        bytes.first().is_some_and(alphanumeric)
            && bytes.last().is_some_and(alphanumeric)
            && bytes.iter().all(|b| alphanumeric(b) || b"._-".contains(b))
    };
    let port_ok =
        port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    let path_ok = if path.is_empty() {
        !text.ends_with('/')
    } else {
        path.split('/').all(path_part)
    };
    host.split('.').all(host_part) && port_ok && path_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ControlPlane name of exactly the longest length: labels of at most 63, joined by dots.
    fn longest_name() -> String {
        [&"a".repeat(63)[..]; 3].join(".") + "." + &"b".repeat(44)
    }

    #[test]
    fn good_names_pass() {
        namespace("f", "istio-system").unwrap();
        namespace("f", &"a".repeat(63)).unwrap();
        control_plane_name("f", "smm").unwrap();
        control_plane_name("f", "mesh.example-1").unwrap();
        control_plane_name("f", &longest_name()).unwrap();
        revision("f", "1-28").unwrap();
        revision("f", &"a".repeat(56)).unwrap();
        release_name("f", "istio-base").unwrap();
        trust_domain("f", "cluster.local").unwrap();
        trust_domain("f", "td_1.example").unwrap();
        for registry in [
            "docker.io",
            "registry.local:5000",
            "registry.local:5000/mirror/istio",
            "localhost",
            "10.0.0.1:5000/a_b.c-d",
        ] {
            image_registry("f", registry).unwrap();
        }
    }

    /// Each bad value, and the exact refusal: the field, the value and the rule.
    #[test]
    fn bad_names_are_refused_naming_the_field_and_the_rule() {
        const LABEL: &str = "must be a DNS-1123 label (lowercase letters, digits and '-', \
                             starting and ending with a letter or digit, at most";
        const SUBDOMAIN: &str = "must be a DNS-1123 subdomain (lowercase letters, digits, '-' \
                                 and '.', each dot-separated part starting and ending with a \
                                 letter or digit, at most";
        let namespace_rule = format!("{LABEL} 63 characters)");
        let revision_rule = format!("{LABEL} 56 characters, so that istiod-<revision> fits in 63)");
        let name_rule = format!(
            "{SUBDOMAIN} 236 characters, so that its lease smm-reconcile-<name> and its Events \
             <name>.<time> fit in 253)"
        );
        let release_rule =
            format!("{SUBDOMAIN} 53 characters, so that the names helm derives from it fit)");
        let trust_rule = Rule::TrustDomain.to_string();
        let registry_rule = Rule::ImageRegistry.to_string();
        let long_label = "a".repeat(64);
        let long_name = longest_name() + "b";
        let long_revision = "a".repeat(57);
        let long_registry = format!("r/{}", "a".repeat(254));
        let cases: Vec<(Check, &str, &str, &str)> = vec![
            (namespace, "Foo", "namespace", &namespace_rule),
            (namespace, "", "namespace", &namespace_rule),
            (namespace, "-a", "namespace", &namespace_rule),
            (namespace, "a-", "namespace", &namespace_rule),
            (namespace, "a.b", "namespace", &namespace_rule),
            (namespace, "a_b", "namespace", &namespace_rule),
            (namespace, &long_label, "namespace", &namespace_rule),
            (namespace, "a\nb", "namespace", &namespace_rule),
            (control_plane_name, "Mesh", "ControlPlane name", &name_rule),
            (control_plane_name, "a/b", "ControlPlane name", &name_rule),
            (control_plane_name, "a..b", "ControlPlane name", &name_rule),
            (control_plane_name, ".a", "ControlPlane name", &name_rule),
            (
                control_plane_name,
                &long_name,
                "ControlPlane name",
                &name_rule,
            ),
            (revision, "1.28", "revision", &revision_rule),
            (revision, "Canary", "revision", &revision_rule),
            (revision, &long_revision, "revision", &revision_rule),
            (release_name, "Istio", "release name", &release_rule),
            (trust_domain, "Cluster.Local", "trust domain", &trust_rule),
            (trust_domain, "a/b", "trust domain", &trust_rule),
            (trust_domain, "", "trust domain", &trust_rule),
            (
                image_registry,
                "reg\nx: y",
                "image registry",
                &registry_rule,
            ),
            (
                image_registry,
                "reg.io/Mirror",
                "image registry",
                &registry_rule,
            ),
            (
                image_registry,
                "reg.io:port",
                "image registry",
                &registry_rule,
            ),
            (image_registry, "reg.io/", "image registry", &registry_rule),
            (
                image_registry,
                "reg.io//x",
                "image registry",
                &registry_rule,
            ),
            (image_registry, "-reg.io", "image registry", &registry_rule),
            (image_registry, "reg io", "image registry", &registry_rule),
            (image_registry, "", "image registry", &registry_rule),
            (
                image_registry,
                &long_registry,
                "image registry",
                &registry_rule,
            ),
        ];
        for (check, value, what, rule) in cases {
            let err = check("spec.x", value).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("spec.x: {value:?} is not a valid {what}: {rule}"),
            );
        }
    }

    #[test]
    fn the_refusal_reads_as_one_sentence() {
        let err = namespace("spec.components.istiod.namespace", "Foo").unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.components.istiod.namespace: \"Foo\" is not a valid namespace: must be a \
             DNS-1123 label (lowercase letters, digits and '-', starting and ending with a \
             letter or digit, at most 63 characters)"
        );
        let err = image_registry("spec.imageRegistry", "r.io\nkind: Secret").unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.imageRegistry: \"r.io\\nkind: Secret\" is not a valid image registry: must be \
             an image registry host, with an optional port and repository path (e.g. \
             registry.local:5000/mirror: letters, digits, '.' and '-' in the host, lowercase \
             letters, digits, '.', '_' and '-' in the path, at most 255 characters)"
        );
    }
}
