//! In-process subscribers behind a channel: a Subscription whose `subscriber` and `reply` are
//! `ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber}` Destinations, at the service level
//! (the Channel and Subscription YAML kinds are another issue's), as tests/channel_dataplane.rs.

use std::time::Duration;

use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use evmesh::evmesh_broker::record::EventRecord;
use evmesh::evmesh_broker::{BrokerService, ServiceOptions};
use evmesh::evmesh_config::{
    ChannelConfig, ChannelKind, Destination, KReference, MeshConfig, ObjectMeta, Resolver,
    SubscriptionConfig,
};

fn subscriber(name: &str) -> Destination {
    Destination {
        reference: Some(KReference {
            api_version: "evmesh.dev/v1alpha1".into(),
            kind: "Subscriber".into(),
            name: name.into(),
            namespace: None,
        }),
        ..Destination::default()
    }
}

#[tokio::test]
async fn a_subscription_delivers_to_an_in_process_subscriber_and_its_reply_to_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = evmesh::evmesh_store::open(Default::default(), dir.path()).expect("store");
    let service = BrokerService::new(store, ServiceOptions::default()).expect("service");
    let mesh = MeshConfig {
        channels: vec![ChannelConfig {
            kind: ChannelKind::InMemory,
            metadata: ObjectMeta::namespaced("demo", "c"),
            delivery: None,
            spec: serde_json::Value::Null,
            location: None,
        }],
        subscriptions: vec![SubscriptionConfig {
            metadata: ObjectMeta::namespaced("demo", "s"),
            channel: (ChannelKind::InMemory, "c".into()),
            subscriber: Some(subscriber("work")),
            reply: Some(subscriber("results")),
            delivery: None,
            location: None,
        }],
        ..MeshConfig::default()
    };
    // No server: in-process addresses never need one.
    let resolver = Resolver::new(&mesh, "http://127.0.0.1:1".parse().expect("url"), None);
    service
        .reconcile(&mesh, &resolver)
        .await
        .expect("reconcile");
    let mut work = service.subscribers().subscribe("demo", "work");
    let mut results = service.subscribers().subscribe("demo", "results");
    let event = EventBuilderV10::new()
        .id("job-1")
        .source("/jobs")
        .ty("job.created")
        .build()
        .expect("event");
    service
        .publish_channel("demo", "c", EventRecord::from_event(event).expect("record"))
        .await
        .expect("publish");
    let wait = Duration::from_secs(10);
    let job = tokio::time::timeout(wait, work.next())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(job.event().id(), "job-1");
    job.reply(
        EventBuilderV10::new()
            .id("result-1")
            .source("/workers")
            .ty("job.done")
            .build()
            .expect("reply"),
    );
    let result = tokio::time::timeout(wait, results.next())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(result.event().id(), "result-1");
    // A reply hop wants no reply of its own.
    assert!(!result.wants_reply());
    result.ack();
    let delivered = || {
        service
            .subscription("demo", "s")
            .is_some_and(|s| s.counters.delivered == 1)
    };
    let deadline = tokio::time::Instant::now() + wait;
    while !delivered() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not counted as delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    service.shutdown().await;
}
