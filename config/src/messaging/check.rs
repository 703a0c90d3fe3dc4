//! Validation of the messaging kinds (InMemoryChannel, Channel, Subscription, the
//! `default-ch-webhook` ConfigMap) into the [`ChannelConfig`]s and [`SubscriptionConfig`]s the
//! data plane runs, every error with file:line:field; kinds of other crates that generate
//! channels (Sequence, Parallel) are finished between the channels and the Subscriptions.

use std::collections::HashMap;

use serde_json::Value;

use super::wiring::{self, GeneratedChannel, GeneratedSubscription, Wiring};
use super::{
    ChannelConfig, ChannelDefaults, ChannelKind, ChannelSpec, ChannelTemplate, InMemoryChannelSpec,
    KafkaChannelSpec, MESSAGING_V1, NatsJetStreamChannelSpec, SubscriptionConfig, SubscriptionSpec,
    owner_of,
};
use crate::loader::Document;
use crate::model::{DeliverySpec, Destination, ObjectMeta};
use crate::validate::{
    Ctx, Delivery, Known, MeshConfig, ValidationContext, check_delivery, check_destination,
    check_ref_target, typed,
};

const MESSAGING: &str = "messaging.knative.dev";

/// The messaging documents of one validation pass, typed, waiting for the rest of
/// the documents (brokers, the default-channel ConfigMap) before they are wired.
#[derive(Default)]
pub(crate) struct Pending<'a> {
    pub(crate) channels: Vec<(ObjectMeta, ChannelSpec, &'a Document)>,
    pub(crate) subscriptions: Vec<(ObjectMeta, SubscriptionSpec, &'a Document)>,
    config_map: Option<(Option<ChannelDefaultsText>, &'a Document)>,
}

/// `default-ch-config` as written: the cluster default may be left out.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelDefaultsText {
    #[serde(default)]
    cluster_default: Option<ChannelTemplate>,
    #[serde(default)]
    namespace_defaults: std::collections::BTreeMap<String, ChannelTemplate>,
}

/// The `url` in `config-nats`'s `data.eventing-nats` (YAML); the other settings there
/// (`connOpts`) are accepted and not used.
pub(crate) fn nats_config_url(ctx: &mut Ctx, doc: &Document, obj: &Value) -> Option<String> {
    let field = format!("data.{}", super::NATS_CONFIG_KEY);
    let text = obj.get("data").and_then(|d| d.get(super::NATS_CONFIG_KEY));
    let parsed = match text {
        None => return None,
        Some(Value::String(t)) => match serde_saphyr::from_str::<Value>(t) {
            Ok(v) => v,
            Err(e) => {
                ctx.error(doc, &field, format!("invalid YAML: {e}"));
                return None;
            }
        },
        Some(_) => {
            ctx.error(doc, &field, "must be a string (YAML)");
            return None;
        }
    };
    match parsed.get("url") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if !u.trim().is_empty() => Some(u.trim().to_string()),
        Some(other) => {
            ctx.error(
                doc,
                &format!("{field}.url"),
                format!("{other} is not a NATS URL"),
            );
            None
        }
    }
}

fn template_kind(
    ctx: &mut Ctx,
    doc: &Document,
    field: &str,
    t: &ChannelTemplate,
) -> Option<ChannelKind> {
    match ChannelKind::from_template(&t.api_version, &t.kind) {
        Ok(k) => Some(k),
        Err(e) => {
            ctx.error(doc, field, e);
            None
        }
    }
}

/// A delivery already checked at its own field: parsed again for a generated resource.
fn parsed(spec: &Option<DeliverySpec>, doc: &Document) -> Option<Delivery> {
    let mut scratch = Ctx::default();
    spec.as_ref()
        .and_then(|d| check_delivery(&mut scratch, doc, "", d))
}

