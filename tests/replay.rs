//! Replay: a trigger re-delivers from a log position (earliest, or a time) through its own
//! filter, to it only — through the Rust API and the `evmesh.dev/replay-from` annotation.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use evmesh::evmesh_config::ReplayFrom;

/// Two triggers on one broker: `t1` takes type `keep` only, `t2` everything.
fn two_triggers(a: &TestSink, b: &TestSink, t1_annotations: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: demo}}
spec:
  delivery: {{retry: 0}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: t1
  namespace: demo
  annotations: {{{t1_annotations}}}
spec:
  broker: default
  filter: {{attributes: {{type: keep}}}}
  subscriber: {{uri: "{}"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: t2, namespace: demo}}
spec:
  broker: default
  subscriber: {{uri: "{}"}}
"#,
        a.url(),
        b.url()
    )
}

async fn post_all(url: &str, ids: &[(&str, &str)]) {
    for (id, ty) in ids {
        assert_eq!(post_binary(url, event(id, ty)).await, 202);
    }
}

fn count_of(sink: &TestSink, id: &str) -> usize {
    sink.ids().iter().filter(|i| *i == id).count()
}

/// Posts a marker both triggers match and waits until both got it: the triggers' workers are
/// running (a replay applied at start came first).
async fn marker(url: &str, a: &TestSink, b: &TestSink, id: &str) {
    assert_eq!(post_binary(url, event(id, "keep")).await, 202);
    eventually("marker delivered to both", Duration::from_secs(10), || {
        count_of(a, id) == 1 && count_of(b, id) == 1
    })
    .await;
}

/// Stops the mesh gracefully and checks that neither trigger had anything left to deliver:
/// after this, what the sinks got is all they will ever get.
async fn stop_with_nothing_left(mesh: evmesh::RunningMesh, data: &std::path::Path) {
    mesh.shutdown().await;
    assert_nothing_left(
        data,
        "demo",
        "default",
        &[("t1", &of_type("keep")), ("t2", &every)],
    )
    .await;
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn sorted_of(ids: &[&str]) -> Vec<String> {
    sorted(ids.iter().map(|s| s.to_string()).collect())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::test]
async fn replay_from_earliest_redelivers_through_the_filter_to_that_trigger_only() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let m = mesh(&two_triggers(&a, &b, "")).await;
    let url = m.url("/demo/default");
    post_all(&url, &[("1", "keep"), ("2", "other"), ("3", "keep")]).await;
    eventually("first delivery", Duration::from_secs(10), || {
        a.count() == 2 && b.count() == 3
    })
    .await;

    let at = m
        .mesh
        .service()
        .replay("demo", "t1", ReplayFrom::Earliest)
        .await
        .expect("replay");
    assert_eq!(at, 0);
    eventually("t1 re-delivers", Duration::from_secs(10), || a.count() == 4).await;
    stop_with_nothing_left(m.mesh, m.dir.path()).await;
    assert_eq!(
        sorted(a.ids()),
        sorted_of(&["1", "1", "3", "3"]),
        "t1: through its filter"
    );
    assert_eq!(
        sorted(b.ids()),
        sorted_of(&["1", "2", "3"]),
        "t2 did not re-deliver"
    );
}

#[tokio::test]
async fn replay_from_a_time_redelivers_what_was_appended_since() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let m = mesh(&two_triggers(&a, &b, "")).await;
    let url = m.url("/demo/default");
    post_all(&url, &[("old1", "keep"), ("old2", "keep")]).await;
    eventually("old delivered", Duration::from_secs(10), || a.count() == 2).await;
    // A time strictly after the old events' append times.
    let t0 = now_ms();
    eventually("the clock moves on", Duration::from_secs(1), || {
        now_ms() > t0
    })
    .await;
    let from = now_ms();
    post_all(
        &url,
        &[("new1", "keep"), ("new2", "other"), ("new3", "keep")],
    )
    .await;
    eventually("new delivered", Duration::from_secs(10), || {
        a.count() == 4 && b.count() == 5
    })
    .await;

    let rfc3339 = chrono::DateTime::from_timestamp_millis(from as i64)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let from = ReplayFrom::parse(&rfc3339).expect("RFC 3339");
    let at = m
        .mesh
        .service()
        .replay("demo", "t1", from)
        .await
        .expect("replay");
    assert_eq!(
        at, 2,
        "positioned at the first event appended at or after {rfc3339}"
    );
    eventually("t1 re-delivers", Duration::from_secs(10), || a.count() == 6).await;
    stop_with_nothing_left(m.mesh, m.dir.path()).await;
    assert_eq!(
        sorted(a.ids()),
        sorted_of(&["old1", "old2", "new1", "new3", "new1", "new3"])
    );
    assert_eq!(b.count(), 5, "t2 did not re-deliver");
}

