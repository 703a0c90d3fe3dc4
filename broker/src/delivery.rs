//! The one delivery engine: one HTTP attempt ([`DeliveryEngine::attempt`]), its classification
//! per Knative's data-plane contract, and the retry / backoff / dead-letter state machine
//! ([`Progress::next`]). Triggers use it today; subscriptions and sources will use it too.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use cloudevents::AttributesReader;
use evmesh_config::{Delivery, DeliveryFormat};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::codec;
use crate::http_client::{HttpClient, SendError};
use crate::record::EventRecord;
use crate::tls::{self, TlsError};
use rustls_pki_types::CertificateDer;

/// Extension set on dead-lettered events: the URL that failed.
pub const ERROR_DEST: &str = "knativeerrordest";
/// Extension set on dead-lettered events: the HTTP status of the last attempt.
pub const ERROR_CODE: &str = "knativeerrorcode";
/// Extension set on dead-lettered events: base64 of the last response body (≤ 1024 characters).
pub const ERROR_DATA: &str = "knativeerrordata";
/// Default per-attempt timeout when `delivery.timeout` is unset (the Kafka broker's: 10 minutes).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Where and how one stream of events is delivered (a trigger's or a subscription's resolved
/// delivery).
#[derive(Clone, Debug)]
pub struct Plan {
    /// The subscriber URL; `None` forwards every event to the reply target as it is (a Knative
    /// Subscription without a subscriber: channel → reply).
    pub subscriber: Option<Url>,
    /// Where a subscriber's reply goes.
    pub reply: ReplyTo,
    /// Resolved dead-letter sink.
    pub dead_letter: Option<Url>,
    /// Retry/backoff/timeout/format options.
    pub delivery: Delivery,
    /// Sent as `Kn-Namespace`.
    pub namespace: String,
    /// The subscriber Destination's `CACerts` (PEM), trusted besides the web PKI roots.
    pub subscriber_ca_certs: Option<Arc<str>>,
    /// The dead-letter sink Destination's `CACerts` (PEM).
    pub dead_letter_ca_certs: Option<Arc<str>>,
    /// Where each attempt is counted (Prometheus `event_count`, `event_dispatch_latencies`).
    pub metrics: Option<Arc<crate::telemetry::DeliveryMetrics>>,
}

/// Where the reply of a subscriber goes.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ReplyTo {
    /// Back into the broker the trigger belongs to (with the original's TTL, so loops end).
    Home,
    /// To a Destination (a Subscription's `reply`), as one more step of the same delivery: if it
    /// fails, the whole delivery is tried again.
    Url {
        /// The resolved reply URL.
        url: Url,
        /// The reply Destination's `CACerts`.
        ca_certs: Option<Arc<str>>,
    },
    /// Replies are dropped (a Subscription without `reply`).
    #[default]
    Discard,
}

/// A boxed future a [`LocalSink`] answers with.
pub type LocalFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// One delivery to a [`LocalSink`]: what an HTTP attempt would carry, without the encoding.
#[derive(Clone, Debug)]
pub struct LocalRequest {
    /// The URL the delivery is addressed to (for `knativeerrordest` and status).
    pub url: Url,
    /// The event, as stored (never re-encoded).
    pub event: EventRecord,
    /// Whether a reply is wanted (`Prefer: reply`): a subscriber attempt, not a dead letter or
    /// a reply hop.
    pub want_reply: bool,
    /// The delivery's per-attempt timeout (`delivery.timeout`), `None` for the default.
    pub timeout: Option<Duration>,
}

/// An evmesh address served in this process (a broker's or a channel's ingress, an embedder's
/// in-process subscriber): deliveries to its URL are handed over in memory, never over loopback
/// HTTP, and never re-encoded.
pub trait LocalSink: Send + Sync {
    /// Accepts one event as the address's ingress would; resolves once it is durably stored.
    fn accept(&self, event: EventRecord) -> LocalFuture<'_, Result<(), LocalRefusal>>;

