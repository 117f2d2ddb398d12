//! The Gateway API's rule for CRDs that others may install too: a cluster holds one bundle of
//! them, and whoever installed a newer one (or the experimental channel, a superset of the
//! standard one) needs it. Replacing it with smm's older or standard CRDs would drop fields and
//! kinds that objects and controllers use. So a CRD that carries the Gateway API's bundle
//! annotations is applied only over an older bundle of the same channel, or where it is absent.

use std::cmp::Ordering;

use kube::api::DynamicObject;

use crate::mesh::gateway_api::{BUNDLE_VERSION, CHANNEL, STANDARD_CHANNEL};

/// Why the live CRD stays as it is rather than becoming `new`; `None` when `new` may replace it
/// (it carries no bundle version, or the live one is older, of the same version, or unmarked).
pub(crate) fn keeps_live_bundle(live: &DynamicObject, new: &DynamicObject) -> Option<String> {
    let annotation = |object: &DynamicObject, key: &str| {
        object
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(key))
            .cloned()
    };
    let ours = annotation(new, BUNDLE_VERSION)?;
    let theirs = annotation(live, BUNDLE_VERSION);
    let channel = annotation(live, CHANNEL);
    if channel
        .as_deref()
        .is_some_and(|channel| channel != STANDARD_CHANNEL)
    {
        return Some(format!(
            "it is of the {} channel (bundle {}), which smm's standard channel {ours} would cut down",
            channel.unwrap_or_default(),
            theirs.as_deref().unwrap_or("unknown"),
        ));
    }
    let theirs = theirs?;
    match (BundleVersion::parse(&theirs), BundleVersion::parse(&ours)) {
        (Some(live), Some(new)) if live > new => Some(format!(
            "its bundle version {theirs} is newer than smm's {ours}"
        )),
        (Some(_), Some(_)) => None,
        (None, _) => Some(format!(
            "its bundle version {theirs:?} is not a version smm can compare with its {ours}"
        )),
        (_, None) => unreachable!("the embedded CRDs' bundle version is checked by a unit test"),
    }
}

/// A Gateway API release as its bundle annotation names it: `v1.6.0`, `v1.5.0-rc.1`.
#[derive(Debug, PartialEq, Eq)]
struct BundleVersion {
    release: [u64; 3],
    /// The pre-release identifiers (`rc.1` is `["rc", "1"]`); none for a release.
    pre: Vec<String>,
}

impl BundleVersion {
    fn parse(text: &str) -> Option<Self> {
        let text = text.strip_prefix('v').unwrap_or(text);
        let (release, pre) = match text.split_once('-') {
            Some((release, pre)) => (release, pre.split('.').map(str::to_owned).collect()),
            None => (text, Vec::new()),
        };
        let numbers: Vec<u64> = release
            .split('.')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        Some(Self {
            release: numbers.try_into().ok()?,
            pre,
        })
    }
}

impl Ord for BundleVersion {
    /// Semantic versioning's precedence: the release numbers, then a release above any of its
    /// pre-releases, whose identifiers compare numerically where both are numbers.
    fn cmp(&self, other: &Self) -> Ordering {
        let identifier = |a: &String, b: &String| match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(a), Ok(b)) => a.cmp(&b),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => a.cmp(b),
        };
        self.release.cmp(&other.release).then_with(|| {
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self
                    .pre
                    .iter()
                    .zip(&other.pre)
                    .map(|(a, b)| identifier(a, b))
                    .find(|ordering| ordering.is_ne())
                    .unwrap_or_else(|| self.pre.len().cmp(&other.pre.len())),
            }
        })
    }
}

impl PartialOrd for BundleVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::ApiResource;

    fn version(text: &str) -> BundleVersion {
        BundleVersion::parse(text).unwrap()
    }

    #[test]
    fn bundle_versions_order_as_semantic_versions() {
        let ordered = [
            "v0.8.1",
            "v1.0.0",
            "v1.5.0-rc.1",
            "v1.5.0-rc.2",
            "v1.5.0-rc.10",
            "v1.5.0",
            "v1.5.1",
            "v1.6.0",
            "v1.10.0",
        ];
        for pair in ordered.windows(2) {
            assert!(version(pair[0]) < version(pair[1]), "{pair:?}");
        }
        assert_eq!(version("1.6.0"), version("v1.6.0"));
        for junk in ["", "v1.6", "v1.6.x", "latest", "v1.6.0.1"] {
            assert_eq!(BundleVersion::parse(junk), None, "{junk}");
        }
    }

    fn crd(annotations: &[(&str, &str)]) -> DynamicObject {
        let mut object = DynamicObject::new(
            "gateways.gateway.networking.k8s.io",
            &ApiResource::erase::<CustomResourceDefinition>(&()),
        );
        object.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        object
    }

    #[test]
    fn only_an_older_or_unmarked_standard_bundle_is_replaced() {
        let ours = crd(&[(BUNDLE_VERSION, "v1.6.0"), (CHANNEL, "standard")]);
        let standard = |version| crd(&[(BUNDLE_VERSION, version), (CHANNEL, "standard")]);
        assert_eq!(keeps_live_bundle(&standard("v1.5.1"), &ours), None);
        assert_eq!(keeps_live_bundle(&standard("v1.6.0"), &ours), None);
        assert_eq!(keeps_live_bundle(&standard("v1.6.0-rc.1"), &ours), None);
        assert_eq!(keeps_live_bundle(&crd(&[]), &ours), None);
        assert_eq!(
            keeps_live_bundle(&standard("v1.7.0"), &ours).unwrap(),
            "its bundle version v1.7.0 is newer than smm's v1.6.0"
        );
        let experimental = crd(&[(BUNDLE_VERSION, "v1.5.0"), (CHANNEL, "experimental")]);
        assert_eq!(
            keeps_live_bundle(&experimental, &ours).unwrap(),
            "it is of the experimental channel (bundle v1.5.0), which smm's standard channel \
             v1.6.0 would cut down"
        );
        assert!(keeps_live_bundle(&standard("main"), &ours).is_some());
        // A CRD that is not the Gateway API's (Istio's) is never judged by bundle.
        assert_eq!(keeps_live_bundle(&standard("v9.0.0"), &crd(&[])), None);
    }
}
