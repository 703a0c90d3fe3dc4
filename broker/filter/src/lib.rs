//! Trigger filters: Knative's `filter.attributes` and `filters` dialects, CESQL v1, JSONPath data
//! filters, and an index that finds the matching triggers of an event without testing them all.
//!
//! A filter is parsed once ([`FilterSpec::compile`], [`Filter::cesql`], ...) into a [`Filter`] and
//! then evaluated per event with [`Filter::matches`]. No HTTP in here.
//!
//! ```
//! use evmesh_filter::Filter;
//! let f = Filter::cesql("type LIKE 'order.%' AND EXISTS customerid").unwrap();
//! let event = cloudevents::EventBuilderV10::new()
//!     .id("1").source("/shop").ty("order.created").extension("customerid", "42")
//!     .build().unwrap();
//! # use cloudevents::EventBuilder;
//! assert!(f.matches(&event));
//! ```

use std::collections::BTreeMap;

use cloudevents::Event;

/// The YAML/JSON shape of one entry of a Trigger's `spec.filters` (Knative's
/// `SubscriptionsAPIFilter`), plus evmesh's namespaced JSONPath extension. Exactly one dialect
/// may be set per entry; an entry with none matches everything.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Every listed attribute equals the value (case-sensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<BTreeMap<String, String>>,
    /// Every listed attribute starts with the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<BTreeMap<String, String>>,
    /// Every listed attribute ends with the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<BTreeMap<String, String>>,
    /// All nested filters hold (at least one required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<FilterSpec>>,
    /// At least one nested filter holds (at least one required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<FilterSpec>>,
    /// The nested filter does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<FilterSpec>>,
    /// A CloudEvents SQL v1 expression that must evaluate to TRUE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cesql: Option<String>,
    /// evmesh extension: a JSONPath (RFC 9535) query over the event's JSON data.
    #[serde(
        default,
        rename = "evmesh.dev/jsonpath",
        skip_serializing_if = "Option::is_none"
    )]
    pub jsonpath: Option<JsonPathSpec>,
}

/// evmesh's JSONPath data filter: holds when `query` selects at least one node (and, with
/// `equals`, when one selected node equals that value).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum JsonPathSpec {
    /// `evmesh.dev/jsonpath: "$.order[?@.total > 100]"`
    Query(String),
    /// `evmesh.dev/jsonpath: {query: "$.status", equals: "paid"}`
    Compare {
        /// The JSONPath query.
        query: String,
        /// The value one selected node must equal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        equals: Option<serde_json::Value>,
    },
}

/// Why a filter could not be compiled. `path` points into the filter list, e.g. `[1].any[0].cesql`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FilterError {
    /// Where in the filter spec the problem is (`[i]`, `.all[j]`, `.cesql`, ...); empty for a
    /// filter built directly.
    pub path: String,
    /// What is wrong. For CESQL syntax errors it names the position in the expression.
    pub message: String,
    /// For CESQL syntax errors: 1-based character column in the expression.
    pub column: Option<usize>,
}

/// A compiled filter. Cheap to clone, `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Filter {
    _private: (),
}

impl Filter {
    /// Matches every event.
    pub fn match_all() -> Filter {
        unimplemented!()
    }

    /// Knative's legacy `spec.filter.attributes`: every key must be present; an empty value
    /// matches any non-empty value, otherwise exact, case-sensitive equality.
    pub fn attributes(attrs: &BTreeMap<String, String>) -> Result<Filter, FilterError> {
        let _ = attrs;
        unimplemented!()
    }

    /// Compiles a Knative `spec.filters` list (all entries must hold; an empty list matches all).
    pub fn from_specs(specs: &[FilterSpec]) -> Result<Filter, FilterError> {
        let _ = specs;
        unimplemented!()
    }

    /// Compiles a CESQL v1 expression.
    pub fn cesql(expression: &str) -> Result<Filter, FilterError> {
        let _ = expression;
        unimplemented!()
    }

    /// Names the filter (the trigger's `namespace/name`) for error metrics and logs.
    pub fn named(self, name: &str) -> Filter {
        let _ = name;
        self
    }

    /// Whether the event passes.
    pub fn matches(&self, event: &Event) -> bool {
        let _ = event;
        unimplemented!()
    }
}

/// Many filters, indexed: [`FilterIndex::matching`] costs in proportion to the number of
/// matching entries (plus the non-indexable ones), not to the number of entries.
#[derive(Debug)]
pub struct FilterIndex<K> {
    _entries: Vec<(K, Filter)>,
}

impl<K: Clone> FilterIndex<K> {
    /// Builds the index.
    pub fn new(entries: Vec<(K, Filter)>) -> Self {
        FilterIndex { _entries: entries }
    }

    /// Appends to `out` the key of every entry whose filter matches `event`, each once, in the
    /// order the entries were given.
    pub fn matching(&self, event: &Event, out: &mut Vec<K>) {
        let _ = (event, out);
        unimplemented!()
    }
}

pub mod cesql;
mod attr;
