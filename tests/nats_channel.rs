//! NatsJetStreamChannel (Knative's eventing-natss kind) on a real nats-server with JetStream
//! (`EVMESH_NATS_URL`, default `nats://127.0.0.1:4222`; `.ci/services/nats.sh` starts one): a
//! stream per channel, a durable consumer per subscription, 202 once JetStream acknowledged the
//! publish. Every test uses its own channel names (so its own streams) and deletes its streams.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use cloudevents::AttributesReader;
use common::sequence::{self, step2, text_event, text_of, three_steps};
use common::*;

fn nats_url() -> String {
    std::env::var("EVMESH_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

/// A name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8])
}

/// Deletes the JetStream streams of channels `default/<name>` when dropped (also when the
/// test fails).
struct Streams(Vec<String>);

impl Streams {
    fn of_channels(names: &[&str]) -> Streams {
        Streams(
            names
                .iter()
                .map(|n| evmesh_channels::nats::stream_name("default", n))
                .collect(),
        )
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        let url = nats_url();
        // Dropped inside the test's runtime: delete from a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(client) = async_nats::connect(url.as_str()).await {
                    let js = async_nats::jetstream::new(client);
                    for name in names {
                        let _ = js.delete_stream(&name).await;
                    }
                }
            });
        })
        .join();
    }
}

async fn nats_mesh(yaml: &str) -> TestMesh {
    mesh_with(yaml, |o| evmesh::Options {
        nats_url: nats_url(),
        ..o
    })
    .await
}

fn channel_yaml(name: &str, spec: &str) -> String {
    format!(
        r#"
apiVersion: messaging.knative.dev/v1alpha1
kind: NatsJetStreamChannel
metadata:
  name: {name}
spec:
{spec}
"#
    )
}

fn subscription_yaml(name: &str, channel: &str, subscriber: &str, delivery: &str) -> String {
    format!(
        r#"
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata:
  name: {name}
spec:
  channel:
    apiVersion: messaging.knative.dev/v1alpha1
    kind: NatsJetStreamChannel
    name: {channel}
  subscriber:
    uri: {subscriber}
{delivery}
"#
    )
}

async fn subscription_counters(base: &str, name: &str) -> serde_json::Value {
    let (_, s) = get_json(&format!(
        "{base}/apis/messaging.knative.dev/v1/namespaces/default/subscriptions/{name}"
    ))
    .await;
    s["status"]["evmesh"]["counters"].clone()
}

