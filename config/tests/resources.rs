//! Building a mesh from typed resources (the embedding path without YAML) validates like YAML.

use evmesh_config::{
    Broker, BrokerSpec, DeliverySpec, Destination, MeshConfig, ObjectMeta, Resource, Trigger,
    TriggerFilter, TriggerSpec,
};

fn trigger(broker: &str, backoff_delay: &str) -> Resource {
    Resource::Trigger(Trigger {
        metadata: ObjectMeta::namespaced("shop", "orders"),
        spec: TriggerSpec {
            broker: broker.into(),
            filter: Some(TriggerFilter {
                attributes: [("type".to_string(), "order.created".to_string())].into(),
            }),
            subscriber: Destination::uri("http://127.0.0.1:9000/"),
            delivery: Some(DeliverySpec {
                retry: Some(2),
                backoff_delay: Some(backoff_delay.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    })
}

fn broker() -> Resource {
    Resource::Broker(Broker {
        metadata: ObjectMeta::namespaced("shop", "default"),
        spec: BrokerSpec::default(),
    })
}

#[test]
fn typed_resources_build_the_same_mesh_as_yaml() {
    let mesh = MeshConfig::from_resources(&[broker(), trigger("default", "PT0.5S")])
        .expect("valid resources");
    assert_eq!(mesh.brokers.len(), 1);
    let t = &mesh.triggers[0];
    assert_eq!(t.resource.metadata.namespace, "shop");
    let delivery = t.delivery.as_ref().expect("trigger delivery");
    assert_eq!(delivery.retry, 2);
    assert_eq!(
        delivery.backoff_delay,
        Some(std::time::Duration::from_millis(500))
    );
}

#[test]
fn typed_resources_are_validated() {
    let err = MeshConfig::from_resources(&[broker(), trigger("missing", "soon")])
        .expect_err("invalid resources");
    let text = err.render();
    assert!(text.contains("spec.delivery.backoffDelay"), "{text}");
    assert_eq!(err.errors.len(), 1, "{text}");
    // A trigger whose broker does not exist (yet) is a warning, as Knative accepts it.
    assert!(
        err.warnings
            .iter()
            .any(|w| w.location.field == "spec.broker" && w.message.contains("missing")),
        "{:?}",
        err.warnings
    );
}