    /// One delivery attempt, answered as a subscriber answers: delivered (with a reply event or
    /// not) or failed (with a status, a body and whether to retry). The default hands the event
    /// to [`accept`](Self::accept): accepted is delivered without a reply, a refusal fails with
    /// its status (retried per Knative's contract).
    fn deliver(&self, request: LocalRequest) -> LocalFuture<'_, Outcome> {
        Box::pin(async move {
            match self.accept(request.event).await {
                Ok(()) => Outcome::Delivered { reply: None },
                // 503: this process's own store is busy or failing (or shutting down): evmesh's
                // own trouble, waited out without spending the retry budget.
                Err(r) if r.status == 503 => Outcome::Failed(Failure {
                    dest: redact(&request.url),
                    status: Some(r.status),
                    body: Vec::new(),
                    retryable: true,
                    retry_after: None,
                    reason: r.reason,
                    local: true,
                }),
                Err(r) => failed(
                    &request.url,
                    Some(r.status),
                    vec![],
                    is_retryable(r.status),
                    r.reason,
                ),
            }
        })
    }

    /// Why the address cannot take deliveries now (an in-process subscriber nobody listens on);
    /// `None` when it can. Deliveries to it wait instead of failing; status shows the reason.
    fn not_ready(&self) -> Option<String> {
        None
    }
}

/// Why a [`LocalSink`] refused an event: the status its HTTP ingress would have answered.
#[derive(Clone, Debug)]
pub struct LocalRefusal {
    /// The HTTP status ingress would answer (404 unknown, 400 loop, 503 store/shutdown).
    pub status: u16,
    /// Human-readable reason.
    pub reason: String,
}

/// Finds the sink for the rest of a path under a prefix (see [`LocalSinks::insert_prefix`]).
pub type LocalLookup = Arc<dyn Fn(&str) -> Option<Arc<dyn LocalSink>> + Send + Sync>;

/// Local sinks by URL key (see `local_key`), each with its URL's port.
type SinksByKey = HashMap<String, (u16, Arc<dyn LocalSink>)>;
/// Prefix lookups by the prefix's key, each with its port.
type Prefixes = Vec<(String, u16, LocalLookup)>;

/// The evmesh addresses served in this process, by URL (see [`LocalSink`]).
#[derive(Default)]
pub struct LocalSinks {
    sinks: std::sync::RwLock<SinksByKey>,
    prefixes: std::sync::RwLock<Prefixes>,
    /// The ports of every URL and prefix above, sorted and without repeats: a URL on another
    /// port (every delivery to a remote subscriber, as a rule) is not local, found without
    /// building its key. Changed only with the two lists, under its own write lock first.
    ports: std::sync::RwLock<Vec<u16>>,
}

impl std::fmt::Debug for LocalSinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.sinks.read().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("LocalSinks").field("sinks", &n).finish()
    }
}

/// The key of a URL among local sinks: scheme, host, port and path without a trailing `/`.
fn local_key(url: &Url) -> String {
    format!(
        "{}://{}:{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        local_port(url),
        url.path().trim_end_matches('/')
    )
}

/// The port of a URL in its local key (the scheme's default when it names none).
fn local_port(url: &Url) -> u16 {
    url.port_or_known_default().unwrap_or(0)
}

impl LocalSinks {
    /// Serves `url` in process through `sink` (replacing what served it before).
    pub fn insert(&self, url: &Url, sink: Arc<dyn LocalSink>) {
        self.change(|sinks, _| {
            sinks.insert(local_key(url), (local_port(url), sink));
        });
    }
    /// Stops serving `url` in process.
    pub fn remove(&self, url: &Url) {
        self.change(|sinks, _| {
            sinks.remove(&local_key(url));
        });
    }
    /// Serves every URL under `prefix` in process: `lookup` gets the rest of the path (without
    /// the `/` after the prefix) and names the sink, or `None` (not local). Replaces an earlier
    /// lookup of the same prefix.
    pub fn insert_prefix(&self, prefix: &Url, lookup: LocalLookup) {
        self.change(|_, prefixes| {
            let key = local_key(prefix);
            prefixes.retain(|(k, _, _)| *k != key);
            prefixes.push((key, local_port(prefix), lookup));
        });
    }
    /// Applies `f` to the URLs and prefixes and notes their ports again. The ports' lock is
    /// taken first and held throughout, so changes come one at a time; [`LocalSinks::get`] never
    /// holds it while it takes another.
    fn change(&self, f: impl FnOnce(&mut SinksByKey, &mut Prefixes)) {
        let Ok(mut ports) = self.ports.write() else {
            return;
        };
        let (Ok(mut sinks), Ok(mut prefixes)) = (self.sinks.write(), self.prefixes.write()) else {
            return;
        };
        f(&mut sinks, &mut prefixes);
        let mut all: Vec<u16> = sinks
            .values()
            .map(|(port, _)| *port)
            .chain(prefixes.iter().map(|(_, port, _)| *port))
            .collect();
        all.sort_unstable();
        all.dedup();
        *ports = all;
    }
    /// The sink serving `url`, if any (a URL with a query string is never local).
    pub fn get(&self, url: &Url) -> Option<Arc<dyn LocalSink>> {
        if url.query().is_some() {
            return None;
        }
        let port = local_port(url);
        if self.ports.read().ok()?.binary_search(&port).is_err() {
            return None;
        }
        let key = local_key(url);
        if let Some((_, sink)) = self.sinks.read().ok()?.get(&key) {
            return Some(sink.clone());
        }
        let prefixes = self.prefixes.read().ok()?;
        prefixes.iter().find_map(|(p, _, lookup)| {
            let rest = key.strip_prefix(p.as_str())?.strip_prefix('/')?;
            lookup(rest)
        })
    }
}

