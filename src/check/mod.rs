//! `smm check`: whether the cluster is fit for the mesh before an install (`--pre`), and whether
//! the installed mesh works (after), as a list of checks in categories. Each check passes, warns
//! or fails, with a message saying what was found and, when it did not pass, a hint naming the
//! fix. The checks read the cluster and, where reading cannot tell, exercise it: the webhooks
//! are judged by server-side dry runs that the API server sends through them, so a check passes
//! only when istiod itself answered. Nothing is changed.

pub mod access;
pub mod post;
pub mod pre;
pub mod rules;

use serde::Serialize;

/// A group of checks, printed under its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// The API server answers, and its version is one the embedded Istio supports.
    KubernetesApi,
    /// The caller may write every kind the plan writes.
    Permissions,
    /// No Istio installed by something else, no webhook overlapping smm's.
    ExistingIstio,
    /// The CRDs the plan applies keep every version the cluster stores.
    Crds,
    /// The mesh's and the injected namespaces admit what will run there.
    Namespaces,
    /// Every release's record fits into helm's Secret.
    ReleaseSize,
    /// Every component's workloads are ready.
    Components,
    /// The injection and validation webhooks answer, end to end.
    Webhooks,
    /// The injected namespaces have istiod's root certificate.
    RootCertificate,
    /// Every proxy's revision exists, within the supported version skew.
    DataPlane,
    /// Revision tags point at existing revisions.
    RevisionTags,
}

impl Category {
    pub fn title(self) -> &'static str {
        match self {
            Self::KubernetesApi => "kubernetes-api",
            Self::Permissions => "permissions",
            Self::ExistingIstio => "existing-istio",
            Self::Crds => "crds",
            Self::Namespaces => "namespaces",
            Self::ReleaseSize => "release-size",
            Self::Components => "components",
            Self::Webhooks => "webhooks",
            Self::RootCertificate => "root-certificate",
            Self::DataPlane => "data-plane",
            Self::RevisionTags => "revision-tags",
        }
    }
}

/// What a check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    /// Works today, but is likely to go wrong (e.g. proxies a minor version behind).
    Warn,
    Fail,
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub category: Category,
    pub outcome: Outcome,
    /// What was found, in a sentence.
    pub message: String,
    /// How to fix it; none when it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Finding {
    pub fn pass(category: Category, message: impl Into<String>) -> Self {
        Self {
            category,
            outcome: Outcome::Pass,
            message: message.into(),
            hint: None,
        }
    }

    pub fn warn(category: Category, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Warn,
            hint: Some(hint.into()),
            ..Self::pass(category, message)
        }
    }

    pub fn fail(category: Category, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Fail,
            hint: Some(hint.into()),
            ..Self::pass(category, message)
        }
    }
}

/// Every check's result, in the order they ran (by category).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// The checks before an install (`--pre`), or those of an installed mesh.
    pub pre: bool,
    /// No check failed (warnings allowed): what the exit code says.
    pub passed: bool,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    pub fn new(pre: bool, mut findings: Vec<Finding>) -> Self {
        // Stable: within a category, the order the checks ran in.
        findings.sort_by_key(|f| f.category);
        Self {
            pre,
            passed: findings.iter().all(|f| f.outcome != Outcome::Fail),
            findings,
        }
    }

    /// The failed findings.
    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.outcome == Outcome::Fail)
    }
}

/// Why the checks could not run to the end (a check that fails is a finding, not this).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("rendering the plan: {0}")]
    Render(#[from] crate::helm::render::RenderError),
    #[error("{component}: {source}")]
    Chart {
        component: &'static str,
        #[source]
        source: crate::helm::chart::ChartError,
    },
    #[error(transparent)]
    Store(#[from] crate::cluster::control_plane::StoreError),
    #[error(transparent)]
    Snapshot(#[from] crate::cluster::mesh_snapshot::SnapshotError),
    #[error("reading {what}: {source}")]
    Read {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
}

pub(crate) fn read(what: &'static str) -> impl FnOnce(kube::Error) -> CheckError {
    move |source| CheckError::Read { what, source }
}

/// What the API server said, without the wrapping of kube's error (its `Status` in full).
pub(crate) fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message.clone(),
        err => err.to_string(),
    }
}

/// Whether the API server refused a read of `err`'s chain as forbidden (403).
pub(crate) fn forbidden(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(kube::Error::Api(status)) = err.downcast_ref::<kube::Error>()
            && status.code == 403
        {
            return true;
        }
        current = err.source();
    }
    false
}

/// The findings of a check, or when the caller may not read what it needs (403), a failure of
/// `category` saying which: a user without rights learns what they lack, check by check,
/// rather than getting one error.
pub(crate) fn unless_forbidden(
    category: Category,
    checked: Result<Vec<Finding>, CheckError>,
) -> Result<Vec<Finding>, CheckError> {
    match checked {
        Err(err) if forbidden(&err) => Ok(vec![Finding::fail(
            category,
            format!("cannot check: {err}"),
            "grant read access (get, list) to it, or run the checks as a cluster admin",
        )]),
        checked => checked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_passes_with_warnings_and_fails_with_one_failure_in_category_order() {
        let warned = CheckReport::new(
            false,
            vec![
                Finding::warn(Category::DataPlane, "1 proxy behind", "restart it"),
                Finding::pass(Category::Components, "istiod ready"),
            ],
        );
        assert!(warned.passed);
        assert_eq!(warned.findings[0].category, Category::Components);
        let failed = CheckReport::new(
            false,
            vec![
                Finding::pass(Category::Components, "istiod ready"),
                Finding::fail(Category::Webhooks, "no sidecar", "start istiod"),
            ],
        );
        assert!(!failed.passed);
        assert_eq!(failed.failures().count(), 1);
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["findings"][1]["category"], "webhooks");
        assert_eq!(json["findings"][1]["outcome"], "fail");
        assert_eq!(json["findings"][1]["hint"], "start istiod");
        assert!(json["findings"][0].get("hint").is_none());
    }
}
