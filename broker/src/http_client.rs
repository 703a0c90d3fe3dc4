//! The delivery engine's HTTP client: hyper's pooled client over rustls (HTTP/1.1, and HTTP/2
//! where ALPN offers it), one deadline per request, and redirects followed as reqwest and Go's
//! `net/http` (Knative's dispatcher) follow them. A process with `HTTP_PROXY`, `HTTPS_PROXY` or
//! `ALL_PROXY` set delivers through reqwest instead, which honours them (and `NO_PROXY`).

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use url::Url;

use crate::tls::TlsError;

/// Most redirects followed for one request (reqwest's and Go's limit).
const MAX_REDIRECTS: usize = 10;
/// Idle connections kept per host.
const MAX_IDLE_PER_HOST: usize = 256;
/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle time before TCP keepalive probes, and between them.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
/// How long sent data may stay unacknowledged before the connection is given up (Linux).
#[cfg(target_os = "linux")]
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The answer to a request: its status, headers and (the first `cap` bytes of) its body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// The body read, or why reading it failed (the status and headers stand).
    pub(crate) body: Result<Vec<u8>, String>,
}

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The deadline passed before the answer's head came.
    TimedOut,
    /// The request failed (connect, TLS, I/O, too many redirects): the error and its causes.
    Failed(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// How much of an answer's body to keep, by status: `(cap, whole)`: at most `cap` bytes; with
/// `whole` a longer body is an error, otherwise it is cut there (the rest is never read).
pub(crate) type BodyCap<'a> = &'a (dyn Fn(StatusCode) -> (usize, bool) + Sync);

type HyperClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled HTTP client for deliveries.
#[derive(Clone, Debug)]
pub(crate) enum HttpClient {
    /// hyper's pooled client (the default).
    Hyper(Box<HyperClient>),
    /// reqwest: for a process whose environment names a proxy.
    Reqwest(reqwest::Client),
}

#[derive(Debug)]
struct TooManyRedirects(usize);

impl std::fmt::Display for TooManyRedirects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "too many redirects (more than {})", self.0)
    }
}

impl std::error::Error for TooManyRedirects {}

