//! Delivery guarantees of the README, each proven black-box over loopback HTTP: durable replies
//! (structured mode too) and the TTL loop guard's exact count, new triggers start at the log's
//! head, dead-letter sinks retried with the same policy, `knativeerrordata` truncation, drops
//! counted, the default broker delivery, immediate retries without `backoffDelay`,
//! `Retry-After` handling, every admin counter, and an ordered key waiting for a dead letter.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use common::*;

const WAIT: Duration = Duration::from_secs(15);

fn base(m: &TestMesh) -> String {
    m.url("")
}

fn gaps(sink: &TestSink) -> Vec<Duration> {
    let r = sink.received();
    r.windows(2).map(|w| w[1].at - w[0].at).collect()
}

const REPLY_MESH: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: first}
spec:
  broker: default
  filter: {attributes: {type: original}}
  subscriber: {uri: "FIRST"}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: second}
spec:
  broker: default
  filter: {attributes: {type: reply}}
  subscriber: {uri: "SECOND"}
"#;

#[tokio::test]
async fn a_structured_mode_reply_is_published_and_delivered() {
    let first = TestSink::start().await;
    let second = TestSink::start().await;
    first.script([Reply::Raw(
        200,
        vec![("content-type", "application/cloudevents+json".into())],
        r#"{"specversion":"1.0","id":"r-1","source":"/replier","type":"reply","replyext":"x","datacontenttype":"application/json","data":{"ok":true}}"#.into(),
    )]);
    let m = mesh(
        &REPLY_MESH
            .replace("FIRST", &first.url())
            .replace("SECOND", &second.url()),
    )
    .await;
    assert_eq!(
        post_binary(&m.url("/default/default"), event("o-1", "original")).await,
        202
    );
    eventually("the reply delivered", WAIT, || second.count() == 1).await;
    let r = &second.received()[0];
    assert_eq!(r.event().id(), "r-1");
    assert_eq!(r.event().source().as_str(), "/replier");
    assert_eq!(
        r.event().extension("replyext").map(|v| v.to_string()),
        Some("x".to_string())
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.body).expect("json"),
        serde_json::json!({"ok": true})
    );
    assert!(
        r.event().extension("knativebrokerttl").is_none(),
        "the TTL stays internal"
    );
    let c = eventually_counters(&base(&m), "brokers", "default", "default", WAIT, |c| {
        c["routed"] == 2
    })
    .await;
    assert_eq!(c["accepted"], 1, "accepted counts ingress only: {c}");
    assert_eq!(
        c["routed"], 2,
        "the original and the reply were each routed: {c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_loop_stops_after_exactly_255_deliveries() {
    // Knative: 255 on first ingress; each reply re-enters with the TTL decremented; a reply whose
    // TTL would reach 0 is refused. Stored TTLs are 255, 254, ..., 1: 255 deliveries. The last
    // one's reply is refused with 400, so that delivery fails (not retried) and, without a
    // dead-letter sink, is dropped — as Knative's broker treats a reply it rejects.
    let sink = TestSink::start().await;
    sink.always(Reply::Map(|e| {
        EventBuilderV10::new()
            .id(format!("{}+", e.id()))
            .source("/loop")
            .ty("loop")
            .build()
            .expect("reply")
    }));
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("l", "loop")).await,
        202
    );
    eventually_counters(
        &base(&m),
        "triggers",
        "demo",
        "t1",
        Duration::from_secs(60),
        |c| c["delivered"] == 254 && c["dropped"] == 1,
    )
    .await;
    quiet(&m, "demo", "default", 255).await;
    assert_eq!(sink.count(), 255, "exactly 255 hops");
    let c = admin_counters(&base(&m), "brokers", "demo", "default").await;
    assert_eq!(c["accepted"], 1, "accepted counts ingress only: {c}");
    assert_eq!(
        c["routed"], 255,
        "the original and 254 replies stored and routed: {c}"
    );
    let c = admin_counters(&base(&m), "triggers", "demo", "t1").await;
    assert_eq!(c["delivered"], 254);
    assert_eq!(
        c["dropped"], 1,
        "the last reply is refused, so its delivery fails for good"
    );
}

