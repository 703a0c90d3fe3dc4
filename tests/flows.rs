//! Sequences and Parallels: wired into channels and subscriptions as Knative's reconcilers wire
//! them, visible through the admin API (with ownerReferences) and shown with Knative's status
//! shapes; applied, changed and deleted live.

mod common;

use std::time::Duration;

use common::sequence::{self, step1, step2, text_event, text_of, three_steps};
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

// ---- Data plane: events through Sequences and Parallels (real evmesh, real HTTP sinks).

fn same(e: &cloudevents::Event) -> cloudevents::Event {
    e.clone()
}
fn appended_data(e: &cloudevents::Event) -> cloudevents::Event {
    let mut out = e.clone();
    out.set_data("text/plain", "appended data");
    out
}

#[tokio::test]
async fn a_sequence_runs_its_steps_in_order_and_sends_the_last_reply() {
    let s = three_steps().await;
    let m = mesh(&sequence_yaml(
        &s[0].url(),
        &s[1].url(),
        &s[2].url(),
        &s[3].url(),
    ))
    .await;
    sequence::sequence_runs_its_steps_in_order_and_sends_the_last_reply(
        &m.url("/channels/default/sequence-kn-sequence-0"),
        &s,
    )
    .await;
}

#[tokio::test]
async fn a_step_answering_202_ends_the_flow_quietly() {
    let s = three_steps().await;
    // Step 2 answers the first event with 202 and no event, and passes the second on.
    s[1].script([Reply::Status(202)]);
    let m = mesh(&sequence_yaml(
        &s[0].url(),
        &s[1].url(),
        &s[2].url(),
        &s[3].url(),
    ))
    .await;
    let address = m.url("/channels/default/sequence-kn-sequence-0");
    post_ok(&address, text_event("stops", "a")).await;
    eventually(
        "step 2 gets the first event",
        Duration::from_secs(10),
        || s[1].count() == 1,
    )
    .await;
    post_ok(&address, text_event("passes", "b")).await;
    eventually(
        "the second event gets through",
        Duration::from_secs(10),
        || s[3].count() == 1,
    )
    .await;
    wait_subscriptions_idle(&m).await;
    assert_eq!(s[2].ids(), ["passes"], "step 3 never saw the stopped event");
    assert_eq!(s[3].ids(), ["passes"]);
}

/// A Parallel as Knative's feature test has it: branch 0's filter passes (replies with the
/// event), branch 1's filter blocks (202, no event); branch 2 has no filter and its own reply.
fn parallel_yaml(
    f0: &TestSink,
    b0: &TestSink,
    f1: &TestSink,
    b1: &TestSink,
    b2: &TestSink,
    b2_reply: &TestSink,
    reply: &TestSink,
) -> String {
    format!(
        r#"
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {{name: p}}
spec:
  branches:
    - filter: {{uri: "{}"}}
      subscriber: {{uri: "{}"}}
    - filter: {{uri: "{}"}}
      subscriber: {{uri: "{}"}}
    - subscriber: {{uri: "{}"}}
      reply: {{uri: "{}"}}
  reply: {{uri: "{}"}}
"#,
        f0.url(),
        b0.url(),
        f1.url(),
        b1.url(),
        b2.url(),
        b2_reply.url(),
        reply.url()
    )
}

#[tokio::test]
async fn a_parallel_runs_the_branches_whose_filter_passes_and_replies_per_branch() {
    let sinks: Vec<TestSink> =
        futures_util::future::join_all((0..7).map(|_| TestSink::start())).await;
    let [f0, b0, f1, b1, b2, b2_reply, reply] = &sinks[..] else {
        unreachable!()
    };
    f0.always(Reply::Map(same));
    f1.always(Reply::Status(202));
    b0.always(Reply::Map(appended_data));
    b1.always(Reply::Map(appended_data));
    b2.always(Reply::Map(step1));
    let m = mesh(&parallel_yaml(f0, b0, f1, b1, b2, b2_reply, reply)).await;
    post_ok(
        &m.url("/channels/default/p-kn-parallel"),
        text_event("e1", "x"),
    )
    .await;
    eventually(
        "the passing branch replies to the Parallel's reply",
        Duration::from_secs(10),
        || reply.count() == 1,
    )
    .await;
    eventually(
        "the unfiltered branch replies to its own reply",
        Duration::from_secs(10),
        || b2_reply.count() == 1,
    )
    .await;
    wait_subscriptions_idle(&m).await;
    assert_eq!(f1.count(), 1, "the blocking filter saw the event");
    assert_eq!(b1.count(), 0, "a blocked branch's subscriber never runs");
    assert_eq!(
        reply.count(),
        1,
        "exactly one event from the passing branch"
    );
    assert_eq!(text_of(reply.received()[0].event()), "appended data");
    assert_eq!(text_of(b2_reply.received()[0].event()), "x-step1");
}

