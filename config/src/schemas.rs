//! OpenAPI v3 schemas of the served kinds' `spec`, after Knative's CRDs (JSON text, for the
//! kind registry).

/// The OpenAPI schema (JSON text) of a Destination (`ref` or `uri`), as in Knative's duck types,
/// with `description`: for the spec schema of a kind registered outside this crate.
///
/// ```
/// let s: serde_json::Value = serde_json::from_str(evmesh_config::schema_destination!("Where.")).unwrap();
/// assert_eq!(s["description"], "Where.");
/// ```
#[macro_export]
macro_rules! schema_destination {
    ($desc:literal) => {
        concat!(
            r#"{"type": "object", "description": ""#,
            $desc,
            r#"",
  "properties": {
    "ref": {"type": "object", "description": "Ref points to an Addressable.",
      "properties": {
        "apiVersion": {"type": "string", "description": "API version of the referent."},
        "kind": {"type": "string", "description": "Kind of the referent."},
        "name": {"type": "string", "description": "Name of the referent."},
        "namespace": {"type": "string", "description": "Namespace of the referent (default: the referring resource's)."},
        "address": {"type": "string", "description": "Address points to a specific Address Name."}
      }},
    "uri": {"type": "string", "description": "URI can be an absolute URL (non-empty scheme and non-empty host) pointing to the target or a relative URI. Relative URIs are resolved using the base URI retrieved from Ref."},
    "CACerts": {"type": "string", "description": "Certification Authority (CA) certificates in PEM format that the source trusts when sending events to the sink."},
    "audience": {"type": "string", "description": "Audience is the OIDC audience."}
  }}"#
        )
    };
}

/// The OpenAPI schema (JSON text) of a DeliverySpec, as in Knative's duck types.
///
/// ```
/// let s: serde_json::Value = serde_json::from_str(evmesh_config::schema_delivery!()).unwrap();
/// assert_eq!(s["type"], "object");
/// ```
#[macro_export]
macro_rules! schema_delivery {
    () => {
        concat!(
            r#"{"type": "object", "description": "Delivery contains the delivery spec for each subscription: retries, backoff and the dead letter sink.",
  "properties": {
    "deadLetterSink": "#,
            $crate::schema_destination!("DeadLetterSink is the sink receiving events that could not be sent to a destination."),
            r#",
    "retry": {"type": "integer", "format": "int32", "description": "Retry is the minimum number of retries the sender should attempt when sending an event before moving it to the dead letter sink."},
    "backoffPolicy": {"type": "string", "description": "BackoffPolicy is the retry backoff policy (linear, exponential)."},
    "backoffDelay": {"type": "string", "description": "BackoffDelay is the delay before retrying, an ISO 8601 duration, e.g. PT1S."},
    "timeout": {"type": "string", "description": "Timeout is the timeout of each single request, an ISO 8601 duration."},
    "retryAfterMax": {"type": "string", "description": "RetryAfterMax is the maximum delay honoured from a Retry-After header, an ISO 8601 duration."},
    "format": {"type": "string", "description": "Format is the format used to serialize the event into an http request (json or binary)."}
  }}"#
        )
    };
}

/// Broker `spec`.
pub(crate) const BROKER_SPEC: &str = concat!(
    r#"{"type": "object", "description": "Spec defines the desired state of the Broker.",
  "properties": {
    "config": {"type": "object", "description": "Config is a KReference to the configuration that specifies configuration options for this Broker.",
      "properties": {
        "apiVersion": {"type": "string", "description": "API version of the referent."},
        "kind": {"type": "string", "description": "Kind of the referent."},
        "name": {"type": "string", "description": "Name of the referent."},
        "namespace": {"type": "string", "description": "Namespace of the referent."}
      }},
    "delivery": "#,
    crate::schema_delivery!(),
    r#"
  }}"#
);

