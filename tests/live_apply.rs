//! Changing a running mesh through the admin API (create, replace, delete, watch), as kubectl
//! would, with events flowing: nothing accepted is lost, statuses and errors are Kubernetes'.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::Value;

const BROKER: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: demo}
spec:
  delivery: {retry: 5, backoffDelay: PT0.05S}
"#;

fn triggers_url(m: &TestMesh) -> String {
    m.url("/apis/eventing.knative.dev/v1/namespaces/demo/triggers")
}

fn trigger_yaml(name: &str, sink: &TestSink, ty: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  broker: default\n  filter: {{attributes: {{type: {ty}}}}}\n  subscriber: {{uri: \"{}\"}}\n",
        sink.url()
    )
}

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

async fn get_json(url: &str) -> (u16, Value) {
    send(reqwest::Method::GET, url, None).await
}

fn ready(obj: &Value) -> (String, String) {
    let c = &obj["status"]["conditions"][0];
    (
        c["status"].as_str().unwrap_or("").to_string(),
        c["reason"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn created_trigger_has_kubernetes_metadata_and_delivers() {
    let sink = TestSink::start().await;
    let m = mesh(BROKER).await;
    let (code, obj) = send(
        reqwest::Method::POST,
        &triggers_url(&m),
        Some(trigger_yaml("t1", &sink, "a")),
    )
    .await;
    assert_eq!(code, 201, "{obj}");
    let meta = &obj["metadata"];
    assert!(meta["uid"].as_str().is_some_and(|u| u.len() == 36), "{obj}");
    assert_eq!(meta["generation"], 1);
    assert!(meta["resourceVersion"].as_str().is_some(), "{obj}");
    assert!(meta["creationTimestamp"].as_str().is_some(), "{obj}");
    assert_eq!(obj["status"]["observedGeneration"], 1);
    assert_eq!(ready(&obj).0, "True", "{obj}");
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("e1", "a")).await,
        202
    );
    eventually("delivered", Duration::from_secs(10), || sink.count() == 1).await;

    // A replace that changes the spec bumps generation and keeps uid and creationTimestamp.
    let other = TestSink::start().await;
    let (code, changed) = send(
        reqwest::Method::PUT,
        &format!("{}/t1", triggers_url(&m)),
        Some(trigger_yaml("t1", &other, "a")),
    )
    .await;
    assert_eq!(code, 200, "{changed}");
    assert_eq!(changed["metadata"]["uid"], meta["uid"]);
    assert_eq!(
        changed["metadata"]["creationTimestamp"],
        meta["creationTimestamp"]
    );
    assert_eq!(changed["metadata"]["generation"], 2);
    assert_ne!(
        changed["metadata"]["resourceVersion"],
        meta["resourceVersion"]
    );
    assert_eq!(changed["status"]["observedGeneration"], 2);
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("e2", "a")).await,
        202
    );
    eventually(
        "delivered to the new subscriber",
        Duration::from_secs(10),
        || other.ids() == vec!["e2".to_string()],
    )
    .await;
    assert_eq!(sink.ids(), vec!["e1".to_string()]);
}

#[tokio::test]
async fn invalid_resource_gets_422_with_field_causes() {
    let m = mesh(BROKER).await;
    let body = "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: bad}\nspec:\n  broker: default\n  subscriber: {uri: not-a-url}\n  delivery: {backoffDelay: soon}\n";
    let (code, status) = send(reqwest::Method::POST, &triggers_url(&m), Some(body.into())).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["code"], 422);
    assert_eq!(status["details"]["kind"], "Trigger");
    assert_eq!(status["details"]["name"], "bad");
    let fields: HashSet<&str> = status["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert!(fields.contains("spec.subscriber.uri"), "{status}");
    assert!(fields.contains("spec.delivery.backoffDelay"), "{status}");
    // Nothing was created.
    let (code, _) = get_json(&format!("{}/bad", triggers_url(&m))).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn misspelt_field_is_an_unknown_field_error_with_the_nearest_name() {
    let sink = TestSink::start().await;
    let m = mesh(BROKER).await;
    let body = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: typo}}\nspec:\n  broker: default\n  filtr: {{attributes: {{type: a}}}}\n  subscriber: {{uri: \"{}\"}}\n",
        sink.url()
    );
    let (code, status) = send(reqwest::Method::POST, &triggers_url(&m), Some(body)).await;
    assert_eq!(code, 422, "{status}");
    let cause = &status["details"]["causes"][0];
    assert_eq!(cause["field"], "spec.filtr", "{status}");
    assert!(
        cause["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown field") && m.contains("\"filter\"")),
        "{status}"
    );
}

