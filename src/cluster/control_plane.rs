//! The ControlPlane as remote state: read it from the API server, store the user's intent back
//! with server-side apply. The engine then reads it from there, so every mode works from the
//! same stored object.

use kube::api::{GetParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt, Resource, ResourceExt};

use crate::api::objects::NativeObject;
use crate::api::{ControlPlane, ControlPlaneSpec, Removable, Undecodable, decode_each};
use crate::cluster::objects::{self, FIELD_MANAGER};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read ControlPlane {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "ControlPlane {name} was changed by someone else since smm read it; nothing was \
         reconciled: run the command again"
    )]
    Changed { name: String },
    #[error("cannot store ControlPlane {name}: {source}")]
    Write {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Undecodable(#[from] Undecodable),
    #[error("cannot list ControlPlanes: {0}")]
    List(#[source] kube::Error),
    #[error("cannot install the ControlPlane CRD: {0}")]
    Crd(#[from] objects::NativeError),
    #[error("the ControlPlane CRD was applied but is not established yet; try again")]
    CrdNotEstablished,
}

/// Reads the named ControlPlane; `None` when it does not exist (or its CRD is not installed).
pub async fn load(client: &Client, name: &str) -> Result<Option<ControlPlane>, StoreError> {
    found(
        name,
        Api::<ControlPlane>::all(client.clone()).get(name).await,
    )
}

/// The named ControlPlane as far as removing its components reads it (see [`Removable`]):
/// read even when its spec as a whole cannot be decoded, so deleting it never gets stuck on
/// that. `None` when it does not exist.
pub async fn load_for_removal(
    client: &Client,
    name: &str,
) -> Result<Option<ControlPlane>, StoreError> {
    let request = kube::core::Request::new(ControlPlane::url_path(&(), None))
        .get(name, &GetParams::default())
        .map_err(|err| StoreError::Read {
            name: name.to_owned(),
            source: kube::Error::BuildRequest(err),
        })?;
    let removable = found(name, client.request::<Removable>(request).await)?;
    Ok(removable.map(Removable::into_control_plane))
}

/// What reading the named ControlPlane gave: not found is `None`.
fn found<T>(name: &str, read: Result<T, kube::Error>) -> Result<Option<T>, StoreError> {
    match read {
        Ok(found) => Ok(Some(found)),
        // No CRD yet: the same as no ControlPlane.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(kube::Error::SerdeError(source)) => Err(StoreError::Undecodable(Undecodable {
            name: name.to_owned(),
            source,
        })),
        Err(source) => Err(StoreError::Read {
            name: name.to_owned(),
            source,
        }),
    }
}

/// Every ControlPlane in the cluster; none when their CRD is not installed.
pub async fn list(client: &Client) -> Result<Vec<ControlPlane>, StoreError> {
    list_with(client, &ListParams::default()).await
}

/// Every ControlPlane as the API server's cache holds them (they may lag a write by a moment),
/// which costs etcd nothing: for views that poll.
pub async fn list_cached(client: &Client) -> Result<Vec<ControlPlane>, StoreError> {
    list_with(client, &ListParams::default().match_any()).await
}

/// Lists ControlPlanes and decodes each on its own: one that cannot be decoded is logged and
/// left out, instead of failing the list for every ControlPlane (and every session, and the
/// dashboard) with it.
async fn list_with(client: &Client, params: &ListParams) -> Result<Vec<ControlPlane>, StoreError> {
    /// The items, each kept as its JSON text; skipping over them does not recurse.
    #[derive(serde::Deserialize)]
    struct RawList {
        items: Vec<Box<serde_json::value::RawValue>>,
    }
    let request = kube::core::Request::new(ControlPlane::url_path(&(), None))
        .list(params)
        .map_err(|err| StoreError::List(kube::Error::BuildRequest(err)))?;
    match client.request::<RawList>(request).await {
        Ok(list) => {
            let (decoded, undecodable) = decode_each(&list.items);
            for bad in undecodable {
                tracing::warn!(error = %bad, "skipping a ControlPlane that cannot be read");
            }
            Ok(decoded)
        }
        // No CRD yet: nothing was ever installed.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Vec::new()),
        Err(source) => Err(StoreError::List(source)),
    }
}

/// Applies the ControlPlane CRD and waits briefly until the API server serves it, so the first
/// `smm install` on a fresh cluster just works.
pub async fn ensure_crd(client: &Client) -> Result<(), StoreError> {
    let crd = NativeObject::present(&ControlPlane::crd());
    // As smm applied it: one read instead of a server-side apply of the whole schema before
    // every change of a spec. It was established when first applied (below).
    if objects::is_applied(client, &crd).await? {
        return Ok(());
    }
    for _ in 0..50 {
        if objects::apply(client, std::slice::from_ref(&crd))
            .await?
            .not_ready
            .is_empty()
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Err(StoreError::CrdNotEstablished)
}

/// The named ControlPlane and every other one, from one list.
pub struct Listed {
    pub this: Option<ControlPlane>,
    pub others: Vec<ControlPlane>,
}

/// The named ControlPlane, read from etcd itself (its spec and status must be the latest: a
/// run decides from them), and the others from the API server's cache. A consistent list would
/// wait for that cache to catch up with the lease just written (about 45 ms here), and the
/// others are only checked for releases they would share with this one, which a moment's lag
/// does not change. One after the other: a second connection would cost more than the read
/// (see [`Inventory::take`](crate::cluster::inventory::Inventory::take)).
pub async fn list_around(client: &Client, name: &str) -> Result<Listed, StoreError> {
    let this = load(client, name).await?;
    // Without this one, which was just read: its status (one entry per component) is not
    // sent and decoded twice.
    let params = ListParams::default()
        .fields(&format!("metadata.name!={name}"))
        .match_any();
    let others = list_with(client, &params)
        .await?
        .into_iter()
        .filter(|cp| cp.metadata.name.as_deref() != Some(name))
        .collect();
    Ok(Listed { this, others })
}

/// Stores `spec` as the ControlPlane's whole desired state and returns the stored object.
/// `stored` is the ControlPlane as last read: when it already holds `spec`, nothing is written
/// (a no-op `smm install` or `smm reconcile -f` makes no write). A new one is created by
/// server-side apply (field manager `smm`); an existing one has its spec replaced, at the
/// resourceVersion read: an apply would keep fields another manager set (a `kubectl patch` of a
/// value), so the stored spec would not be the one reconciled, and a write made since the read
/// is refused rather than overwritten.
pub async fn store(
    client: &Client,
    name: &str,
    spec: &ControlPlaneSpec,
    stored: Option<ControlPlane>,
) -> Result<ControlPlane, StoreError> {
    if let Some(stored) = stored.as_ref().filter(|stored| &stored.spec == spec) {
        return Ok(stored.clone());
    }
    ensure_crd(client).await?;
    let api = Api::<ControlPlane>::all(client.clone());
    let written = match stored {
        Some(mut replacing) => {
            replacing.spec = spec.clone();
            replacing.status = None;
            api.replace(name, &PostParams::default(), &replacing).await
        }
        None => {
            let object = ControlPlane::new(name, spec.clone());
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch(name, &params, &Patch::Apply(&object)).await
        }
    };
    let stored = written.map_err(|source| match source {
        kube::Error::Api(status) if status.code == 409 => StoreError::Changed {
            name: name.to_owned(),
        },
        source => StoreError::Write {
            name: name.to_owned(),
            source,
        },
    })?;
    tracing::info!(name = %stored.name_any(), generation = ?stored.metadata.generation, "stored ControlPlane");
    Ok(stored)
}
