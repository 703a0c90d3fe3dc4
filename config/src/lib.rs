//! The Knative resource model of evmesh: YAML loading, validation with file:line errors, and
//! destination resolution.
//!
//! ```
//! use evmesh_config::MeshConfig;
//! let yaml = r#"
//! apiVersion: eventing.knative.dev/v1
//! kind: Broker
//! metadata: {name: default}
//! ---
//! apiVersion: eventing.knative.dev/v1
//! kind: Trigger
//! metadata: {name: orders}
//! spec:
//!   broker: default
//!   filter: {attributes: {type: order.created}}
//!   subscriber: {uri: http://127.0.0.1:9000/}
//! "#;
//! let mesh = MeshConfig::from_yaml("demo.yaml", yaml).unwrap();
//! assert_eq!(mesh.triggers.len(), 1);
//! ```

mod annotations;
mod error;
pub mod kafka;
pub mod kinds;
mod loader;
pub mod messaging;
mod model;
pub mod names;
pub mod registry;
mod resolve;
mod schemas;
mod sources;
mod validate;

/// The file name typed resources are validated under (replaced by the resource in messages).
const RESOURCES_FILE: &str = "<resources>";

use std::path::{Path, PathBuf};

pub use annotations::{
    DELIVERY_ORDER_ANNOTATION, DeliveryOrder, REPLAY_FROM_ANNOTATION, ReplayFrom,
};
pub use error::{ConfigError, ConfigErrors, Location, Warning};
pub use loader::{Document, MAX_YAML_BYTES, load_str, read_yaml, read_yaml_file};
pub use messaging::{ChannelConfig, ChannelKind, SubscriptionConfig};
pub use model::*;
pub use resolve::{
    DEFAULT_URL_TEMPLATE, Resolver, SUBSCRIBER_GROUP, SUBSCRIBER_KIND, SUBSCRIBERS_PATH,
    broker_url, channel_url, event_display_url, subscriber_url,
};
pub use schemas::{GITHUB_SOURCE_SPEC, PING_SOURCE_SPEC};
pub use sources::KAFKA_SOURCE_SPEC;
pub use sources::apiserver::APISERVER_SOURCE_SPEC;
pub use sources::apiserver::{
    APISERVER_ADD, APISERVER_DELETE, APISERVER_REF_ADD, APISERVER_REF_DELETE, APISERVER_REF_UPDATE,
    APISERVER_UPDATE, ApiServerResource, ApiServerSourceSpec, ApiVersionKind, LabelSelector,
    LabelSelectorRequirement, REFERENCE_MODE, RESOURCE_MODE,
};
pub use sources::{
    CloudEventOverrides, CronSchedule, FROM_ENV_ANNOTATION, GITHUB_EVENT_TYPE_PREFIX,
    GITHUB_EVENT_TYPES, GitHubSourceSpec, KAFKA_EVENT_TYPE, KAFKA_KEY_TYPE_LABEL, KafkaKeyType,
    KafkaNet, KafkaSasl, KafkaSourceConfig, KafkaSourceSpec, KafkaTls, PING_EVENT_TYPE,
    PUBLIC_URL_ANNOTATION, PingSourceConfig, PingSourceSpec, SOURCES_V1, SOURCES_V1ALPHA1,
    SOURCES_V1BETA1, SOURCES_V1BETA2, ScheduleError, ScheduleZone, SecretBytes, SecretConfig,
    SecretKeySelector, SecretValueFromSource, SourceConfig, SourceSpec, secret_value,
};
pub use validate::{
    BrokerConfig, Delivery, MeshConfig, TriggerConfig, ValidationContext, parse_duration, validate,
    validate_in, validate_with_brokers,
};

impl MeshConfig {
    /// Loads and validates YAML text; `name` is used in error locations.
    pub fn from_yaml(name: &str, text: &str) -> Result<MeshConfig, ConfigErrors> {
        let docs = load_str(name, text).map_err(|e| ConfigErrors {
            errors: vec![e],
            warnings: vec![],
        })?;
        validate(&docs)
    }

    /// Loads and validates files and directories (every `*.yaml` / `*.yml` in a directory,
    /// sorted by name), all together so triggers may reference brokers of other files.
    pub fn from_paths(paths: &[PathBuf]) -> Result<MeshConfig, ConfigErrors> {
        let (docs, mut errors) = load_paths(paths);
        match validate(&docs) {
            Ok(mesh) if errors.is_empty() => Ok(mesh),
            Ok(mesh) => Err(ConfigErrors {
                errors,
                warnings: mesh.warnings,
            }),
            Err(mut e) => {
                errors.append(&mut e.errors);
                Err(ConfigErrors {
                    errors,
                    warnings: e.warnings,
                })
            }
        }
    }