#[tokio::test]
async fn conflicting_and_missing_resources_get_409_and_404() {
    let sink = TestSink::start().await;
    let m = mesh(BROKER).await;
    let url = triggers_url(&m);
    let (code, _) = send(
        reqwest::Method::POST,
        &url,
        Some(trigger_yaml("t1", &sink, "a")),
    )
    .await;
    assert_eq!(code, 201);
    let (code, status) = send(
        reqwest::Method::POST,
        &url,
        Some(trigger_yaml("t1", &sink, "a")),
    )
    .await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "AlreadyExists");
    let (code, status) = send(
        reqwest::Method::PUT,
        &format!("{url}/nope"),
        Some(trigger_yaml("nope", &sink, "a")),
    )
    .await;
    assert_eq!(code, 404, "{status}");
    assert_eq!(status["reason"], "NotFound");
    let (code, status) = send(reqwest::Method::DELETE, &format!("{url}/nope"), None).await;
    assert_eq!(code, 404, "{status}");
    assert_eq!(status["reason"], "NotFound");
    let (code, status) =
        get_json(&m.url("/apis/eventing.knative.dev/v1/namespaces/demo/widgets")).await;
    assert_eq!(code, 404, "{status}");
    assert_eq!(status["reason"], "NotFound");
}

#[tokio::test]
async fn writes_need_the_bearer_token_and_reads_stay_open() {
    let sink = TestSink::start().await;
    let m = mesh_with(BROKER, |mut o| {
        o.admin_token = Some("s3cret".into());
        o
    })
    .await;
    let url = triggers_url(&m);
    let (code, status) = send(
        reqwest::Method::POST,
        &url,
        Some(trigger_yaml("t1", &sink, "a")),
    )
    .await;
    assert_eq!(code, 401, "{status}");
    assert_eq!(status["reason"], "Unauthorized");
    let wrong = client()
        .post(&url)
        .bearer_auth("wrong")
        .body(trigger_yaml("t1", &sink, "a"))
        .send()
        .await
        .expect("post");
    assert_eq!(wrong.status().as_u16(), 401);
    let right = client()
        .post(&url)
        .bearer_auth("s3cret")
        .body(trigger_yaml("t1", &sink, "a"))
        .send()
        .await
        .expect("post");
    assert_eq!(right.status().as_u16(), 201);
    let (code, list) = get_json(&url).await;
    assert_eq!(code, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn trigger_before_broker_waits_not_ready_then_delivers() {
    let sink = TestSink::start().await;
    let m = mesh(&trigger_yaml("early", &sink, "a")).await;
    let (_, t) = get_json(&format!("{}/early", triggers_url(&m))).await;
    assert_eq!(
        ready(&t),
        ("False".to_string(), "BrokerDoesNotExist".to_string()),
        "{t}"
    );
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("lost", "a")).await,
        404
    );
    assert_eq!(
        get_text(&m.url("/readyz")).await,
        (200, "ready\n".to_string()),
        "a trigger waiting for its broker does not make the mesh unready"
    );
    let (code, b) = send(
        reqwest::Method::POST,
        &m.url("/apis/eventing.knative.dev/v1/namespaces/demo/brokers"),
        Some(BROKER.into()),
    )
    .await;
    assert_eq!(code, 201, "{b}");
    let (_, t) = get_json(&format!("{}/early", triggers_url(&m))).await;
    assert_eq!(ready(&t).0, "True", "{t}");
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("e1", "a")).await,
        202
    );
    eventually("delivered", Duration::from_secs(10), || {
        sink.ids() == vec!["e1".to_string()]
    })
    .await;
}

#[tokio::test]
async fn deleted_broker_answers_404_at_once_and_its_trigger_goes_not_ready() {
    let sink = TestSink::start().await;
    let m = mesh(&format!("{BROKER}---\n{}", trigger_yaml("t1", &sink, "a"))).await;
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("e1", "a")).await,
        202
    );
    let (code, _) = send(
        reqwest::Method::DELETE,
        &m.url("/apis/eventing.knative.dev/v1/namespaces/demo/brokers/default"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("e2", "a")).await,
        404
    );
    let (_, t) = get_json(&format!("{}/t1", triggers_url(&m))).await;
    assert_eq!(
        ready(&t),
        ("False".to_string(), "BrokerDoesNotExist".to_string()),
        "{t}"
    );
    // Applied again, the broker's trigger resumes where it stopped: the event accepted before
    // the delete is delivered (at least once), nothing is skipped.
    let (code, b) = send(
        reqwest::Method::POST,
        &m.url("/apis/eventing.knative.dev/v1/namespaces/demo/brokers"),
        Some(BROKER.into()),
    )
    .await;
    assert_eq!(code, 201, "{b}");
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("e3", "a")).await,
        202
    );
    eventually(
        "both accepted events delivered",
        Duration::from_secs(10),
        || {
            let ids = sink.ids();
            ids.contains(&"e1".to_string()) && ids.contains(&"e3".to_string())
        },
    )
    .await;
}

