//! CloudEvents over HTTP: decoding requests and replies, encoding deliveries (binary or structured).
//!
//! Requests and replies decode into an [`EventRecord`] (attributes as received, data bytes as
//! sent) and deliveries encode from one, so data reaches subscribers byte for byte. `ce-*`
//! header values are percent-encoded (CloudEvents HTTP binding §3.1.3.2). CloudEvents 1.0 and
//! 0.3 are accepted, as Knative accepts them, and delivered in the version they came in.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use cloudevents::Event;
use cloudevents::binding::http::{Builder, Serializer};
use cloudevents::message::BinaryDeserializer;
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, percent_decode, percent_encode};

use crate::record::{self, EventRecord};

/// Characters that must be percent-encoded in a `ce-*` header value: everything outside
/// U+0021..U+007E, plus space, `"` and `%`.
const CE_HEADER: &AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'%')
    .add(0x7f);

/// Binary mode's marker header, made once (a `&str` key is parsed again on every lookup).
static CE_SPECVERSION: HeaderName = HeaderName::from_static("ce-specversion");

/// Why a request or reply is not a valid CloudEvent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Decodes a CloudEvent from HTTP headers and body, in binary or structured content mode
/// (CloudEvents 1.0 or 0.3), into the [`cloudevents::Event`] view (data as the raw bytes).
pub fn decode(headers: &HeaderMap, body: Vec<u8>) -> Result<Event, DecodeError> {
    decode_record(headers, Bytes::from(body)).map(|r| r.event().clone())
}

/// Decodes a request or reply into an [`EventRecord`]: attributes as received, data bytes as
/// sent, and the passed-through headers (trace context, `x-request-id`, B3, `knative-*`).
pub fn decode_record(headers: &HeaderMap, body: Bytes) -> Result<EventRecord, DecodeError> {
    let passthrough = record::passthrough_headers(headers);
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if let Some(ct) = ct {
        let lower = ct.trim().to_ascii_lowercase();
        if lower.starts_with("application/cloudevents-batch") {
            return Err(DecodeError(
                "batched content mode (application/cloudevents-batch+json) is not supported".into(),
            ));
        }
        if lower.starts_with("application/cloudevents") {
            if !lower.starts_with("application/cloudevents+json")
                && !lower.starts_with("application/cloudevents;")
                && lower != "application/cloudevents"
            {
                return Err(DecodeError(format!(
                    "structured content type {ct} is not supported (only application/cloudevents+json)"
                )));
            }
            return record::from_structured(&body, passthrough)
                .map_err(|e| DecodeError(format!("invalid CloudEvent: {e}")));
        }
    }
    if !headers.contains_key(&CE_SPECVERSION) {
        return Err(DecodeError(describe("Wrong encoding")));
    }
    // Sized once (every header could be an attribute).
    let mut attributes = record::Attributes::with_capacity(headers.len());
    for (k, v) in headers {
        let Some(name) = k.as_str().strip_prefix("ce-") else {
            continue;
        };
        let mut raw = v.as_bytes();
        // RFC 7230 quoted string: unquote first.
        if raw.len() >= 2 && raw[0] == b'"' && raw[raw.len() - 1] == b'"' {
            raw = &raw[1..raw.len() - 1];
        }
        let text = percent_decode(raw)
            .decode_utf8()
            .map_err(|_| {
                DecodeError(format!(
                    "header {k}: percent-decoded value is not valid UTF-8"
                ))
            })?
            .into_owned();
        if name == "datacontenttype" {
            // Binary mode carries it as Content-Type.
            continue;
        }
        if attributes
            .insert_str(name, serde_json::Value::String(text))
            .is_some()
        {
            return Err(DecodeError(format!("header {k} is repeated")));
        }
    }
    if let Some(ct) = ct {
        attributes.insert_str("datacontenttype", serde_json::Value::String(ct.to_string()));
    }
    let data = (!body.is_empty()).then(|| (record::classify_body(ct, &body), body));
    EventRecord::new(attributes, data, passthrough)
        .map_err(|e| DecodeError(format!("invalid CloudEvent: {e}")))
}

fn describe(sdk: &str) -> String {
    if sdk.contains("Wrong encoding") || sdk.to_lowercase().contains("unknown encoding") {
        "not a CloudEvent: no ce-specversion header (binary mode) and Content-Type is not application/cloudevents+json (structured mode)".to_string()
    } else {
        format!("invalid CloudEvent: {sdk}")
    }
}

/// Encodes a record in binary content mode: each attribute in a percent-encoded `ce-*` header,
/// `datacontenttype` as `Content-Type`, the data bytes as the body, unchanged.
pub fn encode_record_binary(record: &EventRecord) -> Encoded {
    encode_record_binary_omitting(record, None)
}

/// [`encode_record_binary`], leaving out the attribute `omit` (what a delivery leaves out,
/// without a copy of the record).
pub(crate) fn encode_record_binary_omitting(record: &EventRecord, omit: Option<&str>) -> Encoded {
    let mut headers = HeaderMap::with_capacity(record.attributes().len() + 4);
    for (name, value) in record.attributes() {
        if omit == Some(name) {
            continue;
        }
        if name == "datacontenttype" {
            if let Some(ct) = value.as_str().and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(http::header::CONTENT_TYPE, ct);
            }
            continue;
        }
        let text: std::borrow::Cow<'_, str> = match value {
            serde_json::Value::String(s) => s.into(),
            other => other.to_string().into(),
        };
        let Some(hname) = ce_header_name(name) else {
            continue;
        };
        let enc: std::borrow::Cow<'_, str> = percent_encode(text.as_bytes(), CE_HEADER).into();
        if let Ok(hv) = HeaderValue::from_str(&enc) {
            headers.insert(hname, hv);
        }
    }
    // The record's bytes themselves (shared, not copied).
    let body = record.data().map(|(_, b)| b.clone()).unwrap_or_default();
    Encoded { headers, body }
}

