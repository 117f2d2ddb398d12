//! Mutual exclusion through `coordination.k8s.io` Leases: a holder renews its lease while it
//! lives and releases it when done; a crashed holder's lease expires, so nobody waits forever.
//! Reconciles of one ControlPlane (CLI or operator) take its reconcile lease; operator replicas
//! elect a leader with another.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};
use tokio::task::JoinHandle;

/// Where reconcile leases live: a namespace every cluster has.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// How long a lease stays valid without renewal.
const LEASE_DURATION: Duration = Duration::from_secs(30);
/// How often the holder renews.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often a waiter looks again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lease {namespace}/{name} is held by {holder}; gave up after {waited:?}")]
    Busy {
        namespace: String,
        name: String,
        holder: String,
        waited: Duration,
    },
    #[error("cannot take the lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Who holds a lease: `<role>/<host>/<pid>/<nonce>`. The random nonce keeps two processes
/// apart even when host and pid repeat (containers often run as pid 1 under one pod name, and
/// a restarted pod keeps its name), so a new process never mistakes an old holder's lease
/// for its own.
pub fn holder_identity(role: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    // In a pod, POD_NAME (set from the downward API) names it; elsewhere the host does.
    let host = ["POD_NAME", "HOSTNAME"]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().filter(|h| !h.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "localhost".to_owned());
    // std's RandomState is seeded from the OS's randomness, once per process and per state.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let nonce = hasher.finish() & 0xffff_ffff;
    format!("{role}/{host}/{}/{nonce:08x}", std::process::id())
}

/// The lease name for a ControlPlane: the CLI and the operator use the same one.
pub fn lease_name(control_plane: &str) -> String {
    format!("smm-reconcile-{control_plane}")
}

/// Takes the reconcile lease of `control_plane`, waiting up to `wait` for another run.
pub async fn reconcile_lock(
    client: &Client,
    control_plane: &str,
    holder: &str,
    wait: Duration,
    on_wait: impl FnOnce(&str),
) -> Result<LeaseLock, LockError> {
    let name = lease_name(control_plane);
    LeaseLock::acquire(client, LEASE_NAMESPACE, &name, holder, Some(wait), on_wait).await
}

/// A held lease; `release` gives it up (dropping it stops renewal and lets it expire).
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    holder: String,
    renewer: JoinHandle<()>,
    lost: tokio::sync::watch::Receiver<bool>,
}

impl LeaseLock {
    /// Takes the lease `namespace/name` as `holder`, waiting up to `wait` (`None`: for as long as
    /// it takes) while another holder keeps it. `on_wait` is called once when the lease is busy.
    pub async fn acquire(
        client: &Client,
        namespace: &str,
        name: &str,
        holder: &str,
        wait: Option<Duration>,
        on_wait: impl FnOnce(&str),
    ) -> Result<Self, LockError> {
        let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let name = name.to_owned();
        let api_error = |source| LockError::Api {
            namespace: namespace.to_owned(),
            name: name.clone(),
            source,
        };
        let started = tokio::time::Instant::now();
        let mut on_wait = Some(on_wait);
        loop {
            let current = api.get_opt(&name).await.map_err(api_error)?;
            let taken = match current {
                None => create(&api, &name, holder).await,
                Some(lease) => match busy_holder(&lease, holder, Timestamp::now()) {
                    Some(other) => Err(TakeError::HeldBy(other)),
                    None => take_over(&api, lease, holder).await,
                },
            };
            match taken {
                Ok(true) => break,
                // Lost a race with another taker: look again at once.
                Ok(false) => continue,
                Err(TakeError::Api(source)) => return Err(api_error(source)),
                Err(TakeError::HeldBy(other)) => {
                    if let Some(wait) = wait.filter(|wait| started.elapsed() >= *wait) {
                        return Err(LockError::Busy {
                            namespace: namespace.to_owned(),
                            name: name.clone(),
                            holder: other,
                            waited: wait,
                        });
                    }
                    if let Some(notify) = on_wait.take() {
                        notify(&other);
                    }
                    tokio::time::sleep(RETRY_EVERY).await;
                }
            }
        }
        let (lost_sender, lost) = tokio::sync::watch::channel(false);
        let renewer = tokio::spawn(renew(
            api.clone(),
            name.clone(),
            holder.to_owned(),
            lost_sender,
        ));
        Ok(Self {
            api,
            name,
            holder: holder.to_owned(),
            renewer,
            lost,
        })
    }