/// Posts events of type `a` with increasing ids until stopped; returns the ids answered 202.
fn load(
    url: String,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut ok = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::Acquire) {
            let id = format!("l{i}");
            i += 1;
            let code = post_binary(&url, event(&id, "a")).await;
            assert_eq!(code, 202, "event {id}");
            ok.push(id);
            sent.fetch_add(1, Ordering::Release);
        }
        ok
    })
}

#[tokio::test]
async fn apply_change_and_delete_under_load_lose_nothing() {
    let (a, b, c, d) = (
        TestSink::start().await,
        TestSink::start().await,
        TestSink::start().await,
        TestSink::start().await,
    );
    let m = mesh(&format!(
        "{BROKER}---\n{}---\n{}",
        trigger_yaml("steady", &a, "a"),
        trigger_yaml("doomed", &c, "a")
    ))
    .await;
    let url = triggers_url(&m);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..4)
        .map(|_| load(m.url("/demo/default"), stop.clone(), sent.clone()))
        .collect();
    let at_least = |n: usize| {
        let sent = sent.clone();
        async move {
            eventually("events flowing", Duration::from_secs(20), || {
                sent.load(Ordering::Acquire) >= n
            })
            .await
        }
    };
    at_least(100).await;
    // Change the steady trigger's subscriber: a → b (it keeps its position).
    let (code, _) = send(
        reqwest::Method::PUT,
        &format!("{url}/steady"),
        Some(trigger_yaml("steady", &b, "a")),
    )
    .await;
    assert_eq!(code, 200);
    at_least(200).await;
    // Add a trigger: it gets every event accepted after its creation answered.
    let (code, _) = send(
        reqwest::Method::POST,
        &url,
        Some(trigger_yaml("late", &d, "a")),
    )
    .await;
    assert_eq!(code, 201);
    let after_create = sent.load(Ordering::Acquire);
    at_least(after_create + 100).await;
    // Delete one.
    let (code, _) = send(reqwest::Method::DELETE, &format!("{url}/doomed"), None).await;
    assert_eq!(code, 200);
    at_least(sent.load(Ordering::Acquire) + 100).await;
    stop.store(true, Ordering::Release);
    let mut accepted = Vec::new();
    for s in senders {
        accepted.extend(s.await.expect("sender"));
    }
    let all: HashSet<String> = accepted.iter().cloned().collect();
    // On failure, say which events are missing and what the trigger and broker report.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got: HashSet<String> = a.ids().into_iter().chain(b.ids()).collect();
        if all.is_subset(&got) {
            break;
        }
        if std::time::Instant::now() > deadline {
            let missing: Vec<&String> = all.difference(&got).collect();
            let steady = admin_counters(&m.url(""), "triggers", "demo", "steady").await;
            let (_, broker) =
                get_json(&m.url("/apis/eventing.knative.dev/v1/namespaces/demo/brokers/default"))
                    .await;
            panic!(
                "the steady trigger did not get every accepted event: missing {missing:?} of \
                 {} accepted; a got {}, b got {}; steady {steady}; broker {}",
                all.len(),
                a.count(),
                b.count(),
                broker["status"]
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!b.ids().is_empty(), "the changed subscriber got events");
    // Every event accepted after `late` was created reached it: senders number ids in order, so
    // those are the ids numbered past each sender's count at that moment; check the bulk: at
    // least every event whose acceptance followed the create by the 4 in-flight posts.
    let late: HashSet<String> = d.ids().into_iter().collect();
    eventually(
        "the late trigger got the events after its creation",
        Duration::from_secs(30),
        || d.count() + after_create + 8 >= accepted.len(),
    )
    .await;
    assert!(late.is_subset(&all));
    // The deleted trigger is handed nothing new: one more event is routed to the two live
    // triggers only (the broker's `routed` counts (event, trigger) matches).
    let stored = accepted.len() as u64;
    let routed_before = routed_up_to(&m.url(""), "demo", "default", stored).await;
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("after", "a")).await,
        202
    );
    let routed_after = routed_up_to(&m.url(""), "demo", "default", stored + 1).await;
    assert_eq!(
        routed_after - routed_before,
        2,
        "the last event went to the steady and the late trigger, not to the deleted one"
    );
    eventually(
        "delivered to steady and late",
        Duration::from_secs(10),
        || b.ids().contains(&"after".to_string()) && d.ids().contains(&"after".to_string()),
    )
    .await;
    assert!(!c.ids().contains(&"after".to_string()));
}

