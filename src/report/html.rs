//! `report --format html`: one self-contained file for people who will not open a terminal: the
//! summary, two inline SVG charts (node coverage per distribution and architecture; the head/tail
//! curve), the status counts and a table sortable by clicking its headers. No external asset:
//! styles, charts and the sorting script are in the file; every value is HTML-escaped.

use super::coverage::{View, plan_sentence, status_lines};
use crate::coverage::CoverageReport;
use crate::text::{html_text as esc, thousands};
use std::fmt::Write as _;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em}\
th{background:#f3f3f3;cursor:pointer;user-select:none}td.n{text-align:right}\
.covered{color:#16794b}.missing{color:#b3261e}.long-tail{color:#8a6d00}\
svg text{font:11px system-ui,sans-serif}";

/// Sorts `#identities` by the clicked column (numbers as numbers), toggling the direction.
const SCRIPT: &str = "document.querySelectorAll('#identities th').forEach(function(th,i){\
th.addEventListener('click',function(){var t=th.closest('table'),b=t.tBodies[0],\
r=Array.from(b.rows),d=th.dataset.dir==='asc'?-1:1;th.dataset.dir=d===1?'asc':'desc';\
r.sort(function(x,y){var a=x.cells[i].dataset.v||x.cells[i].textContent,\
c=y.cells[i].dataset.v||y.cells[i].textContent,p=parseFloat(a),q=parseFloat(c);\
return d*(isNaN(p)||isNaN(q)?a.localeCompare(c):p-q);});r.forEach(function(x){b.appendChild(x);});});});";

/// Node coverage per distribution and architecture, one bar each (at most 12).
fn coverage_bars(report: &CoverageReport) -> String {
    let pairs: Vec<_> = report.summary.breakdown.iter().take(12).collect();
    if pairs.is_empty() {
        return String::new();
    }
    let (bar_h, gap, label_w, width) = (18.0, 6.0, 170.0, 360.0);
    let height = pairs.len() as f64 * (bar_h + gap) + 10.0;
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"Node coverage by distribution and architecture\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\">",
        label_w + width + 60.0,
        label_w + width + 60.0
    );
    for (i, b) in pairs.iter().enumerate() {
        let y = i as f64 * (bar_h + gap) + 5.0;
        let w = (b.node_coverage_pct.clamp(0.0, 100.0) / 100.0 * width).round();
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\">{} {} ({} nodes)</text>\
             <rect x=\"{label_w}\" y=\"{y}\" width=\"{width}\" height=\"{bar_h}\" fill=\"#eee\"/>\
             <rect x=\"{label_w}\" y=\"{y}\" width=\"{w}\" height=\"{bar_h}\" fill=\"#16794b\"/>\
             <text x=\"{}\" y=\"{}\">{}%</text>",
            y + 13.0,
            esc(&b.distribution),
            esc(&b.architecture),
            thousands(b.nodes),
            label_w + width + 6.0,
            y + 13.0,
            b.node_coverage_pct
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The share of nodes held by the N most-run identities, N from 1 to all.
fn head_tail_curve(report: &CoverageReport) -> String {
    let total: u64 = report.identities.iter().map(|r| r.nodes).sum();
    let n = report.identities.len();
    if total == 0 || n == 0 {
        return String::new();
    }
    let (w, h, pad) = (520.0, 200.0, 30.0);
    let mut sum = 0u64;
    let mut points = vec![format!("{pad},{}", h + pad)];
    for (i, r) in report.identities.iter().enumerate() {
        sum += r.nodes;
        let x = pad + (i + 1) as f64 / n as f64 * w;
        let y = pad + h - sum as f64 / total as f64 * h;
        points.push(format!("{x:.1},{y:.1}"));
    }
    format!(
        "<svg role=\"img\" aria-label=\"Head and tail: share of nodes held by the most-run identities\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\">\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"#999\"/>\
         <polyline fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"2\" points=\"{}\"/>\
         <text x=\"{pad}\" y=\"{}\">0</text><text x=\"{}\" y=\"{}\">{} identities</text>\
         <text x=\"0\" y=\"{}\">100%</text></svg>",
        w + 2.0 * pad,
        h + 2.0 * pad,
        w + 2.0 * pad,
        h + 2.0 * pad,
        h + pad,
        w + pad,
        h + pad,
        h + pad,
        points.join(" "),
        h + pad + 14.0,
        w - 40.0,
        h + pad + 14.0,
        thousands(n as u64),
        pad + 4.0
    )
}

/// The whole report as one HTML document.
pub fn html(report: &CoverageReport, view: &View) -> String {
    let s = &report.summary;
    let title = format!("kfleet coverage: driver {}", esc(&s.driver_version));
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
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
    out.push_str("</table>\n<h2>Identities</h2>\n<p>Click a column to sort.</p>\n");
    let rows = view.rows(report);
    let with_contexts = super::coverage::has_contexts(&rows);
    let _ = writeln!(
        out,
        "<table id=\"identities\"><thead><tr><th>identity</th><th>nodes</th><th>status</th>{}<th>reason</th><th>asset</th></tr></thead><tbody>",
        if with_contexts {
            "<th>contexts</th>"
        } else {
            ""
        }
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