#[tokio::test]
async fn ingress_answers_400_to_an_event_whose_ttl_is_spent() {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    let with_ttl = |id: &str, ttl: &str| {
        EventBuilderV10::new()
            .id(id)
            .source("/s")
            .ty("t")
            .extension("knativebrokerttl", ttl)
            .build()
            .expect("event")
    };
    let url = m.url("/demo/default");
    assert_eq!(post_binary(&url, with_ttl("spent-1", "1")).await, 400);
    assert_eq!(post_binary(&url, with_ttl("spent-0", "0")).await, 400);
    assert_eq!(post_binary(&url, with_ttl("alive", "2")).await, 202);
    eventually("the live event", WAIT, || sink.count() == 1).await;
    quiet(&m, "demo", "default", 1).await;
    assert_eq!(sink.ids(), vec!["alive"], "spent events are not delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_trigger_starts_at_the_log_head_even_with_older_events_pending() {
    let old = TestSink::start().await;
    let new = TestSink::start().await;
    old.always(Reply::Status(503));
    let one = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: old}}
spec:
  broker: default
  subscriber: {{uri: "{}"}}
  delivery: {{retry: 1000, backoffDelay: PT0.05S}}
"#,
        old.url()
    );
    let two = format!(
        "{one}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: new}}\nspec: {{broker: default, subscriber: {{uri: \"{}\"}}}}\n",
        new.url()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let first = mesh_at(dir.path(), &one, |mut o| {
        o.service.drain_timeout = Duration::from_secs(2);
        o
    })
    .await;
    let url = format!("{}default/default", first.url());
    for i in 0..5 {
        assert_eq!(
            post_binary(&url, event(&format!("old-{i}"), "t")).await,
            202
        );
    }
    eventually("the old trigger is retrying all 5", WAIT, || {
        id_counts(&old).len() == 5
    })
    .await;
    first.shutdown().await;

    old.always(Reply::Status(202));
    let second = mesh_at(dir.path(), &two, |o| o).await;
    let url = format!("{}default/default", second.url());
    assert_eq!(post_binary(&url, event("new-1", "t")).await, 202);
    eventually("the old trigger catches up", WAIT, || {
        id_counts(&old).len() == 6
    })
    .await;
    eventually("the new trigger gets the new event", WAIT, || {
        new.count() == 1
    })
    .await;
    // Stopped, with nothing left to deliver: the new trigger can get nothing more.
    second.shutdown().await;
    assert_nothing_left(dir.path(), "default", "default", &[("new", &every)]).await;
    assert_eq!(new.ids(), vec!["new-1"], "a new trigger gets no old events");
}

fn dls_mesh(sink: &TestSink, dls: &TestSink) -> String {
    broker_and_trigger(
        sink,
        &format!(
            "  delivery: {{retry: 2, backoffPolicy: linear, backoffDelay: PT0.1S, deadLetterSink: {{uri: \"{}\"}}}}",
            dls.url()
        ),
    )
}

#[tokio::test]
async fn the_dead_letter_sink_is_retried_with_the_same_policy() {
    let sink = TestSink::start().await;
    let dls = TestSink::start().await;
    sink.always(Reply::Status(500));
    dls.script([Reply::Status(503), Reply::Status(503)]);
    let m = mesh(&dls_mesh(&sink, &dls)).await;
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("d-1", "t")).await,
        202
    );
    let c = eventually_counters(&base(&m), "triggers", "demo", "t1", WAIT, |c| {
        c["deadLettered"] == 1 || c["dropped"] == 1
    })
    .await;
    assert_eq!(c["deadLettered"], 1, "the third DLS attempt succeeded: {c}");
    assert_eq!(c["dropped"], 0);
    assert_eq!(
        sink.count(),
        3,
        "retry: 2 means 3 attempts to the subscriber"
    );
    assert_eq!(dls.count(), 3, "and 3 to the dead-letter sink");
    assert!(dls.ids().iter().all(|id| id == "d-1"));
    // The same linear backoff: 100 ms, then 200 ms.
    let g = gaps(&dls);
    assert!(
        g[0] >= Duration::from_millis(100) && g[1] >= Duration::from_millis(200),
        "DLS retry gaps {g:?}"
    );
}

