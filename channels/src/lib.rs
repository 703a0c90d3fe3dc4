//! evmesh's channel kinds and Subscription. A channel is a log plus its subscriptions; each
//! subscription is one run of the broker service's one delivery engine (no delivery code here).
//!
//! - [`in_memory_channel`], [`nats_jetstream_channel`]: channel kinds written as themselves,
//!   each one value of the table-driven [`kind::ChannelType`] holding both halves of the kind
//!   (validation and status), registered by one line in the facade (KafkaChannel is
//!   `evmesh-kafka`'s, the same way).
//! - [`channel`], [`subscription`]: the runtime half of Channel and Subscription (their status
//!   from what runs); their validation half is still `evmesh_config`'s. [`status`] holds what
//!   they share with the flows built of them.
//! - [`nats`]: `messaging.knative.dev/v1alpha1` `NatsJetStreamChannel` (Knative's eventing-natss)
//!   on NATS JetStream: a stream per channel, a durable pull consumer per subscription.

pub mod channel;
pub mod in_memory_channel;
pub mod kind;
pub mod nats;
pub mod nats_jetstream_channel;
pub mod status;
pub mod subscription;

pub use nats::{DEFAULT_NATS_URL, NatsProvider};

/// `messaging.knative.dev`.
const MESSAGING: &str = "messaging.knative.dev";