/// Whether the environment names a proxy for outgoing requests (reqwest reads the same names).
fn proxy_in_env() -> bool {
    [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

impl HttpClient {
    /// A client trusting what `tls` trusts.
    pub(crate) fn new(mut tls: rustls::ClientConfig) -> Result<HttpClient, TlsError> {
        if proxy_in_env() {
            return reqwest::Client::builder()
                .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
                .pool_idle_timeout(IDLE_TIMEOUT)
                .tcp_nodelay(true)
                .tls_backend_preconfigured(tls)
                .build()
                .map(HttpClient::Reqwest)
                .map_err(|e| TlsError(format!("building the HTTP client: {e}")));
        }
        // The connector offers HTTP/2 and HTTP/1.1 through ALPN itself (and insists on it).
        tls.alpn_protocols.clear();
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        // reqwest's defaults, kept: a subscriber that vanished is noticed (keepalive probes,
        // unacknowledged data given up after 30 s) instead of waiting out a long attempt
        // timeout or the kernel's retransmissions on a pooled connection.
        http.set_keepalive(Some(TCP_KEEPALIVE));
        http.set_keepalive_interval(Some(TCP_KEEPALIVE));
        http.set_keepalive_retries(Some(3));
        #[cfg(target_os = "linux")]
        http.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Ok(HttpClient::Hyper(Box::new(client)))
    }

    /// POSTs `body` with the headers `headers()` makes to `url`, following redirects, and reads
    /// the answer's body as `cap` says, all within `timeout`.
    pub(crate) async fn post(
        &self,
        url: &Url,
        mut headers: impl FnMut() -> HeaderMap,
        body: Bytes,
        timeout: Duration,
        cap: BodyCap<'_>,
    ) -> Result<Answer, SendError> {
        let deadline = Instant::now() + timeout;
        match self {
            HttpClient::Hyper(client) => {
                post_hyper(client, url, &mut headers, body, deadline, cap).await
            }
            HttpClient::Reqwest(client) => {
                let sent = client
                    .post(url.clone())
                    .timeout(timeout)
                    .headers(headers())
                    .body(body)
                    .send()
                    .await;
                let resp = match sent {
                    Ok(r) => r,
                    Err(e) if e.is_timeout() => return Err(SendError::TimedOut),
                    Err(e) => return Err(SendError::Failed(Box::new(e))),
                };
                let status = resp.status();
                let headers = resp.headers().clone();
                let (cap, whole) = cap(status);
                let body = read_reqwest(resp, cap, whole).await;
                Ok(Answer {
                    status,
                    headers,
                    body,
                })
            }
        }
    }
}

async fn post_hyper(
    client: &HyperClient,
    url: &Url,
    mut headers: impl FnMut() -> HeaderMap,
    body: Bytes,
    deadline: Instant,
    cap: BodyCap<'_>,
) -> Result<Answer, SendError> {
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| SendError::Failed(e);
    let mut target = std::borrow::Cow::Borrowed(url);
    let mut method = Method::POST;
    let mut body = Some(body);
    let mut from: Option<String> = None;
    for hop in 0..=MAX_REDIRECTS {
        // A stream the server refused (`REFUSED_STREAM`: it did no work on it) is sent again,
        // as Go's HTTP/2 transport (Knative's dispatcher) does: at once the first time, then
        // after 1, 2, 4... seconds, within the deadline. It is no failed delivery attempt and
        // spends none of the subscriber's retries.
        let mut refused = 0;
        let resp = loop {
            let mut req = http::Request::new(Full::new(body.clone().unwrap_or_default()));
            *req.method_mut() = method.clone();
            // Parsed for each send (moved into the request; sent again only when refused).
            *req.uri_mut() = target
                .as_str()
                .parse::<Uri>()
                .map_err(|e| failed(Box::new(e)))?;
            let mut h = headers();
            if body.is_none() {
                // Redirected as a GET: what described the body goes with it (as reqwest does).
                for name in [
                    header::CONTENT_TYPE,
                    header::CONTENT_LENGTH,
                    header::CONTENT_ENCODING,
                ] {
                    h.remove(name);
                }
            }
            if let Some(v) = from.as_deref().and_then(|f| HeaderValue::from_str(f).ok()) {
                h.insert(header::REFERER, v);
            }
            *req.headers_mut() = h;
            match tokio::time::timeout_at(deadline, client.request(req)).await {
                Err(_) => return Err(SendError::TimedOut),
                Ok(Err(e)) if refused < REFUSED_STREAM_RETRIES && refused_stream(&e) => {
                    if refused > 0 {
                        let wait = Duration::from_secs(1 << (refused - 1));
                        if Instant::now() + wait >= deadline {
                            return Err(SendError::TimedOut);
                        }
                        tokio::time::sleep(wait).await;
                    }
                    refused += 1;
                    tracing::debug!(url = %target, refused, "HTTP/2 stream refused: sending the request again");
                }
                Ok(Err(e)) => return Err(failed(Box::new(e))),
                Ok(Ok(r)) => break r,
            }
        };
        let status = resp.status();
        if status.is_redirection()
            && let Some(next) = redirect_target(&target, status, resp.headers())
        {
            if hop == MAX_REDIRECTS {
                return Err(failed(Box::new(TooManyRedirects(MAX_REDIRECTS))));
            }
            if matches!(status.as_u16(), 301..=303) && method != Method::HEAD {
                method = Method::GET;
                body = None;
            }
            // Go's client and reqwest name the page it was sent from (not from https to http).
            from = referer(&target, &next);
            target = std::borrow::Cow::Owned(next);
            continue;
        }
        let (head, incoming) = resp.into_parts();
        let (cap, whole) = cap(status);
        let body = match tokio::time::timeout_at(deadline, read_hyper(incoming, cap, whole)).await {
            Ok(b) => b,
            Err(_) => Err("reading response: timed out".to_string()),
        };
        return Ok(Answer {
            status,
            headers: head.headers,
            body,
        });
    }
    Err(failed(Box::new(TooManyRedirects(MAX_REDIRECTS))))
}

/// How many times a request whose HTTP/2 stream the server refused is sent again (Go's
/// HTTP/2 transport: up to 6).
const REFUSED_STREAM_RETRIES: u32 = 6;

/// Whether the error is the server's `RST_STREAM` with `REFUSED_STREAM`.
fn refused_stream(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(h2) = c.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM) && h2.is_remote();
        }
        cause = c.source();
    }
    false
}

