//! Backpressure: when the store cannot keep up, ingress answers 503 with `Retry-After` instead
//! of queueing without bound, and every event answered 202 is delivered.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_append_queue_answers_503_with_retry_after_and_every_202_event_is_delivered() {
    let sink = TestSink::start().await;
    let m = mesh_with(&broker_and_trigger(&sink, ""), |o| evmesh::Options {
        // One append waiting for the disk at a time.
        store: evmesh::evmesh_store::StoreOptions {
            max_queued_bytes: 1,
            ..Default::default()
        },
        ..o
    })
    .await;
    let url = m.url("/demo/default");
    let client = client();
    let sends = (0..200).map(|i| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let id = format!("e{i}");
            let enc = evmesh::evmesh_broker::codec::encode_binary(event(&id, "t")).expect("encode");
            let resp = client
                .post(&url)
                .headers(enc.headers)
                .body(enc.body)
                .send()
                .await
                .expect("post");
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (id, resp.status().as_u16(), retry_after)
        }
    });
    let results = futures_util::future::join_all(sends).await;
    let accepted: Vec<String> = results
        .iter()
        .filter(|(_, s, _)| *s == 202)
        .map(|(id, _, _)| id.clone())
        .collect();
    let busy: Vec<_> = results.iter().filter(|(_, s, _)| *s == 503).collect();
    assert_eq!(
        accepted.len() + busy.len(),
        results.len(),
        "only 202 or 503: {results:?}"
    );
    assert!(!busy.is_empty(), "no request was refused under load");
    assert!(!accepted.is_empty(), "no request was accepted under load");
    for (id, _, retry_after) in &busy {
        assert_eq!(retry_after.as_deref(), Some("1"), "503 for {id}");
    }
    quiet(&m, "demo", "default", accepted.len() as u64).await;
    let got = id_counts(&sink);
    for id in &accepted {
        assert!(
            got.contains_key(id),
            "accepted event {id} was not delivered"
        );
    }
    for (id, _, _) in &busy {
        assert!(!got.contains_key(id), "refused event {id} was delivered");
    }
    let c = admin_counters(&m.url(""), "triggers", "demo", "t1").await;
    assert_eq!(c["dropped"], 0, "{c}");
    // Once the load is gone, events are accepted again.
    assert_eq!(post_binary(&url, event("after", "t")).await, 202);
    eventually("the later event delivered", Duration::from_secs(10), || {
        sink.ids().contains(&"after".to_string())
    })
    .await;
}
