//! Which configuration runs after a restart: the `-f` files replace what an earlier run had from
//! files, so a trigger declared in a file and changed through the API is the file's again after
//! a restart (the declared configuration wins), while a resource only the API created stays.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(15);

fn trigger(name: &str, ty: &str, sink: &TestSink) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  broker: default\n  filter: {{attributes: {{type: {ty}}}}}\n  subscriber: {{uri: \"{}\"}}\n",
        sink.url()
    )
}

fn filter_type(em: &EvmeshProcess, data: &std::path::Path, name: &str) -> String {
    let (ok, out) = em.cli(
        data,
        &["get", "trigger", name, "-n", "demo", "-o", "json"],
        None,
    );
    assert!(ok, "{out}");
    let t: serde_json::Value = serde_json::from_str(&out).expect("json");
    t["spec"]["filter"]["attributes"]["type"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_files_win_over_api_changes_to_their_resources() {
    let (declared, applied) = (TestSink::start().await, TestSink::start().await);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default, namespace: demo}}\n---\n{}",
            trigger("t", "a", &declared)
        ),
    );
    let data = dir.path().join("data");
    let mut first = EvmeshProcess::start(&config, &data, &["--no-watch"]);
    // The API changes the file's trigger and adds one of its own.
    for yaml in [
        trigger("t", "b", &declared),
        trigger("extra", "c", &applied),
    ] {
        let (ok, out) = first.cli(&data, &["apply", "-f", "-"], Some(&yaml));
        assert!(ok, "{out}");
    }
    assert_eq!(filter_type(&first, &data, "t"), "b", "the API change runs");
    first.sigterm();
    assert_eq!(first.wait_exit(WAIT).await.code(), Some(0));

    let second = EvmeshProcess::start(&config, &data, &["--no-watch"]);
    assert_eq!(
        filter_type(&second, &data, "t"),
        "a",
        "the file's version is back"
    );
    assert_eq!(
        filter_type(&second, &data, "extra"),
        "c",
        "the API's own stays"
    );
    let url = second.url("/demo/default");
    post_ok(&url, event("e-a", "a")).await;
    post_ok(&url, event("e-b", "b")).await;
    post_ok(&url, event("e-c", "c")).await;
    eventually("the file's trigger and the API's deliver", WAIT, || {
        declared.count() == 1 && applied.count() == 1
    })
    .await;
    quiesce(&second.url(""), "demo", "default", 3, WAIT).await;
    assert_eq!(declared.ids(), ["e-a"], "t runs with the file's filter");
    assert_eq!(applied.ids(), ["e-c"]);
}
