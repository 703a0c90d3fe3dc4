//! Supervision of the dispatch tasks: a task that panics (or fails to start) is restarted with
//! backoff, and the triggers it serves show not ready with the reason until it is back.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// First wait before a restart; doubles per consecutive failure up to [`MAX_RESTART_WAIT`].
const FIRST_RESTART_WAIT: Duration = Duration::from_millis(100);
/// Longest wait between restarts.
const MAX_RESTART_WAIT: Duration = Duration::from_secs(30);
/// A task that ran this long before failing starts its backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The wait before restart number `n` (1-based).
pub(crate) fn restart_wait(n: u32) -> Duration {
    FIRST_RESTART_WAIT
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(MAX_RESTART_WAIT)
}

/// Runs `start(restarts)` as a task until it returns `Ok` (a clean stop) or shutdown is asked.
/// When the task panics or returns `Err(reason)`, `down(reason)` is told and the task is started
/// again after a backoff. The task itself reports when it is up again.
pub(crate) async fn supervise<F, Fut>(
    what: String,
    mut start: F,
    down: impl Fn(String),
    mut shutdown: watch::Receiver<bool>,
) where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut failures = 0u32;
    let mut restarts = 0u32;
    loop {
        let started = Instant::now();
        let reason = match tokio::spawn(start(restarts)).await {
            Ok(Ok(())) => return,
            Ok(Err(reason)) => reason,
            Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
            Err(_) => return,
        };
        if *shutdown.borrow() {
            return;
        }
        if started.elapsed() >= HEALTHY_RUN {
            failures = 0;
        }
        failures += 1;
        restarts += 1;
        let wait = restart_wait(failures);
        tracing::error!(task = %what, restarts, "{reason}; restarting in {wait:?}");
        down(format!("{what} {reason}; restarting (restart {restarts})"));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_wait_doubles_up_to_the_cap() {
        assert_eq!(restart_wait(1), Duration::from_millis(100));
        assert_eq!(restart_wait(2), Duration::from_millis(200));
        assert_eq!(restart_wait(4), Duration::from_millis(800));
        assert_eq!(restart_wait(40), MAX_RESTART_WAIT);
    }
}