/// Trigger `spec`.
pub(crate) const TRIGGER_SPEC: &str = concat!(
    r#"{"type": "object", "description": "Spec defines the desired state of the Trigger.",
  "required": ["broker", "subscriber"],
  "properties": {
    "broker": {"type": "string", "description": "Broker is the broker that this trigger receives events from."},
    "filter": {"type": "object", "description": "Filter is the filter to apply against all events from the Broker. Only events that pass this filter will be sent to the Subscriber. If not specified, will default to allowing all events.",
      "properties": {
        "attributes": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Attributes filters events by exact match on event context attributes. Each key in the map is compared with the equivalent key in the event context. An event passes the filter if all values are equal to the specified values."}
      }},
    "filters": {"type": "array", "description": "Filters is an experimental field that conforms to the CNCF CloudEvents Subscriptions API. It's an array of filter expressions that evaluate to true or false. If any filter expression in the array evaluates to false, the event MUST NOT be sent to the Subscriber. If all the filter expressions in the array evaluate to true, the event MUST be attempted to be delivered. Absence of a filter or empty array implies a value of true.",
      "items": {"type": "object", "description": "SubscriptionsAPIFilter: exactly one of the dialects below.",
        "properties": {
          "all": {"type": "array", "description": "All evaluates to true if all the nested expressions evaluate to true. It must contain at least one filter expression.", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
          "any": {"type": "array", "description": "Any evaluates to true if at least one of the nested expressions evaluates to true. It must contain at least one filter expression.", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
          "not": {"type": "object", "description": "Not evaluates to true if the nested expression evaluates to false.", "x-kubernetes-preserve-unknown-fields": true},
          "exact": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Exact evaluates to true if the values of the matching CloudEvents attributes MUST all exactly match with the associated value String specified (case-sensitive)."},
          "prefix": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Prefix evaluates to true if the values of the matching CloudEvents attributes MUST all start with the associated value String specified (case sensitive)."},
          "suffix": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Suffix evaluates to true if the values of the matching CloudEvents attributes MUST all end with the associated value String specified (case sensitive)."},
          "cesql": {"type": "string", "description": "CESQL is a CloudEvents SQL expression that will be evaluated to true or false against each CloudEvent."}
        }}},
    "subscriber": "#,
    crate::schema_destination!(
        "Subscriber is the addressable that receives events from the Broker that pass the Filter. It is required."
    ),
    r#",
    "delivery": "#,
    crate::schema_delivery!(),
    r#"
  }}"#
);

/// EventDisplay `spec` (evmesh's built-in printing sink: no settings).
pub(crate) const EVENT_DISPLAY_SPEC: &str = r#"{"type": "object", "description": "Spec of the EventDisplay (no settings yet).", "x-kubernetes-preserve-unknown-fields": true}"#;

/// The OpenAPI schema (JSON text) of a `channelTemplate` (the kind and spec of the channels
/// created).
///
/// ```
/// let s: serde_json::Value = serde_json::from_str(evmesh_config::schema_channel_template!()).unwrap();
/// assert_eq!(s["type"], "object");
/// ```
#[macro_export]
macro_rules! schema_channel_template {
    () => {
        r#"{"type": "object", "description": "ChannelTemplate specifies which Channel CRD to use to create the CRD Channel backing this resource.",
  "properties": {
    "apiVersion": {"type": "string", "description": "APIVersion of the channel kind, e.g. messaging.knative.dev/v1."},
    "kind": {"type": "string", "description": "Kind of the channel, e.g. InMemoryChannel."},
    "spec": {"type": "object", "description": "Spec defines the Spec to use for each channel created.", "x-kubernetes-preserve-unknown-fields": true}
  }}"#
    };
}

/// The OpenAPI schema (JSON text) of Channelable `subscribers` (server-managed).
///
/// ```
/// let s: serde_json::Value = serde_json::from_str(evmesh_config::schema_subscribers!()).unwrap();
/// assert_eq!(s["type"], "array");
/// ```
#[macro_export]
macro_rules! schema_subscribers {
    () => {
        r#"{"type": "array", "description": "This is the list of subscriptions for this subscribable (managed by the server).", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}"#
    };
}

