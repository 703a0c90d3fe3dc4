//! Prometheus metrics on `GET /metrics`: Knative's eventing names and labels where they exist,
//! and evmesh's own.
//!
//! Knative (OpenCensus-era names, reference §5.1), with `container_name` `ingress` or `filter`:
//! - `event_count` (counter) and `event_dispatch_latencies` (histogram, ms): labels
//!   `namespace_name`, `broker_name`, `trigger_name` (filter), `event_type` (ingress),
//!   `response_code`, `response_code_class`. The filter's count is one per delivery attempt.
//!   `event_type` is what clients send: a broker labels at most [`MAX_EVENT_TYPES`] distinct
//!   types, later new ones are counted as [`OTHER_EVENT_TYPES`] (each label set is a series
//!   kept for the process's life, so a client must not be able to grow them without end).
//!
//! evmesh's own:
//! - `evmesh_append_latency_seconds` (histogram): stamping and durable append of one event.
//! - `evmesh_fsync_batch_size` (histogram): events per group commit.
//! - `evmesh_pending_retries` (gauge): deliveries of a trigger waiting for their retry.
//! - `evmesh_dead_lettered_total`, `evmesh_dropped_total` (counters, per trigger).
//! - `evmesh_discarded_total` (counter, per trigger): records of a log outside the embedded
//!   store (a Kafka topic) that are not events, discarded as Knative's Kafka dispatcher discards
//!   them (`kn.eventing.kafka.discarded_events`).
//! - `evmesh_reply_loops_stopped_total` (counter, per broker): replies refused for TTL.
//! - `evmesh_tail_bytes` (gauge, per broker or channel): events ingress handed to the router in
//!   memory and the router has not taken yet (`ServiceOptions::tail_bytes`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(2);

const MS_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Installs the process-wide Prometheus recorder (once). `None` when another recorder was
/// installed first (metrics then go to that one and `/metrics` is empty).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("event_dispatch_latencies".into()),
                    MS_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("evmesh_append_latency_seconds".into()),
                        SECONDS_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("evmesh_fsync_batch_size".into()),
                        BATCH_BUCKETS,
                    )
                });
            match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(h) => {
                    describe();
                    // Histogram samples collect until upkeep drains them: drain every few
                    // seconds whether or not anyone scrapes, so memory stays bounded.
                    let upkeep = h.clone();
                    let spawned = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(UPKEEP_EVERY);
                                upkeep.run_upkeep();
                            }
                        });
                    if let Err(e) = spawned {
                        tracing::warn!("metrics upkeep thread not started: {e}");
                    }
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!("Prometheus metrics not available: {e}");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    metrics::describe_counter!(
        "event_count",
        "Events received (ingress) or delivery attempts (filter), by response code"
    );
    metrics::describe_histogram!(
        "event_dispatch_latencies",
        metrics::Unit::Milliseconds,
        "Time to answer an ingress request, or of one delivery attempt"
    );
    metrics::describe_histogram!(
        "evmesh_append_latency_seconds",
        metrics::Unit::Seconds,
        "Stamping and durable append of one event"
    );
    metrics::describe_histogram!(
        "evmesh_fsync_batch_size",
        "Events written by one group commit"
    );
    metrics::describe_gauge!(
        "evmesh_pending_retries",
        "Deliveries waiting for their retry, per trigger"
    );
    metrics::describe_gauge!(
        "evmesh_route_queue_bytes",
        metrics::Unit::Bytes,
        "Approximate bytes of events the router holds for a trigger (bounded by its budget; a trigger behind it reads the log)"
    );
    metrics::describe_gauge!(
        "evmesh_tail_bytes",
        metrics::Unit::Bytes,
        "Approximate bytes of events ingress stored and handed to a broker's or channel's router in memory, not taken yet (bounded by its budget; what does not fit the router reads from the log)"
    );
    metrics::describe_counter!(
        "evmesh_dead_lettered_total",
        "Events delivered to a dead-letter sink"
    );
    metrics::describe_counter!(
        "evmesh_dropped_total",
        "Events given up on (no dead-letter sink, or it failed too)"
    );
    metrics::describe_counter!(
        "evmesh_discarded_total",
        "Records of a Kafka topic that are not CloudEvents, discarded (not delivered)"
    );
    metrics::describe_counter!(
        "evmesh_reply_loops_stopped_total",
        "Replies refused because knativebrokerttl ran out"
    );
}

