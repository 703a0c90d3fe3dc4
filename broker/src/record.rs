//! evmesh's own event record: attributes as received, data as the bytes sent, the passed-through
//! request headers, and a format version byte for the stored form.
//!
//! Stored form (version 2): `[2][u32 LE n][n bytes: attributes JSON object][u32 LE m][m bytes:
//! headers JSON array of [name, value]][kind: 0 none, 1 JSON, 2 text, 3 binary][data bytes]`.
//! The previous form (a serde_json `cloudevents::Event`, starting with `{`) is still read.

use base64::Engine as _;
use bytes::Bytes;
use cloudevents::Event;
use cloudevents::event::{Data, ExtensionValue};
use http::HeaderMap;
use serde_json::Value;

pub use crate::attributes::Attributes;

/// Version byte of the current stored form.
pub const FORMAT_VERSION: u8 = 2;
/// Most bytes of passed-through headers (names plus values) kept with one event.
pub const MAX_PASSTHROUGH_BYTES: usize = 8 * 1024;

/// Why bytes are not an event record.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

/// How an event's data is represented in structured mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    /// JSON text, embedded as sent (`"data": <the bytes>`).
    Json,
    /// UTF-8 text, embedded as a JSON string.
    Text,
    /// Bytes, embedded as `data_base64` (`datacontentencoding: base64` in CloudEvents 0.3).
    Binary,
}

impl DataKind {
    fn byte(self) -> u8 {
        match self {
            DataKind::Json => 1,
            DataKind::Text => 2,
            DataKind::Binary => 3,
        }
    }
}

/// One event as evmesh keeps it. Its attributes read as a [`cloudevents::Event`] through
/// `Deref` (without data; [`EventRecord::data`] is the record's own); [`EventRecord::event`] is
/// the whole event, its data the raw bytes as `Data::Binary`. Filters read the attributes
/// themselves ([`evmesh_filter::EventAttributes`]), so routing and delivery build neither.
#[derive(Clone, Debug)]
pub struct EventRecord {
    attributes: Attributes,
    data: Option<(DataKind, Bytes)>,
    headers: Vec<(String, String)>,
    /// The attributes as a CloudEvent, without data: made the first time it is read (a 0.3
    /// event's at once, as the SDK checks it). Boxed, as `full`: a record is moved from step to
    /// step on the ingress path, and an `Event` held in place would make each move ~10 times
    /// larger.
    view: std::sync::OnceLock<Box<Event>>,
    /// `view` with a copy of the data, made the first time [`EventRecord::event`] is asked
    /// (an in-process subscriber, the Rust API): routing and delivery never copy the data.
    full: std::sync::OnceLock<Box<Event>>,
}

impl std::ops::Deref for EventRecord {
    type Target = Event;
    fn deref(&self) -> &Event {
        self.view
            .get_or_init(|| Box::new(build_view(&self.attributes)))
    }
}

impl evmesh_filter::EventAttributes for EventRecord {
    fn attribute(&self, name: &str) -> Option<evmesh_filter::AttrValue<'_>> {
        use evmesh_filter::AttrValue;
        use std::borrow::Cow;
        if attr_str(&self.attributes, "specversion") != Some("1.0") {
            // 0.3 names some attributes differently (`schemaurl`): as the SDK reads them.
            return (**self).attribute(name);
        }
        let value = self.attributes.get(name)?;
        Some(match (name, value) {
            // As the view holds them (what Knative's Go SDK compares): parsed, then written.
            ("time", Value::String(s)) => match chrono::DateTime::parse_from_rfc3339(s) {
                Ok(t) => AttrValue::Str(Cow::Owned(evmesh_filter::format_time(
                    &t.with_timezone(&chrono::Utc),
                ))),
                Err(_) => AttrValue::Str(Cow::Borrowed(s)),
            },
            ("dataschema", Value::String(s)) => match url::Url::parse(s) {
                Ok(url) => AttrValue::Str(Cow::Owned(url.into())),
                Err(_) => AttrValue::Str(Cow::Borrowed(s)),
            },
            (_, Value::String(s)) => AttrValue::Str(Cow::Borrowed(s)),
            (_, other) => match extension_value(other) {
                ExtensionValue::Integer(i) => AttrValue::Int(i),
                ExtensionValue::Boolean(b) => AttrValue::Bool(b),
                ExtensionValue::String(s) => AttrValue::Str(Cow::Owned(s)),
            },
        })
    }

    fn json_data(&self) -> Option<std::borrow::Cow<'_, Value>> {
        // As the whole event gives it (data as bytes): whatever parses as JSON.
        let (_, bytes) = self.data.as_ref()?;
        serde_json::from_slice(bytes)
            .ok()
            .map(std::borrow::Cow::Owned)
    }
}

/// Whether a media type is JSON (`application/json`, `text/json`, `*/*+json`); parameters ignored.
///
/// ```
/// use evmesh_broker::record::is_json_content_type;
/// assert!(is_json_content_type("application/json; charset=utf-8"));
/// assert!(is_json_content_type("application/vnd.shop.order+json"));
/// assert!(!is_json_content_type("text/plain"));
/// ```
pub fn is_json_content_type(ct: &str) -> bool {
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || media == "text/json" || media.ends_with("+json")
}

fn is_text_content_type(ct: &str) -> bool {
    let lower = ct.to_ascii_lowercase();
    let media = lower.split(';').next().unwrap_or("").trim();
    media.starts_with("text/")
        || media == "application/xml"
        || media.ends_with("+xml")
        || media == "application/x-www-form-urlencoded"
        || lower.contains("charset=")
}

