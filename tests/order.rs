//! Ordered delivery (`kafka.eventing.knative.dev/delivery.order: ordered`): per `partitionkey`
//! one delivery at a time in log order, across retries and restarts; different keys in parallel.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use cloudevents::{EventBuilder, EventBuilderV10};
use common::*;

/// One request the ordering sink saw.
#[derive(Clone, Debug)]
struct Attempt {
    key: Option<String>,
    seq: u64,
    status: u16,
}

#[derive(Default)]
struct OrderState {
    attempts: Vec<Attempt>,
    in_flight_per_key: HashMap<Option<String>, usize>,
    /// Most requests of one key in flight at once.
    max_same_key: usize,
    in_flight: usize,
    /// Most requests in flight at once.
    max_in_flight: usize,
    requests: u64,
}

/// A slow subscriber that answers 503 to every `fail_every`-th request.
#[derive(Clone)]
struct OrderSink {
    addr: SocketAddr,
    state: Arc<Mutex<OrderState>>,
}

#[derive(Clone)]
struct SinkConfig {
    state: Arc<Mutex<OrderState>>,
    delay: Duration,
    fail_every: u64,
}

impl OrderSink {
    async fn start(delay: Duration, fail_every: u64) -> OrderSink {
        let state = Arc::new(Mutex::new(OrderState::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sink");
        let addr = listener.local_addr().expect("addr");
        let config = SinkConfig {
            state: state.clone(),
            delay,
            fail_every,
        };
        let app = Router::new().fallback(order_record).with_state(config);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OrderSink { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&OrderState) -> T) -> T {
        f(&self.state.lock().expect("sink state"))
    }

    /// Per key, the sequence numbers answered 2xx, in the order they were answered.
    fn delivered(&self) -> BTreeMap<Option<String>, Vec<u64>> {
        let mut m: BTreeMap<Option<String>, Vec<u64>> = BTreeMap::new();
        self.with(|s| {
            for a in s.attempts.iter().filter(|a| a.status < 300) {
                m.entry(a.key.clone()).or_default().push(a.seq);
            }
        });
        m
    }

    fn delivered_count(&self) -> usize {
        self.with(|s| s.attempts.iter().filter(|a| a.status < 300).count())
    }
}

async fn order_record(State(cfg): State<SinkConfig>, req: Request) -> StatusCode {
    let headers = req.headers().clone();
    let key = headers
        .get("ce-partitionkey")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let seq: u64 = headers
        .get("ce-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    let n = {
        let mut s = cfg.state.lock().expect("sink state");
        s.requests += 1;
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        let c = s.in_flight_per_key.entry(key.clone()).or_default();
        *c += 1;
        let c = *c;
        s.max_same_key = s.max_same_key.max(c);
        s.requests
    };
    tokio::time::sleep(cfg.delay).await;
    let status = if cfg.fail_every > 0 && n % cfg.fail_every == 0 {
        503
    } else {
        202
    };
    let mut s = cfg.state.lock().expect("sink state");
    s.in_flight -= 1;
    if let Some(c) = s.in_flight_per_key.get_mut(&key) {
        *c -= 1;
    }
    s.attempts.push(Attempt { key, seq, status });
    StatusCode::from_u16(status).expect("status")
}

fn mesh_yaml(sink: &str, order: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: demo}}
spec:
  delivery: {{retry: 20, backoffPolicy: linear, backoffDelay: PT0.01S}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: ordered
  namespace: demo
  annotations:
    kafka.eventing.knative.dev/delivery.order: {order}
spec:
  broker: default
  subscriber: {{uri: "{sink}"}}
"#
    )
}

fn keyed_event(key: Option<&str>, seq: u64) -> cloudevents::Event {
    let id = format!("{}-{seq}", key.unwrap_or("nokey"));
    let mut b = EventBuilderV10::new()
        .id(id)
        .source("/order")
        .ty("order.test")
        .extension("seq", seq.to_string());
    if let Some(k) = key {
        b = b.extension("partitionkey", k);
    }
    b.build().expect("valid event")
}