#[tokio::test]
async fn a_trigger_whose_subscriber_is_a_sequence_feeds_it() {
    let s = three_steps().await;
    let yaml = format!(
        "{}---\napiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: to-sequence}}\nspec:\n  broker: default\n  filter: {{attributes: {{type: dev.knative.sources.ping}}}}\n  subscriber:\n    ref: {{apiVersion: flows.knative.dev/v1, kind: Sequence, name: sequence}}\n",
        sequence_yaml(&s[0].url(), &s[1].url(), &s[2].url(), &s[3].url())
    );
    let m = mesh(&yaml).await;
    let (_, t) =
        get_json(&m.url("/apis/eventing.knative.dev/v1/namespaces/default/triggers/to-sequence"))
            .await;
    assert_eq!(
        t["status"]["subscriberUri"],
        m.url("/channels/default/sequence-kn-sequence-0"),
        "{t}"
    );
    post_ok(&m.url("/default/default"), text_event("b1", "from-broker")).await;
    eventually(
        "the sequence's reply gets the event",
        Duration::from_secs(10),
        || s[3].count() == 1,
    )
    .await;
    assert_eq!(
        text_of(s[3].received()[0].event()),
        "from-broker-step1-step2-step3"
    );
}

#[tokio::test]
async fn a_sequence_changed_and_deleted_through_the_api_while_events_flow_loses_none() {
    let s = three_steps().await;
    let other = TestSink::start().await;
    other.always(Reply::Map(step2));
    let m = mesh("").await;
    let url = m.url("/apis/flows.knative.dev/v1/namespaces/default/sequences");
    let (code, obj) = send(
        reqwest::Method::POST,
        &url,
        Some(sequence_yaml(
            &s[0].url(),
            &s[1].url(),
            &s[2].url(),
            &s[3].url(),
        )),
    )
    .await;
    assert_eq!(code, 201, "{obj}");
    let address = m.url("/channels/default/sequence-kn-sequence-0");
    let mut accepted = Vec::new();
    for i in 0..60 {
        if i == 30 {
            // Step 2 moves to another service while events are inside the sequence.
            let (code, obj) = send(
                reqwest::Method::PUT,
                &format!("{url}/sequence"),
                Some(sequence_yaml(
                    &s[0].url(),
                    &other.url(),
                    &s[2].url(),
                    &s[3].url(),
                )),
            )
            .await;
            assert_eq!(code, 200, "{obj}");
        }
        let id = format!("live-{i}");
        if post_binary(&address, text_event(&id, "x")).await == 202 {
            accepted.push(id);
        }
    }
    assert_eq!(accepted.len(), 60);
    eventually(
        "every accepted event reaches the end",
        Duration::from_secs(20),
        || {
            let got: std::collections::HashSet<String> = s[3].ids().into_iter().collect();
            accepted.iter().all(|id| got.contains(id))
        },
    )
    .await;
    assert!(other.count() > 0, "the changed step took over");
    let (code, _) = send(reqwest::Method::DELETE, &format!("{url}/sequence"), None).await;
    assert_eq!(code, 200);
    assert_eq!(
        post_binary(&address, text_event("late", "x")).await,
        404,
        "a deleted sequence has no address"
    );
}

#[tokio::test]
async fn kill_9_with_events_inside_a_sequence_then_restart_loses_none() {
    let s = three_steps().await;
    // Step 2 fails until the restart: the events wait inside the sequence, retrying.
    s[1].always(Reply::Status(503));
    let yaml = sequence_yaml(&s[0].url(), &s[1].url(), &s[2].url(), &s[3].url()).replace(
        &format!("    - uri: {}\n", s[1].url()),
        &format!("    - uri: {}\n      delivery: {{retry: 10000, backoffPolicy: linear, backoffDelay: PT0.01S}}\n", s[1].url()),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &yaml);
    let data = dir.path().join("data");
    let em = EvmeshProcess::start(&config, &data, &[]);
    let ids: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for id in &ids {
        post_ok(
            &em.url("/channels/default/sequence-kn-sequence-0"),
            text_event(id, "x"),
        )
        .await;
    }
    eventually(
        "every event reached the failing step",
        Duration::from_secs(20),
        || {
            let got: std::collections::HashSet<String> = s[1].ids().into_iter().collect();
            ids.iter().all(|id| got.contains(id))
        },
    )
    .await;
    em.kill9();
    s[1].always(Reply::Map(step2));
    let em = EvmeshProcess::start(&config, &data, &[]);
    eventually(
        "every event reaches the end after the restart",
        Duration::from_secs(30),
        || {
            let got: std::collections::HashSet<String> = s[3].ids().into_iter().collect();
            ids.iter().all(|id| got.contains(id))
        },
    )
    .await;
    assert!(
        s[3].received()
            .iter()
            .all(|r| text_of(r.event()) == "x-step1-step2-step3"),
        "{}",
        em.stderr_tail()
    );
}

