//! Red Hat Subscription Management (candlepin's REST API, as `subscription-manager` speaks it):
//! a system registered with an organisation's activation key, its content access certificate
//! (what the CDN's TLS handshake asks for: `KFLEET_RHEL_ENTITLEMENT_CERT`), and the system
//! unregistered again. A build job registers once, fetches its headers, and unregisters, as a
//! UBI build with an activation key does.
//!
//! The calls: `POST /consumers?owner=ORG&activation_keys=KEY` (no client certificate; answers the
//! consumer with its identity certificate `idCert`), then, presenting that identity,
//! `GET /consumers/{uuid}/certificates` (its certificates: with Simple Content Access, the
//! content access certificate and key) and `DELETE /consumers/{uuid}`.

use crate::net::Redirects;
use std::path::Path;
use std::time::Duration;

/// Red Hat's subscription service.
pub const DEFAULT_URL: &str = "https://subscription.rhsm.redhat.com/subscription";
/// The largest answer read (a content access certificate carries the organisation's content
/// sets, some hundreds of KiB).
const MAX_ANSWER: usize = 8 << 20;
const TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong talking to the subscription service; never quotes a key or an activation key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RhsmError(String);

/// A registered system: its consumer id and its identity (certificate and key, PEM).
pub struct Consumer {
    pub uuid: String,
    pub identity: Vec<u8>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("uuid", &self.uuid)
            .finish()
    }
}

/// Registers a system named `name` in organisation `org` with `activation_key`.
pub async fn register(
    base: &str,
    ca: Option<&Path>,
    org: &str,
    activation_key: &str,
    name: &str,
) -> Result<Consumer, RhsmError> {
    #[derive(serde::Deserialize)]
    struct IdCert {
        cert: String,
        key: String,
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        uuid: String,
        #[serde(rename = "idCert")]
        id_cert: IdCert,
    }
    let url = reqwest::Url::parse_with_params(
        &format!("{}/consumers", base.trim_end_matches('/')),
        [("owner", org), ("activation_keys", activation_key)],
    )
    .map_err(|e| RhsmError(format!("{}: {e}", crate::text::clean(base))))?;
    let body = serde_json::json!({
        "type": {"label": "system"},
        "name": name,
        "facts": {
            "system.certificate_version": "3.2",
            "uname.machine": std::env::consts::ARCH,
            "distribution.name": "kfleet",
        },
    });
    let client = client(base, ca, None)?;
    let answer = send(base, "registration", client.post(url).json(&body)).await?;
    let answer: Answer = serde_json::from_slice(&answer).map_err(|e| {
        RhsmError(format!(
            "{}: the registration's answer is not a consumer: {e}",
            crate::text::clean(base)
        ))
    })?;
    let uuid = checked_uuid(base, &answer.uuid)?;
    let identity = [
        answer.id_cert.cert.as_bytes(),
        b"\n",
        answer.id_cert.key.as_bytes(),
    ]
    .concat();
    usable(base, "the consumer's identity", &identity)?;
    Ok(Consumer { uuid, identity })
}

/// The consumer's content access certificate and its key (PEM), the first of its certificates
/// that has both.
pub async fn content_certificate(
    base: &str,
    ca: Option<&Path>,
    consumer: &Consumer,
) -> Result<(String, String), RhsmError> {
    #[derive(serde::Deserialize)]
    struct Certificate {
        cert: Option<String>,
        key: Option<String>,
    }
    let client = client(base, ca, Some(&consumer.identity))?;
    let url = format!(
        "{}/consumers/{}/certificates",
        base.trim_end_matches('/'),
        consumer.uuid
    );
    let answer = send(
        base,
        "the certificates' request",
        client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json"),
    )
    .await?;
    let certificates: Vec<Certificate> = serde_json::from_slice(&answer).map_err(|e| {
        RhsmError(format!(
            "{}: the certificates' answer is not a list of certificates: {e}",
            crate::text::clean(base)
        ))
    })?;
    let (cert, key) = certificates
        .into_iter()
        .find_map(|c| Some((c.cert?, c.key?)))
        .ok_or_else(|| {
            RhsmError(format!(
                "{}: the system has no content access certificate: is Simple Content Access on for the organisation, or does the activation key attach a subscription?",
                crate::text::clean(base)
            ))
        })?;
    usable(
        base,
        "the content access certificate",
        &[cert.as_bytes(), b"\n", key.as_bytes()].concat(),
    )?;
    Ok((cert, key))
}

