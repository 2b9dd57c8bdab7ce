//! Report writers (table, CSV, JSON, Markdown) and atomic file output.

#[cfg(feature = "fleet")]
mod coverage;
#[cfg(feature = "fleet")]
mod html;
mod lists;
#[cfg(feature = "fleet")]
pub use coverage::{UPCOMING_COLUMNS, View, identities_csv, upcoming_cells};
pub use lists::{RunRow, decisions, header_plan, header_resolution, runs};

use crate::artifacts::MatchedAsset;
use crate::text::Cause;
use crate::text::{csv_cell, grid, html_text, markdown_text};
use std::fmt::Write as _;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Csv,
    Json,
    Markdown,
    /// One self-contained file: charts as inline SVG, a sortable table, no external assets.
    Html,
}

/// Output of commands that print a list (runs, decisions, header attempts): a table or JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ListFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot encode the report: {0}")]
    Encode(#[source] Cause),
}

/// Writes `bytes` to `path` atomically (see [`crate::fsio::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    crate::fsio::write_atomic(path, bytes).map_err(|source| ReportError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Like [`write_atomic`], streaming the content through `fill`.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> Result<(), ReportError> {
    crate::fsio::write_atomic_with(path, fill).map_err(|source| ReportError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Renders the unused artifacts: built, but no node runs their kernel.
pub fn render_unused(unused: &[MatchedAsset], format: Format) -> Result<String, ReportError> {
    match format {
        Format::Json => serde_json::to_string_pretty(unused)
            .map(|s| s + "\n")
            .map_err(|e| ReportError::Encode(Cause::of(e))),
        Format::Csv => {
            let mut w = ::csv::Writer::from_writer(Vec::new());
            let enc = |e: ::csv::Error| ReportError::Encode(Cause::of(e));
            w.write_record(["asset", "key", "url", "digest"])
                .map_err(enc)?;
            for a in unused {
                w.write_record([
                    csv_cell(&a.name),
                    csv_cell(&a.key),
                    csv_cell(a.url.as_deref().unwrap_or("")),
                    csv_cell(a.digest.as_deref().unwrap_or("")),
                ])
                .map_err(enc)?;
            }
            finish_csv(w)
        }
        Format::Html => {
            let mut out = format!(
                "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Unused artifacts</title></head><body>\n<h1>Unused artifacts ({})</h1>\n<table><tr><th>asset</th><th>identity</th></tr>\n",
                unused.len()
            );
            for a in unused {
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    html_text(&a.name),
                    html_text(&a.key)
                );
            }
            out.push_str("</table></body></html>\n");
            Ok(out)
        }
        Format::Markdown => {
            let mut out = format!("### Unused artifacts ({})\n\n", unused.len());
            out.push_str("| asset | identity |\n|---|---|\n");
            for a in unused {
                let _ = writeln!(
                    out,
                    "| {} | {} |",
                    markdown_text(&a.name),
                    markdown_text(&a.key)
                );
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
        .map_err(|e| ReportError::Encode(Cause::of(e)))?;
    String::from_utf8(bytes).map_err(|e| ReportError::Encode(Cause::of(e)))
}

/// The JSON report ([`render`] with [`Format::Json`]) written to `out` as it is serialised.
#[cfg(feature = "fleet")]
pub fn render_json_to(
    out: impl std::io::Write,
    report: &crate::coverage::CoverageReport,
    view: &View,
    upcoming: Option<&crate::coverage::upcoming::UpcomingReport>,
) -> std::io::Result<()> {
    coverage::json_to(out, report, view, upcoming)
}

/// Renders a coverage report, with the upcoming kernels as a section of their own when given
/// (counted apart: node coverage stays the coverage of running kernels; CSV stays the
/// identities alone).
#[cfg(feature = "fleet")]
pub fn render(
    report: &crate::coverage::CoverageReport,
    format: Format,
    view: &View,
    upcoming: Option<&crate::coverage::upcoming::UpcomingReport>,
) -> Result<String, ReportError> {
    let text = match format {
        Format::Table => coverage::table(report, view),
        Format::Csv => return coverage::identities_csv(&view.rows(report)),
        Format::Json => return coverage::json(report, view, upcoming),
        Format::Markdown => coverage::markdown(report, view),
        Format::Html => html::html(report, view),
    };
    Ok(match upcoming {
        Some(found) => coverage::with_upcoming(text, report, found, format),
        None => text,
    })
}
