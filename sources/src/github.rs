//! GitHubSource: evmesh serves the webhook endpoint, verifies GitHub's HMAC signature, and
//! publishes each delivery as the CloudEvent Knative's GitHub adapter emits.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use evmesh_broker::record::{DataKind, EventRecord};
use evmesh_config::{
    GITHUB_EVENT_TYPE_PREFIX, GITHUB_EVENT_TYPES, GitHubSourceSpec, MeshConfig, SecretConfig,
    SourceConfig, SourceSpec, secret_value,
};
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use url::Url;

use crate::cloudevents_attrs::{apply_overrides, base_attributes};
use crate::github_api::{GitHubApi, HookOptions};
use crate::kind::{BuildCx, Built, NotRunning, SourceKind, SourceModule, Webhooks, digest};
use crate::{
    BoxFuture, CeAttributes, EventSink, SinkErrorKind, Source, SourceContext, SourceError,
    SourceStatus,
};
use evmesh_config::registry::{AGE, KindInfo, READY_COL, REASON_COL, SINK_COL};

/// The kind.
const KIND: &str = "GitHubSource";

/// Checkpoint key prefix of the webhook ids (`status.webhookIDKey`) the runner keeps across
/// restarts, so a restarted evmesh updates its webhook instead of registering another.
const HOOK_KEY: &str = "src~github-hook/";

/// The route the webhook endpoints are served under (axum path syntax).
pub const WEBHOOK_ROUTE: &str = "/webhooks/github/{namespace}/{name}";

/// Largest webhook payload accepted: GitHub caps deliveries at 25 MB.
pub const MAX_PAYLOAD_BYTES: usize = 25 * 1024 * 1024;

/// The webhook URL of GitHubSource `namespace/name` under `base` (`http://host:port`).
///
/// ```
/// let base: url::Url = "https://events.example.com".parse().unwrap();
/// let url = evmesh_sources::webhook_url(&base, "demo", "gh");
/// assert_eq!(url.as_str(), "https://events.example.com/webhooks/github/demo/gh");
/// ```
pub fn webhook_url(base: &Url, namespace: &str, name: &str) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("/webhooks/github/{namespace}/{name}"));
    url
}

/// Told the webhook id whenever it changes (`Some` after a registration, `None` after the
/// removal), so a runtime can persist it across restarts.
pub type HookObserver = Arc<dyn Fn(Option<&str>) + Send + Sync>;

/// The GitHubSources served now, by `(namespace, name)`; the runtime adds and removes them.
pub type WebhookHooks = Arc<RwLock<HashMap<(String, String), Arc<GitHubSource>>>>;

/// The router serving [`WEBHOOK_ROUTE`] for every source in `hooks` (POST only).
pub fn webhook_router(hooks: WebhookHooks) -> Router {
    Router::new()
        .route(WEBHOOK_ROUTE, post(handle))
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
        .with_state(hooks)
}

async fn handle(
    State(hooks): State<WebhookHooks>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = hooks
        .read()
        .ok()
        .and_then(|h| h.get(&(namespace.clone(), name.clone())).cloned());
    answer(source, &namespace, &name, &headers, body).await
}

/// Serves one delivery to `source` (404 when there is none).
async fn answer(
    source: Option<Arc<GitHubSource>>,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    match source {
        Some(s) => s.receive(headers, body).await.into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no GitHubSource {namespace}/{name}"),
        )
            .into_response(),
    }
}

/// The runner's router: [`WEBHOOK_ROUTE`] for the GitHubSources among a runner's [`Webhooks`].
fn runner_router(webhooks: Webhooks) -> Router {
    async fn handle_runner(
        State(hooks): State<Webhooks>,
        Path((namespace, name)): Path<(String, String)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let source = hooks.get::<GitHubSource>(KIND, &namespace, &name);
        answer(source, &namespace, &name, &headers, body).await
    }
    Router::new()
        .route(WEBHOOK_ROUTE, post(handle_runner))
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
        .with_state(webhooks)
}

/// The answer to one webhook delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookReply {
    /// HTTP status.
    pub status: StatusCode,
    /// Plain-text body.
    pub body: String,
}

