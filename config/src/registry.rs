//! The kind registry: every kind evmesh reads, with its API coordinates, its validation, how refs
//! to it resolve and what it contributes to a [`MeshConfig`]. Validation, the resolver, the admin
//! API, kubectl discovery and the runtime look kinds up in the [installed](install) set (else
//! this crate's own kinds, [`BUILTIN`]); the kinds are one module each, this crate's under
//! `config/src/kinds/`, the others in their own crates (Sequence and Parallel in `evmesh-flows`,
//! the sources in `evmesh-sources` and `evmesh-kafka`, validated through [`Pass::source`]).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
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

/// JSONPath of the `Ready` condition's status.
pub const READY: &str = ".status.conditions[?(@.type==\"Ready\")].status";
/// JSONPath of the `Ready` condition's reason.
pub const REASON: &str = ".status.conditions[?(@.type==\"Ready\")].reason";

/// The `Age` column.
pub const AGE: PrinterColumn = PrinterColumn {
    name: "Age",
    type_: "date",
    json_path: ".metadata.creationTimestamp",
    description: "",
    priority: 0,
};
/// The `Ready` column.
pub const READY_COL: PrinterColumn = PrinterColumn {
    name: "Ready",
    type_: "string",
    json_path: READY,
    description: "",
    priority: 0,
};
/// The `URL` column.
pub const URL_COL: PrinterColumn = PrinterColumn {
    name: "URL",
    type_: "string",
    json_path: ".status.address.url",
    description: "",
    priority: 0,
};
/// The `Reason` column.
pub const REASON_COL: PrinterColumn = PrinterColumn {
    name: "Reason",
    type_: "string",
    json_path: REASON,
    description: "",
    priority: 0,
};

/// The `Sink` column.
pub const SINK_COL: PrinterColumn = PrinterColumn {
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

/// One kind, as the registry sees it: registered once, in the set the facade [installs](install)
/// (this crate's own kinds are also [`BUILTIN`], the set used when none is installed).
///
/// Adding a kind is one module implementing this trait (its [`KindInfo`], its validation into
/// the [`MeshConfig`], how refs to it resolve) plus one line in the facade's list; validation,
/// the resolver, discovery and the runtime's bookkeeping then know it. The same module
/// implements the kind's runtime half (its status), registered by that same line.
///
/// A kind outside this crate validates in two steps: [`Kind::validate`] checks the document on
/// its own and [defers](Pass::defer) it; once every document is read, [`Kind::known`] names the
/// addressables it defines and [`Kind::finish`] checks its refs against all of them and adds
/// what it generates to the [`MeshConfig`].
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

    /// The addressables a resource this kind [deferred](Pass::defer) defines (and generates),
    /// so that refs to them get no "does not exist" warning; `defaults` are the pass's default
    /// channels.
    fn known(
        &self,
        meta: &ObjectMeta,
        spec: &Value,
        defaults: &crate::messaging::ChannelDefaults,
        known: &mut Addressables<'_>,
    ) {
        let _ = (meta, spec, defaults, known);
    }

    /// When [`Kind::finish`] runs for this kind's deferred resources (kind by kind, in
    /// registration order within a stage).
    fn stage(&self) -> Stage {
        Stage::Generators
    }

    /// Finishes a resource this kind [deferred](Pass::defer): the checks that need every
    /// document (refs, default channels) and what it adds to the mesh.
    fn finish(&self, cx: &mut Finish<'_>, doc: &Document, meta: ObjectMeta, spec: Value) {
        let _ = (cx, doc, meta, spec);
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
/// A kind reads it through its methods ([`Pass::typed`], [`Pass::defer`], ...); this crate's own
/// kinds fill in the typed resources it keeps.
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
    /// The registration validating the current document.
    pub(crate) current: Option<&'static dyn Kind>,
    /// Documents of kinds outside this crate, waiting for [`Kind::finish`].
    pub(crate) deferred: Vec<Deferred<'a>>,
}

/// When deferred resources are [finished](Kind::finish): stage by stage, and within a stage kind
/// by kind in registration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Channels written as themselves (InMemoryChannel, NatsJetStreamChannel, KafkaChannel):
    /// first, so a name they take is theirs before anything generated asks for it.
    Channels,
    /// Kinds that generate channels and subscriptions (Channel, Sequence, Parallel): after the
    /// channels written as themselves, before the Subscriptions that may read what they
    /// generate.
    Generators,
    /// Kinds that read channels (Subscription): last.
    Readers,
}

