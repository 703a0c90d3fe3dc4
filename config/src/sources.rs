//! Source kinds (PingSource, GitHubSource) and the `v1` Secrets they read: typed specs, the cron
//! schedule of a PingSource, and their validation with file:line:field errors.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod kafka;

pub use kafka::KAFKA_SOURCE_SPEC;
pub use kafka::{
    KAFKA_EVENT_TYPE, KAFKA_KEY_TYPE_LABEL, KafkaKeyType, KafkaNet, KafkaSasl, KafkaSourceConfig,
    KafkaSourceSpec, KafkaTls, SOURCES_V1BETA1,
};

use crate::error::Location;
use crate::loader::Document;
use crate::model::{Destination, ObjectMeta};
use crate::validate::{Ctx, Known, check_destination, check_ref_target, typed};

pub(crate) mod apiserver;

/// `sources.knative.dev/v1`.
pub const SOURCES_V1: &str = "sources.knative.dev/v1";
/// `sources.knative.dev/v1beta2` (PingSource's previous version, still accepted).
pub const SOURCES_V1BETA2: &str = "sources.knative.dev/v1beta2";
/// `sources.knative.dev/v1alpha1` (GitHubSource).
pub const SOURCES_V1ALPHA1: &str = "sources.knative.dev/v1alpha1";

/// The CloudEvent type of PingSource events.
pub const PING_EVENT_TYPE: &str = "dev.knative.sources.ping";
/// The prefix of GitHubSource event types (`dev.knative.source.github.<event>`).
pub const GITHUB_EVENT_TYPE_PREFIX: &str = "dev.knative.source.github";

/// GitHubSource annotation: the public base URL GitHub reaches evmesh at (e.g.
/// `https://events.example.com`); the webhook URL registered and shown is
/// `<base>/webhooks/github/<namespace>/<name>`. Without it, evmesh's own listen URL is used.
pub const PUBLIC_URL_ANNOTATION: &str = "evmesh.dev/public-url";

/// `v1` Secret annotation: keys whose values come from evmesh's environment, as
/// `key=ENV_VAR` pairs separated by commas (e.g. `secretToken=GITHUB_WEBHOOK_SECRET`). A key read
/// from the environment replaces the same key of `data`/`stringData`; a variable that is not set
/// leaves its key out (a source reading it is not ready). The values are never logged or shown.
pub const FROM_ENV_ANNOTATION: &str = "evmesh.dev/from-env";

/// The GitHub webhook events Knative's GitHubSource adapter parses (`pkg/common/events.go`).
pub const GITHUB_EVENT_TYPES: &[&str] = &[
    "check_run",
    "check_suite",
    "commit_comment",
    "create",
    "delete",
    "deployment",
    "deployment_status",
    "fork",
    "gollum",
    "installation",
    "installation_repositories",
    "integration_installation",
    "integration_installation_repositories",
    "issue_comment",
    "issues",
    "label",
    "member",
    "membership",
    "milestone",
    "organization",
    "org_block",
    "page_build",
    "ping",
    "project_card",
    "project_column",
    "project",
    "public",
    "pull_request",
    "pull_request_review_comment",
    "pull_request_review",
    "push",
    "release",
    "repository",
    "repository_vulnerability_alert",
    "security_advisory",
    "status",
    "team_add",
    "team",
    "watch",
];

/// CloudEvent attributes an override must not replace (Knative rejects them).
const RESERVED_ATTRIBUTES: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];

/// `ceOverrides` of a source (`duckv1.CloudEventOverrides`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudEventOverrides {
    /// Extension attributes added to every event the source emits.
    #[serde(default)]
    pub extensions: BTreeMap<String, String>,
}

/// `spec` of a PingSource (`sources.knative.dev/v1`, also `v1beta2`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PingSourceSpec {
    /// Cron schedule: 5 fields, an optional leading seconds field, or a descriptor (`@hourly`);
    /// `* * * * *` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in; the system's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Media type of `data` / `dataBase64` (the events' `datacontenttype`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The event data as text (exclusive with `dataBase64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The event data, base64 encoded (exclusive with `data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    /// Where events go.
    #[serde(default)]
    pub sink: Destination,
    /// Extensions added to every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CloudEventOverrides>,
}