    /// Resolves when the lease is lost: another holder took it, or renewal kept failing until
    /// the lease expired. A leader must stop acting then.
    pub async fn lost(&mut self) {
        // An Err means the renewer ended, which only happens once the lease is lost.
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    /// Gives the lease up at once, so a waiter need not wait for it to expire.
    pub async fn release(self) {
        self.renewer.abort();
        if let Ok(Some(lease)) = self.api.get_opt(&self.name).await {
            let ours = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.holder.as_str());
            if ours {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: lease.metadata.resource_version.clone(),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                if let Err(err) = self.api.delete(&self.name, &params).await {
                    tracing::warn!(lease = %self.name, %err, "could not release the reconcile lease; it will expire");
                }
            }
        }
    }
}

impl Drop for LeaseLock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

enum TakeError {
    HeldBy(String),
    Api(kube::Error),
}

/// The other holder of a lease that is still valid at `now`; `None` when it is free for us.
fn busy_holder(lease: &Lease, us: &str, now: Timestamp) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    if holder == us {
        return None;
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?;
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    let expires = renewed
        .0
        .checked_add(SignedDuration::from_secs(duration))
        .ok()?;
    (expires > now).then(|| holder.to_owned())
}

fn held_spec(holder: &str, transitions: i32) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    LeaseSpec {
        holder_identity: Some(holder.to_owned()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: Some(now.clone()),
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// Ok(false) when someone else created it first.
async fn create(api: &Api<Lease>, name: &str, holder: &str) -> Result<bool, TakeError> {
    let mut lease = Lease::default();
    lease.metadata.name = Some(name.to_owned());
    lease.spec = Some(held_spec(holder, 0));
    match api.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(TakeError::Api(err)),
    }
}

/// Replaces an expired or released lease; the resourceVersion makes a concurrent taker lose.
async fn take_over(api: &Api<Lease>, mut lease: Lease, holder: &str) -> Result<bool, TakeError> {
    let transitions = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0);
    lease.spec = Some(held_spec(holder, transitions + 1));
    let name = lease.metadata.name.clone().unwrap_or_default();
    match api.replace(&name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(TakeError::Api(err)),
    }
}

/// Renews every [`RENEW_EVERY`] until the lease is lost, then says so and stops.
async fn renew(
    api: Api<Lease>,
    name: String,
    holder: String,
    lost: tokio::sync::watch::Sender<bool>,
) {
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let attempt = async {
            let mut lease = api.get(&name).await?;
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(holder.as_str()) {
                return Ok(false);
            }
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            api.replace(&name, &PostParams::default(), &lease).await?;
            Ok::<_, kube::Error>(true)
        };
        match attempt.await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::warn!(lease = %name, %holder, "lease taken over by another holder");
                break;
            }
            Err(err) if last_renewed.elapsed() < LEASE_DURATION => {
                tracing::warn!(lease = %name, %holder, %err, "could not renew the lease; retrying");
            }
            Err(err) => {
                tracing::error!(lease = %name, %holder, %err, "lease expired while it could not be renewed");
                break;
            }
        }
    }
    let _ = lost.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_at: i64, duration: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed_at).unwrap())),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn holder_identities_are_unique_per_call_and_name_role_host_and_pid() {
        let (a, b) = (holder_identity("smm-cli"), holder_identity("smm-cli"));
        assert_ne!(a, b);
        let parts: Vec<&str> = a.split('/').collect();
        assert_eq!(parts.len(), 4, "{a}");
        assert_eq!(parts[0], "smm-cli");
        assert_eq!(parts[2], std::process::id().to_string());
    }

    #[test]
    fn a_lease_is_busy_only_while_another_holder_keeps_it_fresh() {
        let at = |second| Timestamp::from_second(second).unwrap();
        let held = lease("other", 1_000, 30);
        assert_eq!(
            busy_holder(&held, "me", at(1_010)),
            Some("other".to_owned())
        );
        assert_eq!(busy_holder(&held, "me", at(1_031)), None, "expired");
        assert_eq!(busy_holder(&held, "other", at(1_010)), None, "our own");
        assert_eq!(
            busy_holder(&lease("", 1_000, 30), "me", at(1_010)),
            None,
            "released"
        );
        assert_eq!(busy_holder(&Lease::default(), "me", at(1_010)), None);
    }
}
