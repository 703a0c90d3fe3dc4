//! evmesh's channel kinds and Subscription. A channel is a log plus its subscriptions; each
//! subscription is one run of the broker service's one delivery engine (no delivery code here).
//!
//! - [`in_memory_channel`], [`channel`], [`nats_jetstream_channel`], [`subscription`]: the
//!   runtime half of each kind (its status from what runs), registered once in the facade; the
//!   validation half is registered in `evmesh_config`'s kind registry. [`status`] holds what
//!   they share with the flows built of them.
//! - [`nats`]: `messaging.knative.dev/v1alpha1` `NatsJetStreamChannel` (Knative's eventing-natss)
//!   on NATS JetStream: a stream per channel, a durable pull consumer per subscription.

pub mod channel;
pub mod in_memory_channel;
pub mod nats;
pub mod nats_jetstream_channel;
pub mod status;
pub mod subscription;

pub use nats::{DEFAULT_NATS_URL, NatsProvider};
