//! Broker ingress over HTTP: `POST /{namespace}/{broker}` with a CloudEvent; the handler only
//! translates HTTP to [`BrokerService::publish`] and errors back to status codes.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use crate::codec;
use crate::service::{BrokerRuntime, BrokerService, PublishError, StreamKind};

/// The TTL extension Knative's broker uses against reply loops.
pub const TTL_EXTENSION: &str = "knativebrokerttl";
/// Extension stamped with the time the broker accepted the event.
pub const ARRIVAL_EXTENSION: &str = "knativearrivaltime";
/// TTL given to an event that arrives without one.
pub const MAX_TTL: i64 = 255;
/// Default limit of an event's HTTP body (1 MiB, like Kafka's default message size).
pub const DEFAULT_MAX_EVENT_SIZE: usize = 1024 * 1024;

/// The error a request body gives once its read deadline passed (the server wraps every
/// request body with one); ingress answers `408 Request Timeout` for it.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub struct BodyTimeout(pub std::time::Duration);

#[derive(Clone)]
struct Ingress {
    service: BrokerService,
    max_size: usize,
}

/// The ingress routes, for merging into the server's router.
///
/// ```no_run
/// # fn demo(service: evmesh_broker::BrokerService) {
/// let app: axum::Router = evmesh_broker::ingress::routes(service, 1024 * 1024);
/// # }
/// ```
pub fn routes(service: BrokerService, max_size: usize) -> Router {
    let state = Ingress { service, max_size };
    Router::new()
        .route("/{namespace}/{broker}", any(handle))
        .route("/{namespace}/{broker}/", any(handle))
        .route("/channels/{namespace}/{channel}", any(handle_channel))
        .route("/channels/{namespace}/{channel}/", any(handle_channel))
        .with_state(state)
}

/// An ingress failure, converted to a response at the edge.
#[derive(Debug)]
pub enum IngressError {
    /// 400 with a reason.
    BadRequest(String),
    /// 404.
    NotFound(String),
    /// 405.
    MethodNotAllowed,
    /// 408: the body did not arrive in time.
    Timeout(String),
    /// 413.
    TooLarge(usize),
    /// 503, with `Retry-After` in seconds when given (the store is busy or failing).
    Unavailable(String, Option<u32>),
}

/// `Retry-After` (seconds) of a 503 for a store that is busy or failing.
pub const STORE_RETRY_AFTER_SECS: u32 = 1;
/// `Retry-After` (seconds) of a 503 for a broker or channel whose log cannot be opened yet.
pub const NOT_READY_RETRY_AFTER_SECS: u32 = 5;

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        let mut retry_after = None;
        let (status, msg) = match self {
            IngressError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            IngressError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            IngressError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "only POST (and OPTIONS) are allowed".into(),
            ),
            IngressError::Timeout(m) => (StatusCode::REQUEST_TIMEOUT, m),
            IngressError::TooLarge(max) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("event larger than the limit of {max} bytes"),
            ),
            IngressError::Unavailable(m, retry) => {
                retry_after = retry;
                (StatusCode::SERVICE_UNAVAILABLE, m)
            }
        };
        let mut resp = (status, msg + "\n").into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<PublishError> for IngressError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::NotFound(m) => IngressError::NotFound(format!("{m} not found")),
            // Configured, but its log (Kafka, NATS) cannot be reached yet: try again later.
            PublishError::NotReady(m) => {
                IngressError::Unavailable(m, Some(NOT_READY_RETRY_AFTER_SECS))
            }
            PublishError::TtlExpired => IngressError::BadRequest(e.to_string()),
            PublishError::Encode(m) => IngressError::BadRequest(m),
            // Busy (append queue full) or failing (disk full, I/O error): nothing was stored,
            // and the client may send it again shortly.
            PublishError::Store(_) | PublishError::Log(_) => {
                IngressError::Unavailable(e.to_string(), Some(STORE_RETRY_AFTER_SECS))
            }
            PublishError::ShuttingDown => IngressError::Unavailable(e.to_string(), None),
        }
    }
}

