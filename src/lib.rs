//! evmesh: Knative Eventing without Kubernetes, as a library.
//!
//! Build a mesh from the Knative YAML you already have (Broker, Trigger, Channel, Subscription)
//! or from typed resources, run it on a listener of your own or inside your axum app, publish
//! CloudEvents into a broker over HTTP or straight from Rust, and receive them in Rust through
//! in-process subscribers. Every accepted event is stored durably before it is acknowledged and
//! delivered at least once to every trigger that matches it, with Knative's retry, backoff and
//! dead-letter rules.
//!
//! ```no_run
//! use evmesh::prelude::*;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mesh = Mesh::from_yaml(r#"
//! apiVersion: eventing.knative.dev/v1
//! kind: Broker
//! metadata: {name: default}
//! ---
//! apiVersion: eventing.knative.dev/v1
//! kind: Trigger
//! metadata: {name: orders}
//! spec:
//!   broker: default
//!   filter: {attributes: {type: order.created}}
//!   subscriber:
//!     ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: orders}
//! "#)?
//! .data_dir("./evmesh-data");
//! let running = mesh.start(tokio::net::TcpListener::bind("127.0.0.1:0").await?).await?;
//! let mut orders = running.subscribe("orders");
//! let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created").build()?;
//! running.publish("default", "default", event).await?; // durable once this returns
//! if let Some(delivery) = orders.next().await {
//!     println!("got {}", delivery.event().id());
//!     delivery.ack();
//! }
//! running.shutdown().await; // drains in-flight deliveries, unlocks the data dir
//! # Ok(()) }
//! ```
//!
//! # In-process subscribers
//! A Destination `ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: orders}` (in
//! a Trigger's `subscriber`, a Subscription's `subscriber` or `reply`, any `deadLetterSink`)
//! addresses [`RunningMesh::subscribe`]`("orders")` (namespace of the resource; see
//! [`RunningMesh::subscribe_in`]). The delivery engine hands each event over in memory, exactly
//! as it would POST it: a [`Delivery`] is answered with [`Delivery::ack`], [`Delivery::reply`]
//! (routed as an HTTP reply would be) or [`Delivery::nack`] ([`Nack::retry`]: retried with the
//! trigger's backoff; [`Nack::reject`]: dead-lettered at once). A delivery dropped unanswered
//! is a retryable failure; one not answered within the delivery's `timeout` (default 10
//! minutes) too. While no subscription listens, deliveries wait and the trigger reports
//! `SubscriberNotReady`; they are not retried or dropped meanwhile, and survive a restart.
//! [`RunningMesh::handle`] is the closure form.
//!
//! # Next to an existing axum app
//! [`Mesh::launch`] starts a mesh without a server; [`RunningMesh::router`] (or
//! [`ingress_router`](RunningMesh::ingress_router), [`admin_router`](RunningMesh::admin_router),
//! [`metrics_router`](RunningMesh::metrics_router)) gives its routes to merge into your app.
//!
//! # Guarantees
//! At-least-once: an event is durable when `publish` returns (or ingress answers 202), and a
//! delivery counts as done only once answered; after a crash unfinished deliveries are made
//! again, so a subscriber may see an event twice (deduplicate on `id` + `source`). An ordered
//! trigger (`kafka.eventing.knative.dev/delivery.order: ordered`) hands one event per
//! `partitionkey` at a time, in log order, across retries. Replies are stored in the broker
//! before the delivery they answer counts as done.
//!
//! # Features
//! `cli` (default): the `evmesh` binary and its dependencies (clap, tracing-subscriber,
//! anyhow). Build with `default-features = false` for the library alone.

mod admin;
mod closing;
mod display;
mod kube;
pub mod prelude;
mod runtime;
mod server;
mod sources;

pub use server::ServerLimits;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use evmesh_broker::{BrokerService, PublishError, ServiceOptions};
use evmesh_config::{Document, MeshConfig};
use evmesh_store::EngineKind;
use tokio::net::TcpListener;
use tokio::sync::watch;
use url::Url;

pub use cloudevents;
#[doc(hidden)]
pub use evmesh_broker;
#[doc(hidden)]
pub use evmesh_config;
#[doc(hidden)]
pub use evmesh_filter;
#[doc(hidden)]
pub use evmesh_store;

