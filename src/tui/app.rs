//! Dashboard state and its one `update`: key events and background results come in as
//! `Action`s; side effects go out as `Effect`s for the event loop to run. No I/O here.

use crate::builds::Decision;
use crate::coverage::upcoming::{UpcomingReport, UpcomingStatus};
use crate::coverage::{CoverageReport, CoverageStatus, IdentityRow};
use crate::forge::WorkflowRun;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

pub use super::keys::Tab;

/// A dispatch the user asked for, waiting for confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pending {
    Dispatch(String),
    Batch(Vec<String>),
    /// Cancel this run (id, what it builds).
    Cancel(u64, String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Filter,
    Help,
    Confirm(Pending),
    /// The nodes that run the selected kernel (any key closes).
    Nodes,
}

/// Columns of the Kernels view, in order; sorting cycles through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Distribution,
    Version,
    Arch,
    Kernel,
    Nodes,
    Status,
}

impl Column {
    pub const ALL: [Column; 6] = [
        Column::Distribution,
        Column::Version,
        Column::Arch,
        Column::Kernel,
        Column::Nodes,
        Column::Status,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Column::Distribution => "DISTRIBUTION",
            Column::Version => "VERSION",
            Column::Arch => "ARCH",
            Column::Kernel => "KERNEL",
            Column::Nodes => "NODES",
            Column::Status => "STATUS",
        }
    }
}

/// Everything that reaches `update`.
#[derive(Debug)]
pub enum Action {
    Key(KeyEvent),
    /// The wheel scrolls the list under way; a click selects the row under it.
    Mouse(crossterm::event::MouseEvent),
    /// A refreshed coverage report.
    Report(Box<CoverageReport>),
    Runs(Vec<WorkflowRun>),
    /// What the planner did, per identity key.
    Dispatched(Vec<(String, Decision)>),
    Exported(String),
    /// The header chain's outcome for one identity.
    Headers(Box<crate::headers::Resolution>),
    /// The planner's dry run for the dispatch waiting for confirmation.
    Previewed(Vec<(String, Decision)>),
    /// What a cancel request did.
    Cancelled(String),
    Failed(String),
    /// The refresh under way failed.
    RefreshFailed(String),
    /// A notice from background work (a retry, a wait, a warning) for the status line.
    Notice(String),
    /// The live fleet changed (a kube watch): what changed; coverage is computed again.
    FleetChanged(String),
    /// The upcoming kernels on the fleet's lines.
    Upcoming(Box<UpcomingReport>),
    /// Reading the upcoming kernels failed.
    UpcomingFailed(String),
    /// The nodes that run one kernel, read again from the inventories.
    Nodes(Box<crate::inventory::NodesOf>),
    /// The selected run's jobs and steps, and its failed job's log tail.
    RunDetail(Box<RunDetail>),
}

/// What one run is doing: its jobs with their steps, and the last lines of a failed job's log.
#[derive(Clone, Debug, PartialEq)]
pub struct RunDetail {
    pub run_id: u64,
    pub jobs: Vec<crate::forge::Job>,
    pub log_tail: Option<String>,
}

/// What `update` asks the event loop to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Refresh,
    Dispatch(Vec<String>),
    Export {
        rows: Vec<usize>,
    },
    /// Resolve the header chain for this identity key.
    ResolveHeaders(String),
    /// Ask the planner, without dispatching, what it would do for these keys.
    Preview(Vec<String>),
    /// Cancel a run.
    Cancel(u64),
    /// Read the upcoming kernels on the fleet's lines.
    LoadUpcoming,
    /// Find the nodes that run this identity key.
    Nodes(String),
    /// Read this run's jobs and steps (and a failed job's log tail).
    RunDetail(u64),
    /// Put this text on the terminal's clipboard (OSC 52).
    Copy(String),
    /// Open this URL in the browser.
    Open(String),
    Quit,
}

use super::keys::{self, Binding, Command, KeyMode};
pub use crate::config::KeyMap;
use crate::headers::compare_kernels;

