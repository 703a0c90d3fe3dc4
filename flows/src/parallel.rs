//! `flows.knative.dev/v1` Parallel: every branch whose filter replies gets the event. Its status (Knative's shape) from the channels
//! and subscriptions it generates.

use evmesh_broker::kind::{NotReady, RuntimeKind, StatusCx, finish, identity};
use evmesh_channels::status::{child_channel, child_subscription};
use evmesh_config::channel_url;
use evmesh_config::messaging::wiring;
use serde_json::{Value, json};

/// The Parallel kind (runtime half; its validation and wiring are `evmesh_config`'s).
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_flows::parallel::Parallel.group_kind().1, "Parallel");
/// ```
pub struct Parallel;

impl RuntimeKind for Parallel {
    fn group_kind(&self) -> (&'static str, &'static str) {
        ("flows.knative.dev", "Parallel")
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        let wired = || wiring::wire(manifest, &cx.mesh.channel_defaults).unwrap_or_default();
        let (status, not_ready) = {
            let w = wired();
            let mut first: NotReady = None;
            let mut keep = |nr: NotReady| {
                if first.is_none() {
                    first = nr;
                }
            };
            let mut channels = w.channels.iter();
            let ingress = channels.next();
            let ingress_status = ingress.map(|c| {
                let (v, nr) = child_channel(cx, c);
                keep(nr);
                v
            });
            let subs: Vec<&wiring::GeneratedSubscription> = w.subscriptions.iter().collect();
            let branches: Vec<Value> = channels
                .enumerate()
                .map(|(i, c)| {
                    let (ch, nr) = child_channel(cx, c);
                    keep(nr);
                    let mut sub = |n: String| {
                        subs.iter().find(|s| s.metadata.name == n).map(|s| {
                            let (v, nr) = child_subscription(cx, s);
                            keep(nr);
                            v
                        })
                    };
                    let filter = sub(wiring::parallel_filter_subscription_name(name, i));
                    let subscriber = sub(wiring::parallel_branch_channel_name(name, i));
                    json!({
                        "filterSubscriptionStatus": filter,
                        "filterChannelStatus": ch,
                        "subscriberSubscriptionStatus": subscriber,
                    })
                })
                .collect();
            let url = ingress.map(|c| channel_url(&cx.ingress, ns, &c.metadata.name).to_string());
            (
                json!({"address": {"url": url}, "ingressChannelStatus": ingress_status, "branchStatuses": branches}),
                first,
            )
        };
        finish(status, generation, &not_ready)
    }
}
