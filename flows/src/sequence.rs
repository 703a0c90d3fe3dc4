//! `flows.knative.dev/v1` Sequence: an event sent to its address passes each step in order. Its status (Knative's shape) from the channels
//! and subscriptions it generates.

use evmesh_broker::kind::{NotReady, RuntimeKind, StatusCx, finish, identity};
use evmesh_channels::status::{child_channel, child_subscription};
use evmesh_config::channel_url;
use evmesh_config::messaging::wiring;
use serde_json::{Value, json};

/// The Sequence kind (runtime half; its validation and wiring are `evmesh_config`'s).
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_flows::sequence::Sequence.group_kind().1, "Sequence");
/// ```
pub struct Sequence;

impl RuntimeKind for Sequence {
    fn group_kind(&self) -> (&'static str, &'static str) {
        ("flows.knative.dev", "Sequence")
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, _, generation) = identity(manifest);
        let wired = || wiring::wire(manifest, &cx.mesh.channel_defaults).unwrap_or_default();
        let (status, not_ready) = {
            let w = wired();
            let mut first: NotReady = None;
            let mut keep = |nr: NotReady| {
                if first.is_none() {
                    first = nr;
                }
            };
            let channels: Vec<Value> = w
                .channels
                .iter()
                .map(|c| {
                    let (v, nr) = child_channel(cx, c);
                    keep(nr);
                    v
                })
                .collect();
            let subs: Vec<Value> = w
                .subscriptions
                .iter()
                .map(|s| {
                    let (v, nr) = child_subscription(cx, s);
                    keep(nr);
                    v
                })
                .collect();
            let url = w
                .channels
                .first()
                .map(|c| channel_url(&cx.ingress, ns, &c.metadata.name).to_string());
            (
                json!({"address": {"url": url}, "channelStatuses": channels, "subscriptionStatuses": subs}),
                first,
            )
        };
        finish(status, generation, &not_ready)
    }
}