/// A document a kind [deferred](Pass::defer): its kind, metadata, `spec` and document.
pub(crate) type Deferred<'a> = (&'static dyn Kind, ObjectMeta, Value, &'a Document);

impl<'a> Pass<'a> {
    /// An error at `field` of `doc` (file:line:field).
    pub fn error(&mut self, doc: &Document, field: &str, message: impl Into<String>) {
        self.ctx.error(doc, field, message);
    }

    /// A warning at `field` of `doc`.
    pub fn warn(&mut self, doc: &Document, field: &str, message: impl Into<String>) {
        self.ctx.warn(doc, field, message);
    }

    /// An error unless `got` is the `apiVersion` `want`.
    pub fn check_api_version(&mut self, doc: &Document, got: &str, want: &str) {
        crate::validate::check_api_version(&mut self.ctx, doc, got, want);
    }

    /// `value` (at `base` in `doc`) as a `T`: an error where it does not parse, an error or a
    /// warning for each field `T` does not know (an error when it looks like a misspelt one).
    pub fn typed<T: DeserializeOwned>(
        &mut self,
        doc: &Document,
        base: &str,
        value: &Value,
    ) -> Option<T> {
        crate::validate::typed(&mut self.ctx, doc, base, value)
    }

    /// Validates a `sources.knative.dev` document of `kind` (PingSource, GitHubSource,
    /// ApiServerSource, KafkaSource: the source model's checks) and adds the source to the mesh.
    pub fn source(
        &mut self,
        doc: &'a Document,
        api_version: &str,
        kind: &str,
        meta: ObjectMeta,
        spec: &Value,
    ) {
        if let Some(s) =
            crate::sources::check_source(&mut self.ctx, doc, api_version, kind, meta, spec)
        {
            self.sources.push((s, doc));
        }
    }

    /// Keeps the document being validated for [`Kind::known`] and [`Kind::finish`] of the
    /// kind validating it, once every document is read.
    pub fn defer(&mut self, meta: ObjectMeta, spec: Value, doc: &'a Document) {
        if let Some(kind) = self.current {
            self.deferred.push((kind, meta, spec, doc));
        }
    }

    /// The usual first pass of a kind whose spec is a `T`: checks the `apiVersion` (`want`),
    /// reads `spec` as a `T` (see [`Pass::typed`]) and, when it parses, defers the document
    /// (see [`Pass::defer`]) for the kind's later passes.
    pub fn typed_and_deferred<T: DeserializeOwned>(
        &mut self,
        doc: &'a Document,
        api_version: &str,
        want: &str,
        meta: ObjectMeta,
        spec: &Value,
    ) {
        self.check_api_version(doc, api_version, want);
        if self.typed::<T>(doc, "spec", spec).is_some() {
            self.defer(meta, spec.clone(), doc);
        }
    }
}

/// The addressables of a validation pass that refs may name without a "does not exist"
/// warning, as [`Kind::known`] adds them.
pub struct Addressables<'k> {
    pub(crate) known: &'k mut crate::validate::Known,
}

impl Addressables<'_> {
    /// Adds `kind` (of `group`) `namespace/name`.
    pub fn add(&mut self, group: &str, kind: &str, namespace: &str, name: &str) {
        self.known.channels.insert((
            group.to_string(),
            kind.to_string(),
            namespace.to_string(),
            name.to_string(),
        ));
    }
}

/// What [`Kind::finish`] checks against and adds to: the pass's errors and warnings, the
/// addressables every document defines, the default channels, and the channels and
/// subscriptions of the mesh (a name another owner already uses is an error).
pub struct Finish<'p> {
    pub(crate) ctx: &'p mut crate::validate::Ctx,
    pub(crate) known: &'p crate::validate::Known,
    pub(crate) defaults: &'p crate::messaging::ChannelDefaults,
    pub(crate) out: &'p mut crate::messaging::check::Out,
    pub(crate) running: Option<&'p MeshConfig>,
}

