//! A Kafka-class Broker's `spec.config` (Knative's `kafka-broker-config` ConfigMap) and the
//! KafkaChannels' `kafka-channel-config`, as validation reads them.

use evmesh_config::MeshConfig;

fn broker(config_ref: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: orders
  namespace: shop
  annotations: {{eventing.knative.dev/broker.class: Kafka}}
spec:
  config: {config_ref}
"#
    )
}

const CONFIG_MAP: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: kafka-broker-config, namespace: knative-eventing}
data:
  bootstrap.servers: "k1:9092,k2:9092"
  default.topic.partitions: "10"
  default.topic.replication.factor: "3"
  default.topic.config.retention.ms: "3600000"
"#;

#[test]
fn a_kafka_broker_reads_the_configmap_its_spec_config_names() {
    let yaml = format!(
        "{CONFIG_MAP}---{}",
        broker(
            "{apiVersion: v1, kind: ConfigMap, name: kafka-broker-config, namespace: knative-eventing}"
        )
    );
    let mesh = MeshConfig::from_yaml("k.yaml", &yaml).expect("valid");
    let k = mesh.brokers[0]
        .kafka
        .as_ref()
        .expect("the Kafka configuration");
    assert_eq!(k.bootstrap_servers, ["k1:9092", "k2:9092"]);
    assert_eq!((k.partitions, k.replication_factor), (10, 3));
    assert_eq!(k.topic_config["retention.ms"], "3600000");
    assert!(
        mesh.warnings
            .iter()
            .all(|w| !w.message.contains("spec.config") && !w.message.contains("not read")),
        "{:?}",
        mesh.warnings
    );
}

#[test]
fn a_kafka_broker_configmap_naming_an_auth_secret_warns_that_it_is_not_supported() {
    let yaml = format!(
        "{CONFIG_MAP}  auth.secret.ref.name: kafka-sasl\n---{}",
        broker(
            "{apiVersion: v1, kind: ConfigMap, name: kafka-broker-config, namespace: knative-eventing}"
        )
    );
    let mesh = MeshConfig::from_yaml("k.yaml", &yaml).expect("valid");
    assert!(mesh.brokers[0].kafka.is_some());
    assert!(
        mesh.warnings
            .iter()
            .any(|w| w.message.contains("auth.secret.ref.name is not supported")),
        "{:?}",
        mesh.warnings
    );
}

#[test]
fn a_kafka_broker_whose_configmap_is_not_in_the_yaml_is_a_config_error() {
    let e = MeshConfig::from_yaml(
        "k.yaml",
        &broker("{apiVersion: v1, kind: ConfigMap, name: missing}"),
    )
    .expect_err("the ConfigMap is missing")
    .to_string();
    assert!(
        e.contains("spec.config") && e.contains("shop/missing"),
        "{e}"
    );
}

#[test]
fn a_kafka_broker_configmap_without_partitions_is_a_config_error() {
    let yaml = format!(
        "{}---{}",
        CONFIG_MAP.replace("  default.topic.partitions: \"10\"\n", ""),
        broker(
            "{apiVersion: v1, kind: ConfigMap, name: kafka-broker-config, namespace: knative-eventing}"
        )
    );
    let e = MeshConfig::from_yaml("k.yaml", &yaml)
        .expect_err("partitions are required")
        .to_string();
    assert!(e.contains("default.topic.partitions"), "{e}");
}

#[test]
fn the_kafka_channel_config_configmap_gives_the_channels_bootstrap_servers() {
    let yaml = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: kafka-channel-config, namespace: knative-eventing}
data: {bootstrap.servers: "k:9092"}
"#;
    let mesh = MeshConfig::from_yaml("k.yaml", yaml).expect("valid");
    assert_eq!(
        mesh.kafka_channel_bootstrap,
        Some(vec!["k:9092".to_string()])
    );
}
