//! Replay on the Kafka broker class against a real Kafka-protocol broker (Tansu,
//! `EVMESH_TEST_KAFKA`, default 127.0.0.1:9092): a trigger's consumer group is repositioned
//! (`earliest`, or a time through `offsets_for_times`) and re-delivers through that trigger's
//! filter, to it only; a replay asked of one process reaches partitions another process owned
//! once they move to it.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloudevents::{EventBuilder, EventBuilderV10};
use common::*;
use evmesh::evmesh_config::ReplayFrom;
use evmesh_kafka::channel::broker_topic_name;
use evmesh_kafka::{KafkaSettings, end_offsets, ensure_topic};

/// How long a test waits for what Kafka consumer groups do (a Tansu group join takes about half
/// the session timeout).
const WAIT: Duration = Duration::from_secs(90);

fn bootstrap() -> String {
    std::env::var("EVMESH_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

async fn kafka_mesh(yaml: &str) -> TestMesh {
    mesh_with(yaml, |o| evmesh::Options {
        kafka_bootstrap_servers: Some(bootstrap()),
        ..o
    })
    .await
}

fn unique_broker() -> String {
    format!("kr-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A Kafka-class broker with two triggers: `<broker>-t1` takes type `keep` only (with
/// `t1_annotations`), `<broker>-t2` everything.
fn two_triggers(broker: &str, a: &TestSink, b: &TestSink, t1_annotations: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: {broker}
  namespace: demo
  annotations: {{eventing.knative.dev/broker.class: Kafka}}
spec:
  delivery: {{retry: 0}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: {broker}-t1
  namespace: demo
  annotations: {{{t1_annotations}}}
spec:
  broker: {broker}
  filter: {{attributes: {{type: keep}}}}
  subscriber: {{uri: "{}"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: {broker}-t2, namespace: demo}}
spec:
  broker: {broker}
  subscriber: {{uri: "{}"}}
"#,
        a.url(),
        b.url()
    )
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

async fn idle(m: &TestMesh) {
    tokio::time::timeout(WAIT, m.mesh.wait_idle())
        .await
        .expect("the mesh becomes idle")
        .expect("the mesh runs");
}

#[tokio::test]
async fn replay_from_earliest_on_a_kafka_class_broker_redelivers_through_the_filter_to_that_trigger_only()
 {
    let broker = unique_broker();
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let m = kafka_mesh(&two_triggers(&broker, &a, &b, "")).await;
    // Both groups have joined (their start is fixed) before anything is sent.
    idle(&m).await;
    let url = m.url(&format!("/demo/{broker}"));
    for (id, ty) in [("1", "keep"), ("2", "other"), ("3", "keep")] {
        post_ok(&url, event(id, ty)).await;
    }
    idle(&m).await;
    assert_eq!(sorted(a.ids()), sorted_of(&["1", "3"]));

    m.mesh
        .service()
        .replay("demo", &format!("{broker}-t1"), ReplayFrom::Earliest)
        .await
        .expect("replay");
    idle(&m).await;
    assert_eq!(
        sorted(a.ids()),
        sorted_of(&["1", "1", "3", "3"]),
        "t1 re-delivers through its filter"
    );
    assert_eq!(
        sorted(b.ids()),
        sorted_of(&["1", "2", "3"]),
        "t2 did not re-deliver"
    );
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn replay_by_time_on_a_kafka_class_broker_redelivers_only_what_was_appended_since() {
    let broker = unique_broker();
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let m = kafka_mesh(&two_triggers(&broker, &a, &b, "")).await;
    idle(&m).await;
    let url = m.url(&format!("/demo/{broker}"));
    for id in ["old1", "old2"] {
        post_ok(&url, event(id, "keep")).await;
    }
    // Record timestamps are milliseconds: the replay time is after the old ones'.
    let t = now_ms() + 1;
    while now_ms() <= t {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for id in ["new1", "new2"] {
        post_ok(&url, event(id, "keep")).await;
    }
    idle(&m).await;
    assert_eq!(a.count(), 4);

    m.mesh
        .service()
        .replay("demo", &format!("{broker}-t1"), ReplayFrom::TimeMs(t))
        .await
        .expect("replay");
    idle(&m).await;
    assert_eq!(
        sorted(a.ids()),
        sorted_of(&["old1", "old2", "new1", "new1", "new2", "new2"]),
        "only what was appended at or after the time is re-delivered"
    );
    assert_eq!(b.count(), 4, "t2 did not re-deliver");
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn replay_from_a_time_after_the_last_event_redelivers_nothing_and_goes_on() {
    let broker = unique_broker();
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let m = kafka_mesh(&two_triggers(&broker, &a, &b, "")).await;
    idle(&m).await;
    let url = m.url(&format!("/demo/{broker}"));
    post_ok(&url, event("before", "keep")).await;
    idle(&m).await;
    m.mesh
        .service()
        .replay(
            "demo",
            &format!("{broker}-t1"),
            ReplayFrom::TimeMs(now_ms() + 60_000),
        )
        .await
        .expect("replay");
    post_ok(&url, event("after", "keep")).await;
    idle(&m).await;
    assert_eq!(sorted(a.ids()), sorted_of(&["after", "before"]));
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn replay_from_annotation_on_a_kafka_class_trigger_applies_once_per_value() {
    let broker = unique_broker();
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let plain = two_triggers(&broker, &a, &b, "");
    let m = kafka_mesh(&plain).await;
    idle(&m).await;
    let url = m.url(&format!("/demo/{broker}"));
    for id in ["1", "2"] {
        post_ok(&url, event(id, "keep")).await;
    }
    idle(&m).await;
    m.mesh.shutdown().await;

    // Restarted with the annotation: applied once (the replay marker says so)...
    let annotated = two_triggers(&broker, &a, &b, r#""evmesh.dev/replay-from": earliest"#);
    let m = kafka_mesh(&annotated).await;
    idle(&m).await;
    assert_eq!(sorted(a.ids()), sorted_of(&["1", "1", "2", "2"]));
    m.mesh.shutdown().await;
    // ...and not again by the next process that starts with the same value.
    let m = kafka_mesh(&annotated).await;
    post_ok(&m.url(&format!("/demo/{broker}")), event("3", "keep")).await;
    idle(&m).await;
    assert_eq!(sorted(a.ids()), sorted_of(&["1", "1", "2", "2", "3"]));
    assert_eq!(b.count(), 3, "t2 did not re-deliver");
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn a_replay_asked_of_one_process_reaches_the_partitions_of_another_once_they_move() {
    let broker = unique_broker();
    // Two partitions, so that each of the two processes owns one.
    let settings = KafkaSettings::new([bootstrap()]);
    let topic = broker_topic_name("demo", &broker);
    ensure_topic(&settings, &topic, 2, 1, &[])
        .await
        .expect("topic created");
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let yaml = two_triggers(&broker, &a, &b, "");
    let first = kafka_mesh(&yaml).await;
    idle(&first).await;
    let second = kafka_mesh(&yaml).await;
    // The second process has joined, and the group has rebalanced across both.
    idle(&second).await;
    idle(&first).await;
    let url = first.url(&format!("/demo/{broker}"));
    let ids: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
    for id in &ids {
        let e = EventBuilderV10::from(event(id, "keep"))
            .extension("partitionkey", format!("key-{id}"))
            .build()
            .expect("event");
        post_ok(&url, e).await;
    }
    let ends = end_offsets(&settings, &topic).await.expect("end offsets");
    assert!(
        ends.iter().all(|&n| n > 0),
        "both partitions hold events: {ends:?}"
    );
    eventually("every event delivered once", WAIT, || {
        a.count() == ids.len()
    })
    .await;

    first
        .mesh
        .service()
        .replay("demo", &format!("{broker}-t1"), ReplayFrom::Earliest)
        .await
        .expect("replay");
    idle(&first).await;
    let replayed = a.count() - ids.len();
    assert!(
        replayed > 0 && replayed < ids.len(),
        "the first process re-delivered its own partition only: {replayed}"
    );
    // The second process leaves: its partition moves to the first, which applies the replay.
    second.mesh.shutdown().await;
    eventually("every event re-delivered", WAIT, || {
        a.count() == 2 * ids.len()
    })
    .await;
    idle(&first).await;
    let counts = id_counts(&a);
    assert!(
        ids.iter().all(|id| counts.get(id) == Some(&2)),
        "each event delivered once, then once by the replay: {counts:?}"
    );
    first.mesh.shutdown().await;
}

/// A KafkaChannel `ch` and its subscription `<ch>-sub` to `sink`, with `annotations`.
fn channel_and_subscription(ch: &str, sink: &TestSink, annotations: &str) -> String {
    format!(
        r#"
apiVersion: messaging.knative.dev/v1beta1
kind: KafkaChannel
metadata: {{name: {ch}}}
spec: {{numPartitions: 2}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata:
  name: {ch}-sub
  annotations: {{{annotations}}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, name: {ch}}}
  subscriber: {{uri: "{}"}}
"#,
        sink.url()
    )
}

#[tokio::test]
async fn replay_from_annotation_on_a_kafka_channel_subscription_redelivers_every_partition() {
    let ch = format!("kc-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let sink = TestSink::start().await;
    let m = kafka_mesh(&channel_and_subscription(&ch, &sink, "")).await;
    idle(&m).await;
    let url = m.url(&format!("/channels/default/{ch}"));
    let ids: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    for id in &ids {
        let e = EventBuilderV10::from(event(id, "t"))
            .extension("partitionkey", format!("key-{id}"))
            .build()
            .expect("event");
        post_ok(&url, e).await;
    }
    idle(&m).await;
    assert_eq!(sink.count(), ids.len());
    m.mesh.shutdown().await;

    let annotated = channel_and_subscription(&ch, &sink, r#""evmesh.dev/replay-from": earliest"#);
    let m = kafka_mesh(&annotated).await;
    idle(&m).await;
    let counts = id_counts(&sink);
    assert!(
        ids.iter().all(|id| counts.get(id) == Some(&2)),
        "every event of both partitions re-delivered once: {counts:?}"
    );
    m.mesh.shutdown().await;
}

/// A KafkaSource `name` reading `topic` from the earliest offset, in order, to `sink`.
fn kafka_source(name: &str, topic: &str, sink: &TestSink, annotations: &str) -> String {
    format!(
        r#"
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata:
  name: {name}
  annotations: {{evmesh.dev/kafka-session-timeout: PT6S{annotations}}}
spec:
  bootstrapServers: ["{}"]
  topics: ["{topic}"]
  consumerGroup: {name}
  initialOffset: earliest
  ordering: ordered
  sink: {{uri: "{}"}}
"#,
        bootstrap(),
        sink.url()
    )
}

async fn produce(producer: &evmesh_kafka::KafkaProducer, topic: &str, id: &str) {
    let headers: [(&str, &[u8]); 4] = [
        ("ce_specversion", b"1.0"),
        ("ce_id", id.as_bytes()),
        ("ce_source", b"/test"),
        ("ce_type", b"t"),
    ];
    producer
        .send_raw(topic, None, &headers, b"")
        .await
        .expect("produced");
}

#[tokio::test]
async fn replay_from_annotation_on_a_kafka_source_redelivers_its_topic_once_per_value() {
    let name = format!("ks-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let topic = format!("{name}-in");
    let settings = KafkaSettings::new([bootstrap()]);
    ensure_topic(&settings, &topic, 1, 1, &[])
        .await
        .expect("topic created");
    let producer = evmesh_kafka::KafkaProducer::new(&settings).expect("producer");
    for id in ["1", "2", "3"] {
        produce(&producer, &topic, id).await;
    }
    let sink = TestSink::start().await;
    let m = kafka_mesh(&kafka_source(&name, &topic, &sink, "")).await;
    eventually("read from earliest", WAIT, || sink.count() == 3).await;
    m.mesh.shutdown().await;

    let annotated = kafka_source(
        &name,
        &topic,
        &sink,
        r#", "evmesh.dev/replay-from": earliest"#,
    );
    let m = kafka_mesh(&annotated).await;
    eventually("replayed", WAIT, || sink.count() == 6).await;
    m.mesh.shutdown().await;
    // The same value again: not applied again. The source delivers in order, so a replay would
    // have re-delivered 1..3 before 4.
    let m = kafka_mesh(&annotated).await;
    produce(&producer, &topic, "4").await;
    eventually("the new record", WAIT, || {
        sink.ids().iter().any(|i| i == "4")
    })
    .await;
    m.mesh.shutdown().await;
    assert_eq!(
        sorted(sink.ids()),
        sorted_of(&["1", "1", "2", "2", "3", "3", "4"])
    );
}
