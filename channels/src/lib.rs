//! evmesh's channel kinds whose events live outside the embedded store. Each is a
//! [`LogProvider`](evmesh_broker::log::LogProvider) the facade registers with the broker service;
//! delivery is the service's one delivery engine, over the provider's cursors.
//!
//! - [`nats`]: `messaging.knative.dev/v1alpha1` `NatsJetStreamChannel` (Knative's eventing-natss)
//!   on NATS JetStream: a stream per channel, a durable pull consumer per subscription.

pub mod nats;

pub use nats::{DEFAULT_NATS_URL, NatsProvider};
