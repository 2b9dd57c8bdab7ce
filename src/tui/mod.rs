//! The terminal dashboard: coverage review, one-keystroke dispatch, live runs. Background work
//! runs in tokio tasks that report through one `Action` channel; the UI never waits on the network.

pub mod app;
pub mod keys;
pub mod views;

use crate::app::snapshot::{Snapshot, SnapshotError};
use crate::artifacts::AssetTemplate;
use crate::artifacts::select_release;
use crate::builds::{Decision, Planner};
use crate::coverage::{CoverageOptions, CoverageReport};
use crate::forge::Forge;
use crate::inventory::FleetGroups;
use crate::locks::ReadWrite;
use app::{Action, App, Effect};
use crossterm::event::{Event, EventStream, KeyEventKind};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// What the dashboard works on.
pub struct Dashboard {
    pub forge: Arc<dyn Forge>,
    pub planner: Arc<Planner>,
    /// The fleet coverage is computed on; a kube watch replaces it as nodes change.
    pub fleet: std::sync::RwLock<Arc<FleetGroups>>,
    /// Kube contexts to watch while the dashboard runs (empty: the fleet is fixed).
    pub live: Vec<crate::inventory::kube::KubeSource>,
    /// The Upcoming view reads this many of the fleet's most-run kernel lines.
    pub upcoming_lines: usize,
    /// Check kernels without an artifact against their line's artifacts (kABI), keeping what
    /// is read in this directory.
    pub kabi: Option<std::path::PathBuf>,
    pub template: AssetTemplate,
    pub options: CoverageOptions,
    pub workflow: String,
    pub deadline: Duration,
    /// Release to report on; newest published when `None`.
    pub driver_version: Option<String>,
    /// The header fallback chain, the same one `kfleet headers` uses.
    pub resolver: crate::headers::Resolver,
    /// The inventories the fleet was read from (files, `kube:` contexts): the drill-down to
    /// nodes reads them again.
    pub inventories: Vec<std::path::PathBuf>,
}

/// Nodes the drill-down lists at most (all are counted).
const NODES_LISTED: usize = 200;
/// Lines of a failed job's log the Builds view shows.
const RUN_LOG_LINES: usize = 12;

impl Dashboard {
    /// The release the dashboard reports on, from the forge's current listing.
    async fn release(&self) -> Result<crate::artifacts::Release, SnapshotError> {
        let listing = self.forge.list_releases().await?;
        Ok(select_release(&listing.releases, self.driver_version.as_deref())?.clone())
    }

    /// Coverage against the forge's current release listing, runs and open builds.
    pub async fn report(&self) -> Result<CoverageReport, SnapshotError> {
        let snapshot = Snapshot::read(
            self.forge.as_ref(),
            self.planner.store(),
            &self.workflow,
            self.deadline,
        )
        .await?;
        let release = snapshot.release(self.driver_version.as_deref())?;
        let fleet = self.fleet.read_now().clone();
        let (report, found) = snapshot
            .checked_coverage(
                fleet,
                &release.tag_name,
                crate::artifacts::index_assets(release, &self.template),
                self.options,
                self.planner.clock().now(),
                self.kabi
                    .as_deref()
                    .map(|cache| crate::app::compatible::KabiCheck {
                        resolver: &self.resolver,
                        cache,
                        store: self.forge.artifact_store(),
                    }),
            )
            .await?;
        for note in &found.notes {
            tracing::warn!("kabi: {note}");
        }
        Ok(report)
    }

    /// The kernels the distributions publish on the fleet's most-run lines, newer than the
    /// newest the fleet runs, against the release the dashboard reports on.
    pub async fn upcoming(
        &self,
    ) -> Result<crate::coverage::upcoming::UpcomingReport, SnapshotError> {
        let release = &self.release().await?;
        let fleet = self.fleet.read_now().clone();
        Ok(crate::coverage::upcoming::find(
            &self.resolver,
            &fleet,
            self.upcoming_lines,
            None,
            Some((release, &self.template)),
        )
        .await)
    }

