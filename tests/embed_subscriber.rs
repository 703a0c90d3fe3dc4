//! In-process subscribers, used as an outside crate uses evmesh (only `evmesh::prelude`):
//! a trigger addresses `ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name}` and the
//! delivery engine hands each event to `running.subscribe(name)` with ack / nack / reply,
//! keeping retries, backoff, dead letters, replies and ordering.

mod common;

use std::time::Duration;

use common::eventually;
use evmesh::prelude::*;

const WAIT: Duration = Duration::from_secs(10);

/// A broker `default` and the given YAML, started on 127.0.0.1:0 in a fresh data dir.
async fn start(yaml: &str) -> (RunningMesh, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default}}\n---\n{yaml}"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let running = Mesh::from_yaml(&yaml)
        .unwrap_or_else(|e| panic!("test YAML invalid:\n{e}"))
        .data_dir(dir.path())
        .start(listener)
        .await
        .expect("mesh starts");
    (running, dir)
}

/// A trigger `name` on broker `default` to in-process subscriber `subscriber`.
fn trigger(name: &str, filter_type: &str, subscriber: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: {name}}}
spec:
  broker: default
  filter: {{attributes: {{type: {filter_type}}}}}
  subscriber:
    ref: {{apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: {subscriber}}}
{extra}"#
    )
}

fn order(id: &str) -> Event {
    EventBuilderV10::new()
        .id(id)
        .source("/shop")
        .ty("order.created")
        .data("application/json", br#"{"total":10.50}"#.to_vec())
        .build()
        .expect("event")
}

async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("no delivery to {} within {WAIT:?}", sub.name()))
        .expect("stream open")
}

fn counters(running: &RunningMesh, trigger: &str) -> CounterSnapshot {
    running
        .trigger("default", trigger)
        .expect("trigger exists")
        .counters
}

