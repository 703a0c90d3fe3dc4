//! A Subscription whose run starts after its creation (its dead-letter sink, a Broker, does not
//! exist yet) gets what its channel took since it was created, and nothing from before: shared by
//! the channel kinds whose subscriptions read through a consumer group of their own
//! (`tests/nats_channel.rs`, `tests/kafka_channel.rs`).

use std::time::Duration;

use super::{TestMesh, TestSink, create, event, eventually, into_the_next_second, post_ok};

/// Runs the scenario on channel `name` of `kind` (`apiVersion`, `kind`), in namespace `default`
/// of `m`.
pub async fn gets_what_its_channel_took_between_its_creation_and_its_start(
    m: &TestMesh,
    kind: (&str, &str),
    name: &str,
) {
    let sink = TestSink::start().await;
    let address = m.url(&format!("/channels/default/{name}"));
    post_ok(&address, event("before", "t")).await;
    into_the_next_second().await;
    let subscription = format!(
        r#"
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata:
  name: {name}-sub
spec:
  channel: {{apiVersion: {}, kind: {}, name: {name}}}
  subscriber: {{uri: "{}"}}
  delivery:
    deadLetterSink:
      ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: later}}
"#,
        kind.0,
        kind.1,
        sink.url()
    );
    let (code, body) = create(
        &m.url("/apis/messaging.knative.dev/v1/namespaces/default/subscriptions"),
        &subscription,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    post_ok(&address, event("while-not-ready", "t")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sink.count(),
        0,
        "a subscription that is not ready delivers nothing"
    );
    let (code, body) = create(
        &m.url("/apis/eventing.knative.dev/v1/namespaces/default/brokers"),
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: later}\n",
    )
    .await;
    assert_eq!(code, 201, "{body}");
    post_ok(&address, event("after", "t")).await;
    eventually("both events delivered", Duration::from_secs(20), || {
        sink.count() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ids = sink.ids();
    ids.sort();
    assert_eq!(
        ids,
        ["after", "while-not-ready"],
        "what came after the subscription's creation, nothing before it"
    );
}
