//! One source of the header chain as `assets/header-sources.toml` writes it: its name, URL
//! templates, where it applies, and its protocol with the fields only that protocol takes.

use super::parts::KernelParts;
use serde::{Deserialize, Serialize};

/// A source's protocol, as a tag (attempts and plans carry it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    RpmRepo,
    AptRepo,
    Url,
    Koji,
    Snapshot,
    Launchpad,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RpmRepo => "rpm-repo",
            Self::AptRepo => "apt-repo",
            Self::Url => "url",
            Self::Koji => "koji",
            Self::Snapshot => "snapshot",
            Self::Launchpad => "launchpad",
        }
    }
}

/// A source's protocol with its own settings.
#[derive(Clone, Debug, PartialEq)]
pub enum Protocol {
    /// DNF repositories (`repodata/repomd.xml`), or their `mirror.list`s.
    RpmRepo {
        mirrorlist: bool,
        packages: Vec<String>,
    },
    /// APT repositories: `dists/{suite}/{component}/binary-{deb_arch}/Packages.*`.
    AptRepo {
        suites: Vec<String>,
        components: Vec<String>,
    },
    /// Explicit package URLs (`{package}` names the package).
    Url { packages: Vec<String> },
    /// A Koji hub (XML-RPC) and where it serves files (`topurl`).
    Koji {
        files: String,
        packages: Vec<String>,
    },
    /// snapshot.debian.org's machine-readable API.
    Snapshot,
    /// The Launchpad API.
    Launchpad,
}

impl Protocol {
    pub fn kind(&self) -> SourceKind {
        match self {
            Self::RpmRepo { .. } => SourceKind::RpmRepo,
            Self::AptRepo { .. } => SourceKind::AptRepo,
            Self::Url { .. } => SourceKind::Url,
            Self::Koji { .. } => SourceKind::Koji,
            Self::Snapshot => SourceKind::Snapshot,
            Self::Launchpad => SourceKind::Launchpad,
        }
    }

    /// The RPMs an rpm-repo, url or koji source must find, as configured.
    fn configured_packages(&self) -> &[String] {
        match self {
            Self::RpmRepo { packages, .. }
            | Self::Url { packages }
            | Self::Koji { packages, .. } => packages,
            Self::AptRepo { .. } | Self::Snapshot | Self::Launchpad => &[],
        }
    }
}

/// Where a source applies; every filter left out matches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filters {
    pub distro_version: Option<Vec<String>>,
    pub arch: Option<String>,
    /// RPM variants (`""` is the stock kernel; `rt`, `64k`, ...).
    pub variant: Option<Vec<String>>,
    /// `MAJOR.MINOR` kernel series (Amazon Linux 2's extras repositories).
    pub kernel_series: Option<Vec<String>>,
    /// Releases past (`true`) or before (`false`) their end of life.
    pub end_of_life: Option<bool>,
    /// Releases whose packages moved for good to the archive of old releases (`true`), or not.
    pub archived: Option<bool>,
}

