//! SUSE Customer Center's registration API (SCC, as SUSEConnect speaks it; an RMT server answers
//! the same calls): a system announced with the organisation's registration code, the products
//! that hold the kernel's headers activated on it, the repository URLs its services list (each
//! carrying an access token), and the system deregistered again. A build job registers once,
//! fetches its headers through the header chain's `suse-registration` credential, and
//! deregisters.
//!
//! The calls: `POST /connect/subscriptions/systems` with `Authorization: Token token=REGCODE`
//! (answers the system's `login` and `password`); with those as HTTP Basic,
//! `POST /connect/systems/products` per product (`{identifier, version, arch, token}`; answers
//! the product's service), `GET` each service's URL (its repository index, libzypp's `repoindex`
//! XML), and `DELETE /connect/systems`.

use crate::net::Redirects;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// SUSE Customer Center.
pub const DEFAULT_URL: &str = "https://scc.suse.com";
/// The largest answer read (a product's answer lists its extensions' trees).
const MAX_ANSWER: usize = 8 << 20;
const TIMEOUT: Duration = Duration::from_secs(60);
/// The most repositories one registration keeps, and the longest URL.
const MAX_REPOSITORIES: usize = 2000;
const MAX_URL: usize = 4096;

/// What went wrong talking to the registration service; never quotes a registration code, a
/// password or a repository token.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SccError(String);

/// A registered system and what it may read: the file `kfleet suse register` writes and the
/// `suse-registration` credential reads.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The registration service that issued it (for deregistration).
    pub scc_url: String,
    pub system: System,
    /// Every repository of the activated products' services.
    pub repositories: Vec<Repository>,
}

/// A system's identity at the registration service.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub id: u64,
    pub login: String,
    pub password: String,
}

