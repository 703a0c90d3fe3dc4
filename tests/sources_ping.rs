//! PingSource in a running evmesh: its events reach a real HTTP sink through a Broker and a
//! Trigger with Knative's shape; its status shows sinkUri and ceAttributes; live apply and delete.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn broker_trigger(sink: &TestSink) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: demo}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: pings, namespace: demo}}
spec:
  broker: default
  filter: {{attributes: {{type: dev.knative.sources.ping}}}}
  subscriber: {{uri: "{}"}}
"#,
        sink.url()
    )
}

const PING: &str = r#"
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: ping, namespace: demo}
spec:
  schedule: "* * * * * *"
  contentType: application/json
  data: '{"message":  "Hello world!", "amount": 10.50}'
  ceOverrides: {extensions: {myext: value}}
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
"#;

fn pingsource_url(m: &TestMesh, name: &str) -> String {
    m.url(&format!(
        "/apis/sources.knative.dev/v1/namespaces/demo/pingsources/{name}"
    ))
}

#[tokio::test]
async fn ping_source_events_reach_the_sink_with_knatives_shape() {
    let sink = TestSink::start().await;
    let m = mesh(&format!("{}---{PING}", broker_trigger(&sink))).await;
    eventually("a ping delivered", Duration::from_secs(10), || {
        sink.count() >= 1
    })
    .await;
    let r = &sink.received()[0];
    assert_eq!(
        r.header("ce-type").as_deref(),
        Some("dev.knative.sources.ping")
    );
    assert_eq!(
        r.header("ce-source").as_deref(),
        Some("/apis/v1/namespaces/demo/pingsources/ping")
    );
    assert_eq!(r.header("ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(r.header("ce-myext").as_deref(), Some("value"));
    assert!(r.header("ce-time").is_some());
    assert!(r.header("ce-subject").is_none());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    // The data bytes as written in the YAML (10.50 stays 10.50).
    assert_eq!(
        r.body,
        br#"{"message":  "Hello world!", "amount": 10.50}"#.to_vec()
    );
    drop(m);
}

#[tokio::test]
async fn ping_source_ticks_get_fresh_ids() {
    let sink = TestSink::start().await;
    let _m = mesh(&format!("{}---{PING}", broker_trigger(&sink))).await;
    eventually("two pings delivered", Duration::from_secs(10), || {
        sink.count() >= 2
    })
    .await;
    let ids = sink.ids();
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn ping_source_status_shows_sink_uri_and_ce_attributes() {
    let sink = TestSink::start().await;
    let m = mesh(&format!("{}---{PING}", broker_trigger(&sink))).await;
    let (code, obj) = get_json(&pingsource_url(&m, "ping")).await;
    assert_eq!(code, 200, "{obj}");
    let st = &obj["status"];
    assert_eq!(st["conditions"][0]["type"], "Ready");
    assert_eq!(st["conditions"][0]["status"], "True", "{obj}");
    assert_eq!(st["sinkUri"], Value::String(m.url("/demo/default")));
    assert_eq!(
        st["ceAttributes"],
        serde_json::json!([{"type": "dev.knative.sources.ping",
                            "source": "/apis/v1/namespaces/demo/pingsources/ping"}])
    );
}

#[tokio::test]
async fn ping_source_whose_broker_is_missing_is_not_ready() {
    let m = mesh(PING).await;
    let (_, obj) = get_json(&pingsource_url(&m, "ping")).await;
    let c = &obj["status"]["conditions"][0];
    assert_eq!(c["status"], "False", "{obj}");
    assert_eq!(c["reason"], "NotFound", "{obj}");
}

#[tokio::test]
async fn ping_source_delivers_to_a_uri_sink() {
    let sink = TestSink::start().await;
    let yaml = PING.replace(
        "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}",
        &format!("{{uri: \"{}\"}}", sink.url()),
    );
    let m = mesh(&yaml).await;
    eventually("a ping delivered", Duration::from_secs(10), || {
        sink.count() >= 1
    })
    .await;
    let r = &sink.received()[0];
    assert_eq!(
        r.header("ce-type").as_deref(),
        Some("dev.knative.sources.ping")
    );
    let (_, obj) = get_json(&pingsource_url(&m, "ping")).await;
    assert_eq!(obj["status"]["sinkUri"], Value::String(sink.url()));
    assert_eq!(obj["status"]["conditions"][0]["status"], "True", "{obj}");
}

#[tokio::test]
async fn ping_source_event_is_retried_until_the_sink_takes_it() {
    let sink = TestSink::start().await;
    sink.script([Reply::Status(503), Reply::Status(500)]);
    let yaml = PING.replace(
        "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}",
        &format!("{{uri: \"{}\"}}", sink.url()),
    );
    let _m = mesh(&yaml).await;
    // Two refusals, then the third attempt of the first tick's event is taken.
    eventually("three attempts", Duration::from_secs(10), || {
        sink.count() >= 3
    })
    .await;
    let ids = sink.ids();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[1], ids[2]);
}

#[tokio::test]
async fn ping_source_applied_live_starts_and_deleted_stops() {
    let sink = TestSink::start().await;
    let m = mesh(&broker_trigger(&sink)).await;
    let collection = m.url("/apis/sources.knative.dev/v1/namespaces/demo/pingsources");
    let resp = client()
        .post(&collection)
        .header("content-type", "application/yaml")
        .body(PING.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 201);
    eventually("a ping delivered", Duration::from_secs(10), || {
        sink.count() >= 1
    })
    .await;
    let resp = client()
        .delete(pingsource_url(&m, "ping"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status().as_u16(), 200);
    let (code, _) = get_json(&pingsource_url(&m, "ping")).await;
    assert_eq!(code, 404);
    // The source stopped before the delete was answered: once the broker has delivered what
    // it stored, nothing more arrives over more than one tick of the 1 s schedule.
    let (_, b) =
        get_json(&m.url("/apis/eventing.knative.dev/v1/namespaces/demo/brokers/default")).await;
    let stored = b["status"]["evmesh"]["counters"]["accepted"]
        .as_u64()
        .expect("accepted counter");
    quiet(&m, "demo", "default", stored).await;
    let count = sink.count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.count(), count);
}

#[tokio::test]
async fn ping_source_sink_can_be_a_channel() {
    let sink = TestSink::start().await;
    let yaml = format!(
        r#"
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {{name: pings, namespace: demo}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {{name: to-sink, namespace: demo}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: pings}}
  subscriber: {{uri: "{}"}}
---
{}"#,
        sink.url(),
        PING.replace(
            "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}",
            "{ref: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: pings}}",
        )
    );
    let m = mesh(&yaml).await;
    eventually(
        "a ping through the channel",
        Duration::from_secs(10),
        || sink.count() >= 1,
    )
    .await;
    let r = &sink.received()[0];
    assert_eq!(
        r.header("ce-type").as_deref(),
        Some("dev.knative.sources.ping")
    );
    let (_, obj) = get_json(&pingsource_url(&m, "ping")).await;
    assert_eq!(
        obj["status"]["sinkUri"],
        Value::String(m.url("/channels/demo/pings"))
    );
}

#[tokio::test]
async fn ping_source_sink_can_be_a_sequence() {
    let step = TestSink::start().await;
    step.always(Reply::Map(|e| e.clone()));
    let reply = TestSink::start().await;
    let yaml = format!(
        r#"
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {{name: seq, namespace: demo}}
spec:
  steps:
    - uri: "{}"
  reply: {{uri: "{}"}}
---
{}"#,
        step.url(),
        reply.url(),
        PING.replace(
            "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}",
            "{ref: {apiVersion: flows.knative.dev/v1, kind: Sequence, name: seq}}",
        )
    );
    let _m = mesh(&yaml).await;
    eventually(
        "a ping through the sequence",
        Duration::from_secs(10),
        || reply.count() >= 1,
    )
    .await;
    let r = &reply.received()[0];
    assert_eq!(
        r.header("ce-type").as_deref(),
        Some("dev.knative.sources.ping")
    );
    assert_eq!(
        r.header("ce-source").as_deref(),
        Some("/apis/v1/namespaces/demo/pingsources/ping")
    );
}
