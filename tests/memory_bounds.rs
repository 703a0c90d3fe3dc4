//! Bounded memory: a trigger that falls behind costs no memory for the events it has not taken;
//! the router's queue for it stays within its byte budget (`evmesh_route_queue_bytes`) and the
//! trigger reads the rest back from the log, losing and repeating nothing.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use common::*;

/// The route queue budget of the test (bytes).
const BUDGET: usize = 8 * 1024;
/// Events posted while the subscriber is stuck.
const EVENTS: usize = 300;

/// A subscriber that holds every request until `open` is set, then counts ids and answers 202.
async fn gated_sink(
    open: tokio::sync::watch::Receiver<bool>,
    seen: Arc<Mutex<HashMap<String, usize>>>,
) -> String {
    let app = Router::new().fallback(move |headers: HeaderMap| {
        let mut open = open.clone();
        let seen = seen.clone();
        async move {
            let _ = open.wait_for(|o| *o).await;
            if let Some(id) = headers.get("ce-id").and_then(|v| v.to_str().ok()) {
                *seen
                    .lock()
                    .expect("seen")
                    .entry(id.to_string())
                    .or_default() += 1;
            }
            StatusCode::ACCEPTED
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind sink");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// The value of `evmesh_route_queue_bytes` for trigger `name` in a `/metrics` text.
fn queue_bytes(metrics: &str, name: &str) -> Option<f64> {
    let label = format!("trigger_name=\"{name}\"");
    metrics
        .lines()
        .find(|l| l.starts_with("evmesh_route_queue_bytes{") && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_far_behind_keeps_its_queue_within_budget_and_reads_the_rest_from_the_log() {
    let (open_tx, open_rx) = tokio::sync::watch::channel(false);
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let sink = gated_sink(open_rx, seen.clone()).await;
    let yaml = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default, namespace: demo}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: slow, namespace: demo}}\nspec:\n  broker: default\n  subscriber: {{uri: \"{sink}\"}}\n"
    );
    let m = mesh_with(&yaml, |mut o| {
        o.service.max_in_flight = 2;
        o.service.route_queue_bytes = BUDGET;
        o
    })
    .await;
    let url = m.url("/demo/default");
    let data = "x".repeat(200);
    for i in 0..EVENTS {
        let mut e = event(&format!("e{i}"), "t");
        e.set_data("text/plain", data.clone());
        assert_eq!(post_binary(&url, e).await, 202, "event e{i}");
    }
    // The router has passed every event; the trigger holds 2 in flight and took no more.
    routed_up_to(&m.url(""), "demo", "default", EVENTS as u64).await;
    let (status, metrics) = get_text(&m.url("/metrics")).await;
    assert_eq!(status, 200);
    let queued = queue_bytes(&metrics, "slow").expect("evmesh_route_queue_bytes for the trigger");
    assert!(queued > 0.0, "nothing queued for the stuck trigger");
    assert!(
        queued <= BUDGET as f64,
        "the queue holds {queued} bytes, over its budget of {BUDGET}"
    );
    // Released, the trigger delivers every event exactly once: the queued ones, then the rest
    // read back from the log.
    open_tx.send(true).expect("open the subscriber");
    eventually("every event delivered", Duration::from_secs(30), || {
        seen.lock().expect("seen").len() == EVENTS
    })
    .await;
    quiet(&m, "demo", "default", EVENTS as u64).await;
    let seen = seen.lock().expect("seen").clone();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for i in 0..EVENTS {
        assert!(seen.contains_key(&format!("e{i}")), "e{i} not delivered");
    }
    let (_, metrics) = get_text(&m.url("/metrics")).await;
    assert_eq!(
        queue_bytes(&metrics, "slow"),
        Some(0.0),
        "queue empty again"
    );
}

/// A broker whose in-memory hand-off from ingress to its router has no room at all
/// (`ServiceOptions::tail_bytes` 0): the router reads every event back from the log, and every
/// one is delivered once; the gauge shows the hand-off empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_room_to_hand_events_over_in_memory_the_router_reads_them_from_the_log() {
    let (open_tx, open_rx) = tokio::sync::watch::channel(true);
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let sink = gated_sink(open_rx, seen.clone()).await;
    let yaml = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default, namespace: notail}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t, namespace: notail}}\nspec:\n  broker: default\n  subscriber: {{uri: \"{sink}\"}}\n"
    );
    // Its own namespace: metrics are process-wide, and another test here runs a broker
    // demo/default whose hand-off gauge would be read instead.
    let m = mesh_with(&yaml, |mut o| {
        o.service.tail_bytes = 0;
        o
    })
    .await;
    let url = m.url("/notail/default");
    for i in 0..50 {
        assert_eq!(post_binary(&url, event(&format!("e{i}"), "t")).await, 202);
    }
    eventually("every event delivered", Duration::from_secs(30), || {
        seen.lock().expect("seen").len() == 50
    })
    .await;
    drop(open_tx);
    let seen = seen.lock().expect("seen").clone();
    assert!(seen.values().all(|n| *n == 1), "delivered twice: {seen:?}");
    let (_, metrics) = get_text(&m.url("/metrics")).await;
    let tail = metrics
        .lines()
        .find(|l| {
            l.starts_with("evmesh_tail_bytes{")
                && l.contains("namespace_name=\"notail\"")
                && l.contains("broker_name=\"default\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(tail, Some(0.0), "{metrics}");
}

/// The glibc malloc settings of a running `evmesh serve` as its environment shows them (glibc
/// cuts `GLIBC_TUNABLES` at its first `:` in place while it reads it).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tunables_of(p: &EvmeshProcess) -> Option<String> {
    env_of(p, "GLIBC_TUNABLES")
}

/// A variable of a running `evmesh serve`'s environment.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn env_of(p: &EvmeshProcess, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{}/environ", p.child.id())).expect("environ");
    let prefix = format!("{name}=");
    environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .find_map(|v| v.strip_prefix(&prefix).map(str::to_string))
}

/// The binary allocates with jemalloc, and `serve` turns on its background purging (freed
/// pages go back to the system after a second) unless the operator set jemalloc's settings;
/// `--malloc-arenas 0` keeps the allocators' defaults.
#[cfg(all(target_os = "linux", target_env = "gnu", feature = "jemalloc"))]
#[test]
fn serve_has_jemalloc_give_freed_memory_back_unless_told_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n",
    );
    let p = EvmeshProcess::start(&config, &dir.path().join("a"), &[]);
    let conf = env_of(&p, "_RJEM_MALLOC_CONF");
    p.kill9();
    assert_eq!(
        conf.as_deref(),
        Some("background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0")
    );

    let p = EvmeshProcess::start(&config, &dir.path().join("b"), &["--malloc-arenas", "0"]);
    let conf = env_of(&p, "_RJEM_MALLOC_CONF");
    p.kill9();
    assert_eq!(conf, None);

    let p = EvmeshProcess::start_with_env(
        &config,
        &dir.path().join("c"),
        &[],
        &[("_RJEM_MALLOC_CONF", "narenas:3")],
    );
    let (conf, glibc) = (env_of(&p, "_RJEM_MALLOC_CONF"), tunables_of(&p));
    p.kill9();
    assert_eq!(conf.as_deref(), Some("narenas:3"), "the operator's is kept");
    assert!(glibc.is_some(), "glibc's are set all the same");
}

