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
    fn tls_switches_the_scheme() {
        let plain = Credentials::default().endpoint("127.0.0.1:1").expect("valid");
        assert_eq!(plain.uri().scheme_str(), Some("http"));
        let tls = Credentials::default().with_tls(Some(ClientTlsConfig::new()));
        assert_eq!(tls.endpoint("127.0.0.1:1").expect("valid").uri().scheme_str(), Some("https"));
    }
}
