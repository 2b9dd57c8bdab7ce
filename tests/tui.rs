//! The dashboard's views and keys: `TestBackend` renders with `insta` snapshots, and app-level
//! tests that feed keys and background results.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

#[path = "support/archive_signing.rs"]
#[allow(dead_code)]
mod archive_signing;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use kfleet::artifacts::{AssetTemplate, DEFAULT_ASSET_TEMPLATE};
use kfleet::builds::Decision;
use kfleet::coverage::{self, BuildStates, CoverageOptions, CoverageReport};
use kfleet::forge::{WorkflowRun, index_assets, read_release_file, select_release};
use kfleet::inventory::read_inventory;
use kfleet::state::Store;
use kfleet::tui::app::{Action, App, Effect, Mode, Pending, Tab};
use kfleet::tui::views::{Theme, render};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::path::Path;

const MISSING: &str = "amazonlinux/2023/x86_64/6.1.66-91.160.amzn2023.x86_64";

fn report() -> CoverageReport {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let fleet = read_inventory(&[fixtures.join("small-fleet.csv")], false).unwrap();
    let releases = read_release_file(&fixtures.join("small-releases.json")).unwrap();
    let release = select_release(&releases, None).unwrap();
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").unwrap();
    coverage::compute(
        &fleet,
        &index_assets(release, &template),
        &release.tag_name,
        CoverageOptions::default(),
        &BuildStates::new(),
    )
    .unwrap()
}

fn app() -> App {
    App::new("SANDBOX http://127.0.0.1:PORT".into(), report(), 900)
}

fn key(app: &mut App, code: KeyCode) -> Option<Effect> {
    app.update(Action::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn screen(app: &mut App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|f| render(app, f, &Theme { color: false }))
        .unwrap();
    terminal.backend().to_string()
}

#[test]
fn overview() {
    let mut a = app();
    insta::assert_snapshot!("overview", screen(&mut a, 100, 30));
}

#[test]
fn kernels_view_sorted_by_nodes() {
    let mut a = app();
    key(&mut a, KeyCode::Char('2'));
    insta::assert_snapshot!("kernels", screen(&mut a, 100, 16));
}

/// `G` and `g` go to the last and first kernel, as in less and vim; a key map that gives `g` to
/// a command keeps it.
#[test]
fn g_and_shift_g_jump_to_the_ends() {
    let mut a = app();
    key(&mut a, KeyCode::Char('2'));
    key(&mut a, KeyCode::Char('G'));
    assert_eq!(a.kernels.selected, a.kernels.view.len() - 1);
    key(&mut a, KeyCode::Char('g'));
    assert_eq!(a.kernels.selected, 0);
    let map = kfleet::tui::app::KeyMap {
        export: 'g',
        ..Default::default()
    };
    let mut b = app().with_keys(map);
    key(&mut b, KeyCode::Char('2'));
    key(&mut b, KeyCode::Char('G'));
    assert!(matches!(
        key(&mut b, KeyCode::Char('g')),
        Some(Effect::Export { .. })
    ));
}

/// Kernel and distro versions sort as package managers order them (-91 before -100 before
/// -125; 9 before 10), not as text.
#[test]
fn versions_sort_as_versions() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.csv");
    std::fs::write(
        &fleet,
        "node,distribution,distro_version,architecture,kernel_version\n\
         a,ubuntu,22.04,x86_64,5.15.0-125-generic\n\
         b,ubuntu,22.04,x86_64,5.15.0-91-generic\n\
         c,ubuntu,22.04,x86_64,5.15.0-100-generic\n\
         d,almalinux,10.0,x86_64,6.12.0-55.9.1.el10_0.x86_64\n\
         e,almalinux,9.4,x86_64,5.14.0-427.13.1.el9_4.x86_64\n",
    )
    .unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let releases = read_release_file(&fixtures.join("small-releases.json")).unwrap();
    let release = select_release(&releases, None).unwrap();
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").unwrap();
    let report = coverage::compute(
        &read_inventory(&[fleet], false).unwrap(),
        &index_assets(release, &template),
        &release.tag_name,
        CoverageOptions::default(),
        &BuildStates::new(),
    )
    .unwrap();
    let mut a = App::new("SANDBOX".into(), report, 900);
    let order = |a: &mut App, column: kfleet::tui::app::Column| -> Vec<String> {
        a.kernels.sort = column;
        a.kernels.descending = false;
        a.rebuild_view();
        a.kernels
            .view
            .iter()
            .map(|&i| {
                let r = &a.report.identities[i];
                match column {
                    kfleet::tui::app::Column::Version => r.distro_version.clone(),
                    _ => r.kernel_version.clone(),
                }
            })
            .collect()
    };
    let kernels = order(&mut a, kfleet::tui::app::Column::Kernel);
    let ubuntu: Vec<&String> = kernels.iter().filter(|k| k.ends_with("generic")).collect();
    assert_eq!(
        ubuntu,
        [
            "5.15.0-91-generic",
            "5.15.0-100-generic",
            "5.15.0-125-generic"
        ],
        "{kernels:?}"
    );
    let versions = order(&mut a, kfleet::tui::app::Column::Version);
    let alma: Vec<&String> = versions.iter().filter(|v| !v.starts_with("22")).collect();
    assert_eq!(alma, ["9.4", "10.0"], "{versions:?}");
}

/// The filter line: terms must all match, `!term` must not; Ctrl-W deletes the last word and
/// Ctrl-U the whole line, as in a shell.
#[test]
fn the_filter_negates_and_edits_like_a_shell() {
    let mut a = app();
    let all = a.kernels.view.len();
    key(&mut a, KeyCode::Char('/'));
    for c in "!covered".chars() {
        key(&mut a, KeyCode::Char(c));
    }
    let uncovered = a.kernels.view.len();
    assert!(uncovered > 0 && uncovered < all, "{uncovered} of {all}");
    assert!(
        a.kernels
            .view
            .iter()
            .all(|&i| a.report.identities[i].status.as_str() != "covered")
    );
    for c in " ubuntu".chars() {
        key(&mut a, KeyCode::Char(c));
    }
    assert!(a.kernels.view.len() <= uncovered);
    let ctrl = |c: char| KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL);
    a.update(Action::Key(ctrl('w')));
    assert_eq!(a.kernels.filter, "!covered ");
    assert_eq!(a.kernels.view.len(), uncovered);
    a.update(Action::Key(ctrl('u')));
    assert_eq!(a.kernels.filter, "");
    assert_eq!(a.kernels.view.len(), all);
    assert_eq!(a.mode, Mode::Filter, "still editing");
}

