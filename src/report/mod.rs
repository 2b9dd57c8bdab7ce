//! Report writers (table, CSV, JSON, Markdown) and atomic file output.

#[cfg(feature = "fleet")]
mod coverage;
#[cfg(feature = "fleet")]
pub use coverage::{View, identities_csv, render};

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
