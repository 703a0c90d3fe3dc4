//! Delivery to subscribers: attributes preserved, headers, content modes, exact-match filters,
//! retries and backoff, dead-letter sinks, replies and the TTL loop guard.

mod common;

use std::time::Duration;

use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use common::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn delivered_event_keeps_every_attribute_and_extension() {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    let sent = EventBuilderV10::new()
        .id("abc-1")
        .source("/orders")
        .ty("order.created")
        .subject("order-42")
        .time("2026-11-25T10:00:00Z")
        .extension("customerid", "c-7")
        .extension("priority", 5)
        .data("application/json", serde_json::json!({"amount": 10}))
        .build()
        .expect("event");
    assert_eq!(
        post_binary(&m.url("/demo/default"), sent.clone()).await,
        202
    );
    eventually("delivery", WAIT, || sink.count() == 1).await;
    let got = sink.received()[0].event().clone();
    assert_eq!(got.id(), "abc-1");
    assert_eq!(got.source().as_str(), "/orders");
    assert_eq!(got.ty(), "order.created");
    assert_eq!(got.subject(), Some("order-42"));
    assert_eq!(got.time(), sent.time());
    assert_eq!(got.datacontenttype(), Some("application/json"));
    assert_eq!(
        got.extension("customerid")
            .map(|v| v.to_string())
            .as_deref(),
        Some("c-7")
    );
    assert_eq!(
        got.extension("priority").map(|v| v.to_string()).as_deref(),
        Some("5")
    );
    let body: serde_json::Value =
        serde_json::from_slice(&sink.received()[0].body).expect("json data");
    assert_eq!(body, serde_json::json!({"amount": 10}));
}

#[tokio::test]
async fn delivery_is_binary_with_prefer_reply_kn_namespace_and_arrival_time_but_no_ttl() {
    let sink = TestSink::start().await;
    let _m = one_event(&sink, "").await;
    eventually("delivery", WAIT, || sink.count() == 1).await;
    let r = &sink.received()[0];
    assert_eq!(
        r.header("ce-id").as_deref(),
        Some("1"),
        "binary mode: attributes in ce- headers"
    );
    assert_eq!(r.header("prefer").as_deref(), Some("reply"));
    assert_eq!(r.header("kn-namespace").as_deref(), Some("demo"));
    let arrival = r
        .event()
        .extension("knativearrivaltime")
        .map(|v| v.to_string())
        .expect("arrival time");
    assert!(
        chrono::DateTime::parse_from_rfc3339(&arrival).is_ok(),
        "{arrival}"
    );
    assert!(
        r.event().extension("knativebrokerttl").is_none(),
        "the TTL is internal"
    );
}

#[tokio::test]
async fn structured_input_is_delivered_in_binary_mode_by_default() {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    let body = r#"{"specversion":"1.0","id":"s1","source":"/s","type":"t","myext":"v","datacontenttype":"application/json","data":{"a":1}}"#;
    let (status, _) = post_raw(
        &m.url("/demo/default"),
        &[("content-type", "application/cloudevents+json")],
        body,
    )
    .await;
    assert_eq!(status, 202);
    eventually("delivery", WAIT, || sink.count() == 1).await;
    let r = &sink.received()[0];
    assert_eq!(r.header("ce-myext").as_deref(), Some("v"));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.body).expect("json"),
        serde_json::json!({"a": 1})
    );
}

#[tokio::test]
async fn delivery_format_json_sends_structured_mode() {
    let sink = TestSink::start().await;
    let _m = one_event(&sink, "  delivery: {format: json}").await;
    eventually("delivery", WAIT, || sink.count() == 1).await;
    let r = &sink.received()[0];
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/cloudevents+json")
    );
    assert!(r.header("ce-id").is_none());
    assert_eq!(r.event().id(), "1");
}

const TWO_TRIGGERS: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: created}
spec:
  broker: default
  filter:
    attributes:
      type: order.created
      region: eu
  subscriber: {uri: "SINK_A"}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: has-region}
spec:
  broker: default
  filter:
    attributes:
      region: ""
  subscriber: {uri: "SINK_B"}
"#;

