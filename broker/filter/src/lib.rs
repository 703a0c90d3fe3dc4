//! Trigger filters: Knative's `filter.attributes` and `filters` dialects, CESQL v1, JSONPath data
//! filters, and an index that finds the matching triggers of an event without testing them all.
//!
//! A filter is parsed once ([`Filter::from_spec`], [`Filter::cesql`], ...) into a [`Filter`] and
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

mod attr;
pub mod cesql;
mod dialects;
mod index;
mod jsonpath;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::attr::AttrName;
use crate::dialects::{AttrFilter, Mode};
use crate::jsonpath::JsonPathFilter;

pub use crate::attr::{AttrValue, EventAttributes, format_time};
pub use crate::index::FilterIndex;

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

impl FilterError {
    fn at(path: &str, message: impl Into<String>) -> FilterError {
        FilterError {
            path: path.to_owned(),
            message: message.into(),
            column: None,
        }
    }
}

/// The total number of CESQL evaluation errors of every filter in this process (each one made
/// an event fail its filter).
pub fn cesql_errors_total() -> u64 {
    CESQL_ERRORS_TOTAL.load(Ordering::Relaxed)
}

static CESQL_ERRORS_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Minimum time between two warnings logged for one filter's CESQL errors.
const WARN_INTERVAL_MS: u64 = 10_000;

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let ms = START.get_or_init(Instant::now).elapsed().as_millis();
    // 0 means "never warned", so the clock starts at 1.
    u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
}

/// A filter's identity and error counters.
#[derive(Debug, Default)]
struct Meta {
    name: String,
    cesql_errors: AtomicU64,
    last_warn_ms: AtomicU64,
    errors_at_last_warn: AtomicU64,
}

impl Meta {
    fn cesql_error(&self, error: &cesql::EvalError) {
        CESQL_ERRORS_TOTAL.fetch_add(1, Ordering::Relaxed);
        let count = self.cesql_errors.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms();
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= WARN_INTERVAL_MS)
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let before = self.errors_at_last_warn.swap(count, Ordering::Relaxed);
            tracing::warn!(
                filter = %self.name,
                error = %error,
                errors_since_last_warning = count - before,
                errors_total = count,
                "CESQL evaluation error: the event does not pass this filter"
            );
        }
    }
}

/// The compiled form of a filter.
#[derive(Clone, Debug)]
enum Node {
    /// Every child holds; no child: matches everything.
    All(Vec<Node>),
    /// At least one child holds.
    Any(Vec<Node>),
    Not(Box<Node>),
    Attrs(AttrFilter),
    Cesql(cesql::Expression),
    JsonPath(JsonPathFilter),
}

impl Node {
    fn matches(&self, event: &dyn EventAttributes, meta: &Meta) -> bool {
        match self {
            Node::All(children) => children.iter().all(|c| c.matches(event, meta)),
            Node::Any(children) => children.iter().any(|c| c.matches(event, meta)),
            Node::Not(child) => !child.matches(event, meta),
            Node::Attrs(f) => f.matches(event),
            Node::Cesql(expr) => match expr.test(event) {
                Ok(pass) => pass,
                Err(e) => {
                    meta.cesql_error(&e);
                    false
                }
            },
            Node::JsonPath(f) => f.matches(event),
        }
    }

    fn match_all() -> Node {
        Node::All(Vec::new())
    }

    /// Wraps children of a filter list: one child stands for itself.
    fn all(mut children: Vec<Node>) -> Node {
        if children.len() == 1
            && let Some(only) = children.pop()
        {
            return only;
        }
        Node::All(children)
    }

    /// Whether evaluating it may read the event's data (a JSONPath filter somewhere in it).
    fn reads_data(&self) -> bool {
        match self {
            Node::All(children) | Node::Any(children) => children.iter().any(Node::reads_data),
            Node::Not(child) => child.reads_data(),
            Node::JsonPath(_) => true,
            Node::Attrs(_) | Node::Cesql(_) => false,
        }
    }