/// Where a redirect answer sends the request: its `Location` resolved against `from`, for the
/// statuses followed (301, 302, 303, 307, 308) and an http(s) target.
fn redirect_target(from: &Url, status: StatusCode, headers: &HeaderMap) -> Option<Url> {
    if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = headers.get(header::LOCATION)?.to_str().ok()?;
    let next = from.join(location).ok()?;
    matches!(next.scheme(), "http" | "https").then_some(next)
}

/// The `Referer` of a redirected request: the URL it was redirected from without user info and
/// fragment, none when going from https to http.
fn referer(previous: &Url, next: &Url) -> Option<String> {
    if previous.scheme() == "https" && next.scheme() == "http" {
        return None;
    }
    let mut r = previous.clone();
    let _ = r.set_username("");
    let _ = r.set_password(None);
    r.set_fragment(None);
    Some(r.to_string())
}

/// Reads at most `cap` bytes of a body; with `whole`, a longer body is an error.
async fn read_hyper(
    mut body: hyper::body::Incoming,
    cap: usize,
    whole: bool,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading response: {e}"))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if !append_capped(&mut out, &chunk, cap, whole)? {
            break;
        }
    }
    Ok(out)
}

/// Reads at most `cap` bytes of a reqwest body; with `whole`, a longer body is an error.
async fn read_reqwest(
    mut resp: reqwest::Response,
    cap: usize,
    whole: bool,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading response: {e}"))?
    {
        if !append_capped(&mut out, &chunk, cap, whole)? {
            break;
        }
    }
    Ok(out)
}

/// Appends `chunk` to `out` up to `cap` bytes; false once the cap is reached (stop reading).
fn append_capped(out: &mut Vec<u8>, chunk: &[u8], cap: usize, whole: bool) -> Result<bool, String> {
    if out.len() + chunk.len() > cap {
        if whole {
            return Err("response body too large".into());
        }
        out.extend_from_slice(&chunk[..cap - out.len()]);
        return Ok(false);
    }
    out.extend_from_slice(chunk);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    fn location(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_str(v).expect("value"));
        h
    }

    #[test]
    fn a_relative_location_is_resolved_against_the_request() {
        let next = redirect_target(
            &url("http://sink:8080/a/b"),
            StatusCode::TEMPORARY_REDIRECT,
            &location("../c?x=1"),
        );
        assert_eq!(next, Some(url("http://sink:8080/c?x=1")));
    }

    #[test]
    fn only_redirect_statuses_with_an_http_location_are_followed() {
        let from = url("http://sink/");
        assert_eq!(
            redirect_target(&from, StatusCode::NOT_MODIFIED, &location("/x")),
            None
        );
        assert_eq!(
            redirect_target(&from, StatusCode::FOUND, &location("ftp://x/")),
            None
        );
        assert_eq!(
            redirect_target(&from, StatusCode::FOUND, &HeaderMap::new()),
            None
        );
    }

    #[test]
    fn the_referer_drops_credentials_and_is_not_sent_from_https_to_http() {
        let from = url("https://user:secret@sink/p#frag");
        assert_eq!(
            referer(&from, &url("https://other/")).as_deref(),
            Some("https://sink/p")
        );
        assert_eq!(referer(&from, &url("http://other/")), None);
    }

    #[test]
    fn a_body_is_cut_at_the_cap_or_refused_when_it_must_be_whole() {
        let mut out = Vec::new();
        assert_eq!(append_capped(&mut out, b"abcdef", 4, false), Ok(false));
        assert_eq!(out, b"abcd");
        let mut out = Vec::new();
        assert!(append_capped(&mut out, b"abcdef", 4, true).is_err());
    }
}
