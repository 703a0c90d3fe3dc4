//! The runtime half of the source kinds: their status, from the runner that runs them.

use evmesh_broker::kind::{RuntimeKind, StatusCx, identity};
use serde_json::Value;

/// A source kind (`PingSource`, `GitHubSource`, `ApiServerSource`, `KafkaSource`): its status
/// comes from the sources' runner.
///
/// ```
/// use evmesh_broker::kind::RuntimeKind;
/// assert_eq!(evmesh_sources::kind::Source("PingSource").group_kind().0, "sources.knative.dev");
/// ```
pub struct Source(pub &'static str);

impl RuntimeKind for Source {
    fn group_kind(&self) -> (&'static str, &'static str) {
        ("sources.knative.dev", self.0)
    }
    fn status(&self, cx: &StatusCx, manifest: &Value) -> Value {
        let (ns, name, generation) = identity(manifest);
        cx.sources.status(self.0, ns, name, generation)
    }
}
