//! Upcoming kernels against a release: the kernels the distributions publish on the lines the
//! fleet runs, newer than its newest on each, and whether the release has their artifact. Kept
//! apart from coverage: a kernel no node runs yet never moves node coverage.

use crate::artifacts::{AssetTemplate, Release};
use crate::headers::{FleetLine, Resolver, Upcoming, fleet_lines};
use crate::identity::KernelIdentity;
use crate::inventory::FleetGroups;
use serde::Serialize;
use std::collections::HashSet;

/// Whether the release has an upcoming kernel's artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpcomingStatus {
    /// No release to compare with.
    Upcoming,
    UpcomingCovered,
    /// No artifact of its own, but another of its line loads into it (kABI, `--kabi`).
    UpcomingCompatible,
    UpcomingMissing,
}

impl UpcomingStatus {
    /// A driver will load on it: its own artifact, or a compatible one.
    pub fn is_covered(self) -> bool {
        matches!(self, Self::UpcomingCovered | Self::UpcomingCompatible)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UpcomingStatus::Upcoming => "upcoming",
            UpcomingStatus::UpcomingCovered => "upcoming-covered",
            UpcomingStatus::UpcomingCompatible => "upcoming-compatible",
            UpcomingStatus::UpcomingMissing => "upcoming-missing",
        }
    }
}

/// One upcoming kernel on one of the fleet's lines.
#[derive(Clone, Debug, Serialize)]
pub struct UpcomingRow {
    /// The same as `upcoming.line` (which JSON shows).
    #[serde(skip)]
    pub line: String,
    /// Nodes on the line today.
    pub nodes: u64,
    pub fleet_newest: String,
    #[serde(flatten)]
    pub upcoming: Upcoming,
    pub status: UpcomingStatus,
    /// `upcoming-compatible`: the artifact that loads into it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
}

impl UpcomingRow {
    pub fn key(&self) -> String {
        self.upcoming.identity.key()
    }
}

/// What [`find`] found: the rows, the lines looked at, and notes on lines it could not read.
#[derive(Clone, Debug, Default)]
pub struct UpcomingReport {
    pub rows: Vec<UpcomingRow>,
    pub lines: usize,
    pub lines_with_upcoming: usize,
    /// Lines the chain has no source for.
    pub notes: Vec<String>,
    /// Lines whose repositories could not be read: what they publish is unknown, which is
    /// not the same as nothing new.
    pub errors: Vec<UnreadLine>,
}

/// A line of the fleet none of whose repositories could be listed, and why.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UnreadLine {
    pub line: String,
    pub error: String,
}

impl UpcomingReport {
    pub fn missing(&self) -> impl Iterator<Item = &UpcomingRow> {
        self.rows
            .iter()
            .filter(|r| r.status == UpcomingStatus::UpcomingMissing)
    }
}

/// The fleet's valid identities with their node counts.
pub fn fleet_identities(fleet: &FleetGroups) -> impl Iterator<Item = (KernelIdentity, u64)> {
    fleet.groups.iter().filter_map(|g| {
        KernelIdentity::parse(
            &g.distribution,
            &g.distro_version,
            &g.architecture,
            &g.kernel_version,
        )
        .ok()
        .map(|id| (id, g.nodes))
    })
}

/// The newest `kernels` (all when `None`) upcoming kernels on each of the `lines` most-run lines
/// of `fleet`, with their status against `release` when one is given. A line whose chain has no
/// source, or whose repositories cannot be read, becomes a note.
pub async fn find(
    resolver: &Resolver,
    fleet: &FleetGroups,
    lines: usize,
    kernels: Option<usize>,
    release: Option<(&Release, &AssetTemplate)>,
) -> UpcomingReport {
    let all = fleet_lines(fleet_identities(fleet));
    let ranked: Vec<&FleetLine> = all.iter().take(lines).collect();
    let assets: HashSet<&str> = release
        .map(|(r, _)| r.assets.iter().map(|a| a.name.as_str()).collect())
        .unwrap_or_default();
    let mut report = UpcomingReport {
        lines: all.len(),
        ..UpcomingReport::default()
    };
    let pass = crate::headers::ListingPass::default();
    for line in ranked {
        let upcoming = match resolver.newer_on_line_in(&line.newest, &pass).await {
            Ok((upcoming, _)) => upcoming,
            Err(e @ crate::headers::HeaderError::NoSources(_)) => {
                report.notes.push(format!("{}: {e}", line.line));
                continue;
            }
            // A rolling release's line is read, not unreadable: its message names the line.
            Err(e @ crate::headers::HeaderError::Rolling(_)) => {
                report.notes.push(e.to_string());
                continue;
            }
            Err(e) => {
                report.errors.push(UnreadLine {
                    line: line.line.clone(),
                    error: e.to_string(),
                });
                continue;
            }
        };
        if !upcoming.is_empty() {
            report.lines_with_upcoming += 1;
        }
        let skip = kernels.map_or(0, |k| upcoming.len().saturating_sub(k));
        for u in upcoming.into_iter().skip(skip) {
            let status = match release {
                None => UpcomingStatus::Upcoming,
                Some((r, template))
                    if assets.contains(template.render(&u.identity, &r.tag_name).as_str()) =>
                {
                    UpcomingStatus::UpcomingCovered
                }
                Some(_) => UpcomingStatus::UpcomingMissing,
            };
            report.rows.push(UpcomingRow {
                line: line.line.clone(),
                nodes: line.nodes,
                fleet_newest: line.newest.kernel_version.clone(),
                upcoming: u,
                status,
                served_by: None,
            });
        }
    }
    report
}
