//! The `v1` ConfigMaps evmesh reads (not served through the API): Knative's
//! `default-ch-webhook` (the default channel) and eventing-natss's `config-nats` (where NATS
//! is).

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
pub(crate) struct DefaultChannelConfigMap;

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
pub(crate) struct NatsConfigMap;

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
