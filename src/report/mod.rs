//! Report writers (table, CSV, JSON, Markdown) and atomic file output.

use crate::coverage::{CoverageReport, CoverageStatus, IdentityRow};
use crate::forge::MatchedAsset;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Csv,
    Json,
    Markdown,
}

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
    fn rows<'a>(&self, report: &'a CoverageReport) -> Vec<&'a IdentityRow> {
        report
            .identities
            .iter()
            .filter(|r| self.statuses.is_empty() || self.statuses.contains(&r.status))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot encode the report: {0}")]
    Encode(String),
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees half a file and a failure leaves any previous file intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], streaming the content through `fill`.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".kfleet-")
        .tempfile_in(dir)
        .map_err(err)?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        fill(&mut w).map_err(err)?;
        w.flush().map_err(err)?;
    }
    // Temp files are created 0600; a report is an ordinary file, or keeps the mode it had.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let permissions = std::fs::metadata(path)
            .map(|m| m.permissions())
            .unwrap_or_else(|_| std::fs::Permissions::from_mode(0o644));
        tmp.as_file().set_permissions(permissions).map_err(err)?;
    }
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Renders a coverage report.
pub fn render(report: &CoverageReport, format: Format, view: &View) -> Result<String, ReportError> {
    match format {
        Format::Table => Ok(table(report, view)),
        Format::Csv => identities_csv(&view.rows(report)),
        Format::Json => json(report, view),
        Format::Markdown => Ok(markdown(report, view)),
    }
}

/// Renders the unused artifacts: built, but no node runs their kernel.
pub fn render_unused(unused: &[MatchedAsset], format: Format) -> Result<String, ReportError> {
    match format {
        Format::Json => serde_json::to_string_pretty(unused)
            .map(|s| s + "\n")
            .map_err(|e| ReportError::Encode(e.to_string())),
        Format::Csv => {
            let mut w = ::csv::Writer::from_writer(Vec::new());
            let enc = |e: ::csv::Error| ReportError::Encode(e.to_string());
            w.write_record(["asset", "key", "url", "digest"])
                .map_err(enc)?;
            for a in unused {
                w.write_record([
                    a.name.as_str(),
                    a.key.as_str(),
                    a.url.as_deref().unwrap_or(""),
                    a.digest.as_deref().unwrap_or(""),
                ])
                .map_err(enc)?;
            }
            finish_csv(w)
        }
        Format::Markdown => {
            let mut out = format!("### Unused artifacts ({})\n\n", unused.len());
            out.push_str("| asset | identity |\n|---|---|\n");
            for a in unused {
                let _ = writeln!(out, "| `{}` | `{}` |", a.name, a.key);
            }
            Ok(out)
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = unused
                .iter()
                .map(|a| vec![a.key.clone(), a.name.clone()])
                .collect();
            let mut out = format!(
                "{} unused artifact(s): built, but no node runs the kernel\n",
                unused.len()
            );
            out.push_str(&grid(&["IDENTITY", "ASSET"], &rows, &[]));
            Ok(out)
        }
    }
}

fn finish_csv(w: ::csv::Writer<Vec<u8>>) -> Result<String, ReportError> {
    let bytes = w
        .into_inner()
        .map_err(|e| ReportError::Encode(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| ReportError::Encode(e.to_string()))
}

/// The identities as CSV (the `--format csv` columns).
pub fn identities_csv(rows: &[&IdentityRow]) -> Result<String, ReportError> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let enc = |e: ::csv::Error| ReportError::Encode(e.to_string());
    w.write_record([
        "distribution",
        "distro_version",
        "architecture",
        "kernel_version",
        "nodes",
        "status",
        "reason",
        "asset",
    ])
    .map_err(enc)?;
    for r in rows {
        w.write_record([
            r.distribution.as_str(),
            r.distro_version.as_str(),
            r.architecture.as_str(),
            r.kernel_version.as_str(),
            &r.nodes.to_string(),
            r.status.as_str(),
            r.reason.as_deref().unwrap_or(""),
            r.asset.as_deref().unwrap_or(""),
        ])
        .map_err(enc)?;
    }
    finish_csv(w)
}