#[tokio::test]
async fn replay_of_an_unknown_trigger_is_not_found() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let m = mesh(&two_triggers(&a, &b, "")).await;
    let err = m
        .mesh
        .service()
        .replay("demo", "nope", ReplayFrom::Earliest)
        .await
        .expect_err("unknown trigger");
    assert!(
        matches!(err, evmesh::evmesh_broker::ReplayError::NotFound(_)),
        "{err}"
    );
}

#[tokio::test]
async fn replay_from_annotation_applies_once_per_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let plain = two_triggers(&a, &b, "");
    let m = mesh_at(dir.path(), &plain, |o| o).await;
    let url = mesh_url(&m, "/demo/default");
    post_all(&url, &[("1", "keep"), ("2", "keep")]).await;
    eventually("delivered", Duration::from_secs(10), || a.count() == 2).await;
    m.shutdown().await;

    // The annotation appears: the trigger is positioned at the earliest event at start.
    let annotated = two_triggers(&a, &b, r#""evmesh.dev/replay-from": earliest"#);
    let m = mesh_at(dir.path(), &annotated, |o| o).await;
    let url = mesh_url(&m, "/demo/default");
    eventually("replayed", Duration::from_secs(10), || a.count() == 4).await;
    marker(&url, &a, &b, "m1").await;
    stop_with_nothing_left(m, dir.path()).await;
    assert_eq!(sorted(a.ids()), sorted_of(&["1", "2", "1", "2", "m1"]));

    // The same value again: already applied, nothing is re-delivered.
    let m = mesh_at(dir.path(), &annotated, |o| o).await;
    let url = mesh_url(&m, "/demo/default");
    marker(&url, &a, &b, "m2").await;
    stop_with_nothing_left(m, dir.path()).await;
    assert_eq!(
        sorted(a.ids()),
        sorted_of(&["1", "2", "1", "2", "m1", "m2"])
    );
    assert_eq!(
        sorted(b.ids()),
        sorted_of(&["1", "2", "m1", "m2"]),
        "t2 never re-delivered"
    );
}

