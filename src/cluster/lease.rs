//! Mutual exclusion through `coordination.k8s.io` Leases: a holder renews its lease while it
//! lives and releases it when done; a crashed holder's lease expires, so nobody waits forever.
//! Reconciles of one ControlPlane (CLI or operator) take its reconcile lease; operator replicas
//! elect a leader with another.

mod identity;
mod renew;

pub use identity::{IDENTITY_MAX, InvalidIdentity, holder_identity, unique_identity};

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Where reconcile leases live: smm's own namespace, created by whoever takes a lease first, so
/// that nobody needs rights on Leases in a namespace the cluster's own controllers elect their
/// leaders in (kube-system).
pub const LEASE_NAMESPACE: &str = crate::api::names::SMM_NAMESPACE;
/// How long a lease stays valid without renewal, as waiters judge it. Longer than the renew
/// deadline plus the time a holder that lost its lease needs to stop helm (SIGTERM, SIGKILL
/// after its grace) plus a margin: so helm is stopped, not only told to stop, before a waiter
/// may take the lease once it expired. Stopping helm gently is kept (a SIGTERM'd helm records
/// the release failed, not pending); the engine asserts the sum against helm's grace.
pub const LEASE_DURATION: Duration = Duration::from_secs(30);
/// How long a holder keeps trying to renew before it gives the lease up, counted from the start
/// of its last renewal that succeeded (the record it wrote is as old as that).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// The longest any one API call may take: a hung call must not stall renewal or a taker.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the holder renews, and a waiter looks again.
const RETRY_EVERY: Duration = Duration::from_secs(2);
// The holder gives up the lease before any waiter may take it over (renewal is cut off at the
// deadline whatever its calls do).
const _: () = assert!(RENEW_DEADLINE.as_secs() < LEASE_DURATION.as_secs());
// A renewal that starts on schedule after a prompt one may take both its calls' full time (it
// reads the lease, then writes it) and still land before the deadline: one slow API server
// response never costs the lease.
const _: () =
    assert!(RETRY_EVERY.as_secs() + 2 * CALL_TIMEOUT.as_secs() < RENEW_DEADLINE.as_secs());

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lease {namespace}/{name} is held by {holder}; gave up after {waited:?}")]
    Busy {
        namespace: String,
        name: String,
        holder: String,
        waited: Duration,
    },
    #[error("cannot create the namespace {namespace} for the lease {name}: {source}")]
    Namespace {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "cannot take the lease {namespace}/{name}: its namespace was deleted as it was created"
    )]
    NamespaceGone { namespace: String, name: String },
    #[error("cannot take the lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The lease name for a ControlPlane: the CLI and the operator use the same one.
pub fn lease_name(control_plane: &str) -> String {
    format!("{}{control_plane}", crate::api::names::LEASE_PREFIX)
}

/// Takes the reconcile lease of `control_plane`, waiting up to `wait` for another run.
pub async fn reconcile_lock(
    client: &Client,
    control_plane: &str,
    holder: &Holder<'_>,
    wait: Duration,
    on_wait: impl FnOnce(&str),
) -> Result<LeaseLock, LockError> {
    let name = lease_name(control_plane);
    LeaseLock::acquire(client, LEASE_NAMESPACE, &name, holder, Some(wait), on_wait).await
}

/// Who takes a lease.
#[derive(Clone, Copy, Debug)]
pub struct Holder<'a> {
    /// The identity written into the lease.
    pub identity: &'a str,
    /// A holder known to be gone, whose leases are taken at once rather than after they
    /// expire: the operator leader this one took over from once its lease expired. That
    /// leader stopped its reconciles when it could no longer renew, as it stopped leading.
    pub successor_of: Option<&'a str>,
}

impl<'a> Holder<'a> {
    pub fn new(identity: &'a str) -> Self {
        Self {
            identity,
            successor_of: None,
        }
    }
}

/// A held lease; `release` gives it up (dropping it stops renewal and lets it expire).
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    holder: String,
    renewer: JoinHandle<()>,
    lost: tokio::sync::watch::Receiver<bool>,
    how: Taken,
    /// When it was taken, on this process's monotonic clock.
    taken_at: Instant,
}

