//! Keeping a held lease: renewed on a schedule, and given up the moment it can no longer be
//! counted on, so a waiter never takes it while this holder still believes it holds it.

use std::future::Future;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::time::{Instant, sleep_until, timeout_at};

use super::{RENEW_DEADLINE, RETRY_EVERY, within_deadline};

/// What one renewal attempt found.
#[derive(Debug)]
pub(super) enum Renewal {
    /// Still ours, and renewed.
    Renewed,
    /// Someone else holds it now, or nobody does (its holder cleared).
    NotOurs,
    /// It no longer exists: someone deleted it, and anyone may now create it afresh.
    Deleted,
}

/// Why a held lease was lost.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Loss {
    NotOurs,
    Deleted,
    /// No renewal succeeded within [`RENEW_DEADLINE`] of the start of the last one that did.
    DeadlineMissed,
}

/// Renews the lease `name` as `holder` until it is lost, then says so through `lost`.
pub(super) async fn keep_renewed(
    api: Api<Lease>,
    name: String,
    holder: String,
    lost: tokio::sync::watch::Sender<bool>,
) {
    let loss = renew_until_lost(&name, || renew_once(&api, &name, &holder)).await;
    match loss {
        Loss::NotOurs => {
            tracing::warn!(lease = %name, %holder, "lease taken over by another holder")
        }
        Loss::Deleted => {
            tracing::error!(lease = %name, %holder, "the lease was deleted; giving it up")
        }
        Loss::DeadlineMissed => {
            tracing::error!(lease = %name, %holder, "could not renew the lease in time; giving it up")
        }
    }
    let _ = lost.send(true);
}

/// One renewal: read the lease, and write it back with a new renew time if it is still ours.
async fn renew_once(api: &Api<Lease>, name: &str, holder: &str) -> Result<Renewal, kube::Error> {
    let Some(mut lease) = within_deadline(api.get_opt(name)).await? else {
        return Ok(Renewal::Deleted);
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(holder) {
        return Ok(Renewal::NotOurs);
    }
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    match within_deadline(api.replace(name, &PostParams::default(), &lease)).await {
        Ok(_) => Ok(Renewal::Renewed),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Renewal::Deleted),
        Err(err) => Err(err),
    }
}

/// Runs `attempt` every [`RETRY_EVERY`] until the lease is lost: another holder has it, or it
/// was deleted (both lost as soon as seen), or no attempt succeeded within [`RENEW_DEADLINE`]
/// of the start of the last one that did (from its start: the record it wrote is as old as
/// that). The deadline is kept by the clock, not checked after an attempt: an attempt still
/// running then is cut off, and none is started that the deadline would cut off anyway.
async fn renew_until_lost<A, F>(lease: &str, mut attempt: A) -> Loss
where
    A: FnMut() -> F,
    F: Future<Output = Result<Renewal, kube::Error>>,
{
    let mut last_success_started = Instant::now();
    let mut next_attempt = last_success_started + RETRY_EVERY;
    loop {
        let deadline = last_success_started + RENEW_DEADLINE;
        if next_attempt >= deadline {
            sleep_until(deadline).await;
            return Loss::DeadlineMissed;
        }
        sleep_until(next_attempt).await;
        let attempt_started = Instant::now();
        match timeout_at(deadline, attempt()).await {
            Err(_) => return Loss::DeadlineMissed,
            Ok(Ok(Renewal::Renewed)) => last_success_started = attempt_started,
            Ok(Ok(Renewal::NotOurs)) => return Loss::NotOurs,
            Ok(Ok(Renewal::Deleted)) => return Loss::Deleted,
            Ok(Err(err)) => {
                tracing::warn!(lease, %err, "could not renew the lease; retrying");
            }
        }
        next_attempt = Instant::now() + RETRY_EVERY;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::cluster::lease::CALL_TIMEOUT;

    fn unreachable() -> kube::Error {
        kube::Error::Service("connection refused".into())
    }

    /// Attempts that each take `delay` and then give `result`, one per call, in order.
    fn scripted(
        script: Vec<(Duration, Result<Renewal, kube::Error>)>,
    ) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<Renewal, kube::Error>>>> {
        let script = Mutex::new(script.into_iter());
        move || {
            let (delay, result) = script.lock().unwrap().next().expect("no more attempts");
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                result
            })
        }
    }

    /// The loss is declared at the deadline itself: neither waiting out a slow attempt nor
    /// starting one that cannot finish in time. A waiter that saw the last record written may
    /// take the lease soon after the deadline, and by then this holder must have stopped.
    #[tokio::test(start_paused = true)]
    async fn the_lease_is_lost_at_the_renew_deadline_however_slow_the_attempt() {
        let started = Instant::now();
        let quick = Duration::ZERO;
        let slow = Duration::from_secs(7);
        let loss = renew_until_lost(
            "test",
            scripted(vec![
                (quick, Ok(Renewal::Renewed)),
                (quick, Err(unreachable())),
                (quick, Err(unreachable())),
                (slow, Err(unreachable())),
                (slow, Err(unreachable())),
            ]),
        )
        .await;
        assert_eq!(loss, Loss::DeadlineMissed);
        let renewed_at = started + RETRY_EVERY;
        assert_eq!(Instant::now(), renewed_at + RENEW_DEADLINE);
    }

    /// An attempt that never answers cannot hold the loss back either.
    #[tokio::test(start_paused = true)]
    async fn a_hung_renewal_is_cut_off_at_the_deadline() {
        let started = Instant::now();
        let hung = Duration::from_secs(3600);
        let loss = renew_until_lost("test", scripted(vec![(hung, Ok(Renewal::Renewed))])).await;
        assert_eq!(loss, Loss::DeadlineMissed);
        assert_eq!(Instant::now(), started + RENEW_DEADLINE);
    }

    /// A deleted lease may be created afresh by anyone at once: it is lost at once, not once
    /// the deadline passes.
    #[tokio::test(start_paused = true)]
    async fn a_deleted_lease_is_lost_at_the_first_attempt_that_sees_it() {
        let started = Instant::now();
        let loss = renew_until_lost(
            "test",
            scripted(vec![(Duration::ZERO, Ok(Renewal::Deleted))]),
        )
        .await;
        assert_eq!(loss, Loss::Deleted);
        assert_eq!(Instant::now(), started + RETRY_EVERY);
    }

    /// A renewal on schedule after a prompt one keeps the lease even when both its calls (read
    /// and write) take their full time.
    #[tokio::test(start_paused = true)]
    async fn slow_renewals_within_the_deadline_keep_the_lease() {
        let slowest = 2 * CALL_TIMEOUT;
        let loss = renew_until_lost(
            "test",
            scripted(vec![
                (Duration::ZERO, Ok(Renewal::Renewed)),
                (slowest, Ok(Renewal::Renewed)),
                (Duration::ZERO, Ok(Renewal::NotOurs)),
            ]),
        )
        .await;
        assert_eq!(loss, Loss::NotOurs);
    }
}