#[tokio::test]
async fn attribute_filters_need_every_listed_attribute_to_match_exactly() {
    let a = TestSink::start().await;
    let b = TestSink::start().await;
    let m = mesh(
        &TWO_TRIGGERS
            .replace("SINK_A", &a.url())
            .replace("SINK_B", &b.url()),
    )
    .await;
    let url = m.url("/default/default");
    let with_region = |id: &str, ty: &str, region: &str| {
        EventBuilderV10::new()
            .id(id)
            .source("/s")
            .ty(ty)
            .extension("region", region)
            .build()
            .expect("event")
    };
    post_ok(&url, with_region("1", "order.created", "eu")).await; // both
    post_ok(&url, with_region("2", "order.created", "us")).await; // only has-region
    post_ok(&url, with_region("3", "Order.Created", "eu")).await; // case-sensitive: only has-region
    post_ok(&url, event("4", "order.created")).await; // no region: none
    post_ok(&url, with_region("5", "order.created", "")).await; // empty region: "" needs non-empty
    eventually("deliveries", WAIT, || a.count() == 1 && b.count() == 3).await;
    quiet(&m, "default", "default", 5).await;
    assert_eq!(a.ids(), vec!["1"]);
    let mut ids = b.ids();
    ids.sort();
    assert_eq!(ids, vec!["1", "2", "3"]);
}

#[tokio::test]
async fn two_triggers_with_the_same_filter_and_subscriber_each_get_one_delivery() {
    let sink = TestSink::start().await;
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: one}}
spec: {{broker: default, subscriber: {{uri: "{s}"}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: two}}
spec: {{broker: default, subscriber: {{uri: "{s}"}}}}
"#,
        s = sink.url()
    );
    let m = mesh(&yaml).await;
    post_ok(&m.url("/default/default"), event("1", "t")).await;
    eventually("two deliveries", WAIT, || sink.count() == 2).await;
    quiet(&m, "default", "default", 1).await;
    for t in ["one", "two"] {
        let c = admin_counters(&m.url(""), "triggers", "default", t).await;
        assert_eq!(c["delivered"], 1, "one delivery for trigger {t}: {c}");
    }
    assert_eq!(sink.count(), 2);
}

#[tokio::test]
async fn retryable_failures_are_retried_until_success() {
    let sink = TestSink::start().await;
    sink.script([
        Reply::Status(503),
        Reply::Status(409),
        Reply::Status(404),
        Reply::Status(429),
    ]);
    let _m = one_event(
        &sink,
        "  delivery: {retry: 5, backoffPolicy: linear, backoffDelay: PT0.01S}",
    )
    .await;
    eventually("fifth attempt succeeds", WAIT, || sink.count() == 5).await;
    quiet(&_m, "demo", "default", 1).await;
    assert_eq!(sink.count(), 5, "no attempt after the success");
}

#[tokio::test]
async fn retry_count_limits_attempts_to_retry_plus_one() {
    let sink = TestSink::start().await;
    sink.always(Reply::Status(500));
    let _m = one_event(&sink, "  delivery: {retry: 3, backoffDelay: PT0.01S}").await;
    eventually("4 attempts", WAIT, || sink.count() == 4).await;
    quiet(&_m, "demo", "default", 1).await;
    assert_eq!(sink.count(), 4);
}

#[tokio::test]
async fn non_retryable_status_is_not_retried() {
    let sink = TestSink::start().await;
    sink.always(Reply::Status(400));
    let _m = one_event(&sink, "  delivery: {retry: 3, backoffDelay: PT0.01S}").await;
    eventually("first attempt", WAIT, || sink.count() == 1).await;
    quiet(&_m, "demo", "default", 1).await;
    assert_eq!(sink.count(), 1);
}

fn gaps(sink: &TestSink) -> Vec<Duration> {
    let r = sink.received();
    r.windows(2).map(|w| w[1].at - w[0].at).collect()
}

/// Gaps between the `retry + 1` attempts of one event to a sink that always answers 503.
async fn retry_gaps(policy: &str, retry: usize) -> Vec<Duration> {
    let sink = TestSink::start().await;
    sink.always(Reply::Status(503));
    let delivery =
        format!("  delivery: {{retry: {retry}, backoffPolicy: {policy}, backoffDelay: PT0.1S}}");
    let _m = one_event(&sink, &delivery).await;
    eventually("every attempt", WAIT, || sink.count() == retry + 1).await;
    gaps(&sink)
}

