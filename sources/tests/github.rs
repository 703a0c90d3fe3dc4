//! GitHubSource: signature checks (SHA-256 and SHA-1), event type filtering, Knative's event
//! shape for real GitHub payloads (@octokit/webhooks-examples), the webhook endpoint over HTTP,
//! and webhook registration against a local server that records the GitHub REST calls.

mod common;

use std::sync::{Arc, Mutex, RwLock};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use bytes::Bytes;
use common::{CollectSink, attr, eventually};
use evmesh_broker::record::DataKind;
use evmesh_config::MeshConfig;
use evmesh_sources::{
    CancellationToken, GitHubSource, SinkErrorKind, Source, SourceContext, webhook_router,
};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

const SECRET: &str = "s3cr3t-token";

fn yaml(extra_spec: &str, api: Option<&str>) -> String {
    let api = api
        .map(|u| format!("  githubAPIURL: {u}\n  accessToken: {{secretKeyRef: {{name: githubsecret, key: accessToken}}}}\n"))
        .unwrap_or_default();
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: githubsecret, namespace: demo}}
stringData:
  secretToken: {SECRET}
  accessToken: ghp_access
---
apiVersion: sources.knative.dev/v1alpha1
kind: GitHubSource
metadata: {{name: githubsource-sample, namespace: demo}}
spec:
  eventTypes: [push, pull_request, issues, issue_comment, release, ping]
  ownerAndRepository: Codertocat/Hello-World
  secretToken: {{secretKeyRef: {{name: githubsecret, key: secretToken}}}}
  sink: {{uri: http://127.0.0.1:9/}}
{extra_spec}{api}"#
    )
}

fn source_from(yaml: &str) -> GitHubSource {
    common::install_kinds();
    let mesh = MeshConfig::from_yaml("github.yaml", yaml).expect("valid");
    GitHubSource::new(
        &mesh.sources[0],
        &mesh.secrets,
        "http://127.0.0.1:8080/webhooks/github/demo/githubsource-sample"
            .parse()
            .expect("url"),
    )
    .expect("a github source")
}