    /// Builds a mesh from typed resources (for embedders), validated like YAML.
    ///
    /// Errors and warnings name the resource and field, e.g.
    /// `resources[1] Trigger default/eu-orders: spec.filters[0].cesql: ...` (the index in
    /// `resources`), not the lines of the YAML the resources are checked as.
    pub fn from_resources(resources: &[Resource]) -> Result<MeshConfig, ConfigErrors> {
        let name = |location: &mut Location| {
            if &*location.file != RESOURCES_FILE {
                return;
            }
            // `resources_yaml` writes resource i as line 2i+1 (`---`) and line 2i+2.
            let i = location.line.saturating_sub(1) / 2;
            if let Some(r) = resources.get(i) {
                let (kind, meta) = match r {
                    Resource::Broker(b) => ("Broker", &b.metadata),
                    Resource::Trigger(t) => ("Trigger", &t.metadata),
                    Resource::External(e) => (e.kind.as_str(), &e.metadata),
                };
                let ns = if meta.namespace.is_empty() {
                    "default"
                } else {
                    meta.namespace.as_str()
                };
                location.file = format!("resources[{i}] {kind} {ns}/{}", meta.name).into();
                location.line = 0;
            }
        };
        let name_error = |e: &mut ConfigError| match e {
            ConfigError::Yaml { location, .. } | ConfigError::Invalid { location, .. } => {
                name(location)
            }
            ConfigError::Io { .. } => {}
        };
        match MeshConfig::from_yaml(RESOURCES_FILE, &Self::resources_yaml(resources)) {
            Ok(mut mesh) => {
                mesh.warnings.iter_mut().for_each(|w| name(&mut w.location));
                Ok(mesh)
            }
            Err(mut errors) => {
                errors.errors.iter_mut().for_each(name_error);
                errors
                    .warnings
                    .iter_mut()
                    .for_each(|w| name(&mut w.location));
                Err(errors)
            }
        }
    }

    /// Typed resources as YAML documents (JSON is YAML), one per resource.
    pub fn resources_yaml(resources: &[Resource]) -> String {
        let mut text = String::new();
        for r in resources {
            let value = match r {
                Resource::Broker(b) => serde_json::json!({
                    "apiVersion": EVENTING_V1, "kind": "Broker",
                    "metadata": b.metadata, "spec": b.spec}),
                Resource::Trigger(t) => serde_json::json!({
                    "apiVersion": EVENTING_V1, "kind": "Trigger",
                    "metadata": t.metadata, "spec": t.spec}),
                Resource::External(e) => serde_json::json!({
                    "apiVersion": e.api_version, "kind": e.kind, "metadata": e.metadata,
                    "status": {"address": {"url": e.address}}}),
            };
            // JSON is YAML: one document per resource.
            text.push_str("---\n");
            text.push_str(&value.to_string());
            text.push('\n');
        }
        text
    }

    /// The broker `namespace/name`, if configured.
    pub fn broker(&self, namespace: &str, name: &str) -> Option<&BrokerConfig> {
        self.brokers.iter().find(|b| {
            b.resource.metadata.namespace == namespace && b.resource.metadata.name == name
        })
    }
}

/// Loads every document of files and directories (every `*.yaml` / `*.yml` in a directory,
/// sorted by name), with the errors of files that could not be read or parsed.
pub fn load_paths(paths: &[PathBuf]) -> (Vec<Document>, Vec<ConfigError>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for file in expand(paths, &mut errors) {
        let name = file.display().to_string();
        match read_yaml_file(&file) {
            Ok(text) => match load_str(&name, &text) {
                Ok(d) => docs.extend(d),
                Err(e) => errors.push(e),
            },
            Err(e) => errors.push(ConfigError::Io {
                path: name,
                message: e.to_string(),
            }),
        }
    }
    (docs, errors)
}

/// The files `paths` name (directories expanded), for watching them for changes.
pub fn expand_paths(paths: &[PathBuf]) -> Vec<PathBuf> {
    expand(paths, &mut Vec::new())
}

fn expand(paths: &[PathBuf], errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut files: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| is_yaml(f))
                        .collect();
                    files.sort();
                    out.extend(files);
                }
                Err(e) => errors.push(ConfigError::Io {
                    path: p.display().to_string(),
                    message: e.to_string(),
                }),
            }
        } else {
            out.push(p.clone());
        }
    }
    out
}

fn is_yaml(p: &Path) -> bool {
    p.is_file()
        && matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        )
}
