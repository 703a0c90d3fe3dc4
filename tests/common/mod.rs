//! Shared helpers for the black-box tests: a real HTTP test sink, a mesh on 127.0.0.1:0 from
//! inline YAML, CloudEvent senders, waits for observable state with a deadline (`eventually`,
//! `quiesce`, `routed_up_to`), the real binary (`process`) and a stopped mesh's leftovers
//! (`progress`).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};

pub mod late_subscription;
pub mod process;
pub mod progress;
pub mod sequence;
pub mod tansu;
pub mod tls;

#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use progress::*;

/// One request the sink received.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub method: http::Method,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub event: Option<Event>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    pub fn event(&self) -> &Event {
        self.event
            .as_ref()
            .expect("the sink received a valid CloudEvent")
    }
}

/// What the sink answers.
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    StatusWithBody(u16, String),
    StatusWithHeader(u16, &'static str, String),
    /// 200 with this event (binary mode).
    Event(Event),
    /// This status with this event (binary mode).
    EventWithStatus(u16, Event),
    /// Wait, then answer 202.
    Delay(Duration),
    /// 200 with the event this function makes of the received one (binary mode); 202 without
    /// a body when the request held no CloudEvent.
    Map(fn(&Event) -> Event),
    /// Wait, then answer as the boxed reply does.
    DelayThen(Duration, Box<Reply>),
    /// This status with these headers and this body, as given.
    Raw(u16, Vec<(&'static str, String)>, String),
}

#[derive(Default)]
struct SinkState {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
}

/// A real HTTP server recording every CloudEvent it gets.
#[derive(Clone)]
pub struct TestSink {
    pub addr: SocketAddr,
    state: Arc<Mutex<SinkState>>,
    scheme: &'static str,
}

impl TestSink {
    /// A sink answering 202 to everything.
    pub async fn start() -> TestSink {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> TestSink {
        let state = Arc::new(Mutex::new(SinkState::default()));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind sink");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().fallback(record).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestSink {
            addr,
            state,
            scheme: "http",
        }
    }

    /// A sink answering 202 over https, with a server certificate signed by `ca`.
    pub async fn start_tls(ca: &tls::TestCa) -> TestSink {
        let state = Arc::new(Mutex::new(SinkState::default()));
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sink");
        let addr = tcp.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config()));
        let app = Router::new().fallback(record).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(tls::TlsListener { tcp, acceptor }, app).await;
        });
        TestSink {
            addr,
            state,
            scheme: "https",
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}/", self.scheme, self.addr)
    }

    /// The next requests get these answers, in order; afterwards the default applies.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state
            .lock()
            .expect("sink state")
            .script
            .extend(replies);
    }

    /// Answer every request (after the script) like this.
    pub fn always(&self, reply: Reply) {
        self.state.lock().expect("sink state").default = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("sink state").received.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().expect("sink state").received.len()
    }

    pub fn ids(&self) -> Vec<String> {
        self.received()
            .iter()
            .filter_map(|r| r.event.as_ref().map(|e| e.id().to_string()))
            .collect()
    }
}

async fn record(State(state): State<Arc<Mutex<SinkState>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default()
        .to_vec();
    let event = evmesh::evmesh_broker::codec::decode(&parts.headers, body.clone()).ok();
    let received = event.clone();
    let reply = {
        let mut s = state.lock().expect("sink state");
        s.received.push(Received {
            at: Instant::now(),
            method: parts.method.clone(),
            headers: parts.headers.clone(),
            body,
            event,
        });
        s.script.pop_front().or_else(|| s.default.clone())
    };
    let reply = match reply {
        Some(Reply::DelayThen(d, then)) => {
            tokio::time::sleep(d).await;
            Some(*then)
        }
        other => other,
    };
    match reply {
        None => StatusCode::ACCEPTED.into_response(),
        Some(Reply::DelayThen(_, _)) => StatusCode::ACCEPTED.into_response(),
        Some(Reply::Status(code)) => status(code).into_response(),
        Some(Reply::StatusWithBody(code, body)) => (status(code), body).into_response(),
        Some(Reply::StatusWithHeader(code, name, value)) => {
            (status(code), [(name, value)], "").into_response()
        }
        Some(Reply::Delay(d)) => {
            tokio::time::sleep(d).await;
            StatusCode::ACCEPTED.into_response()
        }
        Some(Reply::Event(event)) => event_response(200, event),
        Some(Reply::EventWithStatus(code, event)) => event_response(code, event),
        Some(Reply::Raw(code, headers, body)) => {
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = status(code);
            for (name, value) in headers {
                if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
                    resp.headers_mut().insert(name, v);
                }
            }
            resp
        }
        Some(Reply::Map(f)) => match received {
            Some(e) => event_response(200, f(&e)),
            None => StatusCode::ACCEPTED.into_response(),
        },
    }
}

