//! Load tools for BENCHMARKS.md (run with `--release`).
//!
//! * `loadtest bare --listen 127.0.0.1:18081`: a bare axum handler answering 202 to every POST,
//!   the baseline wrk compares evmesh's durable ingress with.
//! * `loadtest e2e --triggers 100 --matching 10 --seconds 10 --concurrency 64`: a real evmesh
//!   (durable store in a temp dir) plus a sink in this process; POSTs binary events over
//!   loopback HTTP and reports accepted events/s, delivered events/s and the ingress→sink latency
//!   (p50/p99) measured at the sink. It fails (exit 1) on any non-2xx answer or transport error
//!   at ingress, and when some accepted event did not reach every matching trigger (it counts
//!   distinct (trigger, id) pairs at the sink, so duplicates cannot hide a loss).
//! * `loadtest sequence --steps 3 --seconds 10 --concurrency 64`: the same measurement through a
//!   Sequence (InMemoryChannel) of `steps` steps, each an HTTP service in this process that
//!   replies with the event it got; the last reply goes to the sink. Posts to the Sequence's
//!   address; every accepted event must reach the sink.
//! * `loadtest fanout --subscriptions 10 --seconds 10 --concurrency 64`: one InMemoryChannel with
//!   `subscriptions` Subscriptions to the sink; every accepted event must reach each of them.
//! * `sequence` and `fanout` take `--channel NatsJetStreamChannel` to run on NATS JetStream
//!   (`EVMESH_NATS_URL`, default `nats://127.0.0.1:4222`) instead: the channels get names of
//!   their own (`bench<pid>`), and their streams are deleted after the run.
//! * Kafka (Tansu or Kafka at `EVMESH_KAFKA_BOOTSTRAP`, default 127.0.0.1:9092):
//!   `loadtest e2e --class Kafka [--instances 2] [--partitions 4]` runs the same through a
//!   Kafka-class broker (its topic created first with `partitions` partitions), with `instances`
//!   evmesh instances in this process started from the same YAML (senders spread over their
//!   ingresses; the trigger's consumer group is shared); `sequence --channel KafkaChannel` runs
//!   the Sequence on KafkaChannels; `loadtest kafkasource --records 20000` fills a topic with
//!   CloudEvent records, then a KafkaSource (`initialOffset: earliest`) delivers them into an
//!   embedded broker whose trigger posts to the sink, and reports records/s from the first
//!   record at the sink to the last. Every run waits for the consumer groups to join
//!   (`wait_idle`) before it sends.
//! * `loadtest ordered --keys 1000 --seconds 8 --concurrency 64 [--order unordered]
//!   [--sink-delay-ms 0]`: one trigger with `kafka.eventing.knative.dev/delivery.order`; every
//!   event carries a `partitionkey` (1,000 keys) and a per-key sequence number; each key is sent
//!   by one sender, one event after the other, so its log order is its sequence order. The sink
//!   counts deliveries that arrive out of sequence for their key.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use cloudevents::{EventBuilder, EventBuilderV10};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
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
        Some("bare") => {
            let listener =
                tokio::net::TcpListener::bind(arg("--listen", "127.0.0.1:18081")).await?;
            println!("bare 202 handler on {}", listener.local_addr()?);
            let app = Router::new().fallback(post(|| async { StatusCode::ACCEPTED }));
            axum::serve(listener, app).await?;
            Ok(())
        }
        Some("e2e") => {
            e2e(
                arg("--triggers", "1").parse()?,
                arg("--matching", "1").parse()?,
                arg("--seconds", "10").parse()?,
                arg("--concurrency", "64").parse()?,
                &arg("--class", "MTChannelBasedBroker"),
                arg("--instances", "1").parse()?,
                arg("--partitions", "4").parse()?,
            )
            .await
        }
        Some("kafkasource") => kafkasource(arg("--records", "20000").parse()?).await,
        Some("sequence") => {
            let steps: usize = arg("--steps", "3").parse()?;
            run_flow(
                Flow::Sequence(steps.max(1)),
                &arg("--channel", "InMemoryChannel"),
                arg("--seconds", "10").parse()?,
                arg("--concurrency", "64").parse()?,
            )
            .await
        }
        Some("fanout") => {
            let subs: usize = arg("--subscriptions", "10").parse()?;
            run_flow(
                Flow::Fanout(subs.max(1)),
                &arg("--channel", "InMemoryChannel"),
                arg("--seconds", "10").parse()?,
                arg("--concurrency", "64").parse()?,
            )
            .await
        }
        Some("ordered") => {
            ordered(
                arg("--keys", "1000").parse()?,
                &arg("--order", "ordered"),
                arg("--seconds", "8").parse()?,
                arg("--concurrency", "64").parse()?,
                arg("--sink-delay-ms", "0").parse()?,
            )
            .await
        }
        _ => {
            eprintln!(
                "usage: loadtest bare [--listen ADDR] | loadtest e2e [--triggers N] [--matching M] [--seconds S] [--concurrency C] [--class Kafka] [--instances N] [--partitions P] | loadtest kafkasource [--records R] | loadtest sequence [--steps N] [--channel InMemoryChannel|NatsJetStreamChannel|KafkaChannel] [--seconds S] [--concurrency C] | loadtest fanout [--subscriptions N] [--channel K] [--seconds S] [--concurrency C] | loadtest ordered [--keys K] [--order ordered|unordered] [--seconds S] [--concurrency C] [--sink-delay-ms D]"
            );
            std::process::exit(2);
        }
    }
}

