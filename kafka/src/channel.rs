//! `KafkaChannel` (`messaging.knative.dev/v1beta1`) and the `Kafka` broker class on Kafka topics.
//!
//! A KafkaChannel is laid out as Knative's eventing-kafka-broker names
//! things: the topic `knative-messaging-kafka.<namespace>.<name>` (created when missing with
//! `numPartitions`, `replicationFactor` and `retentionDuration`), events in the CloudEvents Kafka
//! binary binding, and a consumer group per subscription,
//! `kafka.<namespace>.<channel>.<subscription>` (Knative ends it with the subscription's uid;
//! evmesh uses its name so every process running the same YAML shares the group).

use std::sync::Arc;
use std::time::Duration;

use evmesh_broker::log::{
    BoxFuture, ConsumerGroup, GroupSpec as RouteGroup, Log, LogError, LogProvider, LogTarget, Pos,
};
use evmesh_broker::record::EventRecord;
use evmesh_config::kafka::KafkaBrokerConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::group::{Appends, InitialOffset, KafkaGroup, offset_at_time};
use crate::{GroupSpec, KafkaProducer, KafkaSettings, binding};

/// The channel kind this module runs.
const KIND: &str = "KafkaChannel";
/// The broker class this module runs (`eventing.knative.dev/broker.class: Kafka`).
const BROKER_CLASS: &str = "Kafka";
/// Knative's default retention of a KafkaChannel's topic (7 days).
const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long opening a topic may take (Kafka unreachable: the broker or channel is not ready,
/// and opened again on a timer).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests made while a group is created.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The topic of a KafkaChannel: `knative-messaging-kafka.<namespace>.<name>`.
///
/// ```
/// assert_eq!(evmesh_kafka::channel::topic_name("default", "orders"), "knative-messaging-kafka.default.orders");
/// ```
pub fn topic_name(namespace: &str, name: &str) -> String {
    format!("knative-messaging-kafka.{namespace}.{name}")
}

/// The topic of a Kafka-class Broker: `knative-broker-<namespace>-<name>`, as Knative's Kafka
/// broker names it.
pub fn broker_topic_name(namespace: &str, name: &str) -> String {
    format!("knative-broker-{namespace}-{name}")
}

/// The consumer group of a Trigger of a Kafka-class Broker: `knative-trigger-<namespace>-<name>`.
pub fn trigger_group_name(namespace: &str, trigger: &str) -> String {
    format!("knative-trigger-{namespace}-{trigger}")
}

/// The consumer group of a subscription to a KafkaChannel.
pub fn group_name(namespace: &str, channel: &str, subscription: &str) -> String {
    format!("kafka.{namespace}.{channel}.{subscription}")
}

/// Opens the topics of `KafkaChannel`s and Kafka-class Brokers on the Kafka at `settings`
/// (nothing connects before the first one is opened).
pub struct KafkaProvider {
    settings: Option<KafkaSettings>,
    /// Produce timeout of logs whose Kafka comes from a ConfigMap.
    message_timeout: Duration,
    /// KafkaChannels' bootstrap servers from `kafka-channel-config`.
    channel_servers: Option<Vec<String>>,
}

impl KafkaProvider {
    /// A provider for these settings (`--kafka-bootstrap-servers`); `None`: none were given, and
    /// opening a KafkaChannel or Kafka-class Broker whose ConfigMap names no Kafka fails, saying
    /// so.
    ///
    /// ```
    /// use evmesh_kafka::{KafkaProvider, KafkaSettings};
    /// let p = KafkaProvider::new(Some(KafkaSettings::new(["127.0.0.1:9092"])))
    ///     .with_channel_bootstrap(Some(vec!["kafka:9092".to_string()]));
    /// # let _ = p;
    /// ```
    pub fn new(settings: Option<KafkaSettings>) -> KafkaProvider {
        KafkaProvider {
            message_timeout: settings
                .as_ref()
                .map_or(crate::settings::DEFAULT_MESSAGE_TIMEOUT, |s| {
                    s.message_timeout
                }),
            settings,
            channel_servers: None,
        }
    }

    /// The produce timeout of logs whose Kafka comes from a ConfigMap (else the settings').
    pub fn with_message_timeout(mut self, timeout: Duration) -> KafkaProvider {
        self.message_timeout = timeout;
        self
    }

    /// KafkaChannels connect to `servers` (Knative's `kafka-channel-config`) instead of the
    /// provider's settings, when given.
    pub fn with_channel_bootstrap(mut self, servers: Option<Vec<String>>) -> KafkaProvider {
        self.channel_servers = servers;
        self
    }

    /// The settings for `servers`: the provider's, with these brokers.
    fn settings_for(&self, servers: &[String]) -> KafkaSettings {
        let mut s = self.settings.clone().unwrap_or_else(|| {
            let mut s = KafkaSettings::new(Vec::<String>::new());
            s.message_timeout = self.message_timeout;
            s
        });
        s.bootstrap_servers = servers.to_vec();
        s
    }

    /// Where `target`'s topic lives and how it is created: Kafka's settings, partitions,
    /// replication and topic configuration.
    fn plan(&self, target: &LogTarget) -> Result<TopicPlan, LogError> {
        let missing = || {
            LogError::new(if target.resource == "broker" {
                "no Kafka bootstrap servers: give the broker a spec.config ConfigMap (kafka-broker-config) or --kafka-bootstrap-servers (EVMESH_KAFKA_BOOTSTRAP)"
            } else {
                "no Kafka bootstrap servers: give a kafka-channel-config ConfigMap or --kafka-bootstrap-servers (EVMESH_KAFKA_BOOTSTRAP)"
            })
        };
        if target.resource == "broker" {
            if target.spec.is_null() {
                let settings = self.settings.clone().ok_or_else(missing)?;
                return Ok(TopicPlan {
                    settings,
                    partitions: 1,
                    replication: 1,
                    configs: vec![(
                        "retention.ms".into(),
                        DEFAULT_RETENTION.as_millis().to_string(),
                    )],
                });
            }
            let c: KafkaBrokerConfig = serde_json::from_value(target.spec.clone())
                .map_err(|e| LogError::new(format!("the broker's Kafka configuration: {e}")))?;
            return Ok(TopicPlan {
                settings: self.settings_for(&c.bootstrap_servers),
                partitions: c.partitions,
                replication: c.replication_factor,
                configs: c.topic_config.into_iter().collect(),
            });
        }
        let settings = match &self.channel_servers {
            Some(servers) => self.settings_for(servers),
            None => self.settings.clone().ok_or_else(missing)?,
        };
        let (partitions, replication, retention) = topic_settings(&target.spec)?;
        Ok(TopicPlan {
            settings,
            partitions,
            replication,
            configs: vec![("retention.ms".into(), retention.as_millis().to_string())],
        })
    }
}

/// How a log's topic is created, and on which Kafka.
struct TopicPlan {
    settings: KafkaSettings,
    partitions: i32,
    replication: i32,
    configs: Vec<(String, String)>,
}

/// Reads `spec` fields of a KafkaChannel: partitions, replication, retention.
fn topic_settings(spec: &Value) -> Result<(i32, i32, Duration), LogError> {
    let int = |name: &str| -> Result<i32, LogError> {
        match spec.get(name) {
            None | Some(Value::Null) => Ok(1),
            Some(v) => v
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| LogError::new(format!("spec.{name} must be a positive integer"))),
        }
    };
    let retention = match spec.get("retentionDuration").and_then(Value::as_str) {
        None => DEFAULT_RETENTION,
        Some(t) => evmesh_config::parse_duration(t).map_err(LogError::new)?,
    };
    Ok((int("numPartitions")?, int("replicationFactor")?, retention))
}

