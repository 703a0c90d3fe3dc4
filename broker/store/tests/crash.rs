//! Crash test: a child process appends concurrently and prints every acknowledged offset; the
//! parent kills it with SIGKILL, reopens the store and checks that every acknowledged record is
//! there, intact.
//!
//! The child is this test binary itself, re-run with `--exact crash_child_writer` and the
//! `EVMESH_CRASH_*` variables set.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evmesh_store::{EngineKind, EventStore, LogId};

use common::{open, payload};

const ENGINE_ENV: &str = "EVMESH_CRASH_ENGINE";
const DIR_ENV: &str = "EVMESH_CRASH_DIR";
const ROUND_ENV: &str = "EVMESH_CRASH_ROUND";
const RETENTION_ENV: &str = "EVMESH_CRASH_RETENTION";
/// In retention mode, the child keeps the log under this many payload bytes...
const RETAIN_BYTES: u64 = 1_000_000;
/// ...but never deletes the newest this many records.
const RETAIN_RECORDS: u64 = 2_000;
const WRITERS: u64 = 32;
/// Rounds per engine; `EVMESH_CRASH_ROUNDS` overrides it for longer runs.
const ROUNDS: u64 = 3;
/// How long the child writes before it is killed (plus a per-round jitter of up to 0.5 s, so
/// the kill lands at different points of the commit cycle).
const RUN_FOR: Duration = Duration::from_millis(1500);

fn rounds() -> u64 {
    std::env::var("EVMESH_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS)
}

fn log() -> LogId {
    LogId::new("crash/log")
}

/// Task ids are unique across rounds so every payload is distinct.
fn task_id(round: u64, task: u64) -> u64 {
    round * 1000 + task
}

/// The child's body: does nothing unless started by [`crash_round`].
#[test]
fn crash_child_writer() {
    let (Ok(engine), Ok(dir), Ok(round)) = (
        std::env::var(ENGINE_ENV),
        std::env::var(DIR_ENV),
        std::env::var(ROUND_ENV),
    ) else {
        return;
    };
    let kind: EngineKind = engine.parse().expect("engine");
    let round: u64 = round.parse().expect("round");
    let retention = std::env::var(RETENTION_ENV).is_ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = Arc::new(open(kind, Path::new(&dir)));
        let mut handles = Vec::new();
        for t in 0..WRITERS {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let log = log();
                for i in 0.. {
                    let off = store
                        .append(&log, payload(task_id(round, t), i))
                        .await
                        .expect("append");
                    println!("ACK {off} {} {i} END", task_id(round, t));
                    if t == 0 && i % 20 == 0 {
                        store
                            .put_checkpoint(&format!("crash/{round}"), i.to_be_bytes().to_vec())
                            .expect("checkpoint");
                        store.flush().await.expect("flush");
                        println!("CKPT {round} {i} END");
                    }
                }
            }));
        }
        if retention {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let log = log();
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let next = store.next_offset(&log).expect("next_offset");
                    let keep_from = next.saturating_sub(RETAIN_RECORDS);
                    // Printed before the run: the parent allows deletions below it.
                    println!("RET {keep_from} END");
                    let store = store.clone();
                    let log = log.clone();
                    tokio::task::spawn_blocking(move || {
                        let r = evmesh_store::Retention {
                            max_age: None,
                            max_bytes: Some(RETAIN_BYTES),
                        };
                        store.apply_retention(&log, r, keep_from)
                    })
                    .await
                    .expect("join")
                    .expect("retention");
                }
            }));
        }
        for h in handles {
            h.await.expect("writer");
        }
    });
}

#[derive(Default)]
struct Acks {
    records: Vec<(u64, u64, u64)>,
    checkpoints: Vec<(u64, u64)>,
    /// Highest `keep_from` given to a retention run: records below it may be gone.
    retention_bound: u64,
}

fn parse_line(line: &str, acks: &mut Acks) {
    let parts: Vec<&str> = line.split_whitespace().collect();
    // Only complete lines count: a line cut by the kill lacks its END.
    match parts.as_slice() {
        ["ACK", off, task, seq, "END"] => {
            if let (Ok(o), Ok(t), Ok(s)) = (off.parse(), task.parse(), seq.parse()) {
                acks.records.push((o, t, s));
            }
        }
        ["RET", keep_from, "END"] => {
            if let Ok(k) = keep_from.parse::<u64>() {
                acks.retention_bound = acks.retention_bound.max(k);
            }
        }
        ["CKPT", round, seq, "END"] => {
            if let (Ok(r), Ok(s)) = (round.parse(), seq.parse()) {
                acks.checkpoints.push((r, s));
            }
        }
        _ => {}
    }
}

