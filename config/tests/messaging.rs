//! Validation and wiring of Channels, Subscriptions, Sequences and Parallels: what the data plane
//! is handed, the names Knative's reconcilers use, and errors with file:line:field.

use evmesh_config::messaging::ChannelDefaults;
use evmesh_config::messaging::wiring;
use evmesh_config::{
    ChannelKind, ConfigErrors, Destination, MeshConfig, Resolver, ValidationContext, channel_url,
    load_str, validate_in,
};

fn mesh(yaml: &str) -> MeshConfig {
    MeshConfig::from_yaml("flows.yaml", yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(yaml: &str) -> ConfigErrors {
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

#[test]
fn an_in_memory_channel_and_its_subscription_become_what_the_data_plane_runs() {
    let m = mesh(IMC_AND_SUB);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(m.channels.len(), 1);
    let c = &m.channels[0];
    assert_eq!(
        (c.kind, c.metadata.name.as_str()),
        (ChannelKind::InMemory, "orders")
    );
    assert_eq!(c.delivery.as_ref().map(|d| d.retry), Some(2));
    let s = &m.subscriptions[0];
    assert_eq!(s.channel, (ChannelKind::InMemory, "orders".to_string()));
    assert_eq!(uri(&s.subscriber), "http://127.0.0.1:9000/audit");
    assert_eq!(uri(&s.reply), "http://127.0.0.1:9000/replies");
    assert!(
        s.delivery.is_none(),
        "no delivery of its own: the channel's applies"
    );
}

#[test]
fn a_subscription_delivery_is_kept_whole_to_replace_the_channels() {
    let yaml = IMC_AND_SUB.replace(
        "  reply: {uri: http://127.0.0.1:9000/replies}",
        "  delivery:\n    deadLetterSink: {uri: http://127.0.0.1:9000/dls}",
    );
    let m = mesh(&yaml);
    let d = m.subscriptions[0].delivery.as_ref().expect("own delivery");
    assert_eq!(d.retry, 0, "nothing merged from the channel's retry: 2");
    assert_eq!(uri(&d.dead_letter_sink), "http://127.0.0.1:9000/dls");
}

#[test]
fn a_subscription_may_have_only_a_reply_but_not_neither() {
    let reply_only = IMC_AND_SUB.replace("  subscriber: {uri: http://127.0.0.1:9000/audit}\n", "");
    let m = mesh(&reply_only);
    assert!(m.subscriptions[0].subscriber.is_none());
    let neither = reply_only.replace("  reply: {uri: http://127.0.0.1:9000/replies}\n", "");
    let e = errors(&neither);
    assert!(
        rendered(&e)
            .contains("flows.yaml:11: spec: a Subscription needs a subscriber, a reply or both"),
        "{e}"
    );
}

#[test]
fn a_subscription_to_a_channel_that_does_not_exist_is_a_warning() {
    let yaml = IMC_AND_SUB.replace("name: orders}\n  subscriber", "name: nope}\n  subscriber");
    let m = mesh(&yaml);
    let w: Vec<String> = m.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.contains("spec.channel")
                && w.contains("InMemoryChannel \"nope\" does not exist")),
        "{w:?}"
    );
}

#[test]
fn a_subscription_to_a_non_channel_kind_is_an_error() {
    let yaml = IMC_AND_SUB.replace(
        "{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: orders}",
        "{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}",
    );
    let e = errors(&yaml);
    assert!(
        rendered(&e)
            .contains("spec.channel.kind: eventing.knative.dev/v1 \"Broker\" is not a channel"),
        "{e}"
    );
}

#[test]
fn a_generic_channel_is_backed_by_an_in_memory_channel_of_the_same_name_owned_by_it() {
    let m = mesh(
        r#"
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: events, uid: 8b2c7a52-0000-4000-8000-000000000001}
spec:
  delivery: {retry: 1}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: s}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: events}
  subscriber: {uri: http://127.0.0.1:9000/}
"#,
    );
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    let c = &m.channels[0];
    assert_eq!(
        (c.kind, c.metadata.name.as_str()),
        (ChannelKind::InMemory, "events")
    );
    assert_eq!(owner(&c.metadata), "Channel/events");
    let refs = &c.metadata.other["ownerReferences"][0];
    assert_eq!(refs["uid"], "8b2c7a52-0000-4000-8000-000000000001");
    assert_eq!(refs["controller"], true);
    assert!(
        c.metadata.uid.is_some(),
        "a generated channel gets a uid derived from its owner's"
    );
    assert_eq!(c.delivery.as_ref().map(|d| d.retry), Some(1));
    assert_eq!(
        m.subscriptions[0].channel,
        (ChannelKind::InMemory, "events".to_string())
    );
}