#[tokio::test]
async fn invalid_replay_from_annotation_is_a_validation_error() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let yaml = two_triggers(&a, &b, r#""evmesh.dev/replay-from": yesterday"#);
    let err = evmesh::Mesh::from_yaml(&yaml).expect_err("invalid");
    assert!(err.to_string().contains("evmesh.dev/replay-from"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reads_a_long_log_in_batches_keeping_only_matches() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let m = mesh(&two_triggers(&a, &b, "")).await;
    let total = 4500; // more than one catch-up turn (8 batches of 512)
    let mesh = std::sync::Arc::new(m);
    for chunk in (0..total).collect::<Vec<_>>().chunks(200) {
        let mut tasks = Vec::new();
        for &i in chunk {
            let mesh = mesh.clone();
            tasks.push(tokio::spawn(async move {
                let ty = if i % 1000 == 999 { "keep" } else { "other" };
                mesh.mesh
                    .publish("demo", "default", event(&format!("e{i}"), ty))
                    .await
                    .expect("published");
            }));
        }
        for t in tasks {
            t.await.expect("publisher");
        }
    }
    eventually("first delivery", Duration::from_secs(60), || {
        a.count() == 4 && b.count() == total
    })
    .await;
    mesh.mesh
        .service()
        .replay("demo", "t1", ReplayFrom::Earliest)
        .await
        .expect("replay");
    eventually(
        "t1 re-delivers its 4 matches",
        Duration::from_secs(30),
        || a.count() == 8,
    )
    .await;
    let Ok(m) = std::sync::Arc::try_unwrap(mesh) else {
        panic!("the mesh is no longer shared");
    };
    stop_with_nothing_left(m.mesh, m.dir.path()).await;
    assert_eq!(a.count(), 8);
    assert_eq!(b.count(), total, "t2 did not re-deliver");
}

/// An InMemoryChannel `orders` and its subscription `to-a` to `a`, with `annotations`.
fn channel_and_subscription(a: &TestSink, annotations: &str) -> String {
    format!(
        r#"
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {{name: orders, namespace: demo}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata:
  name: to-a
  namespace: demo
  annotations: {{{annotations}}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: orders}}
  subscriber: {{uri: "{}"}}
"#,
        a.url()
    )
}

#[tokio::test]
async fn replay_from_annotation_on_a_subscription_redelivers_its_channel_once_per_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = TestSink::start().await;
    let m = mesh_at(dir.path(), &channel_and_subscription(&a, ""), |o| o).await;
    let url = mesh_url(&m, "/channels/demo/orders");
    post_all(&url, &[("1", "t"), ("2", "t")]).await;
    m.wait_idle().await.expect("idle");
    m.shutdown().await;

    let annotated = channel_and_subscription(&a, r#""evmesh.dev/replay-from": earliest"#);
    let m = mesh_at(dir.path(), &annotated, |o| o).await;
    eventually("replayed", Duration::from_secs(10), || a.count() == 4).await;
    m.wait_idle().await.expect("idle");
    m.shutdown().await;
    assert_eq!(sorted(a.ids()), sorted_of(&["1", "1", "2", "2"]));

    // The same value again: already applied.
    let m = mesh_at(dir.path(), &annotated, |o| o).await;
    post_all(&mesh_url(&m, "/channels/demo/orders"), &[("3", "t")]).await;
    m.wait_idle().await.expect("idle");
    m.shutdown().await;
    assert_eq!(sorted(a.ids()), sorted_of(&["1", "1", "2", "2", "3"]));
}

#[tokio::test]
async fn invalid_replay_from_annotation_on_a_subscription_is_a_validation_error() {
    let a = TestSink::start().await;
    let yaml = channel_and_subscription(&a, r#""evmesh.dev/replay-from": yesterday"#);
    let err = evmesh::Mesh::from_yaml(&yaml).expect_err("invalid");
    assert!(err.to_string().contains("evmesh.dev/replay-from"), "{err}");
}

/// A subscriber on a raw socket that holds the first request it gets (never answers it) and
/// notes when evmesh closes that connection; every other request gets 202. It records the
/// `ce-id` of each request.
struct HoldingSubscriber {
    url: String,
    ids: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    held_closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HoldingSubscriber {
    async fn start() -> HoldingSubscriber {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let held_closed = std::sync::Arc::new(AtomicBool::new(false));
        let holding = std::sync::Arc::new(AtomicBool::new(true));
        let (ids2, closed2) = (ids.clone(), held_closed.clone());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (ids, closed, holding) = (ids2.clone(), closed2.clone(), holding.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request: its head, then Content-Length bytes of body.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        let header = |name: &str| {
                            head.lines()
                                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                                .map(|v| v.trim().to_string())
                        };
                        let len: usize = header("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + len);
                        ids.lock()
                            .expect("ids")
                            .push(header("ce-id").unwrap_or_default());
                        if holding.swap(false, Ordering::AcqRel) {
                            // Held: no answer; wait for the other side to close.
                            while !matches!(conn.read(&mut chunk).await, Ok(0) | Err(_)) {}
                            closed.store(true, Ordering::Release);
                            return;
                        }
                        let ok = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";
                        if conn.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HoldingSubscriber {
            url,
            ids,
            held_closed,
        }
    }

    fn ids(&self) -> Vec<String> {
        self.ids.lock().expect("ids").clone()
    }
}

#[tokio::test]
async fn replay_abandons_an_attempt_in_flight_and_delivers_from_the_new_position() {
    let sub = HoldingSubscriber::start().await;
    // The trigger's own timeout (300 s) outlasts the test: only the replay ends the attempt.
    let yaml = broker_and_trigger_to(&sub.url, "  delivery: {retry: 0, timeout: PT300S}");
    let m = mesh(&yaml).await;
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("held", "keep")).await,
        202
    );
    eventually("the attempt is in flight", Duration::from_secs(10), || {
        sub.ids() == ["held"]
    })
    .await;

    let at = m
        .mesh
        .service()
        .replay("demo", "t1", ReplayFrom::Earliest)
        .await
        .expect("replay");
    assert_eq!(at, 0);
    // The held attempt is abandoned (its connection closed, not left to its 300 s timeout)
    // and the event goes again from the replayed position.
    eventually(
        "the held attempt's connection is closed and the event delivered again",
        Duration::from_secs(10),
        || {
            sub.held_closed.load(std::sync::atomic::Ordering::Acquire)
                && sub.ids() == ["held", "held"]
        },
    )
    .await;
    m.mesh.shutdown().await;
}