    /// Follows the live fleet: each settled change replaces the fleet and reaches the app as
    /// [`Action::FleetChanged`] (which refreshes coverage); dropped watches and relists reach it
    /// as notices. Ends when `tx` closes.
    pub fn follow_fleet(self: &Arc<Self>, tx: &UnboundedSender<Action>) {
        if self.live.is_empty() {
            return;
        }
        let mut updates = crate::inventory::kube::watch(self.live.clone());
        let (me, tx) = (self.clone(), tx.clone());
        tokio::spawn(async move {
            while let Some(update) = updates.recv().await {
                let action = match update {
                    crate::inventory::kube::WatchUpdate::Fleet {
                        fleet,
                        change,
                        listed,
                    } => {
                        let merged = {
                            let mut slot = me.fleet.write_now();
                            *slot = Arc::new(crate::inventory::kube::merge_watched(
                                &slot, fleet, &listed,
                            ));
                            slot.clone()
                        };
                        let nodes: u64 = merged.groups.iter().map(|g| g.nodes).sum();
                        let change = if change.is_empty() {
                            format!("fleet: {nodes} nodes")
                        } else {
                            format!("fleet: {nodes} nodes ({change})")
                        };
                        Action::FleetChanged(change)
                    }
                    crate::inventory::kube::WatchUpdate::Notice(message) => Action::Notice(message),
                };
                if tx.send(action).is_err() {
                    return;
                }
            }
        });
    }

    /// Plans (or in a dry run previews) the selected rows' keys; a key that is not a valid
    /// identity gets its own decision.
    pub async fn plan(
        &self,
        keys: &[String],
        dry_run: bool,
    ) -> Result<Vec<(String, Decision)>, crate::builds::BuildError> {
        let parsed = crate::builds::parse_keys(keys);
        let ids: Vec<_> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let planned = self.planner.plan_many(&ids, dry_run).await?;
        Ok(crate::builds::merge_decisions(parsed, planned))
    }