#[tokio::test]
async fn exponential_backoff_doubles_the_wait_between_attempts() {
    let g = retry_gaps("exponential", 3).await;
    // delay × 2^(k-1): 100, 200, 400 ms (lower bounds; scheduling can only add).
    for (gap, min) in g.iter().zip([100, 200, 400]) {
        assert!(*gap >= Duration::from_millis(min), "gaps {g:?}");
    }
    assert!(g[2] > g[1] && g[1] > g[0], "gaps must grow: {g:?}");
}

#[tokio::test]
async fn linear_backoff_grows_by_the_delay_each_attempt() {
    let g = retry_gaps("linear", 5).await;
    // delay × k: 100, 200, 300, 400, 500 ms.
    for (gap, min) in g.iter().zip([100, 200, 300, 400, 500]) {
        assert!(*gap >= Duration::from_millis(min), "gaps {g:?}");
    }
    // Exponential would wait 1600 ms before the fifth retry.
    assert!(
        g[4] < Duration::from_millis(1100),
        "linear, not exponential: {g:?}"
    );
}

#[tokio::test]
async fn retry_after_is_respected_up_to_retry_after_max() {
    let sink = TestSink::start().await;
    sink.script([Reply::StatusWithHeader(429, "retry-after", "1".into())]);
    let _m = one_event(
        &sink,
        "  delivery: {retry: 2, backoffDelay: PT0.01S, retryAfterMax: PT5S}",
    )
    .await;
    eventually("second attempt", WAIT, || sink.count() == 2).await;
    assert!(
        gaps(&sink)[0] >= Duration::from_secs(1),
        "{:?}",
        gaps(&sink)
    );
}

#[tokio::test]
async fn slow_subscriber_is_cut_off_by_delivery_timeout_and_retried() {
    let sink = TestSink::start().await;
    sink.script([Reply::Delay(Duration::from_secs(5))]);
    let _m = one_event(
        &sink,
        "  delivery: {retry: 1, timeout: PT0.3S, backoffDelay: PT0.01S}",
    )
    .await;
    eventually("retry after the timeout", WAIT, || sink.count() == 2).await;
    let r = sink.received();
    let gap = r[1].at - r[0].at;
    // The first attempt was given its 0.3 s, then cut off: the retry came before the
    // subscriber would have answered it (after 5 s).
    assert!(
        gap >= Duration::from_millis(300),
        "retried after {gap:?}, before the timeout"
    );
    assert!(
        gap < Duration::from_secs(5),
        "retried after {gap:?}: the timeout did not cut the attempt"
    );
}

#[tokio::test]
async fn without_a_timeout_an_attempt_gets_the_default_10_minutes() {
    // The default itself (10 minutes, as the Kafka broker) is not waited for here; a subscriber
    // far slower than a configured timeout is waited for, in one attempt.
    assert_eq!(
        evmesh::evmesh_broker::delivery::DEFAULT_TIMEOUT,
        Duration::from_secs(600)
    );
    let sink = TestSink::start().await;
    sink.always(Reply::Delay(Duration::from_secs(3)));
    let m = one_event(&sink, "  delivery: {retry: 3, backoffDelay: PT0.01S}").await;
    eventually_counters(&m.url(""), "triggers", "demo", "t1", WAIT, |c| {
        c["delivered"] == 1
    })
    .await;
    let c = admin_counters(&m.url(""), "triggers", "demo", "t1").await;
    assert_eq!(c["retried"], 0, "the slow attempt was not cut: {c}");
    assert_eq!(sink.count(), 1);
}

