//! Broker ingress over real HTTP: status codes of Knative's contract, content modes, limits.

mod common;

use std::time::Duration;

use cloudevents::AttributesReader;
use common::*;

async fn demo_mesh(sink: &TestSink) -> TestMesh {
    mesh(&broker_and_trigger(sink, "")).await
}

const BINARY_OK: &[(&str, &str)] = &[
    ("ce-specversion", "1.0"),
    ("ce-id", "1"),
    ("ce-source", "/s"),
    ("ce-type", "t"),
    ("content-type", "application/json"),
];

fn without(name: &str) -> Vec<(&'static str, &'static str)> {
    BINARY_OK
        .iter()
        .copied()
        .filter(|(k, _)| *k != name)
        .collect()
}

#[tokio::test]
async fn ingress_accepts_binary_event_with_202() {
    let sink = TestSink::start().await;
    let m = demo_mesh(&sink).await;
    let (status, _) = post_raw(&m.url("/demo/default"), BINARY_OK, "{}").await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn ingress_accepts_structured_event_with_202() {
    let sink = TestSink::start().await;
    let m = demo_mesh(&sink).await;
    let body = r#"{"specversion":"1.0","id":"s1","source":"/s","type":"t","datacontenttype":"application/json","data":{"a":1}}"#;
    let (status, _) = post_raw(
        &m.url("/demo/default"),
        &[("content-type", "application/cloudevents+json")],
        body,
    )
    .await;
    assert_eq!(status, 202);
    eventually("delivery", Duration::from_secs(5), || sink.count() == 1).await;
}

async fn assert_rejected(headers: &[(&str, &str)], body: &str, reason_contains: &str) {
    let sink = TestSink::start().await;
    let m = demo_mesh(&sink).await;
    let (status, reason) = post_raw(&m.url("/demo/default"), headers, body).await;
    assert_eq!(status, 400, "reason: {reason}");
    assert!(
        reason.to_lowercase().contains(reason_contains),
        "reason {reason:?} should mention {reason_contains:?}"
    );
    // Nothing was stored: the broker accepted nothing (counted before the answer was sent).
    let c = admin_counters(&m.url(""), "brokers", "demo", "default").await;
    assert_eq!(c["accepted"], 0, "a rejected event is not stored: {c}");
    assert_eq!(c["rejected"], 1, "{c}");
    quiet(&m, "demo", "default", 0).await;
    assert_eq!(sink.count(), 0, "a rejected event must not be delivered");
}

/// An event refused when its append is tried (here its `knativebrokerttl` ran out) is counted
/// once as rejected, as one refused before it became an event is.
#[tokio::test]
async fn an_event_whose_ttl_ran_out_is_rejected_and_counted_once() {
    let mut headers = BINARY_OK.to_vec();
    headers.push(("ce-knativebrokerttl", "1"));
    assert_rejected(&headers, "{}", "knativebrokerttl").await;
}

#[tokio::test]
async fn ingress_rejects_event_without_id_with_400() {
    assert_rejected(&without("ce-id"), "{}", "id").await;
}

#[tokio::test]
async fn ingress_rejects_event_without_source_with_400() {
    assert_rejected(&without("ce-source"), "{}", "source").await;
}

#[tokio::test]
async fn ingress_rejects_event_without_type_with_400() {
    assert_rejected(&without("ce-type"), "{}", "type").await;
}

#[tokio::test]
async fn ingress_rejects_request_without_specversion_with_400() {
    assert_rejected(&without("ce-specversion"), "{}", "not a cloudevent").await;
}

#[tokio::test]
async fn ingress_rejects_specversion_other_than_1_0_and_0_3_with_400() {
    let mut h = without("ce-specversion");
    h.push(("ce-specversion", "2.0"));
    assert_rejected(&h, "{}", "specversion").await;
    let mut h = without("ce-specversion");
    h.push(("ce-specversion", "19.0"));
    assert_rejected(&h, "{}", "specversion").await;
}

#[tokio::test]
async fn ingress_rejects_broken_structured_json_with_400() {
    assert_rejected(
        &[("content-type", "application/cloudevents+json")],
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t""#,
        "invalid",
    )
    .await;
}

#[tokio::test]
async fn ingress_rejects_plain_json_body_that_is_no_cloudevent_with_400() {
    assert_rejected(
        &[("content-type", "application/json")],
        r#"{"hello":"world"}"#,
        "not a cloudevent",
    )
    .await;
}

#[tokio::test]
async fn ingress_answers_404_for_unknown_broker() {
    let sink = TestSink::start().await;
    let m = demo_mesh(&sink).await;
    let (status, _) = post_raw(&m.url("/demo/nope"), BINARY_OK, "{}").await;
    assert_eq!(status, 404);
    let (status, _) = post_raw(&m.url("/other/default"), BINARY_OK, "{}").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn ingress_answers_405_to_get_with_allow_header() {
    let sink = TestSink::start().await;
    let m = demo_mesh(&sink).await;
    let resp = client()
        .get(m.url("/demo/default"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST, OPTIONS");
    let resp = client()
        .put(m.url("/demo/default"))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status().as_u16(), 405);
}

#[tokio::test]
async fn ingress_answers_options_with_200_and_webhook_headers() {
    let sink = TestSink::start().await;
    let m = demo_mesh(&sink).await;
    let resp = client()
        .request(reqwest::Method::OPTIONS, m.url("/demo/default"))
        .send()
        .await
        .expect("options");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["webhook-allowed-origin"], "*");
    assert_eq!(resp.headers()["allow"], "POST, OPTIONS");
}

#[tokio::test]
async fn ingress_answers_413_above_the_configured_size_limit() {
    let sink = TestSink::start().await;
    let m = mesh_with(&broker_and_trigger(&sink, ""), |mut o| {
        o.max_event_size = 1000;
        o
    })
    .await;
    let small = "x".repeat(900);
    let (status, _) = post_raw(&m.url("/demo/default"), BINARY_OK, &small).await;
    assert_eq!(status, 202);
    let big = "x".repeat(1001);
    let (status, reason) = post_raw(&m.url("/demo/default"), BINARY_OK, &big).await;
    assert_eq!(status, 413, "{reason}");
    // Without Content-Length (chunked), the limit holds too.
    let stream = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(vec![b'x'; 600]),
        Ok(vec![b'x'; 600]),
    ]);
    let mut req = client()
        .post(m.url("/demo/default"))
        .body(reqwest::Body::wrap_stream(stream));
    for (k, v) in BINARY_OK {
        req = req.header(*k, *v);
    }
    assert_eq!(req.send().await.expect("post").status().as_u16(), 413);
    eventually("the small event", Duration::from_secs(5), || {
        sink.count() == 1
    })
    .await;
    quiet(&m, "demo", "default", 1).await;
    assert_eq!(sink.count(), 1, "only the accepted event is delivered");
}

