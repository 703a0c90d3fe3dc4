//! The checks the messaging and flows kinds share (through [`crate::registry::Finish`]) and the
//! `default-ch-webhook` ConfigMap, into the [`ChannelConfig`]s and [`SubscriptionConfig`]s the
//! data plane runs, every error with file:line:field; the kinds themselves (channels, Channel,
//! Subscription, Sequence, Parallel) live in their crates and finish stage by stage.

use std::collections::HashMap;

use serde_json::Value;

use super::wiring::{GeneratedChannel, GeneratedSubscription, Wiring};
use super::{
    ChannelConfig, ChannelDefaults, ChannelKind, ChannelTemplate, InMemoryChannelSpec,
    KafkaChannelSpec, NatsJetStreamChannelSpec, SubscriptionConfig, owner_of,
};
use crate::loader::Document;
use crate::model::{DeliverySpec, Destination, ObjectMeta};
use crate::validate::{
    Ctx, Delivery, Known, MeshConfig, ValidationContext, check_delivery, check_destination,
    check_ref_target, typed,
};

/// The `default-ch-webhook` ConfigMap of one validation pass, waiting for the rest of the
/// documents before the default channels are known.
#[derive(Default)]
pub(crate) struct Pending<'a> {
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

    /// Finishes every deferred resource, stage by stage (the caller sorted them), into
    /// `mesh.channels` / `mesh.subscriptions`.
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
        let mut cx = crate::registry::Finish {
            ctx,
            known,
            defaults: &defaults,
            out: &mut out,
            running: context.running,
        };
        for (kind, meta, spec, doc) in deferred {
            kind.finish(&mut cx, doc, meta, spec);
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

/// A resource's `channelTemplate` (else its namespace's default) and the channel kind it names.
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

/// Owner of a channel or subscription: `None` for one a user wrote.
type Owner = Option<(String, String)>;

/// What a pass produces, refusing a generated name that another owner already uses.
pub(crate) struct Out {
    /// The channel kind backing each generic Channel of the pass, by `(namespace, name)`.
    pub(crate) generic: HashMap<(String, String), ChannelKind>,
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
            generic: HashMap::new(),
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

    pub(crate) fn subscription(&mut self, ctx: &mut Ctx, doc: &Document, s: SubscriptionConfig) {
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

    pub(crate) fn generated_channel(
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