impl Filters {
    pub fn matches(&self, parts: &KernelParts) -> bool {
        let listed = |list: &Option<Vec<String>>, value: &str| {
            list.as_ref().is_none_or(|l| l.iter().any(|v| v == value))
        };
        listed(&self.distro_version, &parts.distro_version)
            && self.arch.as_deref().is_none_or(|a| a == parts.arch)
            && listed(&self.variant, &parts.variant)
            && listed(&self.kernel_series, &parts.series)
            && self.end_of_life.is_none_or(|eol| eol == parts.end_of_life)
            && self.archived.is_none_or(|moved| moved == parts.archived)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawSource")]
pub struct SourceSpec {
    pub family: String,
    pub name: String,
    pub urls: Vec<String>,
    pub when: Filters,
    pub protocol: Protocol,
    /// A pocket before release: listed as upcoming only with [`ResolverOptions::proposed`].
    ///
    /// [`ResolverOptions::proposed`]: crate::headers::ResolverOptions::proposed
    pub proposed: bool,
    /// The credential its requests carry (`ubuntu-pro`): without one configured the source is
    /// not tried.
    pub credential: Option<String>,
    /// The keyrings that vouch for what it serves: built-in names (`RPM-GPG-KEY-Rocky-{major}`)
    /// or absolute paths, with placeholders; every one found counts.
    pub signed_by: Vec<String>,
    /// The operator's explicit opt-out: what it serves is used unchecked, with a warning each
    /// time.
    pub unverified: bool,
}

const DEFAULT_RPM_PACKAGES: &[&str] = &["kernel-devel"];

impl SourceSpec {
    pub fn kind(&self) -> SourceKind {
        self.protocol.kind()
    }

    /// The RPM packages to find for one kernel (rpm-repo, url, koji): the configured ones
    /// (default `kernel-devel`), named for its source package and variant, without those its
    /// source package does not build.
    pub fn rpm_packages_for(&self, parts: &KernelParts) -> Vec<String> {
        let configured = self.protocol.configured_packages();
        let names: Vec<&str> = if configured.is_empty() {
            DEFAULT_RPM_PACKAGES.to_vec()
        } else {
            configured.iter().map(String::as_str).collect()
        };
        names
            .into_iter()
            .filter_map(|p| parts.rpm_package(p))
            .collect()
    }

    /// Every template the source expands: URLs, suites, the Koji file root.
    fn templates(&self) -> impl Iterator<Item = &String> {
        let (suites, files): (&[String], Option<&String>) = match &self.protocol {
            Protocol::AptRepo { suites, .. } => (suites, None),
            Protocol::Koji { files, .. } => (&[], Some(files)),
            _ => (&[], None),
        };
        self.urls.iter().chain(suites).chain(files)
    }

    /// Why this source cannot be tried for the kernel, if it cannot: it names `{codename}` (or
    /// asks Launchpad, which wants the series) and the release has none in the data file.
    pub fn missing_codename(&self, parts: &KernelParts) -> Option<String> {
        let uses = self.templates().any(|t| t.contains("{codename}"))
            || self.kind() == SourceKind::Launchpad;
        (uses && parts.codename.is_empty()).then(|| {
            format!(
                "no codename for {} {}: add the release to {}",
                parts.distribution,
                parts.distro_version,
                crate::distros::DATA_FILE
            )
        })
    }
}

/// A package an rpm-repo, url or koji source finds: a name (`kernel-devel`) that may use the
/// identity's placeholders (`kernel-{flavour}-devel`), or alternatives of which the kernel's
/// version has one (`kernel-devel-{flavour}|kernel-devel`: SUSE's azure and rt flavours have a
/// source tree of their own).
fn package_pattern(pattern: &str) -> bool {
    pattern.split('|').all(|name| {
        !name.is_empty()
            && check_placeholders(name, false).is_ok()
            && name.matches('{').count() == name.matches('}').count()
            && name.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '{' | '}')
            })
    })
}

pub(super) const PLACEHOLDERS: &[&str] = &[
    "kernel",
    "version",
    "release",
    "arch",
    "deb_arch",
    "distro_version",
    "major",
    "minor",
    "codename",
    "flavour",
    "abi",
    "vault_release",
    "series",
    "srpm",
];

/// A source as written: every field any protocol takes. Converting it checks that each field
/// belongs to the source's kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    family: String,
    name: String,
    kind: SourceKind,
    urls: Vec<String>,
    mirrorlist: Option<bool>,
    files: Option<String>,
    suites: Option<Vec<String>>,
    components: Option<Vec<String>>,
    packages: Option<Vec<String>>,
    #[serde(default, deserialize_with = "one_or_many")]
    when_distro_version: Option<Vec<String>>,
    when_arch: Option<String>,
    when_variant: Option<Vec<String>>,
    when_kernel_series: Option<Vec<String>>,
    when_end_of_life: Option<bool>,
    #[serde(default)]
    when_archived: Option<bool>,
    /// A pocket before release (`-proposed`, `updates-testing`): its kernels are listed as
    /// upcoming only on request; headers are still resolved from it, after the released ones.
    #[serde(default)]
    proposed: bool,
    /// The credential its requests carry (see `headers::credentials`).
    credential: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    signed_by: Option<Vec<String>>,
    #[serde(default)]
    unverified: bool,
}

/// A string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(v) => vec![v],
        OneOrMany::Many(v) => v,
    }))
}

impl TryFrom<RawSource> for SourceSpec {
    type Error = String;