/// The Kernels view: its filter, sort, the rows it shows and where the selection is.
pub struct KernelsView {
    pub filter: String,
    /// Where typing goes in the filter line, in characters from its start.
    pub filter_cursor: usize,
    pub sort: Column,
    pub descending: bool,
    /// Indices into `report.identities`: filtered, sorted.
    pub view: Vec<usize>,
    pub selected: usize,
    /// First row drawn; kept by the renderer's height through `page`.
    pub offset: usize,
    pub page: usize,
    /// The first row on screen: (row, column, width), as last drawn.
    pub rows_at: Option<(u16, u16, u16)>,
    /// Keys that became `missing` with the last refreshed report: highlighted.
    pub fresh_missing: std::collections::HashSet<String>,
    /// The nodes of the kernel last drilled into.
    pub nodes: Option<crate::inventory::NodesOf>,
}

impl Default for KernelsView {
    fn default() -> Self {
        Self {
            filter: String::new(),
            filter_cursor: 0,
            sort: Column::Nodes,
            descending: true,
            view: Vec::new(),
            selected: 0,
            offset: 0,
            page: 20,
            rows_at: None,
            fresh_missing: Default::default(),
            nodes: None,
        }
    }
}

impl KernelsView {
    /// Recomputes the filtered, sorted index; keeps the selection on the same identity.
    pub fn rebuild(&mut self, rows: &[IdentityRow]) {
        let keep = self
            .view
            .get(self.selected)
            .and_then(|&i| rows.get(i))
            .map(|r| r.key.clone());
        let needle = self.filter.to_ascii_lowercase();
        let terms: Vec<&str> = needle.split_whitespace().collect();
        let mut view: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                let r = &rows[i];
                // Every term matches the key or the status; `!term` must match neither.
                terms.iter().all(|t| {
                    let (negated, t) = match t.strip_prefix('!') {
                        Some(rest) if !rest.is_empty() => (true, rest),
                        _ => (false, *t),
                    };
                    let hit =
                        r.key.to_ascii_lowercase().contains(t) || r.status.as_str().contains(t);
                    hit != negated
                })
            })
            .collect();
        let sort = self.sort;
        view.sort_by(|&a, &b| {
            let (x, y) = (&rows[a], &rows[b]);
            let ord = match sort {
                Column::Distribution => x.distribution.cmp(&y.distribution),
                // Versions as package managers order them: 9 before 10, -91 before -125.
                Column::Version => compare_kernels(&x.distro_version, &y.distro_version),
                Column::Arch => x.architecture.cmp(&y.architecture),
                Column::Kernel => compare_kernels(&x.kernel_version, &y.kernel_version),
                Column::Nodes => x.nodes.cmp(&y.nodes),
                Column::Status => x.status.cmp(&y.status),
            };
            let ord = if self.descending { ord.reverse() } else { ord };
            ord.then_with(|| x.key.cmp(&y.key))
        });
        self.view = view;
        self.selected = keep
            .and_then(|k| self.view.iter().position(|&i| rows[i].key == k))
            .unwrap_or(0)
            .min(self.view.len().saturating_sub(1));
        self.clamp_offset();
    }

    /// The byte offset of the filter's `chars`-th character (its end past the last).
    pub(super) fn filter_byte(&self, chars: usize) -> usize {
        self.filter
            .char_indices()
            .nth(chars)
            .map_or(self.filter.len(), |(i, _)| i)
    }

    pub(super) fn clamp_offset(&mut self) {
        let page = self.page.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + page {
            self.offset = self.selected + 1 - page;
        }
        self.offset = self.offset.min(self.view.len().saturating_sub(1));
    }

    pub(super) fn move_by(&mut self, delta: isize) {
        if self.view.is_empty() {
            return;
        }
        let last = self.view.len() as isize - 1;
        self.selected = (self.selected as isize + delta).clamp(0, last) as usize;
        self.clamp_offset();
    }
}

/// The Builds view: the runs, the selected one and what it is doing.
#[derive(Default)]
pub struct BuildsView {
    pub runs: Vec<WorkflowRun>,
    pub selected: usize,
    /// What the selected run is doing, as last read.
    pub detail: Option<RunDetail>,
}

