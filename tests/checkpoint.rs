//! Trigger checkpoints: an unreadable one is an error (never "start at the head"), a trigger that
//! is not ready keeps its position, a pending retry is parked under its own key (at most 1 KiB of
//! the failure body) without holding the saved position back, and replaying or deleting the
//! trigger drops it.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use evmesh::evmesh_store;

const KEY: &str = "t/demo/default/t1";

fn reason(m: &evmesh::RunningMesh) -> Option<String> {
    m.service()
        .triggers()
        .into_iter()
        .find(|t| t.name == "t1")
        .expect("trigger t1")
        .not_ready_reason
}

/// Opens the mesh's store (while no mesh runs on it) and returns the trigger's checkpoint.
/// The trigger's checkpoint key and value: `t/{ns}/{broker}/{name}/{uid}` (keyed by uid, so a
/// re-created trigger never inherits old progress).
async fn saved_entry(dir: &Path) -> Option<(String, Vec<u8>)> {
    let store = evmesh_store::open(Default::default(), dir).expect("open store");
    let found: Vec<_> = store
        .checkpoints(KEY)
        .expect("read checkpoints")
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{KEY}/")))
        .collect();
    store.flush().await.expect("flush");
    assert!(found.len() <= 1, "one checkpoint per trigger: {found:?}");
    found.into_iter().next()
}

async fn saved_checkpoint(dir: &Path) -> Option<Vec<u8>> {
    saved_entry(dir).await.map(|(_, v)| v)
}

/// Overwrites the trigger's existing checkpoint.
async fn put_checkpoint(dir: &Path, value: &[u8]) {
    let (key, _) = saved_entry(dir)
        .await
        .expect("the trigger has a checkpoint");
    let store = evmesh_store::open(Default::default(), dir).expect("open store");
    store.put_checkpoint(&key, value.to_vec()).expect("put");
    store.flush().await.expect("flush");
}

#[tokio::test]
async fn unreadable_checkpoint_makes_the_trigger_not_ready_and_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = TestSink::start().await;
    let yaml = broker_and_trigger(&sink, "");
    let m = mesh_at(dir.path(), &yaml, |o| o).await;
    m.shutdown().await;
    put_checkpoint(dir.path(), b"{not json").await;

    let m = mesh_at(dir.path(), &yaml, |o| o).await;
    let r = reason(&m).expect("not ready");
    assert!(r.contains("unreadable"), "{r}");
    let (code, body) = get_text(&mesh_url(&m, "/readyz")).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("trigger demo/t1") && body.contains("unreadable"),
        "/readyz names the trigger and why: {body}"
    );
    assert_eq!(
        post_binary(&mesh_url(&m, "/demo/default"), event("1", "t")).await,
        202
    );
    // The router passed the event and handed it to no trigger (one that restarted at the head
    // would have been handed it).
    assert_eq!(
        routed_up_to(&mesh_url(&m, ""), "demo", "default", 1).await,
        0,
        "a trigger without its position is handed nothing"
    );
    assert_eq!(sink.count(), 0);
    m.shutdown().await;
    assert_eq!(
        saved_checkpoint(dir.path()).await.as_deref(),
        Some(&b"{not json"[..]),
        "the checkpoint is left for the operator, not replaced or deleted"
    );
}

#[tokio::test]
async fn trigger_that_is_not_ready_keeps_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = TestSink::start().await;
    let good = broker_and_trigger(&sink, "");
    let m = mesh_at(dir.path(), &good, |o| o).await;
    assert_eq!(
        post_binary(&mesh_url(&m, "/demo/default"), event("1", "t")).await,
        202
    );
    eventually("delivered", Duration::from_secs(10), || sink.count() == 1).await;
    m.shutdown().await;

    // The subscriber cannot be resolved: the trigger is not ready while events arrive.
    let broken = format!(
        "{}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: bad, namespace: demo}}\nstatus: {{address: {{url: \"not a url\"}}}}\n",
        good.replace(
            &format!("subscriber: {{uri: \"{}\"}}", sink.url()),
            "subscriber: {ref: {apiVersion: v1, kind: Service, name: bad}}"
        )
    );
    let m = mesh_at(dir.path(), &broken, |o| o).await;
    assert!(reason(&m).is_some(), "not ready");
    assert_eq!(
        post_binary(&mesh_url(&m, "/demo/default"), event("2", "t")).await,
        202
    );
    m.shutdown().await;
    assert!(
        saved_checkpoint(dir.path()).await.is_some(),
        "checkpoint kept"
    );

    // Fixed again: it resumes where it was, so the event accepted meanwhile is delivered.
    let m = mesh_at(dir.path(), &good, |o| o).await;
    eventually("event 2 delivered", Duration::from_secs(10), || {
        sink.count() == 2
    })
    .await;
    assert_eq!(sink.ids(), ["1", "2"]);
    m.shutdown().await;
}

