//! `messaging.knative.dev/v1alpha1` NatsJetStreamChannel (Knative's eventing-natss), both
//! halves: a channel evmesh runs on a JetStream stream ([`crate::nats`]); its status from the
//! channel the data plane runs.

use evmesh_config::Document;
use evmesh_config::messaging::{ChannelKind, NatsJetStreamChannelSpec};
use evmesh_config::registry::{AGE, KindInfo, Pass, READY_COL, REASON_COL, URL_COL};
use serde_json::Value;

use crate::kind::{ChannelType, no_check};

/// The NatsJetStreamChannel kind (its stream and consumer settings kept for the data plane).
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_channels::nats_jetstream_channel::NATS_JETSTREAM_CHANNEL.group_kind().1, "NatsJetStreamChannel");
/// ```
pub static NATS_JETSTREAM_CHANNEL: ChannelType = ChannelType {
    kind: ChannelKind::NatsJetStream,
    info: INFO,
    parse,
    check: no_check,
    keeps_spec: true,
};

/// The OpenAPI schema of a NatsJetStreamChannel's `spec` (eventing-natss).
const SPEC_SCHEMA: &str = concat!(
    r#"{"type": "object", "description": "Spec defines the desired state of the Channel.",
  "properties": {
    "delivery": "#,
    evmesh_config::schema_delivery!(),
    r#",
    "subscribers": "#,
    evmesh_config::schema_subscribers!(),
    r#",
    "stream": {"type": "object", "description": "How the JetStream stream is made: overrideName, config.", "x-kubernetes-preserve-unknown-fields": true},
    "consumerConfigTemplate": {"type": "object", "description": "How each subscription's consumer is made: ackWait, maxAckPending.", "x-kubernetes-preserve-unknown-fields": true},
    "deploymentSpecTemplate": {"type": "object", "description": "Dispatcher Deployment settings (ignored by evmesh).", "x-kubernetes-preserve-unknown-fields": true}
  }}"#
);

static INFO: &[KindInfo] = &[KindInfo {
    group: crate::MESSAGING,
    version: "v1alpha1",
    kind: "NatsJetStreamChannel",
    plural: "natsjetstreamchannels",
    singular: "natsjetstreamchannel",
    short_names: &[],
    categories: &["all", "knative", "messaging", "channel"],
    printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
    spec_schema: SPEC_SCHEMA,
    description: "NatsJetStreamChannel is a channel backed by a NATS JetStream stream (Knative's eventing-natss); in evmesh the dispatcher runs in-process.",
}];

fn parse(pass: &mut Pass<'_>, doc: &Document, spec: &Value) -> bool {
    pass.typed::<NatsJetStreamChannelSpec>(doc, "spec", spec)
        .is_some()
}