/// `secretKeyRef`: a key of a `v1` Secret in the source's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretKeySelector {
    /// The Secret's name.
    #[serde(default)]
    pub name: String,
    /// The key inside the Secret.
    #[serde(default)]
    pub key: String,
    /// Kubernetes' `optional` flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A value read from a Secret (`{secretKeyRef: {name, key}}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretValueFromSource {
    /// The Secret key to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
}

/// `spec` of a GitHubSource (`sources.knative.dev/v1alpha1`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubSourceSpec {
    /// Kubernetes service account (accepted, not used by evmesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// `owner/repository`, or `owner` for an organization-wide webhook.
    #[serde(default)]
    pub owner_and_repository: String,
    /// GitHub webhook event names to forward (`push`, `pull_request`, ...).
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Token evmesh registers the webhook with through the GitHub REST API (optional in evmesh:
    /// without it the webhook is configured on GitHub by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<SecretValueFromSource>,
    /// The webhook secret deliveries are signed with.
    #[serde(default)]
    pub secret_token: SecretValueFromSource,
    /// GitHub REST API base URL (GitHub Enterprise), `https://api.github.com` when absent.
    #[serde(
        default,
        rename = "githubAPIURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub github_api_url: Option<String>,
    /// Registers the webhook URL with `https` (true) or `http` (false); as served when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    /// Where events go.
    #[serde(default)]
    pub sink: Destination,
    /// Extensions added to every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CloudEventOverrides>,
}

impl GitHubSourceSpec {
    /// `(owner, repository)`; the repository is empty for an organization.
    pub fn owner_repo(&self) -> (&str, &str) {
        match self.owner_and_repository.split_once('/') {
            Some((o, r)) => (o, r),
            None => (self.owner_and_repository.as_str(), ""),
        }
    }

    /// The CloudEvent `source` of its events: `https://github.com/<ownerAndRepository>`.
    pub fn event_source(&self) -> String {
        format!("https://github.com/{}", self.owner_and_repository)
    }
}

/// Bytes from a Secret; `Debug` never shows them.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(pub Vec<u8>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

/// A validated `v1` Secret: its keys with the decoded values (`stringData` over `data`).
#[derive(Clone, Debug)]
pub struct SecretConfig {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Key → value.
    pub values: BTreeMap<String, SecretBytes>,
    /// Where its YAML is.
    pub location: Option<Location>,
}

/// A validated PingSource: the spec, its parsed schedule and its decoded data.
#[derive(Clone, Debug)]
pub struct PingSourceConfig {
    /// The spec as written.
    pub spec: PingSourceSpec,
    /// The parsed schedule.
    pub schedule: CronSchedule,
    /// The event data: `data` as bytes or `dataBase64` decoded.
    pub data: Option<Vec<u8>>,
}

/// The spec of a validated source, by kind.
#[derive(Clone, Debug)]
pub enum SourceSpec {
    /// A PingSource.
    Ping(PingSourceConfig),
    /// A GitHubSource.
    GitHub(GitHubSourceSpec),
    /// An ApiServerSource.
    ApiServer(apiserver::ApiServerSourceSpec),
    /// A KafkaSource.
    Kafka(Box<KafkaSourceConfig>),
}

/// A validated source resource.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// `apiVersion` as written (e.g. `sources.knative.dev/v1beta2`).
    pub api_version: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// The spec.
    pub spec: SourceSpec,
    /// Where its YAML is.
    pub location: Option<Location>,
}

impl SourceConfig {
    /// `PingSource` or `GitHubSource`.
    pub fn kind(&self) -> &'static str {
        match self.spec {
            SourceSpec::Ping(_) => "PingSource",
            SourceSpec::GitHub(_) => "GitHubSource",
            SourceSpec::ApiServer(_) => "ApiServerSource",
            SourceSpec::Kafka(_) => "KafkaSource",
        }
    }
    /// The sink.
    pub fn sink(&self) -> &Destination {
        match &self.spec {
            SourceSpec::Ping(p) => &p.spec.sink,
            SourceSpec::GitHub(g) => &g.sink,
            SourceSpec::ApiServer(a) => apiserver::sink(a),
            SourceSpec::Kafka(k) => &k.spec.sink,
        }
    }
    /// The `ceOverrides.extensions`.
    pub fn extensions(&self) -> BTreeMap<String, String> {
        let o = match &self.spec {
            SourceSpec::Ping(p) => &p.spec.ce_overrides,
            SourceSpec::GitHub(g) => &g.ce_overrides,
            SourceSpec::ApiServer(a) => &a.ce_overrides,
            SourceSpec::Kafka(k) => &k.spec.ce_overrides,
        };
        o.as_ref().map(|o| o.extensions.clone()).unwrap_or_default()
    }
}

