//! The kind registry: every kind evmesh reads, registered once ([`REGISTRY`]) with its API
//! coordinates, its validation, how refs to it resolve and what it contributes to a
//! [`MeshConfig`]. Validation, the resolver, the admin API, kubectl discovery and the runtime
//! look kinds up here; the kinds themselves are one module each under `config/src/kinds/`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::MeshConfig;
use crate::loader::Document;
use crate::model::{Broker, ExternalResource, ObjectMeta, Trigger};
use crate::validate::Ctx;

/// One kind evmesh serves through its API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindInfo {
    /// API group, e.g. `eventing.knative.dev`.
    pub group: &'static str,
    /// Version, e.g. `v1`.
    pub version: &'static str,
    /// Kind, e.g. `Trigger`.
    pub kind: &'static str,
    /// Plural resource name, e.g. `triggers`.
    pub plural: &'static str,
    /// Singular resource name, e.g. `trigger`.
    pub singular: &'static str,
    /// Short names as Knative's CRDs declare them.
    pub short_names: &'static [&'static str],
    /// Categories (`kubectl get all`, `kubectl get knative`...) as Knative's CRDs declare them.
    pub categories: &'static [&'static str],
    /// The columns `kubectl get` prints after NAME: the CRD's `additionalPrinterColumns`.
    pub printer_columns: &'static [PrinterColumn],
    /// The OpenAPI v3 schema of `spec` (JSON text), as the CRD's `openAPIV3Schema` declares it.
    pub spec_schema: &'static str,
    /// One line describing the kind (`kubectl explain`).
    pub description: &'static str,
}

/// One column of `kubectl get` output, as a CRD's `additionalPrinterColumns` entry declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column name, e.g. `Ready`.
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: &'static str,
    /// JSONPath into the object, in the CRD's syntax, e.g. `.status.address.url`.
    pub json_path: &'static str,
    /// What the column shows.
    pub description: &'static str,
    /// 0: always shown; 1 and above: shown with `-o wide`.
    pub priority: u32,
}

pub(crate) const READY: &str = ".status.conditions[?(@.type==\"Ready\")].status";
pub(crate) const REASON: &str = ".status.conditions[?(@.type==\"Ready\")].reason";

pub(crate) const AGE: PrinterColumn = PrinterColumn {
    name: "Age",
    type_: "date",
    json_path: ".metadata.creationTimestamp",
    description: "",
    priority: 0,
};
pub(crate) const READY_COL: PrinterColumn = PrinterColumn {
    name: "Ready",
    type_: "string",
    json_path: READY,
    description: "",
    priority: 0,
};
pub(crate) const URL_COL: PrinterColumn = PrinterColumn {
    name: "URL",
    type_: "string",
    json_path: ".status.address.url",
    description: "",
    priority: 0,
};
pub(crate) const REASON_COL: PrinterColumn = PrinterColumn {
    name: "Reason",
    type_: "string",
    json_path: REASON,
    description: "",
    priority: 0,
};

pub(crate) const SINK_COL: PrinterColumn = PrinterColumn {
    name: "Sink",
    type_: "string",
    json_path: ".status.sinkUri",
    description: "",
    priority: 0,
};
impl KindInfo {
    /// `group/version`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }
}

/// How a `ref` to a kind is checked while validating and resolved at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refs {
    /// Refs to a resource that is not declared resolve through the URL template (sources,
    /// EventDisplay, kinds evmesh does not serve).
    Loose,
    /// A broker: a ref to a missing one is warned about while validating and fails to resolve.
    Broker,
    /// A channel evmesh runs, or a kind whose address is one (Channel, Sequence, Parallel): a ref
    /// to a missing one is warned about while validating and fails to resolve.
    Channel,
    /// Served but never addressable (Subscription): a ref to it fails to resolve.
    Strict,
}

