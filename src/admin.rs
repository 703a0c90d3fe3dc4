//! Admin API shaped like Kubernetes' (`/apis/{group}/{version}/namespaces/{ns}/{plural}`):
//! list, get and watch (open), create, replace and delete (bearer token); plus `/healthz` and
//! `/readyz`. Handlers only translate HTTP to [`Runtime`] calls and errors to `Status` bodies.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use evmesh_config::registry::{self, KindInfo};
use serde_json::{Value, json};

use crate::runtime::{Runtime, WatchEvent, WriteError};

#[derive(Clone)]
pub(crate) struct Admin {
    pub(crate) runtime: Runtime,
    pub(crate) ready: Arc<AtomicBool>,
    /// Bearer token required for writes.
    pub(crate) token: Option<Arc<str>>,
    /// The event store, whose health `/readyz` reports.
    pub(crate) store: Arc<dyn evmesh_store::EventStore>,
}

pub(crate) fn routes(admin: Admin) -> Router {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/apis/{group}/{version}/{plural}", get(list_all))
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}",
            get(list_ns).post(create),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}",
            get(get_one)
                .put(replace)
                .delete(delete)
                .patch(crate::kube::patch),
        )
        .route(
            "/apis/eventing.knative.dev/v1/namespaces/{ns}/triggers/{name}/replay",
            axum::routing::post(replay),
        )
        .with_state(admin.clone());
    crate::kube::extend(router, admin)
}

/// 503 while shutting down, or while a resource cannot run (not merely waiting for another
/// resource, such as a Trigger whose Broker is not applied yet), naming them.
async fn readyz(State(a): State<Admin>) -> Response {
    if !a.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if let Err(e) = a.store.health() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store: cannot write events: {e}\n"),
        )
            .into_response();
    }
    let failing: Vec<String> = a
        .runtime
        .failing()
        .into_iter()
        .map(|(what, why)| format!("{what}: {why}\n"))
        .collect();
    if !failing.is_empty() {
        return (StatusCode::SERVICE_UNAVAILABLE, failing.concat()).into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

/// A Kubernetes `Status` response.
fn status(code: StatusCode, reason: &str, message: String, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    (code, Json(body)).into_response()
}

impl IntoResponse for WriteError {
    fn into_response(self) -> Response {
        match self {
            WriteError::Invalid { kind, name, causes } => {
                let summary = causes
                    .iter()
                    .map(|(f, m)| {
                        if f.is_empty() {
                            m.clone()
                        } else {
                            format!("{f}: {m}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let causes: Vec<Value> = causes
                    .into_iter()
                    .map(|(field, message)| {
                        json!({"reason": "FieldValueInvalid", "message": message, "field": field})
                    })
                    .collect();
                status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!(
                        "{}.{} {name:?} is invalid: {summary}",
                        kind.kind, kind.group
                    ),
                    Some(
                        json!({"name": name, "group": kind.group, "kind": kind.kind, "causes": causes}),
                    ),
                )
            }
            WriteError::AlreadyExists { kind, name } => status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{}.{} {name:?} already exists", kind.plural, kind.group),
                Some(json!({"name": name, "group": kind.group, "kind": kind.plural})),
            ),
            WriteError::Conflict(message) => {
                status(StatusCode::CONFLICT, "Conflict", message, None)
            }
            WriteError::NotFound { kind, name } => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{}.{} {name:?} not found", kind.plural, kind.group),
                Some(json!({"name": name, "group": kind.group, "kind": kind.plural})),
            ),
            WriteError::BadRequest(message) => {
                status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
            }
            WriteError::Internal(message) => status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                message,
                None,
            ),
            WriteError::Unauthorized => status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized".into(),
                None,
            ),
            WriteError::UnknownResource(what) => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("the server could not find the requested resource ({what})"),
                None,
            ),
        }
    }
}

