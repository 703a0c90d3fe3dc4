//! The real binary changed while it runs: `evmesh apply -f -` / `get` / `delete` with the admin
//! token from the data dir, resources applied through the API surviving kill -9, and `serve -f`
//! re-reading its files on change and on SIGHUP.

mod common;

use std::time::Duration;

use common::*;

const BROKER: &str = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default, namespace: demo}\nspec:\n  delivery: {retry: 3, backoffDelay: PT0.05S}\n";

fn trigger(name: &str, sink: &TestSink) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  broker: default\n  subscriber: {{uri: \"{}\"}}\n",
        sink.url()
    )
}

#[tokio::test]
async fn apply_from_stdin_then_get_and_delete_with_the_data_dir_token() {
    let sink = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, BROKER).expect("write");
    let data = dir.path().join("data");
    let em = EvmeshProcess::start(&config, &data, &[]);
    let token = std::fs::read_to_string(data.join("admin-token")).expect("token written");
    assert!(token.len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("admin-token"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The Knative docs' `kubectl apply -f - <<EOF`, with the command name swapped.
    let (ok, out) = em.cli(&data, &["apply", "-f", "-"], Some(&trigger("t1", &sink)));
    assert!(ok, "{out}");
    assert!(
        out.contains("trigger.eventing.knative.dev/t1 created"),
        "{out}"
    );
    let (ok, out) = em.cli(&data, &["apply", "-f", "-"], Some(&trigger("t1", &sink)));
    assert!(ok, "{out}");
    assert!(
        out.contains("trigger.eventing.knative.dev/t1 unchanged"),
        "{out}"
    );
    assert_eq!(
        post_binary(&em.url("/demo/default"), event("e1", "t")).await,
        202
    );
    eventually("delivered", Duration::from_secs(10), || {
        sink.ids() == vec!["e1".to_string()]
    })
    .await;

    let (ok, out) = em.cli(&data, &["get", "triggers", "-n", "demo"], None);
    assert!(ok, "{out}");
    let header = out.lines().next().unwrap_or_default();
    assert!(
        header.contains("BROKER") && header.contains("SUBSCRIBER_URI") && header.contains("READY"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("t1 ") && l.contains("True")),
        "{out}"
    );
    let (ok, out) = em.cli(
        &data,
        &["get", "trigger", "t1", "-n", "demo", "-o", "yaml"],
        None,
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("kind: Trigger") && out.contains("uid:"),
        "{out}"
    );

    // Without the token (a data dir that has none): Unauthorized, exit code 1.
    let elsewhere = dir.path().join("elsewhere");
    let (ok, out) = em.cli(&elsewhere, &["delete", "trigger", "t1", "-n", "demo"], None);
    assert!(!ok);
    assert!(out.contains("Unauthorized"), "{out}");
    let (ok, out) = em.cli(&data, &["delete", "trigger", "t1", "-n", "demo"], None);
    assert!(ok, "{out}");
    assert!(
        out.contains("trigger.eventing.knative.dev/t1 deleted"),
        "{out}"
    );
    let (ok, out) = em.cli(&data, &["get", "trigger", "t1", "-n", "demo"], None);
    assert!(!ok);
    assert!(out.contains("NotFound"), "{out}");
}

#[tokio::test]
async fn resources_applied_through_the_api_survive_kill9() {
    let sink = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, BROKER).expect("write");
    let data = dir.path().join("data");
    let em = EvmeshProcess::start(&config, &data, &[]);
    let (ok, out) = em.cli(
        &data,
        &["apply", "-f", "-"],
        Some(&trigger("applied", &sink)),
    );
    assert!(ok, "{out}");
    let uid_before = em
        .cli(
            &data,
            &["get", "trigger", "applied", "-n", "demo", "-o", "json"],
            None,
        )
        .1;
    em.kill9();

    let em = EvmeshProcess::start(&config, &data, &[]);
    let (ok, out) = em.cli(
        &data,
        &["get", "trigger", "applied", "-n", "demo", "-o", "json"],
        None,
    );
    assert!(ok, "{out}");
    let before: serde_json::Value = serde_json::from_str(&uid_before).expect("json");
    let after: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(before["metadata"]["uid"], after["metadata"]["uid"]);
    assert_eq!(
        post_binary(&em.url("/demo/default"), event("e1", "t")).await,
        202
    );
    eventually(
        "the applied trigger runs again",
        Duration::from_secs(10),
        || sink.ids() == vec!["e1".to_string()],
    )
    .await;
}

#[tokio::test]
async fn serve_reloads_its_files_when_they_change() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, format!("{BROKER}---\n{}", trigger("ta", &a))).expect("write");
    let data = dir.path().join("data");
    let em = EvmeshProcess::start(&config, &data, &[]);
    assert_eq!(
        post_binary(&em.url("/demo/default"), event("e1", "t")).await,
        202
    );
    eventually("delivered to a", Duration::from_secs(10), || a.count() == 1).await;

    // The file changes: ta removed, tb added; applied without a restart.
    std::fs::write(&config, format!("{BROKER}---\n{}", trigger("tb", &b))).expect("write");
    let tb_url = em.url("/apis/eventing.knative.dev/v1/namespaces/demo/triggers/tb");
    assert!(wait_for_200(&tb_url).await, "the changed file was applied");
    assert_eq!(
        post_binary(&em.url("/demo/default"), event("e2", "t")).await,
        202
    );
    eventually("delivered to b", Duration::from_secs(10), || {
        b.ids() == vec!["e2".to_string()]
    })
    .await;
    assert_eq!(
        a.ids(),
        vec!["e1".to_string()],
        "the removed trigger got nothing new"
    );
}

async fn wait_for_200(url: &str) -> bool {
    for _ in 0..200 {
        if client()
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[cfg(unix)]
#[tokio::test]
async fn serve_rereads_its_files_on_sighup() {
    let sink = TestSink::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, BROKER).expect("write");
    let data = dir.path().join("data");
    // --no-watch: only SIGHUP can make it re-read the file.
    let em = EvmeshProcess::start(&config, &data, &["--no-watch"]);
    std::fs::write(&config, format!("{BROKER}---\n{}", trigger("th", &sink))).expect("write");
    em.signal("HUP");
    assert!(
        wait_for_200(&em.url("/apis/eventing.knative.dev/v1/namespaces/demo/triggers/th")).await,
        "SIGHUP applied the file"
    );
    assert_eq!(
        post_binary(&em.url("/demo/default"), event("e1", "t")).await,
        202
    );
    eventually("delivered", Duration::from_secs(10), || {
        sink.ids() == vec!["e1".to_string()]
    })
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_right_after_start_rereads_the_files_and_does_not_stop_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, BROKER).expect("write");
    // The signal comes as soon as the process says it listens: it must not die of it.
    for round in 0..5 {
        let data = dir.path().join(format!("data-{round}"));
        let mut em = EvmeshProcess::start(&config, &data, &["--no-watch"]);
        em.signal("HUP");
        em.wait_for_line(
            "the reload",
            &["configuration reloaded (SIGHUP)"],
            Duration::from_secs(10),
        )
        .await;
        assert!(
            em.child.try_wait().expect("try_wait").is_none(),
            "round {round}: evmesh exited on SIGHUP"
        );
    }
}