/// The route's two path parameters (namespace, then broker or channel), percent-decoded, borrowed
/// from the request (not copied into `String`s as `Path` would).
fn names(params: &RawPathParams) -> (&str, &str) {
    let mut values = params.iter().map(|(_, v)| v);
    (values.next().unwrap_or(""), values.next().unwrap_or(""))
}

/// `POST /channels/{namespace}/{channel}`: a channel's address (its `status.address.url`).
async fn handle_channel(
    State(ingress): State<Ingress>,
    params: RawPathParams,
    req: Request,
) -> Response {
    let (namespace, channel) = names(&params);
    // The request's own headers, moved (axum's `HeaderMap` extractor would copy them).
    let (parts, body) = req.into_parts();
    let mut event_type = None;
    let mut found = None;
    match receive(
        &ingress,
        StreamKind::Channel,
        namespace,
        channel,
        parts.method,
        parts.headers,
        body,
        &mut event_type,
        &mut found,
    )
    .await
    {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(channel) = &found {
                channel.counters.rejected();
            }
            e.into_response()
        }
    }
}

async fn handle(State(ingress): State<Ingress>, params: RawPathParams, req: Request) -> Response {
    let (namespace, broker) = names(&params);
    // The request's own headers, moved (axum's `HeaderMap` extractor would copy them).
    let (parts, body) = req.into_parts();
    let started = std::time::Instant::now();
    let mut event_type = None;
    let mut found = None;
    let resp = match receive(
        &ingress,
        StreamKind::Broker,
        namespace,
        broker,
        parts.method,
        parts.headers,
        body,
        &mut event_type,
        &mut found,
    )
    .await
    {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(broker) = &found {
                broker.counters.rejected();
            }
            e.into_response()
        }
    };
    // Unknown brokers are not labelled, so a client cannot grow the label set.
    if let Some(metrics) = found.as_ref().and_then(|b| b.metrics.as_ref()) {
        metrics.request(
            event_type.as_deref(),
            resp.status().as_u16(),
            started.elapsed(),
        );
    }
    resp
}

#[allow(clippy::too_many_arguments)]
async fn receive(
    ingress: &Ingress,
    kind: StreamKind,
    namespace: &str,
    broker: &str,
    method: Method,
    headers: HeaderMap,
    body: Body,
    event_type: &mut Option<String>,
    found: &mut Option<Arc<BrokerRuntime>>,
) -> Result<Response, IngressError> {
    if method == Method::OPTIONS {
        let mut resp = StatusCode::OK.into_response();
        let h = resp.headers_mut();
        h.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
        h.insert("webhook-allowed-origin", HeaderValue::from_static("*"));
        h.insert("webhook-allowed-rate", HeaderValue::from_static("*"));
        return Ok(resp);
    }
    if method != Method::POST {
        return Err(IngressError::MethodNotAllowed);
    }
    let stream = ingress.service.stream(kind, namespace, broker)?;
    *found = Some(stream.clone());
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > ingress.max_size) {
        return Err(IngressError::TooLarge(ingress.max_size));
    }
    let bytes = to_bytes(body, ingress.max_size)
        .await
        .map_err(|e| body_error(&e, ingress.max_size))?;
    let event = codec::decode_record(&headers, bytes).map_err(|e| IngressError::BadRequest(e.0))?;
    *event_type = event
        .attributes()
        .get("type")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string);
    let append_started = std::time::Instant::now();
    let published = BrokerService::publish_to(&stream, event).await;
    if published.is_ok()
        && let Some(metrics) = &stream.metrics
    {
        metrics.appended(append_started.elapsed());
    }
    published?;
    let mut resp = StatusCode::ACCEPTED.into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    Ok(resp)
}

/// Why reading a request body failed: over the size limit (413), too slow (408), or broken
/// framing such as malformed chunked encoding or a connection closed early (400).
fn body_error(e: &axum::Error, max_size: usize) -> IngressError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return IngressError::TooLarge(max_size);
        }
        if let Some(t) = c.downcast_ref::<BodyTimeout>() {
            return IngressError::Timeout(t.to_string());
        }
        cause = c.source();
    }
    IngressError::BadRequest(format!("reading the request body failed: {e}"))
}
