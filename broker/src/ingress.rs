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

/// The current time as Knative stamps [`ARRIVAL_EXTENSION`]: RFC 3339 in UTC with `Z`, and as
/// many fraction digits as the nanoseconds need (none, 3, 6 or 9), as chrono's
/// `to_rfc3339_opts(SecondsFormat::AutoSi, true)` writes it.
pub(crate) fn arrival_time_now() -> String {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => rfc3339_utc(d.as_secs(), d.subsec_nanos()),
        Err(_) => chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    }
}

/// `secs` since the Unix epoch and `nanos` as [`arrival_time_now`] writes them; the date and
/// time of day are formatted once per second and thread (a stamp per accepted event).
fn rfc3339_utc(secs: u64, nanos: u32) -> String {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let whole = i64::try_from(secs)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default();
            cached.1 = whole.format("%Y-%m-%dT%H:%M:%S").to_string();
            cached.0 = secs;
        }
        let mut out = String::with_capacity(cached.1.len() + 11);
        out.push_str(&cached.1);
        let (digits, value) = if nanos == 0 {
            (0, 0)
        } else if nanos.is_multiple_of(1_000_000) {
            (3, nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            (6, nanos / 1_000)
        } else {
            (9, nanos)
        };
        if digits > 0 {
            use std::fmt::Write;
            let _ = write!(out, ".{value:0digits$}");
        }
        out.push('Z');
        out
    })
}

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
        &mut None,
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
    let mut stored_at = None;
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
        &mut stored_at,
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
        // An accepted event's request ends where its append did (one clock read fewer).
        let ended = stored_at.unwrap_or_else(std::time::Instant::now);
        metrics.request(
            event_type.as_deref(),
            resp.status().as_u16(),
            ended.saturating_duration_since(started),
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
    stored_at: &mut Option<std::time::Instant>,
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
        let now = std::time::Instant::now();
        metrics.appended(now.saturating_duration_since(append_started));
        *stored_at = Some(now);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arrival_time_is_written_as_chrono_writes_it() {
        let seconds = [
            0,
            59,
            1_764_979_200,
            1_764_979_201,
            1_764_979_200,
            4_102_444_799,
        ];
        let nanos = [
            0,
            1,
            7_000_000,
            123_000_000,
            4_000,
            120_500_000,
            999_999_999,
            1_000,
        ];
        for s in seconds {
            for n in nanos {
                let expected = chrono::DateTime::from_timestamp(s as i64, n)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
                assert_eq!(Some(rfc3339_utc(s, n)), expected, "{s} s {n} ns");
            }
        }
        let now = arrival_time_now();
        assert!(chrono::DateTime::parse_from_rfc3339(&now).is_ok(), "{now}");
    }
}
