//! ApiServerSource (`sources.knative.dev/v1`): its typed spec, label selectors in Kubernetes'
//! string form, and its validation as Knative's webhook does it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CloudEventOverrides, SourceConfig, SourceSpec, check_overrides};
use crate::loader::Document;
use crate::model::{Destination, ObjectMeta};
use crate::validate::{Ctx, check_destination, typed};

/// `Reference` mode: events carry an ObjectReference (Knative's default).
pub const REFERENCE_MODE: &str = "Reference";
/// `Resource` mode: events carry the whole object.
pub const RESOURCE_MODE: &str = "Resource";

/// Event type of an object added, Resource mode.
pub const APISERVER_ADD: &str = "dev.knative.apiserver.resource.add";
/// Event type of an object updated, Resource mode.
pub const APISERVER_UPDATE: &str = "dev.knative.apiserver.resource.update";
/// Event type of an object deleted, Resource mode.
pub const APISERVER_DELETE: &str = "dev.knative.apiserver.resource.delete";
/// Event type of an object added, Reference mode.
pub const APISERVER_REF_ADD: &str = "dev.knative.apiserver.ref.add";
/// Event type of an object updated, Reference mode.
pub const APISERVER_REF_UPDATE: &str = "dev.knative.apiserver.ref.update";
/// Event type of an object deleted, Reference mode.
pub const APISERVER_REF_DELETE: &str = "dev.knative.apiserver.ref.delete";

/// One `matchExpressions` entry of a label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelectorRequirement {
    /// The label key.
    #[serde(default)]
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    #[serde(default)]
    pub operator: String,
    /// The values (`In`, `NotIn`: at least one; `Exists`, `DoesNotExist`: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A Kubernetes `LabelSelector`: `matchLabels` and `matchExpressions`, all of which must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must have these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Whether it selects everything (`{}`).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// The selector in the `labelSelector` query form Kubernetes' `LabelSelectorAsSelector`
    /// gives: `app=web,tier in (a,b),!gone`, requirements sorted by key.
    ///
    /// ```
    /// use evmesh_config::LabelSelector;
    /// let s: LabelSelector = serde_json::from_str(r#"{"matchLabels": {"app": "web"},
    ///   "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]}"#).unwrap();
    /// assert_eq!(s.to_query(), "app=web,tier in (a,b)");
    /// ```
    pub fn to_query(&self) -> String {
        let mut reqs: Vec<(String, String)> = self
            .match_labels
            .iter()
            .map(|(k, v)| (k.clone(), format!("{k}={v}")))
            .collect();
        for e in &self.match_expressions {
            let mut values = e.values.clone();
            values.sort();
            values.dedup();
            let text = match e.operator.as_str() {
                "In" => format!("{} in ({})", e.key, values.join(",")),
                "NotIn" => format!("{} notin ({})", e.key, values.join(",")),
                "Exists" => e.key.clone(),
                _ => format!("!{}", e.key),
            };
            reqs.push((e.key.clone(), text));
        }
        reqs.sort();
        reqs.into_iter()
            .map(|(_, t)| t)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether `labels` satisfy it.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let got = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => got.is_some_and(|g| e.values.contains(g)),
                    "NotIn" => got.is_none_or(|g| !e.values.contains(g)),
                    "Exists" => got.is_some(),
                    _ => got.is_none(),
                }
            })
    }
}

/// One entry of `spec.resources`: a kind to watch, optionally narrowed by labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerResource {
    /// `group/version` (or `v1` for the core group).
    #[serde(default)]
    pub api_version: String,
    /// The kind, e.g. `Trigger`.
    #[serde(default)]
    pub kind: String,
    /// Only objects whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// `spec.owner`: only objects whose controller is of this apiVersion and kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiVersionKind {
    /// `group/version`.
    #[serde(default)]
    pub api_version: String,
    /// The kind.
    #[serde(default)]
    pub kind: String,
}

