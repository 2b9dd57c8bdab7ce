//! The fallback chain (`assets/header-sources.toml`): its sources in order, those that apply to
//! one identity, and the plan of what each would fetch.

use super::parts::KernelParts;
use super::spec::{Protocol, SourceKind, SourceSpec};
use crate::identity::{Distribution, KernelIdentity};
use crate::text::Cause;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const BUILTIN_SOURCES: &str = include_str!("../../assets/header-sources.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainFile {
    sources: Vec<SourceSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("cannot read header sources {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("header sources {path}: {source}")]
    Invalid { path: String, source: Cause },
}

/// The ordered sources, per family.
#[derive(Clone, Debug)]
pub struct Chain {
    pub sources: Vec<SourceSpec>,
}

impl Chain {
    #[expect(
        clippy::expect_used,
        reason = "embedded at build time and parsed by a unit test"
    )]
    pub fn builtin() -> Self {
        Self::parse("(built-in header-sources.toml)", BUILTIN_SOURCES)
            .expect("the built-in header sources are valid")
    }

    /// The chain in `path`, or the built-in one when there is none.
    pub fn load_or_builtin(path: Option<&Path>) -> Result<Self, ChainError> {
        match path {
            Some(path) => Self::load(path),
            None => Ok(Self::builtin()),
        }
    }

    pub fn load(path: &Path) -> Result<Self, ChainError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ChainError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&shown, &text)
    }

    /// Parses a chain file; each source is checked as it is read (see `spec`).
    pub fn parse(path: &str, text: &str) -> Result<Self, ChainError> {
        let file: ChainFile = toml::from_str(text).map_err(|e| ChainError::Invalid {
            path: path.to_string(),
            source: Cause::of(e),
        })?;
        Ok(Self {
            sources: file.sources,
        })
    }

    /// The sources that apply to `id`, in order.
    pub fn for_identity<'a>(&'a self, id: &KernelIdentity) -> Vec<&'a SourceSpec> {
        let parts = KernelParts::of(id);
        self.sources
            .iter()
            .filter(|s| {
                Distribution::from_alias(&s.family).map(|(d, _)| d) == Some(id.distribution)
            })
            .filter(|s| s.when.matches(&parts))
            .collect()
    }
}

/// One source as it would be tried for an identity: the exact first requests.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedSource {
    pub name: String,
    pub kind: SourceKind,
    /// The requests the source makes before any answer (later ones follow from answers).
    pub urls: Vec<String>,
    /// Why the source cannot be tried for this kernel (a release missing from the data file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The credential its requests carry (`ubuntu-pro`); without it the source is not tried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The packages it looks for: the RPMs for rpm-repo, url and koji; the headers package (and
    /// its dependencies) for apt-repo, snapshot and launchpad.
    pub packages: Vec<String>,
    /// What will check what it serves: the keyrings its `signed_by` finds on this machine, the
    /// distribution's API, or that nothing will (`unverified = true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_by: Option<String>,
    /// Why nothing on this machine can check it (no keyring found): then it is not tried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchecked: Option<String>,
}

