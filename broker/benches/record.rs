//! Criterion benchmarks: the per-event cost of evmesh's event record on the data path — a
//! binary-mode request decoded at ingress (with the broker's two extensions set and the stored
//! form written), the stored form read back (catch-up, restart), and one delivery's encoding
//! with the attribute lookups a trigger's filter makes.
//!
//! Run: `cargo bench -p evmesh-broker --bench record -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use evmesh_broker::codec::{decode_record, encode_record_binary};
use evmesh_broker::record::EventRecord;
use evmesh_filter::EventAttributes;
use http::{HeaderMap, HeaderValue};

/// The request `bench/ce-post.lua` sends (wrk's load for the ingress benchmarks), as hyper
/// hands it to the handler.
fn request() -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "127.0.0.1:18080"),
        ("content-length", "57"),
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-type", "com.example.order.created"),
        ("ce-source", "wrk"),
        ("ce-id", "482771934-1048576"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    let body = Bytes::from_static(br#"{"order":{"id":42,"total":99.5},"note":"benchmark event"}"#);
    (headers, body)
}

/// What ingress does with one request: decode it, set the broker's extensions, write the
/// stored form.
fn ingress(headers: &HeaderMap, body: Bytes) -> (EventRecord, Vec<u8>) {
    let mut record = decode_record(headers, body).expect("the bench request is a CloudEvent");
    record.set_extension("knativebrokerttl", serde_json::Value::from(255));
    record.set_extension(
        "knativearrivaltime",
        serde_json::Value::from("2026-12-06T10:41:07.123456Z"),
    );
    let stored = record.to_stored();
    (record, stored)
}

fn record_path(c: &mut Criterion) {
    let (headers, body) = request();
    c.bench_function("ingress: decode, extensions, stored form", |b| {
        b.iter(|| black_box(ingress(black_box(&headers), body.clone())))
    });
    let (record, stored) = ingress(&headers, body.clone());
    c.bench_function("stored form read back", |b| {
        b.iter(|| black_box(EventRecord::from_stored(black_box(&stored)).expect("stored form")))
    });
    c.bench_function("delivery: filter lookups and binary encoding", |b| {
        b.iter(|| {
            let r = black_box(&record);
            let matched = r.attribute("type").is_some() && r.attribute("source").is_some();
            black_box((matched, encode_record_binary(r)))
        })
    });
}

criterion_group!(benches, record_path);
criterion_main!(benches);
