//! KafkaChannel (`messaging.knative.dev/v1beta1`) against a real Kafka-protocol broker (Tansu,
//! started by `.ci/services/kafka.sh`; `EVMESH_TEST_KAFKA`, default 127.0.0.1:9092): a topic per
//! channel (`knative-messaging-kafka.<ns>.<name>`), a consumer group per subscription; fan-out,
//! a Sequence over KafkaChannels, and a restart that loses and repeats nothing. Channel names are
//! unique per test and their topics are deleted at the end.

mod common;

use std::time::Duration;

use common::sequence::{self, three_steps};
use common::*;

fn bootstrap() -> String {
    std::env::var("EVMESH_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
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

fn channel_yaml(name: &str) -> String {
    format!(
        r#"
apiVersion: messaging.knative.dev/v1beta1
kind: KafkaChannel
metadata:
  name: {name}
spec:
  numPartitions: 2
  replicationFactor: 1
  retentionDuration: PT1H
"#
    )
}

fn subscription_yaml(name: &str, channel: &str, subscriber: &str) -> String {
    format!(
        r#"
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata:
  name: {name}
spec:
  channel:
    apiVersion: messaging.knative.dev/v1beta1
    kind: KafkaChannel
    name: {channel}
  subscriber:
    uri: {subscriber}
"#
    )
}

#[tokio::test]
async fn every_subscription_of_a_kafka_channel_gets_every_event() {
    let ch = unique("fanout");
    let sinks = [TestSink::start().await, TestSink::start().await];
    let mut yaml = channel_yaml(&ch);
    for (i, sink) in sinks.iter().enumerate() {
        yaml.push_str(&subscription_yaml(&format!("{ch}-{i}"), &ch, &sink.url()));
    }
    let m = kafka_mesh(&yaml).await;
    let ids: Vec<String> = (0..5).map(|i| format!("e{i}")).collect();
    for id in &ids {
        post_ok(
            &m.url(&format!("/channels/default/{ch}")),
            event(id, "fan.out"),
        )
        .await;
    }
    for (i, sink) in sinks.iter().enumerate() {
        eventually(
            &format!("subscription {i} gets every event"),
            Duration::from_secs(60),
            || {
                let mut got = sink.ids();
                got.sort();
                got == ids
            },
        )
        .await;
    }
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn a_sequence_on_kafka_channels_runs_its_steps_in_order_and_sends_the_last_reply() {
    let name = unique("seq");
    let channels: Vec<String> = (0..3).map(|i| format!("{name}-kn-sequence-{i}")).collect();
    let s = three_steps().await;
    let yaml = format!(
        r#"
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata:
  name: {name}
spec:
  channelTemplate:
    apiVersion: messaging.knative.dev/v1beta1
    kind: KafkaChannel
  steps:
    - uri: {}
    - uri: {}
    - uri: {}
  reply:
    uri: {}
"#,
        s[0].url(),
        s[1].url(),
        s[2].url(),
        s[3].url()
    );
    let m = kafka_mesh(&yaml).await;
    sequence::sequence_runs_its_steps_in_order_and_sends_the_last_reply(
        &m.url(&format!("/channels/default/{}", channels[0])),
        &s,
    )
    .await;
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn a_kafka_channel_survives_a_restart_without_loss_or_redelivery() {
    let ch = unique("restart");
    let sink = TestSink::start().await;
    let yaml = format!(
        "{}{}",
        channel_yaml(&ch),
        subscription_yaml(&format!("{ch}-sub"), &ch, &sink.url())
    );
    let m = kafka_mesh(&yaml).await;
    for i in 0..5 {
        post_ok(
            &m.url(&format!("/channels/default/{ch}")),
            event(&format!("first-{i}"), "t"),
        )
        .await;
    }
    eventually("first five delivered", Duration::from_secs(60), || {
        sink.count() >= 5
    })
    .await;
    m.mesh.shutdown().await;
    let m = kafka_mesh(&yaml).await;
    for i in 0..5 {
        post_ok(
            &m.url(&format!("/channels/default/{ch}")),
            event(&format!("second-{i}"), "t"),
        )
        .await;
    }
    eventually("second five delivered", Duration::from_secs(60), || {
        sink.count() >= 10
    })
    .await;
    let counts = id_counts(&sink);
    assert_eq!(counts.len(), 10, "every event delivered: {counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "nothing delivered twice: {counts:?}"
    );
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn a_kafka_channel_deleted_through_the_api_stops_taking_events() {
    let ch = unique("deleted");
    let m = kafka_mesh("").await;
    let collection = m.url("/apis/messaging.knative.dev/v1beta1/namespaces/default/kafkachannels");
    let resp = client()
        .post(&collection)
        .header("content-type", "application/yaml")
        .body(channel_yaml(&ch))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status().as_u16(), 201);
    let address = m.url(&format!("/channels/default/{ch}"));
    post_ok(&address, event("before", "t")).await;
    let resp = client()
        .delete(format!("{collection}/{ch}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        post_binary(&address, event("after", "t")).await,
        404,
        "a deleted channel no longer takes events"
    );
}

#[tokio::test]
async fn the_kafka_channel_config_configmap_says_where_kafka_is() {
    let ch = unique("cm");
    let sink = TestSink::start().await;
    let yaml = format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: kafka-channel-config, namespace: knative-eventing}}
data:
  bootstrap.servers: "{}"
---
{}{}"#,
        bootstrap(),
        channel_yaml(&ch),
        subscription_yaml(&ch, &ch, &sink.url())
    );
    // No --kafka-bootstrap-servers: only the ConfigMap says where Kafka is.
    let m = mesh(&yaml).await;
    post_ok(&m.url(&format!("/channels/default/{ch}")), event("cm", "t")).await;
    eventually("delivered", Duration::from_secs(60), || {
        sink.ids() == ["cm"]
    })
    .await;
    m.mesh.shutdown().await;
}

/// A subscription gets what its channel took after it was created, even when its run (and so
/// its consumer group) starts later; nothing the channel took before it was created.
#[tokio::test]
async fn a_new_subscription_gets_what_its_channel_took_between_its_creation_and_its_start() {
    let ch = unique("late");
    let m = kafka_mesh(&channel_yaml(&ch)).await;
    late_subscription::gets_what_its_channel_took_between_its_creation_and_its_start(
        &m,
        ("messaging.knative.dev/v1beta1", "KafkaChannel"),
        &ch,
    )
    .await;
}