/// The Headers view: the chain it plans from and the last resolution.
pub struct HeadersView {
    /// The header chain the view plans from: the one that resolves (`--sources`).
    pub chain: std::sync::Arc<crate::headers::Chain>,
    /// The last header resolution shown.
    pub resolution: Option<crate::headers::Resolution>,
}

/// The Upcoming view: the kernels read from the repositories, once read.
#[derive(Default)]
pub struct UpcomingView {
    pub report: Option<UpcomingReport>,
    pub selected: usize,
    pub loading: bool,
}

/// The dashboard: what every view shares (the report, the tab, the mode, the status line, the
/// keys) and one state per view.
pub struct App {
    /// `SANDBOX http://127.0.0.1:PORT` or `github OWNER/NAME`.
    pub forge_label: String,
    pub report: CoverageReport,
    pub tab: Tab,
    pub mode: Mode,
    pub status_line: String,
    pub deadline_secs: u64,
    pub loading: bool,
    /// A refresh was asked for while one was under way: it runs when that one ends.
    refresh_again: bool,
    /// Every command and its keys, for the key handling, the help and the footer.
    pub bindings: Vec<Binding>,
    /// What the last dispatch did, kept in the status line across the refresh it triggers.
    dispatch_note: Option<String>,
    pub keys: KeyMap,
    /// The time the Builds view measures elapsed runs against; the event loop sets it from the
    /// dashboard's clock before each frame.
    pub now: chrono::DateTime<chrono::Utc>,
    /// The planner's dry run for the pending confirmation, once it arrives.
    pub preview: Option<Vec<(String, Decision)>>,
    pub kernels: KernelsView,
    pub builds: BuildsView,
    pub headers: HeadersView,
    pub upcoming: UpcomingView,
}

impl App {
    pub fn new(forge_label: String, report: CoverageReport, deadline_secs: u64) -> Self {
        let mut app = Self {
            now: chrono::Utc::now(),
            forge_label,
            report,
            tab: Tab::Overview,
            mode: Mode::Normal,
            status_line: String::new(),
            deadline_secs,
            loading: false,
            refresh_again: false,
            bindings: keys::bindings(&KeyMap::default()),
            dispatch_note: None,
            keys: KeyMap::default(),
            preview: None,
            kernels: KernelsView::default(),
            builds: BuildsView::default(),
            headers: HeadersView {
                chain: std::sync::Arc::new(crate::headers::Chain::builtin()),
                resolution: None,
            },
            upcoming: UpcomingView::default(),
        };
        app.status_line = app.hint();
        app.rebuild_view();
        app
    }

    /// Uses `keys` instead of the default key map.
    /// Plans the Headers view from `chain` (the resolver's) instead of the built-in one.
    pub fn with_chain(mut self, chain: crate::headers::Chain) -> Self {
        self.headers.chain = std::sync::Arc::new(chain);
        self
    }

    pub fn with_keys(mut self, keys: KeyMap) -> Self {
        self.bindings = keys::bindings(&keys);
        self.keys = keys;
        self.status_line = self.hint();
        self
    }

    fn hint(&self) -> String {
        keys::hint(
            &self.bindings,
            KeyMode::Normal,
            &[Command::Refresh, Command::Help, Command::Quit],
        )
    }

    /// A refresh, unless one is under way: then it follows when that one ends.
    fn refresh(&mut self) -> Option<Effect> {
        if self.loading {
            self.refresh_again = true;
            return None;
        }
        self.loading = true;
        Some(Effect::Refresh)
    }

    /// The refresh under way ended (with a report or an error): the one asked for meanwhile.
    fn refreshed(&mut self) -> Option<Effect> {
        self.loading = false;
        if std::mem::take(&mut self.refresh_again) {
            return self.refresh();
        }
        None
    }

    /// Recomputes the Kernels view's filtered, sorted index; keeps the selection on the same
    /// identity.
    pub fn rebuild_view(&mut self) {
        self.kernels.rebuild(&self.report.identities);
    }

