//! Retention never deletes an event a trigger still needs: a short retention interval and a tiny
//! byte limit run while a trigger's retries are pending, across a restart, and the event is still
//! delivered once the subscriber recovers.

mod common;

use std::time::Duration;

use cloudevents::AttributesReader;
use common::*;
use evmesh::evmesh_store::{EngineKind, LogId, Retention};

const WAIT: Duration = Duration::from_secs(15);

fn yaml(stuck: &TestSink, ok: &TestSink, witness: &TestSink) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: stuck}}
spec:
  broker: default
  filter: {{attributes: {{type: stuck}}}}
  subscriber: {{uri: "{}"}}
  delivery: {{retry: 1000, backoffPolicy: linear, backoffDelay: PT0.02S}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: ok}}
spec:
  broker: default
  filter: {{attributes: {{type: ok}}}}
  subscriber: {{uri: "{}"}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: witness}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec: {{broker: witness, subscriber: {{uri: "{}"}}}}
"#,
        stuck.url(),
        ok.url(),
        witness.url()
    )
}

fn aggressive_retention(mut o: evmesh::Options) -> evmesh::Options {
    o.service.retention = Retention {
        max_age: Some(Duration::ZERO),
        max_bytes: Some(1),
    };
    o.service.retention_interval = Duration::from_millis(20);
    o.service.drain_timeout = Duration::from_secs(2);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_never_deletes_an_event_with_pending_retries_even_across_a_restart() {
    let stuck = TestSink::start().await;
    let ok = TestSink::start().await;
    let witness = TestSink::start().await;
    stuck.always(Reply::Status(503));
    let yaml = yaml(&stuck, &ok, &witness);
    let dir = tempfile::tempdir().expect("tempdir");
    let first = mesh_at(dir.path(), &yaml, aggressive_retention).await;
    let base = first.url().as_str().trim_end_matches('/').to_string();
    let post = |path: &str, id: &str, ty: &str| {
        let url = format!("{base}{path}");
        let e = event(id, ty);
        async move { post_binary(&url, e).await }
    };
    assert_eq!(post("/default/default", "pending-1", "stuck").await, 202);
    for i in 0..20 {
        assert_eq!(
            post("/default/default", &format!("ok-{i}"), "ok").await,
            202
        );
        assert_eq!(post("/default/witness", &format!("w-{i}"), "t").await, 202);
    }
    eventually("the ok trigger got its 20 events", WAIT, || {
        ok.count() == 20
    })
    .await;
    eventually("the witness trigger got its 20 events", WAIT, || {
        witness.count() == 20
    })
    .await;
    // Keep the retry pending through many retention passes (every 20 ms).
    eventually("the stuck trigger retried 10 times", WAIT, || {
        stuck.count() >= 11
    })
    .await;
    first.shutdown().await;

    // Retention really ran: the witness broker's log (fully delivered) was emptied, while the
    // event the stuck trigger still needs (offset 0 of the default broker) is still stored.
    let data = dir.path().to_path_buf();
    let (witness_first, default_first) = tokio::task::spawn_blocking(move || {
        let store = evmesh::evmesh_store::open(EngineKind::default(), &data).expect("reopen store");
        let w = store
            .first_offset(&LogId::new("default/witness"))
            .expect("first offset");
        let d = store
            .first_offset(&LogId::new("default/default"))
            .expect("first offset");
        (w, d)
    })
    .await
    .expect("join");
    assert!(
        witness_first.is_none_or(|o| o > 0),
        "retention ran on the witness log (first offset {witness_first:?})"
    );
    assert_eq!(
        default_first,
        Some(0),
        "the event with pending retries is still in the log"
    );

    // The subscriber recovers; the restarted mesh (same aggressive retention) delivers it.
    let attempts_before = stuck.count();
    stuck.always(Reply::Status(202));
    let _second = mesh_at(dir.path(), &yaml, aggressive_retention).await;
    eventually("the pending event delivered after recovery", WAIT, || {
        stuck.received()[attempts_before..]
            .iter()
            .any(|r| r.event.as_ref().map(|e| e.id()) == Some("pending-1"))
    })
    .await;
    assert_eq!(ok.count(), 20, "completed events are not delivered again");
}

/// Events the `retention` log lines of `p` say were deleted, in total.
fn deleted_by_retention(p: &EvmeshProcess) -> u64 {
    p.lines()
        .iter()
        .filter(|l| l.contains("retention"))
        .filter_map(|l| l.split("deleted=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The real binary with retention `flags` (and a short `--retention-interval`): the events
/// before one whose retries are pending are deleted, that one and those after it are kept
/// (graceful stop, then the log read from the data dir); after a restart the pending event is
/// delivered from the log (and, with `then_everything_is_deleted`, retention deletes the rest).
async fn retention_flags_delete_what_is_done_and_keep_what_is_pending(
    flags: &[&str],
    then_everything_is_deleted: bool,
) {
    let ok = TestSink::start().await;
    let stuck = TestSink::start().await;
    stuck.always(Reply::Status(503));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: ok}}
spec:
  broker: default
  filter: {{attributes: {{type: ok}}}}
  subscriber: {{uri: "{}"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: stuck}}
spec:
  broker: default
  filter: {{attributes: {{type: stuck}}}}
  subscriber: {{uri: "{}"}}
  delivery: {{retry: 10000, backoffPolicy: linear, backoffDelay: PT0.05S}}
"#,
            ok.url(),
            stuck.url()
        ),
    );
    let data = dir.path().join("data");
    let args: Vec<&str> = flags
        .iter()
        .copied()
        .chain(["--retention-interval", "PT0.05S"])
        .collect();
    let mut first = EvmeshProcess::start(&config, &data, &args);
    let url = first.url("/default/default");
    for i in 0..5 {
        post_ok(&url, event(&format!("old-{i}"), "ok")).await;
    }
    eventually("the old events delivered", WAIT, || ok.count() == 5).await;
    post_ok(&url, event("pending", "stuck")).await; // offset 5
    eventually("the pending event is being retried", WAIT, || {
        stuck.count() >= 3
    })
    .await;
    for i in 0..5 {
        post_ok(&url, event(&format!("new-{i}"), "ok")).await;
    }
    eventually("the new events delivered", WAIT, || ok.count() == 10).await;
    eventually("retention deleted the 5 old events", WAIT, || {
        deleted_by_retention(&first) >= 5
    })
    .await;
    first.sigterm();
    assert_eq!(first.wait_exit(WAIT).await.code(), Some(0));
    assert_eq!(
        deleted_by_retention(&first),
        5,
        "only the events before the pending one were deleted:\n{}",
        first.stderr_tail()
    );
    let store = evmesh::evmesh_store::open(EngineKind::default(), &data).expect("reopen store");
    let log = LogId::new("default/default");
    assert_eq!(
        store.first_offset(&log).expect("first offset"),
        Some(5),
        "the pending event is the first one kept"
    );
    assert_eq!(store.next_offset(&log).expect("head"), 11);

    store.flush().await.expect("flush");
    drop(store);

    // The subscriber recovers: the restarted process delivers the event from the log.
    stuck.always(Reply::Status(202));
    let attempts_before = stuck.count();
    let mut second = EvmeshProcess::start(&config, &data, &args);
    eventually(
        "the pending event delivered after the restart",
        WAIT,
        || {
            stuck.received()[attempts_before..]
                .iter()
                .any(|r| r.event.as_ref().map(|e| e.id()) == Some("pending"))
        },
    )
    .await;
    if then_everything_is_deleted {
        // Nothing is pending any more: retention deletes the rest (6 events).
        let deadline = std::time::Instant::now() + WAIT;
        while deleted_by_retention(&second) < 6 {
            assert!(
                std::time::Instant::now() < deadline,
                "retention did not delete the rest:\n{}",
                second.stderr_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    second.sigterm();
    assert_eq!(second.wait_exit(WAIT).await.code(), Some(0));
    assert_nothing_left(
        &data,
        "default",
        "default",
        &[("ok", &of_type("ok")), ("stuck", &of_type("stuck"))],
    )
    .await;
    assert_eq!(ok.count(), 10, "completed events are not delivered again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_flag_deletes_old_events_but_never_a_pending_one() {
    retention_flags_delete_what_is_done_and_keep_what_is_pending(&["--retention", "PT0S"], false)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_bytes_flag_deletes_old_events_but_never_a_pending_one() {
    retention_flags_delete_what_is_done_and_keep_what_is_pending(
        &["--retention-bytes", "1"],
        false,
    )
    .await;
}

/// Once the pending event is delivered after a restart, nothing pins the log any more and
/// retention deletes the rest (that event and the ones after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_a_formerly_pending_event_once_it_is_delivered() {
    retention_flags_delete_what_is_done_and_keep_what_is_pending(&["--retention-bytes", "1"], true)
        .await;
}

/// A trigger that gets no more matching events still moves its saved position past the events
/// it did not match, so it does not pin retention at its last match: the events after it are
/// deleted although the trigger never handled them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_what_an_idle_trigger_has_passed() {
    let orders = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: orders}}
spec:
  broker: default
  filter: {{attributes: {{type: order}}}}
  subscriber: {{uri: "{}"}}
"#,
            orders.url()
        ),
    );
    let data = dir.path().join("data");
    let args = ["--retention-bytes", "1", "--retention-interval", "PT0.05S"];
    let mut p = EvmeshProcess::start(&config, &data, &args);
    let url = p.url("/default/default");
    post_ok(&url, event("order-1", "order")).await; // offset 0
    eventually("order-1 delivered", WAIT, || orders.count() == 1).await;
    // The trigger saved its position after order-1 (the log held nothing else then), so
    // retention deletes order-1: the trigger's last save is behind us.
    eventually("retention deleted order-1", WAIT, || {
        deleted_by_retention(&p) == 1
    })
    .await;
    // Ten events the trigger does not match (offsets 1..=10): it never handles one, so only
    // its idle re-check can move its saved position past them.
    for i in 0..10 {
        post_ok(&url, event(&format!("noise-{i}"), "noise")).await;
    }
    let deadline = std::time::Instant::now() + WAIT;
    while deleted_by_retention(&p) < 11 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not delete the 10 events the idle trigger passed (deleted {}):\n{}",
            deleted_by_retention(&p),
            p.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The trigger still delivers what it matches after its position moved.
    post_ok(&url, event("order-2", "order")).await; // offset 11
    eventually("order-2 delivered", WAIT, || orders.count() == 2).await;
    p.sigterm();
    assert_eq!(p.wait_exit(WAIT).await.code(), Some(0));
    assert_eq!(orders.ids(), ["order-1", "order-2"]);
    let store = evmesh::evmesh_store::open(EngineKind::default(), &data).expect("reopen store");
    let log = LogId::new("default/default");
    let (first, head) = (
        store.first_offset(&log).expect("first offset"),
        store.next_offset(&log).expect("head"),
    );
    store.flush().await.expect("flush");
    drop(store);
    assert_eq!(head, 12);
    assert!(
        first.is_none_or(|first| first >= 11),
        "the events the idle trigger passed are deleted (first offset kept: {first:?})"
    );
    assert_nothing_left(
        &data,
        "default",
        "default",
        &[("orders", &of_type("order"))],
    )
    .await;
}