    fn try_from(raw: RawSource) -> Result<Self, String> {
        let name = raw.name.clone();
        let kind = raw.kind;
        let fail = |what: String| format!("source {name}: {what}");
        if crate::identity::Distribution::from_alias(&raw.family).is_none() {
            return Err(fail(format!("unknown family '{}'", raw.family)));
        }
        if raw.urls.is_empty() {
            return Err(fail("no urls".into()));
        }
        if let Some(credential) = &raw.credential
            && !super::credentials::KNOWN.contains(&credential.as_str())
        {
            return Err(fail(format!(
                "unknown credential '{}'; kfleet knows {}",
                crate::text::clean(credential),
                super::credentials::KNOWN.join(", ")
            )));
        }
        // Fields of other kinds: say which kinds take them.
        use SourceKind::{AptRepo, Koji, RpmRepo, Url};
        let takes: [(&str, bool, &[SourceKind]); 6] = [
            ("mirrorlist", raw.mirrorlist.is_some(), &[RpmRepo]),
            ("files", raw.files.is_some(), &[Koji]),
            ("suites", raw.suites.is_some(), &[AptRepo]),
            ("components", raw.components.is_some(), &[AptRepo]),
            ("packages", raw.packages.is_some(), &[RpmRepo, Url, Koji]),
            (
                "signed_by",
                raw.signed_by.is_some(),
                &[AptRepo, RpmRepo, Url, Koji],
            ),
        ];
        for (field, present, kinds) in takes {
            if present && !kinds.contains(&kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                let names = match names.split_last() {
                    Some((last, rest)) if !rest.is_empty() => {
                        format!("{} and {last}", rest.join(", "))
                    }
                    _ => names.join(""),
                };
                return Err(fail(format!(
                    "{field} applies to {names} sources, not {}",
                    kind.as_str()
                )));
            }
        }
        let packages = raw.packages.unwrap_or_default();
        if let Some(bad) = packages.iter().find(|p| !package_pattern(p)) {
            return Err(fail(format!(
                "package name '{bad}' may only hold letters, digits, - _ . + and placeholders such as {{flavour}}; '|' separates alternatives"
            )));
        }
        let protocol = match kind {
            SourceKind::RpmRepo => Protocol::RpmRepo {
                mirrorlist: raw.mirrorlist.unwrap_or(false),
                packages,
            },
            SourceKind::AptRepo => {
                let (suites, components) = (
                    raw.suites.unwrap_or_default(),
                    raw.components.unwrap_or_default(),
                );
                if suites.is_empty() || components.is_empty() {
                    return Err(fail("apt-repo needs suites and components".into()));
                }
                Protocol::AptRepo { suites, components }
            }
            SourceKind::Url => {
                if packages.len() > 1
                    && let Some(u) = raw.urls.iter().find(|u| !u.contains("{package}"))
                {
                    return Err(fail(format!(
                        "it lists several packages, so each URL template needs {{package}}; {u} has none"
                    )));
                }
                Protocol::Url { packages }
            }
            SourceKind::Koji => Protocol::Koji {
                files: raw
                    .files
                    .ok_or_else(|| fail("koji needs files (the hub's topurl)".into()))?,
                packages,
            },
            SourceKind::Snapshot => Protocol::Snapshot,
            SourceKind::Launchpad => Protocol::Launchpad,
        };
        let spec = SourceSpec {
            family: raw.family,
            name: raw.name,
            urls: raw.urls,
            when: Filters {
                distro_version: raw.when_distro_version,
                arch: raw.when_arch,
                variant: raw.when_variant,
                kernel_series: raw.when_kernel_series,
                end_of_life: raw.when_end_of_life,
                archived: raw.when_archived,
            },
            protocol,
            proposed: raw.proposed,
            credential: raw.credential,
            signed_by: raw.signed_by.unwrap_or_default(),
            unverified: raw.unverified,
        };
        for entry in &spec.signed_by {
            if !entry.starts_with('/') && entry.contains('/') {
                return Err(fail(format!(
                    "signed_by '{}' is neither a built-in keyring's name nor an absolute path",
                    crate::text::clean(entry)
                )));
            }
            check_placeholders(entry, false).map_err(&fail)?;
        }
        let url_kind = kind == SourceKind::Url;
        for template in spec.templates() {
            let package = url_kind && spec.urls.contains(template);
            check_placeholders(template, package).map_err(&fail)?;
        }
        Ok(spec)
    }
}

/// Checks a template's placeholders; `{package}` only where `package` allows it (url templates).
fn check_placeholders(template: &str, package: bool) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("{{ without a closing }} in {template}"));
        };
        let name = &rest[open + 1..open + close];
        if !(PLACEHOLDERS.contains(&name) || (package && (name == "package" || name == "sigkey"))) {
            return Err(format!(
                "unknown placeholder {{{name}}} in {template}; known: {}{}",
                PLACEHOLDERS.join(" "),
                if package { " package sigkey" } else { "" }
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}