/// The `ce-` header of attribute `name` (the usual ones without building the name).
fn ce_header_name(name: &str) -> Option<HeaderName> {
    Some(HeaderName::from_static(match name {
        "specversion" => "ce-specversion",
        "id" => "ce-id",
        "source" => "ce-source",
        "type" => "ce-type",
        "time" => "ce-time",
        "subject" => "ce-subject",
        "dataschema" => "ce-dataschema",
        "knativearrivaltime" => "ce-knativearrivaltime",
        "knativebrokerttl" => "ce-knativebrokerttl",
        _ => return HeaderName::from_bytes(format!("ce-{name}").as_bytes()).ok(),
    }))
}

/// Encodes a record in structured content mode (`application/cloudevents+json`): JSON data
/// embedded as sent, text as a JSON string, bytes as `data_base64`.
pub fn encode_record_structured(record: &EventRecord) -> Encoded {
    encode_record_structured_omitting(record, None)
}

/// [`encode_record_structured`], leaving out the attribute `omit`.
pub(crate) fn encode_record_structured_omitting(
    record: &EventRecord,
    omit: Option<&str>,
) -> Encoded {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents+json"),
    );
    Encoded {
        headers,
        body: Bytes::from(record.to_structured_json_omitting(omit)),
    }
}

/// An HTTP message body with its headers, produced by [`encode_binary`] / [`encode_structured`].
#[derive(Debug, Default, Clone)]
pub struct Encoded {
    /// Headers (`ce-*` and `content-type`).
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

#[derive(Default)]
struct Parts(Rc<RefCell<Encoded>>);

impl Builder<()> for Parts {
    fn header(&mut self, key: &str, value: HeaderValue) {
        let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
            return;
        };
        let value = if key.starts_with("ce-") {
            let enc = percent_encode(value.as_bytes(), CE_HEADER).to_string();
            HeaderValue::from_str(&enc).unwrap_or(value)
        } else {
            value
        };
        self.0.borrow_mut().headers.insert(name, value);
    }
    fn body(&mut self, bytes: Vec<u8>) -> cloudevents::message::Result<()> {
        self.0.borrow_mut().body = Bytes::from(bytes);
        Ok(())
    }
    fn finish(&mut self) -> cloudevents::message::Result<()> {
        Ok(())
    }
}

/// Encodes an event in binary content mode (attributes in percent-encoded `ce-*` headers).
pub fn encode_binary(event: Event) -> Result<Encoded, DecodeError> {
    let shared = Rc::new(RefCell::new(Encoded::default()));
    BinaryDeserializer::deserialize_binary(event, Serializer::new(Parts(shared.clone())))
        .map_err(|e| DecodeError(e.to_string()))?;
    let out = shared.take();
    Ok(out)
}

/// Encodes an event in structured content mode (`application/cloudevents+json`).
pub fn encode_structured(event: &Event) -> Result<Encoded, DecodeError> {
    let body = serde_json::to_vec(event).map_err(|e| DecodeError(e.to_string()))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents+json"),
    );
    Ok(Encoded {
        headers,
        body: Bytes::from(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};

    #[test]
    fn a_repeated_ce_header_is_refused() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
        ] {
            h.insert(k, v.parse().expect("value"));
        }
        assert!(decode_record(&h, Bytes::new()).is_ok());
        h.append("ce-id", "2".parse().expect("value"));
        let err = decode_record(&h, Bytes::new()).expect_err("refused");
        assert_eq!(err.0, "header ce-id is repeated");
    }

    #[test]
    fn binary_round_trip_percent_encodes_non_ascii_and_spaces() {
        let event = EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("t")
            .extension("note", "héllo wörld \"%\"")
            .data("text/plain", "body")
            .build()
            .expect("valid event");
        let enc = encode_binary(event.clone()).expect("encodes");
        let note = enc
            .headers
            .get("ce-note")
            .expect("header")
            .to_str()
            .expect("ascii");
        assert!(note.is_ascii() && !note.contains(' '), "{note}");
        let back = decode(&enc.headers, enc.body.to_vec()).expect("decodes");
        assert_eq!(back.extension("note"), event.extension("note"));
        assert_eq!(back.id(), "1");
        assert!(matches!(back.data(), Some(cloudevents::event::Data::Binary(b)) if b == b"body"));
    }

    #[test]
    fn accepts_0_3_and_rejects_other_specversions() {
        let headers = |version: &'static str| {
            let mut h = HeaderMap::new();
            for (k, v) in [
                ("ce-specversion", version),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ] {
                h.insert(k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(decode(&headers("2.0"), vec![]).is_err());
        let r = decode_record(&headers("0.3"), Bytes::new()).expect("0.3 accepted");
        assert_eq!(r.spec_version(), "0.3");
        let out = encode_record_binary(&r);
        assert_eq!(
            out.headers.get("ce-specversion").map(|v| v.as_bytes()),
            Some(&b"0.3"[..])
        );
    }
}