fn kafka_bootstrap() -> String {
    std::env::var("EVMESH_KAFKA_BOOTSTRAP")
        .or_else(|_| std::env::var("EVMESH_TEST_KAFKA"))
        .unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

#[allow(clippy::too_many_arguments)]
async fn e2e(
    triggers: usize,
    matching: usize,
    seconds: u64,
    concurrency: usize,
    class: &str,
    instances: usize,
    partitions: i32,
) -> Result<(), Box<dyn std::error::Error>> {
    let sink = Sink::start().await?;
    let sink_url = sink.url.clone();
    let kafka = class == "Kafka";
    let broker = if kafka {
        format!("bench{}", std::process::id())
    } else {
        "default".to_string()
    };
    if kafka {
        // Created here with several partitions, so that several instances share the work.
        let topic = evmesh_kafka::channel::broker_topic_name("default", &broker);
        evmesh_kafka::ensure_topic(
            &evmesh_kafka::KafkaSettings::new([kafka_bootstrap()]),
            &topic,
            partitions.max(1),
            1,
            &[],
        )
        .await?;
    }
    // The mesh: `triggers` triggers, `matching` of them on the type we send.
    let mut yaml = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: {broker}\n  annotations: {{eventing.knative.dev/broker.class: {class}}}\n"
    );
    for i in 0..triggers {
        let ty = if i < matching {
            "bench.match".to_string()
        } else {
            format!("bench.other.{i}")
        };
        yaml.push_str(&format!(
            "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t{i}}}\nspec:\n  broker: {broker}\n  filter: {{attributes: {{type: {ty}}}}}\n  subscriber: {{uri: \"{sink_url}t{i}\"}}\n"
        ));
    }
    let paths = (0..matching).map(|i| format!("/t{i}")).collect();
    let label = if kafka {
        format!(
            "class=Kafka instances={instances} partitions={partitions} triggers={triggers} matching={matching} concurrency={concurrency}"
        )
    } else {
        format!(
            "class={class} instances={instances} triggers={triggers} matching={matching} concurrency={concurrency}"
        )
    };
    drive(
        sink,
        &yaml,
        &format!("/default/{broker}"),
        paths,
        &label,
        seconds,
        concurrency,
        instances,
    )
    .await
}

/// A channel flow to measure.
enum Flow {
    /// A Sequence of this many echoing steps, its reply to the sink.
    Sequence(usize),
    /// One InMemoryChannel with this many Subscriptions to the sink.
    Fanout(usize),
}

