//! Coverage reports as a table, CSV, JSON, Markdown and HTML (the `fleet` feature).

use super::{Format, ReportError, finish_csv};
use crate::coverage::upcoming::UpcomingReport;
use crate::coverage::{CoverageReport, CoverageStatus, IdentityRow};
use crate::text::Cause;
use crate::text::{clean, count, csv_cell, grid, markdown_text, thousands};
use std::fmt::Write as _;

/// What to show of a report.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Only identities with these statuses (all when empty).
    pub statuses: Vec<CoverageStatus>,
    /// Rows in the table format (0: all). CSV, JSON and Markdown tables are not limited.
    pub limit: usize,
    /// Also list unrecognised assets and every bad row in the table format.
    pub verbose: bool,
}

impl View {
    pub(super) fn rows<'a>(&self, report: &'a CoverageReport) -> Vec<&'a IdentityRow> {
        report
            .identities
            .iter()
            .filter(|r| self.statuses.is_empty() || self.statuses.contains(&r.status))
            .collect()
    }
}

/// Whether any row came from a kube context: then reports show a contexts column.
pub(super) fn has_contexts(rows: &[&IdentityRow]) -> bool {
    rows.iter().any(|r| !r.contexts.is_empty())
}

/// Whether any node has another kernel installed: then reports show a next-boot column.
pub(super) fn has_next_boot(rows: &[&IdentityRow]) -> bool {
    rows.iter().any(|r| r.next_boot > 0)
}

