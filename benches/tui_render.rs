//! Dashboard speed with 100,000 identities: one frame of the Kernels view, and one filter
//! keystroke (re-filter and re-sort the index). Medians over many runs.
//!
//!     cargo bench --bench tui_render

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use kfleet::artifacts::{AssetTemplate, DEFAULT_ASSET_TEMPLATE};
use kfleet::coverage::{self, BuildStates, CoverageOptions};
use kfleet::forge::{index_assets, read_release_file, select_release};
use kfleet::inventory::read_inventory;
use kfleet::sample::{FleetSpec, generate};
use kfleet::tui::app::{Action, App};
use kfleet::tui::views::{Theme, render};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").expect("template");
    let spec = FleetSpec {
        nodes: 6_000_000,
        seed: 1,
        identities: Some(120_000),
        template: template.clone(),
        repo: "example/kdriver".into(),
    };
    generate(&spec, dir.path()).expect("fleet");
    let fleet = read_inventory(&[dir.path().join("fleet.csv")], false).expect("inventory");
    let releases = read_release_file(&dir.path().join("releases.json")).expect("releases");
    let release = select_release(&releases, None).expect("release");
    let report = coverage::compute(
        &fleet,
        &index_assets(release, &template),
        &release.tag_name,
        CoverageOptions::default(),
        &BuildStates::new(),
    )
    .expect("coverage");
    let identities = report.identities.len();
    let mut app = App::new("SANDBOX bench".into(), report, 900);
    app.update(Action::Key(KeyEvent::new(
        KeyCode::Char('2'),
        KeyModifiers::NONE,
    )));
    let theme = Theme { color: true };
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).expect("terminal");

    let mut frames = Vec::new();
    for i in 0..300 {
        // Scroll a little between frames so each draws another window.
        if i % 3 == 0 {
            app.update(Action::Key(KeyEvent::new(
                KeyCode::PageDown,
                KeyModifiers::NONE,
            )));
        }
        let t = Instant::now();
        terminal
            .draw(|f| render(&mut app, f, &theme))
            .expect("draw");
        frames.push(t.elapsed());
    }

    let mut keystrokes = Vec::new();
    app.update(Action::Key(KeyEvent::new(
        KeyCode::Char('/'),
        KeyModifiers::NONE,
    )));
    for _ in 0..10 {
        for c in ["u", "b", "u", "n"] {
            let code = KeyCode::Char(c.chars().next().expect("one char"));
            let t = Instant::now();
            app.update(Action::Key(KeyEvent::new(code, KeyModifiers::NONE)));
            keystrokes.push(t.elapsed());
        }
        for _ in 0..4 {
            let t = Instant::now();
            app.update(Action::Key(KeyEvent::new(
                KeyCode::Backspace,
                KeyModifiers::NONE,
            )));
            keystrokes.push(t.elapsed());
        }
    }
    println!("{identities} identities, Kernels view at 200x60\n");
    println!("| measure | median | target |");
    println!("|---|---:|---:|");
    println!(
        "| frame render | {:.2} ms | < 5 ms |",
        median(frames).as_secs_f64() * 1000.0
    );
    println!(
        "| filter keystroke | {:.2} ms | < 30 ms |",
        median(keystrokes).as_secs_f64() * 1000.0
    );
}
