//! The Sequence data-plane test shared by every channel kind (`tests/flows.rs` runs it on
//! InMemoryChannel, `tests/nats_channel.rs` on NatsJetStreamChannel): three steps appending
//! `-stepN` (Knative's Sequence feature test) and a reply sink.

use std::time::Duration;

use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};

use super::{Reply, TestSink, eventually, post_ok};

pub fn text_of(e: &Event) -> String {
    match e.data() {
        Some(cloudevents::Data::String(s)) => s.clone(),
        Some(cloudevents::Data::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(cloudevents::Data::Json(v)) => v.to_string(),
        None => String::new(),
    }
}

fn append(e: &Event, suffix: &str) -> Event {
    let mut out = e.clone();
    out.set_data("text/plain", format!("{}{suffix}", text_of(e)));
    out
}

pub fn step1(e: &Event) -> Event {
    append(e, "-step1")
}
pub fn step2(e: &Event) -> Event {
    append(e, "-step2")
}
pub fn step3(e: &Event) -> Event {
    append(e, "-step3")
}

pub fn text_event(id: &str, text: &str) -> Event {
    let mut e = EventBuilderV10::new()
        .id(id)
        .source("/test")
        .ty("dev.knative.sources.ping")
        .build()
        .expect("valid event");
    e.set_data("text/plain", text.to_string());
    e
}

/// Three step sinks appending `-stepN` and a reply sink.
pub async fn three_steps() -> [TestSink; 4] {
    let s = [
        TestSink::start().await,
        TestSink::start().await,
        TestSink::start().await,
        TestSink::start().await,
    ];
    s[0].always(Reply::Map(step1));
    s[1].always(Reply::Map(step2));
    s[2].always(Reply::Map(step3));
    s
}

/// An event sent to the sequence's `address` passes the steps `s[0..3]` in order, each reply
/// feeding the next, and the last reply reaches `s[3]` with the event's attributes kept.
pub async fn sequence_runs_its_steps_in_order_and_sends_the_last_reply(
    address: &str,
    s: &[TestSink; 4],
) {
    post_ok(address, text_event("p1", "hello")).await;
    eventually(
        "the reply gets the event after three steps",
        Duration::from_secs(10),
        || s[3].count() == 1,
    )
    .await;
    let got = s[3].received()[0].event().clone();
    assert_eq!(text_of(&got), "hello-step1-step2-step3");
    assert_eq!(got.ty(), "dev.knative.sources.ping", "attributes are kept");
    assert_eq!(got.id(), "p1");
}
