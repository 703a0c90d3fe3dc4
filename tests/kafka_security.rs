//! KafkaSource SASL and TLS (`spec.net`, values from Secrets in the YAML) against a real Tansu of
//! the test's own. TLS: Tansu 0.6 accepts `--cert/--key` but serves plain TCP, so a TLS
//! terminator of the test (tokio-rustls, a CA made by rcgen) sits in front of it and is the
//! address Tansu advertises; records are delivered when the source trusts the CA, and it is not
//! ready, saying why, when it trusts another. SASL: Tansu `--authentication` refuses every login
//! (see [`sasl_tansu`]); the source is not ready, says why, and its password shows neither in the
//! process's log nor in the admin API.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::tansu::{OwnTansu, TansuOptions, free_port, tansu_available};
use common::tls::TestCa;
use common::*;
use evmesh_kafka::{KafkaProducer, KafkaSettings, Tls, ensure_topic};
use serde_json::Value;

const USER: &str = "evmesh-user";
const WRONG_PASSWORD: &str = "wrong-Scram-pw-9z";

/// A TLS terminator on 127.0.0.1:0 (certificate for 127.0.0.1 signed by `ca`) forwarding every
/// connection to `upstream` in plain TCP.
async fn tls_proxy(ca: &TestCa, upstream: String) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config()));
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, task)
}

fn topic_name() -> String {
    format!("evmesh-sec-{}", uuid::Uuid::new_v4().simple())
}

/// A Secret `kafka-auth` with `entries`, then a KafkaSource reading `topic` from `bootstrap` with
/// `net` (YAML flow mapping) into `sink`.
fn manifest(
    name: &str,
    bootstrap: &str,
    topic: &str,
    entries: &[(&str, &str)],
    net: &str,
    sink: &TestSink,
) -> String {
    let data: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("  {k}: {}", serde_json::to_string(v).expect("json string")))
        .collect();
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: kafka-auth, namespace: demo}}
stringData:
{}
---
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata:
  name: {name}
  namespace: demo
spec:
  bootstrapServers: ["{bootstrap}"]
  topics: ["{topic}"]
  consumerGroup: {name}-{}
  initialOffset: earliest
  net: {net}
  sink: {{uri: "{}"}}
"#,
        data.join("\n"),
        uuid::Uuid::new_v4().simple(),
        sink.url()
    )
}

const SASL_NET: &str = "{sasl: {enable: true, \
    user: {secretKeyRef: {name: kafka-auth, key: user}}, \
    password: {secretKeyRef: {name: kafka-auth, key: password}}, \
    type: {secretKeyRef: {name: kafka-auth, key: saslType}}}}";

const TLS_NET: &str =
    "{tls: {enable: true, caCert: {secretKeyRef: {name: kafka-auth, key: ca.crt}}}}";

async fn source_status(admin: &str, name: &str) -> Value {
    get_json(&format!(
        "{admin}/apis/sources.knative.dev/v1beta1/namespaces/demo/kafkasources/{name}"
    ))
    .await
    .1
}