impl Admin {
    pub(crate) fn authorized(&self, headers: &HeaderMap) -> Result<(), WriteError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(WriteError::Unauthorized)
        }
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn kind_of(group: &str, version: &str, plural: &str) -> Result<&'static KindInfo, WriteError> {
    registry::by_plural(group, version, plural)
        .ok_or_else(|| WriteError::UnknownResource(format!("{plural}.{group}/{version}")))
}

fn watching(q: &HashMap<String, String>) -> bool {
    q.get("watch")
        .is_some_and(|w| w == "true" || w == "1" || w.is_empty())
}

fn list_response(a: &Admin, kind: &'static KindInfo, ns: Option<&str>) -> Response {
    Json(json!({
        "apiVersion": kind.api_version(),
        "kind": format!("{}List", kind.kind),
        "metadata": {"resourceVersion": a.runtime.resource_version().to_string()},
        "items": a.runtime.list(kind, ns),
    }))
    .into_response()
}

async fn list_all(
    State(a): State<Admin>,
    Path((group, version, plural)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let kind = match kind_of(&group, &version, &plural) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    if watching(&q) {
        return watch(&a, kind, None, &q);
    }
    list_response(&a, kind, None)
}

async fn list_ns(
    State(a): State<Admin>,
    Path((group, version, ns, plural)): Path<(String, String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let kind = match kind_of(&group, &version, &plural) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    if watching(&q) {
        return watch(&a, kind, Some(ns), &q);
    }
    list_response(&a, kind, Some(&ns))
}

async fn get_one(
    State(a): State<Admin>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
) -> Response {
    let kind = match kind_of(&group, &version, &plural) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    match a.runtime.get(kind, &ns, &name) {
        Some(item) => Json(item).into_response(),
        None => WriteError::NotFound { kind, name }.into_response(),
    }
}

/// Parses a request body in JSON or YAML (one document).
pub(crate) fn parse_body(body: &Bytes) -> Result<Value, WriteError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| WriteError::BadRequest("the body is not UTF-8".into()))?;
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    let mut docs = evmesh_config::load_str("<body>", text)
        .map_err(|e| WriteError::BadRequest(format!("the body is neither JSON nor YAML: {e}")))?;
    match docs.len() {
        1 => Ok(docs.remove(0).value),
        0 => Err(WriteError::BadRequest("the body is empty".into())),
        _ => Err(WriteError::BadRequest(
            "the body holds several documents; send one resource per request".into(),
        )),
    }
}

