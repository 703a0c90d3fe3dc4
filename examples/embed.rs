//! Embedding evmesh in a Rust service, using only `evmesh::prelude`: build a mesh from YAML,
//! start it on your own listener, receive order events in an in-process subscriber (no HTTP),
//! answer them with a reply that a second trigger routes, shut down gracefully.
//!
//! Run: `cargo run --example embed`

use std::time::Duration;

use evmesh::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Orders go to the in-process subscriber `orders`; its replies (order.confirmed) come back
    // into the broker and go to the built-in event display.
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
    - cesql: "type = 'order.created'"
  subscriber:
    ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: orders}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: confirmations}
spec:
  broker: default
  filter: {attributes: {type: order.confirmed}}
  subscriber:
    ref: {apiVersion: evmesh.dev/v1alpha1, kind: EventDisplay, name: display}
---
apiVersion: evmesh.dev/v1alpha1
kind: EventDisplay
metadata: {name: display}
"#;
    let data = std::env::temp_dir().join(format!("evmesh-embed-{}", std::process::id()));
    let mesh = Mesh::from_yaml(yaml)?.data_dir(&data).strict(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = mesh.start(listener).await?;
    println!(
        "broker ingress: {}",
        running.broker_url("default", "default")
    );

    // The subscriber: confirms each order with a reply event.
    let mut orders = running.subscribe("orders");
    let subscriber = tokio::spawn(async move {
        while let Some(delivery) = orders.next().await {
            let id = delivery.event().id().to_string();
            println!(
                "order {id}: {}",
                String::from_utf8_lossy(delivery.data().unwrap_or_default())
            );
            match EventBuilderV10::new()
                .id(format!("confirm-{id}"))
                .source("/embed/billing")
                .ty("order.confirmed")
                .build()
            {
                Ok(reply) => delivery.reply(reply),
                Err(e) => delivery.nack(Nack::reject(e.to_string())),
            }
        }
    });

    let event = EventBuilderV10::new()
        .id("order-1")
        .source("/embed")
        .ty("order.created")
        .data("application/json", br#"{"total": 42.50}"#.to_vec())
        .build()?;
    let offset = running.publish("default", "default", event).await?;
    println!("stored at offset {offset}");

    // Wait (bounded) until the confirmation went through the second trigger.
    let mut done = false;
    for _ in 0..200 {
        let confirmed = running
            .trigger("default", "confirmations")
            .map(|t| t.counters.delivered);
        if confirmed == Some(1) {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    running.shutdown().await; // the subscription stream ends here
    subscriber.await?;
    let _ = std::fs::remove_dir_all(&data);
    if !done {
        return Err("the order was not confirmed".into());
    }
    println!("order confirmed through an in-process subscriber");
    Ok(())
}
