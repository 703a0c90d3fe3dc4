//! Channels, Subscriptions, Sequences and Parallels in the runtime: their status in Knative's
//! shapes, and the channels and subscriptions a Channel, Sequence or Parallel generates
//! (listed and shown beside those users wrote, with `ownerReferences`).

use std::collections::BTreeMap;
use std::sync::Arc;

use evmesh_config::messaging::{ChannelKind, wiring};
use evmesh_config::registry::KindInfo;
use evmesh_config::{ChannelConfig, MeshConfig, Resolver, SubscriptionConfig, channel_url};
use serde_json::{Value, json};
use url::Url;

use super::{ResKey, Stored, conditions};

/// What status rendering reads, built once per list.
pub(super) struct Cx {
    pub(super) mesh: Arc<MeshConfig>,
    pub(super) resolver: Resolver,
    pub(super) ingress: Url,
    /// The data plane: what runs, and its counters.
    pub(super) service: evmesh_broker::BrokerService,
}

/// Why something is not ready: `(reason, message)`.
type NotReady = Option<(String, String)>;

fn channel_kind(kind: &KindInfo) -> Option<ChannelKind> {
    ChannelKind::from_template(&kind.api_version(), kind.kind).ok()
}

/// Whether `kind` is one this module renders.
pub(super) fn is_messaging(kind: &KindInfo) -> bool {
    matches!(
        (kind.group, kind.kind),
        ("messaging.knative.dev", "Channel" | "Subscription")
            | ("flows.knative.dev", "Sequence" | "Parallel")
    ) || channel_kind(kind).is_some()
}

/// The resources of `kind` that stored Channels, Sequences and Parallels generate (optionally
/// in one namespace), as manifests with their owner's resourceVersion.
pub(super) fn generated(
    resources: &BTreeMap<ResKey, Stored>,
    mesh: &MeshConfig,
    kind: &KindInfo,
    namespace: Option<&str>,
) -> Vec<Value> {
    let subscriptions = kind.group == "messaging.knative.dev" && kind.kind == "Subscription";
    if !subscriptions && channel_kind(kind).is_none() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (k, s) in resources {
        let parent = matches!(
            (k.0.as_str(), k.1.as_str()),
            ("messaging.knative.dev", "Channel") | ("flows.knative.dev", "Sequence" | "Parallel")
        );
        if !parent || namespace.is_some_and(|n| n != k.2) {
            continue;
        }
        let Some(w) = wiring::wire(&s.manifest, &mesh.channel_defaults) else {
            continue;
        };
        let rv = s.manifest["metadata"]["resourceVersion"].clone();
        let mut push = |mut m: Value| {
            if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), rv.clone());
            }
            out.push(m);
        };
        if subscriptions {
            w.subscriptions.iter().for_each(|s| push(s.manifest()));
        } else {
            w.channels
                .iter()
                .filter(|c| {
                    c.template.kind == kind.kind && c.template.api_version == kind.api_version()
                })
                .for_each(|c| push(c.manifest()));
        }
    }
    out
}

