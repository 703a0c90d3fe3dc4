//! Validation and wiring of Sequences and Parallels (this crate's kinds, installed with
//! `evmesh_config`'s own in the kind registry): what the data plane is handed, the names
//! Knative's reconcilers use, and errors with file:line:field.

use evmesh_config::messaging::ChannelDefaults;
use evmesh_config::messaging::wiring;
use evmesh_config::registry::{self, Kind};
use evmesh_config::{
    ChannelKind, ConfigErrors, Destination, MeshConfig, Resolver, ValidationContext, channel_url,
    load_str, validate_in,
};

/// `evmesh_config`'s own kinds, the channel kinds and this crate's, as the facade installs them.
fn install() {
    let mut kinds: Vec<&'static dyn Kind> = registry::BUILTIN.to_vec();
    kinds.push(&evmesh_channels::in_memory_channel::IN_MEMORY_CHANNEL);
    kinds.push(&evmesh_channels::nats_jetstream_channel::NATS_JETSTREAM_CHANNEL);
    kinds.push(&evmesh_channels::channel::Channel);
    kinds.push(&evmesh_channels::subscription::Subscription);
    kinds.push(&evmesh_flows::sequence::Sequence);
    kinds.push(&evmesh_flows::parallel::Parallel);
    registry::install(kinds).expect("one set of kinds");
}

