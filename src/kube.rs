//! What the real kubectl needs beyond the admin API: discovery, OpenAPI v3, Table output, field
//! and label selectors, and PATCH (merge, JSON and server-side apply), all generated from the
//! kind registry.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use evmesh_config::registry::{self, KindInfo, PrinterColumn};
use jsonpath_rust::JsonPath;
use serde_json::{Value, json};

use crate::admin::{self, Admin};
use crate::runtime::WriteError;

/// The Kubernetes version evmesh reports on `/version`: kubectl only warns about skew.
const GIT_VERSION: &str = "v1.32.0-evmesh";
/// Most bytes of a list or object body the Table conversion reads.
const MAX_BODY: usize = 64 << 20;

/// Where kubectl reaches the API with the token in the path: `{server}/_evmesh/kube/{token}`.
pub(crate) const KUBE_PREFIX: &str = "/_evmesh/kube/";

/// Adds discovery, OpenAPI and the Table/selector layer to the admin routes, and serves all of
/// it again under [`KUBE_PREFIX`]`{token}/`.
///
/// kubectl sends no credentials at all to an `http://` server (client-go applies a kubeconfig's
/// user only over TLS), so the kubeconfig `evmesh kubeconfig` prints carries the admin token in
/// the server URL; every request there, reads included, must name the right token.
pub(crate) fn extend(router: Router, admin: Admin) -> Router {
    let token = admin.token.clone();
    let api = router
        .merge(
            Router::new()
                .route("/version", get(version))
                .route("/api", get(api))
                .route("/api/v1", get(core_v1))
                .route("/api/v1/namespaces", get(namespaces))
                .route("/api/v1/namespaces/{ns}", get(namespace))
                .route("/apis", get(apis))
                .route("/apis/{group}/{version}", get(resource_list))
                .route("/openapi/v3", get(openapi_root))
                .route("/openapi/v3/apis/{group}/{version}", get(openapi_gv))
                .with_state(admin.clone()),
        )
        .layer(axum::middleware::from_fn_with_state(admin.clone(), shape))
        .layer(axum::middleware::from_fn(strict));
    let inner = api.clone();
    api.route(
        &format!("{KUBE_PREFIX}{{*rest}}"),
        axum::routing::any(move |req: Request| {
            let inner = inner.clone();
            let token = token.clone();
            async move { through_prefix(inner, token.as_deref(), req).await }
        }),
    )
}

/// Serves a request made under [`KUBE_PREFIX`]: checks the token in the path, then hands the
/// request, without the prefix and with the token as its bearer token, to the API.
async fn through_prefix(api: Router, token: Option<&str>, mut req: Request) -> Response {
    use tower::ServiceExt;
    let path = req.uri().path();
    let rest = path.strip_prefix(KUBE_PREFIX).unwrap_or_default();
    let (given, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if let Some(t) = token
        && !crate::admin::constant_time_eq(given.as_bytes(), t.as_bytes())
    {
        return WriteError::Unauthorized.into_response();
    }
    let mut target = format!("/{tail}");
    if let Some(q) = req.uri().query() {
        target.push('?');
        target.push_str(q);
    }
    let bearer = HeaderValue::from_str(&format!("Bearer {given}"));
    match (target.parse::<axum::http::Uri>(), bearer) {
        (Ok(uri), Ok(bearer)) => {
            *req.uri_mut() = uri;
            req.headers_mut().insert(header::AUTHORIZATION, bearer);
        }
        _ => return WriteError::BadRequest("malformed request path".into()).into_response(),
    }
    // A fresh request: the outer route's path parameters (request extensions) must not reach
    // the API's handlers.
    let (parts, body) = req.into_parts();
    let mut fresh = Request::new(body);
    *fresh.method_mut() = parts.method;
    *fresh.uri_mut() = parts.uri;
    *fresh.version_mut() = parts.version;
    *fresh.headers_mut() = parts.headers;
    match api.oneshot(fresh).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

async fn version() -> Json<Value> {
    Json(json!({
        "major": "1", "minor": "32", "gitVersion": GIT_VERSION,
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
        "goVersion": "", "compiler": "evmesh", "platform": std::env::consts::OS,
        "evmeshVersion": env!("CARGO_PKG_VERSION"),
    }))
}

/// The content type of aggregated discovery (`apidiscovery.k8s.io/v2`).
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the client accepts aggregated discovery v2 (kubectl 1.30+ asks for it first).
fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let params: Vec<String> = media.split(';').map(|p| p.trim().to_string()).collect();
            ["g=apidiscovery.k8s.io", "v=v2", "as=APIGroupDiscoveryList"]
                .iter()
                .all(|want| params.iter().any(|p| p == want))
        })
}

