//! Mutual exclusion between reconciles of one ControlPlane: a `coordination.k8s.io` Lease that a
//! run holds while it works, renews while it lives, and releases when it ends. A crashed holder's
//! lease expires, so nobody waits for it forever.

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
    #[error(
        "another reconcile of ControlPlane {control_plane} is running (held by {holder}); gave up after {waited:?}"
    )]
    Busy {
        control_plane: String,
        holder: String,
        waited: Duration,
    },
    #[error("cannot take the reconcile lease {namespace}/{name}: {source}")]
    Api {
        namespace: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The lease name for a ControlPlane: the CLI and the operator use the same one.
pub fn lease_name(control_plane: &str) -> String {
    format!("smm-reconcile-{control_plane}")
}

/// A held lease; `release` gives it up (dropping it stops renewal and lets it expire).
pub struct ReconcileLock {
    api: Api<Lease>,
    name: String,
    holder: String,
    renewer: JoinHandle<()>,
}

impl ReconcileLock {
    /// Takes the lease for `control_plane` as `holder`, waiting up to `wait` for another holder.
    /// `on_wait` is called once when the lease is busy, so a CLI can say why it pauses.
    pub async fn acquire(
        client: &Client,
        control_plane: &str,
        holder: &str,
        wait: Duration,
        on_wait: impl FnOnce(&str),
    ) -> Result<Self, LockError> {
        let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
        let name = lease_name(control_plane);
        let api_error = |source| LockError::Api {
            namespace: LEASE_NAMESPACE,
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
                    if started.elapsed() >= wait {
                        return Err(LockError::Busy {
                            control_plane: control_plane.to_owned(),
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
        let renewer = tokio::spawn(renew_forever(api.clone(), name.clone(), holder.to_owned()));
        Ok(Self {
            api,
            name,
            holder: holder.to_owned(),
            renewer,
        })
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

impl Drop for ReconcileLock {
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

async fn renew_forever(api: Api<Lease>, name: String, holder: String) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let renewed = async {
            let mut lease = api.get(&name).await?;
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = Some(MicroTime(Timestamp::now()));
            }
            api.replace(&name, &PostParams::default(), &lease).await
        };
        if let Err(err) = renewed.await {
            tracing::warn!(lease = %name, holder = %holder, %err, "could not renew the reconcile lease");
        }
    }
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
