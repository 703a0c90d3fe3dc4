//! `messaging.knative.dev/v1beta1` KafkaChannel: its status from the channel the data plane runs.

use evmesh_broker::kind::{RuntimeKind, StatusCx, finish, identity};
use evmesh_config::ChannelKind;
use serde_json::Value;

use evmesh_channels::status::channel_status;

/// The KafkaChannel kind (runtime half; its validation is `evmesh_config`'s).
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_kafka::kafka_channel::KafkaChannel.group_kind().1, "KafkaChannel");
/// ```
pub struct KafkaChannel;

impl RuntimeKind for KafkaChannel {
    fn group_kind(&self) -> (&'static str, &'static str) {
        ("messaging.knative.dev", "KafkaChannel")
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        let (status, not_ready) = channel_status(cx, ns, name, ChannelKind::Kafka);
        finish(status, generation, &not_ready)
    }
}
