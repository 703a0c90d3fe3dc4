//! Data-plane fidelity: data bytes unchanged in binary and structured mode, in and out, through a
//! reply and a dead letter; request headers passed through as Knative passes them, across a
//! restart; CloudEvents 0.3 in and out.

mod common;

use std::time::Duration;

use base64::Engine as _;
use cloudevents::event::Data;
use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// JSON as a producer might send it: odd whitespace, a decimal with a trailing zero, an integer
/// above 2^64.
const ODD_JSON: &[u8] =
    b"{ \"price\" :10.50 ,\n\t\"big\": 123456789012345678901234567890,\"s\":\"\\u00e9\" }";

async fn post_bytes(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> u16 {
    let mut req = client().post(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("post").status().as_u16()
}

const BINARY_ATTRS: &[(&str, &str)] = &[
    ("ce-specversion", "1.0"),
    ("ce-id", "1"),
    ("ce-source", "/s"),
    ("ce-type", "t"),
];

fn binary_headers(content_type: &str) -> Vec<(&str, &str)> {
    let mut h = BINARY_ATTRS.to_vec();
    h.push(("content-type", content_type));
    h
}

fn structured(data_field: &str, datacontenttype: Option<&str>) -> Vec<u8> {
    let ct = datacontenttype
        .map(|ct| format!(r#","datacontenttype":"{ct}""#))
        .unwrap_or_default();
    format!(r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t"{ct},{data_field}}}"#)
        .into_bytes()
}

const STRUCTURED: &[(&str, &str)] = &[("content-type", "application/cloudevents+json")];

/// The raw `data` member of a structured JSON body, as bytes (everything after `"data":` up to
/// the object's closing brace, when `data` is the last member).
fn raw_data_member(body: &[u8]) -> &[u8] {
    let text = body;
    let key = b"\"data\":";
    let at = text
        .windows(key.len())
        .position(|w| w == key)
        .expect("a data member");
    &text[at + key.len()..text.len() - 1]
}

async fn deliver(trigger_extra: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Received {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(&sink, trigger_extra)).await;
    assert_eq!(
        post_bytes(&m.url("/demo/default"), headers, body).await,
        202
    );
    eventually("delivery", WAIT, || sink.count() == 1).await;
    sink.received().remove(0)
}

const STRUCTURED_OUT: &str = "  delivery: {format: json}";

#[tokio::test]
async fn json_data_sent_in_binary_mode_arrives_byte_for_byte_in_binary_mode() {
    let got = deliver("", &binary_headers("application/json"), ODD_JSON.to_vec()).await;
    assert_eq!(got.body, ODD_JSON);
    assert_eq!(
        got.header("content-type").as_deref(),
        Some("application/json")
    );
}

#[tokio::test]
async fn json_data_sent_in_structured_mode_arrives_byte_for_byte_in_binary_mode() {
    let data = std::str::from_utf8(ODD_JSON).expect("utf8");
    let got = deliver(
        "",
        STRUCTURED,
        structured(&format!(r#""data":{data}"#), Some("application/json")),
    )
    .await;
    assert_eq!(got.body, ODD_JSON);
}

#[tokio::test]
async fn json_data_is_embedded_as_sent_in_structured_delivery() {
    let got = deliver(
        STRUCTURED_OUT,
        &binary_headers("application/json"),
        ODD_JSON.to_vec(),
    )
    .await;
    assert_eq!(
        got.header("content-type").as_deref(),
        Some("application/cloudevents+json")
    );
    assert_eq!(raw_data_member(&got.body), ODD_JSON);
    let v: serde_json::Value = serde_json::from_slice(&got.body).expect("valid JSON");
    assert_eq!(v["id"], "1");
    assert!(v.get("data_base64").is_none());
}

#[tokio::test]
async fn json_data_in_structured_mode_in_and_out_keeps_its_bytes() {
    let data = std::str::from_utf8(ODD_JSON).expect("utf8");
    let got = deliver(
        STRUCTURED_OUT,
        STRUCTURED,
        structured(&format!(r#""data":{data}"#), None),
    )
    .await;
    assert_eq!(raw_data_member(&got.body), ODD_JSON);
}

fn all_bytes() -> Vec<u8> {
    (0..=255u8).rev().chain(0..=255u8).collect()
}

#[tokio::test]
async fn binary_data_arrives_byte_for_byte_in_binary_mode() {
    let got = deliver("", &binary_headers("application/octet-stream"), all_bytes()).await;
    assert_eq!(got.body, all_bytes());
}

#[tokio::test]
async fn binary_data_is_data_base64_in_structured_delivery() {
    let got = deliver(
        STRUCTURED_OUT,
        &binary_headers("application/octet-stream"),
        all_bytes(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&got.body).expect("valid JSON");
    assert!(v.get("data").is_none(), "{v}");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(v["data_base64"].as_str().expect("data_base64"))
        .expect("base64");
    assert_eq!(decoded, all_bytes());
}

#[tokio::test]
async fn data_base64_sent_in_structured_mode_arrives_as_the_decoded_bytes() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(all_bytes());
    let got = deliver(
        "",
        STRUCTURED,
        structured(
            &format!(r#""data_base64":"{b64}""#),
            Some("application/octet-stream"),
        ),
    )
    .await;
    assert_eq!(got.body, all_bytes());
    assert_eq!(
        got.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
}

const TEXT: &str = "héllo  wörld\n 10.50 \"quoted\"\t";

#[tokio::test]
async fn text_data_arrives_unchanged_in_binary_mode() {
    let got = deliver(
        "",
        &binary_headers("text/plain; charset=utf-8"),
        TEXT.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(got.body, TEXT.as_bytes());
}

#[tokio::test]
async fn text_data_is_a_json_string_in_structured_delivery() {
    let got = deliver(
        STRUCTURED_OUT,
        &binary_headers("text/plain"),
        TEXT.as_bytes().to_vec(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&got.body).expect("valid JSON");
    assert_eq!(v["data"], TEXT);
}

#[tokio::test]
async fn text_data_sent_in_structured_mode_arrives_unchanged_in_binary_mode() {
    let text = serde_json::to_string(TEXT).expect("json string");
    let got = deliver(
        "",
        STRUCTURED,
        structured(&format!(r#""data":{text}"#), Some("text/plain")),
    )
    .await;
    assert_eq!(got.body, TEXT.as_bytes());
    assert_eq!(got.header("content-type").as_deref(), Some("text/plain"));
}

/// A trigger whose JSONPath filter matches only a number between 10 and 11 in the data, and two
/// events taken by its broker (`{"price": 9.99}`, then [`ODD_JSON`]), routed: the sink and mesh.
async fn jsonpath_trigger_after_two_events() -> (TestSink, TestMesh) {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(
        &sink,
        "  filters:\n    - evmesh.dev/jsonpath: \"$[?@ > 10 && @ < 11]\"",
    ))
    .await;
    let url = m.url("/demo/default");
    let h = binary_headers("application/json");
    assert_eq!(
        post_bytes(&url, &h, b"{\"price\": 9.99}".to_vec()).await,
        202
    );
    assert_eq!(post_bytes(&url, &h, ODD_JSON.to_vec()).await, 202);
    eventually("delivery", WAIT, || sink.count() == 1).await;
    quiet(&m, "demo", "default", 2).await;
    (sink, m)
}

#[tokio::test]
async fn jsonpath_filters_see_the_raw_json_data() {
    let (sink, _m) = jsonpath_trigger_after_two_events().await;
    assert_eq!(sink.count(), 1, "only the matching event");
    assert_eq!(sink.received()[0].body, ODD_JSON);
}

/// The same filter on the path that reads events back from the log (a replay): it still sees
/// the data, which the attributes-only view that routing uses does not carry.
#[tokio::test]
async fn jsonpath_filters_see_the_data_of_events_read_back_from_the_log() {
    let (sink, m) = jsonpath_trigger_after_two_events().await;
    m.mesh
        .service()
        .replay("demo", "t1", evmesh::evmesh_config::ReplayFrom::Earliest)
        .await
        .expect("replay");
    eventually("the matching event again", WAIT, || sink.count() == 2).await;
    eventually("the replay read to the end", WAIT, || {
        m.mesh.service().is_idle()
    })
    .await;
    assert_eq!(sink.count(), 2, "only the matching event, twice");
    assert!(sink.received().iter().all(|r| r.body == ODD_JSON));
}

fn two_trigger_yaml(first: &TestSink, second: &TestSink, first_delivery: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: demo}}
spec:
  delivery: {{retry: 0}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: t1, namespace: demo}}
spec:
  broker: default
  filter: {{attributes: {{type: t}}}}
  subscriber: {{uri: "{}"}}
{first_delivery}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: replies, namespace: demo}}
spec:
  broker: default
  filter: {{attributes: {{type: reply}}}}
  subscriber: {{uri: "{}"}}
"#,
        first.url(),
        second.url()
    )
}

#[tokio::test]
async fn reply_data_arrives_byte_for_byte_in_both_modes() {
    for structured_out in [false, true] {
        let first = TestSink::start().await;
        let second = TestSink::start().await;
        let reply = EventBuilderV10::new()
            .id("r1")
            .source("/replier")
            .ty("reply")
            .data("application/json", Data::Binary(ODD_JSON.to_vec()))
            .build()
            .expect("reply");
        first.always(Reply::Event(reply));
        let mut yaml = two_trigger_yaml(&first, &second, "");
        if structured_out {
            yaml.push_str("  delivery: {format: json}\n");
        }
        let m = mesh(&yaml).await;
        assert_eq!(
            post_binary(&m.url("/demo/default"), event("1", "t")).await,
            202
        );
        eventually("reply delivered", WAIT, || second.count() == 1).await;
        let got = second.received().remove(0);
        if structured_out {
            assert_eq!(
                got.header("content-type").as_deref(),
                Some("application/cloudevents+json")
            );
            assert_eq!(raw_data_member(&got.body), ODD_JSON);
        } else {
            assert_eq!(got.body, ODD_JSON);
        }
    }
}

#[tokio::test]
async fn dead_lettered_data_arrives_byte_for_byte_in_both_modes() {
    for (format, structured_out) in [("binary", false), ("json", true)] {
        let failing = TestSink::start().await;
        failing.always(Reply::Status(500));
        let dls = TestSink::start().await;
        let m = mesh(&broker_and_trigger(
            &failing,
            &format!(
                "  delivery: {{retry: 0, format: {format}, deadLetterSink: {{uri: \"{}\"}}}}",
                dls.url()
            ),
        ))
        .await;
        assert_eq!(
            post_bytes(
                &m.url("/demo/default"),
                &binary_headers("application/json"),
                ODD_JSON.to_vec()
            )
            .await,
            202
        );
        eventually("dead letter", WAIT, || dls.count() == 1).await;
        let got = dls.received().remove(0);
        if structured_out {
            assert_eq!(raw_data_member(&got.body), ODD_JSON, "{format}");
        } else {
            assert_eq!(got.body, ODD_JSON, "{format}");
        }
        assert_eq!(
            got.event()
                .extension("knativeerrorcode")
                .map(|v| v.to_string()),
            Some("500".to_string())
        );
    }
}

const TRACE: &[(&str, &str)] = &[
    (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
    ("tracestate", "vendor=abc"),
    ("baggage", "user=alice"),
    ("x-request-id", "req-42"),
    ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
    ("knative-custom", "k"),
];

fn assert_trace_headers(r: &Received, what: &str) {
    for (k, v) in TRACE {
        assert_eq!(r.header(k).as_deref(), Some(*v), "{what}: header {k}");
    }
    assert!(
        r.header("authorization").is_none(),
        "{what}: authorization leaked"
    );
    assert!(r.header("x-custom").is_none(), "{what}: x-custom leaked");
}

fn traced_request() -> Vec<(&'static str, &'static str)> {
    let mut h = binary_headers("application/json");
    h.extend_from_slice(TRACE);
    h.push(("authorization", "Bearer secret"));
    h.push(("x-custom", "no"));
    h
}

#[tokio::test]
async fn trace_headers_pass_through_to_subscriber_reply_and_dead_letter() {
    let first = TestSink::start().await;
    let second = TestSink::start().await;
    let dls = TestSink::start().await;
    // The first attempt fails (retried), the second gets a reply; the reply's subscriber fails
    // for good so its dead letter shows the headers too.
    first.script([Reply::Status(503)]);
    first.always(Reply::Event(
        EventBuilderV10::new()
            .id("r1")
            .source("/replier")
            .ty("reply")
            .build()
            .expect("reply"),
    ));
    second.always(Reply::Status(500));
    let yaml = two_trigger_yaml(
        &first,
        &second,
        &format!(
            "  delivery: {{retry: 1, backoffDelay: PT0.01S}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t3, namespace: demo}}\nspec:\n  broker: default\n  filter: {{attributes: {{type: reply}}}}\n  subscriber: {{uri: \"{}\"}}\n  delivery: {{retry: 0, deadLetterSink: {{uri: \"{}\"}}}}",
            second.url(),
            dls.url()
        ),
    );
    let m = mesh(&yaml).await;
    assert_eq!(
        post_bytes(&m.url("/demo/default"), &traced_request(), b"{}".to_vec()).await,
        202
    );
    eventually("dead letter of the reply", WAIT, || dls.count() == 1).await;
    let attempts = first.received();
    assert_eq!(attempts.len(), 2);
    assert_trace_headers(&attempts[0], "first attempt");
    assert_trace_headers(&attempts[1], "retry");
    eventually("reply deliveries", WAIT, || second.count() == 2).await;
    assert_trace_headers(&second.received()[0], "reply");
    assert_trace_headers(&dls.received()[0], "dead letter");
}

#[tokio::test]
async fn trace_headers_survive_a_restart() {
    let sink = TestSink::start().await;
    sink.script([Reply::Status(503)]);
    let yaml = broker_and_trigger(&sink, "  delivery: {retry: 1, backoffDelay: PT1S}");
    let first = mesh(&yaml).await;
    let data_dir = first.dir.path().to_path_buf();
    assert_eq!(
        post_bytes(
            &first.url("/demo/default"),
            &traced_request(),
            b"{}".to_vec()
        )
        .await,
        202
    );
    eventually("first attempt", WAIT, || sink.count() == 1).await;
    let TestMesh { mesh: running, dir } = first;
    running.shutdown().await;
    let second = mesh_with(&yaml, |mut o| {
        o.data_dir = data_dir.clone();
        o
    })
    .await;
    eventually("retry after restart", WAIT, || sink.count() == 2).await;
    assert_trace_headers(&sink.received()[1], "retry after restart");
    drop(second);
    drop(dir);
}

#[tokio::test]
async fn cloudevents_0_3_is_accepted_and_delivered_as_0_3_in_both_modes() {
    for (extra, structured_out) in [("", false), (STRUCTURED_OUT, true)] {
        let sink = TestSink::start().await;
        let m = mesh(&broker_and_trigger(&sink, extra)).await;
        // Binary 0.3 in.
        let mut h = vec![
            ("ce-specversion", "0.3"),
            ("ce-id", "b1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("ce-schemaurl", "https://example.com/schema"),
            ("content-type", "application/json"),
        ];
        assert_eq!(
            post_bytes(&m.url("/demo/default"), &h, ODD_JSON.to_vec()).await,
            202
        );
        // Structured 0.3 in, base64 data.
        let body = format!(
            r#"{{"specversion":"0.3","id":"s1","source":"/s","type":"t","datacontenttype":"application/octet-stream","datacontentencoding":"base64","data":"{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode(all_bytes())
        );
        h.clear();
        assert_eq!(
            post_bytes(&m.url("/demo/default"), STRUCTURED, body.into_bytes()).await,
            202
        );
        eventually("both delivered", WAIT, || sink.count() == 2).await;
        let got = sink.received();
        for r in &got {
            let e = r.event();
            assert_eq!(e.specversion().as_str(), "0.3", "{extra}");
        }
        if structured_out {
            let b: serde_json::Value = serde_json::from_slice(&got[1].body).expect("json");
            assert_eq!(b["specversion"], "0.3");
            assert_eq!(b["datacontentencoding"], "base64");
            assert!(b.get("data_base64").is_none());
            assert_eq!(raw_data_member(&got[0].body), ODD_JSON);
            let a: serde_json::Value = serde_json::from_slice(&got[0].body).expect("json");
            assert_eq!(a["schemaurl"], "https://example.com/schema");
        } else {
            assert_eq!(got[0].header("ce-specversion").as_deref(), Some("0.3"));
            assert_eq!(
                got[0].header("ce-schemaurl").as_deref(),
                Some("https://example.com/schema")
            );
            assert_eq!(got[0].body, ODD_JSON);
            assert_eq!(got[1].body, all_bytes());
        }
    }
}

#[tokio::test]
async fn reply_whose_ttl_ran_out_dead_letters_the_original_event() {
    let sink = TestSink::start().await;
    let dls = TestSink::start().await;
    // Always answer with an event the same trigger matches again: a loop.
    sink.always(Reply::Event(event("loop", "loop.type")));
    let m = mesh(&broker_and_trigger(
        &sink,
        &format!(
            "  delivery: {{retry: 3, deadLetterSink: {{uri: \"{}\"}}}}",
            dls.url()
        ),
    ))
    .await;
    post_ok(&m.url("/demo/default"), event("start", "loop.type")).await;
    eventually(
        "the loop ends in the dead-letter sink",
        Duration::from_secs(60),
        || dls.count() == 1,
    )
    .await;
    let dead = dls.received()[0].event().clone();
    assert_eq!(dead.id(), "loop");
    assert_eq!(
        dead.extension("knativeerrorcode").map(|v| v.to_string()),
        Some("400".to_string()),
        "the broker rejected the reply with 400"
    );
    // Stored TTLs 255, 254, ..., 1: 255 deliveries, each but the last one's reply stored.
    quiet(&m, "demo", "default", 255).await;
    assert_eq!(
        sink.count(),
        255,
        "the original and 254 replies, each delivered once"
    );
    let c = admin_counters(&m.url(""), "triggers", "demo", "t1").await;
    assert_eq!(c["retried"], 0, "not retried: a 400 is final: {c}");
    assert_eq!(c["deadLettered"], 1, "{c}");
}

#[tokio::test]
async fn failure_body_is_cut_to_1024_bytes_on_receipt() {
    use evmesh::evmesh_broker::delivery::{DeliveryEngine, Outcome, Plan};
    let sink = TestSink::start().await;
    sink.always(Reply::StatusWithBody(503, "x".repeat(1024 * 1024)));
    let url: url::Url = sink.url().parse().expect("url");
    let plan = Plan {
        subscriber: Some(url.clone()),
        reply: evmesh::evmesh_broker::delivery::ReplyTo::Discard,
        dead_letter: None,
        delivery: evmesh::evmesh_config::Delivery::knative_default(),
        namespace: "demo".into(),
        subscriber_ca_certs: None,
        dead_letter_ca_certs: None,
        metrics: None,
    };
    let record =
        evmesh::evmesh_broker::record::EventRecord::from_event(event("1", "t")).expect("record");
    let outcome = DeliveryEngine::new().send(&url, &record, &plan, true).await;
    let Outcome::Failed(f) = outcome else {
        panic!("a 503 is a failure: {outcome:?}");
    };
    assert_eq!(f.status, Some(503));
    assert_eq!(f.body.len(), 1024);
}

#[tokio::test]
async fn subscriber_secrets_are_redacted_in_status_and_knativeerrordest() {
    let failing = TestSink::start().await;
    failing.always(Reply::Status(500));
    let dls = TestSink::start().await;
    let secret_url = format!("http://alice:s3cret@{}/hook?token=t0ken&x=1", failing.addr);
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: demo}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: t1, namespace: demo}}
spec:
  broker: default
  subscriber: {{uri: "{secret_url}"}}
  delivery: {{retry: 0, deadLetterSink: {{uri: "http://bob:pw@{}/?key=k3y"}}}}
"#,
        dls.addr
    );
    let m = mesh(&yaml).await;
    let trigger: serde_json::Value = client()
        .get(m.url("/apis/eventing.knative.dev/v1/namespaces/demo/triggers/t1"))
        .send()
        .await
        .expect("admin")
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).expect("json"))
        .expect("body");
    let status = trigger["status"].to_string();
    for secret in ["s3cret", "t0ken", "alice", "pw@", "k3y"] {
        assert!(!status.contains(secret), "{secret} leaked in {status}");
    }
    assert!(status.contains("/hook"), "{status}");
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("1", "t")).await,
        202
    );
    eventually("dead letter", WAIT, || dls.count() == 1).await;
    let dest = dls.received()[0]
        .event()
        .extension("knativeerrordest")
        .map(|v| v.to_string())
        .expect("knativeerrordest");
    assert_eq!(
        dest,
        format!("http://redacted@{}/hook?redacted", failing.addr)
    );
}

#[tokio::test]
async fn cloudevents_0_3_reply_is_accepted_and_delivered_as_0_3() {
    use cloudevents::EventBuilderV03;
    let first = TestSink::start().await;
    let second = TestSink::start().await;
    first.always(Reply::Event(
        EventBuilderV03::new()
            .id("r03")
            .source("/replier")
            .ty("reply")
            .build()
            .expect("0.3 reply"),
    ));
    let m = mesh(&two_trigger_yaml(&first, &second, "")).await;
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("1", "t")).await,
        202
    );
    eventually("0.3 reply delivered", WAIT, || second.count() == 1).await;
    let got = second.received().remove(0);
    assert_eq!(got.header("ce-specversion").as_deref(), Some("0.3"));
    assert_eq!(got.header("ce-id").as_deref(), Some("r03"));
}