/// Runs one child until it has acknowledged appends, then for [`RUN_FOR`] more, kills it with SIGKILL and returns what it acknowledged.
fn crash_round(kind: EngineKind, dir: &Path, round: u64, retention: bool) -> Acks {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    if retention {
        cmd.env(RETENTION_ENV, "1");
    }
    let mut child = cmd
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ENGINE_ENV, kind.as_str())
        .env(DIR_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let acks = Arc::new(Mutex::new(Acks::default()));
    let reader = {
        let acks = acks.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                parse_line(&line, &mut acks.lock().expect("acks"));
            }
        })
    };
    // Kill only once the child is demonstrably writing (a slow, loaded machine may take longer
    // than RUN_FOR just to start it), then after a round-dependent extra time.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acks.lock().expect("acks").records.len() < 10 {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{kind}: round {round}: the child acknowledged fewer than 10 appends in 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(RUN_FOR + Duration::from_millis(round * 173 % 500));
    child.kill().expect("kill -9 child");
    child.wait().expect("reap child");
    reader.join().expect("reader");
    Arc::try_unwrap(acks)
        .ok()
        .expect("reader done")
        .into_inner()
        .expect("acks")
}

fn crash_test(kind: EngineKind, retention: bool) {
    let dir: PathBuf = tempfile::tempdir().expect("tempdir").keep();
    let mode = if retention { " with retention" } else { "" };
    let mut all: Vec<(u64, u64, u64)> = Vec::new();
    let mut bound = 0;
    for round in 0..rounds() {
        let acks = crash_round(kind, &dir, round, retention);
        bound = bound.max(acks.retention_bound);
        assert!(
            !acks.records.is_empty(),
            "{kind}: round {round}: the child acknowledged nothing"
        );
        let started = Instant::now();
        let store = evmesh_store::KvEventStore::open(kind, &dir)
            .unwrap_or_else(|e| panic!("{kind}: round {round}: reopen after kill -9 failed: {e}"));
        let reopen = started.elapsed();
        all.extend(&acks.records);
        let log = log();
        let next = store.next_offset(&log).expect("next_offset");
        let first = store
            .first_offset(&log)
            .expect("first_offset")
            .unwrap_or(next);
        let mut lost = 0;
        let mut corrupt = 0;
        for &(off, task, seq) in &all {
            // Retention may have deleted acknowledged records, but only below `bound`, and
            // only from the oldest on.
            if off < first && off < bound {
                continue;
            }
            match store.read(&log, off, 1).expect("read").first() {
                Some(r) if r.offset == off && r.payload == payload(task, seq) => {}
                Some(r) if r.offset == off => corrupt += 1,
                _ => lost += 1,
            }
        }
        // Whatever survived is contiguous from `first` (unacknowledged records may survive).
        let records = store.read(&log, 0, usize::MAX).expect("read all");
        let contiguous = records
            .iter()
            .enumerate()
            .all(|(i, r)| r.offset == first + i as u64)
            && first + records.len() as u64 == next;
        let max_acked = all.iter().map(|a| a.0).max().unwrap_or(0);
        // The last acknowledged checkpoint (or a later one) must be there.
        let ckpt_ok = match acks.checkpoints.iter().map(|c| c.1).max() {
            None => true,
            Some(want) => {
                let got = store.checkpoints(&format!("crash/{round}")).expect("ckpt");
                got.first()
                    .and_then(|(_, v)| v.as_slice().try_into().ok())
                    .map(u64::from_be_bytes)
                    .is_some_and(|v| v >= want)
            }
        };
        eprintln!(
            "CRASH {kind}{mode} round {round}: first_offset {first}, {} acked this round ({} in total), {} records on \
             disk, next_offset {next}, lost {lost}, corrupt {corrupt}, contiguous {contiguous}, \
             checkpoint ok {ckpt_ok}, reopen {:.1} ms",
            acks.records.len(),
            all.len(),
            records.len(),
            reopen.as_secs_f64() * 1000.0
        );
        assert_eq!(lost, 0, "{kind}: round {round}: acknowledged records lost");
        assert_eq!(
            corrupt, 0,
            "{kind}: round {round}: acknowledged records corrupt"
        );
        assert!(contiguous, "{kind}: round {round}: offsets not contiguous");
        assert!(
            next > max_acked,
            "{kind}: round {round}: next_offset went back"
        );
        assert!(ckpt_ok, "{kind}: round {round}: flushed checkpoint lost");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "sled")]