/// The time zone a schedule is read in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleZone {
    /// The system's time zone (Knative's default).
    Local,
    /// An IANA time zone.
    Named(chrono_tz::Tz),
}

/// A PingSource schedule as Knative reads it (robfig/cron: an optional seconds field, then
/// minute hour day-of-month month day-of-week with Sunday = 0, descriptors; day-of-month and
/// day-of-week are OR-ed when both are restricted), evaluated with the `cron` crate.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use evmesh_config::CronSchedule;
/// let s = CronSchedule::parse("0 9 * * 1-5", Some("Europe/Madrid")).unwrap();
/// // Friday 2026-01-02 09:00 in Madrid is 08:00 UTC.
/// let after = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
/// assert_eq!(s.next_after(after), Some(Utc.with_ymd_and_hms(2026, 1, 2, 8, 0, 0).unwrap()));
/// ```
#[derive(Clone, Debug)]
pub struct CronSchedule {
    text: String,
    zone: ScheduleZone,
    /// One schedule, or two whose union is the schedule (day-of-month OR day-of-week).
    parts: Vec<cron::Schedule>,
}

/// Why a schedule does not parse, and which field is at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleError {
    /// `schedule` or `timezone`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn schedule_err(message: impl Into<String>) -> ScheduleError {
    ScheduleError {
        field: "schedule",
        message: message.into(),
    }
}

fn parse_zone(name: &str, field: &'static str) -> Result<ScheduleZone, ScheduleError> {
    name.parse::<chrono_tz::Tz>()
        .map(ScheduleZone::Named)
        .map_err(|_| ScheduleError {
            field,
            message: format!("provided bad location {name}: unknown time zone {name}"),
        })
}

/// Whether a robfig field is "star" (`*` or `?`, step 1 at most): then day-of-month and
/// day-of-week are AND-ed.
fn is_star(field: &str) -> bool {
    field.split(',').any(|item| {
        let (low, step) = match item.split_once('/') {
            Some((l, s)) => (l, Some(s)),
            None => (item, None),
        };
        (low == "*" || low == "?") && step.is_none_or(|s| s.parse::<u32>().is_ok_and(|s| s <= 1))
    })
}

/// robfig day-of-week (0-6, Sunday = 0) → the `cron` crate's (1-7, Sunday = 1); names and
/// steps are kept.
fn translate_dow(field: &str) -> Result<String, ScheduleError> {
    let shift = |v: &str| -> Result<String, ScheduleError> {
        match v.parse::<u32>() {
            Ok(n) if n <= 6 => Ok((n + 1).to_string()),
            Ok(n) => Err(schedule_err(format!(
                "end of range ({n}) above maximum (6): day of week is 0-6 (Sunday = 0)"
            ))),
            Err(_) => Ok(v.to_string()),
        }
    };
    let mut items = Vec::new();
    for item in field.split(',') {
        let (low, step) = match item.split_once('/') {
            Some((l, s)) => (l, Some(s)),
            None => (item, None),
        };
        let low = match low.split_once('-') {
            Some((a, b)) => format!("{}-{}", shift(a)?, shift(b)?),
            None => shift(low)?,
        };
        items.push(match step {
            Some(s) => format!("{low}/{s}"),
            None => low,
        });
    }
    Ok(items.join(","))
}

