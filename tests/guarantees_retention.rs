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