/// The releases past their end of life the fleet runs, when it runs any.
pub(super) fn end_of_life_sentence(report: &CoverageReport) -> Option<String> {
    let eol = &report.summary.end_of_life;
    (!eol.is_empty()).then(|| {
        let nodes: u64 = eol.iter().map(|e| e.nodes).sum();
        let kernels: u64 = eol.iter().map(|e| e.identities).sum();
        let releases = eol
            .iter()
            .map(|e| {
                format!(
                    "{} {} ({} node{})",
                    e.distribution,
                    e.distro_version,
                    thousands(e.nodes),
                    if e.nodes == 1 { "" } else { "s" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{} nodes on {kernels} kernel(s) run a release past its end of life, with no more fixes from its distribution: {releases}",
            thousands(nodes)
        )
    })
}

/// What the fleet boots into next, when nodes say what they have installed.
pub(super) fn next_boot_sentence(report: &CoverageReport) -> Option<String> {
    let s = &report.summary;
    (s.next_boot_nodes > 0).then(|| {
        let kernels = report
            .identities
            .iter()
            .filter(|r| r.next_boot > 0 && !r.status.is_covered())
            .count();
        match s.next_boot_uncovered {
            0 => format!(
                "nodes have {} installed kernel(s) they do not run yet; every one has its driver",
                thousands(s.next_boot_nodes)
            ),
            n => format!(
                "nodes have {} installed kernel(s) they do not run yet; {} of those, across {kernels} kernel version(s), have no driver (counted missing: dispatch --missing builds them before the reboot)",
                thousands(s.next_boot_nodes),
                thousands(n)
            ),
        }
    })
}

/// A row's kube contexts as one cell.
pub(super) fn contexts_cell(r: &IdentityRow) -> String {
    clean(&r.contexts.join(" ")).into_owned()
}

/// The identities as CSV (the `--format csv` columns; `contexts` last when the fleet came from
/// kube contexts).
pub fn identities_csv(rows: &[&IdentityRow]) -> Result<String, ReportError> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let enc = |e: ::csv::Error| ReportError::Encode(Cause::of(e));
    let with_contexts = has_contexts(rows);
    let with_next_boot = has_next_boot(rows);
    let mut header = vec![
        "distribution",
        "distro_version",
        "architecture",
        "kernel_version",
        "nodes",
        "status",
        "reason",
        "asset",
    ];
    if with_contexts {
        header.push("contexts");
    }
    if with_next_boot {
        header.push("next_boot");
    }
    w.write_record(&header).map_err(enc)?;
    for r in rows {
        let mut record = vec![
            csv_cell(&r.distribution),
            csv_cell(&r.distro_version),
            csv_cell(&r.architecture),
            csv_cell(&r.kernel_version),
            r.nodes.to_string(),
            r.status.as_str().to_string(),
            csv_cell(r.reason.as_deref().unwrap_or("")),
            csv_cell(r.asset.as_deref().unwrap_or("")),
        ];
        if with_contexts {
            record.push(csv_cell(&contexts_cell(r)));
        }
        if with_next_boot {
            record.push(r.next_boot.to_string());
        }
        w.write_record(&record).map_err(enc)?;
    }
    finish_csv(w)
}

pub(super) fn json(
    report: &CoverageReport,
    view: &View,
    upcoming: Option<&UpcomingReport>,
) -> Result<String, ReportError> {
    let mut out = Vec::new();
    json_to(&mut out, report, view, upcoming).map_err(|e| ReportError::Encode(Cause::of(e)))?;
    String::from_utf8(out).map_err(|e| ReportError::Encode(Cause::of(e)))
}

/// The JSON report written to `out` as it is serialised: at 100M nodes (40,000 identities, 17
/// MB of JSON) a string built first, grown by doubling, cost the process 40 MB at its peak.
pub(super) fn json_to(
    mut out: impl std::io::Write,
    report: &CoverageReport,
    view: &View,
    upcoming: Option<&UpcomingReport>,
) -> std::io::Result<()> {
    // Serialised from the report itself, not through a `serde_json::Value` tree: at 100M nodes
    // (40,000 identities) that tree alone held tens of MiB.
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        summary: &'a crate::coverage::Summary,
        identities: Vec<&'a crate::coverage::IdentityRow>,
        unused: &'a [crate::artifacts::MatchedAsset],
        unrecognised_assets: &'a [crate::artifacts::UnrecognisedAsset],
        bad_rows: &'a [crate::inventory::BadRow],
        #[serde(skip_serializing_if = "Option::is_none")]
        upcoming: Option<serde_json::Value>,
    }
    let doc = Doc {
        summary: &report.summary,
        identities: view.rows(report),
        unused: &report.unused,
        unrecognised_assets: &report.unrecognised,
        bad_rows: &report.bad_rows,
        upcoming: upcoming.map(|found| {
            let counts = UpcomingCounts::of(report, found);
            serde_json::json!({
                "lines": found.lines,
                "lines_with_upcoming": found.lines_with_upcoming,
                "kernels": found.rows.len(),
                "covered": counts.covered,
                "missing": counts.missing,
                "prebuilt_unused_artifacts": counts.prebuilt,
                "rows": found.rows,
                "notes": found.notes,
                "errors": found.errors,
            })
        }),
    };
    serde_json::to_writer_pretty(&mut out, &doc)?;
    out.write_all(b"\n")
}

pub(super) fn status_lines(report: &CoverageReport) -> Vec<Vec<String>> {
    report
        .summary
        .statuses
        .iter()
        // Only kABI-checked reports can have compatible kernels: the row shows where any are.
        .filter(|(s, c)| **s != CoverageStatus::Compatible || c.identities > 0)
        .map(|(s, c)| vec![s.to_string(), thousands(c.identities), thousands(c.nodes)])
        .collect()
}

pub(super) fn plan_sentence(report: &CoverageReport) -> String {
    let sentence = plan_only(report);
    let p = &report.summary.batch_plan;
    if report.summary.release_immutable && p.builds > 0 {
        format!(
            "{sentence}; but {}",
            crate::artifacts::immutable_reason(&report.summary.driver_version)
        )
    } else {
        sentence
    }
}

fn plan_only(report: &CoverageReport) -> String {
    let p = &report.summary.batch_plan;
    let running = if p.nodes_building > 0 {
        format!(
            ", counting {} whose build is running",
            count(p.nodes_building, "node", "nodes")
        )
    } else {
        String::new()
    };
    if p.builds == 0 && p.reachable {
        return if p.nodes_building > 0 {
            format!(
                "node coverage reaches {}% (target {}%) once the running builds finish ({})",
                p.node_coverage_after_pct,
                p.target_pct,
                count(p.nodes_building, "node", "nodes")
            )
        } else {
            format!("node coverage already meets {}%", p.target_pct)
        };
    }
    let verdict = if p.reachable {
        String::new()
    } else {
        let left: Vec<String> = p
            .left_uncovered
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(status, n)| format!("{} {status}", count(*n, "node", "nodes")))
            .collect();
        format!(
            " (short of {}%: left uncovered are {})",
            p.target_pct,
            left.join(", ")
        )
    };
    format!(
        "{} build(s) lift node coverage to {}% (+{} nodes{running}){verdict}",
        p.builds,
        p.node_coverage_after_pct,
        thousands(p.nodes_gained)
    )
}

