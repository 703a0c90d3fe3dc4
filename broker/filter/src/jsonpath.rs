//! evmesh's JSONPath (RFC 9535) data filter, on top of `jsonpath-rust`.

use std::sync::Arc;

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

use crate::attr::EventAttributes;

/// A compiled JSONPath filter: the query is parsed once.
#[derive(Clone, Debug)]
pub(crate) struct JsonPathFilter {
    query: Arc<JpQuery>,
    equals: Option<Value>,
}

impl JsonPathFilter {
    /// Parses the query; the error is the parser's message.
    pub(crate) fn new(query: &str, equals: Option<Value>) -> Result<JsonPathFilter, String> {
        let parsed = parse_json_path(query).map_err(|e| e.to_string())?;
        Ok(JsonPathFilter {
            query: Arc::new(parsed),
            equals,
        })
    }

    /// Holds when the query selects a node (equal to `equals`, when set) in the event's JSON
    /// data. No data, data that is not JSON, or an evaluation error: false.
    pub(crate) fn matches(&self, event: &dyn EventAttributes) -> bool {
        let Some(data) = event.json_data() else {
            return false;
        };
        let data: &Value = &data;
        match js_path_process(&self.query, data) {
            Ok(nodes) => match &self.equals {
                None => !nodes.is_empty(),
                Some(expected) => nodes.iter().any(|n| json_eq(n.val, expected)),
            },
            Err(_) => false,
        }
    }
}

/// JSON equality where numbers compare by value (`100` equals `100.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value() {
        assert!(json_eq(&json!(100), &json!(100.0)));
        assert!(json_eq(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!json_eq(&json!("1"), &json!(1)));
    }

    #[test]
    fn invalid_query_is_rejected() {
        assert!(JsonPathFilter::new("$.a[?", None).is_err());
        assert!(JsonPathFilter::new("order", None).is_err());
    }
}