    pub fn selected_row(&self) -> Option<&IdentityRow> {
        self.kernels
            .view
            .get(self.kernels.selected)
            .and_then(|&i| self.report.identities.get(i))
    }

    fn move_upcoming(&mut self, delta: isize) {
        let last = self.upcoming_rows().saturating_sub(1) as isize;
        self.upcoming.selected = (self.upcoming.selected as isize + delta).clamp(0, last) as usize;
    }

    fn move_run(&mut self, delta: isize) {
        let last = self.builds.runs.len().saturating_sub(1) as isize;
        self.builds.selected = (self.builds.selected as isize + delta).clamp(0, last) as usize;
    }

    /// The missing head: what `D` dispatches.
    pub fn missing_head(&self) -> Vec<String> {
        self.report
            .identities
            .iter()
            .filter(|r| r.status == CoverageStatus::Missing)
            .map(|r| r.key.clone())
            .collect()
    }

    fn upcoming_rows(&self) -> usize {
        self.upcoming.report.as_ref().map_or(0, |u| u.rows.len())
    }

    /// The selected row of the Upcoming view.
    pub fn selected_upcoming(&self) -> Option<&crate::coverage::upcoming::UpcomingRow> {
        self.upcoming
            .report
            .as_ref()
            .and_then(|u| u.rows.get(self.upcoming.selected))
    }

    /// An upcoming kernel whose artifact the release now has (the report matched it to an
    /// asset, as an unused artifact or a covered identity) is covered.
    fn settle_upcoming(&mut self) {
        let Some(found) = self.upcoming.report.as_mut() else {
            return;
        };
        let covered: std::collections::HashSet<&str> = self
            .report
            .unused
            .iter()
            .map(|a| a.key.as_str())
            .chain(
                self.report
                    .identities
                    .iter()
                    .filter(|r| r.status.is_covered())
                    .map(|r| r.key.as_str()),
            )
            .collect();
        for row in &mut found.rows {
            if covered.contains(row.key().as_str()) {
                row.status = UpcomingStatus::UpcomingCovered;
            }
        }
    }

    /// Reads the upcoming kernels when the Upcoming view opens for the first time.
    fn entered(&mut self) -> Option<Effect> {
        if self.tab == Tab::Upcoming && self.upcoming.report.is_none() && !self.upcoming.loading {
            return self.load_upcoming();
        }
        if self.tab == Tab::Builds {
            return self.read_run_detail(true);
        }
        None
    }

    /// Reads the selected run's jobs again: when it is another run than the one shown, or
    /// (unless `changed_only`) when the run is still going.
    fn read_run_detail(&mut self, changed_only: bool) -> Option<Effect> {
        let run = self.builds.runs.get(self.builds.selected)?;
        let shown = self.builds.detail.as_ref().map(|d| d.run_id);
        // Steps read while the run went on, and the run has finished since.
        let outdated = self.builds.detail.as_ref().is_some_and(|d| {
            run.is_finished()
                && d.jobs
                    .iter()
                    .any(|j| j.status != Some(crate::forge::RunStatus::Completed))
        });
        let stale = shown != Some(run.id) || outdated || (!changed_only && !run.is_finished());
        (self.tab == Tab::Builds && stale).then_some(Effect::RunDetail(run.id))
    }

    fn load_upcoming(&mut self) -> Option<Effect> {
        if self.upcoming.loading {
            return None;
        }
        self.upcoming.loading = true;
        self.status_line = "reading the distributions' repositories for upcoming kernels…".into();
        Some(Effect::LoadUpcoming)
    }

