//! Credentials for header sources that need them: a source names a credential, and the resolver
//! presents it the way the distribution's own package manager does.
//!
//! - Ubuntu Pro's archives on esm.ubuntu.com (`credential = "ubuntu-pro"`): HTTP Basic with the
//!   login apt's auth.conf gives (`bearer` for Ubuntu Pro). Given as a bare token (sent to every
//!   URL of the sources that name the credential) or as the text of an apt `auth.conf`
//!   (`machine esm.ubuntu.com/infra/ubuntu/ login bearer password TOKEN`, one entry per Pro
//!   service, matched to a URL by prefix as apt matches them).
//! - Red Hat's CDN (`credential = "rhel-entitlement"`): a TLS client certificate, the
//!   entitlement certificate and key a subscribed system keeps in `/etc/pki/entitlement/` (what
//!   dnf presents as `sslclientcert`/`sslclientkey`), with the CDN's CA where it is not a public
//!   one (`/etc/rhsm/ca/redhat-uep.pem`).
//! - SUSE's registered repositories (`credential = "suse-registration"`): what `kfleet suse
//!   register` wrote (`headers::scc`). A repository's URL carries its access token as its query
//!   (`…/update?TOKEN`), which zypper appends to every file of the repository; kfleet does the same
//!   for a URL under a registered repository's. A repository opened by `?credentials=NAME` (RMT,
//!   SUSE Manager) gets the system's login as HTTP Basic instead.
//!
//! Never sent in the clear to a host off this machine, never printed.

use std::collections::BTreeMap;

/// The credential Ubuntu Pro's sources name.
pub const UBUNTU_PRO: &str = "ubuntu-pro";
/// The credential Red Hat's CDN sources name.
pub const RHEL_ENTITLEMENT: &str = "rhel-entitlement";
/// The credential SUSE's registered repositories name.
pub const SUSE_REGISTRATION: &str = "suse-registration";
/// Every credential a source may name.
pub const KNOWN: &[&str] = &[UBUNTU_PRO, RHEL_ENTITLEMENT, SUSE_REGISTRATION];

/// What a credential is, for messages that say one is missing.
pub fn what(name: &str) -> &'static str {
    match name {
        UBUNTU_PRO => "an Ubuntu Pro token",
        RHEL_ENTITLEMENT => "a Red Hat entitlement certificate and key",
        SUSE_REGISTRATION => "a SUSE registration: kfleet suse register",
        _ => "a login",
    }
}

/// Logins by credential name.
#[derive(Clone, Default)]
pub struct Credentials {
    by_name: BTreeMap<String, Vec<Machine>>,
    certificates: BTreeMap<String, ClientCertificate>,
    repositories: BTreeMap<String, Vec<RegisteredRepository>>,
}

/// A repository of a registration: where it is, and how a request under it is let in.
#[derive(Clone)]
struct RegisteredRepository {
    /// `HOST[:PORT]/PATH` without the scheme, the query or a trailing `/`.
    prefix: String,
    access: RepositoryAccess,
}

/// How a request to a registered repository is let in.
#[derive(Clone, PartialEq, Eq)]
pub enum RepositoryAccess {
    /// The repository's token, appended as the query of every URL under it.
    Token(String),
    /// The system's login, as HTTP Basic.
    Login { login: String, password: String },
}

impl std::fmt::Debug for RepositoryAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The kind only: a token or a password never reaches a log.
        f.write_str(match self {
            Self::Token(_) => "Token(..)",
            Self::Login { .. } => "Login(..)",
        })
    }
}

/// A TLS client certificate with its key (PEM), and the CA the server's certificate chains to
/// where it is a private one.
#[derive(Clone)]
struct ClientCertificate {
    identity: Vec<u8>,
    ca: Option<Vec<u8>>,
}

#[derive(Clone)]
struct Machine {
    /// `HOST[:PORT]/PATH` without the scheme; empty: every URL of the sources that name it.
    prefix: String,
    login: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: a token or a key never reaches a log.
        f.debug_set()
            .entries(
                self.by_name
                    .keys()
                    .chain(self.certificates.keys())
                    .chain(self.repositories.keys()),
            )
            .finish()
    }
}

/// Why a credential's text cannot be used (the text itself is never quoted).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("the {0} credential is empty")]
    Empty(String),
    #[error(
        "the {name} credential is neither one token nor apt auth.conf entries (machine HOST/PATH login LOGIN password PASSWORD): {problem}"
    )]
    Malformed { name: String, problem: String },
    #[error("the {name} credential is not usable: {problem}")]
    Registration { name: String, problem: String },
    #[error("the {name} credential's {what} is not usable: {problem}")]
    Certificate {
        name: String,
        what: &'static str,
        problem: String,
    },
}