#[doc(inline)]
pub use evmesh_broker::metrics::CounterSnapshot;
#[doc(inline)]
pub use evmesh_broker::record::EventRecord;
#[doc(inline)]
pub use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
#[doc(inline)]
pub use evmesh_config::{
    Broker, BrokerSpec, ConfigError, ConfigErrors, Destination, KReference, ObjectMeta, Resource,
    Trigger, TriggerSpec, Warning,
};
#[doc(inline)]
pub use evmesh_store::EngineKind as StorageEngine;

/// The quickstart YAML `evmesh serve` runs when no `-f` is given.
pub const QUICKSTART_YAML: &str = include_str!("../examples/quickstart.yaml");

/// How a mesh runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the durable store lives.
    pub data_dir: PathBuf,
    /// The storage engine.
    pub engine: EngineKind,
    /// Largest accepted event body, in bytes (413 above it).
    pub max_event_size: usize,
    /// URL template for refs to kinds evmesh does not serve (`{name}`, `{namespace}`, `{kind}`).
    pub url_template: Option<String>,
    /// The channel kind of Channels, Sequences and Parallels that name none (`serve
    /// --default-channel`); a `default-ch-webhook` ConfigMap in the YAML replaces it.
    /// `None`: InMemoryChannel.
    pub default_channel: Option<evmesh_config::ChannelKind>,
    /// Dispatcher tuning, retention.
    pub service: ServiceOptions,
    /// Bearer token the admin API requires for writes (create, replace, delete); `None` leaves
    /// writes open (embedders that do not serve the admin API to others).
    pub admin_token: Option<String>,
    /// Connection cap and header, idle and body timeouts of the HTTP server.
    pub server: ServerLimits,
    /// Store tuning (the bound of the append queue).
    pub store: evmesh_store::StoreOptions,
    /// Strict mode: configuration warnings (unknown fields, kinds evmesh ignores) are errors at
    /// start. Off by default: warnings are logged (`tracing` at warn) and start goes on.
    pub strict: bool,
    /// The NATS server of NatsJetStreamChannels (connected to only when one runs).
    pub nats_url: String,
    /// Kafka bootstrap servers of KafkaChannels and Kafka-class Brokers (`host:port,...`;
    /// connected to only when one runs). `None`: such a resource fails to start, saying so.
    pub kafka_bootstrap_servers: Option<String>,
    /// How long a produce to Kafka may wait for its acknowledgement before the event is
    /// answered 503 (default 30 s; librdkafka's own default is 5 minutes).
    pub kafka_produce_timeout: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            data_dir: PathBuf::from("./evmesh-data"),
            engine: EngineKind::default(),
            max_event_size: evmesh_broker::ingress::DEFAULT_MAX_EVENT_SIZE,
            url_template: None,
            default_channel: None,
            service: ServiceOptions::default(),
            admin_token: None,
            server: ServerLimits::default(),
            store: evmesh_store::StoreOptions::default(),
            strict: false,
            nats_url: evmesh_channels::DEFAULT_NATS_URL.to_string(),
            kafka_bootstrap_servers: None,
            kafka_produce_timeout: evmesh_kafka::settings::DEFAULT_MESSAGE_TIMEOUT,
        }
    }
}

