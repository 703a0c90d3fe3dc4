//! An InMemoryChannel in evmesh is durable (unlike Knative's): kill -9 of the real binary while
//! one subscription's subscriber fails and another's is blocked loses nothing — after a restart
//! on the same data dir every event the channel answered 202 reaches every subscription, and
//! the restarted process does the delivering.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cloudevents::AttributesReader;
use common::*;

const WAIT: Duration = Duration::from_secs(60);

/// Ids the sink received at or after `since` (requests of the killed process that were already
/// on the wire are handled at once after the kill, long before the restart).
fn ids_after(sink: &TestSink, since: Instant) -> HashSet<String> {
    sink.received()
        .iter()
        .filter(|r| r.at >= since)
        .filter_map(|r| r.event.as_ref().map(|e| e.id().to_string()))
        .collect()
}

fn subscription(name: &str, sink: &TestSink) -> String {
    format!(
        r#"
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {{name: {name}}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: orders}}
  subscriber: {{uri: "{}"}}
  delivery: {{retry: 10000, backoffPolicy: linear, backoffDelay: PT0.01S, timeout: PT300S}}
"#,
        sink.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_backlog_in_a_channel_then_restart_delivers_every_event_to_every_subscription()
 {
    let failing = TestSink::start().await; // 503 until the kill
    let blocked = TestSink::start().await; // holds every request until the kill
    let healthy = TestSink::start().await;
    failing.always(Reply::Status(503));
    blocked.always(Reply::Delay(Duration::from_secs(300)));
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {{name: orders}}\n{}{}{}",
        subscription("failing", &failing),
        subscription("blocked", &blocked),
        subscription("healthy", &healthy),
    );
    let config = write_config(dir.path(), &yaml);
    let data = dir.path().join("data");
    let mut first = EvmeshProcess::start(&config, &data, &[]);
    let address = first.url("/channels/default/orders");
    let ids: HashSet<String> = (0..30).map(|i| format!("o-{i}")).collect();
    for id in &ids {
        post_ok(&address, event(id, "order")).await;
    }
    // The backlog is real at the kill: every event reached both stuck subscribers (failing is
    // retrying them, blocked holds them in flight), and the healthy one has them all.
    eventually("every event is being retried on failing", WAIT, || {
        HashSet::from_iter(failing.ids()) == ids
    })
    .await;
    eventually("every event is in flight on blocked", WAIT, || {
        HashSet::from_iter(blocked.ids()) == ids
    })
    .await;
    eventually("every event reached healthy", WAIT, || {
        HashSet::from_iter(healthy.ids()) == ids
    })
    .await;
    first.sigkill();
    failing.always(Reply::Status(202));
    blocked.always(Reply::Status(202));

    let since = Instant::now();
    let mut second = EvmeshProcess::start(&config, &data, &[]);
    let deadline = Instant::now() + WAIT;
    for (name, sink) in [("failing", &failing), ("blocked", &blocked)] {
        loop {
            let got = ids_after(sink, since);
            let missing: Vec<&String> = ids.difference(&got).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "subscription {name}: {} of {} accepted events not delivered by the restarted \
                 process (e.g. {:?}):\n{}",
                missing.len(),
                ids.len(),
                &missing[..missing.len().min(5)],
                second.output_tail(100)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The healthy subscription had every event before the kill; a restart may repeat some (at
    // least once) but brings no event that was not posted.
    assert_eq!(HashSet::from_iter(healthy.ids()), ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_without_delivery_on_a_channel_without_delivery_attempts_once() {
    let failing = TestSink::start().await;
    failing.always(Reply::Status(503));
    let m = mesh(&format!(
        r#"
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {{name: orders}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {{name: once}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: orders}}
  subscriber: {{uri: "{}"}}
"#,
        failing.url()
    ))
    .await;
    post_ok(&m.url("/channels/default/orders"), event("o-1", "order")).await;
    // Dropped (no dead-letter sink) after its one attempt: nothing more can come.
    let url = m.url("/apis/messaging.knative.dev/v1/namespaces/default/subscriptions/once");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, sub) = get_json(&url).await;
        let counters = &sub["status"]["evmesh"]["counters"];
        if counters["dropped"] == 1 {
            assert_eq!(counters["retried"], 0, "{counters}");
            break;
        }
        assert!(Instant::now() < deadline, "never dropped: {sub}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failing.count(), 1, "one attempt, no retry");
}