fn aggregated(items: Vec<Value>) -> Response {
    let body = json!({
        "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {}, "items": items,
    });
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(AGGREGATED));
    resp
}

/// The core group: evmesh serves none of it.
async fn api(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated(vec![]);
    }
    Json(json!({"kind": "APIVersions", "versions": [], "serverAddressByClientCIDRs": []}))
        .into_response()
}

/// A Namespace object, labelled as Kubernetes labels every namespace
/// (`kubernetes.io/metadata.name`).
fn namespace_object(ns: &str) -> Value {
    json!({
        "kind": "Namespace", "apiVersion": "v1",
        "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
        "spec": {}, "status": {"phase": "Active"},
    })
}

/// Namespaces need no creating in evmesh: every one exists. kubectl asks after a NotFound, to
/// tell a missing object from a missing namespace.
async fn namespace(Path(ns): Path<String>) -> Json<Value> {
    Json(namespace_object(&ns))
}

/// The core `v1` resources evmesh serves: only `namespaces` (read only), for clients' discovery
/// (kube-rs looks a core kind up here before watching it).
async fn core_v1() -> Json<Value> {
    Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
        "resources": [{"name": "namespaces", "singularName": "namespace", "namespaced": false,
            "kind": "Namespace", "verbs": ["get", "list"], "shortNames": ["ns"]}],
    }))
}

/// The namespaces in use (holding a resource, and `default`), filtered by `labelSelector`: what
/// an ApiServerSource's `namespaceSelector` is matched against.
async fn namespaces(
    State(a): State<Admin>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let labels = match parse_selector(q.get("labelSelector").map_or("", |s| s.as_str()), true) {
        Ok(l) => l,
        Err(e) => return WriteError::BadRequest(e).into_response(),
    };
    let mut names = std::collections::BTreeSet::from(["default".to_string()]);
    for k in registry::kinds() {
        for o in a.runtime.list(k, None) {
            if let Some(ns) = o["metadata"]["namespace"].as_str() {
                names.insert(ns.to_string());
            }
        }
    }
    let items: Vec<Value> = names
        .iter()
        .map(|n| namespace_object(n))
        .filter(|o| matches(o, &[], &labels))
        .collect();
    Json(json!({
        "kind": "NamespaceList", "apiVersion": "v1",
        "metadata": {"resourceVersion": a.runtime.resource_version().to_string()},
        "items": items,
    }))
    .into_response()
}

/// The groups of the registry, each with its versions (first registered is preferred).
fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for k in registry::kinds() {
        match out.iter_mut().find(|(g, _)| *g == k.group) {
            Some((_, versions)) => {
                if !versions.contains(&k.version) {
                    versions.push(k.version);
                }
            }
            None => out.push((k.group, vec![k.version])),
        }
    }
    out
}

fn group_json(group: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first()})
}

/// Aggregated discovery (every group, version and resource in one answer) when the client
/// asks for it, else the plain `APIGroupList` (the response's content type says which).
async fn apis(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        let items = groups()
            .into_iter()
            .map(|(g, vs)| {
                let versions: Vec<Value> = vs
                    .iter()
                    .map(|v| {
                        let resources: Vec<Value> = registry::kinds()
                            .filter(|k| k.group == g && k.version == *v)
                            .map(|k| {
                                json!({
                                    "resource": k.plural,
                                    "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
                                    "scope": "Namespaced",
                                    "singularResource": k.singular,
                                    "verbs": VERBS,
                                    "shortNames": k.short_names,
                                    "categories": k.categories,
                                })
                            })
                            .collect();
                        json!({"version": v, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                json!({"metadata": {"name": g}, "versions": versions})
            })
            .collect();
        return aggregated(items);
    }
    let groups: Vec<Value> = groups().iter().map(|(g, vs)| group_json(g, vs)).collect();
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})).into_response()
}

/// What every served resource supports.
const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