/// The `/metrics` route, for merging into the server's router.
pub fn metrics_routes() -> Router {
    install();
    Router::new().route("/metrics", get(render))
}

async fn render() -> impl IntoResponse {
    let body = match install() {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

fn code_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The most distinct `event_type` label values the ingress metrics of one broker get.
pub const MAX_EVENT_TYPES: usize = 1000;
/// The `event_type` label of a broker's events whose type came after [`MAX_EVENT_TYPES`] others.
pub const OTHER_EVENT_TYPES: &str = "(other)";

/// Handles of one ingress label set (event type known) by response code.
type ByCode = Vec<(u16, metrics::Counter, metrics::Histogram)>;

/// The ingress metrics of one broker, kept with it: the append latency, and Knative's
/// `event_count` / `event_dispatch_latencies` by event type and response code. Handles are made
/// once per label set (building a metric's key allocates its labels and looks it up in the
/// registry, which cost more per event than the count itself); at most [`MAX_EVENT_TYPES`]
/// event types get a label of their own.
pub(crate) struct IngressMetrics {
    namespace: String,
    broker: String,
    append: metrics::Histogram,
    /// Event type label → handles by code.
    handles: RwLock<HashMap<String, ByCode>>,
}

impl IngressMetrics {
    /// The metrics of broker `namespace/broker` (installs the recorder first).
    pub(crate) fn new(namespace: &str, broker: &str) -> IngressMetrics {
        install();
        IngressMetrics {
            namespace: namespace.to_string(),
            broker: broker.to_string(),
            append: metrics::histogram!(
                "evmesh_append_latency_seconds",
                "namespace_name" => namespace.to_string(),
                "broker_name" => broker.to_string()
            ),
            handles: RwLock::default(),
        }
    }

    /// Records the append latency of one accepted event.
    pub(crate) fn appended(&self, elapsed: Duration) {
        self.append.record(elapsed.as_secs_f64());
    }

    /// Records one ingress request (`event_type` `None`: it was not a valid event).
    pub(crate) fn request(&self, event_type: Option<&str>, code: u16, elapsed: Duration) {
        let event_type = event_type.unwrap_or("");
        let millis = elapsed.as_secs_f64() * 1000.0;
        {
            // Recorded under the read lock: no handle cloned (and dropped) per request.
            let handles = self.handles.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, counter, histogram)) = handles
                .get(event_type)
                .and_then(|by_code| by_code.iter().find(|(c, ..)| *c == code))
            {
                counter.increment(1);
                histogram.record(millis);
                return;
            }
        }
        let (counter, histogram) = self.make(event_type, code);
        counter.increment(1);
        histogram.record(millis);
    }

    /// Makes (and keeps) the handles of a label set not seen yet.
    fn make(&self, event_type: &str, code: u16) -> (metrics::Counter, metrics::Histogram) {
        let mut handles = self.handles.write().unwrap_or_else(|e| e.into_inner());
        let label = if handles.contains_key(event_type)
            || handles.len() < MAX_EVENT_TYPES
            || event_type == OTHER_EVENT_TYPES
            || event_type.is_empty()
        {
            event_type
        } else {
            OTHER_EVENT_TYPES
        };
        let by_code = handles.entry(label.to_string()).or_default();
        if let Some((_, counter, histogram)) = by_code.iter().find(|(c, ..)| *c == code) {
            return (counter.clone(), histogram.clone());
        }
        let labels = [
            ("container_name", "ingress".to_string()),
            ("namespace_name", self.namespace.clone()),
            ("broker_name", self.broker.clone()),
            ("event_type", label.to_string()),
            ("response_code", code.to_string()),
            ("response_code_class", code_class(code).to_string()),
        ];
        let made = (
            metrics::counter!("event_count", &labels),
            metrics::histogram!("event_dispatch_latencies", &labels),
        );
        by_code.push((code, made.0.clone(), made.1.clone()));
        made
    }
}

