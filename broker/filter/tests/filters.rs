//! Behaviour tests of the Knative dialects, CESQL filters, JSONPath filters and the index.

use std::collections::BTreeMap;

use cloudevents::{Event, EventBuilder, EventBuilderV10};
use evmesh_filter::{Filter, FilterIndex, FilterSpec, JsonPathSpec};
use serde_json::json;

fn event(ty: &str) -> Event {
    EventBuilderV10::new()
        .id("1")
        .source("https://github.com/cloudevents/spec/pull")
        .ty(ty)
        .subject("123")
        .extension("myext", "my-value")
        .extension("count", 7i64)
        .extension("flag", true)
        .build()
        .expect("valid event")
}

fn with_data(data: impl Into<cloudevents::Data>, content_type: &str) -> Event {
    EventBuilderV10::new()
        .id("1")
        .source("/shop")
        .ty("order.created")
        .data(content_type, data)
        .build()
        .expect("valid event")
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn specs(yaml: &str) -> Vec<FilterSpec> {
    serde_saphyr::from_str(yaml).expect("valid filters YAML")
}

fn compile(yaml: &str) -> Filter {
    Filter::from_specs(&specs(yaml)).expect("filters compile")
}

#[test]
fn exact_matches_equal_value_and_rejects_other() {
    let f = compile("- exact: {type: com.github.push}");
    assert!(f.matches(&event("com.github.push")));
    assert!(!f.matches(&event("com.github.pull")));
    assert!(!f.matches(&event("com.github.push.x")));
}

#[test]
fn exact_is_case_sensitive_and_needs_every_key() {
    let f = compile("- exact: {type: com.github.push, subject: '123'}");
    assert!(f.matches(&event("com.github.push")));
    assert!(!f.matches(&event("COM.github.push")));
    let f = compile("- exact: {type: com.github.push, subject: '124'}");
    assert!(!f.matches(&event("com.github.push")));
}

#[test]
fn prefix_matches_start_and_rejects_other() {
    let f = compile("- prefix: {type: com.github.}");
    assert!(f.matches(&event("com.github.push")));
    assert!(!f.matches(&event("org.github.push")));
}

#[test]
fn suffix_matches_end_and_rejects_other() {
    let f = compile("- suffix: {type: .created}");
    assert!(f.matches(&event("order.created")));
    assert!(!f.matches(&event("order.created.v2")));
}

#[test]
fn all_needs_every_child() {
    let f = compile(
        "- all:\n    - exact: {type: com.github.push}\n    - prefix: {source: 'https://github.com'}\n",
    );
    assert!(f.matches(&event("com.github.push")));
    let f = compile("- all:\n    - exact: {type: com.github.push}\n    - exact: {subject: '9'}\n");
    assert!(!f.matches(&event("com.github.push")));
}

#[test]
fn any_needs_one_child() {
    let f = compile("- any:\n    - exact: {type: a}\n    - suffix: {type: .push}\n");
    assert!(f.matches(&event("com.github.push")));
    assert!(f.matches(&event("a")));
    assert!(!f.matches(&event("b")));
}

#[test]
fn not_inverts() {
    let f = compile("- not:\n    exact: {type: com.github.push}\n");
    assert!(!f.matches(&event("com.github.push")));
    assert!(f.matches(&event("other")));
}

#[test]
fn cesql_dialect_matches_and_rejects() {
    let f = compile(
        "- cesql: \"source LIKE '%github%' AND type IN ('order.created', 'com.github.push')\"",
    );
    assert!(f.matches(&event("com.github.push")));
    assert!(!f.matches(&event("com.github.pull")));
}

#[test]
fn list_entries_must_all_hold() {
    let f = compile("- prefix: {type: com.}\n- suffix: {type: .push}\n");
    assert!(f.matches(&event("com.github.push")));
    assert!(!f.matches(&event("com.github.pull")));
}

#[test]
fn empty_list_and_empty_entry_match_everything() {
    assert!(compile("[]").matches(&event("x")));
    assert!(compile("- {}").matches(&event("x")));
    assert!(Filter::match_all().matches(&event("x")));
}

#[test]
fn any_inside_not_inside_all_nests() {
    let f = compile(
        r#"
- all:
    - prefix: {type: com.github.}
    - not:
        any:
          - exact: {type: com.github.delete}
          - cesql: "subject = 'secret'"
"#,
    );
    assert!(f.matches(&event("com.github.push")));
    assert!(!f.matches(&event("com.github.delete")));
    assert!(!f.matches(&event("org.push")));
}

#[test]
fn extension_attributes_are_compared_by_string_form() {
    assert!(compile("- exact: {myext: my-value}").matches(&event("t")));
    assert!(compile("- exact: {count: '7'}").matches(&event("t")));
    assert!(compile("- exact: {flag: 'true'}").matches(&event("t")));
    assert!(compile("- prefix: {myext: my-}").matches(&event("t")));
    assert!(!compile("- exact: {myext: other}").matches(&event("t")));
    assert!(
        Filter::cesql("count + 1 = 8 AND flag")
            .expect("parses")
            .matches(&event("t"))
    );
}

#[test]
fn missing_attribute_fails_every_dialect() {
    let e = event("t");
    assert!(!compile("- exact: {missing: x}").matches(&e));
    assert!(!compile("- prefix: {missing: x}").matches(&e));
    assert!(!compile("- suffix: {missing: x}").matches(&e));
    assert!(!compile("- cesql: \"missing = 'x'\"").matches(&e));
    assert!(compile("- not: {exact: {missing: x}}").matches(&e));
    let legacy = Filter::attributes(&map(&[("missing", "")])).expect("valid");
    assert!(!legacy.matches(&e));
}

#[test]
fn multiple_dialects_in_one_entry_is_an_error() {
    let err = Filter::from_specs(&specs(
        "- exact: {type: a}\n- exact: {type: a}\n  suffix: {type: b}\n",
    ))
    .expect_err("two dialects");
    assert_eq!(err.path, "[1]");
    assert_eq!(
        err.message,
        "multiple dialects found, filters can have only one dialect set"
    );
}

#[test]
fn invalid_attribute_name_is_an_error() {
    for bad in ["Type", "s_pace", "s-pace", "123", ""] {
        let spec = FilterSpec {
            exact: Some(map(&[(bad, "x")])),
            ..FilterSpec::default()
        };
        let err = Filter::from_specs(&[spec]).expect_err(bad);
        assert_eq!(err.path, "[0].exact", "{bad}");
        assert!(Filter::attributes(&map(&[(bad, "x")])).is_err(), "{bad}");
    }
}

#[test]
fn empty_value_and_empty_lists_are_errors() {
    assert!(Filter::from_specs(&specs("- exact: {type: ''}")).is_err());
    assert!(Filter::from_specs(&specs("- exact: {}")).is_err());
    let err = Filter::from_specs(&specs("- all: []")).expect_err("empty all");
    assert_eq!(err.path, "[0].all");
    assert!(Filter::from_specs(&specs("- any: []")).is_err());
}

#[test]
fn error_path_points_into_nested_filters() {
    let err = Filter::from_specs(&specs(
        "- exact: {type: a}\n- any:\n    - cesql: 'type = '\n",
    ))
    .expect_err("bad cesql");
    assert_eq!(err.path, "[1].any[0].cesql");
}

#[test]
fn cesql_syntax_error_names_the_column() {
    let err = Filter::cesql("type = 'a' AND AND x").expect_err("syntax error");
    assert_eq!(err.column, Some(16));
    assert!(err.message.contains("column 16"), "{}", err.message);
    let err = Filter::cesql("x LIKE 123").expect_err("pattern must be a string");
    assert_eq!(err.column, Some(8));
}

#[test]
fn cesql_filter_needs_boolean_true_without_error() {
    let e = event("t");
    assert!(!Filter::cesql("'abc'").expect("parses").matches(&e));
    assert!(!Filter::cesql("1").expect("parses").matches(&e));
    assert!(!Filter::cesql("NOT 10").expect("parses").matches(&e));
    assert!(Filter::cesql("true").expect("parses").matches(&e));
}

#[test]
fn cesql_errors_are_counted_per_filter_and_in_total() {
    let f = Filter::cesql("missing = 'x'")
        .expect("parses")
        .named("default/my-trigger");
    assert_eq!(f.name(), "default/my-trigger");
    let before = evmesh_filter::cesql_errors_total();
    for _ in 0..3 {
        assert!(!f.matches(&event("t")));
    }
    assert_eq!(f.cesql_error_count(), 3);
    assert!(evmesh_filter::cesql_errors_total() >= before + 3);
}

#[test]
fn legacy_attributes_filter_semantics() {
    let f = Filter::attributes(&map(&[("type", "com.github.push"), ("myext", "")])).expect("valid");
    assert!(f.matches(&event("com.github.push")));
    assert!(!f.matches(&event("com.github.pull")));
    let no_ext = EventBuilderV10::new()
        .id("1")
        .source("/s")
        .ty("com.github.push")
        .build()
        .expect("valid");
    assert!(!f.matches(&no_ext), "empty value still needs the attribute");
    let empty_ext = EventBuilderV10::new()
        .id("1")
        .source("/s")
        .ty("com.github.push")
        .extension("myext", "")
        .build()
        .expect("valid");
    assert!(
        !f.matches(&empty_ext),
        "empty value needs a non-empty attribute"
    );
    assert!(
        Filter::attributes(&BTreeMap::new())
            .expect("valid")
            .matches(&no_ext)
    );
}

#[test]
fn time_attribute_is_rfc3339() {
    let e = EventBuilderV10::new()
        .id("1")
        .source("/s")
        .ty("t")
        .time("2018-04-26T14:48:09+02:00")
        .build()
        .expect("valid");
    assert!(compile("- exact: {time: '2018-04-26T12:48:09Z'}").matches(&e));
}

#[test]
fn jsonpath_on_nested_json_data() {
    // RFC 9535: a filter selector tests the *children* of the selected node.
    let e = with_data(
        json!({
            "order": [{"id": 1, "total": 150}],
            "items": [{"sku": "A-1"}, {"sku": "B-2"}],
            "customer": {"address": {"city": "Paris", "zip": "75001"}}
        }),
        "application/json",
    );
    let f = compile("- evmesh.dev/jsonpath: '$.order[?@.total > 100]'");
    assert!(f.matches(&e));
    let f = compile("- evmesh.dev/jsonpath: \"$.items[?@.sku == 'A-1']\"");
    assert!(f.matches(&e));
    let f = compile("- evmesh.dev/jsonpath: \"$.customer.address[?@ == 'Paris']\"");
    assert!(f.matches(&e));
    let f = compile("- evmesh.dev/jsonpath: '$.order[?@.total > 200]'");
    assert!(!f.matches(&e));
    let f = compile("- evmesh.dev/jsonpath: '$.customer.phone'");
    assert!(!f.matches(&e));
}

#[test]
fn jsonpath_filter_selector_tests_children_per_rfc9535() {
    let single = with_data(json!({"order": {"total": 150}}), "application/json");
    let nested = with_data(json!({"order": {"a": {"total": 150}}}), "application/json");
    let children = compile("- evmesh.dev/jsonpath: '$.order[?@.total > 100]'");
    assert!(!children.matches(&single));
    assert!(children.matches(&nested));
    assert!(compile("- evmesh.dev/jsonpath: '$[?@.total > 100]'").matches(&single));
    assert!(compile("- evmesh.dev/jsonpath: '$.order[?@ > 100]'").matches(&single));
}

#[test]
fn jsonpath_parses_string_and_binary_data() {
    let text = with_data(r#"{"status": "paid"}"#.to_owned(), "application/json");
    let bytes = with_data(
        br#"{"status": "paid"}"#.to_vec(),
        "application/octet-stream",
    );
    let f = compile("- evmesh.dev/jsonpath: '$.status'");
    assert!(f.matches(&text));
    assert!(f.matches(&bytes));
}

#[test]
fn jsonpath_on_non_json_data_is_false() {
    let f = compile("- evmesh.dev/jsonpath: '$'");
    assert!(!f.matches(&with_data("plain text".to_owned(), "text/plain")));
    assert!(!f.matches(&with_data(
        vec![0xff, 0xfe, 0x00],
        "application/octet-stream"
    )));
    assert!(!f.matches(&event("no data")));
}

#[test]
fn jsonpath_with_equals() {
    let e = with_data(json!({"status": "paid", "total": 100}), "application/json");
    let f = compile("- evmesh.dev/jsonpath: {query: '$.status', equals: paid}");
    assert!(f.matches(&e));
    let f = compile("- evmesh.dev/jsonpath: {query: '$.status', equals: open}");
    assert!(!f.matches(&e));
    let f = Filter::jsonpath(&JsonPathSpec::Compare {
        query: "$.total".into(),
        equals: Some(json!(100.0)),
    })
    .expect("valid");
    assert!(f.matches(&e));
}

#[test]
fn jsonpath_works_inside_any_and_not() {
    let e = with_data(json!({"status": "paid"}), "application/json");
    let f = compile(
        "- any:\n    - exact: {type: nope}\n    - evmesh.dev/jsonpath: {query: '$.status', equals: paid}\n",
    );
    assert!(f.matches(&e));
    let f = compile("- not:\n    evmesh.dev/jsonpath: '$.status'\n");
    assert!(!f.matches(&e));
}

#[test]
fn invalid_jsonpath_is_a_compile_error() {
    let err = Filter::from_specs(&specs("- evmesh.dev/jsonpath: '$.a[?'")).expect_err("invalid");
    assert_eq!(err.path, "[0].evmesh.dev/jsonpath");
}

#[test]
fn filter_spec_deserializes_from_knative_yaml() {
    let parsed = specs(
        r#"
- exact: {type: com.github.push, subject: "https://github.com/cloudevents/spec"}
- prefix: {type: com.github.}
- suffix: {type: .created}
- all:
    - exact: {type: com.github.push}
- any:
    - prefix: {type: com.github.}
- not:
    exact: {type: com.github.push}
- cesql: "source LIKE '%commerce%'"
- evmesh.dev/jsonpath: "$.order[?@.total > 100]"
- evmesh.dev/jsonpath: {query: "$.status", equals: "paid"}
"#,
    );
    assert_eq!(parsed.len(), 9);
    assert_eq!(
        parsed[0].exact.as_ref().map(|m| m["subject"].as_str()),
        Some("https://github.com/cloudevents/spec")
    );
    assert_eq!(parsed[3].all.as_ref().map(Vec::len), Some(1));
    assert!(parsed[5].not.as_ref().is_some_and(|n| n.exact.is_some()));
    assert_eq!(
        parsed[7].jsonpath,
        Some(JsonPathSpec::Query("$.order[?@.total > 100]".into()))
    );
    assert_eq!(
        parsed[8].jsonpath,
        Some(JsonPathSpec::Compare {
            query: "$.status".into(),
            equals: Some(json!("paid"))
        })
    );
    let from_json: Vec<FilterSpec> =
        serde_json::from_value(json!([{"exact": {"type": "a"}}])).expect("json");
    assert_eq!(from_json[0].exact, Some(map(&[("type", "a")])));
    assert!(serde_saphyr::from_str::<Vec<FilterSpec>>("- unknown: {a: b}").is_err());
}

#[test]
fn filter_index_returns_matching_keys_in_insertion_order() {
    let exact = |t: &str| Filter::exact(&map(&[("type", t)])).expect("valid");
    let entries = vec![
        (
            "scan-prefix",
            Filter::prefix(&map(&[("type", "com.")])).expect("valid"),
        ),
        ("push-1", exact("com.github.push")),
        ("pull", exact("com.github.pull")),
        (
            "scan-cesql",
            Filter::cesql("subject = '123'").expect("valid"),
        ),
        (
            "legacy-push",
            Filter::attributes(&map(&[("type", "com.github.push"), ("myext", "")])).expect("valid"),
        ),
        (
            "by-ext",
            Filter::exact(&map(&[("myext", "my-value")])).expect("valid"),
        ),
        (
            "all-push",
            compile("- exact: {type: com.github.push}\n- exact: {subject: '123'}"),
        ),
        (
            "push-wrong-subject",
            compile("- all:\n    - exact: {type: com.github.push}\n    - exact: {subject: '9'}"),
        ),
        ("scan-miss", Filter::cesql("subject = 'no'").expect("valid")),
        ("push-2", exact("com.github.push")),
    ];
    let index = FilterIndex::new(entries);
    assert_eq!(index.len(), 10);
    assert_eq!(index.scan_len(), 3);
    let mut out = Vec::new();
    index.matching(&event("com.github.push"), &mut out);
    assert_eq!(
        out,
        vec![
            "scan-prefix",
            "push-1",
            "scan-cesql",
            "legacy-push",
            "by-ext",
            "all-push",
            "push-2"
        ]
    );
    out.clear();
    index.matching(&event("other"), &mut out);
    assert_eq!(out, vec!["scan-cesql", "by-ext"]);
}

#[test]
fn filter_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Filter>();
    let f = compile("- exact: {type: a}");
    assert!(f.clone().matches(&event("a")));
    assert!((!f).matches(&event("b")));
}

/// An event that counts how often its data is read as JSON.
struct CountingReads {
    event: Event,
    reads: std::cell::Cell<usize>,
}

impl evmesh_filter::EventAttributes for CountingReads {
    fn attribute(&self, name: &str) -> Option<evmesh_filter::AttrValue<'_>> {
        self.event.attribute(name)
    }

    fn json_data(&self) -> Option<std::borrow::Cow<'_, serde_json::Value>> {
        self.reads.set(self.reads.get() + 1);
        self.event.json_data()
    }
}