#[tokio::test]
async fn an_event_the_dead_letter_sink_refuses_too_is_dropped_and_counted() {
    let sink = TestSink::start().await;
    let dls = TestSink::start().await;
    sink.always(Reply::Status(500));
    dls.always(Reply::Status(503));
    let m = mesh(&dls_mesh(&sink, &dls)).await;
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("d-2", "t")).await,
        202
    );
    let c = eventually_counters(&base(&m), "triggers", "demo", "t1", WAIT, |c| {
        c["dropped"] == 1
    })
    .await;
    assert_eq!(c["deadLettered"], 0, "{c}");
    assert_eq!(dls.count(), 3, "the DLS got its 3 attempts first");
    quiet(&m, "demo", "default", 1).await;
    assert_eq!(
        (sink.count(), dls.count()),
        (3, 3),
        "nothing after the drop"
    );
}

#[tokio::test]
async fn knativeerrordata_is_cut_at_1024_characters() {
    let sink = TestSink::start().await;
    let dls = TestSink::start().await;
    let body: String = (0..2000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    sink.always(Reply::StatusWithBody(422, body.clone()));
    let m = mesh(&dls_mesh(&sink, &dls)).await;
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("big", "t")).await,
        202
    );
    eventually("dead letter", WAIT, || dls.count() == 1).await;
    let data = dls.received()[0]
        .event()
        .extension("knativeerrordata")
        .map(|v| v.to_string())
        .expect("knativeerrordata");
    let full = base64::engine::general_purpose::STANDARD.encode(body.as_bytes());
    assert_eq!(data.len(), 1024);
    assert_eq!(data, full[..1024]);
}

#[tokio::test]
async fn a_broker_without_delivery_gets_knatives_default_retry_10_exponential_200ms() {
    let yaml = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n";
    let cfg = evmesh::evmesh_config::MeshConfig::from_yaml("m.yaml", yaml).expect("valid");
    let d = &cfg.brokers[0].delivery;
    assert_eq!(d.retry, 10);
    assert_eq!(
        d.backoff_policy,
        evmesh::evmesh_config::BackoffPolicy::Exponential
    );
    assert_eq!(d.backoff_delay, Some(Duration::from_millis(200)));

    // And it is what happens: 200, 400, 800 ms before the first three retries.
    let sink = TestSink::start().await;
    sink.always(Reply::Status(503));
    let m = mesh(&format!(
        "{yaml}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t}}\nspec: {{broker: default, subscriber: {{uri: \"{}\"}}}}\n",
        sink.url()
    ))
    .await;
    assert_eq!(
        post_binary(&m.url("/default/default"), event("1", "t")).await,
        202
    );
    eventually("4 attempts", WAIT, || sink.count() == 4).await;
    let g = gaps(&sink);
    for (gap, min) in g.iter().zip([200, 400, 800]) {
        assert!(*gap >= Duration::from_millis(min), "gaps {g:?}");
    }
    assert!(
        g[0] < Duration::from_millis(400),
        "the base delay is 200 ms: {g:?}"
    );
}

#[tokio::test]
async fn without_backoff_delay_retries_are_immediate() {
    let sink = TestSink::start().await;
    sink.always(Reply::Status(503));
    // Any default delay (e.g. the broker default's exponential 200 ms: 6.2 s for 5 retries)
    // would break the bound.
    let _m = one_event(&sink, "  delivery: {retry: 5}").await;
    eventually("6 attempts", WAIT, || sink.count() == 6).await;
    let r = sink.received();
    let span = r[5].at - r[0].at;
    assert!(
        span < Duration::from_millis(1500),
        "6 attempts took {span:?}"
    );
}

/// Gap between the first attempt (answered `status` with `Retry-After: value`) and the second.
async fn retry_after_gap(status: u16, value: String, delivery: &str) -> Duration {
    let sink = TestSink::start().await;
    sink.script([Reply::StatusWithHeader(status, "retry-after", value)]);
    let _m = one_event(&sink, delivery).await;
    eventually("second attempt", Duration::from_secs(30), || {
        sink.count() == 2
    })
    .await;
    gaps(&sink)[0]
}