/// The kind of a body received in binary mode: JSON when the content type says JSON (or there is
/// none) and the bytes parse as JSON; text for a textual, non-JSON content type and valid UTF-8;
/// otherwise binary. The bytes themselves are kept as they are whatever the kind.
///
/// ```
/// use evmesh_broker::record::{DataKind, classify_body};
/// assert_eq!(classify_body(None, br#"{"sku":"A1"}"#), DataKind::Json);
/// assert_eq!(classify_body(Some("text/plain"), b"hello"), DataKind::Text);
/// // Not JSON although the content type says so: kept as bytes.
/// assert_eq!(classify_body(Some("application/json"), b"{oops"), DataKind::Binary);
/// ```
pub fn classify_body(content_type: Option<&str>, body: &[u8]) -> DataKind {
    let json_ct = content_type.is_none_or(is_json_content_type);
    if json_ct && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        return DataKind::Json;
    }
    // Invalid JSON under a JSON content type stays bytes: as a JSON string it would read back
    // as JSON text.
    if !json_ct
        && content_type.is_some_and(is_text_content_type)
        && std::str::from_utf8(body).is_ok()
    {
        return DataKind::Text;
    }
    DataKind::Binary
}

/// Whether a request header is passed through to subscribers as Knative passes it: W3C trace
/// context and baggage, `x-request-id`, B3, and `knative-*`. Names are lower case, as
/// [`http::HeaderName`] keeps them.
///
/// ```
/// use evmesh_broker::record::is_passthrough_header;
/// assert!(is_passthrough_header("traceparent"));
/// assert!(is_passthrough_header("x-b3-traceid"));
/// assert!(!is_passthrough_header("authorization"));
/// ```
pub fn is_passthrough_header(name: &str) -> bool {
    matches!(
        name,
        "traceparent" | "tracestate" | "baggage" | "x-request-id" | "b3"
    ) || name.starts_with("x-b3-")
        || name.starts_with("knative-")
}

/// The headers of `headers` that are passed through, bounded to [`MAX_PASSTHROUGH_BYTES`] (headers
/// past the bound are left out).
///
/// ```
/// use evmesh_broker::record::passthrough_headers;
/// let mut headers = http::HeaderMap::new();
/// headers.insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse()?);
/// headers.insert("authorization", "Bearer secret".parse()?);
/// let kept = passthrough_headers(&headers);
/// assert_eq!(kept.len(), 1);
/// assert_eq!(kept[0].0, "traceparent");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn passthrough_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut size = 0;
    for (name, value) in headers {
        if !is_passthrough_header(name.as_str()) {
            continue;
        }
        let Ok(value) = value.to_str() else {
            continue;
        };
        let n = name.as_str().len() + value.len();
        if size + n > MAX_PASSTHROUGH_BYTES {
            tracing::debug!(header = %name, "passed-through headers over {MAX_PASSTHROUGH_BYTES} bytes: header left out");
            continue;
        }
        size += n;
        out.push((name.as_str().to_string(), value.to_string()));
    }
    out
}

fn attr_str<'a>(attributes: &'a Attributes, name: &str) -> Option<&'a str> {
    attributes.get(name).and_then(Value::as_str)
}

fn extension_value(v: &Value) -> ExtensionValue {
    match v {
        Value::Bool(b) => ExtensionValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ExtensionValue::Integer(i),
            None => ExtensionValue::String(n.to_string()),
        },
        Value::String(s) => ExtensionValue::String(s.clone()),
        other => ExtensionValue::String(other.to_string()),
    }
}

/// The CloudEvents 1.0 view of checked attributes, built directly: what the SDK's deserializer
/// makes of them (the same checks, the same error texts), without the copy of the map and the
/// generic visitor it goes through (a fifth of the cost of accepting an event).
fn view_v10(attributes: &Attributes) -> Result<Event, String> {
    use cloudevents::{AttributesWriter, EventBuilder};
    use serde::Deserialize;
    let string = |v: &Value| String::deserialize(v).map_err(|e| e.to_string());
    let required = |name: &str| match attributes.get(name) {
        Some(v) => string(v),
        None => Err(format!("missing field `{name}`")),
    };
    // Through the builder, not `Event::default()`: that one makes an id, reads the host name
    // and the clock for values that are replaced at once.
    let mut view = cloudevents::EventBuilderV10::new()
        .id(required("id")?)
        .source(required("source")?)
        .ty(required("type")?)
        .build()
        .map_err(|e| e.to_string())?;
    for (name, value) in attributes {
        match name {
            "specversion" | "id" | "type" | "source" => {}
            "datacontenttype" => {
                view.set_datacontenttype(Some(string(value)?));
            }
            "subject" => {
                view.set_subject(Some(string(value)?));
            }
            "dataschema" => {
                let url = url::Url::parse(&string(value)?).map_err(|e| e.to_string())?;
                view.set_dataschema(Some(url));
            }
            "time" => {
                let time = chrono::DateTime::parse_from_rfc3339(&string(value)?)
                    .map_err(|e| e.to_string())?;
                view.set_time(Some(time.with_timezone(&chrono::Utc)));
            }
            _ => {
                let v = ExtensionValue::deserialize(value).map_err(|e| e.to_string())?;
                view.set_extension(name, v);
            }
        }
    }
    Ok(view)
}

/// The view as the SDK's deserializer makes it.
fn view_by_sdk(attributes: &Attributes) -> Result<Event, String> {
    serde::Deserialize::deserialize(&Value::Object(attributes.to_map())).map_err(|e| e.to_string())
}

