//! Kernels before nodes: the kernel lines a fleet runs, and the kernels the distributions already
//! publish on a line that are newer than the newest the fleet runs, read from the same repository
//! metadata the header chain reads (APT `Packages`, RPM `primary`).

use super::parts::KernelParts;
use super::{Attempt, HeaderError, Resolver, sources};
use crate::identity::{Distribution, KernelIdentity};
use serde::Serialize;
use std::cmp::Ordering;

/// A kernel line: the kernels a node of this family moves between by updating. Ubuntu and
/// Debian: release, architecture, the upstream version (which tells Ubuntu's GA kernels from its
/// HWE ones; the series for Debian's `6.12.57+deb13` style) and the flavour. RPM families:
/// release, architecture, variant and source package (`kernel6.12` on Amazon Linux 2023), and
/// the series on Amazon Linux 2 (its 4.14, 5.4, 5.10 and 5.15 kernels are separate lines).
/// AlmaLinux, Rocky and Oracle Linux by major release: their nodes move from 9.6 to 9.7 by
/// updating; Oracle's UEK also by series (`kernel-uek 5.15`).
pub fn line_of(id: &KernelIdentity) -> String {
    let p = KernelParts::of(id);
    let release = if follows_major(id.distribution) {
        &p.major
    } else if id.distribution == Distribution::Tumbleweed {
        // One rolling line across snapshots.
        "*"
    } else {
        &id.distro_version
    };
    let base = format!("{}/{release}/{}", id.distribution, id.architecture);
    match id.distribution {
        Distribution::Ubuntu | Distribution::Debian => {
            let stem = if p.abi.contains('+') {
                &p.series
            } else {
                &p.version
            };
            format!("{base} {stem}-*-{}", p.flavour)
        }
        _ => {
            let mut line = format!(
                "{base} {}",
                if p.srpm.is_empty() { "kernel" } else { &p.srpm }
            );
            // UEK's variant is its source package (`kernel-uek`), and so is a SUSE flavour
            // (`kernel-default`): already in the line.
            if !p.variant.is_empty() && p.variant != "uek" && !p.suse {
                line.push_str(&format!(" +{}", p.variant));
            }
            // Amazon Linux 2's kernel series and Oracle's UEK releases (R7 5.15, R8 6.12) are
            // lines a node stays on until its administrator moves it.
            if id.distribution == Distribution::Amazonlinux || p.variant == "uek" {
                line.push_str(&format!(" {}", p.series));
            }
            line
        }
    }
}

/// Families whose nodes follow the major release's repositories from minor to minor.
fn follows_major(distribution: Distribution) -> bool {
    matches!(
        distribution,
        Distribution::Almalinux | Distribution::Rocky | Distribution::Oraclelinux
    )
}

/// The release a listed `kernel` belongs to on `newest`'s line: the minor its `elN_M` names where
/// the line follows the major (a 9.7 kernel is for 9.7 nodes), else `newest`'s release.
fn release_of(newest: &KernelIdentity, kernel: &str) -> String {
    if follows_major(newest.distribution) {
        let major = newest.distro_version.split('.').next().unwrap_or_default();
        if let Some(rest) = kernel.split(&format!(".el{major}_")).nth(1) {
            let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if !minor.is_empty() {
                return format!("{major}.{minor}");
            }
        }
    }
    newest.distro_version.clone()
}

/// Orders kernel versions as package managers do (see [`crate::text::compare_versions`]).
pub fn compare_kernels(a: &str, b: &str) -> Ordering {
    crate::text::compare_versions(a, b)
}

/// One line of a fleet: its nodes and the newest kernel it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetLine {
    pub line: String,
    pub nodes: u64,
    pub newest: KernelIdentity,
}