async fn run_flow(
    flow: Flow,
    channel: &str,
    seconds: u64,
    concurrency: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let sink = Sink::start().await?;
    let u = sink.url.clone();
    let (api, kind, bench) = match channel {
        "InMemoryChannel" | "imc" => (
            "messaging.knative.dev/v1",
            "InMemoryChannel",
            "bench".to_string(),
        ),
        "NatsJetStreamChannel" | "nats" => (
            "messaging.knative.dev/v1alpha1",
            "NatsJetStreamChannel",
            format!("bench{}", std::process::id()),
        ),
        "KafkaChannel" | "kafka" => (
            "messaging.knative.dev/v1beta1",
            "KafkaChannel",
            format!("bench{}", std::process::id()),
        ),
        other => {
            return Err(format!(
                "--channel {other}: InMemoryChannel, NatsJetStreamChannel or KafkaChannel"
            )
            .into());
        }
    };
    let (yaml, target, paths, label, channels) = match flow {
        Flow::Sequence(n) => {
            let steps: String = (0..n)
                .map(|i| format!("    - uri: \"{u}step{i}\"\n"))
                .collect();
            (
                format!(
                    "apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata: {{name: {bench}}}\nspec:\n  channelTemplate: {{apiVersion: {api}, kind: {kind}}}\n  steps:\n{steps}  reply: {{uri: \"{u}end\"}}\n"
                ),
                format!("/channels/default/{bench}-kn-sequence-0"),
                vec!["/end".to_string()],
                format!("{kind} sequence steps={n} concurrency={concurrency}"),
                (0..n)
                    .map(|i| format!("{bench}-kn-sequence-{i}"))
                    .collect::<Vec<_>>(),
            )
        }
        Flow::Fanout(n) => {
            let mut yaml =
                format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {bench}}}\n");
            for i in 0..n {
                yaml.push_str(&format!(
                    "---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: s{i}}}\nspec:\n  channel: {{apiVersion: {api}, kind: {kind}, name: {bench}}}\n  subscriber: {{uri: \"{u}s{i}\"}}\n"
                ));
            }
            (
                yaml,
                format!("/channels/default/{bench}"),
                (0..n).map(|i| format!("/s{i}")).collect(),
                format!("{kind} channel subscriptions={n} concurrency={concurrency}"),
                vec![bench.clone()],
            )
        }
    };
    let result = drive(sink, &yaml, &target, paths, &label, seconds, concurrency, 1).await;
    if kind == "NatsJetStreamChannel" {
        let url = std::env::var("EVMESH_NATS_URL")
            .unwrap_or_else(|_| evmesh_channels::DEFAULT_NATS_URL.to_string());
        let js = async_nats::jetstream::new(async_nats::connect(url.as_str()).await?);
        for c in channels {
            let _ = js
                .delete_stream(evmesh_channels::nats::stream_name("default", &c))
                .await;
        }
    }
    result
}

/// The benchmark's HTTP side in this process: `/step*` paths echo the event they get (200 with
/// its headers and body, as a Sequence step that changes nothing), every other path records
/// the ingress→sink latency (from the `sentus` extension) and the distinct (path, id) pairs.
struct Sink {
    url: String,
    latencies: Arc<std::sync::Mutex<Vec<u64>>>,
    delivered: Arc<AtomicU64>,
    pairs: Arc<std::sync::Mutex<HashSet<(String, String)>>>,
}

impl Sink {
    async fn start() -> Result<Sink, Box<dyn std::error::Error>> {
        let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::with_capacity(1 << 20)));
        let delivered = Arc::new(AtomicU64::new(0));
        let pairs = Arc::new(std::sync::Mutex::new(HashSet::<(String, String)>::new()));
        let (l, d, p) = (latencies.clone(), delivered.clone(), pairs.clone());
        let sink = Router::new().fallback(post(
            move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let (l, d, p) = (l.clone(), d.clone(), p.clone());
                async move {
                    if uri.path().starts_with("/step") {
                        let mut echo = HeaderMap::new();
                        for (k, v) in &headers {
                            let n = k.as_str();
                            if n.starts_with("ce-") || n == "content-type" {
                                echo.insert(k.clone(), v.clone());
                            }
                        }
                        return (StatusCode::OK, echo, body);
                    }
                    if let Some(sent) = headers
                        .get("ce-sentus")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        l.lock()
                            .map(|mut l| l.push(now_us().saturating_sub(sent)))
                            .ok();
                    }
                    if let Some(id) = headers.get("ce-id").and_then(|v| v.to_str().ok()) {
                        p.lock()
                            .map(|mut p| p.insert((uri.path().to_string(), id.to_string())))
                            .ok();
                    }
                    d.fetch_add(1, Ordering::Relaxed);
                    (
                        StatusCode::ACCEPTED,
                        HeaderMap::new(),
                        axum::body::Bytes::new(),
                    )
                }
            },
        ));
        let sink_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", sink_listener.local_addr()?);
        tokio::spawn(async move { axum::serve(sink_listener, sink).await });
        Ok(Sink {
            url,
            latencies,
            delivered,
            pairs,
        })
    }
}