fn json(report: &CoverageReport, view: &View) -> Result<String, ReportError> {
    let doc = serde_json::json!({
        "summary": report.summary,
        "identities": view.rows(report),
        "unused": report.unused,
        "unrecognised_assets": report.unrecognised,
        "bad_rows": report.bad_rows,
    });
    serde_json::to_string_pretty(&doc)
        .map(|s| s + "\n")
        .map_err(|e| ReportError::Encode(e.to_string()))
}

/// Formats an integer with thousands separators.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A plain text grid; columns listed in `right` are right-aligned.
pub fn grid(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths[i];
            if i > 0 {
                s.push_str("  ");
            }
            if right.contains(&i) {
                let _ = write!(s, "{cell:>w$}");
            } else if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<w$}");
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn status_lines(report: &CoverageReport) -> Vec<Vec<String>> {
    report
        .summary
        .statuses
        .iter()
        .map(|(s, c)| vec![s.to_string(), thousands(c.identities), thousands(c.nodes)])
        .collect()
}

fn plan_sentence(report: &CoverageReport) -> String {
    let p = &report.summary.batch_plan;
    if p.builds == 0 && p.reachable {
        return format!("node coverage already meets {}%", p.target_pct);
    }
    let verdict = if p.reachable {
        String::new()
    } else {
        format!(
            " (short of {}%: the rest is unsupported or invalid)",
            p.target_pct
        )
    };
    format!(
        "{} build(s) lift node coverage to {}% (+{} nodes){verdict}",
        p.builds,
        p.node_coverage_after_pct,
        thousands(p.nodes_gained)
    )
}

fn table(report: &CoverageReport, view: &View) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let _ = writeln!(out, "kfleet coverage for driver {}", s.driver_version);
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
    let cells: Vec<Vec<String>> = rows[..shown]
        .iter()
        .map(|r| {
            vec![
                r.distribution.clone(),
                r.distro_version.clone(),
                r.architecture.clone(),
                r.kernel_version.clone(),
                thousands(r.nodes),
                r.status.to_string(),
                r.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&grid(
        &[
            "DISTRIBUTION",
            "VERSION",
            "ARCH",
            "KERNEL",
            "NODES",
            "STATUS",
            "REASON",
        ],
        &cells,
        &[4],
    ));
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
                let _ = writeln!(out, "  {}: {}", a.name, a.reason);
            }
        }
        if !report.bad_rows.is_empty() {
            let _ = writeln!(out, "\nbad rows:");
            for b in &report.bad_rows {
                let _ = writeln!(out, "  {b}");
            }
        }
    }
    out
}

fn markdown(report: &CoverageReport, view: &View) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let _ = writeln!(out, "## kfleet coverage: driver `{}`\n", s.driver_version);
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
    let _ = writeln!(
        out,
        "**Batch plan to {}%:** {}\n",
        s.batch_plan.target_pct,
        plan_sentence(report)
    );
    let _ = writeln!(out, "| status | identities | nodes |\n|---|---:|---:|");
    for row in status_lines(report) {
        let _ = writeln!(out, "| {} | {} | {} |", row[0], row[1], row[2]);
    }
    let rows = view.rows(report);
    let gaps: Vec<&&IdentityRow> = rows
        .iter()
        .filter(|r| r.status != CoverageStatus::Covered)
        .collect();
    if !gaps.is_empty() {
        let _ = writeln!(
            out,
            "\n<details><summary>{} identities without an artifact</summary>\n",
            gaps.len()
        );
        let _ = writeln!(
            out,
            "| identity | nodes | status | reason |\n|---|---:|---|---|"
        );
        for r in gaps {
            let reason = r.reason.as_deref().unwrap_or("").replace('|', "\\|");
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                r.key,
                thousands(r.nodes),
                r.status,
                reason
            );
        }
        let _ = writeln!(out, "\n</details>");
    }
    out
}
