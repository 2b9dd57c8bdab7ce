//! The command line itself: completions and the man page come from the same definition as the
//! parser, and typed flags (durations, shares, percentages) are checked by clap with a clear error.

use assert_cmd::Command;

fn kfleet(args: &[&str]) -> std::process::Output {
    Command::cargo_bin("kfleet")
        .unwrap()
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn completions_and_the_man_page_cover_every_command() {
    let bash = String::from_utf8(kfleet(&["completions", "bash"]).stdout).unwrap();
    for word in [
        "dispatch",
        "ensure",
        "serve",
        "--head-share",
        "--insecure-http",
    ] {
        assert!(bash.contains(word), "{word} in the bash completions");
    }
    let zsh = kfleet(&["completions", "zsh"]);
    assert!(zsh.status.success());
    let man = String::from_utf8(kfleet(&["man"]).stdout).unwrap();
    assert!(man.contains(".TH kfleet 1"), "{man}");
    for word in ["dispatch", "headers", "ensure"] {
        assert!(man.contains(word), "{word} in the man page");
    }
}

#[test]
fn typed_flags_are_checked_by_clap() {
    for (args, says) in [
        (
            &["runs", "--repo", "a/b", "--deadline", "soon"][..],
            "is not a duration",
        ),
        (
            &[
                "dispatch",
                "--identity",
                "a/b/c/d",
                "--dispatch-interval",
                "x",
            ][..],
            "is not a duration",
        ),
        (
            &["report", "-i", "f.csv", "--target", "120"][..],
            "is not a percentage",
        ),
        (
            &["report", "-i", "f.csv", "--head-share", "0"][..],
            "is not a share",
        ),
        (
            &["headers", "resolve", "--cache-ttl", "a day", "a/b/c/d"][..],
            "is not a duration",
        ),
    ] {
        let out = kfleet(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
