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

#[test]
fn starts_shows_help_quits_and_restores_the_terminal() {
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
    cmd.env("XDG_CONFIG_HOME", "/nonexistent");
    cmd.env("XDG_STATE_HOME", state.path());
    cmd.env("TERM", "xterm-256color");
    cmd.env_remove("KFLEET_CONFIG");
    cmd.cwd(state.path());
    let mut child = pty.slave.spawn_command(cmd).unwrap();
    drop(pty.slave);
    let parser = Arc::new(Mutex::new(vt100::Parser::new(30, 100, 0)));
    let mut reader = pty.master.try_clone_reader().unwrap();
    let fed = parser.clone();
    let pump = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            fed.lock().unwrap().process(&buf[..n]);
        }
    });
    let mut term = Terminal {
        parser: parser.clone(),
        writer: pty.master.take_writer().unwrap(),
    };

    // A frame arrives in pieces: wait for its last part before reading the rest.
    let screen = term.wait_for("identity coverage");
    assert!(screen.contains("SANDBOX http://127.0.0.1:"), "{screen}");
    assert!(screen.contains("1 Overview"), "{screen}");
    assert!(screen.contains("identity coverage"), "{screen}");
    assert!(parser.lock().unwrap().screen().alternate_screen());

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
    drop(pty.master);
    let _ = pump.join();
    let screen = parser.lock().unwrap();
    assert!(
        !screen.screen().alternate_screen(),
        "the alternate screen is left"
    );
    assert!(
        !screen.screen().contents().contains("node coverage"),
        "the dashboard is gone: {}",
        screen.screen().contents()
    );
}