fn event_response(code: u16, event: Event) -> Response {
    let enc = evmesh::evmesh_broker::codec::encode_binary(event).expect("encode reply");
    let mut resp = Response::new(Body::from(enc.body));
    *resp.status_mut() = status(code);
    *resp.headers_mut() = enc.headers;
    resp
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("valid status")
}

/// A running mesh plus its temporary data directory.
pub struct TestMesh {
    pub mesh: evmesh::RunningMesh,
    pub dir: tempfile::TempDir,
}

impl TestMesh {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.mesh.url().as_str().trim_end_matches('/'), path)
    }
}

/// Starts a mesh on 127.0.0.1:0 from inline YAML, with `{sink}`-style placeholders replaced.
pub async fn mesh(yaml: &str) -> TestMesh {
    mesh_with(yaml, |o| o).await
}

pub async fn mesh_with(
    yaml: &str,
    opts: impl FnOnce(evmesh::Options) -> evmesh::Options,
) -> TestMesh {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = opts(evmesh::Options {
        data_dir: dir.path().to_path_buf(),
        ..evmesh::Options::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mesh = evmesh::Mesh::from_yaml(yaml)
        .unwrap_or_else(|e| panic!("test YAML invalid:\n{e}"))
        .options(options)
        .start(listener)
        .await
        .expect("mesh starts");
    TestMesh { mesh, dir }
}

/// A minimal valid event.
pub fn event(id: &str, ty: &str) -> Event {
    EventBuilderV10::new()
        .id(id)
        .source("/test")
        .ty(ty)
        .build()
        .expect("valid event")
}

/// An HTTP client trusting the web PKI roots (built from a static list: cheap, unlike loading
/// the system's certificate store for every client).
pub fn client() -> reqwest::Client {
    evmesh::evmesh_broker::tls::install_provider();
    let tls = evmesh::evmesh_broker::tls::client_config(&[]).expect("TLS config");
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("HTTP client")
}

/// POSTs an event in binary mode; returns the status code.
pub async fn post_binary(url: &str, event: Event) -> u16 {
    let enc = evmesh::evmesh_broker::codec::encode_binary(event).expect("encode");
    client()
        .post(url)
        .headers(enc.headers)
        .body(enc.body)
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

/// POSTs raw headers + body; returns (status, body).
pub async fn post_raw(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut req = client().post(url).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("post");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// POSTs YAML to an admin API collection (a create); returns (status, body).
pub async fn create(collection: &str, yaml: &str) -> (u16, String) {
    let resp = client()
        .post(collection)
        .header("content-type", "application/yaml")
        .body(yaml.to_string())
        .send()
        .await
        .expect("apply");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Sleeps into the next whole second of the wall clock (and 50 ms past it): a resource created
/// after this has a `creationTimestamp` (whole seconds) later than anything done before it.
pub async fn into_the_next_second() {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(u64::from(1000 - ms) + 50)).await;
}

/// Waits until `cond` holds, failing the test after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A Broker + one Trigger to `sink` with extra trigger spec lines (indented 2 spaces under spec).
pub fn broker_and_trigger(sink: &TestSink, trigger_spec_extra: &str) -> String {
    broker_and_trigger_to(&sink.url(), trigger_spec_extra)
}

/// [`broker_and_trigger`] to a subscriber at `uri` (one that is not a [`TestSink`]).
pub fn broker_and_trigger_to(uri: &str, trigger_spec_extra: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: demo}}
spec:
  delivery: {{retry: 0}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: t1, namespace: demo}}
spec:
  broker: default
  subscriber: {{uri: "{}"}}
{}
"#,
        uri, trigger_spec_extra
    )
}

/// A broker and one trigger to `sink` (see [`broker_and_trigger`]), with one event `1` of type `t`
/// posted and accepted. Keep the returned mesh alive for the test's duration.
pub async fn one_event(sink: &TestSink, trigger_spec_extra: &str) -> TestMesh {
    let m = mesh(&broker_and_trigger(sink, trigger_spec_extra)).await;
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("1", "t")).await,
        202
    );
    m
}

