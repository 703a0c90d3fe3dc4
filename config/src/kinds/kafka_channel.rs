//! `MESSAGING_V1BETA1` KafkaChannel: a channel evmesh runs (its log, subscriptions read it).

use serde_json::Value;

use super::{channel_addresses, remove_channel};
use crate::MeshConfig;
use crate::loader::Document;
use crate::messaging::{ChannelKind, MESSAGING_V1BETA1};
use crate::model::ObjectMeta;
use crate::registry::{
    AGE, AddrKey, Address, Kind, KindInfo, Pass, READY_COL, REASON_COL, Refs, URL_COL,
};
use crate::validate::{check_api_version, typed};

/// The KafkaChannel kind.
pub struct KafkaChannel;

static INFO: &[KindInfo] = &[KindInfo {
    group: "messaging.knative.dev",
    version: "v1beta1",
    kind: "KafkaChannel",
    plural: "kafkachannels",
    singular: "kafkachannel",
    short_names: &["kc"],
    categories: &["all", "knative", "messaging", "channel"],
    printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
    spec_schema: crate::messaging::KAFKA_CHANNEL_SPEC,
    description: "KafkaChannel is a channel backed by a Kafka topic (Knative's eventing-kafka-broker); in evmesh the dispatcher runs in-process.",
}];

impl Kind for KafkaChannel {
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
        check_api_version(&mut pass.ctx, doc, api_version, MESSAGING_V1BETA1);
        if let Some(s) = typed(&mut pass.ctx, doc, "spec", spec) {
            pass.messaging.kafkas.push((meta, s, spec.clone(), doc));
        }
    }
    fn refs(&self) -> Refs {
        Refs::Channel
    }
    fn addresses(&self, mesh: &MeshConfig, out: &mut Vec<(AddrKey, Address)>) {
        channel_addresses(mesh, ChannelKind::Kafka, out);
    }
    fn remove(&self, mesh: &mut MeshConfig, ns: &str, name: &str) {
        remove_channel(mesh, ChannelKind::Kafka, ns, name);
    }
}