/// Everything that can go wrong building, starting, running or publishing into a mesh.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; every cause is listed (with file, line and field). In
    /// strict mode warnings are causes too.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// Another process (or another mesh in this one) holds the data directory.
    #[error("data directory {} is in use by another evmesh (locked)", .0.display())]
    DataDirLocked(PathBuf),
    /// The store could not be opened or failed.
    #[error("store: {0}")]
    Store(#[from] evmesh_store::StoreError),
    /// The brokers could not start.
    #[error("starting brokers: {0}")]
    Start(#[from] evmesh_broker::StartError),
    /// No such broker (or channel); the message names it.
    #[error("{0} not found")]
    NotFound(String),
    /// The event was refused (its TTL ran out, or it cannot be encoded).
    #[error("event refused: {0}")]
    InvalidEvent(String),
    /// The mesh is shutting down (or has shut down).
    #[error("the mesh is shutting down")]
    ShuttingDown,
    /// Network or file error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<PublishError> for Error {
    fn from(e: PublishError) -> Error {
        match e {
            PublishError::NotFound(what) => Error::NotFound(what),
            PublishError::ShuttingDown => Error::ShuttingDown,
            PublishError::Store(e) => Error::Store(e),
            PublishError::Log(e) => Error::Store(evmesh_store::StoreError::Engine(e.to_string())),
            e @ (PublishError::TtlExpired | PublishError::Encode(_)) => {
                Error::InvalidEvent(e.to_string())
            }
        }
    }
}

/// A mesh, configured but not running.
#[derive(Clone, Debug)]
pub struct Mesh {
    config: MeshConfig,
    docs: Vec<Document>,
    files: Vec<PathBuf>,
    options: Options,
    /// Options set one by one; they win over [`Mesh::options`] whatever the order.
    data_dir: Option<PathBuf>,
    strict: Option<bool>,
}

impl Mesh {
    fn new(config: MeshConfig, docs: Vec<Document>, files: Vec<PathBuf>) -> Mesh {
        Mesh {
            config,
            docs,
            files,
            options: Options::default(),
            data_dir: None,
            strict: None,
        }
    }

    /// A mesh from Knative YAML text (one or more documents).
    ///
    /// # Errors
    /// Every problem of the YAML, with line and field.
    pub fn from_yaml(text: &str) -> Result<Mesh, ConfigErrors> {
        Self::from_named_yaml("<yaml>", text)
    }

    fn from_named_yaml(name: &str, text: &str) -> Result<Mesh, ConfigErrors> {
        let docs = evmesh_config::load_str(name, text).map_err(|e| ConfigErrors {
            errors: vec![e],
            warnings: vec![],
        })?;
        let config = evmesh_config::validate(&docs)?;
        Ok(Mesh::new(config, docs, Vec::new()))
    }

    /// A mesh from files and directories of Knative YAML; a running mesh re-reads them on
    /// [`RunningMesh::reload`] (the `serve` command: on SIGHUP and when they change).
    ///
    /// # Errors
    /// Files that cannot be read, and every problem of their YAML.
    pub fn from_paths(paths: &[PathBuf]) -> Result<Mesh, ConfigErrors> {
        let config = MeshConfig::from_paths(paths)?;
        let (docs, _) = evmesh_config::load_paths(paths);
        Ok(Mesh::new(config, docs, paths.to_vec()))
    }

    /// A mesh from typed resources.
    ///
    /// # Errors
    /// Every problem of the resources.
    pub fn from_resources(resources: &[Resource]) -> Result<Mesh, ConfigErrors> {
        let config = MeshConfig::from_resources(resources)?;
        let text = MeshConfig::resources_yaml(resources);
        let docs = evmesh_config::load_str("<resources>", &text).map_err(|e| ConfigErrors {
            errors: vec![e],
            warnings: vec![],
        })?;
        Ok(Mesh::new(config, docs, Vec::new()))
    }

    /// Sets all options. Options set one by one ([`data_dir`](Self::data_dir),
    /// [`strict`](Self::strict)) are kept, before or after this call.
    ///
    /// ```
    /// let mesh = evmesh::Mesh::from_yaml("")?
    ///     .data_dir("/var/lib/app/events")
    ///     .options(evmesh::Options { max_event_size: 64 * 1024, ..Default::default() });
    /// assert_eq!(mesh.effective_options().data_dir, std::path::Path::new("/var/lib/app/events"));
    /// # Ok::<(), evmesh::Error>(())
    /// ```
    pub fn options(mut self, options: Options) -> Mesh {
        self.options = options;
        self
    }

    /// Sets the data directory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Mesh {
        self.data_dir = Some(dir.into());
        self
    }

    /// Strict mode: configuration warnings are errors at start ([`Error::Config`]).
    ///
    /// ```
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let yaml = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\nspec: {colour: red}\n";
    /// let mesh = evmesh::Mesh::from_yaml(yaml)?.strict(true);
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// assert!(matches!(mesh.start(listener).await, Err(evmesh::Error::Config(_))));
    /// # Ok(()) }
    /// ```
    pub fn strict(mut self, strict: bool) -> Mesh {
        self.strict = Some(strict);
        self
    }

    /// The options the mesh starts with (those set one by one applied over
    /// [`options`](Self::options)).
    pub fn effective_options(&self) -> Options {
        let mut o = self.options.clone();
        if let Some(d) = &self.data_dir {
            o.data_dir = d.clone();
        }
        if let Some(s) = self.strict {
            o.strict = s;
        }
        o
    }

    /// The validated configuration.
    pub fn config(&self) -> &MeshConfig {
        &self.config
    }

    /// The configuration's warnings (logged at start; errors in strict mode).
    pub fn warnings(&self) -> &[Warning] {
        &self.config.warnings
    }

    /// Opens the store and starts brokers and triggers, with `base` as the URL the mesh's HTTP
    /// routes are reachable under (where the embedder serves [`RunningMesh::router`]); no
    /// server is started. Brokers' addresses are `{base}/{namespace}/{name}`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// let running = evmesh::Mesh::from_yaml("")?
    ///     .data_dir("./data")
    ///     .launch("http://127.0.0.1:8080".parse()?)
    ///     .await?;
    /// let app = axum::Router::new()
    ///     .route("/hello", axum::routing::get(|| async { "hi" }))
    ///     .merge(running.router());
    /// axum::serve(listener, app).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] (strict mode warnings), [`Error::DataDirLocked`], [`Error::Store`],
    /// [`Error::Start`].
    pub async fn launch(self, base: Url) -> Result<RunningMesh, Error> {
        let options = self.effective_options();
        if options.strict && !self.config.warnings.is_empty() {
            return Err(Error::Config(strict_errors(&self.config.warnings)));
        }
        for w in &self.config.warnings {
            tracing::warn!("{w}");
        }
        let dir = options.data_dir.clone();
        let engine = options.engine;
        std::fs::create_dir_all(&dir)?;
        let open_dir = dir.clone();
        let store_options = options.store;
        let store = tokio::task::spawn_blocking(move || {
            evmesh_store::open_with(engine, &open_dir, store_options)
        })
        .await
        .map_err(std::io::Error::other)?
        .map_err(|e| match e {
            evmesh_store::StoreError::Engine(m) if m.contains("Locked") => {
                Error::DataDirLocked(dir.clone())
            }
            e => Error::Store(e),
        })?;
        let store = Arc::new(closing::ClosingStore::new(store));
        let service = BrokerService::new(store.clone(), options.service.clone())?;
        service.register_log_provider(Arc::new(evmesh_channels::NatsProvider::new(
            options.nats_url.clone(),
        )));
        service.register_log_provider(Arc::new(evmesh_kafka::KafkaProvider::new(
            options.kafka_bootstrap_servers.as_deref().map(|s| {
                let mut k = evmesh_kafka::KafkaSettings::new(s.split(',').map(str::trim));
                k.message_timeout = options.kafka_produce_timeout;
                k
            }),
        )));
        let (runtime, _warnings) = runtime::Runtime::start(
            service.clone(),
            store.clone(),
            base.clone(),
            options.url_template.clone(),
            options.default_channel,
            self.docs.clone(),
        )
        .await?;
        let (stop, _) = watch::channel(false);
        Ok(RunningMesh {
            inner: Arc::new(MeshInner {
                addr: std::sync::OnceLock::new(),
                url: base,
                service,
                runtime,
                files: self.files,
                ready: Arc::new(AtomicBool::new(true)),
                stop,
                server: tokio::sync::Mutex::new(None),
                store,
                max_event_size: options.max_event_size,
                admin_token: options.admin_token.as_deref().map(Arc::from),
                done: tokio::sync::Mutex::new(false),
            }),
        })
    }

    /// Opens the store, starts the brokers and serves ingress, admin API and health on `listener`.
    ///
    /// # Errors
    /// As [`launch`](Self::launch), and when the listener has no address.
    pub async fn start(self, listener: TcpListener) -> Result<RunningMesh, Error> {
        let addr = listener.local_addr()?;
        let ingress = base_url(addr)?;
        let limits = self.options.server.clone();
        let running = self.launch(ingress).await?;
        let app = running.router();
        let stop_rx = running.inner.stop.subscribe();
        let server = tokio::spawn(server::serve(listener, app, limits, stop_rx));
        let _ = running.inner.addr.set(addr);
        *running.inner.server.lock().await = Some(server);
        Ok(running)
    }

    /// Starts on `listener`, runs until `signal` resolves, then shuts down gracefully (as
    /// [`RunningMesh::shutdown`]) and returns.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// evmesh::Mesh::from_yaml("")?
    ///     .serve_with_shutdown(listener, async { let _ = tokio::signal::ctrl_c().await; })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub async fn serve_with_shutdown(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let running = self.start(listener).await?;
        signal.await;
        running.shutdown().await;
        Ok(())
    }
}

