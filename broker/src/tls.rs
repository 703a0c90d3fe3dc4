//! TLS for outgoing deliveries: rustls with the ring provider, the web PKI roots, a private CA
//! (`--ca-file`) and a Destination's `CACerts` (PEM), as Knative adds them to its trust pool.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// A PEM bundle that could not be used as trust roots.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// Installs rustls' ring provider as the process default (a no-op when one is installed already).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Parses every `CERTIFICATE` block of a PEM bundle; an empty or malformed bundle is an error.
pub fn parse_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("invalid PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError("no PEM CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// A rustls client configuration trusting the web PKI roots plus `extra` (HTTP/2 and HTTP/1.1
/// offered through ALPN).
pub fn client_config(extra: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| TlsError(format!("unusable CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_pem_without_certificates() {
        assert!(parse_pem("").is_err());
        assert!(
            parse_pem("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").is_err()
        );
    }

    #[test]
    fn web_pki_roots_alone_build_a_config() {
        let config = client_config(&[]).expect("config");
        assert_eq!(config.alpn_protocols.len(), 2);
    }
}
