//! Being told to stop: SIGINT and SIGTERM as a cancellation token, which the CLI (stop helm,
//! release the lease, exit non-zero) and the operator (start no further component) act on.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM; `on_signal` says what happens then. Must
/// be called inside the tokio runtime.
pub fn stop_on_signal(on_signal: &'static str) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("cannot listen for signals; SIGINT and SIGTERM end smm at once");
            return;
        };
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::warn!("{on_signal}");
        cancel.cancel();
    });
    token
}
