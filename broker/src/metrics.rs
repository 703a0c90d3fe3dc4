//! Per-step counters (ingress, filter/router, dispatcher), readable through the admin API.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::telemetry::DeliveryMetrics;

#[derive(Default, Debug)]
struct Inner {
    prometheus: Option<Arc<DeliveryMetrics>>,
    accepted: AtomicU64,
    rejected: AtomicU64,
    routed: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    dropped: AtomicU64,
    discarded: AtomicU64,
}

/// Counters of one broker or trigger. Cheap to clone.
#[derive(Clone, Default, Debug)]
pub struct Counters(Arc<Inner>);

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CounterSnapshot {
    /// Events accepted at ingress (202).
    pub accepted: u64,
    /// Requests rejected at ingress.
    pub rejected: u64,
    /// (event, trigger) matches found by the filter step.
    pub routed: u64,
    /// Deliveries completed to the subscriber.
    pub delivered: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Events delivered to a dead-letter sink.
    pub dead_lettered: u64,
    /// Events given up on.
    pub dropped: u64,
    /// Records of the log that are not events (a Kafka record that is no CloudEvent),
    /// discarded without a delivery.
    pub discarded: u64,
}

impl Counters {
    /// Counters of a trigger that also feed its Prometheus metrics.
    pub(crate) fn for_trigger(namespace: &str, broker: &str, trigger: &str) -> Counters {
        Counters(Arc::new(Inner {
            prometheus: Some(Arc::new(DeliveryMetrics::new(namespace, broker, trigger))),
            ..Inner::default()
        }))
    }
    /// Counters of a subscription that also feed its Prometheus metrics.
    pub(crate) fn for_subscription(namespace: &str, channel: &str, name: &str) -> Counters {
        Counters(Arc::new(Inner {
            prometheus: Some(Arc::new(DeliveryMetrics::for_subscription(
                namespace, channel, name,
            ))),
            ..Inner::default()
        }))
    }
    /// The Prometheus metrics of a trigger's deliveries, for its delivery plan.
    pub(crate) fn delivery_metrics(&self) -> Option<Arc<DeliveryMetrics>> {
        self.0.prometheus.clone()
    }
    /// Logs a dead-lettered event (rate-limited per trigger).
    pub(crate) fn log_dead_lettered(
        &self,
        event: &str,
        failure: Option<&crate::delivery::Failure>,
        dead_letter_sink: &str,
    ) {
        if let Some(p) = &self.0.prometheus {
            p.log_dead_lettered(event, failure, dead_letter_sink);
        }
    }
    /// Logs a dropped event (rate-limited per trigger).
    pub(crate) fn log_dropped(&self, event: &str, failure: &crate::delivery::Failure) {
        if let Some(p) = &self.0.prometheus {
            p.log_dropped(event, failure);
        }
    }
    /// Sets the number of deliveries waiting for a retry.
    pub(crate) fn pending_retries(&self, n: usize) {
        if let Some(p) = &self.0.prometheus {
            p.pending_retries(n);
        }
    }
    pub(crate) fn accepted(&self) {
        self.0.accepted.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn rejected(&self) {
        self.0.rejected.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn routed(&self, n: usize) {
        self.0.routed.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub(crate) fn delivered(&self) {
        self.0.delivered.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn retried(&self) {
        self.0.retried.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn dead_lettered(&self) {
        self.0.dead_lettered.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &self.0.prometheus {
            p.dead_lettered();
        }
    }
    pub(crate) fn discarded(&self, n: u64) {
        self.0.discarded.fetch_add(n, Ordering::Relaxed);
        if let Some(p) = &self.0.prometheus {
            p.discarded(n);
        }
    }
    pub(crate) fn dropped(&self) {
        self.0.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &self.0.prometheus {
            p.dropped();
        }
    }

    /// Current values.
    pub fn snapshot(&self) -> CounterSnapshot {
        let i = &self.0;
        CounterSnapshot {
            accepted: i.accepted.load(Ordering::Relaxed),
            rejected: i.rejected.load(Ordering::Relaxed),
            routed: i.routed.load(Ordering::Relaxed),
            delivered: i.delivered.load(Ordering::Relaxed),
            retried: i.retried.load(Ordering::Relaxed),
            dead_lettered: i.dead_lettered.load(Ordering::Relaxed),
            dropped: i.dropped.load(Ordering::Relaxed),
            discarded: i.discarded.load(Ordering::Relaxed),
        }
    }
}
