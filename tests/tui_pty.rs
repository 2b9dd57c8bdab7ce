//! The dashboard in a real terminal (tmux): it starts on the sample fleet with the sandbox forge,
//! shows SANDBOX and the Overview, opens help, quits, and leaves the terminal restored.

use std::process::Command;
use std::time::{Duration, Instant};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is installed (.ci/run installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(session: &str, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let screen = tmux(&["capture-pane", "-t", session, "-p"]);
        if screen.contains(needle) || started.elapsed() > Duration::from_secs(20) {
            return screen;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn starts_shows_help_quits_and_restores_the_terminal() {
    let bin = env!("CARGO_BIN_EXE_kfleet");
    let state = tempfile::tempdir().unwrap();
    let session = format!("kfleet-test-{}", std::process::id());
    let command = format!(
        "XDG_CONFIG_HOME=/nonexistent XDG_STATE_HOME={} {bin}; echo KFLEET-EXITED-$?; sleep 60",
        state.path().display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "100",
        "-y",
        "30",
        &command,
    ]);
    let screen = wait_for(&session, "node coverage");
    assert!(screen.contains("SANDBOX http://127.0.0.1:"), "{screen}");
    assert!(screen.contains("1 Overview"), "{screen}");
    assert!(screen.contains("identity coverage"), "{screen}");

    tmux(&["send-keys", "-t", &session, "?"]);
    let screen = wait_for(&session, "keys (any key closes)");
    assert!(screen.contains("dispatch the missing head"), "{screen}");

    tmux(&["send-keys", "-t", &session, "Escape"]);
    tmux(&["send-keys", "-t", &session, "q"]);
    let screen = wait_for(&session, "KFLEET-EXITED-");
    tmux(&["kill-session", "-t", &session]);
    assert!(screen.contains("KFLEET-EXITED-0"), "{screen}");
    assert!(
        !screen.contains("node coverage"),
        "the alternate screen is gone: {screen}"
    );
}