/// Result of one HTTP attempt.
#[derive(Debug)]
pub enum Outcome {
    /// 2xx; with the reply event when the response carried one (never for 202).
    Delivered {
        /// The reply CloudEvent.
        reply: Option<Box<EventRecord>>,
    },
    /// Anything else.
    Failed(Failure),
}

/// A failed attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    /// The URL that failed.
    pub dest: String,
    /// The HTTP status, `None` when there was no response (connection error, timeout).
    pub status: Option<u16>,
    /// The response body (possibly truncated).
    #[serde(with = "b64")]
    pub body: Vec<u8>,
    /// Whether Knative's contract says to retry.
    pub retryable: bool,
    /// The `Retry-After` the subscriber asked for (429/503 only).
    #[serde(skip)]
    pub retry_after: Option<Duration>,
    /// Human-readable reason.
    pub reason: String,
    /// The attempt failed for a reason of evmesh's own (out of file descriptors or memory, a
    /// local I/O error), not the subscriber's: it waits and is retried without spending the
    /// retry budget.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};
    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// Whether Knative retries a response with this status: 404, 408, 409, 429 and 5xx.
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 404 | 408 | 409 | 429) || (500..600).contains(&status)
}

/// Which leg of delivery an event is on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Phase {
    /// Delivering to the subscriber.
    Subscriber,
    /// Delivering to the dead-letter sink.
    DeadLetter,
}

/// Delivery progress of one event: persisted with pending retries so a restart resumes them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Progress {
    /// Current leg.
    pub phase: Phase,
    /// Failed attempts so far on this leg.
    pub failures: u32,
    /// The last subscriber failure (what the dead-lettered event reports).
    pub last_failure: Option<Failure>,
    /// Local failures in a row (they set the wait before the next attempt, not the budget).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub local_waits: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            phase: Phase::Subscriber,
            failures: 0,
            last_failure: None,
            local_waits: 0,
        }
    }
}

/// First wait after a local failure; it doubles per local failure in a row up to
/// [`MAX_LOCAL_WAIT`].
pub const FIRST_LOCAL_WAIT: Duration = Duration::from_millis(50);
/// Longest wait after a local failure.
pub const MAX_LOCAL_WAIT: Duration = Duration::from_secs(5);

/// What to do after an attempt.
#[derive(Debug)]
pub enum Next {
    /// Delivery is complete (possibly with a reply to route).
    Done {
        /// The reply, if any.
        reply: Option<Box<EventRecord>>,
    },
    /// Try again (same leg, or the first dead-letter attempt) after this wait.
    Retry(Duration),
    /// Delivery failed for good and there is nowhere else to send the event.
    Dropped(Failure),
}

