//! An idempotent `acks=all` producer of events in the CloudEvents Kafka binary binding.

use std::time::Duration;

use evmesh_broker::record::EventRecord;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::settings::ms;
use crate::{KafkaError, KafkaSettings, binding};

/// Bytes the producer may queue before a produce fails at once (back-pressure, not memory).
const QUEUE_MAX_KBYTES: u32 = 64 * 1024;

/// A producer: each [`send`](KafkaProducer::send) resolves once Kafka acknowledged the record on
/// all in-sync replicas, or fails within the settings' `message_timeout`.
#[derive(Clone)]
pub struct KafkaProducer {
    producer: FutureProducer,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer").finish_non_exhaustive()
    }
}

impl KafkaProducer {
    /// A producer for `settings`: idempotent, `acks=all`, `partitioner=murmur2_random` (keys land
    /// on the partition Java producers choose), `message.timeout.ms` from the settings.
    pub fn new(settings: &KafkaSettings) -> Result<KafkaProducer, KafkaError> {
        let mut c = settings.client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", ms(settings.message_timeout))
            .set("queue.buffering.max.kbytes", QUEUE_MAX_KBYTES.to_string())
            .set("linger.ms", "2");
        Ok(KafkaProducer {
            producer: c.create()?,
        })
    }

    /// Produces `event` to `topic` in binary mode (key = its `partitionkey`); resolves with the
    /// partition and offset once acknowledged.
    pub async fn send(&self, topic: &str, event: &EventRecord) -> Result<(i32, i64), KafkaError> {
        let encoded = binding::encode(event);
        let mut record = FutureRecord::to(topic)
            .payload(encoded.value.as_ref())
            .headers(encoded.headers);
        if let Some(key) = &encoded.key {
            record = record.key(key.as_bytes());
        }
        // A full local queue fails at once (the caller answers 503) rather than waiting.
        match self.producer.send(record, Duration::ZERO).await {
            Ok(d) => Ok((d.partition, d.offset)),
            Err((e, _)) => Err(KafkaError::Kafka(e)),
        }
    }

    /// Produces raw bytes (a record that is not a CloudEvent, e.g. for tests and tools).
    pub async fn send_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        headers: &[(&str, &[u8])],
        value: &[u8],
    ) -> Result<(i32, i64), KafkaError> {
        let mut h = rdkafka::message::OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in headers {
            h = h.insert(rdkafka::message::Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record = FutureRecord::to(topic).payload(value).headers(h);
        if let Some(key) = key {
            record = record.key(key);
        }
        match self.producer.send(record, Duration::ZERO).await {
            Ok(d) => Ok((d.partition, d.offset)),
            Err((e, _)) => Err(KafkaError::Kafka(e)),
        }
    }
}