#[test]
fn sled_keeps_every_acknowledged_append_across_kill_9() {
    crash_test(EngineKind::Sled, false);
}

#[cfg(feature = "redb")]
#[test]
fn redb_keeps_every_acknowledged_append_across_kill_9() {
    crash_test(EngineKind::Redb, false);
}

#[cfg(feature = "fjall")]
#[test]
fn fjall_keeps_every_acknowledged_append_across_kill_9() {
    crash_test(EngineKind::Fjall, false);
}

#[cfg(feature = "fjall")]
#[test]
fn segments_keeps_every_acknowledged_append_across_kill_9() {
    crash_test(EngineKind::Segments, false);
}

#[cfg(feature = "sled")]
#[test]
fn sled_keeps_every_acknowledged_append_across_kill_9_during_retention() {
    crash_test(EngineKind::Sled, true);
}

#[cfg(feature = "redb")]
#[test]
fn redb_keeps_every_acknowledged_append_across_kill_9_during_retention() {
    crash_test(EngineKind::Redb, true);
}

#[cfg(feature = "fjall")]
#[test]
fn fjall_keeps_every_acknowledged_append_across_kill_9_during_retention() {
    crash_test(EngineKind::Fjall, true);
}

#[cfg(feature = "fjall")]
#[test]
fn segments_keeps_every_acknowledged_append_across_kill_9_during_retention() {
    crash_test(EngineKind::Segments, true);
}

/// The journal file fjall writes to now: the `.jnl` with the highest number under `dir`.
#[cfg(feature = "fjall")]
fn active_journal(dir: &Path) -> Option<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<(u64, PathBuf)>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jnl"))
                .and_then(|n| n.parse().ok())
            {
                found.push((id, path));
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, &mut found);
    found.into_iter().max().map(|(_, path)| path)
}

/// A crash in the middle of a journal write can leave an item whose header was written and
/// whose rest reads as zeroes (its on-disk value length 0 where its value length is not). The
/// store opens again, keeps every record committed before, and appends on: fjall's recovery
/// truncates the torn batch. (fjall checks that item with a `debug_assert`, which panicked in
/// debug builds such as the tests' until the workspace turned fjall's debug assertions off;
/// its release build reads on and truncates.)
#[cfg(feature = "fjall")]
#[tokio::test]
async fn fjall_opens_after_a_torn_journal_item_and_keeps_what_was_committed() {
    use std::io::{Seek, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(EngineKind::Fjall, dir.path());
        for seq in 0..10 {
            store.append(&log(), payload(1, seq)).await.expect("append");
        }
    }
    let journal = active_journal(dir.path()).expect("a journal file");

    let mut torn = Vec::new();
    torn.push(1u8); // batch start
    torn.extend_from_slice(&1u32.to_le_bytes()); // one item
    torn.extend_from_slice(&u64::MAX.to_le_bytes()[..7]); // seqno, then the item:
    torn.push(0);
    torn.extend_from_slice(&[2, 0, 0]); // item tag, value type, no compression
    torn.extend_from_slice(&0u64.to_le_bytes()); // keyspace
    torn.extend_from_slice(&1u16.to_le_bytes()); // key length
    torn.extend_from_slice(&18u32.to_le_bytes()); // value length...
    torn.extend_from_slice(&[0; 64]); // ...and zeroes where the rest should be
    // fjall preallocates its journal (zeroes past what it wrote): the torn item goes right
    // after the last batch written, where the crash would have left it.
    let bytes = std::fs::read(&journal).expect("read the journal");
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .expect("open the journal");
    file.seek(std::io::SeekFrom::Start(end as u64))
        .and_then(|_| file.write_all(&torn))
        .and_then(|_| file.sync_all())
        .expect("tear the journal");
    let store = open(EngineKind::Fjall, dir.path());
    let records = store.read(&log(), 0, 100).expect("read");
    let payloads: Vec<_> = records.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, (0..10).map(|s| payload(1, s)).collect::<Vec<_>>());
    let next = store
        .append(&log(), payload(1, 10))
        .await
        .expect("append after");
    assert_eq!(next, 10);
}
