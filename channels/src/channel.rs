//! `messaging.knative.dev/v1` Channel: its status from the backing channel of its
//! `channelTemplate` kind.

use evmesh_broker::kind::{RuntimeKind, StatusCx, finish, identity};
use evmesh_config::ChannelKind;
use evmesh_config::messaging::wiring;
use serde_json::{Value, json};

use crate::status::{channel_status, child_channel};

/// The Channel kind (runtime half; its validation and wiring are `evmesh_config`'s).
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_channels::channel::Channel.group_kind().1, "Channel");
/// ```
pub struct Channel;

impl RuntimeKind for Channel {
    fn group_kind(&self) -> (&'static str, &'static str) {
        ("messaging.knative.dev", "Channel")
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        let wired = || wiring::wire(manifest, &cx.mesh.channel_defaults).unwrap_or_default();
        let (status, not_ready) = {
            let w = wired();
            match w.channels.first() {
                Some(backing) => {
                    let (_, nr) = child_channel(cx, backing);
                    let (mut v, _) = match ChannelKind::from_template(
                        &backing.template.api_version,
                        &backing.template.kind,
                    ) {
                        Ok(k) => channel_status(cx, ns, name, k),
                        Err(_) => (json!({}), None),
                    };
                    v["channel"] = json!({
                        "apiVersion": backing.template.api_version,
                        "kind": backing.template.kind,
                        "name": name,
                        "namespace": ns,
                    });
                    (v, nr)
                }
                None => (
                    json!({}),
                    Some((
                        "BackingChannelFailed".into(),
                        "the channel template cannot be wired".into(),
                    )),
                ),
            }
        };
        finish(status, generation, &not_ready)
    }
}