impl Progress {
    /// Applies one attempt's outcome. `plan` gives the retry budget, backoff and DLS.
    ///
    /// A [local](Failure::local) failure spends nothing: the same leg is tried again after a
    /// wait that grows from [`FIRST_LOCAL_WAIT`] to [`MAX_LOCAL_WAIT`], as often as it takes.
    pub fn next(&mut self, plan: &Plan, outcome: Outcome) -> Next {
        if let Outcome::Failed(f) = &outcome
            && f.local
        {
            let exp = self.local_waits.min(16);
            self.local_waits = self.local_waits.saturating_add(1);
            return Next::Retry(
                FIRST_LOCAL_WAIT
                    .saturating_mul(1 << exp)
                    .min(MAX_LOCAL_WAIT),
            );
        }
        self.local_waits = 0;
        let failure = match outcome {
            Outcome::Delivered { reply } => {
                // A dead-letter sink's reply is not routed anywhere.
                let reply = if self.phase == Phase::Subscriber {
                    reply
                } else {
                    None
                };
                return Next::Done { reply };
            }
            Outcome::Failed(f) => f,
        };
        self.failures += 1;
        if failure.retryable && self.failures <= plan.delivery.retry {
            let mut wait = plan.delivery.backoff(self.failures);
            if let (Some(ra), Some(max)) = (failure.retry_after, plan.delivery.retry_after_max)
                && matches!(failure.status, Some(429) | Some(503))
            {
                wait = wait.max(ra.min(max));
            }
            if self.phase == Phase::Subscriber {
                self.last_failure = Some(failure);
            }
            return Next::Retry(wait);
        }
        match self.phase {
            Phase::Subscriber if plan.dead_letter.is_some() => {
                self.phase = Phase::DeadLetter;
                self.failures = 0;
                self.last_failure = Some(failure);
                Next::Retry(Duration::ZERO)
            }
            _ => Next::Dropped(failure),
        }
    }

    /// Where the next attempt goes (`None`: no subscriber, the event goes to the reply target).
    pub fn url<'a>(&self, plan: &'a Plan) -> Option<&'a Url> {
        match (self.phase, &plan.dead_letter) {
            (Phase::DeadLetter, Some(dls)) => Some(dls),
            _ => plan.subscriber.as_ref(),
        }
    }

    /// The `CACerts` of the Destination the next attempt goes to.
    pub fn ca_certs<'a>(&self, plan: &'a Plan) -> Option<&'a str> {
        match (self.phase, &plan.dead_letter) {
            (Phase::DeadLetter, Some(_)) => plan.dead_letter_ca_certs.as_deref(),
            _ => plan.subscriber_ca_certs.as_deref(),
        }
    }
}

/// Sends events over HTTP(S). Cheap to clone (shared connection pools: one for the trusted roots,
/// one per distinct Destination `CACerts`).
#[derive(Clone, Debug)]
pub struct DeliveryEngine {
    client: HttpClient,
    extra_roots: Arc<Vec<CertificateDer<'static>>>,
    per_ca: Arc<Mutex<HashMap<String, HttpClient>>>,
    local: Arc<LocalSinks>,
}

impl Default for DeliveryEngine {
    fn default() -> Self {
        Self::new()
    }
}

/// Cap of the response body kept for `knativeerrordata` and reply parsing (replies up to the
/// ingress limit are read whole).
const MAX_REPLY: usize = 4 * 1024 * 1024;

