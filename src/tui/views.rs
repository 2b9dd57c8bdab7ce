//! Drawing: one function per view, popups for help and confirmation. Reads `App`, changes nothing
//! but the window the Kernels table shows.

use super::app::{App, Column, Mode, Pending, Tab};
use super::keys::{self, Command, KeyMode};
use crate::builds::Decision;
use crate::coverage::CoverageStatus;
use crate::headers::plan;
use crate::identity::KernelIdentity;
use crate::text::{clean, thousands};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Gauge, Paragraph, Row, Sparkline, Table, Tabs, Wrap,
};

/// Colours unless `NO_COLOR` is set.
pub struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn from_env() -> Self {
        Self {
            color: !crate::environment::is_set(crate::environment::NO_COLOR),
        }
    }

    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    fn status(&self, s: CoverageStatus) -> (String, Style) {
        let (sym, color) = match s {
            CoverageStatus::Covered => ("✔", Color::Green),
            CoverageStatus::Compatible => ("≈", Color::Green),
            CoverageStatus::Building => ("⟳", Color::Cyan),
            CoverageStatus::Failed => ("✖", Color::Red),
            CoverageStatus::TimedOut => ("⌛", Color::Red),
            CoverageStatus::Missing => ("✗", Color::Yellow),
            CoverageStatus::LongTail => ("·", Color::Gray),
            CoverageStatus::Unsupported => ("–", Color::DarkGray),
            CoverageStatus::Invalid => ("!", Color::Magenta),
        };
        (format!("{sym} {}", s.as_str()), self.fg(color))
    }
}

