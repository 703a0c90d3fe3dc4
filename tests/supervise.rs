//! Supervision: a trigger's delivery worker or a broker's router that panics is restarted
//! with backoff, its triggers show not ready with the reason meanwhile, and delivery resumes with
//! nothing lost. Panics are injected with the `fault-injection` feature's
//! `BrokerService::inject_worker_panic` / `inject_router_panic` (tests only), and a hand-over
//! to the router lost with `inject_lost_handovers`, a route start failing with
//! `inject_route_start_failures`.

mod common;

use std::time::Duration;

use common::*;

fn reason(m: &TestMesh) -> Option<String> {
    m.mesh
        .service()
        .triggers()
        .into_iter()
        .find(|t| t.name == "t1")
        .expect("trigger t1")
        .not_ready_reason
}

fn delivered(m: &TestMesh) -> u64 {
    m.mesh
        .service()
        .triggers()
        .into_iter()
        .find(|t| t.name == "t1")
        .map(|t| t.counters.delivered)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_worker_restarts_shows_not_ready_meanwhile_and_resumes_from_its_checkpoint() {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    let url = m.url("/demo/default");
    for i in 0..5 {
        assert_eq!(
            post_binary(&url, event(&format!("before-{i}"), "t")).await,
            202
        );
    }
    // Counted once the worker has the subscriber's answer (the sink records on receipt).
    eventually(
        "delivered before the panic",
        Duration::from_secs(10),
        || delivered(&m) == 5,
    )
    .await;
    assert_eq!(reason(&m), None);

    // Panics now and at its next two restarts (backoff 100 ms, 200 ms, 400 ms).
    assert!(m.mesh.service().inject_worker_panic("demo", "t1", 3));
    let mut seen = None;
    eventually("not ready with the reason", Duration::from_secs(5), || {
        seen = reason(&m);
        seen.is_some()
    })
    .await;
    let seen = seen.unwrap_or_default();
    assert!(seen.contains("panicked"), "{seen}");
    assert!(seen.contains("fault injection"), "{seen}");
    // Events accepted while it is down are delivered once it is back.
    for i in 0..5 {
        assert_eq!(
            post_binary(&url, event(&format!("during-{i}"), "t")).await,
            202
        );
    }
    eventually("ready again", Duration::from_secs(10), || {
        reason(&m).is_none()
    })
    .await;
    for i in 0..5 {
        assert_eq!(
            post_binary(&url, event(&format!("after-{i}"), "t")).await,
            202
        );
    }
    eventually("everything delivered", Duration::from_secs(10), || {
        sink.count() >= 15
    })
    .await;
    let ids = sink.ids();
    for phase in ["before", "during", "after"] {
        for i in 0..5 {
            let id = format!("{phase}-{i}");
            let n = ids.iter().filter(|x| **x == id).count();
            if phase == "before" {
                assert_eq!(n, 1, "{id}: resumed from the checkpoint, not re-delivered");
            } else {
                assert!(n >= 1, "{id} delivered");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_broker_router_restarts_shows_not_ready_meanwhile_and_loses_nothing() {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    let url = m.url("/demo/default");
    for i in 0..5 {
        assert_eq!(
            post_binary(&url, event(&format!("before-{i}"), "t")).await,
            202
        );
    }
    eventually(
        "delivered before the panic",
        Duration::from_secs(10),
        || delivered(&m) == 5,
    )
    .await;
    assert_eq!(reason(&m), None);

    // The broker's router panics now and at its next two restarts (backoff 100, 200, 400 ms).
    assert!(m.mesh.service().inject_router_panic("demo", "default", 3));
    let mut seen = None;
    eventually("not ready with the reason", Duration::from_secs(5), || {
        seen = reason(&m);
        seen.is_some()
    })
    .await;
    let seen = seen.unwrap_or_default();
    assert!(seen.contains("router of broker"), "{seen}");
    assert!(seen.contains("fault injection"), "{seen}");
    // Events accepted while the router is down are routed once it is back.
    for i in 0..5 {
        assert_eq!(
            post_binary(&url, event(&format!("during-{i}"), "t")).await,
            202
        );
    }
    eventually("ready again", Duration::from_secs(10), || {
        reason(&m).is_none()
    })
    .await;
    for i in 0..5 {
        assert_eq!(
            post_binary(&url, event(&format!("after-{i}"), "t")).await,
            202
        );
    }
    eventually("everything delivered", Duration::from_secs(10), || {
        sink.count() >= 15
    })
    .await;
    let ids = sink.ids();
    for phase in ["before", "during", "after"] {
        for i in 0..5 {
            let id = format!("{phase}-{i}");
            let n = ids.iter().filter(|x| **x == id).count();
            if phase == "before" {
                assert_eq!(n, 1, "{id}: the restarted router did not route it again");
            } else {
                assert!(n >= 1, "{id} delivered");
            }
        }
    }
}

/// An event stored but never handed to the router in memory (its append's task dropped between
/// the commit and the hand-over, a client gone at that instant) is found in the log and
/// delivered by itself, without a later event to show the router the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stored_but_not_handed_to_the_router_is_read_from_the_log_and_delivered() {
    let sink = TestSink::start().await;
    let m = mesh(&broker_and_trigger(&sink, "")).await;
    let url = m.url("/demo/default");
    assert_eq!(post_binary(&url, event("handed", "t")).await, 202);
    eventually("the first event delivered", Duration::from_secs(10), || {
        delivered(&m) == 1
    })
    .await;

    assert!(m.mesh.service().inject_lost_handovers("demo", "default", 1));
    assert_eq!(post_binary(&url, event("not-handed", "t")).await, 202);
    eventually(
        "the event not handed over delivered from the log",
        Duration::from_secs(5),
        || delivered(&m) == 2,
    )
    .await;
    assert_eq!(sink.ids(), ["handed", "not-handed"]);
}

/// A trigger applied to a running mesh (kubectl's path: `reconcile_trigger`, not the whole
/// reconcile) whose route cannot start is not ready with the reason, and the retry task starts it
/// later: what its broker took meanwhile is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_applied_while_its_route_cannot_start_starts_on_the_retry_and_loses_nothing() {
    let sink = TestSink::start().await;
    let m = mesh("apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default, namespace: demo}\n").await;
    m.mesh.service().inject_route_start_failures(1);
    let trigger = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t1, namespace: demo}}\nspec:\n  broker: default\n  subscriber: {{uri: \"{}\"}}\n",
        sink.url()
    );
    let resp = client()
        .post(m.url("/apis/eventing.knative.dev/v1/namespaces/demo/triggers"))
        .header("content-type", "application/yaml")
        .body(trigger)
        .send()
        .await
        .expect("apply");
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        reason(&m).as_deref(),
        Some("injected: the route could not start"),
        "not ready, saying why"
    );
    assert_eq!(
        post_binary(&m.url("/demo/default"), event("meanwhile", "t")).await,
        202
    );
    eventually(
        "started by the retry task and delivered",
        Duration::from_secs(10),
        || delivered(&m) == 1,
    )
    .await;
    assert_eq!(sink.ids(), ["meanwhile"]);
    assert_eq!(reason(&m), None);
}