fn build_client(extra: &[CertificateDer<'static>]) -> Result<HttpClient, TlsError> {
    HttpClient::new(tls::client_config(extra)?)
}

impl DeliveryEngine {
    /// A new engine with its own connection pool, trusting the web PKI roots.
    pub fn new() -> Self {
        tls::install_provider();
        let client = build_client(&[]).unwrap_or_else(|e| {
            tracing::error!("{e}; deliveries will use reqwest's defaults");
            HttpClient::Reqwest(reqwest::Client::new())
        });
        DeliveryEngine {
            client,
            extra_roots: Arc::new(Vec::new()),
            per_ca: Arc::default(),
            local: Arc::default(),
        }
    }

    /// An engine trusting the web PKI roots plus the CA certificates of the PEM file `ca_file`
    /// (a private CA, `--ca-file`).
    pub fn with_ca_file(ca_file: Option<&Path>) -> Result<Self, TlsError> {
        tls::install_provider();
        let extra = match ca_file {
            None => Vec::new(),
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| TlsError(format!("reading CA file {}: {e}", path.display())))?;
                tls::parse_pem(&pem)
                    .map_err(|e| TlsError(format!("CA file {}: {e}", path.display())))?
            }
        };
        Ok(DeliveryEngine {
            client: build_client(&extra)?,
            extra_roots: Arc::new(extra),
            per_ca: Arc::default(),
            local: Arc::default(),
        })
    }

    /// The addresses this engine delivers to in memory instead of over HTTP.
    pub fn local_sinks(&self) -> &Arc<LocalSinks> {
        &self.local
    }

    /// The client for a Destination: the shared one, or one that also trusts its `CACerts`.
    fn client_for(&self, ca_certs: Option<&str>) -> Result<HttpClient, TlsError> {
        let Some(pem) = ca_certs else {
            return Ok(self.client.clone());
        };
        let mut cache = self.per_ca.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(pem) {
            return Ok(c.clone());
        }
        let mut roots = (*self.extra_roots).clone();
        roots.extend(tls::parse_pem(pem)?);
        let client = build_client(&roots)?;
        cache.insert(pem.to_string(), client.clone());
        Ok(client)
    }

    /// Makes one attempt according to `progress`: the subscriber with `Prefer: reply`, or the
    /// dead-letter sink with the error extensions.
    pub async fn attempt(&self, plan: &Plan, progress: &Progress, event: &EventRecord) -> Outcome {
        let Some(url) = progress.url(plan) else {
            // No subscriber (channel → reply): the event itself goes on to the reply target.
            return Outcome::Delivered {
                reply: Some(Box::new(event.clone())),
            };
        };
        let dead_letter = progress.phase == Phase::DeadLetter;
        let ca_certs = progress.ca_certs(plan);
        // The broker's TTL stays in the broker: left out of what is sent (without copying the
        // event, except to stamp a dead letter's error extensions).
        let ttl = Some(crate::ingress::TTL_EXTENSION);
        let outcome = match &progress.last_failure {
            Some(f) if dead_letter => {
                let mut event = event.clone();
                stamp_error(&mut event, f);
                self.send_omitting(url, ca_certs, &event, ttl, plan, false)
                    .await
            }
            _ => {
                self.send_omitting(url, ca_certs, event, ttl, plan, !dead_letter)
                    .await
            }
        };
        if !dead_letter && let Some(m) = &plan.metrics {
            m.outcome(&outcome);
        }
        outcome
    }

    /// POSTs one event to `url` (trusting the web PKI roots and the engine's CA file).
    pub async fn send(
        &self,
        url: &Url,
        event: &EventRecord,
        plan: &Plan,
        want_reply: bool,
    ) -> Outcome {
        self.send_to(url, None, event, plan, want_reply).await
    }

    /// POSTs one event to `url`, also trusting `ca_certs` (a Destination's PEM `CACerts`).
    pub async fn send_to(
        &self,
        url: &Url,
        ca_certs: Option<&str>,
        event: &EventRecord,
        plan: &Plan,
        want_reply: bool,
    ) -> Outcome {
        self.send_omitting(url, ca_certs, event, None, plan, want_reply)
            .await
    }

    /// [`DeliveryEngine::send_to`], leaving out the attribute `omit`.
    async fn send_omitting(
        &self,
        url: &Url,
        ca_certs: Option<&str>,
        event: &EventRecord,
        omit: Option<&str>,
        plan: &Plan,
        want_reply: bool,
    ) -> Outcome {
        if let Some(sink) = self.local.get(url) {
            // An evmesh address of this process: handed over in memory, as its ingress takes it.
            let started = std::time::Instant::now();
            let mut event = event.clone();
            if let Some(name) = omit {
                event.remove_extension(name);
            }
            let outcome = sink
                .deliver(LocalRequest {
                    url: url.clone(),
                    event,
                    want_reply,
                    timeout: plan.delivery.timeout,
                })
                .await;
            if let Some(m) = &plan.metrics {
                let code = match &outcome {
                    Outcome::Delivered { reply: Some(_) } => Some(200),
                    Outcome::Delivered { reply: None } => Some(202),
                    Outcome::Failed(f) => f.status,
                };
                m.attempt(code, started.elapsed());
            }
            return outcome;
        }
        let client = match self.client_for(ca_certs) {
            Ok(c) => c,
            Err(e) => return failed(url, None, vec![], false, format!("CACerts: {e}")),
        };
        let encode = || match plan.delivery.format {
            DeliveryFormat::Json => codec::encode_record_structured_omitting(event, omit),
            DeliveryFormat::Binary => codec::encode_record_binary_omitting(event, omit),
        };
        let encoded = encode();
        let namespace = HeaderValue::from_str(&plan.namespace).ok();
        // The first request takes the encoded headers; a redirected one encodes them again.
        let mut first = Some(encoded.headers);
        let headers = || {
            let mut h = first.take().unwrap_or_else(|| encode().headers);
            for (name, value) in event.headers() {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    h.append(n, v);
                }
            }
            if let Some(ns) = &namespace {
                h.insert("kn-namespace", ns.clone());
            }
            if want_reply {
                h.insert("prefer", HeaderValue::from_static("reply"));
            }
            h
        };
        // A reply is read whole (up to the limit); anything else only as far as a dead letter
        // needs, so a large error body is never held in memory.
        let cap = |status: http::StatusCode| {
            if want_reply && status.is_success() && status.as_u16() != 202 {
                (MAX_REPLY, true)
            } else {
                (MAX_FAILURE_BODY, false)
            }
        };
        let started = std::time::Instant::now();
        let record = |code: Option<u16>| {
            if let Some(m) = &plan.metrics {
                m.attempt(code, started.elapsed());
            }
        };
        let timeout = plan.delivery.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let answer = match client.post(url, headers, encoded.body, timeout, &cap).await {
            Ok(a) => a,
            Err(SendError::TimedOut) => {
                record(None);
                return failed(url, None, vec![], true, "timed out".to_string());
            }
            Err(SendError::Failed(e)) => {
                if let Some(cause) = local_cause(&*e) {
                    // The request never left evmesh: no attempt to count against the subscriber.
                    return Outcome::Failed(Failure {
                        dest: redact(url),
                        status: None,
                        body: Vec::new(),
                        retryable: true,
                        retry_after: None,
                        reason: format!("evmesh could not send the request: {cause}"),
                        local: true,
                    });
                }
                record(None);
                return failed(
                    url,
                    None,
                    vec![],
                    true,
                    format!("request failed: {}", root_cause(&*e)),
                );
            }
        };
        let status = answer.status;
        record(Some(status.as_u16()));
        let body = match answer.body {
            Ok(b) => b,
            Err(e) => return failed(url, Some(status.as_u16()), vec![], true, e),
        };
        let headers = answer.headers;
        classify(url, status, &headers, body, want_reply)
    }
}