/// How a lease was taken.
enum Taken {
    /// It did not exist: never held, or deleted by someone, possibly under a live holder.
    Created,
    /// Its holder gave it back (cleared its holder), which it does only once its helm stopped.
    GivenBack,
    /// It had expired, or it was a former leader's; `from` is its holder, unless that was our
    /// own identity. `unchanged_for`: how long we saw its last record unchanged before taking it.
    Over {
        from: Option<String>,
        unchanged_for: Duration,
    },
}

/// What a new holder knows of the holder before it, to judge when nothing of that holder can
/// still be writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Predecessor {
    /// It gave the lease back after its helm had stopped; nothing of it is still writing.
    GaveBack,
    /// It may still be renewing until its renew deadline, and stopping helm after that. Its
    /// last renewal started at least `silent_for` before the lease was taken (zero when that is
    /// unknown: the lease had been deleted, or a former leader's was taken at once).
    MayBeStopping { silent_for: Duration },
}

impl LeaseLock {
    /// Takes the lease `namespace/name` as `holder`, waiting up to `wait` (`None`: for as long as
    /// it takes) while another holder keeps it. `on_wait` is called once when the lease is busy.
    pub async fn acquire(
        client: &Client,
        namespace: &str,
        name: &str,
        claimant: &Holder<'_>,
        wait: Option<Duration>,
        on_wait: impl FnOnce(&str),
    ) -> Result<Self, LockError> {
        let holder = claimant.identity;
        let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let name = name.to_owned();
        let api_error = |source| LockError::Api {
            namespace: namespace.to_owned(),
            name: name.clone(),
            source,
        };
        let started = tokio::time::Instant::now();
        let mut on_wait = Some(on_wait);
        let mut seen: Option<Seen> = None;
        let mut namespace_created = false;
        // A lease given back keeps existing with no holder, so after a ControlPlane's first run
        // it is read and taken over (two requests); it is created straight away only where it
        // cannot exist yet (its namespace just made).
        let mut first = false;
        let created = |taken: bool| taken.then_some(Taken::Created);
        let how = loop {
            let taken = if std::mem::take(&mut first) {
                create(&api, &name, holder).await.map(created)
            } else {
                match within_deadline(api.get_opt(&name)).await {
                    Err(err) => Err(TakeError::Api(err)),
                    Ok(None) => create(&api, &name, holder).await.map(created),
                    Ok(Some(lease)) => {
                        let now = tokio::time::Instant::now();
                        match busy_holder(&lease, claimant, &mut seen, now) {
                            Some(other) => Err(TakeError::HeldBy(other)),
                            None => {
                                let how = how_taken(&lease, holder, seen.as_ref(), now);
                                take_over(&api, lease, holder)
                                    .await
                                    .map(|taken| taken.then_some(how))
                            }
                        }
                    }
                }
            };
            match taken {
                Ok(Some(how)) => break how,
                // Lost a race with another taker (or the lease exists): look again at once.
                Ok(None) => continue,
                // Waiting for as long as it takes (a standby replica) outlasts an API server
                // outage; a bounded wait reports it.
                Err(TakeError::Api(source)) if wait.is_none() => {
                    tracing::warn!(lease = %name, err = %source, "cannot read the lease; trying again");
                    tokio::time::sleep(RETRY_EVERY).await;
                }
                Err(TakeError::Api(source)) => return Err(api_error(source)),
                // Once: a namespace that is gone again at once is being deleted by someone.
                Err(TakeError::NoNamespace) if !namespace_created => {
                    create_namespace(client, namespace)
                        .await
                        .map_err(|source| LockError::Namespace {
                            namespace: namespace.to_owned(),
                            name: name.clone(),
                            source,
                        })?;
                    namespace_created = true;
                    first = true;
                }
                Err(TakeError::NoNamespace) => {
                    return Err(LockError::NamespaceGone {
                        namespace: namespace.to_owned(),
                        name: name.clone(),
                    });
                }
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
        };
        let taken_at = Instant::now();
        let (lost_sender, lost) = tokio::sync::watch::channel(false);
        let renewer = tokio::spawn(renew::keep_renewed(
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
            how,
            taken_at,
        })
    }

    /// The other holder whose lease was taken over once it expired.
    pub fn taken_from(&self) -> Option<&str> {
        match &self.how {
            Taken::Over { from, .. } => from.as_deref(),
            Taken::Created | Taken::GivenBack => None,
        }
    }

    /// Whether nobody held the lease when it was taken: it did not exist, or was given back.
    pub fn found_free(&self) -> bool {
        !matches!(self.how, Taken::Over { .. })
    }

    /// What is known of the holder before us (see [`Predecessor`]). Only a lease given back
    /// says its holder stopped: a lease that did not exist may have been deleted under a live
    /// holder, and one taken over may have a holder still detecting its loss.
    pub fn predecessor(&self) -> Predecessor {
        match &self.how {
            Taken::GivenBack => Predecessor::GaveBack,
            Taken::Created => Predecessor::MayBeStopping {
                silent_for: Duration::ZERO,
            },
            Taken::Over { unchanged_for, .. } => Predecessor::MayBeStopping {
                silent_for: *unchanged_for,
            },
        }
    }

    /// When the lease was taken, on this process's monotonic clock.
    pub fn taken_at(&self) -> Instant {
        self.taken_at
    }

    /// Resolves when the lease is lost: another holder took it, or renewal kept failing until
    /// the lease expired. A leader must stop acting then.
    pub async fn lost(&mut self) {
        // An Err means the renewer ended, which only happens once the lease is lost.
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    /// Gives the lease up at once, so a waiter need not wait for it to expire: its holder is
    /// cleared, which tells the next holder that this one stopped (a lease that merely does
    /// not exist says nothing: someone may have deleted it). Only a lease still ours is
    /// changed; a renewal cut short may land meanwhile, so a conflict means looking again.
    pub async fn release(self) {
        self.renewer.abort();
        for _ in 0..3 {
            let mut lease = match within_deadline(self.api.get_opt(&self.name)).await {
                Ok(Some(lease)) => lease,
                Ok(None) => return,
                Err(err) => return self.release_failed(&err),
            };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.holder.as_str()) {
                return;
            }
            spec.holder_identity = None;
            let params = PostParams::default();
            match within_deadline(self.api.replace(&self.name, &params, &lease)).await {
                Ok(_) => return,
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(err) => return self.release_failed(&err),
            }
        }
    }

    fn release_failed(&self, err: &kube::Error) {
        tracing::warn!(lease = %self.name, %err, "could not release the lease; it will expire");
    }
}

impl Drop for LeaseLock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

enum TakeError {
    HeldBy(String),
    /// The lease's namespace does not exist (yet): the first run in a cluster creates it.
    NoNamespace,
    Api(kube::Error),
}

/// A lease record as a waiter last saw it, and when (by the waiter's own monotonic clock).
struct Seen {
    holder: String,
    renew_time: Option<MicroTime>,
    resource_version: Option<String>,
    at: tokio::time::Instant,
}

/// The other holder of a lease that is still valid; `None` when it is free for us. Validity is
/// judged as client-go judges it: by how long the record has stayed unchanged on the waiter's
/// monotonic clock, never by comparing the holder's wall clock with ours (a skewed clock would
/// let a lease be taken from a live holder, or keep a dead holder's lease valid).
fn busy_holder(
    lease: &Lease,
    us: &Holder<'_>,
    seen: &mut Option<Seen>,
    now: tokio::time::Instant,
) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    if holder == us.identity || Some(holder) == us.successor_of {
        return None;
    }
    let unchanged = seen.as_ref().is_some_and(|s| {
        s.holder == holder
            && s.renew_time == spec.renew_time
            && s.resource_version == lease.metadata.resource_version
    });
    if !unchanged {
        *seen = Some(Seen {
            holder: holder.to_owned(),
            renew_time: spec.renew_time.clone(),
            resource_version: lease.metadata.resource_version.clone(),
            at: now,
        });
    }
    let valid_for = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
    let since = seen.as_ref().map(|s| s.at).unwrap_or(now);
    (now.duration_since(since) < valid_for).then(|| holder.to_owned())
}

