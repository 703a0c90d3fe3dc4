//! Behaviour of the embedded store, run for every engine.

mod common;

use std::time::Duration;

use evmesh_store::{EngineKind, EventStore, LogId, Retention};

use common::{open, payload};

async fn appends_resolve_with_contiguous_offsets_and_read_back_in_order(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(kind, dir.path());
    let log = LogId::new("default/broker");
    assert_eq!(store.next_offset(&log).expect("next"), 0);
    assert_eq!(store.first_offset(&log).expect("first"), None);
    for i in 0..10 {
        assert_eq!(store.append(&log, payload(0, i)).await.expect("append"), i);
    }
    let records = store.read(&log, 0, 100).expect("read");
    assert_eq!(records.len(), 10);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.payload, payload(0, i as u64));
        assert!(r.appended_ms > 0);
    }
    let some = store.read(&log, 4, 3).expect("read");
    assert_eq!(
        some.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    assert!(store.read(&log, 10, 5).expect("read").is_empty());
    assert_eq!(store.next_offset(&log).expect("next"), 10);
    assert_eq!(store.first_offset(&log).expect("first"), Some(0));
}

async fn logs_are_independent(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(kind, dir.path());
    // "a" is a prefix of "a/b": their keys must not mix.
    let a = LogId::new("a");
    let ab = LogId::new("a/b");
    for i in 0..3 {
        assert_eq!(store.append(&a, b"a".to_vec()).await.expect("append"), i);
        assert_eq!(store.append(&ab, b"ab".to_vec()).await.expect("append"), i);
    }
    assert_eq!(store.append(&a, b"a".to_vec()).await.expect("append"), 3);
    assert_eq!(store.read(&a, 0, 100).expect("read").len(), 4);
    assert_eq!(store.read(&ab, 0, 100).expect("read").len(), 3);
    assert!(
        store
            .read(&ab, 0, 100)
            .expect("read")
            .iter()
            .all(|r| r.payload == b"ab")
    );
    assert_eq!(store.next_offset(&LogId::new("other")).expect("next"), 0);
    assert!(
        store
            .append(&LogId::new("bad\0name"), vec![])
            .await
            .is_err()
    );
}

async fn reopen_keeps_records_offsets_and_checkpoints(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = LogId::new("ns/b");
    {
        let store = open(kind, dir.path());
        for i in 0..20 {
            store.append(&log, payload(1, i)).await.expect("append");
        }
        store
            .put_checkpoint("ns/b/t1", b"17".to_vec())
            .expect("ckpt");
        store.flush().await.expect("flush");
    }
    let store = open(kind, dir.path());
    assert_eq!(store.next_offset(&log).expect("next"), 20);
    assert_eq!(store.first_offset(&log).expect("first"), Some(0));
    let records = store.read(&log, 0, 100).expect("read");
    assert_eq!(records.len(), 20);
    for r in &records {
        assert_eq!(r.payload, payload(1, r.offset));
    }
    assert_eq!(
        store.checkpoints("ns/b/").expect("list"),
        vec![("ns/b/t1".to_string(), b"17".to_vec())]
    );
    assert_eq!(
        store.append(&log, b"more".to_vec()).await.expect("append"),
        20
    );
}

async fn concurrent_appends_get_unique_contiguous_offsets_in_few_commits(kind: EngineKind) {
    const TASKS: u64 = 100;
    const PER_TASK: u64 = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = std::sync::Arc::new(open(kind, dir.path()));
    let log = LogId::new("default/busy");
    let before = store.commit_count();
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..PER_TASK {
                let off = store.append(&log, payload(t, i)).await.expect("append");
                got.push((off, t, i));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("task"));
    }
    let commits = store.commit_count() - before;
    all.sort();
    let total = TASKS * PER_TASK;
    assert_eq!(all.len() as u64, total);
    for (i, (off, _, _)) in all.iter().enumerate() {
        assert_eq!(*off, i as u64, "offsets must be unique and contiguous");
    }
    let records = store.read(&log, 0, total as usize + 1).expect("read");
    assert_eq!(records.len() as u64, total);
    for ((off, t, i), r) in all.iter().zip(&records) {
        assert_eq!(r.offset, *off);
        assert_eq!(r.payload, payload(*t, *i));
    }
    eprintln!("{kind}: {total} concurrent appends in {commits} commits");
    assert!(
        commits <= total / 5,
        "{kind}: {commits} commits for {total} appends: no group commit"
    );
    assert_eq!(store.stats().appends, total);
}