impl WebhookReply {
    fn new(status: StatusCode, body: impl Into<String>) -> Self {
        WebhookReply {
            status,
            body: body.into(),
        }
    }
}

impl IntoResponse for WebhookReply {
    fn into_response(self) -> Response {
        (self.status, self.body).into_response()
    }
}

#[derive(Default)]
struct GhState {
    sink: Option<Arc<dyn EventSink>>,
    sink_uri: Option<String>,
    hook_id: Option<String>,
    /// The webhook was registered or updated by this run.
    configured: bool,
    webhook_error: Option<String>,
    forwarded: u64,
    rejected: u64,
    ignored: u64,
}

/// A GitHubSource: its webhook endpoint's logic and, with an `accessToken`, the webhook's
/// registration on GitHub.
pub struct GitHubSource {
    namespace: String,
    name: String,
    spec: GitHubSourceSpec,
    secret_token: Vec<u8>,
    access_token: Option<Vec<u8>>,
    webhook_url: Url,
    extensions: BTreeMap<String, String>,
    api: Option<GitHubApi>,
    observer: Option<HookObserver>,
    state: Mutex<GhState>,
}

impl std::fmt::Debug for GitHubSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens.
        f.debug_struct("GitHubSource")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("ownerAndRepository", &self.spec.owner_and_repository)
            .field("webhook_url", &self.webhook_url.as_str())
            .finish()
    }
}

type HmacSha256 = Hmac<sha2::Sha256>;
type HmacSha1 = Hmac<sha1::Sha1>;

/// Checks GitHub's signature of `body` in constant time: `X-Hub-Signature-256: sha256=<hex>`
/// when present, else the older `X-Hub-Signature: sha1=<hex>`.
pub fn verify_signature(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    if let Some(sig) = header("x-hub-signature-256") {
        let hex_sig = sig
            .strip_prefix("sha256=")
            .ok_or("X-Hub-Signature-256 must be sha256=<hex>")?;
        let expected = hex::decode(hex_sig).map_err(|_| "X-Hub-Signature-256 is not hex")?;
        let mut mac = HmacSha256::new_from_slice(secret).map_err(|e| e.to_string())?;
        mac.update(body);
        return mac
            .verify_slice(&expected)
            .map_err(|_| "HMAC verification failed (X-Hub-Signature-256)".to_string());
    }
    if let Some(sig) = header("x-hub-signature") {
        let hex_sig = sig
            .strip_prefix("sha1=")
            .ok_or("X-Hub-Signature must be sha1=<hex>")?;
        let expected = hex::decode(hex_sig).map_err(|_| "X-Hub-Signature is not hex")?;
        let mut mac = HmacSha1::new_from_slice(secret).map_err(|e| e.to_string())?;
        mac.update(body);
        return mac
            .verify_slice(&expected)
            .map_err(|_| "HMAC verification failed (X-Hub-Signature)".to_string());
    }
    Err("missing X-Hub-Signature-256 (or X-Hub-Signature) header".into())
}

/// How Knative reads one extension from the payload.
#[derive(Clone, Copy)]
enum Ty {
    /// A string; `""` when absent (a Go struct's zero value).
    Str,
    /// An integer; `0` when absent.
    Int,
    /// A boolean; `false` when absent.
    Bool,
    /// A string left out when absent (a Go pointer).
    OptStr,
}

