//! Validation and wiring of channels, Channels and Subscriptions, with this crate's channel kinds
//! installed beside `evmesh_config`'s own: what the data plane is handed, the names Knative's
//! reconcilers use, and errors with file:line:field (Sequence and Parallel, kinds of
//! `evmesh-flows`, are tested in flows/tests/flows.rs).

use evmesh_config::registry::{self, Kind};
use evmesh_config::{ChannelKind, ConfigErrors, Destination, MeshConfig};

/// `evmesh_config`'s own kinds and this crate's channel kinds, as the facade installs them.
fn install() {
    let mut kinds: Vec<&'static dyn Kind> = registry::BUILTIN.to_vec();
    kinds.push(&evmesh_channels::in_memory_channel::IN_MEMORY_CHANNEL);
    kinds.push(&evmesh_channels::nats_jetstream_channel::NATS_JETSTREAM_CHANNEL);
    kinds.push(&evmesh_channels::channel::Channel);
    kinds.push(&evmesh_channels::subscription::Subscription);
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
