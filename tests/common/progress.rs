//! What a stopped mesh left to do, read from its data dir: a trigger's saved progress and its
//! broker's log. After a graceful stop this is the proof that no more deliveries can follow.

use std::path::Path;

use cloudevents::{AttributesReader, Event};
use evmesh::evmesh_broker::record::EventRecord;
use evmesh::evmesh_store::{self, EngineKind, LogId};

/// The events (by id) that trigger `ns/trigger` of broker `ns/broker` still has to deliver
/// according to the data dir of a mesh that is no longer running: those in flight in its saved
/// progress, and those at or after its saved position that `matches` (its filter) selects. An
/// empty answer after a graceful stop means the trigger had finished everything: nothing it was
/// handed can be delivered later.
pub async fn left_to_deliver(
    data: &Path,
    ns: &str,
    broker: &str,
    trigger: &str,
    matches: impl Fn(&Event) -> bool,
) -> Vec<String> {
    let store = evmesh_store::open(EngineKind::default(), data).expect("open the stopped store");
    let prefix = format!("t/{ns}/{broker}/{trigger}/");
    let saved = store.checkpoints(&prefix).expect("read checkpoints");
    assert_eq!(
        saved.len(),
        1,
        "one saved progress for trigger {ns}/{trigger}: {:?}",
        saved.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let progress: serde_json::Value =
        serde_json::from_slice(&saved[0].1).expect("saved progress is JSON");
    let taken_upto = progress["taken_upto"].as_u64().expect("taken_upto");
    // Pending deliveries: parked ones under their own keys (`p/<checkpoint key>/<offset>`), and
    // an in-flight list in a checkpoint written before retries were parked.
    let mut in_flight: Vec<u64> = progress["inflight"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["offset"].as_u64().expect("offset"))
                .collect()
        })
        .unwrap_or_default();
    for (_, value) in parked(store.as_ref(), &saved[0].0) {
        let entry: serde_json::Value = serde_json::from_slice(&value).expect("parked retry JSON");
        in_flight.push(entry["offset"].as_u64().expect("offset"));
    }
    let log = LogId::new(format!("{ns}/{broker}"));
    let head = store.next_offset(&log).expect("log head");
    let mut left = Vec::new();
    let id_at = |offset: u64| -> Option<Event> {
        let records = store.read(&log, offset, 1).expect("read log");
        let record = records.into_iter().find(|r| r.offset == offset)?;
        Some(
            EventRecord::from_stored(&record.payload)
                .expect("stored event")
                .event()
                .clone(),
        )
    };
    for offset in in_flight {
        let id = id_at(offset).map(|e| e.id().to_string());
        left.push(id.unwrap_or_else(|| format!("<offset {offset}, not in the log>")));
    }
    let mut at = taken_upto;
    while at < head {
        let batch = store.read(&log, at, 512).expect("read log");
        let Some(last) = batch.last().map(|r| r.offset) else {
            break;
        };
        for record in batch {
            let event = EventRecord::from_stored(&record.payload)
                .expect("stored event")
                .event()
                .clone();
            if matches(&event) {
                left.push(event.id().to_string());
            }
        }
        at = last + 1;
    }
    store.flush().await.expect("flush");
    left
}

/// The parked retries of the route whose checkpoint key is `route_key`, read from an open store:
/// `(store key, value)` of each `p/<route key>/<offset>`.
pub fn parked(store: &dyn evmesh_store::EventStore, route_key: &str) -> Vec<(String, Vec<u8>)> {
    let prefix = format!("p/{route_key}/");
    store
        .checkpoints(&prefix)
        .expect("read parked retries")
        .into_iter()
        .filter(|(k, _)| k[prefix.len()..].bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

/// A trigger's name and its filter, as the test knows it.
pub type TriggerFilter<'a> = (&'a str, &'a dyn Fn(&Event) -> bool);

/// Asserts that each `(trigger, filter)` of broker `ns/broker` has nothing left to deliver in
/// the stopped mesh's data dir (see [`left_to_deliver`]).
pub async fn assert_nothing_left(
    data: &Path,
    ns: &str,
    broker: &str,
    triggers: &[TriggerFilter<'_>],
) {
    for (trigger, filter) in triggers {
        let left = left_to_deliver(data, ns, broker, trigger, filter).await;
        assert!(
            left.is_empty(),
            "trigger {ns}/{trigger} still had to deliver {left:?} when the mesh stopped"
        );
    }
}

/// A filter that selects every event.
pub fn every(_: &Event) -> bool {
    true
}

/// A filter that selects events of type `ty`.
pub fn of_type(ty: &'static str) -> impl Fn(&Event) -> bool {
    move |e| e.ty() == ty
}
