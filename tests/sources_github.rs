//! GitHubSource in a running evmesh: signed GitHub deliveries to its webhook endpoint reach a
//! real HTTP sink through a Broker with Knative's shape; bad or missing signatures are refused
//! and deliver nothing; status and secrets through the admin API; webhook registration and
//! removal against a local server recording the GitHub REST calls.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

const SECRET: &str = "webhook-s3cret";
const TOKEN: &str = "ghp_accesstoken";

fn yaml(sink: &TestSink, extra: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: githubsecret, namespace: demo}}
stringData: {{secretToken: {SECRET}, accessToken: {TOKEN}}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: demo}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: github, namespace: demo}}
spec:
  broker: default
  filter: {{attributes: {{source: https://github.com/Codertocat/Hello-World}}}}
  subscriber: {{uri: "{}"}}
---
apiVersion: sources.knative.dev/v1alpha1
kind: GitHubSource
metadata: {{name: gh, namespace: demo}}
spec:
  eventTypes: [push, pull_request, issues, issue_comment, release, ping]
  ownerAndRepository: Codertocat/Hello-World
  secretToken: {{secretKeyRef: {{name: githubsecret, key: secretToken}}}}
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
{extra}"#,
        sink.url()
    )
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/sources/tests/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn sha256(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(m: &TestMesh, event: &str, id: &str, body: &[u8], sig: Option<String>) -> u16 {
    let mut req = client()
        .post(m.url("/webhooks/github/demo/gh"))
        .header("x-github-event", event)
        .header("x-github-delivery", id)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(sig) = sig {
        req = req.header("x-hub-signature-256", sig);
    }
    req.send().await.expect("post").status().as_u16()
}

#[tokio::test]
async fn github_delivery_reaches_the_sink_with_knatives_shape() {
    let sink = TestSink::start().await;
    let m = mesh(&yaml(&sink, "")).await;
    let body = fixture("pull_request");
    assert_eq!(
        deliver(
            &m,
            "pull_request",
            "d-1",
            &body,
            Some(sha256(&body, SECRET))
        )
        .await,
        202
    );
    eventually("delivered", Duration::from_secs(10), || sink.count() == 1).await;
    let r = &sink.received()[0];
    assert_eq!(
        r.header("ce-type").as_deref(),
        Some("dev.knative.source.github.pull_request")
    );
    assert_eq!(
        r.header("ce-source").as_deref(),
        Some("https://github.com/Codertocat/Hello-World")
    );
    assert_eq!(r.header("ce-id").as_deref(), Some("d-1"));
    assert_eq!(r.header("ce-subject").as_deref(), Some("2"));
    assert_eq!(r.header("ce-action").as_deref(), Some("opened"));
    assert_eq!(r.header("ce-owner").as_deref(), Some("Codertocat"));
    assert_eq!(r.header("ce-repository").as_deref(), Some("Hello-World"));
    assert_eq!(r.header("ce-number").as_deref(), Some("2"));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.body, body, "the payload bytes are the data");
}

#[tokio::test]
async fn bad_or_missing_signature_gets_400_and_delivers_nothing() {
    let sink = TestSink::start().await;
    let m = mesh(&yaml(&sink, "")).await;
    let body = fixture("push");
    assert_eq!(
        deliver(&m, "push", "bad", &body, Some(sha256(&body, "wrong"))).await,
        400
    );
    assert_eq!(deliver(&m, "push", "missing", &body, None).await, 400);
    assert_eq!(
        deliver(&m, "push", "good", &body, Some(sha256(&body, SECRET))).await,
        202
    );
    // The broker stored exactly one event: the signed one.
    quiet(&m, "demo", "default", 1).await;
    assert_eq!(sink.ids(), vec!["good".to_string()]);
}

#[tokio::test]
async fn event_types_not_listed_are_not_delivered() {
    let sink = TestSink::start().await;
    let m = mesh(&yaml(&sink, "").replace(
        "[push, pull_request, issues, issue_comment, release, ping]",
        "[release]",
    ))
    .await;
    let push = fixture("push");
    assert_eq!(
        deliver(&m, "push", "p", &push, Some(sha256(&push, SECRET))).await,
        200
    );
    let release = fixture("release");
    assert_eq!(
        deliver(&m, "release", "r", &release, Some(sha256(&release, SECRET))).await,
        202
    );
    quiet(&m, "demo", "default", 1).await;
    assert_eq!(sink.ids(), vec!["r".to_string()]);
}

#[tokio::test]
async fn a_webhook_for_a_source_that_does_not_exist_gets_404() {
    let sink = TestSink::start().await;
    let m = mesh(&yaml(&sink, "")).await;
    let body = fixture("ping");
    let resp = client()
        .post(m.url("/webhooks/github/demo/nope"))
        .header("x-github-event", "ping")
        .header("x-github-delivery", "x")
        .header("x-hub-signature-256", sha256(&body, SECRET))
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test]
async fn status_shows_the_webhook_url_and_never_the_secrets() {
    let sink = TestSink::start().await;
    let m = mesh(&yaml(&sink, "")).await;
    let (code, obj) =
        get_json(&m.url("/apis/sources.knative.dev/v1alpha1/namespaces/demo/githubsources/gh"))
            .await;
    assert_eq!(code, 200, "{obj}");
    let st = &obj["status"];
    assert_eq!(st["conditions"][0]["status"], "True", "{obj}");
    assert_eq!(
        st["address"]["url"],
        Value::String(m.url("/webhooks/github/demo/gh"))
    );
    assert_eq!(st["sinkUri"], Value::String(m.url("/demo/default")));
    assert_eq!(
        st["ceAttributes"][0],
        json!({"type": "dev.knative.source.github.push", "source": "https://github.com/Codertocat/Hello-World"})
    );
    let text = obj.to_string();
    assert!(!text.contains(SECRET) && !text.contains(TOKEN), "{text}");
    // Secrets are not served by the admin API.
    let (code, _) = get_json(&m.url("/api/v1/namespaces/demo/secrets/githubsecret")).await;
    assert_ne!(code, 200);
}

#[derive(Clone, Default)]
struct FakeGitHub {
    calls: Arc<Mutex<Vec<(String, String, String)>>>,
}

async fn record(
    axum::extract::State(gh): axum::extract::State<FakeGitHub>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    gh.calls
        .lock()
        .expect("lock")
        .push((method.to_string(), uri.path().to_string(), auth));
    match method.as_str() {
        "POST" => (StatusCode::CREATED, axum::Json(json!({"id": 4242}))).into_response(),
        "DELETE" => StatusCode::NO_CONTENT.into_response(),
        _ => axum::Json(json!({"id": 4242})).into_response(),
    }
}

#[tokio::test]
async fn access_token_registers_the_webhook_and_deleting_the_source_removes_it() {
    let gh = FakeGitHub::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = format!("http://{}/", listener.local_addr().expect("addr"));
    let app = axum::Router::new().fallback(record).with_state(gh.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    let sink = TestSink::start().await;
    let m = mesh(
        &yaml(
            &sink,
            &format!(
                "  githubAPIURL: {api}\n  accessToken: {{secretKeyRef: {{name: githubsecret, key: accessToken}}}}\n"
            ),
        )
        .replace(
            "metadata: {name: gh, namespace: demo}",
            "metadata: {name: gh, namespace: demo, annotations: {evmesh.dev/public-url: \"https://events.example.com\"}}",
        ),
    )
    .await;
    let calls = || gh.calls.lock().expect("lock").clone();
    eventually("webhook registered", Duration::from_secs(10), || {
        !calls().is_empty()
    })
    .await;
    assert_eq!(
        calls()[0],
        (
            "POST".to_string(),
            "/repos/Codertocat/Hello-World/hooks".to_string(),
            format!("Bearer {TOKEN}")
        )
    );
    let url = m.url("/apis/sources.knative.dev/v1alpha1/namespaces/demo/githubsources/gh");
    let mut status = Value::Null;
    for _ in 0..500 {
        let (_, obj) = get_json(&url).await;
        status = obj["status"].clone();
        if status["webhookIDKey"] == "4242" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status["webhookIDKey"], "4242", "{status}");
    // The URL GitHub was given: the public URL annotation, not the listen address.
    assert_eq!(
        status["address"]["url"],
        "https://events.example.com/webhooks/github/demo/gh"
    );
    let resp = client().delete(&url).send().await.expect("delete");
    assert_eq!(resp.status().as_u16(), 200);
    eventually("webhook removed", Duration::from_secs(10), || {
        calls()
            .iter()
            .any(|c| c.0 == "DELETE" && c.1 == "/repos/Codertocat/Hello-World/hooks/4242")
    })
    .await;
}

#[tokio::test]
async fn a_restarted_evmesh_updates_its_webhook_instead_of_registering_another() {
    let gh = FakeGitHub::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = format!("http://{}/", listener.local_addr().expect("addr"));
    let app = axum::Router::new().fallback(record).with_state(gh.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    let sink = TestSink::start().await;
    let config = yaml(
        &sink,
        &format!(
            "  githubAPIURL: {api}\n  accessToken: {{secretKeyRef: {{name: githubsecret, key: accessToken}}}}\n"
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let calls = || gh.calls.lock().expect("lock").clone();
    let first = mesh_at(dir.path(), &config, |o| o).await;
    eventually("webhook registered", Duration::from_secs(10), || {
        calls().len() == 1
    })
    .await;
    first.shutdown().await;
    // Stopping evmesh is not deleting the source: the webhook stays.
    assert_eq!(calls().len(), 1);
    let second = mesh_at(dir.path(), &config, |o| o).await;
    eventually("webhook updated", Duration::from_secs(10), || {
        calls().len() == 2
    })
    .await;
    let c = &calls()[1];
    assert_eq!(
        (c.0.as_str(), c.1.as_str()),
        ("PATCH", "/repos/Codertocat/Hello-World/hooks/4242")
    );
    second.shutdown().await;
}