    /// Carries out what `App::update` asked for, in the background.
    pub fn effect(self: &Arc<Self>, app: &App, effect: Effect, tx: &UnboundedSender<Action>) {
        let tx = tx.clone();
        let me = self.clone();
        match effect {
            Effect::Quit => {}
            Effect::Refresh => {
                tokio::spawn(async move {
                    let action = match me.report().await {
                        Ok(r) => Action::Report(Box::new(r)),
                        Err(e) => Action::RefreshFailed(e.to_string()),
                    };
                    let _ = tx.send(action);
                });
            }
            Effect::Dispatch(keys) => {
                tokio::spawn(async move {
                    let action = match me.plan(&keys, false).await {
                        Ok(decisions) => Action::Dispatched(decisions),
                        Err(e) => Action::Failed(e.to_string()),
                    };
                    let _ = tx.send(action);
                });
            }
            Effect::Preview(keys) => {
                tokio::spawn(async move {
                    let action = match me.plan(&keys, true).await {
                        Ok(decisions) => Action::Previewed(decisions),
                        Err(e) => Action::Failed(format!("cannot ask the planner: {e}")),
                    };
                    let _ = tx.send(action);
                });
            }
            Effect::Cancel(run_id) => {
                tokio::spawn(async move {
                    let action = match me.forge.cancel_run(run_id).await {
                        Ok(crate::forge::CancelOutcome::Requested) => {
                            Action::Cancelled(format!("cancel requested for run {run_id}"))
                        }
                        Ok(crate::forge::CancelOutcome::AlreadyFinished) => {
                            Action::Cancelled(format!("run {run_id} had already finished"))
                        }
                        Err(e) => Action::Failed(e.to_string()),
                    };
                    let _ = tx.send(action);
                    if let Ok(runs) = me
                        .forge
                        .list_runs(&me.workflow, None, Some(crate::forge::run_history_start()))
                        .await
                    {
                        let _ = tx.send(Action::Runs(runs));
                    }
                });
            }
            Effect::LoadUpcoming => {
                tokio::spawn(async move {
                    let action = match me.upcoming().await {
                        Ok(found) => Action::Upcoming(Box::new(found)),
                        Err(e) => Action::UpcomingFailed(e.to_string()),
                    };
                    let _ = tx.send(action);
                });
            }
            Effect::RunDetail(run_id) => {
                tokio::spawn(async move {
                    let action = match me.forge.list_jobs(run_id).await {
                        Ok(jobs) => {
                            let failed = jobs
                                .iter()
                                .find(|j| j.conclusion == Some(crate::forge::Conclusion::Failure));
                            let log_tail = match failed {
                                Some(job) => {
                                    me.forge.job_log_tail(job.id, RUN_LOG_LINES).await.ok()
                                }
                                None => None,
                            };
                            Action::RunDetail(Box::new(app::RunDetail {
                                run_id,
                                jobs,
                                log_tail,
                            }))
                        }
                        Err(e) => Action::Notice(format!("run {run_id}'s jobs: {e}")),
                    };
                    let _ = tx.send(action);
                });
            }
            Effect::Open(url) => {
                let action = match open_in_browser(&url) {
                    Ok(done) => Action::Notice(done),
                    Err(e) => Action::Failed(e),
                };
                let _ = tx.send(action);
            }
            Effect::Copy(text) => {
                // The event loop writes it to the terminal; elsewhere there is none to write to.
                let _ = tx.send(Action::Notice(format!("no terminal to copy {text} to")));
            }
            Effect::Nodes(key) => {
                tokio::spawn(async move {
                    let paths = me.inventories.clone();
                    let found = tokio::task::spawn_blocking(move || {
                        crate::inventory::nodes_of(&paths, &key, NODES_LISTED)
                    })
                    .await;
                    let action = match found {
                        Ok(Ok(found)) => Action::Nodes(Box::new(found)),
                        Ok(Err(e)) => Action::Failed(e.to_string()),
                        Err(e) => Action::Failed(format!("the node listing stopped: {e}")),
                    };
                    let _ = tx.send(action);
                });
            }
            Effect::ResolveHeaders(key) => {
                tokio::spawn(async move {
                    let action = match crate::identity::KernelIdentity::from_key(&key) {
                        Ok(id) => match me.resolver.resolve(&id).await {
                            Ok(resolution) => Action::Headers(Box::new(resolution)),
                            Err(e) => Action::Failed(e.to_string()),
                        },
                        Err(e) => Action::Failed(format!("{key}: {e}")),
                    };
                    let _ = tx.send(action);
                });
            }
            Effect::Export { rows } => {
                let chosen: Vec<&crate::coverage::IdentityRow> = rows
                    .iter()
                    .filter_map(|&i| app.report.identities.get(i))
                    .collect();
                let path = format!(
                    "kfleet-kernels-{}.csv",
                    chrono::Local::now().format("%Y%m%d-%H%M%S")
                );
                // The CSV is built here (the rows are the app's); the fsync'd write is not.
                let tx = tx.clone();
                match crate::report::identities_csv(&chosen) {
                    Ok(text) => {
                        tokio::task::spawn_blocking(move || {
                            let action = crate::report::write_atomic(
                                std::path::Path::new(&path),
                                text.as_bytes(),
                            )
                            .map(|()| Action::Exported(path))
                            .unwrap_or_else(|e| Action::Failed(e.to_string()));
                            let _ = tx.send(action);
                        });
                    }
                    Err(e) => {
                        let _ = tx.send(Action::Failed(e.to_string()));
                    }
                }
            }
        }
    }
}

/// Puts `text` on the clipboard of the terminal the dashboard draws on, with the OSC 52 escape
/// (xterm, kitty, iTerm2, Windows Terminal, tmux with `set-clipboard on`): it works over SSH,
/// where no local clipboard tool could reach the user's machine.
fn copy_to_clipboard(out: &mut impl std::io::Write, text: &str) -> std::io::Result<()> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    write!(out, "\x1b]52;c;{encoded}\x07")?;
    out.flush()
}