impl LogProvider for KafkaProvider {
    fn serves(&self, target: &LogTarget) -> bool {
        (target.resource == "channel" && target.kind == KIND)
            || (target.resource == "broker" && target.kind == BROKER_CLASS)
    }

    fn open_log<'a>(
        &'a self,
        target: &'a LogTarget,
    ) -> BoxFuture<'a, Result<Arc<dyn Log>, LogError>> {
        Box::pin(async move {
            let TopicPlan {
                settings,
                partitions,
                replication,
                configs,
            } = self.plan(target)?;
            let broker = target.resource == "broker";
            let topic = if broker {
                broker_topic_name(&target.namespace, &target.name)
            } else {
                topic_name(&target.namespace, &target.name)
            };
            let configs: Vec<(&str, &str)> = configs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            crate::admin::ensure_topic_within(
                &settings,
                &topic,
                partitions,
                replication,
                &configs,
                OPEN_TIMEOUT,
            )
            .await
            .map_err(|e| {
                LogError::new(format!(
                    "Kafka {}: {e}",
                    settings.bootstrap_servers.join(",")
                ))
            })?;
            let producer =
                KafkaProducer::new(&settings).map_err(|e| LogError::new(e.to_string()))?;
            tracing::info!(topic = %topic, partitions, "Kafka topic ready");
            Ok(Arc::new(KafkaLog {
                settings,
                producer,
                topic,
                namespace: target.namespace.clone(),
                channel: target.name.clone(),
                broker,
                appends: Appends::default(),
            }) as Arc<dyn Log>)
        })
    }
}