fn not_found() -> Response {
    WriteError::UnknownResource("no such API".into()).into_response()
}

async fn resource_list(Path((group, version)): Path<(String, String)>) -> Response {
    let resources: Vec<Value> = registry::kinds()
        .filter(|k| k.group == group && k.version == version)
        .map(|k| {
            let mut r = json!({
                "name": k.plural, "singularName": k.singular, "namespaced": true,
                "kind": k.kind,
                "verbs": VERBS,
            });
            if !k.short_names.is_empty() {
                r["shortNames"] = json!(k.short_names);
            }
            if !k.categories.is_empty() {
                r["categories"] = json!(k.categories);
            }
            r
        })
        .collect();
    if resources.is_empty() {
        return not_found();
    }
    Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": format!("{group}/{version}"), "resources": resources,
    }))
    .into_response()
}

// ---- OpenAPI v3 ----

/// `eventing.knative.dev`, `v1`, `Trigger` → `dev.knative.eventing.v1.Trigger`.
fn schema_name(k: &KindInfo) -> String {
    let mut parts: Vec<&str> = k.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{}", parts.join("."), k.version, k.kind)
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn object_meta_schema() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have.",
        "properties": {
            "name": s("Name must be unique within a namespace."),
            "namespace": s("Namespace defines the space within which each name must be unique (default: default)."),
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Map of string keys and values that can be used to organize and categorize objects."},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Annotations is an unstructured key value map stored with a resource."},
            "uid": s("UID is the unique in time and space value for this object. Set by evmesh."),
            "resourceVersion": s("An opaque value that represents the internal version of this object. Set by evmesh."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state. Set by evmesh."},
            "creationTimestamp": {"type": "string", "format": "date-time", "description": "The time this object was created. Set by evmesh."},
            "deletionTimestamp": {"type": "string", "format": "date-time", "description": "The time this object was deleted. Set by evmesh."},
            "generateName": s("Not supported by evmesh."),
            "finalizers": {"type": "array", "items": {"type": "string"}, "description": "Not used by evmesh."},
            "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "Not used by evmesh."},
            "managedFields": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "Not kept by evmesh."}
        }
    })
}

fn kind_schema(k: &KindInfo) -> Value {
    let spec: Value = serde_json::from_str(k.spec_schema).unwrap_or_else(
        |_| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    );
    json!({
        "type": "object",
        "description": k.description,
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "metadata": {"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "description": "Standard object's metadata."},
            "spec": spec,
            "status": {"type": "object", "description": "Status represents the current state of the resource, as evmesh reports it.", "x-kubernetes-preserve-unknown-fields": true},
        },
        "x-kubernetes-group-version-kind": [{"group": k.group, "version": k.version, "kind": k.kind}],
    })
}

async fn openapi_root() -> Json<Value> {
    let mut paths = serde_json::Map::new();
    for (g, vs) in groups() {
        for v in vs {
            paths.insert(
                format!("apis/{g}/{v}"),
                json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/{v}?hash={}", env!("CARGO_PKG_VERSION"))}),
            );
        }
    }
    Json(json!({"paths": paths}))
}

