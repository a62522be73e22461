//! The security settings a node and a router share, and what they turn into.

use std::path::PathBuf;

use tonic::transport::ServerTlsConfig;

use crate::credentials::Credentials;
use crate::guard::Policy;
use crate::tls::{TlsFiles, read_pem};
use crate::token::Token;

/// TLS and token settings (flattened into the node's and the router's).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Security")]
pub struct SecuritySettings {
    /// Serve TLS with this certificate chain (PEM file); needs --tls-key and
    /// --tls-ca. Off when not given: plain HTTP/2.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM file).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM file) that signed the nodes' certificates: verifies the
    /// nodes this process calls, and with --peer-mtls the peers calling it.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS between nodes: present --tls-cert when calling other nodes,
    /// and accept Raft calls from a caller whose certificate --tls-ca signed.
    #[arg(long)]
    pub peer_mtls: bool,
    /// File holding the token that opens KV (and the read-only Admin calls a
    /// client needs); needs --admin-token-file. Off when not given.
    #[arg(long, value_name = "FILE")]
    pub kv_token_file: Option<PathBuf>,
    /// File holding the token that opens Admin and KV. When any of the
    /// KV/admin tokens is set, calls without one are refused.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding the cluster secret the nodes and routers present to each
    /// other (it opens everything, Raft included); the same on every node and
    /// router. Off when not given (unless --peer-mtls): Raft calls are not
    /// authenticated. Every token file may hold up to four tokens, one per
    /// line, while one rotates: the first is presented, all are accepted.
    #[arg(long, value_name = "FILE")]
    pub peer_token_file: Option<PathBuf>,
}

/// What the settings turn into.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// The listener's TLS, if on.
    pub server_tls: Option<ServerTlsConfig>,
    /// Who may call what.
    pub policy: Policy,
    /// How this process calls nodes: TLS as configured, and its most powerful
    /// token (peer, else admin, else KV).
    pub outgoing: Credentials,
    /// Settings that work but deserve a warning at start.
    pub warnings: Vec<String>,
}

impl SecuritySettings {
    /// Reads the files. Errors name the setting and the file, never a secret.
    /// The combinations are checked here, not by clap's `requires`: clap
    /// does not count values from the config file (its defaults) there.
    pub fn load(&self) -> Result<Security, String> {
        if self.kv_token_file.is_some() && self.admin_token_file.is_none() {
            return Err("--kv-token-file needs --admin-token-file too: otherwise Admin would be open to \
                        anyone while KV is closed"
                .into());
        }
        if (self.peer_token_file.is_some() || self.peer_mtls) && self.admin_token_file.is_none() {
            return Err(
                "--peer-token-file and --peer-mtls need --admin-token-file too: otherwise KV and Admin \
                        stay open to anyone, and a router would forward anyone's calls with its peer \
                        credentials"
                    .into(),
            );
        }
        let token = |setting: &str, path: &Option<PathBuf>| {
            path.as_deref().map(|path| Token::from_file(setting, path)).transpose()
        };
        let policy = Policy {
            kv: token("kv-token-file", &self.kv_token_file)?,
            admin: token("admin-token-file", &self.admin_token_file)?,
            peer: token("peer-token-file", &self.peer_token_file)?,
            peer_mtls: self.peer_mtls,
        };
        let roles = [&policy.kv, &policy.admin, &policy.peer];
        for (i, a) in roles.iter().enumerate() {
            for b in &roles[i + 1..] {
                if let (Some(a), Some(b)) = (a, b)
                    && a.shares_a_secret_with(b)
                {
                    return Err("the KV, admin and peer tokens must differ from each other".into());
                }
            }
        }
        let files = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert_pem: read_pem("tls-cert", cert)?,
                key_pem: read_pem("tls-key", key)?,
                ca_pem: read_pem("tls-ca", ca)?,
            }),
            (None, None, None) if !self.peer_mtls => None,
            _ => {
                return Err(
                    "--tls-cert, --tls-key and --tls-ca go together (and --peer-mtls needs them)".into()
                );
            }
        };
        let mut warnings = Vec::new();
        if files.is_none() && (policy.clients_need_tokens() || policy.peer.is_some()) {
            warnings.push("tokens are checked but TLS is off: they cross the network in clear text".into());
        }
        if policy.clients_need_tokens() && !policy.peers_need_credentials() {
            warnings.push(
                "KV and Admin need tokens but Raft calls are not authenticated: set --peer-token-file or \
                 --peer-mtls"
                    .into(),
            );
        }
        let outgoing = Credentials::default()
            .with_token(policy.peer.clone().or_else(|| policy.admin.clone()).or_else(|| policy.kv.clone()))
            .with_tls(files.as_ref().map(|files| files.client_config(self.peer_mtls)));
        Ok(Security {
            server_tls: files.as_ref().map(|files| files.server_config(self.peer_mtls)),
            policy,
            outgoing,
            warnings,
        })
    }
}
