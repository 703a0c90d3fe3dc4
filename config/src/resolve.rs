//! Destination resolution through the Addressable duck type: `ref` → `status.address.url`.

use std::collections::HashMap;

use url::Url;

use crate::model::{Destination, KReference};
use crate::registry::{Address, Refs};
use crate::validate::MeshConfig;

/// The default template for refs to kinds evmesh neither serves nor finds an address for.
pub const DEFAULT_URL_TEMPLATE: &str = "http://{name}.{namespace}.svc.cluster.local";

/// Resolves [`Destination`]s to URLs: evmesh's own addressables to their ingress URL (brokers;
/// channels, generic Channels, Sequences and Parallels to the channel they front),
/// other kinds to the `status.address.url` / `status.url` the YAML declares, else to a URL
/// template (`{name}`, `{namespace}`, `{kind}` placeholders).
///
/// ```
/// use evmesh_config::{Destination, MeshConfig, Resolver};
/// let mesh = MeshConfig::from_yaml("demo.yaml", "").unwrap();
/// let r = Resolver::new(&mesh, "http://127.0.0.1:8080".parse().unwrap(), None);
/// let url = r.resolve(&Destination::uri("http://sink.example/x"), "default").unwrap();
/// assert_eq!(url.as_str(), "http://sink.example/x");
/// ```
#[derive(Clone, Debug)]
pub struct Resolver {
    ingress: Url,
    template: String,
    /// (group, kind, namespace, name) → declared address (None: not declared).
    addressables: HashMap<(String, String, String, String), Option<String>>,
}

fn group_of(api_version: &str) -> String {
    match api_version.split_once('/') {
        Some((g, _)) => g.to_string(),
        None => String::new(),
    }
}

impl Resolver {
    /// A resolver for `mesh`, whose brokers are served under `ingress` (`http://host:port`).
    pub fn new(mesh: &MeshConfig, ingress: Url, template: Option<String>) -> Self {
        let mut addressables = HashMap::new();
        // What the kinds evmesh does not serve declare, then what the registered kinds address.
        for e in &mesh.externals {
            let m = &e.metadata;
            addressables.insert(
                (
                    group_of(&e.api_version),
                    e.kind.clone(),
                    m.namespace.clone(),
                    m.name.clone(),
                ),
                e.address.clone(),
            );
        }
        for ((group, kind, ns, name), address) in crate::registry::addresses(mesh) {
            let url = match address {
                Address::Broker => Some(broker_url(&ingress, &ns, &name).to_string()),
                Address::Channel(channel) => Some(channel_url(&ingress, &ns, &channel).to_string()),
                Address::EventDisplay => Some(event_display_url(&ingress, &ns, &name).to_string()),
                Address::Declared(url) => url,
            };
            addressables.insert((group, kind, ns, name), url);
        }
        Resolver {
            ingress,
            template: template.unwrap_or_else(|| DEFAULT_URL_TEMPLATE.to_string()),
            addressables,
        }
    }

    /// The base URL brokers are served under.
    pub fn ingress(&self) -> &Url {
        &self.ingress
    }

    /// Resolves `dest` for a resource in namespace `ns`.
    pub fn resolve(&self, dest: &Destination, ns: &str) -> Result<Url, String> {
        match (&dest.reference, &dest.uri) {
            (None, Some(uri)) => Url::parse(uri).map_err(|e| format!("invalid uri {uri:?}: {e}")),
            (None, None) => Err("destination has neither ref nor uri".into()),
            (Some(r), uri) => {
                let base = self.resolve_ref(r, ns)?;
                match uri {
                    None => Ok(base),
                    Some(rel) => base
                        .join(rel)
                        .map_err(|e| format!("cannot resolve {rel:?} against {base}: {e}")),
                }
            }
        }
    }