/// One group-version's OpenAPI v3 document: a schema per kind and a PATCH operation per
/// resource declaring `fieldValidation`, so kubectl leaves validation to evmesh.
async fn openapi_gv(Path((group, version)): Path<(String, String)>) -> Response {
    let kinds: Vec<&KindInfo> = registry::kinds()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return not_found();
    }
    let mut schemas = serde_json::Map::new();
    schemas.insert(OBJECT_META.into(), object_meta_schema());
    let mut paths = serde_json::Map::new();
    for k in kinds {
        schemas.insert(schema_name(k), kind_schema(k));
        let gvk = json!([{"group": k.group, "version": k.version, "kind": k.kind}]);
        let query = |name: &str, d: &str| json!({"name": name, "in": "query", "description": d, "schema": {"type": "string"}, "uniqueItems": true});
        let response = json!({"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", schema_name(k))}}}}});
        paths.insert(
            format!("/apis/{group}/{version}/namespaces/{{namespace}}/{}/{{name}}", k.plural),
            json!({
                "parameters": [
                    {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}},
                ],
                "get": {"operationId": format!("read{}", k.kind), "responses": response, "x-kubernetes-group-version-kind": gvk[0]},
                "patch": {
                    "operationId": format!("patch{}", k.kind),
                    "parameters": [
                        query("fieldValidation", "evmesh validates every write itself; answers 422 Invalid with the field causes."),
                        query("fieldManager", "The name of the actor making the change (server-side apply)."),
                        query("force", "Server-side apply: take over conflicting fields."),
                    ],
                    "responses": response,
                    "x-kubernetes-group-version-kind": gvk[0],
                },
            }),
        );
    }
    Json(json!({
        "openapi": "3.0.0",
        "info": {"title": "evmesh", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
    .into_response()
}

// ---- PATCH ----

/// `PATCH /apis/{g}/{v}/namespaces/{ns}/{plural}/{name}`: JSON merge patch (strategic merge
/// patch is taken as a merge patch, as for CRDs without patch strategies), JSON patch, and
/// server-side apply (`application/apply-patch+yaml`: create, or merge into the object).
pub(crate) async fn patch(
    State(a): State<Admin>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let strict = strict_requested(&query_map(&uri));
    match patch_inner(
        &a, &group, &version, &ns, &plural, &name, &headers, &body, strict,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn patch_inner(
    a: &Admin,
    group: &str,
    version: &str,
    ns: &str,
    plural: &str,
    name: &str,
    headers: &HeaderMap,
    body: &Bytes,
    strict: bool,
) -> Result<Response, WriteError> {
    a.authorized(headers)?;
    let kind = registry::by_plural(group, version, plural)
        .ok_or_else(|| WriteError::UnknownResource(format!("{plural}.{group}/{version}")))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let current = a.runtime.get(kind, ns, name);
    let merged = match content_type.as_str() {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| WriteError::BadRequest(format!("the patch is not JSON: {e}")))?;
            let mut doc = current.ok_or_else(|| WriteError::NotFound {
                kind,
                name: name.to_string(),
            })?;
            json_patch::merge(&mut doc, &patch);
            doc
        }
        "application/json-patch+json" => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| WriteError::BadRequest(format!("the JSON patch is invalid: {e}")))?;
            let mut doc = current.ok_or_else(|| WriteError::NotFound {
                kind,
                name: name.to_string(),
            })?;
            json_patch::patch(&mut doc, &patch).map_err(|e| WriteError::Invalid {
                kind,
                name: name.to_string(),
                causes: vec![(String::new(), format!("the JSON patch does not apply: {e}"))],
            })?;
            doc
        }
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
            let applied = admin::parse_body(body)?;
            if strict {
                check_strict(kind, &applied)?;
            }
            match current {
                None => {
                    let (code, obj, warnings) = a
                        .runtime
                        .write(kind, ns, Some(name), Some(applied), true)
                        .await?;
                    return Ok(admin::written(code, obj, warnings));
                }
                Some(mut doc) => {
                    // Server-side apply, as far as kubectl needs: the applied fields win.
                    // Fields set before and absent from this configuration stay.
                    let mut applied = applied;
                    if let Some(m) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                        m.remove("managedFields");
                    }
                    json_patch::merge(&mut doc, &applied);
                    doc
                }
            }
        }
        other => {
            return Ok((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Json(json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "reason": "UnsupportedMediaType", "code": 415,
                    "message": format!("the body of the request was in an unknown format ({other:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"),
                })),
            )
                .into_response());
        }
    };
    if strict {
        let mut spec_only = merged.clone();
        if let Some(o) = spec_only.as_object_mut() {
            o.remove("status");
        }
        check_strict(kind, &spec_only)?;
    }
    let (code, obj, warnings) = a
        .runtime
        .write(kind, ns, Some(name), Some(merged), false)
        .await?;
    Ok(admin::written(code, obj, warnings))
}

// ---- fieldValidation=Strict ----

