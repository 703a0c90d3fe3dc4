//! kill -9 of the real binary with a guaranteed backlog (one subscriber answering 503, one
//! blocked with every slot in flight), several filtered triggers and a replying trigger: after a
//! restart on the same data dir every accepted event reaches exactly the triggers its filters
//! select, the restarted process does the delivering, and duplicates stay within what was in
//! flight. Also a restart on another storage engine: a store the fjall engine wrote, opened by
//! the default one, delivers the events it held.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use common::*;

const MAX_IN_FLIGHT: usize = 8;
const WAIT: Duration = Duration::from_secs(60);

fn receipt(e: &Event) -> Event {
    EventBuilderV10::new()
        .id(format!("re-{}", e.id()))
        .source("/replier")
        .ty("receipt")
        .build()
        .expect("reply event")
}

/// Ids the sink received at or after `since` (requests of the killed process that were already
/// on the wire are handled at once after the kill, long before the restart).
fn ids_after(sink: &TestSink, since: std::time::Instant) -> Vec<String> {
    sink.received()
        .iter()
        .filter(|r| r.at >= since)
        .filter_map(|r| r.event.as_ref().map(|e| e.id().to_string()))
        .collect()
}

fn as_set(ids: &[String]) -> HashSet<String> {
    ids.iter().cloned().collect()
}

fn duplicates(ids: &[String]) -> usize {
    ids.len() - as_set(ids).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_backlog_delivers_every_event_to_exactly_its_triggers_after_restart() {
    let orders = TestSink::start().await; // type = order; 503 until the kill
    let money = TestSink::start().await; // CESQL: order or payment; blocked until the kill
    let replier = TestSink::start().await; // type = payment; answers with a receipt
    let receipts = TestSink::start().await; // type = receipt
    orders.always(Reply::Status(503));
    money.always(Reply::Delay(Duration::from_secs(120)));
    replier.always(Reply::Map(receipt));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
spec:
  delivery: {{retry: 10000, backoffPolicy: linear, backoffDelay: PT0.01S, timeout: PT300S}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: orders}}
spec:
  broker: default
  filter: {{attributes: {{type: order}}}}
  subscriber: {{uri: "{}"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: money}}
spec:
  broker: default
  filters: [{{cesql: "type IN ('order', 'payment')"}}]
  subscriber: {{uri: "{}"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: replier}}
spec:
  broker: default
  filter: {{attributes: {{type: payment}}}}
  subscriber: {{uri: "{}"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: receipts}}
spec:
  broker: default
  filters: [{{prefix: {{type: rece}}}}]
  subscriber: {{uri: "{}"}}
"#,
            orders.url(),
            money.url(),
            replier.url(),
            receipts.url()
        ),
    );
    let data = dir.path().join("data");
    let max = MAX_IN_FLIGHT.to_string();
    let first = EvmeshProcess::start(&config, &data, &["--max-in-flight", &max]);
    let url = first.url("/default/default");

    // 150 events, every one answered 202: 60 orders, 60 payments, 30 that no trigger matches.
    let mut want: HashMap<&str, HashSet<String>> = HashMap::new();
    let mut posts = Vec::new();
    for i in 0..150 {
        let ty = match i % 5 {
            0 | 1 => "order",
            2 | 3 => "payment",
            _ => "other",
        };
        let id = format!("{ty}-{i}");
        match ty {
            "order" => {
                want.entry("orders").or_default().insert(id.clone());
                want.entry("money").or_default().insert(id.clone());
            }
            "payment" => {
                want.entry("money").or_default().insert(id.clone());
                want.entry("replier").or_default().insert(id.clone());
                want.entry("receipts")
                    .or_default()
                    .insert(format!("re-{id}"));
            }
            _ => {}
        }
        let url = url.clone();
        posts.push(tokio::spawn(async move {
            (post_binary(&url, event(&id, ty)).await, id)
        }));
    }
    for p in posts {
        let (status, id) = p.await.expect("post task");
        assert_eq!(status, 202, "event {id} accepted");
    }

    // The backlog is real at the kill: orders is failing, money has every slot blocked; the
    // replier and the receipts trigger are done.
    eventually("orders is being retried", WAIT, || orders.count() >= 3).await;
    eventually("money has every slot in flight", WAIT, || {
        money.count() == MAX_IN_FLIGHT
    })
    .await;
    eventually("every payment answered with a receipt", WAIT, || {
        as_set(&replier.ids()) == want["replier"]
    })
    .await;
    eventually("every receipt delivered", WAIT, || {
        as_set(&receipts.ids()) == want["receipts"]
    })
    .await;
    // Their deliveries completed (reply stored) as the process itself reports.
    for t in ["replier", "receipts"] {
        let n = want[t].len() as u64;
        eventually_counters(&first.url(""), "triggers", "default", t, WAIT, |c| {
            c["delivered"] == n
        })
        .await;
    }
    // Their completions saved too (the README: duplicates include completions not yet saved;
    // a kill -9 200 ms after the last completion redelivers nothing, as `crash.rs` checks).
    // Without the wait the kill raced the save, and under load a save can come later than a
    // trigger's in-flight limit of deliveries (14 receipts once in a CI rehearsal).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(money.count(), MAX_IN_FLIGHT, "money's slots stayed blocked");
    first.kill9();

    let (replier_at_kill, receipts_at_kill) = (replier.count(), receipts.count());
    orders.always(Reply::Status(202));
    money.always(Reply::Status(202));
    let restart = std::time::Instant::now();
    let mut second = EvmeshProcess::start(&config, &data, &["--max-in-flight", &max]);

    eventually("orders has every order after the restart", WAIT, || {
        as_set(&ids_after(&orders, restart)) == want["orders"]
    })
    .await;
    eventually(
        "money has every order and payment after the restart",
        WAIT,
        || as_set(&ids_after(&money, restart)) == want["money"],
    )
    .await;
    // The restarted process itself delivered the backlog (its own counters).
    let base = second.url("");
    for t in ["orders", "money"] {
        let n = want[t].len() as u64;
        eventually_counters(&base, "triggers", "default", t, WAIT, |c| {
            c["delivered"] == n
        })
        .await;
    }
    // Stopped gracefully with nothing left to deliver: what the sinks got is all they get.
    second.sigterm();
    assert_eq!(second.wait_exit(WAIT).await.code(), Some(0));
    let money_filter = |e: &Event| ["order", "payment"].contains(&e.ty());
    let receipts_filter = |e: &Event| e.ty().starts_with("rece");
    assert_nothing_left(
        &data,
        "default",
        "default",
        &[
            ("orders", &of_type("order")),
            ("money", &money_filter),
            ("replier", &of_type("payment")),
            ("receipts", &receipts_filter),
        ],
    )
    .await;

    // Exactly as the filters say, across both runs.
    assert_eq!(
        as_set(&orders.ids()),
        want["orders"],
        "orders: only type order"
    );
    assert_eq!(
        as_set(&money.ids()),
        want["money"],
        "money: the CESQL filter"
    );
    assert_eq!(
        as_set(&replier.ids()),
        want["replier"],
        "replier: only payments"
    );
    assert_eq!(
        as_set(&receipts.ids()),
        want["receipts"],
        "receipts: only the replies"
    );
    // The restarted process delivered the backlog, each event once (none had completed before).
    let orders_after = ids_after(&orders, restart);
    let money_after = ids_after(&money, restart);
    assert_eq!(
        orders_after.len(),
        want["orders"].len(),
        "each order once after the restart"
    );
    assert_eq!(
        money_after.len(),
        want["money"].len(),
        "each money event once after the restart"
    );
    // Triggers that had finished their work at the kill redeliver at most what the last
    // checkpoint had not recorded yet, never more than a trigger's in-flight limit. Each
    // redelivery to the replier stores one more reply (a new event with a known id), which the
    // receipts trigger then gets as well.
    let replier_dups = duplicates(&replier.ids());
    let receipts_dups = duplicates(&receipts.ids());
    assert!(
        replier_dups <= MAX_IN_FLIGHT && receipts_dups <= MAX_IN_FLIGHT + replier_dups,
        "duplicates beyond what was in flight: replier {replier_dups}, receipts {receipts_dups} \
         (at the kill: {replier_at_kill}, {receipts_at_kill} requests)"
    );
}