impl Finish<'_> {
    /// An error at `field` of `doc` (file:line:field).
    pub fn error(&mut self, doc: &Document, field: &str, message: impl Into<String>) {
        self.ctx.error(doc, field, message);
    }

    /// A warning at `field` of `doc`.
    pub fn warn(&mut self, doc: &Document, field: &str, message: impl Into<String>) {
        self.ctx.warn(doc, field, message);
    }

    /// How many errors the pass has so far (a resource is added only when its checks add none).
    pub fn errors(&self) -> usize {
        self.ctx.errors.len()
    }

    /// Whether a ref to `kind` (of `group`) `namespace/name` names an addressable of the pass
    /// (or of the running mesh).
    pub fn knows(&self, group: &str, kind: &str, namespace: &str, name: &str) -> bool {
        self.known.channels.contains(&(
            group.to_string(),
            kind.to_string(),
            namespace.to_string(),
            name.to_string(),
        ))
    }

    /// The running mesh the documents are applied to, if any.
    pub fn running(&self) -> Option<&MeshConfig> {
        self.running
    }

    /// The channel kind backing the generic Channel `namespace/name` of this pass, once it is
    /// [added](Finish::add_backing_channel).
    pub fn backing_channel_kind(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<crate::messaging::ChannelKind> {
        self.out
            .generic
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
    }

    /// Adds the channel backing a generic Channel (of channel `kind`; Subscriptions naming the
    /// Channel read it).
    pub fn add_backing_channel(
        &mut self,
        doc: &Document,
        kind: crate::messaging::ChannelKind,
        channel: crate::messaging::wiring::GeneratedChannel,
    ) {
        let m = &channel.metadata;
        self.out
            .generic
            .insert((m.namespace.clone(), m.name.clone()), kind);
        self.out.generated_channel(self.ctx, doc, kind, channel);
    }

    /// Adds a subscription (an error when another owner already uses its name).
    pub fn add_subscription(&mut self, doc: &Document, subscription: crate::SubscriptionConfig) {
        self.out.subscription(self.ctx, doc, subscription);
    }

    /// The default channels of the pass.
    pub fn defaults(&self) -> &crate::messaging::ChannelDefaults {
        self.defaults
    }

    /// Checks a Destination at `field` of a resource in namespace `ns`: its shape, and a warning
    /// when its `ref` names a broker or channel that does not exist.
    pub fn destination(
        &mut self,
        doc: &Document,
        field: &str,
        dest: &crate::model::Destination,
        ns: &str,
    ) {
        crate::messaging::check::destination(self.ctx, doc, field, dest, ns, self.known);
    }

    /// Checks a `delivery` at `field` (its durations, retries and dead-letter sink, whose `ref`
    /// is warned about when it does not exist), the parsed delivery when it is valid.
    pub fn delivery(
        &mut self,
        doc: &Document,
        field: &str,
        delivery: &crate::model::DeliverySpec,
        ns: &str,
    ) -> Option<crate::Delivery> {
        let parsed = crate::validate::check_delivery(self.ctx, doc, field, delivery);
        crate::messaging::check::check_dls_target(
            self.ctx,
            doc,
            field,
            &Some(delivery.clone()),
            ns,
            self.known,
        );
        parsed
    }

    /// The `channelTemplate` of a resource (else the default of its namespace) and the channel
    /// kind it names; an error when evmesh runs no such kind or its `spec` is not that kind's.
    pub fn channel_template(
        &mut self,
        doc: &Document,
        template: &Option<crate::messaging::ChannelTemplate>,
        meta: &ObjectMeta,
    ) -> (
        crate::messaging::ChannelTemplate,
        Option<crate::messaging::ChannelKind>,
    ) {
        crate::messaging::check::flow_template(self.ctx, doc, template, self.defaults, meta)
    }

    /// Adds a channel written as itself, of `kind`, after checking its `spec.delivery` (and its
    /// dead-letter target), when the pass has no more errors than `before` (the count before
    /// the kind's own checks of this resource); `spec` is what the data plane keeps of it.
    #[allow(clippy::too_many_arguments)]
    pub fn channel(
        &mut self,
        doc: &Document,
        before: usize,
        kind: crate::messaging::ChannelKind,
        meta: ObjectMeta,
        delivery: &Option<crate::model::DeliverySpec>,
        spec: Value,
    ) {
        self.out.checked_channel(
            self.ctx, doc, self.known, before, kind, meta, delivery, spec,
        );
    }

    /// Adds the channels and subscriptions `wiring` generates, of channel `kind` (an error for
    /// each name another owner already uses).
    pub fn add_wiring(
        &mut self,
        doc: &Document,
        kind: crate::messaging::ChannelKind,
        wiring: crate::messaging::wiring::Wiring,
    ) {
        self.out.wiring(self.ctx, doc, kind, wiring);
    }
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
            current: None,
            deferred: Vec::new(),
        }
    }
}