impl CronSchedule {
    /// Parses a schedule (`CRON_TZ=<zone> ` / `TZ=<zone> ` prefixes accepted, as robfig does)
    /// with an optional IANA time zone.
    pub fn parse(schedule: &str, timezone: Option<&str>) -> Result<CronSchedule, ScheduleError> {
        let mut text = schedule.trim();
        let mut zone = match timezone.filter(|t| !t.is_empty()) {
            Some(tz) => Some(parse_zone(tz, "timezone")?),
            None => None,
        };
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = text.strip_prefix(prefix) {
                if zone.is_some() {
                    return Err(schedule_err(
                        "a CRON_TZ= prefix cannot be combined with spec.timezone",
                    ));
                }
                let (tz, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                zone = Some(parse_zone(tz, "schedule")?);
                text = rest.trim();
                break;
            }
        }
        let fields: Vec<String> = if let Some(desc) = text.strip_prefix('@') {
            let expanded = match desc {
                "yearly" | "annually" => "0 0 0 1 1 *",
                "monthly" => "0 0 0 1 * *",
                "weekly" => "0 0 0 * * 0",
                "daily" | "midnight" => "0 0 0 * * *",
                "hourly" => "0 0 * * * *",
                d if d.starts_with("every") => {
                    return Err(schedule_err("unsupported descriptor @every"));
                }
                d => return Err(schedule_err(format!("unrecognized descriptor: @{d}"))),
            };
            expanded.split(' ').map(str::to_string).collect()
        } else {
            let f: Vec<&str> = text.split_whitespace().collect();
            match f.len() {
                5 => std::iter::once("0").chain(f).map(str::to_string).collect(),
                6 => f.into_iter().map(str::to_string).collect(),
                n => {
                    return Err(schedule_err(format!(
                        "expected 5 to 6 fields, found {n}: [{text}]"
                    )));
                }
            }
        };
        let dow = translate_dow(&fields[5])?;
        let [sec, min, hour, dom, mon] = [0, 1, 2, 3, 4].map(|i| fields[i].as_str());
        let mk = |dom: &str, dow: &str| -> Result<cron::Schedule, ScheduleError> {
            let expr = format!("{sec} {min} {hour} {dom} {mon} {dow}");
            expr.parse::<cron::Schedule>()
                .map_err(|e| schedule_err(format!("{text:?}: {e}")))
        };
        let parts = if is_star(dom) || is_star(&fields[5]) {
            vec![mk(dom, &dow)?]
        } else {
            vec![mk(dom, "*")?, mk("*", &dow)?]
        };
        Ok(CronSchedule {
            text: schedule.to_string(),
            zone: zone.unwrap_or(ScheduleZone::Local),
            parts,
        })
    }

    /// The schedule as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The time zone it is read in.
    pub fn zone(&self) -> ScheduleZone {
        self.zone
    }

    /// The first tick strictly after `after`, if any.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.zone {
            ScheduleZone::Named(tz) => self.next_in(&tz.from_utc_datetime(&after.naive_utc())),
            ScheduleZone::Local => {
                self.next_in(&chrono::Local.from_utc_datetime(&after.naive_utc()))
            }
        }
    }

    fn next_in<Z: TimeZone>(&self, after: &DateTime<Z>) -> Option<DateTime<Utc>> {
        self.parts
            .iter()
            .filter_map(|p| p.after(after).next())
            .map(|t| t.with_timezone(&Utc))
            .min()
    }
}

fn check_overrides(ctx: &mut Ctx, doc: &Document, o: &Option<CloudEventOverrides>) {
    let Some(o) = o else { return };
    for key in o.extensions.keys() {
        let field = format!("spec.ceOverrides.extensions.{key}");
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            ctx.error(
                doc,
                &field,
                "extension names must be non-empty and only letters and digits",
            );
        } else if RESERVED_ATTRIBUTES.contains(&key.to_ascii_lowercase().as_str()) {
            ctx.error(
                doc,
                &field,
                format!("{key:?} is a CloudEvents attribute a source sets itself; it cannot be overridden"),
            );
        }
    }
}

/// Whether the content type is exactly `application/json` (Knative validates JSON data only then).
fn is_application_json(ct: Option<&str>) -> bool {
    ct == Some("application/json")
}

fn check_json_object(ctx: &mut Ctx, doc: &Document, field: &str, bytes: &[u8]) {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(_)) => {}
        Ok(_) => ctx.error(
            doc,
            field,
            "with contentType application/json the data must be a JSON object",
        ),
        Err(e) => ctx.error(doc, field, format!("invalid JSON: {e}")),
    }
}

