//! Objects smm creates itself rather than through helm, as plain data: what a component's
//! builder wants present or absent. Applying them (server-side apply, deleting absent ones) is
//! `cluster::objects`; the mesh builds them without reaching the cluster.

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Resource;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, TypeMeta};
use serde::Serialize;

use crate::values::digest::values_digest;

/// The label helm and smm put on what they apply (`Helm`, or `smm` on native objects).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// An API kind, as objects name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Kind {
    pub api_version: String,
    pub kind: String,
}

impl Kind {
    pub fn new(api_version: &str, kind: &str) -> Self {
        Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        }
    }

    /// The kind as kube's discovery and dynamic APIs name it.
    pub fn gvk(&self) -> GroupVersionKind {
        let (group, version) = self
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", &self.api_version));
        GroupVersionKind::gvk(group, version, &self.kind)
    }
}

/// Whether a builder wants an object to exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Present,
    Absent,
}

/// One object a builder wants present or absent.
#[derive(Clone, Debug)]
pub struct NativeObject {
    pub resource: ApiResource,
    pub presence: Presence,
    name: String,
    namespace: Option<String>,
    /// The object as compact JSON, shared: Istio's CRDs, built once per process, are about a
    /// megabyte as text and several times that parsed, and most reconciles only compare digests.
    json: Arc<str>,
    /// The digest of the object, recorded on it when applied (`cluster::inventory`'s
    /// `APPLIED_DIGEST`): an object that still carries it needs no new apply.
    digest: String,
}

impl NativeObject {
    /// Wraps a typed object. Builders construct objects, so a failure to convert is a bug.
    pub fn new<K>(object: &K, presence: Presence) -> Self
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let value = serde_json::to_value(object).expect("Kubernetes objects serialize to JSON");
        let mut dynamic: DynamicObject = serde_json::from_value(value)
            .expect("Kubernetes objects deserialize as dynamic objects");
        dynamic.types = Some(TypeMeta {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
        });
        let value = serde_json::to_value(&dynamic).expect("dynamic objects serialize to JSON");
        Self::from_json::<K>(value, presence)
    }

    /// Wraps an object of kind `K` that is JSON already, `apiVersion` and `kind` included (as
    /// Istio's CRDs are, converted at build time).
    pub fn from_json<K: Resource<DynamicType = ()>>(
        value: serde_json::Value,
        presence: Presence,
    ) -> Self {
        let metadata = &value["metadata"];
        let name = metadata["name"].as_str().unwrap_or_default().to_owned();
        let namespace = metadata["namespace"].as_str().map(str::to_owned);
        Self {
            resource: ApiResource::erase::<K>(&()),
            presence,
            name,
            namespace,
            json: value.to_string().into(),
            digest: values_digest(&value),
        }
    }

    /// The object, parsed.
    pub fn object(&self) -> DynamicObject {
        serde_json::from_str(&self.json).expect("native objects are JSON smm wrote")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `None` for a cluster-scoped object.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The digest of the object as built, which smm stamps on it when it applies it.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The object's API kind.
    pub fn kind(&self) -> Kind {
        Kind::new(&self.resource.api_version, &self.resource.kind)
    }

    pub fn present<K: Resource<DynamicType = ()> + Serialize>(object: &K) -> Self {
        Self::new(object, Presence::Present)
    }

    pub fn absent<K: Resource<DynamicType = ()> + Serialize>(object: &K) -> Self {
        Self::new(object, Presence::Absent)
    }

    /// `Kind/name` or `Kind/namespace/name`, for messages.
    pub fn describe(&self) -> String {
        match self.namespace() {
            Some(namespace) => format!("{}/{namespace}/{}", self.resource.kind, self.name),
            None => format!("{}/{}", self.resource.kind, self.name),
        }
    }

    /// Whether the object is a CustomResourceDefinition.
    pub fn is_crd(&self) -> bool {
        self.resource.kind == <CustomResourceDefinition as k8s_openapi::Resource>::KIND
            && self.resource.group == <CustomResourceDefinition as k8s_openapi::Resource>::GROUP
    }
}
