//! `report --format html`: one self-contained file for people who will not open a terminal: the
//! summary, two charts (node coverage per distribution and architecture as bars that take the
//! page's width; the head/tail curve on axes, with the head marked), the status counts and a table
//! sorted by its header buttons (mouse or keyboard, the order in `aria-sort`). No external asset:
//! styles, charts and the sorting script are in the file; every value is HTML-escaped.

use super::coverage::{
    View, end_of_life_sentence, next_boot_sentence, plan_sentence, status_lines,
};
use crate::coverage::CoverageReport;
use crate::text::{html_text as esc, thousands};
use std::fmt::Write as _;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em}\
#identities{width:100%}th{background:#f3f3f3;text-align:left;white-space:nowrap}\
td.n{text-align:right}th button{all:unset;cursor:pointer;font-weight:bold}\
th button:focus-visible{outline:2px solid #1f5fbf;outline-offset:2px}\
th[aria-sort=ascending] button::after{content:\" \\25B2\"}\
th[aria-sort=descending] button::after{content:\" \\25BC\"}\
.covered,.compatible{color:#16794b}.missing{color:#b3261e}.long-tail{color:#8a6d00}\
.bars{display:grid;grid-template-columns:max-content 1fr max-content;gap:6px 10px;\
align-items:center;margin:1em 0}.bars .label{white-space:nowrap}\
.bars .track{background:#eee;height:18px}.bars .fill{background:#16794b;height:100%}\
.curve{display:block;width:100%;max-width:72em;height:auto}\
.curve text{font:11px system-ui,sans-serif}";

/// Sorts `#identities` by the header button pressed (click, Enter or Space), numbers as numbers
/// and names naturally; the header's `aria-sort` says the order and shows its arrow.
const SCRIPT: &str = "document.querySelectorAll('#identities th').forEach(function(th,i){\
th.querySelector('button').addEventListener('click',function(){var t=th.closest('table'),\
b=t.tBodies[0],r=Array.from(b.rows),up=th.getAttribute('aria-sort')!=='ascending',d=up?1:-1;\
t.querySelectorAll('th').forEach(function(o){o.setAttribute('aria-sort','none');});\
th.setAttribute('aria-sort',up?'ascending':'descending');\
r.sort(function(x,y){var a=x.cells[i].dataset.v||x.cells[i].textContent,\
c=y.cells[i].dataset.v||y.cells[i].textContent,p=parseFloat(a),q=parseFloat(c);\
return d*(isNaN(p)||isNaN(q)?a.localeCompare(c,undefined,{numeric:true}):p-q);});\
r.forEach(function(x){b.appendChild(x);});});});";

/// Node coverage per distribution and architecture, one bar each (at most 12): a grid whose
/// label column is as wide as the longest label, so no label is ever cut, and whose bars take
/// the rest of the page's width.
fn coverage_bars(report: &CoverageReport) -> String {
    let pairs: Vec<_> = report.summary.breakdown.iter().take(12).collect();
    if pairs.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<div class=\"bars\" role=\"list\" aria-label=\"Node coverage by distribution and architecture\">",
    );
    for b in pairs {
        let pct = b.node_coverage_pct.clamp(0.0, 100.0);
        let label = format!(
            "{} {} ({} nodes)",
            b.distribution,
            b.architecture,
            thousands(b.nodes)
        );
        let _ = write!(
            out,
            "<span class=\"label\" role=\"listitem\" aria-label=\"{}: {pct}% covered\">{}</span>\
             <span class=\"track\" aria-hidden=\"true\"><span class=\"fill\" style=\"display:block;width:{pct}%\"></span></span>\
             <span class=\"n\" aria-hidden=\"true\">{pct}%</span>",
            esc(&label),
            esc(&label),
        );
    }
    out.push_str("</div>");
    out
}

/// The share of nodes held by the N most-run identities, N from 1 to all, on axes with ticks,
/// and a mark where the head ends (the identities that hold `head_share` of the nodes).
fn head_tail_curve(report: &CoverageReport) -> String {
    let total: u64 = report.identities.iter().map(|r| r.nodes).sum();
    let n = report.identities.len();
    if total == 0 || n == 0 {
        return String::new();
    }
    let (w, h, left, top, bottom) = (600.0, 220.0, 48.0, 12.0, 44.0);
    let x_of = |i: f64| left + i / n as f64 * w;
    let y_of = |share: f64| top + h - share * h;
    let mut sum = 0u64;
    let mut points = vec![format!("{left},{}", y_of(0.0))];
    for (i, r) in report.identities.iter().enumerate() {
        sum += r.nodes;
        points.push(format!(
            "{:.1},{:.1}",
            x_of((i + 1) as f64),
            y_of(sum as f64 / total as f64)
        ));
    }
    let mut svg = format!(
        "<svg class=\"curve\" role=\"img\" aria-label=\"Head and tail: share of nodes held by the most-run identities\" viewBox=\"0 0 {} {}\">",
        left + w + 16.0,
        top + h + bottom
    );
    // Axes, ticks and their labels.
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#555\"/>\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{0}\" stroke=\"#555\"/>",
        y_of(0.0),
        left + w
    );
    for quarter in 0..=4 {
        let share = f64::from(quarter) / 4.0;
        let y = y_of(share);
        let _ = write!(
            svg,
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{left}\" y2=\"{y}\" stroke=\"#555\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}%</text>",
            left - 4.0,
            left - 6.0,
            y + 4.0,
            quarter * 25
        );
        let at = (n as f64 * share).round();
        let x = x_of(at);
        let _ = write!(
            svg,
            "<line x1=\"{x}\" y1=\"{0}\" x2=\"{x}\" y2=\"{1}\" stroke=\"#555\"/>\
             <text x=\"{x}\" y=\"{2}\" text-anchor=\"middle\">{3}</text>",
            y_of(0.0),
            y_of(0.0) + 4.0,
            y_of(0.0) + 16.0,
            thousands(at as u64)
        );
    }
    let _ = write!(
        svg,
        "<text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">identities, most nodes first</text>\
         <text class=\"axis\" transform=\"translate(12 {}) rotate(-90)\" text-anchor=\"middle\">share of nodes</text>",
        left + w / 2.0,
        top + h + bottom - 6.0,
        top + h / 2.0
    );
    // The head: where the curve reaches the head share.
    let s = &report.summary;
    let (hx, hy) = (x_of(s.head_identities as f64), y_of(s.head_share));
    let _ = write!(
        svg,
        "<g class=\"head\"><line x1=\"{left}\" y1=\"{hy}\" x2=\"{hx}\" y2=\"{hy}\" stroke=\"#b3261e\" stroke-dasharray=\"4 3\"/>\
         <line x1=\"{hx}\" y1=\"{hy}\" x2=\"{hx}\" y2=\"{}\" stroke=\"#b3261e\" stroke-dasharray=\"4 3\"/>\
         <circle cx=\"{hx}\" cy=\"{hy}\" r=\"4\" fill=\"#b3261e\"/>\
         <text x=\"{}\" y=\"{}\">head: {} identities hold {}% of nodes</text></g>",
        y_of(0.0),
        hx + 8.0,
        hy + 16.0,
        thousands(s.head_identities),
        (s.head_share * 100.0).round()
    );
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"2\" points=\"{}\"/></svg>",
        points.join(" ")
    );
    svg
}