/// Starts a mesh from inline YAML on an existing data directory (to restart on the same data).
pub async fn mesh_at(
    data_dir: &std::path::Path,
    yaml: &str,
    opts: impl FnOnce(evmesh::Options) -> evmesh::Options,
) -> evmesh::RunningMesh {
    let options = opts(evmesh::Options {
        data_dir: data_dir.to_path_buf(),
        ..evmesh::Options::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    evmesh::Mesh::from_yaml(yaml)
        .unwrap_or_else(|e| panic!("test YAML invalid:\n{e}"))
        .options(options)
        .start(listener)
        .await
        .expect("mesh starts")
}

/// The URL of `path` on a running mesh (`path` starts with `/`).
pub fn mesh_url(m: &evmesh::RunningMesh, path: &str) -> String {
    format!("{}{}", m.url().as_str().trim_end_matches('/'), path)
}

/// GETs a URL; returns (status, body text).
pub async fn get_text(url: &str) -> (u16, String) {
    let resp = client().get(url).send().await.expect("get");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// GETs a URL; returns (status, JSON body or `Null`).
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let resp = client().get(url).send().await.expect("get");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// `status.evmesh.counters` of a trigger or broker (`kind` is `triggers` or `brokers`), read
/// through the admin API at `base` (the mesh's URL without trailing slash).
pub async fn admin_counters(base: &str, kind: &str, ns: &str, name: &str) -> serde_json::Value {
    let url = format!(
        "{}/apis/eventing.knative.dev/v1/namespaces/{ns}/{kind}/{name}",
        base.trim_end_matches('/')
    );
    let (status, v) = get_json(&url).await;
    assert_eq!(status, 200, "GET {url}");
    v["status"]["evmesh"]["counters"].clone()
}

/// Waits until the admin counters of `kind/ns/name` satisfy `cond`; returns them.
pub async fn eventually_counters(
    base: &str,
    kind: &str,
    ns: &str,
    name: &str,
    timeout: Duration,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let c = admin_counters(base, kind, ns, name).await;
        if cond(&c) {
            return c;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for counters of {kind} {ns}/{name}: {c}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many times each id was received by `sink`.
pub fn id_counts(sink: &TestSink) -> std::collections::HashMap<String, usize> {
    let mut m = std::collections::HashMap::new();
    for id in sink.ids() {
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

/// POSTs an event in binary mode and asserts it was accepted (202).
pub async fn post_ok(url: &str, event: Event) {
    let id = event.id().to_string();
    assert_eq!(post_binary(url, event).await, 202, "event {id} accepted");
}

/// Waits, without sleeping a guessed time, until broker `ns/broker` has routed all `stored`
/// events of its log and every (event, trigger) match it routed has finished (delivered,
/// dead-lettered or dropped). After this nothing more can reach a subscriber, so "must not be
/// delivered" can be asserted. `base` is the mesh URL.
pub async fn quiesce(base: &str, ns: &str, broker: &str, stored: u64, timeout: Duration) {
    let base = base.trim_end_matches('/');
    let deadline = Instant::now() + timeout;
    loop {
        let (_, b) = get_json(&format!(
            "{base}/apis/eventing.knative.dev/v1/namespaces/{ns}/brokers/{broker}"
        ))
        .await;
        let (_, t) = get_json(&format!(
            "{base}/apis/eventing.knative.dev/v1/namespaces/{ns}/triggers"
        ))
        .await;
        let routed_offset = b["status"]["evmesh"]["routedOffset"].as_u64();
        let routed = b["status"]["evmesh"]["counters"]["routed"].as_u64();
        let finished: u64 = t["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|i| i["spec"]["broker"] == broker)
                    .map(|i| {
                        let c = &i["status"]["evmesh"]["counters"];
                        ["delivered", "deadLettered", "dropped"]
                            .iter()
                            .map(|f| c[*f].as_u64().unwrap_or(0))
                            .sum::<u64>()
                    })
                    .sum()
            })
            .unwrap_or(0);
        if routed_offset == Some(stored) && routed == Some(finished) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for broker {ns}/{broker} to route {stored} \
                 events and finish them: routedOffset {routed_offset:?}, routed {routed:?}, \
                 finished {finished}"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until broker `ns/broker` at `base` has routed its log up to `offset` (its
/// `routedOffset`); returns its `routed` counter ((event, trigger) matches handed to triggers)
/// at that point, which is final for the events below `offset`.
pub async fn routed_up_to(base: &str, ns: &str, broker: &str, offset: u64) -> u64 {
    let url = format!(
        "{}/apis/eventing.knative.dev/v1/namespaces/{ns}/brokers/{broker}",
        base.trim_end_matches('/')
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, b) = get_json(&url).await;
        let at = b["status"]["evmesh"]["routedOffset"].as_u64();
        if at == Some(offset) {
            return b["status"]["evmesh"]["counters"]["routed"]
                .as_u64()
                .expect("routed counter");
        }
        assert!(
            Instant::now() < deadline,
            "broker {ns}/{broker} did not route up to {offset}: at {at:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`quiesce`] for a [`TestMesh`].
pub async fn quiet(m: &TestMesh, ns: &str, broker: &str, stored: u64) {
    quiesce(&m.url(""), ns, broker, stored, Duration::from_secs(15)).await;
}
