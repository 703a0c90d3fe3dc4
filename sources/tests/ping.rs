//! PingSource: Knative's event shape and its schedule, on an injected clock (no wall-clock
//! minutes) and, for one test, on the system clock with a seconds field.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::{CollectSink, attr, eventually};
use evmesh_broker::record::DataKind;
use evmesh_config::MeshConfig;
use evmesh_sources::{
    CancellationToken, Clock, ManualClock, PingSource, SinkErrorKind, Source, SourceContext,
    SystemClock,
};

fn ping(spec: &str) -> PingSource {
    let yaml = format!(
        "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {{name: test-ping-source, namespace: pingsource-example}}\nspec:\n{spec}  sink: {{uri: http://127.0.0.1:9/}}\n"
    );
    common::install_kinds();
    let mesh = MeshConfig::from_yaml("ping.yaml", &yaml).expect("valid PingSource");
    PingSource::new(&mesh.sources[0]).expect("a ping source")
}

fn utc(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 4, h, m, s)
        .single()
        .expect("valid")
}

struct Running {
    source: Arc<PingSource>,
    clock: Arc<ManualClock>,
    sink: Arc<CollectSink>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(spec: &str, at: DateTime<Utc>) -> Running {
    let clock = Arc::new(ManualClock::new(at));
    let source = Arc::new(ping(spec).with_clock(clock.clone()));
    let sink = Arc::new(CollectSink::default());
    let stop = CancellationToken::new();
    let ctx = SourceContext::new(
        sink.clone(),
        Some("http://127.0.0.1:9/".into()),
        stop.clone(),
    );
    let s = source.clone();
    let task = tokio::spawn(async move { s.run(ctx).await });
    Running {
        source,
        clock,
        sink,
        stop,
        task,
    }
}

impl Running {
    /// Waits until the source sleeps towards `next` (its loop has handled everything before).
    async fn sleeping_until(&self, next: DateTime<Utc>) {
        let want = next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        eventually(&format!("next tick {want}"), || {
            (self.source.status().extra["evmesh"]["nextTick"] == want.as_str()).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn ping_event_has_knatives_type_and_source_and_a_fresh_id_per_tick() {
    let p = ping(
        "  schedule: \"*/1 * * * *\"\n  contentType: application/json\n  data: '{\"message\": \"Hello world!\"}'\n",
    );
    let a = p.event_at(utc(10, 0, 0)).expect("event");
    let b = p.event_at(utc(10, 1, 0)).expect("event");
    assert_eq!(attr(&a, "specversion").as_deref(), Some("1.0"));
    assert_eq!(
        attr(&a, "type").as_deref(),
        Some("dev.knative.sources.ping")
    );
    assert_eq!(
        attr(&a, "source").as_deref(),
        Some("/apis/v1/namespaces/pingsource-example/pingsources/test-ping-source")
    );
    assert_eq!(attr(&a, "time").as_deref(), Some("2026-03-04T10:00:00Z"));
    assert_eq!(attr(&a, "subject"), None);
    let (ida, idb) = (attr(&a, "id").expect("id"), attr(&b, "id").expect("id"));
    assert_ne!(ida, idb);
    assert!(uuid_like(&ida), "{ida}");
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn ping_json_data_is_kept_byte_for_byte_with_its_content_type() {
    let p = ping(
        "  contentType: application/json\n  data: '{\"message\":  \"Hello world!\", \"n\": 10.50}'\n",
    );
    let e = p.event_at(utc(10, 0, 0)).expect("event");
    assert_eq!(
        attr(&e, "datacontenttype").as_deref(),
        Some("application/json")
    );
    let (kind, bytes) = e.data().expect("data");
    assert_eq!(kind, DataKind::Json);
    assert_eq!(&bytes[..], br#"{"message":  "Hello world!", "n": 10.50}"#);
}

#[tokio::test]
async fn ping_data_base64_is_decoded_into_the_event_data() {
    let p = ping("  contentType: text/plain\n  dataBase64: aGVsbG8sIHdvcmxkIQ==\n");
    let e = p.event_at(utc(10, 0, 0)).expect("event");
    assert_eq!(attr(&e, "datacontenttype").as_deref(), Some("text/plain"));
    let (kind, bytes) = e.data().expect("data");
    assert_eq!(kind, DataKind::Text);
    assert_eq!(&bytes[..], b"hello, world!");
}

#[tokio::test]
async fn ping_binary_data_base64_stays_bytes() {
    let p = ping("  contentType: application/octet-stream\n  dataBase64: AAECAw==\n");
    let e = p.event_at(utc(10, 0, 0)).expect("event");
    let (kind, bytes) = e.data().expect("data");
    assert_eq!(kind, DataKind::Binary);
    assert_eq!(&bytes[..], &[0u8, 1, 2, 3]);
}

#[tokio::test]
async fn ping_without_data_has_no_data_and_no_datacontenttype() {
    let p = ping("  contentType: application/json\n");
    let e = p.event_at(utc(10, 0, 0)).expect("event");
    assert!(e.data().is_none());
    assert_eq!(attr(&e, "datacontenttype"), None);
}

#[tokio::test]
async fn ping_ce_overrides_become_extensions() {
    let p = ping("  ceOverrides: {extensions: {myext: value, Team: blue}}\n");
    let e = p.event_at(utc(10, 0, 0)).expect("event");
    assert_eq!(attr(&e, "myext").as_deref(), Some("value"));
    // Extension names are lower-cased, as the CloudEvents SDK sets them.
    assert_eq!(attr(&e, "team").as_deref(), Some("blue"));
}

#[tokio::test]
async fn ping_ticks_on_its_schedule() {
    let r = start(
        "  schedule: \"* * * * *\"\n  timezone: UTC\n  data: hi\n",
        utc(10, 0, 30),
    );
    r.sleeping_until(utc(10, 1, 0)).await;
    assert_eq!(r.sink.len(), 0);
    r.clock.set(utc(10, 1, 0));
    let events = r.sink.wait_for(1).await;
    assert_eq!(
        attr(&events[0], "time").as_deref(),
        Some("2026-03-04T10:01:00Z")
    );
    r.sleeping_until(utc(10, 2, 0)).await;
    r.clock.set(utc(10, 2, 0));
    let events = r.sink.wait_for(2).await;
    assert_ne!(attr(&events[0], "id"), attr(&events[1], "id"));
    r.stop.cancel();
    r.task.await.expect("stopped");
}

#[tokio::test]
async fn ping_missed_ticks_are_not_replayed() {
    let r = start(
        "  schedule: \"* * * * *\"\n  timezone: UTC\n",
        utc(10, 0, 30),
    );
    r.sleeping_until(utc(10, 1, 0)).await;
    // Ten minutes pass at once (a suspended machine): the due tick fires once, late; the nine
    // after it are not replayed.
    r.clock.set(utc(10, 10, 30));
    r.sink.wait_for(1).await;
    r.sleeping_until(utc(10, 11, 0)).await;
    assert_eq!(r.sink.len(), 1);
    r.stop.cancel();
    r.task.await.expect("stopped");
}

#[tokio::test]
async fn ping_restarted_source_does_not_replay_ticks_missed_while_down() {
    let r = start(
        "  schedule: \"* * * * *\"\n  timezone: UTC\n",
        utc(10, 0, 30),
    );
    r.sleeping_until(utc(10, 1, 0)).await;
    r.stop.cancel();
    r.task.await.expect("stopped");
    // Started again five minutes later: the first tick is the next one on the schedule.
    let r = start(
        "  schedule: \"* * * * *\"\n  timezone: UTC\n",
        utc(10, 5, 30),
    );
    r.sleeping_until(utc(10, 6, 0)).await;
    assert_eq!(r.sink.len(), 0);
    r.stop.cancel();
    r.task.await.expect("stopped");
}

#[tokio::test]
async fn ping_tick_is_never_emitted_twice_when_the_clock_moves_back() {
    let r = start(
        "  schedule: \"* * * * *\"\n  timezone: UTC\n",
        utc(10, 0, 30),
    );
    r.sleeping_until(utc(10, 1, 0)).await;
    r.clock.set(utc(10, 1, 0));
    r.sink.wait_for(1).await;
    r.sleeping_until(utc(10, 2, 0)).await;
    // NTP steps the clock back over the tick just emitted, then time passes it again.
    r.clock.set(utc(10, 0, 45));
    // Let the source's loop wake and see the earlier time before the clock moves on.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    r.clock.set(utc(10, 1, 30));
    r.sleeping_until(utc(10, 2, 0)).await;
    assert_eq!(r.sink.len(), 1);
    r.clock.set(utc(10, 2, 0));
    let events = r.sink.wait_for(2).await;
    assert_eq!(
        attr(&events[1], "time").as_deref(),
        Some("2026-03-04T10:02:00Z")
    );
    r.stop.cancel();
    r.task.await.expect("stopped");
}

#[tokio::test]
async fn ping_timezone_moves_the_ticks() {
    // 09:00 in Tokyo (UTC+9) is midnight UTC.
    let r = start(
        "  schedule: \"0 9 * * *\"\n  timezone: Asia/Tokyo\n",
        utc(10, 0, 0),
    );
    let midnight = Utc
        .with_ymd_and_hms(2026, 3, 5, 0, 0, 0)
        .single()
        .expect("valid");
    r.sleeping_until(midnight).await;
    r.clock.set(midnight);
    r.sink.wait_for(1).await;
    r.stop.cancel();
    r.task.await.expect("stopped");
}

#[tokio::test]
async fn ping_hourly_descriptor_ticks_on_the_hour() {
    let r = start("  schedule: \"@hourly\"\n  timezone: UTC\n", utc(10, 20, 0));
    r.sleeping_until(utc(11, 0, 0)).await;
    r.clock.set(utc(11, 0, 0));
    r.sink.wait_for(1).await;
    r.sleeping_until(utc(12, 0, 0)).await;
    r.stop.cancel();
    r.task.await.expect("stopped");
}

#[tokio::test]
async fn ping_status_shows_sink_uri_and_ce_attributes_and_ready_while_running() {
    let r = start("  timezone: UTC\n", utc(10, 0, 30));
    r.sleeping_until(utc(10, 1, 0)).await;
    let st = r.source.status();
    assert!(st.ready);
    let json = st.to_json(1);
    assert_eq!(json["sinkUri"], "http://127.0.0.1:9/");
    assert_eq!(json["ceAttributes"][0]["type"], "dev.knative.sources.ping");
    assert_eq!(
        json["ceAttributes"][0]["source"],
        "/apis/v1/namespaces/pingsource-example/pingsources/test-ping-source"
    );
    assert_eq!(json["conditions"][0]["status"], "True");
    r.stop.cancel();
    r.task.await.expect("stopped");
    let st = r.source.status();
    assert!(!st.ready);
    assert_eq!(st.reason.as_deref(), Some("NotRunning"));
}

#[tokio::test]
async fn ping_tick_refused_by_the_sink_is_counted_as_lost() {
    let r = start("  timezone: UTC\n", utc(10, 0, 30));
    r.sink.refuse(Some(SinkErrorKind::Unavailable));
    r.sleeping_until(utc(10, 1, 0)).await;
    r.clock.set(utc(10, 1, 0));
    r.sleeping_until(utc(10, 2, 0)).await;
    let st = r.source.status();
    assert_eq!(st.extra["evmesh"]["lost"], 1);
    assert_eq!(r.sink.len(), 0);
    // The next tick goes through once the sink accepts again.
    r.sink.refuse(None);
    r.clock.set(utc(10, 2, 0));
    r.sink.wait_for(1).await;
    r.stop.cancel();
    r.task.await.expect("stopped");
}

#[tokio::test]
async fn ping_with_a_seconds_field_ticks_every_second_on_the_system_clock() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let source = Arc::new(ping("  schedule: \"* * * * * *\"\n  data: tick\n").with_clock(clock));
    let sink = Arc::new(CollectSink::default());
    let stop = CancellationToken::new();
    let s = source.clone();
    let ctx = SourceContext::new(sink.clone(), None, stop.clone());
    let task = tokio::spawn(async move { s.run(ctx).await });
    let events = sink.wait_for(2).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops on shutdown")
        .expect("task");
    let t = |i: usize| {
        DateTime::parse_from_rfc3339(&attr(&events[i], "time").expect("time")).expect("rfc3339")
    };
    assert!(t(1) > t(0), "ticks are a second apart: {} {}", t(0), t(1));
}