fn query_map(uri: &axum::http::Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// With `fieldValidation=Strict` (kubectl's default), unknown fields are an error, as the
/// Kubernetes API server answers them: 400 "strict decoding error". Without it evmesh ignores
/// them with a warning.
fn check_strict(kind: &KindInfo, object: &Value) -> Result<(), WriteError> {
    let doc = evmesh_config::Document::from_value("<request>", object.clone());
    let warnings = match evmesh_config::validate(std::slice::from_ref(&doc)) {
        Ok(m) => m.warnings,
        Err(e) => e.warnings,
    };
    let unknown: Vec<String> = warnings
        .iter()
        .filter(|w| w.message.starts_with("unknown field"))
        .map(|w| format!("unknown field {:?}", w.location.field))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(WriteError::BadRequest(format!(
        "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
        unknown.join(", "),
        kind = kind.kind,
        version = kind.version,
    )))
}

fn strict_requested(q: &HashMap<String, String>) -> bool {
    q.get("fieldValidation").is_some_and(|v| v == "Strict")
}

/// Middleware on creates and replaces: applies `fieldValidation=Strict` before the write.
async fn strict(req: Request, next: Next) -> Response {
    let segments: Vec<&str> = req.uri().path().split('/').collect();
    let write = req.method() == Method::POST || req.method() == Method::PUT;
    if !write || segments.get(1) != Some(&"apis") || segments.len() < 7 {
        return next.run(req).await;
    }
    let Some(kind) = registry::by_plural(segments[2], segments[3], segments[6]) else {
        return next.run(req).await;
    };
    if !strict_requested(&query_map(req.uri())) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return WriteError::BadRequest("the body is too large".into()).into_response();
    };
    if let Ok(object) = admin::parse_body(&bytes)
        && let Err(e) = check_strict(kind, &object)
    {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

// ---- Selectors and Table output ----

/// One requirement of a field or label selector.
#[derive(Debug, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// The requirements of a selector: split at the commas outside `( )`.
fn split_requirements(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// `key in (a,b)` / `key notin (a,b)`: the set-based label requirements (what a
/// `matchExpressions` selector becomes in a query).
fn parse_set_requirement(part: &str) -> Option<Req> {
    let open = part.find('(')?;
    let values = part[open + 1..].strip_suffix(')')?;
    let values: Vec<String> = values
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    let head: Vec<&str> = part[..open].split_whitespace().collect();
    match head.as_slice() {
        [key, "in"] => Some(Req::In(key.to_string(), values)),
        [key, "notin"] => Some(Req::NotIn(key.to_string(), values)),
        _ => None,
    }
}

/// Parses `a=b,c!=d,e,!f`, and for labels `g in (h,i)` and `j notin (k)` (Kubernetes' selector
/// syntax, as kubectl and client libraries send it).
fn parse_selector(s: &str, labels: bool) -> Result<Vec<Req>, String> {
    let mut out = Vec::new();
    for part in split_requirements(s) {
        if labels
            && part.contains('(')
            && let Some(req) = parse_set_requirement(part)
        {
            out.push(req);
        } else if let Some((k, v)) = part.split_once("!=") {
            out.push(Req::Ne(k.trim().into(), v.trim().into()));
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            out.push(Req::Eq(k.trim().into(), v.trim().into()));
        } else if !labels || part.contains(' ') || part.contains('(') {
            return Err(format!("unable to parse requirement: {part:?}"));
        } else if let Some(k) = part.strip_prefix('!') {
            out.push(Req::Absent(k.trim().into()));
        } else {
            out.push(Req::Exists(part.into()));
        }
    }
    Ok(out)
}

fn field_value<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    let mut v = obj;
    for p in field.split('.') {
        v = v.get(p)?;
    }
    v.as_str()
}

fn matches(obj: &Value, fields: &[Req], labels: &[Req]) -> bool {
    let field_ok = fields.iter().all(|r| match r {
        Req::Eq(k, v) => field_value(obj, k).unwrap_or("") == v,
        Req::Ne(k, v) => field_value(obj, k).unwrap_or("") != v,
        _ => false,
    });
    let l = &obj["metadata"]["labels"];
    let label_ok = labels.iter().all(|r| match r {
        Req::Eq(k, v) => l[k].as_str() == Some(v),
        Req::Ne(k, v) => l[k].as_str() != Some(v),
        Req::Exists(k) => l.get(k).is_some(),
        Req::Absent(k) => l.get(k).is_none(),
        Req::In(k, vs) => l[k].as_str().is_some_and(|v| vs.iter().any(|x| x == v)),
        Req::NotIn(k, vs) => l[k].as_str().is_none_or(|v| !vs.iter().any(|x| x == v)),
    });
    field_ok && label_ok
}

/// What the caller asked for, beyond the plain list or object.
struct Shape {
    table: bool,
    include_object: String,
    fields: Vec<Req>,
    labels: Vec<Req>,
}

/// Middleware on reads of resources: applies `fieldSelector`/`labelSelector` to lists and
/// watches, and answers as a `meta.k8s.io/v1` Table when the Accept header asks for one.
async fn shape(State(_): State<Admin>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if req.method() != Method::GET || !path.starts_with("/apis/") || path.split('/').count() < 5 {
        return next.run(req).await;
    }
    let q: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let table = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=Table"));
    let parsed = (
        parse_selector(q.get("fieldSelector").map_or("", |s| s.as_str()), false),
        parse_selector(q.get("labelSelector").map_or("", |s| s.as_str()), true),
    );
    let (fields, labels) = match parsed {
        (Ok(f), Ok(l)) => (f, l),
        (Err(e), _) | (_, Err(e)) => return WriteError::BadRequest(e).into_response(),
    };
    let watch = q
        .get("watch")
        .is_some_and(|w| w == "true" || w == "1" || w.is_empty());
    if !table && fields.is_empty() && labels.is_empty() && !watch {
        return next.run(req).await;
    }
    // Kubernetes ends a watch after `timeoutSeconds` (client-go and kube-rs ask for ~5 min and
    // then watch again from the last resourceVersion).
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs);
    let shape = Shape {
        table,
        include_object: q
            .get("includeObject")
            .cloned()
            .unwrap_or_else(|| "Metadata".into()),
        fields,
        labels,
    };
    let resp = next.run(req).await;
    if !resp.status().is_success() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    if watch {
        // Status changes that matter come as MODIFIED events with a resourceVersion of their
        // own, as on Kubernetes (the runtime bumps it).
        let lines = watch_lines(body, std::sync::Arc::new(shape));
        return Response::from_parts(parts, until(lines, timeout));
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return WriteError::Internal("reading the response".into()).into_response();
    };
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let out = reshape(value, &shape);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(out.to_string()))
}