fn mesh(yaml: &str) -> MeshConfig {
    install();
    MeshConfig::from_yaml("flows.yaml", yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(yaml: &str) -> ConfigErrors {
    install();
    match MeshConfig::from_yaml("flows.yaml", yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e,
    }
}

/// `file:line: field: message` of every error.
fn rendered(e: &ConfigErrors) -> String {
    e.render()
}

fn uri(d: &Option<Destination>) -> String {
    d.as_ref()
        .and_then(|d| {
            d.uri.clone().or_else(|| {
                d.reference
                    .as_ref()
                    .map(|r| format!("{}/{}", r.kind, r.name))
            })
        })
        .unwrap_or_else(|| "-".into())
}

fn owner(m: &evmesh_config::ObjectMeta) -> String {
    evmesh_config::messaging::owner_of(m)
        .map(|(k, n)| format!("{k}/{n}"))
        .unwrap_or_else(|| "-".into())
}

const IMC_AND_SUB: &str = r#"
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {name: orders}
spec:
  delivery: {retry: 2, backoffDelay: PT0.1S}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: audit}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: orders}
  subscriber: {uri: http://127.0.0.1:9000/audit}
  reply: {uri: http://127.0.0.1:9000/replies}
"#;

const SEQUENCE: &str = r#"
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: sequence}
spec:
  channelTemplate:
    apiVersion: messaging.knative.dev/v1
    kind: InMemoryChannel
  steps:
    - uri: http://127.0.0.1:9001/first
    - uri: http://127.0.0.1:9002/second
      delivery: {retry: 3}
    - uri: http://127.0.0.1:9003/third
  reply:
    uri: http://127.0.0.1:9004/display
"#;

#[test]
fn a_sequence_is_wired_into_a_channel_and_subscription_per_step_as_knative_names_them() {
    let m = mesh(SEQUENCE);
    let channels: Vec<String> = m
        .channels
        .iter()
        .map(|c| format!("{}:{}", c.metadata.name, owner(&c.metadata)))
        .collect();
    assert_eq!(
        channels,
        [
            "sequence-kn-sequence-0:Sequence/sequence",
            "sequence-kn-sequence-1:Sequence/sequence",
            "sequence-kn-sequence-2:Sequence/sequence"
        ]
    );
    let subs: Vec<String> = m
        .subscriptions
        .iter()
        .map(|s| {
            format!(
                "{} on {} -> {} reply {} retry {:?}",
                s.metadata.name,
                s.channel.1,
                uri(&s.subscriber),
                uri(&s.reply),
                s.delivery.as_ref().map(|d| d.retry)
            )
        })
        .collect();
    assert_eq!(
        subs,
        [
            "sequence-kn-sequence-0 on sequence-kn-sequence-0 -> http://127.0.0.1:9001/first reply InMemoryChannel/sequence-kn-sequence-1 retry None",
            "sequence-kn-sequence-1 on sequence-kn-sequence-1 -> http://127.0.0.1:9002/second reply InMemoryChannel/sequence-kn-sequence-2 retry Some(3)",
            "sequence-kn-sequence-2 on sequence-kn-sequence-2 -> http://127.0.0.1:9003/third reply http://127.0.0.1:9004/display retry None",
        ]
    );
}

#[test]
fn a_sequence_without_channel_template_gets_the_default_channel() {
    let yaml = SEQUENCE.replace(
        "  channelTemplate:\n    apiVersion: messaging.knative.dev/v1\n    kind: InMemoryChannel\n",
        "",
    );
    let m = mesh(&yaml);
    assert_eq!(m.channels.len(), 3);
    assert!(m.channels.iter().all(|c| c.kind == ChannelKind::InMemory));
}

#[test]
fn a_sequence_needs_steps_and_reports_a_bad_step_delivery_at_its_line() {
    let e = errors(&SEQUENCE.replace(
        "delivery: {retry: 3}",
        "delivery: {retry: 3, backoffDelay: soon}",
    ));
    assert!(
        rendered(&e).contains("flows.yaml:12: spec.steps[1].delivery.backoffDelay"),
        "{e}"
    );
    let e = errors(
        "apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata: {name: s}\nspec: {steps: []}\n",
    );
    assert!(
        rendered(&e).contains("spec.steps: at least one step is required"),
        "{e}"
    );
    let e = errors(&SEQUENCE.replace(
        "    - uri: http://127.0.0.1:9003/third\n",
        "    - uri: third\n",
    ));
    assert!(
        rendered(&e).contains("flows.yaml:13: spec.steps[2].uri"),
        "{e}"
    );
}

#[test]
fn a_user_channel_cannot_take_a_name_a_sequence_generates() {
    let yaml = format!(
        "{SEQUENCE}---\napiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {{name: sequence-kn-sequence-1}}\n"
    );
    let e = errors(&yaml);
    assert!(
        rendered(&e).contains("channel default/sequence-kn-sequence-1 already exists"),
        "{e}"
    );
}

const PARALLEL: &str = r#"
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {name: odd-even}
spec:
  channelTemplate:
    apiVersion: messaging.knative.dev/v1
    kind: InMemoryChannel
  branches:
    - filter: {uri: http://127.0.0.1:9001/even-filter}
      subscriber: {uri: http://127.0.0.1:9002/even}
      delivery: {retry: 4}
    - subscriber: {uri: http://127.0.0.1:9003/all}
      reply: {uri: http://127.0.0.1:9005/branch-reply}
  reply: {uri: http://127.0.0.1:9004/display}
"#;

#[test]
fn a_parallel_is_wired_into_ingress_branch_and_filter_subscriptions_as_knative_names_them() {
    let m = mesh(PARALLEL);
    let channels: Vec<&str> = m
        .channels
        .iter()
        .map(|c| c.metadata.name.as_str())
        .collect();
    assert_eq!(
        channels,
        [
            "odd-even-kn-parallel",
            "odd-even-kn-parallel-0",
            "odd-even-kn-parallel-1"
        ]
    );
    let subs: Vec<String> = m
        .subscriptions
        .iter()
        .map(|s| {
            format!(
                "{} on {} -> {} reply {} retry {:?}",
                s.metadata.name,
                s.channel.1,
                uri(&s.subscriber),
                uri(&s.reply),
                s.delivery.as_ref().map(|d| d.retry)
            )
        })
        .collect();
    assert_eq!(
        subs,
        [
            "odd-even-kn-parallel-filter-0 on odd-even-kn-parallel -> http://127.0.0.1:9001/even-filter reply InMemoryChannel/odd-even-kn-parallel-0 retry None",
            "odd-even-kn-parallel-0 on odd-even-kn-parallel-0 -> http://127.0.0.1:9002/even reply http://127.0.0.1:9004/display retry Some(4)",
            "odd-even-kn-parallel-filter-1 on odd-even-kn-parallel -> InMemoryChannel/odd-even-kn-parallel-1 reply - retry None",
            "odd-even-kn-parallel-1 on odd-even-kn-parallel-1 -> http://127.0.0.1:9003/all reply http://127.0.0.1:9005/branch-reply retry None",
        ]
    );
}

#[test]
fn a_parallel_needs_branches_each_with_a_subscriber() {
    let e = errors(
        "apiVersion: flows.knative.dev/v1\nkind: Parallel\nmetadata: {name: p}\nspec: {branches: []}\n",
    );
    assert!(
        rendered(&e).contains("spec.branches: at least one branch is required"),
        "{e}"
    );
    let e = errors(&PARALLEL.replace("      subscriber: {uri: http://127.0.0.1:9002/even}\n", ""));
    assert!(
        rendered(&e).contains("spec.branches[0]: missing field `subscriber`"),
        "{e}"
    );
}

#[test]
fn refs_to_channels_and_flows_resolve_to_the_channel_they_front() {
    let yaml = format!(
        "{SEQUENCE}---\n{PARALLEL}---\n{IMC_AND_SUB}---\napiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {{name: generic}}\n"
    );
    let m = mesh(&yaml);
    let ingress: url::Url = "http://127.0.0.1:8080".parse().expect("url");
    let r = Resolver::new(&m, ingress.clone(), None);
    let resolve = |api: &str, kind: &str, name: &str| {
        let d: Destination = serde_json::from_value(
            serde_json::json!({"ref": {"apiVersion": api, "kind": kind, "name": name}}),
        )
        .expect("dest");
        r.resolve(&d, "default")
    };
    let at = |name: &str| Ok(channel_url(&ingress, "default", name));
    assert_eq!(
        resolve("flows.knative.dev/v1", "Sequence", "sequence"),
        at("sequence-kn-sequence-0")
    );
    assert_eq!(
        resolve("flows.knative.dev/v1", "Parallel", "odd-even"),
        at("odd-even-kn-parallel")
    );
    assert_eq!(
        resolve("messaging.knative.dev/v1", "InMemoryChannel", "orders"),
        at("orders")
    );
    assert_eq!(
        resolve("messaging.knative.dev/v1", "Channel", "generic"),
        at("generic")
    );
    assert!(resolve("flows.knative.dev/v1", "Sequence", "missing").is_err());
}

#[test]
fn a_trigger_whose_subscriber_is_a_sequence_that_does_not_exist_is_warned_about() {
    let trigger = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec:
  broker: default
  subscriber:
    ref: {apiVersion: flows.knative.dev/v1, kind: Sequence, name: sequence}
"#;
    let m = mesh(trigger);
    assert!(
        m.warnings.iter().any(|w| w
            .to_string()
            .contains("Sequence \"sequence\" does not exist")),
        "{:?}",
        m.warnings
    );
    let m = mesh(&format!("{trigger}---\n{SEQUENCE}"));
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

#[test]
fn documents_applied_to_a_running_mesh_see_its_channels_and_flows() {
    let running = mesh(&format!(
        "{SEQUENCE}---\napiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {{name: generic}}\n"
    ));
    let docs = load_str(
        "api.yaml",
        r#"
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: tap}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: generic}
  subscriber:
    ref: {apiVersion: flows.knative.dev/v1, kind: Sequence, name: sequence}
"#,
    )
    .expect("yaml");
    let one = validate_in(
        &docs,
        &ValidationContext {
            running: Some(&running),
            ..Default::default()
        },
    )
    .expect("valid");
    assert!(one.warnings.is_empty(), "{:?}", one.warnings);
    assert_eq!(
        one.subscriptions[0].channel,
        (ChannelKind::InMemory, "generic".to_string())
    );
    // A new resource may not take a generated name.
    let docs = load_str("api.yaml", "apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {name: sequence-kn-sequence-0}\n").expect("yaml");
    let e = validate_in(
        &docs,
        &ValidationContext {
            running: Some(&running),
            ..Default::default()
        },
    )
    .expect_err("taken");
    assert!(
        e.render().contains("generated for Sequence \"sequence\""),
        "{e}"
    );
}

#[test]
fn wiring_a_stored_manifest_gives_the_children_knative_would_create() {
    install();
    let manifest = serde_json::json!({
        "apiVersion": "flows.knative.dev/v1", "kind": "Sequence",
        "metadata": {"name": "s", "namespace": "ns1", "uid": "u-1"},
        "spec": {"steps": [{"uri": "http://a.example/"}, {"uri": "http://b.example/"}]},
    });
    let w = wiring::wire(&manifest, &ChannelDefaults::default()).expect("a Sequence");
    let ch = w.channels[1].manifest();
    assert_eq!(ch["apiVersion"], "messaging.knative.dev/v1");
    assert_eq!(ch["kind"], "InMemoryChannel");
    assert_eq!(ch["metadata"]["name"], "s-kn-sequence-1");
    assert_eq!(ch["metadata"]["namespace"], "ns1");
    assert_eq!(ch["metadata"]["ownerReferences"][0]["kind"], "Sequence");
    let sub = w.subscriptions[0].manifest();
    assert_eq!(sub["spec"]["channel"]["name"], "s-kn-sequence-0");
    assert_eq!(sub["spec"]["reply"]["ref"]["name"], "s-kn-sequence-1");
    assert_eq!(sub["spec"]["reply"]["ref"]["namespace"], "ns1");
    // The same uid every time: a restart keeps a generated subscription's identity.
    let again = wiring::wire(&manifest, &ChannelDefaults::default()).expect("a Sequence");
    assert_eq!(
        w.subscriptions[0].metadata.uid,
        again.subscriptions[0].metadata.uid
    );
}