#[tokio::test]
async fn acked_delivery_is_delivered_with_the_data_bytes_as_published() {
    let (running, _dir) = start(&trigger("orders", "order.created", "orders", "")).await;
    let mut orders = running.subscribe("orders");
    running
        .publish("default", "default", order("o-1"))
        .await
        .expect("publish");
    let d = next(&mut orders).await;
    assert_eq!(d.event().id(), "o-1");
    // The data is the bytes published: 10.50 is not turned into 10.5.
    assert_eq!(d.data(), Some(&br#"{"total":10.50}"#[..]));
    let total: serde_json::Value = d.json().expect("json");
    assert_eq!(total["total"], serde_json::json!(10.5));
    d.ack();
    eventually("delivered counted", WAIT, || {
        counters(&running, "orders").delivered == 1
    })
    .await;
    assert!(
        running
            .trigger("default", "orders")
            .expect("trigger")
            .is_ready()
    );
    running.shutdown().await;
}

#[tokio::test]
async fn retryable_nack_is_retried_with_backoff_then_delivered() {
    let delivery = "  delivery: {retry: 3, backoffPolicy: linear, backoffDelay: PT0.05S}\n";
    let (running, _dir) = start(&trigger("orders", "order.created", "orders", delivery)).await;
    let mut orders = running.subscribe("orders");
    running
        .publish("default", "default", order("o-2"))
        .await
        .expect("publish");
    let first = next(&mut orders).await;
    assert_eq!(first.event().id(), "o-2");
    first.nack(Nack::retry("database busy"));
    let second = next(&mut orders).await;
    assert_eq!(second.event().id(), "o-2");
    second.ack();
    eventually("delivered after one retry", WAIT, || {
        let c = counters(&running, "orders");
        c.delivered == 1 && c.retried == 1
    })
    .await;
    running.shutdown().await;
}

#[tokio::test]
async fn rejecting_nack_dead_letters_at_once_with_the_error_extensions() {
    let delivery = r#"  delivery:
    retry: 5
    backoffDelay: PT0.05S
    deadLetterSink:
      ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: dlq}
"#;
    let (running, _dir) = start(&trigger("orders", "order.created", "orders", delivery)).await;
    let mut orders = running.subscribe("orders");
    let mut dlq = running.subscribe("dlq");
    running
        .publish("default", "default", order("o-3"))
        .await
        .expect("publish");
    next(&mut orders)
        .await
        .nack(Nack::reject("order has no items").with_status(422));
    let dead = next(&mut dlq).await;
    assert_eq!(dead.event().id(), "o-3");
    assert!(
        !dead.wants_reply(),
        "a dead-letter sink's reply is not routed"
    );
    let ext = |name: &str| dead.event().extension(name).map(|v| v.to_string());
    assert_eq!(ext("knativeerrorcode").as_deref(), Some("422"));
    let data = ext("knativeerrordata").expect("knativeerrordata");
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64");
    assert_eq!(decoded, b"order has no items");
    assert!(
        ext("knativeerrordest")
            .expect("knativeerrordest")
            .ends_with("/_evmesh/subscribers/default/orders")
    );
    dead.ack();
    eventually("dead-lettered counted", WAIT, || {
        counters(&running, "orders").dead_lettered == 1
    })
    .await;
    // A rejection is not retried, and the hop to the dead-letter sink is not a retry.
    assert_eq!(counters(&running, "orders").retried, 0);
    running.shutdown().await;
}

#[tokio::test]
async fn delivery_dropped_unanswered_is_a_retryable_failure() {
    let delivery = "  delivery: {retry: 2, backoffDelay: PT0.05S}\n";
    let (running, _dir) = start(&trigger("orders", "order.created", "orders", delivery)).await;
    let mut orders = running.subscribe("orders");
    running
        .publish("default", "default", order("o-4"))
        .await
        .expect("publish");
    drop(next(&mut orders).await);
    next(&mut orders).await.ack();
    eventually("delivered on the retry", WAIT, || {
        let c = counters(&running, "orders");
        c.delivered == 1 && c.retried == 1
    })
    .await;
    running.shutdown().await;
}

#[tokio::test]
async fn reply_goes_back_into_the_broker() {
    let yaml = format!(
        "{}---\n{}",
        trigger("orders", "order.created", "orders", ""),
        trigger("confirmations", "order.confirmed", "confirmations", "")
    );
    let (running, _dir) = start(&yaml).await;
    let mut orders = running.subscribe("orders");
    let mut confirmations = running.subscribe("confirmations");
    running
        .publish("default", "default", order("o-5"))
        .await
        .expect("publish");
    let d = next(&mut orders).await;
    assert!(d.wants_reply());
    let reply = EventBuilderV10::new()
        .id("c-5")
        .source("/billing")
        .ty("order.confirmed")
        .build()
        .expect("reply");
    d.reply(reply);
    let c = next(&mut confirmations).await;
    assert_eq!(c.event().id(), "c-5");
    // The reply came through the broker, which stamps its arrival.
    assert!(c.event().extension("knativearrivaltime").is_some());
    c.ack();
    eventually("both delivered", WAIT, || {
        counters(&running, "orders").delivered == 1
            && counters(&running, "confirmations").delivered == 1
    })
    .await;
    running.shutdown().await;
}

#[tokio::test]
async fn ordered_trigger_hands_one_event_per_key_at_a_time_in_log_order() {
    let yaml = r#"apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: orders
  annotations: {kafka.eventing.knative.dev/delivery.order: ordered}
spec:
  broker: default
  delivery: {retry: 5, backoffDelay: PT0.02S}
  subscriber:
    ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: orders}
"#;
    let (running, _dir) = start(yaml).await;
    let mut orders = running.subscribe("orders");
    for i in 0..20 {
        let key = if i % 2 == 0 { "a" } else { "b" };
        let e = EventBuilderV10::new()
            .id(format!("{key}-{i}"))
            .source("/shop")
            .ty("order.created")
            .extension("partitionkey", key)
            .build()
            .expect("event");
        running
            .publish("default", "default", e)
            .await
            .expect("publish");
    }
    // Hold each delivery until the next one arrives (or none does): a second delivery of the
    // same key while one is held would break ordering. Every third attempt is nacked.
    let mut acked: Vec<String> = Vec::new();
    let mut held: Vec<Delivery> = Vec::new();
    let mut n = 0;
    while acked.len() < 20 {
        let d = match tokio::time::timeout(Duration::from_millis(200), orders.next()).await {
            Ok(Some(d)) => d,
            Ok(None) => panic!("stream ended"),
            Err(_) => {
                // Nothing more comes while these are held: answer them.
                for d in held.drain(..) {
                    n += 1;
                    if n % 3 == 0 {
                        d.nack(Nack::retry("try again"));
                    } else {
                        acked.push(d.event().id().to_string());
                        d.ack();
                    }
                }
                continue;
            }
        };
        let key = d.event().extension("partitionkey").map(|v| v.to_string());
        assert!(
            held.iter()
                .all(|h| h.event().extension("partitionkey").map(|v| v.to_string()) != key),
            "two deliveries of key {key:?} in flight at once"
        );
        held.push(d);
    }
    for key in ["a", "b"] {
        let seq: Vec<u32> = acked
            .iter()
            .filter(|id| id.starts_with(key))
            .map(|id| id[2..].parse().expect("seq"))
            .collect();
        let mut sorted = seq.clone();
        sorted.sort_unstable();
        assert_eq!(seq, sorted, "key {key} delivered out of order");
        assert_eq!(seq.len(), 10);
    }
    running.shutdown().await;
}

#[tokio::test]
async fn without_a_listener_deliveries_wait_instead_of_using_up_retries() {
    let delivery = "  delivery: {retry: 1, backoffDelay: PT0.01S}\n";
    let (running, _dir) = start(&trigger("orders", "order.created", "orders", delivery)).await;
    running
        .publish("default", "default", order("o-6"))
        .await
        .expect("publish");
    eventually("trigger not ready while nobody listens", WAIT, || {
        running
            .trigger("default", "orders")
            .and_then(|t| t.not_ready)
            .is_some_and(|(code, _)| code == "SubscriberNotReady")
    })
    .await;
    // A subscription that comes and goes hands nothing back as a failure.
    drop(running.subscribe("orders"));
    let c = counters(&running, "orders");
    assert_eq!((c.retried, c.dropped, c.delivered), (0, 0, 0));
    let mut orders = running.subscribe("orders");
    let d = next(&mut orders).await;
    assert_eq!(d.event().id(), "o-6");
    d.ack();
    eventually("delivered once a subscriber listens", WAIT, || {
        counters(&running, "orders").delivered == 1
    })
    .await;
    let c = counters(&running, "orders");
    assert_eq!((c.retried, c.dropped), (0, 0));
    assert!(
        running
            .trigger("default", "orders")
            .expect("trigger")
            .is_ready()
    );
    running.shutdown().await;
}