    /// Attribute/value pairs every matching event carries (from an exact or legacy
    /// attributes filter at the top, or inside a top-level `all`).
    fn required_pairs<'a>(&'a self, out: &mut Vec<(&'a AttrName, &'a str)>) {
        match self {
            Node::Attrs(f) => out.extend(f.exact_pairs()),
            Node::All(children) => children.iter().for_each(|c| c.required_pairs(out)),
            _ => {}
        }
    }
}

/// A compiled filter. Cheap to clone, `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Filter {
    node: Arc<Node>,
    meta: Arc<Meta>,
}

fn attr_filter(
    mode: Mode,
    attrs: &BTreeMap<String, String>,
    path: &str,
    allow_empty_values: bool,
) -> Result<AttrFilter, FilterError> {
    let mut out = Vec::with_capacity(attrs.len());
    for (name, value) in attrs {
        if name.is_empty() {
            return Err(FilterError::at(path, "attribute names must not be empty"));
        }
        if !attr::valid_name(name) {
            return Err(FilterError::at(
                path,
                format!("invalid attribute name {name:?}: must match ^[a-z][a-z0-9]*$"),
            ));
        }
        if value.is_empty() && !allow_empty_values {
            return Err(FilterError::at(
                path,
                format!("the value of attribute {name:?} must not be empty"),
            ));
        }
        out.push((AttrName::new(name), value.as_str().into()));
    }
    Ok(AttrFilter { mode, attrs: out })
}

fn cesql_error(path: &str, e: cesql::ParseError) -> FilterError {
    FilterError {
        path: path.to_owned(),
        message: e.to_string(),
        column: Some(e.column),
    }
}

/// Compiles one `spec.filters` entry; `None` when it sets no dialect (matches everything).
fn compile_spec(spec: &FilterSpec, path: &str) -> Result<Option<Node>, FilterError> {
    let set = [
        spec.exact.is_some(),
        spec.prefix.is_some(),
        spec.suffix.is_some(),
        spec.all.is_some(),
        spec.any.is_some(),
        spec.not.is_some(),
        spec.cesql.is_some(),
        spec.jsonpath.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set > 1 {
        return Err(FilterError::at(
            path,
            "multiple dialects found, filters can have only one dialect set",
        ));
    }
    let map_dialect = |mode, attrs: &BTreeMap<String, String>, key: &str| {
        let path = format!("{path}.{key}");
        if attrs.is_empty() {
            return Err(FilterError::at(
                &path,
                "must contain at least one attribute",
            ));
        }
        Ok(Some(Node::Attrs(attr_filter(mode, attrs, &path, false)?)))
    };
    if let Some(attrs) = &spec.exact {
        return map_dialect(Mode::Exact, attrs, "exact");
    }
    if let Some(attrs) = &spec.prefix {
        return map_dialect(Mode::Prefix, attrs, "prefix");
    }
    if let Some(attrs) = &spec.suffix {
        return map_dialect(Mode::Suffix, attrs, "suffix");
    }
    if let Some(list) = &spec.all {
        let key = format!("{path}.all");
        if list.is_empty() {
            return Err(FilterError::at(&key, "must contain at least one filter"));
        }
        let mut children = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            if let Some(n) = compile_spec(s, &format!("{key}[{i}]"))? {
                children.push(n);
            }
        }
        return Ok((!children.is_empty()).then(|| Node::all(children)));
    }
    if let Some(list) = &spec.any {
        let key = format!("{path}.any");
        if list.is_empty() {
            return Err(FilterError::at(&key, "must contain at least one filter"));
        }
        let mut children = Vec::with_capacity(list.len());
        let mut matches_all = false;
        for (i, s) in list.iter().enumerate() {
            match compile_spec(s, &format!("{key}[{i}]"))? {
                Some(n) => children.push(n),
                None => matches_all = true,
            }
        }
        return Ok((!matches_all).then_some(Node::Any(children)));
    }
    if let Some(inner) = &spec.not {
        return Ok(compile_spec(inner, &format!("{path}.not"))?.map(|n| Node::Not(Box::new(n))));
    }
    if let Some(expr) = &spec.cesql {
        let key = format!("{path}.cesql");
        let parsed = cesql::Expression::parse(expr).map_err(|e| cesql_error(&key, e))?;
        return Ok(Some(Node::Cesql(parsed)));
    }
    if let Some(jp) = &spec.jsonpath {
        let key = format!("{path}.evmesh.dev/jsonpath");
        return Ok(Some(Node::JsonPath(compile_jsonpath(jp, &key)?)));
    }
    Ok(None)
}

