//! CloudEvents over HTTP: decoding requests and replies, encoding deliveries (binary or structured).
//!
//! The encoding itself is cloudevents-sdk's; this module adds what SDK 0.9 leaves out of the
//! HTTP binding: percent-encoding of `ce-*` header values (CloudEvents HTTP binding §3.1.3.2).

use std::cell::RefCell;
use std::rc::Rc;

use cloudevents::binding::http::{Builder, Serializer, to_event};
use cloudevents::message::BinaryDeserializer;
use cloudevents::{AttributesReader, Event};
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, percent_decode, percent_encode};

/// Characters that must be percent-encoded in a `ce-*` header value: everything outside
/// U+0021..U+007E, plus space, `"` and `%`.
const CE_HEADER: &AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'%')
    .add(0x7f);

/// Why a request or reply is not a valid CloudEvent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Decodes a CloudEvent from HTTP headers and body, in binary or structured content mode.
/// Only CloudEvents 1.0 is accepted.
pub fn decode(headers: &HeaderMap, body: Vec<u8>) -> Result<Event, DecodeError> {
    let mut event = to_event(headers, body).map_err(|e| DecodeError(describe(&e.to_string())))?;
    if event.specversion() != cloudevents::event::SpecVersion::V10 {
        return Err(DecodeError(format!(
            "specversion {} is not supported, only 1.0",
            event.specversion()
        )));
    }
    if headers.contains_key("ce-specversion") && !is_structured(headers) {
        percent_decode_attributes(headers, &mut event)?;
    }
    Ok(event)
}

fn is_structured(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/cloudevents")
        })
}

fn describe(sdk: &str) -> String {
    if sdk.contains("Wrong encoding") || sdk.to_lowercase().contains("unknown encoding") {
        "not a CloudEvent: no ce-specversion header (binary mode) and Content-Type is not application/cloudevents+json (structured mode)".to_string()
    } else {
        format!("invalid CloudEvent: {sdk}")
    }
}

/// Binary-mode header values are percent-encoded on the wire (the SDK reads them raw): decode
/// every `ce-*` value that needs it, rejecting invalid UTF-8.
fn percent_decode_attributes(headers: &HeaderMap, event: &mut Event) -> Result<(), DecodeError> {
    use cloudevents::AttributesWriter;
    for (k, v) in headers {
        let Some(name) = k.as_str().strip_prefix("ce-") else {
            continue;
        };
        let mut raw = v.as_bytes();
        if !raw.iter().any(|b| *b == b'%' || *b == b'"') {
            continue;
        }
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
        match name {
            "specversion" | "time" | "datacontenttype" => {}
            "id" => {
                event.set_id(text);
            }
            "type" => {
                event.set_type(text);
            }
            "subject" => {
                event.set_subject(Some(text));
            }
            "source" => {
                event.set_source(text);
            }
            _ => {
                event.set_extension(name, text);
            }
        }
    }
    Ok(())
}

/// An HTTP message body with its headers, produced by [`encode_binary`] / [`encode_structured`].
#[derive(Debug, Default, Clone)]
pub struct Encoded {
    /// Headers (`ce-*` and `content-type`).
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
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
        self.0.borrow_mut().body = bytes;
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
    Ok(Encoded { headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

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
        let back = decode(&enc.headers, enc.body).expect("decodes");
        assert_eq!(back.extension("note"), event.extension("note"));
        assert_eq!(back.id(), "1");
        assert!(matches!(back.data(), Some(cloudevents::event::Data::Binary(b)) if b == b"body"));
    }

    #[test]
    fn rejects_specversion_other_than_1_0() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("ce-specversion", "0.3"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        assert!(decode(&h, vec![]).is_err());
    }
}
