//! The `evmesh` command line: `validate` names file, line and field; `send` posts one event.

mod common;

use std::process::Command;
use std::time::Duration;

use cloudevents::AttributesReader;
use common::*;

fn validate(files: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evmesh"));
    cmd.arg("validate");
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        cmd.arg("-f").arg(&p);
    }
    let out = cmd.output().expect("run evmesh validate");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // The documented exit codes: 0 when valid, 1 with errors.
    let code = out.status.code();
    assert!(
        matches!(code, Some(0) | Some(1)),
        "exit code {code:?}:\n{text}"
    );
    (code == Some(0), text)
}

fn line_with<'a>(out: &'a str, needle: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line mentions {needle:?} in:\n{out}"))
}

const BROKER: &str =
    "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: default\n";

#[test]
fn validate_accepts_a_correct_file() {
    let (ok, out) = validate(&[(
        "ok.yaml",
        &format!(
            "{BROKER}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t}}\nspec:\n  broker: default\n  subscriber: {{uri: http://127.0.0.1:9/}}\n"
        ),
    )]);
    assert!(ok, "{out}");
    assert!(out.contains("1 broker(s), 1 trigger(s)"), "{out}");
}

#[test]
fn validate_names_file_line_and_field_of_a_bad_duration() {
    let yaml = format!("{BROKER}spec:\n  delivery:\n    retry: 3\n    backoffDelay: 200ms\n");
    let (ok, out) = validate(&[("broker.yaml", &yaml)]);
    assert!(!ok);
    let line = line_with(&out, "backoffDelay");
    assert!(
        line.contains("broker.yaml:8: spec.delivery.backoffDelay"),
        "{line}"
    );
    assert!(line.contains("ISO-8601"), "{line}");
}

#[test]
fn validate_warns_about_a_trigger_whose_broker_does_not_exist_yet() {
    // As in Knative, a Trigger may come before its Broker: accepted, with a warning.
    let yaml = "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: orphan\nspec:\n  broker: missing\n  subscriber:\n    uri: http://127.0.0.1:9/\n";
    let (ok, out) = validate(&[("trigger.yaml", yaml)]);
    assert!(ok, "{out}");
    let line = line_with(&out, "missing");
    assert!(line.contains("trigger.yaml:6: spec.broker"), "{line}");
    assert!(line.contains("warning"), "{line}");
}

#[test]
fn validate_finds_a_broker_defined_in_another_file() {
    let trigger = "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec:\n  broker: default\n  subscriber: {uri: http://127.0.0.1:9/}\n";
    let (ok, out) = validate(&[("a-broker.yaml", BROKER), ("b-trigger.yaml", trigger)]);
    assert!(ok, "{out}");
}

#[test]
fn validate_rejects_an_unknown_knative_kind() {
    let yaml = "apiVersion: eventing.knative.dev/v1\nkind: Triger\nmetadata:\n  name: typo\n";
    let (ok, out) = validate(&[("kinds.yaml", yaml)]);
    assert!(!ok);
    let line = line_with(&out, "Triger");
    assert!(line.contains("kinds.yaml:2: kind"), "{line}");
}

#[test]
fn validate_reports_every_error_in_one_pass_across_documents() {
    let yaml = format!(
        "{BROKER}spec:\n  delivery:\n    retry: -1\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\nspec:\n  broker: default\n  subscriber:\n    uri: not-a-url\n"
    );
    let (ok, out) = validate(&[("multi.yaml", &yaml)]);
    assert!(!ok);
    assert!(
        line_with(&out, "spec.delivery.retry").contains("multi.yaml:7"),
        "{out}"
    );
    assert!(
        line_with(&out, "spec.subscriber.uri").contains("multi.yaml:16"),
        "{out}"
    );
    assert!(out.contains("2 error(s)"), "{out}");
}

#[test]
fn validate_reports_yaml_syntax_errors_with_file_and_line() {
    let (ok, out) = validate(&[(
        "broken.yaml",
        "apiVersion: v1\nkind: [Broker\nmetadata: {}\n",
    )]);
    assert!(!ok);
    let line = line_with(&out, "invalid YAML");
    let after = line.split("broken.yaml:").nth(1).expect("names the file");
    assert!(
        after.starts_with(|c: char| c.is_ascii_digit()),
        "names a line: {line}"
    );
}

#[test]
fn validate_reports_a_wrongly_typed_field() {
    let yaml = format!("{BROKER}spec:\n  delivery:\n    retry: lots\n");
    let (ok, out) = validate(&[("typed.yaml", &yaml)]);
    assert!(!ok);
    assert!(
        line_with(&out, "spec.delivery.retry").contains("typed.yaml:7"),
        "{out}"
    );
}

