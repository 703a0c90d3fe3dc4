//! InMemoryChannels, generic Channels and Subscriptions: addresses, Knative's status shapes,
//! and the admin API.

mod common;

use common::*;
use serde_json::Value;

async fn send(method: reqwest::Method, url: &str, body: Option<String>) -> (u16, Value) {
    let mut req = client().request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/yaml").body(b);
    }
    let resp = req.send().await.expect("request");
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

const CHANNEL: &str = r#"
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: orders}
spec:
  delivery:
    deadLetterSink: {uri: "http://127.0.0.1:9/dls"}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: audit}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: orders}
  subscriber: {uri: "http://127.0.0.1:9/audit"}
  reply: {uri: "http://127.0.0.1:9/replies"}
"#;

fn api(m: &TestMesh, plural: &str) -> String {
    m.url(&format!(
        "/apis/messaging.knative.dev/v1/namespaces/default/{plural}"
    ))
}

#[tokio::test]
async fn a_channel_shows_its_address_backing_channel_and_subscribers() {
    let m = mesh(CHANNEL).await;
    let (code, ch) = get_json(&format!("{}/orders", api(&m, "channels"))).await;
    assert_eq!(code, 200, "{ch}");
    let st = &ch["status"];
    assert_eq!(
        st["address"]["url"],
        m.url("/channels/default/orders"),
        "{ch}"
    );
    assert_eq!(st["channel"]["kind"], "InMemoryChannel");
    assert_eq!(st["deadLetterSinkUri"], "http://127.0.0.1:9/dls");
    assert_eq!(st["subscribers"].as_array().map(Vec::len), Some(1), "{ch}");
    let (_, sub) = get_json(&format!("{}/audit", api(&m, "subscriptions"))).await;
    assert_eq!(st["subscribers"][0]["uid"], sub["metadata"]["uid"]);
    // The backing InMemoryChannel, owned by the Channel.
    let (code, imc) = get_json(&format!("{}/orders", api(&m, "inmemorychannels"))).await;
    assert_eq!(code, 200, "{imc}");
    assert_eq!(imc["metadata"]["ownerReferences"][0]["kind"], "Channel");
    assert_eq!(
        imc["spec"]["delivery"]["deadLetterSink"]["uri"],
        "http://127.0.0.1:9/dls"
    );
}

#[tokio::test]
async fn a_subscription_shows_its_physical_subscription_with_the_channels_dead_letter_sink() {
    let m = mesh(CHANNEL).await;
    let (_, sub) = get_json(&format!("{}/audit", api(&m, "subscriptions"))).await;
    let p = &sub["status"]["physicalSubscription"];
    assert_eq!(p["subscriberUri"], "http://127.0.0.1:9/audit", "{sub}");
    assert_eq!(p["replyUri"], "http://127.0.0.1:9/replies");
    assert_eq!(p["deadLetterSinkUri"], "http://127.0.0.1:9/dls");
}

#[tokio::test]
async fn a_subscription_to_a_missing_channel_is_not_ready_with_knatives_reason() {
    let m = mesh("").await;
    let (code, obj) = send(
        reqwest::Method::POST,
        &api(&m, "subscriptions"),
        Some("apiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {name: s}\nspec:\n  channel: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: later}\n  subscriber: {uri: \"http://127.0.0.1:9/\"}\n".into()),
    )
    .await;
    assert_eq!(code, 201, "{obj}");
    let c = &obj["status"]["conditions"][0];
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("ChannelReferenceFailed")),
        "{obj}"
    );
    let (code, _) = send(
        reqwest::Method::POST,
        &api(&m, "inmemorychannels"),
        Some("apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {name: later}\n".into()),
    )
    .await;
    assert_eq!(code, 201);
    let (_, obj) = get_json(&format!("{}/s", api(&m, "subscriptions"))).await;
    assert_eq!(obj["status"]["conditions"][0]["status"], "True", "{obj}");
}

#[tokio::test]
async fn a_subscriptions_channel_cannot_change() {
    let m = mesh(CHANNEL).await;
    let changed = CHANNEL
        .split("---")
        .nth(1)
        .unwrap_or_default()
        .replace("name: orders}", "name: other}");
    let (code, obj) = send(
        reqwest::Method::PUT,
        &format!("{}/audit", api(&m, "subscriptions")),
        Some(changed),
    )
    .await;
    assert_eq!(code, 422, "{obj}");
    assert!(obj.to_string().contains("spec.channel"), "{obj}");
}