fn check_ping(ctx: &mut Ctx, doc: &Document, spec: PingSourceSpec) -> Option<PingSourceConfig> {
    let before = ctx.errors.len();
    let text = spec
        .schedule
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "* * * * *".to_string());
    let schedule = match CronSchedule::parse(&text, spec.timezone.as_deref()) {
        Ok(s) => Some(s),
        Err(e) => {
            ctx.error(doc, &format!("spec.{}", e.field), e.message);
            None
        }
    };
    check_destination(ctx, doc, "spec.sink", &spec.sink);
    check_overrides(ctx, doc, &spec.ce_overrides);
    let json = is_application_json(spec.content_type.as_deref());
    let data = match (&spec.data, &spec.data_base64) {
        (Some(d), Some(b)) if !d.is_empty() && !b.is_empty() => {
            ctx.error(
                doc,
                "spec.dataBase64",
                "expected exactly one, got both: spec.data, spec.dataBase64",
            );
            None
        }
        (_, Some(b)) if !b.is_empty() => {
            match base64::engine::general_purpose::STANDARD.decode(b.trim()) {
                Ok(bytes) => {
                    if json {
                        check_json_object(ctx, doc, "spec.dataBase64", &bytes);
                    }
                    Some(bytes)
                }
                Err(e) => {
                    ctx.error(doc, "spec.dataBase64", format!("invalid base64: {e}"));
                    None
                }
            }
        }
        (Some(d), _) if !d.is_empty() => {
            if json {
                check_json_object(ctx, doc, "spec.data", d.as_bytes());
            }
            Some(d.clone().into_bytes())
        }
        _ => None,
    };
    let schedule = schedule?;
    (ctx.errors.len() == before).then_some(PingSourceConfig {
        spec: PingSourceSpec {
            schedule: Some(text),
            ..spec
        },
        schedule,
        data,
    })
}

fn check_secret_ref(ctx: &mut Ctx, doc: &Document, field: &str, v: &SecretValueFromSource) {
    match &v.secret_key_ref {
        None => ctx.error(doc, field, "secretKeyRef is required"),
        Some(r) => {
            if r.name.is_empty() {
                ctx.error(doc, &format!("{field}.secretKeyRef.name"), "is required");
            }
            if r.key.is_empty() {
                ctx.error(doc, &format!("{field}.secretKeyRef.key"), "is required");
            }
        }
    }
}

fn check_github(ctx: &mut Ctx, doc: &Document, spec: &GitHubSourceSpec) -> bool {
    let before = ctx.errors.len();
    let oar = &spec.owner_and_repository;
    let parts: Vec<&str> = oar.split('/').collect();
    if oar.is_empty() {
        ctx.error(
            doc,
            "spec.ownerAndRepository",
            "is required (owner/repository or owner)",
        );
    } else if parts.len() > 2 || parts[0].is_empty() || parts.get(1).is_some_and(|r| r.is_empty()) {
        ctx.error(
            doc,
            "spec.ownerAndRepository",
            format!("expected 'owner/repository' or 'owner' but found {oar:?}"),
        );
    }
    if spec.event_types.is_empty() {
        ctx.error(
            doc,
            "spec.eventTypes",
            "at least one event type is required",
        );
    }
    for (i, t) in spec.event_types.iter().enumerate() {
        if !GITHUB_EVENT_TYPES.contains(&t.as_str()) {
            ctx.error(
                doc,
                &format!("spec.eventTypes[{i}]"),
                format!("{t:?} is not a GitHub webhook event GitHubSource supports"),
            );
        }
    }
    check_secret_ref(ctx, doc, "spec.secretToken", &spec.secret_token);
    if let Some(a) = &spec.access_token {
        check_secret_ref(ctx, doc, "spec.accessToken", a);
    }
    if let Some(u) = &spec.github_api_url {
        match url::Url::parse(u) {
            Ok(u) if u.has_host() && matches!(u.scheme(), "http" | "https") => {}
            _ => ctx.error(
                doc,
                "spec.githubAPIURL",
                format!("{u:?} must be an absolute http(s) URL"),
            ),
        }
    }
    check_destination(ctx, doc, "spec.sink", &spec.sink);
    check_overrides(ctx, doc, &spec.ce_overrides);
    ctx.errors.len() == before
}