pub fn render(app: &mut App, frame: &mut Frame, theme: &Theme) {
    let [top, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let s = &app.report.summary;
    let title = Line::from(vec![
        Span::styled(" kfleet ", Style::default().add_modifier(Modifier::BOLD)),
        Span::styled(
            app.forge_label.clone(),
            theme.fg(Color::Magenta).add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "  driver {}  nodes {}  node coverage {}%{}",
            s.driver_version,
            thousands(s.nodes),
            s.node_coverage_pct,
            if app.loading { "  refreshing…" } else { "" }
        )),
    ]);
    let [title_area, tabs_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(top);
    frame.render_widget(Paragraph::new(title), title_area);
    let selected = Tab::ALL.iter().position(|t| *t == app.tab).unwrap_or(0);
    frame.render_widget(
        Tabs::new(
            Tab::ALL
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{} {}", i + 1, t.title())),
        )
        .select(selected)
        .highlight_style(
            theme
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ),
        tabs_area,
    );
    match app.tab {
        Tab::Overview => overview(app, frame, body, theme),
        Tab::Kernels => kernels(app, frame, body, theme),
        Tab::Builds => builds(app, frame, body, theme),
        Tab::Headers => headers(app, frame, body),
        Tab::Upcoming => upcoming(app, frame, body, theme),
    }
    let hint = match app.mode {
        Mode::Filter => format!(
            " /{}▏{} {}",
            app.kernels
                .filter
                .chars()
                .take(app.kernels.filter_cursor)
                .collect::<String>(),
            app.kernels
                .filter
                .chars()
                .skip(app.kernels.filter_cursor)
                .collect::<String>(),
            keys::hint(
                &app.bindings,
                KeyMode::Filter,
                &[Command::KeepFilter, Command::ClearFilter]
            )
        ),
        _ => format!(" {}", app.status_line),
    };
    frame.render_widget(Paragraph::new(hint).style(theme.fg(Color::Gray)), footer);
    match &app.mode {
        Mode::Help => help(app, frame),
        Mode::Nodes => nodes(app, frame),
        Mode::Confirm(p) => confirm(app, p, frame),
        _ => {}
    }
}

fn bar(part: u64, whole: u64, width: usize) -> String {
    let filled = if whole == 0 {
        0
    } else {
        (part as f64 / whole as f64 * width as f64).round() as usize
    };
    format!(
        "{}{}",
        "█".repeat(filled.min(width)),
        "░".repeat(width - filled.min(width))
    )
}

fn overview(app: &App, frame: &mut Frame, area: Rect, theme: &Theme) {
    let s = &app.report.summary;
    let [gauges, curve, rest] = Layout::vertical([
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Min(3),
    ])
    .areas(area);
    // The head/tail curve: nodes per kernel, most-run first, bucketed to the width.
    let ranked: Vec<u64> = app
        .report
        .identities
        .iter()
        .filter(|r| {
            !matches!(
                r.status,
                CoverageStatus::Unsupported | CoverageStatus::Invalid
            )
        })
        .map(|r| r.nodes)
        .collect();
    let buckets = (curve.width.saturating_sub(2) as usize).max(1);
    let per = ranked.len().div_ceil(buckets).max(1);
    let data: Vec<u64> = ranked.chunks(per).map(|c| c.iter().sum()).collect();
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(
                "head/tail: nodes per kernel, most-run first; the head is the first {} of {}",
                s.head_identities,
                ranked.len()
            )))
            .data(&data)
            .style(theme.fg(Color::Cyan)),
        curve,
    );
    let [g1, g2] = Layout::vertical([Constraint::Length(3), Constraint::Length(3)]).areas(gauges);
    let gauge = |title: &str, pct: f64, detail: String| {
        Gauge::default()
            .block(Block::bordered().title(title.to_string()))
            .gauge_style(theme.fg(Color::Green))
            .ratio((pct / 100.0).clamp(0.0, 1.0))
            .label(format!("{pct}%  {detail}"))
    };
    frame.render_widget(
        gauge(
            "node coverage",
            s.node_coverage_pct,
            format!(
                "{} of {} nodes",
                thousands(s.covered_nodes),
                thousands(s.nodes)
            ),
        ),
        g1,
    );
    frame.render_widget(
        gauge(
            "identity coverage",
            s.identity_coverage_pct,
            format!(
                "{} of {} kernels",
                s.statuses[&CoverageStatus::Covered].identities
                    + s.statuses[&CoverageStatus::Compatible].identities,
                s.identities
            ),
        ),
        g2,
    );
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(rest);
    let mut lines: Vec<Line> = s
        .statuses
        .iter()
        .filter(|(_, c)| c.identities > 0)
        .map(|(st, c)| {
            let (label, style) = theme.status(*st);
            Line::from(vec![
                Span::styled(format!("{label:<14}"), style),
                Span::raw(format!(
                    "{:>6} kernels {:>8} nodes",
                    c.identities,
                    thousands(c.nodes)
                )),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::raw(format!(
        "head: {} kernels hold {}% of nodes; the rest is the long tail",
        s.head_identities,
        s.head_share * 100.0
    )));
    let p = &s.batch_plan;
    lines.push(Line::raw(format!(
        "batch plan to {}%: {} builds → {}%{}",
        p.target_pct,
        p.builds,
        p.node_coverage_after_pct,
        if p.reachable {
            String::new()
        } else {
            let left: Vec<String> = p
                .left_uncovered
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(status, n)| format!("{n} {status}"))
                .collect();
            format!(" (out of reach: {} nodes)", left.join(", "))
        }
    )));
    if p.nodes_building > 0 {
        lines.push(Line::raw(format!(
            "  counting {} nodes whose build is running",
            p.nodes_building
        )));
    }
    if s.next_boot_nodes > 0 {
        let style = if s.next_boot_uncovered > 0 {
            theme.fg(Color::Yellow)
        } else {
            Style::default()
        };
        lines.push(Line::styled(
            format!(
                "next boot: {} kernels installed, {} without a driver",
                thousands(s.next_boot_nodes),
                thousands(s.next_boot_uncovered)
            ),
            style,
        ));
    }
    if !s.end_of_life.is_empty() {
        lines.push(Line::styled(
            format!(
                "end of life: {} nodes run {}",
                thousands(s.end_of_life.iter().map(|e| e.nodes).sum()),
                s.end_of_life
                    .iter()
                    .map(|e| format!("{} {}", e.distribution, e.distro_version))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            theme.fg(Color::Yellow),
        ));
    }
    if s.release_immutable && p.builds > 0 {
        lines.push(Line::styled(
            format!(
                "release {} is immutable: build into the next release while it is a draft",
                s.driver_version
            ),
            theme.fg(Color::Red),
        ));
    }
    lines.push(Line::raw(format!(
        "artifacts {} · unused {} · unrecognised {} · bad rows {}",
        s.artifacts, s.unused_artifacts, s.unrecognised_assets, s.bad_rows
    )));
    for a in app.report.unused.iter().take(3) {
        lines.push(Line::styled(
            format!("  unused: {}", a.key),
            theme.fg(Color::DarkGray),
        ));
    }
    if app.report.unused.len() > 3 {
        lines.push(Line::styled(
            format!(
                "  +{} more (kfleet report --unused)",
                app.report.unused.len() - 3
            ),
            theme.fg(Color::DarkGray),
        ));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title("statuses"))
            .wrap(Wrap { trim: false }),
        left,
    );
    let width = (right.width as usize).saturating_sub(40).clamp(5, 30);
    let room = right.height.saturating_sub(2) as usize;
    // A line for "+N more" when the pairs do not all fit.
    let fits = if s.breakdown.len() > room {
        room.saturating_sub(1)
    } else {
        room
    };
    let mut rows: Vec<Line> = s
        .breakdown
        .iter()
        .take(fits)
        .map(|b| {
            Line::from(vec![
                Span::raw(format!("{:<12} {:<8}", b.distribution, b.architecture)),
                Span::styled(bar(b.covered_nodes, b.nodes, width), theme.fg(Color::Green)),
                Span::raw(format!(
                    " {:>6}% {:>7}",
                    b.node_coverage_pct,
                    thousands(b.nodes)
                )),
            ])
        })
        .collect();
    if s.breakdown.len() > fits {
        rows.push(Line::styled(
            format!(
                "+{} more (the Kernels view, or kfleet report)",
                s.breakdown.len() - fits
            ),
            theme.fg(Color::DarkGray),
        ));
    }
    frame.render_widget(
        Paragraph::new(rows)
            .block(Block::bordered().title("covered nodes per distribution / arch")),
        right,
    );
}

fn kernels(app: &mut App, frame: &mut Frame, area: Rect, theme: &Theme) {
    let filter = if app.kernels.filter.is_empty() {
        String::new()
    } else {
        format!(" filter: {}", app.kernels.filter)
    };
    let block = Block::bordered().title(format!(
        "{} of {} kernels{filter}",
        app.kernels.view.len(),
        app.report.identities.len()
    ));
    let inner = block.inner(area);
    // Header row; the rest are rows, built only for the visible window.
    app.kernels.page = (inner.height as usize).saturating_sub(1).max(1);
    // Where the rows are drawn, for a mouse click to find its row.
    app.kernels.rows_at = Some((inner.y.saturating_add(1), inner.x, inner.width));
    if app.kernels.selected >= app.kernels.offset + app.kernels.page {
        app.kernels.offset = app.kernels.selected + 1 - app.kernels.page;
    }
    let with_contexts = app.report.identities.iter().any(|r| !r.contexts.is_empty());
    let header = Row::new(
        Column::ALL
            .iter()
            .map(|c| {
                let mark = if *c == app.kernels.sort {
                    if app.kernels.descending {
                        " ▼"
                    } else {
                        " ▲"
                    }
                } else {
                    ""
                };
                Cell::from(format!("{}{mark}", c.title()))
            })
            .chain(with_contexts.then(|| Cell::from("CONTEXTS")))
            .chain(std::iter::once(Cell::from("ARTIFACT / REASON"))),
    )
    .style(Style::default().add_modifier(Modifier::BOLD));
    let rows: Vec<Row> = app
        .kernels
        .view
        .iter()
        .enumerate()
        .skip(app.kernels.offset)
        .take(app.kernels.page)
        .map(|(pos, &i)| {
            let r = &app.report.identities[i];
            let (status, style) = theme.status(r.status);
            // A kernel that became missing since the fleet last changed is marked until the
            // operator acts on it or it is covered.
            let fresh = app.kernels.fresh_missing.contains(&r.key);
            let status = if fresh {
                format!("{status} NEW")
            } else {
                status
            };
            let mut cells = vec![
                Cell::from(r.distribution.clone()),
                Cell::from(r.distro_version.clone()),
                Cell::from(r.architecture.clone()),
                Cell::from(r.kernel_version.clone()),
                Cell::from(match r.next_boot {
                    0 => thousands(r.nodes),
                    next => format!("{} +{} next", thousands(r.nodes), thousands(next)),
                }),
                Cell::from(status).style(style),
            ];
            if with_contexts {
                cells.push(Cell::from(r.contexts.join(" ")));
            }
            cells.push(
                Cell::from(
                    r.asset
                        .clone()
                        .or_else(|| r.reason.clone())
                        .unwrap_or_default(),
                )
                .style(theme.fg(Color::DarkGray)),
            );
            let row = Row::new(cells);
            if pos == app.kernels.selected {
                row.style(Style::default().add_modifier(Modifier::REVERSED))
            } else if fresh {
                row.style(Style::default().add_modifier(Modifier::BOLD))
            } else {
                row
            }
        })
        .collect();
    let mut widths = vec![
        Constraint::Length(12),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(32),
        Constraint::Length(if app.report.summary.next_boot_nodes > 0 {
            16
        } else {
            8
        }),
        Constraint::Length(14),
    ];
    if with_contexts {
        widths.push(Constraint::Length(16));
    }
    widths.push(Constraint::Fill(1));
    let table = Table::new(rows, widths).header(header).block(block);
    frame.render_widget(table, area);
}

fn builds(app: &App, frame: &mut Frame, area: Rect, theme: &Theme) {
    let now = app.now;
    let rows: Vec<Row> = app
        .builds
        .runs
        .iter()
        .enumerate()
        .map(|(pos, run)| {
            let end = if run.is_finished() {
                run.updated_at.unwrap_or(now)
            } else {
                now
            };
            let secs = run
                .created_at
                .map(|c| end.signed_duration_since(c).num_seconds().max(0) as u64)
                .unwrap_or(0);
            let overdue = !run.is_finished() && secs > app.deadline_secs;
            let status = if overdue {
                "timed-out".to_string()
            } else {
                run.status.map(|s| s.to_string()).unwrap_or_default()
            };
            let mut style = if overdue || run.conclusion == Some(crate::forge::Conclusion::Failure)
            {
                theme.fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            if pos == app.builds.selected {
                style = style.add_modifier(Modifier::REVERSED);
            }
            Row::new(vec![
                Cell::from(run.id.to_string()),
                Cell::from(
                    run.identity()
                        .map(|(k, _)| k.to_string())
                        .unwrap_or_else(|| run.display_title.clone()),
                ),
                Cell::from(status),
                Cell::from(run.conclusion.map(|c| c.to_string()).unwrap_or_default()),
                Cell::from(format!(
                    "{}m{:02}s / {}m",
                    secs / 60,
                    secs % 60,
                    app.deadline_secs / 60
                )),
                Cell::from(run.html_url.clone().unwrap_or_default()),
            ])
            .style(style)
        })
        .collect();
    let empty = rows.is_empty();
    let table = Table::new(
        rows,
        [
            Constraint::Length(11),
            Constraint::Min(48),
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(13),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(["RUN", "IDENTITY", "STATUS", "CONCLUSION", "ELAPSED", "URL"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(if empty {
        "builds: none yet (d dispatches)"
    } else {
        "builds"
    }));
    let selected = app.builds.runs.get(app.builds.selected).map(|r| r.id);
    let detail = app
        .builds
        .detail
        .as_ref()
        .filter(|d| Some(d.run_id) == selected);
    let Some(detail) = detail else {
        frame.render_widget(table, area);
        return;
    };
    let lines = run_detail_lines(detail, app.now, theme);
    let height = (lines.len() as u16 + 2).min(area.height / 2).max(3);
    let [top, bottom] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(height)]).areas(area);
    frame.render_widget(table, top);
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(format!("run {}: jobs and steps", detail.run_id))),
        bottom,
    );
}

/// How long from `from` to `to` (or to `now` while it runs), as `1m05s`.
fn took(
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let Some(from) = from else {
        return String::new();
    };
    let secs = to
        .unwrap_or(now)
        .signed_duration_since(from)
        .num_seconds()
        .max(0);
    format!("{}m{:02}s", secs / 60, secs % 60)
}

/// A run's jobs, each with its steps (a mark, the name, how long), then a failed job's log tail.
fn run_detail_lines<'a>(
    detail: &'a crate::tui::app::RunDetail,
    now: chrono::DateTime<chrono::Utc>,
    theme: &Theme,
) -> Vec<Line<'a>> {
    use crate::forge::{Conclusion, RunStatus};
    let state = |status: Option<RunStatus>, conclusion: Option<Conclusion>| match conclusion {
        Some(c) => c.to_string(),
        None => status.map(|s| s.to_string()).unwrap_or_default(),
    };
    let mut lines = Vec::new();
    for job in &detail.jobs {
        lines.push(Line::raw(format!(
            "job {}: {} {}",
            clean(&job.name),
            state(job.status, job.conclusion),
            took(job.started_at, job.completed_at, now)
        )));
        for step in &job.steps {
            let (mark, style) = match (step.status, step.conclusion) {
                (_, Some(Conclusion::Success)) => ("✔", Style::default()),
                (_, Some(Conclusion::Failure)) => ("✗", theme.fg(Color::Red)),
                (_, Some(Conclusion::Skipped | Conclusion::Cancelled)) => {
                    ("–", theme.fg(Color::DarkGray))
                }
                (Some(RunStatus::InProgress), _) => ("▶", theme.fg(Color::Yellow)),
                _ => ("·", theme.fg(Color::DarkGray)),
            };
            lines.push(Line::styled(
                format!(
                    "  {mark} {:<40} {:<12} {}",
                    clean(&step.name),
                    state(step.status, step.conclusion),
                    took(step.started_at, step.completed_at, now)
                ),
                style,
            ));
        }
    }
    if let Some(tail) = &detail.log_tail {
        lines.push(Line::raw("log of the failed job, last lines:"));
        for line in tail.lines() {
            lines.push(Line::styled(
                format!("  {}", clean(line)),
                theme.fg(Color::Red),
            ));
        }
    }
    lines
}

