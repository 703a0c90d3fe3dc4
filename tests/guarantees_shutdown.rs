//! SIGTERM to the real binary under load: new events get 503, `/readyz` answers 503, in-flight
//! deliveries finish, the exit code is 0, and a restart redelivers nothing already completed
//! while still delivering everything accepted.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_in_flight_deliveries_and_exits_0() {
    let sink = TestSink::start().await;
    sink.always(Reply::Delay(Duration::from_millis(1500)));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
spec:
  delivery: {{retry: 3, backoffDelay: PT0.05S}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec: {{broker: default, subscriber: {{uri: "{}"}}}}
"#,
            sink.url()
        ),
    );
    let data = dir.path().join("data");
    let mut first = EvmeshProcess::start(&config, &data, &["--max-in-flight", "4"]);
    let url = first.url("/default/default");

    // Load: 4 senders until the process is gone; every answer must be 202 or 503.
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(0usize)); // 503s under load: allowed once draining
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (url, accepted, refused, stop) =
            (url.clone(), accepted.clone(), refused.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("w{worker}-{n}");
                let enc =
                    evmesh::evmesh_broker::codec::encode_binary(event(&id, "t")).expect("encode");
                match client()
                    .post(&url)
                    .headers(enc.headers)
                    .body(enc.body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 202 => accepted.lock().expect("lock").push(id),
                    Ok(r) if r.status().as_u16() == 503 => *refused.lock().expect("lock") += 1,
                    Ok(r) => panic!("unexpected status {} during shutdown", r.status()),
                    Err(_) => break, // the process is gone
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    eventually("4 deliveries in flight", WAIT, || sink.count() == 4).await;
    eventually("some load accepted", WAIT, || {
        accepted.lock().expect("lock").len() >= 20
    })
    .await;

    first.sigterm();
    // While the in-flight deliveries drain, the process refuses new work.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let resp = client()
            .get(first.url("/readyz"))
            .send()
            .await
            .expect("readyz while draining");
        if resp.status().as_u16() == 503 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never went 503"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        post_binary(&url, event("after-sigterm", "t")).await,
        503,
        "a new event during shutdown"
    );
    let status = first.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "exit code after SIGTERM");
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }
    let accepted: Vec<String> = accepted.lock().expect("lock").clone();
    let logs = first.stderr_tail();
    drop(first);

    // Everything the first process delivered was completed: it answered after the drain began.
    let first_run: Vec<String> = sink.ids();
    assert!(first_run.len() >= 4, "{logs}");
    let first_set: HashSet<String> = first_run.iter().cloned().collect();
    assert_eq!(
        first_set.len(),
        first_run.len(),
        "no retry in the first run"
    );
    assert!(!first_set.contains("after-sigterm"));

    sink.always(Reply::Status(202));
    let second = EvmeshProcess::start(&config, &data, &["--max-in-flight", "4"]);
    let want: HashSet<String> = accepted.iter().cloned().collect();
    eventually("every accepted event delivered", WAIT, || {
        let got: HashSet<String> = sink.ids().into_iter().collect();
        want.is_subset(&got)
    })
    .await;
    // The restarted process has routed every stored (accepted) event and finished every match.
    quiesce(
        &second.url(""),
        "default",
        "default",
        accepted.len() as u64,
        WAIT,
    )
    .await;
    let second_run: Vec<String> = sink.ids()[first_run.len()..].to_vec();
    let redelivered: Vec<&String> = second_run
        .iter()
        .filter(|id| first_set.contains(*id))
        .collect();
    assert!(
        redelivered.is_empty(),
        "completed before SIGTERM, delivered again after the restart: {redelivered:?}"
    );
    let second_set: HashSet<&String> = second_run.iter().collect();
    assert_eq!(
        second_set.len(),
        second_run.len(),
        "no duplicates after the restart"
    );
    assert!(
        !second_set.contains(&"after-sigterm".to_string()),
        "the refused event was not stored"
    );
}