/// Validates a `sources.knative.dev` PingSource, GitHubSource or ApiServerSource document.
pub(crate) fn check_source(
    ctx: &mut Ctx,
    doc: &Document,
    api_version: &str,
    kind: &str,
    metadata: ObjectMeta,
    spec: &Value,
) -> Option<SourceConfig> {
    let spec = match kind {
        "PingSource" => {
            if api_version != SOURCES_V1 && api_version != SOURCES_V1BETA2 {
                ctx.error(
                    doc,
                    "apiVersion",
                    format!("{api_version:?} is not supported, use {SOURCES_V1:?} (or {SOURCES_V1BETA2:?})"),
                );
                return None;
            }
            let s = typed::<PingSourceSpec>(ctx, doc, "spec", spec)?;
            SourceSpec::Ping(check_ping(ctx, doc, s)?)
        }
        "ApiServerSource" => {
            return apiserver::check_apiserver_source(ctx, doc, api_version, metadata, spec);
        }
        "KafkaSource" => {
            if api_version != SOURCES_V1 && api_version != SOURCES_V1BETA1 {
                ctx.error(
                    doc,
                    "apiVersion",
                    format!("{api_version:?} is not supported, use {SOURCES_V1BETA1:?} (or {SOURCES_V1:?})"),
                );
                return None;
            }
            let s = typed::<KafkaSourceSpec>(ctx, doc, "spec", spec)?;
            SourceSpec::Kafka(Box::new(kafka::check_kafka(ctx, doc, &metadata, s)?))
        }
        _ => {
            if api_version != SOURCES_V1ALPHA1 {
                ctx.error(
                    doc,
                    "apiVersion",
                    format!("{api_version:?} is not supported, use {SOURCES_V1ALPHA1:?}"),
                );
                return None;
            }
            let s = typed::<GitHubSourceSpec>(ctx, doc, "spec", spec)?;
            if s.service_account_name.is_some() {
                ctx.warn(
                    doc,
                    "spec.serviceAccountName",
                    "is not used by evmesh (the webhook is served by evmesh itself)",
                );
            }
            if let Some(u) = metadata.annotations.get(PUBLIC_URL_ANNOTATION) {
                match url::Url::parse(u) {
                    Ok(p) if p.has_host() && matches!(p.scheme(), "http" | "https") => {}
                    _ => {
                        ctx.error(
                            doc,
                            "metadata.annotations",
                            format!(
                                "{PUBLIC_URL_ANNOTATION} {u:?} must be an absolute http(s) URL"
                            ),
                        );
                        return None;
                    }
                }
            }
            if !check_github(ctx, doc, &s) {
                return None;
            }
            SourceSpec::GitHub(s)
        }
    };
    Some(SourceConfig {
        api_version: api_version.to_string(),
        metadata,
        spec,
        location: Some(doc.locate("")),
    })
}

/// After every document is read: sinks that name brokers, and Secrets, that do not exist yet
/// are warnings (the source is not ready until they do).
pub(crate) fn check_source_refs(
    ctx: &mut Ctx,
    doc: &Document,
    source: &SourceConfig,
    known: &Known,
    secrets: &HashSet<(String, String)>,
) {
    let ns = &source.metadata.namespace;
    check_ref_target(ctx, doc, "spec.sink.ref", source.sink(), ns, known);
    if let SourceSpec::GitHub(g) = &source.spec {
        let refs = [
            ("spec.secretToken", Some(&g.secret_token)),
            ("spec.accessToken", g.access_token.as_ref()),
        ];
        for (field, v) in refs {
            if let Some(r) = v.and_then(|v| v.secret_key_ref.as_ref())
                && !secrets.contains(&(ns.clone(), r.name.clone()))
            {
                ctx.warn(
                    doc,
                    &format!("{field}.secretKeyRef.name"),
                    format!(
                        "secret {:?} does not exist in namespace {ns:?} (yet): not ready until it does",
                        r.name
                    ),
                );
            }
        }
    }
}