fn strict_errors(warnings: &[Warning]) -> ConfigErrors {
    ConfigErrors {
        errors: warnings
            .iter()
            .map(|w| ConfigError::Invalid {
                location: w.location.clone(),
                message: format!("{} (strict mode: warnings are errors)", w.message),
            })
            .collect(),
        warnings: Vec::new(),
    }
}

fn base_url(addr: SocketAddr) -> Result<Url, Error> {
    let host = if addr.ip().is_unspecified() {
        SocketAddr::new([127, 0, 0, 1].into(), addr.port())
    } else {
        addr
    };
    Url::parse(&format!("http://{host}")).map_err(|e| Error::Io(std::io::Error::other(e)))
}

/// A running mesh. Cheap to clone: every clone is a handle to the same mesh.
///
/// Drop semantics: the mesh runs until [`shutdown`](Self::shutdown) (on any handle) or until
/// the last handle is dropped; dropping the last handle starts a graceful shutdown in the
/// background (if a Tokio runtime is there to run it). Await `shutdown` to know that deliveries
/// are drained and the data directory is unlocked.
#[derive(Clone)]
pub struct RunningMesh {
    inner: Arc<MeshInner>,
}

impl std::fmt::Debug for RunningMesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningMesh")
            .field("url", &self.inner.url.as_str())
            .finish_non_exhaustive()
    }
}