/// The gauge of a broker's or channel's in-memory hand-off from ingress to its router
/// (`noun`: `broker` or `channel`).
pub(crate) fn tail_gauge(noun: &str, namespace: &str, name: &str) -> metrics::Gauge {
    install();
    metrics::gauge!(
        "evmesh_tail_bytes",
        "namespace_name" => namespace.to_string(),
        format!("{noun}_name") => name.to_string()
    )
}

/// Counts a reply refused because its TTL ran out.
pub fn reply_loop_stopped(namespace: &str, broker: &str) {
    metrics::counter!(
        "evmesh_reply_loops_stopped_total",
        "namespace_name" => namespace.to_string(),
        "broker_name" => broker.to_string()
    )
    .increment(1);
}

/// The metrics and failure log of one trigger's deliveries (labels, handles, rate limit).
#[derive(Debug)]
pub struct DeliveryMetrics {
    trigger: String,
    failing: AtomicBool,
    limiter: Mutex<LogLimiter>,
    labels: Vec<(&'static str, String)>,
    dead_lettered: metrics::Counter,
    dropped: metrics::Counter,
    discarded: metrics::Counter,
    pending_retries: metrics::Gauge,
    queued_bytes: metrics::Gauge,
    /// The attempt metrics' handles by response code (`None`: transport failure).
    attempts: RwLock<Vec<AttemptHandles>>,
}

type AttemptHandles = (Option<u16>, metrics::Counter, metrics::Histogram);

impl DeliveryMetrics {
    /// Metrics labelled with a trigger (installs the recorder first).
    pub fn new(namespace: &str, broker: &str, trigger: &str) -> DeliveryMetrics {
        Self::labelled(
            format!("{namespace}/{trigger}"),
            vec![
                ("namespace_name", namespace.to_string()),
                ("broker_name", broker.to_string()),
                ("trigger_name", trigger.to_string()),
            ],
        )
    }

    /// Metrics labelled with a channel subscription (installs the recorder first).
    pub fn for_subscription(namespace: &str, channel: &str, name: &str) -> DeliveryMetrics {
        Self::labelled(
            format!("{namespace}/{name}"),
            vec![
                ("namespace_name", namespace.to_string()),
                ("channel_name", channel.to_string()),
                ("subscription_name", name.to_string()),
            ],
        )
    }

    fn labelled(trigger: String, labels: Vec<(&'static str, String)>) -> DeliveryMetrics {
        install();
        DeliveryMetrics {
            trigger,
            failing: AtomicBool::new(false),
            limiter: Mutex::new(LogLimiter::default()),
            dead_lettered: metrics::counter!("evmesh_dead_lettered_total", &labels),
            dropped: metrics::counter!("evmesh_dropped_total", &labels),
            discarded: metrics::counter!("evmesh_discarded_total", &labels),
            pending_retries: metrics::gauge!("evmesh_pending_retries", &labels),
            queued_bytes: metrics::gauge!("evmesh_route_queue_bytes", &labels),
            attempts: RwLock::default(),
            labels,
        }
    }

    pub(crate) fn dead_lettered(&self) {
        self.dead_lettered.increment(1);
    }

    pub(crate) fn dropped(&self) {
        self.dropped.increment(1);
    }

    pub(crate) fn discarded(&self, n: u64) {
        self.discarded.increment(n);
    }

    pub(crate) fn pending_retries(&self, n: usize) {
        self.pending_retries.set(n as f64);
    }

    pub(crate) fn queued_bytes(&self, n: usize) {
        self.queued_bytes.set(n as f64);
    }

    /// One delivery attempt: `code` is the HTTP status, `None` for a transport failure.
    pub(crate) fn attempt(&self, code: Option<u16>, elapsed: Duration) {
        let known = self
            .attempts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(c, ..)| *c == code)
            .map(|(_, counter, histogram)| (counter.clone(), histogram.clone()));
        let (counter, histogram) = known.unwrap_or_else(|| {
            let (text, class) = match code {
                Some(c) => (c.to_string(), code_class(c).to_string()),
                None => ("0".to_string(), "transport".to_string()),
            };
            let mut labels = self.labels.clone();
            labels.push(("container_name", "filter".to_string()));
            labels.push(("response_code", text));
            labels.push(("response_code_class", class));
            let made = (
                metrics::counter!("event_count", &labels),
                metrics::histogram!("event_dispatch_latencies", &labels),
            );
            self.attempts
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push((code, made.0.clone(), made.1.clone()));
            made
        });
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64() * 1000.0);
    }
}

