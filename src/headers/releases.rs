//! Release facts read from the archives. A Debian or Ubuntu release the embedded facts
//! (`assets/distro-releases.toml`) do not know yet, such as an Ubuntu release published after
//! this kfleet was built, has no codename, so no suite to read. The archive says it: the chain's
//! APT sources of the family list their suites (`dists/`), and each suite's `Release` file names
//! its `Version:` and `Codename:`. The release found is [`crate::distros::learn`]ed, so the
//! identity's parts, the chain and the build plan see it for the rest of the process. Each
//! archive is read once per process; its index and `Release` files go through the conditional
//! cache, so the next process pays 304s.

use super::Resolver;
use super::spec::SourceKind;
use crate::distros::DistroRelease;
use crate::identity::{Distribution, KernelIdentity};

/// Largest `dists/` index or `Release` file read.
const MAX_FILE: usize = 4 << 20;
/// Suites whose `Release` is read at most per archive (Debian's and Ubuntu's list a few dozen).
const MAX_SUITES: usize = 64;

/// An archive's unknown suites, as `(Version, Codename)`.
type SuiteReleases = std::sync::Arc<Vec<(String, String)>>;

/// The unknown suites of each archive read during this process.
static READ_ARCHIVES: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, SuiteReleases>>,
> = std::sync::LazyLock::new(Default::default);

/// Releases looked for in the archives during this process and not found: not asked again.
static NOT_FOUND: std::sync::Mutex<Vec<(Distribution, String)>> = std::sync::Mutex::new(Vec::new());

/// Suite names of an archive's `dists/` index (an HTTP server's directory listing): the links
/// that name one directory, without pockets (`noble-updates`) or aliases kfleet already knows.
fn suites_of(index: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in index.split("href=\"").skip(1) {
        let Some(target) = piece.split('"').next() else {
            continue;
        };
        let name = target.trim_end_matches('/');
        if target.ends_with('/')
            && !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_lowercase())
            && !out.iter().any(|n| n == name)
        {
            out.push(name.to_string());
        }
    }
    out
}

