//! `NatsJetStreamChannel` on NATS JetStream, named as Knative's eventing-natss names things: the
//! stream `KN_<NAMESPACE>__<NAME>` (or `spec.stream.overrideName`) on the subject
//! `<namespace>.<name>._knative`, and per subscription a durable pull consumer with explicit acks.
//!
//! An append resolves once JetStream acknowledged the publish (ingress answers 202 only then).
//! A record is acked once the run reports it done (delivered, dead-lettered or counted as dropped);
//! while it waits for a retry it is kept from redelivery with progress acks. A record handed to a
//! process that died before acking it is redelivered after the consumer's `ackWait`. Processes
//! running the same subscription share its consumer, so each event goes to one of them.
//!
//! Replay ([`Cursor::seek`]) recreates the subscription's durable consumer with the deliver
//! policy `All` (`earliest`) or `ByStartTime`; the consumer's description keeps the
//! `evmesh.dev/replay-from` value it applied, so a value is applied once, by whichever process
//! sharing the consumer applies it first.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::Subject;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use evmesh_broker::log::{
    BoxFuture, ConsumerGroup, Cursor, GroupSpec, Log, LogError, LogProvider, LogTarget, Pending,
    Pos, Restored,
};
use evmesh_broker::record::EventRecord;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// The NATS server evmesh connects to unless told otherwise (`--nats-url`, `EVMESH_NATS_URL`).
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// The channel kind this module runs.
const KIND: &str = "NatsJetStreamChannel";
/// How long JetStream waits for an ack before it hands a record out again (NATS's default).
const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Records a cursor asks JetStream for at once, at most.
const MAX_BATCH: usize = 100;
/// How long a cursor waits before it pulls again after the pull failed.
const PULL_RETRY: Duration = Duration::from_secs(1);
/// How long a closing cursor waits for its last acks to be flushed.
const ACK_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to NATS may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The start of a consumer description that records the `evmesh.dev/replay-from` value applied.
const REPLAY_DESCRIPTION: &str = "evmesh.dev/replay-from=";

/// Opens the JetStream streams of `NatsJetStreamChannel`s. Connects on the first channel it
/// opens (an evmesh without such channels never connects).
pub struct NatsProvider {
    url: String,
    connection: tokio::sync::OnceCell<(async_nats::Client, jetstream::Context)>,
}

impl NatsProvider {
    /// A provider for the NATS server at `url` (e.g. [`DEFAULT_NATS_URL`]).
    pub fn new(url: impl Into<String>) -> NatsProvider {
        NatsProvider {
            url: url.into(),
            connection: tokio::sync::OnceCell::new(),
        }
    }

    async fn connection(&self) -> Result<(async_nats::Client, jetstream::Context), LogError> {
        self.connection
            .get_or_try_init(|| async {
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(CONNECT_TIMEOUT)
                    .connect(self.url.as_str())
                    .await
                    .map_err(|e| {
                        LogError::new(format!("connecting to NATS at {}: {e}", self.url))
                    })?;
                Ok((client.clone(), jetstream::new(client)))
            })
            .await
            .cloned()
    }
}

impl LogProvider for NatsProvider {
    fn serves(&self, target: &LogTarget) -> bool {
        target.resource == "channel" && target.kind == KIND
    }

    fn open_log<'a>(
        &'a self,
        target: &'a LogTarget,
    ) -> BoxFuture<'a, Result<Arc<dyn Log>, LogError>> {
        Box::pin(async move {
            let settings = Settings::from_spec(&target.spec)?;
            let (client, context) = self.connection().await?;
            let name = settings
                .override_name
                .clone()
                .unwrap_or_else(|| stream_name(&target.namespace, &target.name));
            let subject = publish_subject(&target.namespace, &target.name);
            let config = stream::Config {
                name: name.clone(),
                subjects: vec![subject.clone()],
                max_age: settings.max_age.unwrap_or_default(),
                max_messages: settings.max_messages.unwrap_or(-1),
                max_bytes: settings.max_bytes.unwrap_or(-1),
                storage: settings.storage,
                ..Default::default()
            };
            let stream = context
                .get_or_create_stream(config)
                .await
                .map_err(|e| LogError::new(format!("creating JetStream stream {name}: {e}")))?;
            tracing::info!(stream = %name, subject = %subject, "JetStream stream ready");
            Ok(Arc::new(JetStreamLog {
                client,
                context,
                stream,
                name,
                subject,
                settings,
                appended: Arc::new(AtomicU64::new(0)),
            }) as Arc<dyn Log>)
        })
    }
}

