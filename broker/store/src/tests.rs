//! Unit tests of the committer against an in-memory engine that can be made to fail.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::kv::{Batch, KvEngine};
use crate::{EngineKind, EventStore, KvEventStore, LogId, Result, Retention, StoreError};

#[derive(Default)]
struct MemEngine {
    data: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    fail: AtomicBool,
    commits: AtomicUsize,
    /// The scheduling policy each commit ran under (Linux).
    commit_policies: Mutex<Vec<i64>>,
    /// While `hold` is set, scans wait (and count themselves in `waiting`).
    gate: Mutex<Gate>,
    gate_changed: Condvar,
}

#[derive(Default)]
struct Gate {
    hold: bool,
    waiting: usize,
}

impl MemEngine {
    fn hold_scans(&self, hold: bool) {
        self.gate.lock().expect("lock").hold = hold;
        self.gate_changed.notify_all();
    }

    /// Blocks until a scan waits at the gate.
    fn wait_for_held_scan(&self) {
        let mut g = self.gate.lock().expect("lock");
        while g.waiting == 0 {
            g = self.gate_changed.wait(g).expect("lock");
        }
    }
}

impl KvEngine for MemEngine {
    fn commit(&self, batch: Batch) -> Result<()> {
        // Slow enough that concurrent appends queue up behind a commit.
        std::thread::sleep(std::time::Duration::from_millis(2));
        #[cfg(target_os = "linux")]
        if let Some((policy, _)) = crate::committer::policy_and_nice() {
            self.commit_policies.lock().expect("lock").push(policy);
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Engine("disk on fire".into()));
        }
        let mut data = self.data.lock().expect("lock");
        for (start, end) in batch.delete_ranges {
            let keys: Vec<_> = data.range(start..end).map(|(k, _)| k.clone()).collect();
            for k in keys {
                data.remove(&k);
            }
        }
        for (k, v) in batch.writes {
            match v {
                Some(v) => data.insert(k, v),
                None => data.remove(&k),
            };
        }
        self.commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.data.lock().expect("lock").get(key).cloned())
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        {
            let mut g = self.gate.lock().expect("lock");
            if g.hold {
                g.waiting += 1;
                self.gate_changed.notify_all();
                while g.hold {
                    g = self.gate_changed.wait(g).expect("lock");
                }
                g.waiting -= 1;
            }
        }
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(self
            .data
            .lock()
            .expect("lock")
            .range(start.to_vec()..end.to_vec())
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn last_key(&self, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.scan(start, end, usize::MAX)?.pop().map(|(k, _)| k))
    }
}

fn store() -> (Arc<MemEngine>, Arc<KvEventStore>) {
    let engine = Arc::new(MemEngine::default());
    let store = KvEventStore::start(
        EngineKind::Fjall,
        engine.clone(),
        crate::StoreOptions::default(),
    )
    .expect("start");
    (engine, Arc::new(store))
}