/// The mouse: the wheel moves the selection three rows at a time, a click selects the kernel
/// under it (as drawn), a click outside the rows selects nothing.
#[test]
fn the_wheel_scrolls_and_a_click_selects() {
    use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let mouse = |kind, column, row| {
        Action::Mouse(MouseEvent {
            kind,
            column,
            row,
            modifiers: KeyModifiers::NONE,
        })
    };
    let mut a = app();
    key(&mut a, KeyCode::Char('2'));
    let text = screen(&mut a, 100, 16);
    let (top, left, _) = a.kernels.rows_at.unwrap();
    a.update(mouse(MouseEventKind::ScrollDown, 10, 10));
    assert_eq!(a.kernels.selected, 3);
    a.update(mouse(MouseEventKind::ScrollUp, 10, 10));
    assert_eq!(a.kernels.selected, 0);
    a.update(mouse(
        MouseEventKind::Down(MouseButton::Left),
        left + 2,
        top + 4,
    ));
    assert_eq!(a.kernels.selected, 4, "{text}");
    let key_on_screen = a.selected_row().unwrap().key.clone();
    let line = text.lines().nth(usize::from(top + 4)).unwrap();
    let first_field = key_on_screen.split('/').next().unwrap();
    assert!(line.contains(first_field), "{line} / {key_on_screen}");
    a.update(mouse(MouseEventKind::Down(MouseButton::Left), left + 2, 0));
    assert_eq!(
        a.kernels.selected, 4,
        "a click on the title bar changes nothing"
    );
}

/// The time the Builds view is drawn at in these tests.
fn at() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-11-28T10:00:00Z")
        .unwrap()
        .into()
}

fn a_run() -> WorkflowRun {
    let now = at();
    WorkflowRun {
        id: 7000000001,
        display_title: format!("kfleet {MISSING} [r-1]"),
        status: Some("in_progress".into()),
        conclusion: None,
        event: Some("workflow_dispatch".into()),
        html_url: Some("http://127.0.0.1:PORT/acme/kdriver/actions/runs/7000000001".into()),
        created_at: Some(now - chrono::Duration::seconds(65)),
        updated_at: Some(now),
    }
}

#[test]
fn builds_view_with_a_run() {
    let mut a = app();
    a.now = at();
    a.update(Action::Runs(vec![a_run()]));
    key(&mut a, KeyCode::Char('3'));
    insta::assert_snapshot!("builds", screen(&mut a, 120, 8));
}

/// A failed run's steps: the failed one marked, the ones after it skipped, and the last lines
/// of the job's log under them, with control characters from the log made harmless.
#[test]
fn a_failed_runs_steps_and_log_tail_show_under_the_runs() {
    use kfleet::forge::{Conclusion, Job, JobStep, RunStatus};
    use kfleet::tui::app::RunDetail;
    let mut a = app();
    a.now = at();
    a.update(Action::Runs(vec![a_run()]));
    let effect = key(&mut a, KeyCode::Char('3'));
    assert_eq!(effect, Some(Effect::RunDetail(7000000001)));
    let step = |n: u64, name: &str, conclusion: Option<Conclusion>| JobStep {
        name: name.into(),
        number: n,
        status: Some(RunStatus::Completed),
        conclusion,
        started_at: None,
        completed_at: None,
    };
    let detail = RunDetail {
        run_id: 7000000001,
        jobs: vec![Job {
            id: 1,
            run_id: 7000000001,
            name: "build".into(),
            status: Some(RunStatus::Completed),
            conclusion: Some(Conclusion::Failure),
            started_at: None,
            completed_at: None,
            html_url: None,
            steps: vec![
                step(1, "Resolve kernel headers", Some(Conclusion::Success)),
                step(2, "Build the module", Some(Conclusion::Failure)),
                step(3, "Upload the artifact", Some(Conclusion::Skipped)),
            ],
        }],
        log_tail: Some("make: *** [modules] Error 2\n##[error]build failed\x1b[2J".into()),
    };
    assert_eq!(a.update(Action::RunDetail(Box::new(detail))), None);
    let text = screen(&mut a, 120, 24);
    for line in [
        "✔ Resolve kernel headers",
        "✗ Build the module",
        "– Upload the artifact",
        "log of the failed job, last lines:",
        "make: *** [modules] Error 2",
        "##[error]build failed?[2J",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    // The detail of another run is not shown under this one.
    let mut other = a.builds.detail.clone().unwrap();
    other.run_id = 1;
    a.builds.detail = None;
    a.update(Action::RunDetail(Box::new(other)));
    assert!(a.builds.detail.is_none());
}

#[test]
fn x_confirms_then_cancels_the_selected_run() {
    let mut a = app();
    a.now = at();
    a.update(Action::Runs(vec![a_run()]));
    key(&mut a, KeyCode::Char('3'));
    key(&mut a, KeyCode::Char('x'));
    assert_eq!(
        a.mode,
        Mode::Confirm(Pending::Cancel(7000000001, MISSING.into()))
    );
    insta::assert_snapshot!("confirm-cancel", screen(&mut a, 100, 14));
    assert_eq!(
        key(&mut a, KeyCode::Enter),
        Some(Effect::Cancel(7000000001))
    );
    assert_eq!(
        a.update(Action::Cancelled(
            "cancel requested for run 7000000001".into()
        )),
        Some(Effect::Refresh)
    );
    assert_eq!(a.status_line, "cancel requested for run 7000000001");
}

#[test]
fn headers_view_shows_the_chain_for_the_selected_kernel() {
    let mut a = app();
    key(&mut a, KeyCode::Char('2'));
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::Char('4'));
    let text = screen(&mut a, 140, 20);
    assert!(
        text.contains(&format!("header chain for {MISSING}")),
        "{text}"
    );
    insta::assert_snapshot!("headers", text);
}

#[test]
fn help_is_built_from_the_key_map() {
    let mut a = app();
    key(&mut a, KeyCode::Char('?'));
    assert_eq!(a.mode, Mode::Help);
    insta::assert_snapshot!("help", screen(&mut a, 80, 24));
    key(&mut a, KeyCode::Char('x'));
    assert_eq!(a.mode, Mode::Normal);
}

#[test]
fn filter_narrows_the_table_and_keeps_it() {
    let mut a = app();
    key(&mut a, KeyCode::Char('/'));
    assert_eq!((a.tab, a.mode.clone()), (Tab::Kernels, Mode::Filter));
    for c in "missing".chars() {
        key(&mut a, KeyCode::Char(c));
    }
    key(&mut a, KeyCode::Enter);
    let keys: Vec<&str> = a
        .kernels
        .view
        .iter()
        .map(|&i| a.report.identities[i].key.as_str())
        .collect();
    assert_eq!(keys, [MISSING, "fedora/40/aarch64/6.8.9-300.fc40.aarch64"]);
    key(&mut a, KeyCode::Char('/'));
    key(&mut a, KeyCode::Esc);
    assert_eq!(a.kernels.view.len(), 8, "Esc clears the filter");
}

