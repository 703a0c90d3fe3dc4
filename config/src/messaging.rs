//! The messaging model (`messaging.knative.dev`): channels, their subscriptions, and what the
//! data plane runs of them once validated.
//!
//! A Channel, Sequence or Parallel is wired as Knative's reconcilers wire it: into channels and
//! Subscriptions (the flows kinds live in `evmesh-flows`); the data plane only ever runs
//! [`ChannelConfig`]s and [`SubscriptionConfig`]s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Location;
use crate::model::{DeliverySpec, Destination, KReference, ObjectMeta};
use crate::validate::Delivery;

pub(crate) mod check;
pub mod wiring;

/// `messaging.knative.dev/v1`.
pub const MESSAGING_V1: &str = "messaging.knative.dev/v1";
/// `flows.knative.dev/v1`.
pub const FLOWS_V1: &str = "flows.knative.dev/v1";
/// `messaging.knative.dev/v1beta1`: the version eventing-kafka-broker serves KafkaChannel as.
pub const MESSAGING_V1BETA1: &str = "messaging.knative.dev/v1beta1";
/// `messaging.knative.dev/v1alpha1`: the version eventing-natss serves NatsJetStreamChannel as.
pub const MESSAGING_V1ALPHA1: &str = "messaging.knative.dev/v1alpha1";

/// The channel implementations evmesh runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelKind {
    /// `messaging.knative.dev/v1` `InMemoryChannel`: Knative's semantics and addresses, but durable
    /// in evmesh (kept in the embedded store, like a broker's log).
    InMemory,
    /// `messaging.knative.dev/v1alpha1` `NatsJetStreamChannel` (Knative's eventing-natss): a
    /// JetStream stream per channel, a durable pull consumer per subscription.
    NatsJetStream,
    /// `messaging.knative.dev/v1beta1` `KafkaChannel` (Knative's eventing-kafka-broker): a topic
    /// per channel, a consumer group per subscription.
    Kafka,
}

/// Channel kinds Knative users write that evmesh does not run yet.
const NOT_RUN_YET: &[&str] = &[];

/// Every channel kind evmesh runs.
const ALL_KINDS: [ChannelKind; 3] = [
    ChannelKind::InMemory,
    ChannelKind::NatsJetStream,
    ChannelKind::Kafka,
];

impl ChannelKind {
    /// The channel kind a `channelTemplate` (or a channel `ref`) names: its `apiVersion` and
    /// `kind`. An empty `apiVersion` is accepted for a kind evmesh knows.
    ///
    /// ```
    /// use evmesh_config::ChannelKind;
    /// assert_eq!(ChannelKind::from_template("messaging.knative.dev/v1", "InMemoryChannel"), Ok(ChannelKind::InMemory));
    /// assert_eq!(ChannelKind::from_template("messaging.knative.dev/v1beta1", "KafkaChannel"), Ok(ChannelKind::Kafka));
    /// assert!(ChannelKind::from_template("messaging.knative.dev/v1", "KafkaChannel").is_err());
    /// ```
    pub fn from_template(api_version: &str, kind: &str) -> Result<ChannelKind, String> {
        if let Some(k) = ALL_KINDS.iter().find(|k| k.kind() == kind) {
            if !api_version.is_empty() && api_version != k.api_version() {
                return Err(format!(
                    "{kind} is served as {:?}, not {api_version:?}",
                    k.api_version()
                ));
            }
            return Ok(*k);
        }
        if NOT_RUN_YET.contains(&kind) {
            return Err(format!(
                "{kind} is not run by evmesh yet; use InMemoryChannel (durable in evmesh)"
            ));
        }
        if kind.is_empty() {
            return Err("a channel kind is required (e.g. InMemoryChannel)".into());
        }
        Err(format!(
            "{kind:?} is not a channel kind evmesh knows (it runs InMemoryChannel, NatsJetStreamChannel and KafkaChannel)"
        ))
    }

    /// A `channelTemplate` naming this kind (no spec).
    pub fn template(self) -> ChannelTemplate {
        ChannelTemplate {
            api_version: self.api_version().to_string(),
            kind: self.kind().to_string(),
            spec: None,
        }
    }

    /// The Kubernetes `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            ChannelKind::InMemory => "InMemoryChannel",
            ChannelKind::NatsJetStream => "NatsJetStreamChannel",
            ChannelKind::Kafka => "KafkaChannel",
        }
    }
    /// The `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            ChannelKind::InMemory => MESSAGING_V1,
            ChannelKind::NatsJetStream => MESSAGING_V1ALPHA1,
            ChannelKind::Kafka => MESSAGING_V1BETA1,
        }
    }
}