#[tokio::test]
async fn every_subscription_of_a_nats_jetstream_channel_gets_every_event() {
    let ch = unique("fanout");
    let _streams = Streams::of_channels(&[&ch]);
    let sinks = [
        TestSink::start().await,
        TestSink::start().await,
        TestSink::start().await,
    ];
    let mut yaml = channel_yaml(&ch, "  stream:\n    config:\n      maxAge: 1h");
    for (i, sink) in sinks.iter().enumerate() {
        yaml.push_str(&subscription_yaml(
            &format!("{ch}-{i}"),
            &ch,
            &sink.url(),
            "",
        ));
    }
    let m = nats_mesh(&yaml).await;
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
            Duration::from_secs(10),
            || {
                let mut got = sink.ids();
                got.sort();
                got == ids
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_nats_jetstream_subscription_dead_letters_what_its_subscriber_refuses() {
    let ch = unique("dls");
    let _streams = Streams::of_channels(&[&ch]);
    let subscriber = TestSink::start().await;
    subscriber.always(Reply::Status(500));
    let dead = TestSink::start().await;
    let delivery = format!(
        "  delivery:\n    retry: 1\n    backoffPolicy: linear\n    backoffDelay: PT0.01S\n    deadLetterSink:\n      uri: {}\n",
        dead.url()
    );
    let yaml =
        channel_yaml(&ch, "  {}") + &subscription_yaml(&ch, &ch, &subscriber.url(), &delivery);
    let m = nats_mesh(&yaml).await;
    post_ok(
        &m.url(&format!("/channels/default/{ch}")),
        event("refused", "t"),
    )
    .await;
    eventually(
        "the dead-letter sink gets the event",
        Duration::from_secs(10),
        || dead.count() == 1,
    )
    .await;
    assert_eq!(
        subscriber.ids(),
        ["refused", "refused"],
        "one retry, then dead letter"
    );
    let r = &dead.received()[0];
    assert_eq!(r.event().id(), "refused");
    assert_eq!(r.header("ce-knativeerrorcode").as_deref(), Some("500"));
    let counters = subscription_counters(&m.url(""), &ch).await;
    assert_eq!(counters["deadLettered"], 1, "{counters}");
}

/// The Sequence of Knative's docs, on NatsJetStreamChannels.
fn nats_sequence_yaml(name: &str, steps: &[TestSink; 4]) -> String {
    format!(
        r#"
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata:
  name: {name}
spec:
  channelTemplate:
    apiVersion: messaging.knative.dev/v1alpha1
    kind: NatsJetStreamChannel
  steps:
    - uri: {}
    - uri: {}
    - uri: {}
  reply:
    uri: {}
"#,
        steps[0].url(),
        steps[1].url(),
        steps[2].url(),
        steps[3].url()
    )
}

fn sequence_channels(name: &str) -> Vec<String> {
    (0..3).map(|i| format!("{name}-kn-sequence-{i}")).collect()
}

#[tokio::test]
async fn a_sequence_on_nats_jetstream_channels_runs_its_steps_in_order_and_sends_the_last_reply() {
    let name = unique("seq");
    let channels = sequence_channels(&name);
    let _streams = Streams::of_channels(&channels.iter().map(String::as_str).collect::<Vec<_>>());
    let s = three_steps().await;
    let m = nats_mesh(&nats_sequence_yaml(&name, &s)).await;
    let (code, seq) = get_json(&m.url(&format!(
        "/apis/flows.knative.dev/v1/namespaces/default/sequences/{name}"
    )))
    .await;
    assert_eq!(code, 200, "{seq}");
    assert_eq!(
        seq["status"]["channelStatuses"][0]["channel"]["kind"], "NatsJetStreamChannel",
        "{seq}"
    );
    sequence::sequence_runs_its_steps_in_order_and_sends_the_last_reply(
        &m.url(&format!("/channels/default/{}", channels[0])),
        &s,
    )
    .await;
}

#[tokio::test]
async fn kill_9_with_events_inside_a_nats_sequence_then_restart_loses_none() {
    let name = unique("crash");
    let channels = sequence_channels(&name);
    let _streams = Streams::of_channels(&channels.iter().map(String::as_str).collect::<Vec<_>>());
    let s = three_steps().await;
    // Step 2 fails until the restart: the events wait inside the sequence, retrying.
    s[1].always(Reply::Status(503));
    let yaml = nats_sequence_yaml(&name, &s)
        .replace(
            "    kind: NatsJetStreamChannel\n",
            "    kind: NatsJetStreamChannel\n    spec:\n      consumerConfigTemplate:\n        ackWait: 2s\n",
        )
        .replace(
            &format!("    - uri: {}\n", s[1].url()),
            &format!(
                "    - uri: {}\n      delivery: {{retry: 10000, backoffPolicy: linear, backoffDelay: PT0.01S}}\n",
                s[1].url()
            ),
        );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &yaml);
    let data = dir.path().join("data");
    let em = EvmeshProcess::start(&config, &data, &["--nats-url", &nats_url()]);
    let ids: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for id in &ids {
        post_ok(
            &em.url(&format!("/channels/default/{}", channels[0])),
            text_event(id, "x"),
        )
        .await;
    }
    eventually(
        "every event reached the failing step",
        Duration::from_secs(20),
        || {
            let got: std::collections::HashSet<String> = s[1].ids().into_iter().collect();
            ids.iter().all(|id| got.contains(id))
        },
    )
    .await;
    em.kill9();
    s[1].always(Reply::Map(step2));
    let em = EvmeshProcess::start(&config, &data, &["--nats-url", &nats_url()]);
    eventually(
        "every event reaches the end after the restart",
        Duration::from_secs(30),
        || {
            let got: std::collections::HashSet<String> = s[3].ids().into_iter().collect();
            ids.iter().all(|id| got.contains(id))
        },
    )
    .await;
    assert!(
        s[3].received()
            .iter()
            .all(|r| text_of(r.event()) == "x-step1-step2-step3"),
        "{}",
        em.stderr_tail()
    );
}

#[tokio::test]
async fn two_evmesh_processes_on_one_nats_share_a_subscription() {
    let ch = unique("shared");
    let _streams = Streams::of_channels(&[&ch]);
    let sink = TestSink::start().await;
    let yaml = channel_yaml(&ch, "  {}") + &subscription_yaml(&ch, &ch, &sink.url(), "");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &yaml);
    let a = EvmeshProcess::start(&config, &dir.path().join("a"), &["--nats-url", &nats_url()]);
    let b = EvmeshProcess::start(&config, &dir.path().join("b"), &["--nats-url", &nats_url()]);
    let ids: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        // Half the events come in through each process: the stream is the one both read.
        let via = if i % 2 == 0 { &a } else { &b };
        post_ok(&via.url(&format!("/channels/default/{ch}")), event(id, "t")).await;
    }
    let base_a = a.url("");
    let base_b = b.url("");
    let mut delivered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while delivered < ids.len() as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {delivered} deliveries; sink got {:?}",
            sink.ids()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        delivered = subscription_counters(&base_a, &ch).await["delivered"]
            .as_u64()
            .unwrap_or(0)
            + subscription_counters(&base_b, &ch).await["delivered"]
                .as_u64()
                .unwrap_or(0);
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for id in sink.ids() {
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(
        delivered,
        ids.len() as u64,
        "the processes delivered {delivered} times"
    );
    for id in &ids {
        assert_eq!(counts.get(id), Some(&1), "{id} delivered once: {counts:?}");
    }
}