/// Whether [`view_v10`] accepts attributes that have `id`, `source` and `type` (as
/// [`EventRecord::new`] checks first), found without building the view: those three,
/// `datacontenttype` and `subject` strings, `dataschema` an absolute URL, `time` RFC 3339,
/// extensions strings, booleans or integers that fit an `i64`.
fn v10_ok(attributes: &Attributes) -> bool {
    attributes.iter().all(|(name, value)| match (name, value) {
        ("specversion", _) => true,
        ("id" | "source" | "type" | "datacontenttype" | "subject", v) => v.is_string(),
        ("dataschema", Value::String(s)) => url::Url::parse(s).is_ok(),
        ("time", Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        ("dataschema" | "time", _) => false,
        (_, Value::String(_) | Value::Bool(_)) => true,
        (_, Value::Number(n)) => n.is_i64(),
        _ => false,
    })
}

/// Checks attributes as their view needs them: what [`view_v10`] or the SDK says of them. A 1.0
/// event's view is not built here (unless something is wrong, for the error's text); a 0.3
/// event's is, and returned.
fn check_view(specversion: &str, attributes: &Attributes) -> Result<Option<Event>, String> {
    match specversion {
        "1.0" if v10_ok(attributes) => Ok(None),
        "1.0" => view_v10(attributes).map(Some),
        _ => view_by_sdk(attributes).map(Some),
    }
}

/// The view of checked attributes (see [`check_view`]). Cannot fail for them; should it, the
/// view holds `id`, `source` and `type` alone rather than panic.
fn build_view(attributes: &Attributes) -> Event {
    let built = match attr_str(attributes, "specversion") {
        Some("1.0") => view_v10(attributes),
        _ => view_by_sdk(attributes),
    };
    built.unwrap_or_else(|_| {
        use cloudevents::AttributesWriter;
        let mut event = Event::default();
        event.set_id(attr_str(attributes, "id").unwrap_or_default());
        event.set_source(attr_str(attributes, "source").unwrap_or_default());
        event.set_type(attr_str(attributes, "type").unwrap_or_default());
        event
    })
}

/// Appends `value` as JSON behind its length (4 bytes, little-endian); `empty` when it does not
/// serialize.
fn write_sized(out: &mut Vec<u8>, value: &impl serde::Serialize, empty: &[u8]) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.truncate(at + 4);
        out.extend_from_slice(empty);
    }
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