/// Runs `instances` meshes from `yaml` (one data dir each), waits until they are idle (Kafka
/// consumer groups joined), posts events to `target` (a path on them, senders spread over the
/// instances) from `concurrency` senders for `seconds`, then waits until every accepted event
/// reached every path of `paths` at the sink; reports rates and latency, exits 1 on any loss or
/// ingress failure.
#[allow(clippy::too_many_arguments)]
async fn drive(
    sink: Sink,
    yaml: &str,
    target: &str,
    paths: Vec<String>,
    label: &str,
    seconds: u64,
    concurrency: usize,
    instances: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let Sink {
        latencies,
        delivered,
        pairs,
        ..
    } = sink;
    let matching = paths.len();
    let dir = std::env::temp_dir().join(format!("evmesh-loadtest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut meshes = Vec::new();
    for i in 0..instances.max(1) {
        let mut options = evmesh::Options {
            data_dir: dir.join(i.to_string()),
            kafka_bootstrap_servers: Some(kafka_bootstrap()),
            ..evmesh::Options::default()
        };
        if let Ok(url) = std::env::var("EVMESH_NATS_URL") {
            options.nats_url = url;
        }
        let mesh = evmesh::Mesh::from_yaml(yaml)?.options(options);
        meshes.push(
            mesh.start(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
                .await?,
        );
    }
    // Consumer groups join before anything is sent (on Tansu a join takes seconds); the first
    // instance again after the others (it rebalanced when they joined).
    for m in meshes.iter().chain(meshes.first()) {
        tokio::time::timeout(Duration::from_secs(120), m.wait_idle()).await??;
    }
    let ingresses: Vec<String> = meshes
        .iter()
        .map(|m| format!("{}{}", m.url().as_str().trim_end_matches('/'), target))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let accepted_ids = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut senders = Vec::new();
    for w in 0..concurrency {
        let (stop, accepted_ids, failures, ingress) = (
            stop.clone(),
            accepted_ids.clone(),
            failures.clone(),
            ingresses[w % ingresses.len()].clone(),
        );
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("{w}-{n}");
                let Ok(event) = EventBuilderV10::new()
                    .id(id.clone())
                    .source("loadtest")
                    .ty("bench.match")
                    .extension("sentus", now_us().to_string())
                    .data(
                        "application/json",
                        r#"{"order":{"id":42,"total":99.5},"note":"benchmark event"}"#.to_string(),
                    )
                    .build()
                else {
                    failures.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                let Ok(enc) = evmesh::evmesh_broker::codec::encode_binary(event) else {
                    failures.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                match client
                    .post(&ingress)
                    .headers(enc.headers)
                    .body(enc.body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 202 => {
                        accepted_ids.lock().map(|mut a| a.push(id)).ok();
                    }
                    Ok(r) => {
                        eprintln!("ingress answered {} to event {id}", r.status());
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("posting event {id}: {e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.await;
    }
    let send_time = started.elapsed();
    let accepted_ids = accepted_ids.lock().map(|a| a.clone()).unwrap_or_default();
    let accepted = accepted_ids.len() as u64;
    let expected = accepted * matching as u64;
    let distinct = || pairs.lock().map(|p| p.len() as u64).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while distinct() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_time = started.elapsed();
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let acc = accepted;
    println!(
        "{label}: accepted {acc} in {:.1}s = {:.0} ev/s; delivered {} of {expected} in {:.1}s = {:.0} deliveries/s; latency ingress->sink p50 {:.2} ms, p99 {:.2} ms",
        send_time.as_secs_f64(),
        acc as f64 / send_time.as_secs_f64(),
        delivered.load(Ordering::Relaxed),
        total_time.as_secs_f64(),
        delivered.load(Ordering::Relaxed) as f64 / total_time.as_secs_f64(),
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
    );
    for m in &meshes {
        m.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Every accepted id must have reached every matching trigger; no ingress failure allowed.
    let missing: Vec<(String, String)> = {
        let got = pairs.lock().map(|p| p.clone()).unwrap_or_default();
        accepted_ids
            .iter()
            .flat_map(|id| paths.iter().map(move |p| (p.clone(), id.clone())))
            .filter(|pair| !got.contains(pair))
            .take(10)
            .collect()
    };
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 || !missing.is_empty() {
        eprintln!(
            "FAILED: {failed} ingress failures; {} of {expected} (path, id) deliveries missing (first: {missing:?})",
            expected.saturating_sub(distinct())
        );
        std::process::exit(1);
    }
    println!("ok: every accepted event reached every expected path, no ingress failure");
    Ok(())
}

/// What the ordered-delivery sink saw.
#[derive(Default)]
struct OrderedSink {
    /// Per key, the highest sequence number delivered so far.
    last: std::collections::HashMap<String, u64>,
    delivered: u64,
    out_of_order: u64,
    latencies_us: Vec<u64>,
}

async fn ordered(
    keys: usize,
    order: &str,
    seconds: u64,
    concurrency: usize,
    sink_delay_ms: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let concurrency = concurrency.clamp(1, keys.max(1));
    let state = Arc::new(std::sync::Mutex::new(OrderedSink::default()));
    let st = state.clone();
    let sink = Router::new().fallback(post(move |headers: HeaderMap| {
        let st = st.clone();
        async move {
            if sink_delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(sink_delay_ms)).await;
            }
            let h = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let key = h("ce-partitionkey").unwrap_or_default();
            let seq = h("ce-seq").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let sent = h("ce-sentus").and_then(|v| v.parse::<u64>().ok());
            if let Ok(mut s) = st.lock() {
                s.delivered += 1;
                let prev = s.last.insert(key, seq);
                if prev.is_some_and(|p| p + 1 != seq) || (prev.is_none() && seq != 0) {
                    s.out_of_order += 1;
                }
                if let Some(sent) = sent {
                    s.latencies_us.push(now_us().saturating_sub(sent));
                }
            }
            StatusCode::ACCEPTED
        }
    }));
    let sink_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_url = format!("http://{}/", sink_listener.local_addr()?);
    tokio::spawn(async move { axum::serve(sink_listener, sink).await });

    let yaml = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: ordered\n  annotations: {{kafka.eventing.knative.dev/delivery.order: {order}}}\nspec:\n  broker: default\n  subscriber: {{uri: \"{sink_url}\"}}\n"
    );
    let dir = std::env::temp_dir().join(format!("evmesh-loadtest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let running = evmesh::Mesh::from_yaml(&yaml)?
        .data_dir(&dir)
        .start(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
        .await?;
    let ingress = running.broker_url("default", "default").to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut senders = Vec::new();
    for w in 0..concurrency {
        let (stop, accepted, ingress) = (stop.clone(), accepted.clone(), ingress.clone());
        // Sender `w` owns keys w, w + concurrency, ...: one key's events leave one at a time.
        let my_keys: Vec<usize> = (w..keys).step_by(concurrency).collect();
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut seqs = vec![0u64; my_keys.len()];
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let slot = i % my_keys.len();
                i += 1;
                let key = my_keys[slot];
                let seq = seqs[slot];
                let Ok(event) = EventBuilderV10::new()
                    .id(format!("{key}-{seq}"))
                    .source("loadtest")
                    .ty("bench.ordered")
                    .extension("partitionkey", format!("k{key}"))
                    .extension("seq", seq.to_string())
                    .extension("sentus", now_us().to_string())
                    .data("application/json", r#"{"n":1}"#.to_string())
                    .build()
                else {
                    break;
                };
                let Ok(enc) = evmesh::evmesh_broker::codec::encode_binary(event) else {
                    break;
                };
                match client
                    .post(&ingress)
                    .headers(enc.headers)
                    .body(enc.body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 202 => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        seqs[slot] += 1;
                    }
                    // Not accepted: the same sequence number is sent again later.
                    _ => {}
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.await;
    }
    let send_time = started.elapsed();
    let expected = accepted.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(120);
    let delivered = || state.lock().map(|s| s.delivered).unwrap_or(0);
    while delivered() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_time = started.elapsed();
    let (delivered, out_of_order, mut lat) = state
        .lock()
        .map(|s| (s.delivered, s.out_of_order, s.latencies_us.clone()))
        .unwrap_or_default();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "order={order} keys={keys} concurrency={concurrency} sink_delay={sink_delay_ms}ms: accepted {expected} in {:.1}s = {:.0} ev/s; delivered {delivered} in {:.1}s = {:.0} deliveries/s; out of sequence for their key: {out_of_order}; latency ingress->sink p50 {:.2} ms, p99 {:.2} ms",
        send_time.as_secs_f64(),
        expected as f64 / send_time.as_secs_f64(),
        total_time.as_secs_f64(),
        delivered as f64 / total_time.as_secs_f64(),
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
    );
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Fills a topic with `records` CloudEvent records (binary `ce_` headers), then runs a
/// KafkaSource reading it from the earliest offset into an embedded broker whose trigger posts
/// to a sink; reports records/s from the first record at the sink to the last.
async fn kafkasource(records: usize) -> Result<(), Box<dyn std::error::Error>> {
    let settings = evmesh_kafka::KafkaSettings::new([kafka_bootstrap()]);
    let topic = format!("bench-source-{}", std::process::id());
    evmesh_kafka::ensure_topic(&settings, &topic, 1, 1, &[]).await?;
    let producer = Arc::new(evmesh_kafka::KafkaProducer::new(&settings)?);
    let filled = Instant::now();
    let body = br#"{"order":{"id":42,"total":99.5},"note":"benchmark record"}"#;
    for chunk in (0..records).collect::<Vec<_>>().chunks(1000) {
        let sends = chunk.iter().map(|i| {
            let producer = producer.clone();
            let topic = topic.clone();
            async move {
                let id = format!("r{i}");
                let headers: [(&str, &[u8]); 5] = [
                    ("ce_specversion", b"1.0"),
                    ("ce_id", id.as_bytes()),
                    ("ce_source", b"loadtest"),
                    ("ce_type", b"bench.match"),
                    ("content-type", b"application/json"),
                ];
                producer.send_raw(&topic, None, &headers, body).await
            }
        });
        for r in futures_util::future::join_all(sends).await {
            r?;
        }
    }
    println!(
        "filled {topic} with {records} records in {:.1}s",
        filled.elapsed().as_secs_f64()
    );

    #[derive(Default)]
    struct Seen {
        ids: HashSet<String>,
        first: Option<Instant>,
        last: Option<Instant>,
    }
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let s2 = seen.clone();
    let sink = Router::new().fallback(post(move |headers: HeaderMap| {
        let s2 = s2.clone();
        async move {
            if let (Some(id), Ok(mut s)) = (
                headers.get("ce-id").and_then(|v| v.to_str().ok()),
                s2.lock(),
            ) {
                let now = Instant::now();
                s.first.get_or_insert(now);
                s.last = Some(now);
                s.ids.insert(id.to_string());
            }
            StatusCode::ACCEPTED
        }
    }));
    let sink_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_url = format!("http://{}/", sink_listener.local_addr()?);
    tokio::spawn(async move { axum::serve(sink_listener, sink).await });
    let yaml = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: all}}\nspec:\n  broker: default\n  subscriber: {{uri: \"{sink_url}\"}}\n---\napiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata:\n  name: bench\n  annotations: {{evmesh.dev/kafka-session-timeout: PT6S}}\nspec:\n  bootstrapServers: [\"{}\"]\n  topics: [\"{topic}\"]\n  consumerGroup: {topic}\n  initialOffset: earliest\n  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}\n",
        kafka_bootstrap()
    );
    let dir = std::env::temp_dir().join(format!("evmesh-loadtest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let running = evmesh::Mesh::from_yaml(&yaml)?
        .data_dir(&dir)
        .start(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let count = || seen.lock().map(|s| s.ids.len()).unwrap_or(0);
    while count() < records && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed();
    let (got, span) = seen
        .lock()
        .map(|s| {
            (
                s.ids.len(),
                s.first.zip(s.last).map(|(f, l)| l.duration_since(f)),
            )
        })
        .unwrap_or_default();
    let span = span.unwrap_or_default().as_secs_f64().max(1e-3);
    println!(
        "kafkasource records={records}: {got} distinct records reached the sink through the broker; {:.0} records/s from the first to the last ({span:.1}s); {:.1}s from start (includes the group join)",
        got.saturating_sub(1) as f64 / span,
        total.as_secs_f64(),
    );
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    if got < records {
        eprintln!("FAILED: {} records missing", records - got);
        std::process::exit(1);
    }
    println!("ok: every record reached the sink");
    Ok(())
}
