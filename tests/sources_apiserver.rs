//! ApiServerSource against evmesh's own API, through kube-rs: add, update and delete events in
//! Reference and Resource mode with Knative's shape, label selectors, the owner filter, sinks
//! that are a Broker, a Channel and a Sequence, and live apply and delete of the source.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const BROKERS: &str = "/apis/eventing.knative.dev/v1/namespaces/demo/brokers";
const SOURCES: &str = "/apis/sources.knative.dev/v1/namespaces/demo/apiserversources";

/// An ApiServerSource `name` watching Brokers in its namespace, with `spec_extra` (lines
/// indented 2 spaces) and `sink`.
fn source(name: &str, spec_extra: &str, sink: &str) -> String {
    format!(
        r#"
apiVersion: sources.knative.dev/v1
kind: ApiServerSource
metadata: {{name: {name}, namespace: demo}}
spec:
{spec_extra}
  sink: {sink}
"#
    )
}

fn watch_brokers(sink: &TestSink, extra: &str) -> String {
    source(
        "brokers",
        &format!(
            "  resources:\n    - {{apiVersion: eventing.knative.dev/v1, kind: Broker}}\n{extra}"
        ),
        &format!("{{uri: \"{}\"}}", sink.url()),
    )
}

/// Waits until the source reports Ready (its watches are established).
async fn ready(m: &TestMesh, name: &str) -> Value {
    let url = m.url(&format!("{SOURCES}/{name}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, obj) = get_json(&url).await;
        let cond = obj["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
            .unwrap_or(Value::Null);
        if cond["status"] == "True" {
            return obj;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "source {name} not ready: {obj}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send(method: reqwest::Method, url: &str, body: Option<String>) -> u16 {
    let mut req = client().request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/yaml").body(b);
    }
    req.send().await.expect("admin request").status().as_u16()
}

fn broker(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: {name}, namespace: demo, labels: {{{labels}}}}}\n"
    )
}

async fn create_broker(m: &TestMesh, name: &str, labels: &str) {
    let code = send(
        reqwest::Method::POST,
        &m.url(BROKERS),
        Some(broker(name, labels)),
    )
    .await;
    assert_eq!(code, 201, "create broker {name}");
}

async fn replace_broker(m: &TestMesh, name: &str, labels: &str) {
    let url = m.url(&format!("{BROKERS}/{name}"));
    let code = send(reqwest::Method::PUT, &url, Some(broker(name, labels))).await;
    assert_eq!(code, 200, "replace broker {name}");
}

async fn delete_broker(m: &TestMesh, name: &str) {
    let url = m.url(&format!("{BROKERS}/{name}"));
    assert_eq!(send(reqwest::Method::DELETE, &url, None).await, 200);
}

/// The events the sink received about the object named `name`.
fn about(sink: &TestSink, name: &str) -> Vec<Received> {
    sink.received()
        .into_iter()
        .filter(|r| r.header("ce-name").as_deref() == Some(name))
        .collect()
}

fn types(events: &[Received]) -> Vec<String> {
    events
        .iter()
        .map(|r| r.header("ce-type").unwrap_or_default())
        .collect()
}

async fn wait_for_type(sink: &TestSink, name: &str, ty: &str) {
    eventually(
        &format!("a {ty} event about {name}"),
        Duration::from_secs(15),
        || types(&about(sink, name)).iter().any(|t| t == ty),
    )
    .await;
}

fn json_body(r: &Received) -> Value {
    serde_json::from_slice(&r.body).expect("JSON data")
}