struct MeshInner {
    /// Set by [`Mesh::start`]; unset for a mesh launched without a listener.
    addr: std::sync::OnceLock<SocketAddr>,
    url: Url,
    service: BrokerService,
    runtime: runtime::Runtime,
    files: Vec<PathBuf>,
    ready: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    server: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    store: Arc<closing::ClosingStore>,
    max_event_size: usize,
    admin_token: Option<Arc<str>>,
    /// Whether shutdown finished.
    done: tokio::sync::Mutex<bool>,
}

impl Drop for MeshInner {
    fn drop(&mut self) {
        let finished = self.done.try_lock().map(|d| *d).unwrap_or(true);
        if finished {
            return;
        }
        self.ready.store(false, Ordering::Release);
        let _ = self.stop.send(true);
        let service = self.service.clone();
        let runtime = self.runtime.clone();
        let subscribers = self.service.subscribers().clone();
        let store = self.store.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                runtime.sources().shutdown().await;
                service.shutdown().await;
                subscribers.close();
                store.close();
            });
        }
    }
}

/// Publishes into a running mesh's brokers. Cheap to clone; hand it to request handlers.
///
/// ```no_run
/// # async fn demo(running: evmesh::RunningMesh, event: cloudevents::Event) -> Result<(), evmesh::Error> {
/// let publisher = running.publisher();
/// tokio::spawn(async move { publisher.publish("default", "default", event).await });
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Publisher {
    service: BrokerService,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// Publishes an event into broker `namespace/broker`; resolves with its offset once it is
    /// durably stored.
    ///
    /// # Errors
    /// [`Error::NotFound`] (no such broker), [`Error::ShuttingDown`], [`Error::Store`],
    /// [`Error::InvalidEvent`].
    pub async fn publish(
        &self,
        namespace: &str,
        broker: &str,
        event: cloudevents::Event,
    ) -> Result<u64, Error> {
        Ok(self.service.publish(namespace, broker, event).await?)
    }
}

