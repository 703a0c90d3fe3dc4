//! evmesh's channel kinds and Subscription. A channel is a log plus its subscriptions; each
//! subscription is one run of the broker service's one delivery engine (no delivery code here).
//! Each kind is one module holding both its halves (validation, `evmesh_config::registry::Kind`;
//! status, `evmesh_broker::kind::RuntimeKind`), registered by one line in the facade.
//!
//! - [`in_memory_channel`], [`nats_jetstream_channel`]: channel kinds written as themselves,
//!   each one value of the table-driven [`kind::ChannelType`] (KafkaChannel is `evmesh-kafka`'s,
//!   the same way).
//! - [`channel`]: Channel, backed by a channel of its `channelTemplate` kind;
//!   [`subscription`]: Subscription. [`status`] holds what they share with the flows built of
//!   them.
//!
//! ```
//! use evmesh_config::registry::Kind;
//! assert_eq!(evmesh_channels::subscription::Subscription.versions()[0].short_names, ["sub"]);
//! ```
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
