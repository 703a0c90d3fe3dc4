//! The clock sources read time from: the system's, or a manual one tests move by hand.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::BoxFuture;

/// Time for scheduled sources; injectable so tests never wait wall-clock minutes.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
    /// Resolves at `deadline` or earlier (callers check [`Clock::now`] again after waking).
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()>;
}

/// The system clock. Sleeps at most a minute at a time, so a wall-clock jump (NTP step, a
/// suspended machine) is noticed within a minute.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let wait = (deadline - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(60));
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that only moves when told to.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use evmesh_sources::{Clock, ManualClock};
/// let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
/// clock.advance(std::time::Duration::from_secs(90));
/// assert_eq!(clock.now(), Utc.with_ymd_and_hms(2026, 1, 1, 0, 1, 30).unwrap());
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    tx: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        let (tx, _) = watch::channel(start);
        ManualClock {
            now: Mutex::new(start),
            tx,
        }
    }

    /// Moves the clock to `t` (also backwards), waking every sleeper (they check the time again).
    pub fn set(&self, t: DateTime<Utc>) {
        if let Ok(mut now) = self.now.lock() {
            *now = t;
        }
        self.tx.send_replace(t);
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let delta = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero());
        self.set(self.now() + delta);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.now
            .lock()
            .map(|n| *n)
            .unwrap_or_else(|e| *e.into_inner())
    }
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let mut rx = self.tx.subscribe();
        Box::pin(async move {
            if *rx.borrow_and_update() >= deadline {
                return;
            }
            // Every move of the clock wakes the sleeper (as the system clock's sleeper wakes at
            // least every minute), so callers also see the clock moving backwards.
            let _ = rx.changed().await;
        })
    }
}