#[tokio::test]
async fn the_config_nats_configmap_says_where_nats_is() {
    let ch = unique("cm");
    let _streams = Streams::of_channels(&[&ch]);
    let sink = TestSink::start().await;
    let yaml = format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: config-nats
  namespace: knative-eventing
data:
  eventing-nats: |
    url: {}
    connOpts:
      retryOnFailedConnect: true
---
{}{}"#,
        nats_url(),
        channel_yaml(&ch, "  {}"),
        subscription_yaml(&ch, &ch, &sink.url(), "")
    );
    // Nothing listens on the option's address: only the ConfigMap's URL works.
    let m = mesh_with(&yaml, |o| evmesh::Options {
        nats_url: "nats://127.0.0.1:1".to_string(),
        ..o
    })
    .await;
    post_ok(
        &m.url(&format!("/channels/default/{ch}")),
        event("via-cm", "t"),
    )
    .await;
    eventually(
        "the subscriber gets the event",
        Duration::from_secs(10),
        || sink.ids() == ["via-cm"],
    )
    .await;
}

#[tokio::test]
async fn a_nats_jetstream_channel_is_listed_with_its_address_and_subscribers() {
    let ch = unique("status");
    let _streams = Streams::of_channels(&[&ch]);
    let sink = TestSink::start().await;
    let yaml = channel_yaml(&ch, "  {}") + &subscription_yaml(&ch, &ch, &sink.url(), "");
    let m = nats_mesh(&yaml).await;
    let (code, c) = get_json(&m.url(&format!(
        "/apis/messaging.knative.dev/v1alpha1/namespaces/default/natsjetstreamchannels/{ch}"
    )))
    .await;
    assert_eq!(code, 200, "{c}");
    assert_eq!(
        c["status"]["address"]["url"],
        m.url(&format!("/channels/default/{ch}")),
        "{c}"
    );
    assert_eq!(c["status"]["subscribers"][0]["ready"], "True", "{c}");
}

#[tokio::test]
async fn a_channel_whose_template_is_nats_jetstream_delivers_to_its_subscription() {
    let ch = unique("generic");
    let _streams = Streams::of_channels(&[&ch]);
    let sink = TestSink::start().await;
    let yaml = format!(
        r#"
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata:
  name: {ch}
spec:
  channelTemplate:
    apiVersion: messaging.knative.dev/v1alpha1
    kind: NatsJetStreamChannel
    spec:
      stream:
        config:
          maxAge: 1h
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata:
  name: {ch}
spec:
  channel:
    apiVersion: messaging.knative.dev/v1
    kind: Channel
    name: {ch}
  subscriber:
    uri: {}
"#,
        sink.url()
    );
    let m = nats_mesh(&yaml).await;
    let (_, c) = get_json(&m.url(&format!(
        "/apis/messaging.knative.dev/v1/namespaces/default/channels/{ch}"
    )))
    .await;
    assert_eq!(
        c["status"]["channel"]["kind"], "NatsJetStreamChannel",
        "{c}"
    );
    post_ok(&m.url(&format!("/channels/default/{ch}")), event("g1", "t")).await;
    eventually(
        "the subscriber gets the event",
        Duration::from_secs(10),
        || sink.ids() == ["g1"],
    )
    .await;
}