pub(crate) fn written(code: u16, object: Value, warnings: Vec<evmesh_config::Warning>) -> Response {
    let mut resp = (
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        Json(object),
    )
        .into_response();
    for w in warnings.iter().take(16) {
        let field = &w.location.field;
        let text = format!(
            "299 - \"{}{}\"",
            if field.is_empty() {
                String::new()
            } else {
                format!("{field}: ")
            },
            w.message.replace('"', "'")
        );
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// One write through the admin API: token, kind, body (none for a delete), then the runtime.
async fn write(
    a: &Admin,
    headers: &HeaderMap,
    (group, version, plural): (&str, &str, &str),
    ns: &str,
    name: Option<&str>,
    body: Option<&Bytes>,
) -> Response {
    let result = async {
        a.authorized(headers)?;
        let kind = kind_of(group, version, plural)?;
        let value = body.map(parse_body).transpose()?;
        // A body without a name in the URL is a create.
        let create = name.is_none();
        a.runtime.write(kind, ns, name, value, create).await
    }
    .await;
    match result {
        Ok((code, obj, warnings)) => written(code, obj, warnings),
        Err(e) => e.into_response(),
    }
}

async fn create(
    State(a): State<Admin>,
    Path((group, version, ns, plural)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write(
        &a,
        &headers,
        (&group, &version, &plural),
        &ns,
        None,
        Some(&body),
    )
    .await
}

async fn replace(
    State(a): State<Admin>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write(
        &a,
        &headers,
        (&group, &version, &plural),
        &ns,
        Some(&name),
        Some(&body),
    )
    .await
}

async fn delete(
    State(a): State<Admin>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    write(
        &a,
        &headers,
        (&group, &version, &plural),
        &ns,
        Some(&name),
        None,
    )
    .await
}

fn line(event_type: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": event_type, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// Streams Kubernetes watch events, one JSON object per line: the current objects as ADDED
/// (or the changes after `resourceVersion`), then every change as it happens.
fn watch(
    a: &Admin,
    kind: &'static KindInfo,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Response {
    let from = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .and_then(|v| v.parse::<u64>().ok());
    let matches = {
        let ns = ns.clone();
        move |e: &WatchEvent| {
            std::ptr::eq(e.kind, kind) && ns.as_deref().is_none_or(|n| n == e.namespace)
        }
    };
    let (mut rx, initial): (_, Vec<Bytes>) = match from {
        None => {
            let (rx, _) = a.runtime.watch_from(u64::MAX);
            let items = a.runtime.list(kind, ns.as_deref());
            (rx, items.iter().map(|o| line("ADDED", o)).collect())
        }
        Some(rv) => match a.runtime.watch_from(rv) {
            (rx, Some(events)) => (
                rx,
                events
                    .iter()
                    .filter(|e| matches(e))
                    .map(|e| line(e.event_type, &e.object))
                    .collect(),
            ),
            (_, None) => {
                return status(
                    StatusCode::GONE,
                    "Expired",
                    format!("too old resource version: {rv}"),
                    None,
                );
            }
        },
    };
    let last_sent = initial.len();
    let mut last_rv = from.unwrap_or_else(|| a.runtime.resource_version());
    let _ = last_sent;
    let stream = async_stream(initial, move |tx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if e.rv <= last_rv || !matches(&e) {
                        continue;
                    }
                    last_rv = e.rv;
                    if tx.send(line(e.event_type, &e.object)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "Expired", "code": 410, "message": "watch fell behind; list again"});
                    let _ = tx.send(line("ERROR", &gone)).await;
                    return;
                }
                Err(_) => return,
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A body stream: `initial` chunks, then whatever `feed` sends.
fn async_stream<F, Fut>(
    initial: Vec<Bytes>,
    feed: F,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(feed(tx));
    let head = futures_util::stream::iter(initial.into_iter().map(Ok));
    let tail =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
        );
    futures_util::StreamExt::chain(head, tail)
}

/// `POST .../triggers/{name}/replay` with `{"from": "earliest" | "<RFC 3339>"}`: re-delivers from
/// that point of the broker's log through the trigger's filter, to that trigger only.
async fn replay(
    State(a): State<Admin>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = a.authorized(&headers) {
        return e.into_response();
    }
    let from = match parse_body(&body) {
        Ok(v) => v.get("from").and_then(Value::as_str).map(str::to_string),
        Err(e) => return e.into_response(),
    };
    let Some(from) = from else {
        return WriteError::BadRequest(
            "the body must be {\"from\": \"earliest\" | \"<RFC 3339 time>\"}".into(),
        )
        .into_response();
    };
    let from = match evmesh_config::ReplayFrom::parse(&from) {
        Ok(f) => f,
        Err(e) => return WriteError::BadRequest(e).into_response(),
    };
    match a.runtime.replay(&ns, &name, from).await {
        Ok(offset) => Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "message": format!("trigger {ns}/{name} replays from offset {offset}"),
            "details": {"name": name, "group": "eventing.knative.dev", "kind": "triggers"},
            "evmesh": {"offset": offset},
        }))
        .into_response(),
        Err(evmesh_broker::ReplayError::NotFound(_)) => {
            match registry::by_kind("eventing.knative.dev/v1", "Trigger") {
                Some(kind) => WriteError::NotFound { kind, name }.into_response(),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("trigger {ns}/{name} not found"),
                    None,
                ),
            }
        }
        Err(e) => status(StatusCode::CONFLICT, "Conflict", e.to_string(), None),
    }
}
