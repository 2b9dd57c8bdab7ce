//! Dashboard state and its one `update`: key events and background results come in as
//! `Action`s; side effects go out as `Effect`s for the event loop to run. No I/O here.

use crate::builds::Decision;
use crate::coverage::{CoverageReport, CoverageStatus, IdentityRow};
use crate::forge::WorkflowRun;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Kernels,
    Builds,
    Headers,
}

impl Tab {
    pub const ALL: [Tab; 4] = [Tab::Overview, Tab::Kernels, Tab::Builds, Tab::Headers];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Kernels => "Kernels",
            Tab::Builds => "Builds",
            Tab::Headers => "Headers",
        }
    }
}

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
    /// A notice from background work (a retry, a wait, a warning) for the status line.
    Notice(String),
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
    Quit,
}

pub use crate::config::KeyMap;

impl KeyMap {
    /// The help screen's lines: keys and what they do, from this map.
    pub fn bindings(&self) -> Vec<(String, &'static str)> {
        vec![
            ("tab / 1-4".into(), "switch view"),
            (format!("{} {} ↑ ↓ PgUp PgDn", self.down, self.up), "move"),
            (self.filter.to_string(), "filter (Enter keeps, Esc clears)"),
            (
                format!("{} / {}", self.sort, self.reverse),
                "sort by next column / reverse",
            ),
            (self.dispatch.to_string(), "dispatch the selected identity"),
            (self.batch.to_string(), "dispatch the missing head"),
            (self.export.to_string(), "export the view to CSV"),
            (self.cancel.to_string(), "cancel the selected run (Builds)"),
            (
                "Enter (Headers)".into(),
                "resolve the selected kernel's headers",
            ),
            (self.refresh.to_string(), "refresh"),
            (self.help.to_string(), "help"),
            (format!("{} / Ctrl-C", self.quit), "quit"),
        ]
    }
}

pub struct App {
    /// `SANDBOX http://127.0.0.1:PORT` or `github OWNER/NAME`.
    pub forge_label: String,
    pub report: CoverageReport,
    pub runs: Vec<WorkflowRun>,
    pub tab: Tab,
    pub mode: Mode,
    pub filter: String,
    pub sort: Column,
    pub descending: bool,
    /// Indices into `report.identities`: filtered, sorted.
    pub view: Vec<usize>,
    pub selected: usize,
    /// First row drawn; kept by the renderer's height through `page`.
    pub offset: usize,
    pub page: usize,
    pub status_line: String,
    pub deadline_secs: u64,
    pub loading: bool,
    /// What the last dispatch did, kept in the status line across the refresh it triggers.
    dispatch_note: Option<String>,
    /// The last header resolution shown in the Headers view.
    pub headers: Option<crate::headers::Resolution>,
    pub keys: KeyMap,
    /// The planner's dry run for the pending confirmation, once it arrives.
    /// The time the Builds view measures elapsed runs against; the event loop sets it from the
    /// dashboard's clock before each frame.
    pub now: chrono::DateTime<chrono::Utc>,
    pub preview: Option<Vec<(String, Decision)>>,
    /// Selected row of the Builds view.
    pub run_selected: usize,
}

impl App {
    pub fn new(forge_label: String, report: CoverageReport, deadline_secs: u64) -> Self {
        let mut app = Self {
            now: chrono::Utc::now(),
            forge_label,
            report,
            runs: Vec::new(),
            tab: Tab::Overview,
            mode: Mode::Normal,
            filter: String::new(),
            sort: Column::Nodes,
            descending: true,
            view: Vec::new(),
            selected: 0,
            offset: 0,
            page: 20,
            status_line: String::new(),
            deadline_secs,
            loading: false,
            dispatch_note: None,
            headers: None,
            keys: KeyMap::default(),
            preview: None,
            run_selected: 0,
        };
        app.status_line = app.hint();
        app.rebuild_view();
        app
    }

    /// Uses `keys` instead of the default key map.
    pub fn with_keys(mut self, keys: KeyMap) -> Self {
        self.keys = keys;
        self.status_line = self.hint();
        self
    }

    fn hint(&self) -> String {
        format!(
            "{} refresh · {} help · {} quit",
            self.keys.refresh, self.keys.help, self.keys.quit
        )
    }

    pub fn selected_row(&self) -> Option<&IdentityRow> {
        self.view
            .get(self.selected)
            .and_then(|&i| self.report.identities.get(i))
    }