#[tokio::test]
async fn without_nats_a_nats_jetstream_channel_is_not_ready_and_the_rest_of_the_mesh_runs() {
    let ch = unique("down");
    let sink = TestSink::start().await;
    let yaml = channel_yaml(&ch, "  {}")
        + &subscription_yaml(&ch, &ch, &sink.url(), "")
        + &format!(
            r#"
---
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata:
  name: {ch}-imc
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata:
  name: {ch}-imc
spec:
  channel:
    apiVersion: messaging.knative.dev/v1
    kind: InMemoryChannel
    name: {ch}-imc
  subscriber:
    uri: {}
"#,
            sink.url()
        );
    // Nothing listens there.
    let m = mesh_with(&yaml, |o| evmesh::Options {
        nats_url: "nats://127.0.0.1:1".to_string(),
        ..o
    })
    .await;
    let (_, sub) = get_json(&m.url(&format!(
        "/apis/messaging.knative.dev/v1/namespaces/default/subscriptions/{ch}"
    )))
    .await;
    let text = sub["status"].to_string();
    assert!(text.contains("connecting to NATS"), "{sub}");
    let (_, channel) = get_json(&m.url(&format!(
        "/apis/messaging.knative.dev/v1alpha1/namespaces/default/natsjetstreamchannels/{ch}"
    )))
    .await;
    assert_eq!(
        channel["status"]["conditions"][0]["reason"], "LogUnavailable",
        "{channel}"
    );
    let (code, ready) = get_text(&m.url("/readyz")).await;
    assert_eq!(code, 503, "{ready}");
    assert!(ready.contains(&format!("channel default/{ch}")), "{ready}");
    assert_eq!(
        post_binary(
            &m.url(&format!("/channels/default/{ch}")),
            event("lost", "t")
        )
        .await,
        503,
        "a channel whose log cannot be opened takes no event (503: try again later)"
    );
    post_ok(
        &m.url(&format!("/channels/default/{ch}-imc")),
        event("imc", "t"),
    )
    .await;
    eventually(
        "the InMemoryChannel still delivers",
        Duration::from_secs(10),
        || sink.ids() == ["imc"],
    )
    .await;
}

/// A NatsJetStreamChannel `ch` and its subscription `<ch>-sub` to `sink`, with `annotations`.
fn replay_yaml(ch: &str, sink: &TestSink, annotations: &str) -> String {
    format!(
        r#"{}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata:
  name: {ch}-sub
  annotations: {{{annotations}}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1alpha1, kind: NatsJetStreamChannel, name: {ch}}}
  subscriber: {{uri: "{}"}}
"#,
        channel_yaml(ch, "  stream:\n    config:\n      maxAge: 1h"),
        sink.url()
    )
}

async fn idle(m: &TestMesh) {
    tokio::time::timeout(Duration::from_secs(30), m.mesh.wait_idle())
        .await
        .expect("the mesh becomes idle")
        .expect("the mesh runs");
}

fn sorted_ids(sink: &TestSink) -> Vec<String> {
    let mut ids = sink.ids();
    ids.sort();
    ids
}