/// `Version:` and `Codename:` of a `Release` file.
fn version_and_codename(release: &str) -> Option<(String, String)> {
    let field = |name: &str| {
        release
            .lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    Some((field("Version:")?, field("Codename:")?))
}

/// Whether a `Release` file's version names `distro_version`: Ubuntu's exactly (`26.10`),
/// Debian's by its major (`13.2` is 13).
fn names_version(distribution: Distribution, found: &str, distro_version: &str) -> bool {
    match distribution {
        Distribution::Debian => found.split('.').next() == Some(distro_version),
        _ => found == distro_version,
    }
}

impl Resolver {
    /// Makes sure `id`'s release has a codename: from the embedded facts, else read from the
    /// archives of the chain's APT sources for its family. Says what it learned, or why not.
    pub async fn learn_release(&self, id: &KernelIdentity) -> Option<String> {
        let distribution = id.distribution;
        if !matches!(distribution, Distribution::Debian | Distribution::Ubuntu) {
            return None;
        }
        if let Some(known) = crate::distros::codename(distribution.as_str(), &id.distro_version) {
            return Some(known.to_string());
        }
        let asked = (distribution, id.distro_version.clone());
        if NOT_FOUND
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&asked)
        {
            return None;
        }
        // Each archive with whether it serves only releases past their end of life
        // (old-releases.ubuntu.com, archive.debian.org, Freexian's ELTS). The main archives come
        // first in the chain: a release found only in such an archive has moved there, so it is
        // past its end of life and the main archive is not asked for it again.
        let archives: Vec<(&str, bool)> = self
            .chain()
            .sources
            .iter()
            .filter(|s| {
                s.kind() == SourceKind::AptRepo
                    && !s.proposed
                    && s.credential.is_none()
                    && Distribution::from_alias(&s.family).map(|(d, _)| d) == Some(distribution)
            })
            .flat_map(|s| {
                let moved = s.when.archived == Some(true) || s.when.end_of_life == Some(true);
                s.urls.iter().map(move |u| (u.as_str(), moved))
            })
            .filter(|(u, _)| !u.contains('{'))
            .collect();
        for (archive, moved) in archives {
            match self
                .codename_in(archive, distribution, &id.distro_version)
                .await
            {
                Ok(Some(codename)) => {
                    tracing::info!(
                        "{} {} is {codename}, read from {archive}{} (kfleet's own release facts do not list it yet)",
                        distribution.as_str(),
                        id.distro_version,
                        if moved {
                            ", the archive of old releases: past its end of life"
                        } else {
                            ""
                        }
                    );
                    crate::distros::learn(DistroRelease {
                        distribution: distribution.as_str().to_string(),
                        version: id.distro_version.clone(),
                        codename: codename.clone(),
                        kernel_series: None,
                        series_package: None,
                        end_of_life: moved,
                        archived: moved,
                        registration_products: Vec::new(),
                    });
                    return Some(codename);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!("cannot read the suites of {archive}: {e}"),
            }
        }
        tracing::warn!(
            "{} {} is not in kfleet's release facts and no archive of the header chain lists it",
            distribution.as_str(),
            id.distro_version
        );
        NOT_FOUND
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(asked);
        None
    }

    /// The codename of `distro_version` among the suites `archive` lists, if it lists it.
    async fn codename_in(
        &self,
        archive: &str,
        distribution: Distribution,
        distro_version: &str,
    ) -> Result<Option<String>, String> {
        let releases = self.releases_of(archive, distribution).await?;
        Ok(releases
            .iter()
            .find(|(version, _)| names_version(distribution, version, distro_version))
            .map(|(_, codename)| codename.clone()))
    }

    /// The `(Version, Codename)` of every suite `archive` lists that kfleet's facts do not know:
    /// read once per archive and process, however many unknown releases an inventory names.
    async fn releases_of(
        &self,
        archive: &str,
        distribution: Distribution,
    ) -> Result<SuiteReleases, String> {
        if let Some(known) = READ_ARCHIVES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(archive)
        {
            return Ok(known.clone());
        }
        let base = archive.trim_end_matches('/');
        let index = self.small_get(&format!("{base}/dists/")).await?;
        let suites = suites_of(&String::from_utf8_lossy(&index));
        let mut found = Vec::new();
        for suite in suites
            .iter()
            .filter(|s| crate::distros::version_of_codename(distribution.as_str(), s).is_none())
            .take(MAX_SUITES)
        {
            let Ok(release) = self
                .small_get(&format!("{base}/dists/{suite}/Release"))
                .await
            else {
                continue;
            };
            if let Some((version, codename)) =
                version_and_codename(&String::from_utf8_lossy(&release))
                && codename.bytes().all(|b| b.is_ascii_lowercase())
            {
                found.push((version, codename));
            }
        }
        let found = std::sync::Arc::new(found);
        READ_ARCHIVES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(archive.to_string(), found.clone());
        Ok(found)
    }

    /// GET a small file through the conditional cache (metadata kept with the header cache).
    async fn small_get(&self, url: &str) -> Result<bytes::Bytes, String> {
        let cache = self
            .options
            .cache
            .as_ref()
            .map(|(dir, _)| crate::conditional::ConditionalCache::new(dir.join("metadata")));
        let kept = cache.as_ref().and_then(|c| c.read(url));
        let mut request = self.http.get(url);
        for (name, value) in kept.iter().flat_map(|k| k.conditions()) {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| crate::text::error_chain(&e))?;
        if response.status() == reqwest::StatusCode::NOT_MODIFIED
            && let Some(kept) = kept
        {
            return Ok(kept.body);
        }
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status().as_u16()));
        }
        let headers = response.headers().clone();
        let body = bytes::Bytes::from(
            crate::net::read_capped(response, MAX_FILE)
                .await
                .map_err(|e| format!("{url}: {e}"))?,
        );
        if let Some(cache) = &cache {
            cache.keep(url, &headers, body.clone()).await;
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_and_release_fields_are_read_from_real_shapes() {
        let index = r#"<html><body><h1>Index of /ubuntu/dists</h1><pre><a href="?C=N;O=D">Name</a>
<a href="/ubuntu/">Parent Directory</a>
<a href="noble/">noble/</a>  2024-04-25 15:19    -
<a href="noble-updates/">noble-updates/</a>
<a href="resolute/">resolute/</a>
<a href="devel/">devel/</a>
<a href="noble/">noble/</a>
</pre></body></html>"#;
        assert_eq!(suites_of(index), ["noble", "resolute", "devel"]);
        let release = "Origin: Ubuntu\nLabel: Ubuntu\nSuite: resolute\nVersion: 26.04\nCodename: resolute\nDate: Thu, 23 Apr 2026 15:10:32 UTC\nArchitectures: amd64 arm64\n\nSHA256:\n Version: 9\n";
        assert_eq!(
            version_and_codename(release),
            Some(("26.04".into(), "resolute".into()))
        );
        assert_eq!(version_and_codename("Suite: sid\nCodename: sid\n"), None);
        assert!(names_version(Distribution::Debian, "13.2", "13"));
        assert!(!names_version(Distribution::Debian, "13.2", "1"));
        assert!(names_version(Distribution::Ubuntu, "26.10", "26.10"));
        assert!(!names_version(Distribution::Ubuntu, "26.04", "26.1"));
    }
}