#[tokio::test]
async fn events_stored_in_the_previous_format_are_still_delivered() {
    use evmesh::evmesh_store::{self, LogId};
    let sink = TestSink::start().await;
    let yaml = broker_and_trigger(&sink, "");
    let data_dir = tempfile::tempdir().expect("tempdir");
    {
        // What evmesh stored before the event record: serde_json of a cloudevents::Event.
        let store = evmesh_store::open(Default::default(), data_dir.path()).expect("store");
        let old = EventBuilderV10::new()
            .id("old-1")
            .source("/s")
            .ty("t")
            .extension("knativebrokerttl", 255)
            .data("application/json", serde_json::json!({"a": 1}))
            .build()
            .expect("event");
        store
            .append(
                &LogId::new("demo/default"),
                serde_json::to_vec(&old).expect("json"),
            )
            .await
            .expect("append");
        store
            .put_checkpoint(
                "t/demo/default/t1",
                br#"{"taken_upto":0,"inflight":[]}"#.to_vec(),
            )
            .expect("checkpoint");
        store.flush().await.expect("flush");
    }
    let dir = data_dir.path().to_path_buf();
    let _m = mesh_with(&yaml, |mut o| {
        o.data_dir = dir.clone();
        o
    })
    .await;
    eventually("previous-format event delivered", WAIT, || {
        sink.count() == 1
    })
    .await;
    let got = sink.received().remove(0);
    assert_eq!(got.header("ce-id").as_deref(), Some("old-1"));
    assert_eq!(got.body, br#"{"a":1}"#);
    assert!(got.header("ce-knativebrokerttl").is_none());
}