/// Posts `per_key` events for each key, every key from its own task (one key's events one after
/// the other, so their log order is their sequence order; the keys concurrently).
async fn post_keyed_load(url: &str, keys: &[Option<String>], per_key: u64) {
    let mut tasks = Vec::new();
    for key in keys {
        let url = url.to_string();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..per_key {
                assert_eq!(
                    post_binary(&url, keyed_event(key.as_deref(), seq)).await,
                    202
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("poster");
    }
}

fn keys(n: usize) -> Vec<Option<String>> {
    let mut k: Vec<_> = (0..n).map(|i| Some(format!("key-{i}"))).collect();
    k.push(None);
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordered_trigger_delivers_each_key_in_log_order_under_retries_while_keys_run_in_parallel() {
    let sink = OrderSink::start(Duration::from_millis(5), 7).await;
    let m = mesh(&mesh_yaml(&sink.url(), "ordered")).await;
    let keys = keys(24);
    let per_key = 15;
    post_keyed_load(&m.url("/demo/default"), &keys, per_key).await;
    let total = keys.len() * per_key as usize;
    eventually("every event delivered", Duration::from_secs(60), || {
        sink.delivered_count() >= total
    })
    .await;

    let (max_same_key, max_in_flight, attempts) =
        sink.with(|s| (s.max_same_key, s.max_in_flight, s.attempts.clone()));
    assert!(
        attempts.iter().any(|a| a.status == 503),
        "the subscriber failed some attempts (retries were exercised)"
    );
    assert_eq!(max_same_key, 1, "never two deliveries of one key at once");
    assert!(
        max_in_flight > 1,
        "different keys were delivered in parallel (max in flight {max_in_flight})"
    );
    // Per key: every attempt (failed or not) is for the oldest undelivered event of that key.
    let mut per_key_attempts: HashMap<Option<String>, Vec<(u64, u16)>> = HashMap::new();
    for a in &attempts {
        per_key_attempts
            .entry(a.key.clone())
            .or_default()
            .push((a.seq, a.status));
    }
    for (key, seq) in &per_key_attempts {
        let mut expect = 0;
        for &(s, status) in seq {
            assert_eq!(
                s, expect,
                "key {key:?}: attempt for {s} while {expect} was not yet delivered: {seq:?}"
            );
            if status < 300 {
                expect += 1;
            }
        }
        assert_eq!(expect, per_key, "key {key:?}: all delivered exactly once");
    }
    // Keys interleave: the delivery sequence is not key after key.
    let switches = attempts.windows(2).filter(|w| w[0].key != w[1].key).count();
    assert!(
        switches > keys.len() * 2,
        "deliveries of different keys interleave ({switches} key switches)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unordered_trigger_delivers_one_key_concurrently() {
    // The checks above can fail: without the annotation, one key's events overlap.
    let sink = OrderSink::start(Duration::from_millis(200), 0).await;
    let m = mesh(&mesh_yaml(&sink.url(), "unordered")).await;
    post_keyed_load(&m.url("/demo/default"), &[Some("k".into())], 30).await;
    eventually("every event delivered", Duration::from_secs(30), || {
        sink.delivered_count() >= 30
    })
    .await;
    assert!(sink.with(|s| s.max_same_key) > 1);
}

#[tokio::test]
async fn invalid_delivery_order_annotation_is_a_validation_error() {
    let err =
        evmesh::Mesh::from_yaml(&mesh_yaml("http://127.0.0.1:1/", "sorted")).expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("delivery.order"), "{text}");
    assert!(text.contains("sorted"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordered_trigger_keeps_key_order_across_a_restart_with_pending_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    // First run: the subscriber fails everything, so each key's first event waits for a retry
    // and the others wait behind it.
    let failing = TestSink::start().await;
    failing.always(Reply::Status(503));
    let yaml = |url: &str| {
        mesh_yaml(url, "ordered").replace(
            "{retry: 20, backoffPolicy: linear, backoffDelay: PT0.01S}",
            "{retry: 20, backoffPolicy: linear, backoffDelay: PT0.2S}",
        )
    };
    let m = mesh_at(dir.path(), &yaml(&failing.url()), |o| o).await;
    let keys = keys(5);
    post_keyed_load(&mesh_url(&m, "/demo/default"), &keys, 6).await;
    eventually("first events attempted", Duration::from_secs(10), || {
        failing.count() >= keys.len()
    })
    .await;
    m.shutdown().await;
    assert!(
        failing
            .received()
            .iter()
            .all(|r| r.header("ce-seq").as_deref() == Some("0")),
        "only each key's first event was attempted while it failed"
    );

    // Second run on the same data: the restored entries keep their order.
    let sink = OrderSink::start(Duration::from_millis(2), 0).await;
    let m = mesh_at(dir.path(), &yaml(&sink.url()), |o| o).await;
    eventually("every event delivered", Duration::from_secs(30), || {
        sink.delivered_count() >= keys.len() * 6
    })
    .await;
    for (key, seqs) in sink.delivered() {
        assert_eq!(seqs, (0..6).collect::<Vec<_>>(), "key {key:?}");
    }
    assert_eq!(sink.with(|s| s.max_same_key), 1);
    m.shutdown().await;
}
