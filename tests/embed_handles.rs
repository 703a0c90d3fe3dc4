//! The embedding handles, used as an outside crate uses evmesh (only `evmesh::prelude` and
//! axum): the mesh's routes merged into the user's own axum app, shutdown through a shared
//! handle, strict mode, options that compose, typed errors.

mod common;

use std::time::Duration;

use evmesh::prelude::*;

const WAIT: Duration = Duration::from_secs(10);

const YAML: &str = r#"apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: orders}
spec:
  broker: default
  subscriber:
    ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name: orders}
"#;

fn order(id: &str) -> Event {
    EventBuilderV10::new()
        .id(id)
        .source("/shop")
        .ty("order.created")
        .build()
        .expect("event")
}

#[tokio::test]
async fn router_merges_into_the_users_axum_app() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let running = Mesh::from_yaml(YAML)
        .expect("yaml")
        .data_dir(dir.path())
        .launch(base.parse().expect("url"))
        .await
        .expect("launch");
    let app = axum::Router::new()
        .route(
            "/hello",
            axum::routing::get(|| async { "hello from the app" }),
        )
        .merge(running.router());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut orders = running.subscribe("orders");

    let client = common::client();
    let hello = client
        .get(format!("{base}/hello"))
        .send()
        .await
        .expect("get /hello");
    assert_eq!(hello.text().await.expect("body"), "hello from the app");
    // An event POSTed to the broker's ingress on the user's server reaches the subscriber.
    let status = common::post_binary(&format!("{base}/default/default"), order("http-1")).await;
    assert_eq!(status, 202);
    let d = tokio::time::timeout(WAIT, orders.next())
        .await
        .expect("delivered in time")
        .expect("stream open");
    assert_eq!(d.event().id(), "http-1");
    d.ack();
    let (code, _) = common::get_json(&format!(
        "{base}/apis/eventing.knative.dev/v1/namespaces/default/triggers/orders"
    ))
    .await;
    assert_eq!(code, 200);
    running.shutdown().await;
    server.abort();
}

#[tokio::test]
async fn shutdown_through_a_shared_handle_unlocks_the_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let running = Mesh::from_yaml(YAML)
        .expect("yaml")
        .data_dir(dir.path())
        .start(listener)
        .await
        .expect("start");
    let publisher = running.publisher();
    let shared = std::sync::Arc::new(running.clone());
    publisher
        .publish("default", "default", order("before"))
        .await
        .expect("publish");
    // Shut down from another task through a clone; the other handles stay alive.
    let other = shared.clone();
    tokio::spawn(async move { other.shutdown().await })
        .await
        .expect("shutdown task");
    assert!(matches!(
        publisher
            .publish("default", "default", order("after"))
            .await,
        Err(Error::ShuttingDown)
    ));
    // Shutting down again is a no-op.
    running.shutdown().await;
    // The data dir is free although handles are still held: a new mesh opens it.
    let again = Mesh::from_yaml(YAML)
        .expect("yaml")
        .data_dir(dir.path())
        .launch("http://127.0.0.1:1".parse().expect("url"))
        .await
        .expect("the data dir is unlocked after shutdown");
    again.shutdown().await;
    drop(shared);
}

#[tokio::test]
async fn a_data_dir_in_use_is_a_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let launch = || {
        Mesh::from_yaml(YAML)
            .expect("yaml")
            .data_dir(dir.path())
            .launch("http://127.0.0.1:1".parse().expect("url"))
    };
    let first = launch().await.expect("first");
    match launch().await {
        Err(Error::DataDirLocked(path)) => assert_eq!(path, dir.path()),
        other => panic!("expected DataDirLocked, got {other:?}"),
    }
    first.shutdown().await;
}

#[tokio::test]
async fn strict_mode_turns_warnings_into_errors() {
    let yaml = YAML.replace("  broker: default\n", "  broker: default\n  colour: red\n");
    let mesh = Mesh::from_yaml(&yaml).expect("valid with a warning");
    assert_eq!(mesh.warnings().len(), 1, "{:?}", mesh.warnings());
    let dir = tempfile::tempdir().expect("tempdir");
    let err = mesh
        .clone()
        .data_dir(dir.path())
        .strict(true)
        .launch("http://127.0.0.1:1".parse().expect("url"))
        .await
        .expect_err("strict refuses warnings");
    match err {
        Error::Config(e) => {
            assert_eq!(e.errors.len(), 1);
            let text = e.to_string();
            assert!(text.contains("colour"), "{text}");
            assert!(text.contains("strict mode"), "{text}");
        }
        other => panic!("expected Error::Config, got {other:?}"),
    }
    // Without strict mode the same mesh starts.
    let running = mesh
        .data_dir(dir.path())
        .launch("http://127.0.0.1:1".parse().expect("url"))
        .await
        .expect("lenient start");
    running.shutdown().await;
}

#[tokio::test]
async fn options_set_one_by_one_survive_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = Mesh::from_yaml(YAML)
        .expect("yaml")
        .data_dir(dir.path())
        .strict(true)
        .options(Options {
            max_event_size: 1234,
            ..Options::default()
        });
    let o = mesh.effective_options();
    assert_eq!(o.data_dir, dir.path());
    assert!(o.strict);
    assert_eq!(o.max_event_size, 1234);
    // And the mesh really runs there.
    let running = mesh
        .launch("http://127.0.0.1:1".parse().expect("url"))
        .await
        .expect("launch");
    running.shutdown().await;
    assert!(dir.path().read_dir().expect("dir").next().is_some());
}

#[tokio::test]
async fn serve_with_shutdown_returns_after_the_signal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(
        Mesh::from_yaml(YAML)
            .expect("yaml")
            .data_dir(dir.path())
            .serve_with_shutdown(listener, async {
                let _ = rx.await;
            }),
    );
    let status = common::post_binary(&format!("http://{addr}/default/default"), order("s-1")).await;
    assert_eq!(status, 202);
    let _ = tx.send(());
    tokio::time::timeout(WAIT, serving)
        .await
        .expect("returns after the signal")
        .expect("task")
        .expect("served");
}

#[tokio::test]
async fn publishing_to_an_unknown_broker_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = Mesh::from_yaml(YAML)
        .expect("yaml")
        .data_dir(dir.path())
        .launch("http://127.0.0.1:1".parse().expect("url"))
        .await
        .expect("launch");
    match running.publish("default", "nope", order("x")).await {
        Err(Error::NotFound(what)) => assert_eq!(what, "broker default/nope"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(running.trigger("default", "nope").is_none());
    running.shutdown().await;
}

#[test]
fn typed_resource_errors_name_the_resource_and_its_field() {
    let meta = |name: &str| ObjectMeta {
        name: name.into(),
        namespace: "default".into(),
        ..Default::default()
    };
    let broker = Resource::Broker(Broker {
        metadata: meta("default"),
        ..Default::default()
    });
    let trigger = Resource::Trigger(Trigger {
        metadata: meta("eu-orders"),
        spec: TriggerSpec {
            broker: "default".into(),
            filters: vec![FilterSpec {
                cesql: Some("region = ".into()),
                ..Default::default()
            }],
            subscriber: Destination {
                uri: Some("http://127.0.0.1:9/orders".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    });

    let errors = Mesh::from_resources(&[broker, trigger]).expect_err("invalid CESQL");

    let message = errors.to_string();
    assert!(
        message.starts_with("resources[1] Trigger default/eu-orders: spec.filters[0].cesql: "),
        "{message}"
    );
    assert!(!message.contains("<resources>"), "{message}");
}
