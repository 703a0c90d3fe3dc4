//! Disk full: with the data dir on a small tmpfs filled up, no event is answered 202 unless it
//! was stored, `/readyz` reports the store, and once space returns the store recovers by itself
//! and every event answered 202 is delivered. Needs `mount -t tmpfs` (root); where mount is not
//! permitted the test says so and passes without running.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) -> PathBuf {
    let file = path.join("filler");
    let mut f = std::fs::File::create(&file).expect("create filler");
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // Byte by byte for the last partial chunk.
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
    file
}

async fn post(url: &str, id: &str, data: &str) -> (u16, Option<String>) {
    let resp = client()
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/disk")
        .header("ce-type", "t")
        .header("content-type", "text/plain")
        .body(data.to_string())
        .send()
        .await
        .expect("post");
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (resp.status().as_u16(), retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_gets_202_for_an_unstored_event_and_the_store_recovers_when_space_returns()
 {
    let Some(fs) = Tmpfs::mount("16m") else {
        println!("SKIPPED: mounting a tmpfs is not permitted here (needs root)");
        return;
    };
    let sink = TestSink::start().await;
    let yaml = broker_and_trigger(&sink, "");
    let mesh = mesh_at(&fs.path().join("data"), &yaml, |o| o).await;
    let base = mesh.url().as_str().trim_end_matches('/').to_string();
    let url = format!("{base}/demo/default");
    let readyz = format!("{base}/readyz");
    assert_eq!(post(&url, "before", "x").await.0, 202);
    assert_eq!(get_json(&readyz).await.0, 200);

    let filler = fill(fs.path());
    let data = "d".repeat(32 * 1024);
    let mut accepted = vec!["before".to_string()];
    let mut refused = 0;
    let mut ready_while_full = None;
    // Post until refused, then some more while the disk stays full: each answer is 202 (the
    // event is durably stored: a write that fit) or 503 with Retry-After, never anything else.
    for i in 0..200 {
        let id = format!("full{i}");
        match post(&url, &id, &data).await {
            (202, _) => accepted.push(id),
            (503, retry_after) => {
                assert_eq!(retry_after.as_deref(), Some("1"), "503 has Retry-After");
                if refused == 0 {
                    let resp = client().get(&readyz).send().await.expect("readyz");
                    let status = resp.status().as_u16();
                    ready_while_full = Some((status, resp.text().await.unwrap_or_default()));
                }
                refused += 1;
                if refused == 20 {
                    break;
                }
            }
            (other, _) => panic!("event {id}: {other} while the disk is full"),
        }
    }
    assert!(refused > 0, "no event was refused while the disk was full");
    let (status, reason) = ready_while_full.expect("readyz checked");
    assert_eq!(status, 503, "readyz right after a refused event: {reason}");
    assert!(reason.contains("store"), "{reason}");

    std::fs::remove_file(&filler).expect("free space");
    // Ready again by itself, without any event being sent.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = get_json(&readyz).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the store did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post(&url, "after", &data).await.0, 202);
    accepted.push("after".to_string());
    eventually(
        "every event answered 202 delivered",
        Duration::from_secs(30),
        || {
            let got = sink.ids();
            accepted.iter().all(|id| got.contains(id))
        },
    )
    .await;
    // A 503 promises nothing was acknowledged, not that nothing reached the disk: the write that
    // failed may be found whole when the engine is reopened (then it is delivered too, as a
    // client retrying the 503 would cause anyway: at least once). So refused events are not
    // asserted undelivered.
    mesh.shutdown().await;
}