/// How a lease free for `holder` was left: given back (no holder), or taken from a holder that
/// may still be stopping, seen unchanged since `seen` (when that was this very record).
fn how_taken(lease: &Lease, holder: &str, seen: Option<&Seen>, now: Instant) -> Taken {
    let previous = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty());
    let Some(previous) = previous else {
        return Taken::GivenBack;
    };
    let unchanged_for = seen
        .filter(|s| s.holder == previous && s.resource_version == lease.metadata.resource_version)
        .map_or(Duration::ZERO, |s| now.duration_since(s.at));
    Taken::Over {
        from: (previous != holder).then_some(previous),
        unchanged_for,
    }
}

/// Runs one API call, failing it when it takes longer than [`CALL_TIMEOUT`].
async fn within_deadline<T>(
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(kube::Error::Service(
            format!("no answer within {}s", CALL_TIMEOUT.as_secs()).into(),
        )),
    }
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

/// Whether it was created; `false` when the lease exists already.
async fn create(api: &Api<Lease>, name: &str, holder: &str) -> Result<bool, TakeError> {
    let mut lease = Lease::default();
    lease.metadata.name = Some(name.to_owned());
    lease.spec = Some(held_spec(holder, 0));
    match within_deadline(api.create(&PostParams::default(), &lease)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        // Creating in a namespace that does not exist is the only way a create finds nothing.
        Err(kube::Error::Api(status)) if status.code == 404 => Err(TakeError::NoNamespace),
        Err(err) => Err(TakeError::Api(err)),
    }
}

