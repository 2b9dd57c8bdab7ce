//! The dashboard's commands, one list per mode: the key handling looks keys up here, and the help
//! screen and the footer are drawn from the same list, so they cannot disagree. Single-character
//! keys come from the key map (`[keys]` in kfleet.toml).

use crate::config::KeyMap;
use crossterm::event::KeyCode;

/// The dashboard's views, in tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Kernels,
    Builds,
    Headers,
    Upcoming,
}

impl Tab {
    pub const ALL: [Tab; 5] = [
        Tab::Overview,
        Tab::Kernels,
        Tab::Builds,
        Tab::Headers,
        Tab::Upcoming,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Kernels => "Kernels",
            Tab::Builds => "Builds",
            Tab::Headers => "Headers",
            Tab::Upcoming => "Upcoming",
        }
    }
}

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    NextView,
    PreviousView,
    View(usize),
    Down,
    Up,
    PageDown,
    PageUp,
    First,
    Last,
    Filter,
    Sort,
    Reverse,
    Dispatch,
    Batch,
    Export,
    CancelRun,
    ResolveHeaders,
    ShowNodes,
    Copy,
    Open,
    Refresh,
    Help,
    Quit,
    /// Filter mode: keep the filter / clear it / delete a character.
    KeepFilter,
    ClearFilter,
    DeleteFilterChar,
    /// Confirm mode: go ahead.
    Confirm,
}

/// The modes keys are looked up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    Normal,
    Filter,
    Confirm,
}

/// One command: its keys in one mode (and view, where it only applies there), and its help text.
#[derive(Clone, Debug)]
pub struct Binding {
    pub mode: KeyMode,
    pub keys: Vec<KeyCode>,
    /// Only in this view; `None`: in every view.
    pub tab: Option<Tab>,
    pub command: Command,
    pub help: &'static str,
}

fn bind(
    mode: KeyMode,
    keys: Vec<KeyCode>,
    tab: Option<Tab>,
    command: Command,
    help: &'static str,
) -> Binding {
    Binding {
        mode,
        keys,
        tab,
        command,
        help,
    }
}

/// `key`, and `extra` (as less does, `g` and `G`) unless the key map gives it to a command.
fn with_free(map: &KeyMap, key: KeyCode, extra: char) -> Vec<KeyCode> {
    if map.all().iter().any(|(_, c)| *c == extra) {
        vec![key]
    } else {
        vec![key, KeyCode::Char(extra)]
    }
}

/// Every command of the dashboard with the keys `map` gives it, in the order help lists them.
pub fn bindings(map: &KeyMap) -> Vec<Binding> {
    use Command::*;
    use KeyCode::{BackTab, Backspace, Char, Down as ArrowDown, End, Enter, Esc, Home};
    use KeyMode::{Confirm as InConfirm, Filter as InFilter, Normal};
    let c = Char;
    let mut out = vec![
        bind(Normal, vec![KeyCode::Tab], None, NextView, "switch view"),
        bind(Normal, vec![BackTab], None, PreviousView, "switch view"),
    ];
    for (i, _) in Tab::ALL.iter().enumerate() {
        let digit = char::from(b'1' + i as u8);
        out.push(bind(Normal, vec![c(digit)], None, View(i), "switch view"));
    }
    out.extend([
        bind(Normal, vec![c(map.down), ArrowDown], None, Down, "move"),
        bind(Normal, vec![c(map.up), KeyCode::Up], None, Up, "move"),
        bind(Normal, vec![KeyCode::PageDown], None, PageDown, "move"),
        bind(Normal, vec![KeyCode::PageUp], None, PageUp, "move"),
        bind(Normal, with_free(map, Home, 'g'), None, First, "move"),
        bind(Normal, with_free(map, End, 'G'), None, Last, "move"),
        bind(
            Normal,
            vec![c(map.filter)],
            None,
            Filter,
            "filter the kernels",
        ),
        bind(
            Normal,
            vec![c(map.sort)],
            None,
            Sort,
            "sort by the next column",
        ),
        bind(
            Normal,
            vec![c(map.reverse)],
            None,
            Reverse,
            "reverse the order",
        ),
        bind(
            Normal,
            vec![c(map.dispatch)],
            None,
            Dispatch,
            "dispatch the selected identity",
        ),
        bind(
            Normal,
            vec![c(map.batch)],
            None,
            Batch,
            "dispatch the missing head",
        ),
        bind(
            Normal,
            vec![c(map.export)],
            None,
            Export,
            "export the view to CSV",
        ),
        bind(
            Normal,
            vec![c(map.cancel)],
            Some(Tab::Builds),
            CancelRun,
            "cancel the selected run",
        ),
        bind(
            Normal,
            vec![Enter],
            Some(Tab::Headers),
            ResolveHeaders,
            "resolve its headers",
        ),
        bind(
            Normal,
            vec![Enter],
            Some(Tab::Kernels),
            ShowNodes,
            "the nodes that run it",
        ),
        bind(
            Normal,
            vec![c(map.copy)],
            None,
            Copy,
            "copy the identity (the run's URL in Builds)",
        ),
        bind(
            Normal,
            vec![c(map.open)],
            Some(Tab::Builds),
            Open,
            "open the selected run in the browser",
        ),
        bind(Normal, vec![c(map.refresh)], None, Refresh, "refresh"),
        bind(Normal, vec![c(map.help)], None, Help, "help"),
        bind(Normal, vec![c(map.quit)], None, Quit, "quit"),
        bind(InFilter, vec![Enter], None, KeepFilter, "keep"),
        bind(InFilter, vec![Esc], None, ClearFilter, "clear"),
        bind(InFilter, vec![Backspace], None, DeleteFilterChar, "delete"),
        bind(
            InConfirm,
            vec![Enter, c(map.confirm)],
            None,
            Confirm,
            "go ahead",
        ),
    ]);
    out
}

