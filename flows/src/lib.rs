//! evmesh's flows kinds (`flows.knative.dev/v1`): [`sequence::Sequence`] and
//! [`parallel::Parallel`]. Each is wired into Channels and Subscriptions as Knative's reconcilers
//! wire them (names `<seq>-kn-sequence-<i>`, `<p>-kn-parallel[-<i>]`); they have no delivery
//! code of their own: the channels and subscriptions they generate run on the one delivery
//! engine.
//!
//! This crate is the runtime half of each kind (its status, in Knative's shapes, from what
//! runs); the validation and wiring half is registered in `evmesh_config`'s kind registry.
//!
//! ```
//! use evmesh_broker::kind::RuntimeKind;
//! assert_eq!(evmesh_flows::sequence::Sequence.group_kind(), ("flows.knative.dev", "Sequence"));
//! ```

pub mod parallel;
pub mod sequence;
