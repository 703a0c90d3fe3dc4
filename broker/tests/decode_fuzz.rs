//! Fuzz-style property tests of ingress decoding: whatever the headers and body, decoding
//! returns a record or an error and never panics; what it accepts encodes and decodes again
//! with the same data bytes.

use bytes::Bytes;
use evmesh_broker::codec::{decode_record, encode_record_binary, encode_record_structured};
use evmesh_broker::record::EventRecord;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("ce-specversion".to_string()),
        Just("ce-id".to_string()),
        Just("ce-source".to_string()),
        Just("ce-type".to_string()),
        Just("ce-time".to_string()),
        Just("ce-dataschema".to_string()),
        Just("content-type".to_string()),
        Just("traceparent".to_string()),
        "ce-[a-z0-9]{1,24}",
        "x-b3-[a-z]{1,8}",
        "[a-z][a-z0-9-]{0,16}",
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"1.0".to_vec()),
        Just(b"0.3".to_vec()),
        Just(b"application/cloudevents+json".to_vec()),
        Just(b"APPLICATION/CLOUDEVENTS+JSON; charset=utf-8".to_vec()),
        Just(b"application/json".to_vec()),
        Just(b"application/json; charset=utf-8".to_vec()),
        Just(b"text/plain".to_vec()),
        Just(b"2026-11-25T10:00:00Z".to_vec()),
        "[ -~]{0,40}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        "[ -~]{0,200}".prop_map(String::into_bytes),
        (
            prop_oneof![Just("1.0"), Just("0.3"), Just(""), Just("9")],
            "[ -~]{0,12}",
            "[ -~]{0,12}",
            prop_oneof![
                Just(r#""data":{"a": 10.50}"#.to_string()),
                Just(r#""data_base64":"AAEC""#.to_string()),
                Just(r#""data_base64":"%%%""#.to_string()),
                Just(r#""datacontentencoding":"base64","data":"AAEC""#.to_string()),
                Just(r#""data":"text","datacontenttype":"text/plain""#.to_string()),
                Just(r#""data":null"#.to_string()),
                Just(r#""data":1,"data_base64":"AA==""#.to_string()),
                "[ -~]{0,30}",
            ],
        )
            .prop_map(|(v, id, ty, data)| {
                format!(
                    r#"{{"specversion":"{v}","id":{},"source":"/s","type":{},{data}}}"#,
                    serde_json::to_string(&id).unwrap_or_default(),
                    serde_json::to_string(&ty).unwrap_or_default()
                )
                .into_bytes()
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoding_never_panics(
        headers in proptest::collection::vec((header_name(), header_value()), 0..10),
        body in body(),
    ) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_bytes(&v)) {
                map.append(k, v);
            }
        }
        if let Ok(record) = decode_record(&map, Bytes::from(body)) {
            let data = record.data().map(|(_, b)| b.clone());
            // What was accepted is delivered and read back with the same data bytes.
            let bin = encode_record_binary(&record);
            let back = decode_record(&bin.headers, bin.body);
            prop_assert!(back.is_ok(), "binary re-decode: {:?}", back.err());
            let back = back.ok();
            prop_assert_eq!(back.as_ref().and_then(|r| r.data().map(|(_, b)| b.clone())), data.clone());
            let st = encode_record_structured(&record);
            let back = decode_record(&st.headers, st.body);
            prop_assert!(back.is_ok(), "structured re-decode: {:?}", back.err());
            let back = back.ok();
            prop_assert_eq!(back.as_ref().and_then(|r| r.data().map(|(_, b)| b.clone())), data);
            let stored = EventRecord::from_stored(&record.to_stored());
            prop_assert!(stored.is_ok());
        }
    }

    #[test]
    fn stored_record_reading_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = EventRecord::from_stored(&bytes);
        let mut v2 = vec![evmesh_broker::record::FORMAT_VERSION];
        v2.extend_from_slice(&bytes);
        let _ = EventRecord::from_stored(&v2);
    }
}
