//! The coverage engine: per identity, its nodes and one status; the fleet summary; the batch
//! plan that lifts node coverage to a target.

pub mod upcoming;

use crate::artifacts::{AssetIndex, MatchedAsset, UnrecognisedAsset};
use crate::identity::{RawIdentity, Verdict, check_with_os_image};
use crate::inventory::{BadRow, FleetGroups};
use polars::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The one status each identity has for the selected driver version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoverageStatus {
    Covered,
    /// No artifact of its own, but another one's symbol versions fit it (counted as covered).
    Compatible,
    /// A run for it is queued or in progress.
    Building,
    /// Its latest run failed.
    Failed,
    /// Its run passed the deadline unfinished.
    TimedOut,
    Missing,
    LongTail,
    Unsupported,
    Invalid,
}

impl CoverageStatus {
    pub const ALL: [CoverageStatus; 9] = [
        Self::Covered,
        Self::Compatible,
        Self::Building,
        Self::Failed,
        Self::TimedOut,
        Self::Missing,
        Self::LongTail,
        Self::Unsupported,
        Self::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Covered => "covered",
            Self::Compatible => "compatible",
            Self::Building => "building",
            Self::Failed => "failed",
            Self::TimedOut => "timed-out",
            Self::Missing => "missing",
            Self::LongTail => "long-tail",
            Self::Unsupported => "unsupported",
            Self::Invalid => "invalid",
        }
    }

    /// A driver loads on it: its own artifact, or a compatible one.
    pub fn is_covered(self) -> bool {
        matches!(self, Self::Covered | Self::Compatible)
    }

    fn from_str(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for CoverageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct CoverageOptions {
    /// Share of nodes the head holds (0..=1).
    pub head_share: f64,
    /// Node coverage the batch plan aims for (0..=1).
    pub target: f64,
}

impl Default for CoverageOptions {
    fn default() -> Self {
        Self {
            head_share: 0.90,
            target: 0.99,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IdentityRow {
    pub key: String,
    pub distribution: String,
    pub distro_version: String,
    pub architecture: String,
    pub kernel_version: String,
    pub nodes: u64,
    /// Nodes that have this kernel installed without running it: they boot into it next, so an
    /// identity with next-boot demand is never long tail.
    #[serde(skip_serializing_if = "is_zero")]
    pub next_boot: u64,
    pub status: CoverageStatus,
    pub reason: Option<String>,
    pub asset: Option<String>,
    /// In the head: the most-run valid identities that hold `head_share` of the nodes.
    pub in_head: bool,
    /// The kube contexts running it, sorted (empty for file inventories).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contexts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusCount {
    pub identities: u64,
    pub nodes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Breakdown {
    pub distribution: String,
    pub architecture: String,
    pub nodes: u64,
    pub identities: u64,
    pub covered_nodes: u64,
    pub node_coverage_pct: f64,
}

/// A release the fleet runs that is past its end of life (`assets/distro-releases.toml`): its
/// kernels get no more security fixes from the distribution.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EndOfLife {
    pub distribution: String,
    pub distro_version: String,
    pub identities: u64,
    pub nodes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BatchPlan {
    pub target_pct: f64,
    /// Builds needed: the identities below, most nodes first.
    pub builds: usize,
    /// Nodes those builds cover.
    pub nodes_gained: u64,
    /// Nodes whose build is already running: counted toward the target, never built again.
    pub nodes_building: u64,
    /// Node coverage once the builds running and the builds above have finished.
    pub node_coverage_after_pct: f64,
    /// False when building every missing and long-tail identity still falls short.
    pub reachable: bool,
    pub identities: Vec<String>,
    /// Nodes still uncovered after the plan, by status (failed, timed-out, unsupported,
    /// invalid, and missing or long-tail ones the plan did not need): what stands between the
    /// plan and full coverage.
    pub left_uncovered: BTreeMap<CoverageStatus, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub driver_version: String,
    pub nodes: u64,
    pub identities: u64,
    pub covered_nodes: u64,
    pub node_coverage_pct: f64,
    pub identity_coverage_pct: f64,
    pub head_share: f64,
    pub head_identities: u64,
    pub statuses: BTreeMap<CoverageStatus, StatusCount>,
    pub artifacts: u64,
    pub unused_artifacts: u64,
    pub unrecognised_assets: u64,
    pub bad_rows: u64,
    /// Nodes with another kernel installed besides the one they run (counted per kernel), and
    /// how many of those kernels have no driver yet: nodes that would reboot without one.
    #[serde(skip_serializing_if = "is_zero")]
    pub next_boot_nodes: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub next_boot_uncovered: u64,
    /// The releases past their end of life the fleet runs, most nodes first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub end_of_life: Vec<EndOfLife>,
    pub breakdown: Vec<Breakdown>,
    pub batch_plan: BatchPlan,
    /// The release is immutable: its missing kernels can only be built into another release.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub release_immutable: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct CoverageReport {
    pub summary: Summary,
    /// Sorted by nodes descending, then key.
    pub identities: Vec<IdentityRow>,
    pub unused: Vec<MatchedAsset>,
    pub unrecognised: Vec<UnrecognisedAsset>,
    pub bad_rows: Vec<BadRow>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 10000.0 / whole as f64).round() / 100.0
    }
}

/// One checked identity before the asset join.
struct Parsed {
    distribution: String,
    distro_version: String,
    architecture: String,
    kernel_version: String,
    base: &'static str,
    reason: Option<String>,
    nodes: u64,
    next_boot: u64,
    contexts: std::collections::BTreeSet<String>,
}

/// Checks each distinct raw identity once and merges those that normalise to the same key.
fn parse_groups(fleet: &FleetGroups) -> BTreeMap<String, Parsed> {
    let mut by_key: BTreeMap<String, Parsed> = BTreeMap::new();
    for g in &fleet.groups {
        let checked = check_with_os_image(
            &RawIdentity {
                distribution: &g.distribution,
                distro_version: &g.distro_version,
                architecture: &g.architecture,
                kernel_version: &g.kernel_version,
            },
            g.os_image.as_deref(),
        );
        let key = checked.key();
        if let Some(p) = by_key.get_mut(&key) {
            p.nodes += g.nodes;
            p.next_boot += g.next_boot;
            p.contexts.extend(g.context.clone());
            continue;
        }
        let (base, reason) = match checked.verdict {
            Verdict::Valid(_) => ("valid", None),
            Verdict::Unsupported(r) => ("unsupported", Some(r)),
            Verdict::Invalid(r) => ("invalid", Some(r)),
        };
        by_key.insert(
            key,
            Parsed {
                distribution: checked.distribution,
                distro_version: checked.distro_version,
                architecture: checked.architecture,
                kernel_version: checked.kernel_version,
                base,
                reason,
                nodes: g.nodes,
                next_boot: g.next_boot,
                contexts: g.context.iter().cloned().collect(),
            },
        );
    }
    by_key
}

/// Joins identities with assets, ranks them and assigns statuses (polars, identity level).
fn rank(
    parsed: BTreeMap<String, Parsed>,
    assets: &AssetIndex,
    head_share: f64,
) -> PolarsResult<DataFrame> {
    let n = parsed.len();
    let mut cols: [Vec<String>; 5] = Default::default();
    let mut base = Vec::with_capacity(n);
    let mut reason = Vec::with_capacity(n);
    let mut nodes = Vec::with_capacity(n);
    let mut next_boot = Vec::with_capacity(n);
    for (key, p) in parsed {
        cols[0].push(key);
        cols[1].push(p.distribution);
        cols[2].push(p.distro_version);
        cols[3].push(p.architecture);
        cols[4].push(p.kernel_version);
        base.push(p.base);
        reason.push(p.reason);
        nodes.push(p.nodes);
        next_boot.push(p.next_boot);
    }
    let [key, dist, ver, arch, kver] = cols;
    let identities = DataFrame::new_infer_height(vec![
        Column::new("key".into(), key),
        Column::new("distribution".into(), dist),
        Column::new("distro_version".into(), ver),
        Column::new("architecture".into(), arch),
        Column::new("kernel_version".into(), kver),
        Column::new("nodes".into(), nodes),
        Column::new("next_boot".into(), next_boot),
        Column::new("base".into(), base),
        Column::new("reason".into(), reason),
    ])?;
    let artifacts = DataFrame::new_infer_height(vec![
        Column::new(
            "key".into(),
            assets
                .matched
                .iter()
                .map(|a| a.key.as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "asset".into(),
            assets
                .matched
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>(),
        ),
    ])?;
    let is_valid = col("base").eq(lit("valid"));
    let valid_nodes = when(is_valid.clone())
        .then(col("nodes"))
        .otherwise(lit(0u64));
    let total_valid = valid_nodes.clone().sum();
    let nodes_before = valid_nodes.clone().cum_sum(false) - valid_nodes;
    let in_head = is_valid.and(
        nodes_before
            .cast(DataType::Float64)
            .lt(total_valid.cast(DataType::Float64) * lit(head_share)),
    );
    identities
        .lazy()
        .join(
            artifacts.lazy(),
            [col("key")],
            [col("key")],
            JoinArgs::new(JoinType::Left),
        )
        .sort_by_exprs(
            [col("nodes"), col("key")],
            SortMultipleOptions::default().with_order_descending_multi([true, false]),
        )
        .with_column(in_head.alias("in_head"))
        .with_column(
            when(col("base").eq(lit("invalid")))
                .then(lit("invalid"))
                .when(col("base").eq(lit("unsupported")))
                .then(lit("unsupported"))
                .when(col("asset").is_not_null())
                .then(lit("covered"))
                .when(col("in_head").or(col("next_boot").gt(lit(0u64))))
                .then(lit("missing"))
                .otherwise(lit("long-tail"))
                .alias("status"),
        )
        .collect()
}

fn rows_from_frame(df: &DataFrame) -> PolarsResult<Vec<IdentityRow>> {
    let s = |name: &str| df.column(name).and_then(|c| c.str().cloned());
    let (key, dist, ver, arch, kver, status, reason, asset) = (
        s("key")?,
        s("distribution")?,
        s("distro_version")?,
        s("architecture")?,
        s("kernel_version")?,
        s("status")?,
        s("reason")?,
        s("asset")?,
    );
    let nodes = df.column("nodes")?.u64()?.clone();
    let next_boot = df.column("next_boot")?.u64()?.clone();
    let in_head = df.column("in_head")?.bool()?.clone();
    let text = |ca: &StringChunked, i: usize| ca.get(i).unwrap_or_default().to_string();
    (0..df.height())
        .map(|i| {
            let status_text = status.get(i).unwrap_or_default();
            let status = CoverageStatus::from_str(status_text)
                .ok_or_else(|| polars_err!(ComputeError: "unexpected status '{}'", status_text))?;
            Ok(IdentityRow {
                key: text(&key, i),
                distribution: text(&dist, i),
                distro_version: text(&ver, i),
                architecture: text(&arch, i),
                kernel_version: text(&kver, i),
                nodes: nodes.get(i).unwrap_or(0),
                next_boot: next_boot.get(i).unwrap_or(0),
                status,
                reason: reason.get(i).map(str::to_string),
                asset: asset.get(i).map(str::to_string),
                in_head: in_head.get(i).unwrap_or(false),
                contexts: Vec::new(),
            })
        })
        .collect()
}

/// The batch plan; a build for one kernel of a kABI class (`classes`) serves the whole class.
fn batch_plan(
    rows: &[IdentityRow],
    total: u64,
    covered: u64,
    target: f64,
    classes: &[Vec<String>],
) -> BatchPlan {
    let reached = |c: u64| total == 0 || c as f64 / total as f64 >= target - 1e-12;
    let class_of: HashMap<&str, &Vec<String>> = classes
        .iter()
        .flat_map(|class| class.iter().map(move |key| (key.as_str(), class)))
        .collect();
    let nodes_of: HashMap<&str, u64> = rows.iter().map(|r| (r.key.as_str(), r.nodes)).collect();
    let mut served: HashSet<&str> = HashSet::new();
    let building: u64 = rows
        .iter()
        .filter(|r| r.status == CoverageStatus::Building)
        .map(|r| r.nodes)
        .sum();
    let mut now = covered + building;
    let mut picked = Vec::new();
    let mut left_uncovered = BTreeMap::new();
    for row in rows {
        match row.status {
            CoverageStatus::Covered | CoverageStatus::Compatible | CoverageStatus::Building => {}
            _ if served.contains(row.key.as_str()) => {}
            CoverageStatus::Missing | CoverageStatus::LongTail if !reached(now) => {
                now += row.nodes;
                picked.push(row.key.clone());
                if let Some(class) = class_of.get(row.key.as_str()) {
                    for key in class.iter().filter(|k| **k != row.key) {
                        if served.insert(key.as_str()) {
                            now += nodes_of.get(key.as_str()).copied().unwrap_or(0);
                        }
                    }
                }
            }
            status => *left_uncovered.entry(status).or_insert(0) += row.nodes,
        }
    }
    BatchPlan {
        target_pct: (target * 10000.0).round() / 100.0,
        builds: picked.len(),
        nodes_gained: now - covered - building,
        nodes_building: building,
        node_coverage_after_pct: pct(now, total),
        reachable: reached(now),
        identities: picked,
        left_uncovered,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoverageError {
    #[error("the coverage pipeline failed: {0}")]
    Polars(#[from] PolarsError),
}

/// Build states per identity key (`building`, `failed`, `timed-out`) from the forge's runs; they
/// replace `missing` and `long-tail` for identities without an artifact.
pub type BuildStates = std::collections::HashMap<String, CoverageStatus>;

/// One build run as coverage sees it: the identity it builds (for the report's driver version),
/// when it was created, and how far it got.
#[derive(Clone, Debug)]
pub struct ObservedRun {
    pub key: String,
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `None` while queued or in progress; `Some(true)` for success.
    pub succeeded: Option<bool>,
    /// Someone cancelled it: the kernel is as if it had not been built (`missing` or
    /// `long-tail`), not `failed`.
    pub cancelled: bool,
}

/// Build states from runs and from dispatches not yet listed as runs: the newest run of an
/// identity decides; an unfinished run is `building` (`timed-out` past `deadline`); a failed one
/// is `failed`; a cancelled one and a success leave the kernel to its artifact (or to `missing`
/// and `long-tail`); a dispatch without a listed run is `building` within the deadline.
pub fn build_states(
    runs: &[ObservedRun],
    open_dispatches: &[(String, chrono::DateTime<chrono::Utc>)],
    deadline: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> BuildStates {
    let age = |at: Option<chrono::DateTime<chrono::Utc>>| {
        at.and_then(|t| now.signed_duration_since(t).to_std().ok())
    };
    let mut out = BuildStates::new();
    let mut seen = std::collections::HashSet::new();
    let mut newest: Vec<&ObservedRun> = runs.iter().collect();
    newest.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    for run in newest {
        if !seen.insert(run.key.as_str()) {
            continue;
        }
        let state = match run.succeeded {
            None if age(run.created_at).is_some_and(|a| a > deadline) => CoverageStatus::TimedOut,
            None => CoverageStatus::Building,
            Some(true) => continue,
            Some(false) if run.cancelled => continue,
            Some(false) => CoverageStatus::Failed,
        };
        out.insert(run.key.clone(), state);
    }
    for (key, at) in open_dispatches {
        if !seen.contains(key.as_str()) && age(Some(*at)).is_none_or(|a| a <= deadline) {
            out.insert(key.clone(), CoverageStatus::Building);
        }
    }
    out
}

/// Computes coverage of `fleet` by the matched `assets` of release `driver_version`.
pub fn compute(
    fleet: &FleetGroups,
    assets: &AssetIndex,
    driver_version: &str,
    options: CoverageOptions,
    builds: &BuildStates,
) -> Result<CoverageReport, CoverageError> {
    let mut parsed = parse_groups(fleet);
    // The kube contexts stay beside the frame: only live inventories have any.
    let mut contexts: HashMap<String, Vec<String>> = parsed
        .iter_mut()
        .filter(|(_, p)| !p.contexts.is_empty())
        .map(|(k, p)| {
            (
                k.clone(),
                std::mem::take(&mut p.contexts).into_iter().collect(),
            )
        })
        .collect();
    let frame = rank(parsed, assets, options.head_share)?;
    let mut identities = rows_from_frame(&frame)?;
    for row in &mut identities {
        if let Some(c) = contexts.remove(&row.key) {
            row.contexts = c;
        }
        if matches!(
            row.status,
            CoverageStatus::Missing | CoverageStatus::LongTail
        ) && let Some(state) = builds.get(&row.key)
        {
            row.status = *state;
        }
        if row.asset.is_none()
            && !matches!(
                row.status,
                CoverageStatus::Unsupported | CoverageStatus::Invalid
            )
            && let Some((_, asset)) = assets.compatible.iter().find(|(k, _)| *k == row.key)
        {
            row.status = CoverageStatus::Compatible;
            row.asset = Some(asset.clone());
        }
    }

    let nodes: u64 = identities.iter().map(|r| r.nodes).sum();
    let mut statuses: BTreeMap<CoverageStatus, StatusCount> = CoverageStatus::ALL
        .into_iter()
        .map(|s| {
            (
                s,
                StatusCount {
                    identities: 0,
                    nodes: 0,
                },
            )
        })
        .collect();
    let mut breakdown: BTreeMap<(String, String), Breakdown> = BTreeMap::new();
    for r in &identities {
        let c = statuses.entry(r.status).or_insert(StatusCount {
            identities: 0,
            nodes: 0,
        });
        c.identities += 1;
        c.nodes += r.nodes;
        let b = breakdown
            .entry((r.distribution.clone(), r.architecture.clone()))
            .or_insert_with(|| Breakdown {
                distribution: r.distribution.clone(),
                architecture: r.architecture.clone(),
                nodes: 0,
                identities: 0,
                covered_nodes: 0,
                node_coverage_pct: 0.0,
            });
        b.nodes += r.nodes;
        b.identities += 1;
        if r.status.is_covered() {
            b.covered_nodes += r.nodes;
        }
    }
    let mut breakdown: Vec<Breakdown> = breakdown
        .into_values()
        .map(|mut b| {
            b.node_coverage_pct = pct(b.covered_nodes, b.nodes);
            b
        })
        .collect();
    breakdown.sort_by(|a, b| {
        b.nodes
            .cmp(&a.nodes)
            .then_with(|| a.distribution.cmp(&b.distribution))
    });

    // A compatible kernel is covered: the artifact it uses loads into it.
    let (covered_nodes, covered_ids) = [CoverageStatus::Covered, CoverageStatus::Compatible]
        .iter()
        .map(|s| &statuses[s])
        .fold((0, 0), |(n, i), c| (n + c.nodes, i + c.identities));
    let in_fleet: HashSet<&str> = identities.iter().map(|r| r.key.as_str()).collect();
    let unused: Vec<MatchedAsset> = assets
        .matched
        .iter()
        .filter(|a| !in_fleet.contains(a.key.as_str()))
        .cloned()
        .collect();
    let head_identities = identities.iter().filter(|r| r.in_head).count() as u64;
    let next_boot_nodes = identities.iter().map(|r| r.next_boot).sum();
    let next_boot_uncovered = identities
        .iter()
        .filter(|r| !r.status.is_covered())
        .map(|r| r.next_boot)
        .sum();
    let mut end_of_life: BTreeMap<(&str, &str), EndOfLife> = BTreeMap::new();
    for r in identities
        .iter()
        .filter(|r| crate::distros::end_of_life(&r.distribution, &r.distro_version))
    {
        let entry = end_of_life
            .entry((&r.distribution, &r.distro_version))
            .or_insert_with(|| EndOfLife {
                distribution: r.distribution.clone(),
                distro_version: r.distro_version.clone(),
                identities: 0,
                nodes: 0,
            });
        entry.identities += 1;
        entry.nodes += r.nodes;
    }
    let mut end_of_life: Vec<EndOfLife> = end_of_life.into_values().collect();
    end_of_life.sort_by_key(|e| std::cmp::Reverse(e.nodes));
    let summary = Summary {
        end_of_life,
        driver_version: driver_version.to_string(),
        nodes,
        identities: identities.len() as u64,
        covered_nodes,
        node_coverage_pct: pct(covered_nodes, nodes),
        identity_coverage_pct: pct(covered_ids, identities.len() as u64),
        head_share: options.head_share,
        head_identities,
        statuses,
        artifacts: assets.matched.len() as u64,
        unused_artifacts: unused.len() as u64,
        unrecognised_assets: assets.unrecognised.len() as u64,
        bad_rows: fleet.bad_row_count,
        next_boot_nodes,
        next_boot_uncovered,
        breakdown,
        batch_plan: batch_plan(
            &identities,
            nodes,
            covered_nodes,
            options.target,
            &assets.kabi_classes,
        ),
        release_immutable: assets.immutable,
    };
    Ok(CoverageReport {
        summary,
        identities,
        unused,
        unrecognised: assets.unrecognised.clone(),
        bad_rows: fleet.bad_rows.clone(),
    })
}
