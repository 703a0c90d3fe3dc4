//! evmesh's flows kinds (`flows.knative.dev/v1`): [`sequence::Sequence`] and
//! [`parallel::Parallel`], each one module holding both halves of the kind: its validation and
//! wiring (`evmesh_config::registry::Kind`) and its status (`evmesh_broker::kind::RuntimeKind`),
//! registered once by one line in the facade's list of kinds. Each is wired into Channels and
//! Subscriptions as Knative's reconcilers wire them (names `<seq>-kn-sequence-<i>`,
//! `<p>-kn-parallel[-<i>]`); they have no delivery code of their own: the channels and
//! subscriptions they generate run on the one delivery engine.
//!
//! ```
//! use evmesh_broker::kind::RuntimeKind;
//! use evmesh_config::registry::Kind;
//! assert_eq!(evmesh_flows::sequence::Sequence.group_kind(), ("flows.knative.dev", "Sequence"));
//! assert_eq!(evmesh_flows::parallel::Parallel.versions()[0].plural, "parallels");
//! ```

pub mod parallel;
pub mod sequence;

/// `flows.knative.dev`.
const FLOWS: &str = "flows.knative.dev";
/// `messaging.knative.dev`: the group of the channels the flows generate.
const MESSAGING: &str = "messaging.knative.dev";
