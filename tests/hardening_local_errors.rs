//! An accepted event is never dropped for evmesh's own reasons: with the real binary out of file
//! descriptors (its limit lowered with `prlimit`, idle connections holding the rest), events
//! answered 202 wait and are all delivered once descriptors are free again.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A raw HTTP/1.1 request on a kept-alive connection; returns the status code.
async fn request(s: &mut TcpStream, req: &str) -> u16 {
    s.write_all(req.as_bytes()).await.expect("write request");
    read_status(s).await
}

/// Reads one response (head and content-length body); returns its status code.
async fn read_status(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "connection closed inside a response body");
                buf.extend_from_slice(&chunk[..n]);
            }
            return head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("not an HTTP response: {head}"));
        }
        let n = s.read(&mut chunk).await.expect("read response");
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn event_request(id: &str) -> String {
    format!(
        "POST /demo/default HTTP/1.1\r\nHost: evmesh\r\nce-specversion: 1.0\r\nce-id: {id}\r\n\
         ce-source: /s\r\nce-type: t\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_accepted_while_evmesh_is_out_of_file_descriptors_are_all_delivered_none_dropped() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIPPED: prlimit (util-linux) is not installed");
        return;
    }
    let sink = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // retry 0 and no dead-letter sink: one spent attempt would drop the event.
    let config = write_config(dir.path(), &broker_and_trigger(&sink, ""));
    let p = EvmeshProcess::start(
        &config,
        &dir.path().join("data"),
        // A cap above the fd limit, as on a host configured without one.
        &["--max-connections", "5000", "--header-read-timeout", "120s"],
    );
    let pid = p.child.id();
    let addr = p.addr.clone();

    // The connection events are sent on, accepted before descriptors run out.
    let mut ingress = TcpStream::connect(&addr).await.expect("connect");
    let options = "OPTIONS /demo/default HTTP/1.1\r\nHost: evmesh\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(request(&mut ingress, options).await, 200);

    // Lower the fd limit to a few above what evmesh holds, then use them up with idle clients.
    let limit = open_fds(pid) + 8;
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit failed");
    let mut idle = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_fds(pid) < limit {
        assert!(
            Instant::now() < deadline,
            "evmesh holds {} fds, limit {limit}",
            open_fds(pid)
        );
        idle.push(TcpStream::connect(&addr).await.expect("connect idle"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // More wait in the listen backlog: any descriptor evmesh frees meanwhile goes to one of them.
    for _ in 0..20 {
        idle.push(TcpStream::connect(&addr).await.expect("connect idle"));
    }

    let mut accepted = Vec::new();
    for i in 0..20 {
        let id = format!("e{i}");
        let code = request(&mut ingress, &event_request(&id)).await;
        assert!(
            code == 202 || code == 503,
            "event {id}: {code} (only 202 or 503 are acceptable)"
        );
        if code == 202 {
            accepted.push(id);
        }
    }
    assert!(
        !accepted.is_empty(),
        "no event was accepted while out of fds"
    );
    // Deliveries ran into the fd limit and were postponed, not failed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !p.stderr_tail().contains("delivery postponed") {
        assert!(
            Instant::now() < deadline,
            "no delivery was postponed; stderr:\n{}",
            p.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        p.stderr_tail().contains("Too many open files"),
        "{}",
        p.stderr_tail()
    );

    // One more client while no descriptor is free: accept fails, is logged and backed off.
    let mut extra = TcpStream::connect(&addr).await.expect("connect extra");
    extra
        .write_all(event_request("extra").as_bytes())
        .await
        .expect("write extra");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !p.stderr_tail().contains("accepting a connection failed") {
        assert!(
            Instant::now() < deadline,
            "no accept error logged; stderr:\n{}",
            p.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The idle clients leave: evmesh gets its descriptors back, serves the waiting client and
    // delivers everything.
    drop(idle);
    let status = match tokio::time::timeout(Duration::from_secs(20), read_status(&mut extra)).await
    {
        Ok(s) => s,
        Err(_) => panic!(
            "the client that waited is not served; fds {}; stderr:\n{}",
            open_fds(pid),
            p.stderr_tail()
        ),
    };
    assert_eq!(status, 202);
    accepted.push("extra".to_string());
    // Backed off, not spinning: a handful of accept-error lines, not thousands.
    let accept_errors = p
        .stderr_tail()
        .lines()
        .filter(|l| l.contains("accepting a connection failed"))
        .count();
    assert!(accept_errors < 50, "{accept_errors} accept errors logged");
    eventually(
        "every accepted event delivered",
        Duration::from_secs(30),
        || {
            let got = sink.ids();
            accepted.iter().all(|id| got.contains(id))
        },
    )
    .await;
    let c = admin_counters(&p.url(""), "triggers", "demo", "t1").await;
    assert_eq!(c["dropped"], 0, "{c}");
    assert_eq!(c["deadLettered"], 0, "{c}");
    assert_eq!(c["delivered"], accepted.len(), "{c}");
}