/// A trigger's status: ready or why not, and its counters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TriggerStatus {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The broker it belongs to.
    pub broker: String,
    /// Resolved subscriber URL (credentials redacted).
    pub subscriber_uri: Option<String>,
    /// Resolved dead-letter sink.
    pub dead_letter_sink_uri: Option<String>,
    /// Why it is not ready: `(reason code, message)`, e.g. `SubscriberNotReady` for an
    /// in-process subscriber nobody listens on. `None` when ready.
    pub not_ready: Option<(String, String)>,
    /// Its counters: delivered, retried (dead-letter hops are not retries), dead-lettered,
    /// dropped.
    pub counters: CounterSnapshot,
}

impl TriggerStatus {
    /// Whether it is ready.
    pub fn is_ready(&self) -> bool {
        self.not_ready.is_none()
    }
}

impl RunningMesh {
    /// The address it listens on (`0.0.0.0:0` for a mesh [launched](Mesh::launch) without a
    /// listener).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner
            .addr
            .get()
            .copied()
            .unwrap_or_else(|| SocketAddr::new([0, 0, 0, 0].into(), 0))
    }

    /// `http://host:port` of the server.
    pub fn url(&self) -> &Url {
        &self.inner.url
    }

    /// The ingress URL of broker `namespace/name`.
    pub fn broker_url(&self, namespace: &str, name: &str) -> Url {
        evmesh_config::broker_url(&self.inner.url, namespace, name)
    }

    /// Publishes an event into a broker without HTTP; resolves once it is durably stored.
    ///
    /// # Errors
    /// As [`Publisher::publish`].
    pub async fn publish(
        &self,
        namespace: &str,
        broker: &str,
        event: cloudevents::Event,
    ) -> Result<u64, Error> {
        Ok(self.inner.service.publish(namespace, broker, event).await?)
    }

    /// A cheap, cloneable handle that only publishes.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            service: self.inner.service.clone(),
        }
    }

    /// Subscribes to the in-process subscriber `name` in namespace `default`; see
    /// [`subscribe_in`](Self::subscribe_in).
    pub fn subscribe(&self, name: &str) -> Subscription {
        self.subscribe_in("default", name)
    }

    /// Subscribes to the in-process subscriber `namespace/name`: deliveries that a trigger,
    /// subscription or dead-letter sink addresses to
    /// `ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: <name>}` come out of
    /// the returned stream, through the same delivery engine as HTTP subscribers (retries,
    /// backoff, dead letters, replies, ordering), without HTTP or re-encoding. Answer each
    /// [`Delivery`] with `ack`, `reply` or `nack`. Several subscriptions to one name share its
    /// deliveries. While none is alive, deliveries wait (the trigger reports
    /// `SubscriberNotReady`) instead of using up retries. The stream ends at shutdown.
    ///
    /// ```no_run
    /// # async fn demo(running: evmesh::RunningMesh) {
    /// use evmesh::Nack;
    /// let mut orders = running.subscribe("orders");
    /// while let Some(delivery) = orders.next().await {
    ///     match delivery.json::<serde_json::Value>() {
    ///         Ok(order) => { println!("{order}"); delivery.ack() }
    ///         Err(e) => delivery.nack(Nack::reject(e.to_string())),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn subscribe_in(&self, namespace: &str, name: &str) -> Subscription {
        self.inner.service.subscribers().subscribe(namespace, name)
    }

    /// The closure form of [`subscribe`](Self::subscribe): runs `handler` for each delivery to
    /// in-process subscriber `default/name` (concurrently, as the engine sends them; one at a
    /// time per partition key for an ordered trigger). `Ok(None)` acks, `Ok(Some(reply))` replies,
    /// `Err(nack)` nacks. Runs until shutdown or until the returned task is aborted.
    ///
    /// ```no_run
    /// # async fn demo(running: evmesh::RunningMesh) {
    /// running.handle("orders", |event| async move {
    ///     println!("order {}", cloudevents::AttributesReader::id(&event));
    ///     Ok(None)
    /// });
    /// # }
    /// ```
    pub fn handle<F, Fut>(&self, name: &str, handler: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn(cloudevents::Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<cloudevents::Event>, Nack>> + Send + 'static,
    {
        let mut subscription = self.subscribe(name);
        let handler = Arc::new(handler);
        tokio::spawn(async move {
            while let Some(delivery) = subscription.next().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    match handler(delivery.event().clone()).await {
                        Ok(None) => delivery.ack(),
                        Ok(Some(reply)) => delivery.reply(reply),
                        Err(nack) => delivery.nack(nack),
                    }
                });
            }
        })
    }

    /// The mesh's HTTP routes (broker and channel ingress, source webhooks, admin API and health,
    /// event display, `/metrics`) for merging into an existing axum app at its root.
    pub fn router(&self) -> Router {
        self.ingress_router()
            .merge(self.inner.runtime.sources().router())
            .merge(self.admin_router())
            .merge(display::routes())
            .merge(self.metrics_router())
    }

    /// Only the ingress routes: `/{namespace}/{broker}` and `/channels/{namespace}/{name}`.
    pub fn ingress_router(&self) -> Router {
        evmesh_broker::ingress::routes(self.inner.service.clone(), self.inner.max_event_size)
    }

    /// Only the admin API (`/apis/...`, the kubectl surface) and `/healthz`, `/readyz`.
    pub fn admin_router(&self) -> Router {
        admin::routes(admin::Admin {
            runtime: self.inner.runtime.clone(),
            ready: self.inner.ready.clone(),
            token: self.inner.admin_token.clone(),
            store: self.inner.store.clone(),
        })
    }

    /// Only `/metrics` (Prometheus text).
    pub fn metrics_router(&self) -> Router {
        evmesh_broker::telemetry::metrics_routes()
    }

    /// Trigger `namespace/name`'s status (`None` when no such trigger is configured).
    pub fn trigger(&self, namespace: &str, name: &str) -> Option<TriggerStatus> {
        self.inner
            .service
            .trigger(namespace, name)
            .map(|v| TriggerStatus {
                namespace: v.namespace,
                name: v.name,
                broker: v.broker,
                subscriber_uri: v.subscriber_uri,
                dead_letter_sink_uri: v.dead_letter_sink_uri,
                not_ready: v
                    .not_ready_reason
                    .map(|r| (v.not_ready_code.unwrap_or_else(|| "NotReady".into()), r)),
                counters: v.counters,
            })
    }

    /// The broker service (status of brokers and triggers).
    #[doc(hidden)]
    pub fn service(&self) -> &BrokerService {
        &self.inner.service
    }

    /// Re-reads the files the mesh was built from ([`Mesh::from_paths`]) and applies the
    /// difference (added, changed and removed resources) without a restart. On any error the
    /// running configuration stays as it was and the errors are returned.
    ///
    /// # Errors
    /// Every problem of the files; nothing changes then.
    pub async fn reload(&self) -> Result<Vec<evmesh_config::Warning>, ConfigErrors> {
        let (docs, errors) = evmesh_config::load_paths(&self.inner.files);
        if !errors.is_empty() {
            return Err(ConfigErrors {
                errors,
                warnings: vec![],
            });
        }
        self.inner.runtime.sync_declared(docs).await
    }

    /// The files [`reload`](Self::reload) re-reads (directories expanded).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        evmesh_config::expand_paths(&self.inner.files)
    }

    /// Graceful shutdown, from any handle: stops accepting events (503), drains in-flight
    /// deliveries, saves progress, flushes and closes the store (the data directory is unlocked
    /// when this returns), ends subscription streams, then stops the HTTP server. Calling it
    /// again (or from another handle) waits for the first call and returns.
    pub async fn shutdown(&self) {
        let mut done = self.inner.done.lock().await;
        if *done {
            return;
        }
        self.inner.ready.store(false, Ordering::Release);
        // Sources stop first: they publish into the brokers.
        self.inner.runtime.sources().shutdown().await;
        self.inner.service.shutdown().await;
        self.inner.service.subscribers().close();
        self.inner.store.close();
        let _ = self.inner.stop.send(true);
        if let Some(server) = self.inner.server.lock().await.take() {
            let _ = server.await;
        }
        *done = true;
    }
}