fn compile_jsonpath(spec: &JsonPathSpec, path: &str) -> Result<JsonPathFilter, FilterError> {
    let (query, equals) = match spec {
        JsonPathSpec::Query(q) => (q, None),
        JsonPathSpec::Compare { query, equals } => (query, equals.clone()),
    };
    JsonPathFilter::new(query, equals)
        .map_err(|e| FilterError::at(path, format!("invalid JSONPath query {query:?}: {e}")))
}

impl Filter {
    fn from_node(node: Node) -> Filter {
        Filter {
            node: Arc::new(node),
            meta: Arc::new(Meta::default()),
        }
    }

    fn node(&self) -> Node {
        (*self.node).clone()
    }

    /// Matches every event.
    pub fn match_all() -> Filter {
        Filter::from_node(Node::match_all())
    }

    /// Knative's legacy `spec.filter.attributes`: every key must be present; an empty value
    /// matches any non-empty value, otherwise exact, case-sensitive equality.
    pub fn attributes(attrs: &BTreeMap<String, String>) -> Result<Filter, FilterError> {
        if attrs.is_empty() {
            return Ok(Filter::match_all());
        }
        let f = attr_filter(Mode::Legacy, attrs, "attributes", true)?;
        Ok(Filter::from_node(Node::Attrs(f)))
    }

    /// Compiles a Knative `spec.filters` list (all entries must hold; an empty list matches all).
    pub fn from_specs(specs: &[FilterSpec]) -> Result<Filter, FilterError> {
        let mut children = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            if let Some(n) = compile_spec(spec, &format!("[{i}]"))? {
                children.push(n);
            }
        }
        Ok(Filter::from_node(Node::all(children)))
    }

    /// Compiles one `spec.filters` entry (the `FilterSpec` of a single dialect).
    pub fn from_spec(spec: &FilterSpec) -> Result<Filter, FilterError> {
        Ok(Filter::from_node(
            compile_spec(spec, "")?.unwrap_or_else(Node::match_all),
        ))
    }

    /// Compiles a CESQL v1 expression.
    pub fn cesql(expression: &str) -> Result<Filter, FilterError> {
        let parsed = cesql::Expression::parse(expression).map_err(|e| cesql_error("", e))?;
        Ok(Filter::from_node(Node::Cesql(parsed)))
    }

    /// The `exact` dialect: every attribute equals its value (case-sensitive).
    pub fn exact(attrs: &BTreeMap<String, String>) -> Result<Filter, FilterError> {
        Filter::map_dialect(Mode::Exact, attrs, "exact")
    }

    /// The `prefix` dialect: every attribute starts with its value.
    pub fn prefix(attrs: &BTreeMap<String, String>) -> Result<Filter, FilterError> {
        Filter::map_dialect(Mode::Prefix, attrs, "prefix")
    }

    /// The `suffix` dialect: every attribute ends with its value.
    pub fn suffix(attrs: &BTreeMap<String, String>) -> Result<Filter, FilterError> {
        Filter::map_dialect(Mode::Suffix, attrs, "suffix")
    }

    fn map_dialect(
        mode: Mode,
        attrs: &BTreeMap<String, String>,
        key: &str,
    ) -> Result<Filter, FilterError> {
        if attrs.is_empty() {
            return Err(FilterError::at(key, "must contain at least one attribute"));
        }
        Ok(Filter::from_node(Node::Attrs(attr_filter(
            mode, attrs, key, false,
        )?)))
    }

    /// The `all` dialect: every filter holds (at least one filter required).
    pub fn all(filters: Vec<Filter>) -> Result<Filter, FilterError> {
        if filters.is_empty() {
            return Err(FilterError::at("all", "must contain at least one filter"));
        }
        Ok(Filter::from_node(Node::all(
            filters.iter().map(Filter::node).collect(),
        )))
    }

    /// The `any` dialect: at least one filter holds (at least one filter required).
    pub fn any(filters: Vec<Filter>) -> Result<Filter, FilterError> {
        if filters.is_empty() {
            return Err(FilterError::at("any", "must contain at least one filter"));
        }
        Ok(Filter::from_node(Node::Any(
            filters.iter().map(Filter::node).collect(),
        )))
    }

    /// The `not` dialect: the filter does not hold (also available as `!filter`).
    pub fn negate(filter: Filter) -> Filter {
        Filter::from_node(Node::Not(Box::new(filter.node())))
    }

    /// evmesh's JSONPath data filter (`evmesh.dev/jsonpath`).
    pub fn jsonpath(spec: &JsonPathSpec) -> Result<Filter, FilterError> {
        Ok(Filter::from_node(Node::JsonPath(compile_jsonpath(
            spec,
            "evmesh.dev/jsonpath",
        )?)))
    }

    /// Names the filter (the trigger's `namespace/name`) for error metrics and logs.
    pub fn named(self, name: &str) -> Filter {
        Filter {
            node: self.node,
            meta: Arc::new(Meta {
                name: name.to_owned(),
                ..Meta::default()
            }),
        }
    }

    /// The name set with [`Filter::named`] (empty by default).
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// How many CESQL evaluation errors this filter has met (each made an event fail it).
    pub fn cesql_error_count(&self) -> u64 {
        self.meta.cesql_errors.load(Ordering::Relaxed)
    }

    /// Whether the event passes: a [`cloudevents::Event`], or anything else that gives a
    /// filter what it reads ([`EventAttributes`]).
    pub fn matches(&self, event: &dyn EventAttributes) -> bool {
        self.node.matches(event, &self.meta)
    }

    /// Whether it may read the event's data (it holds a JSONPath filter).
    pub(crate) fn reads_data(&self) -> bool {
        self.node.reads_data()
    }

    /// The (attribute, value) pair the index files this filter under, if any: one that every
    /// matching event carries exactly. `type` is preferred.
    pub(crate) fn index_key(&self) -> Option<(AttrName, &str)> {
        let mut pairs = Vec::new();
        self.node.required_pairs(&mut pairs);
        pairs
            .iter()
            .find(|(name, _)| **name == AttrName::Type)
            .or_else(|| pairs.first())
            .map(|(name, value)| ((*name).clone(), *value))
    }
}

