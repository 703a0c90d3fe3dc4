//! Criterion benchmarks: per-event cost of each filter kind, and `FilterIndex::matching` with
//! 10, 1,000 and 10,000 triggers, and with ten JSONPath triggers.
//!
//! Run: `cargo bench -p evmesh-filter --bench filters -- --warm-up-time 1 --measurement-time 3`

use std::collections::BTreeMap;
use std::hint::black_box;

use cloudevents::{Event, EventBuilder, EventBuilderV10};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use evmesh_filter::{Filter, FilterIndex, FilterSpec};

fn event(ty: &str) -> Event {
    EventBuilderV10::new()
        .id("A234-1234-1234")
        .source("https://github.com/cloudevents/spec/pull")
        .ty(ty)
        .subject("123")
        .extension("hop", "5")
        .extension("myext", "my-value")
        .data(
            "application/json",
            serde_json::json!({"order": [{"id": 1, "total": 150}], "status": "paid"}),
        )
        .build()
        .expect("the bench event is valid")
}

fn specs(yaml: &str) -> Vec<FilterSpec> {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("bench filter YAML {yaml:?}: {e}"))
}

fn compile(yaml: &str) -> Filter {
    // A filter that fails to compile fails the benchmark (it must never measure match-all).
    Filter::from_specs(&specs(yaml))
        .unwrap_or_else(|e| panic!("bench filter {yaml:?} does not compile: {e}"))
}

fn per_filter(c: &mut Criterion) {
    let ev = event("com.github.push");
    let mut g = c.benchmark_group("filter");
    let cases = [
        ("exact", compile("- exact: {type: com.github.push}")),
        ("prefix", compile("- prefix: {type: com.github.}")),
        (
            "any_all_3_clauses",
            compile(
                "- any:\n    - exact: {type: com.github.pull}\n    - all:\n        - prefix: {type: com.github.}\n        - suffix: {source: /pull}\n",
            ),
        ),
        (
            "cesql_like_int",
            Filter::cesql("type LIKE 'com.github.%' AND INT(hop) < 10")
                .unwrap_or_else(|e| panic!("bench filter does not compile: {e}")),
        ),
        (
            "jsonpath",
            compile("- evmesh.dev/jsonpath: '$.order[?@.total > 100]'"),
        ),
        (
            "legacy_attributes",
            Filter::attributes(&BTreeMap::from([
                ("type".to_owned(), "com.github.push".to_owned()),
                ("myext".to_owned(), String::new()),
            ]))
            .unwrap_or_else(|e| panic!("bench filter does not compile: {e}")),
        ),
    ];
    for (name, f) in &cases {
        assert!(f.matches(&ev), "{name} must match the bench event");
        g.bench_function(*name, |b| b.iter(|| black_box(f.matches(black_box(&ev)))));
    }
    g.finish();
}

/// `n` triggers, each exact on a distinct type `type-<i>`, plus `scan` prefix triggers the index
/// cannot file (tested for every event). The event matches one exact trigger.
fn build_index(n: usize, scan: usize) -> FilterIndex<usize> {
    let mut entries = Vec::with_capacity(n + scan);
    for i in 0..n {
        let f = Filter::exact(&BTreeMap::from([("type".to_owned(), format!("type-{i}"))]))
            .unwrap_or_else(|e| panic!("bench filter does not compile: {e}"));
        entries.push((i, f));
        if scan > 0 && i % (n / scan).max(1) == 0 && entries.len() < n + scan {
            entries.push((n + i, compile("- prefix: {type: other.}")));
        }
    }
    FilterIndex::new(entries)
}

fn index(c: &mut Criterion) {
    let ev = event("type-7");
    for (group, scan) in [
        ("index_matching_exact_only", 0),
        ("index_matching_plus_3_scan", 3),
    ] {
        let mut g = c.benchmark_group(group);
        for n in [10usize, 1_000, 10_000] {
            let idx = build_index(n, scan);
            assert_eq!(idx.scan_len(), scan);
            let mut out = Vec::with_capacity(16);
            idx.matching(&ev, &mut out);
            assert_eq!(out, vec![7]);
            g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| {
                    out.clear();
                    idx.matching(black_box(&ev), &mut out);
                    black_box(out.len())
                })
            });
        }
        g.finish();
    }
}

/// Ten JSONPath triggers over an event whose data arrived as bytes (as a broker holds it):
/// the data is parsed as JSON when a filter reads it.
fn index_jsonpath(c: &mut Criterion) {
    let items: Vec<serde_json::Value> = (0..20)
        .map(|i| serde_json::json!({"sku": format!("A-{i}"), "qty": i, "price": 9.5}))
        .collect();
    let doc = serde_json::json!({"order": {"id": 42, "total": 150, "items": items}});
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    let ev = EventBuilderV10::new()
        .id("1")
        .source("/shop")
        .ty("order.created")
        .data("application/json", bytes)
        .build()
        .expect("the bench event is valid");
    let entries: Vec<(usize, Filter)> = (0..10)
        .map(|i| {
            let yaml = format!("- evmesh.dev/jsonpath: \"$.order.items[?@.sku == 'A-{i}']\"");
            (i, compile(&yaml))
        })
        .collect();
    let idx = FilterIndex::new(entries);
    let mut out = Vec::with_capacity(16);
    idx.matching(&ev, &mut out);
    assert_eq!(out.len(), 10);
    c.bench_function("index_matching_10_jsonpath", |b| {
        b.iter(|| {
            out.clear();
            idx.matching(black_box(&ev), &mut out);
            black_box(out.len())
        })
    });
}

criterion_group!(benches, per_filter, index, index_jsonpath);
criterion_main!(benches);