/// `KN_<NAMESPACE>__<NAME>`, as eventing-natss names a channel's stream.
///
/// ```
/// assert_eq!(evmesh_channels::nats::stream_name("knative-eventing", "my-channel"), "KN_KNATIVE_EVENTING__MY_CHANNEL");
/// ```
pub fn stream_name(namespace: &str, name: &str) -> String {
    format!("KN_{}__{}", token(namespace), token(name))
}

/// `<namespace>.<name>._knative`, the subject a channel's events are published on.
pub fn publish_subject(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}._knative")
}

/// `KN_SUB_<NAMESPACE>__<NAME>`: the durable consumer of a subscription. eventing-natss names
/// it after the subscription's uid; evmesh after its name, so that every evmesh process running
/// the same configuration shares it.
///
/// ```
/// use evmesh_broker::log::GroupSpec;
/// let spec = GroupSpec { route_kind: "subscription", namespace: "default".into(), name: "to-step-1".into(), max_in_flight: 100, created_ms: None };
/// assert_eq!(evmesh_channels::nats::consumer_name(&spec), "KN_SUB_DEFAULT__TO_STEP_1");
/// ```
pub fn consumer_name(spec: &GroupSpec) -> String {
    format!("KN_SUB_{}__{}", token(&spec.namespace), token(&spec.name))
}

/// Upper case, anything but letters, digits and `_` as `_` (valid in stream and consumer names).
fn token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// What evmesh uses of a NatsJetStreamChannel's `spec`.
#[derive(Clone, Debug, Default)]
struct Settings {
    override_name: Option<String>,
    max_age: Option<Duration>,
    max_messages: Option<i64>,
    max_bytes: Option<i64>,
    storage: stream::StorageType,
    ack_wait: Option<Duration>,
    max_ack_pending: Option<i64>,
}

impl Settings {
    fn from_spec(spec: &Value) -> Result<Settings, LogError> {
        let stream = spec.get("stream");
        let config = stream.and_then(|s| s.get("config"));
        let consumer = spec.get("consumerConfigTemplate");
        let duration = |v: Option<&Value>, field: &str| -> Result<Option<Duration>, LogError> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => parse_duration(s)
                    .map(Some)
                    .ok_or_else(|| LogError::new(format!("{field}: {s:?} is not a duration"))),
                Some(other) => Err(LogError::new(format!("{field}: {other} is not a duration"))),
            }
        };
        let storage = match config
            .and_then(|c| c.get("storage"))
            .and_then(Value::as_str)
        {
            None | Some("File") => stream::StorageType::File,
            Some("Memory") => stream::StorageType::Memory,
            Some(other) => {
                return Err(LogError::new(format!(
                    "spec.stream.config.storage: {other:?} is neither File nor Memory"
                )));
            }
        };
        Ok(Settings {
            override_name: stream
                .and_then(|s| s.get("overrideName"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            max_age: duration(
                config.and_then(|c| c.get("maxAge")),
                "spec.stream.config.maxAge",
            )?,
            max_messages: config
                .and_then(|c| c.get("maxMsgs"))
                .and_then(Value::as_i64)
                .filter(|n| *n > 0),
            max_bytes: config
                .and_then(|c| c.get("maxBytes"))
                .and_then(Value::as_i64)
                .filter(|n| *n > 0),
            storage,
            ack_wait: duration(
                consumer.and_then(|c| c.get("ackWait")),
                "spec.consumerConfigTemplate.ackWait",
            )?,
            max_ack_pending: consumer
                .and_then(|c| c.get("maxAckPending"))
                .and_then(Value::as_i64)
                .filter(|n| *n > 0),
        })
    }
}