/// A `spec` field that may not change (a change is `422`, as in Knative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Immutable {
    /// The field under `spec`, e.g. `channel`.
    pub field: &'static str,
    /// Whether a field that was unset (`null`) may be set.
    pub may_set: bool,
    /// Whether a field that was set may be unset.
    pub may_unset: bool,
}

impl Immutable {
    /// Whether changing the field from `old` to `new` breaks this rule.
    ///
    /// ```
    /// use evmesh_config::registry::Immutable;
    /// let rule = Immutable { field: "channelTemplate", may_set: true, may_unset: true };
    /// assert!(!rule.violated(&serde_json::Value::Null, &serde_json::json!({"kind": "InMemoryChannel"})));
    /// assert!(rule.violated(&serde_json::json!({"kind": "A"}), &serde_json::json!({"kind": "B"})));
    /// ```
    pub fn violated(&self, old: &Value, new: &Value) -> bool {
        old != new && !(old.is_null() && self.may_set) && !(new.is_null() && self.may_unset)
    }
}

/// Where a resource's address points, resolved against the ingress URL by the [`Resolver`].
///
/// [`Resolver`]: crate::Resolver
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A broker's ingress (`{ingress}/{namespace}/{name}`).
    Broker,
    /// The channel of this name (in the resource's namespace) that evmesh runs.
    Channel(String),
    /// evmesh's built-in event display.
    EventDisplay,
    /// The URL the resource declares (`None`: it declares none).
    Declared(Option<String>),
}

/// `(group, kind, namespace, name)` of an addressable.
pub type AddrKey = (String, String, String, String);

/// One kind, as the registry sees it: registered once in [`REGISTRY`].
///
/// Adding a kind is one module implementing this trait (its [`KindInfo`], its validation into
/// the [`MeshConfig`], how refs to it resolve) plus one line in [`REGISTRY`]; validation, the
/// resolver, discovery and the runtime's bookkeeping then know it. A kind of the runtime (its
/// status and how it runs) is registered beside it in the facade.
///
/// ```
/// let trigger = evmesh_config::registry::lookup("eventing.knative.dev/v1", "Trigger").unwrap();
/// assert_eq!(trigger.versions()[0].plural, "triggers");
/// ```
pub trait Kind: Sync {
    /// Its API coordinates, one per served version; empty for an input that is read but not
    /// served through the API (a ConfigMap or Secret evmesh reads).
    fn versions(&self) -> &'static [KindInfo];

    /// Whether this registration reads a document of `api_version` and `kind` (its group and
    /// kind by default; the version is then checked by [`Kind::validate`]).
    fn reads(&self, api_version: &str, kind: &str, meta: &ObjectMeta) -> bool {
        let _ = meta;
        let group = api_version.split('/').next().unwrap_or("");
        self.versions()
            .iter()
            .any(|k| k.kind == kind && k.group == group)
    }

    /// Validates one document of this kind into `pass` (errors and warnings with file:line).
    fn validate<'a>(
        &self,
        pass: &mut Pass<'a>,
        doc: &'a Document,
        api_version: &str,
        meta: ObjectMeta,
        spec: &Value,
    );

    /// How refs to it are checked and resolved.
    fn refs(&self) -> Refs {
        Refs::Loose
    }

    /// The addressables of this kind in `mesh`, each with where its address points.
    fn addresses(&self, mesh: &MeshConfig, out: &mut Vec<(AddrKey, Address)>) {
        let _ = (mesh, out);
    }

    /// Whether resources of this kind generate Channels and Subscriptions ([`Kind::wire`]).
    fn generates(&self) -> bool {
        false
    }

    /// The Channels and Subscriptions a resource of this kind generates, as Knative's reconciler
    /// wires them (Channel, Sequence, Parallel; `None` for other kinds or a spec that does not
    /// parse), with `defaults` for a missing `channelTemplate`.
    fn wire(
        &self,
        meta: &ObjectMeta,
        spec: Value,
        defaults: &crate::messaging::ChannelDefaults,
    ) -> Option<crate::messaging::wiring::Wiring> {
        let _ = (meta, spec, defaults);
        None
    }

    /// `spec` fields that may not change once set.
    fn immutable(&self) -> &'static [Immutable] {
        &[]
    }

    /// Removes what resource `ns/name` of this kind put into `mesh` (the runtime splices a
    /// changed resource in and out of the running configuration with it).
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        if let Some(k) = self.versions().first() {
            mesh.externals.retain(|e| {
                !(e.kind == k.kind && e.metadata.namespace == ns && e.metadata.name == name)
            });
        }
    }
}

