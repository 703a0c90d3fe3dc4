//! Secrets from the environment: a `v1` Secret annotated `evmesh.dev/from-env` takes the values
//! of its keys from evmesh's environment, so a GitHubSource's `secretKeyRef` can name a token
//! that is never written in the YAML. The value is never logged nor shown by the admin API.

mod common;

use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac};

const SECRET: &str = "from-the-env-s3cret";

fn yaml(sink: &TestSink) -> String {
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata:
  name: githubsecret
  namespace: demo
  annotations: {{evmesh.dev/from-env: "secretToken=EVMESH_TEST_GITHUB_SECRET"}}
---
apiVersion: sources.knative.dev/v1alpha1
kind: GitHubSource
metadata: {{name: gh, namespace: demo}}
spec:
  eventTypes: [ping]
  ownerAndRepository: Codertocat/Hello-World
  secretToken: {{secretKeyRef: {{name: githubsecret, key: secretToken}}}}
  sink: {{uri: "{}"}}
"#,
        sink.url()
    )
}

fn sha256(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(p: &EvmeshProcess, id: &str, body: &[u8], secret: &str) -> u16 {
    client()
        .post(p.url("/webhooks/github/demo/gh"))
        .header("x-github-event", "ping")
        .header("x-github-delivery", id)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sha256(body, secret))
        .body(body.to_vec())
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

fn start(sink: &TestSink, env: &[(&str, &str)]) -> (EvmeshProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, yaml(sink)).expect("write yaml");
    let data = dir.path().join("data");
    let p = EvmeshProcess::start_with_env(&config, &data, &[], env);
    (p, dir)
}

async fn ready_condition(p: &EvmeshProcess) -> serde_json::Value {
    let url = p.url("/apis/sources.knative.dev/v1alpha1/namespaces/demo/githubsources/gh");
    let (_, obj) = get_json(&url).await;
    obj["status"]["conditions"][0].clone()
}

#[tokio::test]
async fn github_secret_token_read_from_the_environment_verifies_deliveries() {
    let sink = TestSink::start().await;
    let (p, _dir) = start(&sink, &[("EVMESH_TEST_GITHUB_SECRET", SECRET)]);
    let body = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ready_condition(&p).await["status"] != "True" {
        assert!(std::time::Instant::now() < deadline, "{}", p.stderr_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(deliver(&p, "d-wrong", body, "not-the-secret").await, 400);
    assert_eq!(deliver(&p, "d-1", body, SECRET).await, 202);
    eventually(
        "the delivery reached the sink",
        Duration::from_secs(10),
        || sink.count() >= 1,
    )
    .await;
    assert_eq!(sink.ids(), vec!["d-1".to_string()]);
    // Never shown, never logged.
    let (_, text) =
        get_text(&p.url("/apis/sources.knative.dev/v1alpha1/namespaces/demo/githubsources/gh"))
            .await;
    assert!(!text.contains(SECRET), "{text}");
    assert!(!p.has_line(&[SECRET]), "the secret was logged");
}

#[tokio::test]
async fn an_unset_variable_leaves_the_source_not_ready_and_says_which() {
    let sink = TestSink::start().await;
    let (p, _dir) = start(&sink, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let c = ready_condition(&p).await;
        if c["reason"] == "SecretTokenNotFound" {
            assert_eq!(c["status"], "False");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        p.has_line(&["EVMESH_TEST_GITHUB_SECRET", "is not set"]),
        "{}",
        p.stderr_tail()
    );
}
