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

#[test]
fn a_knative_annotation_evmesh_does_not_act_on_is_warned_about() {
    let yaml = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: t
  annotations:
    kafka.eventing.knative.dev/delivery.order: ordered
    knative.dev/dependency: '{"kind":"Service","name":"x","apiVersion":"serving.knative.dev/v1"}'
    example.com/owner: team-a
spec:
  broker: default
  subscriber: {uri: http://127.0.0.1:9/}
"#;
    let mesh = evmesh_config::MeshConfig::from_yaml("t.yaml", yaml).expect("valid");
    let about: Vec<&str> = mesh
        .warnings
        .iter()
        .filter(|w| w.message.contains("is not acted on"))
        .map(|w| w.message.as_str())
        .collect();
    assert_eq!(about.len(), 1, "{about:?}");
    assert!(about[0].contains("knative.dev/dependency"), "{about:?}");
}