#[tokio::test]
async fn pending_retry_keeps_at_most_1024_bytes_of_the_failure_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = TestSink::start().await;
    sink.always(Reply::StatusWithBody(503, "x".repeat(100_000)));
    let yaml = broker_and_trigger(
        &sink,
        "  delivery: {retry: 3, backoffPolicy: linear, backoffDelay: PT60S}",
    );
    let m = mesh_at(dir.path(), &yaml, |o| o).await;
    assert_eq!(
        post_binary(&mesh_url(&m, "/demo/default"), event("1", "t")).await,
        202
    );
    eventually("first attempt failed", Duration::from_secs(10), || {
        sink.count() == 1
    })
    .await;
    // The retry is parked when the attempt fails; shutdown saves the watermark in any case.
    m.shutdown().await;
    let (_, parked) = saved_parked(dir.path()).await;
    assert_eq!(parked.len(), 1, "one parked retry");
    let bytes = &parked[0].1;
    let entry: serde_json::Value = serde_json::from_slice(bytes).expect("JSON parked retry");
    let body = entry["progress"]["last_failure"]["body"]
        .as_str()
        .unwrap_or_else(|| panic!("a pending retry with its failure: {entry}"));
    let body = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64 body");
    assert_eq!(body.len(), 1024);
    assert!(
        bytes.len() < 4096,
        "parked retry is small: {} bytes",
        bytes.len()
    );
}

/// The trigger's checkpoint (as JSON) and its parked retries (`p/<checkpoint key>/<offset>`),
/// read from the store of a stopped mesh.
async fn saved_parked(dir: &Path) -> (Option<serde_json::Value>, Vec<(String, Vec<u8>)>) {
    let entry = saved_entry(dir).await;
    let store = evmesh_store::open(Default::default(), dir).expect("open store");
    // Every park key of any t1 (whatever its uid), not only the current checkpoint's.
    let parked = store
        .checkpoints(&format!("p/{KEY}/"))
        .expect("read parked retries");
    store.flush().await.expect("flush");
    let cp = entry.map(|(_, v)| serde_json::from_slice(&v).expect("JSON checkpoint"));
    (cp, parked)
}

/// A trigger answering 503 to its first event, with a long backoff: that event is parked.
fn parking_trigger(sink: &TestSink) -> String {
    broker_and_trigger(
        sink,
        "  delivery: {retry: 3, backoffPolicy: linear, backoffDelay: PT60S}",
    )
}

#[tokio::test]
async fn a_parked_retry_does_not_hold_the_saved_position_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = TestSink::start().await;
    sink.script([Reply::StatusWithBody(503, "busy".into())]);
    sink.always(Reply::Status(202));
    let yaml = parking_trigger(&sink);
    let m = mesh_at(dir.path(), &yaml, |o| o).await;
    let url = mesh_url(&m, "/demo/default");
    assert_eq!(post_binary(&url, event("stuck", "t")).await, 202);
    eventually("the first attempt failed", Duration::from_secs(10), || {
        sink.count() == 1
    })
    .await;
    for i in 1..=3 {
        assert_eq!(
            post_binary(&url, event(&format!("later-{i}"), "t")).await,
            202
        );
    }
    eventually(
        "the later events delivered",
        Duration::from_secs(10),
        || sink.count() == 4,
    )
    .await;
    m.shutdown().await;

    let (cp, parked) = saved_parked(dir.path()).await;
    let cp = cp.expect("checkpoint");
    assert_eq!(
        cp["taken_upto"], 4,
        "the saved position moved past the retrying event (offset 0) and the later ones: {cp}"
    );
    assert!(
        cp.get("inflight").is_none(),
        "the checkpoint records only the watermark, no in-flight list: {cp}"
    );
    let keys: Vec<&str> = parked.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), 1, "the retrying event is parked: {keys:?}");
    assert!(keys[0].ends_with("/00000000000000000000"), "{keys:?}");
    let entry: serde_json::Value = serde_json::from_slice(&parked[0].1).expect("JSON");
    assert_eq!(entry["offset"], 0, "{entry}");
    assert_eq!(entry["progress"]["failures"], 1, "{entry}");
    assert!(entry["due_ms"].as_u64().is_some(), "its due time: {entry}");
}

