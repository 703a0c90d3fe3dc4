//! `messaging.knative.dev/v1` InMemoryChannel: its status from the channel the data plane runs.

use evmesh_broker::kind::{RuntimeKind, StatusCx, finish, identity};
use evmesh_config::ChannelKind;
use serde_json::Value;

use crate::status::channel_status;

/// The InMemoryChannel kind (runtime half; its validation is `evmesh_config`'s).
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_channels::in_memory_channel::InMemoryChannel.group_kind().1, "InMemoryChannel");
/// ```
pub struct InMemoryChannel;

impl RuntimeKind for InMemoryChannel {
    fn group_kind(&self) -> (&'static str, &'static str) {
        ("messaging.knative.dev", "InMemoryChannel")
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        let (status, not_ready) = channel_status(cx, ns, name, ChannelKind::InMemory);
        finish(status, generation, &not_ready)
    }
}