impl<'a> Pending<'a> {
    /// Takes Knative's `default-ch-webhook` ConfigMap.
    pub(crate) fn collect_config_map(&mut self, ctx: &mut Ctx, doc: &'a Document, obj: &Value) {
        let field = format!("data.{}", super::DEFAULT_CHANNEL_CONFIG_KEY);
        let text = obj
            .get("data")
            .and_then(|d| d.get(super::DEFAULT_CHANNEL_CONFIG_KEY));
        let parsed = match text {
            None => None,
            Some(Value::String(t)) => match serde_saphyr::from_str::<Value>(t) {
                Ok(v) if v.is_null() => None,
                Ok(v) => typed::<ChannelDefaultsText>(ctx, doc, &field, &v),
                Err(e) => {
                    ctx.error(doc, &field, format!("invalid YAML: {e}"));
                    None
                }
            },
            Some(_) => {
                ctx.error(doc, &field, "must be a string (YAML)");
                None
            }
        };
        if let Some(p) = &parsed {
            let mut check = |name: &str, t: &ChannelTemplate| match ChannelKind::from_template(
                &t.api_version,
                &t.kind,
            ) {
                Err(e) => ctx.error(doc, &field, format!("{name}: {e}")),
                Ok(kind) => {
                    if let Some(spec) = &t.spec {
                        check_channel_spec(ctx, doc, &format!("{field}.{name}.spec"), kind, spec);
                    }
                }
            };
            if let Some(t) = &p.cluster_default {
                check("clusterDefault", t);
            }
            for (ns, t) in &p.namespace_defaults {
                check(&format!("namespaceDefaults.{ns}"), t);
            }
        }
        self.config_map = Some((parsed, doc));
    }

    /// The default channels: the ConfigMap of this pass, else the running mesh's, else the
    /// configured cluster default (`serve --default-channel`), else InMemoryChannel.
    pub(crate) fn defaults(
        &self,
        ctx: &mut Ctx,
        context: &ValidationContext<'_>,
    ) -> ChannelDefaults {
        let base = context
            .default_channel
            .map(ChannelDefaults::with_cluster_default)
            .unwrap_or_default();
        match &self.config_map {
            Some((Some(text), doc)) => {
                if let (Some(flag), Some(cm)) = (context.default_channel, &text.cluster_default)
                    && cm.kind != flag.kind()
                {
                    ctx.warn(
                        doc,
                        &format!("data.{}", super::DEFAULT_CHANNEL_CONFIG_KEY),
                        format!(
                            "clusterDefault {} replaces --default-channel {}",
                            cm.kind,
                            flag.kind()
                        ),
                    );
                }
                ChannelDefaults {
                    cluster_default: text.cluster_default.clone().unwrap_or(base.cluster_default),
                    namespace_defaults: text.namespace_defaults.clone(),
                }
            }
            Some((None, _)) => base,
            None => context
                .running
                .map(|m| m.channel_defaults.clone())
                .unwrap_or(base),
        }
    }

    /// Adds the addressables this pass defines (and generates) to `known`.
    pub(crate) fn known(&self, defaults: &ChannelDefaults, known: &mut Known) {
        let mut add = |group: &str, kind: &str, m: &ObjectMeta, name: &str| {
            known.channels.insert((
                group.to_string(),
                kind.to_string(),
                m.namespace.clone(),
                name.to_string(),
            ));
        };
        let kind_of = |t: &Option<ChannelTemplate>, ns: &str| {
            t.as_ref()
                .map(|t| t.kind.clone())
                .unwrap_or_else(|| defaults.template_for(ns).kind.clone())
        };
        for (m, s, _) in &self.channels {
            add(MESSAGING, "Channel", m, &m.name);
            add(
                MESSAGING,
                &kind_of(&s.channel_template, &m.namespace),
                m,
                &m.name,
            );
        }
    }