/// `ceOverrides` of a source.
macro_rules! ce_overrides {
    () => {
        r#"{"type": "object", "description": "CloudEventOverrides defines overrides to control the output format and modifications of the event sent to the sink.",
  "properties": {
    "extensions": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Extensions specify what attribute are added or overridden on the outbound event. Each `Extensions` key-value pair are set on the event as an attribute extension independently."}
  }}"#
    };
}

/// A `secretKeyRef` holder.
macro_rules! secret_value {
    ($desc:literal) => {
        concat!(
            r#"{"type": "object", "description": ""#,
            $desc,
            r#"",
  "properties": {
    "secretKeyRef": {"type": "object", "description": "The Secret key to select from.",
      "required": ["key"],
      "properties": {
        "name": {"type": "string", "description": "Name of the referent (a v1 Secret in the same namespace)."},
        "key": {"type": "string", "description": "The key of the secret to select from."},
        "optional": {"type": "boolean", "description": "Specify whether the Secret or its key must be defined."}
      }}
  }}"#
        )
    };
}

/// PingSource `spec` (v1 and v1beta2).
pub const PING_SOURCE_SPEC: &str = concat!(
    r#"{"type": "object", "description": "PingSourceSpec defines the desired state of the PingSource (from the client).",
  "properties": {
    "ceOverrides": "#,
    ce_overrides!(),
    r#",
    "contentType": {"type": "string", "description": "ContentType is the media type of `data` or `dataBase64`. Default is empty."},
    "data": {"type": "string", "description": "Data is data used as the body of the event posted to the sink. Default is empty. Mutually exclusive with `dataBase64`."},
    "dataBase64": {"type": "string", "description": "DataBase64 is the base64-encoded string of the actual event's body posted to the sink. Default is empty. Mutually exclusive with `data`."},
    "schedule": {"type": "string", "description": "Schedule is the cron schedule. Defaults to `* * * * *`."},
    "sink": "#,
    crate::schema_destination!(
        "Sink is a reference to an object that will resolve to a uri to use as the sink."
    ),
    r#",
    "timezone": {"type": "string", "description": "Timezone modifies the actual time relative to the specified timezone. Defaults to the system time zone."}
  }}"#
);

/// GitHubSource `spec` (v1alpha1).
pub const GITHUB_SOURCE_SPEC: &str = concat!(
    r#"{"type": "object", "description": "GitHubSourceSpec defines the desired state of GitHubSource.",
  "required": ["ownerAndRepository", "eventTypes", "secretToken"],
  "properties": {
    "accessToken": "#,
    secret_value!("Access token for the GitHub API, used to register the webhook."),
    r#",
    "ceOverrides": "#,
    ce_overrides!(),
    r#",
    "eventTypes": {"type": "array", "minItems": 1, "description": "List of webhooks to enable on the selected GitHub repository.", "items": {"type": "string"}},
    "githubAPIURL": {"type": "string", "description": "URL for enterprise GitHub."},
    "ownerAndRepository": {"type": "string", "minLength": 1, "description": "Reference to the GitHub repository to receive events from, in the format user/repository."},
    "secretToken": "#,
    secret_value!("Arbitrary token used to validate requests to webhooks."),
    r#",
    "secure": {"type": "boolean", "description": "Set to true to enable secure webhook invocation."},
    "serviceAccountName": {"type": "string", "description": "Service Account to run Receive Adapter as. If omitted, uses 'default'."},
    "sink": "#,
    crate::schema_destination!(
        "Reference to an object that will resolve to a domain name to use as the sink."
    ),
    r#"
  }}"#
);

#[cfg(test)]
mod tests {
    #[test]
    fn every_spec_schema_is_json() {
        for k in crate::registry::kinds() {
            let v: serde_json::Value =
                serde_json::from_str(k.spec_schema).unwrap_or_else(|e| panic!("{}: {e}", k.kind));
            assert_eq!(v["type"], "object", "{}", k.kind);
        }
    }
}
