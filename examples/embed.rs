//! Embedding evmesh in a Rust service: build a mesh from YAML, start it on your own listener,
//! publish an event without HTTP, watch it get delivered, shut down gracefully.
//!
//! Run: `cargo run --example embed`

use std::time::Duration;

use cloudevents::{EventBuilder, EventBuilderV10};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A broker and a trigger that sends order events to the built-in event display.
    let yaml = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: orders}
spec:
  broker: default
  filters:
    - cesql: "type LIKE 'order.%'"
  subscriber:
    ref: {apiVersion: evmesh.dev/v1alpha1, kind: EventDisplay, name: display}
---
apiVersion: evmesh.dev/v1alpha1
kind: EventDisplay
metadata: {name: display}
"#;
    let data = std::env::temp_dir().join(format!("evmesh-embed-{}", std::process::id()));
    let mesh = evmesh::Mesh::from_yaml(yaml)?.data_dir(&data);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = mesh.start(listener).await?;
    println!(
        "broker ingress: {}",
        running.broker_url("default", "default")
    );

    let event = EventBuilderV10::new()
        .id("order-1")
        .source("/embed")
        .ty("order.created")
        .data("application/json", serde_json::json!({"total": 42}))
        .build()?;
    let offset = running.publish("default", "default", event).await?;
    println!("stored at offset {offset}");

    // Wait (bounded) until the trigger reports the delivery.
    let mut delivered = 0;
    for _ in 0..100 {
        delivered = running.service().triggers()[0].counters.delivered;
        if delivered == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&data);
    if delivered != 1 {
        return Err("the event was not delivered".into());
    }
    println!("delivered: {delivered}");
    Ok(())
}