#[tokio::test]
async fn watch_streams_changes_and_resumes_from_a_resource_version() {
    let sink = TestSink::start().await;
    let m = mesh(&format!("{BROKER}---\n{}", trigger_yaml("t1", &sink, "a"))).await;
    let url = triggers_url(&m);
    let resp = client()
        .get(format!("{url}?watch=true"))
        .send()
        .await
        .expect("watch");
    assert_eq!(resp.status().as_u16(), 200);
    let mut lines = Lines::new(resp);
    let first = lines.next().await;
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["metadata"]["name"], "t1");
    let (_, created) = send(
        reqwest::Method::POST,
        &url,
        Some(trigger_yaml("t2", &sink, "b")),
    )
    .await;
    let ev = lines.next().await;
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["metadata"]["name"], "t2");
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    send(
        reqwest::Method::PUT,
        &format!("{url}/t2"),
        Some(trigger_yaml("t2", &sink, "c")),
    )
    .await;
    let ev = lines.next().await;
    assert_eq!(ev["type"], "MODIFIED");
    assert_eq!(ev["object"]["spec"]["filter"]["attributes"]["type"], "c");
    send(reqwest::Method::DELETE, &format!("{url}/t2"), None).await;
    let ev = lines.next().await;
    assert_eq!(ev["type"], "DELETED");
    assert_eq!(ev["object"]["metadata"]["name"], "t2");

    // Resuming from the create's resourceVersion replays what came after it, in order.
    let resp = client()
        .get(format!("{url}?watch=true&resourceVersion={rv}"))
        .send()
        .await
        .expect("watch");
    let mut resumed = Lines::new(resp);
    assert_eq!(resumed.next().await["type"], "MODIFIED");
    assert_eq!(resumed.next().await["type"], "DELETED");
    // Across namespaces too.
    let resp = client()
        .get(m.url("/apis/eventing.knative.dev/v1/triggers?watch=1"))
        .send()
        .await
        .expect("watch");
    let mut all = Lines::new(resp);
    assert_eq!(all.next().await["object"]["metadata"]["name"], "t1");
}

fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a numeric resourceVersion")
}

/// The watch's next event for trigger `name`, skipping others.
async fn next_for(lines: &mut Lines, name: &str) -> Value {
    loop {
        let ev = lines.next().await;
        if ev["object"]["metadata"]["name"] == name {
            return ev;
        }
    }
}

#[tokio::test]
async fn a_trigger_turning_ready_when_its_broker_is_applied_is_a_modified_watch_event_with_a_new_resource_version()
 {
    let sink = TestSink::start().await;
    let m = mesh(&trigger_yaml("early", &sink, "a")).await;
    let resp = client()
        .get(format!("{}?watch=true", triggers_url(&m)))
        .send()
        .await
        .expect("watch");
    let mut lines = Lines::new(resp);
    let added = next_for(&mut lines, "early").await;
    assert_eq!(added["type"], "ADDED");
    assert_eq!(
        ready(&added["object"]),
        ("False".to_string(), "BrokerDoesNotExist".to_string()),
        "{added}"
    );
    let (code, b) = send(
        reqwest::Method::POST,
        &m.url("/apis/eventing.knative.dev/v1/namespaces/demo/brokers"),
        Some(BROKER.into()),
    )
    .await;
    assert_eq!(code, 201, "{b}");
    let ev = next_for(&mut lines, "early").await;
    assert_eq!(ev["type"], "MODIFIED", "{ev}");
    assert_eq!(ready(&ev["object"]).0, "True", "{ev}");
    let bumped = rv_of(&ev["object"]);
    assert!(
        bumped > rv_of(&added["object"]) && bumped > rv_of(&b),
        "the status change has a resourceVersion of its own, after the broker's: {ev}"
    );
    // The object carries that version from now on (and a watch from the broker's version
    // sees the change).
    let (_, t) = get_json(&format!("{}/early", triggers_url(&m))).await;
    assert_eq!(rv_of(&t), bumped, "{t}");
    let resp = client()
        .get(format!(
            "{}?watch=true&resourceVersion={}",
            triggers_url(&m),
            rv_of(&b)
        ))
        .send()
        .await
        .expect("watch");
    let mut resumed = Lines::new(resp);
    let ev = next_for(&mut resumed, "early").await;
    assert_eq!(
        (ev["type"].as_str(), rv_of(&ev["object"])),
        (Some("MODIFIED"), bumped)
    );
}

