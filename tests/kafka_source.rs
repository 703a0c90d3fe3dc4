//! KafkaSource against a real Kafka-protocol broker (Tansu, started by
//! `.ci/services/kafka.sh`; `EVMESH_TEST_KAFKA` says where, default 127.0.0.1:9092): records
//! reach a real HTTP sink through the shared delivery engine, CloudEvent records as they are and
//! other records wrapped as Knative wraps them; offsets are committed only after the sink
//! accepted. Every test uses its own topics (deleted at the end) and consumer groups.

mod common;

use std::time::Duration;

use common::*;
use evmesh::evmesh_broker::record::EventRecord;
use evmesh_kafka::{KafkaProducer, KafkaSettings, ensure_topic};
use serde_json::{Map, Value, json};

fn bootstrap() -> String {
    std::env::var("EVMESH_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn settings() -> KafkaSettings {
    KafkaSettings::new([bootstrap()])
}

/// Unique topics, created with `partitions` each, deleted on drop.
struct Topics {
    names: Vec<String>,
}

impl Topics {
    async fn new(n: usize, partitions: i32) -> Topics {
        let mut names = Vec::new();
        for i in 0..n {
            let name = format!("evmesh-test-{}-{i}", uuid::Uuid::new_v4().simple());
            ensure_topic(&settings(), &name, partitions, 1, &[])
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "creating topic {name} on {} failed ({e}); start Kafka with `source .ci/services/kafka.sh`",
                        bootstrap()
                    )
                });
            names.push(name);
        }
        Topics { names }
    }
    fn get(&self, i: usize) -> &str {
        &self.names[i]
    }
}

// Topics are not deleted after a test: deleting a topic while a consumer of it is still closing
// made librdkafka 2.12 crash (SIGSEGV in rd_kafka_metadata_update_op: Tansu answers the metadata
// request for the deleted topic with a null name; cf. librdkafka #5280). Names are unique per test,
// and CI's Tansu keeps topics in memory only.

/// A KafkaSource manifest; `extra` lines go under `spec` (2 spaces).
fn kafka_source(name: &str, topics: &[&str], sink: &TestSink, extra: &str) -> String {
    let topics: Vec<String> = topics.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        r#"
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata:
  name: {name}
  namespace: demo
  annotations: {{evmesh.dev/kafka-session-timeout: PT6S}}
spec:
  bootstrapServers: ["{}"]
  topics: [{}]
  consumerGroup: {name}-{}
  sink: {{uri: "{}"}}
{extra}
"#,
        bootstrap(),
        topics.join(", "),
        uuid::Uuid::new_v4().simple(),
        sink.url()
    )
}

async fn source_status(m: &TestMesh, name: &str) -> Value {
    get_json(&m.url(&format!(
        "/apis/sources.knative.dev/v1beta1/namespaces/demo/kafkasources/{name}"
    )))
    .await
    .1
}

