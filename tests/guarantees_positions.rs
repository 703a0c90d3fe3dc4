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

/// One event posted while the trigger is created: when it was sent, when it was answered, and
/// whether it was accepted (202).
struct Posted {
    id: String,
    sent: std::time::Instant,
    answered: std::time::Instant,
    accepted: bool,
}

/// Posts events `e0, e1, ...` one after the other until `stop`, recording each; a post the mesh
/// does not answer (it was killed) counts as not accepted.
async fn post_until(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    log: std::sync::Arc<std::sync::Mutex<Vec<Posted>>>,
) {
    let http = client();
    let mut i = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        let id = format!("e{i}");
        let enc = evmesh::evmesh_broker::codec::encode_binary(event(&id, "t")).expect("encode");
        let sent = std::time::Instant::now();
        let code = http
            .post(&url)
            .headers(enc.headers)
            .body(enc.body)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        let answered = std::time::Instant::now();
        log.lock().expect("log").push(Posted {
            id,
            sent,
            answered,
            accepted: code == 202,
        });
        i += 1;
        if code != 202 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_triggers_start_position_survives_kill9_right_after_its_creation() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    // The subscriber fails until the restart, so nothing reaches it before the kill: what it
    // gets afterwards comes from the position saved before the crash.
    let sink = TestSink::start().await;
    sink.always(Reply::Status(503));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, BROKER).expect("write");
    let data = dir.path().join("data");
    let em = EvmeshProcess::start(&config, &data, &[]);
    let token = std::fs::read_to_string(data.join("admin-token")).expect("admin token");

    // Events flow into the broker the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(Mutex::new(Vec::<Posted>::new()));
    let poster = tokio::spawn(post_until(
        em.url("/demo/default"),
        stop.clone(),
        posted.clone(),
    ));
    let accepted_where = |f: &dyn Fn(&Posted) -> bool| {
        posted
            .lock()
            .expect("log")
            .iter()
            .filter(|p| p.accepted && f(p))
            .count()
    };
    eventually("events flow", WAIT, || accepted_where(&|_| true) >= 20).await;

    // The trigger is created through the admin API...
    let created_at = std::time::Instant::now();
    let resp = client()
        .post(em.url("/apis/eventing.knative.dev/v1/namespaces/demo/triggers"))
        .bearer_auth(token.trim())
        .header("content-type", "application/yaml")
        .body(trigger_yaml("t1", &sink, "t"))
        .send()
        .await
        .expect("create");
    let answered_at = std::time::Instant::now();
    assert_eq!(resp.status().as_u16(), 201, "create answered");
    // ...and the mesh is killed right after a few events were accepted past the answer.
    let kill_after = |p: &Posted| p.sent > answered_at;
    eventually("events accepted after the create", WAIT, || {
        accepted_where(&kill_after) >= 3
    })
    .await;
    em.kill9();
    stop.store(true, Ordering::Release);
    poster.await.expect("poster");

    let em = EvmeshProcess::start(&config, &data, &[]);
    let failed_attempts = sink.count();
    sink.always(Reply::Status(202));
    assert_eq!(
        post_binary(&em.url("/demo/default"), event("last", "t")).await,
        202
    );
    let (before, after): (Vec<String>, Vec<String>) = {
        let log = posted.lock().expect("log");
        (
            log.iter()
                .filter(|p| p.accepted && p.answered < created_at)
                .map(|p| p.id.clone())
                .collect(),
            log.iter()
                .filter(|p| p.accepted && p.sent > answered_at)
                .map(|p| p.id.clone())
                .chain(["last".to_string()])
                .collect(),
        )
    };
    assert!(before.len() >= 20);
    eventually(
        "every event accepted after the create's answer reaches the trigger",
        WAIT,
        || {
            let ids = sink.ids().split_off(failed_attempts);
            after.iter().all(|id| ids.contains(id))
        },
    )
    .await;
    let ids = sink.ids();
    let early: Vec<&String> = before.iter().filter(|id| ids.contains(id)).collect();
    assert!(
        early.is_empty(),
        "accepted before the create, yet sent to the trigger: {early:?}"
    );
    drop(em);
}