#[test]
fn validate_reports_a_cesql_syntax_error_with_its_position() {
    let yaml = format!(
        "{BROKER}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t}}\nspec:\n  broker: default\n  filters:\n    - cesql: \"type = 'a' AND\"\n  subscriber: {{uri: http://127.0.0.1:9/}}\n"
    );
    let (ok, out) = validate(&[("cesql.yaml", &yaml)]);
    assert!(!ok);
    let line = line_with(&out, "cesql");
    assert!(
        line.contains("cesql.yaml:12: spec.filters[0].cesql"),
        "{line}"
    );
    assert!(line.contains("column"), "{line}");
}

#[test]
fn validate_warns_about_unsupported_fields_instead_of_ignoring_them() {
    let yaml = format!("{BROKER}spec:\n  delivery:\n    retry: 1\n    backoffMax: PT10S\n");
    let (ok, out) = validate(&[("warn.yaml", &yaml)]);
    assert!(ok, "{out}");
    let line = line_with(&out, "backoffMax");
    assert!(
        line.contains("warn.yaml:8") && line.contains("warning"),
        "{line}"
    );
}

#[test]
fn validate_warns_about_knative_kinds_not_served_yet() {
    // (ApiServerSource, this test's kind before it was served, is validated now.)
    let yaml = "apiVersion: sources.knative.dev/v1\nkind: ContainerSource\nmetadata: {name: a}\nspec: {template: {}}\n";
    let (ok, out) = validate(&[("container.yaml", yaml)]);
    assert!(ok, "{out}");
    assert!(
        line_with(&out, "ContainerSource").contains("warning"),
        "{out}"
    );
}

#[test]
fn validate_loads_every_yaml_file_of_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("1.yaml"), BROKER).expect("write");
    std::fs::write(
        dir.path().join("2.yml"),
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec: {broker: default, subscriber: {uri: http://127.0.0.1:9/}}\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_evmesh"))
        .args(["validate", "-f"])
        .arg(dir.path())
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 broker(s), 1 trigger(s)"), "{text}");
}

#[tokio::test]
async fn send_posts_one_binary_event_with_extensions() {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    let url = m.url("/demo/default");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_evmesh"))
            .args([
                "send",
                "--to",
                &url,
                "--type",
                "dev.example.hello",
                "--source",
                "/cli",
            ])
            .args([
                "--data",
                r#"{"hi": 1}"#,
                "--extension",
                "team=blue",
                "--id",
                "cli-1",
            ])
            .output()
            .expect("run send")
    })
    .await
    .expect("join");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("202"));
    eventually("delivery", Duration::from_secs(10), || sink.count() == 1).await;
    let e = sink.received()[0].event().clone();
    assert_eq!(e.id(), "cli-1");
    assert_eq!(e.ty(), "dev.example.hello");
    assert_eq!(
        e.extension("team").map(|v| v.to_string()).as_deref(),
        Some("blue")
    );
}

#[tokio::test]
async fn send_exits_1_and_prints_the_status_when_a_real_server_answers_400() {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    let url = m.url("/demo/default");
    // A spent knativebrokerttl: the real ingress answers 400 (reply-loop protection).
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_evmesh"))
            .args(["send", "--to", &url, "--type", "t", "--source", "/s"])
            .args(["--id", "spent", "--extension", "knativebrokerttl=1"])
            .output()
            .expect("run send")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("400 "), "{stdout}");
    assert!(stdout.contains("knativebrokerttl"), "the reason: {stdout}");
    let c = admin_counters(&m.url(""), "brokers", "demo", "default").await;
    assert_eq!(c["accepted"], 0, "the rejected event was not stored: {c}");
    quiet(&m, "demo", "default", 0).await;
    assert_eq!(sink.count(), 0, "the rejected event is not delivered");
}

#[test]
fn validate_names_the_line_of_a_bad_sequence_step() {
    let yaml = "apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata: {name: s}\nspec:\n  steps:\n    - uri: http://127.0.0.1:9/a\n    - uri: not-absolute\n";
    let (ok, out) = validate(&[("seq.yaml", yaml)]);
    assert!(!ok, "{out}");
    assert!(
        line_with(&out, "seq.yaml:7").contains("spec.steps[1].uri"),
        "{out}"
    );
}

#[test]
fn serve_refuses_a_default_channel_it_does_not_run() {
    let out = Command::new(env!("CARGO_BIN_EXE_evmesh"))
        .args([
            "serve",
            "--default-channel",
            "RabbitmqChannel",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run evmesh serve");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("is not a channel kind evmesh knows"),
        "{text}"
    );
}
