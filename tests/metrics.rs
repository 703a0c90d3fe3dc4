//! Prometheus `/metrics`: Knative's eventing metric names and labels, and evmesh's own.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(10);

async fn scrape(m: &TestMesh) -> String {
    let resp = client()
        .get(m.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.expect("text")
}

/// The value of the first sample of `name` whose labels contain all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && l[name.len()..].starts_with(['{', ' '])
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
}

#[tokio::test]
async fn metrics_have_knative_names_and_labels_and_evmesh_counters() {
    let ok = TestSink::start().await;
    let failing = TestSink::start().await;
    failing.always(Reply::Status(503));
    let dls = TestSink::start().await;
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: mbroker, namespace: mns}}
spec:
  delivery: {{retry: 0}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: good, namespace: mns}}
spec: {{broker: mbroker, subscriber: {{uri: "{}"}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: bad, namespace: mns}}
spec:
  broker: mbroker
  subscriber: {{uri: "{}"}}
  delivery: {{retry: 0, deadLetterSink: {{uri: "{}"}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: lost, namespace: mns}}
spec: {{broker: mbroker, subscriber: {{uri: "{}"}}}}
"#,
        ok.url(),
        failing.url(),
        dls.url(),
        failing.url()
    );
    let m = mesh(&yaml).await;
    let url = m.url("/mns/mbroker");
    assert_eq!(post_binary(&url, event("1", "order.created")).await, 202);
    let (status, _) = post_raw(&url, &[("ce-specversion", "1.0")], "").await;
    assert_eq!(status, 400);
    eventually("deliveries", WAIT, || {
        ok.count() == 1 && dls.count() == 1 && failing.count() == 2
    })
    .await;
    eventually("dropped counted", WAIT, || {
        m.mesh
            .service()
            .triggers()
            .iter()
            .any(|t| t.name == "lost" && t.counters.dropped == 1)
    })
    .await;
    let text = scrape(&m).await;
    let broker = [("namespace_name", "mns"), ("broker_name", "mbroker")];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        broker.iter().chain(extra).copied().collect()
    };
    assert_eq!(
        sample(
            &text,
            "event_count",
            &with(&[
                ("container_name", "ingress"),
                ("event_type", "order.created"),
                ("response_code", "202"),
                ("response_code_class", "2xx"),
            ])
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "event_count",
            &with(&[("container_name", "ingress"), ("response_code", "400")])
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "event_count",
            &with(&[
                ("container_name", "filter"),
                ("trigger_name", "good"),
                ("response_code", "202"),
                ("response_code_class", "2xx"),
            ])
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "event_count",
            &with(&[
                ("trigger_name", "bad"),
                ("response_code", "503"),
                ("response_code_class", "5xx"),
            ])
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "event_dispatch_latencies_count",
            &with(&[("container_name", "filter"), ("trigger_name", "good")])
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "event_dispatch_latencies_bucket",
            &with(&[("le", "+Inf")])
        )
        .is_some(),
        "a histogram with buckets: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "evmesh_dead_lettered_total",
            &with(&[("trigger_name", "bad")])
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "evmesh_dropped_total",
            &with(&[("trigger_name", "lost")])
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "evmesh_append_latency_seconds_count", &broker).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(&text, "evmesh_fsync_batch_size_count", &[]).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "evmesh_pending_retries",
            &with(&[("trigger_name", "bad")])
        )
        .is_some(),
        "{text}"
    );
    // The in-memory hand-off from ingress to the router, within its default budget (4 MiB).
    assert!(
        sample(&text, "evmesh_tail_bytes", &broker)
            .is_some_and(|b| (0.0..=4.0 * 1024.0 * 1024.0).contains(&b)),
        "{text}"
    );
}