/// `spec` of an ApiServerSource (`sources.knative.dev/v1`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerSourceSpec {
    /// The kinds to watch.
    #[serde(default)]
    pub resources: Vec<ApiServerResource>,
    /// Only objects controlled by an owner of this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ApiVersionKind>,
    /// `Reference` (default) or `Resource`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Kubernetes service account (accepted; evmesh watches with its own credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The namespaces to watch: absent, the source's own; `{}`, all; else those whose labels
    /// match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// CloudEvents Subscriptions API filters (an alpha Knative feature, off by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<serde_json::Value>,
    /// Where events go.
    #[serde(default)]
    pub sink: Destination,
    /// Extensions added to every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CloudEventOverrides>,
}

impl ApiServerSourceSpec {
    /// Whether events carry the whole object (`mode: Resource`).
    pub fn resource_mode(&self) -> bool {
        self.mode.as_deref() == Some(RESOURCE_MODE)
    }

    /// The event types of its mode: add, update, delete.
    pub fn event_types(&self) -> [&'static str; 3] {
        if self.resource_mode() {
            [APISERVER_ADD, APISERVER_UPDATE, APISERVER_DELETE]
        } else {
            [
                APISERVER_REF_ADD,
                APISERVER_REF_UPDATE,
                APISERVER_REF_DELETE,
            ]
        }
    }
}

/// Whether `v` parses as Kubernetes' `schema.ParseGroupVersion` accepts (`v1`, `group/v1`).
fn valid_group_version(v: &str) -> bool {
    match v.split('/').collect::<Vec<_>>().as_slice() {
        [version] => !version.is_empty(),
        [group, version] => !group.is_empty() && !version.is_empty(),
        _ => false,
    }
}

