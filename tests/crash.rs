//! Crash safety with the real `evmesh` binary: kill -9 under load, restart on the same data dir,
//! and every event answered 202 still reaches its trigger; pending retries survive too.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudevents::AttributesReader;
use common::*;

/// `evmesh serve` on `engine` (the default engine when `None`).
fn start(config: &Path, data: &Path, engine: Option<&str>) -> EvmeshProcess {
    match engine {
        Some(e) => EvmeshProcess::start(config, data, &["--storage-engine", e]),
        None => EvmeshProcess::start(config, data, &[]),
    }
}

async fn kill9_during_load_loses_no_accepted_event(engine: Option<&str>) {
    let sink = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
spec:
  delivery: {{retry: 20, backoffPolicy: linear, backoffDelay: PT0.05S}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec: {{broker: default, subscriber: {{uri: "{}"}}}}
"#,
            sink.url()
        ),
    );
    let data = dir.path().join("data");
    let mut first = start(&config, &data, engine);
    let url = first.url("/default/default");
    let load = Load::default();
    let mut senders = Vec::new();
    for worker in 0..16 {
        let (url, load) = (url.clone(), load.clone());
        senders.push(tokio::spawn(async move { load.send(worker, &url).await }));
    }
    // Killed under load: once 200 events were accepted, with 16 senders still posting.
    let deadline = Instant::now() + Duration::from_secs(60);
    while load.accepted().len() < 200 {
        if let Some(failure) = load.failure() {
            panic!("{failure}\nthe first process:\n{}", first.output_tail(100));
        }
        assert!(
            Instant::now() < deadline,
            "200 events not accepted within 60 s ({} so far, {} refused with 503); the first \
             process:\n{}",
            load.accepted().len(),
            load.refused(),
            first.output_tail(100)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.sigkill();
    load.stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.expect("load sender");
    }
    if let Some(failure) = load.failure() {
        panic!("{failure}\nthe first process:\n{}", first.output_tail(100));
    }
    let want: HashSet<String> = load.accepted().into_iter().collect();

    let mut second = start(&config, &data, engine);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: HashSet<String> = sink.ids().into_iter().collect();
        let missing: Vec<&String> = want.difference(&got).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} accepted events not delivered 60 s after the restart (e.g. {:?}); the \
             restarted process:\n{}\nthe killed process:\n{}",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(10)],
            second.output_tail(100),
            first.output_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids = sink.ids();
    let distinct: HashSet<&String> = ids.iter().collect();
    eprintln!(
        "engine {:?}: {} accepted, {} refused with 503 (not promised), {} delivered, {} \
         duplicates (deliveries in flight at the kill)",
        engine.unwrap_or("default"),
        want.len(),
        load.refused(),
        ids.len(),
        ids.len() - distinct.len()
    );
}

/// What the load senders saw: the ids answered 202 (promised), how many were refused with 503
/// (not acknowledged: a full append queue or a store that cannot write, as on a full disk; the
/// README allows it, and such an event is not promised, so not counted), and the first answer
/// that is neither.
#[derive(Clone, Default)]
struct Load {
    accepted: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
    failure: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
}