#[test]
fn a_channel_template_spec_is_merged_over_the_channel_delivery_as_knative_does() {
    let m = mesh(
        r#"
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: events}
spec:
  channelTemplate:
    apiVersion: messaging.knative.dev/v1
    kind: InMemoryChannel
    spec:
      delivery: {retry: 7}
  delivery: {retry: 1}
"#,
    );
    assert_eq!(m.channels[0].delivery.as_ref().map(|d| d.retry), Some(7));
}

#[test]
fn a_channel_template_of_a_kind_evmesh_does_not_run_is_an_error_saying_so() {
    let e = errors(
        r#"
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: events}
spec:
  channelTemplate:
    apiVersion: messaging.knative.dev/v1beta1
    kind: RabbitmqChannel
    spec: {numPartitions: 3}
"#,
    );
    let r = rendered(&e);
    assert!(
        r.contains("flows.yaml:6: spec.channelTemplate: \"RabbitmqChannel\" is not a channel kind evmesh knows"),
        "{r}"
    );
}

#[test]
fn an_in_memory_channel_and_a_channel_of_the_same_name_collide() {
    let e = errors(
        r#"
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {name: events}
---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: events}
"#,
    );
    assert!(
        rendered(&e).contains("channel default/events already exists (written by a user)"),
        "{e}"
    );
}

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
fn the_default_channel_config_map_sets_the_default_per_namespace() {
    let cm = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: default-ch-webhook, namespace: knative-eventing}
data:
  default-ch-config: |
    clusterDefault:
      apiVersion: messaging.knative.dev/v1
      kind: InMemoryChannel
    namespaceDefaults:
      kafka-ns:
        apiVersion: messaging.knative.dev/v1beta1
        kind: RabbitmqChannel
"#;
    let e = errors(cm);
    assert!(
        rendered(&e).contains("data.default-ch-config: namespaceDefaults.kafka-ns: \"RabbitmqChannel\" is not a channel kind evmesh knows"),
        "{e}"
    );
    let ok = cm.replace(
        "messaging.knative.dev/v1beta1\n        kind: RabbitmqChannel",
        "messaging.knative.dev/v1\n        kind: InMemoryChannel",
    );
    let m = mesh(&format!(
        "{ok}---\napiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {{name: c, namespace: kafka-ns}}\n"
    ));
    assert!(
        m.warnings.is_empty(),
        "the ConfigMap is understood, not ignored: {:?}",
        m.warnings
    );
    assert_eq!(
        m.channel_defaults.template_for("kafka-ns").kind,
        "InMemoryChannel"
    );
    assert_eq!(m.channels[0].kind, ChannelKind::InMemory);
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

#[test]
fn the_default_channel_flag_value_parses_and_refuses_kinds_not_run_yet() {
    assert_eq!(
        "InMemoryChannel".parse::<ChannelKind>(),
        Ok(ChannelKind::InMemory)
    );
    assert_eq!(
        "messaging.knative.dev/v1/InMemoryChannel".parse::<ChannelKind>(),
        Ok(ChannelKind::InMemory)
    );
    assert_eq!(
        "messaging.knative.dev/v1alpha1/NatsJetStreamChannel".parse::<ChannelKind>(),
        Ok(ChannelKind::NatsJetStream)
    );
    assert_eq!(
        "KafkaChannel".parse::<ChannelKind>(),
        Ok(ChannelKind::Kafka)
    );
    assert!("RabbitmqChannel".parse::<ChannelKind>().is_err());
    assert!("Broker".parse::<ChannelKind>().is_err());
}

#[test]
fn only_a_channel_sequence_or_parallel_owner_makes_a_resource_generated() {
    let m = mesh(
        r#"
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata:
  name: exported
  ownerReferences:
    - {apiVersion: apps/v1, kind: Deployment, name: app, uid: x, controller: true}
"#,
    );
    assert_eq!(owner(&m.channels[0].metadata), "-");
}

#[test]
fn a_nats_jetstream_channel_keeps_its_stream_and_consumer_settings_for_the_data_plane() {
    let m = mesh(
        r#"
apiVersion: messaging.knative.dev/v1alpha1
kind: NatsJetStreamChannel
metadata:
  name: orders
spec:
  stream:
    overrideName: ORDERS
  consumerConfigTemplate:
    ackWait: 5s
"#,
    );
    let c = &m.channels[0];
    assert_eq!(c.kind, ChannelKind::NatsJetStream);
    assert_eq!(c.spec["stream"]["overrideName"], "ORDERS");
    assert_eq!(c.spec["consumerConfigTemplate"]["ackWait"], "5s");
}

#[test]
fn a_nats_jetstream_channel_is_served_as_v1alpha1() {
    let text = errors(
        "apiVersion: messaging.knative.dev/v1\nkind: NatsJetStreamChannel\nmetadata: {name: c}\nspec: {}\n",
    )
    .to_string();
    assert!(
        text.contains("use \"messaging.knative.dev/v1alpha1\""),
        "{text}"
    );
}