/// Parses a Go duration as Kubernetes writes it (`30s`, `1m30s`, `500ms`, `2h`).
fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(number * seconds).ok()?;
    }
    Some(total)
}

/// The deliver policy of a consumer that starts with the messages stored at or after `ms`
/// (unix milliseconds).
fn since(ms: u64) -> Result<consumer::DeliverPolicy, time::error::ComponentRange> {
    let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)?;
    Ok(consumer::DeliverPolicy::ByStartTime { start_time })
}

/// A channel's stream.
struct JetStreamLog {
    client: async_nats::Client,
    context: jetstream::Context,
    stream: stream::Stream,
    name: String,
    subject: String,
    settings: Settings,
    /// After the last stream sequence this process appended: what a cursor must have handed out
    /// to be caught up.
    appended: Arc<AtomicU64>,
}

impl Log for JetStreamLog {
    fn append<'a>(&'a self, event: &'a EventRecord) -> BoxFuture<'a, Result<Pos, LogError>> {
        Box::pin(async move {
            let payload = Bytes::from(event.to_stored());
            let ack = self
                .context
                .publish(self.subject.clone(), payload)
                .await
                .map_err(|e| LogError::new(format!("publishing to {}: {e}", self.name)))?
                .await
                .map_err(|e| {
                    LogError::new(format!("JetStream did not acknowledge the publish: {e}"))
                })?;
            self.appended.fetch_max(ack.sequence + 1, Ordering::AcqRel);
            Ok(Pos {
                partition: 0,
                offset: ack.sequence,
            })
        })
    }

    fn open_group(
        &self,
        spec: GroupSpec,
    ) -> BoxFuture<'_, Result<Arc<dyn ConsumerGroup>, LogError>> {
        Box::pin(async move {
            let name = consumer_name(&spec);
            let ack_wait = self.settings.ack_wait.unwrap_or(DEFAULT_ACK_WAIT);
            let config = consumer::pull::Config {
                durable_name: Some(name.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                // Retries and dead letters are the delivery engine's; JetStream redelivers only
                // what a process took and never acked.
                max_deliver: -1,
                max_ack_pending: self
                    .settings
                    .max_ack_pending
                    .unwrap_or(spec.max_in_flight as i64),
                // A new subscription starts with what the stream received since the
                // subscription was created (or at its end, when that time is unknown); the
                // consumer keeps that start.
                deliver_policy: match spec.created_ms {
                    Some(ms) => since(ms).map_err(|e| {
                        LogError::new(format!("the subscription's creation time: {e}"))
                    })?,
                    None => consumer::DeliverPolicy::New,
                },
                ..Default::default()
            };
            let consumer = self
                .stream
                .get_or_create_consumer(&name, config.clone())
                .await
                .map_err(|e| {
                    LogError::new(format!(
                        "creating consumer {name} on stream {}: {e}",
                        self.name
                    ))
                })?;
            Ok(Arc::new(JetStreamGroup {
                consumer,
                stream: self.stream.clone(),
                client: self.client.clone(),
                name,
                ack_wait,
                batch: spec.max_in_flight.clamp(1, MAX_BATCH),
                config,
                appended: self.appended.clone(),
            }) as Arc<dyn ConsumerGroup>)
        })
    }

    fn delete_group<'a>(&'a self, spec: &'a GroupSpec) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(async move {
            let name = consumer_name(spec);
            self.stream
                .delete_consumer(&name)
                .await
                .map(|_| ())
                .map_err(|e| LogError::new(format!("deleting consumer {name}: {e}")))
        })
    }
}