impl Load {
    /// Posts events with ids `w{worker}-{n}` to `url` until stopped, the process is gone, or an
    /// answer other than 202 and 503 comes (kept as the failure).
    async fn send(&self, worker: usize, url: &str) {
        let client = client();
        let mut n = 0;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let id = format!("w{worker}-{n}");
            let enc =
                evmesh::evmesh_broker::codec::encode_binary(event(&id, "load")).expect("encode");
            match client
                .post(url)
                .headers(enc.headers)
                .body(enc.body)
                .send()
                .await
            {
                Ok(r) if r.status().as_u16() == 202 => self.accepted.lock().expect("lock").push(id),
                Ok(r) if r.status().as_u16() == 503 => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) => {
                    let status = r.status();
                    let headers = format!("{:?}", r.headers());
                    let body = r.text().await.unwrap_or_default();
                    let mut failure = self.failure.lock().expect("lock");
                    failure.get_or_insert(format!(
                        "unexpected answer {status} for event {id}; headers {headers}; body: {body}"
                    ));
                    return;
                }
                Err(_) => return, // the process is gone
            }
        }
    }

    fn accepted(&self) -> Vec<String> {
        self.accepted.lock().expect("lock").clone()
    }

    fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().expect("lock").clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_load_then_restart_loses_no_accepted_event() {
    kill9_during_load_loses_no_accepted_event(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_resumes_a_pending_retry_with_its_attempt_count_and_due_time() {
    let sink = TestSink::start().await;
    let dls = TestSink::start().await;
    sink.always(Reply::Status(503));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
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
  delivery: {{retry: 3, backoffPolicy: linear, backoffDelay: PT0.4S, deadLetterSink: {{uri: "{}"}}}}
"#,
            sink.url(),
            dls.url()
        ),
    );
    let data = dir.path().join("data");
    let first = start(&config, &data, None);
    assert_eq!(
        post_binary(&first.url("/default/default"), event("r-1", "t")).await,
        202
    );
    // Attempt 1 fails at once, attempt 2 after 0.4 s; the third is due 0.8 s after that.
    eventually("two failed attempts", Duration::from_secs(10), || {
        sink.count() == 2
    })
    .await;
    // The guarantee is time-based: a retry state is saved within a few ms of its change (the
    // README's "at most every 5 ms"); 150 ms is far beyond it, and still well before the third
    // attempt is due.
    tokio::time::sleep(Duration::from_millis(150)).await;
    first.kill9();
    let _second = start(&config, &data, None);
    eventually(
        "dead-lettered after the restart",
        Duration::from_secs(15),
        || dls.count() == 1,
    )
    .await;
    assert_eq!(
        sink.count(),
        4,
        "retry: 3 means 4 attempts in all, across the restart (the count was not reset)"
    );
    let r = sink.received();
    assert!(
        r[2].at - r[1].at >= Duration::from_millis(750),
        "the third attempt kept its due time: {:?}",
        r[2].at - r[1].at
    );
    assert_eq!(dls.received()[0].event().id(), "r-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_resumes_a_parked_retry_with_its_attempt_count_while_the_watermark_moved_past_it() {
    let sink = TestSink::start().await;
    let dls = TestSink::start().await;
    // The first event fails, the later ones are delivered.
    sink.script([Reply::Status(503)]);
    sink.always(Reply::Status(202));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
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
  delivery: {{retry: 2, backoffPolicy: linear, backoffDelay: PT4S, deadLetterSink: {{uri: "{}"}}}}
"#,
            sink.url(),
            dls.url()
        ),
    );
    let data = dir.path().join("data");
    let first = start(&config, &data, None);
    let url = first.url("/default/default");
    assert_eq!(post_binary(&url, event("stuck", "t")).await, 202);
    eventually("the first attempt failed", Duration::from_secs(10), || {
        sink.count() == 1
    })
    .await;
    for i in 1..=3 {
        assert_eq!(
            post_binary(&url, event(&format!("later-{i}"), "t")).await,
            202
        );
    }
    eventually(
        "the later events delivered",
        Duration::from_secs(10),
        || sink.count() == 4,
    )
    .await;
    // From now on the subscriber fails: every attempt of "stuck" counts against its budget.
    sink.always(Reply::Status(503));
    // Completions are saved within a few ms; 200 ms is far beyond that, and still well before
    // the second attempt (4 s after the first).
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.kill9();
    assert_eq!(sink.count(), 4, "killed before the second attempt");

    // What the killed process left: the watermark past every event, the retry parked.
    {
        let store = evmesh::evmesh_store::open(Default::default(), &data).expect("open store");
        let saved = store
            .checkpoints("t/default/default/all/")
            .expect("checkpoints");
        assert_eq!(saved.len(), 1, "one checkpoint");
        let cp: serde_json::Value = serde_json::from_slice(&saved[0].1).expect("JSON");
        assert_eq!(
            cp["taken_upto"], 4,
            "the watermark moved past the retrying event: {cp}"
        );
        assert!(cp.get("inflight").is_none(), "no in-flight list: {cp}");
        let parked = parked(store.as_ref(), &saved[0].0);
        assert_eq!(parked.len(), 1, "the retrying event is parked");
        let entry: serde_json::Value = serde_json::from_slice(&parked[0].1).expect("JSON");
        assert_eq!(entry["offset"], 0, "{entry}");
        assert_eq!(entry["progress"]["failures"], 1, "{entry}");
        store.flush().await.expect("flush");
    }

    let _second = start(&config, &data, None);
    eventually(
        "dead-lettered after the restart",
        Duration::from_secs(30),
        || dls.count() == 1,
    )
    .await;
    let ids = sink.ids();
    assert_eq!(
        ids.iter().filter(|i| *i == "stuck").count(),
        3,
        "retry: 2 means 3 attempts in all, across the restart (the count was not reset): {ids:?}"
    );
    for i in 1..=3 {
        let id = format!("later-{i}");
        assert_eq!(
            ids.iter().filter(|x| **x == id).count(),
            1,
            "{id} was delivered before the kill and not again: {ids:?}"
        );
    }
    assert_eq!(dls.received()[0].event().id(), "stuck");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_does_not_redeliver_completed_events() {
    let sink = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: all}}\nspec: {{broker: default, subscriber: {{uri: \"{}\"}}}}\n",
            sink.url()
        ),
    );
    let data = dir.path().join("data");
    let first = start(&config, &data, None);
    for i in 0..20 {
        assert_eq!(
            post_binary(
                &first.url("/default/default"),
                event(&format!("d-{i}"), "t")
            )
            .await,
            202
        );
    }
    eventually("all delivered", Duration::from_secs(10), || {
        sink.count() == 20
    })
    .await;
    // The guarantee is time-based: completions older than the checkpoint interval (a few ms)
    // are durable. 200 ms is far beyond it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.kill9();
    let second = start(&config, &data, None);
    assert_eq!(
        post_binary(&second.url("/default/default"), event("after", "t")).await,
        202
    );
    eventually("the new event", Duration::from_secs(10), || {
        sink.count() == 21
    })
    .await;
    // Wait until the restarted process has routed all 21 events and finished every match.
    common::quiesce(
        &second.url(""),
        "default",
        "default",
        21,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        sink.count(),
        21,
        "nothing completed before the kill was delivered again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_load_loses_nothing_on_segments() {
    kill9_during_load_loses_no_accepted_event(Some("segments")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_load_loses_nothing_on_fjall() {
    kill9_during_load_loses_no_accepted_event(Some("fjall")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_load_loses_nothing_on_redb() {
    kill9_during_load_loses_no_accepted_event(Some("redb")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_load_loses_nothing_on_sled() {
    kill9_during_load_loses_no_accepted_event(Some("sled")).await;
}
