//! Replay: finding the log position a trigger is moved to (`earliest`, or the first record
//! appended at or after a time, by binary search over the records' append times).

use evmesh_config::ReplayFrom;
use evmesh_store::{EventStore, LogId, Offset};

/// Why a replay was not done.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No such trigger.
    #[error("trigger {0} not found")]
    NotFound(String),
    /// The trigger exists but does not run (it is not ready).
    #[error("trigger {0} is not ready: {1}")]
    NotReady(String, String),
    /// The trigger's worker failed to replay (reading the log failed, or it is stopping).
    #[error("replay of trigger {0} failed: {1}")]
    Failed(String, String),
}

/// The offset `from` designates in `log`: the oldest record still stored for `earliest`, else
/// the first record appended at or after the time. Append times follow the wall clock, so a
/// clock step backwards makes the search approximate around that step. A time after the last
/// record gives the log's end (only new events).
pub(crate) fn seek(
    store: &dyn EventStore,
    log: &LogId,
    from: ReplayFrom,
) -> Result<Offset, String> {
    let head = store.next_offset(log).map_err(|e| e.to_string())?;
    let first = store
        .first_offset(log)
        .map_err(|e| e.to_string())?
        .unwrap_or(head);
    let at_ms = match from {
        ReplayFrom::Earliest => return Ok(first),
        ReplayFrom::TimeMs(ms) => ms,
    };
    let (mut lo, mut hi) = (first, head);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match store
            .read(log, mid, 1)
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
        {
            Some(r) if r.appended_ms < at_ms => lo = r.offset + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn seek_finds_earliest_and_first_record_at_or_after_a_time() {
        let dir = tempfile_dir();
        let store = evmesh_store::open(Default::default(), &dir).expect("open store");
        let log = LogId::new("ns/b");
        assert_eq!(seek(store.as_ref(), &log, ReplayFrom::Earliest), Ok(0));
        let mut times = Vec::new();
        for i in 0..20u8 {
            store.append(&log, vec![i]).await.expect("append");
            let rec = store.read(&log, u64::from(i), 1).expect("read");
            times.push(rec[0].appended_ms);
            // Records appended in distinct milliseconds, so every time designates one record.
            let t = rec[0].appended_ms;
            while evmesh_now_ms() <= t {
                std::thread::yield_now();
            }
        }
        assert_eq!(seek(store.as_ref(), &log, ReplayFrom::Earliest), Ok(0));
        for (i, &t) in times.iter().enumerate() {
            assert_eq!(
                seek(store.as_ref(), &log, ReplayFrom::TimeMs(t)),
                Ok(i as u64)
            );
        }
        assert_eq!(seek(store.as_ref(), &log, ReplayFrom::TimeMs(0)), Ok(0));
        assert_eq!(
            seek(store.as_ref(), &log, ReplayFrom::TimeMs(times[19] + 1)),
            Ok(20)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn evmesh_now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("evmesh-seek-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }
}
