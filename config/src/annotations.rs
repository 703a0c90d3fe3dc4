//! Trigger annotations evmesh acts on: Knative's ordered delivery and evmesh's replay position.

use std::fmt;

/// Knative Kafka broker's trigger annotation choosing the delivery order.
pub const DELIVERY_ORDER_ANNOTATION: &str = "kafka.eventing.knative.dev/delivery.order";
/// evmesh's trigger annotation positioning the trigger on its broker's log.
pub const REPLAY_FROM_ANNOTATION: &str = "evmesh.dev/replay-from";

/// How a trigger orders its deliveries (`kafka.eventing.knative.dev/delivery.order`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeliveryOrder {
    /// Deliveries run concurrently up to the in-flight limit, in no particular order (default).
    #[default]
    Unordered,
    /// Events with the same `partitionkey` extension are delivered one at a time in log order;
    /// events without one are ordered among themselves; different keys run in parallel.
    Ordered,
}

impl DeliveryOrder {
    /// Parses the annotation's value: `ordered` or `unordered`.
    ///
    /// ```
    /// # use evmesh_config::DeliveryOrder;
    /// assert_eq!(DeliveryOrder::parse("ordered"), Ok(DeliveryOrder::Ordered));
    /// assert!(DeliveryOrder::parse("sorted").is_err());
    /// ```
    pub fn parse(value: &str) -> Result<DeliveryOrder, String> {
        match value {
            "ordered" => Ok(DeliveryOrder::Ordered),
            "unordered" => Ok(DeliveryOrder::Unordered),
            other => Err(format!(
                "{DELIVERY_ORDER_ANNOTATION} must be \"ordered\" or \"unordered\", not {other:?}"
            )),
        }
    }
}

/// Where on its broker's log a trigger is positioned by a replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayFrom {
    /// The oldest record still in the log (within retention).
    Earliest,
    /// The first record appended at or after this time (Unix milliseconds).
    TimeMs(u64),
}

impl ReplayFrom {
    /// Parses `earliest` or an RFC 3339 time (at or after the Unix epoch).
    ///
    /// ```
    /// # use evmesh_config::ReplayFrom;
    /// assert_eq!(ReplayFrom::parse("earliest"), Ok(ReplayFrom::Earliest));
    /// assert_eq!(ReplayFrom::parse("1970-01-01T00:00:01Z"), Ok(ReplayFrom::TimeMs(1000)));
    /// assert!(ReplayFrom::parse("yesterday").is_err());
    /// ```
    pub fn parse(value: &str) -> Result<ReplayFrom, String> {
        if value == "earliest" {
            return Ok(ReplayFrom::Earliest);
        }
        let t = chrono::DateTime::parse_from_rfc3339(value).map_err(|e| {
            format!("must be \"earliest\" or an RFC 3339 time, not {value:?} ({e})")
        })?;
        u64::try_from(t.timestamp_millis())
            .map(ReplayFrom::TimeMs)
            .map_err(|_| format!("{value:?} is before 1970-01-01T00:00:00Z"))
    }
}

impl fmt::Display for ReplayFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayFrom::Earliest => f.write_str("earliest"),
            ReplayFrom::TimeMs(ms) => match i64::try_from(*ms)
                .ok()
                .and_then(chrono::DateTime::from_timestamp_millis)
            {
                Some(t) => f.write_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                None => write!(f, "{ms}ms"),
            },
        }
    }
}
