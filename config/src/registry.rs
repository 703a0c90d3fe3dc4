//! The kind registry: every kind evmesh serves, registered once with its API coordinates (group,
//! version, plural, short names). The admin API, the CLI and validation look kinds up here.

/// One kind evmesh serves through its API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindInfo {
    /// API group, e.g. `eventing.knative.dev`.
    pub group: &'static str,
    /// Version, e.g. `v1`.
    pub version: &'static str,
    /// Kind, e.g. `Trigger`.
    pub kind: &'static str,
    /// Plural resource name, e.g. `triggers`.
    pub plural: &'static str,
    /// Singular resource name, e.g. `trigger`.
    pub singular: &'static str,
    /// Short names as Knative's CRDs declare them.
    pub short_names: &'static [&'static str],
    /// Categories (`kubectl get all`, `kubectl get knative`...) as Knative's CRDs declare them.
    pub categories: &'static [&'static str],
    /// The columns `kubectl get` prints after NAME: the CRD's `additionalPrinterColumns`.
    pub printer_columns: &'static [PrinterColumn],
    /// The OpenAPI v3 schema of `spec` (JSON text), as the CRD's `openAPIV3Schema` declares it.
    pub spec_schema: &'static str,
    /// One line describing the kind (`kubectl explain`).
    pub description: &'static str,
}

/// One column of `kubectl get` output, as a CRD's `additionalPrinterColumns` entry declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column name, e.g. `Ready`.
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: &'static str,
    /// JSONPath into the object, in the CRD's syntax, e.g. `.status.address.url`.
    pub json_path: &'static str,
    /// What the column shows.
    pub description: &'static str,
    /// 0: always shown; 1 and above: shown with `-o wide`.
    pub priority: u32,
}

const READY: &str = ".status.conditions[?(@.type==\"Ready\")].status";
const REASON: &str = ".status.conditions[?(@.type==\"Ready\")].reason";

const AGE: PrinterColumn = PrinterColumn {
    name: "Age",
    type_: "date",
    json_path: ".metadata.creationTimestamp",
    description: "",
    priority: 0,
};
const READY_COL: PrinterColumn = PrinterColumn {
    name: "Ready",
    type_: "string",
    json_path: READY,
    description: "",
    priority: 0,
};
const URL_COL: PrinterColumn = PrinterColumn {
    name: "URL",
    type_: "string",
    json_path: ".status.address.url",
    description: "",
    priority: 0,
};
const REASON_COL: PrinterColumn = PrinterColumn {
    name: "Reason",
    type_: "string",
    json_path: REASON,
    description: "",
    priority: 0,
};

const SINK_COL: PrinterColumn = PrinterColumn {
    name: "Sink",
    type_: "string",
    json_path: ".status.sinkUri",
    description: "",
    priority: 0,
};
const PING_COLUMNS: &[PrinterColumn] = &[
    SINK_COL,
    PrinterColumn {
        name: "Schedule",
        type_: "string",
        json_path: ".spec.schedule",
        description: "",
        priority: 0,
    },
    AGE,
    READY_COL,
    REASON_COL,
];
const PING_DESCRIPTION: &str = "PingSource describes an event source with a fixed payload produced on a specified cron schedule.";

impl KindInfo {
    /// `group/version`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }
}

