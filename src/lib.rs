//! evmesh: Knative Eventing without Kubernetes.
//!
//! Build a mesh from the Knative YAML you already have (Broker, Trigger), start it on a listener
//! of your choosing, publish CloudEvents into a broker over HTTP or straight from Rust, and shut
//! it down gracefully. Every accepted event is stored durably before it is acknowledged and
//! delivered at least once to every trigger that matches it, with Knative's retry, backoff and
//! dead-letter rules.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cloudevents::{EventBuilder, EventBuilderV10};
//! let mesh = evmesh::Mesh::from_yaml(r#"
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
//!   subscriber: {uri: "http://127.0.0.1:9000/"}
//! "#)?
//! .data_dir("./evmesh-data");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let running = mesh.start(listener).await?;
//! let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created").build()?;
//! running.publish("default", "default", event).await?; // durable once this returns
//! running.shutdown().await; // drains in-flight deliveries
//! # Ok(()) }
//! ```
//!
//! The crates behind it: [`evmesh_config`] (resource model, YAML, validation, resolution),
//! [`evmesh_broker`] (ingress, dispatcher, delivery), [`evmesh_filter`] (filters),
//! [`evmesh_store`] (durable log).

mod admin;
mod display;
mod kube;
mod runtime;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use evmesh_broker::{BrokerService, PublishError, ServiceOptions};
use evmesh_config::{ConfigErrors, Document, MeshConfig, Resource};
use evmesh_store::EngineKind;
use tokio::net::TcpListener;
use tokio::sync::watch;
use url::Url;

pub use cloudevents;
pub use evmesh_broker;
pub use evmesh_config;
pub use evmesh_filter;
pub use evmesh_store;

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
        }
    }
}

/// Errors of building or starting a mesh.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] evmesh_store::StoreError),
    /// The brokers could not start.
    #[error("starting brokers: {0}")]
    Start(#[from] evmesh_broker::StartError),
    /// Network error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A mesh, configured but not running.
#[derive(Clone, Debug)]
pub struct Mesh {
    config: MeshConfig,
    docs: Vec<Document>,
    files: Vec<PathBuf>,
    options: Options,
}

impl Mesh {
    /// A mesh from Knative YAML text (one or more documents).
    pub fn from_yaml(text: &str) -> Result<Mesh, ConfigErrors> {
        Self::from_named_yaml("<yaml>", text)
    }

    fn from_named_yaml(name: &str, text: &str) -> Result<Mesh, ConfigErrors> {
        let docs = evmesh_config::load_str(name, text).map_err(|e| ConfigErrors {
            errors: vec![e],
            warnings: vec![],
        })?;
        let config = evmesh_config::validate(&docs)?;
        Ok(Mesh {
            config,
            docs,
            files: Vec::new(),
            options: Options::default(),
        })
    }

    /// A mesh from files and directories of Knative YAML; a running mesh re-reads them on
    /// [`RunningMesh::reload`] (the `serve` command: on SIGHUP and when they change).
    pub fn from_paths(paths: &[PathBuf]) -> Result<Mesh, ConfigErrors> {
        let config = MeshConfig::from_paths(paths)?;
        let (docs, _) = evmesh_config::load_paths(paths);
        Ok(Mesh {
            config,
            docs,
            files: paths.to_vec(),
            options: Options::default(),
        })
    }

    /// A mesh from typed resources.
    pub fn from_resources(resources: &[Resource]) -> Result<Mesh, ConfigErrors> {
        let config = MeshConfig::from_resources(resources)?;
        let text = MeshConfig::resources_yaml(resources);
        let docs = evmesh_config::load_str("<resources>", &text).map_err(|e| ConfigErrors {
            errors: vec![e],
            warnings: vec![],
        })?;
        Ok(Mesh {
            config,
            docs,
            files: Vec::new(),
            options: Options::default(),
        })
    }

    /// Sets all options.
    pub fn options(mut self, options: Options) -> Mesh {
        self.options = options;
        self
    }

    /// Sets the data directory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Mesh {
        self.options.data_dir = dir.into();
        self
    }

    /// The validated configuration.
    pub fn config(&self) -> &MeshConfig {
        &self.config
    }

    /// Opens the store, starts the brokers and serves ingress, admin API and health on `listener`.
    pub async fn start(self, listener: TcpListener) -> Result<RunningMesh, Error> {
        let addr = listener.local_addr()?;
        let ingress = base_url(addr)?;
        let dir = self.options.data_dir.clone();
        let engine = self.options.engine;
        std::fs::create_dir_all(&dir)?;
        let store = tokio::task::spawn_blocking(move || evmesh_store::open(engine, &dir))
            .await
            .map_err(std::io::Error::other)??;
        let service = BrokerService::new(store.clone(), self.options.service.clone())?;
        let (runtime, _warnings) = runtime::Runtime::start(
            service.clone(),
            store,
            ingress.clone(),
            self.options.url_template.clone(),
            self.options.default_channel,
            self.docs.clone(),
        )
        .await?;
        let ready = Arc::new(AtomicBool::new(true));
        let app: Router =
            evmesh_broker::ingress::routes(service.clone(), self.options.max_event_size)
                .merge(admin::routes(admin::Admin {
                    runtime: runtime.clone(),
                    ready: ready.clone(),
                    token: self.options.admin_token.as_deref().map(Arc::from),
                }))
                .merge(display::routes())
                .merge(evmesh_broker::telemetry::metrics_routes());
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!("server error: {e}");
            }
        });
        Ok(RunningMesh {
            addr,
            url: ingress,
            service,
            runtime,
            files: self.files,
            ready,
            stop: stop_tx,
            server,
        })
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

/// A running mesh.
pub struct RunningMesh {
    addr: SocketAddr,
    url: Url,
    service: BrokerService,
    runtime: runtime::Runtime,
    files: Vec<PathBuf>,
    ready: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl RunningMesh {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` of the server.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The ingress URL of broker `namespace/name`.
    pub fn broker_url(&self, namespace: &str, name: &str) -> Url {
        evmesh_config::broker_url(&self.url, namespace, name)
    }

    /// Publishes an event into a broker without HTTP; resolves once it is durably stored.
    pub async fn publish(
        &self,
        namespace: &str,
        broker: &str,
        event: cloudevents::Event,
    ) -> Result<u64, PublishError> {
        self.service.publish(namespace, broker, event).await
    }

    /// The broker service (status of brokers and triggers).
    pub fn service(&self) -> &BrokerService {
        &self.service
    }

    /// Re-reads the files the mesh was built from ([`Mesh::from_paths`]) and applies the
    /// difference (added, changed and removed resources) without a restart. On any error the
    /// running configuration stays as it was and the errors are returned.
    pub async fn reload(&self) -> Result<Vec<evmesh_config::Warning>, ConfigErrors> {
        let (docs, errors) = evmesh_config::load_paths(&self.files);
        if !errors.is_empty() {
            return Err(ConfigErrors {
                errors,
                warnings: vec![],
            });
        }
        self.runtime.sync_declared(docs).await
    }

    /// The files [`reload`](Self::reload) re-reads (directories expanded).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        evmesh_config::expand_paths(&self.files)
    }

    /// Graceful shutdown: stops accepting events (503), drains in-flight deliveries, saves
    /// progress, flushes the store, then stops the HTTP server.
    /// Consumes the handle so that the store is closed (and its directory unlocked) on return.
    pub async fn shutdown(self) {
        self.ready.store(false, Ordering::Release);
        self.service.shutdown().await;
        let _ = self.stop.send(true);
        let _ = self.server.await;
    }
}