/// The command `code` asks for in `mode` on view `tab`: a view-specific binding first.
pub fn lookup(bindings: &[Binding], mode: KeyMode, tab: Tab, code: KeyCode) -> Option<Command> {
    let matching = |b: &&Binding| b.mode == mode && b.keys.contains(&code);
    bindings
        .iter()
        .filter(matching)
        .find(|b| b.tab == Some(tab))
        .or_else(|| bindings.iter().filter(matching).find(|b| b.tab.is_none()))
        .map(|b| b.command)
}

/// How a key is written on screen.
pub fn key_name(code: &KeyCode) -> String {
    match code {
        KeyCode::Char(c) => c.to_string(),
        KeyCode::Enter => "Enter".into(),
        KeyCode::Esc => "Esc".into(),
        KeyCode::Tab => "Tab".into(),
        KeyCode::BackTab => "Shift-Tab".into(),
        KeyCode::Backspace => "Backspace".into(),
        KeyCode::Up => "↑".into(),
        KeyCode::Down => "↓".into(),
        KeyCode::PageUp => "PgUp".into(),
        KeyCode::PageDown => "PgDn".into(),
        KeyCode::Home => "Home".into(),
        KeyCode::End => "End".into(),
        other => format!("{other:?}"),
    }
}

/// The help screen's lines: each normal-mode command's keys and what it does (commands that do
/// the same thing share a line), then one line each for filtering and confirming.
pub fn help_lines(bindings: &[Binding]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for b in bindings.iter().filter(|b| b.mode == KeyMode::Normal) {
        let keys = b.keys.iter().map(key_name).collect::<Vec<_>>().join(" ");
        let what = match b.tab {
            Some(tab) => format!("{} ({})", b.help, tab.title()),
            None => b.help.to_string(),
        };
        match out.iter_mut().find(|(_, w)| *w == what) {
            Some((k, _)) => {
                k.push(' ');
                k.push_str(&keys);
            }
            None => out.push((keys, what)),
        }
    }
    let per_mode = |mode: KeyMode| {
        bindings
            .iter()
            .filter(|b| b.mode == mode)
            .map(|b| {
                let keys = b.keys.iter().map(key_name).collect::<Vec<_>>().join(" ");
                format!("{keys} {}", b.help)
            })
            .collect::<Vec<_>>()
            .join(" · ")
    };
    out.push(("filtering".into(), per_mode(KeyMode::Filter)));
    out.push((
        "confirming".into(),
        format!("{} · any other key declines", per_mode(KeyMode::Confirm)),
    ));
    out
}

/// The footer's reminder in one mode: the keys of `commands`, from the same list.
pub fn hint(bindings: &[Binding], mode: KeyMode, commands: &[Command]) -> String {
    commands
        .iter()
        .filter_map(|c| {
            bindings
                .iter()
                .find(|b| b.mode == mode && b.command == *c)
                .and_then(|b| {
                    b.keys
                        .first()
                        .map(|k| format!("{} {}", key_name(k), b.help))
                })
        })
        .collect::<Vec<_>>()
        .join(" · ")
}
