//! Key layout: `l/<log>\0<offset u64 BE>` → `<appended_ms u64 BE><payload>`,
//! `m/<log>` → `<first u64 BE><next u64 BE><payload bytes u64 BE>`, `c/<key>` → checkpoint blob.

use crate::kv::KvEngine;
use crate::{Offset, Result, StoreError};

/// Per-log metadata, written in the same batch as the records it describes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogMeta {
    /// Lowest offset still stored (`== next` when the log is empty).
    pub(crate) first: Offset,
    /// Offset of the next append.
    pub(crate) next: Offset,
    /// Sum of the payload sizes of the stored records.
    pub(crate) bytes: u64,
}

impl LogMeta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&self.first.to_be_bytes());
        v.extend_from_slice(&self.next.to_be_bytes());
        v.extend_from_slice(&self.bytes.to_be_bytes());
        v
    }

    pub(crate) fn decode(v: &[u8]) -> Result<Self> {
        if v.len() != 24 {
            return Err(corrupt("log metadata"));
        }
        Ok(LogMeta {
            first: be_u64(&v[0..8])?,
            next: be_u64(&v[8..16])?,
            bytes: be_u64(&v[16..24])?,
        })
    }
}

/// Checks a log name can be encoded (it must not contain NUL, the separator).
pub(crate) fn check_log(log: &str) -> Result<()> {
    if log.as_bytes().contains(&0) {
        return Err(StoreError::Engine(format!(
            "invalid log name {log:?}: contains NUL"
        )));
    }
    Ok(())
}

/// `l/<log>\0<offset BE>`.
pub(crate) fn record_key(log: &str, offset: Offset) -> Vec<u8> {
    let mut k = Vec::with_capacity(log.len() + 11);
    k.extend_from_slice(b"l/");
    k.extend_from_slice(log.as_bytes());
    k.push(0);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// The smallest key above every record key of `log`: `l/<log>\x01`.
pub(crate) fn record_end(log: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(log.len() + 3);
    k.extend_from_slice(b"l/");
    k.extend_from_slice(log.as_bytes());
    k.push(1);
    k
}

/// The offset encoded in a record key.
pub(crate) fn offset_of(key: &[u8]) -> Result<Offset> {
    match key.len().checked_sub(8) {
        Some(at) => be_u64(&key[at..]),
        None => Err(corrupt("record key")),
    }
}

/// `<appended_ms BE><payload>`.
pub(crate) fn record_value(appended_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 8);
    v.extend_from_slice(&appended_ms.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Splits a record value into its append time and payload.
pub(crate) fn decode_value(v: &[u8]) -> Result<(u64, &[u8])> {
    if v.len() < 8 {
        return Err(corrupt("record value"));
    }
    Ok((be_u64(&v[..8])?, &v[8..]))
}

/// `m/<log>`.
pub(crate) fn meta_key(log: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(log.len() + 2);
    k.extend_from_slice(b"m/");
    k.extend_from_slice(log.as_bytes());
    k
}

/// `c/<key>`.
pub(crate) fn checkpoint_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.extend_from_slice(b"c/");
    k.extend_from_slice(key.as_bytes());
    k
}

/// The key the store writes to probe the disk while its writes fail.
pub(crate) fn probe_key() -> Vec<u8> {
    b"h/probe".to_vec()
}

/// The smallest key above every key starting with `prefix` (`prefix` must not be all `0xff`,
/// which holds for every key this store makes: they start with an ASCII tag).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Unreachable for our keys; an empty end means "empty range" to the callers.
    end
}

/// The committed metadata of `log` (all zero for a log never written).
pub(crate) fn load_meta(engine: &dyn KvEngine, log: &str) -> Result<LogMeta> {
    match engine.get(&meta_key(log))? {
        Some(v) => LogMeta::decode(&v),
        None => {
            // No metadata: derive it from the records (none for a log never written).
            let start = record_key(log, 0);
            let end = record_end(log);
            match engine.last_key(&start, &end)? {
                None => Ok(LogMeta::default()),
                Some(last) => {
                    let next = offset_of(&last)? + 1;
                    let mut meta = LogMeta {
                        first: next,
                        next,
                        bytes: 0,
                    };
                    let mut from = start;
                    loop {
                        let chunk = engine.scan(&from, &end, 1024)?;
                        let Some((k, _)) = chunk.last() else { break };
                        let mut k = k.clone();
                        for (key, v) in &chunk {
                            meta.first = meta.first.min(offset_of(key)?);
                            meta.bytes += decode_value(v)?.1.len() as u64;
                        }
                        k.push(0);
                        from = k;
                    }
                    Ok(meta)
                }
            }
        }
    }
}

fn be_u64(b: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = b.try_into().map_err(|_| corrupt("integer"))?;
    Ok(u64::from_be_bytes(arr))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Engine(format!("corrupt {what} in store"))
}
