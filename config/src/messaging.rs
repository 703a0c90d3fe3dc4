//! The messaging and flows model (`messaging.knative.dev`, `flows.knative.dev`): channels, their
//! subscriptions, and what the data plane runs of them once validated.
//!
//! A Sequence or Parallel is wired as Knative's reconcilers wire it: into Channels and
//! Subscriptions (named `<seq>-kn-sequence-<i>`, `<p>-kn-parallel[-<i>]`); the data plane only ever
//! runs [`ChannelConfig`]s and [`SubscriptionConfig`]s.

use serde::{Deserialize, Serialize};

use crate::error::Location;
use crate::model::{DeliverySpec, Destination, KReference, ObjectMeta};
use crate::validate::Delivery;

/// `messaging.knative.dev/v1`.
pub const MESSAGING_V1: &str = "messaging.knative.dev/v1";
/// `flows.knative.dev/v1`.
pub const FLOWS_V1: &str = "flows.knative.dev/v1";

/// The channel implementations evmesh runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelKind {
    /// `messaging.knative.dev/v1` `InMemoryChannel`: Knative's semantics and addresses, but durable
    /// in evmesh (kept in the embedded store, like a broker's log).
    InMemory,
}

impl ChannelKind {
    /// The Kubernetes `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            ChannelKind::InMemory => "InMemoryChannel",
        }
    }
    /// The `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            ChannelKind::InMemory => MESSAGING_V1,
        }
    }
}

/// `spec.channelTemplate` of a Channel, Sequence or Parallel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTemplate {
    /// `apiVersion` of the channel kind, e.g. `messaging.knative.dev/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `kind`, e.g. `InMemoryChannel`.
    #[serde(default)]
    pub kind: String,
    /// The backing channel's `spec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
}

/// `spec` of an `InMemoryChannel` (Channelable: `delivery`; `subscribers` is server-managed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InMemoryChannelSpec {
    /// Default delivery of the channel's subscriptions (a Subscription's own replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
    /// Server-managed in Knative; accepted and ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<serde_json::Value>,
}

/// `spec` of a generic `Channel`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSpec {
    /// The backing channel's kind (default: InMemoryChannel, or the configured default channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template: Option<ChannelTemplate>,
    /// Default delivery of the channel's subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
    /// Server-managed in Knative; accepted and ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<serde_json::Value>,
}

/// `spec` of a `Subscription`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// The channel subscribed to (immutable).
    pub channel: KReference,
    /// Where events go; without one, every event goes straight to `reply` (identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<Destination>,
    /// Where the subscriber's replies go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
    /// Delivery options; when set they replace the channel's entirely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// A channel the data plane runs: an InMemoryChannel (written, or backing a Channel, Sequence or
/// Parallel).
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelConfig {
    /// Its kind.
    pub kind: ChannelKind,
    /// Namespace, name and the rest of its metadata.
    pub metadata: ObjectMeta,
    /// Default delivery for its subscriptions (`None`: a subscription without its own delivery
    /// is attempted once, with no dead-letter sink, as a Knative channel does).
    pub delivery: Option<Delivery>,
    /// Where its YAML is.
    pub location: Option<Location>,
}

/// A subscription the data plane runs.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionConfig {
    /// Namespace, name and the rest of its metadata.
    pub metadata: ObjectMeta,
    /// The channel it reads: kind and name, in the subscription's namespace (a generic `Channel` is
    /// already resolved to its backing channel).
    pub channel: (ChannelKind, String),
    /// Where events go (`None`: straight to `reply`).
    pub subscriber: Option<Destination>,
    /// Where replies go (`None`: replies are dropped).
    pub reply: Option<Destination>,
    /// Its own delivery; when `None` the channel's applies.
    pub delivery: Option<Delivery>,
    /// Where its YAML is.
    pub location: Option<Location>,
}