#[tokio::test]
async fn a_trigger_whose_sink_starts_resolving_is_a_modified_watch_event() {
    let m = mesh(&format!(
        "{BROKER}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: forward, namespace: demo}}\nspec:\n  broker: default\n  subscriber: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: other}}}}\n"
    ))
    .await;
    let resp = client()
        .get(format!("{}?watch=true", triggers_url(&m)))
        .send()
        .await
        .expect("watch");
    let mut lines = Lines::new(resp);
    let added = next_for(&mut lines, "forward").await;
    assert_eq!(
        ready(&added["object"]),
        ("False".to_string(), "DestinationNotResolved".to_string()),
        "{added}"
    );
    let (code, b) = send(
        reqwest::Method::POST,
        &m.url("/apis/eventing.knative.dev/v1/namespaces/demo/brokers"),
        Some(BROKER.replace("name: default", "name: other")),
    )
    .await;
    assert_eq!(code, 201, "{b}");
    let ev = next_for(&mut lines, "forward").await;
    assert_eq!(ev["type"], "MODIFIED", "{ev}");
    assert_eq!(ready(&ev["object"]).0, "True", "{ev}");
    assert_eq!(
        ev["object"]["status"]["subscriberUri"].as_str(),
        b["status"]["address"]["url"].as_str(),
        "{ev}"
    );
    assert!(rv_of(&ev["object"]) > rv_of(&added["object"]), "{ev}");
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
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

#[tokio::test]
async fn replay_endpoint_redelivers_from_earliest_to_that_trigger_only() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let m = mesh(&format!(
        "{BROKER}---\n{}---\n{}",
        trigger_yaml("ta", &a, "a"),
        trigger_yaml("tb", &b, "a")
    ))
    .await;
    for id in ["e1", "e2"] {
        assert_eq!(
            post_binary(&m.url("/demo/default"), event(id, "a")).await,
            202
        );
    }
    eventually("both delivered to both", Duration::from_secs(10), || {
        a.count() == 2 && b.count() == 2
    })
    .await;
    let (code, status) = send(
        reqwest::Method::POST,
        &format!("{}/ta/replay", triggers_url(&m)),
        Some(r#"{"from": "earliest"}"#.into()),
    )
    .await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["status"], "Success");
    eventually("ta re-delivered both", Duration::from_secs(10), || {
        a.count() == 4
    })
    .await;
    assert_eq!(a.ids(), ["e1", "e2", "e1", "e2"]);
    // tb is not replayed: an event after the replay reaches it, and nothing else did.
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("e3", "a")).await,
        202
    );
    eventually("e3 to tb", Duration::from_secs(10), || b.count() == 3).await;
    assert_eq!(b.ids(), ["e1", "e2", "e3"]);

    let (code, status) = send(
        reqwest::Method::POST,
        &format!("{}/nope/replay", triggers_url(&m)),
        Some(r#"{"from": "earliest"}"#.into()),
    )
    .await;
    assert_eq!(code, 404, "{status}");
    let (code, status) = send(
        reqwest::Method::POST,
        &format!("{}/ta/replay", triggers_url(&m)),
        Some(r#"{"from": "yesterday"}"#.into()),
    )
    .await;
    assert_eq!(code, 400, "{status}");
}

#[tokio::test]
async fn a_trigger_changed_through_the_api_keeps_its_pending_retries() {
    let (failing, working) = (TestSink::start().await, TestSink::start().await);
    failing.always(Reply::Status(503));
    let m = mesh(&format!(
        "{BROKER}---\n{}",
        trigger_yaml("t", &failing, "a")
    ))
    .await;
    post_ok(&m.url("/demo/default"), event("e1", "a")).await;
    eventually("e1 is being retried", Duration::from_secs(10), || {
        failing.count() >= 2
    })
    .await;
    // Same trigger (same uid), new subscriber: the pending retry is kept and goes to it.
    let (code, _) = send(
        reqwest::Method::PUT,
        &format!("{}/t", triggers_url(&m)),
        Some(trigger_yaml("t", &working, "a")),
    )
    .await;
    assert_eq!(code, 200);
    eventually(
        "the pending event reaches the new subscriber",
        Duration::from_secs(10),
        || working.ids() == ["e1"],
    )
    .await;
}