/// Parses the `serve --default-channel` value: a kind (`InMemoryChannel`), its short name
/// (`imc`) or `apiVersion/Kind` (`messaging.knative.dev/v1/InMemoryChannel`).
///
/// ```
/// use evmesh_config::ChannelKind;
/// assert_eq!("imc".parse::<ChannelKind>(), Ok(ChannelKind::InMemory));
/// assert_eq!("KafkaChannel".parse::<ChannelKind>(), Ok(ChannelKind::Kafka));
/// ```
impl std::str::FromStr for ChannelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<ChannelKind, String> {
        if s.eq_ignore_ascii_case("imc") || s.eq_ignore_ascii_case("inmemorychannel") {
            return Ok(ChannelKind::InMemory);
        }
        if s.eq_ignore_ascii_case("natsjetstreamchannel") || s.eq_ignore_ascii_case("jsm") {
            return Ok(ChannelKind::NatsJetStream);
        }
        match s.rsplit_once('/') {
            Some((api, kind)) => ChannelKind::from_template(api, kind),
            None => ChannelKind::from_template("", s),
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

/// `spec` of a `KafkaChannel` (eventing-kafka-broker's `KafkaChannelSpec`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaChannelSpec {
    /// Partitions of the channel's topic (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_partitions: Option<i32>,
    /// Replication factor of the topic (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    /// Retention of the topic, ISO-8601 (default `PT168H`, 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_duration: Option<String>,
    /// Default delivery of the channel's subscriptions (a Subscription's own replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
    /// Server-managed in Knative; accepted and ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<serde_json::Value>,
}

/// `spec` of a `NatsJetStreamChannel` (eventing-natss's `NatsJetStreamChannelSpec`): the
/// Channelable fields plus how the stream and the consumers are made.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NatsJetStreamChannelSpec {
    /// Default delivery of the channel's subscriptions (a Subscription's own replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
    /// Server-managed in Knative; accepted and ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<serde_json::Value>,
    /// The stream: `overrideName` replaces the generated `KN_<NAMESPACE>__<NAME>`; `config`
    /// (JetStream stream settings) is accepted, and evmesh uses `maxAge`, `maxMsgs`,
    /// `maxBytes` and `storage` of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<serde_json::Value>,
    /// Consumer settings of each subscription; evmesh uses `ackWait` and `maxAckPending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_config_template: Option<serde_json::Value>,
    /// Dispatcher Deployment settings in Kubernetes; accepted and ignored (evmesh dispatches
    /// in-process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_spec_template: Option<serde_json::Value>,
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
    /// The kind's own `spec` as written (e.g. a NatsJetStreamChannel's `stream` and
    /// `consumerConfigTemplate`); `Null` when it has none.
    pub spec: serde_json::Value,
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

/// Name of eventing-natss's ConfigMap that says where NATS is.
pub const NATS_CONFIGMAP: &str = "config-nats";
/// Key of [`NATS_CONFIGMAP`]'s data holding the NATS settings (YAML with `url`).
pub const NATS_CONFIG_KEY: &str = "eventing-nats";

/// Name of the `default-ch-webhook` ConfigMap that sets the default channel, as Knative's.
pub const DEFAULT_CHANNEL_CONFIGMAP: &str = "default-ch-webhook";
/// Namespace of [`DEFAULT_CHANNEL_CONFIGMAP`].
pub const DEFAULT_CHANNEL_CONFIGMAP_NAMESPACE: &str = "knative-eventing";
/// Key of [`DEFAULT_CHANNEL_CONFIGMAP`]'s data holding the defaults (YAML).
pub const DEFAULT_CHANNEL_CONFIG_KEY: &str = "default-ch-config";

/// The channel kind a Channel, Sequence or Parallel without `channelTemplate` gets: a cluster
/// default and per-namespace defaults (Knative's `default-ch-webhook` ConfigMap; `serve
/// --default-channel` sets the cluster default).
///
/// ```
/// use evmesh_config::messaging::ChannelDefaults;
/// let d = ChannelDefaults::default();
/// assert_eq!(d.template_for("default").kind, "InMemoryChannel");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelDefaults {
    /// The default everywhere a namespace has none of its own.
    #[serde(default = "imc_template")]
    pub cluster_default: ChannelTemplate,
    /// Defaults per namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_defaults: BTreeMap<String, ChannelTemplate>,
}

fn imc_template() -> ChannelTemplate {
    ChannelKind::InMemory.template()
}

impl Default for ChannelDefaults {
    fn default() -> Self {
        ChannelDefaults {
            cluster_default: imc_template(),
            namespace_defaults: BTreeMap::new(),
        }
    }
}

impl ChannelDefaults {
    /// Defaults with `kind` as the cluster default.
    pub fn with_cluster_default(kind: ChannelKind) -> Self {
        ChannelDefaults {
            cluster_default: kind.template(),
            namespace_defaults: BTreeMap::new(),
        }
    }

    /// The template a channel in namespace `ns` gets when it names none.
    pub fn template_for(&self, ns: &str) -> &ChannelTemplate {
        self.namespace_defaults
            .get(ns)
            .unwrap_or(&self.cluster_default)
    }

    /// `template` when set, else the one a channel in namespace `ns` gets.
    ///
    /// ```
    /// use evmesh_config::messaging::ChannelDefaults;
    /// assert_eq!(ChannelDefaults::default().template_or_default(&None, "demo").kind, "InMemoryChannel");
    /// ```
    pub fn template_or_default(
        &self,
        template: &Option<ChannelTemplate>,
        ns: &str,
    ) -> ChannelTemplate {
        template
            .clone()
            .unwrap_or_else(|| self.template_for(ns).clone())
    }
}

/// The Channel, Sequence or Parallel a channel or subscription was generated for: its
/// controlling owner (`metadata.ownerReferences` with `controller: true`) when that is one of
/// those kinds, as `(kind, name)`; `None` for a resource a user wrote.
pub fn owner_of(meta: &ObjectMeta) -> Option<(String, String)> {
    let refs = meta.other.get("ownerReferences")?.as_array()?;
    let owner = refs
        .iter()
        .find(|r| r.get("controller").and_then(serde_json::Value::as_bool) == Some(true))?;
    let api = owner.get("apiVersion")?.as_str()?;
    let kind = owner.get("kind")?.as_str()?;
    let generator = crate::registry::generator(api, kind).is_some();
    generator.then(|| Some((kind.to_string(), owner.get("name")?.as_str()?.to_string())))?
}