#[test]
fn d_confirms_then_dispatches_exactly_the_selected_identity() {
    let mut a = app();
    key(&mut a, KeyCode::Char('2'));
    key(&mut a, KeyCode::Down);
    assert_eq!(
        key(&mut a, KeyCode::Char('d')),
        Some(Effect::Preview(vec![MISSING.into()])),
        "the planner is asked first"
    );
    assert_eq!(a.mode, Mode::Confirm(Pending::Dispatch(MISSING.into())));
    a.update(Action::Previewed(vec![(
        MISSING.to_string(),
        Decision::WouldDispatch,
    )]));
    insta::assert_snapshot!("confirm-dispatch", screen(&mut a, 90, 20));
    assert_eq!(
        key(&mut a, KeyCode::Enter),
        Some(Effect::Dispatch(vec![MISSING.into()]))
    );
    assert_eq!(a.mode, Mode::Normal);
    // Any other key cancels.
    key(&mut a, KeyCode::Char('d'));
    assert_eq!(key(&mut a, KeyCode::Esc), None);
    assert_eq!(a.status_line, "cancelled");
}

#[test]
fn shift_d_offers_the_missing_head() {
    let mut a = app();
    key(&mut a, KeyCode::Char('D'));
    let head = vec![
        MISSING.to_string(),
        "fedora/40/aarch64/6.8.9-300.fc40.aarch64".to_string(),
    ];
    assert_eq!(a.mode, Mode::Confirm(Pending::Batch(head.clone())));
    assert!(screen(&mut a, 90, 20).contains("the planner is checking"));
    a.update(Action::Previewed(vec![
        (MISSING.to_string(), Decision::WouldDispatch),
        (
            "fedora/40/aarch64/6.8.9-300.fc40.aarch64".to_string(),
            Decision::Building {
                run_id: Some(7),
                status: Some(kfleet::forge::RunStatus::Queued),
                url: None,
                request_id: None,
            },
        ),
    ]));
    insta::assert_snapshot!("confirm-batch", screen(&mut a, 90, 20));
    assert_eq!(
        key(&mut a, KeyCode::Char('y')),
        Some(Effect::Dispatch(head))
    );
}

#[test]
fn export_hands_over_the_view_as_shown() {
    let mut a = app();
    key(&mut a, KeyCode::Char('/'));
    for c in "centos".chars() {
        key(&mut a, KeyCode::Char(c));
    }
    key(&mut a, KeyCode::Enter);
    let Some(Effect::Export { rows }) = key(&mut a, KeyCode::Char('e')) else {
        panic!("e exports");
    };
    let chosen: Vec<_> = rows.iter().map(|&i| &a.report.identities[i]).collect();
    assert_eq!(
        kfleet::report::identities_csv(&chosen).unwrap(),
        "distribution,distro_version,architecture,kernel_version,nodes,status,reason,asset\n\
centos,9,x86_64,5.14.0-362.el9.x86_64,4,long-tail,,\n"
    );
}

#[test]
fn sorting_and_failures_keep_the_last_good_data() {
    let mut a = app();
    key(&mut a, KeyCode::Char('s'));
    key(&mut a, KeyCode::Char('S'));
    let first = &a.report.identities[a.kernels.view[0]];
    assert_eq!(
        first.status.as_str(),
        "covered",
        "sorted by status ascending"
    );
    let before = a.kernels.view.clone();
    a.update(Action::Failed("api.github.com: timed out".into()));
    assert_eq!(a.kernels.view, before);
    assert_eq!(a.status_line, "error: api.github.com: timed out");
    assert_eq!(
        a.update(Action::Key(KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::CONTROL
        ))),
        Some(Effect::Quit)
    );
}

#[test]
fn small_terminals_still_render() {
    let mut a = app();
    for tab in ['1', '2', '3', '4'] {
        key(&mut a, KeyCode::Char(tab));
        let text = screen(&mut a, 80, 24);
        assert!(text.contains("SANDBOX"), "{text}");
    }
}

#[path = "support/kube.rs"]
mod kube_fixture;

mod with_the_sandbox {
    use super::*;
    use kfleet::builds::{Planner, PlannerConfig};
    use kfleet::clock::ManualClock;
    use kfleet::forge::{Forge, RetryPolicy, SandboxForge, SandboxOptions, Simulation};
    use kfleet::tui::Dashboard;
    use std::sync::Arc;
    use std::time::Duration;

    /// A dashboard on a sandbox whose runs (queued 0.1 s, running 0.3 s) move only with the
    /// returned clock.
    async fn dashboard(state: &Path) -> (Arc<Dashboard>, Arc<SandboxForge>, Arc<ManualClock>) {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let fleet = read_inventory(&[fixtures.join("small-fleet.csv")], false).unwrap();
        dashboard_on(state, fleet, Vec::new()).await
    }

    /// [`dashboard`] with this header chain.
    async fn dashboard_with_chain(
        state: &Path,
        chain: kfleet::headers::Chain,
    ) -> (Arc<Dashboard>, Arc<SandboxForge>, Arc<ManualClock>) {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let fleet = read_inventory(&[fixtures.join("small-fleet.csv")], false).unwrap();
        build_dashboard(state, fleet, Vec::new(), chain).await
    }

    /// [`dashboard`] on this fleet, watching these clusters.
    async fn dashboard_on(
        state: &Path,
        fleet: kfleet::inventory::FleetGroups,
        live: Vec<kfleet::inventory::kube::KubeSource>,
    ) -> (Arc<Dashboard>, Arc<SandboxForge>, Arc<ManualClock>) {
        build_dashboard(state, fleet, live, kfleet::headers::Chain::builtin()).await
    }

    async fn build_dashboard(
        state: &Path,
        fleet: kfleet::inventory::FleetGroups,
        live: Vec<kfleet::inventory::kube::KubeSource>,
        chain: kfleet::headers::Chain,
    ) -> (Arc<Dashboard>, Arc<SandboxForge>, Arc<ManualClock>) {
        let clock = ManualClock::new();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let releases = read_release_file(&fixtures.join("small-releases.json")).unwrap();
        let sandbox = Arc::new(
            SandboxForge::start(
                releases,
                SandboxOptions {
                    simulation: Simulation {
                        queue_time: Duration::from_millis(100),
                        run_time: Duration::from_millis(300),
                        fail_rate: 0.0,
                        ..Simulation::default()
                    },
                    clock: clock.clone().into(),
                    ..SandboxOptions::default()
                },
                RetryPolicy::default(),
            )
            .await
            .unwrap(),
        );
        let forge: Arc<dyn Forge> = sandbox.clone();
        let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").unwrap();
        let planner = Planner::new(
            forge.clone(),
            template.clone(),
            PlannerConfig {
                workflow: "build-driver.yml".into(),
                git_ref: "main".into(),
                driver_version: "v1.1.0".into(),
                deadline: Duration::from_secs(900),
                cancel_on_timeout: false,
                claim_lease: Duration::from_secs(60),
                dispatch_interval: Duration::ZERO,
                batch_workflow: "build-batch.yml".into(),
            },
            Store::in_dir(state).await.unwrap(),
        )
        .with_clock(clock.clone().into());
        let fleet_files = fleet.files.iter().map(std::path::PathBuf::from).collect();
        let dash = Arc::new(Dashboard {
            forge,
            planner: Arc::new(planner),
            fleet: std::sync::RwLock::new(Arc::new(fleet)),
            live,
            upcoming_lines: 10,
            kabi: None,
            template,
            options: CoverageOptions::default(),
            workflow: "build-driver.yml".into(),
            deadline: Duration::from_secs(900),
            driver_version: None,
            inventories: fleet_files,
            resolver: kfleet::headers::Resolver::new(
                chain,
                kfleet::headers::ResolverOptions::default(),
            )
            .unwrap(),
        });
        (dash, sandbox, clock)
    }

