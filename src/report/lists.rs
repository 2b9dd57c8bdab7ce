//! The list outputs of `dispatch`, `runs` and `headers`: each command hands its typed result here
//! and prints what comes back. Tables pass every value that came from a file or the network
//! through [`clean`]; JSON is serde's (control characters escaped).

use super::ListFormat;
use crate::builds::Decision;
use crate::headers::{PlannedSource, Resolution};
use crate::text::{clean, grid};
use serde::Serialize;

/// One build run as `kfleet runs` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RunRow {
    pub id: u64,
    /// The identity the run builds, or its title when it names none.
    pub identity: String,
    /// GitHub's status, `timed-out` past the deadline (and whether a cancel was requested).
    pub status: String,
    pub conclusion: Option<String>,
    pub elapsed_secs: u64,
    pub deadline_secs: u64,
    pub url: Option<String>,
}

fn json(value: &impl Serialize) -> String {
    // Plain data: serialising cannot fail; were it to, the output says so instead of panicking.
    serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot encode: {e}\"}}"))
        + "\n"
}

/// `kfleet runs`: a table (with a line when there is no run) or JSON.
pub fn runs(rows: &[RunRow], workflow: &str, format: ListFormat) -> String {
    if format == ListFormat::Json {
        return json(&rows);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let elapsed = format!("{}m{:02}s", r.elapsed_secs / 60, r.elapsed_secs % 60);
            vec![
                r.id.to_string(),
                clean(&r.identity).into_owned(),
                r.status.clone(),
                r.conclusion.clone().unwrap_or_default(),
                format!("{elapsed} / {}m", r.deadline_secs / 60),
                clean(r.url.as_deref().unwrap_or_default()).into_owned(),
            ]
        })
        .collect();
    let mut out = grid(
        &[
            "RUN",
            "IDENTITY",
            "STATUS",
            "CONCLUSION",
            "ELAPSED / DEADLINE",
            "URL",
        ],
        &cells,
        &[],
    );
    if rows.is_empty() {
        out.push_str(&format!("no runs of {}\n", clean(workflow)));
    }
    out
}

/// `kfleet dispatch`: one line per identity key with what the planner did, or JSON objects with
/// the key beside the decision's fields.
pub fn decisions(decisions: &[(String, Decision)], format: ListFormat) -> String {
    if format == ListFormat::Json {
        #[derive(Serialize)]
        struct Row<'a> {
            key: &'a str,
            #[serde(flatten)]
            decision: &'a Decision,
        }
        let rows: Vec<Row> = decisions
            .iter()
            .map(|(key, decision)| Row { key, decision })
            .collect();
        return json(&rows);
    }
    decisions
        .iter()
        .map(|(key, d)| format!("{}: {}\n", clean(key), clean(&d.describe())))
        .collect()
}

/// `kfleet headers resolve --offline`: each source with the requests it would make.
pub fn header_plan(key: &str, plan: &[PlannedSource], format: ListFormat) -> String {
    if format == ListFormat::Json {
        return json(&plan);
    }
    let mut out = format!("plan for {key} (offline: nothing was fetched)\n");
    for (i, s) in plan.iter().enumerate() {
        out.push_str(&format!(
            "{}. {} ({}) for {}\n",
            i + 1,
            clean(&s.name),
            s.kind.as_str(),
            clean(&s.packages.join(", "))
        ));
        if let Some(problem) = s.problem.as_ref().or(s.unchecked.as_ref()) {
            out.push_str(&format!("   cannot be tried: {}\n", clean(problem)));
        }
        if let Some(checked_by) = &s.checked_by {
            out.push_str(&format!("   checked by: {}\n", clean(checked_by)));
        }
        for url in &s.urls {
            out.push_str(&format!("   {}\n", clean(url)));
        }
    }
    out
}

/// `kfleet headers resolve`: every attempt, then the packages found or that none was.
pub fn header_resolution(resolution: &Resolution, format: ListFormat) -> String {
    if format == ListFormat::Json {
        return json(resolution);
    }
    let rows: Vec<Vec<String>> = resolution
        .attempts
        .iter()
        .map(|a| {
            vec![
                clean(&a.source).into_owned(),
                a.kind.as_str().to_string(),
                format!("{} ms", a.millis),
                clean(&a.outcome).into_owned(),
                clean(&a.url).into_owned(),
            ]
        })
        .collect();
    let mut out = grid(&["SOURCE", "KIND", "TIME", "OUTCOME", "URL"], &rows, &[2]);
    match &resolution.resolved_by {
        Some(by) => {
            out.push_str(&format!("\nresolved by {}:\n", clean(by)));
            for p in &resolution.packages {
                let sum = p
                    .checksum
                    .as_ref()
                    .map(|c| format!(" {}:{}", c.algorithm, c.hex))
                    .unwrap_or_default();
                out.push_str(&format!("  {}{}\n", clean(&p.url), clean(&sum)));
                if let Some(vouch) = &p.vouch {
                    out.push_str(&format!(
                        "    vouched for by: {}\n",
                        clean(&vouch.to_string())
                    ));
                }
            }
        }
        None => out.push_str("\nunresolvable: every source was tried\n"),
    }
    out
}
