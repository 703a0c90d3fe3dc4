//! The Knative resource model evmesh reads: typed `spec`s of the kinds it serves, as in the YAML.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use evmesh_filter::FilterSpec;

/// `metadata` of any resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// `metadata.name` (required).
    pub name: String,
    /// `metadata.namespace`, `default` when absent.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// `metadata.labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `metadata.uid`: set by evmesh when the resource is first stored, kept for its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// `metadata.generation`: bumped on every change of `spec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// `metadata.resourceVersion`: bumped on every change, for optimistic writes and watches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// `metadata.creationTimestamp` (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// `metadata.deletionTimestamp` (RFC 3339), while a deleted resource drains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    /// Other Kubernetes metadata fields (`managedFields`, `ownerReferences`, `finalizers`, ...),
    /// kept as given so `kubectl` round-trips them.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, serde_json::Value>,
}

fn default_namespace() -> String {
    "default".to_string()
}

impl ObjectMeta {
    /// Metadata with a name in the `default` namespace.
    ///
    /// ```
    /// let meta = evmesh_config::ObjectMeta::named("orders");
    /// assert_eq!((meta.namespace.as_str(), meta.name.as_str()), ("default", "orders"));
    /// ```
    pub fn named(name: &str) -> Self {
        ObjectMeta {
            name: name.to_string(),
            namespace: default_namespace(),
            ..Default::default()
        }
    }
    /// Metadata with a name and a namespace.
    ///
    /// ```
    /// let meta = evmesh_config::ObjectMeta::namespaced("shop", "orders");
    /// assert_eq!((meta.namespace.as_str(), meta.name.as_str()), ("shop", "orders"));
    /// ```
    pub fn namespaced(namespace: &str, name: &str) -> Self {
        ObjectMeta {
            name: name.to_string(),
            namespace: namespace.to_string(),
            ..Default::default()
        }
    }
}

/// A reference to another resource (`duckv1.KReference`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KReference {
    /// `apiVersion`, e.g. `eventing.knative.dev/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `kind`, e.g. `Broker`.
    pub kind: String,
    /// `name`.
    pub name: String,
    /// `namespace`, defaults to the referrer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Where to send events (`duckv1.Destination`): a `ref`, a `uri`, or a `ref` plus a relative `uri`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// The referenced addressable.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    /// An absolute URL, or a URL relative to the `ref`'s address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// `CACerts`: PEM CA certificates trusted for this destination (added to the web PKI roots).
    #[serde(default, rename = "CACerts", skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
    /// `audience` (OIDC): not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

impl Destination {
    /// A destination with just a URI.
    ///
    /// ```
    /// let sink = evmesh_config::Destination::uri("http://127.0.0.1:8080/orders");
    /// assert_eq!(sink.uri.as_deref(), Some("http://127.0.0.1:8080/orders"));
    /// assert!(sink.reference.is_none());
    /// ```
    pub fn uri(uri: &str) -> Self {
        Destination {
            uri: Some(uri.to_string()),
            ..Default::default()
        }
    }
}

/// `backoffPolicy` of a [`DeliverySpec`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffPolicy {
    /// `delay × k` before retry k.
    Linear,
    /// `delay × 2^(k-1)` before retry k.
    #[default]
    Exponential,
}

/// `format` of a [`DeliverySpec`]: the content mode of deliveries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryFormat {
    /// Binary content mode (the default).
    #[default]
    Binary,
    /// Structured content mode (`application/cloudevents+json`).
    Json,
}

/// Knative's `DeliverySpec` as written in YAML (durations still ISO-8601 strings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySpec {
    /// Where events go when delivery finally fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink: Option<Destination>,
    /// Retries after the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<i64>,
    /// `linear` or `exponential`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_policy: Option<BackoffPolicy>,
    /// ISO-8601 duration, e.g. `PT0.2S`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_delay: Option<String>,
    /// Per-attempt timeout, ISO-8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Cap for `Retry-After` on 429/503, ISO-8601; `PT0S` disables Retry-After.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_max: Option<String>,
    /// `json` (structured) or `binary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DeliveryFormat>,
}

/// `spec` of a Broker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSpec {
    /// `spec.config` (the class's configuration object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<KReference>,
    /// Default delivery for triggers that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// The legacy `spec.filter` of a Trigger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerFilter {
    /// Exact attribute matches; `""` means "present".
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// `spec` of a Trigger.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSpec {
    /// Name of the broker in the trigger's namespace (or give `brokerRef`).
    #[serde(default)]
    pub broker: String,
    /// Knative's newer form of `broker`: a reference to the Broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_ref: Option<KReference>,
    /// Legacy exact-attribute filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<TriggerFilter>,
    /// Subscriptions API filters; when non-empty they replace `filter`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterSpec>,
    /// Where matching events go.
    pub subscriber: Destination,
    /// Delivery options; when set they replace the broker's entirely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// A Broker resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Broker {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: BrokerSpec,
}

/// A Trigger resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: TriggerSpec,
}

/// A resource of a kind evmesh does not serve, kept so `ref`s to it resolve through its
/// `status.address.url` / `status.url` (the Addressable duck type).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalResource {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// The address it declares, if any.
    #[serde(skip)]
    pub address: Option<String>,
}

/// Any resource evmesh reads.
// Built once per resource at configuration time, never in a hot path: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    /// `eventing.knative.dev/v1` Broker.
    Broker(Broker),
    /// `eventing.knative.dev/v1` Trigger.
    Trigger(Trigger),
    /// Another kind, addressable through its declared status.
    External(ExternalResource),
}

/// `eventing.knative.dev/v1`.
pub const EVENTING_V1: &str = "eventing.knative.dev/v1";