#[tokio::test]
async fn exhausted_event_goes_to_dead_letter_sink_with_error_extensions() {
    let sink = TestSink::start().await;
    let dls = TestSink::start().await;
    sink.always(Reply::StatusWithBody(
        422,
        r#"{ "message": "catastrophic failure" }"#.into(),
    ));
    let m = mesh(&broker_and_trigger(
        &sink,
        &format!(
            "  delivery: {{retry: 3, backoffDelay: PT0.01S, deadLetterSink: {{uri: \"{}\"}}}}",
            dls.url()
        ),
    ))
    .await;
    post_ok(&m.url("/demo/default"), event("dl-1", "t")).await;
    eventually("dead letter", WAIT, || dls.count() == 1).await;
    quiet(&m, "demo", "default", 1).await;
    assert_eq!(sink.count(), 1, "422 is not retried");
    assert_eq!(dls.count(), 1, "dead-lettered exactly once");
    let r = &dls.received()[0];
    let e = r.event();
    assert_eq!(e.id(), "dl-1");
    let ext = |n: &str| e.extension(n).map(|v| v.to_string());
    assert_eq!(
        ext("knativeerrordest").as_deref(),
        Some(sink.url().as_str())
    );
    assert_eq!(ext("knativeerrorcode").as_deref(), Some("422"));
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD
        .decode(ext("knativeerrordata").expect("error data"))
        .expect("base64");
    assert_eq!(data, br#"{ "message": "catastrophic failure" }"#);
    assert!(
        r.header("prefer").is_none(),
        "a dead-letter sink is not asked for a reply"
    );
}

#[tokio::test]
async fn subscriber_that_never_answers_is_dead_lettered_with_its_url_and_no_code() {
    let dls = TestSink::start().await;
    // A listener that is held for the whole test but never accepts: connections queue in the
    // backlog and no response ever comes (no released port number is reused).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = silent.local_addr().expect("addr");
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
spec:
  delivery: {{retry: 1, backoffDelay: PT0.01S, timeout: PT0.3S, deadLetterSink: {{uri: "{}"}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: t}}
spec: {{broker: default, subscriber: {{uri: "http://{closed}/hook"}}}}
"#,
        dls.url()
    );
    let m = mesh(&yaml).await;
    post_ok(&m.url("/default/default"), event("u-1", "t")).await;
    eventually("dead letter", WAIT, || dls.count() == 1).await;
    let e = dls.received()[0].event().clone();
    assert_eq!(
        e.extension("knativeerrordest").map(|v| v.to_string()),
        Some(format!("http://{closed}/hook"))
    );
    assert!(
        e.extension("knativeerrorcode").is_none(),
        "no response, no code"
    );
}

#[tokio::test]
async fn trigger_delivery_replaces_broker_delivery_entirely() {
    let sink = TestSink::start().await;
    let broker_dls = TestSink::start().await;
    sink.always(Reply::Status(500));
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
spec:
  delivery: {{retry: 0, deadLetterSink: {{uri: "{}"}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: t}}
spec:
  broker: default
  subscriber: {{uri: "{}"}}
  delivery: {{retry: 1, backoffDelay: PT0.01S}}
"#,
        broker_dls.url(),
        sink.url()
    );
    let m = mesh(&yaml).await;
    post_ok(&m.url("/default/default"), event("1", "t")).await;
    eventually("two attempts", WAIT, || sink.count() == 2).await;
    quiet(&m, "default", "default", 1).await;
    assert_eq!(sink.count(), 2, "the trigger's retry: 1 applies");
    assert_eq!(broker_dls.count(), 0, "the broker's DLS is not merged in");
}

#[tokio::test]
async fn broker_delivery_applies_to_triggers_without_their_own() {
    let sink = TestSink::start().await;
    let broker_dls = TestSink::start().await;
    sink.always(Reply::Status(500));
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
spec:
  delivery: {{retry: 2, backoffDelay: PT0.01S, deadLetterSink: {{uri: "{}"}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: t}}
spec: {{broker: default, subscriber: {{uri: "{}"}}}}
"#,
        broker_dls.url(),
        sink.url()
    );
    let m = mesh(&yaml).await;
    post_ok(&m.url("/default/default"), event("1", "t")).await;
    eventually("broker DLS", WAIT, || broker_dls.count() == 1).await;
    assert_eq!(sink.count(), 3);
}

#[tokio::test]
async fn reply_is_published_into_the_broker_and_reaches_matching_triggers() {
    let first = TestSink::start().await;
    let second = TestSink::start().await;
    let reply = EventBuilderV10::new()
        .id("reply-1")
        .source("/transformer")
        .ty("com.example.ReplyEvent")
        .data("text/plain", "transformed")
        .build()
        .expect("event");
    first.script([Reply::Event(reply)]);
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: first}}
spec:
  broker: default
  filter: {{attributes: {{type: com.example.Original}}}}
  subscriber: {{uri: "{}"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: second}}
spec:
  broker: default
  filter: {{attributes: {{type: com.example.ReplyEvent}}}}
  subscriber: {{uri: "{}"}}
