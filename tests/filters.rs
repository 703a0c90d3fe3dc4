//! Trigger `filters` (Subscriptions API dialects, CESQL, evmesh's JSONPath extension) end to end
//! through a running broker.

mod common;

use std::time::Duration;

use cloudevents::{EventBuilder, EventBuilderV10};
use common::*;

fn trigger(name: &str, sink: &TestSink, filters: &str) -> String {
    format!(
        "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}}}\nspec:\n  broker: default\n  subscriber: {{uri: \"{}\"}}\n  filters:\n{filters}\n",
        sink.url()
    )
}

const BROKER: &str =
    "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n";

#[tokio::test]
async fn filters_dialects_route_events_end_to_end() {
    let exact = TestSink::start().await;
    let any = TestSink::start().await;
    let cesql = TestSink::start().await;
    let yaml = [
        BROKER.to_string(),
        trigger("exact", &exact, "    - exact: {type: order.created}\n    - prefix: {source: /shop}"),
        trigger(
            "any",
            &any,
            "    - any:\n        - suffix: {type: .canceled}\n        - not:\n            prefix: {type: order.}",
        ),
        trigger(
            "cesql",
            &cesql,
            "    - cesql: \"type LIKE 'order.%' AND INT(priority) > 3\"",
        ),
    ]
    .concat();
    let m = mesh(&yaml).await;
    let url = m.url("/default/default");
    let e = |id: &str, ty: &str, source: &str, priority: i64| {
        EventBuilderV10::new()
            .id(id)
            .ty(ty)
            .source(source)
            .extension("priority", priority)
            .build()
            .expect("event")
    };
    post_ok(&url, e("1", "order.created", "/shop/eu", 5)).await; // exact + cesql
    post_ok(&url, e("2", "order.created", "/crm", 1)).await; // none
    post_ok(&url, e("3", "order.canceled", "/shop", 9)).await; // any + cesql
    post_ok(&url, e("4", "user.signup", "/shop", 1)).await; // any (not prefix order.)
    eventually("deliveries", Duration::from_secs(10), || {
        exact.count() == 1 && any.count() == 2 && cesql.count() == 2
    })
    .await;
    quiet(&m, "default", "default", 4).await;
    assert_eq!(exact.ids(), vec!["1"]);
    let mut a = any.ids();
    a.sort();
    assert_eq!(a, vec!["3", "4"]);
    let mut c = cesql.ids();
    c.sort();
    assert_eq!(c, vec!["1", "3"]);
}

#[tokio::test]
async fn non_empty_filters_override_the_legacy_filter() {
    let sink = TestSink::start().await;
    let yaml = format!(
        "{BROKER}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t}}\nspec:\n  broker: default\n  filter: {{attributes: {{type: legacy.type}}}}\n  filters:\n    - exact: {{type: new.type}}\n  subscriber: {{uri: \"{}\"}}\n",
        sink.url()
    );
    let m = mesh(&yaml).await;
    post_ok(&m.url("/default/default"), event("legacy", "legacy.type")).await;
    post_ok(&m.url("/default/default"), event("new", "new.type")).await;
    eventually("delivery", Duration::from_secs(10), || sink.count() == 1).await;
    quiet(&m, "default", "default", 2).await;
    assert_eq!(sink.ids(), vec!["new"]);
}

#[tokio::test]
async fn jsonpath_extension_filters_on_event_data() {
    let sink = TestSink::start().await;
    let yaml = [
        BROKER.to_string(),
        trigger(
            "big-orders",
            &sink,
            "    - evmesh.dev/jsonpath: \"$.orders[?@.total > 100]\"",
        ),
    ]
    .concat();
    let m = mesh(&yaml).await;
    let url = m.url("/default/default");
    let with_data = |id: &str, data: serde_json::Value| {
        EventBuilderV10::new()
            .id(id)
            .ty("order")
            .source("/s")
            .data("application/json", data)
            .build()
            .expect("event")
    };
    post_ok(
        &url,
        with_data(
            "small",
            serde_json::json!({"orders": [{"total": 50}, {"total": 70}]}),
        ),
    )
    .await;
    post_ok(
        &url,
        with_data(
            "big",
            serde_json::json!({"orders": [{"total": 50}, {"total": 150}]}),
        ),
    )
    .await;
    let text = EventBuilderV10::new()
        .id("text")
        .ty("order")
        .source("/s")
        .data("text/plain", "not json")
        .build()
        .expect("event");
    post_ok(&url, text).await;
    eventually("delivery", Duration::from_secs(10), || sink.count() == 1).await;
    quiet(&m, "default", "default", 3).await;
    assert_eq!(sink.ids(), vec!["big"]);
}

#[tokio::test]
async fn many_type_triggers_each_get_only_their_type() {
    let sinks = [TestSink::start().await, TestSink::start().await];
    let mut yaml = BROKER.to_string();
    for i in 0..200 {
        let sink = &sinks[i % 2];
        yaml.push_str(&trigger(
            &format!("t{i}"),
            sink,
            &format!("    - exact: {{type: type-{i}}}"),
        ));
    }
    let m = mesh(&yaml).await;
    post_ok(&m.url("/default/default"), event("a", "type-7")).await;
    post_ok(&m.url("/default/default"), event("b", "type-10")).await;
    post_ok(&m.url("/default/default"), event("c", "type-999")).await;
    eventually("deliveries", Duration::from_secs(10), || {
        sinks[0].count() == 1 && sinks[1].count() == 1
    })
    .await;
    quiet(&m, "default", "default", 3).await;
    assert_eq!(sinks[1].ids(), vec!["a"]);
    assert_eq!(sinks[0].ids(), vec!["b"]);
}
