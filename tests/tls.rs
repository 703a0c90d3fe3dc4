//! https delivery: the web PKI roots, a Destination's `CACerts` and `--ca-file`, against local
//! TLS sinks whose CA is made in the test.

mod common;

use std::time::Duration;

use cloudevents::AttributesReader;
use common::tls::TestCa;
use common::*;

const WAIT: Duration = Duration::from_secs(10);

fn indent(pem: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    pem.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

/// A broker and trigger `t1` to `subscriber` (with `sub_ca` as its CACerts), retry 1, and an
/// optional dead-letter sink with its own CACerts.
fn yaml(subscriber: &str, sub_ca: Option<&str>, dls: Option<(&str, Option<&str>)>) -> String {
    let mut y = format!(
        r#"apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: demo}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: t1, namespace: demo}}
spec:
  broker: default
  subscriber:
    uri: "{subscriber}"
"#
    );
    if let Some(ca) = sub_ca {
        y += &format!("    CACerts: |\n{}", indent(ca, 6));
    }
    y += "  delivery:\n    retry: 1\n    backoffDelay: PT0.01S\n";
    if let Some((uri, ca)) = dls {
        y += &format!("    deadLetterSink:\n      uri: \"{uri}\"\n");
        if let Some(ca) = ca {
            y += &format!("      CACerts: |\n{}", indent(ca, 8));
        }
    }
    y
}

#[tokio::test]
async fn https_subscriber_trusted_through_cacerts_gets_the_event() {
    let ca = TestCa::new("evmesh test CA");
    let sink = TestSink::start_tls(&ca).await;
    let m = mesh(&yaml(&sink.url(), Some(&ca.pem()), None)).await;
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("1", "t")).await,
        202
    );
    eventually("https delivery", WAIT, || sink.count() == 1).await;
    assert_eq!(sink.received()[0].event().id(), "1");
}

#[tokio::test]
async fn https_subscriber_with_wrong_ca_fails_as_transport_error_and_is_dead_lettered() {
    let real = TestCa::new("the sink's CA");
    let wrong = TestCa::new("some other CA");
    let sink = TestSink::start_tls(&real).await;
    // The dead-letter sink is https too, trusted through its own CACerts.
    let dls = TestSink::start_tls(&real).await;
    let m = mesh(&yaml(
        &sink.url(),
        Some(&wrong.pem()),
        Some((&dls.url(), Some(&real.pem()))),
    ))
    .await;
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("1", "t")).await,
        202
    );
    eventually("dead letter", WAIT, || dls.count() == 1).await;
    let dead = dls.received()[0].event().clone();
    assert_eq!(
        dead.extension("knativeerrordest").map(|v| v.to_string()),
        Some(sink.url())
    );
    assert!(
        dead.extension("knativeerrorcode").is_none(),
        "a TLS failure has no HTTP status"
    );
    assert_eq!(sink.count(), 0, "no request got past the handshake");
    eventually("dead letter counted", WAIT, || {
        m.mesh.service().triggers()[0].counters.dead_lettered == 1
    })
    .await;
    let t = &m.mesh.service().triggers()[0];
    assert_eq!(
        t.counters.retried, 1,
        "one retry; the move to the dead-letter sink is not a retry"
    );
}

#[tokio::test]
async fn https_subscriber_with_untrusted_ca_and_no_dead_letter_sink_is_dropped() {
    let ca = TestCa::new("private CA nobody trusts");
    let sink = TestSink::start_tls(&ca).await;
    let m = mesh(&yaml(&sink.url(), None, None)).await;
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("1", "t")).await,
        202
    );
    eventually("dropped after the retry", WAIT, || {
        m.mesh.service().triggers()[0].counters.dropped == 1
    })
    .await;
    assert_eq!(m.mesh.service().triggers()[0].counters.retried, 1);
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn ca_file_option_trusts_a_private_ca_for_every_destination() {
    let ca = TestCa::new("private CA from --ca-file");
    let sink = TestSink::start_tls(&ca).await;
    let pem_dir = tempfile::tempdir().expect("tempdir");
    let ca_file = pem_dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write CA file");
    let m = mesh_with(&yaml(&sink.url(), None, None), |mut o| {
        o.service.ca_file = Some(ca_file.clone());
        o
    })
    .await;
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("1", "t")).await,
        202
    );
    eventually("https delivery", WAIT, || sink.count() == 1).await;
}

#[tokio::test]
async fn invalid_cacerts_pem_is_a_configuration_error() {
    let err = evmesh::Mesh::from_yaml(&yaml(
        "https://127.0.0.1:1/",
        Some("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----"),
        None,
    ))
    .expect_err("invalid PEM rejected");
    assert!(err.to_string().contains("CACerts"), "{err}");
}

#[tokio::test]
async fn serve_with_an_unreadable_ca_file_fails_to_start_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mesh.yaml");
    std::fs::write(
        &config,
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n",
    )
    .expect("config");
    let bad = dir.path().join("not-a-ca.pem");
    std::fs::write(&bad, "hello").expect("bad pem");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evmesh"))
        .args(["serve", "-f"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--ca-file")
        .arg(&bad)
        .output()
        .expect("run evmesh");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CA file") && stderr.contains("not-a-ca.pem"),
        "{stderr}"
    );
}

