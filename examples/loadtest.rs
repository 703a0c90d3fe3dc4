//! Load tools for BENCHMARKS.md (run with `--release`).
//!
//! * `loadtest bare --listen 127.0.0.1:18081`: a bare axum handler answering 202 to every POST,
//!   the baseline wrk compares evmesh's durable ingress with.
//! * `loadtest sink`, `loadtest forward --to URL`, `loadtest bare-log --dir DIR`: the parts of a
//!   run across processes (`bench/scaling.sh`, each pinned to its own cores): a sink that counts
//!   what it is sent (`GET /count`), the accept-and-forward floor, and the minimal durable
//!   ingress (each body appended to one file, group commit with one fdatasync per batch, 202
//!   after it).
//! * `loadtest e2e --triggers 100 --matching 10 --seconds 10 --concurrency 64`: a real evmesh
//!   (durable store in a temp dir) plus a sink in this process; POSTs binary events over
//!   loopback HTTP and reports accepted events/s, delivered events/s and the ingress→sink latency
//!   (p50/p99) measured at the sink. It fails (exit 1) on any non-2xx answer or transport error
//!   at ingress, and when some accepted event did not reach every matching trigger (it counts
//!   distinct (trigger, id) pairs at the sink, so duplicates cannot hide a loss). `--rate 1000`
//!   sends open loop instead: one event every 1/rate s on a fixed schedule, whatever the answers
//!   to earlier ones (at most `concurrency` in flight), and reports p50/p99/p99.9. `--floor`
//!   first measures the accept-and-forward floor with the same load (an axum handler that
//!   answers 202 and forwards each body to the sink on a pooled client: no parsing, no store)
//!   and prints evmesh's share of its deliveries/s. `--floor-hyper`: the same floor forwarding
//!   on hyper-util's pooled client (what evmesh delivers on) instead of reqwest.
//!   `--floor-synced`: the floor stores each body before it answers and forwards it (a
//!   group-commit thread writes what is waiting into a file zeroed ahead and `fdatasync`s it
//!   once per batch, as evmesh's store does): the least any durable broker pays on this disk,
//!   so that evmesh's latency can be read against what the disk's syncs cost. `--rounds N`
//!   (with `--floor`): the floor and evmesh measured N times each, in turn (floor, evmesh,
//!   floor, ...), both kept running in this one process, with each round's share and the
//!   median, so that a slow minute of a shared machine falls on both sides.
//!   `--storage-engine segments|fjall|redb|sled`: the engine of the measured evmesh (default
//!   evmesh's default).
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
//! * `loadtest backlog --evmesh target/release/evmesh --events 1000000 --concurrency 64`: runs the
//!   evmesh binary (a child process, so its RSS is its own) with one trigger whose subscriber
//!   refuses connections, posts `events` events, and reports the child's RSS (VmRSS, and VmHWM,
//!   the peak) after the load; then stops it (SIGTERM), starts it again on the same data dir and
//!   reports how long it took until `/readyz` answered 200 and an event was accepted, and the RSS
//!   after that; then the same after SIGKILL. Extra flags after `--` go to `evmesh serve`.
//! * `loadtest soak --evmesh target/release/evmesh --rate 2000 --seconds 600 --triggers 2`: the
//!   evmesh binary (child process) with `triggers` triggers to a sink in this process, retention
//!   `--retention PT2M`; sends `rate` events/s on a fixed schedule (open loop) for `seconds`,
//!   prints the child's RSS every `--sample-seconds` (10), then waits until delivery is complete
//!   and checks that every accepted event reached every trigger exactly once (exit 1 otherwise);
//!   prints the RSS again after `--idle-seconds` (30) without load, and each delivery's latency
//!   from its send to the sink (over the run and per sample window: p99, p99.9, max, how many
//!   over 5 ms).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use cloudevents::{EventBuilder, EventBuilderV10};