/// Unregisters the consumer; one already gone (410) counts as unregistered.
pub async fn unregister(
    base: &str,
    ca: Option<&Path>,
    consumer: &Consumer,
) -> Result<(), RhsmError> {
    let client = client(base, ca, Some(&consumer.identity))?;
    let url = format!("{}/consumers/{}", base.trim_end_matches('/'), consumer.uuid);
    match send(base, "unregistration", client.delete(url)).await {
        Ok(_) => Ok(()),
        Err(e) if e.0.contains("HTTP 410") => Ok(()),
        Err(e) => Err(e),
    }
}

/// A consumer id that may name a URL path and a file: what candlepin issues (a UUID).
pub fn checked_uuid(base: &str, uuid: &str) -> Result<String, RhsmError> {
    if !uuid.is_empty()
        && uuid.len() <= 64
        && uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(uuid.to_string())
    } else {
        Err(RhsmError(format!(
            "{}: the registration answered a consumer id that is not a UUID ({:?})",
            crate::text::clean(base),
            crate::text::clean(&uuid.chars().take(80).collect::<String>())
        )))
    }
}

/// Whether `pem` is a certificate with its key that a TLS client can present.
fn usable(base: &str, what: &str, pem: &[u8]) -> Result<(), RhsmError> {
    reqwest::Identity::from_pem(pem).map(|_| ()).map_err(|e| {
        RhsmError(format!(
            "{}: {what} is not a PEM certificate with its key: {}",
            crate::text::clean(base),
            crate::text::error_chain(&e)
        ))
    })
}

/// A client for `base` (https, or http to loopback), trusting `ca` besides the system's roots,
/// presenting `identity` where given; it follows no redirect.
fn client(
    base: &str,
    ca: Option<&Path>,
    identity: Option<&[u8]>,
) -> Result<reqwest::Client, RhsmError> {
    crate::net::check_transport(base, false).map_err(|e| RhsmError(e.to_string()))?;
    let mut builder = crate::net::client_builder(TIMEOUT, Redirects::None);
    if let Some(ca) = ca {
        builder = crate::net::trust_pem_file(builder, ca).map_err(RhsmError)?;
    }
    if let Some(identity) = identity {
        let identity = reqwest::Identity::from_pem(identity).map_err(|e| {
            RhsmError(format!(
                "the consumer's identity: {}",
                crate::text::error_chain(&e)
            ))
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| RhsmError(crate::text::error_chain(&e)))
}

/// The body of a successful answer, at most [`MAX_ANSWER`] bytes; a failure says the status
/// and the service's own `displayMessage`.
async fn send(
    base: &str,
    what: &str,
    request: reqwest::RequestBuilder,
) -> Result<Vec<u8>, RhsmError> {
    let shown = crate::text::clean(base);
    // The registration's URL carries the activation key: errors are told without it.
    let (status, body) = crate::net::exchange(request, MAX_ANSWER)
        .await
        .map_err(|e| RhsmError(format!("{shown}: {what}: {e}")))?;
    if status.is_success() {
        return Ok(body);
    }
    #[derive(serde::Deserialize)]
    struct Exception {
        #[serde(rename = "displayMessage")]
        display_message: String,
    }
    let message = serde_json::from_slice::<Exception>(&body)
        .map(|e| {
            format!(
                ": {}",
                crate::text::clean(&e.display_message.chars().take(300).collect::<String>())
            )
        })
        .unwrap_or_default();
    Err(RhsmError(format!(
        "{shown}: {what}: HTTP {}{message}",
        status.as_u16()
    )))
}