impl EventRecord {
    /// A record from attributes (as received, including `specversion`, without data fields: an
    /// [`Attributes`] or a `serde_json::Map`), data and passed-through headers. Checks the event
    /// as CloudEvents 1.0 or 0.3 requires: `id`, `source` and `type` present and not empty,
    /// attributes well formed.
    ///
    /// # Errors
    /// A [`RecordError`] naming the problem: `specversion` missing or not `1.0`/`0.3`; `id`,
    /// `source` or `type` missing, empty or not a string; an attribute name that is not lower-case
    /// letters and digits; a null attribute; attributes that are not a valid CloudEvent.
    ///
    /// ```
    /// use evmesh_broker::record::{DataKind, EventRecord};
    /// let attributes: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
    ///     r#"{"specversion": "1.0", "id": "1", "source": "/shop", "type": "order.created"}"#,
    /// )?;
    /// let data = bytes::Bytes::from_static(br#"{"sku":"A1"}"#);
    /// let record = EventRecord::new(attributes, Some((DataKind::Json, data)), Vec::new())?;
    /// assert_eq!(record.spec_version(), "1.0");
    ///
    /// // Or as `Attributes` (what `attributes()` returns), which keep the order written too.
    /// let no_id: evmesh_broker::record::Attributes =
    ///     serde_json::from_str(r#"{"specversion": "1.0", "source": "/shop", "type": "t"}"#)?;
    /// let err = EventRecord::new(no_id, None, Vec::new()).unwrap_err();
    /// assert_eq!(err.to_string(), "attribute id is missing");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(
        attributes: impl Into<Attributes>,
        data: Option<(DataKind, Bytes)>,
        headers: Vec<(String, String)>,
    ) -> Result<EventRecord, RecordError> {
        let attributes = attributes.into();
        // One pass over the attributes (no lookups by name); the errors are reported in the
        // order: specversion, id, source, type, then the first bad name or null value.
        let mut found: [Option<&Value>; 4] = [None; 4];
        let mut malformed = None;
        for (name, value) in &attributes {
            match name {
                "specversion" => found[0] = Some(value),
                "id" => found[1] = Some(value),
                "source" => found[2] = Some(value),
                "type" => found[3] = Some(value),
                _ => {}
            }
            if malformed.is_some() {
                continue;
            }
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                malformed = Some(format!(
                    "attribute name {name:?} is invalid (lower-case letters and digits only)"
                ));
            } else if value.is_null() {
                malformed = Some(format!("attribute {name} is null"));
            }
        }
        let specversion = match found[0].and_then(Value::as_str) {
            Some(v @ ("1.0" | "0.3")) => v,
            Some(other) => {
                return Err(RecordError(format!(
                    "specversion {other} is not supported (1.0 and 0.3 are)"
                )));
            }
            None => return Err(RecordError("specversion is missing".into())),
        };
        for (required, value) in ["id", "source", "type"].into_iter().zip(&found[1..]) {
            match value {
                Some(Value::String(s)) if !s.is_empty() => {}
                Some(Value::String(_)) => {
                    return Err(RecordError(format!("attribute {required} is empty")));
                }
                Some(_) => {
                    return Err(RecordError(format!("attribute {required} is not a string")));
                }
                None => return Err(RecordError(format!("attribute {required} is missing"))),
            }
        }
        if let Some(e) = malformed {
            return Err(RecordError(e));
        }
        // 0.3 through the SDK (its attributes cannot be built from outside it).
        let view = std::sync::OnceLock::new();
        if let Some(built) = check_view(specversion, &attributes)
            .map_err(|e| RecordError(format!("invalid CloudEvent: {e}")))?
        {
            let _ = view.set(Box::new(built));
        }
        Ok(EventRecord {
            attributes,
            data,
            headers,
            view,
            full: std::sync::OnceLock::new(),
        })
    }

    /// A record from a [`cloudevents::Event`] (the Rust API, and the previous stored form).
    /// JSON data is kept as JSON; string data as JSON text under a JSON (or no) content type,
    /// else as text; binary data is classified as [`classify_body`] does.
    ///
    /// # Errors
    /// A [`RecordError`] when the event does not serialize to a JSON object or its attributes
    /// fail the checks of [`EventRecord::new`] (for example an extension named in upper case).
    ///
    /// ```
    /// use cloudevents::{EventBuilder, EventBuilderV10};
    /// use evmesh_broker::record::{DataKind, EventRecord};
    /// let event = EventBuilderV10::new()
    ///     .id("1")
    ///     .source("/shop")
    ///     .ty("order.created")
    ///     .data("application/json", serde_json::json!({"sku": "A1"}))
    ///     .build()?;
    /// let record = EventRecord::from_event(event)?;
    /// let (kind, bytes) = record.data().expect("the event has data");
    /// assert_eq!((kind, bytes.as_ref()), (DataKind::Json, br#"{"sku":"A1"}"#.as_slice()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_event(event: Event) -> Result<EventRecord, RecordError> {
        let mut event = event;
        let (_, _, data) = event.take_data();
        let mut attributes: serde_json::Map<String, Value> = match serde_json::to_value(&event) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(RecordError("event is not a JSON object".into())),
            Err(e) => return Err(RecordError(e.to_string())),
        };
        attributes.remove("data");
        attributes.remove("data_base64");
        attributes.remove("datacontentencoding");
        let attributes = Attributes::from(attributes);
        let ct = attr_str(&attributes, "datacontenttype").map(str::to_string);
        let data = match data {
            None => None,
            Some(Data::Json(v)) => Some((
                DataKind::Json,
                Bytes::from(serde_json::to_vec(&v).map_err(|e| RecordError(e.to_string()))?),
            )),
            Some(Data::String(s)) => {
                if ct.as_deref().is_none_or(is_json_content_type) {
                    let raw = serde_json::to_vec(&s).map_err(|e| RecordError(e.to_string()))?;
                    Some((DataKind::Json, Bytes::from(raw)))
                } else {
                    Some((DataKind::Text, Bytes::from(s)))
                }
            }
            Some(Data::Binary(b)) => Some((classify_body(ct.as_deref(), &b), Bytes::from(b))),
        };
        EventRecord::new(attributes, data, Vec::new())
    }

    /// The whole event as a [`cloudevents::Event`], its data the raw bytes as `Data::Binary`
    /// (copied from the record the first time it is asked; `Deref` reads the attributes without
    /// that copy).
    ///
    /// ```
    /// use cloudevents::AttributesReader;
    /// # use evmesh_broker::record::{DataKind, EventRecord};
    /// # use cloudevents::{EventBuilder, EventBuilderV10};
    /// # let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created")
    /// #     .data("application/json", serde_json::json!({"sku": "A1"})).build()?;
    /// # let mut record = EventRecord::from_event(event)?;
    /// assert_eq!(record.event().ty(), "order.created");
    /// assert!(record.event().data().is_some());
    /// assert_eq!(record.ty(), "order.created"); // the attributes, through `Deref`
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn event(&self) -> &Event {
        self.full.get_or_init(|| {
            let mut event = (**self).clone();
            if let Some((_, bytes)) = &self.data {
                event.set_data_unchecked(Data::Binary(bytes.to_vec()));
            }
            Box::new(event)
        })
    }

    /// Whether the event passes `filter` (which reads the record's attributes, and its data
    /// when it is an `evmesh.dev/jsonpath` filter).
    pub(crate) fn passes(&self, filter: &evmesh_filter::Filter) -> bool {
        filter.matches(self)
    }

    /// The attributes and extensions as received (plus the broker's own extensions), without
    /// the data fields.
    ///
    /// ```
    /// # use evmesh_broker::record::{DataKind, EventRecord};
    /// # use cloudevents::{EventBuilder, EventBuilderV10};
    /// # let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created")
    /// #     .data("application/json", serde_json::json!({"sku": "A1"})).build()?;
    /// # let mut record = EventRecord::from_event(event)?;
    /// assert_eq!(record.attributes()["source"], "/shop");
    /// assert!(!record.attributes().contains_key("data"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn attributes(&self) -> &Attributes {
        &self.attributes
    }

    /// The data and its kind; `None` for an event without data.
    ///
    /// ```
    /// # use evmesh_broker::record::{DataKind, EventRecord};
    /// # use cloudevents::{EventBuilder, EventBuilderV10};
    /// # let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created")
    /// #     .data("application/json", serde_json::json!({"sku": "A1"})).build()?;
    /// # let mut record = EventRecord::from_event(event)?;
    /// if let Some((DataKind::Json, bytes)) = record.data() {
    ///     let order: serde_json::Value = serde_json::from_slice(bytes)?;
    ///     assert_eq!(order["sku"], "A1");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn data(&self) -> Option<(DataKind, &Bytes)> {
        self.data.as_ref().map(|(k, b)| (*k, b))
    }

    /// The passed-through request headers.
    ///
    /// ```
    /// # use evmesh_broker::record::{DataKind, EventRecord};
    /// # use cloudevents::{EventBuilder, EventBuilderV10};
    /// # let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created")
    /// #     .data("application/json", serde_json::json!({"sku": "A1"})).build()?;
    /// # let mut record = EventRecord::from_event(event)?;
    /// assert!(record.headers().is_empty()); // none for an event built in Rust
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The CloudEvents spec version, `1.0` or `0.3`.
    ///
    /// ```
    /// # use evmesh_broker::record::{DataKind, EventRecord};
    /// # use cloudevents::{EventBuilder, EventBuilderV10};
    /// # let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created")
    /// #     .data("application/json", serde_json::json!({"sku": "A1"})).build()?;
    /// # let mut record = EventRecord::from_event(event)?;
    /// assert_eq!(record.spec_version(), "1.0");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spec_version(&self) -> &str {
        attr_str(&self.attributes, "specversion").unwrap_or("1.0")
    }

    /// An extension (or any attribute) as received, with its JSON type.
    ///
    /// ```
    /// # use evmesh_broker::record::{DataKind, EventRecord};
    /// # use cloudevents::{EventBuilder, EventBuilderV10};
    /// # let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created")
    /// #     .data("application/json", serde_json::json!({"sku": "A1"})).build()?;
    /// # let mut record = EventRecord::from_event(event)?;
    /// record.set_extension("priority", serde_json::json!(5));
    /// assert_eq!(record.extension_json("priority"), Some(&serde_json::json!(5)));
    /// assert_eq!(record.extension_json("region"), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn extension_json(&self, name: &str) -> Option<&Value> {
        self.attributes.get(name)
    }

    /// Sets an extension attribute (in the attributes and the CloudEvent view); data bytes are
    /// never touched.
    ///
    /// ```
    /// use cloudevents::AttributesReader;
    /// # use evmesh_broker::record::{DataKind, EventRecord};
    /// # use cloudevents::{EventBuilder, EventBuilderV10};
    /// # let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created")
    /// #     .data("application/json", serde_json::json!({"sku": "A1"})).build()?;
    /// # let mut record = EventRecord::from_event(event)?;
    /// record.set_extension("region", serde_json::json!("eu"));
    /// assert_eq!(record.attributes()["region"], "eu");
    /// assert!(record.extension("region").is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_extension(&mut self, name: &str, value: Value) {
        self.full.take();
        self.view.take();
        self.attributes.insert_str(name, value);
    }

    /// Removes an extension attribute; the other attributes keep their order.
    ///
    /// ```
    /// # use evmesh_broker::record::{DataKind, EventRecord};
    /// # use cloudevents::{EventBuilder, EventBuilderV10};
    /// # let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created")
    /// #     .data("application/json", serde_json::json!({"sku": "A1"})).build()?;
    /// # let mut record = EventRecord::from_event(event)?;
    /// record.set_extension("region", serde_json::json!("eu"));
    /// record.remove_extension("region");
    /// assert_eq!(record.extension_json("region"), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove_extension(&mut self, name: &str) {
        self.full.take();
        self.view.take();
        // The other attributes keep their order.
        self.attributes.remove(name);
    }

    /// Sets the passed-through headers (see [`passthrough_headers`]).
    ///
    /// ```
    /// # use evmesh_broker::record::{DataKind, EventRecord};
    /// # use cloudevents::{EventBuilder, EventBuilderV10};
    /// # let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created")
    /// #     .data("application/json", serde_json::json!({"sku": "A1"})).build()?;
    /// # let mut record = EventRecord::from_event(event)?;
    /// record.set_headers(vec![("x-request-id".into(), "abc".into())]);
    /// assert_eq!(record.headers(), [("x-request-id".to_string(), "abc".to_string())]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_headers(&mut self, headers: Vec<(String, String)>) {
        self.headers = headers;
    }

    /// The stored form (current version, [`FORMAT_VERSION`]); [`from_stored`](Self::from_stored)
    /// reads it back.
    ///
    /// ```
    /// # use evmesh_broker::record::{DataKind, EventRecord};
    /// # use cloudevents::{EventBuilder, EventBuilderV10};
    /// # let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created")
    /// #     .data("application/json", serde_json::json!({"sku": "A1"})).build()?;
    /// # let mut record = EventRecord::from_event(event)?;
    /// let stored = record.to_stored();
    /// assert_eq!(stored[0], evmesh_broker::record::FORMAT_VERSION);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_stored(&self) -> Vec<u8> {
        let data_len = self.data.as_ref().map_or(0, |(_, b)| b.len());
        // One buffer, each JSON part serialized in place behind its length (no copies).
        let mut out = Vec::with_capacity(256 + 64 * self.headers.len() + data_len);
        out.push(FORMAT_VERSION);
        write_sized(&mut out, &self.attributes, b"{}");
        write_sized(&mut out, &self.headers, b"[]");
        match &self.data {
            None => out.push(0),
            Some((kind, bytes)) => {
                out.push(kind.byte());
                out.extend_from_slice(bytes);
            }
        }
        out
    }

    /// Reads a stored record: the current version or the previous one (serde_json of a
    /// `cloudevents::Event`).
    ///
    /// # Errors
    /// A [`RecordError`] for empty bytes, an unknown format version, a truncated record, parts
    /// that are not the JSON they must be, an unknown data kind, or attributes that fail the
    /// checks of [`EventRecord::new`].
    ///
    /// ```
    /// # use evmesh_broker::record::{DataKind, EventRecord};
    /// # use cloudevents::{EventBuilder, EventBuilderV10};
    /// # let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created")
    /// #     .data("application/json", serde_json::json!({"sku": "A1"})).build()?;
    /// # let mut record = EventRecord::from_event(event)?;
    /// let back = EventRecord::from_stored(&record.to_stored())?;
    /// assert_eq!(back.attributes(), record.attributes());
    /// assert_eq!(back.data(), record.data());
    /// assert!(EventRecord::from_stored(&[]).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_stored(bytes: &[u8]) -> Result<EventRecord, RecordError> {
        match bytes.first() {
            Some(&FORMAT_VERSION) => Self::from_v2(&bytes[1..]),
            Some(b'{') => {
                let event: Event = serde_json::from_slice(bytes)
                    .map_err(|e| RecordError(format!("previous-format record: {e}")))?;
                Self::from_event(event)
            }
            Some(v) => Err(RecordError(format!("unknown record format version {v}"))),
            None => Err(RecordError("empty record".into())),
        }
    }

    fn from_v2(mut rest: &[u8]) -> Result<EventRecord, RecordError> {
        fn take<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], RecordError> {
            if rest.len() < 4 {
                return Err(RecordError("truncated record".into()));
            }
            let (len, tail) = rest.split_at(4);
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if tail.len() < len {
                return Err(RecordError("truncated record".into()));
            }
            let (part, tail) = tail.split_at(len);
            *rest = tail;
            Ok(part)
        }
        let attributes: Attributes = serde_json::from_slice(take(&mut rest)?)
            .map_err(|e| RecordError(format!("record attributes: {e}")))?;
        let headers: Vec<(String, String)> = serde_json::from_slice(take(&mut rest)?)
            .map_err(|e| RecordError(format!("record headers: {e}")))?;
        let (&kind, data) = rest
            .split_first()
            .ok_or_else(|| RecordError("truncated record".into()))?;
        let data = match kind {
            0 => None,
            1 => Some((DataKind::Json, Bytes::copy_from_slice(data))),
            2 => Some((DataKind::Text, Bytes::copy_from_slice(data))),
            3 => Some((DataKind::Binary, Bytes::copy_from_slice(data))),
            k => return Err(RecordError(format!("unknown data kind {k}"))),
        };
        EventRecord::new(attributes, data, headers)
    }

    /// The structured-mode JSON of the event: attributes as received; JSON data embedded as
    /// sent, text as a JSON string, bytes as `data_base64` (0.3: `datacontentencoding: base64`).
    ///
    /// ```
    /// # use evmesh_broker::record::{DataKind, EventRecord};
    /// # use cloudevents::{EventBuilder, EventBuilderV10};
    /// # let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created")
    /// #     .data("application/json", serde_json::json!({"sku": "A1"})).build()?;
    /// # let mut record = EventRecord::from_event(event)?;
    /// let json: serde_json::Value = serde_json::from_slice(&record.to_structured_json())?;
    /// assert_eq!(json["id"], "1");
    /// assert_eq!(json["data"]["sku"], "A1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_structured_json(&self) -> Vec<u8> {
        self.to_structured_json_omitting(None)
    }

    /// [`EventRecord::to_structured_json`], leaving out the attribute `omit`.
    pub(crate) fn to_structured_json_omitting(&self, omit: Option<&str>) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(256 + self.data.as_ref().map_or(0, |(_, b)| b.len() * 4 / 3));
        out.push(b'{');
        let mut first = true;
        let mut field = |out: &mut Vec<u8>, name: &str, value: &[u8]| {
            if !first {
                out.push(b',');
            }
            first = false;
            // A JSON string of a name never fails to serialize.
            out.extend_from_slice(&serde_json::to_vec(name).unwrap_or_default());
            out.push(b':');
            out.extend_from_slice(value);
        };
        for (name, value) in &self.attributes {
            if omit == Some(name) {
                continue;
            }
            let v = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
            field(&mut out, name, &v);
        }
        let v03 = self.spec_version() == "0.3";
        match &self.data {
            None => {}
            Some((DataKind::Json, bytes)) => field(&mut out, "data", bytes),
            Some((DataKind::Text, bytes)) => {
                let text = String::from_utf8_lossy(bytes);
                let v = serde_json::to_vec(&text).unwrap_or_default();
                field(&mut out, "data", &v);
            }
            Some((DataKind::Binary, bytes)) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                let v = serde_json::to_vec(&b64).unwrap_or_default();
                if v03 {
                    field(&mut out, "datacontentencoding", b"\"base64\"");
                    field(&mut out, "data", &v);
                } else {
                    field(&mut out, "data_base64", &v);
                }
            }
        }
        out.push(b'}');
        out
    }
}