/// Opens `url` in the user's browser (`$BROWSER`, else `xdg-open`) without a shell; only a
/// URL kfleet would fetch itself (https, or http on loopback) is handed over.
fn open_in_browser(url: &str) -> Result<String, String> {
    crate::net::check_transport(url, false).map_err(|e| format!("not opening {url}: {e}"))?;
    let browser =
        crate::environment::var(crate::environment::BROWSER).unwrap_or_else(|| "xdg-open".into());
    let mut child = std::process::Command::new(&browser)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {browser} to open {url}: {e} (set BROWSER)"))?;
    // Reaped when it exits, so no zombie is left behind.
    std::thread::spawn(move || child.wait());
    Ok(format!("opened {url} with {browser}"))
}

/// Restores the terminal however the dashboard ends (ratatui's panic hook covers panics).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableMouseCapture);
        ratatui::restore();
    }
}

/// Sends notices back to stderr when the dashboard ends.
struct NoticesToStderr;

impl Drop for NoticesToStderr {
    fn drop(&mut self) {
        crate::notice::redirect(None);
    }
}

/// Runs the dashboard until the user quits.
pub async fn run(dash: Arc<Dashboard>, mut app: App) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let _guard = TerminalGuard;
    // The wheel scrolls and a click selects (the terminal's own selection takes Shift).
    crossterm::execute!(std::io::stdout(), crossterm::event::EnableMouseCapture)?;
    let theme = views::Theme::from_env();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Action>();
    // Notices from background work show in the status line, never on the screen's raw stderr.
    let notices = tx.clone();
    crate::notice::redirect(Some(Box::new(move |level, message| {
        let text = match level {
            tracing::Level::ERROR => format!("error: {message}"),
            tracing::Level::WARN => format!("warning: {message}"),
            _ => message.to_string(),
        };
        let _ = notices.send(Action::Notice(text));
    })));
    let _notices_back = NoticesToStderr;
    dash.follow_fleet(&tx);
    let mut events = EventStream::new();
    let mut render = tokio::time::interval(Duration::from_millis(250));
    let mut poll_runs = tokio::time::interval(Duration::from_secs(5));
    // Drawn when something changed (a key, a result) and on the render tick (elapsed times).
    let mut dirty = true;
    loop {
        if std::mem::take(&mut dirty) {
            app.now = dash.planner.clock().now();
            terminal.draw(|frame| views::render(&mut app, frame, &theme))?;
        }
        let effect = tokio::select! {
            event = events.next() => {
                // A key or a resize: draw again.
                dirty = true;
                match event {
                    Some(Ok(Event::Key(key))) if key.kind == KeyEventKind::Press => app.update(Action::Key(key)),
                    Some(Ok(Event::Mouse(mouse))) => app.update(Action::Mouse(mouse)),
                    Some(Ok(_)) => None,
                    Some(Err(e)) => return Err(e),
                    None => Some(Effect::Quit),
                }
            }
            Some(action) = rx.recv() => {
                dirty = true;
                app.update(action)
            }
            _ = poll_runs.tick() => {
                let (tx, me) = (tx.clone(), dash.clone());
                tokio::spawn(async move {
                    // Conditional listing and run polls; a failure leaves the last runs on screen.
                    match me.forge.list_runs(&me.workflow, None, Some(crate::forge::run_history_start())).await {
                        Ok(runs) => { let _ = tx.send(Action::Runs(runs)); }
                        Err(e) => { let _ = tx.send(Action::Failed(e.to_string())); }
                    }
                });
                None
            }
            _ = render.tick() => {
                dirty = true;
                None
            }
        };
        match effect {
            Some(Effect::Quit) => return Ok(()),
            Some(Effect::Copy(text)) => copy_to_clipboard(terminal.backend_mut(), &text)?,
            Some(effect) => dash.effect(&app, effect, &tx),
            None => {}
        }
    }
}