/// A repository a service lists: its URL carries the access token (`…/update?TOKEN`), or
/// `?credentials=NAME` where the system's own login opens it (RMT, SUSE Manager).
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    pub name: String,
    pub url: String,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL carries the token.
        f.debug_struct("Repository")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The login, the password and the tokens never reach a log.
        f.debug_struct("Registration")
            .field("scc_url", &self.scc_url)
            .field("system", &self.system.id)
            .field(
                "repositories",
                &self
                    .repositories
                    .iter()
                    .map(|r| &r.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The largest registration file read (two thousand repositories with their tokens fit in one
/// MiB).
const MAX_REGISTRATION: u64 = 4 << 20;

impl Registration {
    /// The text of the registration file at `path`, bounded in size.
    pub fn read_text(path: &std::path::Path) -> Result<String, String> {
        let bytes = crate::bounded::read_file(path, MAX_REGISTRATION)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
    }

    /// Reads what `kfleet suse register` wrote; an error says what is wrong without quoting it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let registration: Self = serde_json::from_str(text).map_err(|e| {
            format!(
                "not what kfleet suse register writes (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        if registration.system.login.is_empty() || registration.system.password.is_empty() {
            return Err("the system's login or password is empty".into());
        }
        if registration.repositories.len() > MAX_REPOSITORIES {
            return Err(format!("more than {MAX_REPOSITORIES} repositories"));
        }
        for (i, r) in registration.repositories.iter().enumerate() {
            checked_repository_url(&r.url)
                .map_err(|problem| format!("repository {} ({}): {problem}", i + 1, r.name))?;
        }
        Ok(registration)
    }
}

/// A repository URL that may be used: http(s), https unless to loopback, no login in it, not
/// too long. The problem is told without the URL (its query is a token).
pub fn checked_repository_url(url: &str) -> Result<reqwest::Url, String> {
    if url.len() > MAX_URL {
        return Err(format!("its URL is longer than {MAX_URL} bytes"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("its URL does not parse: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("its URL holds a login".into());
    }
    crate::net::check_transport(parsed.as_str(), false).map_err(|_| {
        format!(
            "its URL is not https ({}://{})",
            parsed.scheme(),
            parsed.host_str().unwrap_or_default()
        )
    })?;
    Ok(parsed)
}

/// A product to activate: `SLES`, `15.7`, `x86_64`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    pub identifier: String,
    pub version: String,
    pub arch: String,
}

impl std::fmt::Display for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.identifier, self.version, self.arch)
    }
}

impl std::str::FromStr for Product {
    type Err = String;

    /// `IDENTIFIER/VERSION/ARCH`, as SUSEConnect's `--product` takes it.
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let word = |w: &str| {
            !w.is_empty()
                && w.len() <= 100
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        match parts.as_slice() {
            [i, v, a] if [i, v, a].iter().all(|w| word(w)) => Ok(Self {
                identifier: (*i).to_string(),
                version: (*v).to_string(),
                arch: (*a).to_string(),
            }),
            _ => Err(format!(
                "'{}' is not IDENTIFIER/VERSION/ARCH (SLES/15.7/x86_64)",
                crate::text::clean(&s.chars().take(80).collect::<String>())
            )),
        }
    }
}

/// Announces a system named `hostname` with the registration code `regcode`.
pub async fn announce(
    base: &str,
    regcode: &str,
    hostname: &str,
    arch: &str,
) -> Result<System, SccError> {
    #[derive(Deserialize)]
    struct Answer {
        id: u64,
        login: String,
        password: String,
    }
    let body = serde_json::json!({
        "hostname": hostname,
        "hwinfo": {"hostname": hostname, "arch": arch},
    });
    let request = client(base)?
        .post(format!("{}/connect/subscriptions/systems", trimmed(base)))
        .header(
            reqwest::header::AUTHORIZATION,
            format!("Token token={regcode}"),
        )
        .json(&body);
    let answer = send(base, "the registration", request).await?;
    let answer: Answer = serde_json::from_slice(&answer).map_err(|e| {
        SccError(format!(
            "{}: the registration's answer is not a system: {e}",
            crate::text::clean(base)
        ))
    })?;
    if answer.login.is_empty() || answer.password.is_empty() {
        return Err(SccError(format!(
            "{}: the registration answered a system without a login",
            crate::text::clean(base)
        )));
    }
    Ok(System {
        id: answer.id,
        login: answer.login,
        password: answer.password,
    })
}

/// Activates `product` on the system (`regcode` for a paid product, none for a free module)
/// and answers the URL of its service.
pub async fn activate(
    base: &str,
    system: &System,
    product: &Product,
    regcode: Option<&str>,
) -> Result<String, SccError> {
    #[derive(Deserialize)]
    struct Service {
        url: String,
    }
    let mut body = serde_json::json!({
        "identifier": product.identifier,
        "version": product.version,
        "arch": product.arch,
    });
    if let Some(code) = regcode {
        body["token"] = code.into();
    }
    let request = client(base)?
        .post(format!("{}/connect/systems/products", trimmed(base)))
        .basic_auth(&system.login, Some(&system.password))
        .json(&body);
    let what = format!("the activation of {product}");
    let answer = send(base, &what, request).await?;
    let service: Service = serde_json::from_slice(&answer).map_err(|e| {
        SccError(format!(
            "{}: {what}: the answer is not a service: {e}",
            crate::text::clean(base)
        ))
    })?;
    Ok(service.url)
}

/// The repositories a service lists, read with the system's login where zypper reads them:
/// `repo/repoindex.xml` under the service's URL, its query kept (`?credentials=NAME`). The
/// service must be on the registration service's own host: the login goes nowhere else.
pub async fn service_repositories(
    base: &str,
    system: &System,
    service_url: &str,
) -> Result<Vec<Repository>, SccError> {
    let shown = format!("{}: a service", crate::text::clean(base));
    let service = checked_repository_url(service_url)
        .map_err(|problem| SccError(format!("{shown}: {problem}")))?;
    if !crate::net::same_origin(service.as_str(), base) {
        return Err(SccError(format!(
            "{shown} is on another host ({}): the system's login is sent to the registration service only",
            service.host_str().unwrap_or_default()
        )));
    }
    let mut url = service.clone();
    url.set_path(&format!(
        "{}/repo/repoindex.xml",
        service.path().trim_end_matches('/')
    ));
    let request = client(base)?
        .get(url)
        .basic_auth(&system.login, Some(&system.password));
    let answer = send(base, "a service's repository index", request).await?;
    parse_repoindex(&answer, &service).map_err(|problem| SccError(format!("{shown}: {problem}")))
}

/// libzypp's repository index: `<repoindex><repo url="…" alias="…" name="…"/>…</repoindex>`; a
/// `path` instead of a `url` is relative to the service. Every URL is checked.
pub fn parse_repoindex(xml: &[u8], service: &reqwest::Url) -> Result<Vec<Repository>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut repositories = Vec::new();
    let mut index = false;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("the repository index is not XML: {e}"))?;
        match event {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                b"repoindex" => index = true,
                b"repo" if index => {
                    let (mut url, mut path, mut name, mut alias) = (None, None, None, None);
                    for attribute in e.attributes() {
                        let attribute =
                            attribute.map_err(|e| format!("a repository's attributes: {e}"))?;
                        let value = attribute
                            .decode_and_unescape_value(reader.decoder())
                            .map_err(|e| format!("a repository's attributes: {e}"))?
                            .into_owned();
                        match attribute.key.as_ref() {
                            b"url" => url = Some(value),
                            b"path" => path = Some(value),
                            b"name" => name = Some(value),
                            b"alias" => alias = Some(value),
                            _ => {}
                        }
                    }
                    let n = repositories.len() + 1;
                    let url = match (url, path) {
                        (Some(url), _) => url,
                        (None, Some(path)) => {
                            let mut base = service.clone();
                            base.set_query(None);
                            base.join(&path)
                                .map_err(|e| format!("repository {n}'s path: {e}"))?
                                .to_string()
                        }
                        (None, None) => return Err(format!("repository {n} has no url")),
                    };
                    let name: String = name
                        .or(alias)
                        .unwrap_or_default()
                        .chars()
                        .take(200)
                        .collect();
                    let name = crate::text::clean(&name).into_owned();
                    checked_repository_url(&url)
                        .map_err(|problem| format!("repository {n} ({name}): {problem}"))?;
                    repositories.push(Repository { name, url });
                    if repositories.len() > MAX_REPOSITORIES {
                        return Err(format!("more than {MAX_REPOSITORIES} repositories"));
                    }
                }
                _ => {}
            },
            _ => {}
        }
        buf.clear();
    }
    if !index {
        return Err("the answer is not a repository index (no <repoindex>)".into());
    }
    Ok(repositories)
}

