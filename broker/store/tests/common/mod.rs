//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::Path;

use evmesh_store::{EngineKind, KvEventStore};

/// Opens a store, failing the test on error.
pub fn open(kind: EngineKind, dir: &Path) -> KvEventStore {
    KvEventStore::open(kind, dir).expect("open store")
}

/// A deterministic payload of about 300 bytes, distinct per `(task, seq)`.
pub fn payload(task: u64, seq: u64) -> Vec<u8> {
    let mut p = format!("task={task} seq={seq} ").into_bytes();
    let fill = (task * 31 + seq) as u8;
    while p.len() < 300 {
        p.push(b'a' + (fill.wrapping_add(p.len() as u8) % 26));
    }
    p
}