/// The state of one validation pass that the kinds' [`Kind::validate`] fill in: each kind's typed
/// resources, waiting for the cross-kind checks (refs, default channels, wiring) that follow.
/// Opaque outside this crate: the validation half of every kind is registered here, where the
/// typed specs are (the lowest layer; an embedder validates without the runtime).
pub struct Pass<'a> {
    pub(crate) ctx: Ctx,
    pub(crate) messaging: crate::messaging::check::Pending<'a>,
    pub(crate) brokers: Vec<(Broker, &'a Document)>,
    pub(crate) triggers: Vec<(Trigger, &'a Document)>,
    pub(crate) externals: Vec<ExternalResource>,
    pub(crate) nats_url: Option<String>,
    pub(crate) kafka_channel_bootstrap: Option<Vec<String>>,
    /// `v1` ConfigMaps by (namespace, name): a Kafka-class Broker's `spec.config` names one.
    pub(crate) config_maps: BTreeMap<(String, String), (Value, &'a Document)>,
    pub(crate) sources: Vec<(crate::sources::SourceConfig, &'a Document)>,
    pub(crate) secrets: Vec<crate::sources::SecretConfig>,
}

impl Pass<'_> {
    pub(crate) fn new() -> Self {
        Pass {
            ctx: Ctx::default(),
            messaging: Default::default(),
            brokers: Vec::new(),
            triggers: Vec::new(),
            externals: Vec::new(),
            nats_url: None,
            kafka_channel_bootstrap: None,
            config_maps: BTreeMap::new(),
            sources: Vec::new(),
            secrets: Vec::new(),
        }
    }
}

use crate::kinds;

/// Every kind evmesh reads, registered once, in the order the CLI lists them.
pub static REGISTRY: &[&dyn Kind] = &[
    &kinds::broker::Broker,
    &kinds::trigger::Trigger,
    &kinds::event_display::EventDisplay,
    &kinds::in_memory_channel::InMemoryChannel,
    &kinds::nats_jetstream_channel::NatsJetStreamChannel,
    &kinds::kafka_channel::KafkaChannel,
    &kinds::channel::Channel,
    &kinds::subscription::Subscription,
    &kinds::sequence::Sequence,
    &kinds::parallel::Parallel,
    &kinds::ping_source::PingSource,
    &kinds::github_source::GitHubSource,
    &kinds::apiserver_source::ApiServerSource,
    &kinds::kafka_source::KafkaSource,
    &kinds::config_maps::DefaultChannelConfigMap,
    &kinds::config_maps::NatsConfigMap,
    &kinds::config_maps::KafkaChannelConfigMap,
    // Any other `v1` ConfigMap (after the ones above: the first registration that reads a
    // document validates it).
    &kinds::config_maps::OtherConfigMap,
    &kinds::secret::Secret,
];

/// Every served kind's API coordinates (each version), in the order the CLI lists them.
///
/// ```
/// assert!(evmesh_config::registry::kinds().any(|k| k.kind == "Sequence"));
/// ```
pub fn kinds() -> impl Iterator<Item = &'static KindInfo> {
    REGISTRY.iter().flat_map(|k| k.versions().iter())
}

/// The registration that reads a document of `api_version` and `kind` (for a ConfigMap or
/// Secret, `meta` says which one).
pub fn reader(api_version: &str, kind: &str, meta: &ObjectMeta) -> Option<&'static dyn Kind> {
    REGISTRY
        .iter()
        .copied()
        .find(|k| k.reads(api_version, kind, meta))
}

