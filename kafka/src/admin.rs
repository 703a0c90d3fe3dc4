//! Topic administration: create a topic when it is missing.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::{KafkaError, KafkaSettings};

/// How long a CreateTopics request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates `topic` with `partitions` and `replication` (and topic `configs` such as
/// `retention.ms`) unless it exists. Resolves `Ok(true)` when it created it, `Ok(false)` when it
/// was there already.
pub async fn ensure_topic(
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
    replication: i32,
    configs: &[(&str, &str)],
) -> Result<bool, KafkaError> {
    ensure_topic_within(
        settings,
        topic,
        partitions,
        replication,
        configs,
        ADMIN_TIMEOUT,
    )
    .await
}

/// [`ensure_topic`], failing after `timeout` (e.g. while Kafka is unreachable).
pub(crate) async fn ensure_topic_within(
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
    replication: i32,
    configs: &[(&str, &str)],
    timeout: Duration,
) -> Result<bool, KafkaError> {
    // A topic that exists is not created again (fewer rights needed, and Kafka-protocol
    // brokers that do not implement CreateTopics, such as librdkafka's mock cluster, work).
    if topic_exists(settings, topic, timeout).await? {
        return Ok(false);
    }
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create()?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = tokio::time::timeout(timeout, admin.create_topics([&new], &opts))
        .await
        .map_err(|_| KafkaError::Timeout("creating a topic"))??;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((name, code))) => Err(KafkaError::Settings(format!(
            "creating topic {name}: {code}"
        ))),
        None => Err(KafkaError::Settings(format!(
            "creating topic {topic}: no answer"
        ))),
    }
}

/// Whether `topic` exists with at least one partition (a metadata request).
async fn topic_exists(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<bool, KafkaError> {
    let settings = settings.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let mut c = settings.client_config();
        c.set("allow.auto.create.topics", "false");
        let consumer: BaseConsumer = c.create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        drop(metadata);
        Ok(exists)
    })
    .await
    .map_err(|_| KafkaError::Timeout("reading topic metadata"))?
}

/// Deletes `topic` (a missing topic is not an error).
pub async fn delete_topic(settings: &KafkaSettings, topic: &str) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create()?;
    let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = tokio::time::timeout(ADMIN_TIMEOUT, admin.delete_topics(&[topic], &opts))
        .await
        .map_err(|_| KafkaError::Timeout("deleting a topic"))??;
    match results.into_iter().next() {
        Some(Err((name, code))) if code != RDKafkaErrorCode::UnknownTopicOrPartition => Err(
            KafkaError::Settings(format!("deleting topic {name}: {code}")),
        ),
        _ => Ok(()),
    }
}

/// The end offset of each partition of `topic` (how many records it has had, per partition).
pub async fn end_offsets(settings: &KafkaSettings, topic: &str) -> Result<Vec<i64>, KafkaError> {
    let settings = settings.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = settings.client_config().create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), ADMIN_TIMEOUT)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        drop(metadata);
        let mut ends = Vec::new();
        for p in partitions {
            ends.push(consumer.fetch_watermarks(&topic, p, ADMIN_TIMEOUT)?.1);
        }
        Ok(ends)
    })
    .await
    .map_err(|_| KafkaError::Timeout("reading end offsets"))?
}