fn check_selector(ctx: &mut Ctx, doc: &Document, field: &str, s: &LabelSelector) {
    for (i, e) in s.match_expressions.iter().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        if e.key.is_empty() {
            ctx.error(doc, &format!("{f}.key"), "is required");
        }
        match e.operator.as_str() {
            "In" | "NotIn" if e.values.is_empty() => ctx.error(
                doc,
                &format!("{f}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            ),
            "Exists" | "DoesNotExist" if !e.values.is_empty() => ctx.error(
                doc,
                &format!("{f}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => ctx.error(
                doc,
                &format!("{f}.operator"),
                format!("not a valid selector operator: {op:?}"),
            ),
        }
    }
}

/// Validates an ApiServerSource spec (Knative's `ApiServerSourceSpec.Validate`, after its
/// defaults: `mode` Reference).
fn check_spec(ctx: &mut Ctx, doc: &Document, spec: &mut ApiServerSourceSpec) -> bool {
    let before = ctx.errors.len();
    let mode = spec.mode.get_or_insert_with(|| REFERENCE_MODE.into());
    if mode != REFERENCE_MODE && mode != RESOURCE_MODE {
        ctx.error(
            doc,
            "spec.mode",
            format!("invalid value: {mode} (expected Reference or Resource)"),
        );
    }
    check_destination(ctx, doc, "spec.sink", &spec.sink);
    if spec.resources.is_empty() {
        ctx.error(doc, "spec.resources", "missing field(s)");
    }
    for (i, r) in spec.resources.iter().enumerate() {
        if !valid_group_version(&r.api_version) {
            ctx.error(
                doc,
                &format!("spec.resources[{i}].apiVersion"),
                format!("invalid value: {:?}", r.api_version),
            );
        }
        if r.kind.trim().is_empty() {
            ctx.error(
                doc,
                &format!("spec.resources[{i}].kind"),
                "missing field(s)",
            );
        }
        if let Some(s) = &r.selector {
            check_selector(ctx, doc, &format!("spec.resources[{i}].selector"), s);
        }
    }
    if let Some(o) = &spec.owner {
        if !valid_group_version(&o.api_version) {
            ctx.error(
                doc,
                "spec.owner.apiVersion",
                format!("invalid value: {:?}", o.api_version),
            );
        }
        if o.kind.trim().is_empty() {
            ctx.error(doc, "spec.owner.kind", "missing field(s)");
        }
    }
    if let Some(s) = &spec.namespace_selector {
        check_selector(ctx, doc, "spec.namespaceSelector", s);
    }
    if !spec.filters.is_empty() {
        ctx.error(
            doc,
            "spec.filters",
            "Filters is not empty but the NewAPIServerFilters feature is disabled.",
        );
    }
    check_overrides(ctx, doc, &spec.ce_overrides);
    ctx.errors.len() == before
}

/// Validates an ApiServerSource document into a source.
pub(crate) fn check_apiserver_source(
    ctx: &mut Ctx,
    doc: &Document,
    api_version: &str,
    metadata: ObjectMeta,
    spec: &serde_json::Value,
) -> Option<SourceConfig> {
    if api_version != super::SOURCES_V1 {
        ctx.error(
            doc,
            "apiVersion",
            format!(
                "{api_version:?} is not supported, use {:?}",
                super::SOURCES_V1
            ),
        );
        return None;
    }
    let mut s = typed::<ApiServerSourceSpec>(ctx, doc, "spec", spec)?;
    if s.service_account_name.is_some() {
        ctx.warn(
            doc,
            "spec.serviceAccountName",
            "is not used by evmesh (it watches with the credentials of its kubeconfig, or its own API)",
        );
    }
    if !check_spec(ctx, doc, &mut s) {
        return None;
    }
    Some(SourceConfig {
        api_version: api_version.to_string(),
        metadata,
        spec: SourceSpec::ApiServer(s),
        location: Some(doc.locate("")),
    })
}

/// `sink` of a spec (for [`SourceConfig::sink`]).
pub(crate) fn sink(spec: &ApiServerSourceSpec) -> &Destination {
    &spec.sink
}

/// ApiServerSource `spec` schema (OpenAPI v3, for `kubectl explain` and the admin API).
pub const APISERVER_SOURCE_SPEC: &str = r#"{"type": "object", "description": "ApiServerSourceSpec defines the desired state of ApiServerSource.",
  "required": ["resources"],
  "properties": {
    "ceOverrides": {"type": "object", "description": "CloudEventOverrides defines overrides to control the output format and modifications of the event sent to the sink.", "properties": {"extensions": {"type": "object", "additionalProperties": {"type": "string"}}}},
    "filters": {"type": "array", "description": "Filters (CloudEvents Subscriptions API), an experimental Knative feature evmesh does not enable.", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
    "mode": {"type": "string", "description": "EventMode controls the format of the event. `Reference` sends a dataref event type for the resource under watch. `Resource` send the full resource lifecycle event. Defaults to `Reference`"},
    "namespaceSelector": {"type": "object", "description": "NamespaceSelector is a label selector to capture the namespaces that should be watched by the source.", "x-kubernetes-preserve-unknown-fields": true},
    "owner": {"type": "object", "description": "ResourceOwner is an additional filter to only track resources that are owned by a specific resource type.", "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"}}},
    "resources": {"type": "array", "description": "Resource are the resources this source will track and send related lifecycle events from the Kubernetes ApiServer, with an optional label selector to help filter.", "items": {"type": "object", "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "selector": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
    "serviceAccountName": {"type": "string", "description": "ServiceAccountName is the name of the ServiceAccount to use to run this source. Defaults to default if not set."},
    "sink": {"type": "object", "description": "Sink is a reference to an object that will resolve to a uri to use as the sink.", "x-kubernetes-preserve-unknown-fields": true}
  }}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(json: &str) -> LabelSelector {
        serde_json::from_str(json).expect("selector")
    }

    #[test]
    fn selector_query_is_sorted_by_key_as_kubernetes_prints_it() {
        let s = sel(
            r#"{"matchLabels": {"z": "1", "a": "2"}, "matchExpressions": [
            {"key": "m", "operator": "NotIn", "values": ["y", "x"]},
            {"key": "b", "operator": "Exists"}, {"key": "c", "operator": "DoesNotExist"}]}"#,
        );
        assert_eq!(s.to_query(), "a=2,b,!c,m notin (x,y),z=1");
    }

    #[test]
    fn selector_matches_labels() {
        let s = sel(r#"{"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]}]}"#);
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!s.matches(&labels(&[("tier", "a")])));
    }
}
