//! `messaging.knative.dev/v1` Subscription: a channel's events to a subscriber and its replies
//! onward.

use serde_json::Value;

use super::written;
use crate::MeshConfig;
use crate::loader::Document;
use crate::messaging::MESSAGING_V1;
use crate::model::ObjectMeta;
use crate::registry::{AGE, Immutable, Kind, KindInfo, Pass, READY_COL, REASON_COL, Refs};
use crate::validate::{check_api_version, typed};

/// The Subscription kind.
pub struct Subscription;

static INFO: &[KindInfo] = &[KindInfo {
    group: "messaging.knative.dev",
    version: "v1",
    kind: "Subscription",
    plural: "subscriptions",
    singular: "subscription",
    short_names: &["sub"],
    categories: &["all", "knative", "messaging"],
    printer_columns: &[AGE, READY_COL, REASON_COL],
    spec_schema: crate::schemas::SUBSCRIPTION_SPEC,
    description: "Subscription routes events received on a Channel to a DNS name and corresponds to the subscriptions.channels.knative.dev CRD.",
}];

impl Kind for Subscription {
    fn versions(&self) -> &'static [KindInfo] {
        INFO
    }
    fn validate<'a>(
        &self,
        pass: &mut Pass<'a>,
        doc: &'a Document,
        api_version: &str,
        meta: ObjectMeta,
        spec: &Value,
    ) {
        check_api_version(&mut pass.ctx, doc, api_version, MESSAGING_V1);
        if spec.as_object().is_none_or(|o| o.is_empty()) {
            pass.ctx.error(
                doc,
                "spec",
                "is required (channel, and subscriber or reply)",
            );
        } else if let Some(s) = typed(&mut pass.ctx, doc, "spec", spec) {
            pass.messaging.subscriptions.push((meta, s, doc));
        }
    }
    fn refs(&self) -> Refs {
        Refs::Strict
    }
    fn immutable(&self) -> &'static [Immutable] {
        &[Immutable {
            field: "channel",
            may_set: false,
            may_unset: false,
        }]
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        mesh.subscriptions
            .retain(|s| !written(&s.metadata, ns, name));
    }
}