/// The local cause of a failed request, when it is one: evmesh out of file descriptors, memory,
/// buffer space or local ports (the request never reached the subscriber).
pub fn local_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if is_local_io_error(io) {
                return Some(io.to_string());
            }
            // An io::Error wrapping another error reports the wrapped one's source, not the
            // wrapped one itself: look inside.
            if let Some(inner) = io.get_ref()
                && let Some(cause) = local_cause(inner)
            {
                return Some(cause);
            }
        }
        cur = c.source();
    }
    None
}

/// Whether an I/O error is a shortage of evmesh's own resources.
pub fn is_local_io_error(e: &std::io::Error) -> bool {
    if matches!(
        e.kind(),
        std::io::ErrorKind::OutOfMemory | std::io::ErrorKind::AddrNotAvailable
    ) {
        return true;
    }
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS | libc::EADDRNOTAVAIL)
        )
    }
    #[cfg(not(unix))]
    {
        false
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Most bytes of a failure's response body kept (what `knativeerrordata` carries).
pub const MAX_FAILURE_BODY: usize = 1024;

/// A URL for status output and `knativeerrordest`: user info and query string replaced by
/// `redacted`, fragment dropped (they may hold passwords and tokens).
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_password(None);
        let _ = u.set_username("redacted");
    }
    if u.query().is_some() {
        u.set_query(Some("redacted"));
    }
    u.set_fragment(None);
    u.to_string()
}

/// A failed attempt's outcome (the body is cut to [`MAX_FAILURE_BODY`]).
pub fn failed(
    url: &Url,
    status: Option<u16>,
    body: Vec<u8>,
    retryable: bool,
    reason: String,
) -> Outcome {
    let mut body = body;
    body.truncate(MAX_FAILURE_BODY);
    Outcome::Failed(Failure {
        dest: redact(url),
        status,
        body,
        retryable,
        retry_after: None,
        reason,
        local: false,
    })
}