#[tokio::test]
async fn retry_after_above_retry_after_max_is_capped() {
    let g = retry_after_gap(
        503,
        "30".into(),
        "  delivery: {retry: 2, backoffDelay: PT0.01S, retryAfterMax: PT0.5S}",
    )
    .await;
    assert!(
        g >= Duration::from_millis(500) && g < Duration::from_secs(10),
        "Retry-After: 30 capped at 0.5 s, waited {g:?}"
    );
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let at = chrono::Utc::now() + chrono::Duration::seconds(3);
    let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let started = Instant::now();
    let g = retry_after_gap(
        429,
        date,
        "  delivery: {retry: 2, backoffDelay: PT0.01S, retryAfterMax: PT20S}",
    )
    .await;
    // The date has whole seconds: at least 2 s from when it was made.
    assert!(
        g >= Duration::from_millis(1500) && g < Duration::from_secs(10),
        "waited {g:?} (test ran {:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn retry_after_is_ignored_without_retry_after_max() {
    let g = retry_after_gap(
        503,
        "30".into(),
        "  delivery: {retry: 2, backoffDelay: PT0.01S}",
    )
    .await;
    assert!(
        g < Duration::from_secs(5),
        "Retry-After ignored, waited {g:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_counter_counts_what_happened() {
    let ok = TestSink::start().await;
    let flaky = TestSink::start().await;
    let bad = TestSink::start().await;
    let dls = TestSink::start().await;
    flaky.script([Reply::Status(503), Reply::Status(503)]);
    bad.always(Reply::Status(400));
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
spec:
  delivery: {{retry: 3, backoffDelay: PT0.01S}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: ok}}
spec: {{broker: default, subscriber: {{uri: "{ok}"}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: flaky}}
spec:
  broker: default
  filter: {{attributes: {{type: a}}}}
  subscriber: {{uri: "{flaky}"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: dead}}
spec:
  broker: default
  filter: {{attributes: {{type: a}}}}
  subscriber: {{uri: "{bad}"}}
  delivery: {{retry: 3, deadLetterSink: {{uri: "{dls}"}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: drop}}
spec:
  broker: default
  filter: {{attributes: {{type: b}}}}
  subscriber: {{uri: "{bad}"}}
"#,
        ok = ok.url(),
        flaky = flaky.url(),
        bad = bad.url(),
        dls = dls.url()
    );
    let m = mesh(&yaml).await;
    let url = m.url("/default/default");
    assert_eq!(post_binary(&url, event("a-1", "a")).await, 202); // ok, flaky, dead
    assert_eq!(post_binary(&url, event("b-1", "b")).await, 202); // ok, drop
    assert_eq!(post_binary(&url, event("c-1", "c")).await, 202); // ok
    let (status, _) = post_raw(&url, &[("content-type", "application/json")], "{}").await;
    assert_eq!(status, 400);
    let (status, _) = post_raw(
        &url,
        &[("content-type", "application/cloudevents+json")],
        "{broken",
    )
    .await;
    assert_eq!(status, 400);

    let b = base(&m);
    let wait = |t: &'static str, cond: fn(&serde_json::Value) -> bool| {
        let b = b.clone();
        async move { eventually_counters(&b, "triggers", "default", t, WAIT, cond).await }
    };
    let c_ok = wait("ok", |c| c["delivered"] == 3).await;
    let c_flaky = wait("flaky", |c| c["delivered"] == 1).await;
    let c_dead = wait("dead", |c| c["deadLettered"] == 1).await;
    let c_drop = wait("drop", |c| c["dropped"] == 1).await;
    quiet(&m, "default", "default", 3).await;
    let broker = admin_counters(&b, "brokers", "default", "default").await;
    assert_eq!(broker["accepted"], 3, "{broker}");
    assert_eq!(broker["rejected"], 2, "{broker}");
    assert_eq!(
        broker["routed"], 6,
        "3 + 2 + 1 (event, trigger) matches: {broker}"
    );

    let zero = |c: &serde_json::Value, fields: &[&str]| {
        for f in fields {
            assert_eq!(c[*f], 0, "{f} in {c}");
        }
    };
    zero(&c_ok, &["retried", "deadLettered", "dropped"]);
    assert_eq!(c_flaky["retried"], 2, "{c_flaky}");
    zero(&c_flaky, &["deadLettered", "dropped"]);
    assert_eq!(c_dead["delivered"], 0, "{c_dead}");
    assert_eq!(c_dead["retried"], 0, "400 is not retried: {c_dead}");
    assert_eq!(c_dead["dropped"], 0, "{c_dead}");
    assert_eq!(c_drop["dropped"], 1);
    zero(&c_drop, &["delivered", "retried", "deadLettered"]);
    // The counters did not move after the waits.
    for (t, c) in [
        ("ok", &c_ok),
        ("flaky", &c_flaky),
        ("dead", &c_dead),
        ("drop", &c_drop),
    ] {
        assert_eq!(
            &admin_counters(&b, "triggers", "default", t).await,
            c,
            "{t}"
        );
    }
}

fn receipt(e: &cloudevents::Event) -> cloudevents::Event {
    EventBuilderV10::new()
        .id(format!("re-{}", e.id()))
        .source("/replier")
        .ty("reply")
        .build()
        .expect("reply event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_cannot_be_stored_makes_the_delivery_retry() {
    // The reply arrives while the mesh shuts down, so storing it fails (the broker refuses new
    // events): the delivery must not count as done; after a restart it is retried and the reply
    // reaches its trigger.
    let first = TestSink::start().await;
    let second = TestSink::start().await;
    first.script([Reply::DelayThen(
        Duration::from_millis(500),
        Box::new(Reply::Map(receipt)),
    )]);
    first.always(Reply::Map(receipt));
    let yaml = REPLY_MESH
        .replace("FIRST", &first.url())
        .replace("SECOND", &second.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let one = mesh_at(dir.path(), &yaml, |o| o).await;
    let url = format!("{}default/default", one.url());
    assert_eq!(post_binary(&url, event("o-1", "original")).await, 202);
    eventually("the delivery is in flight", WAIT, || first.count() == 1).await;
    one.shutdown().await;
    assert_eq!(second.count(), 0, "the reply was not stored");

    let _two = mesh_at(dir.path(), &yaml, |o| o).await;
    eventually("the reply delivered after the retry", WAIT, || {
        second.count() == 1
    })
    .await;
    assert_eq!(second.ids(), vec!["re-o-1"]);
    assert_eq!(
        first.ids(),
        vec!["o-1", "o-1"],
        "the original was delivered again"
    );
}

#[tokio::test]
async fn delivered_ce_header_values_are_percent_encoded() {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    let e = EventBuilderV10::new()
        .id("pct-1")
        .source("/s")
        .ty("t")
        .subject("café au lait")
        .extension("note", "100% \"quoted\"")
        .build()
        .expect("event");
    post_ok(&m.url("/demo/default"), e).await;
    eventually("delivery", WAIT, || sink.count() == 1).await;
    let r = &sink.received()[0];
    // The raw header values (CloudEvents HTTP binding 3.1.3.2: space, '"', '%' and non-ASCII
    // are percent-encoded), and the decoded event keeps the original values.
    assert_eq!(
        r.header("ce-subject").as_deref(),
        Some("caf%C3%A9%20au%20lait")
    );
    assert_eq!(
        r.header("ce-note").as_deref(),
        Some("100%25%20%22quoted%22")
    );
    assert_eq!(r.event().subject(), Some("café au lait"));
}

#[tokio::test]
async fn retryable_statuses_are_retried_and_others_fail_at_once() {
    // Retryable (README, as Knative): no response, 404, 408, 409, 429, 5xx.
    let sink = TestSink::start().await;
    let retryable = [404u16, 408, 409, 429, 500, 502, 503, 504];
    sink.script(retryable.map(Reply::Status));
    let _m = one_event(&sink, "  delivery: {retry: 8, backoffDelay: PT0.01S}").await;
    eventually("delivered on the 9th attempt", WAIT, || sink.count() == 9).await;
    quiet(&_m, "demo", "default", 1).await;
    let c = admin_counters(&_m.url(""), "triggers", "demo", "t1").await;
    assert_eq!(
        (c["delivered"].clone(), c["retried"].clone()),
        (1.into(), 8.into()),
        "{c}"
    );

    // Any other non-2xx: one attempt, then the event is dropped (no DLS).
    let others = [400u16, 401, 403, 405, 410, 413, 422, 301];
    let sinks: Vec<TestSink> = {
        let mut v = Vec::new();
        for code in others {
            let s = TestSink::start().await;
            s.always(Reply::Status(code));
            v.push(s);
        }
        v
    };
    let mut yaml = String::from(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\nspec: {delivery: {retry: 3, backoffDelay: PT0.01S}}\n",
    );
    for (code, s) in others.iter().zip(&sinks) {
        yaml.push_str(&format!(
            "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: s{code}}}\nspec: {{broker: default, subscriber: {{uri: \"{}\"}}}}\n",
            s.url()
        ));
    }
    let m = mesh(&yaml).await;
    post_ok(&m.url("/default/default"), event("n-1", "t")).await;
    quiet(&m, "default", "default", 1).await;
    for (code, s) in others.iter().zip(&sinks) {
        let c = admin_counters(&m.url(""), "triggers", "default", &format!("s{code}")).await;
        let b = admin_counters(&m.url(""), "brokers", "default", "default").await;
        assert_eq!(s.count(), 1, "{code} is not retried: {c} broker {b}");
        assert_eq!(c["dropped"], 1, "{code}: {c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_has_at_most_100_deliveries_in_flight_by_default() {
    let sink = TestSink::start().await;
    sink.always(Reply::Delay(Duration::from_secs(3)));
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    let url = m.url("/demo/default");
    let posts: Vec<_> = (0..130)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move { post_ok(&url, event(&format!("f-{i}"), "t")).await })
        })
        .collect();
    for p in posts {
        p.await.expect("post");
    }
    eventually("every event delivered", Duration::from_secs(30), || {
        sink.count() == 130
    })
    .await;
    // No slot can free before the first answer, 3 s after the first request: every request that
    // arrived before then was in flight at once.
    let r = sink.received();
    let first = r[0].at;
    let before_any_answer = r
        .iter()
        .filter(|x| x.at < first + Duration::from_secs(3))
        .count();
    assert_eq!(before_any_answer, 100, "the default --max-in-flight is 100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_key_waits_until_the_previous_event_is_dead_lettered() {
    let (sink, dls) = (TestSink::start().await, TestSink::start().await);
    // k-0's three attempts fail; everything after succeeds.
    sink.script([Reply::Status(503), Reply::Status(503), Reply::Status(503)]);
    let m = mesh(&format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: ordered
  annotations: {{kafka.eventing.knative.dev/delivery.order: ordered}}
spec:
  broker: default
  subscriber: {{uri: "{}"}}
  delivery: {{retry: 2, backoffPolicy: linear, backoffDelay: PT0.05S, deadLetterSink: {{uri: "{}"}}}}
"#,
        sink.url(),
        dls.url()
    ))
    .await;
    let keyed = |id: &str| {
        EventBuilderV10::new()
            .id(id)
            .source("/order")
            .ty("t")
            .extension("partitionkey", "k")
            .build()
            .expect("event")
    };
    post_ok(&m.url("/default/default"), keyed("k-0")).await;
    post_ok(&m.url("/default/default"), keyed("k-1")).await;
    eventually("k-1 delivered", WAIT, || {
        sink.ids().contains(&"k-1".to_string())
    })
    .await;
    assert_eq!(
        sink.ids(),
        ["k-0", "k-0", "k-0", "k-1"],
        "k-1 was not attempted while k-0 was being retried"
    );
    assert_eq!(dls.ids(), ["k-0"]);
    assert!(
        dls.received()[0].at <= sink.received()[3].at,
        "k-0 was dead-lettered before k-1 was attempted"
    );
}
