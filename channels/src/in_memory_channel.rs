//! `messaging.knative.dev/v1` InMemoryChannel, both halves: a channel evmesh runs (its log,
//! subscriptions read it), durable in evmesh; its status from the channel the data plane runs.

use evmesh_config::Document;
use evmesh_config::messaging::{ChannelKind, InMemoryChannelSpec};
use evmesh_config::registry::{AGE, KindInfo, Pass, READY_COL, REASON_COL, URL_COL};
use serde_json::Value;

use crate::kind::{ChannelType, no_check};

/// The InMemoryChannel kind.
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_channels::in_memory_channel::IN_MEMORY_CHANNEL.group_kind().1, "InMemoryChannel");
/// ```
pub static IN_MEMORY_CHANNEL: ChannelType = ChannelType {
    kind: ChannelKind::InMemory,
    info: INFO,
    parse,
    check: no_check,
    keeps_spec: false,
};

/// The OpenAPI schema of an InMemoryChannel's `spec`.
const SPEC_SCHEMA: &str = concat!(
    r#"{"type": "object", "description": "Spec defines the desired state of the Channel.",
  "properties": {
    "delivery": "#,
    evmesh_config::schema_delivery!(),
    r#",
    "subscribers": "#,
    evmesh_config::schema_subscribers!(),
    r#"
  }}"#
);

static INFO: &[KindInfo] = &[KindInfo {
    group: crate::MESSAGING,
    version: "v1",
    kind: "InMemoryChannel",
    plural: "inmemorychannels",
    singular: "inmemorychannel",
    short_names: &["imc"],
    categories: &["all", "knative", "messaging", "channel"],
    printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
    spec_schema: SPEC_SCHEMA,
    description: "InMemoryChannel is a resource representing a channel; in evmesh it keeps its events durably (Knative's is best-effort, in memory).",
}];

fn parse(pass: &mut Pass<'_>, doc: &Document, spec: &Value) -> bool {
    pass.typed::<InMemoryChannelSpec>(doc, "spec", spec)
        .is_some()
}
