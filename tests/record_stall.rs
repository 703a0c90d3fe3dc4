//! A stored record evmesh cannot read (a format version from a newer evmesh, or damage) is never
//! skipped: delivery stops at it and the trigger says why.

mod common;

use std::time::Duration;

use common::{TestSink, broker_and_trigger, event, get_json, mesh_at, post_ok};
use evmesh::evmesh_broker::record::EventRecord;
use evmesh::evmesh_store::LogId;

#[tokio::test]
async fn a_record_of_an_unknown_format_version_stops_delivery_instead_of_being_skipped() {
    let sink = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = broker_and_trigger(&sink, "");
    // 1. The trigger exists and has delivered one event.
    let m = mesh_at(dir.path(), &yaml, |o| o).await;
    let base = m.url().as_str().trim_end_matches('/').to_string();
    post_ok(&format!("{base}/demo/default"), event("before", "t")).await;
    common::eventually("first event delivered", Duration::from_secs(10), || {
        sink.count() == 1
    })
    .await;
    m.shutdown().await;
    // 2. While evmesh is down, a record of an unknown format version lands in the broker's log,
    //    followed by a good one.
    {
        let store =
            evmesh::evmesh_store::open(Default::default(), dir.path()).expect("open the store");
        let log = LogId::new("demo/default");
        store
            .append(&log, vec![99, 1, 2, 3])
            .await
            .expect("append the unknown record");
        let after = EventRecord::from_event(event("after", "t")).expect("record");
        store
            .append(&log, after.to_stored())
            .await
            .expect("append a good record");
        store.flush().await.expect("flush");
    }
    // 3. After the restart the trigger stops at the unknown record and says why; the event after
    //    it is not delivered (it would be, had the record been skipped).
    let m = mesh_at(dir.path(), &yaml, |o| o).await;
    let base = m.url().as_str().trim_end_matches('/').to_string();
    let url = format!("{base}/apis/eventing.knative.dev/v1/namespaces/demo/triggers/t1");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let message = loop {
        let (_, t) = get_json(&url).await;
        let ready = &t["status"]["conditions"][0];
        if ready["status"] == "False" {
            break ready["message"].as_str().unwrap_or_default().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the trigger never reported the unreadable record: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(message.contains("cannot be read"), "{message}");
    assert!(
        message.contains("unknown record format version 99"),
        "{message}"
    );
    assert_eq!(
        sink.ids(),
        ["before"],
        "nothing after the record is delivered"
    );
    let (status, _) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 503, "readiness names the stalled trigger");
}