fn one_trigger(sink: &TestSink) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec: {{broker: default, subscriber: {{uri: "{}"}}}}
"#,
        sink.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_a_hung_subscriber_after_the_drain_timeout_and_the_event_is_redelivered()
 {
    let sink = TestSink::start().await;
    sink.always(Reply::Delay(Duration::from_secs(300)));
    let drain = Duration::from_secs(1);
    let yaml = one_trigger(&sink);
    let dir = tempfile::tempdir().expect("tempdir");
    let first = mesh_at(dir.path(), &yaml, |mut o| {
        o.service.drain_timeout = drain;
        o
    })
    .await;
    post_ok(&mesh_url(&first, "/default/default"), event("hung", "t")).await;
    eventually("the delivery is in flight", WAIT, || sink.count() == 1).await;
    let started = std::time::Instant::now();
    first.shutdown().await;
    let took = started.elapsed();
    // It waited for the in-flight delivery up to the drain timeout, then gave up on it (the
    // subscriber would answer only after 300 s).
    assert!(
        took >= drain,
        "shutdown took {took:?}, less than the drain timeout"
    );
    assert!(took < Duration::from_secs(60), "shutdown took {took:?}");

    sink.always(Reply::Status(202));
    let second = mesh_at(dir.path(), &yaml, |o| o).await;
    eventually("the abandoned delivery is made again", WAIT, || {
        sink.count() == 2
    })
    .await;
    assert_eq!(sink.ids(), vec!["hung", "hung"]);
    second.shutdown().await;
    assert_nothing_left(dir.path(), "default", "default", &[("all", &every)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_drains_for_30_seconds_by_default() {
    assert_eq!(
        evmesh::Options::default().service.drain_timeout,
        Duration::from_secs(30)
    );
    let sink = TestSink::start().await;
    sink.always(Reply::Delay(Duration::from_secs(300)));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &one_trigger(&sink));
    let data = dir.path().join("data");
    let mut first = EvmeshProcess::start(&config, &data, &[]);
    post_ok(&first.url("/default/default"), event("hung", "t")).await;
    eventually("the delivery is in flight", WAIT, || sink.count() == 1).await;
    let started = std::time::Instant::now();
    first.sigterm();
    let status = first.wait_exit(Duration::from_secs(120)).await;
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_secs(30),
        "exited {took:?} after SIGTERM, before the 30 s drain timeout"
    );
    assert!(
        first.has_line(&["drain timeout", "resumed after restart"]),
        "{}",
        first.stderr_tail()
    );

    sink.always(Reply::Status(202));
    let _second = EvmeshProcess::start(&config, &data, &[]);
    eventually("the abandoned delivery is made again", WAIT, || {
        sink.count() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_start_is_a_graceful_shutdown() {
    let sink = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &one_trigger(&sink));
    // The signal comes as soon as the process says it listens: it must not die of it.
    for round in 0..5 {
        let data = dir.path().join(format!("data-{round}"));
        let mut p = EvmeshProcess::start(&config, &data, &[]);
        p.sigterm();
        let status = p.wait_exit(WAIT).await;
        assert_eq!(status.code(), Some(0), "round {round}: {}", p.stderr_tail());
        assert!(
            p.has_line(&["shutting down: draining deliveries"]),
            "round {round}: {}",
            p.stderr_tail()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_a_half_sent_request_and_exits_0() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sink = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &one_trigger(&sink));
    let data = dir.path().join("data");
    let mut p = EvmeshProcess::start(&config, &data, &["--header-read-timeout", "1s"]);
    // A keep-alive connection the server is serving (one request answered 202), on which the
    // client then sent half of a second request head and nothing more.
    let mut conn = tokio::net::TcpStream::connect(&p.addr)
        .await
        .expect("connect");
    let full = "POST /default/default HTTP/1.1\r\nHost: evmesh\r\nce-specversion: 1.0\r\n\
                ce-id: full-1\r\nce-source: /test\r\nce-type: t\r\ncontent-length: 0\r\n\r\n";
    conn.write_all(full.as_bytes()).await.expect("write");
    let mut buf = [0u8; 1024];
    let n = conn.read(&mut buf).await.expect("read the answer");
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    conn.write_all(b"POST /default/default HTTP/1.1\r\nHost: evmesh\r\nce-id: half\r\n")
        .await
        .expect("write");
    p.sigterm();
    // It does not keep the process alive: closed (at the latest after the header timeout) and
    // the process exits 0.
    assert_eq!(
        p.wait_exit(WAIT).await.code(),
        Some(0),
        "{}",
        p.stderr_tail()
    );
    let n = tokio::time::timeout(WAIT, conn.read(&mut buf))
        .await
        .expect("the half-sent connection is closed")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        n == 0 || !answer.starts_with("HTTP/1.1 202"),
        "a half-sent request is never accepted: {answer}"
    );
}
