//! Live-apply benchmarks for BENCHMARKS.md (run with `--release`).
//!
//! * `applybench triggers --count 10000 --concurrency 8`: a real evmesh (durable store in a temp
//!   dir); creates `count` triggers on one broker through the admin API (one POST each, as
//!   `evmesh apply` does) and reports the wall time, then checks every one is Ready.
//! * `applybench ingress --rate 10000 --seconds 6`: an open-loop sender posts events at a fixed
//!   rate (a slow answer never delays the next send) to a broker with one trigger and a sink in
//!   this process; half-way it applies one more trigger (whose filter matches none of the load, so
//!   the delivery work is unchanged) and reports ingress latency p50/p99/p99.9 for the requests
//!   sent before the apply and for those sent in the second after it. With `--deliver no` the
//!   broker's trigger matches none of the load: every event is stored and routed through the
//!   filter, none is delivered. Each request is encoded once (only its `ce-id` changes); at most
//!   `--in-flight` (1024) are outstanding, and latency counts from when a request was due.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use cloudevents::{EventBuilder, EventBuilderV10};

const BROKER: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: bench}
"#;

async fn start_mesh(
    yaml: &str,
) -> Result<(evmesh::RunningMesh, tempfile::TempDir), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mesh = evmesh::Mesh::from_yaml(yaml)?
        .data_dir(dir.path())
        .start(listener)
        .await?;
    Ok((mesh, dir))
}

async fn start_sink() -> Result<String, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().fallback(post(|| async { StatusCode::ACCEPTED }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/"))
}

fn trigger_json(name: &str, ty: &str, sink: &str) -> String {
    serde_json::json!({
        "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"broker": "default", "filter": {"attributes": {"type": ty}}, "subscriber": {"uri": sink}},
    })
    .to_string()
}

async fn triggers(count: usize, concurrency: usize) -> Result<(), Box<dyn std::error::Error>> {
    let (mesh, _dir) = start_mesh(BROKER).await?;
    let sink = start_sink().await?;
    let url = format!(
        "{}apis/eventing.knative.dev/v1/namespaces/bench/triggers",
        mesh.url()
    );
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, sink, next) = (client.clone(), url.clone(), sink.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= count {
                    return Ok::<(), String>(());
                }
                let body = trigger_json(&format!("t{i}"), &format!("type-{i}"), &sink);
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if resp.status().as_u16() != 201 {
                    return Err(format!("trigger t{i}: {}", resp.status()));
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let took = started.elapsed();
    let ready = mesh
        .service()
        .triggers()
        .iter()
        .filter(|t| t.not_ready_reason.is_none())
        .count();
    println!(
        "applied {count} triggers in {:.2} s ({:.0} triggers/s), {ready} ready",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64()
    );
    if ready != count {
        return Err(format!("only {ready} of {count} triggers are ready").into());
    }
    mesh.shutdown().await;
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn ingress(
    rate: u64,
    seconds: u64,
    deliver: bool,
    in_flight: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let sink = start_sink().await?;
    // `--deliver no`: the broker's trigger matches none of the load, so every event is stored
    // and routed through the filter but not delivered (the load then fits 2 cores at rates
    // where delivering each event to a sink in the same process does not).
    let first_type = if deliver { "bench.event" } else { "bench.none" };
    let yaml = format!("{BROKER}---\n{}", trigger_json("first", first_type, &sink));
    let (mesh, _dir) = start_mesh(&yaml).await?;
    let ingress = format!("{}bench/default", mesh.url());
    let admin = format!(
        "{}apis/eventing.knative.dev/v1/namespaces/bench/triggers",
        mesh.url()
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let start = Instant::now();
    let apply_at = Duration::from_secs(seconds / 2);
    let total = rate * seconds;
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Duration, u64, u16)>();
    let failures = Arc::new(AtomicU64::new(0));
    // The request is encoded once; each send only sets its own `ce-id`. At most `in_flight`
    // requests are outstanding: past that a send waits for one to finish, and its latency is
    // counted from when it was due (open loop, no coordinated omission).
    let template = EventBuilderV10::new()
        .id("e")
        .source("/bench")
        .ty("bench.event")
        .build()?;
    let template = evmesh::evmesh_broker::codec::encode_binary(template)?;
    let body = template.body;
    let headers = template.headers;
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let sender = {
        let client = client.clone();
        let failures = failures.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for i in 0..total {
                tick.tick().await;
                let due = interval * (i as u32);
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (client, url, tx, failures) = (
                    client.clone(),
                    ingress.clone(),
                    tx.clone(),
                    failures.clone(),
                );
                let mut headers = headers.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Ok(id) = reqwest::header::HeaderValue::from_str(&format!("e{i}")) {
                        headers.insert("ce-id", id);
                    }
                    match client.post(&url).headers(headers).body(body).send().await {
                        Ok(r) => {
                            let took = start.elapsed().saturating_sub(due);
                            let _ = tx.send((due, took.as_micros() as u64, r.status().as_u16()));
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        })
    };
    tokio::time::sleep_until((start + apply_at).into()).await;
    let t0 = Instant::now();
    let resp = client
        .post(&admin)
        .header("content-type", "application/json")
        // A filter that matches nothing: the delivery work stays the same, so what changes in
        // ingress latency is the apply's own cost.
        .body(trigger_json("second", "bench.other", &sink))
        .send()
        .await?;
    let apply_took = t0.elapsed();
    if resp.status().as_u16() != 201 {
        return Err(format!("apply failed: {}", resp.status()).into());
    }
    sender.await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    rx.close();
    let (mut before, mut during) = (Vec::new(), Vec::new());
    let mut non_202 = 0;
    while let Some((sent, us, code)) = rx.recv().await {
        if code != 202 {
            non_202 += 1;
        }
        if sent < apply_at {
            before.push(us);
        } else if sent < apply_at + Duration::from_secs(1) {
            during.push(us);
        }
    }
    before.sort_unstable();
    during.sort_unstable();
    println!(
        "rate {rate}/s; apply of one trigger answered in {:.1} ms",
        apply_took.as_secs_f64() * 1000.0
    );
    println!(
        "ingress before the apply: n={} p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms",
        before.len(),
        percentile(&before, 0.5),
        percentile(&before, 0.99),
        percentile(&before, 0.999)
    );
    println!(
        "ingress in the second after: n={} p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms",
        during.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        percentile(&during, 0.999)
    );
    let failed = failures.load(Ordering::Relaxed);
    if non_202 > 0 || failed > 0 {
        return Err(format!("{non_202} non-202 answers, {failed} failed requests").into());
    }
    mesh.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    match args.get(1).map(String::as_str) {
        Some("triggers") => {
            triggers(
                arg("--count", "10000").parse()?,
                arg("--concurrency", "8").parse()?,
            )
            .await
        }
        Some("ingress") => {
            ingress(
                arg("--rate", "10000").parse()?,
                arg("--seconds", "6").parse()?,
                arg("--deliver", "yes") != "no",
                arg("--in-flight", "1024").parse()?,
            )
            .await
        }
        _ => {
            eprintln!(
                "usage: applybench triggers [--count N] [--concurrency C] | applybench ingress [--rate R] [--seconds S] [--deliver yes|no] [--in-flight N]"
            );
            std::process::exit(2);
        }
    }
}