/// Waits until the source has joined its group (its start position is then fixed).
async fn ready(m: &TestMesh, name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = source_status(m, name).await;
        if s["status"]["conditions"][0]["status"] == "True" {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("KafkaSource {name} not ready: {s:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ce(id: &str, key: Option<&str>) -> EventRecord {
    let mut a = Map::new();
    a.insert("specversion".into(), json!("1.0"));
    a.insert("id".into(), json!(id));
    a.insert("source".into(), json!("/orders"));
    a.insert("type".into(), json!("order.created"));
    a.insert("datacontenttype".into(), json!("application/json"));
    if let Some(k) = key {
        a.insert("partitionkey".into(), json!(k));
    }
    let data = bytes::Bytes::from(format!("{{\"id\": \"{id}\", \"amount\": 10.50}}"));
    EventRecord::new(
        a,
        Some((evmesh::evmesh_broker::record::DataKind::Json, data)),
        Vec::new(),
    )
    .expect("valid event")
}

async fn produce(
    p: &KafkaProducer,
    topic: &str,
    ids: impl IntoIterator<Item = String>,
    key: Option<&str>,
) {
    for id in ids {
        p.send(topic, &ce(&id, key)).await.expect("produce");
    }
}

fn producer() -> KafkaProducer {
    KafkaProducer::new(&settings()).expect("producer")
}

#[tokio::test]
async fn kafka_source_wraps_a_plain_record_as_dev_knative_kafka_event() {
    let topics = Topics::new(1, 1).await;
    let sink = TestSink::start().await;
    let m = mesh(&kafka_source(
        "plain",
        &[topics.get(0)],
        &sink,
        "  initialOffset: earliest\n  ceOverrides: {extensions: {team: blue}}",
    ))
    .await;
    producer()
        .send_raw(
            topics.get(0),
            Some(b"order-7"),
            &[("content-type", b"Text/Plain"), ("X-Trace_Id", b"abc")],
            b"hello kafka",
        )
        .await
        .expect("produce");
    eventually("the record delivered", Duration::from_secs(60), || {
        sink.count() >= 1
    })
    .await;
    let r = &sink.received()[0];
    let h = |n: &str| r.header(n);
    assert_eq!(h("ce-type").as_deref(), Some("dev.knative.kafka.event"));
    assert_eq!(
        h("ce-source"),
        Some(format!(
            "/apis/v1/namespaces/demo/kafkasources/plain#{}",
            topics.get(0)
        ))
    );
    assert_eq!(h("ce-subject").as_deref(), Some("partition:0#0"));
    assert_eq!(h("ce-id").as_deref(), Some("partition:0/offset:0"));
    assert_eq!(h("ce-key").as_deref(), Some("order-7"));
    assert_eq!(h("ce-partitionkey").as_deref(), Some("order-7"));
    assert_eq!(h("ce-kafkaheaderxtraceid").as_deref(), Some("abc"));
    assert_eq!(h("ce-team").as_deref(), Some("blue"));
    assert_eq!(h("content-type").as_deref(), Some("text/plain"));
    assert!(
        h("ce-time").is_some(),
        "the record timestamp is the event time"
    );
    assert_eq!(r.body, b"hello kafka");
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn kafka_source_forwards_binary_and_structured_cloudevent_records_as_they_are() {
    let topics = Topics::new(1, 1).await;
    let sink = TestSink::start().await;
    let m = mesh(&kafka_source(
        "ce",
        &[topics.get(0)],
        &sink,
        "  initialOffset: earliest",
    ))
    .await;
    let p = producer();
    p.send(topics.get(0), &ce("binary-1", None))
        .await
        .expect("produce");
    let structured = br#"{"specversion":"1.0","id":"structured-1","source":"/legacy","type":"legacy.event","data":{"n":1.50}}"#;
    p.send_raw(
        topics.get(0),
        None,
        &[("content-type", b"application/cloudevents+json")],
        structured,
    )
    .await
    .expect("produce");
    eventually("both delivered", Duration::from_secs(60), || {
        sink.count() >= 2
    })
    .await;
    let got = sink.received();
    let b = got
        .iter()
        .find(|r| r.header("ce-id").as_deref() == Some("binary-1"))
        .expect("binary event");
    assert_eq!(b.header("ce-type").as_deref(), Some("order.created"));
    assert_eq!(b.header("ce-source").as_deref(), Some("/orders"));
    assert_eq!(
        b.body, br#"{"id": "binary-1", "amount": 10.50}"#,
        "data bytes unchanged"
    );
    assert_eq!(b.header("ce-knativekafkapartition").as_deref(), Some("0"));
    assert_eq!(b.header("ce-knativekafkaoffset").as_deref(), Some("0"));
    let s = got
        .iter()
        .find(|r| r.header("ce-id").as_deref() == Some("structured-1"))
        .expect("structured event");
    assert_eq!(s.header("ce-type").as_deref(), Some("legacy.event"));
    assert_eq!(s.body, br#"{"n":1.50}"#);
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn kafka_source_reads_every_listed_topic() {
    let topics = Topics::new(2, 2).await;
    let sink = TestSink::start().await;
    let m = mesh(&kafka_source(
        "multi",
        &[topics.get(0), topics.get(1)],
        &sink,
        "  initialOffset: earliest",
    ))
    .await;
    let p = producer();
    produce(&p, topics.get(0), (0..3).map(|i| format!("a{i}")), None).await;
    produce(&p, topics.get(1), (0..3).map(|i| format!("b{i}")), None).await;
    eventually("six delivered", Duration::from_secs(60), || {
        sink.count() >= 6
    })
    .await;
    let mut ids = sink.ids();
    ids.sort();
    assert_eq!(ids, ["a0", "a1", "a2", "b0", "b1", "b2"]);
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn kafka_source_earliest_reads_older_records_and_latest_starts_at_the_join() {
    let topics = Topics::new(1, 1).await;
    let p = producer();
    produce(&p, topics.get(0), ["before".to_string()], None).await;
    let early = TestSink::start().await;
    let late = TestSink::start().await;
    let yaml = format!(
        "{}---{}",
        kafka_source(
            "early",
            &[topics.get(0)],
            &early,
            "  initialOffset: earliest"
        ),
        kafka_source("late", &[topics.get(0)], &late, "  initialOffset: latest"),
    );
    let m = mesh(&yaml).await;
    ready(&m, "early").await;
    ready(&m, "late").await;
    produce(&p, topics.get(0), ["after".to_string()], None).await;
    eventually("earliest got both", Duration::from_secs(60), || {
        early.count() >= 2
    })
    .await;
    eventually("latest got the new one", Duration::from_secs(60), || {
        late.count() >= 1
    })
    .await;
    assert_eq!(early.ids(), ["before", "after"]);
    assert_eq!(late.ids(), ["after"]);
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn kafka_source_restart_resumes_after_committed_records_without_loss_or_redelivery() {
    let topics = Topics::new(1, 2).await;
    let sink = TestSink::start().await;
    let yaml = kafka_source(
        "restart",
        &[topics.get(0)],
        &sink,
        "  initialOffset: earliest",
    );
    let p = producer();
    let m = mesh(&yaml).await;
    produce(
        &p,
        topics.get(0),
        (0..5).map(|i| format!("first-{i}")),
        None,
    )
    .await;
    eventually("first five delivered", Duration::from_secs(60), || {
        sink.count() >= 5
    })
    .await;
    m.mesh.shutdown().await;
    // Produced while no evmesh runs.
    produce(
        &p,
        topics.get(0),
        (0..5).map(|i| format!("second-{i}")),
        None,
    )
    .await;
    let m = mesh(&yaml).await;
    eventually("second five delivered", Duration::from_secs(60), || {
        sink.count() >= 10
    })
    .await;
    ready(&m, "restart").await;
    let counts = id_counts(&sink);
    assert_eq!(counts.len(), 10, "every record delivered: {counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "no committed record delivered again: {counts:?}"
    );
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn kafka_source_commits_a_record_only_after_the_sink_accepted_it() {
    let topics = Topics::new(1, 1).await;
    let sink = TestSink::start().await;
    // The sink fails; the record stays uncommitted while its retries go on.
    sink.always(Reply::Status(503));
    let yaml = kafka_source(
        "uncommitted",
        &[topics.get(0)],
        &sink,
        "  initialOffset: earliest\n  delivery: {retry: 100, backoffPolicy: linear, backoffDelay: PT0.2S}",
    );
    let m = mesh(&yaml).await;
    produce(&producer(), topics.get(0), ["pending-1".to_string()], None).await;
    eventually("attempts made", Duration::from_secs(60), || {
        sink.count() >= 2
    })
    .await;
    m.mesh.shutdown().await;
    // The sink recovers; a new evmesh reads the record again from the committed offset.
    sink.always(Reply::Status(202));
    let before = sink.count();
    let m = mesh(&yaml).await;
    eventually(
        "delivered after the restart",
        Duration::from_secs(60),
        || sink.count() > before,
    )
    .await;
    assert_eq!(
        sink.received()[before].header("ce-id").as_deref(),
        Some("pending-1")
    );
    m.mesh.shutdown().await;
}

/// The first attempt of `e0` fails; its retry waits 1 s.
fn first_fails(sink: &TestSink) {
    sink.script([Reply::Status(503)]);
}

#[tokio::test]
async fn kafka_source_ordered_delivers_a_key_in_order_one_at_a_time() {
    let topics = Topics::new(1, 1).await;
    let sink = TestSink::start().await;
    first_fails(&sink);
    let m = mesh(&kafka_source(
        "ordered",
        &[topics.get(0)],
        &sink,
        "  initialOffset: earliest\n  ordering: ordered\n  delivery: {retry: 3, backoffPolicy: linear, backoffDelay: PT1S}",
    ))
    .await;
    produce(
        &producer(),
        topics.get(0),
        (0..4).map(|i| format!("e{i}")),
        Some("k"),
    )
    .await;
    eventually("all delivered", Duration::from_secs(60), || {
        sink.count() >= 5
    })
    .await;
    assert_eq!(
        sink.ids(),
        ["e0", "e0", "e1", "e2", "e3"],
        "nothing passes a failed event of its key"
    );
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn kafka_source_ordered_keeps_a_partition_in_order_whatever_the_keys() {
    let topics = Topics::new(1, 1).await;
    let sink = TestSink::start().await;
    first_fails(&sink);
    let m = mesh(&kafka_source(
        "ordered-partition",
        &[topics.get(0)],
        &sink,
        "  initialOffset: earliest\n  ordering: ordered\n  delivery: {retry: 3, backoffPolicy: linear, backoffDelay: PT1S}",
    ))
    .await;
    // One partition, other keys: as Knative's ordered dispatcher, the partition waits for e0.
    let p = producer();
    produce(&p, topics.get(0), ["e0".to_string()], Some("k0")).await;
    produce(
        &p,
        topics.get(0),
        (1..4).map(|i| format!("e{i}")),
        Some("k1"),
    )
    .await;
    eventually("all delivered", Duration::from_secs(60), || {
        sink.count() >= 5
    })
    .await;
    assert_eq!(
        sink.ids(),
        ["e0", "e0", "e1", "e2", "e3"],
        "nothing passes a failed event of its partition"
    );
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn kafka_source_unordered_does_not_wait_for_a_retrying_event() {
    let topics = Topics::new(1, 1).await;
    let sink = TestSink::start().await;
    first_fails(&sink);
    let m = mesh(&kafka_source(
        "unordered",
        &[topics.get(0)],
        &sink,
        "  initialOffset: earliest\n  ordering: unordered\n  delivery: {retry: 3, backoffPolicy: linear, backoffDelay: PT1S}",
    ))
    .await;
    produce(
        &producer(),
        topics.get(0),
        (0..4).map(|i| format!("e{i}")),
        Some("k"),
    )
    .await;
    eventually("all delivered", Duration::from_secs(60), || {
        sink.count() >= 5
    })
    .await;
    let ids = sink.ids();
    let retry_at = ids.iter().rposition(|i| i == "e0").expect("e0 retried");
    assert_eq!(
        retry_at, 4,
        "e1..e3 went out while e0 waited for its retry: {ids:?}"
    );
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn kafka_source_kill_9_while_deliveries_retry_then_restart_loses_none() {
    let topics = Topics::new(1, 2).await;
    let sink = TestSink::start().await;
    // The sink fails until after the kill: every record is still being retried then.
    sink.always(Reply::Status(503));
    let yaml = kafka_source(
        "killed",
        &[topics.get(0)],
        &sink,
        "  initialOffset: earliest\n  ordering: unordered\n  delivery: {retry: 100, backoffPolicy: linear, backoffDelay: PT0.2S}",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &yaml);
    let data = dir.path().join("data");
    let em = EvmeshProcess::start(&config, &data, &[]);
    let ids: Vec<String> = (0..6).map(|i| format!("k{i}")).collect();
    produce(&producer(), topics.get(0), ids.clone(), None).await;
    eventually("every record attempted", Duration::from_secs(60), || {
        sink.ids()
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            == ids.len()
    })
    .await;
    em.kill9();
    // Nothing reaches the sink while no evmesh runs: what comes next is the restarted one's.
    sink.always(Reply::Status(202));
    let before = sink.count();
    let em = EvmeshProcess::start(&config, &data, &[]);
    eventually(
        "every record accepted after the restart",
        Duration::from_secs(90),
        || {
            let after: std::collections::HashSet<String> = sink.received()[before..]
                .iter()
                .filter_map(|r| r.header("ce-id"))
                .collect();
            ids.iter().all(|i| after.contains(i))
        },
    )
    .await;
    drop(em);
}

#[tokio::test]
async fn kafka_source_consumers_2_runs_two_members_that_split_the_partitions() {
    let topics = Topics::new(1, 2).await;
    let sink = TestSink::start().await;
    let m = mesh(&kafka_source(
        "two-consumers",
        &[topics.get(0)],
        &sink,
        "  initialOffset: earliest\n  consumers: 2",
    ))
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let s = source_status(&m, "two-consumers").await;
        let members = s["status"]["evmesh"]["members"].clone();
        let split = members.as_array().is_some_and(|a| {
            a.len() == 2 && a.iter().all(|p| p.as_array().is_some_and(|p| p.len() == 1))
        });
        if split {
            assert_eq!(s["status"]["consumers"], 2, "{s}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the two consumers never split the two partitions: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let p = producer();
    for i in 0..10 {
        produce(&p, topics.get(0), [format!("e{i}")], Some(&format!("k{i}"))).await;
    }
    eventually("all delivered", Duration::from_secs(60), || {
        sink.count() >= 10
    })
    .await;
    let counts = id_counts(&sink);
    assert_eq!(counts.len(), 10, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn kafka_source_without_kafka_is_not_ready_then_delivers_once_kafka_starts() {
    let port = common::tansu::free_port();
    let sink = TestSink::start().await;
    let yaml = kafka_source("late", &["late-topic"], &sink, "  initialOffset: earliest")
        .replace(&bootstrap(), &format!("127.0.0.1:{port}"));
    // evmesh starts although nothing listens where the source's Kafka is.
    let m = mesh(&yaml).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = source_status(&m, "late").await;
        let (code, text) = get_text(&m.url("/readyz")).await;
        if s["status"]["conditions"][0]["reason"] == "KafkaUnavailable" && code == 503 {
            assert!(text.contains("KafkaSource demo/late"), "{text}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reported unavailable: {s:#} {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tansu = common::tansu::OwnTansu::start_on(port).await;
    let own = KafkaSettings::new([tansu.addr.clone()]);
    ensure_topic(&own, "late-topic", 1, 1, &[])
        .await
        .expect("topic");
    ready(&m, "late").await;
    KafkaProducer::new(&own)
        .expect("producer")
        .send("late-topic", &ce("late-1", None))
        .await
        .expect("produce");
    eventually("delivered", Duration::from_secs(60), || {
        sink.ids() == ["late-1"]
    })
    .await;
    let (code, text) = get_text(&m.url("/readyz")).await;
    assert_eq!(code, 200, "{text}");
    m.mesh.shutdown().await;
}
