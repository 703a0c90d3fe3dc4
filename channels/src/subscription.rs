//! `messaging.knative.dev/v1` Subscription: its status from the subscription the data plane
//! runs.

use evmesh_broker::kind::{RuntimeKind, StatusCx, finish, identity};
use serde_json::Value;

use crate::status::subscription_status;

/// The Subscription kind (runtime half; its validation is `evmesh_config`'s).
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_channels::subscription::Subscription.group_kind().1, "Subscription");
/// ```
pub struct Subscription;

impl RuntimeKind for Subscription {
    fn group_kind(&self) -> (&'static str, &'static str) {
        ("messaging.knative.dev", "Subscription")
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        let (status, not_ready) = subscription_status(cx, ns, name);
        finish(status, generation, &not_ready)
    }
}
