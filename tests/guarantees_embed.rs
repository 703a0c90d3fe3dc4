//! What the embedding API promises beyond the happy path: an in-process delivery not answered
//! within the delivery's `timeout` is a retryable failure (the event comes again), and dropping
//! the last handle without `shutdown` stops the mesh in the background: the data dir is unlocked
//! and a waiting delivery comes at the next start.

mod common;

use std::time::Duration;

use common::eventually;
use evmesh::prelude::*;

const WAIT: Duration = Duration::from_secs(10);

fn yaml(delivery: &str) -> String {
    format!(
        r#"apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: orders}}
spec:
  broker: default
  subscriber:
    ref: {{apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: orders}}
{delivery}"#
    )
}

fn order(id: &str) -> Event {
    EventBuilderV10::new()
        .id(id)
        .source("/shop")
        .ty("order.created")
        .build()
        .expect("event")
}

async fn launch(yaml: &str, dir: &std::path::Path) -> Result<RunningMesh, Error> {
    Mesh::from_yaml(yaml)
        .expect("yaml")
        .data_dir(dir)
        .launch("http://127.0.0.1:1".parse().expect("url"))
        .await
}

async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("no delivery to {} within {WAIT:?}", sub.name()))
        .expect("stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_delivery_not_answered_within_the_timeout_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = launch(
        &yaml("  delivery: {retry: 3, backoffDelay: PT0.01S, timeout: PT0.3S}\n"),
        dir.path(),
    )
    .await
    .expect("mesh");
    let mut orders = running.subscribe("orders");
    running
        .publish("default", "default", order("o-1"))
        .await
        .expect("publish");
    // Taken and held, never answered: after the 0.3 s timeout the attempt has failed.
    let held = next(&mut orders).await;
    assert_eq!(held.event().id(), "o-1");
    let again = next(&mut orders).await;
    assert_eq!(again.event().id(), "o-1", "the event comes again");
    again.ack();
    eventually("delivered after one retry", WAIT, || {
        let c = running
            .trigger("default", "orders")
            .expect("trigger")
            .counters;
        c.delivered == 1 && c.retried >= 1
    })
    .await;
    drop(held);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_unlocks_the_data_dir_and_keeps_waiting_deliveries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = yaml("");
    let running = launch(&yaml, dir.path()).await.expect("mesh");
    // Nobody subscribes: the delivery waits.
    running
        .publish("default", "default", order("o-1"))
        .await
        .expect("publish");
    drop(running);
    // The background shutdown unlocks the data dir; until then a new mesh finds it locked.
    let deadline = std::time::Instant::now() + WAIT;
    let second = loop {
        match launch(&yaml, dir.path()).await {
            Ok(m) => break m,
            Err(Error::DataDirLocked(_)) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the data dir is still locked {WAIT:?} after the last handle was dropped"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("restart failed: {e}"),
        }
    };
    let mut orders = second.subscribe("orders");
    let d = next(&mut orders).await;
    assert_eq!(d.event().id(), "o-1", "the waiting delivery was kept");
    d.ack();
    second.shutdown().await;
}
