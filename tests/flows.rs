//! Sequences and Parallels: wired into channels and subscriptions as Knative's reconcilers wire
//! them, visible through the admin API (with ownerReferences) and shown with Knative's status
//! shapes; applied, changed and deleted live.

mod common;

use common::*;
use serde_json::Value;

async fn send(method: reqwest::Method, url: &str, body: Option<String>) -> (u16, Value) {
    let mut req = client().request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/yaml").body(b);
    }
    let resp = req.send().await.expect("request");
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn imcs(m: &TestMesh) -> String {
    m.url("/apis/messaging.knative.dev/v1/namespaces/default/inmemorychannels")
}

fn subscriptions(m: &TestMesh) -> String {
    m.url("/apis/messaging.knative.dev/v1/namespaces/default/subscriptions")
}

/// The Sequence of Knative's docs ("Sequence wired to event-display"), with URIs for the
/// Knative Services.
fn sequence_yaml(first: &str, second: &str, third: &str, reply: &str) -> String {
    format!(
        r#"
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata:
  name: sequence
spec:
  channelTemplate:
    apiVersion: messaging.knative.dev/v1
    kind: InMemoryChannel
  steps:
    - uri: {first}
    - uri: {second}
    - uri: {third}
  reply:
    uri: {reply}
"#
    )
}

#[tokio::test]
async fn a_sequences_channels_and_subscriptions_are_listed_with_owner_references() {
    let m = mesh(&sequence_yaml(
        "http://127.0.0.1:9/first",
        "http://127.0.0.1:9/second",
        "http://127.0.0.1:9/third",
        "http://127.0.0.1:9/display",
    ))
    .await;
    let (code, list) = get_json(&imcs(&m)).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(
        names(&list),
        [
            "sequence-kn-sequence-0",
            "sequence-kn-sequence-1",
            "sequence-kn-sequence-2"
        ]
    );
    let (_, seq) =
        get_json(&m.url("/apis/flows.knative.dev/v1/namespaces/default/sequences/sequence")).await;
    let owner = &list["items"][1]["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Sequence", "{list}");
    assert_eq!(owner["name"], "sequence");
    assert_eq!(owner["uid"], seq["metadata"]["uid"], "{seq}");
    let (_, subs) = get_json(&subscriptions(&m)).await;
    assert_eq!(
        names(&subs),
        [
            "sequence-kn-sequence-0",
            "sequence-kn-sequence-1",
            "sequence-kn-sequence-2"
        ]
    );
    let s1 = &subs["items"][1];
    assert_eq!(
        s1["spec"]["channel"]["name"], "sequence-kn-sequence-1",
        "{s1}"
    );
    assert_eq!(s1["spec"]["subscriber"]["uri"], "http://127.0.0.1:9/second");
    assert_eq!(s1["spec"]["reply"]["ref"]["name"], "sequence-kn-sequence-2");
    // One generated resource by name, as kubectl get would ask.
    let (code, one) = get_json(&format!("{}/sequence-kn-sequence-2", subscriptions(&m))).await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["spec"]["reply"]["uri"], "http://127.0.0.1:9/display");
}

#[tokio::test]
async fn a_sequence_shows_its_address_and_channel_and_subscription_statuses() {
    let m = mesh(&sequence_yaml(
        "http://127.0.0.1:9/first",
        "http://127.0.0.1:9/second",
        "http://127.0.0.1:9/third",
        "http://127.0.0.1:9/display",
    ))
    .await;
    let (_, seq) =
        get_json(&m.url("/apis/flows.knative.dev/v1/namespaces/default/sequences/sequence")).await;
    let st = &seq["status"];
    assert_eq!(
        st["address"]["url"],
        m.url("/channels/default/sequence-kn-sequence-0"),
        "{seq}"
    );
    assert_eq!(
        st["channelStatuses"].as_array().map(Vec::len),
        Some(3),
        "{seq}"
    );
    assert_eq!(
        st["channelStatuses"][2]["channel"]["kind"],
        "InMemoryChannel"
    );
    assert_eq!(
        st["channelStatuses"][2]["channel"]["name"],
        "sequence-kn-sequence-2"
    );
    assert_eq!(
        st["subscriptionStatuses"][0]["subscription"]["name"],
        "sequence-kn-sequence-0"
    );
    assert_eq!(
        st["subscriptionStatuses"][0]["subscription"]["kind"],
        "Subscription"
    );
    assert_eq!(st["conditions"][0]["type"], "Ready");
    let (_, sub) = get_json(&format!("{}/sequence-kn-sequence-0", subscriptions(&m))).await;
    let p = &sub["status"]["physicalSubscription"];
    assert_eq!(p["subscriberUri"], "http://127.0.0.1:9/first", "{sub}");
    assert_eq!(
        p["replyUri"],
        m.url("/channels/default/sequence-kn-sequence-1"),
        "{sub}"
    );
}

const PARALLEL: &str = r#"
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata:
  name: odd-even-parallel
spec:
  channelTemplate:
    apiVersion: messaging.knative.dev/v1
    kind: InMemoryChannel
  branches:
    - filter:
        uri: http://127.0.0.1:9/even-filter
      subscriber:
        uri: http://127.0.0.1:9/even-transformer
    - filter:
        uri: http://127.0.0.1:9/odd-filter
      subscriber:
        uri: http://127.0.0.1:9/odd-transformer
  reply:
    uri: http://127.0.0.1:9/event-display
"#;

