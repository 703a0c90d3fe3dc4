//! Failure visibility with the real `evmesh` binary at the default log level: the first failure
//! of a trigger, every dead letter and drop, the trigger list at start, unresolvable subscriber
//! hosts; no colours when stderr is not a terminal; `--log-format json`.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(20);

/// `evmesh serve` of `yaml` at the default log level, as a user runs it.
fn start(dir: &std::path::Path, yaml: &str, extra: &[&str]) -> EvmeshProcess {
    let config = write_config(dir, yaml);
    EvmeshProcess::start_at_default_log_level(&config, &dir.join("data"), extra)
}

fn yaml(failing: &TestSink, dls: &TestSink) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: demo}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: dl, namespace: demo}}
spec:
  broker: default
  subscriber: {{uri: "{}"}}
  delivery: {{retry: 1, backoffDelay: PT0.01S, deadLetterSink: {{uri: "{}"}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: gone, namespace: demo}}
spec:
  broker: default
  subscriber: {{uri: "{}"}}
  delivery: {{retry: 0}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: nohost, namespace: demo}}
spec:
  broker: default
  filter: {{attributes: {{type: never}}}}
  subscriber: {{uri: "http://no-such-host.invalid/"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: secret, namespace: demo}}
spec:
  broker: default
  filter: {{attributes: {{type: never}}}}
  subscriber: {{uri: "http://alice:s3cret@{}/hook?token=t0ken"}}
"#,
        failing.url(),
        dls.url(),
        failing.url(),
        failing.addr
    )
}

#[tokio::test]
async fn failures_dead_letters_and_drops_are_logged_at_the_default_level_without_colours() {
    let failing = TestSink::start().await;
    failing.always(Reply::Status(500));
    let dls = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let e = start(dir.path(), &yaml(&failing, &dls), &[]);
    let addr = e.addr.clone();
    e.wait_for_line(
        "trigger list",
        &["trigger ready", "demo/dl", &failing.url()],
        WAIT,
    )
    .await;
    e.wait_for_line(
        "unresolvable host",
        &["demo/nohost", "does not resolve"],
        WAIT,
    )
    .await;
    assert_eq!(
        post_binary(&format!("http://{addr}/demo/default"), event("e1", "t")).await,
        202
    );
    e.wait_for_line(
        "first failure",
        &["delivery failing", "demo/dl", &failing.url(), "500"],
        WAIT,
    )
    .await;
    e.wait_for_line(
        "dead letter",
        &["event dead-lettered", "demo/dl", "e1"],
        WAIT,
    )
    .await;
    e.wait_for_line("drop", &["event dropped", "demo/gone", "e1", "500"], WAIT)
        .await;
    e.wait_for_line(
        "the trigger list, redacted",
        &["trigger ready", "demo/secret"],
        WAIT,
    )
    .await;
    let lines = e.lines();
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("s3cret") && !l.contains("t0ken") && !l.contains("alice")),
        "the subscriber's userinfo and query are redacted in logs"
    );
    assert!(
        lines.iter().all(|l| !l.contains('\u{1b}')),
        "no ANSI colours when stderr is not a terminal"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("INFO") && l.contains("fjall")),
        "storage-engine INFO chatter is off by default"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("delivery failing") && l.contains("demo/dl"))
            .count(),
        1,
        "only the first failure of a trigger is logged"
    );
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    let failing = TestSink::start().await;
    let dls = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let e = start(dir.path(), &yaml(&failing, &dls), &["--log-format", "json"]);
    e.wait_for_line("trigger list", &["trigger ready"], WAIT)
        .await;
    for line in e.lines() {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
}

/// The CESQL warnings of `p` (`--log-format json`) for trigger `default/{trigger}`, as JSON.
fn cesql_warnings(p: &EvmeshProcess, trigger: &str) -> Vec<serde_json::Value> {
    p.lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("CESQL evaluation error"))
                && v["fields"]["filter"] == format!("default/{trigger}").as_str()
        })
        .collect()
}

fn logged_at(warning: &serde_json::Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(warning["timestamp"].as_str().expect("timestamp"))
        .expect("RFC 3339 timestamp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cesql_errors_are_logged_at_most_once_per_10_seconds_per_trigger() {
    let sink = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Both expressions fail at run time on events without the attribute they read.
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: amount}}
spec:
  broker: default
  filters: [{{cesql: "amount > 3"}}]
  subscriber: {{uri: "{0}"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: weight}}
spec:
  broker: default
  filters: [{{cesql: "weight < 2"}}]
  subscriber: {{uri: "{0}"}}
"#,
        sink.url()
    );
    let e = start(dir.path(), &yaml, &["--log-format", "json"]);
    let url = e.url("/default/default");
    for i in 0..20 {
        post_ok(&url, event(&format!("e{i}"), "t")).await;
    }
    // Every event went through both filters (each failed, so nothing was handed on).
    quiesce(&e.url(""), "default", "default", 20, WAIT).await;
    for trigger in ["amount", "weight"] {
        let w = cesql_warnings(&e, trigger);
        assert_eq!(w.len(), 1, "one warning for 20 errors of {trigger}: {w:?}");
        assert_eq!(w[0]["fields"]["errors_total"], 1, "{w:?}");
    }
    assert_eq!(sink.count(), 0);

    // Errors keep coming: the next warning of a trigger comes 10 s after its first, with the
    // number of errors since.
    let mut n = 20;
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while cesql_warnings(&e, "amount").len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no second warning:\n{}",
            e.stderr_tail()
        );
        post_ok(&url, event(&format!("e{n}"), "t")).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let w = cesql_warnings(&e, "amount");
    assert_eq!(w.len(), 2, "{w:?}");
    let apart = logged_at(&w[1]) - logged_at(&w[0]);
    assert!(
        apart >= chrono::Duration::seconds(10),
        "warnings {apart:?} apart"
    );
    let total = w[1]["fields"]["errors_total"]
        .as_u64()
        .expect("errors_total");
    assert!(total > 20, "{w:?}");
    assert_eq!(
        w[1]["fields"]["errors_since_last_warning"].as_u64(),
        Some(total - 1),
        "{w:?}"
    );
    assert!(cesql_warnings(&e, "weight").len() <= 2);
}

#[tokio::test]
async fn storage_engine_info_lines_appear_when_evmesh_log_names_the_engine() {
    let failing = TestSink::start().await;
    let dls = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &yaml(&failing, &dls));
    let e =
        EvmeshProcess::start_with_log(&config, &dir.path().join("data"), &[], "info,fjall=info");
    e.wait_for_line("fjall's own INFO lines", &["INFO", "fjall"], WAIT)
        .await;
}
