//! Admin read API shaped like Kubernetes' (`/apis/{group}/{version}/namespaces/{ns}/{plural}`),
//! plus `/healthz` and `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use evmesh_broker::BrokerService;
use evmesh_config::{EVENTING_V1, MeshConfig, event_display_url};
use serde_json::{Value, json};
use url::Url;

#[derive(Clone)]
pub(crate) struct Admin {
    pub(crate) config: Arc<MeshConfig>,
    pub(crate) service: BrokerService,
    pub(crate) ingress: Url,
    pub(crate) ready: Arc<AtomicBool>,
}

pub(crate) fn routes(admin: Admin) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/apis/{group}/{version}/{plural}", get(list_all))
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}",
            get(list_ns),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}",
            get(get_one),
        )
        .with_state(admin)
}

async fn readyz(State(a): State<Admin>) -> Response {
    if a.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

fn not_found(message: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "NotFound", "code": 404, "message": message,
        })),
    )
        .into_response()
}

fn condition(reason: Option<&str>) -> Value {
    match reason {
        None => json!([{"type": "Ready", "status": "True"}]),
        Some(r) => {
            json!([{"type": "Ready", "status": "False", "reason": "NotReady", "message": r}])
        }
    }
}

impl Admin {
    /// Every resource of `group/version/plural`, optionally in one namespace.
    fn resources(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        ns: Option<&str>,
    ) -> Option<(String, Vec<Value>)> {
        let api = format!("{group}/{version}");
        let in_ns = |n: &str| ns.is_none_or(|want| want == n);
        let items = match (api.as_str(), plural) {
            (EVENTING_V1, "brokers") => {
                let views = self.service.brokers();
                self.config
                    .brokers
                    .iter()
                    .filter(|b| in_ns(&b.resource.metadata.namespace))
                    .map(|b| {
                        let m = &b.resource.metadata;
                        let v = views.iter().find(|v| v.namespace == m.namespace && v.name == m.name);
                        json!({
                            "apiVersion": EVENTING_V1, "kind": "Broker",
                            "metadata": m, "spec": b.resource.spec,
                            "status": {
                                "conditions": condition(v.is_none().then_some("broker is not running")),
                                "address": {"url": v.map(|v| v.url.clone())},
                                "deadLetterSinkUri": v.and_then(|v| v.dead_letter_sink_uri.clone()),
                                "evmesh": v.map(|v| json!({"routedOffset": v.routed_offset, "counters": v.counters})),
                            }
                        })
                    })
                    .collect()
            }
            (EVENTING_V1, "triggers") => {
                let views = self.service.triggers();
                self.config
                    .triggers
                    .iter()
                    .filter(|t| in_ns(&t.resource.metadata.namespace))
                    .map(|t| {
                        let m = &t.resource.metadata;
                        let v = views.iter().find(|v| v.namespace == m.namespace && v.name == m.name);
                        let reason = match v {
                            None => Some("trigger is not running".to_string()),
                            Some(v) => v.not_ready_reason.clone(),
                        };
                        json!({
                            "apiVersion": EVENTING_V1, "kind": "Trigger",
                            "metadata": m, "spec": t.resource.spec,
                            "status": {
                                "conditions": condition(reason.as_deref()),
                                "subscriberUri": v.and_then(|v| v.subscriber_uri.clone()).unwrap_or_default(),
                                "deadLetterSinkUri": v.and_then(|v| v.dead_letter_sink_uri.clone()),
                                "evmesh": v.map(|v| json!({"counters": v.counters})),
                            }
                        })
                    })
                    .collect()
            }
            ("evmesh.dev/v1alpha1", "eventdisplays") => self
                .config
                .externals
                .iter()
                .filter(|e| e.api_version == "evmesh.dev/v1alpha1" && e.kind == "EventDisplay")
                .filter(|e| in_ns(&e.metadata.namespace))
                .map(|e| {
                    let url = event_display_url(&self.ingress, &e.metadata.namespace, &e.metadata.name);
                    json!({
                        "apiVersion": e.api_version, "kind": e.kind, "metadata": e.metadata,
                        "status": {"conditions": condition(None), "address": {"url": url.to_string()}},
                    })
                })
                .collect(),
            _ => return None,
        };
        let kind = match plural {
            "brokers" => "BrokerList",
            "triggers" => "TriggerList",
            _ => "EventDisplayList",
        };
        Some((kind.to_string(), items))
    }

    fn list(&self, group: &str, version: &str, plural: &str, ns: Option<&str>) -> Response {
        match self.resources(group, version, plural, ns) {
            Some((kind, items)) => Json(json!({
                "apiVersion": format!("{group}/{version}"), "kind": kind, "items": items,
            }))
            .into_response(),
            None => not_found(format!(
                "the server could not find the requested resource {group}/{version} {plural}"
            )),
        }
    }
}

async fn list_all(
    State(a): State<Admin>,
    Path((group, version, plural)): Path<(String, String, String)>,
) -> Response {
    a.list(&group, &version, &plural, None)
}

async fn list_ns(
    State(a): State<Admin>,
    Path((group, version, ns, plural)): Path<(String, String, String, String)>,
) -> Response {
    a.list(&group, &version, &plural, Some(&ns))
}

async fn get_one(
    State(a): State<Admin>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
) -> Response {
    let Some((_, items)) = a.resources(&group, &version, &plural, Some(&ns)) else {
        return not_found(format!(
            "the server could not find the requested resource {group}/{version} {plural}"
        ));
    };
    match items
        .into_iter()
        .find(|i| i["metadata"]["name"].as_str() == Some(name.as_str()))
    {
        Some(item) => Json(item).into_response(),
        None => not_found(format!("{plural} {name:?} not found in namespace {ns:?}")),
    }
}