/// Kernels the distributions publish on the fleet's most-run lines, newer than the newest the
/// fleet runs: not counted in coverage; `d` prebuilds the selected one, `D` every missing one.
fn upcoming(app: &App, frame: &mut Frame, area: Rect, theme: &Theme) {
    let Some(found) = &app.upcoming.report else {
        let text = if app.upcoming.loading {
            "reading the distributions' repositories (the header chain's APT and RPM sources)…"
        } else {
            "no upcoming kernels read yet: r reads them"
        };
        frame.render_widget(
            Paragraph::new(text).block(Block::bordered().title("upcoming kernels")),
            area,
        );
        return;
    };
    let [table_area, notes_area] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(if found.notes.is_empty() && found.errors.is_empty() {
            0
        } else {
            3
        }),
    ])
    .areas(area);
    let block = Block::bordered().title(format!(
        "{} upcoming kernels on {} of the fleet's {} lines, {} without an artifact (not counted in coverage)",
        found.rows.len(),
        found.lines_with_upcoming,
        found.lines,
        found.missing().count()
    ));
    let page = (block.inner(table_area).height as usize)
        .saturating_sub(1)
        .max(1);
    let offset = app.upcoming.selected.saturating_sub(page - 1);
    let cells = crate::report::upcoming_cells(&found.rows);
    let rows: Vec<Row> = found
        .rows
        .iter()
        .zip(cells)
        .enumerate()
        .skip(offset)
        .take(page)
        .map(|(i, (r, cells))| {
            let style = match r.status {
                crate::coverage::upcoming::UpcomingStatus::UpcomingCovered => {
                    theme.fg(Color::Green)
                }
                crate::coverage::upcoming::UpcomingStatus::UpcomingCompatible => {
                    theme.fg(Color::Cyan)
                }
                crate::coverage::upcoming::UpcomingStatus::UpcomingMissing => theme.fg(Color::Red),
                crate::coverage::upcoming::UpcomingStatus::Upcoming => Style::default(),
            };
            // The status cell (6th) in its colour.
            let row = Row::new(cells.into_iter().enumerate().map(|(c, text)| {
                if c == 5 {
                    Cell::from(text).style(style)
                } else {
                    Cell::from(text)
                }
            }));
            if i == app.upcoming.selected {
                row.style(Style::default().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Fill(2),
            Constraint::Length(7),
            Constraint::Length(26),
            Constraint::Length(26),
            Constraint::Length(10),
            Constraint::Length(17),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(crate::report::UPCOMING_COLUMNS)
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(block);
    frame.render_widget(table, table_area);
    if !found.errors.is_empty() {
        // What a failed repository hides is unknown: say so before any note.
        let unread: Vec<&str> = found.errors.iter().map(|e| e.line.as_str()).collect();
        frame.render_widget(
            Paragraph::new(format!(
                "{} lines unread, their repositories failed ({}); r reads them again",
                unread.len(),
                unread.join(", ")
            ))
            .wrap(Wrap { trim: true })
            .style(theme.fg(Color::Red)),
            notes_area,
        );
    } else if !found.notes.is_empty() {
        frame.render_widget(
            Paragraph::new(found.notes.join("; "))
                .wrap(Wrap { trim: true })
                .style(theme.fg(Color::DarkGray)),
            notes_area,
        );
    }
}

fn headers(app: &App, frame: &mut Frame, area: Rect) {
    let mut lines = Vec::new();
    let resolved = app
        .headers
        .resolution
        .as_ref()
        .filter(|h| app.selected_row().is_some_and(|r| r.key == h.key));
    match app
        .selected_row()
        .map(|r| (r, KernelIdentity::from_key(&r.key)))
    {
        Some((row, Ok(_))) if let Some(h) = resolved => {
            lines.push(Line::styled(
                match &h.resolved_by {
                    Some(by) => format!("headers for {} resolved by {by}", row.key),
                    None => format!("headers for {}: unresolvable, every source tried", row.key),
                },
                Style::default().add_modifier(Modifier::BOLD),
            ));
            for a in &h.attempts {
                lines.push(Line::raw(format!(
                    "  {} ({}) {} ms: {}  {}",
                    a.source,
                    a.kind.as_str(),
                    a.millis,
                    a.outcome,
                    a.url
                )));
            }
            for p in &h.packages {
                lines.push(Line::raw(format!("  package: {}", p.url)));
            }
        }
        Some((row, Ok(id))) => {
            lines.push(Line::styled(
                format!("header chain for {} (plan; Enter resolves)", row.key),
                Style::default().add_modifier(Modifier::BOLD),
            ));
            for (i, source) in plan(&app.headers.chain, &id).iter().enumerate() {
                lines.push(Line::raw(format!(
                    "{}. {} ({}) for {}",
                    i + 1,
                    source.name,
                    source.kind.as_str(),
                    source.packages.join(", ")
                )));
                if let Some(problem) = source.problem.as_ref().or(source.unchecked.as_ref()) {
                    lines.push(Line::raw(format!("     cannot be tried: {problem}")));
                }
                for url in &source.urls {
                    lines.push(Line::raw(format!("     {url}")));
                }
            }
        }
        Some((row, Err(e))) => lines.push(Line::raw(format!("{}: {e}", row.key))),
        None => lines.push(Line::raw("select a kernel in the Kernels view")),
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title("headers"))
            .wrap(Wrap { trim: false }),
        area,
    );
}

fn popup(frame: &mut Frame, width: u16, height: u16) -> Rect {
    let area = frame.area();
    let w = width.min(area.width);
    let h = height.min(area.height);
    let rect = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    frame.render_widget(Clear, rect);
    rect
}

fn help(app: &App, frame: &mut Frame) {
    let lines: Vec<Line> = keys::help_lines(&app.bindings)
        .into_iter()
        .chain([("Ctrl-C".into(), "quit, anywhere".into())])
        .map(|(keys, what)| Line::raw(format!("{keys:<27} {what}")))
        .collect();
    let area = popup(frame, 76, lines.len() as u16 + 2);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title("keys (any key closes)"),
        ),
        area,
    );
}