pub(super) fn table(report: &CoverageReport, view: &View) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kfleet coverage for driver {}",
        clean(&s.driver_version)
    );
    let _ = writeln!(
        out,
        "nodes {}  identities {}  node coverage {}%  identity coverage {}%",
        thousands(s.nodes),
        thousands(s.identities),
        s.node_coverage_pct,
        s.identity_coverage_pct
    );
    let _ = writeln!(
        out,
        "head: {} identities hold {}% of the nodes; the rest is the long tail",
        s.head_identities,
        s.head_share * 100.0
    );
    let _ = writeln!(
        out,
        "artifacts {}  unused {}  unrecognised assets {}  bad rows {}",
        s.artifacts, s.unused_artifacts, s.unrecognised_assets, s.bad_rows
    );
    if let Some(next_boot) = next_boot_sentence(report) {
        let _ = writeln!(out, "next boot: {next_boot}");
    }
    if let Some(eol) = end_of_life_sentence(report) {
        let _ = writeln!(out, "end of life: {eol}");
    }
    let _ = writeln!(
        out,
        "batch plan to {}%: {}\n",
        s.batch_plan.target_pct,
        plan_sentence(report)
    );
    out.push_str(&grid(
        &["STATUS", "IDENTITIES", "NODES"],
        &status_lines(report),
        &[1, 2],
    ));
    out.push('\n');
    let breakdown: Vec<Vec<String>> = s
        .breakdown
        .iter()
        .map(|b| {
            vec![
                b.distribution.clone(),
                b.architecture.clone(),
                thousands(b.nodes),
                thousands(b.identities),
                format!("{}%", b.node_coverage_pct),
            ]
        })
        .collect();
    out.push_str(&grid(
        &["DISTRIBUTION", "ARCH", "NODES", "IDENTITIES", "COVERED"],
        &breakdown,
        &[2, 3, 4],
    ));
    out.push('\n');
    let rows = view.rows(report);
    let shown = if view.limit == 0 {
        rows.len()
    } else {
        view.limit.min(rows.len())
    };
    let with_contexts = has_contexts(&rows);
    let with_next_boot = has_next_boot(&rows);
    let cells: Vec<Vec<String>> = rows[..shown]
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.distribution.clone(),
                r.distro_version.clone(),
                r.architecture.clone(),
                r.kernel_version.clone(),
                thousands(r.nodes),
            ];
            if with_next_boot {
                cells.push(thousands(r.next_boot));
            }
            cells.push(r.status.to_string());
            if with_contexts {
                cells.push(contexts_cell(r));
            }
            cells.push(r.reason.clone().unwrap_or_default());
            cells
        })
        .collect();
    let mut header = vec!["DISTRIBUTION", "VERSION", "ARCH", "KERNEL", "NODES"];
    let mut numeric = vec![4];
    if with_next_boot {
        header.push("NEXT BOOT");
        numeric.push(5);
    }
    header.push("STATUS");
    if with_contexts {
        header.push("CONTEXTS");
    }
    header.push("REASON");
    out.push_str(&grid(&header, &cells, &numeric));
    if shown < rows.len() {
        let _ = writeln!(
            out,
            "... {} more identities (--limit 0 shows all; --format csv for a file)",
            rows.len() - shown
        );
    }
    if view.verbose {
        if !report.unrecognised.is_empty() {
            let _ = writeln!(out, "\nunrecognised assets:");
            for a in &report.unrecognised {
                let _ = writeln!(out, "  {}: {}", clean(&a.name), clean(&a.reason));
            }
        }
        if !report.bad_rows.is_empty() {
            let _ = writeln!(out, "\nbad rows:");
            for b in &report.bad_rows {
                let _ = writeln!(out, "  {}", clean(&b.to_string()));
            }
        }
    }
    out
}

