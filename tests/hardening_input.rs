//! Input bounds: names checked as Kubernetes checks them, YAML input of bounded size from
//! files, standard input and the admin API.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn evmesh(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_evmesh"));
    c.args(args);
    c
}

/// Runs `evmesh validate -f FILE` on `yaml`; returns (success, stderr).
fn validate(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_config(dir.path(), yaml);
    let out = evmesh(&["validate", "-f"])
        .arg(&file)
        .output()
        .expect("run evmesh validate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout),
    )
}

fn broker_named(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: {name:?}\n  namespace: {namespace:?}\n"
    )
}

#[test]
fn names_kubernetes_refuses_are_errors_naming_file_line_and_field() {
    let long = "a".repeat(254);
    for bad in ["a/b", "../../etc", "Orders", "a_b", "-a", long.as_str()] {
        let (ok, out) = validate(&broker_named(bad, "default"));
        assert!(!ok, "name {bad:?} accepted");
        assert!(out.contains("mesh.yaml:4: metadata.name"), "{bad:?}: {out}");
    }
    for bad in ["a/b", "a.b", "Team"] {
        let (ok, out) = validate(&broker_named("ok", bad));
        assert!(!ok, "namespace {bad:?} accepted");
        assert!(
            out.contains("mesh.yaml:5: metadata.namespace"),
            "{bad:?}: {out}"
        );
    }
    let (ok, out) = validate(&broker_named("orders.v1-2", "team-a"));
    assert!(ok, "a valid name refused: {out}");
}

#[test]
fn validate_of_dev_zero_stops_at_the_size_limit_with_an_error() {
    let out = evmesh(&["validate", "-f", "/dev/zero"])
        .output()
        .expect("run evmesh validate");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/dev/zero: is larger than the limit"), "{err}");
}

#[test]
fn a_yaml_file_over_the_size_limit_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.yaml");
    let mut f = std::fs::File::create(&path).expect("create");
    let doc = broker_named("b", "default");
    let mut written = 0;
    let mut i = 0;
    while written <= evmesh::evmesh_config::MAX_YAML_BYTES {
        let d = format!("---\n{}", doc.replace("\"b\"", &format!("b{i}")));
        f.write_all(d.as_bytes()).expect("write");
        written += d.len();
        i += 1;
    }
    drop(f);
    let out = evmesh(&["validate", "-f"])
        .arg(&path)
        .output()
        .expect("run evmesh validate");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("big.yaml: is larger than the limit"), "{err}");
}

#[test]
fn apply_from_endless_standard_input_stops_at_the_size_limit_with_an_error() {
    let zero = std::fs::File::open("/dev/zero").expect("open /dev/zero");
    let out = evmesh(&[
        "apply",
        "-f",
        "-",
        "--server",
        "http://127.0.0.1:9",
        "--token",
        "t",
    ])
    .stdin(Stdio::from(zero))
    .output()
    .expect("run evmesh apply");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("standard input is larger than the limit"),
        "{err}"
    );
}

#[tokio::test]
async fn an_admin_api_body_over_the_limit_is_refused_and_nothing_is_created() {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    let url = m.url("/apis/eventing.knative.dev/v1/namespaces/demo/brokers");
    let mut body = broker_named("huge", "demo");
    body.push_str("# ");
    body.push_str(&"x".repeat(evmesh::evmesh_config::MAX_YAML_BYTES));
    let resp = client()
        .post(&url)
        .header("content-type", "application/yaml")
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("post");
    let status = resp.status().as_u16();
    assert!(status == 413 || status == 400, "status {status}");
    let (status, _) = get_json(&format!("{url}/huge")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_admin_api_create_with_a_path_like_name_is_refused() {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    let url = m.url("/apis/eventing.knative.dev/v1/namespaces/demo/brokers");
    let resp = client()
        .post(&url)
        .header("content-type", "application/yaml")
        .body(broker_named("../../etc", "demo"))
        .send()
        .await
        .expect("post");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    assert!((400..500).contains(&status), "status {status}: {text}");
    assert!(text.contains("metadata.name"), "{text}");
}