/// How Knative computes `subject`.
#[derive(Clone, Copy)]
enum Subject {
    /// An integer field, formatted.
    Int(&'static str),
    /// A string field.
    Str(&'static str),
    /// The last path segment of a URL field.
    LastPath(&'static str),
    /// `pages[].page_name` joined with `,`.
    Pages,
}

const OWNER: (&str, &str, Ty) = ("owner", "/repository/owner/login", Ty::Str);
const REPO: (&str, &str, Ty) = ("repository", "/repository/name", Ty::Str);
const SENDER: (&str, &str, Ty) = ("sender", "/sender/login", Ty::Str);
const ACTION: (&str, &str, Ty) = ("action", "/action", Ty::Str);
const INSTALLATION: (&str, &str, Ty) = ("installation", "/installation/id", Ty::Int);
const ORG_OWNER: (&str, &str, Ty) = ("owner", "/organization/login", Ty::Str);

type Ext = (&'static str, &'static str, Ty);

/// Subject and extensions per event, as `pkg/common/events.go` of eventing-github computes them.
fn mapping(event: &str) -> Option<(Subject, Vec<Ext>)> {
    use Subject::*;
    let repo3 = || vec![OWNER, REPO, SENDER];
    let repo4 = || vec![OWNER, REPO, SENDER, ACTION];
    Some(match event {
        "check_run" => (Int("/check_run/id"), repo4()),
        "check_suite" => (Int("/check_suite/id"), repo4()),
        "commit_comment" => (LastPath("/comment/html_url"), repo4()),
        "create" | "delete" => (
            Str("/ref_type"),
            vec![OWNER, REPO, SENDER, ("ref", "/ref", Ty::Str)],
        ),
        "deployment" | "deployment_status" => (Int("/deployment/id"), repo3()),
        "fork" => (Int("/forkee/id"), repo3()),
        "gollum" => (Pages, repo3()),
        "installation"
        | "integration_installation"
        | "installation_repositories"
        | "integration_installation_repositories" => {
            (Int("/installation/id"), vec![INSTALLATION, SENDER, ACTION])
        }
        "issue_comment" => (LastPath("/comment/html_url"), repo4()),
        "issues" => (
            Int("/issue/number"),
            vec![
                OWNER,
                REPO,
                SENDER,
                ACTION,
                ("label", "/label/name", Ty::OptStr),
                ("assignee", "/assignee/login", Ty::OptStr),
            ],
        ),
        "label" => (
            Str("/label/name"),
            vec![
                OWNER,
                REPO,
                SENDER,
                ACTION,
                ("label", "/label/name", Ty::Str),
            ],
        ),
        "member" => (Int("/member/id"), repo4()),
        "membership" => (
            Int("/member/id"),
            vec![ORG_OWNER, ("scope", "/scope", Ty::Str), SENDER, ACTION],
        ),
        "milestone" => (Int("/milestone/number"), repo4()),
        "organization" | "org_block" => (Str("/action"), vec![ORG_OWNER, SENDER, ACTION]),
        "page_build" => (Int("/id"), repo3()),
        "ping" => (Int("/hook_id"), repo3()),
        "project_card" | "project_column" | "project" => (Str("/action"), repo4()),
        "public" | "team_add" => (Int("/repository/id"), repo3()),
        "pull_request" => (
            Int("/pull_request/number"),
            vec![
                OWNER,
                REPO,
                INSTALLATION,
                SENDER,
                ACTION,
                ("number", "/number", Ty::Int),
                ("label", "/label/name", Ty::Str),
                ("assignee", "/assignee/login", Ty::OptStr),
            ],
        ),
        "pull_request_review_comment" => (
            Int("/comment/id"),
            vec![OWNER, REPO, INSTALLATION, SENDER, ACTION],
        ),
        "pull_request_review" => (
            Int("/review/id"),
            vec![
                OWNER,
                REPO,
                INSTALLATION,
                SENDER,
                ACTION,
                ("review", "/review/state", Ty::Str),
            ],
        ),
        "push" => (
            LastPath("/compare"),
            vec![
                OWNER,
                REPO,
                INSTALLATION,
                SENDER,
                ("pusher", "/pusher/name", Ty::Str),
                ("ref", "/ref", Ty::Str),
                ("created", "/created", Ty::Bool),
                ("deleted", "/deleted", Ty::Bool),
                ("forced", "/forced", Ty::Bool),
            ],
        ),
        "release" => (
            Str("/release/tag_name"),
            vec![
                OWNER,
                REPO,
                INSTALLATION,
                SENDER,
                ACTION,
                ("release", "/release/name", Ty::Str),
            ],
        ),
        "repository" => (Int("/repository/id"), repo4()),
        "repository_vulnerability_alert" => (Int("/alert/id"), vec![ACTION]),
        "security_advisory" => (Str("/security_advisory/ghsa_id"), vec![ACTION]),
        "status" => (
            Str("/sha"),
            vec![
                OWNER,
                REPO,
                SENDER,
                ("state", "/state", Ty::Str),
                ("name", "/name", Ty::Str),
                ("context", "/context", Ty::Str),
            ],
        ),
        "team" => (Int("/team/id"), vec![SENDER, ACTION]),
        "watch" => (Int("/repository/id"), repo4()),
        _ => return None,
    })
}

fn int_at(payload: &Value, ptr: &str) -> i64 {
    payload.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn str_at<'a>(payload: &'a Value, ptr: &str) -> &'a str {
    payload.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// `subject` and extensions of a GitHub delivery of `event`, as Knative computes them.
pub fn subject_and_extensions(event: &str, payload: &Value) -> (String, Vec<(String, Value)>) {
    let Some((subject, exts)) = mapping(event) else {
        return (String::new(), Vec::new());
    };
    let subject = match subject {
        Subject::Int(p) => int_at(payload, p).to_string(),
        Subject::Str(p) => str_at(payload, p).to_string(),
        Subject::LastPath(p) => {
            let url = str_at(payload, p);
            url.rfind('/')
                .map(|i| url[i + 1..].to_string())
                .unwrap_or_default()
        }
        Subject::Pages => payload
            .get("pages")
            .and_then(Value::as_array)
            .map(|pages| {
                pages
                    .iter()
                    .map(|p| str_at(p, "/page_name"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
    };
    let mut out = Vec::new();
    for (name, ptr, ty) in exts {
        let v = match ty {
            Ty::Str => json!(str_at(payload, ptr)),
            Ty::Int => json!(int_at(payload, ptr)),
            Ty::Bool => json!(
                payload
                    .pointer(ptr)
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            ),
            Ty::OptStr => match payload.pointer(ptr).and_then(Value::as_str) {
                Some(s) => json!(s),
                None => continue,
            },
        };
        out.push((name.to_string(), v));
    }
    (subject.trim().to_string(), out)
}

impl GitHubSource {
    /// A GitHubSource from its validated configuration, its tokens read from `secrets`, served
    /// at `webhook_url`.
    pub fn new(
        config: &SourceConfig,
        secrets: &[SecretConfig],
        webhook_url: Url,
    ) -> Result<GitHubSource, SourceError> {
        let SourceSpec::GitHub(spec) = &config.spec else {
            return Err(SourceError(format!(
                "{} is not a GitHubSource",
                config.kind()
            )));
        };
        let ns = &config.metadata.namespace;
        let secret_token = secret_value(secrets, ns, &spec.secret_token)
            .map_err(|e| SourceError(format!("spec.secretToken: {e}")))?
            .to_vec();
        let access_token = match &spec.access_token {
            Some(a) => Some(
                secret_value(secrets, ns, a)
                    .map_err(|e| SourceError(format!("spec.accessToken: {e}")))?
                    .to_vec(),
            ),
            None => None,
        };
        let api = match &access_token {
            Some(_) => Some(GitHubApi::new(spec.github_api_url.as_deref()).map_err(SourceError)?),
            None => None,
        };
        Ok(GitHubSource {
            namespace: ns.clone(),
            name: config.metadata.name.clone(),
            spec: spec.clone(),
            secret_token,
            access_token,
            webhook_url,
            extensions: config.extensions(),
            api,
            observer: None,
            state: Mutex::new(GhState::default()),
        })
    }

    /// The same source with the id of a webhook it registered before (`status.webhookIDKey`),
    /// so it updates that webhook instead of registering another.
    pub fn with_hook_id(self, hook_id: Option<String>) -> GitHubSource {
        self.update(|s| s.hook_id = hook_id);
        self
    }

    /// The same source telling `observer` the webhook id whenever it changes.
    pub fn with_hook_observer(mut self, observer: HookObserver) -> GitHubSource {
        self.observer = Some(observer);
        self
    }

    /// The id of the webhook registered on GitHub, if any.
    pub fn hook_id(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.hook_id.clone())
    }

    /// Its webhook URL (`status.address.url`).
    pub fn webhook_url(&self) -> &Url {
        &self.webhook_url
    }

    fn update<T>(&self, f: impl FnOnce(&mut GhState) -> T) -> Option<T> {
        self.state.lock().ok().map(|mut s| f(&mut s))
    }

    fn reject(&self, status: StatusCode, msg: impl Into<String>) -> WebhookReply {
        let msg = msg.into();
        tracing::info!(namespace = %self.namespace, name = %self.name, %status, reason = %msg, "GitHub webhook delivery refused");
        self.update(|s| s.rejected += 1);
        WebhookReply::new(status, msg)
    }

    /// Handles one delivery: checks the signature, the event type and the headers, then
    /// publishes the event and answers 202 once the sink accepted it durably. Nothing is
    /// published when any check fails.
    pub async fn receive(&self, headers: &HeaderMap, body: Bytes) -> WebhookReply {
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let Some(event_type) = header("x-github-event") else {
            return self.reject(StatusCode::BAD_REQUEST, "missing X-GitHub-Event Header");
        };
        if let Err(e) = verify_signature(&self.secret_token, headers, &body) {
            return self.reject(StatusCode::BAD_REQUEST, e);
        }
        if !GITHUB_EVENT_TYPES.contains(&event_type) {
            return self.reject(
                StatusCode::NOT_FOUND,
                format!("event {event_type:?} is not a GitHub event GitHubSource handles"),
            );
        }
        if !self.spec.event_types.iter().any(|t| t == event_type) {
            self.update(|s| s.ignored += 1);
            return WebhookReply::new(
                StatusCode::OK,
                format!("event {event_type:?} is not in spec.eventTypes: not forwarded"),
            );
        }
        let Some(delivery) = header("x-github-delivery") else {
            return self.reject(
                StatusCode::BAD_REQUEST,
                "\"X-GitHub-Delivery\" header is not set",
            );
        };
        let payload: Value = match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return self.reject(StatusCode::BAD_REQUEST, "the payload is not a JSON object");
            }
            Err(e) => {
                return self.reject(
                    StatusCode::BAD_REQUEST,
                    format!("the payload is not JSON: {e}"),
                );
            }
        };
        let event = match self.event_for(event_type, delivery, &payload, body) {
            Ok(e) => e,
            Err(e) => return self.reject(StatusCode::BAD_REQUEST, e),
        };
        let sink = self.state.lock().ok().and_then(|s| s.sink.clone());
        let Some(sink) = sink else {
            return self.reject(StatusCode::SERVICE_UNAVAILABLE, "the source is not running");
        };
        match sink.publish(event).await {
            Ok(()) => {
                self.update(|s| s.forwarded += 1);
                WebhookReply::new(StatusCode::ACCEPTED, "accepted")
            }
            Err(e) => {
                let status = match e.kind {
                    SinkErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                    SinkErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                    SinkErrorKind::Rejected => StatusCode::BAD_REQUEST,
                };
                self.reject(status, e.message)
            }
        }
    }

    /// The CloudEvent of one delivery: type `dev.knative.source.github.<event>`, source
    /// `https://github.com/<ownerAndRepository>`, id = `X-GitHub-Delivery`, Knative's subject
    /// and extensions, and the payload bytes as data (`application/json`).
    pub fn event_for(
        &self,
        event_type: &str,
        delivery: &str,
        payload: &Value,
        body: Bytes,
    ) -> Result<EventRecord, String> {
        let mut a = base_attributes(
            delivery,
            &self.spec.event_source(),
            &format!("{GITHUB_EVENT_TYPE_PREFIX}.{event_type}"),
            chrono::Utc::now(),
        );
        let (subject, exts) = subject_and_extensions(event_type, payload);
        if !subject.is_empty() {
            a.insert("subject".into(), json!(subject));
        }
        a.insert("datacontenttype".into(), json!("application/json"));
        for (k, v) in exts {
            a.insert(k, v);
        }
        apply_overrides(&mut a, &self.extensions);
        EventRecord::new(a, Some((DataKind::Json, body)), Vec::new()).map_err(|e| e.to_string())
    }

    fn hook_options(&self) -> HookOptions {
        let mut url = self.webhook_url.clone();
        if let Some(secure) = self.spec.secure {
            let _ = url.set_scheme(if secure { "https" } else { "http" });
        }
        let (owner, repo) = self.spec.owner_repo();
        HookOptions {
            owner: owner.to_string(),
            repo: repo.to_string(),
            url: url.to_string(),
            events: self.spec.event_types.clone(),
            secret: String::from_utf8_lossy(&self.secret_token).into_owned(),
        }
    }

    /// Registers (or updates) the webhook on GitHub, retrying with backoff until it succeeds
    /// or `shutdown` fires.
    async fn register(&self, shutdown: &crate::CancellationToken) {
        let (Some(api), Some(token)) = (&self.api, &self.access_token) else {
            return;
        };
        let token = String::from_utf8_lossy(token).into_owned();
        let options = self.hook_options();
        let mut backoff = Duration::from_secs(1);
        loop {
            let existing = self.hook_id();
            let result = match &existing {
                Some(id) => match api.edit_hook(&token, &options, id).await {
                    Ok(true) => Ok(id.clone()),
                    // The hook is gone on GitHub: register a new one.
                    Ok(false) => api.create_hook(&token, &options).await,
                    Err(e) => Err(e),
                },
                None => api.create_hook(&token, &options).await,
            };
            match result {
                Ok(id) => {
                    tracing::info!(namespace = %self.namespace, name = %self.name, hook = %id, "GitHub webhook configured");
                    if let Some(o) = &self.observer {
                        o(Some(&id));
                    }
                    self.update(|s| {
                        s.hook_id = Some(id);
                        s.configured = true;
                        s.webhook_error = None;
                    });
                    return;
                }
                Err(e) => {
                    tracing::warn!(namespace = %self.namespace, name = %self.name, error = %e, "GitHub webhook not configured; retrying in {backoff:?}");
                    self.update(|s| s.webhook_error = Some(e));
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(300));
        }
    }
}

impl Source for GitHubSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn run(&self, ctx: SourceContext) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.update(|s| {
                s.sink = Some(ctx.sink.clone());
                s.sink_uri = ctx.sink_uri.clone();
            });
            self.register(&ctx.shutdown).await;
            ctx.shutdown.cancelled().await;
            self.update(|s| {
                s.sink = None;
                s.configured = false;
            });
        })
    }

    fn status(&self) -> SourceStatus {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (ready, reason, message) = if s.sink.is_none() {
            (
                false,
                Some("NotRunning".to_string()),
                Some("the source is not running".to_string()),
            )
        } else if self.access_token.is_some() && !s.configured {
            (
                false,
                Some("WebhookNotConfigured".to_string()),
                Some(
                    s.webhook_error
                        .clone()
                        .unwrap_or_else(|| "registering the webhook on GitHub".into()),
                ),
            )
        } else {
            (true, None, None)
        };
        let mut extra = serde_json::Map::new();
        extra.insert("address".into(), json!({"url": self.webhook_url.as_str()}));
        if let Some(id) = &s.hook_id {
            extra.insert("webhookIDKey".into(), json!(id));
        }
        extra.insert(
            "evmesh".into(),
            json!({"forwarded": s.forwarded, "rejected": s.rejected, "ignored": s.ignored,
                   "webhookError": s.webhook_error}),
        );
        SourceStatus {
            ready,
            reason,
            message,
            sink_uri: s.sink_uri.clone(),
            ce_attributes: self
                .spec
                .event_types
                .iter()
                .map(|t| CeAttributes {
                    type_: format!("{GITHUB_EVENT_TYPE_PREFIX}.{t}"),
                    source: self.spec.event_source(),
                })
                .collect(),
            extra,
        }
    }

    fn finalize(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let (Some(api), Some(token), Some(id)) =
                (&self.api, &self.access_token, self.hook_id())
            else {
                return Ok(());
            };
            let token = String::from_utf8_lossy(token).into_owned();
            let (owner, repo) = self.spec.owner_repo();
            api.delete_hook(&token, owner, repo, &id).await?;
            tracing::info!(namespace = %self.namespace, name = %self.name, hook = %id, "GitHub webhook removed");
            self.update(|s| s.hook_id = None);
            if let Some(o) = &self.observer {
                o(None);
            }
            Ok(())
        })
    }
}