/// A label GitHub's Mermaid takes inside `"…"`: no quotes, brackets or line breaks.
fn mermaid_label(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '[' | ']' | '\n' | '\r' | '`' => ' ',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// Charts GitHub renders above the tables: node coverage per distribution and architecture (a
/// bar per pair, most nodes first, at most 12), and the head/tail curve (the share of nodes held
/// by the N most-run identities, at up to 20 points).
fn mermaid_charts(report: &CoverageReport) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let pairs: Vec<_> = s.breakdown.iter().take(12).collect();
    if !pairs.is_empty() {
        let labels: Vec<String> = pairs
            .iter()
            .map(|b| {
                format!(
                    "\"{} {}\"",
                    mermaid_label(&b.distribution),
                    mermaid_label(&b.architecture)
                )
            })
            .collect();
        let values: Vec<String> = pairs
            .iter()
            .map(|b| format!("{}", b.node_coverage_pct))
            .collect();
        // Horizontal: each label is one line beside its bar, readable at 12 bars where labels
        // under vertical bars overlap.
        let _ = writeln!(
            out,
            "```mermaid\nxychart-beta horizontal\n    title \"Node coverage by distribution and architecture\"\n    x-axis [{}]\n    y-axis \"node coverage %\" 0 --> 100\n    bar [{}]\n```\n",
            labels.join(", "),
            values.join(", ")
        );
        if s.breakdown.len() > pairs.len() {
            let _ = writeln!(
                out,
                "+{} more distribution and architecture pairs in the table below.\n",
                s.breakdown.len() - pairs.len()
            );
        }
    }
    let total: u64 = report.identities.iter().map(|r| r.nodes).sum();
    let n = report.identities.len();
    if total > 0 && n > 1 {
        // Ranks 1..=n sampled evenly (always the first and the last).
        let points = n.min(20);
        let ranks: Vec<usize> = (0..points)
            .map(|i| 1 + i * (n - 1) / (points - 1).max(1))
            .collect();
        let mut cumulative = Vec::with_capacity(n);
        let mut sum = 0u64;
        for r in &report.identities {
            sum += r.nodes;
            cumulative.push(sum);
        }
        let shares: Vec<String> = ranks
            .iter()
            .map(|&k| {
                format!(
                    "{}",
                    (cumulative[k - 1] as f64 * 1000.0 / total as f64).round() / 10.0
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "```mermaid\nxychart-beta\n    title \"Head and tail: nodes held by the most-run identities\"\n    x-axis \"identities, most nodes first\" [{}]\n    y-axis \"% of nodes\" 0 --> 100\n    line [{}]\n```\n",
            ranks
                .iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(", "),
            shares.join(", ")
        );
    }
    out
}

pub(super) fn markdown(report: &CoverageReport, view: &View) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## kfleet coverage: driver {}\n",
        markdown_text(&s.driver_version)
    );
    let _ = writeln!(
        out,
        "| nodes | identities | node coverage | identity coverage | unused artifacts | bad rows |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {} | {} | **{}%** | {}% | {} | {} |\n",
        thousands(s.nodes),
        thousands(s.identities),
        s.node_coverage_pct,
        s.identity_coverage_pct,
        s.unused_artifacts,
        s.bad_rows
    );
    if let Some(next_boot) = next_boot_sentence(report) {
        let _ = writeln!(out, "**Next boot:** {}\n", markdown_text(&next_boot));
    }
    if let Some(eol) = end_of_life_sentence(report) {
        let _ = writeln!(out, "**End of life:** {}\n", markdown_text(&eol));
    }
    let _ = writeln!(
        out,
        "**Batch plan to {}%:** {}\n",
        s.batch_plan.target_pct,
        plan_sentence(report)
    );
    out.push_str(&mermaid_charts(report));
    let _ = writeln!(out, "| status | identities | nodes |\n|---|---:|---:|");
    for row in status_lines(report) {
        let _ = writeln!(out, "| {} | {} | {} |", row[0], row[1], row[2]);
    }
    let rows = view.rows(report);
    let gaps: Vec<&&IdentityRow> = rows.iter().filter(|r| !r.status.is_covered()).collect();
    if !gaps.is_empty() {
        let with_contexts = has_contexts(&rows);
        let _ = writeln!(
            out,
            "\n<details><summary>{} identities without an artifact</summary>\n",
            gaps.len()
        );
        let (extra_head, extra_rule) = if with_contexts {
            (" contexts |", "---|")
        } else {
            ("", "")
        };
        let _ = writeln!(
            out,
            "| identity | nodes | status |{extra_head} reason |\n|---|---:|---|{extra_rule}---|"
        );
        for r in gaps {
            let extra = if with_contexts {
                format!(" {} |", markdown_text(&contexts_cell(r)))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} |{extra} {} |",
                markdown_text(&r.key),
                thousands(r.nodes),
                r.status,
                markdown_text(r.reason.as_deref().unwrap_or(""))
            );
        }
        let _ = writeln!(out, "\n</details>");
    }
    out
}

/// How many upcoming kernels are prebuilt and missing, and how many of the unused artifacts are
/// prebuilt upcoming kernels.
struct UpcomingCounts {
    covered: usize,
    missing: usize,
    prebuilt: usize,
}