/// The lines of a fleet given as identities with their node counts: most nodes first.
pub fn fleet_lines(ids: impl IntoIterator<Item = (KernelIdentity, u64)>) -> Vec<FleetLine> {
    let mut lines: std::collections::BTreeMap<String, FleetLine> = Default::default();
    for (id, nodes) in ids {
        let line = line_of(&id);
        let entry = lines.entry(line.clone()).or_insert_with(|| FleetLine {
            line,
            nodes: 0,
            newest: id.clone(),
        });
        entry.nodes += nodes;
        if compare_kernels(&id.kernel_version, &entry.newest.kernel_version).is_gt() {
            entry.newest = id;
        }
    }
    let mut out: Vec<FleetLine> = lines.into_values().collect();
    out.sort_by(|a, b| b.nodes.cmp(&a.nodes).then_with(|| a.line.cmp(&b.line)));
    out
}

/// A kernel published on a line the fleet runs, newer than the newest the fleet runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Upcoming {
    pub line: String,
    pub identity: KernelIdentity,
    /// When it was built, where the metadata says (RPM `primary`; APT indexes do not).
    pub published: Option<chrono::DateTime<chrono::Utc>>,
    /// The source whose metadata lists it (its headers are there).
    pub source: String,
    /// The meta-package that points at it (`linux-headers-aws`): where nodes that follow the
    /// flavour's meta go next, even into another series than the line's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// One pass over many lines: an APT suite's index is read once however many lines ask for it.
#[derive(Default)]
pub struct ListingPass(super::sources::ListingMemo);

impl Resolver {
    /// The kernels on `newest`'s line that the chain's APT and RPM repositories list and that
    /// are newer than it, oldest first, with every request made.
    pub async fn newer_on_line(
        &self,
        newest: &KernelIdentity,
    ) -> Result<(Vec<Upcoming>, Vec<Attempt>), HeaderError> {
        self.newer_on_line_in(newest, &ListingPass::default()).await
    }