/// Waits until the source is not Ready with a message that contains `needle` (any case), and
/// returns the source.
async fn not_ready_because(admin: &str, name: &str, needle: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = source_status(admin, name).await;
        let c = &s["status"]["conditions"][0];
        if c["status"] == "False"
            && c["message"]
                .as_str()
                .is_some_and(|m| m.to_lowercase().contains(needle))
        {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "KafkaSource {name} never not Ready because of {needle}: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn produce(settings: &KafkaSettings, topic: &str, n: usize) {
    let p = KafkaProducer::new(settings).expect("producer");
    for i in 0..n {
        p.send_raw(topic, None, &[], format!("record-{i}").as_bytes())
            .await
            .expect("produce");
    }
}

/// A Tansu that requires SASL (SCRAM-SHA-256/512 or OAUTHBEARER) from every client. Every login
/// is refused: Tansu 0.6's only storage engine here (dynostore) keeps no SCRAM credentials
/// (storing one is a no-op, a lookup finds none), so a successful login cannot be tested with it.
async fn sasl_tansu() -> OwnTansu {
    OwnTansu::start_with(
        free_port(),
        &TansuOptions {
            authentication: true,
            ..TansuOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn kafka_source_whose_sasl_login_fails_is_not_ready_and_never_shows_the_password() {
    if !tansu_available(
        "kafka_source_whose_sasl_login_fails_is_not_ready_and_never_shows_the_password",
    ) {
        return;
    }
    let tansu = sasl_tansu().await;
    let sink = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &manifest(
            "badpw",
            &tansu.addr,
            &topic_name(),
            &[
                ("user", USER),
                ("password", WRONG_PASSWORD),
                ("saslType", "SCRAM-SHA-512"),
            ],
            SASL_NET,
            &sink,
        ),
    );
    let data = dir.path().join("data");
    let p = EvmeshProcess::start_with_log(&config, &data, &[], "debug");
    let admin = format!("http://{}", p.addr);
    let s = not_ready_because(&admin, "badpw", "authentication").await;
    assert_eq!(
        s["status"]["conditions"][0]["reason"], "KafkaUnavailable",
        "{s:#}"
    );
    for path in [
        "/apis/sources.knative.dev/v1beta1/namespaces/demo/kafkasources/badpw",
        "/apis/sources.knative.dev/v1beta1/kafkasources",
        "/apis/v1/namespaces/demo/secrets/kafka-auth",
    ] {
        let (_, body) = get_json(&format!("{admin}{path}")).await;
        assert!(
            !body.to_string().contains(WRONG_PASSWORD),
            "{path} shows the password: {body:#}"
        );
    }
    let log = p.lines().join("\n");
    assert!(
        !log.contains(WRONG_PASSWORD),
        "the log shows the password:\n{log}"
    );
}

/// A Tansu behind a TLS terminator whose certificate `ca` signed; the settings reach it over TLS.
async fn tls_tansu(
    ca: &TestCa,
) -> (
    OwnTansu,
    tokio::task::JoinHandle<()>,
    String,
    KafkaSettings,
    String,
) {
    let tansu_port = free_port();
    let (proxy_port, proxy) = tls_proxy(ca, format!("127.0.0.1:{tansu_port}")).await;
    let tansu = OwnTansu::start_with(
        tansu_port,
        &TansuOptions {
            advertised_port: Some(proxy_port),
            ..TansuOptions::default()
        },
    )
    .await;
    let bootstrap = format!("127.0.0.1:{proxy_port}");
    let mut settings = KafkaSettings::new([bootstrap.clone()]);
    settings.tls = Some(Tls {
        ca_pem: Some(ca.pem()),
        ..Tls::default()
    });
    let topic = topic_name();
    ensure_topic(&settings, &topic, 1, 1, &[])
        .await
        .expect("creating the topic over TLS");
    (tansu, proxy, bootstrap, settings, topic)
}

#[tokio::test]
async fn kafka_source_with_tls_ca_cert_from_a_secret_delivers_records() {
    if !tansu_available("kafka_source_with_tls_ca_cert_from_a_secret_delivers_records") {
        return;
    }
    let ca = TestCa::new("evmesh kafka test CA");
    let (_tansu, proxy, bootstrap, settings, topic) = tls_tansu(&ca).await;
    let sink = TestSink::start().await;
    let m = mesh(&manifest(
        "tls",
        &bootstrap,
        &topic,
        &[("ca.crt", &ca.pem())],
        TLS_NET,
        &sink,
    ))
    .await;
    produce(&settings, &topic, 2).await;
    eventually("2 records delivered", Duration::from_secs(60), || {
        sink.count() >= 2
    })
    .await;
    assert_eq!(sink.received()[1].body, b"record-1");
    m.mesh.shutdown().await;
    proxy.abort();
}

#[tokio::test]
async fn kafka_source_trusting_another_ca_is_not_ready() {
    if !tansu_available("kafka_source_trusting_another_ca_is_not_ready") {
        return;
    }
    let ca = TestCa::new("evmesh kafka test CA");
    let (_tansu, proxy, bootstrap, settings, topic) = tls_tansu(&ca).await;
    produce(&settings, &topic, 1).await;
    let other = TestCa::new("another CA");
    let sink = TestSink::start().await;
    let m = mesh(&manifest(
        "wrongca",
        &bootstrap,
        &topic,
        &[("ca.crt", &other.pem())],
        TLS_NET,
        &sink,
    ))
    .await;
    not_ready_because(&m.url(""), "wrongca", "certificate verify failed").await;
    assert_eq!(
        sink.count(),
        0,
        "nothing delivered from an untrusted broker"
    );
    m.mesh.shutdown().await;
    proxy.abort();
}