use crate::kinds;
pub use crate::kinds::{channel_addresses, front_addresses, remove_channel, remove_generated};

/// This crate's own kinds, in the order the CLI lists them: the set validation and lookups use
/// when none is [installed](install) (an embedder of `evmesh_config` alone).
pub static BUILTIN: &[&dyn Kind] = &[
    &kinds::broker::Broker,
    &kinds::trigger::Trigger,
    &kinds::event_display::EventDisplay,
    &kinds::config_maps::DefaultChannelConfigMap,
    &kinds::config_maps::NatsConfigMap,
    &kinds::config_maps::KafkaChannelConfigMap,
    // Any other `v1` ConfigMap (after the ones above: the first registration that reads a
    // document validates it).
    &kinds::config_maps::OtherConfigMap,
    &kinds::secret::Secret,
];

static INSTALLED: OnceLock<Vec<&'static dyn Kind>> = OnceLock::new();

/// Why [`install`] refused a set of kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlreadyInstalled;

impl std::fmt::Display for AlreadyInstalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("another set of kinds is already installed in the kind registry")
    }
}

impl std::error::Error for AlreadyInstalled {}

/// Installs the set of kinds every validation and lookup of this process uses, once (the
/// facade installs every kind evmesh serves before it reads any YAML). Installing the same set
/// again is a no-op; another set, once one is installed, is [`AlreadyInstalled`].
///
/// ```
/// use evmesh_config::registry;
/// let kinds: Vec<&'static dyn registry::Kind> = registry::BUILTIN.to_vec();
/// registry::install(kinds.clone()).unwrap();
/// assert!(registry::install(kinds).is_ok());
/// assert_eq!(registry::all().len(), registry::BUILTIN.len());
/// ```
pub fn install(kinds: Vec<&'static dyn Kind>) -> Result<(), AlreadyInstalled> {
    let installed = INSTALLED.get_or_init(|| kinds.clone());
    let same = installed.len() == kinds.len()
        && installed
            .iter()
            .zip(&kinds)
            .all(|(a, b)| std::ptr::addr_eq(*a as *const dyn Kind, *b as *const dyn Kind));
    if same { Ok(()) } else { Err(AlreadyInstalled) }
}

/// Whether a set of kinds was [installed](install).
pub fn installed() -> bool {
    INSTALLED.get().is_some()
}

/// Every registered kind: the [installed](install) set, else [`BUILTIN`].
pub fn all() -> &'static [&'static dyn Kind] {
    match INSTALLED.get() {
        Some(kinds) => kinds,
        None => BUILTIN,
    }
}

/// Every served kind's API coordinates (each version), in the order the CLI lists them.
///
/// ```
/// assert!(evmesh_config::registry::kinds().any(|k| k.kind == "Trigger"));
/// ```
pub fn kinds() -> impl Iterator<Item = &'static KindInfo> {
    all().iter().flat_map(|k| k.versions().iter())
}

/// The registration that reads a document of `api_version` and `kind` (for a ConfigMap or
/// Secret, `meta` says which one).
pub fn reader(api_version: &str, kind: &str, meta: &ObjectMeta) -> Option<&'static dyn Kind> {
    all()
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
    all().iter().copied().find(|k| {
        k.versions()
            .iter()
            .any(|v| v.group == group && v.kind == kind)
    })
}

/// The registered kind served as exactly `api_version` `kind` when its resources generate
/// Channels and Subscriptions ([`Kind::generates`]).
///
/// ```
/// // A Broker generates nothing; Channel, Sequence and Parallel do once the facade installs them.
/// assert!(evmesh_config::registry::generator("eventing.knative.dev/v1", "Broker").is_none());
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
    for k in all() {
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