/// The nodes that run the kernel drilled into: name, source, labels; "+N more" past the rows
/// that fit or were read.
fn nodes(app: &App, frame: &mut Frame) {
    let Some(found) = &app.kernels.nodes else {
        return;
    };
    let room = frame.area().height.saturating_sub(6).max(3) as usize;
    let shown = found.nodes.len().min(room);
    let mut lines: Vec<Line> = found
        .nodes
        .iter()
        .take(shown)
        .map(|n| {
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            Line::raw(format!(
                "{:<32} {:<24} {}",
                crate::text::clean(&n.name),
                crate::text::clean(&n.source),
                crate::text::clean(&labels.join(","))
            ))
        })
        .collect();
    let more = found.total.saturating_sub(shown as u64);
    if more > 0 {
        lines.push(Line::raw(format!(
            "+{more} more (kfleet nodes {} lists them)",
            crate::text::clean(&found.key)
        )));
    }
    let area = popup(frame, 110, lines.len() as u16 + 2);
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(format!(
            "{} running {} (any key closes)",
            crate::text::count(found.total, "node", "nodes"),
            crate::text::clean(&found.key)
        ))),
        area,
    );
}

fn confirm(app: &App, pending: &Pending, frame: &mut Frame) {
    let planner = |lines: &mut Vec<Line>| match &app.preview {
        None => lines.push(Line::raw(
            "the planner is checking the release, running builds and the build state…",
        )),
        Some(preview) => {
            let would = preview
                .iter()
                .filter(|(_, d)| *d == Decision::WouldDispatch)
                .count();
            let refused = preview
                .iter()
                .find(|(_, d)| matches!(d, Decision::Refused { .. }));
            if let [(_, only)] = preview.as_slice() {
                lines.push(Line::raw(format!("planner: {}", only.describe())));
            } else if let Some((_, refused)) = refused {
                lines.push(Line::raw(format!("planner: {}", refused.describe())));
            } else {
                lines.push(Line::raw(format!(
                    "planner: {would} would dispatch, {} need nothing new",
                    preview.len() - would
                )));
            }
        }
    };
    let mut lines = Vec::new();
    match pending {
        Pending::Cancel(run_id, what) => {
            lines.push(Line::raw(format!("Cancel run {run_id}?")));
            lines.push(Line::raw(format!("It builds {what}.")));
        }
        Pending::Dispatch(key) => {
            lines.push(Line::raw(format!("Dispatch a build for {key}?")));
            planner(&mut lines);
        }
        Pending::Batch(keys) => {
            lines.push(Line::raw(format!(
                "Dispatch the missing head: {} identities?",
                keys.len()
            )));
            planner(&mut lines);
            lines.push(Line::raw(format!(
                "{} dispatches at most, paced under GitHub's limit (about {} s).",
                keys.len(),
                (keys.len() as f64 * 0.75).ceil()
            )));
        }
    }
    lines.push(Line::raw(""));
    lines.push(Line::raw(match pending {
        Pending::Cancel(..) => "Enter/y: cancel the run   any other key: keep it",
        _ => "Enter/y: dispatch   any other key: cancel",
    }));
    let area = popup(frame, 76, lines.len() as u16 + 2);
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title("confirm")),
        area,
    );
}