    /// Runs an effect the way the event loop does and feeds the results back to the app.
    async fn carry_out(dash: &Arc<Dashboard>, app: &mut App, effect: Effect) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        dash.effect(app, effect, &tx);
        drop(tx);
        while let Some(action) = rx.recv().await {
            if let Some(next) = app.update(action) {
                Box::pin(carry_out(dash, app, next)).await;
            }
        }
    }

    fn status_of(app: &App, key: &str) -> String {
        app.report
            .identities
            .iter()
            .find(|r| r.key == key)
            .unwrap()
            .status
            .as_str()
            .to_string()
    }

    /// Feeds the app what the dashboard's background work sends, carrying out the effects it asks
    /// for, until `done` holds (or fails after 20 s).
    async fn pump(
        dash: &Arc<Dashboard>,
        app: &mut App,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<Action>,
        what: &str,
        done: impl Fn(&App) -> bool,
    ) -> Vec<String> {
        let mut notices = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(app) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not seen in 20 s; status: {}",
                app.status_line
            );
            // Some conditions (a reconnect) send nothing: look again every 50 ms.
            let Ok(action) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await
            else {
                continue;
            };
            let action = action.expect("the watch ended");
            if let Action::Notice(n) = &action {
                notices.push(n.clone());
            }
            if let Some(effect) = app.update(action) {
                carry_out(dash, app, effect).await;
            }
        }
        notices
    }

    fn nodes_of(app: &App, key: &str) -> Option<u64> {
        app.report
            .identities
            .iter()
            .find(|r| r.key == key)
            .map(|r| r.nodes)
    }

    /// A live cluster in the dashboard: a reboot wave into a kernel with no artifact moves the
    /// gauge and adds a `missing` row by itself; a dropped watch reconnects; a 410 relists.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watched_cluster_moves_coverage_as_nodes_reboot() {
        use kube_fixture::{KubeFixture, kubeconfig, node};
        const COVERED: &str = "ubuntu/22.04/x86_64/5.15.0-91-generic";
        const NEW: &str = "ubuntu/22.04/x86_64/5.15.0-125-generic";
        let mut nodes: Vec<serde_json::Value> = (0..100)
            .map(|i| {
                node(
                    &format!("ip-10-0-1-{i}"),
                    "Ubuntu 22.04.4 LTS",
                    "5.15.0-91-generic",
                    "amd64",
                )
            })
            .collect();
        nodes.extend((0..20).map(|i| {
            node(
                &format!("ip-10-0-2-{i}"),
                "Debian GNU/Linux 12 (bookworm)",
                "6.1.0-18-amd64",
                "amd64",
            )
        }));
        let api = KubeFixture::start(nodes).await;
        let dir = tempfile::tempdir().unwrap();
        let source = kfleet::inventory::kube::KubeSource {
            context: Some("prod-eu".into()),
            kubeconfig: Some(kubeconfig(dir.path(), &[("prod-eu", &api.url)])),
        };
        let fleet = kfleet::inventory::kube::read(std::slice::from_ref(&source))
            .await
            .unwrap();
        let state = tempfile::tempdir().unwrap();
        let (dash, _sandbox, _clock) = dashboard_on(state.path(), fleet, vec![source]).await;
        let mut app = App::new(dash.forge.label(), dash.report().await.unwrap(), 900);
        assert_eq!(nodes_of(&app, COVERED), Some(100));
        let before = screen(&mut app, 100, 20);
        assert!(before.contains("100%  120 of 120 nodes"), "{before}");

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        dash.follow_fleet(&tx);
        // The watch starts with a full list: nothing changes, nothing to show.
        while api.watches() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for i in 0..50 {
            api.reboot(&format!("ip-10-0-1-{i}"), "5.15.0-125-generic");
        }
        pump(&dash, &mut app, &mut rx, "the reboot wave", |a| {
            nodes_of(a, NEW) == Some(50) && !a.loading
        })
        .await;
        assert_eq!(nodes_of(&app, COVERED), Some(50));
        assert_eq!(status_of(&app, NEW), "missing");
        assert!(app.kernels.fresh_missing.contains(NEW));
        assert!(
            app.status_line
                .contains("new missing kernel: ubuntu/22.04/x86_64/5.15.0-125-generic"),
            "{}",
            app.status_line
        );
        let overview = screen(&mut app, 100, 20);
        assert!(overview.contains("58.33%  70 of 120 nodes"), "{overview}");
        key(&mut app, KeyCode::Char('2'));
        let kernels = screen(&mut app, 140, 12);
        let row = kernels
            .lines()
            .find(|l| l.contains("5.15.0-125-generic"))
            .unwrap_or_else(|| panic!("{kernels}"));
        assert!(
            row.contains("50") && row.contains("missing NEW") && row.contains("prod-eu"),
            "{row}"
        );
        assert!(kernels.contains("CONTEXTS"), "{kernels}");

        // Heartbeats change nothing kfleet shows: no fleet update, no refresh.
        for i in 0..20 {
            api.heartbeat(&format!("ip-10-0-2-{i}"));
        }
        let quiet = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Some(action)) = tokio::time::timeout_at(quiet, rx.recv()).await {
            assert!(
                !matches!(action, Action::FleetChanged(_)),
                "a heartbeat moved the fleet: {action:?}"
            );
        }

        // A dropped watch reconnects from where it was and still sees changes.
        let watches = api.watches();
        api.drop_watches();
        pump(&dash, &mut app, &mut rx, "the reconnect", |_| {
            api.watches() > watches
        })
        .await;
        api.delete("ip-10-0-1-99");
        pump(&dash, &mut app, &mut rx, "a node leaving", |a| {
            nodes_of(a, COVERED) == Some(49) && !a.loading
        })
        .await;

        // A change the watch never saw, then 410 Gone: the dashboard lists again and shows it.
        let lists = api.lists().len();
        api.change_unseen_and_expire(node(
            "ip-10-0-2-0",
            "Debian GNU/Linux 12 (bookworm)",
            "6.1.0-25-amd64",
            "amd64",
        ));
        let notices = pump(&dash, &mut app, &mut rx, "the relist", |a| {
            nodes_of(a, "debian/12/x86_64/6.1.0-25-amd64") == Some(1) && !a.loading
        })
        .await;
        assert!(
            notices.iter().any(|n| n.contains("kube:prod-eu: the watch's resourceVersion expired (410 Gone)")),
            "{notices:?}"
        );
        assert!(
            api.lists().len() > lists,
            "a 410 makes the watcher list again"
        );
        assert_eq!(nodes_of(&app, "debian/12/x86_64/6.1.0-18-amd64"), Some(19));
        let total: u64 = app.report.identities.iter().map(|r| r.nodes).sum();
        assert_eq!(total, 119);
    }

    /// Two clusters, one out of reach once the dashboard runs: the other's changes still show,
    /// and the unreachable one's nodes stay as they were listed, with a notice saying why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_out_of_reach_does_not_hold_back_the_others() {
        use kube_fixture::{KubeFixture, kubeconfig, node};
        let a = KubeFixture::start(
            (0..30)
                .map(|i| {
                    node(
                        &format!("a-{i}"),
                        "Ubuntu 22.04.4 LTS",
                        "5.15.0-91-generic",
                        "amd64",
                    )
                })
                .collect(),
        )
        .await;
        let b = KubeFixture::start(
            (0..20)
                .map(|i| {
                    node(
                        &format!("b-{i}"),
                        "Debian GNU/Linux 12 (bookworm)",
                        "6.1.0-18-amd64",
                        "amd64",
                    )
                })
                .collect(),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let config = kubeconfig(dir.path(), &[("a", &a.url), ("b", &b.url)]);
        let source = |c: &str| kfleet::inventory::kube::KubeSource {
            context: Some(c.into()),
            kubeconfig: Some(config.clone()),
        };
        let sources = vec![source("a"), source("b")];
        let fleet = kfleet::inventory::kube::read(&sources).await.unwrap();
        b.refuse_lists(true);
        let state = tempfile::tempdir().unwrap();
        let (dash, _sandbox, _clock) = dashboard_on(state.path(), fleet, sources).await;
        let mut app = App::new(dash.forge.label(), dash.report().await.unwrap(), 900);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        dash.follow_fleet(&tx);
        while a.watches() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for i in 0..10 {
            a.reboot(&format!("a-{i}"), "5.15.0-125-generic");
        }
        let mut notices = pump(&dash, &mut app, &mut rx, "cluster a's reboots", |app| {
            nodes_of(app, "ubuntu/22.04/x86_64/5.15.0-125-generic") == Some(10) && !app.loading
        })
        .await;
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while !notices.iter().any(|n| n.starts_with("kube:b:")) {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(Action::Notice(n))) => notices.push(n),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        assert_eq!(
            nodes_of(&app, "ubuntu/22.04/x86_64/5.15.0-91-generic"),
            Some(20)
        );
        assert_eq!(
            nodes_of(&app, "debian/12/x86_64/6.1.0-18-amd64"),
            Some(20),
            "cluster b's nodes stay as listed"
        );
        assert!(
            notices
                .iter()
                .any(|n| n.starts_with("kube:b: listing nodes failed: 503 ServiceUnavailable")),
            "{notices:?}"
        );
    }

    /// An Ubuntu archive on 127.0.0.1 whose jammy-updates index lists these kernels' headers.
    async fn ubuntu_archive(kernels: &[&str]) -> kfleet::headers::Chain {
        let mut index = String::new();
        for k in kernels {
            index.push_str(&format!(
                "Package: linux-headers-{k}\nSource: linux\nVersion: 5.15.0-1\nArchitecture: amd64\nFilename: pool/main/l/linux/linux-headers-{k}_amd64.deb\nSize: 3\nSHA256: {}\nDescription: headers\n\n",
                "0".repeat(64)
            ));
        }
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut std::io::Cursor::new(index.as_bytes()), &mut xz).unwrap();
        let in_release = crate::archive_signing::clearsign(&crate::archive_signing::release(&[(
            "main/binary-amd64/Packages.xz".into(),
            xz.clone(),
        )]));
        let app = axum::Router::new()
            .route(
                "/ubuntu/dists/jammy-updates/main/binary-amd64/Packages.xz",
                axum::routing::get(move || {
                    let xz = xz.clone();
                    async move { xz }
                }),
            )
            .route(
                "/ubuntu/dists/jammy-updates/InRelease",
                axum::routing::get(move || {
                    let signed = in_release.clone();
                    async move { signed }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        kfleet::headers::Chain::parse(
            "test chain",
            &format!(
                "[[sources]]\nfamily = \"ubuntu\"\nname = \"ubuntu-archive\"\nkind = \"apt-repo\"\nsigned_by = \"{}\"\nurls = [\"{base}/ubuntu/\"]\nsuites = [\"{{codename}}-updates\"]\ncomponents = [\"main\"]\n",
                crate::archive_signing::keyring_path().display()
            ),
        )
        .unwrap()
    }

    /// Enter on a kernel row drills down to the nodes that run it (read again from the
    /// inventory): their names in a popup, "+N more" past what fits, any key closes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn enter_on_a_kernel_lists_the_nodes_that_run_it() {
        let state = tempfile::tempdir().unwrap();
        let (dash, _sandbox, _clock) = dashboard(state.path()).await;
        let mut app = App::new(dash.forge.label(), dash.report().await.unwrap(), 900);
        key(&mut app, KeyCode::Char('2'));
        let row = app.selected_row().unwrap().clone();
        let effect = key(&mut app, KeyCode::Enter);
        assert_eq!(effect, Some(Effect::Nodes(row.key.clone())));
        carry_out(&dash, &mut app, effect.unwrap()).await;
        assert_eq!(app.mode, Mode::Nodes, "{}", app.status_line);
        let found = app.kernels.nodes.clone().unwrap();
        assert_eq!(found.total, row.nodes);
        let tall = screen(&mut app, 120, 60);
        assert!(
            tall.contains(&format!("{} nodes running {}", row.nodes, row.key)),
            "{tall}"
        );
        assert!(tall.contains(&found.nodes[0].name), "{tall}");
        assert!(!tall.contains("more (kfleet nodes"), "{tall}");
        // A short terminal: what does not fit is counted.
        let short = screen(&mut app, 120, 12);
        let shown = 12 - 6;
        assert!(
            short.contains(&format!(
                "+{} more (kfleet nodes {}",
                row.nodes - shown,
                row.key
            )),
            "{short}"
        );
        key(&mut app, KeyCode::Char('x'));
        assert_eq!(app.mode, Mode::Normal);
    }

    /// The Upcoming view: opening it reads the repositories; the newer kernels of the fleet's
    /// line show covered or missing against the release, apart from coverage; `d` then Enter
    /// prebuilds the selected one through the planner, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_upcoming_view_lists_newer_kernels_and_d_prebuilds_one() {
        let chain = ubuntu_archive(&[
            "5.15.0-91-generic",
            "5.15.0-92-generic",
            "5.15.0-100-generic",
            "5.15.0-101-aws",
            "6.8.0-45-generic",
        ])
        .await;
        let state = tempfile::tempdir().unwrap();
        let (dash, sandbox, _clock) = dashboard_with_chain(state.path(), chain).await;
        let mut app = App::new(dash.forge.label(), dash.report().await.unwrap(), 900);
        let coverage = app.report.summary.node_coverage_pct;
        let effect = key(&mut app, KeyCode::Char('5'));
        assert_eq!(effect, Some(Effect::LoadUpcoming));
        assert!(screen(&mut app, 120, 10).contains("reading the distributions' repositories"));
        carry_out(&dash, &mut app, Effect::LoadUpcoming).await;
        let found = app.upcoming.report.as_ref().unwrap();
        let rows: Vec<(String, &str)> = found
            .rows
            .iter()
            .map(|r| {
                (
                    r.upcoming.identity.kernel_version.clone(),
                    r.status.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("5.15.0-92-generic".to_string(), "upcoming-covered"),
                ("5.15.0-100-generic".to_string(), "upcoming-missing"),
            ],
            "the fleet's line only (not -aws, not the HWE 6.8 line)"
        );
        let view = screen(&mut app, 130, 16);
        assert!(
            view.contains("2 upcoming kernels on 1 of the fleet's"),
            "{view}"
        );
        assert!(
            view.contains("5.15.0-100-generic") && view.contains("upcoming-missing"),
            "{view}"
        );
        assert_eq!(
            app.report.summary.node_coverage_pct, coverage,
            "coverage is not moved"
        );

        key(&mut app, KeyCode::Down);
        let preview = key(&mut app, KeyCode::Char('d')).unwrap();
        assert_eq!(
            preview,
            Effect::Preview(vec!["ubuntu/22.04/x86_64/5.15.0-100-generic".into()])
        );
        carry_out(&dash, &mut app, preview).await;
        let dispatch = key(&mut app, KeyCode::Enter).unwrap();
        carry_out(&dash, &mut app, dispatch).await;
        assert_eq!(sandbox.sandbox().dispatches(), 1);
        assert!(
            app.status_line
                .starts_with("ubuntu/22.04/x86_64/5.15.0-100-generic: dispatched run"),
            "{}",
            app.status_line
        );
        // D offers every upcoming kernel without an artifact; the planner finds it under way.
        let preview = key(&mut app, KeyCode::Char('D')).unwrap();
        carry_out(&dash, &mut app, preview).await;
        let dispatch = key(&mut app, KeyCode::Enter).unwrap();
        carry_out(&dash, &mut app, dispatch).await;
        assert_eq!(sandbox.sandbox().dispatches(), 1, "never twice");
    }

    /// The Builds view shows what the selected run is doing: its job's steps, read when the
    /// view opens, again with each run poll while it runs, and once more when it finished.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_builds_view_shows_the_selected_runs_steps_as_it_goes() {
        let state = tempfile::tempdir().unwrap();
        let (dash, _sandbox, clock) = dashboard(state.path()).await;
        let mut app = App::new(dash.forge.label(), dash.report().await.unwrap(), 900);
        dash.planner
            .plan_many(
                &[kfleet::identity::KernelIdentity::from_key(MISSING).unwrap()],
                false,
            )
            .await
            .unwrap();
        let poll = |dash: Arc<Dashboard>| async move {
            dash.forge
                .list_runs("build-driver.yml", None, None)
                .await
                .unwrap()
        };
        assert_eq!(app.update(Action::Runs(poll(dash.clone()).await)), None);
        let run_id = app.builds.runs[0].id;
        let effect = key(&mut app, KeyCode::Char('3'));
        assert_eq!(effect, Some(Effect::RunDetail(run_id)));
        carry_out(&dash, &mut app, effect.unwrap()).await;
        let text = screen(&mut app, 120, 24);
        assert!(
            text.contains(&format!("run {run_id}: jobs and steps")),
            "{text}"
        );
        assert!(text.contains("· Set up job"), "{text}");

        // Steps of 75 ms after 100 ms in the queue: the first one runs.
        clock.advance(Duration::from_millis(150));
        let effect = app.update(Action::Runs(poll(dash.clone()).await));
        assert_eq!(
            effect,
            Some(Effect::RunDetail(run_id)),
            "read again while it runs"
        );
        carry_out(&dash, &mut app, effect.unwrap()).await;
        let text = screen(&mut app, 120, 24);
        assert!(text.contains("▶ Set up job"), "{text}");
        assert!(text.contains("· Upload the artifact"), "{text}");

        // Finished: the poll asks for a refresh, which reads the steps once more.
        clock.advance(Duration::from_secs(1));
        let effect = app.update(Action::Runs(poll(dash.clone()).await));
        assert_eq!(effect, Some(Effect::Refresh));
        carry_out(&dash, &mut app, effect.unwrap()).await;
        let text = screen(&mut app, 120, 24);
        assert!(text.contains("✔ Upload the artifact"), "{text}");
        assert!(!text.contains("log of the failed job"), "{text}");
    }

    // polars blocks in place inside a tokio context: kfleet runs a multi-threaded runtime.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn d_then_enter_dispatches_once_shows_the_run_and_then_covered() {
        let state = tempfile::tempdir().unwrap();
        let (dash, sandbox, clock) = dashboard(state.path()).await;
        let mut app = App::new(dash.forge.label(), dash.report().await.unwrap(), 900);
        key(&mut app, KeyCode::Char('2'));
        key(&mut app, KeyCode::Down);
        let preview = key(&mut app, KeyCode::Char('d')).unwrap();
        carry_out(&dash, &mut app, preview).await;
        assert_eq!(
            app.preview,
            Some(vec![(MISSING.to_string(), Decision::WouldDispatch)]),
            "the confirmation shows the planner's dry run"
        );
        assert_eq!(sandbox.sandbox().dispatches(), 0);
        let effect = key(&mut app, KeyCode::Enter).unwrap();
        carry_out(&dash, &mut app, effect).await;
        assert_eq!(sandbox.sandbox().dispatches(), 1);
        assert!(
            app.status_line
                .starts_with(&format!("{MISSING}: dispatched run")),
            "{}",
            app.status_line
        );
        assert_eq!(status_of(&app, MISSING), "building");
        // `d` on the building row: the planner says it is building, never "would dispatch".
        assert_eq!(app.selected_row().map(|r| r.key.as_str()), Some(MISSING));
        let preview = key(&mut app, KeyCode::Char('d')).unwrap();
        carry_out(&dash, &mut app, preview).await;
        let decided = app.preview.clone().unwrap_or_default();
        assert!(
            matches!(decided.as_slice(), [(k, Decision::Building { .. })] if k == MISSING),
            "{decided:?}"
        );
        key(&mut app, KeyCode::Esc);
        assert_eq!(sandbox.sandbox().dispatches(), 1);

        let runs = dash
            .forge
            .list_runs("build-driver.yml", None, None)
            .await
            .unwrap();
        app.update(Action::Runs(runs));
        key(&mut app, KeyCode::Char('3'));
        let builds = screen(&mut app, 120, 8);
        assert!(builds.contains(MISSING.split_at(40).0), "{builds}");

        clock.advance(Duration::from_secs(1));
        carry_out(&dash, &mut app, Effect::Refresh).await;
        assert_eq!(status_of(&app, MISSING), "covered");
        assert_eq!(sandbox.sandbox().dispatches(), 1);
    }

    /// The dashboard is where operators watch builds: when the run poll sees a run finish, the
    /// listing and coverage refresh by themselves (no `r`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_finished_run_refreshes_coverage_by_itself() {
        let state = tempfile::tempdir().unwrap();
        let (dash, _sandbox, clock) = dashboard(state.path()).await;
        let mut app = App::new(dash.forge.label(), dash.report().await.unwrap(), 900);
        let decided = dash
            .planner
            .plan_many(
                &[kfleet::identity::KernelIdentity::from_key(MISSING).unwrap()],
                false,
            )
            .await
            .unwrap();
        assert!(matches!(
            decided[0].1,
            kfleet::builds::Decision::Dispatched { .. }
        ));
        carry_out(&dash, &mut app, Effect::Refresh).await;
        assert_eq!(status_of(&app, MISSING), "building");
        let poll = |dash: Arc<Dashboard>| async move {
            dash.forge
                .list_runs("build-driver.yml", None, None)
                .await
                .unwrap()
        };
        assert_eq!(app.update(Action::Runs(poll(dash.clone()).await)), None);
        clock.advance(Duration::from_secs(1));
        let effect = app.update(Action::Runs(poll(dash.clone()).await));
        assert_eq!(effect, Some(Effect::Refresh), "{}", app.status_line);
        assert!(
            app.status_line.contains("finished: success"),
            "{}",
            app.status_line
        );
        carry_out(&dash, &mut app, Effect::Refresh).await;
        assert_eq!(status_of(&app, MISSING), "covered");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shift_d_dispatches_the_planned_head_once() {
        let state = tempfile::tempdir().unwrap();
        let (dash, sandbox, _clock) = dashboard(state.path()).await;
        let mut app = App::new(dash.forge.label(), dash.report().await.unwrap(), 900);
        key(&mut app, KeyCode::Char('D'));
        let effect = key(&mut app, KeyCode::Enter).unwrap();
        assert_eq!(effect, Effect::Dispatch(app.missing_head()));
        carry_out(&dash, &mut app, effect).await;
        assert_eq!(
            sandbox.sandbox().dispatches(),
            2,
            "the two missing head identities"
        );
        key(&mut app, KeyCode::Char('D'));
        assert_eq!(
            app.status_line, "the head has no missing identity",
            "both are building now"
        );
    }
}