/// Validates a `v1` Secret document (`data` base64, `stringData` plain; `stringData` wins).
pub(crate) fn check_secret(
    ctx: &mut Ctx,
    doc: &Document,
    api_version: &str,
    metadata: ObjectMeta,
    obj: &serde_json::Map<String, Value>,
) -> Option<SecretConfig> {
    let before = ctx.errors.len();
    if api_version != "v1" {
        ctx.error(
            doc,
            "apiVersion",
            format!("{api_version:?} is not supported for Secret, use \"v1\""),
        );
        return None;
    }
    if obj.get("spec").is_some_and(|s| !s.is_null()) {
        ctx.warn(doc, "spec", "a Secret has no spec; ignored");
    }
    let valid_key = |k: &str| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    };
    let mut values = BTreeMap::new();
    for (section, base64) in [("data", true), ("stringData", false)] {
        match obj.get(section) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let field = format!("{section}.{k}");
                    if !valid_key(k) {
                        ctx.error(
                            doc,
                            &field,
                            "a Secret key must consist of letters, digits, '-', '_' or '.'",
                        );
                        continue;
                    }
                    let Some(text) = v.as_str() else {
                        ctx.error(doc, &field, "must be a string");
                        continue;
                    };
                    let bytes = if base64 {
                        match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
                            Ok(b) => b,
                            Err(e) => {
                                ctx.error(doc, &field, format!("invalid base64: {e}"));
                                continue;
                            }
                        }
                    } else {
                        text.as_bytes().to_vec()
                    };
                    values.insert(k.clone(), SecretBytes(bytes));
                }
            }
            Some(_) => ctx.error(doc, section, "must be a mapping of key to value"),
        }
    }
    if let Some(spec) = metadata.annotations.get(FROM_ENV_ANNOTATION) {
        let field = format!("metadata.annotations.{FROM_ENV_ANNOTATION}");
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, var)) = pair.split_once('=').map(|(k, v)| (k.trim(), v.trim())) else {
                ctx.error(doc, &field, format!("{pair:?} is not key=ENV_VAR"));
                continue;
            };
            if !valid_key(key) || var.is_empty() || var.contains('=') {
                ctx.error(
                    doc,
                    &field,
                    format!(
                        "{pair:?} is not key=ENV_VAR (a key of letters, digits, '-', '_' or '.')"
                    ),
                );
                continue;
            }
            match std::env::var_os(var) {
                Some(v) => {
                    values.insert(key.to_string(), SecretBytes(v.into_encoded_bytes()));
                }
                None => ctx.warn(
                    doc,
                    &field,
                    format!("environment variable {var} is not set: key {key:?} is missing"),
                ),
            }
        }
    }
    (ctx.errors.len() == before).then(|| SecretConfig {
        metadata,
        values,
        location: Some(doc.locate("")),
    })
}

