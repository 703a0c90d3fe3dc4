//! Trigger checkpoints: an unreadable one is an error (never "start at the head"), a trigger that
//! is not ready keeps its position, and a pending retry keeps at most 1 KiB of the failure body.

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
    // The retry is recorded in the checkpoint within a few ms; shutdown saves it in any case.
    m.shutdown().await;
    let bytes = saved_checkpoint(dir.path()).await.expect("checkpoint");
    let cp: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON checkpoint");
    let body = cp["inflight"][0]["progress"]["last_failure"]["body"]
        .as_str()
        .unwrap_or_else(|| panic!("a pending retry with its failure: {cp}"));
    let body = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64 body");
    assert_eq!(body.len(), 1024);
    assert!(
        bytes.len() < 4096,
        "checkpoint is small: {} bytes",
        bytes.len()
    );
}