/// `serve` keeps glibc to one malloc arena per core it may run on, at least 2 (RSS crept up
/// under steady load with glibc's default of 8 per core while the live heap stayed flat; fewer
/// arenas than cores serialised allocation on many cores): it starts itself once more, same process,
/// with `GLIBC_TUNABLES`; `--malloc-arenas 0` keeps glibc's defaults, and a `GLIBC_TUNABLES` the
/// operator set is left as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn serve_keeps_glibc_to_few_malloc_arenas_unless_told_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n",
    );
    let p = EvmeshProcess::start(&config, &dir.path().join("a"), &[]);
    let t = tunables_of(&p);
    p.kill9();
    // By default one arena per core it may run on (as this test may), at least 2.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let expected = format!("glibc.malloc.arena_max={cores}");
    assert_eq!(t.as_deref(), Some(expected.as_str()));

    let p = EvmeshProcess::start(&config, &dir.path().join("b"), &["--malloc-arenas", "3"]);
    let t = tunables_of(&p);
    p.kill9();
    assert_eq!(t.as_deref(), Some("glibc.malloc.arena_max=3"));

    let p = EvmeshProcess::start(&config, &dir.path().join("c"), &["--malloc-arenas", "0"]);
    let t = tunables_of(&p);
    p.kill9();
    assert_eq!(t, None);

    let p = EvmeshProcess::start_with_env(
        &config,
        &dir.path().join("d"),
        &[],
        &[("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")],
    );
    let t = tunables_of(&p);
    p.kill9();
    assert_eq!(t.as_deref(), Some("glibc.malloc.arena_max=4"));
}