#[tokio::test]
async fn reference_mode_sends_ref_events_for_add_update_and_delete() {
    let sink = TestSink::start().await;
    let m = mesh(&watch_brokers(&sink, "")).await;
    ready(&m, "brokers").await;
    create_broker(&m, "b1", "").await;
    wait_for_type(&sink, "b1", "dev.knative.apiserver.ref.add").await;
    replace_broker(&m, "b1", "team: a").await;
    wait_for_type(&sink, "b1", "dev.knative.apiserver.ref.update").await;
    delete_broker(&m, "b1").await;
    wait_for_type(&sink, "b1", "dev.knative.apiserver.ref.delete").await;

    let events = about(&sink, "b1");
    let t = types(&events);
    assert_eq!(
        t.first().map(String::as_str),
        Some("dev.knative.apiserver.ref.add")
    );
    assert_eq!(
        t.last().map(String::as_str),
        Some("dev.knative.apiserver.ref.delete")
    );
    for r in &events {
        assert_eq!(
            r.header("ce-source").as_deref(),
            Some(m.url("").as_str()),
            "source is the API server URL"
        );
        assert_eq!(
            r.header("ce-subject").as_deref(),
            Some("/apis/eventing.knative.dev/v1/namespaces/demo/brokers/b1")
        );
        assert_eq!(r.header("ce-kind").as_deref(), Some("Broker"));
        assert_eq!(
            r.header("ce-apiversion").as_deref(),
            Some("eventing.knative.dev/v1")
        );
        assert_eq!(r.header("ce-namespace").as_deref(), Some("demo"));
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        assert!(r.header("ce-time").is_some());
        // corev1.ObjectReference as Go marshals it.
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            r#"{"kind":"Broker","namespace":"demo","name":"b1","apiVersion":"eventing.knative.dev/v1"}"#
        );
    }
    let ids: std::collections::HashSet<_> =
        events.iter().filter_map(|r| r.header("ce-id")).collect();
    assert_eq!(ids.len(), events.len(), "every event has its own id");
}

#[tokio::test]
async fn resource_mode_sends_the_whole_object() {
    let sink = TestSink::start().await;
    let m = mesh(&watch_brokers(&sink, "  mode: Resource\n")).await;
    ready(&m, "brokers").await;
    create_broker(&m, "b1", "").await;
    wait_for_type(&sink, "b1", "dev.knative.apiserver.resource.add").await;
    replace_broker(&m, "b1", "team: a").await;
    eventually(
        "an update carrying the new label",
        Duration::from_secs(15),
        || {
            about(&sink, "b1").iter().any(|r| {
                r.header("ce-type").as_deref() == Some("dev.knative.apiserver.resource.update")
                    && json_body(r)["metadata"]["labels"]["team"] == "a"
            })
        },
    )
    .await;
    delete_broker(&m, "b1").await;
    wait_for_type(&sink, "b1", "dev.knative.apiserver.resource.delete").await;

    let events = about(&sink, "b1");
    let add = &events[0];
    assert_eq!(
        add.header("ce-type").as_deref(),
        Some("dev.knative.apiserver.resource.add")
    );
    let obj = json_body(add);
    assert_eq!(obj["apiVersion"], "eventing.knative.dev/v1");
    assert_eq!(obj["kind"], "Broker");
    assert_eq!(obj["metadata"]["name"], "b1");
    assert_eq!(obj["metadata"]["namespace"], "demo");
    assert!(obj["metadata"]["uid"].is_string());
    // Keys in Go's order (sorted), as the unstructured object is marshalled.
    let keys: Vec<&String> = obj.as_object().expect("object").keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let delete = events.last().expect("a delete");
    assert_eq!(json_body(delete)["metadata"]["name"], "b1");
}

#[tokio::test]
async fn objects_there_when_the_source_starts_emit_no_add() {
    let sink = TestSink::start().await;
    let yaml = format!("{}---\n{}", broker("old", ""), watch_brokers(&sink, ""));
    let m = mesh(&yaml).await;
    ready(&m, "brokers").await;
    create_broker(&m, "new", "").await;
    wait_for_type(&sink, "new", "dev.knative.apiserver.ref.add").await;
    assert!(
        !types(&about(&sink, "old"))
            .iter()
            .any(|t| t.ends_with(".add")),
        "a listed object is not announced as added (as Knative's adapter)"
    );
}

#[tokio::test]
async fn match_labels_selects_the_objects_watched() {
    let sink = TestSink::start().await;
    let extra = "    - apiVersion: eventing.knative.dev/v1\n      kind: Broker\n      selector: {matchLabels: {team: a}}\n";
    let yaml = source(
        "labels",
        &format!("  resources:\n{extra}"),
        &format!("{{uri: \"{}\"}}", sink.url()),
    );
    let m = mesh(&yaml).await;
    ready(&m, "labels").await;
    create_broker(&m, "other", "team: b").await;
    create_broker(&m, "mine", "team: a").await;
    wait_for_type(&sink, "mine", "dev.knative.apiserver.ref.add").await;
    // Moving `other` into the selection is an add as the watch sees it.
    replace_broker(&m, "other", "team: a").await;
    wait_for_type(&sink, "other", "dev.knative.apiserver.ref.add").await;
    let first = &sink.received()[0];
    assert_eq!(first.header("ce-name").as_deref(), Some("mine"));
}