    /// Validates and wires everything collected into `mesh.channels` / `mesh.subscriptions`.
    pub(crate) fn finish(
        self,
        ctx: &mut Ctx,
        context: &ValidationContext<'_>,
        defaults: ChannelDefaults,
        known: &Known,
        deferred: Vec<crate::registry::Deferred<'_>>,
        mesh: &mut MeshConfig,
    ) {
        let mut out = Out::new(context.running);
        // Channels written as themselves first, then the generic Channels, then the kinds that
        // generate channels, then the Subscriptions.
        let (first, then): (Vec<_>, Vec<_>) = deferred
            .into_iter()
            .partition(|(k, ..)| k.stage() == crate::registry::Stage::Channels);
        for (kind, meta, spec, doc) in first {
            let mut cx = crate::registry::Finish {
                ctx,
                known,
                defaults: &defaults,
                out: &mut out,
            };
            kind.finish(&mut cx, doc, meta, spec);
        }
        let mut generic: HashMap<(String, String), ChannelKind> = HashMap::new();
        for (meta, spec, doc) in self.channels {
            let before = ctx.errors.len();
            let (template, field) = match &spec.channel_template {
                Some(t) => (t.clone(), "spec.channelTemplate"),
                None => (defaults.template_for(&meta.namespace).clone(), "spec"),
            };
            let kind = template_kind(ctx, doc, field, &template);
            check_template_spec(ctx, doc, &spec.channel_template);
            if let Some(d) = &spec.delivery {
                check_delivery(ctx, doc, "spec.delivery", d);
            }
            check_dls_target(
                ctx,
                doc,
                "spec.delivery",
                &spec.delivery,
                &meta.namespace,
                known,
            );
            let (Some(kind), true) = (kind, ctx.errors.len() == before) else {
                continue;
            };
            generic.insert((meta.namespace.clone(), meta.name.clone()), kind);
            let backing = wiring::wire_channel(&meta, &spec, &template);
            out.generated_channel(ctx, doc, kind, backing);
        }
        let mut cx = crate::registry::Finish {
            ctx,
            known,
            defaults: &defaults,
            out: &mut out,
        };
        for (kind, meta, spec, doc) in then {
            kind.finish(&mut cx, doc, meta, spec);
        }
        for (meta, spec, doc) in self.subscriptions {
            let before = ctx.errors.len();
            let ns = meta.namespace.clone();
            let channel =
                subscription_channel(ctx, doc, &spec, &ns, &generic, &defaults, context, known);
            if spec.subscriber.is_none() && spec.reply.is_none() {
                ctx.error(
                    doc,
                    "spec",
                    "a Subscription needs a subscriber, a reply or both",
                );
            }
            if let Some(s) = &spec.subscriber {
                destination(ctx, doc, "spec.subscriber", s, &ns, known);
            }
            if let Some(r) = &spec.reply {
                destination(ctx, doc, "spec.reply", r, &ns, known);
            }
            let delivery = spec
                .delivery
                .as_ref()
                .and_then(|d| check_delivery(ctx, doc, "spec.delivery", d));
            check_dls_target(ctx, doc, "spec.delivery", &spec.delivery, &ns, known);
            if let Some(v) = meta.annotations.get(crate::REPLAY_FROM_ANNOTATION)
                && let Err(e) = crate::ReplayFrom::parse(v)
            {
                ctx.error(
                    doc,
                    "metadata.annotations",
                    format!("{} {e}", crate::REPLAY_FROM_ANNOTATION),
                );
            }
            if let (Some(channel), true) = (channel, ctx.errors.len() == before) {
                out.subscription(
                    ctx,
                    doc,
                    SubscriptionConfig {
                        location: Some(doc.locate("")),
                        metadata: meta,
                        channel,
                        subscriber: spec.subscriber,
                        reply: spec.reply,
                        delivery,
                    },
                );
            }
        }
        mesh.channels = out.channels;
        mesh.subscriptions = out.subscriptions;
        mesh.channel_defaults = defaults;
    }
}

pub(crate) fn destination(
    ctx: &mut Ctx,
    doc: &Document,
    field: &str,
    d: &Destination,
    ns: &str,
    known: &Known,
) {
    check_destination(ctx, doc, field, d);
    check_ref_target(ctx, doc, &format!("{field}.ref"), d, ns, known);
}

pub(crate) fn check_dls_target(
    ctx: &mut Ctx,
    doc: &Document,
    field: &str,
    delivery: &Option<DeliverySpec>,
    ns: &str,
    known: &Known,
) {
    if let Some(dls) = delivery.as_ref().and_then(|d| d.dead_letter_sink.as_ref()) {
        check_ref_target(
            ctx,
            doc,
            &format!("{field}.deadLetterSink.ref"),
            dls,
            ns,
            known,
        );
    }
}

/// Checks a `channelTemplate.spec` as the spec of the channel kind it names.
fn check_template_spec(ctx: &mut Ctx, doc: &Document, template: &Option<ChannelTemplate>) {
    let Some(t) = template.as_ref() else {
        return;
    };
    let Some(spec) = t.spec.as_ref() else {
        return;
    };
    if let Ok(kind) = ChannelKind::from_template(&t.api_version, &t.kind) {
        check_channel_spec(ctx, doc, "spec.channelTemplate.spec", kind, spec);
    }
}

/// Checks `spec` as the spec of a channel of `kind`.
fn check_channel_spec(ctx: &mut Ctx, doc: &Document, field: &str, kind: ChannelKind, spec: &Value) {
    let delivery = match kind {
        ChannelKind::InMemory => {
            typed::<InMemoryChannelSpec>(ctx, doc, field, spec).and_then(|s| s.delivery)
        }
        ChannelKind::NatsJetStream => {
            typed::<NatsJetStreamChannelSpec>(ctx, doc, field, spec).and_then(|s| s.delivery)
        }
        ChannelKind::Kafka => {
            typed::<KafkaChannelSpec>(ctx, doc, field, spec).and_then(|s| s.delivery)
        }
    };
    if let Some(d) = &delivery {
        check_delivery(ctx, doc, &format!("{field}.delivery"), d);
    }
}

