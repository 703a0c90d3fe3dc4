//! Failure visibility with the real `evmesh` binary at the default log level: the first failure
//! of a trigger, every dead letter and drop, the trigger list at start, unresolvable subscriber
//! hosts; no colours when stderr is not a terminal; `--log-format json`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(20);

struct Evmesh {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Evmesh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Evmesh {
    fn start(dir: &std::path::Path, yaml: &str, extra: &[&str]) -> Evmesh {
        let config = dir.join("mesh.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_evmesh"))
            .args(["serve", "-f"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(extra)
            .env_remove("EVMESH_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn evmesh");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        Evmesh { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    fn has(&self, parts: &[&str]) -> bool {
        self.lines()
            .iter()
            .any(|l| parts.iter().all(|p| l.contains(p)))
    }

    async fn wait_for(&self, what: &str, parts: &[&str]) {
        let deadline = std::time::Instant::now() + WAIT;
        while !self.has(parts) {
            assert!(
                std::time::Instant::now() < deadline,
                "no log line for {what} ({parts:?}) in:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The listen address, from the start-up line.
    async fn addr(&self) -> String {
        self.wait_for("listening", &["evmesh listening on"]).await;
        self.lines()
            .iter()
            .find_map(|l| {
                l.split("evmesh listening on ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .map(|a| a.trim_end_matches('"').to_string())
            })
            .expect("address")
    }
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
"#,
        failing.url(),
        dls.url(),
        failing.url()
    )
}

#[tokio::test]
async fn failures_dead_letters_and_drops_are_logged_at_the_default_level_without_colours() {
    let failing = TestSink::start().await;
    failing.always(Reply::Status(500));
    let dls = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Evmesh::start(dir.path(), &yaml(&failing, &dls), &[]);
    let addr = e.addr().await;
    e.wait_for(
        "trigger list",
        &["trigger ready", "demo/dl", &failing.url()],
    )
    .await;
    e.wait_for("unresolvable host", &["demo/nohost", "does not resolve"])
        .await;
    assert_eq!(
        post_binary(&format!("http://{addr}/demo/default"), event("e1", "t")).await,
        202
    );
    e.wait_for(
        "first failure",
        &["delivery failing", "demo/dl", &failing.url(), "500"],
    )
    .await;
    e.wait_for("dead letter", &["event dead-lettered", "demo/dl", "e1"])
        .await;
    e.wait_for("drop", &["event dropped", "demo/gone", "e1", "500"])
        .await;
    let lines = e.lines();
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
    let e = Evmesh::start(dir.path(), &yaml(&failing, &dls), &["--log-format", "json"]);
    e.addr().await;
    e.wait_for("trigger list", &["trigger ready"]).await;
    for line in e.lines() {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
}
