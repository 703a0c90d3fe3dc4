//! Test helpers: a real in-process `EventSink` that keeps what it accepts, and waits with deadlines.

#![allow(dead_code, unreachable_pub)]

use std::sync::Mutex;
use std::time::Duration;

use evmesh_broker::record::EventRecord;
use evmesh_sources::{BoxFuture, EventSink, SinkError, SinkErrorKind};
use tokio::sync::watch;

/// An in-process sink: keeps every event it accepts, or refuses all while `refuse` is set.
pub struct CollectSink {
    events: Mutex<Vec<EventRecord>>,
    count: watch::Sender<usize>,
    refuse: Mutex<Option<SinkErrorKind>>,
}

impl Default for CollectSink {
    fn default() -> Self {
        CollectSink {
            events: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            refuse: Mutex::new(None),
        }
    }
}

impl CollectSink {
    pub fn events(&self) -> Vec<EventRecord> {
        self.events.lock().expect("lock").clone()
    }
    pub fn len(&self) -> usize {
        self.events.lock().expect("lock").len()
    }
    pub fn refuse(&self, kind: Option<SinkErrorKind>) {
        *self.refuse.lock().expect("lock") = kind;
    }
    /// Waits (at most 10 s) until at least `n` events were accepted.
    pub async fn wait_for(&self, n: usize) -> Vec<EventRecord> {
        let mut rx = self.count.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("expected {n} events, got {}", self.len()))
            .expect("sink alive");
        self.events()
    }
}

impl EventSink for CollectSink {
    fn publish(&self, event: EventRecord) -> BoxFuture<'_, Result<(), SinkError>> {
        let refused = *self.refuse.lock().expect("lock");
        Box::pin(async move {
            if let Some(kind) = refused {
                return Err(SinkError::new(kind, "refused by the test sink"));
            }
            let n = {
                let mut e = self.events.lock().expect("lock");
                e.push(event);
                e.len()
            };
            self.count.send_replace(n);
            Ok(())
        })
    }
}

/// Polls `f` until it returns `Some`, for at most 10 s.
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An attribute of an event as a string (or JSON text for non-strings).
pub fn attr(e: &EventRecord, name: &str) -> Option<String> {
    e.attributes().get(name).map(|v| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Installs `evmesh_config`'s own kinds and this crate's source kinds as the kind registry (as
/// the facade does, without the kinds of other crates), so YAML with sources validates.
pub fn install_kinds() {
    let mut kinds: Vec<&'static dyn evmesh_config::registry::Kind> =
        evmesh_config::registry::BUILTIN.to_vec();
    kinds.push(&evmesh_sources::ping::PING_SOURCE);
    kinds.push(&evmesh_sources::github::GITHUB_SOURCE);
    kinds.push(&evmesh_sources::apiserver::API_SERVER_SOURCE);
    evmesh_config::registry::install(kinds).expect("one set of kinds");
}
