//! `RunningMesh::wait_idle`, used as an outside crate uses evmesh (only `evmesh::prelude`): it
//! resolves once every accepted event has been delivered, replied to or dead-lettered by every
//! route, including the events those deliveries produced, so a program (or a test) waits for
//! the mesh instead of polling counters.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
{extra}---
"#
    )
}

fn event(id: &str, ty: &str) -> Event {
    EventBuilderV10::new()
        .id(id)
        .source("/shop")
        .ty(ty)
        .build()
        .expect("event")
}

fn counters(running: &RunningMesh, trigger: &str) -> CounterSnapshot {
    running
        .trigger("default", trigger)
        .expect("trigger exists")
        .counters
}

/// Runs a handler on in-process subscriber `name` that counts what it gets, after a short
/// pause (so a `wait_idle` that resolved early would see counts short), and answers with
/// `answer`.
fn counting(
    running: &RunningMesh,
    name: &str,
    answer: fn(&Event) -> Result<Option<Event>, Nack>,
) -> Arc<AtomicU64> {
    let seen = Arc::new(AtomicU64::new(0));
    let count = seen.clone();
    running.handle(name, move |e| {
        let count = count.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            count.fetch_add(1, Ordering::SeqCst);
            answer(&e)
        }
    });
    seen
}

#[tokio::test]
async fn wait_idle_resolves_once_every_event_and_its_replies_and_dead_letters_are_delivered() {
    let dead_letter = r#"  delivery:
    deadLetterSink:
      ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: dlq}
"#;
    let yaml = [
        trigger("orders", "order.created", "orders", ""),
        trigger("confirmations", "order.confirmed", "confirmations", ""),
        trigger("audit", "order.created", "audit", dead_letter),
    ]
    .concat();
    let (running, _dir) = start(&yaml).await;
    let orders = counting(&running, "orders", |e| {
        Ok(Some(event(&format!("c-{}", e.id()), "order.confirmed")))
    });
    let confirmations = counting(&running, "confirmations", |_| Ok(None));
    let audit = counting(&running, "audit", |_| Err(Nack::reject("audit is closed")));
    let dlq = counting(&running, "dlq", |_| Ok(None));
    const N: u64 = 20;
    for i in 0..N {
        running
            .publish(
                "default",
                "default",
                event(&format!("o-{i}"), "order.created"),
            )
            .await
            .expect("publish");
    }

    tokio::time::timeout(WAIT, running.wait_idle())
        .await
        .expect("idle in time")
        .expect("not shut down");

    assert_eq!(orders.load(Ordering::SeqCst), N, "orders handled");
    assert_eq!(audit.load(Ordering::SeqCst), N, "audit attempts");
    assert_eq!(dlq.load(Ordering::SeqCst), N, "dead letters handled");
    assert_eq!(
        confirmations.load(Ordering::SeqCst),
        N,
        "replies delivered to their own trigger"
    );
    assert_eq!(counters(&running, "audit").dead_lettered, N);
    assert!(running.is_idle());
    running.shutdown().await;
}

#[tokio::test]
async fn wait_idle_waits_for_a_retry_that_is_due_later() {
    let delivery = "  delivery: {retry: 3, backoffDelay: PT0.3S}\n";
    let (running, _dir) = start(&trigger("orders", "order.created", "orders", delivery)).await;
    let attempts = Arc::new(AtomicU64::new(0));
    let seen = attempts.clone();
    running.handle("orders", move |_| {
        let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                Err(Nack::retry("not yet"))
            } else {
                Ok(None)
            }
        }
    });
    running
        .publish("default", "default", event("o-1", "order.created"))
        .await
        .expect("publish");

    tokio::time::timeout(WAIT, running.wait_idle())
        .await
        .expect("idle in time")
        .expect("not shut down");

    let c = counters(&running, "orders");
    assert_eq!((c.delivered, c.retried), (1, 1));
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    running.shutdown().await;
}

#[tokio::test]
async fn a_delivery_waiting_for_its_in_process_subscriber_keeps_the_mesh_busy() {
    let (running, _dir) = start(&trigger("orders", "order.created", "orders", "")).await;
    running
        .publish("default", "default", event("o-1", "order.created"))
        .await
        .expect("publish");
    eventually("trigger not ready while nobody listens", WAIT, || {
        running
            .trigger("default", "orders")
            .and_then(|t| t.not_ready)
            .is_some_and(|(code, _)| code == "SubscriberNotReady")
    })
    .await;
    assert!(!running.is_idle(), "a waiting delivery is not done");

    let mut orders = running.subscribe("orders");
    let delivery = tokio::time::timeout(WAIT, orders.next())
        .await
        .expect("delivered in time")
        .expect("stream open");
    delivery.ack();
    tokio::time::timeout(WAIT, running.wait_idle())
        .await
        .expect("idle in time")
        .expect("not shut down");
    assert_eq!(counters(&running, "orders").delivered, 1);
    running.shutdown().await;
}