async fn checkpoints_put_replace_delete_and_list_by_prefix(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(kind, dir.path());
    store.put_checkpoint("b1/t1", b"1".to_vec()).expect("put");
    store.put_checkpoint("b1/t2", b"2".to_vec()).expect("put");
    store.put_checkpoint("b2/t1", b"x".to_vec()).expect("put");
    // Visible at once (pending writes are overlaid), and after the commit.
    assert_eq!(store.checkpoints("b1/").expect("list").len(), 2);
    store.flush().await.expect("flush");
    store
        .put_checkpoint("b1/t1", b"10".to_vec())
        .expect("replace");
    store.delete_checkpoint("b1/t2").expect("delete");
    store.delete_checkpoint("missing").expect("delete missing");
    let want_b1 = vec![("b1/t1".to_string(), b"10".to_vec())];
    assert_eq!(store.checkpoints("b1/").expect("list"), want_b1);
    // Checkpoint writes alone are committed within a few milliseconds, without a flush.
    let before = store.commit_count();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.commit_count() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "checkpoints were not committed within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(store.checkpoints("b1/").expect("list"), want_b1);
    assert_eq!(store.checkpoints("").expect("list").len(), 2);
    assert_eq!(
        store.checkpoints("b2").expect("list"),
        vec![("b2/t1".to_string(), b"x".to_vec())]
    );
    assert!(store.checkpoints("zzz").expect("list").is_empty());
}

async fn checkpoints_are_durable_after_flush_and_reopen(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(kind, dir.path());
        store.put_checkpoint("k/a", b"a1".to_vec()).expect("put");
        store.put_checkpoint("k/b", b"b1".to_vec()).expect("put");
        store.flush().await.expect("flush");
        store.put_checkpoint("k/a", b"a2".to_vec()).expect("put");
        store.delete_checkpoint("k/b").expect("delete");
        store.flush().await.expect("flush");
    }
    let store = open(kind, dir.path());
    assert_eq!(
        store.checkpoints("k/").expect("list"),
        vec![("k/a".to_string(), b"a2".to_vec())]
    );
}

async fn checkpoints_written_just_before_drop_survive(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(kind, dir.path());
        store
            .put_checkpoint("last", b"words".to_vec())
            .expect("put");
    }
    let store = open(kind, dir.path());
    assert_eq!(
        store.checkpoints("last").expect("list"),
        vec![("last".to_string(), b"words".to_vec())]
    );
}

async fn retention_by_age_deletes_only_old_records(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(kind, dir.path());
    let log = LogId::new("ret/age");
    for i in 0..5 {
        store.append(&log, payload(0, i)).await.expect("append");
    }
    // Age is the input here: the old records are 1 s old, the new ones get 500 ms of slack.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for i in 5..10 {
        store.append(&log, payload(0, i)).await.expect("append");
    }
    let r = Retention {
        max_age: Some(Duration::from_millis(500)),
        max_bytes: None,
    };
    assert_eq!(
        store.apply_retention(&log, r, u64::MAX).expect("retention"),
        5
    );
    assert_eq!(store.first_offset(&log).expect("first"), Some(5));
    assert_eq!(store.next_offset(&log).expect("next"), 10);
    let left = store.read(&log, 0, 100).expect("read");
    assert_eq!(left.first().map(|r| r.offset), Some(5));
    assert_eq!(left.len(), 5);
    assert_eq!(store.apply_retention(&log, r, u64::MAX).expect("again"), 0);
}

async fn retention_by_bytes_keeps_the_newest_within_the_limit(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(kind, dir.path());
    let log = LogId::new("ret/bytes");
    for i in 0..10u8 {
        store.append(&log, vec![i; 100]).await.expect("append");
    }
    let r = Retention {
        max_age: None,
        max_bytes: Some(550),
    };
    assert_eq!(
        store.apply_retention(&log, r, u64::MAX).expect("retention"),
        5
    );
    let left = store.read(&log, 0, 100).expect("read");
    assert_eq!(left.len(), 5);
    assert_eq!(left[0].payload, vec![5u8; 100]);
    // The byte total is kept across reopen.
    drop(store);
    let store = open(kind, dir.path());
    let r = Retention {
        max_age: None,
        max_bytes: Some(300),
    };
    assert_eq!(
        store.apply_retention(&log, r, u64::MAX).expect("retention"),
        2
    );
    assert_eq!(store.first_offset(&log).expect("first"), Some(7));
}

