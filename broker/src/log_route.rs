//! A delivery route over a log evmesh does not own (a KafkaSource's topics): the one delivery
//! engine's run over any [`ConsumerGroup`], delivering to a resolved sink with the route's
//! delivery spec (retries, backoff, dead-letter sink). Replies are discarded, as a source's are.

use std::sync::Arc;
use std::time::Duration;

use evmesh_config::{Delivery, DeliveryOrder};
use evmesh_filter::Filter;
use tokio::sync::watch;
use url::Url;

use crate::BrokerService;
use crate::delivery::{Plan, ReplyTo};
use crate::dispatcher::{TriggerShared, Worker};
use crate::log::ConsumerGroup;
use crate::metrics::{CounterSnapshot, Counters};
use crate::service::Publisher;

/// At most this long a stopping route waits for deliveries in flight (a source is stopped
/// within 10 s).
const ROUTE_DRAIN: Duration = Duration::from_secs(8);

/// What a [`LogRoute`] reads and where it delivers.
pub struct LogRouteSpec {
    /// A name for logs and metrics (e.g. `kafkasource/ns/name`).
    pub label: String,
    /// The namespace deliveries are made for (`Kn-Namespace`).
    pub namespace: String,
    /// The resolved sink.
    pub subscriber: Url,
    /// The sink's `CACerts` (PEM).
    pub subscriber_ca_certs: Option<String>,
    /// The resolved dead-letter sink.
    pub dead_letter: Option<Url>,
    /// Retries, backoff, timeout.
    pub delivery: Delivery,
    /// Ordered (per `partitionkey`, or per partition on a log that orders so, such as Kafka), or
    /// unordered.
    pub order: DeliveryOrder,
    /// The log's consumer group.
    pub group: Arc<dyn ConsumerGroup>,
    /// An `evmesh.dev/replay-from` annotation to apply (parsed, and as written): the group is
    /// repositioned there once per value (see [`Cursor::seek`](crate::log::Cursor::seek)).
    pub replay_from: Option<(evmesh_config::ReplayFrom, String)>,
}

/// A running route; [`stop`](LogRoute::stop) it (dropping it leaves it running until the
/// process ends).
pub struct LogRoute {
    shared: Arc<TriggerShared>,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for LogRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogRoute")
            .field("label", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl LogRoute {
    /// Why the route does not deliver now (`None` when it does).
    pub fn not_ready_reason(&self) -> Option<String> {
        self.shared.not_ready_reason()
    }

    /// Its delivery counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }

    /// Stops it: deliveries in flight finish (up to the service's drain timeout) and the
    /// cursor saves where it stands.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl BrokerService {
    /// Starts delivering what `spec.group` reads to `spec.subscriber`, through the delivery
    /// engine every trigger uses (its in-flight limit and drain timeout included).
    pub fn start_log_route(&self, spec: LogRouteSpec) -> LogRoute {
        let plan = Plan {
            subscriber: Some(spec.subscriber),
            reply: ReplyTo::Discard,
            dead_letter: spec.dead_letter,
            subscriber_ca_certs: spec.subscriber_ca_certs.map(Arc::from),
            dead_letter_ca_certs: spec
                .delivery
                .dead_letter_sink
                .as_ref()
                .and_then(|d| d.ca_certs.as_deref())
                .map(Arc::from),
            metrics: None,
            delivery: spec.delivery,
            namespace: spec.namespace,
        };
        let (shared, commands) = TriggerShared::new(
            spec.label.clone(),
            format!("route/{}", spec.label),
            plan,
            Filter::match_all(),
            spec.order,
            0,
            Counters::default(),
        );
        let (stop, stop_rx) = watch::channel(false);
        let (max_in_flight, drain_timeout) = self.route_limits();
        let worker = Worker {
            shared: shared.clone(),
            group: spec.group,
            engine: self.engine().clone(),
            publisher: Publisher { broker: None },
            max_in_flight: max_in_flight.max(1),
            drain_timeout: drain_timeout.min(ROUTE_DRAIN),
            replay_from: spec.replay_from,
            // A source delivers every record of its topics.
            filter_records: false,
        };
        let task = tokio::spawn(worker.supervised(commands, stop_rx));
        LogRoute {
            shared,
            stop,
            task: std::sync::Mutex::new(Some(task)),
        }
    }
}
