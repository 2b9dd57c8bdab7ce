//! Text for terminals and files, a leaf every layer may use: control characters and
//! bidirectional overrides made harmless, HTML and Markdown escaping, CSV cells a spreadsheet will
//! not run, thousands separators and plain text grids.

use std::fmt::Write as _;

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

/// `n` things with thousands separators and the noun's number: `1 node`, `1,204 nodes`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
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

/// Orders versions (kernels, drivers) as package managers do: runs of digits compare as numbers, runs of
/// letters as text, digits after letters (`5.15.0-125-generic` after `5.15.0-91-generic`,
/// `5.14.0-503.11.1.el9_5` after `5.14.0-427.42.1.el9_4`).
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    /// Runs of digits and runs of letters; anything else separates them.
    fn segments(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start: Option<(usize, bool)> = None;
        for (i, c) in s.char_indices() {
            let kind = c.is_ascii_alphanumeric().then(|| c.is_ascii_digit());
            match (start, kind) {
                (Some((_, digits)), Some(k)) if digits == k => {}
                (Some((st, _)), _) => {
                    out.push(&s[st..i]);
                    start = kind.map(|k| (i, k));
                }
                (None, Some(k)) => start = Some((i, k)),
                (None, None) => {}
            }
        }
        if let Some((st, _)) = start {
            out.push(&s[st..]);
        }
        out
    }
    let (x, y) = (segments(a), segments(b));
    for (p, q) in x.iter().zip(&y) {
        let (pn, qn) = (
            p.bytes().all(|c| c.is_ascii_digit()),
            q.bytes().all(|c| c.is_ascii_digit()),
        );
        let order = match (pn, qn) {
            (true, true) => {
                let (p, q) = (p.trim_start_matches('0'), q.trim_start_matches('0'));
                p.len().cmp(&q.len()).then_with(|| p.cmp(q))
            }
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => p.cmp(q),
        };
        if order != std::cmp::Ordering::Equal {
            return order;
        }
    }
    x.len().cmp(&y.len())
}

/// Why something failed, kept by the error that wraps it: another error, typed (downcast it, or
/// walk its own causes through `source()`), or a sentence where nothing typed is underneath. Its
/// text is the whole chain on one line, so a message that includes it says everything, and
/// [`error_chain`] does not repeat it.
#[derive(Debug)]
pub struct Cause(Box<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    /// `e`, typed.
    pub fn of(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }

    /// A sentence, where no error is underneath.
    pub fn text(message: impl Into<String>) -> Self {
        Self(Box::new(Message(message.into())))
    }

    /// The error underneath, if it is a `T`.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self::text(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Self::text(message)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&error_chain(&*self.0))
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[derive(Debug)]
struct Message(String);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

/// An error and its causes on one line (`connect failed: tcp: connection refused`), as transport
/// errors nest them; a cause whose text the message already holds is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + '_)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg = format!("{msg}: {text}");
        }
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Read {
        path: &'static str,
        source: Cause,
    }

    #[test]
    fn a_cause_keeps_its_type_and_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Read {
            path: "x.toml",
            source: Cause::of(io),
        };
        let said = error_chain(&e);
        assert_eq!(said, "cannot read x.toml: no such file");
        let typed = std::error::Error::source(&e)
            .and_then(|c| c.downcast_ref::<Cause>())
            .and_then(|c| c.downcast_ref::<std::io::Error>())
            .map(|io| io.kind());
        assert_eq!(typed, Some(std::io::ErrorKind::NotFound));
        let text = Read {
            path: "y",
            source: "not TOML".into(),
        };
        assert_eq!(error_chain(&text), "cannot read y: not TOML");
    }
}
