//! `messaging.knative.dev/v1alpha1` NatsJetStreamChannel: its status from the channel the data plane runs.

use evmesh_broker::kind::{RuntimeKind, StatusCx, finish, identity};
use evmesh_config::ChannelKind;
use serde_json::Value;

use crate::status::channel_status;

/// The NatsJetStreamChannel kind (runtime half; its validation is `evmesh_config`'s).
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_channels::nats_jetstream_channel::NatsJetStreamChannel.group_kind().1, "NatsJetStreamChannel");
/// ```
pub struct NatsJetStreamChannel;

impl RuntimeKind for NatsJetStreamChannel {
    fn group_kind(&self) -> (&'static str, &'static str) {
        ("messaging.knative.dev", "NatsJetStreamChannel")
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        let (status, not_ready) = channel_status(cx, ns, name, ChannelKind::NatsJetStream);
        finish(status, generation, &not_ready)
    }
}