fn ready_condition(not_ready: &NotReady) -> Value {
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
fn physical(cx: &Cx, s: &SubscriptionConfig) -> Physical {
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
fn configured(cx: &Cx, s: &SubscriptionConfig) -> Physical {
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

/// Status of a channel the data plane runs (an InMemoryChannel, or a Channel's backing one).
fn channel_status(cx: &Cx, ns: &str, name: &str, kind: ChannelKind) -> (Value, NotReady) {
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

fn subscription_status(cx: &Cx, ns: &str, name: &str) -> (Value, NotReady) {
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

/// `{channel, ready}` of a generated channel.
fn child_channel(cx: &Cx, c: &wiring::GeneratedChannel) -> (Value, NotReady) {
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

/// `{subscription, ready}` of a generated subscription.
fn child_subscription(cx: &Cx, s: &wiring::GeneratedSubscription) -> (Value, NotReady) {
    let m = &s.metadata;
    let nr = subscription_status(cx, &m.namespace, &m.name).1;
    let v = json!({
        "subscription": object_ref(evmesh_config::messaging::MESSAGING_V1, "Subscription", &m.namespace, &m.name),
        "ready": ready_condition(&nr),
    });
    (v, nr)
}

/// The status of a resource of a messaging or flows kind, as Knative shows it.
pub(super) fn status(cx: &Cx, kind: &KindInfo, manifest: &Value) -> Value {
    let meta = &manifest["metadata"];
    let ns = meta["namespace"].as_str().unwrap_or("default");
    let name = meta["name"].as_str().unwrap_or_default();
    let generation = meta["generation"].as_i64().unwrap_or(1);
    let wired = || wiring::wire(manifest, &cx.mesh.channel_defaults).unwrap_or_default();
    let (mut status, not_ready) = match (kind.group, kind.kind) {
        ("messaging.knative.dev", "Subscription") => subscription_status(cx, ns, name),
        ("messaging.knative.dev", "Channel") => {
            let w = wired();
            match w.channels.first() {
                Some(backing) => {
                    let (_, nr) = child_channel(cx, backing);
                    let (mut v, _) = match ChannelKind::from_template(
                        &backing.template.api_version,
                        &backing.template.kind,
                    ) {
                        Ok(k) => channel_status(cx, ns, name, k),
                        Err(_) => (json!({}), None),
                    };
                    v["channel"] = json!({
                        "apiVersion": backing.template.api_version,
                        "kind": backing.template.kind,
                        "name": name,
                        "namespace": ns,
                    });
                    (v, nr)
                }
                None => (
                    json!({}),
                    Some((
                        "BackingChannelFailed".into(),
                        "the channel template cannot be wired".into(),
                    )),
                ),
            }
        }
        ("flows.knative.dev", "Sequence") => {
            let w = wired();
            let mut first: NotReady = None;
            let mut keep = |nr: NotReady| {
                if first.is_none() {
                    first = nr;
                }
            };
            let channels: Vec<Value> = w
                .channels
                .iter()
                .map(|c| {
                    let (v, nr) = child_channel(cx, c);
                    keep(nr);
                    v
                })
                .collect();
            let subs: Vec<Value> = w
                .subscriptions
                .iter()
                .map(|s| {
                    let (v, nr) = child_subscription(cx, s);
                    keep(nr);
                    v
                })
                .collect();
            let url = w
                .channels
                .first()
                .map(|c| channel_url(&cx.ingress, ns, &c.metadata.name).to_string());
            (
                json!({"address": {"url": url}, "channelStatuses": channels, "subscriptionStatuses": subs}),
                first,
            )
        }
        ("flows.knative.dev", "Parallel") => {
            let w = wired();
            let mut first: NotReady = None;
            let mut keep = |nr: NotReady| {
                if first.is_none() {
                    first = nr;
                }
            };
            let mut channels = w.channels.iter();
            let ingress = channels.next();
            let ingress_status = ingress.map(|c| {
                let (v, nr) = child_channel(cx, c);
                keep(nr);
                v
            });
            let subs: Vec<&wiring::GeneratedSubscription> = w.subscriptions.iter().collect();
            let branches: Vec<Value> = channels
                .enumerate()
                .map(|(i, c)| {
                    let (ch, nr) = child_channel(cx, c);
                    keep(nr);
                    let mut sub = |n: String| {
                        subs.iter().find(|s| s.metadata.name == n).map(|s| {
                            let (v, nr) = child_subscription(cx, s);
                            keep(nr);
                            v
                        })
                    };
                    let filter = sub(wiring::parallel_filter_subscription_name(name, i));
                    let subscriber = sub(wiring::parallel_branch_channel_name(name, i));
                    json!({
                        "filterSubscriptionStatus": filter,
                        "filterChannelStatus": ch,
                        "subscriberSubscriptionStatus": subscriber,
                    })
                })
                .collect();
            let url = ingress.map(|c| channel_url(&cx.ingress, ns, &c.metadata.name).to_string());
            (
                json!({"address": {"url": url}, "ingressChannelStatus": ingress_status, "branchStatuses": branches}),
                first,
            )
        }
        _ => match channel_kind(kind) {
            Some(k) => channel_status(cx, ns, name, k),
            None => (json!({}), None),
        },
    };
    if let Some(o) = status.as_object_mut() {
        o.insert("observedGeneration".into(), json!(generation));
        o.insert(
            "conditions".into(),
            conditions(not_ready.as_ref().map(|(r, m)| (r.as_str(), m.as_str()))),
        );
    }
    status
}

/// The resources a stored Channel, Sequence or Parallel manifest generates, by key (for watch
/// events when it changes).
pub(super) fn children(
    manifest: Option<&Value>,
    defaults: &evmesh_config::messaging::ChannelDefaults,
) -> BTreeMap<ResKey, Value> {
    let mut out = BTreeMap::new();
    let Some(w) = manifest.and_then(|m| wiring::wire(m, defaults)) else {
        return out;
    };
    let key = |group: &str, kind: &str, m: &evmesh_config::ObjectMeta| {
        (
            group.to_string(),
            kind.to_string(),
            m.namespace.clone(),
            m.name.clone(),
        )
    };
    for c in &w.channels {
        let group = c.template.api_version.split('/').next().unwrap_or_default();
        out.insert(key(group, &c.template.kind, &c.metadata), c.manifest());
    }
    for s in &w.subscriptions {
        out.insert(
            key("messaging.knative.dev", "Subscription", &s.metadata),
            s.manifest(),
        );
    }
    out
}