/// A data directory the fjall engine wrote (`--storage-engine fjall`, the default before
/// segments) opened by the default engine: the events it held, still waiting for their
/// subscriber, are moved into segments and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_waiting_in_a_store_the_fjall_engine_wrote_are_delivered_by_the_default_engine() {
    let sink = TestSink::start().await;
    sink.always(Reply::Status(503));
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let yaml = broker_and_trigger(
        &sink,
        "  delivery: {retry: 1000, backoffPolicy: linear, backoffDelay: PT0.1S}",
    );
    let first = mesh_at(&data, &yaml, |o| evmesh::Options {
        engine: evmesh::evmesh_store::EngineKind::Fjall,
        ..o
    })
    .await;
    let url = mesh_url(&first, "/demo/default");
    let ids: Vec<String> = (0..50).map(|i| format!("e{i}")).collect();
    for id in &ids {
        post_ok(&url, event(id, "t")).await;
    }
    eventually(
        "the subscriber refused an attempt",
        Duration::from_secs(10),
        || sink.count() > 0,
    )
    .await;
    first.shutdown().await;

    sink.always(Reply::Status(202));
    let switched = std::time::Instant::now();
    let second = mesh_at(&data, &yaml, |o| o).await;
    eventually(
        "every event delivered by the default engine",
        Duration::from_secs(30),
        || {
            let got = as_set(&ids_after(&sink, switched));
            ids.iter().all(|id| got.contains(id))
        },
    )
    .await;
    second.shutdown().await;
}
