//! Transport rules shared by every client that carries a token or an artifact.

/// Refuses a URL that would carry a token or an artifact in the clear: `https://`, or `http://`
/// to a loopback address, or anything with `insecure_http`.
pub fn check_transport(url: &str, insecure_http: bool) -> Result<(), TransportError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| TransportError::NotUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if insecure_http || is_loopback(&parsed) => Ok(()),
        "http" => Err(TransportError::PlainHttp {
            url: url.to_string(),
        }),
        other => Err(TransportError::Scheme {
            url: url.to_string(),
            scheme: other.to_string(),
        }),
    }
}

/// Why a URL is not one kfleet sends to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    #[error("{url}: not a URL ({reason})")]
    NotUrl { url: String, reason: String },
    /// `http://` to a host off this machine (a caller may allow it explicitly).
    #[error("{url}: plain http to a host that is not loopback; use https://")]
    PlainHttp { url: String },
    #[error("{url}: scheme {scheme} is not http(s)")]
    Scheme { url: String, scheme: String },
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The user agent of every request kfleet sends.
pub const USER_AGENT: &str = concat!("kfleet/", env!("CARGO_PKG_VERSION"));

/// Redirects a client follows: none where a redirect would carry a token elsewhere; only within
/// the host first asked where the client presents a certificate in the TLS handshake (it goes to
/// every server that asks for one).
#[derive(Clone, Copy, Debug)]
pub enum Redirects {
    None,
    Limited(usize),
    SameHost(usize),
}

/// A URL's origin: scheme, host (lowercase) and port (the scheme's own where none is written).
pub fn origin(url: &reqwest::Url) -> (String, Option<String>, Option<u16>) {
    (
        url.scheme().to_string(),
        url.host_str().map(str::to_ascii_lowercase),
        url.port_or_known_default(),
    )
}

/// Whether two URLs parse and share an [`origin`].
pub fn same_origin(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => origin(&a) == origin(&b),
        _ => false,
    }
}

/// The one way kfleet builds an HTTP client: its user agent, a connect timeout of at most 10 s,
/// `timeout` for a whole request, `redirects`, and the PEM certificates of `ca_file` trusted
/// besides the system's roots.
pub fn http_client(
    timeout: std::time::Duration,
    redirects: Redirects,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::Client, String> {
    let mut builder = client_builder(timeout, redirects);
    if let Some(path) = ca_file {
        builder = trust_pem_file(builder, path)?;
    }
    builder.build().map_err(|e| crate::text::error_chain(&e))
}

/// [`http_client`]'s builder before any CA is added, for clients that add more (a client
/// certificate).
pub fn client_builder(
    timeout: std::time::Duration,
    redirects: Redirects,
) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(timeout.min(std::time::Duration::from_secs(10)))
        .timeout(timeout)
        .redirect(match redirects {
            Redirects::None => reqwest::redirect::Policy::none(),
            Redirects::Limited(n) => reqwest::redirect::Policy::limited(n),
            Redirects::SameHost(n) => reqwest::redirect::Policy::custom(move |attempt| {
                let same = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| origin(first) == origin(attempt.url()));
                if same && attempt.previous().len() <= n {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }),
        })
}

/// `builder` trusting the PEM certificates of `path` besides the system's roots: a file that
/// cannot be read, or holds no certificate, is an error saying which.
pub fn trust_pem_file(
    builder: reqwest::ClientBuilder,
    path: &std::path::Path,
) -> Result<reqwest::ClientBuilder, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{shown} holds no PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{shown} holds no PEM certificate"));
    }
    Ok(certs
        .into_iter()
        .fold(builder, |b, cert| b.add_root_certificate(cert)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_or_loopback_only() {
        assert!(check_transport("https://kfleet.example", false).is_ok());
        assert!(check_transport("http://127.0.0.1:8080", false).is_ok());
        assert!(check_transport("http://[::1]:8080", false).is_ok());
        assert!(check_transport("http://localhost:1", false).is_ok());
        assert_eq!(
            check_transport("http://kfleet.example", false),
            Err(TransportError::PlainHttp {
                url: "http://kfleet.example".into()
            })
        );
        assert!(check_transport("http://kfleet.example", true).is_ok());
        assert!(check_transport("file:///etc/passwd", true).is_err());
    }
}

/// Why a capped read of a response body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the answer is over {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Transport(String),
}

/// Sends `request` and reads the answer's body up to `max` bytes. A failure is told without the
/// request's URL, which may carry a key or a token.
pub async fn exchange(
    request: reqwest::RequestBuilder,
    max: usize,
) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
    let response = request
        .send()
        .await
        .map_err(|e| crate::text::error_chain(&e.without_url()))?;
    let status = response.status();
    let body = read_capped(response, max)
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// A response's body, refused as soon as it would pass `max` bytes: a `Content-Length` over it
/// before anything is read, and the stream as it arrives (a server may send more than it said).
pub async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BodyError::Transport(crate::text::error_chain(&e.without_url())))?
    {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