#[tokio::test]
async fn replay_from_earliest_on_a_nats_jetstream_subscription_redelivers_once_per_value() {
    let ch = unique("replay");
    let _streams = Streams::of_channels(&[&ch]);
    let sink = TestSink::start().await;
    let m = nats_mesh(&replay_yaml(&ch, &sink, "")).await;
    for id in ["1", "2"] {
        post_ok(&m.url(&format!("/channels/default/{ch}")), event(id, "t")).await;
    }
    idle(&m).await;
    assert_eq!(sorted_ids(&sink), ["1", "2"]);
    m.mesh.shutdown().await;

    // The annotation recreates the subscription's consumer from the stream's start...
    let annotated = replay_yaml(&ch, &sink, r#""evmesh.dev/replay-from": earliest"#);
    let m = nats_mesh(&annotated).await;
    idle(&m).await;
    assert_eq!(sorted_ids(&sink), ["1", "1", "2", "2"]);
    m.mesh.shutdown().await;
    // ...once: a process started again with the same value does not replay again.
    let m = nats_mesh(&annotated).await;
    post_ok(&m.url(&format!("/channels/default/{ch}")), event("3", "t")).await;
    idle(&m).await;
    assert_eq!(sorted_ids(&sink), ["1", "1", "2", "2", "3"]);
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn replay_by_time_on_a_nats_jetstream_subscription_redelivers_only_what_was_published_since()
{
    let ch = unique("replayt");
    let _streams = Streams::of_channels(&[&ch]);
    let sink = TestSink::start().await;
    let m = nats_mesh(&replay_yaml(&ch, &sink, "")).await;
    let url = m.url(&format!("/channels/default/{ch}"));
    post_ok(&url, event("old", "t")).await;
    idle(&m).await;
    // JetStream keeps nanosecond publish times: the replay time is after the old record's.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    let t = now() + 1;
    while now() <= t {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    post_ok(&url, event("new", "t")).await;
    idle(&m).await;
    assert_eq!(sorted_ids(&sink), ["new", "old"]);

    m.mesh.shutdown().await;

    let from = evmesh::evmesh_config::ReplayFrom::TimeMs(t).to_string();
    let annotated = replay_yaml(
        &ch,
        &sink,
        &format!(r#""evmesh.dev/replay-from": "{from}""#),
    );
    let m = nats_mesh(&annotated).await;
    idle(&m).await;
    assert_eq!(sorted_ids(&sink), ["new", "new", "old"]);
    m.mesh.shutdown().await;
}

#[tokio::test]
async fn a_nats_jetstream_channel_deleted_through_the_api_stops_taking_events() {
    let ch = unique("deleted");
    let _streams = Streams::of_channels(&[&ch]);
    let m = nats_mesh("").await;
    let collection =
        m.url("/apis/messaging.knative.dev/v1alpha1/namespaces/default/natsjetstreamchannels");
    let resp = client()
        .post(&collection)
        .header("content-type", "application/yaml")
        .body(channel_yaml(&ch, "  {}"))
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
async fn a_subscription_whose_consumer_cannot_be_created_starts_by_itself_once_it_can() {
    let ch = unique("blocked");
    let sub = format!("{ch}-sub");
    let _streams = Streams::of_channels(&[&ch]);
    let sink = TestSink::start().await;
    let m = nats_mesh(&channel_yaml(&ch, "")).await;
    // A consumer of the subscription's name that is not a pull consumer (someone else's, or
    // left from elsewhere): evmesh cannot open its group on it.
    let js = async_nats::jetstream::new(
        async_nats::connect(nats_url().as_str())
            .await
            .expect("connect to NATS"),
    );
    let stream = js
        .get_stream(evmesh_channels::nats::stream_name("default", &ch))
        .await
        .expect("the channel's stream");
    let consumer = format!(
        "KN_SUB_DEFAULT__{}",
        sub.to_ascii_uppercase().replace('-', "_")
    );
    stream
        .create_consumer(async_nats::jetstream::consumer::push::Config {
            durable_name: Some(consumer.clone()),
            deliver_subject: format!("elsewhere.{consumer}"),
            ..Default::default()
        })
        .await
        .expect("a push consumer in the way");

    let (code, body) = {
        let resp = client()
            .post(m.url("/apis/messaging.knative.dev/v1/namespaces/default/subscriptions"))
            .header("content-type", "application/yaml")
            .body(subscription_yaml(&sub, &ch, &sink.url(), ""))
            .send()
            .await
            .expect("apply");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    };
    assert!(code == 200 || code == 201, "{code} {body}");
    let status_url = m.url(&format!(
        "/apis/messaging.knative.dev/v1/namespaces/default/subscriptions/{sub}"
    ));
    let mut reason = String::new();
    for _ in 0..100 {
        let (_, s) = get_json(&status_url).await;
        reason = s["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if reason.contains("consumer") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reason.contains("consumer"),
        "not ready for its consumer: {reason}"
    );

    // Out of the way: the subscription starts without being applied again, and delivers.
    stream
        .delete_consumer(&consumer)
        .await
        .expect("delete the consumer in the way");
    let mut ready = false;
    for _ in 0..150 {
        let (_, s) = get_json(&status_url).await;
        if s["status"]["conditions"][0]["status"] == "True" {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the subscription did not start by itself");
    post_ok(
        &m.url(&format!("/channels/default/{ch}")),
        event("after", "t"),
    )
    .await;
    eventually("delivered", Duration::from_secs(10), || {
        sink.ids() == ["after"]
    })
    .await;
}

/// A subscription gets what its channel took after it was created, even when its run (and so
/// its durable consumer) starts later; nothing the channel took before it was created.
#[tokio::test]
async fn a_new_subscription_gets_what_its_channel_took_between_its_creation_and_its_start() {
    let ch = unique("late");
    let _streams = Streams::of_channels(&[&ch]);
    let m = nats_mesh(&channel_yaml(&ch, "")).await;
    late_subscription::gets_what_its_channel_took_between_its_creation_and_its_start(
        &m,
        ("messaging.knative.dev/v1alpha1", "NatsJetStreamChannel"),
        &ch,
    )
    .await;
}