    /// [`Self::newer_on_line`] within a pass over several lines.
    pub async fn newer_on_line_in(
        &self,
        newest: &KernelIdentity,
        pass: &ListingPass,
    ) -> Result<(Vec<Upcoming>, Vec<Attempt>), HeaderError> {
        if newest.distribution == Distribution::Tumbleweed {
            return Err(HeaderError::Rolling(line_of(newest)));
        }
        self.learn_release(newest).await;
        let specs: Vec<_> = self
            .chain
            .for_identity(newest)
            .into_iter()
            .filter(|s| !s.proposed || self.options.proposed)
            .collect();
        if specs.is_empty() {
            return Err(HeaderError::NoSources(newest.key()));
        }
        let line = line_of(newest);
        let mut parts = KernelParts::of(newest);
        if follows_major(newest.distribution) {
            // The major's repositories (`/9/`) are the current minor's: where a node goes next.
            parts.vault_release = parts.major.clone();
        }
        let mut attempts = Vec::new();
        let mut found: Vec<Upcoming> = Vec::new();
        // Whether any source answered with a listing: when none did, the line is unread, not
        // quiet.
        let mut read = false;
        for spec in specs {
            let before = attempts.len();
            let mut ctx = self.listing_context(&parts, spec, &mut attempts, Some(&pass.0));
            let listed =
                tokio::time::timeout(self.options.source_timeout, sources::list_kernels(&mut ctx))
                    .await;
            let Ok(listed) = listed else {
                attempts.push(super::Attempt {
                    source: spec.name.clone(),
                    kind: spec.kind(),
                    url: String::new(),
                    outcome: format!(
                        "no listing within {}s",
                        self.options.source_timeout.as_secs_f32()
                    ),
                    millis: self.options.source_timeout.as_millis() as u64,
                });
                continue;
            };
            read |= !listed.is_empty()
                || attempts[before..]
                    .iter()
                    .any(|a| a.outcome.starts_with("ok"));
            for kernel in listed {
                let Ok(id) = KernelIdentity::parse(
                    newest.distribution.as_str(),
                    &release_of(newest, &kernel.kernel),
                    newest.architecture.as_str(),
                    &kernel.kernel,
                ) else {
                    continue;
                };
                if (kernel.via.is_none() && line_of(&id) != line)
                    || compare_kernels(&id.kernel_version, &newest.kernel_version)
                        != Ordering::Greater
                {
                    continue;
                }
                if let Some(known) = found.iter_mut().find(|u| u.identity == id) {
                    known.via = known.via.take().or(kernel.via);
                    continue;
                }
                found.push(Upcoming {
                    line: line.clone(),
                    identity: id,
                    published: kernel.published,
                    source: spec.name.clone(),
                    via: kernel.via,
                });
            }
        }
        if !read {
            return Err(HeaderError::Unlisted {
                line,
                attempts: super::format_attempts(&attempts),
            });
        }
        found.sort_by(|a, b| {
            compare_kernels(&a.identity.kernel_version, &b.identity.kernel_version)
        });
        Ok((found, attempts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &str) -> KernelIdentity {
        KernelIdentity::from_key(key).unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    #[test]
    fn kernel_versions_order_as_package_managers_do() {
        for (older, newer) in [
            ("5.15.0-91-generic", "5.15.0-125-generic"),
            (
                "5.14.0-427.42.1.el9_4.x86_64",
                "5.14.0-503.11.1.el9_5.x86_64",
            ),
            ("6.1.0-9-amd64", "6.1.0-18-amd64"),
            ("6.12.57+deb13-amd64", "6.12.63+deb13-amd64"),
            ("6.1.100-1.amzn2023", "6.1.102-1.amzn2023"),
        ] {
            assert_eq!(
                compare_kernels(older, newer),
                Ordering::Less,
                "{older} < {newer}"
            );
            assert_eq!(compare_kernels(newer, older), Ordering::Greater);
        }
        assert_eq!(
            compare_kernels("5.15.0-91-generic", "5.15.0-91-generic"),
            Ordering::Equal
        );
    }

    #[test]
    fn lines_tell_ga_from_hwe_flavours_apart_and_amazon_series() {
        let ga = line_of(&id("ubuntu/22.04/x86_64/5.15.0-91-generic"));
        assert_eq!(ga, "ubuntu/22.04/x86_64 5.15.0-*-generic");
        assert_eq!(ga, line_of(&id("ubuntu/22.04/x86_64/5.15.0-125-generic")));
        assert_ne!(ga, line_of(&id("ubuntu/22.04/x86_64/6.8.0-40-generic")));
        assert_ne!(ga, line_of(&id("ubuntu/22.04/x86_64/5.15.0-1050-aws")));
        assert_eq!(
            line_of(&id("debian/13/x86_64/6.12.57+deb13-amd64")),
            line_of(&id("debian/13/x86_64/6.12.63+deb13-amd64"))
        );
        // A security ABI (+deb13.1) is the same line, and newer than the +deb13 it follows.
        assert_eq!(
            line_of(&id("debian/13/x86_64/6.12.57+deb13-amd64")),
            line_of(&id("debian/13/x86_64/6.12.115+deb13.1-amd64"))
        );
        assert_eq!(
            compare_kernels("6.12.115+deb13-amd64", "6.12.115+deb13.1-amd64"),
            Ordering::Less
        );
        // AlmaLinux and Rocky nodes move from minor to minor: one line per major.
        let alma = line_of(&id("almalinux/9.6/x86_64/5.14.0-570.12.1.el9_6.x86_64"));
        assert_eq!(alma, "almalinux/9/x86_64 kernel");
        assert_eq!(
            alma,
            line_of(&id("almalinux/9.7/x86_64/5.14.0-611.5.1.el9_7.x86_64"))
        );
        assert_ne!(
            alma,
            line_of(&id("almalinux/8.10/x86_64/4.18.0-553.el8_10.x86_64"))
        );
        let al = line_of(&id("amazonlinux/2023/x86_64/6.1.100-1.amzn2023.x86_64"));
        assert_ne!(
            al,
            line_of(&id("amazonlinux/2023/x86_64/6.12.10-1.amzn2023.x86_64"))
        );
        assert_ne!(
            line_of(&id("amazonlinux/2/x86_64/4.14.343-261.564.amzn2.x86_64")),
            line_of(&id("amazonlinux/2/x86_64/5.10.215-203.850.amzn2.x86_64"))
        );
    }
}