/// The registered kind of group (of `api_version`) and `kind`, any served version.
pub fn lookup(api_version: &str, kind: &str) -> Option<&'static dyn Kind> {
    let group = api_version.split('/').next().unwrap_or("");
    by_group(group, kind)
}

/// The registered kind of `group` and `kind`, any served version.
pub fn by_group(group: &str, kind: &str) -> Option<&'static dyn Kind> {
    REGISTRY.iter().copied().find(|k| {
        k.versions()
            .iter()
            .any(|v| v.group == group && v.kind == kind)
    })
}

/// The registered kind served as exactly `api_version` `kind` when its resources generate
/// Channels and Subscriptions ([`Kind::generates`]).
///
/// ```
/// assert!(evmesh_config::registry::generator("flows.knative.dev/v1", "Sequence").is_some());
/// assert!(evmesh_config::registry::generator("flows.knative.dev/v2", "Sequence").is_none());
/// ```
pub fn generator(api_version: &str, kind: &str) -> Option<&'static dyn Kind> {
    by_kind(api_version, kind)?;
    lookup(api_version, kind).filter(|k| k.generates())
}

/// How a ref to `kind` of `group` is checked and resolved (`group` empty: a Broker ref written
/// without `apiVersion` group, which Knative reads as eventing's).
pub fn refs_of(group: &str, kind: &str) -> Refs {
    match by_group(group, kind) {
        Some(k) => k.refs(),
        None if group.is_empty() => by_group("eventing.knative.dev", kind)
            .map(|k| k.refs())
            .filter(|r| *r == Refs::Broker)
            .unwrap_or(Refs::Loose),
        None => Refs::Loose,
    }
}

/// Every addressable of `mesh` that its registered kinds declare.
pub fn addresses(mesh: &MeshConfig) -> Vec<(AddrKey, Address)> {
    let mut out = Vec::new();
    for k in REGISTRY {
        k.addresses(mesh, &mut out);
    }
    out
}

/// The kind served at `group/version` `plural`.
///
/// ```
/// let k = evmesh_config::registry::by_plural("eventing.knative.dev", "v1", "triggers").unwrap();
/// assert_eq!(k.kind, "Trigger");
/// ```
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static KindInfo> {
    kinds().find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The kind of a manifest's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    kinds().find(|k| k.kind == kind && k.api_version() == api_version)
}

/// The kind a CLI user means by `name`: plural, singular, kind (any case) or short name,
/// optionally qualified with `.group`.
///
/// ```
/// let k = evmesh_config::registry::by_cli_name("triggers.eventing.knative.dev").unwrap();
/// assert_eq!(k.kind, "Trigger");
/// ```
pub fn by_cli_name(name: &str) -> Option<&'static KindInfo> {
    let lower = name.to_ascii_lowercase();
    let (res, group) = match lower.split_once('.') {
        Some((r, g)) => (r.to_string(), Some(g.to_string())),
        None => (lower, None),
    };
    kinds().find(|k| {
        (k.plural == res
            || k.singular == res
            || k.kind.to_ascii_lowercase() == res
            || k.short_names.contains(&res.as_str()))
            && group.as_deref().is_none_or(|g| g == k.group)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each served version is read by the registration that serves it, and names one kind only.
    #[test]
    fn every_served_version_is_read_by_its_own_registration() {
        let meta = ObjectMeta::default();
        for k in kinds() {
            let reader = reader(&k.api_version(), k.kind, &meta)
                .unwrap_or_else(|| panic!("{} {} has no reader", k.api_version(), k.kind));
            assert!(
                reader.versions().iter().any(|v| std::ptr::eq(v, k)),
                "{} {} is read by another registration",
                k.api_version(),
                k.kind
            );
            assert_eq!(
                kinds()
                    .filter(|o| o.api_version() == k.api_version() && o.kind == k.kind)
                    .count(),
                1,
                "{} {} is registered twice",
                k.api_version(),
                k.kind
            );
        }
    }
}
