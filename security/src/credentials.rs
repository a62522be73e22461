//! The callers' side: how a connection is opened (plain or TLS) and which
//! token every call on it carries.

use std::fmt;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::token::Token;

/// A connection whose every call carries the caller's token.
pub type Conn = InterceptedService<Channel, BearerAuth>;

/// What a caller presents: TLS settings for the connection, a token for the
/// calls. The default is plain HTTP/2 without a token.
#[derive(Clone, Default)]
pub struct Credentials {
    token: Option<Token>,
    tls: Option<ClientTlsConfig>,
}

impl Credentials {
    /// Every call carries `token`.
    pub fn with_token(mut self, token: Option<Token>) -> Credentials {
        self.token = token;
        self
    }

    /// Connections use TLS with this configuration (`tls::client_config`).
    pub fn with_tls(mut self, tls: Option<ClientTlsConfig>) -> Credentials {
        self.tls = tls;
        self
    }

    /// What a client command line names: a file holding the token
    /// (`--token-file`) and a CA bundle to verify the servers with
    /// (`--tls-ca`), each optional; the files are read now, and an unreadable
    /// or malformed one is an error naming the flag.
    pub fn from_files(
        token_file: Option<&std::path::Path>,
        tls_ca: Option<&std::path::Path>,
    ) -> Result<Credentials, String> {
        let token = token_file.map(|path| Token::from_file("token-file", path)).transpose()?;
        let tls = match tls_ca {
            Some(path) => Some(crate::tls::client_config(&crate::tls::read_pem("tls-ca", path)?)),
            None => None,
        };
        Ok(Credentials::default().with_token(token).with_tls(tls))
    }

    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The endpoint of `addr` (`host:port`): `https` with the TLS settings,
    /// else plain `http`.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        match &self.tls {
            None => Endpoint::from_shared(format!("http://{addr}")),
            Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.clone()),
        }
    }

    /// A lazily connecting connection through `endpoint` whose calls carry the
    /// token.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Conn {
        InterceptedService::new(endpoint.connect_lazy(), self.auth())
    }

    /// Wraps an already built channel so that its calls carry the token.
    pub fn wrap(&self, channel: Channel) -> Conn {
        InterceptedService::new(channel, self.auth())
    }

    /// The interceptor adding the token, for clients built by hand.
    pub fn auth(&self) -> BearerAuth {
        let header = self.token.as_ref().map(|token| {
            let value: MetadataValue<Ascii> =
                format!("Bearer {}", token.expose()).parse().expect("a Token is visible ASCII");
            value
        });
        BearerAuth(header)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Adds `authorization: Bearer <token>` to every call (nothing without a
/// token).
#[derive(Clone)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "BearerAuth(<redacted>)" } else { "BearerAuth(none)" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_sent_and_never_printed() {
        let token = Token::new("a-secret-a-secret-a-secret").expect("valid");
        let credentials = Credentials::default().with_token(Some(token));
        let printed = format!("{credentials:?} {:?}", credentials.auth());
        assert!(!printed.contains("a-secret"), "{printed}");
        let request = credentials.auth().call(tonic::Request::new(())).expect("never refuses");
        let header = request.metadata().get("authorization").expect("header set");
        assert_eq!(header.to_str().expect("ascii"), "Bearer a-secret-a-secret-a-secret");
        let plain = Credentials::default().auth().call(tonic::Request::new(())).expect("never refuses");
        assert!(plain.metadata().get("authorization").is_none());
    }

    #[test]
    fn command_line_files_become_credentials_and_bad_ones_name_their_flag() {
        let dir = std::env::temp_dir().join(format!("ringkv-credentials-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (token, ca, junk) = (dir.join("token"), dir.join("ca.pem"), dir.join("junk"));
        std::fs::write(&token, "a-secret-a-secret-a-secret\n").expect("write");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").expect("write");
        std::fs::write(&junk, "not a certificate").expect("write");

        let none = Credentials::from_files(None, None).expect("nothing to read");
        assert!(!none.uses_tls() && none.token.is_none());
        let both = Credentials::from_files(Some(&token), Some(&ca)).expect("valid files");
        assert!(both.uses_tls());
        let request = both.auth().call(tonic::Request::new(())).expect("never refuses");
        let header = request.metadata().get("authorization").expect("header set");
        assert_eq!(header.to_str().expect("ascii"), "Bearer a-secret-a-secret-a-secret");
        let missing = Credentials::from_files(Some(&dir.join("absent")), None).expect_err("no such file");
        assert!(missing.contains("--token-file"), "{missing}");
        let not_pem = Credentials::from_files(None, Some(&junk)).expect_err("not PEM");
        assert!(not_pem.contains("--tls-ca") && not_pem.contains("not a PEM file"), "{not_pem}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn tls_switches_the_scheme() {
        let plain = Credentials::default().endpoint("127.0.0.1:1").expect("valid");
        assert_eq!(plain.uri().scheme_str(), Some("http"));
        let tls = Credentials::default().with_tls(Some(ClientTlsConfig::new()));
        assert_eq!(tls.endpoint("127.0.0.1:1").expect("valid").uri().scheme_str(), Some("https"));
    }
}