#[tokio::test]
async fn match_expressions_select_the_objects_watched() {
    let sink = TestSink::start().await;
    let extra = "    - apiVersion: eventing.knative.dev/v1\n      kind: Broker\n      selector:\n        matchExpressions:\n          - {key: tier, operator: In, values: [gold, silver]}\n          - {key: env, operator: NotIn, values: [prod]}\n";
    let yaml = source(
        "exprs",
        &format!("  resources:\n{extra}"),
        &format!("{{uri: \"{}\"}}", sink.url()),
    );
    let m = mesh(&yaml).await;
    ready(&m, "exprs").await;
    create_broker(&m, "bronze", "tier: bronze").await;
    create_broker(&m, "prod", "tier: gold, env: prod").await;
    create_broker(&m, "gold", "tier: gold, env: dev").await;
    create_broker(&m, "silver", "tier: silver").await;
    wait_for_type(&sink, "gold", "dev.knative.apiserver.ref.add").await;
    wait_for_type(&sink, "silver", "dev.knative.apiserver.ref.add").await;
    let names: std::collections::HashSet<String> = sink
        .received()
        .iter()
        .filter_map(|r| r.header("ce-name"))
        .collect();
    assert_eq!(
        names,
        ["gold".to_string(), "silver".to_string()]
            .into_iter()
            .collect()
    );
}

#[tokio::test]
async fn owner_lets_through_only_objects_controlled_by_that_kind() {
    let sink = TestSink::start().await;
    let m = mesh(&watch_brokers(
        &sink,
        "  owner: {apiVersion: example.dev/v1, kind: Team}\n",
    ))
    .await;
    ready(&m, "brokers").await;
    create_broker(&m, "free", "").await;
    let owned = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: owned\n  namespace: demo\n  ownerReferences:\n    - {apiVersion: example.dev/v1, kind: Team, name: t, uid: 1b4e28ba-2fa1-11d2-883f-0016d3cca427, controller: true}\n";
    let code = send(reqwest::Method::POST, &m.url(BROKERS), Some(owned.into())).await;
    assert_eq!(code, 201);
    wait_for_type(&sink, "owned", "dev.knative.apiserver.ref.add").await;
    assert!(
        about(&sink, "free").is_empty(),
        "an object without that controller is filtered"
    );
}

#[tokio::test]
async fn status_shows_sink_uri_ce_attributes_and_namespaces() {
    let sink = TestSink::start().await;
    let m = mesh(&watch_brokers(&sink, "  mode: Resource\n")).await;
    let obj = ready(&m, "brokers").await;
    let st = &obj["status"];
    assert_eq!(st["sinkUri"], json!(sink.url()));
    assert_eq!(st["namespaces"], json!(["demo"]));
    let api = m.url("");
    assert_eq!(
        st["ceAttributes"],
        json!([
            {"type": "dev.knative.apiserver.resource.add", "source": api},
            {"type": "dev.knative.apiserver.resource.update", "source": api},
            {"type": "dev.knative.apiserver.resource.delete", "source": api},
        ])
    );
}

#[tokio::test]
async fn a_kind_the_api_does_not_serve_makes_the_source_not_ready() {
    let sink = TestSink::start().await;
    let yaml = source(
        "pods",
        "  resources:\n    - {apiVersion: v1, kind: Pod}\n",
        &format!("{{uri: \"{}\"}}", sink.url()),
    );
    let m = mesh(&yaml).await;
    let url = m.url(&format!("{SOURCES}/pods"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, obj) = get_json(&url).await;
        let c = &obj["status"]["conditions"][0];
        if c["reason"] == "ResourceNotFound" {
            assert_eq!(c["status"], "False");
            assert!(
                c["message"].as_str().unwrap_or("").contains("v1/Pod"),
                "{c}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{obj}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn namespace_selector_empty_watches_every_namespace() {
    let sink = TestSink::start().await;
    let m = mesh(&watch_brokers(&sink, "  namespaceSelector: {}\n")).await;
    ready(&m, "brokers").await;
    let code = send(
        reqwest::Method::POST,
        &m.url("/apis/eventing.knative.dev/v1/namespaces/elsewhere/brokers"),
        Some("apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: far, namespace: elsewhere}\n".into()),
    )
    .await;
    assert_eq!(code, 201);
    wait_for_type(&sink, "far", "dev.knative.apiserver.ref.add").await;
    let r = &about(&sink, "far")[0];
    assert_eq!(r.header("ce-namespace").as_deref(), Some("elsewhere"));
}

#[tokio::test]
async fn ce_overrides_extensions_are_added() {
    let sink = TestSink::start().await;
    let m = mesh(&watch_brokers(
        &sink,
        "  ceOverrides: {extensions: {team: platform}}\n",
    ))
    .await;
    ready(&m, "brokers").await;
    create_broker(&m, "b1", "").await;
    wait_for_type(&sink, "b1", "dev.knative.apiserver.ref.add").await;
    assert_eq!(
        about(&sink, "b1")[0].header("ce-team").as_deref(),
        Some("platform")
    );
}

/// A source whose sink is `sink_ref`, with `extra` YAML (the sink's resources).
async fn through(sink_ref: &str, extra: &str) -> TestMesh {
    let yaml = format!(
        "{extra}---\n{}",
        source(
            "via",
            "  resources:\n    - {apiVersion: eventing.knative.dev/v1, kind: Broker}\n  mode: Resource\n",
            sink_ref,
        )
    );
    let m = mesh(&yaml).await;
    ready(&m, "via").await;
    create_broker(&m, "watched", "").await;
    m
}

#[tokio::test]
async fn sink_can_be_a_broker() {
    let sink = TestSink::start().await;
    let extra = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: demo}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: adds, namespace: demo}}
spec:
  broker: default
  filter: {{attributes: {{type: dev.knative.apiserver.resource.add, name: watched}}}}
  subscriber: {{uri: "{}"}}
"#,
        sink.url()
    );
    let _m = through(
        "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}",
        &extra,
    )
    .await;
    wait_for_type(&sink, "watched", "dev.knative.apiserver.resource.add").await;
}

