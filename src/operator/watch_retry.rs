//! How soon the controller re-establishes a failed watch.

use std::time::Duration;

/// Delays between attempts to re-establish a failed watch: 0.5 s doubling up to 5 s, back to
/// 0.5 s once events flow again. The default (client-go's, up to 30 s) stacks its waits after
/// an API server outage, the connection errors and then the expired resource version each
/// adding one, so the operator could miss changes for a minute or more.
pub(super) struct WatchRetry {
    next: Duration,
}

impl WatchRetry {
    const FIRST: Duration = Duration::from_millis(500);
    const LONGEST: Duration = Duration::from_secs(5);
}

impl Default for WatchRetry {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchRetry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::LONGEST);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for WatchRetry {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn watch_retries_double_up_to_five_seconds_and_reset() {
        let mut retry = WatchRetry::default();
        let delays: Vec<u128> = retry.by_ref().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000]);
        retry.reset();
        assert_eq!(retry.next(), Some(Duration::from_millis(500)));
    }
}