/// Decodes a structured-mode body (`application/cloudevents+json`): attributes as received, the
/// raw span of `data`, or `data_base64` (0.3: `data` with `datacontentencoding: base64`) decoded.
///
/// # Errors
/// A [`RecordError`] when the body is not a JSON object, both `data` and `data_base64` are
/// present, base64 data does not decode, `datacontentencoding` is not `base64`, or the attributes
/// fail the checks of [`EventRecord::new`].
///
/// ```
/// use evmesh_broker::record::{DataKind, from_structured};
/// let body = br#"{"specversion":"1.0","id":"1","source":"/shop","type":"order.created","data_base64":"AAEC"}"#;
/// let record = from_structured(body, Vec::new())?;
/// assert_eq!(record.data().map(|(k, b)| (k, b.to_vec())), Some((DataKind::Binary, vec![0, 1, 2])));
/// assert!(from_structured(b"[1, 2]", Vec::new()).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn from_structured(
    body: &[u8],
    headers: Vec<(String, String)>,
) -> Result<EventRecord, RecordError> {
    let fields: Vec<(String, Box<serde_json::value::RawValue>)> =
        serde_json::from_slice::<OrderedObject>(body)
            .map_err(|e| RecordError(format!("structured body is not a JSON object: {e}")))?
            .0;
    let mut attributes = Attributes::with_capacity(fields.len());
    let mut data_raw = None;
    let mut data_b64 = None;
    let mut encoding = None;
    for (name, raw) in fields {
        match name.as_str() {
            "data" => data_raw = Some(raw),
            "data_base64" => data_b64 = Some(raw),
            "datacontentencoding" => encoding = Some(raw),
            _ => {
                let v: Value = serde_json::from_str(raw.get())
                    .map_err(|e| RecordError(format!("attribute {name}: {e}")))?;
                attributes.insert(name, v);
            }
        }
    }
    let ct = attr_str(&attributes, "datacontenttype").map(str::to_string);
    let decode_b64 = |raw: &serde_json::value::RawValue, what: &str| {
        let s: String = serde_json::from_str(raw.get())
            .map_err(|_| RecordError(format!("{what} must be a string")))?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(|b| (DataKind::Binary, Bytes::from(b)))
            .map_err(|e| RecordError(format!("{what} is not valid base64: {e}")))
    };
    let base64_encoded = match &encoding {
        None => false,
        Some(raw) => {
            let enc: String = serde_json::from_str(raw.get())
                .map_err(|_| RecordError("datacontentencoding must be a string".into()))?;
            if !enc.eq_ignore_ascii_case("base64") {
                return Err(RecordError(format!(
                    "datacontentencoding {enc} is not supported (only base64)"
                )));
            }
            true
        }
    };
    let data = match (data_raw, data_b64) {
        (Some(_), Some(_)) => {
            return Err(RecordError("both data and data_base64 are present".into()));
        }
        (None, Some(raw)) => Some(decode_b64(&raw, "data_base64")?),
        (Some(raw), None) if base64_encoded => Some(decode_b64(&raw, "data")?),
        (Some(raw), None) => {
            let text = raw.get();
            if text.starts_with('"') && !ct.as_deref().is_none_or(is_json_content_type) {
                let s: String =
                    serde_json::from_str(text).map_err(|e| RecordError(format!("data: {e}")))?;
                Some((DataKind::Text, Bytes::from(s)))
            } else if text == "null" {
                None
            } else {
                Some((DataKind::Json, Bytes::copy_from_slice(text.as_bytes())))
            }
        }
        (None, None) => None,
    };
    EventRecord::new(attributes, data, headers)
}

