//! A source answers for an event only once it is durable: a GitHub webhook delivery answered
//! `202` survives a kill -9 of the real binary that comes right after the answer, while its
//! sink is still blocked, and the restarted process delivers it.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cloudevents::AttributesReader;
use common::*;
use hmac::{Hmac, Mac};

const SECRET: &str = "webhook-s3cret";
const WAIT: Duration = Duration::from_secs(60);

fn sha256(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_delivery_answered_202_survives_a_kill_9_right_after_the_answer() {
    let sink = TestSink::start().await;
    sink.always(Reply::Delay(Duration::from_secs(300))); // nothing completes before the kill
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
apiVersion: v1
kind: Secret
metadata: {{name: githubsecret}}
stringData: {{secretToken: {SECRET}}}
---
apiVersion: sources.knative.dev/v1alpha1
kind: GitHubSource
metadata: {{name: gh}}
spec:
  eventTypes: [push]
  ownerAndRepository: Codertocat/Hello-World
  secretToken: {{secretKeyRef: {{name: githubsecret, key: secretToken}}}}
  sink: {{uri: "{}"}}
"#,
            sink.url()
        ),
    );
    let data = dir.path().join("data");
    let body = std::fs::read(format!(
        "{}/sources/tests/fixtures/push.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("push fixture");
    let mut first = EvmeshProcess::start(&config, &data, &[]);
    let webhook = first.url("/webhooks/github/default/gh");
    let client = client();
    let ids: HashSet<String> = (0..10).map(|i| format!("delivery-{i}")).collect();
    for id in &ids {
        let resp = client
            .post(&webhook)
            .header("x-github-event", "push")
            .header("x-github-delivery", id)
            .header("x-hub-signature-256", sha256(&body))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("post webhook");
        assert_eq!(resp.status().as_u16(), 202, "delivery {id} accepted");
    }
    // Killed right after the last 202, before any delivery to the sink completed.
    first.sigkill();
    sink.always(Reply::Status(202));

    let since = Instant::now();
    let mut second = EvmeshProcess::start(&config, &data, &[]);
    let deadline = Instant::now() + WAIT;
    loop {
        let got: HashSet<String> = sink
            .received()
            .iter()
            .filter(|r| r.at >= since)
            .filter_map(|r| r.event.as_ref().map(|e| e.id().to_string()))
            .collect();
        let missing: Vec<&String> = ids.difference(&got).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} webhook deliveries answered 202 never reached the sink after the restart \
             (e.g. {:?}):\n{}",
            missing.len(),
            ids.len(),
            &missing[..missing.len().min(5)],
            second.output_tail(100)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
