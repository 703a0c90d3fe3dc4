//! The CloudEvents Kafka protocol binding: binary mode (`ce_` headers, `content-type`, key =
//! `partitionkey`) written, binary and structured mode read.

use bytes::Bytes;
use evmesh_broker::record::{Attributes, EventRecord, classify_body, from_structured};
use rdkafka::message::{Header, OwnedHeaders};
use serde_json::Value;

/// The extension that becomes the record key.
pub const PARTITION_KEY: &str = "partitionkey";
/// Structured mode's content type.
const STRUCTURED: &str = "application/cloudevents+json";

/// A record ready to produce.
#[derive(Debug)]
pub struct Encoded {
    /// The record key (`partitionkey`).
    pub key: Option<String>,
    /// `ce_<attribute>` and `content-type` headers.
    pub headers: OwnedHeaders,
    /// The event data, as received.
    pub value: Bytes,
}

/// An attribute's text in a `ce_` header: strings as they are, other JSON values as JSON text.
fn header_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Encodes `event` in binary mode.
pub fn encode(event: &EventRecord) -> Encoded {
    let attrs = event.attributes();
    let mut headers = OwnedHeaders::new_with_capacity(attrs.len() + 1);
    for (name, value) in attrs {
        let text = header_text(value);
        if name == "datacontenttype" {
            headers = headers.insert(Header {
                key: "content-type",
                value: Some(text.as_bytes()),
            });
        } else {
            let key = format!("ce_{name}");
            headers = headers.insert(Header {
                key: &key,
                value: Some(text.as_bytes()),
            });
        }
    }
    Encoded {
        key: attrs.get(PARTITION_KEY).map(header_text),
        headers,
        value: event.data().map(|(_, b)| b.clone()).unwrap_or_default(),
    }
}

/// Reads a record as a CloudEvent: `None` when it is not one (no `ce_specversion` header and
/// not structured), `Some(Err)` when it claims to be one but is invalid.
pub fn decode(
    headers: &[(&str, &[u8])],
    value: Option<&[u8]>,
) -> Option<Result<EventRecord, String>> {
    let content_type = headers
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok());
    if content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case(STRUCTURED))
    }) {
        return Some(
            from_structured(value.unwrap_or_default(), Vec::new()).map_err(|e| e.to_string()),
        );
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("ce_specversion"))
    {
        return None;
    }
    let mut attributes = Attributes::with_capacity(headers.len());
    for (k, v) in headers {
        let Some(name) = k
            .get(..3)
            .filter(|p| p.eq_ignore_ascii_case("ce_"))
            .map(|_| k[3..].to_ascii_lowercase())
        else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(v) else {
            return Some(Err(format!("header {k} is not UTF-8")));
        };
        attributes.insert(name, Value::String(text.to_string()));
    }
    if let Some(ct) = content_type {
        attributes.insert("datacontenttype".into(), Value::String(ct.to_string()));
    }
    let data = value.map(|v| (classify_body(content_type, v), Bytes::copy_from_slice(v)));
    Some(EventRecord::new(attributes, data, Vec::new()).map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    fn event() -> EventRecord {
        let mut attrs = serde_json::Map::new();
        attrs.insert("specversion".into(), "1.0".into());
        attrs.insert("id".into(), "e1".into());
        attrs.insert("source".into(), "/s".into());
        attrs.insert("type".into(), "t".into());
        attrs.insert("datacontenttype".into(), "application/json".into());
        attrs.insert("partitionkey".into(), "k1".into());
        EventRecord::new(
            attrs,
            Some((
                evmesh_broker::record::DataKind::Json,
                Bytes::from_static(b"{\"a\": 10.50}"),
            )),
            Vec::new(),
        )
        .expect("valid event")
    }

    #[test]
    fn binary_mode_round_trips_attributes_key_and_data_bytes() {
        let enc = encode(&event());
        assert_eq!(enc.key.as_deref(), Some("k1"));
        let headers: Vec<(&str, &[u8])> = enc
            .headers
            .iter()
            .map(|h| (h.key, h.value.unwrap_or_default()))
            .collect();
        assert!(headers.contains(&("content-type", b"application/json".as_slice())));
        assert!(headers.contains(&("ce_id", b"e1".as_slice())));
        let back = decode(&headers, Some(&enc.value))
            .expect("a CloudEvent")
            .expect("valid");
        assert_eq!(back.attributes(), event().attributes());
        assert_eq!(
            back.data().map(|(_, b)| b.clone()),
            Some(Bytes::from_static(b"{\"a\": 10.50}"))
        );
    }

    #[test]
    fn structured_record_is_read_as_its_event() {
        let body = br#"{"specversion":"1.0","id":"s1","source":"/x","type":"t","data":{"n":1}}"#;
        let ev = decode(
            &[(
                "content-type",
                b"application/cloudevents+json; charset=utf-8",
            )],
            Some(body),
        )
        .expect("a CloudEvent")
        .expect("valid");
        assert_eq!(ev.attributes()["id"], "s1");
    }

    #[test]
    fn record_without_ce_headers_is_not_a_cloudevent() {
        assert!(decode(&[("content-type", b"text/plain")], Some(b"hi")).is_none());
    }
}