#[tokio::test]
async fn sink_can_be_a_channel() {
    let sink = TestSink::start().await;
    let extra = format!(
        r#"
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {{name: changes, namespace: demo}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {{name: to-sink, namespace: demo}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: changes}}
  subscriber: {{uri: "{}"}}
"#,
        sink.url()
    );
    let _m = through(
        "{ref: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: changes}}",
        &extra,
    )
    .await;
    wait_for_type(&sink, "watched", "dev.knative.apiserver.resource.add").await;
}

#[tokio::test]
async fn sink_can_be_a_sequence() {
    let step = TestSink::start().await;
    step.always(Reply::Map(|e| e.clone()));
    let reply = TestSink::start().await;
    let extra = format!(
        r#"
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {{name: seq, namespace: demo}}
spec:
  steps:
    - uri: "{}"
  reply: {{uri: "{}"}}
"#,
        step.url(),
        reply.url()
    );
    let _m = through(
        "{ref: {apiVersion: flows.knative.dev/v1, kind: Sequence, name: seq}}",
        &extra,
    )
    .await;
    wait_for_type(&reply, "watched", "dev.knative.apiserver.resource.add").await;
    assert!(!about(&step, "watched").is_empty(), "the step saw it first");
}

#[tokio::test]
async fn source_applied_live_starts_and_deleted_stops() {
    let sink = TestSink::start().await;
    let m = mesh("").await;
    let code = send(
        reqwest::Method::POST,
        &m.url(SOURCES),
        Some(watch_brokers(&sink, "")),
    )
    .await;
    assert_eq!(code, 201);
    ready(&m, "brokers").await;
    create_broker(&m, "b1", "").await;
    wait_for_type(&sink, "b1", "dev.knative.apiserver.ref.add").await;

    let url = m.url(&format!("{SOURCES}/brokers"));
    assert_eq!(send(reqwest::Method::DELETE, &url, None).await, 200);
    assert_eq!(get_json(&url).await.0, 404);
    // The source stopped before the delete was answered: a later change sends nothing. A
    // second source proves the change was made and watched.
    let witness = TestSink::start().await;
    let code = send(
        reqwest::Method::POST,
        &m.url(SOURCES),
        Some(source(
            "witness",
            "  resources:\n    - {apiVersion: eventing.knative.dev/v1, kind: Broker}\n",
            &format!("{{uri: \"{}\"}}", witness.url()),
        )),
    )
    .await;
    assert_eq!(code, 201);
    ready(&m, "witness").await;
    create_broker(&m, "b2", "").await;
    wait_for_type(&witness, "b2", "dev.knative.apiserver.ref.add").await;
    assert!(
        about(&sink, "b2").is_empty(),
        "a deleted source sent an event: {:?}",
        about(&sink, "b2")
            .iter()
            .map(|r| (r.header("ce-type"), r.header("ce-id")))
            .collect::<Vec<_>>()
    );
}