#[tokio::test]
async fn reply_loops_stopped_are_counted() {
    let sink = TestSink::start().await;
    sink.always(Reply::Event(event("loop", "loop.type")));
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: loopy, namespace: mns2}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: t, namespace: mns2}}
spec: {{broker: loopy, subscriber: {{uri: "{}"}}, delivery: {{retry: 0}}}}
"#,
        sink.url()
    );
    let m = mesh(&yaml).await;
    post_binary(&m.url("/mns2/loopy"), event("start", "loop.type")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = scrape(&m).await;
        if sample(
            &text,
            "evmesh_reply_loops_stopped_total",
            &[("namespace_name", "mns2"), ("broker_name", "loopy")],
        ) == Some(1.0)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "loop not counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_transport_error_is_counted_with_response_code_0_and_class_transport() {
    // A listener held for the whole test that never accepts: the attempt times out without a
    // response (no released port number is reused).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: tbroker, namespace: tns}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: silent, namespace: tns}}
spec:
  broker: tbroker
  subscriber: {{uri: "http://{addr}/hook"}}
  delivery: {{retry: 0, timeout: PT0.2S}}
"#
    );
    let m = mesh(&yaml).await;
    post_ok(&m.url("/tns/tbroker"), event("1", "t")).await;
    quiet(&m, "tns", "tbroker", 1).await;
    let text = scrape(&m).await;
    assert_eq!(
        sample(
            &text,
            "event_count",
            &[
                ("namespace_name", "tns"),
                ("trigger_name", "silent"),
                ("response_code", "0"),
                ("response_code_class", "transport"),
            ]
        ),
        Some(1.0),
        "{text}"
    );
}

/// A client that sends ever new event types cannot grow the metrics without end: a broker's
/// ingress metrics label at most `MAX_EVENT_TYPES` distinct `event_type` values, and count the
/// events of later new types under `(other)`.
#[tokio::test]
async fn a_broker_labels_a_bounded_number_of_event_types_and_counts_the_rest_as_other() {
    use evmesh::evmesh_broker::telemetry::{MAX_EVENT_TYPES, OTHER_EVENT_TYPES};
    let m = mesh(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: manytypes, namespace: tns}\n",
    )
    .await;
    let url = m.url("/tns/manytypes");
    let extra = 3;
    let types: Vec<String> = (0..MAX_EVENT_TYPES + extra)
        .map(|i| format!("type.{i}"))
        .collect();
    for chunk in types.chunks(50) {
        let mut sends = tokio::task::JoinSet::new();
        for ty in chunk {
            let (url, ty) = (url.clone(), ty.clone());
            sends.spawn(async move { post_binary(&url, event(&ty, &ty)).await });
        }
        while let Some(code) = sends.join_next().await {
            assert_eq!(code.expect("send"), 202);
        }
    }
    // A type labelled before the bound was reached keeps its own label.
    assert_eq!(post_binary(&url, event("again", "type.0")).await, 202);
    let text = scrape(&m).await;
    let labelled: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("event_count{")
                && l.contains("container_name=\"ingress\"")
                && l.contains("namespace_name=\"tns\"")
                && l.contains("broker_name=\"manytypes\"")
        })
        .filter_map(|l| l.split("event_type=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(labelled.len(), MAX_EVENT_TYPES + 1, "{labelled:?}");
    let broker = [
        ("container_name", "ingress"),
        ("namespace_name", "tns"),
        ("broker_name", "manytypes"),
    ];
    let of = |ty: &'static str| -> Vec<(&str, &str)> {
        broker.iter().copied().chain([("event_type", ty)]).collect()
    };
    assert_eq!(
        sample(&text, "event_count", &of(OTHER_EVENT_TYPES)),
        Some(extra as f64),
        "the events of the types past the bound"
    );
    let total: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("event_count{")
                && broker
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        total,
        (MAX_EVENT_TYPES + extra + 1) as f64,
        "every event counted once"
    );
    assert_eq!(sample(&text, "event_count", &of("type.0")), Some(2.0));
}

/// Scrapes until `name{labels}` is `want`, for at most [`WAIT`].
async fn until_sample(m: &TestMesh, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = scrape(m).await;
        if sample(&text, name, labels) == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never {want}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pending_retries_counts_a_delivery_waiting_for_its_retry_until_it_is_attempted() {
    let sink = TestSink::start().await;
    sink.script([Reply::Status(500)]);
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: rbroker, namespace: rns}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: waits, namespace: rns}}
spec:
  broker: rbroker
  subscriber: {{uri: "{}"}}
  delivery: {{retry: 1, backoffDelay: PT2S, backoffPolicy: linear}}
"#,
        sink.url()
    );
    let m = mesh(&yaml).await;
    assert_eq!(
        post_binary(&m.url("/rns/rbroker"), event("1", "t")).await,
        202
    );
    let labels = [("namespace_name", "rns"), ("trigger_name", "waits")];
    until_sample(&m, "evmesh_pending_retries", &labels, 1.0).await;
    // The retry is attempted (and answered 202): nothing waits any more.
    eventually("retried", WAIT, || sink.count() == 2).await;
    until_sample(&m, "evmesh_pending_retries", &labels, 0.0).await;
}
