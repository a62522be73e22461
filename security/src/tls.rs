//! Certificates from PEM files into tonic's rustls configurations, with errors
//! that name the setting and the file.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Longest PEM file read (a certificate chain or a CA bundle is a few KiB).
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Reads a PEM file; refuses one that is empty, huge or holds no PEM block.
pub fn read_pem(setting: &str, path: &Path) -> Result<Vec<u8>, String> {
    let name = || format!("--{setting} {}", path.display());
    let len = std::fs::metadata(path).map_err(|e| format!("{}: cannot read it: {e}", name()))?.len();
    if len > MAX_PEM_BYTES {
        return Err(format!("{}: {len} bytes is too large for a PEM file", name()));
    }
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot read it: {e}", name()))?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!("{}: not a PEM file (no -----BEGIN line)", name()));
    }
    Ok(pem)
}

/// The files a TLS port needs.
#[derive(Clone)]
pub struct TlsFiles {
    /// This process's certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// Its private key (PEM). Never logged: `TlsFiles` is only `Debug` through
    /// the redacting impl below.
    pub key_pem: Vec<u8>,
    /// The CA bundle that signed the nodes' certificates (PEM).
    pub ca_pem: Vec<u8>,
}

impl TlsFiles {
    /// The server side: this identity, and (for `--peer-mtls`) the CA that
    /// client certificates must chain to. Client certificates stay optional at
    /// the TLS level (applications have none); the guard decides which calls
    /// need one.
    pub fn server_config(&self, verify_clients: bool) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        if verify_clients {
            config.client_ca_root(Certificate::from_pem(&self.ca_pem)).client_auth_optional(true)
        } else {
            config
        }
    }

    /// The calling side between nodes: trust the CA and, for `--peer-mtls`,
    /// present this identity.
    pub fn client_config(&self, present_identity: bool) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if present_identity {
            config.identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
        } else {
            config
        }
    }
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert_pem_bytes", &self.cert_pem.len())
            .field("key_pem", &"<redacted>")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .finish()
    }
}

/// A caller that only verifies servers (the CLI, an application): trusts the
/// CA bundle at `ca_pem`.
pub fn client_config(ca_pem: &[u8]) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem))
}