/// The allocator the `evmesh` binary uses (see `src/main.rs`), so the evmesh this process runs
/// is measured as it ships; the floors run on it too.
#[cfg(all(feature = "jemalloc", target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    // reqwest is built without a default TLS provider (as evmesh is).
    evmesh::evmesh_broker::tls::install_provider();
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
        Some("sink") => {
            let listener =
                tokio::net::TcpListener::bind(arg("--listen", "127.0.0.1:18082")).await?;
            println!("counting sink on {}", listener.local_addr()?);
            axum::serve(listener, counting_sink()).await?;
            Ok(())
        }
        Some("forward") => {
            let listener =
                tokio::net::TcpListener::bind(arg("--listen", "127.0.0.1:18081")).await?;
            let to = arg("--to", "http://127.0.0.1:18082/t0");
            println!(
                "accept-and-forward floor on {} to {to}",
                listener.local_addr()?
            );
            axum::serve(listener, forward_app(vec![to], false, None)).await?;
            Ok(())
        }
        Some("bare-log") => {
            let listener =
                tokio::net::TcpListener::bind(arg("--listen", "127.0.0.1:18083")).await?;
            let dir = std::path::PathBuf::from(arg("--dir", "."));
            println!(
                "bare group-commit log on {} in {}",
                listener.local_addr()?,
                dir.display()
            );
            axum::serve(listener, bare_log_app(&dir)?).await?;
            Ok(())
        }
        Some("e2e") => {
            e2e(
                arg("--triggers", "1").parse()?,
                arg("--matching", "1").parse()?,
                Load {
                    seconds: arg("--seconds", "10").parse()?,
                    concurrency: arg("--concurrency", "64").parse()?,
                    rate: match arg("--rate", "") {
                        r if r.is_empty() => None,
                        r => Some(r.parse()?),
                    },
                    floor: args
                        .iter()
                        .any(|a| a == "--floor" || a == "--floor-hyper" || a == "--floor-synced"),
                    floor_hyper: args.iter().any(|a| a == "--floor-hyper"),
                    floor_synced: args.iter().any(|a| a == "--floor-synced"),
                    rounds: arg("--rounds", "1").parse()?,
                    engine: arg(
                        "--storage-engine",
                        evmesh::StorageEngine::default().as_str(),
                    )
                    .parse()?,
                },
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
        Some("backlog") => {
            backlog(
                &arg("--evmesh", "target/release/evmesh"),
                arg("--events", "1000000").parse()?,
                arg("--concurrency", "64").parse()?,
                serve_extra(&args),
            )
            .await
        }
        Some("soak") => {
            soak(SoakArgs {
                evmesh: arg("--evmesh", "target/release/evmesh"),
                rate: arg("--rate", "2000").parse()?,
                seconds: arg("--seconds", "600").parse()?,
                triggers: arg("--triggers", "2").parse()?,
                retention: arg("--retention", "PT2M"),
                retention_interval: arg("--retention-interval", "PT30S"),
                sample_seconds: arg("--sample-seconds", "10").parse()?,
                idle_seconds: arg("--idle-seconds", "30").parse()?,
                extra: serve_extra(&args),
            })
            .await
        }
        _ => {
            eprintln!(
                "usage: loadtest bare [--listen ADDR] | loadtest sink [--listen ADDR] | loadtest forward [--listen ADDR] [--to URL] | loadtest bare-log [--listen ADDR] [--dir DIR] | loadtest e2e [--triggers N] [--matching M] [--seconds S] [--concurrency C] [--rate R] [--floor] [--rounds N] [--class Kafka] [--instances N] [--partitions P] | loadtest kafkasource [--records R] | loadtest sequence [--steps N] [--channel InMemoryChannel|NatsJetStreamChannel|KafkaChannel] [--seconds S] [--concurrency C] | loadtest fanout [--subscriptions N] [--channel K] [--seconds S] [--concurrency C] | loadtest ordered [--keys K] [--order ordered|unordered] [--seconds S] [--concurrency C] [--sink-delay-ms D] | loadtest backlog [--evmesh PATH] [--events N] [--concurrency C] [-- SERVE_FLAGS] | loadtest soak [--evmesh PATH] [--rate R] [--seconds S] [--triggers T] [--retention ISO] [--retention-interval ISO] [--sample-seconds S] [--idle-seconds S] [-- SERVE_FLAGS]"
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
    load: Load,
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
    let concurrency = load.concurrency;
    let rate = load
        .rate
        .map_or(String::new(), |r| format!(" rate={r}/s (open loop)"));
    let label = if kafka {
        format!(
            "class=Kafka instances={instances} partitions={partitions} triggers={triggers} matching={matching} concurrency={concurrency}{rate}"
        )
    } else {
        format!(
            "class={class} instances={instances} triggers={triggers} matching={matching} concurrency={concurrency}{rate}"
        )
    };
    drive(
        sink,
        &yaml,
        &format!("/default/{broker}"),
        paths,
        &label,
        load,
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
    let load = Load {
        seconds,
        concurrency,
        rate: None,
        floor: false,
        floor_hyper: false,
        floor_synced: false,
        rounds: 1,
        engine: evmesh::StorageEngine::default(),
    };
    let result = drive(sink, &yaml, &target, paths, &label, load, 1).await;
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

    /// Forgets what it was sent (the next round counts from zero).
    fn reset(&self) {
        self.latencies.lock().map(|mut l| l.clear()).ok();
        self.pairs.lock().map(|mut p| p.clear()).ok();
        self.delivered.store(0, Ordering::Relaxed);
    }
}

/// How `drive` sends: `concurrency` senders one request after the other (closed loop), or, with
/// `rate`, one event every `1 / rate` s on a fixed schedule whatever the answers (open loop; at
/// most `concurrency` requests in flight, a send that would exceed it waits and counts late).
#[derive(Clone, Copy)]
struct Load {
    seconds: u64,
    concurrency: usize,
    rate: Option<u64>,
    /// Also measure the accept-and-forward floor with the same load, before evmesh.
    floor: bool,
    /// The floor forwards on hyper-util's pooled client instead of reqwest.
    floor_hyper: bool,
    /// The floor stores each body (group commit, one `fdatasync` per batch) before it answers
    /// and forwards it.
    floor_synced: bool,
    /// With `floor`: measure the floor and evmesh this many times each, in turn (floor,
    /// evmesh, floor, ...), in one process, and report the share of each round and their median.
    rounds: usize,
    /// The storage engine evmesh runs on (`--storage-engine`, default evmesh's).
    engine: evmesh::StorageEngine,
}

/// What one measured run gave.
struct Measured {
    accepted: u64,
    send_secs: f64,
    delivered: u64,
    total_secs: f64,
    /// Sorted ingress→sink latencies, µs.
    latencies: Vec<u64>,
    /// CPU time (user + system) the whole process spent from the first send until the last
    /// delivery: senders and sink included, the same for the floor and for evmesh.
    cpu_secs: f64,
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat` (0 where
/// there is none).
fn process_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks (100 a second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// The `p` quantile (0..=1) of `sorted` latencies in µs, in ms (0 when there are none).
fn pct_ms(sorted: &[u64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}

impl Measured {
    fn pct(&self, p: f64) -> f64 {
        pct_ms(&self.latencies, p)
    }
    fn delivery_rate(&self) -> f64 {
        self.delivered as f64 / self.total_secs
    }
    /// CPU µs the process spent per delivery.
    fn cpu_per_delivery_us(&self) -> f64 {
        self.cpu_secs * 1e6 / self.delivered.max(1) as f64
    }
    fn line(&self, label: &str, expected: u64) -> String {
        format!(
            "{label}: accepted {} in {:.1}s = {:.0} ev/s; delivered {} of {expected} in {:.1}s = {:.0} deliveries/s; latency ingress->sink p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; CPU {:.1} µs per delivery (whole process)",
            self.accepted,
            self.send_secs,
            self.accepted as f64 / self.send_secs,
            self.delivered,
            self.total_secs,
            self.delivery_rate(),
            self.pct(0.50),
            self.pct(0.99),
            self.pct(0.999),
            self.pct(1.0),
            self.cpu_per_delivery_us(),
        )
    }
}

/// One binary-mode benchmark event with id `id` and the send time in its `sentus` extension.
fn bench_event(id: &str) -> Option<evmesh::evmesh_broker::codec::Encoded> {
    let event = EventBuilderV10::new()
        .id(id)
        .source("loadtest")
        .ty("bench.match")
        .extension("sentus", now_us().to_string())
        .data(
            "application/json",
            r#"{"order":{"id":42,"total":99.5},"note":"benchmark event"}"#.to_string(),
        )
        .build()
        .ok()?;
    evmesh::evmesh_broker::codec::encode_binary(event).ok()
}

/// Posts one event; pushes its id to `accepted` on 202, counts a failure otherwise.
async fn post_one(
    client: &reqwest::Client,
    ingress: &str,
    id: String,
    accepted: &std::sync::Mutex<Vec<String>>,
    failures: &AtomicU64,
) {
    let Some(enc) = bench_event(&id) else {
        failures.fetch_add(1, Ordering::Relaxed);
        return;
    };
    match client
        .post(ingress)
        .headers(enc.headers)
        .body(enc.body)
        .send()
        .await
    {
        Ok(r) if r.status().as_u16() == 202 => {
            accepted.lock().map(|mut a| a.push(id)).ok();
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

/// Sends `load` to `ingresses`; returns the accepted ids, the failures and the send time.
/// Ids are `w-n` (closed loop: sender, count) or `r-n` (open loop), prefixed with `round.` after
/// the first round, so that no round's id repeats an earlier one's.
async fn send_load(ingresses: &[String], load: Load, round: usize) -> (Vec<String>, u64, Duration) {
    let prefix = if round == 0 {
        String::new()
    } else {
        format!("{round}.")
    };
    let accepted_ids = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    match load.rate {
        None => {
            let stop = Arc::new(AtomicBool::new(false));
            let mut senders = Vec::new();
            for w in 0..load.concurrency {
                let (stop, accepted_ids, failures, ingress, prefix) = (
                    stop.clone(),
                    accepted_ids.clone(),
                    failures.clone(),
                    ingresses[w % ingresses.len()].clone(),
                    prefix.clone(),
                );
                senders.push(tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        post_one(
                            &client,
                            &ingress,
                            format!("{prefix}{w}-{n}"),
                            &accepted_ids,
                            &failures,
                        )
                        .await;
                    }
                }));
            }
            tokio::time::sleep(Duration::from_secs(load.seconds)).await;
            stop.store(true, Ordering::Relaxed);
            for s in senders {
                let _ = s.await;
            }
        }
        Some(rate) => {
            // Open loop: event n leaves at start + n / rate, whatever the answers to earlier ones.
            let rate = rate.max(1);
            let total = rate * load.seconds;
            let permits = Arc::new(tokio::sync::Semaphore::new(load.concurrency.max(1)));
            let client = reqwest::Client::new();
            let begin = tokio::time::Instant::now();
            let mut late = 0u64;
            for n in 0..total {
                let due = begin + Duration::from_micros(n * 1_000_000 / rate);
                tokio::time::sleep_until(due).await;
                let permit = match permits.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        late += 1;
                        let Ok(p) = permits.clone().acquire_owned().await else {
                            break;
                        };
                        p
                    }
                };
                let (client, accepted_ids, failures, ingress, id) = (
                    client.clone(),
                    accepted_ids.clone(),
                    failures.clone(),
                    ingresses[n as usize % ingresses.len()].clone(),
                    format!("{prefix}r-{n}"),
                );
                tokio::spawn(async move {
                    let _permit = permit;
                    post_one(&client, &ingress, id, &accepted_ids, &failures).await;
                });
            }
            let _ = permits.acquire_many(load.concurrency.max(1) as u32).await;
            if late > 0 {
                println!(
                    "open loop: {late} sends waited for one of the {} in flight",
                    load.concurrency
                );
            }
        }
    }
    let ids = accepted_ids.lock().map(|a| a.clone()).unwrap_or_default();
    (ids, failures.load(Ordering::Relaxed), started.elapsed())
}

/// Waits (at most 120 s) until every accepted id reached every path at the sink; the measured
/// figures and the missing (path, id) pairs (at most 10).
async fn settle(
    sink: &Sink,
    paths: &[String],
    accepted_ids: &[String],
    send_time: Duration,
    started: Instant,
    cpu_started: f64,
) -> (Measured, Vec<(String, String)>) {
    let expected = accepted_ids.len() as u64 * paths.len() as u64;
    let distinct = || sink.pairs.lock().map(|p| p.len() as u64).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while distinct() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_time = started.elapsed();
    let cpu_secs = process_cpu_secs() - cpu_started;
    let mut latencies = sink.latencies.lock().map(|l| l.clone()).unwrap_or_default();
    latencies.sort_unstable();
    let missing = {
        let got = sink.pairs.lock().map(|p| p.clone()).unwrap_or_default();
        accepted_ids
            .iter()
            .flat_map(|id| paths.iter().map(move |p| (p.clone(), id.clone())))
            .filter(|pair| !got.contains(pair))
            .take(10)
            .collect()
    };
    (
        Measured {
            accepted: accepted_ids.len() as u64,
            send_secs: send_time.as_secs_f64(),
            delivered: sink.delivered.load(Ordering::Relaxed),
            total_secs: total_time.as_secs_f64(),
            latencies,
            cpu_secs,
        },
        missing,
    )
}

type HyperForwarder = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<axum::body::Bytes>,
>;

/// The pooled client the accept-and-forward floor forwards on.
#[derive(Clone)]
enum Forwarder {
    Reqwest(reqwest::Client),
    Hyper(Box<HyperForwarder>),
}

impl Forwarder {
    /// reqwest's client, or (`hyper`) hyper-util's, as evmesh delivers on.
    fn new(hyper: bool) -> Forwarder {
        if !hyper {
            return Forwarder::Reqwest(reqwest::Client::new());
        }
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        Forwarder::Hyper(Box::new(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(256)
                .build(connector),
        ))
    }

    /// POSTs `body` with `headers` to `target`, reading the answer; failures are ignored (the
    /// sink's count tells what arrived).
    async fn post(&self, target: &str, headers: HeaderMap, body: axum::body::Bytes) {
        match self {
            Forwarder::Reqwest(c) => {
                let _ = c.post(target).headers(headers).body(body).send().await;
            }
            Forwarder::Hyper(c) => {
                use http_body_util::BodyExt;
                let Ok(uri) = target.parse::<http::Uri>() else {
                    return;
                };
                let mut req = http::Request::new(http_body_util::Full::new(body));
                *req.method_mut() = http::Method::POST;
                *req.uri_mut() = uri;
                *req.headers_mut() = headers;
                if let Ok(resp) = c.request(req).await {
                    let _ = resp.into_body().collect().await;
                }
            }
        }
    }
}

/// The accept-and-forward floor: an axum handler that answers 202 and forwards each body (with
/// its `ce-*` headers and content type) to every one of `targets` on a pooled client (reqwest's,
/// or with `hyper` hyper-util's), without parsing anything; with `log`, each body is stored
/// there (synced) before the answer and the forwarding, otherwise nothing is stored.
fn forward_app(targets: Vec<String>, hyper: bool, log: Option<SyncedLog>) -> Router {
    let targets = Arc::new(targets);
    let client = Forwarder::new(hyper);
    Router::new().fallback(post(move |headers: HeaderMap, body: axum::body::Bytes| {
        let (client, targets, log) = (client.clone(), targets.clone(), log.clone());
        async move {
            if let Some(log) = log
                && !log.append(body.clone()).await
            {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            let mut fwd = HeaderMap::new();
            for (k, v) in &headers {
                let n = k.as_str();
                if n.starts_with("ce-") || n == "content-type" {
                    fwd.insert(k.clone(), v.clone());
                }
            }
            tokio::spawn(async move {
                for t in targets.iter() {
                    client.post(t, fwd.clone(), body.clone()).await;
                }
            });
            StatusCode::ACCEPTED
        }
    }))
}

/// A counting sink for runs across processes: every POST is answered 202 and counted;
/// `GET /count` answers the count so far.
fn counting_sink() -> Router {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    Router::new()
        .route(
            "/count",
            axum::routing::get(move || {
                let c = c.clone();
                async move { c.load(Ordering::Relaxed).to_string() }
            }),
        )
        .fallback(post(move || {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::Relaxed);
                StatusCode::ACCEPTED
            }
        }))
}

/// A body waiting to be stored, and whom to tell whether it was.
type Waiting = (axum::body::Bytes, tokio::sync::oneshot::Sender<bool>);

/// A group commit's batch: the first body waiting (blocking until one comes; `None` once no
/// sender is left) and every one queued behind it, written into `buf` length-prefixed.
fn next_batch(rx: &std::sync::mpsc::Receiver<Waiting>, buf: &mut Vec<u8>) -> Option<Vec<Waiting>> {
    let mut batch = vec![rx.recv().ok()?];
    batch.extend(rx.try_iter());
    buf.clear();
    for (body, _) in &batch {
        buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        buf.extend_from_slice(body);
    }
    Some(batch)
}

/// The synced floor's store (`--floor-synced`): a group-commit thread writes the bodies waiting
/// (length-prefixed) at the next position of a file of [`SyncedLog::BYTES`] zeroed ahead, wrapping
/// to its start at the end, `fdatasync`s it once per batch and then answers each append. A file
/// zeroed ahead makes each sync write the data's blocks only (no size, no block allocation), as
/// evmesh's segments do; it is never zeroed again (evmesh writes a zeroed spare per segment).
#[derive(Clone)]
struct SyncedLog {
    tx: std::sync::mpsc::Sender<Waiting>,
}

impl SyncedLog {
    const BYTES: u64 = 64 * 1024 * 1024;

    /// Creates `path` zeroed (synced) and starts the commit thread.
    fn create(path: &std::path::Path) -> std::io::Result<SyncedLog> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let zeros = vec![0u8; 1 << 20];
        for at in (0..Self::BYTES).step_by(zeros.len()) {
            file.write_all_at(&zeros, at)?;
        }
        file.sync_all()?;
        let (tx, rx) = std::sync::mpsc::channel::<Waiting>();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut at = 0u64;
            while let Some(batch) = next_batch(&rx, &mut buf) {
                if at + buf.len() as u64 > Self::BYTES {
                    at = 0;
                }
                let ok = buf.len() as u64 <= Self::BYTES
                    && file
                        .write_all_at(&buf, at)
                        .and_then(|_| file.sync_data())
                        .is_ok();
                at += buf.len() as u64;
                for (_, done) in batch {
                    let _ = done.send(ok);
                }
            }
        });
        Ok(SyncedLog { tx })
    }

    /// Stores `body`; true once it is synced.
    async fn append(&self, body: axum::body::Bytes) -> bool {
        let (done, stored) = tokio::sync::oneshot::channel();
        self.tx.send((body, done)).is_ok() && stored.await.unwrap_or(false)
    }
}

/// The minimal durable ingress (issue 7 item 9's bare log): every POST body is appended to one
/// file by a group-commit thread (write what is waiting, one fdatasync, then answer each 202).
fn bare_log_app(dir: &std::path::Path) -> std::io::Result<Router> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("bare.log"))?;
    let (tx, rx) = std::sync::mpsc::channel::<Waiting>();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        while let Some(batch) = next_batch(&rx, &mut buf) {
            let ok = file.write_all(&buf).and_then(|_| file.sync_data()).is_ok();
            for (_, done) in batch {
                let _ = done.send(ok);
            }
        }
    });
    Ok(Router::new().fallback(post(move |body: axum::body::Bytes| {
        let tx = tx.clone();
        async move {
            let (done, stored) = tokio::sync::oneshot::channel();
            if tx.send((body, done)).is_err() {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            match stored.await {
                Ok(true) => StatusCode::ACCEPTED,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            }
        }
    })))
}

/// The accept-and-forward floor running in this process: its handler and its own sink.
struct Floor {
    sink: Sink,
    ingress: String,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    /// With `--floor-synced`: the folder of its log, removed on drop.
    dir: Option<std::path::PathBuf>,
}

impl Floor {
    async fn start(paths: &[String], load: Load) -> Result<Floor, Box<dyn std::error::Error>> {
        let sink = Sink::start().await?;
        let targets = paths
            .iter()
            .map(|p| format!("{}{}", sink.url.trim_end_matches('/'), p))
            .collect();
        let (log, dir) = if load.floor_synced {
            let dir = std::env::temp_dir().join(format!("evmesh-floor-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            (Some(SyncedLog::create(&dir.join("floor.log"))?), Some(dir))
        } else {
            (None, None)
        };
        let app = forward_app(targets, load.floor_hyper, log);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let ingress = format!("http://{}/", listener.local_addr()?);
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Floor {
            sink,
            ingress,
            server,
            dir,
        })
    }

    /// Sends `load` through the floor and waits until the sink has every event.
    async fn measure(
        &self,
        paths: &[String],
        load: Load,
        round: usize,
    ) -> Result<Measured, Box<dyn std::error::Error>> {
        self.sink.reset();
        let started = Instant::now();
        let cpu_started = process_cpu_secs();
        let (ids, failed, send_time) =
            send_load(std::slice::from_ref(&self.ingress), load, round).await;
        let (measured, missing) =
            settle(&self.sink, paths, &ids, send_time, started, cpu_started).await;
        if failed > 0 || !missing.is_empty() {
            return Err(format!("floor: {failed} failures, missing {missing:?}").into());
        }
        Ok(measured)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The median of `v` (0 when empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs `instances` meshes from `yaml` (one data dir each), waits until they are idle (Kafka
/// consumer groups joined), posts events to `target` (a path on them, senders spread over the
/// instances) as `load` says, then waits until every accepted event reached every path of
/// `paths` at the sink; reports rates and latency (and, with `load.floor`, the
/// accept-and-forward floor measured first with the same load, and evmesh's share of it), exits
/// 1 on any loss or ingress failure.
async fn drive(
    sink: Sink,
    yaml: &str,
    target: &str,
    paths: Vec<String>,
    label: &str,
    load: Load,
    instances: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let floor = if load.floor {
        Some(Floor::start(&paths, load).await?)
    } else {
        None
    };
    let dir = std::env::temp_dir().join(format!("evmesh-loadtest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut meshes = Vec::new();
    for i in 0..instances.max(1) {
        let mut options = evmesh::Options {
            data_dir: dir.join(i.to_string()),
            kafka_bootstrap_servers: Some(kafka_bootstrap()),
            engine: load.engine,
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

    let rounds = if floor.is_some() {
        load.rounds.max(1)
    } else {
        1
    };
    // Per round: evmesh's share of the floor's deliveries/s, and of its CPU per delivery.
    let mut shares = Vec::new();
    for round in 0..rounds {
        let of_rounds = if rounds > 1 {
            format!(" (round {} of {rounds})", round + 1)
        } else {
            String::new()
        };
        let f = match &floor {
            Some(floor) => {
                let f = floor.measure(&paths, load, round).await?;
                let synced = if load.floor_synced { "synced " } else { "" };
                let floor_label = format!("{synced}accept-and-forward floor{of_rounds}");
                println!("{}", f.line(&floor_label, f.accepted * paths.len() as u64));
                Some(f)
            }
            None => None,
        };
        sink.reset();
        let started = Instant::now();
        let cpu_started = process_cpu_secs();
        let (accepted_ids, failed, send_time) = send_load(&ingresses, load, round).await;
        let expected = accepted_ids.len() as u64 * paths.len() as u64;
        let (measured, missing) = settle(
            &sink,
            &paths,
            &accepted_ids,
            send_time,
            started,
            cpu_started,
        )
        .await;
        println!(
            "{}",
            measured.line(&format!("{label}{of_rounds}"), expected)
        );
        if let Some(f) = &f {
            let share = measured.delivery_rate() / f.delivery_rate();
            let cpu_share = f.cpu_per_delivery_us() / measured.cpu_per_delivery_us();
            shares.push((share, cpu_share));
            println!(
                "share of the floor: deliveries/s {share:.2}; CPU per delivery, floor's / evmesh's {cpu_share:.2}; p99 {:.2} ms vs {:.2} ms, p99.9 {:.2} ms vs {:.2} ms",
                measured.pct(0.99),
                f.pct(0.99),
                measured.pct(0.999),
                f.pct(0.999),
            );
        }
        // Every accepted id must have reached every matching trigger; no ingress failure allowed.
        if failed > 0 || !missing.is_empty() {
            eprintln!(
                "FAILED: {failed} ingress failures; {} of {expected} (path, id) deliveries missing (first: {missing:?})",
                expected.saturating_sub(sink.pairs.lock().map(|p| p.len() as u64).unwrap_or(0))
            );
            std::process::exit(1);
        }
    }
    if shares.len() > 1 {
        let list = |i: usize| {
            shares
                .iter()
                .map(|s| format!("{:.2}", if i == 0 { s.0 } else { s.1 }))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "over {} alternating rounds: share of the floor's deliveries/s {} (median {:.2}); CPU share {} (median {:.2})",
            shares.len(),
            list(0),
            median(shares.iter().map(|s| s.0).collect()),
            list(1),
            median(shares.iter().map(|s| s.1).collect()),
        );
    }
    for m in &meshes {
        m.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
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
    println!(
        "order={order} keys={keys} concurrency={concurrency} sink_delay={sink_delay_ms}ms: accepted {expected} in {:.1}s = {:.0} ev/s; delivered {delivered} in {:.1}s = {:.0} deliveries/s; out of sequence for their key: {out_of_order}; latency ingress->sink p50 {:.2} ms, p99 {:.2} ms",
        send_time.as_secs_f64(),
        expected as f64 / send_time.as_secs_f64(),
        total_time.as_secs_f64(),
        delivered as f64 / total_time.as_secs_f64(),
        pct_ms(&lat, 0.50),
        pct_ms(&lat, 0.99),
    );
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The arguments after `--`: extra flags for `evmesh serve`.
fn serve_extra(args: &[String]) -> Vec<String> {
    args.iter()
        .position(|a| a == "--")
        .map(|i| args[i + 1..].to_vec())
        .unwrap_or_default()
}

/// RSS and peak RSS (VmRSS, VmHWM) of process `pid`, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// An address nothing listens on (bound, then closed).
fn closed_addr() -> Result<std::net::SocketAddr, Box<dyn std::error::Error>> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// The `evmesh serve` child process of a memory run.
struct Child {
    child: std::process::Child,
    url: String,
}

impl Child {
    /// Starts `evmesh serve` on `dir` and waits until `/readyz` answers 200; returns it and the
    /// time that took.
    async fn start(
        evmesh: &str,
        yaml: &std::path::Path,
        dir: &std::path::Path,
        addr: std::net::SocketAddr,
        extra: &[String],
    ) -> Result<(Child, Duration), Box<dyn std::error::Error>> {
        let started = Instant::now();
        let child = std::process::Command::new(evmesh)
            .arg("serve")
            .arg("-f")
            .arg(yaml)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir)
            .arg("--no-watch")
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
        let child = Child {
            child,
            url: format!("http://{addr}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", child.url)).send().await
                && r.status().as_u16() == 200
            {
                return Ok((child, started.elapsed()));
            }
            if Instant::now() > deadline {
                return Err("evmesh did not become ready within 120 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (graceful) or SIGKILL, then waits for the process to end.
    fn stop(mut self, kill: bool) -> Result<(), Box<dyn std::error::Error>> {
        let signal = if kill { "-KILL" } else { "-TERM" };
        std::process::Command::new("kill")
            .arg(signal)
            .arg(self.pid().to_string())
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

/// One binary-mode event of about 300 bytes, id `id`, type `ty`.
fn memory_event(id: u64, ty: &str) -> Result<evmesh::evmesh_broker::codec::Encoded, String> {
    let event = EventBuilderV10::new()
        .id(id.to_string())
        .source("loadtest")
        .ty(ty)
        .extension("sentus", now_us().to_string())
        .data(
            "application/json",
            format!(
                r#"{{"order":{{"id":{id},"total":99.5,"lines":[{{"sku":"A-1","qty":2}},{{"sku":"B-2","qty":1}}]}},"note":"memory benchmark event, padded to about three hundred bytes of data ........................................................"}}"#
            ),
        )
        .build()
        .map_err(|e| e.to_string())?;
    evmesh::evmesh_broker::codec::encode_binary(event).map_err(|e| e.to_string())
}

/// Posts `ids` to `ingress` from `concurrency` senders; answers other than 202 are retried after
/// a short pause (503 = backpressure). Returns the number of retried posts.
async fn post_all(
    ingress: &str,
    ids: std::ops::Range<u64>,
    concurrency: usize,
) -> Result<u64, Box<dyn std::error::Error>> {
    let next = Arc::new(AtomicU64::new(ids.start));
    let retried = Arc::new(AtomicU64::new(0));
    let end = ids.end;
    let mut senders = Vec::new();
    for _ in 0..concurrency {
        let (next, retried, ingress) = (next.clone(), retried.clone(), ingress.to_string());
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= end {
                    return Ok::<(), String>(());
                }
                let mut tries = 0;
                loop {
                    let enc = memory_event(id, "bench.match")?;
                    match client
                        .post(&ingress)
                        .headers(enc.headers)
                        .body(enc.body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().as_u16() == 202 => break,
                        other => {
                            tries += 1;
                            retried.fetch_add(1, Ordering::Relaxed);
                            if tries > 100 {
                                return Err(format!("event {id} not accepted: {other:?}"));
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        }));
    }
    for s in senders {
        s.await??;
    }
    Ok(retried.load(Ordering::Relaxed))
}

async fn backlog(
    evmesh: &str,
    events: u64,
    concurrency: usize,
    extra: Vec<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("evmesh-backlog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let dead = closed_addr()?;
    // The subscriber refuses connections; retries are far apart, so the whole backlog waits.
    let yaml = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: dead}}\nspec:\n  broker: default\n  subscriber: {{uri: \"http://{dead}/\"}}\n  delivery: {{retry: 1000, backoffPolicy: linear, backoffDelay: PT60S}}\n"
    );
    let yaml_path = dir.join("mesh.yaml");
    std::fs::write(&yaml_path, yaml)?;
    let data = dir.join("data");
    let addr = closed_addr()?;
    let (child, ready) = Child::start(evmesh, &yaml_path, &data, addr, &extra).await?;
    let (rss0, _) = rss_mib(child.pid());
    println!("started in {:.2} s, RSS {rss0:.1} MiB", ready.as_secs_f64());
    let ingress = format!("{}/default/default", child.url);
    let started = Instant::now();
    let pid = child.pid();
    let sampler = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let (rss, hwm) = rss_mib(pid);
            println!("  loading: RSS {rss:.1} MiB (peak {hwm:.1} MiB)");
        }
    });
    let retried = post_all(&ingress, 0..events, concurrency).await?;
    sampler.abort();
    let took = started.elapsed();
    let (rss, hwm) = rss_mib(child.pid());
    println!(
        "backlog: {events} events accepted in {:.1} s ({:.0} ev/s, {retried} posts retried after 503); RSS {rss:.1} MiB, peak {hwm:.1} MiB",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (rss, hwm) = rss_mib(child.pid());
    println!("backlog +10 s idle: RSS {rss:.1} MiB, peak {hwm:.1} MiB");
    let du = dir_size(&data);
    println!("data dir: {:.1} MiB", du as f64 / 1048576.0);
    let mut child = child;
    for kill in [false, true] {
        child.stop(kill)?;
        let how = if kill { "SIGKILL" } else { "SIGTERM" };
        let (c, ready) = Child::start(evmesh, &yaml_path, &data, addr, &extra).await?;
        // Ready means accepting: one more event must be answered 202.
        let t = Instant::now();
        post_all(&format!("{}/default/default", c.url), events..events + 1, 1).await?;
        let first = ready + t.elapsed();
        let (rss, hwm) = rss_mib(c.pid());
        println!(
            "restart after {how}: /readyz 200 after {:.2} s, first event accepted after {:.2} s; RSS {rss:.1} MiB, peak {hwm:.1} MiB",
            ready.as_secs_f64(),
            first.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (rss, hwm) = rss_mib(c.pid());
        println!("restart after {how} +10 s: RSS {rss:.1} MiB, peak {hwm:.1} MiB");
        child = c;
    }
    child.stop(false)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

struct SoakArgs {
    evmesh: String,
    rate: u64,
    seconds: u64,
    triggers: usize,
    retention: String,
    retention_interval: String,
    sample_seconds: u64,
    idle_seconds: u64,
    extra: Vec<String>,
}

async fn soak(a: SoakArgs) -> Result<(), Box<dyn std::error::Error>> {
    let total = a.rate * a.seconds;
    // Per trigger, how often each id arrived.
    let counts: Arc<Vec<Vec<std::sync::atomic::AtomicU8>>> = Arc::new(
        (0..a.triggers)
            .map(|_| {
                (0..total)
                    .map(|_| std::sync::atomic::AtomicU8::new(0))
                    .collect()
            })
            .collect(),
    );
    let c = counts.clone();
    // Each delivery's arrival (ms since the soak's start) and latency from its send (µs).
    let start_us = now_us();
    let latencies: Arc<std::sync::Mutex<Vec<(u64, u64)>>> = Arc::default();
    let l = latencies.clone();
    let sink = Router::new().fallback(post(move |uri: Uri, headers: HeaderMap| {
        let (c, l) = (c.clone(), l.clone());
        async move {
            let now = now_us();
            let t = uri.path().trim_start_matches("/t").parse::<usize>().ok();
            let id = headers
                .get("ce-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if let (Some(t), Some(id)) = (t, id)
                && let Some(slot) = c.get(t).and_then(|v| v.get(id))
            {
                slot.fetch_add(1, Ordering::Relaxed);
            }
            let sent = headers
                .get("ce-sentus")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let (Some(sent), Ok(mut l)) = (sent, l.lock()) {
                l.push((
                    now.saturating_sub(start_us) / 1000,
                    now.saturating_sub(sent),
                ));
            }
            StatusCode::ACCEPTED
        }
    }));
    let sink_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_url = format!("http://{}/", sink_listener.local_addr()?);
    tokio::spawn(async move { axum::serve(sink_listener, sink).await });

    let dir = std::env::temp_dir().join(format!("evmesh-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut yaml = String::from(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n",
    );
    for i in 0..a.triggers {
        yaml.push_str(&format!(
            "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t{i}}}\nspec:\n  broker: default\n  filter: {{attributes: {{type: bench.match}}}}\n  subscriber: {{uri: \"{sink_url}t{i}\"}}\n"
        ));
    }
    let yaml_path = dir.join("mesh.yaml");
    std::fs::write(&yaml_path, yaml)?;
    let mut extra = vec![
        "--retention".to_string(),
        a.retention.clone(),
        "--retention-interval".to_string(),
        a.retention_interval.clone(),
    ];
    extra.extend(a.extra.iter().cloned());
    let (child, _) = Child::start(
        &a.evmesh,
        &yaml_path,
        &dir.join("data"),
        closed_addr()?,
        &extra,
    )
    .await?;
    let pid = child.pid();
    let ingress = format!("{}/default/default", child.url);
    let (rss, _) = rss_mib(pid);
    println!(
        "soak: rate {} ev/s for {} s, {} triggers, retention {} (every {}); RSS at start {rss:.1} MiB",
        a.rate, a.seconds, a.triggers, a.retention, a.retention_interval
    );

    // Open loop: event n leaves at start + n / rate, whatever the answers to earlier ones.
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(512));
    let client = reqwest::Client::new();
    let started = tokio::time::Instant::now();
    let mut next_sample = a.sample_seconds;
    let mut samples = Vec::new();
    let mut sent = 0u64;
    while sent < total {
        let due = started + Duration::from_micros(sent * 1_000_000 / a.rate);
        tokio::time::sleep_until(due).await;
        let now = started.elapsed();
        while sent < total && Duration::from_micros(sent * 1_000_000 / a.rate) <= now {
            let id = sent;
            sent += 1;
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (client, ingress, accepted, failed) = (
                client.clone(),
                ingress.clone(),
                accepted.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let _permit = permit;
                let outcome = match memory_event(id, "bench.match") {
                    Ok(enc) => match client
                        .post(&ingress)
                        .headers(enc.headers)
                        .body(enc.body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().as_u16() == 202 => Ok(()),
                        Ok(r) => Err(format!("answered {}", r.status())),
                        Err(e) => Err(format!("request failed: {e:?}")),
                    },
                    Err(e) => Err(format!("could not encode: {e}")),
                };
                match outcome {
                    Ok(()) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(why) => {
                        // The first few say why (a 503 promises nothing; a transport error
                        // is the sender's or the connection's).
                        if failed.fetch_add(1, Ordering::Relaxed) < 10 {
                            eprintln!("event {id} not accepted: {why}");
                        }
                    }
                }
            });
        }
        if now.as_secs() >= next_sample {
            let (rss, hwm) = rss_mib(pid);
            println!("  t={next_sample:>5}s RSS {rss:.1} MiB (peak {hwm:.1} MiB)");
            samples.push((next_sample, rss));
            next_sample += a.sample_seconds;
        }
    }
    let _ = permits.acquire_many(512).await;
    let send_time = started.elapsed();
    let accepted_n = accepted.load(Ordering::Relaxed);
    let failed_n = failed.load(Ordering::Relaxed);
    println!(
        "sent {total} in {:.1} s ({:.0} ev/s), accepted {accepted_n}, not accepted {failed_n}",
        send_time.as_secs_f64(),
        total as f64 / send_time.as_secs_f64()
    );
    // Wait until each trigger has every id at least once (ids that were not accepted need not).
    let deadline = Instant::now() + Duration::from_secs(120);
    let delivered = |counts: &Vec<Vec<std::sync::atomic::AtomicU8>>| -> u64 {
        counts
            .iter()
            .flat_map(|v| v.iter())
            .filter(|c| c.load(Ordering::Relaxed) > 0)
            .count() as u64
    };
    while delivered(&counts) < accepted_n * a.triggers as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (rss, hwm) = rss_mib(pid);
    println!("load stopped, delivery complete: RSS {rss:.1} MiB (peak {hwm:.1} MiB)");
    print_soak_latency(
        &latencies
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default(),
        a.sample_seconds,
    );
    tokio::time::sleep(Duration::from_secs(a.idle_seconds)).await;
    let (rss, hwm) = rss_mib(pid);
    println!(
        "+{} s idle: RSS {rss:.1} MiB (peak {hwm:.1} MiB)",
        a.idle_seconds
    );
    // Growth after warm-up: the last sample against the one at a fifth of the run (at least the
    // second sample).
    if samples.len() >= 3 {
        let warm = samples[(samples.len() / 5).max(1)];
        let last = samples[samples.len() - 1];
        println!(
            "growth after warm-up: {:.1} MiB at t={}s -> {:.1} MiB at t={}s ({:+.1}%)",
            warm.1,
            warm.0,
            last.1,
            last.0,
            (last.1 - warm.1) / warm.1 * 100.0
        );
    }
    child.stop(false)?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut once = 0u64;
    let mut dup = 0u64;
    let mut missing = 0u64;
    for v in counts.iter() {
        for c in v.iter() {
            match c.load(Ordering::Relaxed) {
                0 => missing += 1,
                1 => once += 1,
                _ => dup += 1,
            }
        }
    }
    // Ids never accepted are missing by design; everything accepted must be there once.
    let lost = (accepted_n * a.triggers as u64).saturating_sub(once + dup);
    println!(
        "deliveries: {once} exactly once, {dup} more than once, {lost} accepted but missing ({missing} slots empty, {failed_n} events not accepted)"
    );
    if dup > 0 || lost > 0 || failed_n > 0 {
        eprintln!("FAILED: not every event was accepted and delivered exactly once");
        std::process::exit(1);
    }
    println!("ok: every event accepted and delivered exactly once to each trigger");
    Ok(())
}

/// Prints the latency ingress → sink of a soak's deliveries (`(arrival ms, latency µs)`): over
/// the whole run, and per window of `window_secs` by arrival (p99, p99.9, max, and how many
/// took over 5 ms), so that slow phases can be told from a long tail throughout.
fn print_soak_latency(deliveries: &[(u64, u64)], window_secs: u64) {
    let mut all: Vec<u64> = deliveries.iter().map(|d| d.1).collect();
    all.sort_unstable();
    let over = |v: &[u64]| v.iter().filter(|l| **l > 5_000).count();
    println!(
        "latency ingress->sink over {} deliveries: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, {} over 5 ms",
        all.len(),
        pct_ms(&all, 0.5),
        pct_ms(&all, 0.99),
        pct_ms(&all, 0.999),
        pct_ms(&all, 1.0),
        over(&all)
    );
    let window_ms = window_secs.max(1) * 1000;
    let mut windows: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for (at, l) in deliveries {
        windows.entry(at / window_ms).or_default().push(*l);
    }
    for (w, mut v) in windows {
        v.sort_unstable();
        println!(
            "  {:>5}s..: {:>6} deliveries, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, {} over 5 ms",
            w * window_secs.max(1),
            v.len(),
            pct_ms(&v, 0.99),
            pct_ms(&v, 0.999),
            pct_ms(&v, 1.0),
            over(&v)
        );
    }
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