#[test]
fn knative_validation_rejects_a_bad_mode_missing_resources_and_filters() {
    let bad = [
        (
            "  mode: Everything\n  resources: [{apiVersion: v1, kind: Pod}]\n",
            "spec.mode",
        ),
        ("  resources: []\n", "spec.resources"),
        (
            "  resources: [{apiVersion: a/b/c, kind: Pod}]\n",
            "spec.resources[0].apiVersion",
        ),
        (
            "  resources: [{apiVersion: v1}]\n",
            "spec.resources[0].kind",
        ),
        (
            "  resources: [{apiVersion: v1, kind: Pod, selector: {matchExpressions: [{key: a, operator: In}]}}]\n",
            "spec.resources[0].selector.matchExpressions[0].values",
        ),
        (
            "  resources: [{apiVersion: v1, kind: Pod}]\n  filters: [{exact: {type: x}}]\n",
            "spec.filters",
        ),
    ];
    for (spec, field) in bad {
        let yaml = source("bad", spec, "{uri: \"http://127.0.0.1:9/\"}");
        let err = evmesh::Mesh::from_yaml(&yaml).expect_err(spec).to_string();
        assert!(err.contains(field), "{spec}: {err}");
    }
}

#[tokio::test]
async fn namespace_selector_watches_the_namespaces_whose_labels_match() {
    let sink = TestSink::start().await;
    let yaml = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: first, namespace: team-b}}\n---\n{}",
        watch_brokers(
            &sink,
            "  namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: team-b}}\n"
        )
    );
    let m = mesh(&yaml).await;
    let obj = ready(&m, "brokers").await;
    assert_eq!(obj["status"]["namespaces"], json!(["team-b"]));
    create_broker(&m, "here", "").await;
    let code = send(
        reqwest::Method::POST,
        &m.url("/apis/eventing.knative.dev/v1/namespaces/team-b/brokers"),
        Some("apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: there, namespace: team-b}\n".into()),
    )
    .await;
    assert_eq!(code, 201);
    wait_for_type(&sink, "there", "dev.knative.apiserver.ref.add").await;
    assert!(about(&sink, "here").is_empty(), "demo is not selected");
}

#[tokio::test]
async fn a_kubeconfig_points_the_source_at_another_api_server() {
    // `watched` plays the cluster: evmesh's API with an admin token, reached through a
    // kubeconfig as `evmesh kubeconfig` writes it (the token in the server URL and as the user's).
    let watched = mesh_with("", |o| evmesh::Options {
        admin_token: Some("t0ken".into()),
        ..o
    })
    .await;
    let server = watched.url("/_evmesh/kube/t0ken");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\"}}\nusers:\n- name: u\n  user: {{token: t0ken}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: demo}}\ncurrent-context: x\n"
        ),
    )
    .expect("write kubeconfig");
    let sink = TestSink::start().await;
    // As KUBECONFIG lists files: one that does not exist is skipped.
    let path = std::env::join_paths([dir.path().join("absent"), kubeconfig.clone()])
        .expect("a KUBECONFIG list");
    let m = mesh_with(&watch_brokers(&sink, ""), |o| evmesh::Options {
        kube_api: Some(evmesh::KubeApi::Kubeconfig(path.into())),
        ..o
    })
    .await;
    ready(&m, "brokers").await;
    let code = client()
        .post(watched.url(BROKERS))
        .bearer_auth("t0ken")
        .header("content-type", "application/yaml")
        .body(broker("remote", ""))
        .send()
        .await
        .expect("create")
        .status()
        .as_u16();
    assert_eq!(code, 201);
    wait_for_type(&sink, "remote", "dev.knative.apiserver.ref.add").await;
    let r = &about(&sink, "remote")[0];
    assert_eq!(
        r.header("ce-source").as_deref(),
        Some(watched.url("").as_str()),
        "the API server URL, without the token"
    );
}