/// A JSON object's fields in order, values kept raw.
struct OrderedObject(Vec<(String, Box<serde_json::value::RawValue>)>);

impl<'de> serde::Deserialize<'de> for OrderedObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<OrderedObject, A::Error> {
                let mut fields: Vec<(String, Box<serde_json::value::RawValue>)> = Vec::new();
                // The names seen, hashed once there are many (a body of many thousand fields
                // would otherwise cost their square in comparisons).
                let mut seen = std::collections::HashSet::new();
                while let Some((k, v)) =
                    map.next_entry::<String, Box<serde_json::value::RawValue>>()?
                {
                    let repeated = if fields.len() < 32 {
                        fields.iter().any(|(name, _)| *name == k)
                    } else {
                        if seen.is_empty() {
                            seen.extend(fields.iter().map(|(name, _)| name.clone()));
                        }
                        !seen.insert(k.clone())
                    };
                    if repeated {
                        return Err(serde::de::Error::custom(format!("duplicate field {k}")));
                    }
                    fields.push((k, v));
                }
                Ok(OrderedObject(fields))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::AttributesReader;

    fn attrs(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    #[test]
    fn a_record_is_small_to_move() {
        // The views are boxed: moving a record copies its handles, not two `Event`s.
        assert!(
            std::mem::size_of::<EventRecord>() < 2 * std::mem::size_of::<Event>(),
            "{} bytes",
            std::mem::size_of::<EventRecord>()
        );
    }

    #[test]
    fn filters_read_a_record_as_they_read_its_cloudevent() {
        use evmesh_filter::{EventAttributes, Filter};
        let cases = [
            serde_json::json!({"specversion":"1.0","id":"1","source":"https://x/y?z","type":"t",
                "datacontenttype":"application/json","subject":"s",
                "dataschema":"HTTPS://Example.COM/a/../s.json",
                "time":"2026-12-04T10:00:00.1200+02:00","flag":true,"count":42,"neg":-7,
                "text":"x","partitionkey":"k1"}),
            serde_json::json!({"specversion":"1.0","id":"2","source":"/s","type":"t.v2",
                "time":"2026-12-04T08:00:00Z","flag":false,"count":7}),
            serde_json::json!({"specversion":"0.3","id":"3","source":"/s","type":"t",
                "schemaurl":"https://example.com/s.json","subject":"s","ext":"e"}),
        ];
        let names = [
            "specversion",
            "id",
            "source",
            "type",
            "subject",
            "time",
            "datacontenttype",
            "dataschema",
            "schemaurl",
            "flag",
            "count",
            "neg",
            "text",
            "ext",
            "missing",
        ];
        let filters = [
            "time = '2026-12-04T08:00:00.12Z'",
            "time = '2026-12-04T08:00:00Z'",
            "dataschema = 'https://example.com/s.json'",
            "flag AND count > 40 AND neg < 0",
            "EXISTS schemaurl",
            "specversion = '0.3' OR type LIKE 't%'",
            "count = 7 AND NOT flag",
        ];
        for case in cases {
            let data = Some((DataKind::Json, Bytes::from_static(br#"{"a": [1, 2]}"#)));
            let record = EventRecord::new(attrs(case.clone()), data, vec![]).expect("valid");
            let event = record.event().clone();
            for name in names {
                assert_eq!(
                    record.attribute(name),
                    event.attribute(name),
                    "{name} of {case}"
                );
            }
            for expr in filters {
                let f = Filter::cesql(expr).expect("parses");
                assert_eq!(f.matches(&record), f.matches(&event), "{expr} on {case}");
            }
            assert_eq!(record.json_data(), event.json_data(), "{case}");
        }
    }

    #[test]
    fn the_view_is_what_the_sdk_makes_of_the_attributes_errors_included() {
        let cases = [
            serde_json::json!({"specversion":"1.0","id":"1","source":"/s","type":"t"}),
            serde_json::json!({"specversion":"1.0","id":"1","source":"https://x/y?z","type":"t",
                "datacontenttype":"application/json","subject":"s","dataschema":"https://example.com/s.json",
                "time":"2026-12-04T10:00:00.123+02:00","flag":true,"count":42,"neg":-7,"text":"x"}),
            serde_json::json!({"specversion":"1.0","id":"1","source":"/s","type":"t","time":"yesterday"}),
            serde_json::json!({"specversion":"1.0","id":"1","source":"/s","type":"t","dataschema":"/relative"}),
            serde_json::json!({"specversion":"1.0","id":"1","source":"/s","type":"t","subject":5}),
            serde_json::json!({"specversion":"1.0","id":"1","source":"/s","type":"t","ratio":0.5}),
            serde_json::json!({"specversion":"1.0","id":"1","source":"/s","type":"t","nested":{"a":1}}),
            serde_json::json!({"specversion":"1.0","id":"1","source":"/s","type":"t","huge":18446744073709551615u64}),
            serde_json::json!({"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":["a"]}),
        ];
        for case in cases {
            let a = Attributes::from(attrs(case.clone()));
            assert_eq!(view_v10(&a), view_by_sdk(&a), "{case}");
            // The check without the view agrees with building it.
            assert_eq!(v10_ok(&a), view_v10(&a).is_ok(), "{case}");
        }
    }

    #[test]
    fn structured_json_data_keeps_its_bytes() {
        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/json","data": { "price" : 10.50, "big": 123456789012345678901234567890 }}"#;
        let r = from_structured(body, vec![]).expect("valid");
        let (kind, data) = r.data().expect("data");
        assert_eq!(kind, DataKind::Json);
        assert_eq!(
            &data[..],
            br#"{ "price" : 10.50, "big": 123456789012345678901234567890 }"#
        );
        let out = r.to_structured_json();
        let back = from_structured(&out, vec![]).expect("round trip");
        assert_eq!(
            back.data().map(|(_, b)| b.clone()),
            r.data().map(|(_, b)| b.clone())
        );
    }

    #[test]
    fn a_structured_event_with_many_extensions_keeps_them_in_order_and_a_repeated_one_is_refused() {
        let extensions: Vec<String> = (0..200).map(|i| format!("\"ext{i}\":{i}")).collect();
        let body = format!(
            r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t",{}}}"#,
            extensions.join(",")
        );
        let r = from_structured(body.as_bytes(), vec![]).expect("valid");
        assert_eq!(r.attributes().len(), 204);
        assert_eq!(r.attributes()["ext150"], 150);
        let names: Vec<&str> = r.attributes().iter().map(|(n, _)| n).collect();
        assert_eq!(names[4..7], ["ext0", "ext1", "ext2"]);
        let back = EventRecord::from_stored(&r.to_stored()).expect("stored form");
        assert_eq!(back.attributes(), r.attributes());
        // A name repeated far into the body (found through the hashed names).
        let repeated = format!("{},\"ext7\":1}}", &body[..body.len() - 1]);
        let err = from_structured(repeated.as_bytes(), vec![]).expect_err("repeated");
        assert!(err.to_string().contains("duplicate field ext7"), "{err}");
    }

    #[test]
    fn stored_form_round_trips_and_previous_form_is_read() {
        let r = EventRecord::new(
            attrs(serde_json::json!({"specversion":"1.0","id":"1","source":"/s","type":"t","priority":5})),
            Some((DataKind::Binary, Bytes::from_static(&[0, 159, 146, 150]))),
            vec![("traceparent".into(), "00-abc-def-01".into())],
        )
        .expect("valid");
        let back = EventRecord::from_stored(&r.to_stored()).expect("decodes");
        assert_eq!(back.attributes(), r.attributes());
        assert_eq!(back.headers(), r.headers());
        assert_eq!(
            back.data().map(|(k, b)| (k, b.clone())),
            r.data().map(|(k, b)| (k, b.clone()))
        );
        let old = serde_json::to_vec(r.event()).expect("previous form");
        let from_old = EventRecord::from_stored(&old).expect("previous form read");
        assert_eq!(from_old.id(), "1");
        assert!(EventRecord::from_stored(&[9, 1, 2]).is_err());
        assert!(EventRecord::from_stored(&[FORMAT_VERSION, 200, 0, 0, 0]).is_err());
    }

    #[test]
    fn empty_required_attributes_are_rejected() {
        for empty in ["id", "source", "type"] {
            let mut a =
                attrs(serde_json::json!({"specversion":"1.0","id":"1","source":"/s","type":"t"}));
            a.insert(empty.into(), Value::String(String::new()));
            assert!(EventRecord::new(a, None, vec![]).is_err(), "{empty}");
        }
    }

    #[test]
    fn passthrough_headers_are_allowlisted_and_bounded() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", "00-1-2-01".parse().expect("value"));
        h.insert("x-b3-traceid", "abc".parse().expect("value"));
        h.insert("authorization", "Bearer secret".parse().expect("value"));
        h.insert("knative-foo", "x".repeat(9000).parse().expect("value"));
        let kept = passthrough_headers(&h);
        let names: Vec<_> = kept.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, vec!["traceparent", "x-b3-traceid"]);
    }
}