/// A subscription's durable consumer.
struct JetStreamGroup {
    consumer: consumer::PullConsumer,
    stream: stream::Stream,
    client: async_nats::Client,
    name: String,
    ack_wait: Duration,
    batch: usize,
    /// The consumer's configuration as created (a replay recreates it with another policy).
    config: consumer::pull::Config,
    appended: Arc<AtomicU64>,
}

impl ConsumerGroup for JetStreamGroup {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Cursor>, String>> {
        Box::pin(async move {
            // Where the consumer stands now (another process may have moved it), and the
            // replay it last applied.
            let mut consumer = self.consumer.clone();
            let info = consumer
                .info()
                .await
                .map_err(|e| format!("reading consumer {}: {e}", self.name))?;
            let next = info.delivered.stream_sequence + 1;
            let end = stream_end(&self.stream).await?;
            let applied = info
                .config
                .description
                .as_deref()
                .and_then(|d| d.strip_prefix(REPLAY_DESCRIPTION))
                .map(str::to_string);
            let (tx, rx) = mpsc::channel(self.batch);
            let notify = Arc::new(Notify::new());
            let handed = Arc::new(Mutex::new(HashMap::new()));
            let (acks, acks_rx) = mpsc::unbounded_channel();
            let pull = tokio::spawn(pull(
                self.consumer.clone(),
                self.name.clone(),
                self.batch,
                tx,
                notify.clone(),
            ));
            // Not aborted with the cursor: it sends the last acks and flushes them.
            let acker = tokio::spawn(acker(
                self.client.clone(),
                handed.clone(),
                acks_rx,
                self.ack_wait,
            ));
            Ok(Box::new(JetStreamCursor {
                rx,
                notify,
                handed,
                acks: Some(acks),
                acker: Some(acker),
                stream: self.stream.clone(),
                next,
                pull,
                name: self.name.clone(),
                batch: self.batch,
                config: self.config.clone(),
                applied,
                appended: self.appended.clone(),
                end,
            }) as Box<dyn Cursor>)
        })
    }
}

/// After the last record of `stream` now.
async fn stream_end(stream: &stream::Stream) -> Result<u64, String> {
    let mut stream = stream.clone();
    stream
        .info()
        .await
        .map(|i| i.state.last_sequence + 1)
        .map_err(|e| format!("reading the stream's state: {e}"))
}

