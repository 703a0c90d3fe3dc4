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
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create()?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = tokio::time::timeout(ADMIN_TIMEOUT, admin.create_topics([&new], &opts))
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