    /// Recomputes the filtered, sorted index; keeps the selection on the same identity.
    pub fn rebuild_view(&mut self) {
        let keep = self.selected_row().map(|r| r.key.clone());
        let needle = self.filter.to_ascii_lowercase();
        let terms: Vec<&str> = needle.split_whitespace().collect();
        let rows = &self.report.identities;
        let mut view: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                let r = &rows[i];
                terms.iter().all(|t| {
                    r.key.to_ascii_lowercase().contains(t) || r.status.as_str().contains(t)
                })
            })
            .collect();
        let sort = self.sort;
        view.sort_by(|&a, &b| {
            let (x, y) = (&rows[a], &rows[b]);
            let ord = match sort {
                Column::Distribution => x.distribution.cmp(&y.distribution),
                Column::Version => x.distro_version.cmp(&y.distro_version),
                Column::Arch => x.architecture.cmp(&y.architecture),
                Column::Kernel => x.kernel_version.cmp(&y.kernel_version),
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

    fn clamp_offset(&mut self) {
        let page = self.page.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + page {
            self.offset = self.selected + 1 - page;
        }
        self.offset = self.offset.min(self.view.len().saturating_sub(1));
    }

    fn move_by(&mut self, delta: isize) {
        if self.view.is_empty() {
            return;
        }
        let last = self.view.len() as isize - 1;
        self.selected = (self.selected as isize + delta).clamp(0, last) as usize;
        self.clamp_offset();
    }

    fn move_run(&mut self, delta: isize) {
        let last = self.runs.len().saturating_sub(1) as isize;
        self.run_selected = (self.run_selected as isize + delta).clamp(0, last) as usize;
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

    pub fn update(&mut self, action: Action) -> Option<Effect> {
        match action {
            Action::Key(key) => self.key(key),
            Action::Report(report) => {
                self.report = *report;
                self.loading = false;
                self.status_line = match self.dispatch_note.take() {
                    Some(note) => format!("{note} · refreshed"),
                    None => format!(
                        "refreshed: node coverage {}%",
                        self.report.summary.node_coverage_pct
                    ),
                };
                self.rebuild_view();
                None
            }
            Action::Runs(runs) => {
                // A run that finished since the last poll changes coverage (its artifact is in
                // the release now, or it failed): refresh the listing and the report.
                let was_running: std::collections::HashSet<u64> = self
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
                self.runs = runs;
                self.run_selected = self.run_selected.min(self.runs.len().saturating_sub(1));
                refresh.then_some(Effect::Refresh)
            }
            Action::Dispatched(decisions) => {
                self.status_line = match decisions.as_slice() {
                    [(key, d)] => format!("{key}: {}", d.describe()),
                    many => {
                        let dispatched = many
                            .iter()
                            .filter(|(_, d)| matches!(d, Decision::Dispatched { .. }))
                            .count();
                        format!(
                            "{} identities: {dispatched} dispatched, {} need nothing new",
                            many.len(),
                            many.len() - dispatched
                        )
                    }
                };
                self.dispatch_note = Some(self.status_line.clone());
                Some(Effect::Refresh)
            }
            Action::Previewed(lines) => {
                if matches!(self.mode, Mode::Confirm(_)) {
                    self.preview = Some(lines);
                }
                None
            }
            Action::Headers(resolution) => {
                self.status_line = match &resolution.resolved_by {
                    Some(by) => format!("headers for {} from {by}", resolution.key),
                    None => format!("headers for {} are unresolvable", resolution.key),
                };
                self.headers = Some(*resolution);
                None
            }
            Action::Cancelled(line) => {
                self.status_line = line;
                Some(Effect::Refresh)
            }
            Action::Exported(path) => {
                self.status_line = format!("exported {} rows to {path}", self.view.len());
                None
            }
            Action::Failed(message) => {
                // The last good data stays on screen.
                self.loading = false;
                self.status_line = format!("error: {}", crate::report::clean(&message));
                None
            }
            Action::Notice(message) => {
                self.status_line = crate::report::clean(&message).into_owned();
                None
            }
        }
    }

    fn key(&mut self, key: KeyEvent) -> Option<Effect> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Effect::Quit);
        }
        match self.mode.clone() {
            Mode::Help => {
                self.mode = Mode::Normal;
                None
            }
            Mode::Confirm(pending) => match key.code {
                KeyCode::Enter | KeyCode::Char('y') => {
                    self.mode = Mode::Normal;
                    let keys = match pending {
                        Pending::Dispatch(k) => vec![k],
                        Pending::Batch(keys) => keys,
                        Pending::Cancel(run_id, what) => {
                            self.status_line = format!("cancelling run {run_id} ({what})…");
                            return Some(Effect::Cancel(run_id));
                        }
                    };
                    self.status_line = format!("dispatching {} identity(ies)…", keys.len());
                    Some(Effect::Dispatch(keys))
                }
                _ => {
                    self.mode = Mode::Normal;
                    self.status_line = "cancelled".into();
                    None
                }
            },
            Mode::Filter => {
                match key.code {
                    KeyCode::Esc => {
                        self.filter.clear();
                        self.mode = Mode::Normal;
                    }
                    KeyCode::Enter => self.mode = Mode::Normal,
                    KeyCode::Backspace => {
                        self.filter.pop();
                    }
                    KeyCode::Char(c) => self.filter.push(c),
                    _ => return None,
                }
                self.rebuild_view();
                None
            }
            Mode::Normal => self.normal_key(key.code),
        }
    }

    fn normal_key(&mut self, code: KeyCode) -> Option<Effect> {
        let k = self.keys.clone();
        match code {
            KeyCode::Char(c) if c == k.quit => return Some(Effect::Quit),
            KeyCode::Char(c) if c == k.help => self.mode = Mode::Help,
            KeyCode::Tab => {
                let i = Tab::ALL.iter().position(|t| *t == self.tab).unwrap_or(0);
                self.tab = Tab::ALL[(i + 1) % Tab::ALL.len()];
            }
            KeyCode::BackTab => {
                let i = Tab::ALL.iter().position(|t| *t == self.tab).unwrap_or(0);
                self.tab = Tab::ALL[(i + Tab::ALL.len() - 1) % Tab::ALL.len()];
            }
            KeyCode::Char(c @ '1'..='4') => self.tab = Tab::ALL[(c as u8 - b'1') as usize],
            KeyCode::Char(c) if c == k.filter => {
                self.tab = Tab::Kernels;
                self.mode = Mode::Filter;
            }
            KeyCode::Down if self.tab == Tab::Builds => self.move_run(1),
            KeyCode::Up if self.tab == Tab::Builds => self.move_run(-1),
            KeyCode::Char(c) if c == k.down && self.tab == Tab::Builds => self.move_run(1),
            KeyCode::Char(c) if c == k.up && self.tab == Tab::Builds => self.move_run(-1),
            KeyCode::Down => self.move_by(1),
            KeyCode::Up => self.move_by(-1),
            KeyCode::Char(c) if c == k.down => self.move_by(1),
            KeyCode::Char(c) if c == k.up => self.move_by(-1),
            KeyCode::Char(c) if c == k.cancel && self.tab == Tab::Builds => {
                match self.runs.get(self.run_selected) {
                    Some(run) if !run.is_finished() => {
                        let what = run
                            .identity()
                            .map(|(key, _)| key.to_string())
                            .unwrap_or_else(|| run.display_title.clone());
                        self.mode = Mode::Confirm(Pending::Cancel(run.id, what));
                    }
                    Some(run) => self.status_line = format!("run {} has already finished", run.id),
                    None => self.status_line = "no run selected".into(),
                }
            }
            KeyCode::PageDown => self.move_by(self.page as isize),
            KeyCode::PageUp => self.move_by(-(self.page as isize)),
            KeyCode::Home => self.move_by(-(self.view.len() as isize)),
            KeyCode::End => self.move_by(self.view.len() as isize),
            KeyCode::Char(c) if c == k.sort => {
                let i = Column::ALL
                    .iter()
                    .position(|c| *c == self.sort)
                    .unwrap_or(0);
                self.sort = Column::ALL[(i + 1) % Column::ALL.len()];
                self.rebuild_view();
            }
            KeyCode::Char(c) if c == k.reverse => {
                self.descending = !self.descending;
                self.rebuild_view();
            }
            KeyCode::Char(c) if c == k.dispatch => {
                let key = self.selected_row()?.key.clone();
                self.mode = Mode::Confirm(Pending::Dispatch(key.clone()));
                self.preview = None;
                return Some(Effect::Preview(vec![key]));
            }
            KeyCode::Char(c) if c == k.batch => {
                let head = self.missing_head();
                if head.is_empty() {
                    self.status_line = "the head has no missing identity".into();
                } else {
                    self.mode = Mode::Confirm(Pending::Batch(head.clone()));
                    self.preview = None;
                    return Some(Effect::Preview(head));
                }
            }
            KeyCode::Char(c) if c == k.export => {
                return Some(Effect::Export {
                    rows: self.view.clone(),
                });
            }
            KeyCode::Enter if self.tab == Tab::Headers => {
                let key = self.selected_row()?.key.clone();
                self.status_line = format!("resolving headers for {key}…");
                return Some(Effect::ResolveHeaders(key));
            }
            KeyCode::Char(c) if c == k.refresh => {
                self.loading = true;
                self.status_line = "refreshing…".into();
                return Some(Effect::Refresh);
            }
            _ => {}
        }
        None
    }
}
