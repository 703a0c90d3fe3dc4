//! Kafka for evmesh, through rdkafka (bundled librdkafka): one module that the Kafka parts share.
//!
//! - [`settings`]: client settings (bootstrap servers, session and produce timeouts, SASL/TLS)
//!   turned into librdkafka configuration; secrets are never printed.
//! - [`admin`]: creates a topic when it is missing, with partitions and replication.
//! - [`binding`]: the CloudEvents Kafka protocol binding (binary mode with `ce_` headers, key =
//!   the `partitionkey` extension; structured mode read too).
//! - [`producer`]: an idempotent `acks=all` producer that resolves once Kafka acknowledged.
//! - [`source`]: KafkaSource, a consumer group delivering to a sink through the shared
//!   delivery engine.
//! - [`group`]: a consumer group as the delivery engine's [`ConsumerGroup`]/[`Cursor`]: the
//!   consumer runs on its own thread (off the async runtime), and offsets are committed in
//!   order, only up to the first record whose delivery has not finished.
//!
//! [`ConsumerGroup`]: evmesh_broker::log::ConsumerGroup
//! [`Cursor`]: evmesh_broker::log::Cursor

pub mod admin;
pub mod binding;
pub mod channel;
pub mod group;
pub mod kafka_channel;
pub mod producer;
pub mod settings;
pub mod source;

pub use admin::{delete_topic, end_offsets, ensure_topic};
pub use channel::KafkaProvider;
pub use group::{Decode, GroupSpec, GroupStatus, InitialOffset, KafkaGroup, KafkaRecord};
pub use producer::KafkaProducer;
pub use settings::{KafkaSettings, Sasl, Tls};
pub use source::{KafkaSource, SinkPlan};

/// A Kafka operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The settings cannot make a client.
    #[error("kafka settings: {0}")]
    Settings(String),
    /// Kafka (or librdkafka) answered with an error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Kafka did not answer in time.
    #[error("kafka: {0} timed out")]
    Timeout(&'static str),
}
