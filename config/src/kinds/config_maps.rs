//! The `v1` ConfigMaps evmesh reads (not served through the API): Knative's
//! `default-ch-webhook` (the default channel), eventing-natss's `config-nats` (where NATS is),
//! eventing-kafka-broker's `kafka-channel-config` (where KafkaChannels' Kafka is), and any other
//! (a Kafka-class Broker's `spec.config` names one).

use serde_json::Value;

use crate::loader::Document;
use crate::messaging::{
    DEFAULT_CHANNEL_CONFIGMAP, DEFAULT_CHANNEL_CONFIGMAP_NAMESPACE, NATS_CONFIGMAP,
};
use crate::model::ObjectMeta;
use crate::registry::{Kind, KindInfo, Pass};

/// Whether a document is the `v1` ConfigMap `knative-eventing/name`.
fn is_config_map(api_version: &str, kind: &str, meta: &ObjectMeta, name: &str) -> bool {
    api_version == "v1"
        && kind == "ConfigMap"
        && meta.name == name
        && meta.namespace == DEFAULT_CHANNEL_CONFIGMAP_NAMESPACE
}

/// Knative's `default-ch-webhook` ConfigMap.
pub struct DefaultChannelConfigMap;

impl Kind for DefaultChannelConfigMap {
    fn versions(&self) -> &'static [KindInfo] {
        &[]
    }
    fn reads(&self, api_version: &str, kind: &str, meta: &ObjectMeta) -> bool {
        is_config_map(api_version, kind, meta, DEFAULT_CHANNEL_CONFIGMAP)
    }
    fn validate<'a>(
        &self,
        pass: &mut Pass<'a>,
        doc: &'a Document,
        _api_version: &str,
        _meta: ObjectMeta,
        _spec: &Value,
    ) {
        pass.messaging
            .collect_config_map(&mut pass.ctx, doc, &doc.value);
    }
}

/// eventing-natss's `config-nats` ConfigMap.
pub struct NatsConfigMap;

impl Kind for NatsConfigMap {
    fn versions(&self) -> &'static [KindInfo] {
        &[]
    }
    fn reads(&self, api_version: &str, kind: &str, meta: &ObjectMeta) -> bool {
        is_config_map(api_version, kind, meta, NATS_CONFIGMAP)
    }
    fn validate<'a>(
        &self,
        pass: &mut Pass<'a>,
        doc: &'a Document,
        _api_version: &str,
        _meta: ObjectMeta,
        _spec: &Value,
    ) {
        pass.nats_url = crate::messaging::check::nats_config_url(&mut pass.ctx, doc, &doc.value);
    }
}

/// eventing-kafka-broker's `kafka-channel-config` ConfigMap.
pub struct KafkaChannelConfigMap;

impl Kind for KafkaChannelConfigMap {
    fn versions(&self) -> &'static [KindInfo] {
        &[]
    }
    fn reads(&self, api_version: &str, kind: &str, meta: &ObjectMeta) -> bool {
        api_version.split('/').next() == Some("v1")
            && kind == "ConfigMap"
            && meta.name == crate::kafka::KAFKA_CHANNEL_CONFIGMAP
            && meta.namespace == crate::kafka::KAFKA_CHANNEL_CONFIGMAP_NAMESPACE
    }
    fn validate<'a>(
        &self,
        pass: &mut Pass<'a>,
        doc: &'a Document,
        _api_version: &str,
        _meta: ObjectMeta,
        _spec: &Value,
    ) {
        let data = doc.value.get("data").cloned().unwrap_or(Value::Null);
        match data
            .as_object()
            .ok_or_else(|| "data is required".to_string())
            .and_then(crate::kafka::channel_bootstrap)
        {
            Ok(servers) => pass.kafka_channel_bootstrap = Some(servers),
            Err(e) => pass.ctx.error(doc, "data", e),
        }
    }
}

/// Any other `v1` ConfigMap: kept for the Kafka-class Brokers whose `spec.config` names it
/// (warned about when none does).
pub struct OtherConfigMap;

impl Kind for OtherConfigMap {
    fn versions(&self) -> &'static [KindInfo] {
        &[]
    }
    fn reads(&self, api_version: &str, kind: &str, _meta: &ObjectMeta) -> bool {
        api_version.split('/').next() == Some("v1") && kind == "ConfigMap"
    }
    fn validate<'a>(
        &self,
        pass: &mut Pass<'a>,
        doc: &'a Document,
        _api_version: &str,
        meta: ObjectMeta,
        _spec: &Value,
    ) {
        let data = doc.value.get("data").cloned().unwrap_or(Value::Null);
        pass.config_maps
            .insert((meta.namespace.clone(), meta.name.clone()), (data, doc));
    }
}