#[tokio::test]
async fn deleting_a_trigger_drops_its_parked_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = TestSink::start().await;
    sink.always(Reply::Status(503));
    let yaml = parking_trigger(&sink);
    let m = mesh_at(dir.path(), &yaml, |o| o).await;
    assert_eq!(
        post_binary(&mesh_url(&m, "/demo/default"), event("stuck", "t")).await,
        202
    );
    eventually("the first attempt failed", Duration::from_secs(10), || {
        sink.count() == 1
    })
    .await;
    m.shutdown().await;
    let (_, parked) = saved_parked(dir.path()).await;
    assert_eq!(parked.len(), 1, "parked while the trigger exists");

    // A trigger changed while it runs keeps it (delivery swapped in place), and so does one
    // whose configuration changed across a restart.
    let changed = yaml.replace("retry: 3,", "retry: 4,");
    assert_ne!(changed, yaml);
    let m = mesh_at(dir.path(), &yaml, |o| o).await;
    let trigger = changed
        .split("---")
        .nth(1)
        .expect("the trigger's document")
        .to_string();
    let resp = client()
        .put(mesh_url(
            &m,
            "/apis/eventing.knative.dev/v1/namespaces/demo/triggers/t1",
        ))
        .header("content-type", "application/yaml")
        .body(trigger)
        .send()
        .await
        .expect("PUT");
    let code = resp.status().as_u16();
    assert_eq!(code, 200, "{}", resp.text().await.unwrap_or_default());
    m.shutdown().await;
    let (_, parked) = saved_parked(dir.path()).await;
    assert_eq!(
        parked.len(),
        1,
        "a trigger changed live keeps its parked retry"
    );
    let m = mesh_at(dir.path(), &changed, |o| o).await;
    m.shutdown().await;
    let (_, parked) = saved_parked(dir.path()).await;
    assert_eq!(parked.len(), 1, "a changed trigger keeps its parked retry");

    let m = mesh_at(dir.path(), &yaml, |o| o).await;
    let resp = client()
        .delete(mesh_url(
            &m,
            "/apis/eventing.knative.dev/v1/namespaces/demo/triggers/t1",
        ))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(resp.status().as_u16(), 200);
    // Shutdown waits for the deleted trigger to drop its progress.
    m.shutdown().await;
    let (cp, parked) = saved_parked(dir.path()).await;
    assert!(
        cp.is_none(),
        "the deleted trigger's checkpoint is gone: {cp:?}"
    );
    assert!(
        parked.is_empty(),
        "the deleted trigger's parked retries are gone: {:?}",
        parked.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    assert_eq!(sink.count(), 1, "never retried after its deletion");
}

