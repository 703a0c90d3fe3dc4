//! The broker data plane: ingress (validate, stamp, store), filter (route per trigger through the
//! filter index) and dispatcher (deliver, retry, dead-letter, route replies), as separate steps.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use evmesh_broker::{BrokerService, ServiceOptions};
//! use evmesh_config::{MeshConfig, Resolver};
//! let mesh = MeshConfig::from_paths(&["mesh.yaml".into()])?;
//! let resolver = Resolver::new(&mesh, "http://127.0.0.1:8080".parse()?, None);
//! let store = evmesh_store::open(Default::default(), std::path::Path::new("./data"))?;
//! let service = BrokerService::start(&mesh, &resolver, store, ServiceOptions::default()).await?;
//! let app = evmesh_broker::ingress::routes(service.clone(), 1 << 20);
//! # let _ = app; Ok(()) }
//! ```

pub mod attributes;
pub mod codec;
pub mod delivery;
mod dispatcher;
mod http_client;
pub mod ingress;
pub mod kind;
pub mod log;
mod log_route;
pub mod metrics;
pub mod record;
mod replay;
mod service;
pub mod subscriber;
mod supervise;
pub mod telemetry;
pub mod tls;

pub use log_route::{LogRoute, LogRouteSpec};
pub use replay::ReplayError;
pub use service::{
    BrokerService, BrokerView, ChannelView, PublishError, ServiceOptions, StartError,
    SubscriptionView, TriggerView,
};
