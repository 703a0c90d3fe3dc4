//! Publish → subscriber: an in-process subscriber against the same trigger delivering to a
//! loopback HTTP subscriber (an axum handler answering 202), both in this process.
//!
//! Latency: one event at a time, from the start of `publish` (which includes the durable
//! group commit) to the subscriber seeing it. Throughput: `--events` published by 64 concurrent
//! publishers, until the subscriber has seen them all.
//!
//! Run: `cargo run --release --example subscriberbench -- --events 20000 --latency 2000`

use std::time::{Duration, Instant};

use evmesh::prelude::*;
use futures_util::StreamExt;
use tokio::sync::mpsc;

const CONCURRENCY: usize = 64;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn yaml(subscriber: &str) -> String {
    format!(
        r#"apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: bench}}
spec:
  broker: default
  delivery: {{retry: 0}}
  subscriber:
{subscriber}
"#
    )
}

fn event(id: usize) -> Event {
    EventBuilderV10::new()
        .id(id.to_string())
        .source("/bench")
        .ty("bench")
        .data("application/json", br#"{"n": 1}"#.to_vec())
        .build()
        .expect("event")
}

/// Starts the mesh and a receiver that reports each event id as the subscriber sees it.
async fn setup(
    http: bool,
    dir: &std::path::Path,
) -> Result<(RunningMesh, mpsc::UnboundedReceiver<usize>), Box<dyn std::error::Error>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let subscriber = if http {
        let sink_tx = tx.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |headers: axum::http::HeaderMap| {
                let tx = sink_tx.clone();
                async move {
                    if let Some(id) = headers
                        .get("ce-id")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                    {
                        let _ = tx.send(id);
                    }
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("    uri: http://{addr}/")
    } else {
        "    ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: bench}".to_string()
    };
    let mesh = Mesh::from_yaml(&yaml(&subscriber))?.data_dir(dir);
    let running = mesh
        .start(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
        .await?;
    if !http {
        let mut sub = running.subscribe("bench");
        tokio::spawn(async move {
            while let Some(d) = sub.next().await {
                if let Ok(id) = d.event().id().parse() {
                    let _ = tx.send(id);
                }
                d.ack();
            }
        });
    }
    Ok((running, rx))
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(
    http: bool,
    events: usize,
    latency_n: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let name = if http { "loopback HTTP" } else { "in-process" };
    let dir = tempfile_dir(name)?;
    let (running, mut rx) = setup(http, &dir).await?;
    // Latency, one at a time (ids from 1_000_000 so they never mix with throughput ids).
    let mut lat = Vec::with_capacity(latency_n);
    for i in 0..latency_n {
        let id = 1_000_000 + i;
        let t0 = Instant::now();
        running.publish("default", "default", event(id)).await?;
        loop {
            match rx.recv().await {
                Some(got) if got == id => break,
                Some(_) => continue,
                None => return Err("receiver closed".into()),
            }
        }
        lat.push(t0.elapsed());
    }
    lat.sort();
    // Throughput.
    let t0 = Instant::now();
    let publisher = running.publisher();
    let publishing = tokio::spawn(async move {
        futures_util::stream::iter(0..events)
            .map(|i| {
                let p = publisher.clone();
                async move { p.publish("default", "default", event(i)).await }
            })
            .buffer_unordered(CONCURRENCY)
            .for_each(|r| async move {
                if let Err(e) = r {
                    eprintln!("publish failed: {e}");
                }
            })
            .await
    });
    let mut seen = 0;
    while seen < events {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(id)) if id < 1_000_000 => seen += 1,
            Ok(Some(_)) => {}
            _ => return Err(format!("{name}: only {seen} of {events} delivered").into()),
        }
    }
    let elapsed = t0.elapsed();
    publishing.await?;
    println!(
        "{name:>14}: latency p50 {:>7.3} ms  p99 {:>7.3} ms  ({latency_n} events one at a time) | throughput {:>8.0} ev/s ({events} events, {CONCURRENCY} publishers)",
        pct(&lat, 0.50).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        events as f64 / elapsed.as_secs_f64(),
    );
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir(name: &str) -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "evmesh-subbench-{}-{}",
        std::process::id(),
        name.replace(' ', "-")
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events = arg("--events", 20_000);
    let latency = arg("--latency", 2_000);
    let rounds = arg("--rounds", 2);
    for _ in 0..rounds {
        run(false, events, latency).await?;
        run(true, events, latency).await?;
    }
    Ok(())
}