impl std::ops::Not for Filter {
    type Output = Filter;

    /// The `not` dialect: the filter does not hold.
    fn not(self) -> Filter {
        Filter::negate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cesql_error_warning_is_rate_limited_per_filter() {
        let meta = Meta {
            name: "ns/trigger".into(),
            ..Meta::default()
        };
        let error = cesql::EvalError {
            kind: cesql::ErrorKind::MissingAttribute,
            message: "missing attribute 'x'".into(),
        };
        for _ in 0..100 {
            meta.cesql_error(&error);
        }
        assert_eq!(meta.cesql_errors.load(Ordering::Relaxed), 100);
        // Only the first error logged: the counter snapshot was taken once, at error 1.
        assert_eq!(meta.errors_at_last_warn.load(Ordering::Relaxed), 1);
        assert_ne!(meta.last_warn_ms.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn index_key_prefers_type_and_skips_non_exact() {
        let f = Filter::from_specs(&[
            FilterSpec {
                exact: Some(BTreeMap::from([("source".into(), "/s".into())])),
                ..FilterSpec::default()
            },
            FilterSpec {
                exact: Some(BTreeMap::from([("type".into(), "t".into())])),
                ..FilterSpec::default()
            },
        ]);
        let f = f.expect("valid");
        assert_eq!(f.index_key(), Some((AttrName::Type, "t")));
        let p = Filter::prefix(&BTreeMap::from([("type".into(), "t".into())])).expect("valid");
        assert_eq!(p.index_key(), None);
        let legacy_any = Filter::attributes(&BTreeMap::from([("type".into(), String::new())]));
        assert_eq!(legacy_any.expect("valid").index_key(), None);
        let any = Filter::any(vec![
            Filter::exact(&BTreeMap::from([("type".into(), "t".into())])).expect("valid"),
        ]);
        assert_eq!(any.expect("valid").index_key(), None);
    }
}
