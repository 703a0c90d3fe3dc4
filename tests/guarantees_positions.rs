//! Where a trigger stands after a replay, a change or a delete: a replay drops the trigger's
//! pending retries and reaches events no trigger matched; a changed delivery order resumes from
//! the checkpoint with its pending retry; a deleted trigger finishes its in-flight attempt, and
//! one deleted and created again under the same name starts fresh (its old progress is gone, so
//! it never inherits old retries). Mostly checked in the stopped mesh's data dir, so "never
//! delivered" is final.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use evmesh::evmesh_config::ReplayFrom;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

fn trigger_yaml(name: &str, sink: &TestSink, ty: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: {name}, namespace: demo}}
spec:
  broker: default
  filter: {{attributes: {{type: {ty}}}}}
  subscriber: {{uri: "{}"}}
  delivery: {{retry: 10000, backoffPolicy: linear, backoffDelay: PT0.01S}}
"#,
        sink.url()
    )
}

const BROKER: &str = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default, namespace: demo}\n";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn send(method: reqwest::Method, url: &str, body: Option<String>) -> (u16, Value) {
    let mut req = client().request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/yaml").body(b);
    }
    let resp = req.send().await.expect("request");
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_drops_the_triggers_pending_retries() {
    let failing = TestSink::start().await;
    failing.always(Reply::Status(503));
    let m = mesh(&format!(
        "{BROKER}---{}",
        trigger_yaml("t1", &failing, "keep")
    ))
    .await;
    post_ok(&m.url("/demo/default"), event("stuck", "keep")).await; // offset 0
    eventually("stuck is being retried", WAIT, || failing.count() >= 3).await;
    // Replay from a time after stuck was appended: the trigger is positioned past it, and the
    // retries it had pending are dropped.
    let t0 = now_ms();
    eventually("the clock moves on", WAIT, || now_ms() > t0).await;
    let from = chrono::DateTime::from_timestamp_millis(now_ms() as i64)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let at = m
        .mesh
        .service()
        .replay("demo", "t1", ReplayFrom::parse(&from).expect("RFC 3339"))
        .await
        .expect("replay");
    assert_eq!(at, 1, "positioned after stuck (the log's head)");
    m.mesh.shutdown().await;
    // The subscriber still answers 503: had the retry been kept, it would be pending here.
    assert_nothing_left(m.dir.path(), "demo", "default", &[("t1", &of_type("keep"))]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_deleted_and_created_again_does_not_inherit_its_old_retries() {
    let (failing, working) = (TestSink::start().await, TestSink::start().await);
    failing.always(Reply::Status(503));
    let m = mesh(&format!("{BROKER}---{}", trigger_yaml("t", &failing, "a"))).await;
    let triggers = m.url("/apis/eventing.knative.dev/v1/namespaces/demo/triggers");
    post_ok(&m.url("/demo/default"), event("old", "a")).await; // offset 0
    eventually("old is being retried", WAIT, || failing.count() >= 2).await;

    let (code, deleted) = send(reqwest::Method::DELETE, &format!("{triggers}/t"), None).await;
    assert_eq!(code, 200, "{deleted}");
    let (code, created) = send(
        reqwest::Method::POST,
        &triggers,
        Some(trigger_yaml("t", &working, "a")),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert_ne!(
        created["metadata"]["uid"], deleted["metadata"]["uid"],
        "a new trigger, not the old one"
    );
    eventually("the new trigger is ready", WAIT, || {
        m.mesh
            .service()
            .triggers()
            .iter()
            .any(|t| t.name == "t" && t.not_ready_reason.is_none())
    })
    .await;
    post_ok(&m.url("/demo/default"), event("new", "a")).await; // offset 1
    eventually("new delivered", WAIT, || working.count() >= 1).await;
    m.mesh.shutdown().await;
    // One saved progress for `t` (the old one was dropped with its trigger), nothing left in it:
    // `old` and its retries are gone for good.
    assert_nothing_left(m.dir.path(), "demo", "default", &[("t", &of_type("a"))]).await;
    assert_eq!(
        working.ids(),
        ["new"],
        "the new trigger got only what came after it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_no_trigger_matches_is_kept_in_the_log_for_a_later_replay() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let m = mesh(&format!("{BROKER}---{}", trigger_yaml("ta", &a, "a"))).await;
    let url = m.url("/demo/default");
    post_ok(&url, event("lonely", "b")).await; // offset 0: no trigger matches it
    post_ok(&url, event("a-1", "a")).await;
    eventually("a-1 delivered", WAIT, || a.ids() == ["a-1"]).await;
    let (code, created) = send(
        reqwest::Method::POST,
        &m.url("/apis/eventing.knative.dev/v1/namespaces/demo/triggers"),
        Some(trigger_yaml("tb", &b, "b")),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let at = m
        .mesh
        .service()
        .replay("demo", "tb", ReplayFrom::Earliest)
        .await
        .expect("replay");
    assert_eq!(at, 0, "the log still starts with the event nobody matched");
    eventually("the replay delivers it", WAIT, || b.ids() == ["lonely"]).await;
    m.mesh.shutdown().await;
    assert_nothing_left(
        m.dir.path(),
        "demo",
        "default",
        &[("ta", &of_type("a")), ("tb", &of_type("b"))],
    )
    .await;
    assert_eq!(b.ids(), ["lonely"]);
}

fn receipt(e: &cloudevents::Event) -> cloudevents::Event {
    use cloudevents::{AttributesReader, EventBuilder};
    cloudevents::EventBuilderV10::new()
        .id(format!("re-{}", e.id()))
        .source("/replier")
        .ty("receipt")
        .build()
        .expect("reply event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_trigger_finishes_its_in_flight_attempt() {
    let (replier, receipts) = (TestSink::start().await, TestSink::start().await);
    // The attempt is in flight for a second, then answers with a reply event.
    replier.always(Reply::DelayThen(
        Duration::from_secs(1),
        Box::new(Reply::Map(receipt)),
    ));
    let m = mesh(&format!(
        "{BROKER}---{}---{}",
        trigger_yaml("t", &replier, "order"),
        trigger_yaml("receipts", &receipts, "receipt")
    ))
    .await;
    post_ok(&m.url("/demo/default"), event("o-1", "order")).await;
    eventually("the attempt is in flight", WAIT, || replier.count() == 1).await;
    let (code, deleted) = send(
        reqwest::Method::DELETE,
        &m.url("/apis/eventing.knative.dev/v1/namespaces/demo/triggers/t"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{deleted}");
    // Finished, not cut off: its reply was stored and reached the other trigger.
    eventually("the in-flight attempt's reply is delivered", WAIT, || {
        receipts.ids() == ["re-o-1"]
    })
    .await;
    assert_eq!(replier.count(), 1, "one attempt, not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_delivery_order_resumes_from_the_checkpoint_with_its_pending_retry() {
    let sink = TestSink::start().await;
    let with_order = |order: &str| {
        format!(
            r#"
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: t
  namespace: demo
  annotations: {{kafka.eventing.knative.dev/delivery.order: {order}}}
spec:
  broker: default
  subscriber: {{uri: "{}"}}
  delivery: {{retry: 10000, backoffPolicy: linear, backoffDelay: PT0.01S}}
"#,
            sink.url()
        )
    };
    let m = mesh(&format!("{BROKER}---{}", with_order("unordered"))).await;
    let url = m.url("/demo/default");
    post_ok(&url, event("done", "t")).await;
    eventually("done delivered", WAIT, || sink.count() == 1).await;
    sink.always(Reply::Status(503));
    post_ok(&url, event("pending", "t")).await;
    eventually("pending is being retried", WAIT, || sink.count() >= 3).await;

    let (code, changed) = send(
        reqwest::Method::PUT,
        &m.url("/apis/eventing.knative.dev/v1/namespaces/demo/triggers/t"),
        Some(with_order("ordered")),
    )
    .await;
    assert_eq!(code, 200, "{changed}");
    sink.always(Reply::Status(202));
    post_ok(&url, event("after", "t")).await;
    // done, pending and after: each delivered once by the trigger.
    eventually_counters(&m.url(""), "triggers", "demo", "t", WAIT, |c| {
        c["delivered"] == 3
    })
    .await;
    m.mesh.shutdown().await;
    assert_nothing_left(m.dir.path(), "demo", "default", &[("t", &every)]).await;
    let ids = sink.ids();
    assert_eq!(
        ids.iter().filter(|i| *i == "done").count(),
        1,
        "the restarted worker did not go back before its checkpoint: {ids:?}"
    );
}