#[tokio::test]
async fn wait_idle_ends_with_shutting_down_when_the_mesh_shuts_down_first() {
    let (running, _dir) = start(&trigger("orders", "order.created", "orders", "")).await;
    running
        .publish("default", "default", event("o-1", "order.created"))
        .await
        .expect("publish");
    let waiting = tokio::spawn({
        let running = running.clone();
        async move { running.wait_idle().await }
    });
    running.shutdown().await;
    let result = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("wait_idle ended")
        .expect("task");
    assert!(matches!(result, Err(Error::ShuttingDown)), "{result:?}");
}

/// Starts `yaml` (no broker added) with the given options, on 127.0.0.1:0 in a fresh data dir.
async fn start_with(yaml: &str, options: Options) -> (RunningMesh, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let running = Mesh::from_yaml(yaml)
        .unwrap_or_else(|e| panic!("test YAML invalid:\n{e}"))
        .options(Options {
            data_dir: dir.path().to_path_buf(),
            ..options
        })
        .start(listener)
        .await
        .expect("mesh starts");
    (running, dir)
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Kafka (Tansu) from `EVMESH_TEST_KAFKA` (`source .ci/services/kafka.sh`).
#[tokio::test]
async fn wait_idle_resolves_on_a_kafka_class_broker_once_events_and_replies_are_delivered() {
    let broker = unique("idle");
    // Trigger names of their own: a trigger's consumer group is named after it (Knative's
    // `knative-trigger-<namespace>-<name>`), and a group an earlier run left on the same
    // Kafka may still hold a member that is gone.
    let (orders_t, confirmations_t) = (unique("orders"), unique("confirmations"));
    let yaml = format!(
        r#"apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: {broker}
  annotations: {{eventing.knative.dev/broker.class: Kafka}}
---
{}{}"#,
        trigger(&orders_t, "order.created", "orders", "")
            .replace("broker: default", &format!("broker: {broker}")),
        trigger(&confirmations_t, "order.confirmed", "confirmations", "")
            .replace("broker: default", &format!("broker: {broker}")),
    );
    let bootstrap = std::env::var("EVMESH_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let (running, _dir) = start_with(
        &yaml,
        Options {
            kafka_bootstrap_servers: Some(bootstrap),
            ..Options::default()
        },
    )
    .await;
    let orders = counting(&running, "orders", |e| {
        Ok(Some(event(&format!("c-{}", e.id()), "order.confirmed")))
    });
    let confirmations = counting(&running, "confirmations", |_| Ok(None));
    // The broker's topic is created and both triggers' groups joined before the load, as a
    // user would wait for Ready (on a loaded machine Kafka may take longer than start-up waits).
    let ready = |name: &str| {
        running
            .trigger("default", name)
            .is_some_and(|t| t.is_ready())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(ready(&orders_t) && ready(&confirmations_t)) {
        assert!(
            std::time::Instant::now() < deadline,
            "triggers not ready: {:?} {:?}",
            running.trigger("default", &orders_t),
            running.trigger("default", &confirmations_t)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    const N: u64 = 20;
    for i in 0..N {
        running
            .publish(
                "default",
                &broker,
                event(&format!("o-{i}"), "order.created"),
            )
            .await
            .expect("publish");
    }

    // A Kafka group join takes seconds.
    tokio::time::timeout(Duration::from_secs(90), running.wait_idle())
        .await
        .expect("idle in time")
        .expect("not shut down");

    assert_eq!(orders.load(Ordering::SeqCst), N, "orders handled");
    assert_eq!(
        confirmations.load(Ordering::SeqCst),
        N,
        "replies delivered to their own trigger"
    );
    running.shutdown().await;
}

/// NATS JetStream from `EVMESH_NATS_URL` (`source .ci/services/nats.sh`).
#[tokio::test]
async fn wait_idle_resolves_on_a_nats_jetstream_channel_once_its_subscription_delivered() {
    let channel = unique("idle");
    let yaml = format!(
        r#"apiVersion: messaging.knative.dev/v1alpha1
kind: NatsJetStreamChannel
metadata: {{name: {channel}}}
spec:
  stream:
    config: {{storage: Memory}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {{name: {channel}-sub}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1alpha1, kind: NatsJetStreamChannel, name: {channel}}}
  subscriber:
    ref: {{apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: orders}}
"#
    );
    let nats = std::env::var("EVMESH_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let (running, _dir) = start_with(
        &yaml,
        Options {
            nats_url: nats.clone(),
            ..Options::default()
        },
    )
    .await;
    let orders = counting(&running, "orders", |_| Ok(None));
    let url = format!("{}channels/default/{channel}", running.url().as_str());
    const N: u64 = 20;
    for i in 0..N {
        let status = common::post_binary(&url, event(&format!("o-{i}"), "order.created")).await;
        assert_eq!(status, 202);
    }

    tokio::time::timeout(WAIT, running.wait_idle())
        .await
        .expect("idle in time")
        .expect("not shut down");

    assert_eq!(orders.load(Ordering::SeqCst), N, "every event handled");
    running.shutdown().await;
    if let Ok(client) = async_nats::connect(nats.as_str()).await {
        let stream = evmesh_channels::nats::stream_name("default", &channel);
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&stream)
            .await;
    }
}
