//! Being told to stop: SIGINT and SIGTERM as a cancellation token, which the CLI (stop helm,
//! release the lease, exit non-zero) and the operator (start no further component) act on; a
//! second one ends the process at once. SIGTSTP (a terminal's Ctrl-Z) is refused.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM; `on_signal` says what happens then. A
/// second one calls `at_once`, which ends the process without waiting for anything. Must be
/// called inside the tokio runtime.
///
/// SIGTSTP is refused with a message: helm runs in a process group of its own (so that a
/// terminal's Ctrl-C reaches smm alone), so a suspended smm would leave helm running while it
/// stops renewing its lease, and the lease's next holder would recover a release that helm is
/// still writing, for as long as the suspension lasts.
pub fn stop_on_signal(on_signal: &'static str, at_once: fn() -> !) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut interrupt), Ok(mut terminate), Ok(mut suspend)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::from_raw(libc::SIGTSTP)),
        ) else {
            tracing::warn!("cannot listen for signals; SIGINT and SIGTERM end smm at once");
            return;
        };
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
                _ = suspend.recv() => {
                    tracing::warn!(
                        "not suspending: helm would go on running while smm's lease runs out; \
                         press Ctrl-C to stop"
                    );
                    continue;
                }
            }
            if cancel.is_cancelled() {
                at_once();
            }
            tracing::warn!("{on_signal} (again to stop at once)");
            cancel.cancel();
        }
    });
    token
}
