//! Client settings shared by producers, consumers and admin clients.

use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;

/// Knative-like default session timeout: a consumer that died is noticed (and its partitions
/// reassigned) within this. librdkafka's own default is 45 s.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a produce may wait for Kafka's acknowledgement before it fails (librdkafka's default
/// is 5 minutes).
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// SASL authentication (`net.sasl` of a KafkaSource).
#[derive(Clone, PartialEq, Eq)]
pub struct Sasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    /// User name.
    pub user: String,
    /// Password (never printed).
    pub password: String,
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// TLS to the brokers (`net.tls` of a KafkaSource): PEM texts.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// CA certificates to trust (else the system's).
    pub ca_pem: Option<String>,
    /// Client certificate.
    pub cert_pem: Option<String>,
    /// Client key (never printed).
    pub key_pem: Option<String>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca_pem", &self.ca_pem.is_some())
            .field("cert_pem", &self.cert_pem.is_some())
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Where Kafka is and how to talk to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `host:port` of one or more brokers.
    pub bootstrap_servers: Vec<String>,
    /// Consumer group session timeout.
    pub session_timeout: Duration,
    /// Produce timeout (`message.timeout.ms`).
    pub message_timeout: Duration,
    /// SASL, when enabled.
    pub sasl: Option<Sasl>,
    /// TLS, when enabled.
    pub tls: Option<Tls>,
}

impl KafkaSettings {
    /// Settings for `bootstrap_servers` with the defaults.
    pub fn new<S: Into<String>>(bootstrap_servers: impl IntoIterator<Item = S>) -> KafkaSettings {
        KafkaSettings {
            bootstrap_servers: bootstrap_servers.into_iter().map(Into::into).collect(),
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            message_timeout: DEFAULT_MESSAGE_TIMEOUT,
            sasl: None,
            tls: None,
        }
    }

    /// The librdkafka configuration every client starts from: brokers and security.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap_servers.join(","));
        let protocol = match (&self.sasl, &self.tls) {
            (None, None) => "plaintext",
            (None, Some(_)) => "ssl",
            (Some(_), None) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        if let Some(s) = &self.sasl {
            c.set("sasl.mechanism", &s.mechanism);
            c.set("sasl.username", &s.user);
            c.set("sasl.password", &s.password);
        }
        if let Some(t) = &self.tls {
            if let Some(ca) = &t.ca_pem {
                c.set("ssl.ca.pem", ca);
            }
            if let Some(cert) = &t.cert_pem {
                c.set("ssl.certificate.pem", cert);
            }
            if let Some(key) = &t.key_pem {
                c.set("ssl.key.pem", key);
            }
        }
        // librdkafka logs through the `log` crate facade; keep its own noise down.
        c.set("log_level", "4");
        c
    }
}

/// Milliseconds of a duration, as librdkafka configuration text.
pub(crate) fn ms(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let mut s = KafkaSettings::new(["k:9092"]);
        s.sasl = Some(Sasl {
            mechanism: "PLAIN".into(),
            user: "u".into(),
            password: "hunter2".into(),
        });
        s.tls = Some(Tls {
            key_pem: Some("PRIVATE KEY".into()),
            ..Tls::default()
        });
        let text = format!("{s:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("PRIVATE KEY"),
            "{text}"
        );
    }

    #[test]
    fn sasl_over_tls_selects_sasl_ssl() {
        let mut s = KafkaSettings::new(["k:9092"]);
        s.sasl = Some(Sasl {
            mechanism: "SCRAM-SHA-512".into(),
            user: "u".into(),
            password: "p".into(),
        });
        s.tls = Some(Tls::default());
        let c = s.client_config();
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    }
}