    pub fn update(&mut self, action: Action) -> Option<Effect> {
        match action {
            Action::Key(key) => self.key(key),
            Action::Mouse(mouse) => self.mouse(mouse),
            Action::Report(report) => {
                let was_missing: std::collections::HashSet<String> =
                    self.missing_head().into_iter().collect();
                self.report = *report;
                let missing_now = self.missing_head();
                self.kernels
                    .fresh_missing
                    .retain(|k| missing_now.contains(k));
                let newly: Vec<String> = missing_now
                    .into_iter()
                    .filter(|k| !was_missing.contains(k))
                    .collect();
                self.status_line = match self.dispatch_note.take() {
                    Some(note) => format!("{note} · refreshed"),
                    None => format!(
                        "refreshed: node coverage {}%",
                        self.report.summary.node_coverage_pct
                    ),
                };
                match newly.as_slice() {
                    [] => {}
                    [one] => {
                        self.status_line =
                            format!("new missing kernel: {one} · {}", self.status_line)
                    }
                    many => {
                        self.status_line =
                            format!("{} new missing kernels · {}", many.len(), self.status_line)
                    }
                }
                self.kernels.fresh_missing.extend(newly);
                self.settle_upcoming();
                self.rebuild_view();
                // A run that finished asked for this refresh: its steps are read again too.
                self.refreshed().or_else(|| self.read_run_detail(true))
            }
            Action::Runs(runs) => {
                // A run that finished since the last poll changes coverage (its artifact is in
                // the release now, or it failed): refresh the listing and the report.
                let was_running: std::collections::HashSet<u64> = self
                    .builds
                    .runs
                    .iter()
                    .filter(|r| !r.is_finished())
                    .map(|r| r.id)
                    .collect();
                let finished: Vec<&WorkflowRun> = runs
                    .iter()
                    .filter(|r| r.is_finished() && was_running.contains(&r.id))
                    .collect();
                let refresh = !finished.is_empty();
                if let [one] = finished.as_slice() {
                    self.status_line = format!(
                        "run {} finished: {}",
                        one.id,
                        one.conclusion.map_or("?", |c| c.as_str())
                    );
                } else if refresh {
                    self.status_line = format!("{} runs finished", finished.len());
                }
                self.builds.runs = runs;
                self.builds.selected = self
                    .builds
                    .selected
                    .min(self.builds.runs.len().saturating_sub(1));
                if refresh {
                    self.refresh()
                } else {
                    self.read_run_detail(false)
                }
            }
            Action::Dispatched(decisions) => {
                self.status_line = match decisions.as_slice() {
                    [(key, d)] => format!("{key}: {}", d.describe()),
                    many => {
                        let dispatched = many
                            .iter()
                            .filter(|(_, d)| matches!(d, Decision::Dispatched { .. }))
                            .count();
                        let refused = many
                            .iter()
                            .find(|(_, d)| matches!(d, Decision::Refused { .. }));
                        match refused {
                            // An immutable release refuses every build: say why, not "nothing new".
                            Some((_, d)) => format!(
                                "{} identities: {dispatched} dispatched; {}",
                                many.len(),
                                d.describe()
                            ),
                            None => format!(
                                "{} identities: {dispatched} dispatched, {} need nothing new",
                                many.len(),
                                many.len() - dispatched
                            ),
                        }
                    }
                };
                self.dispatch_note = Some(self.status_line.clone());
                self.refresh()
            }
            Action::Previewed(lines) => {
                if matches!(self.mode, Mode::Confirm(_)) {
                    self.preview = Some(lines);
                }
                None
            }
            Action::RunDetail(detail) => {
                let selected = self.builds.runs.get(self.builds.selected).map(|r| r.id);
                if selected == Some(detail.run_id) {
                    self.builds.detail = Some(*detail);
                }
                None
            }
            Action::Nodes(found) => {
                self.status_line = format!("{} nodes run {}", found.total, found.key);
                self.kernels.nodes = Some(*found);
                if self.mode == Mode::Normal {
                    self.mode = Mode::Nodes;
                }
                None
            }
            Action::Headers(resolution) => {
                self.status_line = match &resolution.resolved_by {
                    Some(by) => format!("headers for {} from {by}", resolution.key),
                    None => format!("headers for {} are unresolvable", resolution.key),
                };
                self.headers.resolution = Some(*resolution);
                None
            }
            Action::Cancelled(line) => {
                self.status_line = line;
                self.refresh()
            }
            Action::Exported(path) => {
                self.status_line = format!("exported {} rows to {path}", self.kernels.view.len());
                None
            }
            Action::Failed(message) => {
                self.status_line = format!("error: {}", crate::text::clean(&message));
                None
            }
            Action::RefreshFailed(message) => {
                // The last good data stays on screen.
                self.status_line = format!("error: {}", crate::text::clean(&message));
                self.refreshed()
            }
            Action::Notice(message) => {
                self.status_line = crate::text::clean(&message).into_owned();
                None
            }
            Action::Upcoming(found) => {
                self.upcoming.loading = false;
                self.status_line = format!(
                    "{} upcoming kernels on {} of the fleet's {} lines; {} without an artifact",
                    found.rows.len(),
                    found.lines_with_upcoming,
                    found.lines,
                    found.missing().count()
                );
                self.upcoming.report = Some(*found);
                self.settle_upcoming();
                self.upcoming.selected = self
                    .upcoming
                    .selected
                    .min(self.upcoming_rows().saturating_sub(1));
                None
            }
            Action::UpcomingFailed(message) => {
                self.upcoming.loading = false;
                self.status_line = format!(
                    "error: cannot read upcoming kernels: {}",
                    crate::text::clean(&message)
                );
                None
            }
            Action::FleetChanged(change) => {
                self.status_line = format!("{} · refreshing…", crate::text::clean(&change));
                self.refresh()
            }
        }
    }