/// Creates the lease namespace; someone else creating it meanwhile is as good.
async fn create_namespace(client: &Client, namespace: &str) -> Result<(), kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut object = Namespace::default();
    object.metadata.name = Some(namespace.to_owned());
    match within_deadline(api.create(&PostParams::default(), &object)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err),
    }
}

/// Replaces an expired or released lease; the resourceVersion makes a concurrent taker lose.
/// Whether it was taken; `false` when another taker was first.
async fn take_over(api: &Api<Lease>, mut lease: Lease, holder: &str) -> Result<bool, TakeError> {
    let transitions = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0);
    lease.spec = Some(held_spec(holder, transitions + 1));
    let name = lease.metadata.name.clone().unwrap_or_default();
    match within_deadline(api.replace(&name, &PostParams::default(), &lease)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(TakeError::Api(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_at: i64, version: &str) -> Lease {
        let mut lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed_at).unwrap())),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        lease.metadata.resource_version = Some(version.to_owned());
        lease
    }

    /// Expiry is judged on the waiter's monotonic clock from the moment the record last changed,
    /// whatever time the holder wrote into it: a holder whose clock is skewed must neither lose a
    /// lease it still renews nor keep one it stopped renewing.
    #[test]
    fn a_lease_expires_by_the_waiters_clock_after_it_stops_changing() {
        let start = tokio::time::Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let mut seen = None;
        let me = Holder::new("me");
        // A renew time far in the past (a holder whose clock is behind) is still fresh: it was
        // only just seen.
        let held = lease("other", 1_000, "1");
        assert_eq!(
            busy_holder(&held, &me, &mut seen, at(0)),
            Some("other".to_owned())
        );
        assert_eq!(
            busy_holder(&held, &me, &mut seen, at(14)),
            Some("other".to_owned())
        );
        // Renewed: the clock starts again.
        let renewed = lease("other", 1_002, "2");
        assert_eq!(
            busy_holder(&renewed, &me, &mut seen, at(14)),
            Some("other".to_owned())
        );
        assert_eq!(
            busy_holder(&renewed, &me, &mut seen, at(28)),
            Some("other".to_owned())
        );
        assert_eq!(
            busy_holder(&renewed, &me, &mut seen, at(30)),
            None,
            "expired"
        );
        assert_eq!(
            busy_holder(&renewed, &Holder::new("other"), &mut None, at(0)),
            None,
            "our own"
        );
        assert_eq!(
            busy_holder(&lease("", 1_000, "3"), &me, &mut None, at(0)),
            None,
            "released"
        );
        assert_eq!(busy_holder(&Lease::default(), &me, &mut None, at(0)), None);
    }

    /// The operator leader that took over from an expired leader takes that leader's reconcile
    /// leases at once, however freshly they were renewed; anyone else's it waits for.
    #[test]
    fn a_successor_takes_its_former_leaders_leases_at_once() {
        let now = tokio::time::Instant::now();
        let successor = Holder {
            identity: "new",
            successor_of: Some("old"),
        };
        assert_eq!(
            busy_holder(&lease("old", 1_000, "1"), &successor, &mut None, now),
            None
        );
        assert_eq!(
            busy_holder(&lease("cli", 1_000, "1"), &successor, &mut None, now),
            Some("cli".to_owned())
        );
    }
}
