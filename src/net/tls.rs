//! DICOM over TLS (PS3.15 B.1 and its BCP 195 profile: TLS 1.2 or 1.3, certificates on both
//! sides): the TLS listener's rustls configuration and the client configuration for peers with
//! `tls = true`, read from PEM files. ring is the crypto provider, handed to each configuration
//! rather than installed for the whole process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{Config, TlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} {path}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("the {what} {path} holds no certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("the {what} {path} holds a certificate that cannot be a trust anchor")]
    TrustAnchor {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the client CA bundle {path} cannot verify clients")]
    ClientVerifier {
        path: PathBuf,
        #[source]
        source: VerifierBuilderError,
    },
    #[error("the TLS {role} configuration is refused")]
    Rustls {
        role: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("[tls] {0} is not set")]
    NotConfigured(&'static str),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        what,
        path: path.to_owned(),
        source,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(what, path)? {
        roots
            .add(certificate)
            .map_err(|source| TlsError::TrustAnchor {
                what,
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(roots)
}

/// This node's certificate chain and key, when both are configured.
fn identity(
    tls: &TlsConfig,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
    let (Some(certificate), Some(key)) = (&tls.certificate, &tls.private_key) else {
        return Ok(None);
    };
    let chain = certificates("certificate", certificate)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        what: "private key",
        path: key.clone(),
        source,
    })?;
    Ok(Some((chain, key)))
}

/// The TLS listener's configuration: this node's certificate, and client certificates verified
/// against `client_ca` when it is set (clients without one are refused in the handshake).
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let rustls_error = |source| TlsError::Rustls {
        role: "listener",
        source,
    };
    let (chain, key) = identity(tls)?.ok_or(TlsError::NotConfigured("certificate"))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?;
    let builder = match &tls.client_ca {
        Some(path) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots("client CA bundle", path)?),
                provider,
            )
            .build()
            .map_err(|source| TlsError::ClientVerifier {
                path: path.clone(),
                source,
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).map_err(rustls_error)?;
    Ok(Arc::new(config))
}

/// The configuration for associations msnode opens to a TLS peer: the peer's certificate must
/// chain to `peer_ca` and name the peer's host; this node's certificate is shown when it has one.
pub fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let rustls_error = |source| TlsError::Rustls {
        role: "client",
        source,
    };
    let peer_ca = tls
        .peer_ca
        .as_ref()
        .ok_or(TlsError::NotConfigured("peer_ca"))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?
        .with_root_certificates(roots("peer CA bundle", peer_ca)?);
    let config = match identity(tls)? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(rustls_error)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Every TLS configuration the node would build from `config`, built once to find unreadable or
/// mismatched files before they are needed (`config check`, start-up).
pub fn check(config: &Config) -> Vec<TlsError> {
    let mut problems = Vec::new();
    if config.node.tls_port.is_some()
        && let Err(e) = server_config(&config.tls)
    {
        problems.push(e);
    }
    if config.peers.iter().any(|p| p.tls)
        && let Err(e) = client_config(&config.tls)
    {
        problems.push(e);
    }
    problems
}