async fn append_many(store: &Arc<KvEventStore>, n: usize) -> Vec<Result<u64>> {
    let mut handles = Vec::new();
    for i in 0..n {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store.append(&LogId::new("l"), vec![i as u8]).await
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_engine_commit_fails_every_append_of_the_batch_and_burns_no_offsets() {
    let (engine, store) = store();
    engine.fail.store(true, Ordering::SeqCst);
    let results = append_many(&store, 50).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(StoreError::Engine(_))))
    );
    assert!(store.stats().failed_commits > 0);
    assert_eq!(store.stats().appends, 0);

    engine.fail.store(false, Ordering::SeqCst);
    let mut offsets: Vec<u64> = append_many(&store, 50)
        .await
        .into_iter()
        .map(|r| r.expect("append"))
        .collect();
    offsets.sort();
    assert_eq!(offsets, (0..50).collect::<Vec<_>>());
    assert_eq!(store.next_offset(&LogId::new("l")).expect("next"), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_write_that_failed_to_commit_is_retried_with_the_next_commit() {
    let (engine, store) = store();
    engine.fail.store(true, Ordering::SeqCst);
    store.put_checkpoint("k", b"v".to_vec()).expect("put");
    assert!(store.flush().await.is_err());
    // Still visible to readers while pending.
    assert_eq!(store.checkpoints("k").expect("list").len(), 1);
    engine.fail.store(false, Ordering::SeqCst);
    store.flush().await.expect("flush");
    assert!(engine.get(b"c/k").expect("get").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_resolves_only_after_its_batch_is_committed() {
    let (engine, store) = store();
    let results = append_many(&store, 200).await;
    for r in results {
        let off = r.expect("append");
        assert!(
            engine
                .get(&crate::keys::record_key("l", off))
                .expect("get")
                .is_some()
        );
    }
    let commits = engine.commits.load(Ordering::SeqCst);
    assert!(commits < 100, "{commits} commits for 200 appends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_beyond_the_queued_bytes_bound_fail_busy_and_the_bound_frees_up_after_commit() {
    let engine = Arc::new(MemEngine::default());
    let options = crate::StoreOptions {
        max_queued_bytes: 1,
        ..Default::default()
    };
    let store = Arc::new(KvEventStore::start(EngineKind::Fjall, engine, options).expect("start"));
    let results = append_many(&store, 50).await;
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Busy { .. })))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(busy > 0, "no append was refused");
    assert_eq!(ok + busy, 50, "{results:?}");
    // Every admitted append was stored, at the offsets handed out.
    assert_eq!(
        store.next_offset(&LogId::new("l")).expect("next"),
        ok as u64
    );
    // With nothing queued, an append is admitted again.
    store
        .append(&LogId::new("l"), vec![0; 100])
        .await
        .expect("admitted when the queue is empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_reports_it_and_recovers_by_itself_once_writes_succeed() {
    let (engine, store) = store();
    assert!(store.health().is_ok());
    engine.fail.store(true, Ordering::SeqCst);
    assert!(store.append(&LogId::new("l"), vec![1]).await.is_err());
    let reason = store.health().expect_err("failing after a failed commit");
    assert!(reason.to_string().contains("disk on fire"), "{reason}");
    engine.fail.store(false, Ordering::SeqCst);
    // No request needed: the committer probes the disk by itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.health().is_err() {
        assert!(std::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        store
            .append(&LogId::new("l"), vec![2])
            .await
            .expect("append"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_commit_while_a_retention_run_reads_the_log() {
    let (engine, store) = store();
    let log = LogId::new("l");
    for i in 0..10 {
        store.append(&log, vec![i]).await.expect("append");
    }
    // The retention run stops in the middle of reading the log ...
    engine.hold_scans(true);
    let s = store.clone();
    let retention = std::thread::spawn(move || {
        let everything = Retention {
            max_age: None,
            max_bytes: Some(0),
        };
        s.apply_retention(&LogId::new("l"), everything, u64::MAX)
    });
    engine.wait_for_held_scan();
    // ... and the committer is not the one reading: an append commits meanwhile.
    let appended = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        store.append(&log, vec![99]),
    )
    .await
    .expect("the append waited for the retention run")
    .expect("append");
    assert_eq!(appended, 10);
    engine.hold_scans(false);
    let deleted = retention.join().expect("join").expect("retention");
    // It deletes what it found when it started, and the record appended meanwhile stays.
    assert_eq!(deleted, 10);
    assert_eq!(store.first_offset(&log).expect("first"), Some(10));
    let left = store.read(&log, 0, 100).expect("read");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].payload, vec![99]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_to_several_logs_in_one_batch_get_each_log_s_next_offsets_in_order() {
    let (engine, store) = store();
    let (a, b) = (LogId::new("a"), LogId::new("b"));
    // Sent in this order (each append sends its request when first polled): a, b, a, a, b, ...
    // The first commit takes 2 ms, so the rest queue behind it and go in one batch, runs of
    // one log interleaved with the other's.
    let order: Vec<&LogId> = [&a, &b, &a, &a, &b, &b, &a, &b, &a, &a, &a, &b]
        .into_iter()
        .collect();
    let offsets: Vec<u64> = poll_together(
        order
            .iter()
            .enumerate()
            .map(|(i, log)| store.append(log, vec![i as u8]))
            .collect(),
    )
    .await
    .into_iter()
    .map(|r| r.expect("append"))
    .collect();
    assert!(
        engine.commits.load(Ordering::SeqCst) < order.len(),
        "the appends were not batched"
    );
    for log in [&a, &b] {
        let got: Vec<u64> = order
            .iter()
            .zip(&offsets)
            .filter(|(l, _)| **l == log)
            .map(|(_, o)| *o)
            .collect();
        let n = got.len() as u64;
        assert_eq!(got, (0..n).collect::<Vec<_>>(), "log {}", log.as_str());
        assert_eq!(store.next_offset(log).expect("next"), n);
        let payloads: Vec<u8> = store
            .read(log, 0, 100)
            .expect("read")
            .into_iter()
            .map(|r| r.payload[0])
            .collect();
        let sent: Vec<u8> = order
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == log)
            .map(|(i, _)| i as u8)
            .collect();
        assert_eq!(payloads, sent, "log {}", log.as_str());
    }
}

/// The calling thread's (policy, nice value), read from `/proc/thread-self/stat`.
#[cfg(target_os = "linux")]
fn own_policy_and_nice() -> (i64, i64) {
    crate::committer::policy_and_nice().expect("own stat")
}

#[cfg(target_os = "linux")]
const SCHED_OTHER: i64 = 0;
#[cfg(target_os = "linux")]
const SCHED_BATCH: i64 = 3;

/// Runs `f` on a thread of its own, as the committer has, when threads start under the normal
/// policy at nice 0 here (otherwise the committer leaves its policy alone, and so does `f`'s
/// subject: nothing to check).
#[cfg(target_os = "linux")]
fn on_a_normal_thread(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        if own_policy_and_nice() != (SCHED_OTHER, 0) {
            eprintln!("threads start under another policy here: left alone, as documented");
            return;
        }
        f();
    })
    .join()
    .expect("thread");
}

#[cfg(target_os = "linux")]
#[test]
fn the_commit_thread_s_policy_follows_the_size_of_its_group_commits() {
    use crate::committer::{BUSY_FOR, QUIET_COMMITS, SchedPolicy};
    // A thread started under SCHED_BATCH (somebody's choice) is left alone.
    on_a_normal_thread(|| {
        crate::committer::set_batch(true).expect("set SCHED_BATCH");
        let mut policy = SchedPolicy::new();
        policy.observe(8);
        for _ in 0..QUIET_COMMITS {
            policy.observe(1);
        }
        assert_eq!(own_policy_and_nice(), (SCHED_BATCH, 0), "left alone");
    });
    // A thread of its own, as the committer has.
    std::thread::spawn(|| {
        let started = own_policy_and_nice();
        let mut policy = SchedPolicy::new();
        if started != (SCHED_OTHER, 0) {
            policy.observe(100);
            assert_eq!(own_policy_and_nice(), started, "left alone");
            eprintln!("(policy, nice) {started:?}: left as it is, as documented");
            return;
        }
        // (appends in a commit, the policy after it)
        let mut steps = vec![(2, SCHED_OTHER), (8, SCHED_BATCH), (2, SCHED_BATCH)];
        // Quiet commits: the policy changes back at the last of QUIET_COMMITS in a row.
        steps.extend((1..QUIET_COMMITS).map(|_| (1, SCHED_BATCH)));
        steps.push((3, SCHED_BATCH)); // a larger one starts the count again
        steps.extend((1..QUIET_COMMITS).map(|_| (1, SCHED_BATCH)));
        steps.push((0, SCHED_BATCH)); // a commit of checkpoints alone changes nothing
        steps.push((1, SCHED_OTHER));
        steps.extend([(3, SCHED_OTHER), (4, SCHED_BATCH)]);
        for (appends, expected) in steps {
            policy.observe(appends);
            assert_eq!(
                own_policy_and_nice(),
                (expected, 0),
                "after a commit of {appends}"
            );
            assert_eq!(policy.is_batch(), expected == SCHED_BATCH);
        }
        // A request BUSY_FOR or more after the last large commit: back before its commit.
        let t0 = std::time::Instant::now();
        let ms = std::time::Duration::from_millis;
        let policy_is = |expected: i64, when: &str| {
            assert_eq!(own_policy_and_nice(), (expected, 0), "{when}");
        };
        policy.observe_at(8, t0);
        policy_is(SCHED_BATCH, "after a large commit");
        policy.wake_at(t0 + ms(30));
        policy.observe_at(1, t0 + ms(30));
        policy_is(SCHED_BATCH, "a request within BUSY_FOR");
        policy.observe_at(5, t0 + ms(40)); // a large commit starts the time again
        policy.wake_at(t0 + BUSY_FOR + ms(10));
        policy_is(SCHED_BATCH, "within BUSY_FOR of the last large commit");
        policy.wake_at(t0 + ms(40) + BUSY_FOR);
        policy_is(
            SCHED_OTHER,
            "a request BUSY_FOR after the last large commit",
        );
        assert!(!policy.is_batch());
        // A commit without appends (a checkpoint) after that changes nothing.
        policy.observe_at(0, t0 + ms(200));
        policy_is(SCHED_OTHER, "after a commit of checkpoints alone");
    })
    .join()
    .expect("thread");
}

#[cfg(target_os = "linux")]
#[test]
fn a_busy_commit_thread_waits_under_sched_batch_and_commits_under_the_normal_policy() {
    use crate::committer::SchedPolicy;
    on_a_normal_thread(|| {
        let mut policy = SchedPolicy::new();
        policy.commit_starts();
        policy.observe(8);
        assert_eq!(own_policy_and_nice(), (SCHED_BATCH, 0), "waits");
        policy.commit_starts();
        assert_eq!(own_policy_and_nice(), (SCHED_OTHER, 0), "commits");
        assert!(policy.is_batch(), "still busy");
        policy.observe(0);
        assert_eq!(
            own_policy_and_nice(),
            (SCHED_BATCH, 0),
            "waits again after a commit of checkpoints alone"
        );
    });
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn under_load_every_group_commit_runs_under_the_normal_policy() {
    if own_policy_and_nice() != (SCHED_OTHER, 0) {
        eprintln!("started under another policy: the committer leaves it alone");
        return;
    }
    let (engine, store) = store();
    let log = LogId::new("l");
    // Rounds of twelve appends sent together, one after another: the committer is busy
    // (SCHED_BATCH while it waits) from the first large commit on.
    for _ in 0..4 {
        append_twelve_together(&store, &log).await;
    }
    assert!(settles_on(&store, true).await, "never busy");
    let policies = engine.commit_policies.lock().expect("lock").clone();
    assert!(policies.len() > 2, "{policies:?}");
    assert!(
        policies.iter().all(|p| *p == SCHED_OTHER),
        "a commit ran under SCHED_BATCH: {policies:?}"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_large_group_commit_puts_the_committer_under_sched_batch_and_quiet_ones_back() {
    use crate::committer::{BUSY_FOR, QUIET_COMMITS};
    // The committer starts with this thread's policy and nice value.
    let normal = own_policy_and_nice() == (0, 0);
    let (engine, store) = store();
    let log = LogId::new("l");
    // A try in which BUSY_FOR passed since the large commit may legitimately end under the
    // normal policy early (a busy machine can stall the committer or this test that long): it
    // proves nothing either way, and is made again.
    for attempt in 0..5 {
        if attempt > 0 {
            // What an earlier try left is undone by the next commit after this pause.
            tokio::time::sleep(BUSY_FOR + std::time::Duration::from_millis(20)).await;
        }
        let started = std::time::Instant::now();
        let commits = engine.commits.load(Ordering::SeqCst);
        if !enter_a_large_commit(&store, &log, normal).await {
            continue;
        }
        assert!(
            engine.commits.load(Ordering::SeqCst) - commits < 12,
            "not batched"
        );
        // One at a time: each its own commit.
        let mut conclusive = true;
        for i in 0..QUIET_COMMITS {
            let policy = store.committer_batch_policy();
            if started.elapsed() >= BUSY_FOR {
                conclusive = false;
                break;
            }
            assert_eq!(policy, normal, "after {i} quiet");
            store.append(&log, vec![99]).await.expect("append");
        }
        if conclusive {
            assert!(settles_on(&store, false).await, "still under SCHED_BATCH");
            return;
        }
    }
    panic!("five tries each took longer than {BUSY_FOR:?} from the large commit on");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_first_commit_after_a_load_stopped_runs_under_the_normal_policy() {
    let normal = own_policy_and_nice() == (0, 0);
    let (_engine, store) = store();
    let log = LogId::new("l");
    let mut entered = false;
    for _ in 0..5 {
        entered = enter_a_large_commit(&store, &log, normal).await;
        if entered {
            break;
        }
    }
    assert!(
        entered,
        "twelve appends sent together never made a large group commit"
    );
    // Nothing for a while, then one append: committed under the normal policy again.
    tokio::time::sleep(crate::committer::BUSY_FOR + std::time::Duration::from_millis(20)).await;
    store.append(&log, vec![99]).await.expect("append");
    assert!(settles_on(&store, false).await, "still under SCHED_BATCH");
}

/// Sends twelve appends together (see [`append_twelve_together`]); whether the committer then
/// runs under `SCHED_BATCH` as expected (`normal`: when its thread started under the normal
/// policy at nice 0). Not on a busy machine that trickled the appends into small commits, or
/// stalled the committer for `BUSY_FOR` after its large one: the caller tries again.
#[cfg(target_os = "linux")]
async fn enter_a_large_commit(store: &KvEventStore, log: &LogId, normal: bool) -> bool {
    append_twelve_together(store, log).await;
    settles_on(store, normal).await
}

/// Whether the committer's policy reads `batch` within 200 ms: it records the policy after a
/// commit's answers are sent, so a reader woken by its answer may come first.
#[cfg(target_os = "linux")]
async fn settles_on(store: &KvEventStore, batch: bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
    while store.committer_batch_policy() != batch {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    true
}

/// Sends 12 appends together: the first commit takes 2 ms, so they share one or two commits
/// (a large group commit).
#[cfg(target_os = "linux")]
async fn append_twelve_together(store: &KvEventStore, log: &LogId) {
    let appends = (0..12u8).map(|i| store.append(log, vec![i])).collect();
    for r in poll_together(appends).await {
        r.expect("append");
    }
}

/// Polls the futures together until all are ready, and gives their outputs in their order
/// (an append sends its request when first polled: in this order).
async fn poll_together<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// A failed `fdatasync` of the segments engine fails the appends of its commit; none of them is
/// read back, the store reopens the engine (which reads the files again) and recovers by itself,
/// and the failed appends' offsets are given out again.
#[cfg(all(feature = "fjall", unix))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_fails_its_appends_and_the_store_recovers_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = KvEventStore::open(EngineKind::Segments, dir.path()).expect("open");
    let log = LogId::new("l");
    for i in 0..10u8 {
        assert_eq!(
            store.append(&log, vec![i]).await.expect("append"),
            u64::from(i)
        );
    }
    crate::segments_engine::test_faults::fail_syncs(dir.path(), 1);
    let err = store
        .append(&log, vec![99])
        .await
        .expect_err("the sync fails");
    assert!(err.to_string().contains("injected"), "{err}");
    assert!(
        store.health().is_err(),
        "failing until the engine is reopened"
    );
    assert_eq!(store.read(&log, 0, 100).expect("read").len(), 10);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.health().is_err() {
        assert!(std::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(store.append(&log, vec![42]).await.expect("append"), 10);
    drop(store);
    let store = KvEventStore::open(EngineKind::Segments, dir.path()).expect("reopen");
    let payloads: Vec<Vec<u8>> = store
        .read(&log, 0, 100)
        .expect("read")
        .into_iter()
        .map(|r| r.payload)
        .collect();
    let mut expected: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
    expected.push(vec![42]);
    assert_eq!(payloads, expected, "exactly the acknowledged appends");
}

/// On segments the metadata and checkpoints a commit hands to the OS are synced once a second
/// after the answers; when the load stops, the idle committer syncs them.
#[cfg(all(feature = "fjall", unix))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_store_syncs_the_metadata_its_last_commits_left_to_the_os() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opened = std::time::Instant::now();
    let engine = Arc::new(
        crate::segments_engine::SegmentsEngine::open(
            dir.path(),
            &crate::StoreOptions::default(),
            Arc::default(),
        )
        .expect("open"),
    );
    let store = KvEventStore::start(
        EngineKind::Segments,
        engine.clone(),
        crate::StoreOptions::default(),
    )
    .expect("start");
    store
        .append(&LogId::new("l"), vec![1])
        .await
        .expect("append");
    // (Within the engine's first second its commits leave the metadata to the sync later.)
    if opened.elapsed() < std::time::Duration::from_millis(900) {
        assert!(
            engine.meta_unsynced(),
            "the commit handed the metadata to the OS"
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while engine.meta_unsynced() {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle store never synced the metadata"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