#[tokio::test]
async fn a_trigger_gone_from_the_config_at_start_drops_its_parked_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = TestSink::start().await;
    sink.always(Reply::Status(503));
    let yaml = parking_trigger(&sink);
    let m = mesh_at(dir.path(), &yaml, |o| o).await;
    assert_eq!(
        post_binary(&mesh_url(&m, "/demo/default"), event("stuck", "t")).await,
        202
    );
    eventually("the first attempt failed", Duration::from_secs(10), || {
        sink.count() == 1
    })
    .await;
    m.shutdown().await;
    let (_, parked) = saved_parked(dir.path()).await;
    assert_eq!(parked.len(), 1, "parked while the trigger exists");

    let broker_only = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default, namespace: demo}\n";
    let m = mesh_at(dir.path(), broker_only, |o| o).await;
    m.shutdown().await;
    let (cp, parked) = saved_parked(dir.path()).await;
    assert!(cp.is_none(), "its checkpoint is gone: {cp:?}");
    assert!(
        parked.is_empty(),
        "its parked retries are gone: {:?}",
        parked.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn replay_drops_parked_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = TestSink::start().await;
    sink.always(Reply::Status(503));
    // The retry is due 5 s after the first attempt: the replay comes well before.
    let yaml = broker_and_trigger(
        &sink,
        "  delivery: {retry: 3, backoffPolicy: linear, backoffDelay: PT5S}",
    );
    let m = mesh_at(dir.path(), &yaml, |o| o).await;
    let url = mesh_url(&m, "/demo/default");
    assert_eq!(post_binary(&url, event("stuck", "t")).await, 202);
    eventually("the first attempt failed", Duration::from_secs(10), || {
        sink.count() == 1
    })
    .await;
    m.shutdown().await;
    let (_, parked) = saved_parked(dir.path()).await;
    assert_eq!(parked.len(), 1, "parked before the replay");

    // Restarted: the parked retry is restored, then a replay from now drops it.
    let m = mesh_at(dir.path(), &yaml, |o| o).await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let at = m
        .service()
        .replay(
            "demo",
            "t1",
            evmesh::evmesh_config::ReplayFrom::parse(&now).expect("RFC 3339"),
        )
        .await
        .expect("replay");
    assert_eq!(at, 1, "positioned after the retrying event");
    sink.always(Reply::Status(202));
    assert_eq!(post_binary(&url_of(&m), event("after", "t")).await, 202);
    eventually(
        "the event after the replay",
        Duration::from_secs(10),
        || sink.count() == 2,
    )
    .await;
    m.shutdown().await;
    let (cp, parked) = saved_parked(dir.path()).await;
    assert!(
        parked.is_empty(),
        "the replay dropped the parked retry: {:?}",
        parked.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    assert_eq!(cp.expect("checkpoint")["taken_upto"], 2);
    assert_eq!(
        sink.ids(),
        ["stuck", "after"],
        "the dropped retry did not run"
    );
}

fn url_of(m: &evmesh::RunningMesh) -> String {
    mesh_url(m, "/demo/default")
}

#[tokio::test]
async fn a_checkpoint_with_an_in_flight_list_from_before_parking_still_loads_and_keeps_its_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = TestSink::start().await;
    sink.always(Reply::Status(503));
    let yaml = broker_and_trigger(
        &sink,
        "  delivery: {retry: 2, backoffPolicy: linear, backoffDelay: PT0.5S}",
    );
    let m = mesh_at(dir.path(), &yaml, |o| o).await;
    assert_eq!(
        post_binary(&mesh_url(&m, "/demo/default"), event("old", "t")).await,
        202
    );
    eventually("the first attempt failed", Duration::from_secs(10), || {
        sink.count() == 1
    })
    .await;
    m.shutdown().await;

    // Rewrite what was saved as evmesh wrote it before retries were parked: the retry in the
    // checkpoint's in-flight list, no park key.
    let (key, _) = saved_entry(dir.path()).await.expect("checkpoint");
    let (_, parked) = saved_parked(dir.path()).await;
    assert_eq!(parked.len(), 1, "parked");
    let entry: serde_json::Value = serde_json::from_slice(&parked[0].1).expect("JSON");
    assert_eq!(entry["progress"]["failures"], 1, "{entry}");
    {
        let store = evmesh_store::open(Default::default(), dir.path()).expect("open store");
        store
            .delete_checkpoint(&parked[0].0)
            .expect("delete park key");
        let old = serde_json::json!({"taken_upto": 1, "inflight": [entry]});
        store
            .put_checkpoint(&key, serde_json::to_vec(&old).expect("JSON"))
            .expect("put");
        store.flush().await.expect("flush");
    }

    let m = mesh_at(dir.path(), &yaml, |o| o).await;
    eventually_counters(
        &mesh_url(&m, ""),
        "triggers",
        "demo",
        "t1",
        Duration::from_secs(15),
        |c| c["dropped"] == 1,
    )
    .await;
    m.shutdown().await;
    assert_eq!(
        sink.count(),
        3,
        "retry: 2 means 3 attempts in all: the migrated retry kept its count"
    );
    let (cp, parked) = saved_parked(dir.path()).await;
    let cp = cp.expect("checkpoint");
    assert!(
        cp.get("inflight").is_none(),
        "saved again as a watermark only: {cp}"
    );
    assert_eq!(cp["taken_upto"], 1, "{cp}");
    assert!(parked.is_empty(), "finished: nothing parked");
}