#[tokio::test]
async fn a_watch_ends_after_timeout_seconds_as_kube_rs_expects() {
    let m = mesh(&broker("b1", "")).await;
    let url = m.url(&format!("{BROKERS}?watch=true&timeoutSeconds=1"));
    let resp = client().get(&url).send().await.expect("watch");
    assert_eq!(resp.status().as_u16(), 200);
    let body = tokio::time::timeout(Duration::from_secs(20), resp.text())
        .await
        .expect("the watch ended after timeoutSeconds")
        .expect("body");
    assert!(body.contains(r#""type":"ADDED""#), "{body}");
}

#[tokio::test]
async fn a_watch_from_a_resource_version_no_longer_kept_is_410_gone() {
    // A restarted evmesh keeps no watch history: a client resuming from an older version must
    // list again, which kube-rs's watcher does on 410 (reason Expired).
    let dir = tempfile::tempdir().expect("tempdir");
    let first = mesh_at(dir.path(), "", |o| o).await;
    for name in ["b1", "b2"] {
        let code = send(
            reqwest::Method::POST,
            &mesh_url(&first, BROKERS),
            Some(broker(name, "")),
        )
        .await;
        assert_eq!(code, 201);
    }
    first.shutdown().await;
    drop(first);
    let m = mesh_at(dir.path(), "", |o| o).await;
    let (_, list) = get_json(&mesh_url(&m, BROKERS)).await;
    assert_eq!(list["metadata"]["resourceVersion"], "2", "{list}");
    let resp = client()
        .get(mesh_url(
            &m,
            &format!("{BROKERS}?watch=true&resourceVersion=1"),
        ))
        .send()
        .await
        .expect("watch");
    assert_eq!(resp.status().as_u16(), 410);
    let status: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("a Status");
    assert_eq!(status["reason"], "Expired");
    assert_eq!(status["code"], 410);
}

#[tokio::test]
async fn a_source_whose_api_is_unreachable_keeps_trying_and_watches_once_it_answers() {
    // A free loopback port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .expect("write kubeconfig");
    let sink = TestSink::start().await;
    let m = mesh_with(&watch_brokers(&sink, ""), |o| evmesh::Options {
        kube_api: Some(evmesh::KubeApi::Kubeconfig(kubeconfig.clone())),
        ..o
    })
    .await;
    let url = m.url(&format!("{SOURCES}/brokers"));
    eventually_json(&url, "ApiServerUnreachable", |o| {
        o["status"]["conditions"][0]["reason"] == "ApiServerUnreachable"
    })
    .await;
    // The API comes up on that port.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the API's port");
    let api_dir = tempfile::tempdir().expect("tempdir");
    let api = evmesh::Mesh::from_yaml("")
        .expect("empty mesh")
        .data_dir(api_dir.path())
        .start(listener)
        .await
        .expect("API starts");
    ready(&m, "brokers").await;
    let code = send(
        reqwest::Method::POST,
        &mesh_url(&api, BROKERS),
        Some(broker("late", "")),
    )
    .await;
    assert_eq!(code, 201);
    wait_for_type(&sink, "late", "dev.knative.apiserver.ref.add").await;
}

/// Polls `url` until `cond` holds on its JSON (20 s at most).
async fn eventually_json(url: &str, what: &str, cond: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, obj) = get_json(url).await;
        if cond(&obj) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {obj}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_object_left_alone_sends_one_add_and_nothing_more() {
    let sink = TestSink::start().await;
    let m = mesh(&watch_brokers(&sink, "")).await;
    ready(&m, "brokers").await;
    create_broker(&m, "still", "").await;
    wait_for_type(&sink, "still", "dev.knative.apiserver.ref.add").await;
    // evmesh's watch reports every object once more after 0.5 s (a status look); the source
    // sends an update only for an object that changed.
    let url = m.url(&format!("{BROKERS}/still"));
    let (_, before) = get_json(&url).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, after) = get_json(&url).await;
    assert_eq!(
        before["status"]["conditions"],
        after["status"]["conditions"]
    );
    assert_eq!(
        types(&about(&sink, "still")),
        vec!["dev.knative.apiserver.ref.add".to_string()]
    );
}

#[tokio::test]
async fn serve_kubeconfig_flag_points_sources_at_that_cluster() {
    let watched = mesh("").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{}\"}}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            watched.url("")
        ),
    )
    .expect("write kubeconfig");
    let sink = TestSink::start().await;
    let config = dir.path().join("source.yaml");
    std::fs::write(&config, watch_brokers(&sink, "")).expect("write yaml");
    let kc = kubeconfig.to_string_lossy().into_owned();
    let p = EvmeshProcess::start(&config, &dir.path().join("data"), &["--kubeconfig", &kc]);
    eventually_json(&p.url(&format!("{SOURCES}/brokers")), "Ready", |o| {
        o["status"]["conditions"][0]["status"] == "True"
    })
    .await;
    create_broker(&watched, "far", "").await;
    wait_for_type(&sink, "far", "dev.knative.apiserver.ref.add").await;
    assert_eq!(
        about(&sink, "far")[0].header("ce-source").as_deref(),
        Some(watched.url("").as_str())
    );
}