    fn resolve_ref(&self, r: &KReference, ns: &str) -> Result<Url, String> {
        let rns = r.namespace.as_deref().unwrap_or(ns);
        let group = group_of(&r.api_version);
        let key = (
            group.clone(),
            r.kind.clone(),
            rns.to_string(),
            r.name.clone(),
        );
        if group == SUBSCRIBER_GROUP && r.kind == SUBSCRIBER_KIND {
            // An embedder's in-process subscriber: registered in code, never declared in YAML.
            return Ok(subscriber_url(&self.ingress, rns, &r.name));
        }
        match self.addressables.get(&key) {
            Some(Some(url)) => return Url::parse(url).map_err(|e| format!("{url:?}: {e}")),
            Some(None) => {}
            None => match crate::registry::refs_of(&group, &r.kind) {
                Refs::Broker if !group.is_empty() => {
                    return Err(format!("broker {rns}/{} not found", r.name));
                }
                Refs::Channel | Refs::Strict => {
                    return Err(format!("{} {rns}/{} not found", r.kind, r.name));
                }
                Refs::Broker | Refs::Loose => {}
            },
        }
        let url = self
            .template
            .replace("{name}", &r.name)
            .replace("{namespace}", rns)
            .replace("{kind}", &r.kind.to_lowercase());
        Url::parse(&url).map_err(|e| format!("URL template gave {url:?}: {e}"))
    }
}

/// The ingress URL of a broker: `{ingress}/{namespace}/{name}`.
pub fn broker_url(ingress: &Url, namespace: &str, name: &str) -> Url {
    let mut url = ingress.clone();
    url.set_path(&format!("/{namespace}/{name}"));
    url
}

/// The URL of a built-in `evmesh.dev/v1alpha1` `EventDisplay`: `{ingress}/_evmesh/event-display/{namespace}/{name}`.
pub fn event_display_url(ingress: &Url, namespace: &str, name: &str) -> Url {
    let mut url = ingress.clone();
    url.set_path(&format!("/_evmesh/event-display/{namespace}/{name}"));
    url
}

/// The API group of evmesh's in-process subscribers (`apiVersion: evmesh.dev/v1alpha1`).
pub const SUBSCRIBER_GROUP: &str = "evmesh.dev";
/// The kind a Destination's `ref` names to address an in-process subscriber.
pub const SUBSCRIBER_KIND: &str = "Subscriber";
/// The path under which in-process subscribers have their addresses.
pub const SUBSCRIBERS_PATH: &str = "/_evmesh/subscribers";

/// The address of an embedder's in-process subscriber `namespace/name`, what a Destination
/// `ref: {apiVersion: evmesh.dev/v1alpha1, kind: Subscriber, name}` resolves to:
/// `{ingress}/_evmesh/subscribers/{namespace}/{name}`. Only the delivery engine of the process
/// that registered the subscriber serves it (in memory); it is not an HTTP route.
///
/// ```
/// let u = evmesh_config::subscriber_url(&"http://127.0.0.1:8080".parse().unwrap(), "default", "orders");
/// assert_eq!(u.as_str(), "http://127.0.0.1:8080/_evmesh/subscribers/default/orders");
/// ```
pub fn subscriber_url(ingress: &Url, namespace: &str, name: &str) -> Url {
    let mut url = ingress.clone();
    url.set_path(&format!("{SUBSCRIBERS_PATH}/{namespace}/{name}"));
    url
}

/// The address of a channel evmesh runs (an InMemoryChannel, or the backing channel of a Channel,
/// Sequence or Parallel): `{ingress}/channels/{namespace}/{name}`.
///
/// ```
/// let u = evmesh_config::channel_url(&"http://127.0.0.1:8080".parse().unwrap(), "default", "c");
/// assert_eq!(u.as_str(), "http://127.0.0.1:8080/channels/default/c");
/// ```
pub fn channel_url(ingress: &Url, namespace: &str, name: &str) -> Url {
    let mut url = ingress.clone();
    url.set_path(&format!("/channels/{namespace}/{name}"));
    url
}