#[test]
fn the_index_reads_an_event_s_data_once_for_all_its_jsonpath_filters() {
    let order = json!({"order": {"total": 150, "items": [{"sku": "A-1"}]}});
    let entries = vec![
        ("big", compile("- evmesh.dev/jsonpath: '$[?@.total > 100]'")),
        (
            "sku",
            compile("- evmesh.dev/jsonpath: \"$.order.items[?@.sku == 'A-1']\""),
        ),
        ("by-type", compile("- exact: {type: order.created}")),
        (
            "not-small",
            compile("- not:\n    evmesh.dev/jsonpath: '$[?@.total < 10]'"),
        ),
        (
            "huge",
            compile("- evmesh.dev/jsonpath: '$[?@.total > 1000]'"),
        ),
    ];
    let index = FilterIndex::new(entries);
    let event = CountingReads {
        event: with_data(order, "application/json"),
        reads: std::cell::Cell::new(0),
    };
    let mut out = Vec::new();
    index.matching(&event, &mut out);
    assert_eq!(out, vec!["big", "sku", "by-type", "not-small"]);
    assert_eq!(event.reads.get(), 1, "the data was parsed once per filter");
    // A filter tested alone reads the data itself, as before.
    assert!(compile("- evmesh.dev/jsonpath: '$.order'").matches(&event));
    assert_eq!(event.reads.get(), 2);
}