/// Waits until every channel in namespace `default` has routed every event it stored and every
/// subscription has finished (delivered, dead-lettered or dropped) every event routed to it:
/// after this nothing more can reach a sink, so "never delivered" can be asserted.
async fn wait_subscriptions_idle(m: &TestMesh) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, chans) =
            get_json(&m.url("/apis/messaging.knative.dev/v1/namespaces/default/inmemorychannels"))
                .await;
        let (_, subs) =
            get_json(&m.url("/apis/messaging.knative.dev/v1/namespaces/default/subscriptions"))
                .await;
        let items = |v: &Value| v["items"].as_array().cloned().unwrap_or_default();
        let subs = items(&subs);
        let idle = items(&chans).iter().all(|c| {
            let e = &c["status"]["evmesh"];
            let name = &c["metadata"]["name"];
            let finished: u64 = subs
                .iter()
                .filter(|s| &s["spec"]["channel"]["name"] == name)
                .map(|s| {
                    let k = &s["status"]["evmesh"]["counters"];
                    ["delivered", "deadLettered", "dropped"]
                        .iter()
                        .map(|f| k[*f].as_u64().unwrap_or(0))
                        .sum::<u64>()
                })
                .sum();
            e["routedOffset"].as_u64().is_some()
                && e["routedOffset"] == e["counters"]["accepted"]
                && e["counters"]["routed"].as_u64() == Some(finished)
        });
        if idle {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("channels never went idle:\n{chans}\n{subs:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_running_sequence_is_ready_and_one_with_a_step_that_cannot_resolve_is_not() {
    let s = three_steps().await;
    let m = mesh(&sequence_yaml(
        &s[0].url(),
        &s[1].url(),
        &s[2].url(),
        &s[3].url(),
    ))
    .await;
    let url = m.url("/apis/flows.knative.dev/v1/namespaces/default/sequences/sequence");
    let (_, seq) = get_json(&url).await;
    assert_eq!(seq["status"]["conditions"][0]["status"], "True", "{seq}");
    assert_eq!(
        seq["status"]["subscriptionStatuses"][2]["ready"]["status"], "True",
        "{seq}"
    );
    let broken = sequence_yaml(&s[0].url(), "x", &s[2].url(), &s[3].url()).replace(
        "    - uri: x\n",
        "    - ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: missing}\n",
    );
    let (code, obj) = send(reqwest::Method::PUT, &url, Some(broken)).await;
    assert_eq!(code, 200, "{obj}");
    let (_, seq) = get_json(&url).await;
    let c = &seq["status"]["conditions"][0];
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("SubscriberResolveFailed")),
        "{seq}"
    );
    assert_eq!(
        seq["status"]["subscriptionStatuses"][1]["ready"]["status"], "False",
        "{seq}"
    );
}

#[tokio::test]
async fn a_broker_and_a_channel_can_be_steps() {
    let (first, via_broker, via_channel) = (
        TestSink::start().await,
        TestSink::start().await,
        TestSink::start().await,
    );
    first.always(Reply::Map(step1));
    let yaml = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec:
  broker: default
  subscriber: {{uri: "{}"}}
---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {{name: tap}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {{name: tap-reader}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1, kind: Channel, name: tap}}
  subscriber: {{uri: "{}"}}
---
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {{name: to-broker}}
spec:
  steps:
    - uri: "{}"
    - ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
---
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {{name: to-channel}}
spec:
  steps:
    - ref: {{apiVersion: messaging.knative.dev/v1, kind: Channel, name: tap}}
"#,
        via_broker.url(),
        via_channel.url(),
        first.url()
    );
    let m = mesh(&yaml).await;
    post_ok(
        &m.url("/channels/default/to-broker-kn-sequence-0"),
        text_event("b", "x"),
    )
    .await;
    post_ok(
        &m.url("/channels/default/to-channel-kn-sequence-0"),
        text_event("c", "y"),
    )
    .await;
    eventually(
        "the broker step's trigger gets the first step's reply",
        Duration::from_secs(10),
        || via_broker.count() == 1,
    )
    .await;
    eventually(
        "the channel step's subscription gets the event",
        Duration::from_secs(10),
        || via_channel.ids() == ["c"],
    )
    .await;
    assert_eq!(text_of(via_broker.received()[0].event()), "x-step1");
}

#[tokio::test]
async fn a_parallel_can_be_a_subscriptions_reply() {
    let (sub, branch) = (TestSink::start().await, TestSink::start().await);
    sub.always(Reply::Map(step1));
    let yaml = format!(
        r#"
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {{name: in}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {{name: s}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: in}}
  subscriber: {{uri: "{}"}}
  reply:
    ref: {{apiVersion: flows.knative.dev/v1, kind: Parallel, name: p}}
---
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {{name: p}}
spec:
  branches:
    - subscriber: {{uri: "{}"}}
"#,
        sub.url(),
        branch.url()
    );
    let m = mesh(&yaml).await;
    post_ok(&m.url("/channels/default/in"), text_event("r", "z")).await;
    eventually(
        "the Parallel's branch gets the subscriber's reply",
        Duration::from_secs(10),
        || branch.count() == 1,
    )
    .await;
    assert_eq!(text_of(branch.received()[0].event()), "z-step1");
}