/// A header cell the keyboard reaches: a button inside, the sort order in `aria-sort`.
fn sortable(name: &str, sort: &str) -> String {
    format!("<th aria-sort=\"{sort}\"><button type=\"button\">{name}</button></th>")
}

/// The whole report as one HTML document.
pub fn html(report: &CoverageReport, view: &View) -> String {
    let s = &report.summary;
    let title = format!("kfleet coverage: driver {}", esc(&s.driver_version));
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
    );
    let _ = writeln!(
        out,
        "<table><tr><th>nodes</th><th>identities</th><th>node coverage</th><th>identity coverage</th><th>unused artifacts</th><th>bad rows</th></tr>\
         <tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\"><b>{}%</b></td><td class=\"n\">{}%</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr></table>",
        thousands(s.nodes),
        thousands(s.identities),
        s.node_coverage_pct,
        s.identity_coverage_pct,
        s.unused_artifacts,
        s.bad_rows
    );
    let _ = writeln!(
        out,
        "<p><b>Batch plan to {}%:</b> {}</p>",
        s.batch_plan.target_pct,
        esc(&plan_sentence(report))
    );
    if let Some(next_boot) = next_boot_sentence(report) {
        let _ = writeln!(out, "<p><b>Next boot:</b> {}</p>", esc(&next_boot));
    }
    if let Some(eol) = end_of_life_sentence(report) {
        let _ = writeln!(out, "<p><b>End of life:</b> {}</p>", esc(&eol));
    }
    let _ = writeln!(
        out,
        "<h2>Node coverage by distribution and architecture</h2>\n{}\n<h2>Head and tail</h2>\n{}",
        coverage_bars(report),
        head_tail_curve(report)
    );
    out.push_str(
        "<h2>Statuses</h2>\n<table><tr><th>status</th><th>identities</th><th>nodes</th></tr>",
    );
    for row in status_lines(report) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&row[0]),
            esc(&row[1]),
            esc(&row[2])
        );
    }
    out.push_str("</table>\n<h2>Identities</h2>\n<p>Click a column, or focus it and press Enter, to sort.</p>\n");
    let rows = view.rows(report);
    let with_contexts = super::coverage::has_contexts(&rows);
    let mut head = sortable("identity", "none") + &sortable("nodes", "descending");
    head.push_str(&sortable("status", "none"));
    if with_contexts {
        head.push_str(&sortable("contexts", "none"));
    }
    for name in ["reason", "asset"] {
        head.push_str(&sortable(name, "none"));
    }
    let _ = writeln!(
        out,
        "<table id=\"identities\"><thead><tr>{head}</tr></thead><tbody>"
    );
    for r in rows {
        let contexts = if with_contexts {
            format!("<td>{}</td>", esc(&super::coverage::contexts_cell(r)))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\" data-v=\"{}\">{}</td><td class=\"{}\">{}</td>{contexts}<td>{}</td><td>{}</td></tr>",
            esc(&r.key),
            r.nodes,
            thousands(r.nodes),
            r.status,
            r.status,
            esc(r.reason.as_deref().unwrap_or("")),
            esc(r.asset.as_deref().unwrap_or(""))
        );
    }
    let _ = write!(
        out,
        "</tbody></table>\n<script>{SCRIPT}</script>\n</body></html>\n"
    );
    out
}