/// The chain for `id` without touching the network: each source with the requests it would
/// make, computed by the same code the resolver runs.
pub fn plan(chain: &Chain, id: &KernelIdentity) -> Vec<PlannedSource> {
    let parts = KernelParts::of(id);
    chain
        .for_identity(id)
        .into_iter()
        .map(|s| {
            let problem = s.missing_codename(&parts);
            let (checked_by, unchecked) = match &s.protocol {
                Protocol::Snapshot | Protocol::Launchpad => (
                    Some("checksums from the distribution's API over https".to_string()),
                    None,
                ),
                _ if s.unverified => (Some("NOTHING: unverified = true".to_string()), None),
                _ => match super::trust::keyring_for(s, &parts) {
                    Ok(keyring) => (Some(keyring.origin), None),
                    Err(e) => (None, Some(e)),
                },
            };
            PlannedSource {
                name: s.name.clone(),
                kind: s.kind(),
                urls: if problem.is_some() || unchecked.is_some() {
                    Vec::new()
                } else {
                    super::sources::first_requests(s, &parts)
                },
                problem,
                credential: s.credential.clone(),
                packages: super::sources::wanted(s, &parts),
                checked_by,
                unchecked,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_chain_files_are_explained() {
        let err = Chain::parse("x.toml", "[[sources]]\nfamily = \"fedora\"\nname = \"a\"\nkind = \"url\"\nurls = [\"https://h/{kernal}\"]\n")
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown placeholder {kernal}"),
            "{err}"
        );
        let err = Chain::parse(
            "x.toml",
            "[[sources]]\nfamily = \"gentoo\"\nname = \"a\"\nkind = \"url\"\nurls = [\"u\"]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown family 'gentoo'"), "{err}");
        let source = |kind: &str, extra: &str, url: &str| {
            Chain::parse(
                "x.toml",
                &format!(
                    "[[sources]]\nfamily = \"centos\"\nname = \"a\"\nkind = \"{kind}\"\nurls = [\"{url}\"]\n{extra}"
                ),
            )
        };
        let err = source(
            "url",
            "packages = [\"kernel-devel\", \"kernel-headers\"]",
            "https://h/kernel-devel.rpm",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("each URL template needs {package}"),
            "{err}"
        );
        let err = source(
            "apt-repo",
            "packages = [\"x\"]\nsuites = [\"s\"]\ncomponents = [\"main\"]",
            "https://h/",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("packages applies to rpm-repo, url and koji sources, not apt-repo"),
            "{err}"
        );
        let err = source("rpm-repo", "packages = [\"kernel devel\"]", "https://h/").unwrap_err();
        assert!(
            err.to_string().contains("package name 'kernel devel'"),
            "{err}"
        );
        let err = source("rpm-repo", "", "https://h/{package}/").unwrap_err();
        assert!(
            err.to_string().contains("unknown placeholder {package}"),
            "{err}"
        );
        let ok = source(
            "url",
            "packages = [\"kernel-devel\", \"kernel-headers\"]",
            "https://h/{package}-{version}.rpm",
        )
        .unwrap();
        assert_eq!(
            super::super::sources::url_templates_for(&ok.sources[0], "kernel-headers", false),
            ["https://h/kernel-headers-{version}.rpm"]
        );
        let err = source("koji", "files = \"https://h/{kernal\"", "https://h/").unwrap_err();
        assert!(
            err.to_string()
                .contains("{ without a closing } in https://h/{kernal"),
            "{err}"
        );
        let err = source("url", "when_varient = [\"rt\"]", "https://h/").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `when_varient`"),
            "{err}"
        );
        let err = source(
            "rpm-repo",
            "packages = [\"kernel-{flavur}-devel\"]",
            "https://h/",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("package name 'kernel-{flavur}-devel'"),
            "{err}"
        );
        assert!(
            source(
                "rpm-repo",
                "packages = [\"kernel-devel-{flavour}|kernel-devel\"]",
                "https://h/"
            )
            .is_ok()
        );
        let builtin = Chain::builtin();
        assert_eq!(builtin.sources.len(), 55);
        assert_eq!(
            builtin
                .sources
                .iter()
                .filter(|s| s.credential.as_deref()
                    == Some(super::super::credentials::RHEL_ENTITLEMENT))
                .count(),
            2,
            "RHEL's CDN: the stock kernels' repositories and the real-time ones"
        );
        assert_eq!(
            builtin
                .sources
                .iter()
                .filter(|s| s.credential.as_deref() == Some(super::super::credentials::UBUNTU_PRO))
                .count(),
            3,
            "Ubuntu Pro's ESM infra, FIPS updates and real-time archives"
        );
        assert_eq!(
            builtin
                .sources
                .iter()
                .filter(|s| s.credential.as_deref()
                    == Some(super::super::credentials::SUSE_REGISTRATION))
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["sles-scc", "sles16-scc"],
            "SUSE's registered repositories of SLES 15 and 16"
        );
        assert_eq!(
            builtin.sources.iter().filter(|s| s.proposed).count(),
            4,
            "Ubuntu's -proposed (archive and ports), Debian's proposed-updates, Fedora's updates-testing"
        );
    }
}
