//! Validation of PingSource, GitHubSource and `v1` Secret documents, as Knative validates them
//! (the source kinds of this crate installed beside `evmesh_config`'s own, as the facade does).

mod common;

use evmesh_config::{ConfigErrors, MeshConfig, SourceSpec, secret_value};

fn load(yaml: &str) -> Result<MeshConfig, ConfigErrors> {
    common::install_kinds();
    MeshConfig::from_yaml("sources.yaml", yaml)
}

fn errors(yaml: &str) -> String {
    load(yaml).expect_err("invalid").render()
}

const PING: &str = r#"
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: ping, namespace: demo}
spec:
  schedule: "*/1 * * * *"
  timezone: Europe/Madrid
  contentType: application/json
  data: '{"message": "Hello world!"}'
  ceOverrides: {extensions: {myext: value}}
  sink: {uri: http://127.0.0.1:9/}
"#;

#[test]
fn ping_source_v1_is_served() {
    let mesh = load(PING).expect("valid");
    assert_eq!(mesh.sources.len(), 1);
    let s = &mesh.sources[0];
    assert_eq!(s.kind(), "PingSource");
    let SourceSpec::Ping(p) = &s.spec else {
        panic!("not a ping source")
    };
    assert_eq!(
        p.data.as_deref(),
        Some(&br#"{"message": "Hello world!"}"#[..])
    );
    assert_eq!(s.extensions()["myext"], "value");
    assert!(mesh.warnings.is_empty(), "{:?}", mesh.warnings);
}

#[test]
fn ping_source_v1beta2_is_accepted() {
    let mesh = load(&PING.replace("sources.knative.dev/v1", "sources.knative.dev/v1beta2"))
        .expect("valid");
    assert_eq!(mesh.sources[0].api_version, "sources.knative.dev/v1beta2");
}

#[test]
fn ping_source_schedule_defaults_to_every_minute() {
    let mesh = load(
        "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: p}\nspec: {sink: {uri: http://127.0.0.1:9/}}\n",
    )
    .expect("valid");
    let SourceSpec::Ping(p) = &mesh.sources[0].spec else {
        panic!("not a ping source")
    };
    assert_eq!(p.spec.schedule.as_deref(), Some("* * * * *"));
    assert!(p.data.is_none());
}

#[test]
fn ping_source_bad_schedule_names_file_line_and_field() {
    let text = errors(&PING.replace("*/1 * * * *", "61 * * * *"));
    assert!(text.starts_with("sources.yaml:6: spec.schedule"), "{text}");
}

#[test]
fn ping_source_every_descriptor_is_rejected() {
    let text = errors(&PING.replace("*/1 * * * *", "@every 1m"));
    assert!(
        text.contains("spec.schedule") && text.contains("@every"),
        "{text}"
    );
}

#[test]
fn ping_source_unknown_timezone_is_an_error_on_timezone() {
    let text = errors(&PING.replace("Europe/Madrid", "Europe/Atlantis"));
    assert!(text.starts_with("sources.yaml:7: spec.timezone"), "{text}");
}

#[test]
fn ping_source_json_data_must_be_an_object() {
    let text = errors(&PING.replace(r#"'{"message": "Hello world!"}'"#, "'[1, 2]'"));
    assert!(
        text.contains("spec.data") && text.contains("JSON object"),
        "{text}"
    );
    let text = errors(&PING.replace(r#"'{"message": "Hello world!"}'"#, "'not json'"));
    assert!(
        text.contains("spec.data") && text.contains("invalid JSON"),
        "{text}"
    );
}

#[test]
fn ping_source_text_data_need_not_be_json() {
    load(
        &PING
            .replace("application/json", "text/plain")
            .replace(r#"'{"message": "Hello world!"}'"#, "'hello'"),
    )
    .expect("valid");
}

#[test]
fn ping_source_data_base64_is_decoded_and_checked() {
    let yaml = PING.replace("application/json", "text/plain").replace(
        r#"data: '{"message": "Hello world!"}'"#,
        "dataBase64: aGVsbG8sIHdvcmxkIQ==",
    );
    let mesh = load(&yaml).expect("valid");
    let SourceSpec::Ping(p) = &mesh.sources[0].spec else {
        panic!("not a ping source")
    };
    assert_eq!(p.data.as_deref(), Some(&b"hello, world!"[..]));
    let text = errors(&yaml.replace("aGVsbG8sIHdvcmxkIQ==", "not*base64"));
    assert!(text.contains("spec.dataBase64"), "{text}");
    // With application/json the decoded bytes must be a JSON object.
    let text = errors(&yaml.replace("text/plain", "application/json"));
    assert!(
        text.contains("spec.dataBase64") && text.contains("JSON"),
        "{text}"
    );
}

#[test]
fn ping_source_data_and_data_base64_are_exclusive() {
    let yaml = PING.replace("  ceOverrides", "  dataBase64: e30=\n  ceOverrides");
    let text = errors(&yaml);
    assert!(
        text.contains("spec.dataBase64") && text.contains("both"),
        "{text}"
    );
}

#[test]
fn ping_source_needs_a_sink() {
    let text = errors(&PING.replace("  sink: {uri: http://127.0.0.1:9/}\n", ""));
    assert!(text.contains("spec.sink"), "{text}");
}

#[test]
fn ce_overrides_may_not_replace_required_attributes() {
    let text = errors(&PING.replace("myext: value", "type: other"));
    assert!(text.contains("spec.ceOverrides.extensions.type"), "{text}");
    let text = errors(&PING.replace("myext: value", "my-ext: value"));
    assert!(
        text.contains("spec.ceOverrides.extensions.my-ext"),
        "{text}"
    );
}

#[test]
fn a_misspelt_ping_field_is_an_error() {
    let text = errors(&PING.replace("  schedule:", "  schedul:"));
    assert!(text.contains("did you mean \"schedule\""), "{text}");
}

#[test]
fn ping_source_sink_broker_that_does_not_exist_is_a_warning() {
    let mesh = load(&PING.replace(
        "sink: {uri: http://127.0.0.1:9/}",
        "sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}",
    ))
    .expect("valid");
    assert!(
        mesh.warnings
            .iter()
            .any(|w| w.location.field == "spec.sink.ref"),
        "{:?}",
        mesh.warnings
    );
}

const GITHUB: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: githubsecret, namespace: demo}
type: Opaque
stringData:
  secretToken: s3cr3t
data:
  accessToken: Z2hwX3Rva2Vu
---
apiVersion: sources.knative.dev/v1alpha1
kind: GitHubSource
metadata: {name: gh, namespace: demo}
spec:
  eventTypes: [push, pull_request]
  ownerAndRepository: octo-org/octo-repo
  accessToken: {secretKeyRef: {name: githubsecret, key: accessToken}}
  secretToken: {secretKeyRef: {name: githubsecret, key: secretToken}}
  githubAPIURL: https://github.example.com/api/v3/
  sink: {uri: http://127.0.0.1:9/}
"#;

#[test]
fn github_source_and_its_secret_are_served() {
    let mesh = load(GITHUB).expect("valid");
    assert!(mesh.warnings.is_empty(), "{:?}", mesh.warnings);
    let SourceSpec::GitHub(g) = &mesh.sources[0].spec else {
        panic!("not a github source")
    };
    assert_eq!(g.owner_repo(), ("octo-org", "octo-repo"));
    assert_eq!(g.event_source(), "https://github.com/octo-org/octo-repo");
    assert_eq!(
        secret_value(&mesh.secrets, "demo", &g.secret_token).expect("secret token"),
        b"s3cr3t"
    );
    let access = g.access_token.as_ref().expect("access token");
    assert_eq!(
        secret_value(&mesh.secrets, "demo", access).expect("access token"),
        b"ghp_token"
    );
}

#[test]
fn secret_values_never_show_in_debug_output() {
    let mesh = load(GITHUB).expect("valid");
    let debug = format!("{:?}", mesh.secrets);
    assert!(
        !debug.contains("s3cr3t") && !debug.contains("ghp_token"),
        "{debug}"
    );
}

#[test]
fn github_source_unknown_event_type_is_an_error() {
    let text = errors(&GITHUB.replace("[push, pull_request]", "[push, pushed]"));
    assert!(text.contains("spec.eventTypes[1]"), "{text}");
}

#[test]
fn github_source_needs_event_types_and_a_secret_token() {
    let yaml = GITHUB
        .replace("  eventTypes: [push, pull_request]\n", "")
        .replace(
            "  secretToken: {secretKeyRef: {name: githubsecret, key: secretToken}}\n",
            "",
        );
    let text = errors(&yaml);
    assert!(text.contains("spec.eventTypes"), "{text}");
    assert!(text.contains("spec.secretToken"), "{text}");
}

#[test]
fn github_source_owner_and_repository_is_checked() {
    let text = errors(&GITHUB.replace("octo-org/octo-repo", "a/b/c"));
    assert!(text.contains("spec.ownerAndRepository"), "{text}");
    // An organization alone is fine.
    load(&GITHUB.replace("octo-org/octo-repo", "octo-org")).expect("valid");
}

#[test]
fn github_source_missing_secret_is_a_warning() {
    let only_source = GITHUB.split("---").nth(1).expect("second document");
    let mesh = load(only_source).expect("valid");
    assert!(
        mesh.warnings
            .iter()
            .any(|w| w.location.field == "spec.secretToken.secretKeyRef.name"),
        "{:?}",
        mesh.warnings
    );
}

#[test]
fn secret_data_must_be_base64() {
    let text = errors(&GITHUB.replace("Z2hwX3Rva2Vu", "not base64!"));
    assert!(text.contains("sources.yaml:9: data.accessToken"), "{text}");
}

#[test]
fn github_source_public_url_annotation_must_be_a_url() {
    let yaml = GITHUB.replace(
        "metadata: {name: gh, namespace: demo}",
        "metadata: {name: gh, namespace: demo, annotations: {evmesh.dev/public-url: \"not a url\"}}",
    );
    let text = errors(&yaml);
    assert!(
        text.contains("metadata.annotations") && text.contains("evmesh.dev/public-url"),
        "{text}"
    );
}