#[tokio::test]
async fn waiting_deliveries_survive_shutdown_and_come_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default}}\n---\n{}",
        trigger(
            "orders",
            "order.created",
            "orders",
            "  delivery: {retry: 0}\n"
        )
    );
    let launch = || async {
        Mesh::from_yaml(&yaml)
            .expect("yaml")
            .data_dir(dir.path())
            .launch("http://127.0.0.1:1".parse().expect("url"))
            .await
            .expect("starts")
    };
    let first = launch().await;
    first
        .publish("default", "default", order("o-7"))
        .await
        .expect("publish");
    eventually("waiting for a subscriber", WAIT, || {
        first
            .trigger("default", "orders")
            .is_some_and(|t| !t.is_ready())
    })
    .await;
    // Shutdown does not wait out the drain timeout for a subscriber that is not there.
    tokio::time::timeout(Duration::from_secs(5), first.shutdown())
        .await
        .expect("shutdown does not hang on a waiting delivery");
    let second = launch().await;
    let mut orders = second.subscribe("orders");
    let d = next(&mut orders).await;
    assert_eq!(d.event().id(), "o-7");
    d.ack();
    eventually("delivered after restart", WAIT, || {
        counters(&second, "orders").delivered == 1
    })
    .await;
    assert_eq!(counters(&second, "orders").dropped, 0);
    second.shutdown().await;
    drop(first);
}

#[tokio::test]
async fn closure_handler_acks_replies_and_nacks() {
    let yaml = format!(
        "{}---\n{}",
        trigger(
            "orders",
            "order.created",
            "orders",
            "  delivery: {retry: 0, deadLetterSink: {ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: dlq}}}\n"
        ),
        trigger("confirmations", "order.confirmed", "confirmations", "")
    );
    let (running, _dir) = start(&yaml).await;
    let mut confirmations = running.subscribe("confirmations");
    let mut dlq = running.subscribe("dlq");
    let _task = running.handle("orders", |event| async move {
        match event.id() {
            "bad" => Err(Nack::reject("bad order")),
            id => Ok(Some(
                EventBuilderV10::new()
                    .id(format!("confirm-{id}"))
                    .source("/billing")
                    .ty("order.confirmed")
                    .build()
                    .map_err(|e| Nack::reject(e.to_string()))?,
            )),
        }
    });
    running
        .publish("default", "default", order("good"))
        .await
        .expect("publish");
    running
        .publish("default", "default", order("bad"))
        .await
        .expect("publish");
    let c = next(&mut confirmations).await;
    assert_eq!(c.event().id(), "confirm-good");
    c.ack();
    let d = next(&mut dlq).await;
    assert_eq!(d.event().id(), "bad");
    d.ack();
    running.shutdown().await;
}

#[tokio::test]
async fn subscriptions_to_one_name_share_its_deliveries() {
    let (running, _dir) = start(&trigger("orders", "order.created", "orders", "")).await;
    let mut a = running.subscribe("orders");
    let mut b = running.subscribe("orders");
    for i in 0..10 {
        running
            .publish("default", "default", order(&format!("q-{i}")))
            .await
            .expect("publish");
    }
    let mut ids = std::collections::BTreeSet::new();
    let (mut from_a, mut from_b) = (0, 0);
    while ids.len() < 10 {
        let d = tokio::select! {
            Some(d) = a.next() => { from_a += 1; d }
            Some(d) = b.next() => { from_b += 1; d }
            _ = tokio::time::sleep(WAIT) => panic!("only {} of 10 delivered", ids.len()),
        };
        assert!(ids.insert(d.event().id().to_string()), "delivered twice");
        d.ack();
    }
    assert!(from_a > 0 && from_b > 0, "a got {from_a}, b got {from_b}");
    eventually("all counted", WAIT, || {
        counters(&running, "orders").delivered == 10
    })
    .await;
    running.shutdown().await;
}

#[tokio::test]
async fn a_yaml_subscription_delivers_to_an_in_process_subscriber() {
    let yaml = r#"apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {name: jobs}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: workers}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: jobs}
  subscriber:
    ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: workers}
"#;
    let (running, _dir) = start(yaml).await;
    let mut workers = running.subscribe("workers");
    let status = common::post_binary(
        &format!("{}channels/default/jobs", running.url()),
        order("job-1"),
    )
    .await;
    assert_eq!(status, 202);
    let d = next(&mut workers).await;
    assert_eq!(d.event().id(), "job-1");
    d.ack();
    running.shutdown().await;
}