/// Pulls the consumer's records into the cursor's queue until the cursor is dropped.
async fn pull(
    consumer: consumer::PullConsumer,
    name: String,
    batch: usize,
    tx: mpsc::Sender<jetstream::Message>,
    notify: Arc<Notify>,
) {
    loop {
        match consumer
            .stream()
            .max_messages_per_batch(batch)
            .messages()
            .await
        {
            Ok(mut messages) => {
                while let Some(m) = messages.next().await {
                    match m {
                        Ok(m) => {
                            if tx.send(m).await.is_err() {
                                return;
                            }
                            notify.notify_one();
                        }
                        Err(e) => {
                            tracing::warn!(consumer = %name, "pulling from JetStream: {e}");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(consumer = %name, "pulling from JetStream: {e}"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(PULL_RETRY).await;
    }
}

/// Sends the acks of records a run finished, and progress acks for the ones it still holds
/// (often enough that JetStream does not hand them to another process while they wait for a
/// retry). Ends, after flushing, once the cursor is gone.
async fn acker(
    client: async_nats::Client,
    handed: Arc<Mutex<HashMap<u64, Subject>>>,
    mut acks: mpsc::UnboundedReceiver<Vec<Subject>>,
    ack_wait: Duration,
) {
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at((Instant::now() + every).into(), every);
    loop {
        tokio::select! {
            batch = acks.recv() => match batch {
                Some(done) => {
                    for reply in done {
                        if let Err(e) = client.publish(reply, Bytes::from_static(b"+ACK")).await {
                            tracing::warn!("acking a JetStream record: {e}");
                        }
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                let held: Vec<Subject> = handed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned()
                    .collect();
                for reply in held {
                    let _ = client.publish(reply, Bytes::from_static(b"+WPI")).await;
                }
            }
        }
    }
    if let Err(e) = client.flush().await {
        tracing::warn!("flushing JetStream acks: {e}");
    }
}

/// A run's cursor on its subscription's consumer.
struct JetStreamCursor {
    rx: mpsc::Receiver<jetstream::Message>,
    notify: Arc<Notify>,
    /// Records handed to the run and not acked yet: stream sequence → where to ack.
    handed: Arc<Mutex<HashMap<u64, Subject>>>,
    /// To the acker; `None` once closed.
    acks: Option<mpsc::UnboundedSender<Vec<Subject>>>,
    acker: Option<JoinHandle<()>>,
    stream: stream::Stream,
    /// After the last stream sequence handed out.
    next: u64,
    pull: JoinHandle<()>,
    name: String,
    batch: usize,
    config: consumer::pull::Config,
    /// The `evmesh.dev/replay-from` value the consumer was last recreated for.
    applied: Option<String>,
    appended: Arc<AtomicU64>,
    /// After the stream's last record when the cursor opened or last replayed.
    end: u64,
}

impl Drop for JetStreamCursor {
    fn drop(&mut self) {
        self.pull.abort();
    }
}

impl JetStreamCursor {
    fn take(&mut self) -> Option<(Pos, Option<Arc<EventRecord>>)> {
        loop {
            let m = self.rx.try_recv().ok()?;
            let seq = match m.info() {
                Ok(info) => info.stream_sequence,
                Err(e) => {
                    tracing::warn!("a JetStream record without metadata: {e}");
                    continue;
                }
            };
            let Some(reply) = m.reply.clone() else {
                continue;
            };
            let mut handed = self.handed.lock().unwrap_or_else(|e| e.into_inner());
            // Handed out again while the run still holds it (its ack wait ran out): the run
            // goes on with it; the newer delivery is the one to ack.
            let again = handed.insert(seq, reply).is_some();
            drop(handed);
            if again {
                continue;
            }
            self.next = self.next.max(seq + 1);
            // A record that does not decode is handed out without its event: loading it fails
            // and the run counts it as dropped (and logs why).
            let event = EventRecord::from_stored(&m.payload).ok().map(Arc::new);
            return Some((
                Pos {
                    partition: 0,
                    offset: seq,
                },
                event,
            ));
        }
    }
}

impl Cursor for JetStreamCursor {
    fn restored(&mut self) -> Vec<Restored> {
        // Retry state is not kept: JetStream hands out again what a process never acked.
        Vec::new()
    }

    fn next(&mut self) -> BoxFuture<'_, Option<(Pos, Option<Arc<EventRecord>>)>> {
        Box::pin(async move { self.take() })
    }

    fn wake_at(&self) -> Option<Instant> {
        None
    }

    fn wakeup(&self) -> BoxFuture<'static, ()> {
        let notify = self.notify.clone();
        Box::pin(async move { notify.notified().await })
    }

    fn load(&self, pos: Pos) -> BoxFuture<'static, Result<Arc<EventRecord>, String>> {
        let stream = self.stream.clone();
        Box::pin(async move {
            let m = stream
                .get_raw_message(pos.offset)
                .await
                .map_err(|e| format!("reading record {} of the stream: {e}", pos.offset))?;
            EventRecord::from_stored(&m.payload)
                .map(Arc::new)
                .map_err(|e| format!("record {} of the stream is undecodable: {e}", pos.offset))
        })
    }

    fn save(&mut self, pending: &[Pending<'_>]) {
        let keep: HashSet<u64> = pending.iter().map(|p| p.pos.offset).collect();
        let mut done = Vec::new();
        self.handed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|seq, reply| {
                let held = keep.contains(seq);
                if !held {
                    done.push(reply.clone());
                }
                held
            });
        if !done.is_empty() && self.acks.as_ref().is_none_or(|a| a.send(done).is_err()) {
            tracing::warn!(
                "JetStream acker stopped: the records are handed out again after ackWait"
            );
        }
    }

    fn seek(
        &mut self,
        to: evmesh_broker::log::ReplayFrom,
        tag: Option<String>,
    ) -> BoxFuture<'_, Result<Pos, String>> {
        Box::pin(async move {
            let deliver_policy = match to {
                evmesh_broker::log::ReplayFrom::Earliest => consumer::DeliverPolicy::All,
                evmesh_broker::log::ReplayFrom::TimeMs(ms) => {
                    since(ms).map_err(|e| format!("replay time {to}: {e}"))?
                }
            };
            let applied = tag.or_else(|| self.applied.clone());
            let config = consumer::pull::Config {
                deliver_policy,
                description: applied.as_ref().map(|t| format!("{REPLAY_DESCRIPTION}{t}")),
                ..self.config.clone()
            };
            // Stop reading the old position; what the run held is dropped with it.
            self.pull.abort();
            self.handed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            while self.rx.try_recv().is_ok() {}
            if let Err(e) = self.stream.delete_consumer(&self.name).await {
                // Typically deleted already (by another process replaying it).
                tracing::debug!(consumer = %self.name, "deleting for a replay: {e}");
            }
            let created: Result<consumer::PullConsumer, String> = self
                .stream
                .create_consumer(config)
                .await
                .map_err(|e| format!("recreating consumer {} for the replay: {e}", self.name));
            // Pulling goes on whatever happened (a consumer recreated by another process).
            let (tx, rx) = mpsc::channel(self.batch);
            self.rx = rx;
            let mut consumer = created?;
            self.pull = tokio::spawn(pull(
                consumer.clone(),
                self.name.clone(),
                self.batch,
                tx,
                self.notify.clone(),
            ));
            self.applied = applied;
            let start = consumer
                .info()
                .await
                .map(|i| i.delivered.stream_sequence + 1)
                .unwrap_or(0);
            self.next = start;
            self.end = stream_end(&self.stream).await?;
            Ok(Pos {
                partition: 0,
                offset: start,
            })
        })
    }

    fn applied_tag(&self) -> Option<&str> {
        self.applied.as_deref()
    }

    fn caught_up(&self) -> bool {
        // What this process appended has been handed out (records appended by another process
        // are that process's to wait for).
        self.rx.is_empty() && self.next >= self.end.max(self.appended.load(Ordering::Acquire))
    }

    fn position(&self) -> Pos {
        Pos {
            partition: 0,
            offset: self.next,
        }
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.pull.abort();
            // The acker sends what it was given, flushes and ends.
            self.acks = None;
            if let Some(acker) = self.acker.take()
                && tokio::time::timeout(ACK_FLUSH_TIMEOUT, acker)
                    .await
                    .is_err()
            {
                tracing::warn!(
                    "JetStream acks not flushed in time: those records are handed out again after ackWait"
                );
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("ten"), None);
        assert_eq!(parse_duration("5"), None);
    }

    #[test]
    fn settings_read_knative_fields() {
        let spec = serde_json::json!({
            "stream": {"overrideName": "ORDERS", "config": {"maxAge": "1h", "storage": "Memory"}},
            "consumerConfigTemplate": {"ackWait": "2s", "maxAckPending": 10}
        });
        let s = Settings::from_spec(&spec).expect("settings");
        assert_eq!(s.override_name.as_deref(), Some("ORDERS"));
        assert_eq!(s.max_age, Some(Duration::from_secs(3600)));
        assert_eq!(s.storage, stream::StorageType::Memory);
        assert_eq!(s.ack_wait, Some(Duration::from_secs(2)));
        assert_eq!(s.max_ack_pending, Some(10));
        let bad = serde_json::json!({"consumerConfigTemplate": {"ackWait": "soon"}});
        assert!(Settings::from_spec(&bad).is_err());
    }
}
