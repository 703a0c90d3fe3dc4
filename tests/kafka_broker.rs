//! The Kafka broker class (`eventing.knative.dev/broker.class: Kafka`) against a real
//! Kafka-protocol broker (Tansu, `EVMESH_TEST_KAFKA`, default 127.0.0.1:9092): ingress produces
//! to the topic `knative-broker-<ns>-<name>` and answers 202 once Kafka acknowledged; each
//! Trigger reads with its own consumer group, filters and delivers as the embedded class does.

mod common;

use std::time::Duration;

use common::tansu::{OwnTansu, free_port};
use common::*;
use evmesh_kafka::channel::broker_topic_name;
use evmesh_kafka::{KafkaSettings, end_offsets};

fn bootstrap() -> String {
    std::env::var("EVMESH_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

// Topics are not deleted after a test: deleting a topic while a consumer of it is still closing
// made librdkafka 2.12 crash (SIGSEGV in rd_kafka_metadata_update_op: Tansu answers the metadata
// request for the deleted topic with a null name; cf. librdkafka #5280). Names are unique per test,
// and CI's Tansu keeps topics in memory only.

async fn kafka_mesh(yaml: &str) -> TestMesh {
    mesh_with(yaml, |o| evmesh::Options {
        kafka_bootstrap_servers: Some(bootstrap()),
        ..o
    })
    .await
}

fn yaml(broker: &str, orders: &TestSink, refunds: &TestSink) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: {broker}
  annotations: {{eventing.knative.dev/broker.class: Kafka}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: {broker}-orders}}
spec:
  broker: {broker}
  filter: {{attributes: {{type: order.created}}}}
  subscriber: {{uri: "{}"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: {broker}-refunds}}
spec:
  broker: {broker}
  filter: {{attributes: {{type: refund.created}}}}
  subscriber: {{uri: "{}"}}
"#,
        orders.url(),
        refunds.url()
    )
}

