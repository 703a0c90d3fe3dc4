//! evmesh: Knative Eventing without Kubernetes, as a library.
//!
//! Build a mesh from the Knative YAML you already have (Broker, Trigger, Channel, Subscription,
//! sources) or from typed resources, run it on a listener of your own or inside your axum app,
//! publish CloudEvents into a broker over HTTP or straight from Rust, and receive them in Rust
//! through in-process subscribers. Every accepted event is stored durably before it is
//! acknowledged and delivered at least once to every trigger that matches it, with Knative's
//! retry, backoff and dead-letter rules.
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
//! spec: {broker: default, subscriber: {ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: orders}}}
//! "#)?;
//! let running = mesh.data_dir("./evmesh-data").start(tokio::net::TcpListener::bind("127.0.0.1:0").await?).await?;
//! running.handle("orders", |event| async move { println!("{}", event.id()); Ok(None) });
//! let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created").build()?;
//! running.publish("default", "default", event).await?; // durable once this returns
//! running.wait_idle().await?;  // delivered
//! running.shutdown().await;    // drains deliveries, unlocks the data dir
//! # Ok(()) }
//! ```
//!
//! Everything a program needs is in [`prelude`]: [`Mesh`] (configured), [`RunningMesh`] (a
//! cheap, cloneable handle to a running mesh), [`Publisher`], the CloudEvents
//! [`Event`](cloudevents::Event) and its builders, the typed resources ([`Broker`],
//! [`Trigger`], ...), [`Error`], [`TriggerStatus`], and the in-process subscriber types
//! [`Subscription`], [`Delivery`] and [`Nack`].
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
//! ```no_run
//! # async fn demo(running: evmesh::RunningMesh) {
//! use evmesh::prelude::*;
//! let mut orders = running.subscribe("orders");
//! while let Some(delivery) = orders.next().await {
//!     match delivery.json::<serde_json::Value>() {
//!         Ok(order) if order["total"].is_number() => delivery.ack(),
//!         Ok(_) => delivery.nack(Nack::reject("no total").with_status(422)),
//!         Err(_) => delivery.nack(Nack::retry("try again")),
//!     }
//! }
//! # }
//! ```
//!
//! # Waiting for delivery
//! [`RunningMesh::wait_idle`] resolves once every accepted event has been delivered, replied
//! to or dead-lettered by every route (with the events those deliveries produced); bound it
//! with [`tokio::time::timeout`]. [`RunningMesh::trigger`] gives one trigger's readiness and
//! counters.
//!
//! # Next to an existing axum app
//! [`Mesh::launch`] starts a mesh without a server; [`RunningMesh::router`] (or
//! [`ingress_router`](RunningMesh::ingress_router), [`admin_router`](RunningMesh::admin_router),
//! [`metrics_router`](RunningMesh::metrics_router)) gives its routes to merge into your app:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let running = evmesh::Mesh::from_paths(&["mesh.yaml".into()])?
//!     .launch("http://127.0.0.1:8080".parse()?) // where the routes are reachable
//!     .await?;
//! let app = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "hi" }))
//!     .merge(running.router()); // POST /default/default reaches broker default/default
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//! * **At least once.** An event is durable when `publish` returns (or ingress answers 202),
//!   and a delivery counts as done only once answered. After a crash unfinished deliveries are
//!   made again, so a subscriber may see an event twice: deduplicate on `id` + `source`.
//! * **Ordering.** A trigger delivers concurrently (up to `max_in_flight`) by default, in no
//!   particular order. An ordered trigger (`kafka.eventing.knative.dev/delivery.order:
//!   ordered`) hands one event per `partitionkey` at a time, in log order, across retries (on
//!   the Kafka broker class: one event per partition, as Knative's Kafka broker).
//! * **Replies** are stored in the broker (or sent to a subscription's `reply`) before the
//!   delivery they answer counts as done.
//! * **Shutdown** ([`RunningMesh::shutdown`]) stops accepting, drains in-flight deliveries,
//!   saves progress and closes the store; pending retries resume after the next start.
//!
//! # Errors
//! One `#[non_exhaustive]` [`Error`]: a configuration with every cause (file, line and field;
//! typed resources are named `resources[i] Kind namespace/name`), a data directory in use, the
//! store, not found, an invalid event, shutting down. [`Mesh::strict`] turns configuration
//! warnings into errors; otherwise they are logged.
//!
//! # Features
//! * `cli` (default): the `evmesh` binary and its dependencies (clap, tracing-subscriber,
//!   anyhow), and serde_json's `preserve_order` (its output keeps the key order of the YAML).
//! * `fjall` (default): the fjall storage engine, and the segments engine (the default
//!   [`Options::engine`]: the events in segment files of evmesh's own, the rest in fjall).
//! * `redb`, `sled`: the other storage engines.
//!
//! `evmesh = { version = "0.1", default-features = false, features = ["fjall"] }` is the
//! library alone, with nothing forced on the rest of your dependency graph.