impl Credentials {
    /// Adds `text` for the credential `name`: one token (Ubuntu Pro's login is `bearer`), or an
    /// apt auth.conf's entries.
    pub fn add(&mut self, name: &str, text: &str) -> Result<(), CredentialError> {
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default())
            .collect();
        let words: Vec<&str> = lines.iter().flat_map(|l| l.split_whitespace()).collect();
        if words.is_empty() {
            return Err(CredentialError::Empty(name.to_string()));
        }
        let machines = if words.contains(&"machine") {
            parse_auth_conf(name, &words)?
        } else if words.len() == 1 {
            vec![Machine {
                prefix: String::new(),
                login: "bearer".into(),
                password: words[0].to_string(),
            }]
        } else {
            return Err(CredentialError::Malformed {
                name: name.to_string(),
                problem: format!("{} words and no `machine` entry", words.len()),
            });
        };
        self.by_name
            .entry(name.to_string())
            .or_default()
            .extend(machines);
        Ok(())
    }

    /// Adds a TLS client certificate for the credential `name`: the certificate and its private
    /// key (PEM; one file may hold both), and the PEM CA certificates its server chains to
    /// where that is not a public CA. Checked now: a certificate without its key, or a key that
    /// reqwest cannot use, is refused (neither is quoted).
    pub fn add_certificate(
        &mut self,
        name: &str,
        certificate: &[u8],
        key: &[u8],
        ca: Option<&[u8]>,
    ) -> Result<(), CredentialError> {
        use rustls_pki_types::pem::PemObject;
        let refuse = |what: &'static str, problem: String| CredentialError::Certificate {
            name: name.to_string(),
            what,
            problem,
        };
        let certificates = rustls_pki_types::CertificateDer::pem_slice_iter(certificate)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refuse("certificate", e.to_string()))?;
        if certificates.is_empty() {
            return Err(refuse("certificate", "no PEM CERTIFICATE in it".into()));
        }
        rustls_pki_types::PrivateKeyDer::from_pem_slice(key)
            .map_err(|_| refuse("key", "no PEM private key in it".into()))?;
        let mut identity = certificate.to_vec();
        identity.push(b'\n');
        identity.extend_from_slice(key);
        reqwest::Identity::from_pem(&identity).map_err(|e| refuse("key", e.to_string()))?;
        if let Some(ca) = ca {
            let roots = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| refuse("CA", e.to_string()))?;
            if roots.is_empty() {
                return Err(refuse("CA", "no PEM CERTIFICATE in it".into()));
            }
        }
        self.certificates.insert(
            name.to_string(),
            ClientCertificate {
                identity,
                ca: ca.map(<[u8]>::to_vec),
            },
        );
        Ok(())
    }

    /// Adds a SUSE registration (`kfleet suse register`'s file) for the credential `name`: its
    /// repositories, each opened by its token or by the system's login.
    pub fn add_registration(&mut self, name: &str, text: &str) -> Result<(), CredentialError> {
        let registration = super::scc::Registration::parse(text).map_err(|problem| {
            CredentialError::Registration {
                name: name.to_string(),
                problem,
            }
        })?;
        if registration.repositories.is_empty() {
            return Err(CredentialError::Registration {
                name: name.to_string(),
                problem: "it lists no repository".into(),
            });
        }
        let system = &registration.system;
        let entries = registration.repositories.iter().filter_map(|r| {
            let url = super::scc::checked_repository_url(&r.url).ok()?;
            let query = url.query().unwrap_or_default();
            let access = if query.is_empty() || query.starts_with("credentials=") {
                RepositoryAccess::Login {
                    login: system.login.clone(),
                    password: system.password.clone(),
                }
            } else {
                RepositoryAccess::Token(query.to_string())
            };
            let prefix = format!(
                "{}{}",
                url_authority(&url),
                url.path().trim_end_matches('/')
            );
            Some(RegisteredRepository { prefix, access })
        });
        self.repositories
            .entry(name.to_string())
            .or_default()
            .extend(entries);
        Ok(())
    }

    /// Whether `name` is a registration (its repositories let a request in by URL).
    pub fn is_registration(&self, name: &str) -> bool {
        self.repositories.contains_key(name)
    }

    /// How the registration `name` lets `url` in: the registered repository with the longest
    /// prefix of it, matched at a `/` boundary (scheme and query left out).
    pub fn repository_access(&self, name: &str, url: &str) -> Option<&RepositoryAccess> {
        let url = reqwest::Url::parse(url).ok()?;
        let bare = format!("{}{}", url_authority(&url), url.path());
        self.repositories
            .get(name)?
            .iter()
            .filter(|r| {
                bare.strip_prefix(r.prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .max_by_key(|r| r.prefix.len())
            .map(|r| &r.access)
    }

    /// Whether any login is known for `name`.
    pub fn has(&self, name: &str) -> bool {
        self.by_name.get(name).is_some_and(|m| !m.is_empty())
            || self.certificates.contains_key(name)
            || self.repositories.get(name).is_some_and(|r| !r.is_empty())
    }

    /// Every credential with a login.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(n, _)| n.as_str())
            .chain(self.certificates.keys().map(String::as_str))
            .chain(self.repositories.keys().map(String::as_str))
    }

    /// Whether `name` is a client certificate (presented in the TLS handshake, not a header).
    pub fn is_certificate(&self, name: &str) -> bool {
        self.certificates.contains_key(name)
    }

    /// The credentials that are client certificates.
    pub fn certificate_names(&self) -> impl Iterator<Item = &str> {
        self.certificates.keys().map(String::as_str)
    }

    /// `builder` presenting the client certificate `name` (and trusting its CA), if it is one.
    pub(crate) fn with_certificate(
        &self,
        name: &str,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, String> {
        let Some(c) = self.certificates.get(name) else {
            return Ok(builder);
        };
        let identity = reqwest::Identity::from_pem(&c.identity)
            .map_err(|e| format!("the {name} certificate: {e}"))?;
        let mut builder = builder.identity(identity);
        for root in
            c.ca.as_deref()
                .map(reqwest::Certificate::from_pem_bundle)
                .transpose()
                .map_err(|e| format!("the {name} CA: {e}"))?
                .unwrap_or_default()
        {
            builder = builder.add_root_certificate(root);
        }
        Ok(builder)
    }

    /// The login and password to send to `url` for the credential `name`: the entry with the
    /// longest prefix of the URL (scheme left out), else a bare token.
    pub fn for_url(&self, name: &str, url: &str) -> Option<(&str, &str)> {
        let bare = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest)
            .trim_start_matches('/');
        self.by_name
            .get(name)?
            .iter()
            .filter(|m| m.prefix.is_empty() || prefix_matches(bare, &m.prefix))
            .max_by_key(|m| m.prefix.len())
            .map(|m| (m.login.as_str(), m.password.as_str()))
    }
}

/// `host[:port]`, lowercase, the port only where it is not the scheme's own.
fn url_authority(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// apt's rule: the entry names a host (and port) and a path prefix, and matches at a `/`
/// boundary (or anywhere below a prefix that ends in `/`).
fn prefix_matches(url: &str, prefix: &str) -> bool {
    let prefix = prefix
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    url.strip_prefix(prefix)
        .is_some_and(|rest| prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
}

fn parse_auth_conf(name: &str, words: &[&str]) -> Result<Vec<Machine>, CredentialError> {
    let malformed = |problem: String| CredentialError::Malformed {
        name: name.to_string(),
        problem,
    };
    let mut machines = Vec::new();
    let mut current: Option<(String, Option<String>, Option<String>)> = None;
    let mut finish = |m: Option<(String, Option<String>, Option<String>)>| match m {
        None => Ok(()),
        Some((prefix, Some(login), Some(password))) => {
            machines.push(Machine {
                prefix,
                login,
                password,
            });
            Ok(())
        }
        Some((prefix, _, _)) => Err(malformed(format!(
            "the entry for {prefix} lacks a login or a password"
        ))),
    };
    let mut i = 0;
    while i < words.len() {
        let key = words[i];
        let value = words
            .get(i + 1)
            .ok_or_else(|| malformed(format!("`{key}` has no value")))?;
        match key {
            "machine" => {
                finish(current.take())?;
                current = Some((value.to_string(), None, None));
            }
            "login" | "password" => {
                let Some(entry) = current.as_mut() else {
                    return Err(malformed(format!("`{key}` before any `machine`")));
                };
                let slot = if key == "login" {
                    &mut entry.1
                } else {
                    &mut entry.2
                };
                *slot = Some(value.to_string());
            }
            _ => {
                // The word is not quoted: it may be part of a secret.
                return Err(malformed(format!(
                    "an unknown word (word {} of {}); only machine, login and password are read",
                    i + 1,
                    words.len()
                )));
            }
        }
        i += 2;
    }
    finish(current.take())?;
    Ok(machines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_token_is_sent_as_bearer_to_every_url() {
        let mut c = Credentials::default();
        c.add(UBUNTU_PRO, "  tok3n \n").unwrap();
        assert_eq!(
            c.for_url(UBUNTU_PRO, "https://esm.ubuntu.com/infra/ubuntu/dists/x"),
            Some(("bearer", "tok3n"))
        );
        assert_eq!(c.for_url("other", "https://esm.ubuntu.com/"), None);
        assert!(!format!("{c:?}").contains("tok3n"));
    }

    #[test]
    fn auth_conf_entries_match_by_prefix() {
        let mut c = Credentials::default();
        c.add(
            UBUNTU_PRO,
            "# written by pro attach\nmachine esm.ubuntu.com/infra/ubuntu/ login bearer password INFRA\nmachine esm.ubuntu.com/fips-updates/ubuntu/ login bearer password FIPS  # fips\n",
        )
        .unwrap();
        assert_eq!(
            c.for_url(
                UBUNTU_PRO,
                "https://esm.ubuntu.com/fips-updates/ubuntu/pool/x.deb"
            ),
            Some(("bearer", "FIPS"))
        );
        assert_eq!(
            c.for_url(
                UBUNTU_PRO,
                "https://esm.ubuntu.com/infra/ubuntu/dists/focal"
            ),
            Some(("bearer", "INFRA"))
        );
        assert_eq!(
            c.for_url(UBUNTU_PRO, "https://esm.ubuntu.com/realtime/ubuntu/"),
            None
        );
        assert_eq!(
            c.for_url(UBUNTU_PRO, "https://esm.ubuntu.com.evil/infra/ubuntu/"),
            None
        );
    }

    #[test]
    fn registered_repositories_open_urls_under_them() {
        let mut c = Credentials::default();
        c.add_registration(
            SUSE_REGISTRATION,
            r#"{"scc_url":"https://scc.suse.com","system":{"id":7,"login":"SCC_a","password":"pw"},"repositories":[
              {"name":"updates","url":"https://updates.suse.com/SUSE/Updates/SLE-Module-Basesystem/15-SP7/x86_64/update?T0K"},
              {"name":"pool","url":"https://updates.suse.com/SUSE/Products/SLE-Module-Basesystem/15-SP7/x86_64/product/?P00L"},
              {"name":"rmt","url":"https://rmt.example:8443/repo/SUSE/Updates/SLES/16.0/x86_64/update?credentials=SUSE_Linux"}]}"#,
        )
        .unwrap();
        let access = |url: &str| c.repository_access(SUSE_REGISTRATION, url).cloned();
        assert_eq!(
            access(
                "https://updates.suse.com/SUSE/Updates/SLE-Module-Basesystem/15-SP7/x86_64/update/repodata/repomd.xml"
            ),
            Some(RepositoryAccess::Token("T0K".into()))
        );
        assert_eq!(
            access(
                "https://UPDATES.suse.com:443/SUSE/Products/SLE-Module-Basesystem/15-SP7/x86_64/product/x.rpm"
            ),
            Some(RepositoryAccess::Token("P00L".into()))
        );
        assert_eq!(
            access(
                "https://rmt.example:8443/repo/SUSE/Updates/SLES/16.0/x86_64/update/repodata/repomd.xml"
            ),
            Some(RepositoryAccess::Login {
                login: "SCC_a".into(),
                password: "pw".into()
            })
        );
        assert_eq!(
            access(
                "https://updates.suse.com/SUSE/Updates/SLE-Module-Basesystem/15-SP7/x86_64/update2/x"
            ),
            None
        );
        assert_eq!(
            access("https://rmt.example/repo/SUSE/Updates/SLES/16.0/x86_64/update/x"),
            None
        );
        assert!(c.has(SUSE_REGISTRATION) && c.is_registration(SUSE_REGISTRATION));
        assert!(!format!("{c:?}").contains("T0K"));
        let e = c
            .add_registration(
                SUSE_REGISTRATION,
                r#"{"scc_url":"x","system":{"id":1,"login":"a","password":"b"},"repositories":[]}"#,
            )
            .unwrap_err();
        assert!(e.to_string().contains("no repository"), "{e}");
    }

    #[test]
    fn malformed_text_is_refused_without_quoting_it() {
        let mut c = Credentials::default();
        assert_eq!(
            c.add(UBUNTU_PRO, " \n# nothing\n"),
            Err(CredentialError::Empty(UBUNTU_PRO.into()))
        );
        let e = c.add(UBUNTU_PRO, "two secret-words").unwrap_err();
        assert!(!e.to_string().contains("secret-words"), "{e}");
        let e = c
            .add(UBUNTU_PRO, "machine esm.ubuntu.com/ login bearer")
            .unwrap_err();
        assert!(e.to_string().contains("lacks a login or a password"), "{e}");
        assert!(!c.has(UBUNTU_PRO));
    }
}
