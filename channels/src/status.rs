//! Status of channels and subscriptions from what runs, in Knative's shapes; shared by the
//! channel kinds, Subscription, and the flows built of them.

use evmesh_broker::kind::{NotReady, StatusCx};
use evmesh_config::messaging::{ChannelKind, wiring};
use evmesh_config::{ChannelConfig, MeshConfig, SubscriptionConfig, channel_url};
use serde_json::{Value, json};

/// A `Ready` condition object (as in a flow's child statuses).
pub fn ready_condition(not_ready: &NotReady) -> Value {
    match not_ready {
        None => json!({"type": "Ready", "status": "True"}),
        Some((r, m)) => json!({"type": "Ready", "status": "False", "reason": r, "message": m}),
    }
}

fn find_channel<'a>(
    mesh: &'a MeshConfig,
    ns: &str,
    name: &str,
    kind: ChannelKind,
) -> Option<&'a ChannelConfig> {
    mesh.channels
        .iter()
        .find(|c| c.kind == kind && c.metadata.namespace == ns && c.metadata.name == name)
}

fn find_subscription<'a>(
    mesh: &'a MeshConfig,
    ns: &str,
    name: &str,
) -> Option<&'a SubscriptionConfig> {
    mesh.subscriptions
        .iter()
        .find(|s| s.metadata.namespace == ns && s.metadata.name == name)
}

/// A subscription's resolved URIs and readiness (Knative's reasons).
struct Physical {
    subscriber: Option<String>,
    reply: Option<String>,
    dead_letter: Option<String>,
    not_ready: NotReady,
}

/// Readiness and URIs of a subscription: Knative's reasons for what the configuration lacks
/// (a missing channel, an unresolvable destination), then what the data plane reports.
fn physical(cx: &StatusCx, s: &SubscriptionConfig) -> Physical {
    let config = configured(cx, s);
    let live = cx
        .service
        .subscription(&s.metadata.namespace, &s.metadata.name);
    let not_ready = config.not_ready.clone().or_else(|| match &live {
        None => Some((
            "SubscriptionNotRunning".to_string(),
            format!(
                "subscription {}/{} is not running",
                s.metadata.namespace, s.metadata.name
            ),
        )),
        Some(v) => v.not_ready_reason.clone().map(|r| {
            (
                v.not_ready_code
                    .clone()
                    .unwrap_or_else(|| "NotReady".into()),
                r,
            )
        }),
    });
    match live {
        Some(v) => Physical {
            subscriber: v.subscriber_uri.or(config.subscriber),
            reply: v.reply_uri.or(config.reply),
            dead_letter: v.dead_letter_sink_uri.or(config.dead_letter),
            not_ready,
        },
        None => Physical {
            not_ready,
            ..config
        },
    }
}

/// What the configuration alone says of a subscription.
fn configured(cx: &StatusCx, s: &SubscriptionConfig) -> Physical {
    let ns = &s.metadata.namespace;
    let mut not_ready: NotReady = None;
    let mut fail = |reason: &str, message: String| {
        if not_ready.is_none() {
            not_ready = Some((reason.to_string(), message));
        }
    };
    let channel = find_channel(&cx.mesh, ns, &s.channel.1, s.channel.0);
    if channel.is_none() {
        fail(
            "ChannelReferenceFailed",
            format!("{} {ns}/{} does not exist", s.channel.0.kind(), s.channel.1),
        );
    }
    let mut resolve = |d: &Option<evmesh_config::Destination>, reason: &str, field: &str| {
        d.as_ref().and_then(|d| match cx.resolver.resolve(d, ns) {
            Ok(u) => Some(u.to_string()),
            Err(e) => {
                fail(reason, format!("Failed to resolve {field}: {e}"));
                None
            }
        })
    };
    let subscriber = resolve(&s.subscriber, "SubscriberResolveFailed", "spec.subscriber");
    let reply = resolve(&s.reply, "ReplyResolveFailed", "spec.reply");
    // A Subscription's delivery replaces its channel's entirely.
    let delivery = s
        .delivery
        .as_ref()
        .or(channel.and_then(|c| c.delivery.as_ref()));
    let dead_letter = resolve(
        &delivery.and_then(|d| d.dead_letter_sink.clone()),
        "DeadLetterSinkResolveFailed",
        "spec.delivery.deadLetterSink",
    );
    Physical {
        subscriber,
        reply,
        dead_letter,
        not_ready,
    }
}

