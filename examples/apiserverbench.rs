//! ApiServerSource benchmark for BENCHMARKS.md: change → event latency through evmesh's own API.
//!
//! `apiserverbench --changes 500` starts a real evmesh (durable store in a temp dir) with an
//! ApiServerSource watching Brokers (through kube-rs against evmesh's own admin API) whose sink
//! is an HTTP handler in this process; it then creates `changes` Brokers through the admin API,
//! one at a time, and reports, per change, the time from the create request to the `ref.add`
//! event at the sink (p50 / p99 / max) and the changes per second. Exits 1 when an event is missing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

async fn start_sink(seen: Seen) -> Result<String, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().fallback(post(move |headers: HeaderMap| {
        let seen = seen.clone();
        async move {
            let name = headers
                .get("ce-name")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let add = headers
                .get("ce-type")
                .is_some_and(|t| t == "dev.knative.apiserver.ref.add");
            if add && let Ok(mut s) = seen.lock() {
                s.entry(name).or_insert_with(Instant::now);
            }
            StatusCode::ACCEPTED
        }
    }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let changes: usize = args
        .iter()
        .position(|a| a == "--changes")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let seen: Seen = Arc::default();
    let sink = start_sink(seen.clone()).await?;
    let yaml = format!(
        r#"
apiVersion: sources.knative.dev/v1
kind: ApiServerSource
metadata: {{name: bench, namespace: bench}}
spec:
  resources: [{{apiVersion: eventing.knative.dev/v1, kind: Broker}}]
  sink: {{uri: "{sink}"}}
"#
    );
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mesh = evmesh::Mesh::from_yaml(&yaml)?
        .data_dir(dir.path())
        .start(listener)
        .await?;
    let base = mesh.url().as_str().trim_end_matches('/').to_string();
    let client = reqwest::Client::new();
    let status =
        format!("{base}/apis/sources.knative.dev/v1/namespaces/bench/apiserversources/bench");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let obj: serde_json::Value =
            serde_json::from_str(&client.get(&status).send().await?.text().await?)?;
        if obj["status"]["conditions"][0]["status"] == "True" {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the source did not become ready: {obj}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let brokers = format!("{base}/apis/eventing.knative.dev/v1/namespaces/bench/brokers");
    let mut sent: Vec<(String, Instant)> = Vec::with_capacity(changes);
    let start = Instant::now();
    for i in 0..changes {
        let name = format!("b{i}");
        let body = serde_json::json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
            "metadata": {"name": name, "namespace": "bench"}})
        .to_string();
        let at = Instant::now();
        let code = client
            .post(&brokers)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?
            .status();
        if code.as_u16() != 201 {
            return Err(format!("create {name}: {code}").into());
        }
        sent.push((name, at));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().map(|s| s.len()).unwrap_or(0) < changes && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed();
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(name, at)| seen.get(name).map(|t| t.saturating_duration_since(*at)))
        .collect();
    latencies.sort();
    println!(
        "changes {changes}: events {} in {:.2} s ({:.0} changes/s); create → event p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        changes as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    mesh.shutdown().await;
    if latencies.len() != changes {
        eprintln!("missing events: {}", changes - latencies.len());
        std::process::exit(1);
    }
    Ok(())
}
