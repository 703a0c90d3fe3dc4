//! The built-in event display (`evmesh.dev/v1alpha1` `EventDisplay`): prints every CloudEvent it
//! receives to standard output, like Knative's `event_display` sample, and answers 202.

use axum::Router;
use axum::body::{Bytes, to_bytes};
use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cloudevents::event::Data;
use cloudevents::{AttributesReader, Event};

pub(crate) fn routes() -> Router {
    Router::new().route("/_evmesh/event-display/{ns}/{name}", post(show))
}

async fn show(Path((ns, name)): Path<(String, String)>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = match to_bytes(body, 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response(),
    };
    match evmesh_broker::codec::decode(&parts.headers, bytes.to_vec()) {
        Ok(event) => {
            println!("{}", render(&ns, &name, &event));
            StatusCode::ACCEPTED.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

fn render(ns: &str, name: &str, e: &Event) -> String {
    let mut out = format!(
        "☁️  cloudevents.Event (event display {ns}/{name})\nContext Attributes,\n  specversion: {}\n  type: {}\n  source: {}\n  id: {}\n",
        e.specversion(),
        e.ty(),
        e.source(),
        e.id()
    );
    if let Some(s) = e.subject() {
        out.push_str(&format!("  subject: {s}\n"));
    }
    if let Some(t) = e.time() {
        out.push_str(&format!("  time: {}\n", t.to_rfc3339()));
    }
    if let Some(c) = e.datacontenttype() {
        out.push_str(&format!("  datacontenttype: {c}\n"));
    }
    let mut ext: Vec<_> = e.iter_extensions().collect();
    if !ext.is_empty() {
        ext.sort_by_key(|(k, _)| *k);
        out.push_str("Extensions,\n");
        for (k, v) in ext {
            out.push_str(&format!("  {k}: {v}\n"));
        }
    }
    if let Some(d) = e.data() {
        out.push_str("Data,\n  ");
        match d {
            Data::Json(v) => out.push_str(&serde_json::to_string_pretty(v).unwrap_or_default()),
            Data::String(s) => out.push_str(s),
            Data::Binary(b) => match serde_json::from_slice::<serde_json::Value>(b) {
                Ok(v) => out.push_str(&serde_json::to_string_pretty(&v).unwrap_or_default()),
                Err(_) => out.push_str(&String::from_utf8_lossy(b)),
            },
        }
        out.push('\n');
    }
    out
}