/// A watch body that ends after `timeout` (when given).
fn until<S>(stream: S, timeout: Option<Duration>) -> Body
where
    S: futures_util::Stream<Item = Result<Bytes, axum::Error>> + Send + 'static,
{
    use futures_util::StreamExt;
    match timeout {
        Some(t) => Body::from_stream(stream.take_until(tokio::time::sleep(t))),
        None => Body::from_stream(stream),
    }
}

/// Filters a list by the selectors and turns a list or object into a Table when asked.
fn reshape(value: Value, shape: &Shape) -> Value {
    let api = value["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind_name = value["kind"].as_str().unwrap_or_default().to_string();
    if let Some(items) = value["items"].as_array() {
        let items: Vec<Value> = items
            .iter()
            .filter(|o| matches(o, &shape.fields, &shape.labels))
            .cloned()
            .collect();
        let rv = value["metadata"]["resourceVersion"].clone();
        let kind = registry::by_kind(&api, kind_name.trim_end_matches("List"));
        return match (shape.table, kind) {
            (true, Some(k)) => to_table(k, &items, rv, &shape.include_object),
            _ => {
                let mut v = value;
                v["items"] = Value::Array(items);
                v
            }
        };
    }
    match (shape.table, registry::by_kind(&api, &kind_name)) {
        (true, Some(k)) => {
            let rv = value["metadata"]["resourceVersion"].clone();
            to_table(k, std::slice::from_ref(&value), rv, &shape.include_object)
        }
        _ => value,
    }
}

/// Rewrites a watch stream line by line: events not matching the selectors are dropped, and
/// objects become one-row Tables when asked.
fn watch_lines(
    body: Body,
    shape: std::sync::Arc<Shape>,
) -> impl futures_util::Stream<Item = Result<Bytes, axum::Error>> + Send {
    use futures_util::StreamExt;
    let stream = body.into_data_stream();
    futures_util::stream::unfold(
        (stream, Vec::<u8>::new(), shape),
        |(mut stream, mut buf, shape)| async move {
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let Ok(mut ev) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    if ev["type"] != "ERROR" && ev["type"] != "BOOKMARK" {
                        let obj = ev["object"].take();
                        if !matches(&obj, &shape.fields, &shape.labels) {
                            continue;
                        }
                        ev["object"] = reshape(obj, &shape);
                    }
                    let mut text = ev.to_string();
                    text.push('\n');
                    return Some((Ok(Bytes::from(text)), (stream, buf, shape)));
                }
                match stream.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e), (stream, buf, shape))),
                    None => return None,
                }
            }
        },
    )
}