/// One KafkaChannel's topic.
struct KafkaLog {
    settings: KafkaSettings,
    producer: KafkaProducer,
    topic: String,
    namespace: String,
    /// The channel's (or broker's) name.
    channel: String,
    /// Whether this is a Kafka-class Broker's topic (else a KafkaChannel's).
    broker: bool,
    /// What this process appended, per partition: its groups' cursors use it to tell when they
    /// are caught up.
    appends: Appends,
}

impl KafkaLog {
    /// The consumer group of a route on this log.
    fn group_of(&self, route: &str) -> String {
        if self.broker {
            trigger_group_name(&self.namespace, route)
        } else {
            group_name(&self.namespace, &self.channel, route)
        }
    }
}

/// How long [`commit_start`] keeps trying when the group's coordinator refuses a commit from
/// outside the group (longer than the 10 s session timeout, after which a member that is gone
/// no longer holds the group).
const COMMIT_START_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// Commits a start for `group` on the partitions of `topic` it has no committed offset for (a
/// new group), saved before the route runs: the first offset whose record was appended at or
/// after `created_ms` (the route's creation; Kafka's `ListOffsets` by time), so that records
/// appended between the route's creation and its start reach it; the partition's end when no
/// record is that recent or the time is unknown. Blocking.
///
/// The commit comes from outside the group (no member id). While the group has a generation —
/// another process with the same configuration started at the same time, or a member that is
/// gone but not yet expired — the coordinator may refuse it (`UnknownMemberId`,
/// `IllegalGeneration`, `RebalanceInProgress`): then the committed offsets are read again (the
/// other member may have committed the start itself) and the commit is retried, for at most
/// [`COMMIT_START_PATIENCE`].
fn commit_start(
    settings: &KafkaSettings,
    topic: &str,
    group: &str,
    created_ms: Option<u64>,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + COMMIT_START_PATIENCE;
    loop {
        match try_commit_start(settings, topic, group, created_ms) {
            Err((e, true)) if std::time::Instant::now() < deadline => {
                tracing::debug!(group, "start commit refused, trying again: {e}");
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Err((e, _)) => return Err(e),
            Ok(()) => return Ok(()),
        }
    }
}

/// One try of [`commit_start`]; the error says whether trying again may help.
fn try_commit_start(
    settings: &KafkaSettings,
    topic: &str,
    group: &str,
    created_ms: Option<u64>,
) -> Result<(), (String, bool)> {
    let fatal = |e: String| (e, false);
    let mut c = settings.client_config();
    c.set("group.id", group).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().map_err(|e| fatal(e.to_string()))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| fatal(format!("reading the partitions of {}: {e}", topic)))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    drop(metadata);
    let mut all = TopicPartitionList::new();
    for p in &partitions {
        all.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(all, REQUEST_TIMEOUT)
        .map_err(|e| fatal(format!("reading committed offsets: {e}")))?;
    let mut commit = TopicPartitionList::new();
    for e in committed.elements() {
        if matches!(e.offset(), Offset::Invalid) {
            let (_, high) = consumer
                .fetch_watermarks(topic, e.partition(), REQUEST_TIMEOUT)
                .map_err(|err| {
                    fatal(format!(
                        "reading the end of partition {}: {err}",
                        e.partition()
                    ))
                })?;
            let start = match created_ms {
                Some(ms) => {
                    first_since(&consumer, topic, e.partition(), ms, high).map_err(fatal)?
                }
                None => high,
            };
            commit
                .add_partition_offset(topic, e.partition(), Offset::Offset(start))
                .map_err(|err| fatal(err.to_string()))?;
        }
    }
    drop(committed);
    let result = if commit.count() > 0 {
        consumer.commit(&commit, CommitMode::Sync).map_err(|e| {
            let again = matches!(
                e.rdkafka_error_code(),
                Some(
                    rdkafka::types::RDKafkaErrorCode::UnknownMemberId
                        | rdkafka::types::RDKafkaErrorCode::IllegalGeneration
                        | rdkafka::types::RDKafkaErrorCode::RebalanceInProgress
                )
            );
            (format!("committing the start of group {group}: {e}"), again)
        })
    } else {
        Ok(())
    };
    drop(commit);
    drop(consumer);
    result
}

/// The first offset of `topic`/`partition` (whose end is `high`) appended at or after `ms`
/// (unix milliseconds), `high` when none was. Kafka's time index answers it; Tansu 0.6 answers
/// offset 0 for a time after the partition's last record, so the last record's time is read
/// first: when it is older, nothing was appended since. When that record cannot be read (a
/// control record, a slow broker), the time index's answer stands: at worst the route gets
/// records from before its creation, never fewer. Blocking; `consumer` is assigned the partition
/// for that read (no group membership, nothing committed).
fn first_since(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    ms: u64,
    high: i64,
) -> Result<i64, String> {
    if high <= 0 {
        return Ok(high);
    }
    let time_ms = i64::try_from(ms).unwrap_or(i64::MAX);
    match last_record_ms(consumer, topic, partition, high) {
        Some(last_ms) if last_ms < time_ms => return Ok(high),
        Some(_) => {}
        None => tracing::debug!(
            topic,
            partition,
            "the last record's time could not be read; the time index's answer stands"
        ),
    }
    let at = offset_at_time(consumer, topic, partition, time_ms)
        .map_err(|e| format!("{e} (the route's creation)"))?;
    // No record appended since: only new records.
    Ok(at.filter(|o| *o < high).unwrap_or(high))
}

/// The time (unix milliseconds) of the record at `high - 1`, when it can be read within
/// [`LAST_RECORD_PATIENCE`].
fn last_record_ms(consumer: &BaseConsumer, topic: &str, partition: i32, high: i64) -> Option<i64> {
    let mut last = TopicPartitionList::new();
    last.add_partition_offset(topic, partition, Offset::Offset(high - 1))
        .ok()?;
    consumer.assign(&last).ok()?;
    let deadline = std::time::Instant::now() + LAST_RECORD_PATIENCE;
    let mut found = None;
    while found.is_none() && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.partition() == partition && m.offset() >= high - 1 => {
                found = Some(m.timestamp().to_millis());
            }
            Some(Err(_)) => break,
            _ => {}
        }
    }
    let _ = consumer.unassign();
    found.flatten()
}

