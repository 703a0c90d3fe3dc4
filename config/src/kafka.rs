//! Knative's Kafka ConfigMaps: a Kafka-class Broker's `spec.config` (`kafka-broker-config`) and
//! the KafkaChannels' `kafka-channel-config`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Key of the brokers to connect to (`host:port`, comma-separated), as Knative's.
pub const BOOTSTRAP_SERVERS_KEY: &str = "bootstrap.servers";
/// Key of the partitions a Kafka-class Broker's topic is created with.
pub const TOPIC_PARTITIONS_KEY: &str = "default.topic.partitions";
/// Key of the replication factor a Kafka-class Broker's topic is created with.
pub const TOPIC_REPLICATION_KEY: &str = "default.topic.replication.factor";
/// Prefix of topic configuration entries (`default.topic.config.retention.ms: "3600000"`).
pub const TOPIC_CONFIG_PREFIX: &str = "default.topic.config.";
/// Key of Knative's Secret reference for SASL/TLS to a Kafka-class Broker's Kafka (not supported:
/// a warning says so).
pub const AUTH_SECRET_REF_KEY: &str = "auth.secret.ref.name";
/// Name of Knative's ConfigMap that says where the KafkaChannels' Kafka is.
pub const KAFKA_CHANNEL_CONFIGMAP: &str = "kafka-channel-config";
/// Namespace of [`KAFKA_CHANNEL_CONFIGMAP`].
pub const KAFKA_CHANNEL_CONFIGMAP_NAMESPACE: &str = "knative-eventing";

/// A Kafka-class Broker's topic and Kafka, from the `v1` ConfigMap its `spec.config` names
/// (Knative's `kafka-broker-config` shape; all three keys are required, as Knative requires
/// them).
///
/// ```
/// use evmesh_config::kafka::KafkaBrokerConfig;
/// let data = serde_json::json!({
///     "bootstrap.servers": "k1:9092, k2:9092",
///     "default.topic.partitions": "10",
///     "default.topic.replication.factor": "3",
///     "default.topic.config.retention.ms": "3600000",
/// });
/// let c = KafkaBrokerConfig::from_data(data.as_object().unwrap()).unwrap();
/// assert_eq!(c.bootstrap_servers, ["k1:9092", "k2:9092"]);
/// assert_eq!((c.partitions, c.replication_factor), (10, 3));
/// assert_eq!(c.topic_config["retention.ms"], "3600000");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaBrokerConfig {
    /// `bootstrap.servers`, split at commas.
    pub bootstrap_servers: Vec<String>,
    /// `default.topic.partitions`.
    pub partitions: i32,
    /// `default.topic.replication.factor`.
    pub replication_factor: i32,
    /// `default.topic.config.*` entries, without the prefix (e.g. `retention.ms`).
    #[serde(default)]
    pub topic_config: BTreeMap<String, String>,
}

/// A ConfigMap value as text (Kubernetes stores strings; a YAML number is read as one too).
fn text(data: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
        Some(_) => Err(format!("data.{key} must be a string")),
    }
}

/// `host:port` entries of a `bootstrap.servers` value (blanks dropped).
///
/// ```
/// assert_eq!(evmesh_config::kafka::split_servers(" a:1, ,b:2"), ["a:1", "b:2"]);
/// ```
pub fn split_servers(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl KafkaBrokerConfig {
    /// Reads a ConfigMap's `data`.
    ///
    /// # Errors
    /// A required key is missing or not a positive number, or `bootstrap.servers` is empty; the
    /// message names the key.
    pub fn from_data(data: &Map<String, Value>) -> Result<KafkaBrokerConfig, String> {
        let positive = |key: &str| -> Result<i32, String> {
            let v = text(data, key)?.ok_or_else(|| format!("data.{key} is required"))?;
            v.parse::<i32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("data.{key} must be a positive integer, got {v:?}"))
        };
        let servers = text(data, BOOTSTRAP_SERVERS_KEY)?
            .map(|s| split_servers(&s))
            .unwrap_or_default();
        if servers.is_empty() {
            return Err(format!("data.{BOOTSTRAP_SERVERS_KEY} is required"));
        }
        let mut topic_config = BTreeMap::new();
        for key in data.keys() {
            if let Some(name) = key.strip_prefix(TOPIC_CONFIG_PREFIX)
                && let Some(v) = text(data, key)?
            {
                topic_config.insert(name.to_string(), v);
            }
        }
        Ok(KafkaBrokerConfig {
            bootstrap_servers: servers,
            partitions: positive(TOPIC_PARTITIONS_KEY)?,
            replication_factor: positive(TOPIC_REPLICATION_KEY)?,
            topic_config,
        })
    }
}

/// The `bootstrap.servers` of a `kafka-channel-config` ConfigMap's `data`.
///
/// # Errors
/// The key is missing, empty or not a string.
///
/// ```
/// let data = serde_json::json!({"bootstrap.servers": "k:9092"});
/// let servers = evmesh_config::kafka::channel_bootstrap(data.as_object().unwrap()).unwrap();
/// assert_eq!(servers, ["k:9092"]);
/// ```
pub fn channel_bootstrap(data: &Map<String, Value>) -> Result<Vec<String>, String> {
    let servers = text(data, BOOTSTRAP_SERVERS_KEY)?
        .map(|s| split_servers(&s))
        .unwrap_or_default();
    if servers.is_empty() {
        return Err(format!("data.{BOOTSTRAP_SERVERS_KEY} is required"));
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_missing_partition_count_is_an_error_naming_the_key() {
        let e = KafkaBrokerConfig::from_data(&data(json!({
            "bootstrap.servers": "k:9092",
            "default.topic.replication.factor": "1",
        })))
        .expect_err("partitions are required");
        assert!(e.contains("default.topic.partitions"), "{e}");
    }

    #[test]
    fn a_zero_replication_factor_is_an_error() {
        let e = KafkaBrokerConfig::from_data(&data(json!({
            "bootstrap.servers": "k:9092",
            "default.topic.partitions": "3",
            "default.topic.replication.factor": "0",
        })))
        .expect_err("replication must be positive");
        assert!(e.contains("replication.factor"), "{e}");
    }

    #[test]
    fn yaml_numbers_are_read_as_their_text() {
        let c = KafkaBrokerConfig::from_data(&data(json!({
            "bootstrap.servers": "k:9092",
            "default.topic.partitions": 3,
            "default.topic.replication.factor": 1,
        })))
        .expect("valid");
        assert_eq!((c.partitions, c.replication_factor), (3, 1));
    }

    #[test]
    fn empty_bootstrap_servers_are_an_error() {
        assert!(channel_bootstrap(&data(json!({"bootstrap.servers": " , "}))).is_err());
    }
}