/// The GitHubSource kind's runtime hooks: its webhook URL (under the listen URL unless
/// [`evmesh_config::PUBLIC_URL_ANNOTATION`] says otherwise), its webhook id kept across restarts
/// (from the instance it replaces, else from the runner's store), and its webhook route.
struct GitHubKind;

impl SourceKind for GitHubKind {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Its Secrets' values: a rotated token restarts it.
    fn fingerprint(&self, source: &SourceConfig, mesh: &MeshConfig) -> u64 {
        let SourceSpec::GitHub(g) = &source.spec else {
            return 0;
        };
        let ns = &source.metadata.namespace;
        let values: Vec<Option<&[u8]>> = [Some(&g.secret_token), g.access_token.as_ref()]
            .into_iter()
            .flatten()
            .map(|v| secret_value(&mesh.secrets, ns, v).ok())
            .collect();
        digest(&values)
    }

    fn build(&self, s: &SourceConfig, cx: &BuildCx<'_>) -> Result<Built, NotRunning> {
        // Validated as an absolute URL; the listen URL when absent.
        let base = s
            .metadata
            .annotations
            .get(evmesh_config::PUBLIC_URL_ANNOTATION)
            .and_then(|u| Url::parse(u).ok())
            .unwrap_or_else(|| cx.base.clone());
        let url = webhook_url(&base, &s.metadata.namespace, &s.metadata.name);
        let g = GitHubSource::new(s, &cx.mesh.secrets, url).map_err(|e| {
            let reason = if e.0.starts_with("spec.accessToken") {
                "AccessTokenNotFound"
            } else {
                "SecretTokenNotFound"
            };
            NotRunning::new(reason, e.0)
        })?;
        let key = format!("{HOOK_KEY}{}/{}", s.metadata.namespace, s.metadata.name);
        let previous = cx
            .previous
            .and_then(|p| p.webhook.clone())
            .and_then(|w| w.downcast::<GitHubSource>().ok());
        let hook_id = previous.and_then(|p| p.hook_id()).or_else(|| {
            let saved = cx.store.checkpoints(&key).ok()?;
            saved
                .into_iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| String::from_utf8(v).ok())
        });
        let store = cx.store.clone();
        let observer: HookObserver = Arc::new(move |id: Option<&str>| {
            let result = match id {
                Some(id) => store.put_checkpoint(&key, id.as_bytes().to_vec()),
                None => store.delete_checkpoint(&key),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "storing the GitHub webhook id failed");
            }
            let store = store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.flush().await {
                    tracing::warn!(error = %e, "storing the GitHub webhook id failed");
                }
            });
        });
        let g = Arc::new(g.with_hook_id(hook_id).with_hook_observer(observer));
        Ok(Built {
            source: g.clone(),
            webhook: Some(g),
        })
    }

    fn routes(&self, webhooks: Webhooks) -> Option<Router> {
        Some(runner_router(webhooks))
    }
}

/// The API versions it is served in.
static VERSIONS: &[KindInfo] = &[KindInfo {
    group: "sources.knative.dev",
    version: "v1alpha1",
    kind: "GitHubSource",
    plural: "githubsources",
    singular: "githubsource",
    short_names: &[],
    categories: &["all", "knative", "eventing", "sources"],
    printer_columns: &[READY_COL, REASON_COL, SINK_COL, AGE],
    spec_schema: evmesh_config::GITHUB_SOURCE_SPEC,
    description: "GitHubSource is the Schema for the githubsources API: it turns GitHub webhook deliveries into CloudEvents sent to its sink.",
}];

/// `sources.knative.dev/v1` GitHubSource, both halves (its validation and its runtime),
/// registered once.
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_sources::github::GITHUB_SOURCE.group_kind().1, "GitHubSource");
/// ```
pub static GITHUB_SOURCE: SourceModule = SourceModule::new(&GitHubKind, VERSIONS);
