//! The backoff of a ControlPlane whose reconcile failed: tried again after 5 s, 10 s, 20 s, ...
//! up to 5 minutes, and not on every watch event meanwhile, unless its spec changes.

use std::time::{Duration, Instant};

/// A ControlPlane whose last reconcile failed.
#[derive(Default)]
pub(super) struct Failing {
    /// Consecutive failures.
    count: u32,
    /// Not tried again before this, unless its spec changes.
    retry_at: Option<Instant>,
    /// The generation that failed.
    generation: Option<i64>,
}

impl Failing {
    /// Records one more failure of `generation` at `now` and returns how long to wait before
    /// the next try: 5s, 10s, 20s, ... up to 5 minutes.
    pub(super) fn failed(&mut self, generation: Option<i64>, now: Instant) -> Duration {
        self.count += 1;
        let delay = Duration::from_secs(5 * 2u64.pow((self.count - 1).min(6)))
            .min(Duration::from_secs(300));
        self.retry_at = Some(now + delay);
        self.generation = generation;
        delay
    }

    /// How long a watch event (the status write of the failed run itself, a workload
    /// changing) must still wait: a failing ControlPlane is tried again after its backoff, not
    /// on every event, unless its spec changed.
    pub(super) fn holds_back(&self, generation: Option<i64>, now: Instant) -> Option<Duration> {
        let retry_at = self.retry_at?;
        (self.generation == generation && retry_at > now).then(|| retry_at - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failing ControlPlane is held back until its retry time, unless its spec changed.
    #[test]
    fn a_failing_control_plane_waits_out_its_backoff_unless_its_spec_changes() {
        let now = Instant::now();
        let failing = Failing {
            count: 1,
            retry_at: Some(now + Duration::from_secs(5)),
            generation: Some(3),
        };
        assert_eq!(
            failing.holds_back(Some(3), now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            failing.holds_back(Some(4), now),
            None,
            "a new spec goes at once"
        );
        assert_eq!(
            failing.holds_back(Some(3), now + Duration::from_secs(6)),
            None
        );
        assert_eq!(Failing::default().holds_back(Some(3), now), None);
    }
}
