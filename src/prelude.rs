//! What a program embedding evmesh needs, in one import: `use evmesh::prelude::*;`.
//!
//! ```
//! use evmesh::prelude::*;
//! let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created").build()?;
//! assert_eq!(event.ty(), "order.created");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[doc(inline)]
pub use crate::{
    Broker, BrokerSpec, CounterSnapshot, Delivery, Destination, Error, FilterSpec, KReference,
    Mesh, Nack, ObjectMeta, Options, Publisher, RunningMesh, StorageEngine, Subscription, Trigger,
    TriggerSpec, TriggerStatus, Warning,
};
#[doc(inline)]
pub use crate::{ConfigError, ConfigErrors, Resource};
#[doc(inline)]
pub use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
