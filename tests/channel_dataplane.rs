//! The channel data plane at the service level: channels as durable logs at
//! `/channels/{ns}/{name}`, subscriptions delivering every event through the shared delivery
//! engine, replies on to a Destination, dead letters, and in-process hand-over between evmesh's
//! own addresses. The configuration is built as validation builds it (`ChannelConfig`,
//! `SubscriptionConfig`); the YAML kinds are tested in tests/channels.rs and tests/flows.rs.

mod common;

use std::time::Duration;

use common::{Reply, TestSink, event, eventually, post_binary};
use evmesh::evmesh_broker::{BrokerService, ServiceOptions};
use evmesh::evmesh_config::{
    ChannelConfig, ChannelKind, Delivery, Destination, MeshConfig, ObjectMeta, Resolver,
    SubscriptionConfig,
};

struct Plane {
    service: BrokerService,
    base: url::Url,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Plane {
    async fn start() -> Plane {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = evmesh::evmesh_store::open(Default::default(), dir.path()).expect("store");
        let service = BrokerService::new(store, ServiceOptions::default()).expect("service");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base: url::Url = format!("http://{}", listener.local_addr().expect("addr"))
            .parse()
            .expect("url");
        let app = evmesh::evmesh_broker::ingress::routes(service.clone(), 1 << 20);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Plane {
            service,
            base,
            _dir: dir,
            server,
        }
    }

    async fn apply(&self, mesh: &MeshConfig) {
        let resolver = Resolver::new(mesh, self.base.clone(), None);
        self.service
            .reconcile(mesh, &resolver)
            .await
            .expect("reconcile");
    }

    fn channel_url(&self, name: &str) -> String {
        format!("{}channels/demo/{name}", self.base)
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn channel(name: &str, delivery: Option<Delivery>) -> ChannelConfig {
    ChannelConfig {
        kind: ChannelKind::InMemory,
        metadata: ObjectMeta::namespaced("demo", name),
        delivery,
        spec: serde_json::Value::Null,
        location: None,
    }
}

fn subscription(
    name: &str,
    channel: &str,
    subscriber: Option<&str>,
    reply: Option<&str>,
    delivery: Option<Delivery>,
) -> SubscriptionConfig {
    SubscriptionConfig {
        metadata: ObjectMeta::namespaced("demo", name),
        channel: (ChannelKind::InMemory, channel.to_string()),
        subscriber: subscriber.map(Destination::uri),
        reply: reply.map(Destination::uri),
        delivery,
        location: None,
    }
}

fn retries(n: u32) -> Delivery {
    let mut d = Delivery::single_attempt();
    d.retry = n;
    d
}

#[tokio::test]
async fn an_event_posted_to_a_channel_reaches_every_subscription() {
    let plane = Plane::start().await;
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let mesh = MeshConfig {
        channels: vec![channel("c", None)],
        subscriptions: vec![
            subscription("a", "c", Some(&a.url()), None, None),
            subscription("b", "c", Some(&b.url()), None, None),
        ],
        ..MeshConfig::default()
    };
    plane.apply(&mesh).await;
    for i in 0..5 {
        assert_eq!(
            post_binary(&plane.channel_url("c"), event(&format!("e{i}"), "t")).await,
            202
        );
    }
    eventually(
        "both subscribers get all 5",
        Duration::from_secs(10),
        || a.count() == 5 && b.count() == 5,
    )
    .await;
    let mut ids = a.ids();
    ids.sort();
    assert_eq!(ids, ["e0", "e1", "e2", "e3", "e4"]);
}

#[tokio::test]
async fn a_channel_that_does_not_exist_answers_404() {
    let plane = Plane::start().await;
    plane.apply(&MeshConfig::default()).await;
    assert_eq!(
        post_binary(&plane.channel_url("nope"), event("1", "t")).await,
        404
    );
}

#[tokio::test]
async fn a_subscriber_reply_goes_to_the_subscription_reply() {
    let plane = Plane::start().await;
    let (sub, reply) = (TestSink::start().await, TestSink::start().await);
    sub.always(Reply::Map(|e| {
        let mut r = e.clone();
        cloudevents::event::AttributesWriter::set_type(&mut r, "t.replied");
        r
    }));
    let mesh = MeshConfig {
        channels: vec![channel("c", None)],
        subscriptions: vec![subscription(
            "s",
            "c",
            Some(&sub.url()),
            Some(&reply.url()),
            None,
        )],
        ..MeshConfig::default()
    };
    plane.apply(&mesh).await;
    assert_eq!(
        post_binary(&plane.channel_url("c"), event("1", "t")).await,
        202
    );
    eventually("the reply arrives", Duration::from_secs(10), || {
        reply.count() == 1
    })
    .await;
    let got = reply.received()[0].event().clone();
    assert_eq!(cloudevents::AttributesReader::ty(&got), "t.replied");
}

#[tokio::test]
async fn a_subscription_without_subscriber_forwards_every_event_to_its_reply() {
    let plane = Plane::start().await;
    let reply = TestSink::start().await;
    let mesh = MeshConfig {
        channels: vec![channel("c", None)],
        subscriptions: vec![subscription("s", "c", None, Some(&reply.url()), None)],
        ..MeshConfig::default()
    };
    plane.apply(&mesh).await;
    assert_eq!(
        post_binary(&plane.channel_url("c"), event("1", "t")).await,
        202
    );
    eventually("forwarded", Duration::from_secs(10), || reply.count() == 1).await;
    assert_eq!(reply.ids(), ["1"]);
}

#[tokio::test]
async fn a_failing_reply_target_fails_the_whole_delivery_which_is_retried() {
    let plane = Plane::start().await;
    let (sub, reply) = (TestSink::start().await, TestSink::start().await);
    sub.always(Reply::Map(|e| e.clone()));
    reply.script([Reply::Status(503)]);
    let mesh = MeshConfig {
        channels: vec![channel("c", None)],
        subscriptions: vec![subscription(
            "s",
            "c",
            Some(&sub.url()),
            Some(&reply.url()),
            Some(retries(2)),
        )],
        ..MeshConfig::default()
    };
    plane.apply(&mesh).await;
    assert_eq!(
        post_binary(&plane.channel_url("c"), event("1", "t")).await,
        202
    );
    eventually(
        "reply stored on the second try",
        Duration::from_secs(10),
        || reply.count() == 2,
    )
    .await;
    assert_eq!(sub.count(), 2, "the subscriber is called again (Knative)");
}

#[tokio::test]
async fn subscription_delivery_replaces_the_channels() {
    let plane = Plane::start().await;
    let (sub, channel_dls, sub_dls) = (
        TestSink::start().await,
        TestSink::start().await,
        TestSink::start().await,
    );
    sub.always(Reply::Status(500));
    let mut channel_delivery = retries(0);
    channel_delivery.dead_letter_sink = Some(Destination::uri(&channel_dls.url()));
    let mut own = retries(1);
    own.dead_letter_sink = Some(Destination::uri(&sub_dls.url()));
    let mesh = MeshConfig {
        channels: vec![channel("c", Some(channel_delivery))],
        subscriptions: vec![
            subscription("own", "c", Some(&sub.url()), None, Some(own)),
            subscription("inherits", "c", Some(&sub.url()), None, None),
        ],
        ..MeshConfig::default()
    };
    plane.apply(&mesh).await;
    assert_eq!(
        post_binary(&plane.channel_url("c"), event("1", "t")).await,
        202
    );
    eventually("each dead letter arrives", Duration::from_secs(10), || {
        channel_dls.count() == 1 && sub_dls.count() == 1
    })
    .await;
    // `own` tried twice (retry 1), `inherits` once (the channel's retry 0).
    eventually("3 attempts in all", Duration::from_secs(10), || {
        sub.count() == 3
    })
    .await;
    let dead = sub_dls.received()[0].event().clone();
    assert_eq!(
        dead.extension("knativeerrorcode").map(|v| v.to_string()),
        Some("500".to_string())
    );
}

#[tokio::test]
async fn a_reply_into_another_channel_is_handed_over_in_process() {
    // Two channels chained: c1 → (subscriber replies) → c2 → sink. The reply URL is evmesh's own
    // channel address, so it is appended in memory: it still arrives after evmesh's HTTP server
    // is stopped.
    let mut plane = Plane::start().await;
    let (step, sink) = (TestSink::start().await, TestSink::start().await);
    step.always(Reply::Map(|e| e.clone()));
    let mesh = MeshConfig {
        channels: vec![channel("c1", None), channel("c2", None)],
        subscriptions: vec![
            subscription(
                "s1",
                "c1",
                Some(&step.url()),
                Some(&plane.channel_url("c2")),
                None,
            ),
            subscription("s2", "c2", Some(&sink.url()), None, None),
        ],
        ..MeshConfig::default()
    };
    plane.apply(&mesh).await;
    assert_eq!(
        post_binary(&plane.channel_url("c1"), event("1", "t")).await,
        202
    );
    plane.server.abort();
    let _ = (&mut plane.server).await;
    assert!(
        common::client()
            .post(plane.channel_url("c2"))
            .send()
            .await
            .is_err(),
        "evmesh's HTTP server is down"
    );
    eventually("chained", Duration::from_secs(10), || sink.count() == 1).await;
    let c2 = plane.service.channel("demo", "c2").expect("c2 runs");
    assert_eq!(c2.counters.accepted, 1);
    let s1 = plane.service.subscription("demo", "s1").expect("s1 runs");
    assert_eq!(
        s1.reply_uri.as_deref(),
        Some(plane.channel_url("c2").as_str())
    );
}

#[tokio::test]
async fn a_subscription_whose_channel_is_missing_is_not_ready_and_starts_when_it_appears() {
    let plane = Plane::start().await;
    let sink = TestSink::start().await;
    let mut mesh = MeshConfig {
        subscriptions: vec![subscription("s", "later", Some(&sink.url()), None, None)],
        ..MeshConfig::default()
    };
    plane.apply(&mesh).await;
    let s = plane.service.subscription("demo", "s").expect("known");
    assert_eq!(s.not_ready_code.as_deref(), Some("ChannelDoesNotExist"));
    mesh.channels.push(channel("later", None));
    plane.apply(&mesh).await;
    assert_eq!(
        plane
            .service
            .subscription("demo", "s")
            .expect("known")
            .not_ready_code,
        None
    );
    assert_eq!(
        post_binary(&plane.channel_url("later"), event("1", "t")).await,
        202
    );
    eventually("delivered", Duration::from_secs(10), || sink.count() == 1).await;
}