#[tokio::test]
async fn default_size_limit_is_one_mebibyte() {
    let sink = TestSink::start().await;
    let m = demo_mesh(&sink).await;
    let (status, _) = post_raw(
        &m.url("/demo/default"),
        BINARY_OK,
        &"y".repeat(1024 * 1024 + 1),
    )
    .await;
    assert_eq!(status, 413);
    let (status, _) = post_raw(&m.url("/demo/default"), BINARY_OK, &"y".repeat(1000 * 1000)).await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn percent_encoded_header_values_are_decoded() {
    let sink = TestSink::start().await;
    let m = demo_mesh(&sink).await;
    let mut h = BINARY_OK.to_vec();
    h.push(("ce-note", "caf%C3%A9%20au%20lait"));
    let (status, _) = post_raw(&m.url("/demo/default"), &h, "{}").await;
    assert_eq!(status, 202);
    eventually("delivery", Duration::from_secs(5), || sink.count() == 1).await;
    let got = sink.received()[0]
        .event()
        .extension("note")
        .map(|v| v.to_string());
    assert_eq!(got.as_deref(), Some("café au lait"));
}

fn with(name: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut h = without(name);
    h.push((name, value));
    h
}

#[tokio::test]
async fn ingress_rejects_event_with_empty_id_with_400() {
    assert_rejected(&with("ce-id", ""), "{}", "id").await;
}

#[tokio::test]
async fn ingress_rejects_event_with_empty_source_with_400() {
    assert_rejected(&with("ce-source", ""), "{}", "source").await;
}

#[tokio::test]
async fn ingress_rejects_event_with_empty_type_with_400() {
    assert_rejected(&with("ce-type", ""), "{}", "type").await;
}

#[tokio::test]
async fn ingress_rejects_structured_event_with_empty_id_with_400() {
    assert_rejected(
        &[("content-type", "application/cloudevents+json")],
        r#"{"specversion":"1.0","id":"","source":"/s","type":"t"}"#,
        "id",
    )
    .await;
}

#[tokio::test]
async fn ingress_rejects_batched_content_mode_with_400() {
    assert_rejected(
        &[("content-type", "application/cloudevents-batch+json")],
        r#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"}]"#,
        "batch",
    )
    .await;
}

#[tokio::test]
async fn structured_mode_detection_ignores_case() {
    let sink = TestSink::start().await;
    let m = demo_mesh(&sink).await;
    let body = r#"{"specversion":"1.0","id":"s1","source":"/s","type":"t"}"#;
    let (status, reason) = post_raw(
        &m.url("/demo/default"),
        &[(
            "content-type",
            "Application/CloudEvents+JSON; charset=UTF-8",
        )],
        body,
    )
    .await;
    assert_eq!(status, 202, "{reason}");
    eventually("delivery", Duration::from_secs(5), || sink.count() == 1).await;
    assert_eq!(sink.received()[0].header("ce-id").as_deref(), Some("s1"));
}

#[tokio::test]
async fn percent_encoded_ce_dataschema_is_the_dataschema_attribute() {
    let sink = TestSink::start().await;
    let m = demo_mesh(&sink).await;
    let (status, reason) = post_raw(
        &m.url("/demo/default"),
        &with("ce-dataschema", "https://example.com/a%3Ab"),
        "{}",
    )
    .await;
    assert_eq!(status, 202, "{reason}");
    eventually("delivery", Duration::from_secs(5), || sink.count() == 1).await;
    let got = sink.received()[0].event().clone();
    assert_eq!(
        got.dataschema().map(|u| u.to_string()).as_deref(),
        Some("https://example.com/a:b"),
        "the header value is percent-decoded"
    );
}