/// Events retention deleted, summed from the real binary's log lines.
fn deleted_by_retention(p: &EvmeshProcess) -> u64 {
    p.lines()
        .iter()
        .filter(|l| l.contains("retention"))
        .filter_map(|l| l.split("deleted=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_from_earliest_after_retention_delivers_exactly_the_retained_events() {
    let all = TestSink::start().await;
    let stuck = TestSink::start().await;
    stuck.always(Reply::Status(503));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mesh.yaml");
    // `all` takes every event; `stuck` keeps retrying the `new` ones, so they stay pinned.
    std::fs::write(
        &config,
        format!(
            "{BROKER}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: all, namespace: demo}}\nspec:\n  broker: default\n  subscriber: {{uri: \"{}\"}}\n---{}",
            all.url(),
            trigger_yaml("stuck", &stuck, "new")
        ),
    )
    .expect("write");
    let data = dir.path().join("data");
    let args = ["--retention-bytes", "1", "--retention-interval", "PT0.05S"];
    let p = EvmeshProcess::start(&config, &data, &args);
    let url = p.url("/demo/default");
    for i in 0..5 {
        post_ok(&url, event(&format!("old-{i}"), "old")).await; // offsets 0..=4
    }
    eventually("the old events delivered", WAIT, || all.count() == 5).await;
    eventually("retention deleted the old events", WAIT, || {
        deleted_by_retention(&p) == 5
    })
    .await;
    for i in 0..3 {
        post_ok(&url, event(&format!("new-{i}"), "new")).await; // offsets 5..=7, pinned
    }
    eventually("the new events delivered", WAIT, || all.count() == 8).await;
    eventually("stuck retries", WAIT, || stuck.count() >= 3).await;

    let token = std::fs::read_to_string(data.join("admin-token")).expect("admin token");
    let resp = client()
        .post(p.url("/apis/eventing.knative.dev/v1/namespaces/demo/triggers/all/replay"))
        .bearer_auth(token.trim())
        .header("content-type", "application/json")
        .body(r#"{"from": "earliest"}"#)
        .send()
        .await
        .expect("replay");
    assert_eq!(resp.status().as_u16(), 200, "the replay is answered");
    let status: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("status");
    assert_eq!(status["evmesh"]["offset"], 5, "{status}");
    eventually("the retained events delivered again", WAIT, || {
        all.count() == 11
    })
    .await;
    // It goes on: an event after the replay is delivered too.
    post_ok(&url, event("later", "later")).await;
    eventually("later delivered", WAIT, || all.count() == 12).await;
    let mut ids = all.ids();
    ids.sort();
    let mut expected: Vec<String> = (0..5)
        .map(|i| format!("old-{i}"))
        .chain((0..3).flat_map(|i| [format!("new-{i}"), format!("new-{i}")]))
        .chain(["later".to_string()])
        .collect();
    expected.sort();
    assert_eq!(ids, expected, "only the retained events were replayed");
}

/// A new trigger's position is its broker log's head when it was applied, saved with it: events
/// answered 202 after the apply reach it even when it cannot run yet (its dead-letter sink, a
/// broker, does not exist) and only starts once that is applied. Before, the position was taken
/// when the route started, so these events were skipped (and, on a loaded machine, so was an
/// event posted between a reload making the trigger visible and its route starting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_trigger_keeps_its_creation_position_until_it_can_run() {
    let sink = TestSink::start().await;
    let m = mesh(BROKER).await;
    let api = m.url("/apis/eventing.knative.dev/v1/namespaces/demo");
    post_ok(&m.url("/demo/default"), event("before", "a")).await;
    let trigger = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: late, namespace: demo}}
spec:
  broker: default
  subscriber: {{uri: "{}"}}
  delivery:
    deadLetterSink:
      ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: later}}
"#,
        sink.url()
    );
    let (code, body) = send(
        reqwest::Method::POST,
        &format!("{api}/triggers"),
        Some(trigger),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    eventually(
        "the trigger is not ready (no dead-letter broker)",
        WAIT,
        || {
            m.mesh
                .service()
                .triggers()
                .iter()
                .any(|t| t.name == "late" && t.not_ready_reason.is_some())
        },
    )
    .await;
    post_ok(&m.url("/demo/default"), event("while-not-ready", "a")).await;
    // Still nothing: it does not run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sink.count(),
        0,
        "a trigger that is not ready delivers nothing"
    );
    let broker = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: later, namespace: demo}\n";
    let (code, body) = send(
        reqwest::Method::POST,
        &format!("{api}/brokers"),
        Some(broker.to_string()),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    post_ok(&m.url("/demo/default"), event("after", "a")).await;
    let deadline = std::time::Instant::now() + WAIT;
    while sink.count() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ids = sink.ids();
    ids.sort();
    assert_eq!(
        ids,
        ["after", "while-not-ready"],
        "what came after the trigger's creation, nothing before it"
    );
    m.mesh.shutdown().await;
}

/// The same for a Subscription: its channel's head when it was applied is saved with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscription_keeps_its_creation_position_until_it_can_run() {
    let sink = TestSink::start().await;
    let m = mesh("apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {name: c, namespace: demo}\n").await;
    let channel = m.url("/channels/demo/c");
    post_ok(&channel, event("before", "a")).await;
    let subscription = format!(
        r#"
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {{name: late, namespace: demo}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: c}}
  subscriber: {{uri: "{}"}}
  delivery:
    deadLetterSink:
      ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: later}}
"#,
        sink.url()
    );
    let api = m.url("/apis");
    let (code, body) = send(
        reqwest::Method::POST,
        &format!("{api}/messaging.knative.dev/v1/namespaces/demo/subscriptions"),
        Some(subscription),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    post_ok(&channel, event("while-not-ready", "a")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sink.count(),
        0,
        "a subscription that is not ready delivers nothing"
    );
    let broker = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: later, namespace: demo}\n";
    let (code, body) = send(
        reqwest::Method::POST,
        &format!("{api}/eventing.knative.dev/v1/namespaces/demo/brokers"),
        Some(broker.to_string()),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    post_ok(&channel, event("after", "a")).await;
    let deadline = std::time::Instant::now() + WAIT;
    while sink.count() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ids = sink.ids();
    ids.sort();
    assert_eq!(
        ids,
        ["after", "while-not-ready"],
        "what came after the subscription's creation, nothing before it"
    );
    m.mesh.shutdown().await;
}
