//! Shared helpers for the black-box tests: a real HTTP test sink, a mesh on 127.0.0.1:0 from
//! inline YAML, CloudEvent senders and an `eventually` wait with a deadline.
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

pub mod tls;

/// One request the sink received.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
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
    let reply = {
        let mut s = state.lock().expect("sink state");
        s.received.push(Received {
            at: Instant::now(),
            headers: parts.headers.clone(),
            body,
            event,
        });
        s.script.pop_front().or_else(|| s.default.clone())
    };
    match reply {
        None => StatusCode::ACCEPTED.into_response(),
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

/// Gives asynchronous delivery a moment, for asserting that something did NOT happen.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// A Broker + one Trigger to `sink` with extra trigger spec lines (indented 2 spaces under spec).
pub fn broker_and_trigger(sink: &TestSink, trigger_spec_extra: &str) -> String {
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
        sink.url(),
        trigger_spec_extra
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