#[test]
fn enter_in_headers_resolves_and_the_view_shows_every_attempt() {
    let mut a = app();
    key(&mut a, KeyCode::Char('2'));
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::Char('4'));
    assert_eq!(
        key(&mut a, KeyCode::Enter),
        Some(Effect::ResolveHeaders(MISSING.into()))
    );
    let resolution: kfleet::headers::Resolution = serde_json::from_value(serde_json::json!({
        "key": MISSING,
        "resolved_by": null,
        "packages": [],
        "attempts": [{"source": "al2023-core", "kind": "rpm-repo",
                      "url": "https://cdn.amazonlinux.com/al2023/core/mirrors/latest/x86_64/mirror.list",
                      "outcome": "timed out", "millis": 30000}],
        "resolved_at": "2026-11-27T00:00:00Z"
    }))
    .unwrap();
    a.update(Action::Headers(Box::new(resolution)));
    assert_eq!(
        a.status_line,
        format!("headers for {MISSING} are unresolvable")
    );
    let text = screen(&mut a, 140, 12);
    assert!(text.contains("unresolvable, every source tried"), "{text}");
    assert!(
        text.contains("al2023-core (rpm-repo) 30000 ms: timed out"),
        "{text}"
    );
}

#[test]
fn keys_come_from_the_key_map_and_help_follows() {
    let keys = kfleet::tui::app::KeyMap {
        dispatch: 'b',
        confirm: 'o',
        ..Default::default()
    };
    let mut a = app().with_keys(keys);
    key(&mut a, KeyCode::Char('2'));
    key(&mut a, KeyCode::Char('d'));
    assert_eq!(a.mode, Mode::Normal, "d is no longer bound");
    key(&mut a, KeyCode::Char('b'));
    assert!(matches!(a.mode, Mode::Confirm(Pending::Dispatch(_))));
    assert_eq!(key(&mut a, KeyCode::Char('y')), None, "y declines now");
    assert_eq!(a.mode, Mode::Normal);
    key(&mut a, KeyCode::Char('b'));
    assert!(matches!(
        key(&mut a, KeyCode::Char('o')),
        Some(Effect::Dispatch(_))
    ));
    key(&mut a, KeyCode::Char('?'));
    let text = screen(&mut a, 80, 24);
    let line = |what: &str| {
        text.lines()
            .find(|l| l.contains(what))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert!(
        line("dispatch the selected identity").contains("│b dispatch the selected identity"),
        "{text}"
    );
    assert!(line("confirming").contains("Enter o go ahead"), "{text}");
}

/// At most one refresh is under way: asking again while it runs queues one more, which starts
/// when the first ends.
#[test]
fn one_refresh_at_a_time() {
    let mut a = app();
    assert_eq!(key(&mut a, KeyCode::Char('r')), Some(Effect::Refresh));
    assert_eq!(key(&mut a, KeyCode::Char('r')), None);
    assert_eq!(key(&mut a, KeyCode::Char('r')), None);
    let report = app().report;
    assert_eq!(
        a.update(Action::Report(Box::new(report.clone()))),
        Some(Effect::Refresh),
        "the one asked for meanwhile"
    );
    assert_eq!(a.update(Action::Report(Box::new(report))), None);
    assert_eq!(key(&mut a, KeyCode::Char('r')), Some(Effect::Refresh));
    assert_eq!(a.update(Action::RefreshFailed("boom".into())), None);
    assert!(!a.loading);
}

/// Notices from library code (retries, waits, warnings) reach the dashboard's status line
/// through one channel instead of stderr, which would garble the screen.
#[test]
fn notices_go_to_the_status_line_while_the_dashboard_runs() {
    kfleet::notice::install(kfleet::notice::LogFormat::Text);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx = std::sync::Mutex::new(tx);
    kfleet::notice::redirect(Some(Box::new(move |_, message| {
        let _ = tx.lock().unwrap().send(message.to_string());
    })));
    tracing::warn!(target: "kfleet::forge", "waiting 2s for a rate limit");
    kfleet::notice::redirect(None);
    let message = rx.recv().unwrap();
    let mut a = app();
    a.update(Action::Notice(format!("warning: {message}\x1b[2J")));
    assert_eq!(a.status_line, "warning: waiting 2s for a rate limit?[2J");
}

/// The dashboard takes the same flags as `report` and `dispatch` (and KFLEET_HEADER_SOURCES),
/// checked before the terminal is taken over.
#[test]
fn the_dashboard_takes_the_report_and_dispatch_flags() {
    let run = |args: &[&str], env: Option<(&str, &str)>| {
        let mut cmd = assert_cmd::Command::cargo_bin("kfleet").unwrap();
        cmd.env("XDG_CONFIG_HOME", "/nonexistent").args(args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&["tui", "--sources", "/nonexistent/sources.toml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/sources.toml"));
    let out = run(
        &["tui"],
        Some(("KFLEET_HEADER_SOURCES", "/nonexistent/env-sources.toml")),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/env-sources.toml"));
    let out = run(&["tui", "--head-share", "2"], None);
    assert_eq!(out.status.code(), Some(2), "clap checks the share");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a share"));
    let out = run(&["tui", "--asset-template", "{module}.ko"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lacks"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let help = run(&["tui", "--help"], None);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--module",
        "--asset-template",
        "--head-share",
        "--target",
        "--workflow",
        "--ref",
        "--sources",
        "--deadline",
    ] {
        assert!(help.contains(flag), "{flag} in {help}");
    }
}

/// A batch dispatch into an immutable release says why nothing was built, not "nothing new".
#[test]
fn a_refused_batch_says_why() {
    // The overview says so before anyone presses a key.
    let mut report = report();
    report.summary.release_immutable = true;
    let mut standing = App::new("SANDBOX http://127.0.0.1:PORT".into(), report, 900);
    let text = screen(&mut standing, 120, 30);
    assert!(
        text.contains("release v1.1.0 is immutable: build into the next"),
        "{text}"
    );
    let mut a = app();
    let refused = Decision::Refused {
        reason: kfleet::artifacts::immutable_reason("v1.1.0"),
    };
    a.update(Action::Dispatched(vec![
        ("debian/12/x86_64/6.1.0-18-amd64".into(), refused.clone()),
        ("debian/12/x86_64/6.1.0-17-amd64".into(), refused),
    ]));
    assert!(
        a.status_line
            .starts_with("2 identities: 0 dispatched; refused: release v1.1.0 is immutable"),
        "{}",
        a.status_line
    );
}

/// The Headers view plans from the chain the dashboard resolves with (`--sources`), not from
/// the built-in one: what it shows is what Enter would try.
#[test]
fn the_headers_view_plans_from_the_chain_that_resolves() {
    let chain = kfleet::headers::Chain::parse(
        "sources.toml",
        r#"
[[sources]]
family = "amazonlinux"
name = "corp-mirror"
kind = "url"
signed_by = "RPM-GPG-KEY-amazon-linux-{distro_version}"
urls = ["https://mirror.corp.example/{package}-{version}-{release}.{arch}.rpm"]

[[sources]]
family = "amazonlinux"
name = "unkeyed-mirror"
kind = "url"
signed_by = "/nonexistent/RPM-GPG-KEY"
urls = ["https://unkeyed.corp.example/{package}-{version}-{release}.{arch}.rpm"]
"#,
    )
    .unwrap();
    let mut a = app().with_chain(chain);
    key(&mut a, KeyCode::Char('2'));
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::Char('4'));
    let text = screen(&mut a, 140, 16);
    assert!(text.contains("1. corp-mirror (url)"), "{text}");
    assert!(text.contains("https://mirror.corp.example/"), "{text}");
    assert!(!text.contains("al2023-core"), "{text}");
    // A source nothing here can check says so, and lists no request.
    assert!(
        text.contains("cannot be tried: no keyring to check source unkeyed-mirror with: /nonexistent/RPM-GPG-KEY (no such file)"),
        "{text}"
    );
    assert!(!text.contains("https://unkeyed.corp.example/"), "{text}");
}

/// The filter line has a cursor: Left, Right, Home and End (Ctrl-A, Ctrl-E) move it, typing
/// inserts there, Backspace and Delete take the character before and under it, Ctrl-W the word
/// before it, and the footer draws it where it is.
#[test]
fn the_filter_line_edits_at_its_cursor() {
    let mut a = app();
    key(&mut a, KeyCode::Char('/'));
    for c in "ubuntu aws".chars() {
        key(&mut a, KeyCode::Char(c));
    }
    for _ in 0..4 {
        key(&mut a, KeyCode::Left);
    }
    key(&mut a, KeyCode::Char('2'));
    key(&mut a, KeyCode::Char('2'));
    assert_eq!(a.kernels.filter, "ubuntu22 aws");
    let text = screen(&mut a, 100, 12);
    assert!(text.contains("/ubuntu22▏ aws"), "{text}");
    key(&mut a, KeyCode::Backspace);
    assert_eq!(a.kernels.filter, "ubuntu2 aws");
    key(&mut a, KeyCode::Home);
    key(&mut a, KeyCode::Delete);
    assert_eq!(a.kernels.filter, "buntu2 aws");
    key(&mut a, KeyCode::Char('!'));
    assert_eq!(a.kernels.filter, "!buntu2 aws");
    key(&mut a, KeyCode::End);
    key(&mut a, KeyCode::Right);
    key(&mut a, KeyCode::Char('x'));
    assert_eq!(a.kernels.filter, "!buntu2 awsx");
    let ctrl = |c: char| KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL);
    a.update(Action::Key(ctrl('a')));
    for _ in 0..7 {
        key(&mut a, KeyCode::Right);
    }
    a.update(Action::Key(ctrl('w')));
    assert_eq!(a.kernels.filter, " awsx");
    assert_eq!(a.kernels.filter_cursor, 0);
    a.update(Action::Key(ctrl('e')));
    key(&mut a, KeyCode::Char('é'));
    key(&mut a, KeyCode::Left);
    key(&mut a, KeyCode::Backspace);
    assert_eq!(a.kernels.filter, " awsé", "characters, not bytes");
}

/// Kernels nodes have installed but do not run yet show as next-boot demand: the overview says
/// how many would boot without a driver, and the Kernels view shows the count beside the nodes.
#[test]
fn next_boot_demand_shows_in_the_overview_and_the_kernels_view() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("fleet.csv");
    let mut text =
        String::from("distribution,distro_version,architecture,kernel_version,installed_kernels\n");
    for n in 0..4 {
        let installed = if n < 3 { "6.1.0-21-amd64" } else { "" };
        text.push_str(&format!("debian,12,x86_64,6.1.0-18-amd64,{installed}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let fleet = read_inventory(&[csv], false).unwrap();
    let releases = read_release_file(&fixtures.join("small-releases.json")).unwrap();
    let release = select_release(&releases, Some("v1.1.0")).unwrap();
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").unwrap();
    let report = coverage::compute(
        &fleet,
        &index_assets(release, &template),
        &release.tag_name,
        CoverageOptions::default(),
        &BuildStates::new(),
    )
    .unwrap();
    let mut a = App::new("SANDBOX http://127.0.0.1:PORT".into(), report, 900);
    let overview = screen(&mut a, 120, 30);
    assert!(
        overview.contains("next boot: 3 kernels installed, 3 without a driver"),
        "{overview}"
    );
    key(&mut a, KeyCode::Char('2'));
    let kernels = screen(&mut a, 120, 10);
    let line = kernels
        .lines()
        .find(|l| l.contains("6.1.0-21-amd64"))
        .unwrap_or_else(|| panic!("{kernels}"));
    assert!(
        line.contains("0 +3 next") && line.contains("missing"),
        "{line}"
    );
}