"#,
        first.url(),
        second.url()
    );
    let m = mesh(&yaml).await;
    post_ok(
        &m.url("/default/default"),
        event("o-1", "com.example.Original"),
    )
    .await;
    eventually("reply delivered", WAIT, || second.count() == 1).await;
    let r = &second.received()[0];
    assert_eq!(r.event().id(), "reply-1");
    assert_eq!(r.body, b"transformed");
    quiet(&m, "default", "default", 2).await;
    assert_eq!(
        first.count(),
        1,
        "the reply does not match the first trigger"
    );
}

#[tokio::test]
async fn a_202_response_is_never_taken_as_a_reply() {
    let sink = TestSink::start().await;
    // A 202 carrying a perfectly valid CloudEvent the trigger would match again.
    sink.script([Reply::EventWithStatus(202, event("would-loop", "t"))]);
    let _m = one_event(&sink, "").await;
    eventually("delivery", WAIT, || sink.count() == 1).await;
    quiet(&_m, "demo", "default", 1).await;
    assert_eq!(sink.count(), 1, "no reply was routed back");
}

#[tokio::test]
async fn non_cloudevent_2xx_body_counts_as_a_failed_delivery() {
    let sink = TestSink::start().await;
    sink.script([Reply::StatusWithBody(
        200,
        "plain text, not an event".into(),
    )]);
    let _m = one_event(&sink, "  delivery: {retry: 1, backoffDelay: PT0.01S}").await;
    eventually("retried after the bad reply", WAIT, || sink.count() == 2).await;
}

#[tokio::test]
async fn events_published_from_rust_are_delivered() {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    let offset = m
        .mesh
        .publish("demo", "default", event("embedded-1", "t"))
        .await
        .expect("published");
    assert_eq!(offset, 0);
    eventually("delivery", WAIT, || sink.count() == 1).await;
    assert_eq!(sink.ids(), vec!["embedded-1"]);
}

