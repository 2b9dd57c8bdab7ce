//! The dashboard in a real terminal: a pseudo-terminal (portable-pty) whose output a terminal
//! emulator (vt100) turns into a screen. It starts on the sample fleet with the sandbox forge,
//! shows SANDBOX and the Overview, opens help, quits, and leaves the terminal restored.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Terminal {
    parser: Arc<Mutex<vt100::Parser>>,
    writer: Box<dyn Write + Send>,
}

impl Terminal {
    fn screen(&self) -> String {
        self.parser.lock().unwrap().screen().contents()
    }

    fn wait_for(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(needle) || started.elapsed() > Duration::from_secs(30) {
                return screen;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn keys(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.writer.flush().unwrap();
        // A lone ESC followed at once by a key reads as Alt+key.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The dashboard started in a 30x100 pseudo-terminal with `env`; the pump also keeps every
/// byte kfleet wrote (escapes the screen does not show, such as OSC 52).
struct Session {
    term: Terminal,
    parser: Arc<Mutex<vt100::Parser>>,
    raw: Arc<Mutex<Vec<u8>>>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    master: Box<dyn portable_pty::MasterPty + Send>,
    pump: std::thread::JoinHandle<()>,
    _state: tempfile::TempDir,
}

fn start(env: &[(&str, &str)]) -> Session {
    start_with(&[], env)
}

/// `kfleet ARGS` in the pseudo-terminal.
fn start_with(args: &[&str], env: &[(&str, &str)]) -> Session {
    let state = tempfile::tempdir().unwrap();
    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 30,
            cols: 100,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_kfleet"));
    cmd.args(args);
    cmd.env("XDG_CONFIG_HOME", "/nonexistent");
    cmd.env("XDG_STATE_HOME", state.path());
    cmd.env("TERM", "xterm-256color");
    cmd.env_remove("KFLEET_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.cwd(state.path());
    let child = pty.slave.spawn_command(cmd).unwrap();
    drop(pty.slave);
    let parser = Arc::new(Mutex::new(vt100::Parser::new(30, 100, 0)));
    let raw = Arc::new(Mutex::new(Vec::new()));
    let mut reader = pty.master.try_clone_reader().unwrap();
    let (fed, kept) = (parser.clone(), raw.clone());
    let pump = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            fed.lock().unwrap().process(&buf[..n]);
            kept.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let term = Terminal {
        parser: parser.clone(),
        writer: pty.master.take_writer().unwrap(),
    };
    Session {
        term,
        parser,
        raw,
        child,
        master: pty.master,
        pump,
        _state: state,
    }
}

#[test]
fn starts_shows_help_quits_and_restores_the_terminal() {
    let Session {
        mut term,
        parser,
        mut child,
        master,
        pump,
        ..
    } = start(&[]);

    // A frame arrives in pieces: wait for its last part before reading the rest.
    let screen = term.wait_for("identity coverage");
    assert!(screen.contains("SANDBOX http://127.0.0.1:"), "{screen}");
    assert!(screen.contains("1 Overview"), "{screen}");
    assert!(screen.contains("identity coverage"), "{screen}");
    assert!(parser.lock().unwrap().screen().alternate_screen());
    assert_ne!(
        parser.lock().unwrap().screen().mouse_protocol_mode(),
        vt100::MouseProtocolMode::None,
        "the wheel and clicks reach the dashboard"
    );

    term.keys(b"?");
    let screen = term.wait_for("keys (any key closes)");
    assert!(screen.contains("dispatch the missing head"), "{screen}");

    term.keys(b"\x1b");
    term.keys(b"q");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "kfleet did not quit: {}",
            term.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    drop(term);
    drop(master);
    let _ = pump.join();
    let screen = parser.lock().unwrap();
    assert!(
        !screen.screen().alternate_screen(),
        "the alternate screen is left"
    );
    assert_eq!(
        screen.screen().mouse_protocol_mode(),
        vt100::MouseProtocolMode::None,
        "the mouse is the terminal's again"
    );
    assert!(
        !screen.screen().contents().contains("node coverage"),
        "the dashboard is gone: {}",
        screen.screen().contents()
    );
}

/// `y` puts the selected identity on the terminal's clipboard with OSC 52 (so it works over
/// SSH); in the Builds view `o` opens the selected run with `$BROWSER`, and `y` copies its URL.
#[test]
fn y_copies_with_osc_52_and_o_opens_the_run_in_the_browser() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let opened = dir.path().join("opened");
    let browser = dir.path().join("browser");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\nprintf '%s' \"$1\" > {}\n", opened.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &browser,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut s = start(&[("BROWSER", browser.to_str().unwrap())]);
    s.term.wait_for("identity coverage");
    s.term.keys(b"2");
    s.term.wait_for("STATUS");
    s.term.keys(b"y");
    let screen = s.term.wait_for("copied ");
    let copied = |raw: &[u8]| -> Option<String> {
        let text = String::from_utf8_lossy(raw);
        let start = text.rfind("\x1b]52;c;")? + 7;
        let end = start + text[start..].find('\x07')?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&text[start..end])
            .ok()?;
        String::from_utf8(bytes).ok()
    };
    let key = copied(&s.raw.lock().unwrap()).unwrap_or_else(|| panic!("no OSC 52: {screen}"));
    assert_eq!(key.split('/').count(), 4, "{key}");
    assert!(screen.contains(&format!("copied {key}")), "{screen}");

    // Dispatch a missing kernel, then open its run.
    s.term.keys(b"/missing\r");
    s.term.wait_for("missing");
    s.term.keys(b"d");
    s.term.wait_for("Enter/y: dispatch");
    s.term.keys(b"\r");
    s.term.wait_for("dispatched run");
    s.term.keys(b"3");
    let screen = s.term.wait_for("jobs and steps");
    s.term.keys(b"o");
    let started = Instant::now();
    while !opened.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not opened: {}",
            s.term.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let url = std::fs::read_to_string(&opened).unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/actions/runs/"),
        "{url}"
    );
    assert!(
        screen.contains(url.split("/actions/runs/").nth(1).unwrap()),
        "{screen}"
    );
    s.term.keys(b"y");
    s.term.wait_for("copied http");
    assert_eq!(
        copied(&s.raw.lock().unwrap()).as_deref(),
        Some(url.as_str())
    );
    s.term.keys(b"q");
    let _ = s.child.wait();
}

/// Long work shows how far it got on a terminal (and nothing when piped: the gen-fleet tests
/// read its output): a big `gen-fleet` draws a progress bar, then clears it, and so does the
/// `report` that reads that fleet.
#[test]
fn gen_fleet_shows_progress_on_a_terminal() {
    let out = tempfile::tempdir().unwrap();
    let mut s = start_with(
        &[
            "gen-fleet",
            "--nodes",
            "1500000",
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[],
    );
    let status = s.child.wait().unwrap();
    assert!(status.success());
    drop(s.master);
    let _ = s.pump.join();
    let raw = String::from_utf8_lossy(&s.raw.lock().unwrap()).into_owned();
    assert!(raw.contains("/1,500,000 nodes"), "{raw}");
    assert!(s.term.screen().contains("wrote "), "{}", s.term.screen());
    assert!(
        !s.term.screen().contains("nodes ETA") && !s.term.screen().contains("█"),
        "cleared: {}",
        s.term.screen()
    );

    // Reading that fleet back takes a moment too: `report` shows how much is read, then
    // clears it before the report.
    let fleet = out.path().join("fleet.csv");
    let releases = out.path().join("releases.json");
    let mut r = start_with(
        &[
            "report",
            "-i",
            fleet.to_str().unwrap(),
            "-r",
            releases.to_str().unwrap(),
        ],
        &[],
    );
    let status = r.child.wait().unwrap();
    assert!(status.success());
    drop(r.master);
    let _ = r.pump.join();
    let raw = String::from_utf8_lossy(&r.raw.lock().unwrap()).into_owned();
    assert!(raw.contains("of the inventory read"), "{raw}");
    assert!(raw.contains("MiB/"), "{raw}");
    assert!(
        !r.term.screen().contains("of the inventory read"),
        "cleared: {}",
        r.term.screen()
    );
}