fn classify(
    url: &Url,
    status: StatusCode,
    headers: &HeaderMap,
    body: Vec<u8>,
    want_reply: bool,
) -> Outcome {
    let code = status.as_u16();
    if status.is_success() {
        if code == 202 || !want_reply {
            return Outcome::Delivered { reply: None };
        }
        let looks_like_event = headers.contains_key("ce-specversion")
            || headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| {
                    ct.to_ascii_lowercase()
                        .starts_with("application/cloudevents")
                });
        if !looks_like_event {
            if body.is_empty() {
                return Outcome::Delivered { reply: None };
            }
            return failed(
                url,
                Some(502),
                body,
                true,
                format!(
                    "subscriber answered {code} with a body that is not a CloudEvent (it must be empty or a valid CloudEvent)"
                ),
            );
        }
        return match codec::decode_record(headers, bytes::Bytes::from(body.clone())) {
            Ok(reply) => Outcome::Delivered {
                reply: Some(Box::new(reply)),
            },
            Err(e) => failed(url, Some(502), body, true, format!("malformed reply: {e}")),
        };
    }
    let retry_after = if matches!(code, 429 | 503) {
        headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
    } else {
        None
    };
    Outcome::Failed(Failure {
        dest: redact(url),
        status: Some(code),
        retryable: is_retryable(code),
        retry_after,
        reason: format!("subscriber answered {code}"),
        body,
        local: false,
    })
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v.trim()).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Adds `knativeerrordest`, `knativeerrorcode` and `knativeerrordata` to a dead-lettered event.
pub fn stamp_error(event: &mut EventRecord, f: &Failure) {
    event.set_extension(ERROR_DEST, f.dest.clone().into());
    if let Some(code) = f.status {
        event.set_extension(ERROR_CODE, i64::from(code).into());
    }
    if !f.body.is_empty() {
        let body = &f.body[..f.body.len().min(MAX_FAILURE_BODY)];
        let mut data = base64::engine::general_purpose::STANDARD.encode(body);
        data.truncate(1024);
        event.set_extension(ERROR_DATA, data.into());
    }
}

/// Warns when the host of a trigger's subscriber does not resolve (checked once, at start).
pub async fn warn_if_unresolvable(trigger: String, url: Url) {
    let Some(host) = url.host_str() else {
        return;
    };
    if url
        .host()
        .is_some_and(|h| !matches!(h, url::Host::Domain(_)))
    {
        return;
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let lookup = tokio::net::lookup_host((host.to_string(), port));
    match tokio::time::timeout(Duration::from_secs(5), lookup)
        .await
        .map(|r| r.map(|mut addrs| addrs.next().is_some()))
    {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) | Ok(Err(_)) => {
            tracing::warn!(trigger = %trigger, url = %redact(&url), "subscriber host {host} does not resolve; deliveries fail until it does");
        }
        Err(_) => {
            tracing::warn!(trigger = %trigger, url = %redact(&url), "resolving subscriber host {host} timed out");
        }
    }
}

/// The id of an event, for logs.
pub fn describe(event: &EventRecord) -> String {
    format!("{} (source {})", event.id(), event.source())
}

#[cfg(test)]
mod tests {
    use super::*;
    use evmesh_config::BackoffPolicy;

    fn plan(retry: u32, dls: bool) -> Plan {
        let mut delivery = Delivery::knative_default();
        delivery.retry = retry;
        delivery.backoff_policy = BackoffPolicy::Exponential;
        delivery.backoff_delay = Some(Duration::from_millis(100));
        Plan {
            subscriber: Some("http://sub.example/".parse().expect("url")),
            reply: ReplyTo::Discard,
            dead_letter: dls.then(|| "http://dls.example/".parse().expect("url")),
            delivery,
            namespace: "default".into(),
            subscriber_ca_certs: None,
            dead_letter_ca_certs: None,
            metrics: None,
        }
    }

    fn fail(status: u16) -> Outcome {
        Outcome::Failed(Failure {
            dest: "http://sub.example/".into(),
            status: Some(status),
            body: vec![],
            retryable: is_retryable(status),
            retry_after: None,
            reason: String::new(),
            local: false,
        })
    }

    /// A local sink that accepts everything; tells sinks apart by pointer.
    struct Accepting;
    impl LocalSink for Accepting {
        fn accept(&self, _: EventRecord) -> LocalFuture<'_, Result<(), LocalRefusal>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn url(s: &str) -> Url {
        s.parse().expect("url")
    }