#[tokio::test]
async fn graceful_shutdown_rejects_new_events_after_draining() {
    let sink = TestSink::start().await;
    sink.script([Reply::Delay(Duration::from_millis(300))]);
    let m = one_event(&sink, "").await;
    eventually("delivery started", WAIT, || sink.count() == 1).await;
    let service = m.mesh.service().clone();
    m.mesh.shutdown().await;
    let t = service.triggers();
    assert_eq!(
        t[0].counters.delivered, 1,
        "the in-flight delivery finished before shutdown returned"
    );
    assert!(
        service
            .publish("demo", "default", event("2", "t"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_hanging_subscriber_does_not_stall_other_triggers() {
    let slow = TestSink::start().await;
    let fast = TestSink::start().await;
    slow.always(Reply::Delay(Duration::from_secs(20)));
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
spec: {{delivery: {{retry: 0}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: slow}}
spec: {{broker: default, subscriber: {{uri: "{}"}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: fast}}
spec: {{broker: default, subscriber: {{uri: "{}"}}}}
"#,
        slow.url(),
        fast.url()
    );
    let m = mesh_with(&yaml, |mut o| {
        o.service.max_in_flight = 4;
        o
    })
    .await;
    // Far more events than the slow trigger can have in flight.
    for i in 0..50 {
        assert_eq!(
            post_binary(&m.url("/default/default"), event(&format!("e{i}"), "t")).await,
            202
        );
    }
    eventually("the fast trigger got every event", WAIT, || {
        fast.count() == 50
    })
    .await;
    assert_eq!(
        slow.count(),
        4,
        "the slow trigger holds only its own 4 slots"
    );
}

/// A subscriber `old` answering every request with `status` and a `Location` of `moved_to`, a
/// trigger to it, and one event `id` with JSON `data` accepted.
async fn redirected(status: u16, id: &str, data: &[u8]) -> (TestSink, TestSink, TestMesh) {
    let moved_to = TestSink::start().await;
    let old = TestSink::start().await;
    old.always(Reply::Raw(
        status,
        vec![("location", moved_to.url())],
        String::new(),
    ));
    let m = mesh(&broker_and_trigger(&old, "")).await;
    let sent = EventBuilderV10::new()
        .id(id)
        .source("/orders")
        .ty("t")
        .data("application/json", data.to_vec())
        .build()
        .expect("event");
    post_ok(&m.url("/demo/default"), sent).await;
    eventually("followed", WAIT, || moved_to.count() == 1).await;
    (old, moved_to, m)
}

#[tokio::test]
async fn a_subscriber_that_redirects_with_307_gets_the_event_at_the_new_address_unchanged() {
    let (old, moved_to, m) = redirected(307, "r-1", br#"{ "amount": 10.50 }"#).await;
    let got = &moved_to.received()[0];
    assert_eq!(got.event().id(), "r-1");
    assert_eq!(got.body, br#"{ "amount": 10.50 }"#, "method and body kept");
    assert_eq!(got.header("referer"), Some(old.url()));
    assert_eq!(old.count(), 1);
    eventually("counted delivered", WAIT, || {
        m.mesh.service().triggers()[0].counters.delivered == 1
    })
    .await;
}

#[tokio::test]
async fn a_subscriber_that_redirects_with_303_is_sent_a_get_without_the_body() {
    let (old, moved_to, _m) = redirected(303, "see-other", br#"{"a":1}"#).await;
    let got = &moved_to.received()[0];
    assert_eq!(
        got.method,
        http::Method::GET,
        "as Go's client and reqwest do"
    );
    assert!(got.body.is_empty());
    assert_eq!(got.header("content-type"), None);
    assert_eq!(got.header("ce-id").as_deref(), Some("see-other"));
    let first = &old.received()[0];
    assert_eq!(first.method, http::Method::POST);
    assert_eq!(first.body, br#"{"a":1}"#);
}

#[tokio::test]
async fn a_subscriber_that_redirects_without_end_is_given_up_after_ten_redirects_and_dead_lettered()
{
    let looping = TestSink::start().await;
    let dls = TestSink::start().await;
    looping.always(Reply::Raw(
        308,
        vec![("location", looping.url())],
        String::new(),
    ));
    let m = mesh(&broker_and_trigger(
        &looping,
        &format!(
            "  delivery: {{retry: 0, deadLetterSink: {{uri: \"{}\"}}}}",
            dls.url()
        ),
    ))
    .await;
    post_ok(&m.url("/demo/default"), event("loop-1", "t")).await;
    eventually("dead letter", WAIT, || dls.count() == 1).await;
    assert_eq!(looping.count(), 11, "the request and ten redirects");
    let e = dls.received()[0].event().clone();
    assert!(
        e.extension("knativeerrorcode").is_none(),
        "no final answer, no code: {e}"
    );
}

#[tokio::test]
async fn with_http_proxy_set_deliveries_go_through_the_proxy() {
    // The "proxy" is a sink: a request through a proxy reaches it with the subscriber's absolute
    // URL, whose host (reserved `.invalid`) resolves nowhere, so only the proxy can answer it.
    let proxy = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &broker_and_trigger_to("http://subscriber.invalid/hook", ""),
    );
    let p = EvmeshProcess::start_with_env(
        &config,
        &dir.path().join("data"),
        &[],
        &[("HTTP_PROXY", &proxy.url()), ("NO_PROXY", "")],
    );
    post_ok(&p.url("/demo/default"), event("via-proxy", "t")).await;
    eventually("delivered through the proxy", WAIT, || proxy.count() == 1).await;
    assert_eq!(proxy.received()[0].event().id(), "via-proxy");
    p.kill9();
}

/// evmesh's pooled connections to a subscriber send TCP keepalive probes when idle (a
/// subscriber that vanished is noticed instead of waiting out a long attempt timeout), as
/// reqwest's and Go's clients do by default.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn delivery_connections_probe_an_idle_subscriber_with_tcp_keepalive() {
    let sink = TestSink::start().await;
    let _m = one_event(&sink, "").await;
    eventually("delivered", WAIT, || sink.count() == 1).await;
    let to_sink = format!(":{:04X}", sink.addr.port());
    // /proc/net/tcp: the connections to the sink's port (evmesh's side), established (01), and
    // their timer ("tr:when"): 02 is the keepalive timer.
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let timers: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 5 && f[2].ends_with(&to_sink) && f[3] == "01").then(|| f[5].to_string())
        })
        .collect();
    assert!(!timers.is_empty(), "no connection to the sink:\n{table}");
    assert!(
        timers.iter().all(|t| t.starts_with("02:")),
        "keepalive timer on every connection to the sink: {timers:?}"
    );
}