/// Failure log lines a trigger writes per [`LOG_WINDOW`] at most; the rest are counted and
/// reported with the next line that is written.
pub const LOG_LINES_PER_WINDOW: u32 = 10;
/// The rate-limit window of failure log lines.
pub const LOG_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct LogLimiter {
    window_start: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// Whether a line may be written now, and how many were suppressed before it.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= LOG_WINDOW)
        {
            self.window_start = Some(now);
            self.written = 0;
        }
        if self.written >= LOG_LINES_PER_WINDOW {
            self.suppressed += 1;
            return None;
        }
        self.written += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl DeliveryMetrics {
    fn admit(&self) -> Option<u64> {
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now())
    }

    /// Notes an attempt's outcome: the first failure after a success (or since start) is logged
    /// at WARN with the URL and reason.
    pub(crate) fn outcome(&self, outcome: &crate::delivery::Outcome) {
        match outcome {
            crate::delivery::Outcome::Delivered { .. } => {
                self.failing.store(false, Ordering::Relaxed);
            }
            crate::delivery::Outcome::Failed(f) if f.local => {
                if let Some(suppressed) = self.admit() {
                    tracing::warn!(
                        trigger = %self.trigger, url = %f.dest, suppressed,
                        "delivery postponed: {}; the event waits and is retried without spending its retry budget", f.reason
                    );
                }
            }
            crate::delivery::Outcome::Failed(f) => {
                if !self.failing.swap(true, Ordering::Relaxed)
                    && let Some(suppressed) = self.admit()
                {
                    tracing::warn!(
                        trigger = %self.trigger, url = %f.dest, status = ?f.status, suppressed,
                        "delivery failing: {}", f.reason
                    );
                }
            }
        }
    }

    /// Logs a dead-lettered event (rate-limited).
    pub(crate) fn log_dead_lettered(
        &self,
        event: &str,
        failure: Option<&crate::delivery::Failure>,
        dead_letter_sink: &str,
    ) {
        if let Some(suppressed) = self.admit() {
            tracing::warn!(
                trigger = %self.trigger, event, url = failure.map(|f| f.dest.as_str()).unwrap_or(""),
                status = ?failure.and_then(|f| f.status), dead_letter_sink, suppressed,
                "event dead-lettered: {}", failure.map(|f| f.reason.as_str()).unwrap_or("delivery failed")
            );
        }
    }

    /// Logs a dropped event (rate-limited).
    pub(crate) fn log_dropped(&self, event: &str, failure: &crate::delivery::Failure) {
        if let Some(suppressed) = self.admit() {
            tracing::warn!(
                trigger = %self.trigger, event, url = %failure.dest, status = ?failure.status, suppressed,
                "event dropped (no dead-letter sink, or it failed too): {}", failure.reason
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_writes_a_bounded_number_of_lines_per_window_and_counts_the_rest() {
        let mut l = LogLimiter::default();
        let t0 = Instant::now();
        for _ in 0..LOG_LINES_PER_WINDOW {
            assert_eq!(l.admit(t0), Some(0));
        }
        assert_eq!(l.admit(t0), None);
        assert_eq!(l.admit(t0 + Duration::from_secs(1)), None);
        assert_eq!(
            l.admit(t0 + LOG_WINDOW),
            Some(2),
            "reports what it suppressed"
        );
        assert_eq!(l.admit(t0 + LOG_WINDOW), Some(0));
    }
}