struct Running {
    source: Arc<GitHubSource>,
    sink: Arc<CollectSink>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(source: GitHubSource) -> Running {
    let source = Arc::new(source);
    let sink = Arc::new(CollectSink::default());
    let stop = CancellationToken::new();
    let ctx = SourceContext::new(
        sink.clone(),
        Some("http://127.0.0.1:9/".into()),
        stop.clone(),
    );
    let s = source.clone();
    let task = tokio::spawn(async move { s.run(ctx).await });
    // Started: the webhook endpoint publishes from now on.
    eventually("the source running", || {
        (source.status().reason.as_deref() != Some("NotRunning")).then_some(())
    })
    .await;
    Running {
        source,
        sink,
        stop,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("stopped");
    }
}

fn sha256(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn sha1(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

fn headers(event: &str, pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-github-event", event.parse().expect("header"));
    h.insert(
        "x-github-delivery",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958"
            .parse()
            .expect("header"),
    );
    h.insert("content-type", "application/json".parse().expect("header"));
    for (k, v) in pairs {
        h.insert(*k, v.parse().expect("header"));
    }
    h
}

fn fixture(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn signed(event: &str, body: &[u8]) -> HeaderMap {
    headers(event, &[("x-hub-signature-256", sha256(body, SECRET))])
}

/// The subject and extensions Knative's adapter computes for each fixture (pkg/common/events.go).
fn expected(event: &str) -> (&'static str, Value) {
    match event {
        "push" => (
            "simple-tag",
            json!({"owner": "Codertocat", "repository": "Hello-World", "installation": 0,
                   "sender": "Codertocat", "pusher": "Codertocat", "ref": "refs/tags/simple-tag",
                   "created": true, "deleted": false, "forced": false}),
        ),
        "pull_request" => (
            "2",
            json!({"owner": "Codertocat", "repository": "Hello-World", "installation": 0,
                   "sender": "Codertocat", "action": "opened", "number": 2, "label": ""}),
        ),
        "issues" => (
            "1",
            json!({"owner": "Codertocat", "repository": "Hello-World", "sender": "Codertocat",
                   "action": "assigned", "assignee": "Codertocat"}),
        ),
        "issue_comment" => (
            "1#issuecomment-492700400",
            json!({"owner": "Codertocat", "repository": "Hello-World", "sender": "Codertocat",
                   "action": "created"}),
        ),
        "release" => (
            "0.0.1",
            json!({"owner": "Codertocat", "repository": "Hello-World", "installation": 0,
                   "sender": "Codertocat", "action": "published", "release": ""}),
        ),
        "ping" => (
            "109948940",
            json!({"owner": "Octocoders", "repository": "Hello-World", "sender": "Codertocat"}),
        ),
        other => panic!("no expectation for {other}"),
    }
}

const STANDARD: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
];

#[tokio::test]
async fn each_fixture_becomes_the_event_knative_emits() {
    let r = start(source_from(&yaml("", None))).await;
    for (i, event) in [
        "push",
        "pull_request",
        "issues",
        "issue_comment",
        "release",
        "ping",
    ]
    .into_iter()
    .enumerate()
    {
        let body = fixture(event);
        let reply = r.source.receive(&signed(event, &body), body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "{event}: {}",
            reply.body
        );
        assert_eq!(reply.body, "accepted");
        let events = r.sink.wait_for(i + 1).await;
        let e = &events[i];
        assert_eq!(
            attr(e, "type").as_deref(),
            Some(format!("dev.knative.source.github.{event}").as_str()),
            "{event}"
        );
        assert_eq!(
            attr(e, "source").as_deref(),
            Some("https://github.com/Codertocat/Hello-World")
        );
        assert_eq!(
            attr(e, "id").as_deref(),
            Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
        );
        assert_eq!(
            attr(e, "datacontenttype").as_deref(),
            Some("application/json")
        );
        let (subject, exts) = expected(event);
        assert_eq!(attr(e, "subject").as_deref(), Some(subject), "{event}");
        let got: serde_json::Map<String, Value> = e
            .attributes()
            .iter()
            .filter(|(k, _)| !STANDARD.contains(k))
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(Value::Object(got), exts, "{event} extensions");
        let (kind, data) = e.data().expect("data");
        assert_eq!(kind, DataKind::Json);
        assert_eq!(data, &body, "{event}: the payload bytes are the data");
    }
    r.stop().await;
}

#[tokio::test]
async fn sha256_signature_is_accepted() {
    let r = start(source_from(&yaml("", None))).await;
    let body = fixture("push");
    let reply = r
        .source
        .receive(
            &headers("push", &[("x-hub-signature-256", sha256(&body, SECRET))]),
            body,
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(r.sink.len(), 1);
    r.stop().await;
}

#[tokio::test]
async fn older_sha1_signature_is_accepted() {
    let r = start(source_from(&yaml("", None))).await;
    let body = fixture("push");
    let reply = r
        .source
        .receive(
            &headers("push", &[("x-hub-signature", sha1(&body, SECRET))]),
            body,
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(r.sink.len(), 1);
    r.stop().await;
}

#[tokio::test]
async fn bad_signature_gets_400_and_nothing_is_published() {
    let r = start(source_from(&yaml("", None))).await;
    let body = fixture("push");
    for h in [
        headers(
            "push",
            &[("x-hub-signature-256", sha256(&body, "wrong-secret"))],
        ),
        headers("push", &[("x-hub-signature", sha1(&body, "wrong-secret"))]),
        headers("push", &[("x-hub-signature-256", "sha256=zz".to_string())]),
        headers("push", &[("x-hub-signature-256", sha1(&body, SECRET))]),
    ] {
        let reply = r.source.receive(&h, body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    }
    // The signature of other bytes does not cover this body.
    let reply = r.source.receive(&signed("push", b"{}"), body.clone()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.sink.len(), 0);
    r.stop().await;
}

#[tokio::test]
async fn sha256_signature_is_checked_even_when_a_valid_sha1_comes_with_it() {
    let r = start(source_from(&yaml("", None))).await;
    let body = fixture("push");
    let h = headers(
        "push",
        &[
            ("x-hub-signature-256", sha256(&body, "wrong-secret")),
            ("x-hub-signature", sha1(&body, SECRET)),
        ],
    );
    let reply = r.source.receive(&h, body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.sink.len(), 0);
    r.stop().await;
}

#[tokio::test]
async fn missing_signature_gets_400_and_nothing_is_published() {
    let r = start(source_from(&yaml("", None))).await;
    let body = fixture("push");
    let reply = r.source.receive(&headers("push", &[]), body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("X-Hub-Signature"), "{}", reply.body);
    assert_eq!(r.sink.len(), 0);
    r.stop().await;
}

#[tokio::test]
async fn event_types_not_listed_are_not_forwarded() {
    let r = start(source_from(&yaml("", None).replace(
        "[push, pull_request, issues, issue_comment, release, ping]",
        "[pull_request]",
    )))
    .await;
    let body = fixture("push");
    let reply = r.source.receive(&signed("push", &body), body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("not forwarded"), "{}", reply.body);
    let body = fixture("pull_request");
    let reply = r.source.receive(&signed("pull_request", &body), body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let events = r.sink.wait_for(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        attr(&events[0], "type").as_deref(),
        Some("dev.knative.source.github.pull_request")
    );
    r.stop().await;
}

#[tokio::test]
async fn unknown_github_event_gets_404() {
    let r = start(source_from(&yaml("", None))).await;
    let body = Bytes::from_static(b"{}");
    let reply = r.source.receive(&signed("not_an_event", &body), body).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(r.sink.len(), 0);
    r.stop().await;
}

#[tokio::test]
async fn missing_event_or_delivery_header_gets_400() {
    let r = start(source_from(&yaml("", None))).await;
    let body = fixture("push");
    let mut h = signed("push", &body);
    h.remove("x-github-delivery");
    assert_eq!(
        r.source.receive(&h, body.clone()).await.status,
        StatusCode::BAD_REQUEST
    );
    let mut h = signed("push", &body);
    h.remove("x-github-event");
    assert_eq!(
        r.source.receive(&h, body).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(r.sink.len(), 0);
    r.stop().await;
}

#[tokio::test]
async fn a_sink_that_cannot_take_the_event_gets_503_not_202() {
    let r = start(source_from(&yaml("", None))).await;
    r.sink.refuse(Some(SinkErrorKind::Unavailable));
    let body = fixture("push");
    let reply = r.source.receive(&signed("push", &body), body).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let source = r.source.clone();
    r.stop().await;
    // A stopped source takes nothing either.
    let body = fixture("push");
    let reply = source.receive(&signed("push", &body), body).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn ce_overrides_are_added_to_github_events() {
    let r = start(source_from(&yaml(
        "  ceOverrides: {extensions: {team: platform}}\n",
        None,
    )))
    .await;
    let body = fixture("ping");
    let reply = r.source.receive(&signed("ping", &body), body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let events = r.sink.wait_for(1).await;
    assert_eq!(attr(&events[0], "team").as_deref(), Some("platform"));
    r.stop().await;
}

#[tokio::test]
async fn status_shows_webhook_address_sink_and_ce_attributes() {
    let r = start(source_from(&yaml("", None))).await;
    eventually("ready", || r.source.status().ready.then_some(())).await;
    let st = r.source.status().to_json(1);
    assert_eq!(
        st["address"]["url"],
        "http://127.0.0.1:8080/webhooks/github/demo/githubsource-sample"
    );
    assert_eq!(st["sinkUri"], "http://127.0.0.1:9/");
    assert_eq!(st["ceAttributes"].as_array().map(Vec::len), Some(6));
    assert_eq!(
        st["ceAttributes"][0],
        json!({"type": "dev.knative.source.github.push", "source": "https://github.com/Codertocat/Hello-World"})
    );
    let text = st.to_string();
    assert!(
        !text.contains(SECRET) && !text.contains("ghp_access"),
        "{text}"
    );
    r.stop().await;
}

#[tokio::test]
async fn webhook_endpoint_answers_over_http() {
    let r = start(source_from(&yaml("", None))).await;
    let hooks: evmesh_sources::WebhookHooks = Arc::new(RwLock::new(Default::default()));
    hooks.write().expect("lock").insert(
        ("demo".into(), "githubsource-sample".into()),
        r.source.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        axum::serve(listener, webhook_router(hooks))
            .await
            .expect("serve")
    });
    let client = reqwest::Client::new();
    let body = fixture("issues");
    let post = |path: &str, sig: String| {
        client
            .post(format!("http://{addr}{path}"))
            .header("x-github-event", "issues")
            .header("x-github-delivery", "d-1")
            .header("x-hub-signature-256", sig)
            .body(body.clone())
            .send()
    };
    let ok = post(
        "/webhooks/github/demo/githubsource-sample",
        sha256(&body, SECRET),
    )
    .await
    .expect("post");
    assert_eq!(ok.status(), 202);
    assert_eq!(ok.text().await.expect("body"), "accepted");
    let bad = post(
        "/webhooks/github/demo/githubsource-sample",
        sha256(&body, "nope"),
    )
    .await
    .expect("post");
    assert_eq!(bad.status(), 400);
    let missing = post("/webhooks/github/demo/other", sha256(&body, SECRET))
        .await
        .expect("post");
    assert_eq!(missing.status(), 404);
    assert_eq!(r.sink.len(), 1);
    server.abort();
    r.stop().await;
}

// ---- webhook registration through the GitHub REST API ----

#[derive(Clone, Debug)]
struct Call {
    method: String,
    path: String,
    authorization: String,
    body: Value,
}

#[derive(Clone, Default)]
struct FakeGitHub {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Answers 500 to this many creates first.
    fail_creates: Arc<Mutex<usize>>,
    /// Hook ids that exist.
    hooks: Arc<Mutex<Vec<u64>>>,
}

impl FakeGitHub {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }
}

async fn record(
    State(gh): State<FakeGitHub>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let path = uri.path().to_string();
    gh.calls.lock().expect("lock").push(Call {
        method: method.to_string(),
        path: path.clone(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let id = path.rsplit('/').next().and_then(|s| s.parse::<u64>().ok());
    match (method.as_str(), id) {
        ("POST", None) => {
            let mut fail = gh.fail_creates.lock().expect("lock");
            if *fail > 0 {
                *fail -= 1;
                return (StatusCode::INTERNAL_SERVER_ERROR, "try later").into_response();
            }
            gh.hooks.lock().expect("lock").push(42);
            (
                StatusCode::CREATED,
                axum::Json(json!({"id": 42, "name": "web"})),
            )
                .into_response()
        }
        ("PATCH" | "DELETE", Some(id)) => {
            let mut hooks = gh.hooks.lock().expect("lock");
            if !hooks.contains(&id) {
                return (StatusCode::NOT_FOUND, "Not Found").into_response();
            }
            if method == Method::DELETE {
                hooks.retain(|h| *h != id);
                return StatusCode::NO_CONTENT.into_response();
            }
            axum::Json(json!({"id": id})).into_response()
        }
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}

async fn fake_github(gh: FakeGitHub) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().fallback(record).with_state(gh);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{addr}/api/v3/"), task)
}

#[tokio::test]
async fn access_token_registers_the_webhook_and_delete_removes_it() {
    let gh = FakeGitHub::default();
    let (api, server) = fake_github(gh.clone()).await;
    let r = start(source_from(&yaml("  secure: true\n", Some(&api)))).await;
    eventually("webhook registered", || {
        r.source.status().ready.then_some(())
    })
    .await;
    let st = r.source.status().to_json(1);
    assert_eq!(st["webhookIDKey"], "42");
    let calls = gh.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let c = &calls[0];
    assert_eq!(c.method, "POST");
    assert_eq!(c.path, "/api/v3/repos/Codertocat/Hello-World/hooks");
    assert_eq!(c.authorization, "Bearer ghp_access");
    assert_eq!(c.body["name"], "web");
    assert_eq!(c.body["active"], true);
    assert_eq!(
        c.body["events"],
        json!([
            "push",
            "pull_request",
            "issues",
            "issue_comment",
            "release",
            "ping"
        ])
    );
    assert_eq!(
        c.body["config"],
        json!({"url": "https://127.0.0.1:8080/webhooks/github/demo/githubsource-sample",
               "content_type": "json", "secret": SECRET})
    );
    r.stop.cancel();
    r.task.await.expect("stopped");
    // Stopping is not deleting: the webhook stays until the resource is deleted.
    assert_eq!(gh.calls().len(), 1);
    r.source.finalize().await.expect("webhook removed");
    let calls = gh.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1].method, "DELETE");
    assert_eq!(
        calls[1].path,
        "/api/v3/repos/Codertocat/Hello-World/hooks/42"
    );
    assert_eq!(calls[1].authorization, "Bearer ghp_access");
    assert!(gh.hooks.lock().expect("lock").is_empty());
    server.abort();
}

#[tokio::test]
async fn a_known_webhook_is_updated_not_registered_again() {
    let gh = FakeGitHub::default();
    gh.hooks.lock().expect("lock").push(7);
    let (api, server) = fake_github(gh.clone()).await;
    let source = source_from(&yaml("", Some(&api))).with_hook_id(Some("7".into()));
    let r = start(source).await;
    eventually("webhook updated", || r.source.status().ready.then_some(())).await;
    let calls = gh.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].method, "PATCH");
    assert_eq!(
        calls[0].path,
        "/api/v3/repos/Codertocat/Hello-World/hooks/7"
    );
    assert_eq!(r.source.hook_id().as_deref(), Some("7"));
    r.stop().await;
    server.abort();
}

#[tokio::test]
async fn an_organization_webhook_is_registered_on_the_org() {
    let gh = FakeGitHub::default();
    let (api, server) = fake_github(gh.clone()).await;
    let r = start(source_from(
        &yaml("", Some(&api)).replace("Codertocat/Hello-World", "Codertocat"),
    ))
    .await;
    eventually("webhook registered", || {
        r.source.status().ready.then_some(())
    })
    .await;
    assert_eq!(gh.calls()[0].path, "/api/v3/orgs/Codertocat/hooks");
    r.stop().await;
    server.abort();
}

#[tokio::test]
async fn failed_registration_is_shown_in_status_and_retried() {
    let gh = FakeGitHub::default();
    *gh.fail_creates.lock().expect("lock") = 1;
    let (api, server) = fake_github(gh.clone()).await;
    let r = start(source_from(&yaml("", Some(&api)))).await;
    let reason = eventually("a failed registration", || {
        let st = r.source.status();
        st.message
            .as_deref()
            .is_some_and(|m| m.contains("500"))
            .then(|| st.reason.clone())
    })
    .await;
    assert_eq!(reason.as_deref(), Some("WebhookNotConfigured"));
    // Webhook deliveries are still taken while the registration is retried.
    let body = fixture("ping");
    let reply = r.source.receive(&signed("ping", &body), body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    eventually("registered on the retry", || {
        r.source.status().ready.then_some(())
    })
    .await;
    assert_eq!(gh.calls().len(), 2);
    r.stop().await;
    server.abort();
}