mod admin;
mod closing;
mod display;
pub mod kinds;
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
    Broker, BrokerSpec, ConfigError, ConfigErrors, Destination, FilterSpec, KReference, ObjectMeta,
    Resource, Trigger, TriggerSpec, Warning,
};
#[doc(inline)]
pub use evmesh_sources::KubeApi;
#[doc(inline)]
pub use evmesh_store::EngineKind as StorageEngine;

/// The quickstart YAML `evmesh serve` runs when no `-f` is given.
pub const QUICKSTART_YAML: &str = include_str!("../examples/quickstart.yaml");

/// How a mesh runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the durable store lives.
    pub data_dir: PathBuf,
    /// The storage engine: segments (default) or fjall (cargo feature `fjall`, on by default),
    /// redb or sled (cargo features `redb`, `sled`). An engine that is not built in fails
    /// [`Mesh::launch`] with [`Error::Store`].
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
    /// The Kubernetes API ApiServerSources watch (a kubeconfig, in-cluster); `None`: evmesh's
    /// own admin API, at the mesh's URL with [`Options::admin_token`].
    pub kube_api: Option<KubeApi>,
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
            kube_api: None,
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
    /// The broker or channel is configured but does not run yet (its Kafka or NATS cannot be
    /// reached; tried again on a timer): nothing was stored, publish again later.
    #[error("{0}")]
    NotReady(String),
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
            PublishError::NotReady(why) => Error::NotReady(why),
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
    /// ```
    /// let yaml = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n";
    /// let mesh = evmesh::Mesh::from_yaml(yaml)?;
    /// assert_eq!(mesh.config().brokers.len(), 1);
    /// # Ok::<(), evmesh::ConfigErrors>(())
    /// ```
    pub fn from_yaml(text: &str) -> Result<Mesh, ConfigErrors> {
        Self::from_named_yaml("<yaml>", text)
    }

    fn from_named_yaml(name: &str, text: &str) -> Result<Mesh, ConfigErrors> {
        kinds::install();
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
    /// ```no_run
    /// let mesh = evmesh::Mesh::from_paths(&["config/".into(), "extra.yaml".into()])?;
    /// # Ok::<(), evmesh::ConfigErrors>(())
    /// ```
    pub fn from_paths(paths: &[PathBuf]) -> Result<Mesh, ConfigErrors> {
        kinds::install();
        let config = MeshConfig::from_paths(paths)?;
        let (docs, _) = evmesh_config::load_paths(paths);
        Ok(Mesh::new(config, docs, paths.to_vec()))
    }

    /// A mesh from typed resources.
    ///
    /// # Errors
    /// Every problem of the resources.
    /// ```
    /// use evmesh::prelude::*;
    /// let broker = Resource::Broker(Broker {
    ///     metadata: ObjectMeta { name: "default".into(), namespace: "default".into(), ..Default::default() },
    ///     ..Default::default()
    /// });
    /// let mesh = Mesh::from_resources(&[broker])?;
    /// assert!(mesh.warnings().is_empty());
    /// # Ok::<(), ConfigErrors>(())
    /// ```
    pub fn from_resources(resources: &[Resource]) -> Result<Mesh, ConfigErrors> {
        kinds::install();
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
    /// ```
    /// let mesh = evmesh::Mesh::from_yaml("")?.data_dir("/var/lib/app/events");
    /// assert_eq!(mesh.effective_options().data_dir, std::path::Path::new("/var/lib/app/events"));
    /// # Ok::<(), evmesh::ConfigErrors>(())
    /// ```
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
    /// ```
    /// let mesh = evmesh::Mesh::from_yaml("")?.strict(true);
    /// assert!(mesh.effective_options().strict);
    /// # Ok::<(), evmesh::ConfigErrors>(())
    /// ```
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
    /// ```
    /// let yaml = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n";
    /// let mesh = evmesh::Mesh::from_yaml(yaml)?;
    /// for broker in &mesh.config().brokers {
    ///     println!("broker {}", broker.resource.metadata.name);
    /// }
    /// # Ok::<(), evmesh::ConfigErrors>(())
    /// ```
    pub fn config(&self) -> &MeshConfig {
        &self.config
    }

    /// The configuration's warnings (logged at start; errors in strict mode).
    /// ```
    /// let yaml = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\nspec: {colour: red}\n";
    /// let mesh = evmesh::Mesh::from_yaml(yaml)?;
    /// assert!(mesh.warnings()[0].to_string().contains("colour"));
    /// # Ok::<(), evmesh::ConfigErrors>(())
    /// ```
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
        // eventing-natss's `config-nats` ConfigMap in the YAML wins over the option.
        let nats_url = self
            .config
            .nats_url
            .clone()
            .unwrap_or_else(|| options.nats_url.clone());
        service.register_log_provider(Arc::new(evmesh_channels::NatsProvider::new(nats_url)));
        // A Kafka-class Broker's `spec.config` and Knative's `kafka-channel-config` ConfigMap
        // in the YAML win over the option.
        let mut kafka = options
            .kafka_bootstrap_servers
            .as_deref()
            .map(|s| evmesh_kafka::KafkaSettings::new(evmesh_config::kafka::split_servers(s)));
        if let Some(k) = kafka.as_mut() {
            k.message_timeout = options.kafka_produce_timeout;
        }
        service.register_log_provider(Arc::new(
            evmesh_kafka::KafkaProvider::new(kafka)
                .with_message_timeout(options.kafka_produce_timeout)
                .with_channel_bootstrap(self.config.kafka_channel_bootstrap.clone()),
        ));
        let (runtime, _warnings) = runtime::Runtime::start(
            service.clone(),
            store.clone(),
            base.clone(),
            options.url_template.clone(),
            options.default_channel,
            self.docs.clone(),
            options.kube_api.clone().unwrap_or_else(|| KubeApi::Evmesh {
                url: base.clone(),
                token: options.admin_token.clone(),
            }),
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
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// let running = evmesh::Mesh::from_yaml("")?.data_dir("./data").start(listener).await?;
    /// println!("serving on {}", running.url());
    /// running.shutdown().await;
    /// # Ok(()) }
    /// ```
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
                runtime.stop();
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
    /// [`Error::NotFound`] (no such broker), [`Error::NotReady`] (the broker's log, on Kafka,
    /// is not reachable yet: nothing was stored, try again), [`Error::ShuttingDown`],
    /// [`Error::Store`], [`Error::InvalidEvent`].
    /// ```no_run
    /// # async fn demo(running: evmesh::RunningMesh, event: cloudevents::Event) -> Result<(), evmesh::Error> {
    /// let offset = running.publisher().publish("default", "default", event).await?;
    /// println!("stored at offset {offset}");
    /// # Ok(()) }
    /// ```
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
    /// ```no_run
    /// # fn demo(running: evmesh::RunningMesh) {
    /// match running.trigger("default", "orders") {
    ///     Some(t) if t.is_ready() => println!("{} delivered", t.counters.delivered),
    ///     Some(t) => println!("not ready: {:?}", t.not_ready),
    ///     None => println!("no such trigger"),
    /// }
    /// # }
    /// ```
    pub fn is_ready(&self) -> bool {
        self.not_ready.is_none()
    }
}

impl RunningMesh {
    /// The address it listens on (`0.0.0.0:0` for a mesh [launched](Mesh::launch) without a
    /// listener).
    /// ```no_run
    /// # fn demo(running: evmesh::RunningMesh) {
    /// println!("listening on {}", running.local_addr());
    /// # }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.inner
            .addr
            .get()
            .copied()
            .unwrap_or_else(|| SocketAddr::new([0, 0, 0, 0].into(), 0))
    }

    /// `http://host:port` of the server.
    /// ```no_run
    /// # fn demo(running: evmesh::RunningMesh) {
    /// println!("admin API at {}apis", running.url());
    /// # }
    /// ```
    pub fn url(&self) -> &Url {
        &self.inner.url
    }

    /// The ingress URL of broker `namespace/name`.
    /// ```no_run
    /// # fn demo(running: evmesh::RunningMesh) {
    /// // Where HTTP clients POST CloudEvents for broker default/default.
    /// println!("{}", running.broker_url("default", "default"));
    /// # }
    /// ```
    pub fn broker_url(&self, namespace: &str, name: &str) -> Url {
        evmesh_config::broker_url(&self.inner.url, namespace, name)
    }

    /// Publishes an event into a broker without HTTP; resolves once it is durably stored.
    ///
    /// # Errors
    /// As [`Publisher::publish`].
    /// ```no_run
    /// # async fn demo(running: evmesh::RunningMesh) -> Result<(), Box<dyn std::error::Error>> {
    /// use evmesh::prelude::*;
    /// let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created").build()?;
    /// running.publish("default", "default", event).await?; // durable now
    /// # Ok(()) }
    /// ```
    pub async fn publish(
        &self,
        namespace: &str,
        broker: &str,
        event: cloudevents::Event,
    ) -> Result<u64, Error> {
        Ok(self.inner.service.publish(namespace, broker, event).await?)
    }

    /// A cheap, cloneable handle that only publishes.
    /// ```no_run
    /// # async fn demo(running: evmesh::RunningMesh, event: cloudevents::Event) {
    /// let publisher = running.publisher();
    /// tokio::spawn(async move { publisher.publish("default", "default", event).await });
    /// # }
    /// ```
    pub fn publisher(&self) -> Publisher {
        Publisher {
            service: self.inner.service.clone(),
        }
    }

    /// Subscribes to the in-process subscriber `name` in namespace `default`; see
    /// [`subscribe_in`](Self::subscribe_in).
    /// ```no_run
    /// # async fn demo(running: evmesh::RunningMesh) {
    /// let mut orders = running.subscribe("orders");
    /// while let Some(delivery) = orders.next().await {
    ///     delivery.ack();
    /// }
    /// # }
    /// ```
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
    /// ```no_run
    /// # async fn demo(running: evmesh::RunningMesh, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    /// let app = axum::Router::new()
    ///     .route("/hello", axum::routing::get(|| async { "hi" }))
    ///     .merge(running.router());
    /// axum::serve(listener, app).await
    /// # }
    /// ```
    pub fn router(&self) -> Router {
        self.ingress_router()
            .merge(self.inner.runtime.sources().router())
            .merge(self.admin_router())
            .merge(display::routes())
            .merge(self.metrics_router())
    }

    /// Only the ingress routes: `/{namespace}/{broker}` and `/channels/{namespace}/{name}`.
    /// ```no_run
    /// # fn demo(running: evmesh::RunningMesh) {
    /// // Ingress only: no admin API on this app.
    /// let app: axum::Router = axum::Router::new().merge(running.ingress_router());
    /// # }
    /// ```
    pub fn ingress_router(&self) -> Router {
        evmesh_broker::ingress::routes(self.inner.service.clone(), self.inner.max_event_size)
    }

    /// Only the admin API (`/apis/...`, the kubectl surface) and `/healthz`, `/readyz`.
    /// ```no_run
    /// # fn demo(running: evmesh::RunningMesh) {
    /// // The admin API under the app's own authentication layer, for example.
    /// let admin: axum::Router = running.admin_router();
    /// # }
    /// ```
    pub fn admin_router(&self) -> Router {
        admin::routes(admin::Admin {
            runtime: self.inner.runtime.clone(),
            ready: self.inner.ready.clone(),
            token: self.inner.admin_token.clone(),
            store: self.inner.store.clone(),
        })
    }

    /// Only `/metrics` (Prometheus text).
    /// ```no_run
    /// # fn demo(running: evmesh::RunningMesh) {
    /// let app: axum::Router = running.ingress_router().merge(running.metrics_router());
    /// # }
    /// ```
    pub fn metrics_router(&self) -> Router {
        evmesh_broker::telemetry::metrics_routes()
    }

    /// Trigger `namespace/name`'s status (`None` when no such trigger is configured).
    /// ```no_run
    /// # fn demo(running: evmesh::RunningMesh) {
    /// if let Some(status) = running.trigger("default", "orders") {
    ///     println!("delivered {}, retried {}", status.counters.delivered, status.counters.retried);
    /// }
    /// # }
    /// ```
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

    /// Resolves once every event accepted so far has been delivered, replied to or
    /// dead-lettered by every trigger and subscription that matches it (including events those
    /// deliveries produced: replies, dead letters into a broker). Nothing is in flight or waiting
    /// for a retry then. Routes that cannot run (not [ready](TriggerStatus::is_ready) because
    /// their broker or destination is missing) do not hold it up; a delivery to an in-process
    /// subscriber nobody listens on does. While events keep arriving, it resolves at the first
    /// moment nothing is left. Bound the wait with [`tokio::time::timeout`]:
    ///
    /// ```no_run
    /// # async fn demo(running: evmesh::RunningMesh, event: cloudevents::Event) -> Result<(), Box<dyn std::error::Error>> {
    /// running.publish("default", "default", event).await?;
    /// tokio::time::timeout(std::time::Duration::from_secs(5), running.wait_idle()).await??;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] when the mesh shuts down before it is idle.
    pub async fn wait_idle(&self) -> Result<(), Error> {
        Ok(self.inner.service.wait_idle().await?)
    }

    /// Whether the mesh is idle now (see [`wait_idle`](Self::wait_idle)).
    ///
    /// ```no_run
    /// # fn demo(running: evmesh::RunningMesh) {
    /// if running.is_idle() { println!("every accepted event is delivered"); }
    /// # }
    /// ```
    pub fn is_idle(&self) -> bool {
        self.inner.service.is_idle()
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
    /// ```no_run
    /// # async fn demo(running: evmesh::RunningMesh) {
    /// match running.reload().await {
    ///     Ok(warnings) => warnings.iter().for_each(|w| eprintln!("{w}")),
    ///     Err(errors) => eprintln!("kept the running configuration:\n{errors}"),
    /// }
    /// # }
    /// ```
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
    /// ```no_run
    /// # fn demo(running: evmesh::RunningMesh) {
    /// for file in running.watched_files() {
    ///     println!("watching {}", file.display());
    /// }
    /// # }
    /// ```
    pub fn watched_files(&self) -> Vec<PathBuf> {
        evmesh_config::expand_paths(&self.inner.files)
    }

    /// Graceful shutdown, from any handle: stops accepting events (503), drains in-flight
    /// deliveries, saves progress, flushes and closes the store (the data directory is unlocked
    /// when this returns), ends subscription streams, then stops the HTTP server. Calling it
    /// again (or from another handle) waits for the first call and returns.
    /// ```no_run
    /// # async fn demo(running: evmesh::RunningMesh) {
    /// let handle = running.clone();
    /// tokio::spawn(async move {
    ///     let _ = tokio::signal::ctrl_c().await;
    ///     handle.shutdown().await; // from any clone
    /// });
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        let mut done = self.inner.done.lock().await;
        if *done {
            return;
        }
        self.inner.ready.store(false, Ordering::Release);
        // Sources stop first: they publish into the brokers.
        self.inner.runtime.stop();
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