fn column_definitions(k: &KindInfo) -> Vec<Value> {
    let mut cols = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    cols.extend(k.printer_columns.iter().map(|c| {
        let (ty, format) = if c.type_ == "date" {
            ("date", "")
        } else {
            (c.type_, "")
        };
        json!({"name": c.name, "type": ty, "format": format, "description": c.description, "priority": c.priority})
    }));
    cols
}

/// A cell as Kubernetes' CRD table convertor makes it: the first value the JSONPath selects,
/// dates as an age.
fn cell(obj: &Value, c: &PrinterColumn) -> Value {
    let path = format!("${}", c.json_path);
    let found = obj
        .query(&path)
        .ok()
        .and_then(|v| v.first().map(|v| (*v).clone()));
    match (found, c.type_) {
        (None | Some(Value::Null), _) => Value::Null,
        (Some(Value::String(s)), "date") => match chrono::DateTime::parse_from_rfc3339(&s) {
            Ok(t) => Value::String(human_duration(
                chrono::Utc::now().signed_duration_since(t).num_seconds(),
            )),
            Err(_) => Value::String(s),
        },
        (Some(v), _) => v,
    }
}

/// Kubernetes' `duration.HumanDuration`: `45s`, `5m3s`, `25m`, `3h5m`, `20h`, `3d4h`, `45d`,
/// `2y30d`.
fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => match s % 60 {
            0 => format!("{}m", s / 60),
            r => format!("{}m{r}s", s / 60),
        },
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => match (s / 60) % 60 {
            0 => format!("{}h", s / 3600),
            m => format!("{}h{m}m", s / 3600),
        },
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 8 * 86400 => match (s / 3600) % 24 {
            0 => format!("{}d", s / 86400),
            h => format!("{}d{h}h", s / 86400),
        },
        s if s < 2 * 365 * 86400 => format!("{}d", s / 86400),
        s => format!("{}y{}d", s / (365 * 86400), (s / 86400) % 365),
    }
}

fn to_table(k: &KindInfo, items: &[Value], rv: Value, include_object: &str) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            cells.extend(k.printer_columns.iter().map(|c| cell(o, c)));
            let mut row = json!({"cells": cells});
            match include_object {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"],
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": column_definitions(k),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectls() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(185), "3m5s");
        assert_eq!(human_duration(1500), "25m");
        assert_eq!(human_duration(3 * 3600 + 300), "3h5m");
        assert_eq!(human_duration(3 * 86400), "3d");
    }

    #[test]
    fn selectors_parse_and_match() {
        let f = parse_selector("metadata.name=a", false).expect("parses");
        let l = parse_selector("app=x,!gone", true).expect("parses");
        let obj = json!({"metadata": {"name": "a", "labels": {"app": "x"}}});
        assert!(matches(&obj, &f, &l));
        let other = json!({"metadata": {"name": "b", "labels": {"app": "x"}}});
        assert!(!matches(&other, &f, &l));
        assert!(parse_selector("a in (b)", false).is_err());
        assert!(parse_selector("a in b", true).is_err());
    }

    #[test]
    fn set_based_label_selectors_parse_and_match() {
        let l =
            parse_selector("app=x,tier in (a, b),env notin (prod),!gone", true).expect("parses");
        assert_eq!(l.len(), 4);
        let obj = |tier: &str, env: &str| json!({"metadata": {"name": "a", "labels": {"app": "x", "tier": tier, "env": env}}});
        assert!(matches(&obj("a", "dev"), &[], &l));
        assert!(matches(&obj("b", "dev"), &[], &l));
        assert!(!matches(&obj("c", "dev"), &[], &l));
        assert!(!matches(&obj("a", "prod"), &[], &l));
    }

    #[test]
    fn ready_column_reads_the_ready_condition() {
        let k = registry::by_kind("eventing.knative.dev/v1", "Trigger").expect("registered");
        let obj = json!({"metadata": {"name": "t"}, "spec": {"broker": "default"},
            "status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        let t = to_table(k, &[obj], json!("1"), "None");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "t");
        assert_eq!(cells[1], "default");
        assert_eq!(cells[4], "True");
    }
}