#[tokio::test]
async fn a_kafka_class_broker_delivers_each_trigger_what_its_filter_matches() {
    let broker = format!("kb-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (orders, refunds) = (TestSink::start().await, TestSink::start().await);
    let m = kafka_mesh(&yaml(&broker, &orders, &refunds)).await;
    let url = m.url(&format!("/default/{broker}"));
    for i in 0..3 {
        post_ok(&url, event(&format!("o{i}"), "order.created")).await;
        post_ok(&url, event(&format!("r{i}"), "refund.created")).await;
    }
    eventually("orders delivered", Duration::from_secs(60), || {
        orders.count() >= 3
    })
    .await;
    eventually("refunds delivered", Duration::from_secs(60), || {
        refunds.count() >= 3
    })
    .await;
    let mut o = orders.ids();
    o.sort();
    let mut r = refunds.ids();
    r.sort();
    assert_eq!(o, ["o0", "o1", "o2"]);
    assert_eq!(r, ["r0", "r1", "r2"]);
    let first = &orders.received()[0];
    assert!(
        first.header("ce-knativekafkapartition").is_some()
            && first.header("ce-knativekafkaoffset").is_some(),
        "delivered events say where they were in Kafka: {:?}",
        first.headers
    );
    let ends = end_offsets(
        &KafkaSettings::new([bootstrap()]),
        &broker_topic_name("default", &broker),
    )
    .await
    .expect("the broker's topic exists");
    assert_eq!(
        ends.iter().sum::<i64>(),
        6,
        "every accepted event is in the broker's Kafka topic"
    );
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn a_kafka_class_broker_resumes_its_triggers_from_committed_offsets_after_a_restart() {
    let broker = format!("kb-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (orders, refunds) = (TestSink::start().await, TestSink::start().await);
    let yaml = yaml(&broker, &orders, &refunds);
    let m = kafka_mesh(&yaml).await;
    let url = m.url(&format!("/default/{broker}"));
    for i in 0..3 {
        post_ok(&url, event(&format!("first-{i}"), "order.created")).await;
    }
    eventually("first delivered", Duration::from_secs(60), || {
        orders.count() >= 3
    })
    .await;
    m.mesh.shutdown().await;
    let m = kafka_mesh(&yaml).await;
    let url = m.url(&format!("/default/{broker}"));
    for i in 0..3 {
        post_ok(&url, event(&format!("second-{i}"), "order.created")).await;
    }
    eventually("second delivered", Duration::from_secs(60), || {
        orders.count() >= 6
    })
    .await;
    let counts = id_counts(&orders);
    assert_eq!(counts.len(), 6, "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "nothing delivered twice: {counts:?}"
    );
    assert_eq!(refunds.count(), 0);
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn an_ordered_trigger_of_a_kafka_class_broker_keeps_a_partitionkey_in_order() {
    use cloudevents::event::ExtensionValue;
    let broker = format!("kb-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let sink = TestSink::start().await;
    // The first attempt fails; its retry waits 1 s, and its key's later events wait for it.
    sink.script([Reply::Status(503)]);
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: {broker}
  annotations: {{eventing.knative.dev/broker.class: Kafka}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: {broker}-ordered
  annotations: {{kafka.eventing.knative.dev/delivery.order: ordered}}
spec:
  broker: {broker}
  subscriber: {{uri: "{}"}}
  delivery: {{retry: 3, backoffPolicy: linear, backoffDelay: PT1S}}
"#,
        sink.url()
    );
    let m = kafka_mesh(&yaml).await;
    let url = m.url(&format!("/default/{broker}"));
    for i in 0..4 {
        let mut e = event(&format!("e{i}"), "order.created");
        e.set_extension("partitionkey", ExtensionValue::from("customer-1"));
        post_ok(&url, e).await;
    }
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
async fn an_ordered_trigger_of_a_kafka_class_broker_keeps_a_partition_in_order_whatever_the_keys() {
    use cloudevents::event::ExtensionValue;
    let broker = format!("kb-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let sink = TestSink::start().await;
    // The first attempt fails; its retry waits 1 s, and its partition's later events wait.
    sink.script([Reply::Status(503)]);
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: {broker}
  annotations: {{eventing.knative.dev/broker.class: Kafka}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: {broker}-ordered
  annotations: {{kafka.eventing.knative.dev/delivery.order: ordered}}
spec:
  broker: {broker}
  subscriber: {{uri: "{}"}}
  delivery: {{retry: 3, backoffPolicy: linear, backoffDelay: PT1S}}
"#,
        sink.url()
    );
    let m = kafka_mesh(&yaml).await;
    let url = m.url(&format!("/default/{broker}"));
    // One partition; every event has a key of its own, and the last none.
    for i in 0..4 {
        let mut e = event(&format!("e{i}"), "order.created");
        if i < 3 {
            e.set_extension("partitionkey", ExtensionValue::from(format!("key-{i}")));
        }
        post_ok(&url, e).await;
    }
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
async fn two_evmesh_processes_share_a_kafka_class_trigger_and_one_killed_loses_nothing() {
    let broker = format!("kb-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (orders, refunds) = (TestSink::start().await, TestSink::start().await);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &yaml(&broker, &orders, &refunds));
    let kafka = ["--kafka-bootstrap-servers", &bootstrap()].map(str::to_string);
    let args: Vec<&str> = kafka.iter().map(String::as_str).collect();
    let a = EvmeshProcess::start(&config, &dir.path().join("a"), &args);
    let b = EvmeshProcess::start(&config, &dir.path().join("b"), &args);
    let first: Vec<String> = (0..10).map(|i| format!("first-{i}")).collect();
    for (i, id) in first.iter().enumerate() {
        // Either process accepts: the topic is the one both read.
        let via = if i % 2 == 0 { &a } else { &b };
        post_ok(
            &via.url(&format!("/default/{broker}")),
            event(id, "order.created"),
        )
        .await;
    }
    eventually("first ten delivered", Duration::from_secs(60), || {
        orders.count() >= first.len()
    })
    .await;
    let counts = id_counts(&orders);
    assert_eq!(counts.len(), first.len(), "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "each event delivered once per trigger, not once per process: {counts:?}"
    );
    a.kill9();
    let second: Vec<String> = (0..10).map(|i| format!("second-{i}")).collect();
    for id in &second {
        post_ok(
            &b.url(&format!("/default/{broker}")),
            event(id, "order.created"),
        )
        .await;
    }
    eventually(
        "the survivor delivers what was sent after the kill",
        Duration::from_secs(90),
        || {
            let got = id_counts(&orders);
            second.iter().all(|id| got.contains_key(id))
        },
    )
    .await;
    drop(b);
}

#[tokio::test]
async fn a_kafka_class_broker_answers_202_after_the_produce_and_503_when_kafka_is_gone() {
    let mut tansu = OwnTansu::start().await;
    let sink = TestSink::start().await;
    let addr = tansu.addr.clone();
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: gone
  annotations: {{eventing.knative.dev/broker.class: Kafka}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: gone-all}}
spec:
  broker: gone
  subscriber: {{uri: "{}"}}
"#,
        sink.url()
    );
    let m = mesh_with(&yaml, |o| evmesh::Options {
        kafka_bootstrap_servers: Some(addr.clone()),
        kafka_produce_timeout: Duration::from_secs(2),
        ..o
    })
    .await;
    let url = m.url("/default/gone");
    assert_eq!(post_binary(&url, event("kept", "t")).await, 202);
    let ends = end_offsets(
        &KafkaSettings::new([addr.clone()]),
        &broker_topic_name("default", "gone"),
    )
    .await
    .expect("end offsets");
    assert_eq!(
        ends.iter().sum::<i64>(),
        1,
        "the 202 came after the record was in Kafka"
    );
    let _ = tansu.child.kill();
    let _ = tansu.child.wait();
    assert_eq!(
        post_binary(&url, event("lost", "t")).await,
        503,
        "Kafka did not acknowledge the produce"
    );
    m.mesh.shutdown().await;
}

/// A Kafka-class Broker whose `spec.config` names a ConfigMap in Knative's `kafka-broker-config`
/// shape, and a trigger of it.
fn configmap_yaml(broker: &str, servers: &str, partitions: u32, sink: &TestSink) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: {broker}-config}}
data:
  bootstrap.servers: "{servers}"
  default.topic.partitions: "{partitions}"
  default.topic.replication.factor: "1"
  default.topic.config.retention.ms: "3600000"
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: {broker}
  annotations: {{eventing.knative.dev/broker.class: Kafka}}
spec:
  config: {{apiVersion: v1, kind: ConfigMap, name: {broker}-config}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: {broker}-all}}
spec:
  broker: {broker}
  subscriber: {{uri: "{}"}}
"#,
        sink.url()
    )
}

async fn delivered_by(p: &EvmeshProcess, trigger: &str) -> u64 {
    admin_counters(&p.url(""), "triggers", "default", trigger).await["delivered"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_broker_configmap_sets_the_topic_partitions_and_two_processes_split_them() {
    let broker = format!("kb-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let sink = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &configmap_yaml(&broker, &bootstrap(), 3, &sink));
    // No --kafka-bootstrap-servers: the ConfigMap says where Kafka is.
    let a = EvmeshProcess::start(&config, &dir.path().join("a"), &[]);
    let b = EvmeshProcess::start(&config, &dir.path().join("b"), &[]);
    let ends = end_offsets(
        &KafkaSettings::new([bootstrap()]),
        &broker_topic_name("default", &broker),
    )
    .await
    .expect("the broker's topic exists");
    assert_eq!(ends.len(), 3, "the topic has the ConfigMap's partitions");
    let trigger = format!("{broker}-all");
    let mut sent = Vec::new();
    // Rounds of events with many keys (spread over the partitions), each round delivered before
    // the next, until both processes have delivered some: the group split the partitions.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let round = sent.len() / 12;
        for i in 0..12 {
            let id = format!("r{round}-{i}");
            let mut e = event(&id, "order.created");
            e.set_extension(
                "partitionkey",
                cloudevents::event::ExtensionValue::from(format!("key-{i}")),
            );
            let via = if i % 2 == 0 { &a } else { &b };
            post_ok(&via.url(&format!("/default/{broker}")), e).await;
            sent.push(id);
        }
        eventually("the round delivered", Duration::from_secs(60), || {
            let got = id_counts(&sink);
            sent.iter().all(|id| got.contains_key(id))
        })
        .await;
        let (da, db) = (
            delivered_by(&a, &trigger).await,
            delivered_by(&b, &trigger).await,
        );
        if da > 0 && db > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "one process delivered everything ({da} vs {db}): the partitions were not split"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let counts = id_counts(&sink);
    assert_eq!(counts.len(), sent.len(), "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "each event delivered once for the trigger, not once per process: {counts:?}"
    );
}

#[tokio::test]
async fn a_kafka_class_broker_without_kafka_is_not_ready_and_becomes_ready_when_kafka_starts() {
    let port = free_port();
    let sink = TestSink::start().await;
    let broker = "later";
    let yaml = configmap_yaml(broker, &format!("127.0.0.1:{port}"), 1, &sink);
    // evmesh starts although nothing listens where the ConfigMap says Kafka is.
    let m = mesh(&yaml).await;
    let url = m.url(&format!("/default/{broker}"));
    let (code, text) = get_text(&m.url("/readyz")).await;
    assert_eq!(code, 503, "{text}");
    assert!(text.contains(&format!("broker default/{broker}")), "{text}");
    let status_url = m.url(&format!(
        "/apis/eventing.knative.dev/v1/namespaces/default/brokers/{broker}"
    ));
    let (_, b) = get_json(&status_url).await;
    let ready = &b["status"]["conditions"][0];
    assert_eq!(ready["status"], "False", "{b}");
    assert_eq!(ready["reason"], "LogUnavailable", "{b}");
    assert_eq!(
        post_binary(&url, event("early", "t")).await,
        503,
        "a broker that cannot reach its Kafka takes no event"
    );
    let _tansu = OwnTansu::start_on(port).await;
    let trigger_url = m.url(&format!(
        "/apis/eventing.knative.dev/v1/namespaces/default/triggers/{broker}-all"
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, b) = get_json(&status_url).await;
        let (_, t) = get_json(&trigger_url).await;
        if b["status"]["conditions"][0]["status"] == "True"
            && t["status"]["conditions"][0]["status"] == "True"
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {b} {t}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The broker and its trigger started by themselves; the trigger delivers what is accepted.
    post_ok(&url, event("later", "t")).await;
    eventually("delivered", Duration::from_secs(60), || {
        sink.ids() == ["later"]
    })
    .await;
    let (code, text) = get_text(&m.url("/readyz")).await;
    assert_eq!(code, 200, "{text}");
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn a_broker_not_ready_answers_503_with_retry_after_and_the_rust_api_says_not_ready() {
    // Nothing listens where the ConfigMap says Kafka is: the broker is configured, not ready.
    let sink = TestSink::start().await;
    let broker = "unreached";
    let yaml = configmap_yaml(broker, &format!("127.0.0.1:{}", free_port()), 1, &sink);
    let m = mesh(&yaml).await;
    let enc = evmesh::evmesh_broker::codec::encode_binary(event("early", "t")).expect("encode");
    let resp = client()
        .post(m.url(&format!("/default/{broker}")))
        .headers(enc.headers)
        .body(enc.body)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.headers()["retry-after"],
        evmesh::evmesh_broker::ingress::NOT_READY_RETRY_AFTER_SECS.to_string(),
        "a client is told when to try again"
    );
    let body = resp.text().await.expect("body");
    assert!(
        body.contains(&format!("broker default/{broker} is not ready")),
        "{body}"
    );
    match m.mesh.publish("default", broker, event("early", "t")).await {
        Err(evmesh::Error::NotReady(why)) => {
            assert!(why.contains("is not ready"), "{why}")
        }
        other => panic!("publishing to a broker that is not ready: {other:?}"),
    }
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn a_record_of_a_broker_topic_that_is_no_cloudevent_is_discarded_and_counted() {
    let broker = format!("kb-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (orders, refunds) = (TestSink::start().await, TestSink::start().await);
    let m = kafka_mesh(&yaml(&broker, &orders, &refunds)).await;
    // Someone else writes a plain record to the broker's topic.
    let producer =
        evmesh_kafka::KafkaProducer::new(&KafkaSettings::new([bootstrap()])).expect("producer");
    producer
        .send_raw(
            &broker_topic_name("default", &broker),
            None,
            &[],
            b"not a CloudEvent",
        )
        .await
        .expect("produce");
    post_ok(
        &m.url(&format!("/default/{broker}")),
        event("after", "order.created"),
    )
    .await;
    eventually(
        "the event after it delivered",
        Duration::from_secs(60),
        || orders.ids() == ["after"],
    )
    .await;
    let base = m.url("");
    for trigger in [format!("{broker}-orders"), format!("{broker}-refunds")] {
        let c = eventually_counters(
            &base,
            "triggers",
            "default",
            &trigger,
            Duration::from_secs(30),
            |c| c["discarded"] == 1,
        )
        .await;
        assert_eq!(
            c["delivered"],
            if trigger.ends_with("orders") { 1 } else { 0 },
            "{c}"
        );
    }
    let (_, metrics) = get_text(&m.url("/metrics")).await;
    let line = metrics.lines().find(|l| {
        l.starts_with("evmesh_discarded_total{")
            && l.contains(&format!("trigger_name=\"{broker}-orders\""))
    });
    assert!(
        line.is_some_and(|l| l.ends_with(" 1")),
        "Prometheus counts the discarded record: {line:?}"
    );
    m.mesh.shutdown().await;
}