/// Deregisters the system; one the service no longer knows (404, 410) counts as gone.
pub async fn deregister(base: &str, system: &System) -> Result<(), SccError> {
    let request = client(base)?
        .delete(format!("{}/connect/systems", trimmed(base)))
        .basic_auth(&system.login, Some(&system.password));
    match send(base, "the deregistration", request).await {
        Ok(_) => Ok(()),
        Err(e) if e.0.contains("HTTP 404") || e.0.contains("HTTP 410") => Ok(()),
        Err(e) => Err(e),
    }
}

fn trimmed(base: &str) -> &str {
    base.trim_end_matches('/')
}

/// A client for `base` (https, or http to loopback) that follows no redirect: a login is never
/// carried to another host.
fn client(base: &str) -> Result<reqwest::Client, SccError> {
    crate::net::check_transport(base, false).map_err(|e| SccError(e.to_string()))?;
    crate::net::http_client(TIMEOUT, Redirects::None, None).map_err(SccError)
}

/// The body of a successful answer, at most [`MAX_ANSWER`] bytes; a failure says the status
/// and the service's own message (`localized_error`, else `error`).
async fn send(
    base: &str,
    what: &str,
    request: reqwest::RequestBuilder,
) -> Result<Vec<u8>, SccError> {
    let shown = crate::text::clean(base);
    // A service's URL may carry a token: errors are told without it.
    let request = request.header(
        reqwest::header::ACCEPT,
        "application/json,application/vnd.scc.suse.com.v4+json",
    );
    let (status, body) = crate::net::exchange(request, MAX_ANSWER)
        .await
        .map_err(|e| SccError(format!("{shown}: {what}: {e}")))?;
    if status.is_success() {
        return Ok(body);
    }
    #[derive(Deserialize)]
    struct ApiError {
        error: Option<String>,
        localized_error: Option<String>,
    }
    let message = serde_json::from_slice::<ApiError>(&body)
        .ok()
        .and_then(|e| e.localized_error.or(e.error))
        .map(|m| {
            format!(
                ": {}",
                crate::text::clean(&m.chars().take(300).collect::<String>())
            )
        })
        .unwrap_or_default();
    Err(SccError(format!(
        "{shown}: {what}: HTTP {}{message}",
        status.as_u16()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_index_lists_checked_urls() {
        let service =
            reqwest::Url::parse("https://scc.suse.com/access/services/2502?credentials=Basesystem")
                .unwrap();
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<repoindex ttl="86400">
<repo url="https://updates.suse.com/SUSE/Updates/SLE-Module-Basesystem/15-SP7/x86_64/update?aB3_x-9&amp;z" alias="Basesystem_Module_15_SP7_x86_64:SLE-Module-Basesystem15-SP7-Updates" name="SLE-Module-Basesystem15-SP7-Updates" autorefresh="true" enabled="true" distro_target="sle-15-x86_64"/>
<repo path="repo/SUSE/Products/SLE-Module-Basesystem/15-SP7/x86_64/product" alias="pool" name="SLE-Module-Basesystem15-SP7-Pool" autorefresh="false" enabled="true"/>
</repoindex>"#;
        let repos = parse_repoindex(xml, &service).unwrap();
        assert_eq!(
            repos.iter().map(|r| r.url.as_str()).collect::<Vec<_>>(),
            [
                "https://updates.suse.com/SUSE/Updates/SLE-Module-Basesystem/15-SP7/x86_64/update?aB3_x-9&z",
                "https://scc.suse.com/access/services/repo/SUSE/Products/SLE-Module-Basesystem/15-SP7/x86_64/product",
            ]
        );
        assert_eq!(repos[0].name, "SLE-Module-Basesystem15-SP7-Updates");

        let plain =
            br#"<repoindex><repo url="http://mirror.example/SUSE?tok" name="x"/></repoindex>"#;
        let e = parse_repoindex(plain, &service).unwrap_err();
        assert!(e.contains("not https") && !e.contains("tok"), "{e}");
        assert!(
            parse_repoindex(b"<html/>", &service)
                .unwrap_err()
                .contains("no <repoindex>")
        );
        let login = br#"<repoindex><repo url="https://u:p@updates.suse.com/x?tok"/></repoindex>"#;
        assert!(
            parse_repoindex(login, &service)
                .unwrap_err()
                .contains("login")
        );
    }

    #[test]
    fn a_service_on_another_host_never_gets_the_login() {
        let system = System {
            id: 1,
            login: "SCC_x".into(),
            password: "pw".into(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt
            .block_on(service_repositories(
                "https://scc.suse.com",
                &system,
                "https://scc.suse.com.evil.example/access/services/1?credentials=x",
            ))
            .unwrap_err();
        assert!(e.to_string().contains("another host"), "{e}");
    }

    #[test]
    fn products_are_identifier_version_arch() {
        let p: Product = "sle-module-basesystem/15.7/x86_64".parse().unwrap();
        assert_eq!(p.to_string(), "sle-module-basesystem/15.7/x86_64");
        assert!("SLES/15.7".parse::<Product>().is_err());
        assert!("SLES/15.7/x86_64/../x".parse::<Product>().is_err());
        assert!("SLES/15 7/x86_64".parse::<Product>().is_err());
    }

    #[test]
    fn a_registration_file_is_checked_and_never_shown() {
        let text = r#"{"scc_url":"https://scc.suse.com","system":{"id":7,"login":"SCC_l0gin","password":"s3cret"},"repositories":[{"name":"u","url":"https://updates.suse.com/SUSE/Updates/x?T0KEN"}]}"#;
        let r = Registration::parse(text).unwrap();
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("T0KEN") && !shown.contains("SCC_l0gin")
        );
        let e = Registration::parse(&text.replace("https://updates", "ftp://updates")).unwrap_err();
        assert!(!e.contains("T0KEN"), "{e}");
        let e = Registration::parse(&text.replace("s3cret", "")).unwrap_err();
        assert!(e.contains("password"), "{e}");
        let e = Registration::parse("{\"scc_url\": \"s3cret").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
