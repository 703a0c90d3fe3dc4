//! Slow and idle clients cannot hold the server: header, idle and body timeouts, the connection
//! cap, and malformed chunked framing — over raw TCP against a real mesh.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REQUEST_HEAD: &str = "POST /demo/default HTTP/1.1\r\nHost: evmesh\r\nce-specversion: 1.0\r\n\
ce-id: 1\r\nce-source: /s\r\nce-type: t\r\ncontent-type: application/json\r\n";

async fn mesh_with_limits(sink: &TestSink, limits: evmesh::ServerLimits) -> TestMesh {
    mesh_with(&broker_and_trigger(sink, ""), |o| evmesh::Options {
        server: limits,
        ..o
    })
    .await
}

/// A whole binary-mode event POST with a body of `{}`, keeping the connection open.
fn full_request(id: u32) -> String {
    format!(
        "POST /demo/default HTTP/1.1\r\nHost: evmesh\r\nce-specversion: 1.0\r\nce-id: {id}\r\n\
         ce-source: /s\r\nce-type: t\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
    )
}

/// Reads one response head (and its content-length body); returns the status code.
async fn read_response(s: &mut TcpStream) -> u16 {
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

/// Waits until the server closes `s` (EOF or reset), failing after `timeout`.
async fn closed_within(s: &mut TcpStream, timeout: Duration) {
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept the connection open for {timeout:?}"),
        }
    }
}

async fn connect(m: &TestMesh) -> TcpStream {
    TcpStream::connect(m.mesh.local_addr())
        .await
        .expect("connect")
}

#[tokio::test]
async fn half_sent_request_heads_are_closed_after_the_header_timeout_while_normal_requests_get_202()
{
    let sink = TestSink::start().await;
    let m = mesh_with_limits(
        &sink,
        evmesh::ServerLimits {
            header_read_timeout: Duration::from_millis(500),
            ..evmesh::ServerLimits::default()
        },
    )
    .await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = connect(&m).await;
        s.write_all(REQUEST_HEAD.as_bytes()).await.expect("write");
        slow.push(s);
    }
    // A client that connects and sends nothing at all is a slow head too.
    slow.push(connect(&m).await);
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("ok", "t")).await,
        202
    );
    for s in &mut slow {
        closed_within(s, Duration::from_secs(10)).await;
    }
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("after", "t")).await,
        202
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let sink = TestSink::start().await;
    let m = mesh_with_limits(
        &sink,
        evmesh::ServerLimits {
            header_read_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_secs(2),
            ..evmesh::ServerLimits::default()
        },
    )
    .await;
    let mut s = connect(&m).await;
    s.write_all(full_request(1).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_response(&mut s).await, 202);
    // Idle for longer than the header timeout: still open, the next request is served.
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(full_request(2).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_response(&mut s).await, 202);
    // Then idle past the idle timeout: closed.
    closed_within(&mut s, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_body_sent_too_slowly_gets_408_after_the_body_timeout() {
    let sink = TestSink::start().await;
    let m = mesh_with_limits(
        &sink,
        evmesh::ServerLimits {
            body_read_timeout: Duration::from_millis(500),
            ..evmesh::ServerLimits::default()
        },
    )
    .await;
    let mut s = connect(&m).await;
    s.write_all(format!("{REQUEST_HEAD}content-length: 100\r\n\r\n{{\"a\":").as_bytes())
        .await
        .expect("write");
    let status = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s))
        .await
        .expect("an answer after the body timeout");
    assert_eq!(status, 408);
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn connections_above_the_cap_wait_while_accepted_ones_keep_working() {
    let sink = TestSink::start().await;
    let m = mesh_with_limits(
        &sink,
        evmesh::ServerLimits {
            max_connections: Some(4),
            ..evmesh::ServerLimits::default()
        },
    )
    .await;
    let mut held = Vec::new();
    for i in 0..4 {
        let mut s = connect(&m).await;
        s.write_all(full_request(i).as_bytes())
            .await
            .expect("write");
        assert_eq!(read_response(&mut s).await, 202);
        held.push(s);
    }
    // A fifth connection: the kernel completes the handshake, evmesh does not serve it yet.
    let mut waiting = connect(&m).await;
    waiting
        .write_all(full_request(100).as_bytes())
        .await
        .expect("write");
    // The accepted connections keep working meanwhile.
    for (i, s) in held.iter_mut().enumerate() {
        s.write_all(full_request(10 + i as u32).as_bytes())
            .await
            .expect("write");
        assert_eq!(read_response(s).await, 202);
    }
    let early = tokio::time::timeout(Duration::from_millis(300), read_response(&mut waiting)).await;
    assert!(early.is_err(), "a connection above the cap was served");
    // One accepted connection closes: the waiting one is served.
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(10), read_response(&mut waiting))
        .await
        .expect("the waiting connection is served once a slot is free");
    assert_eq!(status, 202);
}

#[tokio::test]
async fn malformed_chunked_framing_gets_400() {
    let sink = TestSink::start().await;
    let m = mesh_with_limits(&sink, evmesh::ServerLimits::default()).await;
    let mut s = connect(&m).await;
    s.write_all(
        format!("{REQUEST_HEAD}transfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    assert_eq!(read_response(&mut s).await, 400);
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn a_streaming_watch_response_outlives_the_idle_and_header_timeouts() {
    let sink = TestSink::start().await;
    let m = mesh_with_limits(
        &sink,
        evmesh::ServerLimits {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(300),
            ..evmesh::ServerLimits::default()
        },
    )
    .await;
    let url = m.url("/apis/eventing.knative.dev/v1/namespaces/demo/triggers");
    let mut watch = client()
        .get(format!("{url}?watch=true"))
        .send()
        .await
        .expect("watch");
    assert_eq!(watch.status().as_u16(), 200);
    let first = watch
        .chunk()
        .await
        .expect("read watch")
        .expect("first event");
    assert!(String::from_utf8_lossy(&first).contains("\"t1\""));
    // Longer than both timeouts with nothing sent either way: a response in progress is not idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t2 = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t2, namespace: demo}}\n\
         spec:\n  broker: default\n  subscriber: {{uri: \"{}\"}}\n",
        sink.url()
    );
    let created = client()
        .post(&url)
        .header("content-type", "application/yaml")
        .body(t2)
        .send()
        .await
        .expect("create t2");
    assert!(created.status().is_success(), "{}", created.status());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, watch.chunk())
            .await
            .expect("the watch delivers the change in time")
            .expect("the watch connection is still open")
            .expect("a watch event, not the end of the stream");
        if String::from_utf8_lossy(&chunk).contains("\"t2\"") {
            break;
        }
    }
}