/// Every kind evmesh serves, in the order the CLI lists them.
pub const KINDS: &[KindInfo] = &[
    KindInfo {
        group: "eventing.knative.dev",
        version: "v1",
        kind: "Broker",
        plural: "brokers",
        singular: "broker",
        short_names: &[],
        categories: &["all", "knative", "eventing"],
        printer_columns: &[
            PrinterColumn {
                name: "URL",
                type_: "string",
                json_path: ".status.address.url",
                description: "",
                priority: 0,
            },
            AGE,
            READY_COL,
            REASON_COL,
        ],
        spec_schema: crate::schemas::BROKER_SPEC,
        description: "Broker collects a pool of events that are consumable using Triggers. Brokers provide a well-known endpoint for event delivery that senders can use with minimal knowledge of the event routing strategy. Subscribers use Triggers to request delivery of events from a Broker's pool to a specific URL or Addressable endpoint.",
    },
    KindInfo {
        group: "eventing.knative.dev",
        version: "v1",
        kind: "Trigger",
        plural: "triggers",
        singular: "trigger",
        short_names: &[],
        categories: &["all", "knative", "eventing"],
        printer_columns: &[
            PrinterColumn {
                name: "Broker",
                type_: "string",
                json_path: ".spec.broker",
                description: "",
                priority: 0,
            },
            PrinterColumn {
                name: "Subscriber_URI",
                type_: "string",
                json_path: ".status.subscriberUri",
                description: "",
                priority: 0,
            },
            AGE,
            READY_COL,
            REASON_COL,
        ],
        spec_schema: crate::schemas::TRIGGER_SPEC,
        description: "Trigger represents a request to have events delivered to a subscriber from a Broker's event pool.",
    },
    KindInfo {
        group: "evmesh.dev",
        version: "v1alpha1",
        kind: "EventDisplay",
        plural: "eventdisplays",
        singular: "eventdisplay",
        short_names: &[],
        categories: &["all", "evmesh"],
        printer_columns: &[
            PrinterColumn {
                name: "URL",
                type_: "string",
                json_path: ".status.address.url",
                description: "",
                priority: 0,
            },
            AGE,
            READY_COL,
        ],
        spec_schema: crate::schemas::EVENT_DISPLAY_SPEC,
        description: "EventDisplay is evmesh's built-in sink that prints the events it receives (like Knative's event_display).",
    },
    KindInfo {
        group: "messaging.knative.dev",
        version: "v1",
        kind: "InMemoryChannel",
        plural: "inmemorychannels",
        singular: "inmemorychannel",
        short_names: &["imc"],
        categories: &["all", "knative", "messaging", "channel"],
        printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
        spec_schema: crate::schemas::IN_MEMORY_CHANNEL_SPEC,
        description: "InMemoryChannel is a resource representing a channel; in evmesh it keeps its events durably (Knative's is best-effort, in memory).",
    },
    KindInfo {
        group: "messaging.knative.dev",
        version: "v1alpha1",
        kind: "NatsJetStreamChannel",
        plural: "natsjetstreamchannels",
        singular: "natsjetstreamchannel",
        short_names: &[],
        categories: &["all", "knative", "messaging", "channel"],
        printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
        spec_schema: crate::schemas::NATS_JETSTREAM_CHANNEL_SPEC,
        description: "NatsJetStreamChannel is a channel backed by a NATS JetStream stream (Knative's eventing-natss); in evmesh the dispatcher runs in-process.",
    },
    KindInfo {
        group: "messaging.knative.dev",
        version: "v1beta1",
        kind: "KafkaChannel",
        plural: "kafkachannels",
        singular: "kafkachannel",
        short_names: &["kc"],
        categories: &["all", "knative", "messaging", "channel"],
        printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
        spec_schema: crate::messaging::KAFKA_CHANNEL_SPEC,
        description: "KafkaChannel is a channel backed by a Kafka topic (Knative's eventing-kafka-broker); in evmesh the dispatcher runs in-process.",
    },
    KindInfo {
        group: "messaging.knative.dev",
        version: "v1",
        kind: "Channel",
        plural: "channels",
        singular: "channel",
        short_names: &["ch"],
        categories: &["all", "knative", "messaging", "channel"],
        printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
        spec_schema: crate::schemas::CHANNEL_SPEC,
        description: "Channel represents a generic Channel. It is normally used when we want a Channel, but do not care much about what the underlying implementation is.",
    },
    KindInfo {
        group: "messaging.knative.dev",
        version: "v1",
        kind: "Subscription",
        plural: "subscriptions",
        singular: "subscription",
        short_names: &["sub"],
        categories: &["all", "knative", "messaging"],
        printer_columns: &[AGE, READY_COL, REASON_COL],
        spec_schema: crate::schemas::SUBSCRIPTION_SPEC,
        description: "Subscription routes events received on a Channel to a DNS name and corresponds to the subscriptions.channels.knative.dev CRD.",
    },
    KindInfo {
        group: "flows.knative.dev",
        version: "v1",
        kind: "Sequence",
        plural: "sequences",
        singular: "sequence",
        short_names: &[],
        categories: &["all", "knative", "flows"],
        printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
        spec_schema: crate::schemas::SEQUENCE_SPEC,
        description: "Sequence defines a sequence of Subscribers that will be wired in series through Channels and Subscriptions.",
    },
    KindInfo {
        group: "flows.knative.dev",
        version: "v1",
        kind: "Parallel",
        plural: "parallels",
        singular: "parallel",
        short_names: &[],
        categories: &["all", "knative", "flows"],
        printer_columns: &[URL_COL, AGE, READY_COL, REASON_COL],
        spec_schema: crate::schemas::PARALLEL_SPEC,
        description: "Parallel defines conditional branches that will be wired in series through Channels and Subscriptions.",
    },
    KindInfo {
        group: "sources.knative.dev",
        version: "v1",
        kind: "PingSource",
        plural: "pingsources",
        singular: "pingsource",
        short_names: &[],
        categories: &["all", "knative", "sources"],
        printer_columns: PING_COLUMNS,
        spec_schema: crate::schemas::PING_SOURCE_SPEC,
        description: PING_DESCRIPTION,
    },
    KindInfo {
        group: "sources.knative.dev",
        version: "v1beta2",
        kind: "PingSource",
        plural: "pingsources",
        singular: "pingsource",
        short_names: &[],
        categories: &["all", "knative", "sources"],
        printer_columns: PING_COLUMNS,
        spec_schema: crate::schemas::PING_SOURCE_SPEC,
        description: PING_DESCRIPTION,
    },
    KindInfo {
        group: "sources.knative.dev",
        version: "v1alpha1",
        kind: "GitHubSource",
        plural: "githubsources",
        singular: "githubsource",
        short_names: &[],
        categories: &["all", "knative", "eventing", "sources"],
        printer_columns: &[READY_COL, REASON_COL, SINK_COL, AGE],
        spec_schema: crate::schemas::GITHUB_SOURCE_SPEC,
        description: "GitHubSource is the Schema for the githubsources API: it turns GitHub webhook deliveries into CloudEvents sent to its sink.",
    },
    KindInfo {
        group: "sources.knative.dev",
        version: "v1",
        kind: "ApiServerSource",
        plural: "apiserversources",
        singular: "apiserversource",
        short_names: &[],
        categories: &["all", "knative", "sources"],
        printer_columns: &[SINK_COL, AGE, READY_COL, REASON_COL],
        spec_schema: crate::sources::apiserver::APISERVER_SOURCE_SPEC,
        description: "ApiServerSource is an event source that brings Kubernetes API server events into Knative.",
    },
    KindInfo {
        group: "sources.knative.dev",
        version: "v1beta1",
        kind: "KafkaSource",
        plural: "kafkasources",
        singular: "kafkasource",
        short_names: &[],
        categories: &["all", "knative", "eventing", "sources"],
        printer_columns: &[READY_COL, REASON_COL, SINK_COL, AGE],
        spec_schema: crate::sources::KAFKA_SOURCE_SPEC,
        description: "KafkaSource reads Kafka topics as a consumer group and sends each record to its sink as a CloudEvent.",
    },
    KindInfo {
        group: "sources.knative.dev",
        version: "v1",
        kind: "KafkaSource",
        plural: "kafkasources",
        singular: "kafkasource",
        short_names: &[],
        categories: &["all", "knative", "eventing", "sources"],
        printer_columns: &[READY_COL, REASON_COL, SINK_COL, AGE],
        spec_schema: crate::sources::KAFKA_SOURCE_SPEC,
        description: "KafkaSource reads Kafka topics as a consumer group and sends each record to its sink as a CloudEvent.",
    },
];

/// The kind served at `group/version` `plural`.
///
/// ```
/// let k = evmesh_config::registry::by_plural("eventing.knative.dev", "v1", "triggers").unwrap();
/// assert_eq!(k.kind, "Trigger");
/// ```
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The kind of a manifest's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.kind == kind && k.api_version() == api_version)
}

/// The kind a CLI user means by `name`: plural, singular, kind (any case) or short name,
/// optionally qualified with `.group`.
///
/// ```
/// let k = evmesh_config::registry::by_cli_name("triggers.eventing.knative.dev").unwrap();
/// assert_eq!(k.kind, "Trigger");
/// ```
pub fn by_cli_name(name: &str) -> Option<&'static KindInfo> {
    let lower = name.to_ascii_lowercase();
    let (res, group) = match lower.split_once('.') {
        Some((r, g)) => (r.to_string(), Some(g.to_string())),
        None => (lower, None),
    };
    KINDS.iter().find(|k| {
        (k.plural == res
            || k.singular == res
            || k.kind.to_ascii_lowercase() == res
            || k.short_names.contains(&res.as_str()))
            && group.as_deref().is_none_or(|g| g == k.group)
    })
}
