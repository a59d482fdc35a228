//! https for the crawler and the local site: rustls on the ring provider (no aws-lc), and a
//! self-signed certificate made at start with rcgen for the site to serve.
//!
//! The client (reqwest, feature `rustls-no-provider`) takes rustls's process-wide default
//! provider; [`install_ring_provider`] installs ring as that default before any client is
//! built. The server side builds its config on ring explicitly.

use anyhow::{Context, Result};
use std::sync::Arc;

/// Makes ring rustls's process-wide crypto provider, unless a provider was installed
/// already (by the application, or by an earlier call): the HTTP client builds its TLS
/// configuration on whatever is installed.
pub fn install_ring_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing one is fine: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A certificate and the server configuration that presents it.
pub struct SelfSigned {
    /// The certificate, PEM-encoded: what a client adds to its roots to trust the server.
    pub cert_pem: String,
    /// A rustls server configuration (ring provider) presenting the certificate.
    pub server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSigned").finish_non_exhaustive()
    }
}

/// A fresh key pair and a self-signed certificate for `names` (DNS names or IP
/// addresses, e.g. `127.0.0.1`), with a server configuration that presents it over
/// HTTP/1.1.
pub fn self_signed(names: &[&str]) -> Result<SelfSigned> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let key = rcgen::generate_simple_self_signed(names.clone())
        .with_context(|| format!("making a certificate for {names:?}"))?;
    let cert_der = key.cert.der().clone();
    let key_der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.signing_key.serialize_der());
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions of the ring provider")?
    .with_no_client_auth()
    .with_single_cert(vec![cert_der], key_der.into())
    .context("the generated certificate and key")?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(SelfSigned {
        cert_pem: key.cert.pem(),
        server: Arc::new(server),
    })
}
