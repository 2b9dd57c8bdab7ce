//! Who may ask: the client tokens, kept as SHA-256 hashes and compared in constant time.

use super::{ServiceState, json_error};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

/// A client that presented a known token, named by its token's hash.
pub(super) struct Client(pub(super) [u8; 32]);

/// The tokens the service accepts.
pub(super) struct Auth {
    /// SHA-256 of each client token: compared in constant time, never by length.
    token_hashes: Vec<[u8; 32]>,
}

impl Auth {
    pub(super) fn new(tokens: &[String]) -> Self {
        Self {
            token_hashes: tokens.iter().map(|t| token_hash(t.as_bytes())).collect(),
        }
    }

    /// The client whose bearer token this is, if the service knows the token.
    pub(super) fn client(&self, headers: &HeaderMap) -> Option<Client> {
        use subtle::ConstantTimeEq;
        let presented = token_hash(bearer(headers));
        let known = self
            .token_hashes
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | t.ct_eq(&presented));
        bool::from(known).then_some(Client(presented))
    }
}

impl ServiceState {
    /// Checks the bearer token; the error is the response to send.
    pub(super) fn authenticate(&self, headers: &HeaderMap) -> Result<Client, Box<Response>> {
        if let Some(client) = self.auth.client(headers) {
            return Ok(client);
        }
        self.metrics.count("unauthorized");
        let mut r = json_error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(Box::new(r))
    }
}

fn token_hash(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// The bearer token of a request (`Authorization: Bearer T`, the scheme in any case).
fn bearer(headers: &HeaderMap) -> &[u8] {
    headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(|v| {
            let space = v.iter().position(|b| *b == b' ')?;
            let (scheme, rest) = v.split_at(space);
            scheme
                .eq_ignore_ascii_case(b"bearer")
                .then(|| rest.trim_ascii())
        })
        .unwrap_or(b"")
}
