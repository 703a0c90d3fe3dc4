//! Group-commit throughput: 64 concurrent appenders of 300-byte payloads, per engine.
//!
//! `cargo bench -p evmesh-store --bench append -- --warm-up-time 1 --measurement-time 5`
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use evmesh_store::{EngineKind, EventStore, KvEventStore, LogId};

const APPENDERS: u64 = 64;
const PAYLOAD: usize = 300;

fn append_64_concurrent(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("append_64_concurrent_300B");
    group.throughput(Throughput::Elements(1));
    for kind in EngineKind::ALL.into_iter().filter(|k| k.is_available()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(KvEventStore::open(kind, dir.path()).expect("open"));
        let log = LogId::new("bench/log");
        let mut total_time = Duration::ZERO;
        let mut total_appends = 0u64;
        let mut total_commits = 0u64;
        group.bench_function(kind.as_str(), |b| {
            b.iter_custom(|iters| {
                let commits_before = store.commit_count();
                let started = Instant::now();
                rt.block_on(append_concurrently(&store, &log, iters));
                let elapsed = started.elapsed();
                total_time += elapsed;
                total_appends += iters;
                total_commits += store.commit_count() - commits_before;
                elapsed
            })
        });
        let secs = total_time.as_secs_f64();
        println!(
            "SUMMARY {kind}: {total_appends} appends in {total_commits} commits over {secs:.1} s: \
             {:.0} appends/s, {:.0} commits/s, {:.1} appends/commit",
            total_appends as f64 / secs,
            total_commits as f64 / secs,
            total_appends as f64 / total_commits.max(1) as f64
        );
        drop(store);
        let started = Instant::now();
        let reopened = KvEventStore::open(kind, dir.path()).expect("reopen");
        let next = reopened.next_offset(&log).expect("next");
        println!(
            "SUMMARY {kind}: clean reopen with {next} records: {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    group.finish();
}

/// Appends `total` payloads to `log` with [`APPENDERS`] concurrent appenders.
async fn append_concurrently(store: &Arc<KvEventStore>, log: &LogId, total: u64) {
    let mut handles = Vec::new();
    for t in 0..APPENDERS {
        let n = total / APPENDERS + u64::from(t < total % APPENDERS);
        let store = store.clone();
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..n {
                store
                    .append(&log, vec![b'x'; PAYLOAD])
                    .await
                    .expect("append");
            }
        }));
    }
    for h in handles {
        h.await.expect("appender");
    }
}

/// One appender at a time: every append waits for its own commit, so this is the latency of
/// one durable engine commit (write + fsync), on a store that already holds 72 MiB of events.
fn append_1_sequential(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("append_1_sequential_300B");
    group.throughput(Throughput::Elements(1));
    for kind in EngineKind::ALL.into_iter().filter(|k| k.is_available()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(KvEventStore::open(kind, dir.path()).expect("open"));
        let log = LogId::new("bench/seq");
        // A store that has run a while: on segments the writer is then in a segment zeroed
        // ahead, with the next spare asked for (not in the first seconds of a fresh store).
        rt.block_on(append_concurrently(
            &store,
            &log,
            (72 << 20) / PAYLOAD as u64,
        ));
        group.bench_function(kind.as_str(), |b| {
            b.iter(|| {
                rt.block_on(store.append(&log, vec![b'x'; PAYLOAD]))
                    .expect("append")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, append_64_concurrent, append_1_sequential);
criterion_main!(benches);
