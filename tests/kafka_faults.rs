//! Fault injection on the Kafka broker class with librdkafka's in-process mock cluster
//! (`rdkafka::mocking::MockCluster`): Kafka down, and produce requests failing. Ingress answers 503
//! (within the produce timeout, never librdkafka's 5 minutes) and accepts again once Kafka is
//! back. The behaviour users see is tested against Tansu in `kafka_broker.rs`; the mock cluster
//! only injects the faults Tansu cannot.

mod common;

use std::time::Duration;

use common::*;
use evmesh_kafka::channel::broker_topic_name;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// The produce timeout these tests run with.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(2);
/// A POST still unanswered after this was left waiting far past the produce timeout.
const NEVER: Duration = Duration::from_secs(60);

fn yaml(broker: &str, sink: &TestSink) -> String {
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
metadata: {{name: {broker}-all}}
spec:
  broker: {broker}
  subscriber: {{uri: "{}"}}
"#,
        sink.url()
    )
}

/// A mesh whose Kafka is `mock` (the broker's topic created there first: the mock cluster does
/// not implement CreateTopics).
async fn mock_mesh(
    mock: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    broker: &str,
    sink: &TestSink,
) -> TestMesh {
    mock.create_topic(&broker_topic_name("default", broker), 1, 1)
        .expect("topic on the mock cluster");
    let servers = mock.bootstrap_servers();
    mesh_with(&yaml(broker, sink), |o| evmesh::Options {
        kafka_bootstrap_servers: Some(servers.clone()),
        kafka_produce_timeout: PRODUCE_TIMEOUT,
        ..o
    })
    .await
}

async fn post(url: &str, id: &str) -> u16 {
    tokio::time::timeout(NEVER, post_binary(url, event(id, "t")))
        .await
        .unwrap_or_else(|_| panic!("POST {id} left waiting past {NEVER:?}"))
}

/// Posts `id` until it is accepted (Kafka came back).
async fn post_until_accepted(url: &str, id: &str) {
    let deadline = std::time::Instant::now() + NEVER;
    while post(url, id).await != 202 {
        assert!(
            std::time::Instant::now() < deadline,
            "{id} never accepted after the fault ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_kafka_class_broker_answers_503_while_its_kafka_is_down_and_202_once_it_is_back() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let sink = TestSink::start().await;
    let m = mock_mesh(&mock, "down", &sink).await;
    let url = m.url("/default/down");
    assert_eq!(post(&url, "before").await, 202);
    mock.broker_down(-1).expect("broker down");
    assert_eq!(
        post(&url, "during").await,
        503,
        "Kafka did not acknowledge within the produce timeout"
    );
    mock.broker_up(-1).expect("broker up");
    post_until_accepted(&url, "after").await;
    eventually("accepted events delivered", NEVER, || {
        let got = id_counts(&sink);
        got.contains_key("before") && got.contains_key("after")
    })
    .await;
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn a_produce_request_kafka_refuses_answers_503_and_the_next_event_is_accepted() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let sink = TestSink::start().await;
    let m = mock_mesh(&mock, "refused", &sink).await;
    let url = m.url("/default/refused");
    assert_eq!(post(&url, "before").await, 202);
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    assert_eq!(
        post(&url, "refused").await,
        503,
        "Kafka refused the produce request"
    );
    post_until_accepted(&url, "after").await;
    eventually("accepted events delivered", NEVER, || {
        let got = id_counts(&sink);
        got.contains_key("before") && got.contains_key("after")
    })
    .await;
    assert!(
        !id_counts(&sink).contains_key("refused"),
        "a refused event is not delivered"
    );
    m.mesh.shutdown().await;
}
