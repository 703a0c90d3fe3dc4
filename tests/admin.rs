//! The admin read API (Kubernetes-shaped), health endpoints, and `ref` resolution through the
//! Addressable duck type.

mod common;

use common::*;
use serde_json::Value;

async fn get_json(url: &str) -> (u16, Value) {
    let resp = client().get(url).send().await.expect("get");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

const MESH: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: shop}
spec:
  delivery:
    deadLetterSink:
      ref: {apiVersion: v1, kind: Service, name: dlq}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: audit, namespace: shop}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: to-service, namespace: shop}
spec:
  broker: default
  subscriber:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: orders}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: to-declared, namespace: shop}
spec:
  broker: default
  subscriber:
    ref: {apiVersion: example.com/v1, kind: Webhook, name: hook}
    uri: /events
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: to-broker, namespace: shop}
spec:
  broker: default
  subscriber:
    ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: audit}
---
apiVersion: example.com/v1
kind: Webhook
metadata: {name: hook, namespace: shop}
status:
  address: {url: "http://hooks.example.com/base/"}
"#;

#[tokio::test]
async fn broker_status_is_ready_with_its_ingress_address() {
    let m = mesh(MESH).await;
    let (status, b) =
        get_json(&m.url("/apis/eventing.knative.dev/v1/namespaces/shop/brokers/default")).await;
    assert_eq!(status, 200);
    assert_eq!(b["kind"], "Broker");
    assert_eq!(b["metadata"]["name"], "default");
    assert_eq!(b["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(b["status"]["conditions"][0]["status"], "True");
    assert_eq!(b["status"]["address"]["url"], m.url("/shop/default"));
    assert_eq!(
        b["status"]["deadLetterSinkUri"],
        "http://dlq.shop.svc.cluster.local/"
    );
}

#[tokio::test]
async fn trigger_refs_resolve_through_the_addressable_duck_type() {
    let m = mesh(MESH).await;
    let uri = |name: &'static str| {
        let url = m.url(&format!(
            "/apis/eventing.knative.dev/v1/namespaces/shop/triggers/{name}"
        ));
        async move { get_json(&url).await.1["status"]["subscriberUri"].clone() }
    };
    // Not served, not declared: the URL template.
    assert_eq!(
        uri("to-service").await,
        "http://orders.shop.svc.cluster.local/"
    );
    // Declared status.address.url, with a relative uri resolved against it.
    assert_eq!(uri("to-declared").await, "http://hooks.example.com/events");
    // A kind evmesh serves: its own address.
    assert_eq!(uri("to-broker").await, Value::String(m.url("/shop/audit")));
}

#[tokio::test]
async fn url_template_is_configurable() {
    let m = mesh_with(MESH, |mut o| {
        o.url_template = Some("http://127.0.0.1:7000/{namespace}/{name}".into());
        o
    })
    .await;
    let (_, t) =
        get_json(&m.url("/apis/eventing.knative.dev/v1/namespaces/shop/triggers/to-service")).await;
    assert_eq!(
        t["status"]["subscriberUri"],
        "http://127.0.0.1:7000/shop/orders"
    );
}

#[tokio::test]
async fn lists_resources_of_a_namespace_and_of_all_namespaces() {
    let m = mesh(MESH).await;
    let (status, list) =
        get_json(&m.url("/apis/eventing.knative.dev/v1/namespaces/shop/triggers")).await;
    assert_eq!(status, 200);
    assert_eq!(list["kind"], "TriggerList");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(3));
    let (_, none) =
        get_json(&m.url("/apis/eventing.knative.dev/v1/namespaces/other/brokers")).await;
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));
    let (_, all) = get_json(&m.url("/apis/eventing.knative.dev/v1/brokers")).await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn unknown_resources_get_a_kubernetes_style_404() {
    let m = mesh(MESH).await;
    let (status, body) =
        get_json(&m.url("/apis/eventing.knative.dev/v1/namespaces/shop/brokers/nope")).await;
    assert_eq!(status, 404);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "NotFound");
    let (status, _) = get_json(&m.url("/apis/example.com/v1/namespaces/shop/widgets")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn trigger_status_counts_what_happened_to_events() {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    post_ok(&m.url("/demo/default"), event("1", "t")).await;
    eventually("delivery", std::time::Duration::from_secs(10), || {
        sink.count() == 1
    })
    .await;
    let url = m.url("/apis/eventing.knative.dev/v1/namespaces/demo/triggers/t1");
    let mut delivered = Value::Null;
    for _ in 0..100 {
        delivered = get_json(&url).await.1["status"]["evmesh"]["counters"]["delivered"].clone();
        if delivered == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(delivered, 1);
    let (_, b) =
        get_json(&m.url("/apis/eventing.knative.dev/v1/namespaces/demo/brokers/default")).await;
    assert_eq!(b["status"]["evmesh"]["counters"]["accepted"], 1);
}

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let m = mesh(MESH).await;
    for path in ["/healthz", "/readyz"] {
        let resp = client().get(m.url(path)).send().await.expect("get");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn built_in_event_display_is_addressable_and_receives_events() {
    let m = mesh(evmesh::QUICKSTART_YAML).await;
    let (_, d) = get_json(
        &m.url("/apis/evmesh.dev/v1alpha1/namespaces/default/eventdisplays/event-display"),
    )
    .await;
    assert_eq!(
        d["status"]["address"]["url"],
        m.url("/_evmesh/event-display/default/event-display")
    );
    post_ok(
        &m.url("/default/default"),
        event("q-1", "dev.example.hello"),
    )
    .await;
    let url = m.url("/apis/eventing.knative.dev/v1/namespaces/default/triggers/all-to-display");
    let mut delivered = Value::Null;
    for _ in 0..200 {
        delivered = get_json(&url).await.1["status"]["evmesh"]["counters"]["delivered"].clone();
        if delivered == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        delivered, 1,
        "the quickstart trigger delivered to the display"
    );
}