    #[test]
    fn local_sinks_find_urls_and_prefixes_on_their_port_and_nothing_on_another() {
        let local = LocalSinks::default();
        let broker: Arc<dyn LocalSink> = Arc::new(Accepting);
        let channel: Arc<dyn LocalSink> = Arc::new(Accepting);
        assert!(local.get(&url("http://127.0.0.1:8080/default/b")).is_none());
        local.insert(&url("http://127.0.0.1:8080/default/b/"), broker.clone());
        let by_prefix = channel.clone();
        local.insert_prefix(
            &url("http://127.0.0.1:9090/subscribers"),
            Arc::new(move |rest| (rest == "ns/sub").then(|| by_prefix.clone())),
        );
        let found = |u: &str| local.get(&url(u));
        // The trailing `/` does not matter; the scheme's default port is the port.
        assert!(found("http://127.0.0.1:8080/default/b").is_some_and(|s| Arc::ptr_eq(&s, &broker)));
        assert!(
            found("http://127.0.0.1:9090/subscribers/ns/sub")
                .is_some_and(|s| Arc::ptr_eq(&s, &channel))
        );
        assert!(found("http://127.0.0.1:8080/default/other").is_none());
        assert!(found("http://127.0.0.1:9090/subscribers/ns/other").is_none());
        assert!(found("http://127.0.0.1:8080/default/b?x=1").is_none());
        assert!(found("http://127.0.0.1:8081/default/b").is_none());
        assert!(found("http://127.0.0.1/default/b").is_none());
        local.insert(&url("http://sink.example/ingress"), broker.clone());
        assert!(found("http://sink.example:80/ingress").is_some());
        // Removing one URL keeps the others on its port, and the removed one is gone.
        local.insert(&url("http://127.0.0.1:8080/default/c"), channel.clone());
        local.remove(&url("http://127.0.0.1:8080/default/b"));
        assert!(found("http://127.0.0.1:8080/default/b").is_none());
        assert!(
            found("http://127.0.0.1:8080/default/c").is_some_and(|s| Arc::ptr_eq(&s, &channel))
        );
        local.remove(&url("http://127.0.0.1:8080/default/c"));
        assert!(found("http://127.0.0.1:8080/default/c").is_none());
        assert!(found("http://127.0.0.1:9090/subscribers/ns/sub").is_some());
    }

    fn local_failure() -> Outcome {
        Outcome::Failed(Failure {
            dest: "http://sub.example/".into(),
            status: None,
            body: vec![],
            retryable: true,
            retry_after: None,
            reason: "Too many open files".into(),
            local: true,
        })
    }

    #[test]
    fn a_local_failure_waits_and_retries_without_spending_the_retry_budget() {
        let p = plan(0, false);
        let mut prog = Progress::default();
        let waits: Vec<_> = (0..10)
            .map(|_| match prog.next(&p, local_failure()) {
                Next::Retry(w) => w,
                other => panic!("a local failure must not end delivery: {other:?}"),
            })
            .collect();
        assert_eq!(waits[0], FIRST_LOCAL_WAIT);
        assert_eq!(waits[1], FIRST_LOCAL_WAIT * 2);
        assert_eq!(waits[9], MAX_LOCAL_WAIT);
        assert_eq!(prog.failures, 0);
        assert_eq!(prog.phase, Phase::Subscriber);
        assert!(prog.last_failure.is_none());
        // The subscriber's own failure still ends it (retry 0, no DLS).
        assert!(matches!(prog.next(&p, fail(500)), Next::Dropped(_)));
    }

    #[test]
    fn fd_and_memory_exhaustion_are_local_errors_but_a_refused_connection_is_not() {
        for code in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::EADDRNOTAVAIL,
        ] {
            let e = std::io::Error::from_raw_os_error(code);
            assert!(is_local_io_error(&e), "{e}");
            let wrapped = std::io::Error::other(e);
            assert!(local_cause(&wrapped).is_some());
        }
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(!is_local_io_error(&refused));
    }

    #[test]
    fn retries_with_exponential_backoff_then_dead_letters() {
        let p = plan(3, true);
        let mut prog = Progress::default();
        let waits: Vec<_> = (0..3)
            .map(|_| match prog.next(&p, fail(503)) {
                Next::Retry(w) => w.as_millis(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(waits, vec![100, 200, 400]);
        assert!(matches!(prog.next(&p, fail(503)), Next::Retry(w) if w.is_zero()));
        assert_eq!(prog.phase, Phase::DeadLetter);
        assert_eq!(prog.url(&p).map(Url::as_str), Some("http://dls.example/"));
    }

    #[test]
    fn non_retryable_status_goes_straight_to_dead_letter() {
        let p = plan(5, true);
        let mut prog = Progress::default();
        assert!(matches!(prog.next(&p, fail(422)), Next::Retry(_)));
        assert_eq!(prog.phase, Phase::DeadLetter);
    }

    #[test]
    fn without_dead_letter_sink_event_is_dropped() {
        let p = plan(0, false);
        let mut prog = Progress::default();
        assert!(matches!(prog.next(&p, fail(500)), Next::Dropped(_)));
    }

    #[test]
    fn retryable_statuses_follow_knative() {
        for s in [404, 408, 409, 429, 500, 502, 503] {
            assert!(is_retryable(s), "{s}");
        }
        for s in [400, 401, 403, 410, 422, 301] {
            assert!(!is_retryable(s), "{s}");
        }
    }
}
