//! InMemoryChannels, generic Channels and Subscriptions: addresses, Knative's status shapes,
//! and the admin API.

mod common;

use std::time::Duration;

use cloudevents::AttributesReader;
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

// ---- Data plane: events through channels and subscriptions (real evmesh, real HTTP sinks).

fn imc_with_subscriptions(delivery: &str, subs: &[(&str, &str)]) -> String {
    let mut y = format!(
        "apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {{name: orders}}\nspec:\n{delivery}\n"
    );
    for (name, spec) in subs {
        y.push_str(&format!(
            "---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: {name}}}\nspec:\n  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: orders}}\n{spec}\n"
        ));
    }
    y
}

fn appended(e: &cloudevents::Event) -> cloudevents::Event {
    let mut out = e.clone();
    let data = match e.data() {
        Some(cloudevents::Data::String(s)) => s.clone(),
        Some(cloudevents::Data::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(cloudevents::Data::Json(v)) => v.to_string(),
        None => String::new(),
    };
    out.set_data("text/plain", format!("{data}-replied"));
    out
}

#[tokio::test]
async fn an_event_posted_to_a_channel_reaches_every_subscription() {
    let sinks = [
        TestSink::start().await,
        TestSink::start().await,
        TestSink::start().await,
    ];
    let subs: Vec<(String, String)> = sinks
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                format!("s{i}"),
                format!("  subscriber: {{uri: \"{}\"}}", s.url()),
            )
        })
        .collect();
    let subs: Vec<(&str, &str)> = subs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let m = mesh(&imc_with_subscriptions(
        "  delivery: {retry: 2, backoffDelay: PT0.05S}",
        &subs,
    ))
    .await;
    for i in 0..5 {
        post_ok(
            &m.url("/channels/default/orders"),
            event(&format!("e{i}"), "t"),
        )
        .await;
    }
    for s in &sinks {
        eventually(
            "every subscription gets every event",
            Duration::from_secs(10),
            || {
                let mut ids = s.ids();
                ids.sort();
                ids.dedup();
                ids.len() == 5
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_channel_that_does_not_exist_answers_404() {
    let m = mesh(&imc_with_subscriptions("  delivery: {retry: 0}", &[])).await;
    assert_eq!(
        post_binary(&m.url("/channels/default/nope"), event("1", "t")).await,
        404
    );
}

#[tokio::test]
async fn a_subscribers_reply_goes_to_the_subscriptions_reply() {
    let (sub, reply) = (TestSink::start().await, TestSink::start().await);
    sub.always(Reply::Map(appended));
    let m = mesh(&imc_with_subscriptions(
        "  delivery: {retry: 0}",
        &[(
            "s",
            &format!(
                "  subscriber: {{uri: \"{}\"}}\n  reply: {{uri: \"{}\"}}",
                sub.url(),
                reply.url()
            ),
        )],
    ))
    .await;
    let mut e = event("r1", "t");
    e.set_data("text/plain", "hello");
    post_ok(&m.url("/channels/default/orders"), e).await;
    eventually(
        "the reply reaches the reply sink",
        Duration::from_secs(10),
        || reply.count() == 1,
    )
    .await;
    let got = reply.received()[0].event().clone();
    assert_eq!(got.id(), "r1");
    let text = match got.data() {
        Some(cloudevents::Data::String(s)) => s.clone(),
        Some(cloudevents::Data::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    };
    assert_eq!(text, "hello-replied");
}

#[tokio::test]
async fn a_subscription_with_only_a_reply_forwards_every_event_to_it() {
    let reply = TestSink::start().await;
    let m = mesh(&imc_with_subscriptions(
        "  delivery: {retry: 0}",
        &[("s", &format!("  reply: {{uri: \"{}\"}}", reply.url()))],
    ))
    .await;
    post_ok(&m.url("/channels/default/orders"), event("id-1", "t")).await;
    eventually(
        "the event reaches the reply",
        Duration::from_secs(10),
        || reply.ids() == ["id-1"],
    )
    .await;
}

#[tokio::test]
async fn a_failing_subscriber_is_dead_lettered_per_the_channels_delivery() {
    let (sub, dls) = (TestSink::start().await, TestSink::start().await);
    sub.always(Reply::Status(500));
    let m = mesh(&imc_with_subscriptions(
        &format!(
            "  delivery: {{retry: 1, backoffDelay: PT0.01S, deadLetterSink: {{uri: \"{}\"}}}}",
            dls.url()
        ),
        &[("s", &format!("  subscriber: {{uri: \"{}\"}}", sub.url()))],
    ))
    .await;
    post_ok(&m.url("/channels/default/orders"), event("d1", "t")).await;
    eventually(
        "the dead-letter sink gets the event",
        Duration::from_secs(10),
        || dls.count() == 1,
    )
    .await;
    assert_eq!(sub.count(), 2, "one attempt and one retry");
    let dead = dls.received()[0].event().clone();
    assert_eq!(dead.id(), "d1");
    assert_eq!(
        dead.extension("knativeerrordest").map(|v| v.to_string()),
        Some(sub.url()),
    );
}

#[tokio::test]
async fn a_subscriptions_delivery_replaces_the_channels_entirely() {
    let (sub, channel_dls, own_dls) = (
        TestSink::start().await,
        TestSink::start().await,
        TestSink::start().await,
    );
    sub.always(Reply::Status(500));
    let m = mesh(&imc_with_subscriptions(
        &format!("  delivery: {{retry: 0, deadLetterSink: {{uri: \"{}\"}}}}", channel_dls.url()),
        &[(
            "s",
            &format!(
                "  subscriber: {{uri: \"{}\"}}\n  delivery: {{retry: 2, backoffDelay: PT0.01S, deadLetterSink: {{uri: \"{}\"}}}}",
                sub.url(),
                own_dls.url()
            ),
        )],
    ))
    .await;
    post_ok(&m.url("/channels/default/orders"), event("x1", "t")).await;
    eventually(
        "the subscription's own dead-letter sink gets it",
        Duration::from_secs(10),
        || own_dls.count() == 1,
    )
    .await;
    assert_eq!(
        sub.count(),
        3,
        "the subscription's retry: 2, not the channel's 0"
    );
    assert_eq!(channel_dls.count(), 0);
}

#[tokio::test]
async fn a_channel_can_be_a_dead_letter_sink() {
    let (sub, dead) = (TestSink::start().await, TestSink::start().await);
    sub.always(Reply::Status(500));
    let yaml = format!(
        "{}---\napiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {{name: dead-letters}}\n---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: dead-reader}}\nspec:\n  channel: {{apiVersion: messaging.knative.dev/v1, kind: Channel, name: dead-letters}}\n  subscriber: {{uri: \"{}\"}}\n",
        imc_with_subscriptions(
            "  delivery:\n    retry: 0\n    deadLetterSink:\n      ref: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: dead-letters}",
            &[("s", &format!("  subscriber: {{uri: \"{}\"}}", sub.url()))],
        ),
        dead.url()
    );
    let m = mesh(&yaml).await;
    post_ok(&m.url("/channels/default/orders"), event("dl-1", "t")).await;
    eventually(
        "the dead letter travels through the channel",
        Duration::from_secs(10),
        || dead.ids() == ["dl-1"],
    )
    .await;
}

#[tokio::test]
async fn a_subscription_changed_and_a_channel_deleted_through_the_api_while_events_flow() {
    let (old, new) = (TestSink::start().await, TestSink::start().await);
    let m = mesh("").await;
    let (code, obj) = send(
        reqwest::Method::POST,
        &api(&m, "inmemorychannels"),
        Some(
            "apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {name: live}\n"
                .into(),
        ),
    )
    .await;
    assert_eq!(code, 201, "{obj}");
    let sub = |sink: &TestSink| {
        format!(
            "apiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: s}}\nspec:\n  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: live}}\n  subscriber: {{uri: \"{}\"}}\n",
            sink.url()
        )
    };
    let (code, obj) = send(
        reqwest::Method::POST,
        &api(&m, "subscriptions"),
        Some(sub(&old)),
    )
    .await;
    assert_eq!(code, 201, "{obj}");
    let address = m.url("/channels/default/live");
    let mut accepted = Vec::new();
    for i in 0..40 {
        if i == 20 {
            let (code, obj) = send(
                reqwest::Method::PUT,
                &format!("{}/s", api(&m, "subscriptions")),
                Some(sub(&new)),
            )
            .await;
            assert_eq!(code, 200, "{obj}");
        }
        let id = format!("c{i}");
        post_ok(&address, event(&id, "t")).await;
        accepted.push(id);
    }
    eventually(
        "every accepted event reaches the old or the new subscriber",
        Duration::from_secs(15),
        || {
            let got: std::collections::HashSet<String> =
                old.ids().into_iter().chain(new.ids()).collect();
            accepted.iter().all(|id| got.contains(id))
        },
    )
    .await;
    assert!(
        new.ids().contains(&"c39".to_string()),
        "events after the change go to the new subscriber"
    );
    let (code, _) = send(
        reqwest::Method::DELETE,
        &format!("{}/live", api(&m, "inmemorychannels")),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(post_binary(&address, event("late", "t")).await, 404);
    let (_, s) = get_json(&format!("{}/s", api(&m, "subscriptions"))).await;
    assert_eq!(s["status"]["conditions"][0]["status"], "False", "{s}");
}

#[tokio::test]
async fn a_channels_template_cannot_change_once_set() {
    let m = mesh("").await;
    let ch = |spec: &str| {
        format!(
            "apiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {{name: c}}\nspec:\n{spec}"
        )
    };
    let with_template =
        ch("  channelTemplate: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel}\n");
    let (code, obj) = send(
        reqwest::Method::POST,
        &api(&m, "channels"),
        Some(with_template),
    )
    .await;
    assert_eq!(code, 201, "{obj}");
    let changed = ch(
        "  channelTemplate: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, spec: {delivery: {retry: 1}}}\n",
    );
    let (code, obj) = send(
        reqwest::Method::PUT,
        &format!("{}/c", api(&m, "channels")),
        Some(changed),
    )
    .await;
    assert_eq!(code, 422, "{obj}");
    assert!(obj.to_string().contains("spec.channelTemplate"), "{obj}");
    // The Channel's own delivery may change.
    let delivery = ch(
        "  channelTemplate: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel}\n  delivery: {retry: 2}\n",
    );
    let (code, obj) = send(
        reqwest::Method::PUT,
        &format!("{}/c", api(&m, "channels")),
        Some(delivery),
    )
    .await;
    assert_eq!(code, 200, "{obj}");
}