pub(crate) fn flow_template(
    ctx: &mut Ctx,
    doc: &Document,
    template: &Option<ChannelTemplate>,
    defaults: &ChannelDefaults,
    meta: &ObjectMeta,
) -> (ChannelTemplate, Option<ChannelKind>) {
    let (t, field) = match template {
        Some(t) => (t.clone(), "spec.channelTemplate"),
        None => (defaults.template_for(&meta.namespace).clone(), "spec"),
    };
    let kind = template_kind(ctx, doc, field, &t);
    check_template_spec(ctx, doc, template);
    (t, kind)
}

/// The channel a Subscription reads: an InMemoryChannel by name, or a generic Channel's
/// backing channel (same name, the Channel's template kind).
#[allow(clippy::too_many_arguments)]
fn subscription_channel(
    ctx: &mut Ctx,
    doc: &Document,
    spec: &SubscriptionSpec,
    ns: &str,
    generic: &HashMap<(String, String), ChannelKind>,
    defaults: &ChannelDefaults,
    context: &ValidationContext<'_>,
    known: &Known,
) -> Option<(ChannelKind, String)> {
    let r = &spec.channel;
    let field = "spec.channel";
    if r.name.is_empty() || r.kind.is_empty() {
        ctx.error(doc, field, "`kind` and `name` are required");
        return None;
    }
    if r.namespace.as_ref().is_some_and(|n| n != ns) {
        ctx.error(
            doc,
            &format!("{field}.namespace"),
            "a Subscription reads a channel of its own namespace",
        );
        return None;
    }
    let group = r.api_version.split('/').next().unwrap_or("");
    let key = |kind: &str| {
        (
            MESSAGING.to_string(),
            kind.to_string(),
            ns.to_string(),
            r.name.clone(),
        )
    };
    if r.kind == "Channel" {
        if !r.api_version.is_empty() && r.api_version != MESSAGING_V1 {
            ctx.error(
                doc,
                &format!("{field}.apiVersion"),
                format!("Channel is served as {MESSAGING_V1:?}"),
            );
            return None;
        }
        if !known.channels.contains(&key("Channel")) {
            ctx.warn(
                doc,
                field,
                format!(
                    "Channel {:?} does not exist in namespace {ns:?} (yet): the subscription is not ready until it does",
                    r.name
                ),
            );
        }
        let kind = generic
            .get(&(ns.to_string(), r.name.clone()))
            .copied()
            .or_else(|| {
                context.running.and_then(|m| {
                    m.channels
                        .iter()
                        .find(|c| {
                            c.metadata.namespace == ns
                                && c.metadata.name == r.name
                                && owner_of(&c.metadata).is_some_and(|(k, _)| k == "Channel")
                        })
                        .map(|c| c.kind)
                })
            });
        let kind = match kind {
            Some(k) => k,
            None => {
                let t = defaults.template_for(ns);
                match ChannelKind::from_template(&t.api_version, &t.kind) {
                    Ok(k) => k,
                    Err(e) => {
                        ctx.error(doc, field, e);
                        return None;
                    }
                }
            }
        };
        return Some((kind, r.name.clone()));
    }
    if group != MESSAGING && !group.is_empty() {
        ctx.error(
            doc,
            &format!("{field}.kind"),
            format!("{} {:?} is not a channel", r.api_version, r.kind),
        );
        return None;
    }
    match ChannelKind::from_template(&r.api_version, &r.kind) {
        Ok(kind) => {
            if !known.channels.contains(&key(kind.kind())) {
                ctx.warn(
                    doc,
                    field,
                    format!(
                        "{} {:?} does not exist in namespace {ns:?} (yet): the subscription is not ready until it does",
                        kind.kind(),
                        r.name
                    ),
                );
            }
            Some((kind, r.name.clone()))
        }
        Err(e) => {
            ctx.error(doc, field, e);
            None
        }
    }
}

/// Owner of a channel or subscription: `None` for one a user wrote.
type Owner = Option<(String, String)>;

/// What a pass produces, refusing a generated name that another owner already uses.
pub(crate) struct Out {
    channels: Vec<ChannelConfig>,
    subscriptions: Vec<SubscriptionConfig>,
    channel_owners: HashMap<(String, String), Owner>,
    subscription_owners: HashMap<(String, String), Owner>,
}

fn describe(owner: &Owner) -> String {
    match owner {
        None => "written by a user".to_string(),
        Some((k, n)) => format!("generated for {k} {n:?}"),
    }
}

