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
}

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
    },
    KindInfo {
        group: "eventing.knative.dev",
        version: "v1",
        kind: "Trigger",
        plural: "triggers",
        singular: "trigger",
        short_names: &[],
    },
    KindInfo {
        group: "evmesh.dev",
        version: "v1alpha1",
        kind: "EventDisplay",
        plural: "eventdisplays",
        singular: "eventdisplay",
        short_names: &[],
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