/// How long [`first_since`] tries to read a partition's last record.
const LAST_RECORD_PATIENCE: Duration = Duration::from_secs(5);

impl Log for KafkaLog {
    fn append<'a>(&'a self, event: &'a EventRecord) -> BoxFuture<'a, Result<Pos, LogError>> {
        Box::pin(async move {
            let (partition, offset) = self
                .producer
                .send(&self.topic, event)
                .await
                .map_err(|e| LogError::new(e.to_string()))?;
            let pos = Pos {
                partition: u32::try_from(partition).unwrap_or_default(),
                offset: u64::try_from(offset).unwrap_or_default(),
            };
            let mut appends = self.appends.lock().unwrap_or_else(|e| e.into_inner());
            let end = appends.entry(pos.partition).or_default();
            *end = (*end).max(pos.offset + 1);
            Ok(pos)
        })
    }

    fn open_group(
        &self,
        spec: RouteGroup,
    ) -> BoxFuture<'_, Result<Arc<dyn ConsumerGroup>, LogError>> {
        Box::pin(async move {
            let group = self.group_of(&spec.name);
            let (settings, topic, g) = (self.settings.clone(), self.topic.clone(), group.clone());
            let created_ms = spec.created_ms;
            tokio::task::spawn_blocking(move || commit_start(&settings, &topic, &g, created_ms))
                .await
                .map_err(|e| LogError::new(e.to_string()))?
                .map_err(LogError::new)?;
            let topic = self.topic.clone();
            let broker = self.broker;
            Ok(Arc::new(
                KafkaGroup::new(GroupSpec {
                    settings: self.settings.clone(),
                    group_id: group,
                    topics: vec![self.topic.clone()],
                    initial_offset: InitialOffset::Latest,
                    decode: Arc::new(move |r| match binding::decode(&r.headers, r.value) {
                        // As Knative's Kafka broker, a trigger's events say where they were.
                        Some(Ok(mut e)) if broker => {
                            e.set_extension(
                                "knativekafkapartition",
                                json!(r.partition.to_string()),
                            );
                            e.set_extension("knativekafkaoffset", json!(r.offset.to_string()));
                            Ok(e)
                        }
                        Some(result) => result,
                        None => Err(format!("a record of {topic} is not a CloudEvent")),
                    }),
                })
                .tracking_appends(self.appends.clone()),
            ) as Arc<dyn ConsumerGroup>)
        })
    }

    fn delete_group<'a>(&'a self, spec: &'a RouteGroup) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(async move {
            // Committed offsets of a deleted subscription expire with Kafka's offset retention.
            tracing::debug!(group = %self.group_of(&spec.name), "route deleted");
            Ok(())
        })
    }
}