/// A CA, and a loopback listener with a TLS acceptor whose certificate it signed and whose ALPN
/// offers `h2` alone: an HTTP/2-only https subscriber's beginnings.
async fn h2_only_listener(
    ca_name: &str,
) -> (
    TestCa,
    tokio::net::TcpListener,
    tokio_rustls::TlsAcceptor,
    std::net::SocketAddr,
) {
    let ca = TestCa::new(ca_name);
    let mut config = ca.server_config();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    (ca, listener, acceptor, addr)
}

/// An https subscriber that speaks HTTP/2 only (its TLS offers `h2` alone through ALPN): the
/// delivery engine negotiates HTTP/2 and the event arrives.
#[tokio::test]
async fn an_https_subscriber_speaking_only_http2_gets_the_event_over_http2() {
    use std::sync::{Arc, Mutex};
    let (ca, listener, acceptor, addr) = h2_only_listener("h2 CA").await;
    let seen: Arc<Mutex<Vec<(http::Version, String)>>> = Arc::default();
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let recorded = recorded.clone();
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                let id = req
                    .headers()
                    .get("ce-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                recorded.lock().expect("seen").push((req.version(), id));
                async {
                    let mut resp =
                        http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                    *resp.status_mut() = http::StatusCode::ACCEPTED;
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service),
            );
        }
    });
    let url = format!("https://127.0.0.1:{}/h2", addr.port());
    let m = mesh(&yaml(&url, Some(&ca.pem()), None)).await;
    post_ok(&m.url("/demo/default"), event("over-h2", "t")).await;
    eventually("delivered over HTTP/2", WAIT, || {
        !seen.lock().expect("seen").is_empty()
    })
    .await;
    assert_eq!(
        seen.lock().expect("seen")[0],
        (http::Version::HTTP_2, "over-h2".to_string())
    );
    eventually("counted delivered", WAIT, || {
        m.mesh.service().triggers()[0].counters.delivered == 1
    })
    .await;
}

/// An HTTP/2-only https subscriber that refuses its first `refuse` streams (`RST_STREAM` with
/// `REFUSED_STREAM`) and answers 202 to the others: its CA, its URL, and how many streams it saw.
async fn refusing_h2_subscriber(
    refuse: usize,
) -> (
    TestCa,
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (ca, listener, acceptor, addr) = h2_only_listener("h2 refusing CA").await;
    let streams = Arc::new(AtomicUsize::new(0));
    let seen = streams.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    if seen.fetch_add(1, Ordering::SeqCst) < refuse {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let resp = http::Response::builder()
                        .status(http::StatusCode::ACCEPTED)
                        .body(())
                        .expect("response");
                    let _ = respond.send_response(resp, true);
                }
            });
        }
    });
    let url = format!("https://127.0.0.1:{}/refusing", addr.port());
    (ca, url, streams)
}

/// An HTTP/2 subscriber that refuses the first stream (`RST_STREAM` with `REFUSED_STREAM`: it
/// did no work on it) gets the request again at once on a new stream, as Go's HTTP/2 transport
/// (Knative's dispatcher) retries it: the event is delivered on the first attempt, with no
/// retry spent and no dead letter.
#[tokio::test]
async fn a_refused_http2_stream_is_sent_again_without_spending_a_retry() {
    use std::sync::atomic::Ordering;
    let (ca, url, streams) = refusing_h2_subscriber(1).await;
    let m = mesh(&yaml(&url, Some(&ca.pem()), None)).await;
    post_ok(&m.url("/demo/default"), event("refused-once", "t")).await;
    eventually("counted delivered", WAIT, || {
        m.mesh.service().triggers()[0].counters.delivered == 1
    })
    .await;
    assert_eq!(
        streams.load(Ordering::SeqCst),
        2,
        "one refused stream, one answered"
    );
    let counters = &m.mesh.service().triggers()[0].counters;
    assert_eq!(
        counters.retried, 0,
        "the refused stream spent no retry: {counters:?}"
    );
}

/// A subscriber that refuses every stream is not sent the request without end: within one
/// attempt the request goes again at once, then after 1 s, then the attempt's `timeout` (here
/// 1.5 s) ends it as a failed attempt, retried and then given up as any failed delivery.
#[tokio::test]
async fn a_subscriber_refusing_every_http2_stream_fails_its_attempts_within_their_timeout() {
    use std::sync::atomic::Ordering;
    let (ca, url, streams) = refusing_h2_subscriber(usize::MAX).await;
    let m = mesh(&(yaml(&url, Some(&ca.pem()), None) + "    timeout: PT1.5S\n")).await;
    post_ok(&m.url("/demo/default"), event("always-refused", "t")).await;
    eventually("given up", WAIT, || {
        m.mesh.service().triggers()[0].counters.dropped == 1
    })
    .await;
    let counters = &m.mesh.service().triggers()[0].counters;
    assert_eq!(
        (counters.delivered, counters.retried),
        (0, 1),
        "{counters:?}"
    );
    // Two attempts (retry: 1), each sending at most three times: at once, again at once, and
    // after 1 s.
    let sent = streams.load(Ordering::SeqCst);
    assert!((4..=6).contains(&sent), "{sent} streams");
}