async fn retention_never_deletes_from_keep_from_on(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(kind, dir.path());
    let log = LogId::new("ret/pinned");
    for i in 0..10 {
        store.append(&log, payload(0, i)).await.expect("append");
    }
    let everything = Retention {
        max_age: None,
        max_bytes: Some(0),
    };
    assert_eq!(
        store
            .apply_retention(&log, everything, 3)
            .expect("retention"),
        3
    );
    assert_eq!(store.first_offset(&log).expect("first"), Some(3));
    assert_eq!(
        store
            .apply_retention(&log, everything, 3)
            .expect("retention"),
        0
    );
    assert_eq!(store.read(&log, 0, 100).expect("read").len(), 7);
}

async fn retention_of_everything_keeps_next_offset_across_reopen(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = LogId::new("ret/all");
    {
        let store = open(kind, dir.path());
        for i in 0..4 {
            store.append(&log, payload(0, i)).await.expect("append");
        }
        let everything = Retention {
            max_age: None,
            max_bytes: Some(0),
        };
        assert_eq!(
            store
                .apply_retention(&log, everything, u64::MAX)
                .expect("retention"),
            4
        );
        assert_eq!(store.first_offset(&log).expect("first"), None);
        assert_eq!(store.next_offset(&log).expect("next"), 4);
    }
    let store = open(kind, dir.path());
    assert_eq!(store.first_offset(&log).expect("first"), None);
    assert_eq!(store.next_offset(&log).expect("next"), 4);
    assert_eq!(store.append(&log, b"x".to_vec()).await.expect("append"), 4);
    assert_eq!(store.first_offset(&log).expect("first"), Some(4));
}

async fn closed_store_refuses_appends(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(kind, dir.path());
    let log = LogId::new("c");
    store.append(&log, b"x".to_vec()).await.expect("append");
    store.close();
    assert!(matches!(
        store.append(&log, b"y".to_vec()).await,
        Err(evmesh_store::StoreError::Closed)
    ));
    assert!(store.put_checkpoint("k", vec![]).is_err());
    assert!(store.flush().await.is_err());
    assert_eq!(store.read(&log, 0, 10).expect("read").len(), 1);
}

async fn open_through_the_trait_object(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = evmesh_store::open(kind, dir.path()).expect("open");
    let log = LogId::new("dyn");
    assert_eq!(store.append(&log, b"x".to_vec()).await.expect("append"), 0);
    assert_eq!(store.read(&log, 0, 1).expect("read")[0].payload, b"x");
}

macro_rules! engine_tests {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn appends_resolve_with_contiguous_offsets_and_read_back_in_order() {
                super::appends_resolve_with_contiguous_offsets_and_read_back_in_order($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn logs_are_independent() {
                super::logs_are_independent($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reopen_keeps_records_offsets_and_checkpoints() {
                super::reopen_keeps_records_offsets_and_checkpoints($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_appends_get_unique_contiguous_offsets_in_few_commits() {
                super::concurrent_appends_get_unique_contiguous_offsets_in_few_commits($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn checkpoints_put_replace_delete_and_list_by_prefix() {
                super::checkpoints_put_replace_delete_and_list_by_prefix($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn checkpoints_are_durable_after_flush_and_reopen() {
                super::checkpoints_are_durable_after_flush_and_reopen($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn checkpoints_written_just_before_drop_survive() {
                super::checkpoints_written_just_before_drop_survive($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retention_by_age_deletes_only_old_records() {
                super::retention_by_age_deletes_only_old_records($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retention_by_bytes_keeps_the_newest_within_the_limit() {
                super::retention_by_bytes_keeps_the_newest_within_the_limit($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retention_never_deletes_from_keep_from_on() {
                super::retention_never_deletes_from_keep_from_on($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retention_of_everything_keeps_next_offset_across_reopen() {
                super::retention_of_everything_keeps_next_offset_across_reopen($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn closed_store_refuses_appends() {
                super::closed_store_refuses_appends($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn open_through_the_trait_object() {
                super::open_through_the_trait_object($kind).await
            }
        }
    };
}

// Each engine's tests run when its cargo feature is on (`cargo test --workspace` turns on all).
#[cfg(feature = "sled")]
engine_tests!(sled, EngineKind::Sled);
#[cfg(feature = "redb")]
engine_tests!(redb, EngineKind::Redb);
#[cfg(feature = "fjall")]
engine_tests!(fjall, EngineKind::Fjall);
#[cfg(feature = "fjall")]
engine_tests!(segments, EngineKind::Segments);