    fn mouse(&mut self, mouse: crossterm::event::MouseEvent) -> Option<Effect> {
        use crossterm::event::{MouseButton, MouseEventKind};
        if self.mode != Mode::Normal {
            return None;
        }
        let step = match mouse.kind {
            MouseEventKind::ScrollDown => 3,
            MouseEventKind::ScrollUp => -3,
            MouseEventKind::Down(MouseButton::Left) if self.tab == Tab::Kernels => {
                let (top, left, width) = self.kernels.rows_at?;
                let inside = mouse.row >= top
                    && mouse.column >= left
                    && mouse.column < left.saturating_add(width);
                let row = self.kernels.offset + usize::from(mouse.row.checked_sub(top)?);
                if inside
                    && row
                        < self
                            .kernels
                            .view
                            .len()
                            .min(self.kernels.offset + self.kernels.page)
                {
                    self.kernels.selected = row;
                }
                return None;
            }
            _ => return None,
        };
        match self.tab {
            Tab::Builds => {
                self.move_run(step);
                self.read_run_detail(true)
            }
            Tab::Upcoming => {
                self.move_upcoming(step);
                None
            }
            _ => {
                self.kernels.move_by(step);
                None
            }
        }
    }

    fn key(&mut self, key: KeyEvent) -> Option<Effect> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Effect::Quit);
        }
        let mode = match self.mode {
            Mode::Help | Mode::Nodes => {
                self.mode = Mode::Normal;
                return None;
            }
            Mode::Normal => KeyMode::Normal,
            Mode::Filter => KeyMode::Filter,
            Mode::Confirm(_) => KeyMode::Confirm,
        };
        // The filter line edits like a shell's: Ctrl-U deletes to the start, Ctrl-W the word
        // before the cursor, Ctrl-A and Ctrl-E go to the start and the end.
        if self.mode == Mode::Filter && key.modifiers.contains(KeyModifiers::CONTROL) {
            let at = self.kernels.filter_byte(self.kernels.filter_cursor);
            match key.code {
                KeyCode::Char('u') => {
                    self.kernels.filter.replace_range(..at, "");
                    self.kernels.filter_cursor = 0;
                }
                KeyCode::Char('w') => {
                    let before = self.kernels.filter[..at].trim_end();
                    let word = before.rfind(' ').map_or(0, |i| i + 1);
                    self.kernels.filter.replace_range(word..at, "");
                    self.kernels.filter_cursor = self.kernels.filter[..word].chars().count();
                }
                KeyCode::Char('a') => self.kernels.filter_cursor = 0,
                KeyCode::Char('e') => {
                    self.kernels.filter_cursor = self.kernels.filter.chars().count()
                }
                _ => return None,
            }
            self.rebuild_view();
            return None;
        }
        match keys::lookup(&self.bindings, mode, self.tab, key.code) {
            Some(command) => self.run(command),
            None => match (&self.mode, key.code) {
                (Mode::Filter, KeyCode::Char(c)) => {
                    let at = self.kernels.filter_byte(self.kernels.filter_cursor);
                    self.kernels.filter.insert(at, c);
                    self.kernels.filter_cursor += 1;
                    self.rebuild_view();
                    None
                }
                (Mode::Filter, KeyCode::Left) => {
                    self.kernels.filter_cursor = self.kernels.filter_cursor.saturating_sub(1);
                    None
                }
                (Mode::Filter, KeyCode::Right) => {
                    self.kernels.filter_cursor =
                        (self.kernels.filter_cursor + 1).min(self.kernels.filter.chars().count());
                    None
                }
                (Mode::Filter, KeyCode::Home) => {
                    self.kernels.filter_cursor = 0;
                    None
                }
                (Mode::Filter, KeyCode::End) => {
                    self.kernels.filter_cursor = self.kernels.filter.chars().count();
                    None
                }
                (Mode::Filter, KeyCode::Delete) => {
                    let at = self.kernels.filter_byte(self.kernels.filter_cursor);
                    if at < self.kernels.filter.len() {
                        self.kernels.filter.remove(at);
                        self.rebuild_view();
                    }
                    None
                }
                (Mode::Confirm(_), _) => {
                    self.mode = Mode::Normal;
                    self.status_line = "cancelled".into();
                    None
                }
                _ => None,
            },
        }
    }

    fn run(&mut self, command: Command) -> Option<Effect> {
        let tabs = Tab::ALL.len();
        let at = Tab::ALL.iter().position(|t| *t == self.tab).unwrap_or(0);
        let builds = self.tab == Tab::Builds;
        let upcoming = self.tab == Tab::Upcoming;
        match command {
            Command::Quit => return Some(Effect::Quit),
            Command::Help => self.mode = Mode::Help,
            Command::NextView => {
                self.tab = Tab::ALL[(at + 1) % tabs];
                return self.entered();
            }
            Command::PreviousView => {
                self.tab = Tab::ALL[(at + tabs - 1) % tabs];
                return self.entered();
            }
            Command::View(i) => {
                self.tab = Tab::ALL[i.min(tabs - 1)];
                return self.entered();
            }
            Command::Filter => {
                self.tab = Tab::Kernels;
                self.mode = Mode::Filter;
                self.kernels.filter_cursor = self.kernels.filter.chars().count();
            }
            Command::Down if builds => {
                self.move_run(1);
                return self.read_run_detail(true);
            }
            Command::Up if builds => {
                self.move_run(-1);
                return self.read_run_detail(true);
            }
            Command::Down if upcoming => self.move_upcoming(1),
            Command::Up if upcoming => self.move_upcoming(-1),
            Command::Dispatch if upcoming => {
                let key = self.selected_upcoming()?.key();
                self.mode = Mode::Confirm(Pending::Dispatch(key.clone()));
                self.preview = None;
                return Some(Effect::Preview(vec![key]));
            }
            Command::Batch if upcoming => {
                let keys: Vec<String> = self
                    .upcoming
                    .report
                    .iter()
                    .flat_map(|u| u.missing().map(|r| r.key()))
                    .collect();
                if keys.is_empty() {
                    self.status_line = "no upcoming kernel lacks an artifact".into();
                } else {
                    self.mode = Mode::Confirm(Pending::Batch(keys.clone()));
                    self.preview = None;
                    return Some(Effect::Preview(keys));
                }
            }
            Command::Refresh if upcoming => {
                self.upcoming.report = None;
                return self.load_upcoming();
            }
            Command::Down => self.kernels.move_by(1),
            Command::Up => self.kernels.move_by(-1),
            Command::PageDown => self.kernels.move_by(self.kernels.page as isize),
            Command::PageUp => self.kernels.move_by(-(self.kernels.page as isize)),
            Command::First => self.kernels.move_by(-(self.kernels.view.len() as isize)),
            Command::Last => self.kernels.move_by(self.kernels.view.len() as isize),
            Command::CancelRun => match self.builds.runs.get(self.builds.selected) {
                Some(run) if !run.is_finished() => {
                    let what = run
                        .identity()
                        .map(|(key, _)| key.to_string())
                        .unwrap_or_else(|| run.display_title.clone());
                    self.mode = Mode::Confirm(Pending::Cancel(run.id, what));
                }
                Some(run) => self.status_line = format!("run {} has already finished", run.id),
                None => self.status_line = "no run selected".into(),
            },
            Command::Sort => {
                let i = Column::ALL
                    .iter()
                    .position(|c| *c == self.kernels.sort)
                    .unwrap_or(0);
                self.kernels.sort = Column::ALL[(i + 1) % Column::ALL.len()];
                self.rebuild_view();
            }
            Command::Reverse => {
                self.kernels.descending = !self.kernels.descending;
                self.rebuild_view();
            }
            Command::Dispatch => {
                let key = self.selected_row()?.key.clone();
                self.mode = Mode::Confirm(Pending::Dispatch(key.clone()));
                self.preview = None;
                return Some(Effect::Preview(vec![key]));
            }
            Command::Batch => {
                let head = self.missing_head();
                if head.is_empty() {
                    self.status_line = "the head has no missing identity".into();
                } else {
                    self.mode = Mode::Confirm(Pending::Batch(head.clone()));
                    self.preview = None;
                    return Some(Effect::Preview(head));
                }
            }
            Command::Export => {
                return Some(Effect::Export {
                    rows: self.kernels.view.clone(),
                });
            }
            Command::Copy => {
                let text = match self.tab {
                    Tab::Builds => self
                        .builds
                        .runs
                        .get(self.builds.selected)?
                        .html_url
                        .clone()?,
                    Tab::Upcoming => self.selected_upcoming()?.key(),
                    _ => self.selected_row()?.key.clone(),
                };
                self.status_line = format!("copied {text}");
                return Some(Effect::Copy(text));
            }
            Command::Open => {
                let url = self
                    .builds
                    .runs
                    .get(self.builds.selected)?
                    .html_url
                    .clone()?;
                self.status_line = format!("opening {url}");
                return Some(Effect::Open(url));
            }
            Command::ShowNodes => {
                let key = self.selected_row()?.key.clone();
                self.status_line = format!("finding the nodes that run {key}…");
                return Some(Effect::Nodes(key));
            }
            Command::ResolveHeaders => {
                let key = self.selected_row()?.key.clone();
                self.status_line = format!("resolving headers for {key}…");
                return Some(Effect::ResolveHeaders(key));
            }
            Command::Refresh => {
                self.status_line = "refreshing…".into();
                return self.refresh();
            }
            Command::KeepFilter => self.mode = Mode::Normal,
            Command::ClearFilter => {
                self.kernels.filter.clear();
                self.kernels.filter_cursor = 0;
                self.mode = Mode::Normal;
                self.rebuild_view();
            }
            Command::DeleteFilterChar => {
                if self.kernels.filter_cursor > 0 {
                    self.kernels.filter_cursor -= 1;
                    let at = self.kernels.filter_byte(self.kernels.filter_cursor);
                    self.kernels.filter.remove(at);
                    self.rebuild_view();
                }
            }
            Command::Confirm => {
                let Mode::Confirm(pending) = std::mem::replace(&mut self.mode, Mode::Normal) else {
                    return None;
                };
                let keys = match pending {
                    Pending::Dispatch(k) => vec![k],
                    Pending::Batch(keys) => keys,
                    Pending::Cancel(run_id, what) => {
                        self.status_line = format!("cancelling run {run_id} ({what})…");
                        return Some(Effect::Cancel(run_id));
                    }
                };
                self.status_line = format!("dispatching {} identity(ies)…", keys.len());
                return Some(Effect::Dispatch(keys));
            }
        }
        None
    }
}