impl Out {
    fn new(running: Option<&MeshConfig>) -> Out {
        let mut out = Out {
            channels: Vec::new(),
            subscriptions: Vec::new(),
            channel_owners: HashMap::new(),
            subscription_owners: HashMap::new(),
        };
        if let Some(m) = running {
            for c in &m.channels {
                let k = (c.metadata.namespace.clone(), c.metadata.name.clone());
                out.channel_owners.insert(k, owner_of(&c.metadata));
            }
            for s in &m.subscriptions {
                let k = (s.metadata.namespace.clone(), s.metadata.name.clone());
                out.subscription_owners.insert(k, owner_of(&s.metadata));
            }
        }
        out
    }

    /// Checks a channel's own `spec.delivery` (and its dead-letter target) and adds the channel
    /// when nothing about it was an error since `before` (the caller's kind-specific checks
    /// included).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn checked_channel(
        &mut self,
        ctx: &mut Ctx,
        doc: &Document,
        known: &Known,
        before: usize,
        kind: ChannelKind,
        metadata: ObjectMeta,
        delivery: &Option<DeliverySpec>,
        spec: Value,
    ) {
        let checked = delivery
            .as_ref()
            .and_then(|d| check_delivery(ctx, doc, "spec.delivery", d));
        check_dls_target(
            ctx,
            doc,
            "spec.delivery",
            delivery,
            &metadata.namespace,
            known,
        );
        if ctx.errors.len() == before {
            self.channel(
                ctx,
                doc,
                ChannelConfig {
                    kind,
                    location: Some(doc.locate("")),
                    metadata,
                    delivery: checked,
                    spec,
                },
            );
        }
    }

    fn channel(&mut self, ctx: &mut Ctx, doc: &Document, c: ChannelConfig) {
        let key = (c.metadata.namespace.clone(), c.metadata.name.clone());
        let owner = owner_of(&c.metadata);
        match self.channel_owners.get(&key) {
            Some(other) if *other != owner => {
                ctx.error(
                    doc,
                    "metadata.name",
                    format!(
                        "channel {}/{} already exists ({}): {} cannot use that name",
                        key.0,
                        key.1,
                        describe(other),
                        describe(&owner).replace("generated for", "the one for"),
                    ),
                );
            }
            _ => {
                self.channel_owners.insert(key, owner);
                self.channels.push(c);
            }
        }
    }

    fn subscription(&mut self, ctx: &mut Ctx, doc: &Document, s: SubscriptionConfig) {
        let key = (s.metadata.namespace.clone(), s.metadata.name.clone());
        let owner = owner_of(&s.metadata);
        match self.subscription_owners.get(&key) {
            Some(other) if *other != owner => {
                ctx.error(
                    doc,
                    "metadata.name",
                    format!(
                        "subscription {}/{} already exists ({}): {} cannot use that name",
                        key.0,
                        key.1,
                        describe(other),
                        describe(&owner).replace("generated for", "the one for"),
                    ),
                );
            }
            _ => {
                self.subscription_owners.insert(key, owner);
                self.subscriptions.push(s);
            }
        }
    }

    fn generated_channel(
        &mut self,
        ctx: &mut Ctx,
        doc: &Document,
        kind: ChannelKind,
        c: GeneratedChannel,
    ) {
        let spec: InMemoryChannelSpec = serde_json::from_value(c.spec.clone()).unwrap_or_default();
        let delivery = parsed(&spec.delivery, doc);
        self.channel(
            ctx,
            doc,
            ChannelConfig {
                kind,
                metadata: c.metadata,
                delivery,
                spec: c.spec,
                location: Some(doc.locate("")),
            },
        );
    }

    fn generated_subscription(
        &mut self,
        ctx: &mut Ctx,
        doc: &Document,
        kind: ChannelKind,
        s: GeneratedSubscription,
    ) {
        let delivery = parsed(&s.spec.delivery, doc);
        self.subscription(
            ctx,
            doc,
            SubscriptionConfig {
                metadata: s.metadata,
                channel: (kind, s.spec.channel.name),
                subscriber: s.spec.subscriber,
                reply: s.spec.reply,
                delivery,
                location: Some(doc.locate("")),
            },
        );
    }

    pub(crate) fn wiring(&mut self, ctx: &mut Ctx, doc: &Document, kind: ChannelKind, w: Wiring) {
        for c in w.channels {
            self.generated_channel(ctx, doc, kind, c);
        }
        for s in w.subscriptions {
            self.generated_subscription(ctx, doc, kind, s);
        }
    }
}