impl UpcomingCounts {
    fn of(report: &CoverageReport, found: &UpcomingReport) -> Self {
        let keys: std::collections::HashSet<String> = found.rows.iter().map(|r| r.key()).collect();
        UpcomingCounts {
            covered: found.rows.iter().filter(|r| r.status.is_covered()).count(),
            missing: found.missing().count(),
            prebuilt: report
                .unused
                .iter()
                .filter(|a| keys.contains(&a.key))
                .count(),
        }
    }
}

/// A text report with the upcoming kernels' section after it (before the script in HTML).
pub(super) fn with_upcoming(
    text: String,
    report: &CoverageReport,
    found: &UpcomingReport,
    format: Format,
) -> String {
    let UpcomingCounts {
        covered,
        missing,
        prebuilt,
    } = UpcomingCounts::of(report, found);
    let sentence = format!(
        "{} upcoming kernels on {} of the fleet's {} lines: {covered} prebuilt, {missing} without an artifact; {prebuilt} of the {} unused artifacts are prebuilt upcoming kernels",
        found.rows.len(),
        found.lines_with_upcoming,
        found.lines,
        report.unused.len()
    );
    let cells = upcoming_cells(&found.rows);
    let mut out = text;
    match format {
        Format::Csv | Format::Json => {}
        Format::Table => {
            let _ = writeln!(out, "\nupcoming (not counted in coverage): {sentence}");
            if !cells.is_empty() {
                out.push_str(&grid(&UPCOMING_COLUMNS, &cells, &[1]));
            }
        }
        Format::Markdown => {
            let _ = writeln!(
                out,
                "\n**Upcoming kernels** (not counted in coverage): {sentence}\n"
            );
            if !cells.is_empty() {
                let _ = writeln!(
                    out,
                    "| line | nodes | fleet newest | upcoming | published | status | headers from |\n|---|---:|---|---|---|---|---|"
                );
                for c in &cells {
                    let c: Vec<String> = c.iter().map(|x| markdown_text(x)).collect();
                    let _ = writeln!(out, "| {} |", c.join(" | "));
                }
            }
        }
        Format::Html => {
            let mut section = format!(
                "<h2>Upcoming kernels</h2>\n<p>Not counted in coverage: {}</p>\n",
                crate::text::html_text(&sentence)
            );
            if !cells.is_empty() {
                section.push_str("<table><tr><th>line</th><th>nodes</th><th>fleet newest</th><th>upcoming</th><th>published</th><th>status</th><th>headers from</th></tr>\n");
                for c in &cells {
                    section.push_str("<tr>");
                    for x in c {
                        let _ = write!(section, "<td>{}</td>", crate::text::html_text(x));
                    }
                    section.push_str("</tr>\n");
                }
                section.push_str("</table>\n");
            }
            match out.rfind("<script>") {
                Some(at) => out.insert_str(at, &section),
                None => out.push_str(&section),
            }
        }
    }
    out
}

/// The upcoming kernels' table columns: UPCOMING names the meta-package that points at a kernel
/// of another series (`7.0.0-1018-aws (via linux-headers-aws)`); HEADERS FROM is the source whose
/// metadata lists the kernel's header package (its headers resolve there).
pub const UPCOMING_COLUMNS: [&str; 7] = [
    "LINE",
    "NODES",
    "FLEET NEWEST",
    "UPCOMING",
    "PUBLISHED",
    "STATUS",
    "HEADERS FROM",
];

/// The upcoming kernels' table cells, in [`UPCOMING_COLUMNS`] order.
pub fn upcoming_cells(rows: &[crate::coverage::upcoming::UpcomingRow]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| {
            vec![
                clean(&r.line).into_owned(),
                thousands(r.nodes),
                clean(&r.fleet_newest).into_owned(),
                match &r.upcoming.via {
                    Some(meta) => clean(&format!(
                        "{} (via {meta})",
                        r.upcoming.identity.kernel_version
                    ))
                    .into_owned(),
                    None => clean(&r.upcoming.identity.kernel_version).into_owned(),
                },
                r.upcoming
                    .published
                    .map(|t| t.format("%Y-%m-%d").to_string())
                    .unwrap_or_else(|| "-".into()),
                match &r.served_by {
                    Some(artifact) => {
                        clean(&format!("{} ({artifact})", r.status.as_str())).into_owned()
                    }
                    None => r.status.as_str().to_string(),
                },
                clean(&r.upcoming.source).into_owned(),
            ]
        })
        .collect()
}
