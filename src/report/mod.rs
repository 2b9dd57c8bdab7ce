//! Report writers (table, CSV, JSON, Markdown) and atomic file output.

#[cfg(feature = "fleet")]
mod coverage;
#[cfg(feature = "fleet")]
mod html;
mod lists;
#[cfg(feature = "fleet")]
pub use coverage::{UPCOMING_COLUMNS, View, identities_csv, render, upcoming_cells};
pub use lists::{RunRow, decisions, header_plan, header_resolution, runs};

use crate::artifacts::MatchedAsset;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
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
    Encode(String),
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
            .map_err(|e| ReportError::Encode(e.to_string())),
        Format::Csv => {
            let mut w = ::csv::Writer::from_writer(Vec::new());
            let enc = |e: ::csv::Error| ReportError::Encode(e.to_string());
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

/// Text from inventories and the network for a terminal or a file: control characters (escape
/// sequences, newlines, carriage returns) and bidirectional overrides become `?`.
pub fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    let bad =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if s.chars().any(bad) {
        s.chars()
            .map(|c| if bad(c) { '?' } else { c })
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

/// HTML text and attribute values with `& < > " '` escaped (control characters blanked).
pub fn html_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// [`clean`] text, with Markdown's and HTML's active characters escaped so a table cell stays
/// one cell and renders as the text it is.
pub fn markdown_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in clean(s).chars() {
        if matches!(
            c,
            '\\' | '`'
                | '*'
                | '_'
                | '{'
                | '}'
                | '['
                | ']'
                | '<'
                | '>'
                | '('
                | ')'
                | '#'
                | '+'
                | '!'
                | '|'
                | '~'
                | '&'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A [`clean`] CSV cell; one that a spreadsheet would run as a formula (`= + - @`, or a tab or
/// carriage return first) is prefixed with `'`.
pub fn csv_cell(s: &str) -> String {
    let cleaned = clean(s);
    if cleaned.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cleaned}")
    } else {
        cleaned.into_owned()
    }
}

fn finish_csv(w: ::csv::Writer<Vec<u8>>) -> Result<String, ReportError> {
    let bytes = w
        .into_inner()
        .map_err(|e| ReportError::Encode(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| ReportError::Encode(e.to_string()))
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
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
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