/// Status of a channel the data plane runs (a channel of `kind`, or a Channel's backing one),
/// and why it is not ready.
pub fn channel_status(cx: &StatusCx, ns: &str, name: &str, kind: ChannelKind) -> (Value, NotReady) {
    let Some(c) = find_channel(&cx.mesh, ns, name, kind) else {
        let nr = Some((
            "ChannelNotRunning".to_string(),
            format!("{} {ns}/{name} is not running", kind.kind()),
        ));
        return (json!({}), nr);
    };
    let subscribers: Vec<Value> = cx
        .mesh
        .subscriptions
        .iter()
        .filter(|s| s.metadata.namespace == ns && s.channel == (kind, name.to_string()))
        .map(|s| {
            let p = physical(cx, s);
            json!({
                "uid": s.metadata.uid,
                "observedGeneration": s.metadata.generation.unwrap_or(1),
                "ready": if p.not_ready.is_none() { "True" } else { "False" },
                "message": p.not_ready.map(|(_, m)| m),
            })
        })
        .collect();
    let dls = c
        .delivery
        .as_ref()
        .and_then(|d| d.dead_letter_sink.as_ref())
        .map(|d| cx.resolver.resolve(d, ns));
    let live = cx.service.channel(ns, name);
    let mut not_ready = live.is_none().then(|| {
        match cx.service.channel_not_ready(ns, name) {
            // Its log (NATS, Kafka) cannot be opened yet; tried again on a timer.
            Some(why) => ("LogUnavailable".to_string(), why),
            None => (
                "ChannelNotRunning".to_string(),
                format!("{} {ns}/{name} is not running", kind.kind()),
            ),
        }
    });
    let dead_letter_sink_uri = match dls {
        Some(Ok(u)) => Some(u.to_string()),
        Some(Err(e)) => {
            not_ready = Some((
                "DeadLetterSinkResolveFailed".to_string(),
                format!("Failed to resolve spec.delivery.deadLetterSink: {e}"),
            ));
            None
        }
        None => None,
    };
    let url = live
        .as_ref()
        .map(|v| v.url.clone())
        .unwrap_or_else(|| channel_url(&cx.ingress, ns, name).to_string());
    (
        json!({
            "address": {"url": url},
            "subscribers": subscribers,
            "deadLetterSinkUri": live.as_ref().and_then(|v| v.dead_letter_sink_uri.clone()).or(dead_letter_sink_uri),
            "evmesh": live.map(|v| json!({"routedOffset": v.routed_offset, "counters": v.counters})),
        }),
        not_ready,
    )
}

/// Status of a subscription the data plane runs, and why it is not ready.
pub fn subscription_status(cx: &StatusCx, ns: &str, name: &str) -> (Value, NotReady) {
    match find_subscription(&cx.mesh, ns, name) {
        None => (
            json!({}),
            Some((
                "SubscriptionNotRunning".to_string(),
                format!("subscription {ns}/{name} is not running"),
            )),
        ),
        Some(s) => {
            let p = physical(cx, s);
            let counters = cx
                .service
                .subscription(ns, name)
                .map(|v| json!({"counters": v.counters}));
            (
                json!({
                    "physicalSubscription": {
                        "subscriberUri": p.subscriber,
                        "replyUri": p.reply,
                        "deadLetterSinkUri": p.dead_letter,
                    },
                    "evmesh": counters,
                }),
                p.not_ready,
            )
        }
    }
}

fn object_ref(api_version: &str, kind: &str, ns: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "namespace": ns})
}

/// `{channel, ready}` of a generated channel, and why it is not ready.
pub fn child_channel(cx: &StatusCx, c: &wiring::GeneratedChannel) -> (Value, NotReady) {
    let m = &c.metadata;
    let nr = match ChannelKind::from_template(&c.template.api_version, &c.template.kind) {
        Ok(k) => channel_status(cx, &m.namespace, &m.name, k).1,
        Err(e) => Some(("ChannelTemplateFailed".to_string(), e)),
    };
    let v = json!({
        "channel": object_ref(&c.template.api_version, &c.template.kind, &m.namespace, &m.name),
        "ready": ready_condition(&nr),
    });
    (v, nr)
}

/// `{subscription, ready}` of a generated subscription, and why it is not ready.
pub fn child_subscription(cx: &StatusCx, s: &wiring::GeneratedSubscription) -> (Value, NotReady) {
    let m = &s.metadata;
    let nr = subscription_status(cx, &m.namespace, &m.name).1;
    let v = json!({
        "subscription": object_ref(evmesh_config::messaging::MESSAGING_V1, "Subscription", &m.namespace, &m.name),
        "ready": ready_condition(&nr),
    });
    (v, nr)
}