/// The value a `secretKeyRef` names among `secrets`, for a resource in namespace `ns`.
pub fn secret_value<'a>(
    secrets: &'a [SecretConfig],
    ns: &str,
    v: &SecretValueFromSource,
) -> Result<&'a [u8], String> {
    let r = v
        .secret_key_ref
        .as_ref()
        .ok_or_else(|| "no secretKeyRef".to_string())?;
    let s = secrets
        .iter()
        .find(|s| s.metadata.namespace == ns && s.metadata.name == r.name)
        .ok_or_else(|| format!("secret {ns}/{} not found", r.name))?;
    s.values
        .get(&r.key)
        .map(|b| b.0.as_slice())
        .ok_or_else(|| format!("key {:?} not found in secret {ns}/{}", r.key, r.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid time")
    }

    fn next(s: &str, tz: Option<&str>, after: DateTime<Utc>) -> DateTime<Utc> {
        CronSchedule::parse(s, tz)
            .expect("valid schedule")
            .next_after(after)
            .expect("a next tick")
    }

    #[test]
    fn five_fields_tick_on_the_minute() {
        assert_eq!(
            next("*/5 * * * *", Some("UTC"), utc(2026, 3, 4, 10, 7, 30)),
            utc(2026, 3, 4, 10, 10, 0)
        );
    }

    #[test]
    fn six_fields_start_with_seconds() {
        assert_eq!(
            next("10 0/1 * * * ?", Some("UTC"), utc(2026, 3, 4, 10, 7, 30)),
            utc(2026, 3, 4, 10, 8, 10)
        );
        assert_eq!(
            next("* * * * * *", Some("UTC"), utc(2026, 3, 4, 10, 7, 30)),
            utc(2026, 3, 4, 10, 7, 31)
        );
    }

    #[test]
    fn sunday_is_zero_as_in_robfig_cron() {
        // 2026-03-04 is a Wednesday; the next Sunday is the 8th.
        let t = next("0 12 * * 0", Some("UTC"), utc(2026, 3, 4, 0, 0, 0));
        assert_eq!(t, utc(2026, 3, 8, 12, 0, 0));
        assert_eq!(t.weekday(), chrono::Weekday::Sun);
        let t = next("0 12 * * 1-5/2", Some("UTC"), utc(2026, 3, 4, 13, 0, 0));
        assert_eq!(t.weekday(), chrono::Weekday::Fri);
        assert_eq!(
            next("0 12 * * SAT", Some("UTC"), utc(2026, 3, 4, 0, 0, 0)).weekday(),
            chrono::Weekday::Sat
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_restricted() {
        // The 1st of the month, or any Monday: after Wed 2026-03-04 comes Mon 2026-03-09.
        assert_eq!(
            next("0 0 1 * 1", Some("UTC"), utc(2026, 3, 4, 0, 0, 0)),
            utc(2026, 3, 9, 0, 0, 0)
        );
        // After Mon 2026-03-30 comes Wed 2026-04-01 (the 1st).
        assert_eq!(
            next("0 0 1 * 1", Some("UTC"), utc(2026, 3, 30, 0, 0, 0)),
            utc(2026, 4, 1, 0, 0, 0)
        );
    }

    #[test]
    fn descriptors_expand_as_robfig() {
        let after = utc(2026, 3, 4, 10, 7, 30);
        assert_eq!(
            next("@hourly", Some("UTC"), after),
            utc(2026, 3, 4, 11, 0, 0)
        );
        assert_eq!(next("@daily", Some("UTC"), after), utc(2026, 3, 5, 0, 0, 0));
        assert_eq!(
            next("@midnight", Some("UTC"), after),
            utc(2026, 3, 5, 0, 0, 0)
        );
        assert_eq!(
            next("@weekly", Some("UTC"), after),
            utc(2026, 3, 8, 0, 0, 0)
        );
        assert_eq!(
            next("@monthly", Some("UTC"), after),
            utc(2026, 4, 1, 0, 0, 0)
        );
        assert_eq!(
            next("@yearly", Some("UTC"), after),
            utc(2027, 1, 1, 0, 0, 0)
        );
        assert_eq!(
            next("@annually", Some("UTC"), after),
            utc(2027, 1, 1, 0, 0, 0)
        );
    }

    #[test]
    fn every_descriptor_is_rejected_as_knative_does() {
        let e = CronSchedule::parse("@every 1m", None).expect_err("@every");
        assert_eq!(e.field, "schedule");
        assert!(e.message.contains("@every"), "{e}");
    }

    #[test]
    fn timezone_shifts_the_ticks() {
        // 09:00 in Madrid (CET, UTC+1 in January) is 08:00 UTC.
        assert_eq!(
            next(
                "0 9 * * *",
                Some("Europe/Madrid"),
                utc(2026, 1, 10, 0, 0, 0)
            ),
            utc(2026, 1, 10, 8, 0, 0)
        );
        assert_eq!(
            next(
                "CRON_TZ=Asia/Tokyo 0 9 * * *",
                None,
                utc(2026, 1, 10, 0, 0, 0)
            ),
            utc(2026, 1, 11, 0, 0, 0)
        );
    }

    #[test]
    fn bad_timezone_names_the_timezone_field() {
        let e = CronSchedule::parse("* * * * *", Some("Mars/Olympus")).expect_err("bad tz");
        assert_eq!(e.field, "timezone");
    }

    #[test]
    fn wrong_field_counts_and_values_are_errors() {
        for bad in [
            "* * * *",
            "* * * * * * *",
            "61 * * * *",
            "* * * * 7",
            "x * * * *",
        ] {
            assert!(CronSchedule::parse(bad, None).is_err(), "{bad}");
        }
    }
}