#[tokio::test]
async fn a_parallel_shows_its_ingress_and_branch_statuses() {
    let m = mesh(PARALLEL).await;
    let (_, p) = get_json(
        &m.url("/apis/flows.knative.dev/v1/namespaces/default/parallels/odd-even-parallel"),
    )
    .await;
    let st = &p["status"];
    assert_eq!(
        st["address"]["url"],
        m.url("/channels/default/odd-even-parallel-kn-parallel"),
        "{p}"
    );
    assert_eq!(
        st["ingressChannelStatus"]["channel"]["name"],
        "odd-even-parallel-kn-parallel"
    );
    let b1 = &st["branchStatuses"][1];
    assert_eq!(
        b1["filterChannelStatus"]["channel"]["name"], "odd-even-parallel-kn-parallel-1",
        "{p}"
    );
    assert_eq!(
        b1["filterSubscriptionStatus"]["subscription"]["name"],
        "odd-even-parallel-kn-parallel-filter-1"
    );
    assert_eq!(
        b1["subscriberSubscriptionStatus"]["subscription"]["name"],
        "odd-even-parallel-kn-parallel-1"
    );
    let (_, subs) = get_json(&subscriptions(&m)).await;
    assert_eq!(
        names(&subs),
        [
            "odd-even-parallel-kn-parallel-filter-0",
            "odd-even-parallel-kn-parallel-0",
            "odd-even-parallel-kn-parallel-filter-1",
            "odd-even-parallel-kn-parallel-1"
        ]
    );
}

#[tokio::test]
async fn a_sequence_applied_through_the_api_brings_its_children_and_deleting_it_takes_them() {
    let m = mesh("").await;
    let url = m.url("/apis/flows.knative.dev/v1/namespaces/default/sequences");
    let yaml = sequence_yaml(
        "http://127.0.0.1:9/a",
        "http://127.0.0.1:9/b",
        "http://127.0.0.1:9/c",
        "http://127.0.0.1:9/d",
    );
    let (code, obj) = send(reqwest::Method::POST, &url, Some(yaml)).await;
    assert_eq!(code, 201, "{obj}");
    assert_eq!(names(&get_json(&imcs(&m)).await.1).len(), 3);
    // Two steps now: the third channel and subscription go.
    let two = sequence_yaml(
        "http://127.0.0.1:9/a",
        "http://127.0.0.1:9/b",
        "x",
        "http://127.0.0.1:9/d",
    )
    .replace("    - uri: x\n", "");
    let (code, obj) = send(reqwest::Method::PUT, &format!("{url}/sequence"), Some(two)).await;
    assert_eq!(code, 200, "{obj}");
    assert_eq!(
        names(&get_json(&subscriptions(&m)).await.1),
        ["sequence-kn-sequence-0", "sequence-kn-sequence-1"]
    );
    let (code, _) = send(reqwest::Method::DELETE, &format!("{url}/sequence"), None).await;
    assert_eq!(code, 200);
    assert!(names(&get_json(&imcs(&m)).await.1).is_empty());
    assert!(names(&get_json(&subscriptions(&m)).await.1).is_empty());
}

#[tokio::test]
async fn a_name_a_sequence_generated_cannot_be_created_by_hand() {
    let m = mesh(&sequence_yaml(
        "http://127.0.0.1:9/a",
        "http://127.0.0.1:9/b",
        "http://127.0.0.1:9/c",
        "http://127.0.0.1:9/d",
    ))
    .await;
    let (code, obj) = send(
        reqwest::Method::POST,
        &imcs(&m),
        Some("apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {name: sequence-kn-sequence-1}\n".into()),
    )
    .await;
    assert_eq!(code, 422, "{obj}");
    assert!(obj.to_string().contains("generated for Sequence"), "{obj}");
}

#[tokio::test]
async fn a_watch_on_subscriptions_sees_those_a_sequence_generates_come_and_go() {
    let m = mesh("").await;
    let resp = client()
        .get(format!("{}?watch=true", subscriptions(&m)))
        .send()
        .await
        .expect("watch");
    assert_eq!(resp.status().as_u16(), 200);
    let mut lines = Lines::new(resp);
    let url = m.url("/apis/flows.knative.dev/v1/namespaces/default/sequences");
    let two = sequence_yaml(
        "http://127.0.0.1:9/a",
        "http://127.0.0.1:9/b",
        "x",
        "http://127.0.0.1:9/d",
    )
    .replace("    - uri: x\n", "");
    let (code, obj) = send(reqwest::Method::POST, &url, Some(two)).await;
    assert_eq!(code, 201, "{obj}");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let ev = lines.next().await;
        seen.push(format!(
            "{} {}",
            ev["type"].as_str().unwrap_or(""),
            ev["object"]["metadata"]["name"].as_str().unwrap_or("")
        ));
    }
    assert_eq!(
        seen,
        [
            "ADDED sequence-kn-sequence-0",
            "ADDED sequence-kn-sequence-1"
        ]
    );
    send(reqwest::Method::DELETE, &format!("{url}/sequence"), None).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let ev = lines.next().await;
        seen.push(format!(
            "{} {}",
            ev["type"].as_str().unwrap_or(""),
            ev["object"]["metadata"]["name"].as_str().unwrap_or("")
        ));
    }
    assert_eq!(
        seen,
        [
            "DELETED sequence-kn-sequence-0",
            "DELETED sequence-kn-sequence-1"
        ]
    );
}

/// Reads a watch response line by line.
struct Lines {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Lines {
    fn new(resp: reqwest::Response) -> Lines {
        Lines {
            resp,
            buf: Vec::new(),
        }
    }
    async fn next(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return serde_json::from_slice(&line).expect("a JSON watch event per line");
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("a watch event within 10 s")
                .expect("read")
                .expect("stream still open");
            self.buf.extend_from_slice(&chunk);
        }
    }
}
