//! The command line itself: completions and the man page come from the same definition as the
//! parser, and typed flags (durations, shares, percentages) are checked by clap with a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

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

/// Output that cannot be written is an error with a reason, never a panic; a reader that stops
/// early (`kfleet report | head`) ends the command quietly with success.
#[test]
fn unwritable_output_is_an_error_and_a_closed_pipe_is_not() {
    let report = [
        "report",
        "-i",
        "sample-data/fleet.csv",
        "--releases",
        "sample-data/releases.json",
        "--format",
        "csv",
    ];
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("kfleet"))
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .args(report)
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: cannot write to standard output: No space left on device"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    for args in [&report[..], &["man"], &["completions", "bash"]] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("kfleet"))
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the first line is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{args:?}: {stderr}"
        );
    }
}

/// A file that cannot be written says so once, with the path, and leaves nothing behind.
#[test]
fn an_unwritable_output_file_is_named_once() {
    let out = kfleet(&[
        "report",
        "-i",
        "sample-data/fleet.csv",
        "--releases",
        "sample-data/releases.json",
        "--output",
        "/nonexistent/dir/coverage.csv",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: cannot write /nonexistent/dir/coverage.csv"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

/// `--log-format json`: notices and the final error are JSON objects, one per line, on stderr.
#[test]
fn log_format_json_writes_notices_and_errors_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kfleet.toml"),
        "api_url = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap();
    let out = Command::cargo_bin("kfleet")
        .unwrap()
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("GITHUB_TOKEN")
        .env_remove("GH_TOKEN")
        .env("PATH", "/nonexistent")
        .args(["--log-format", "json", "runs", "--repo", "acme/kdriver"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["level"], "warn");
    assert_eq!(lines[0]["target"], "kfleet::config");
    assert!(
        lines[0]["message"]
            .as_str()
            .unwrap()
            .contains("ignoring api_url")
    );
    assert_eq!(lines[1]["level"], "error");
    assert!(
        lines[1]["message"]
            .as_str()
            .unwrap()
            .contains("no GitHub token")
    );
    assert!(lines.iter().all(|l| l["time"].as_str().is_some()));
}

/// `--host-root DIR`: the identity of the host whose root is mounted at DIR (its os-release,
/// `etc/` first, then `usr/lib/`), with the kernel the container shares with it.
#[test]
fn identity_local_reads_the_host_root() {
    let own = kfleet(&["identity", "local"]);
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(host.path().join("usr/lib")).unwrap();
    std::fs::copy("/etc/os-release", host.path().join("usr/lib/os-release")).unwrap();
    let dir = host.path().to_str().unwrap();
    let seen = kfleet(&["identity", "local", "--host-root", dir]);
    assert_eq!(seen.status.code(), own.status.code());
    assert_eq!((&seen.stdout, &seen.stderr), (&own.stdout, &own.stderr));

    std::fs::create_dir_all(host.path().join("etc")).unwrap();
    std::fs::write(
        host.path().join("etc/os-release"),
        "ID=ubuntu\nVERSION_ID=\"22.04\"\n",
    )
    .unwrap();
    let ubuntu = kfleet(&["identity", "local", "--host-root", dir]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&ubuntu.stdout),
        String::from_utf8_lossy(&ubuntu.stderr)
    );
    // This machine's kernel with Ubuntu 22.04: a key, or the reason it is no Ubuntu kernel.
    assert!(
        text.starts_with("ubuntu/22.04/") || text.contains("Ubuntu kernel"),
        "etc/os-release wins: {text}"
    );

    let empty = tempfile::tempdir().unwrap();
    let none = kfleet(&[
        "identity",
        "local",
        "--host-root",
        empty.path().to_str().unwrap(),
    ]);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&none.stderr)
            .contains("cannot determine the identity of the host at"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
}

/// `kfleet` with its output piped (cron, CI, `ssh host kfleet`): the dashboard says it needs a
/// terminal and names the command that does not, instead of an OS error number.
#[test]
fn the_dashboard_without_a_terminal_names_the_command_that_needs_none() {
    for args in [&[][..], &["tui"][..]] {
        let out = kfleet(args);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("the dashboard needs a terminal"),
            "{stderr}"
        );
        assert!(stderr.contains("`kfleet report`"), "{stderr}");
        assert!(!stderr.contains("os error"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

/// `--version` names the commit the binary was built from and its date, as `git` sees the
/// checkout the tests run in.
#[test]
fn version_names_the_commit_and_its_date() {
    let out = kfleet(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let (Some(commit), Some(date)) = (
        git(&["rev-parse", "--short=12", "HEAD"]),
        git(&["log", "-1", "--format=%cs"]),
    ) else {
        panic!("the tests run in a git checkout")
    };
    let expected = format!("kfleet {} (commit {commit}", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected), "{text} (HEAD is {commit})");
    assert!(text.trim_end().ends_with(&format!(", {date})")), "{text}");
}

/// `-q`, `-v` and `--log-format json` mean the same for every command: `-q` keeps warnings and
/// errors only, `-v` adds detail (for `report`, every bad row), and with `--log-format json`
/// every line on standard error is a JSON object, bad-row warnings included.
#[test]
fn quiet_verbose_and_json_logs_hold_for_every_line() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-data");
    let fleet = format!("{sample}/fleet.csv");
    let report = |extra: &[&str]| {
        let mut args = vec!["report", "-i", &fleet, "--sandbox", sample];
        args.extend_from_slice(extra);
        let out = kfleet(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (plain_out, plain) = report(&[]);
    assert!(plain.starts_with("SANDBOX http://127.0.0.1:"), "{plain}");
    assert!(plain.contains("warning: skipped bad row"), "{plain}");

    let (quiet_out, quiet) = report(&["-q"]);
    assert_eq!(quiet_out, plain_out, "standard output is the same");
    assert!(!quiet.contains("SANDBOX"), "{quiet}");
    assert!(quiet.lines().all(|l| l.starts_with("warning: ")), "{quiet}");

    let (verbose_out, _) = report(&["-v"]);
    assert!(verbose_out.len() > plain_out.len(), "-v lists more");

    let (_, json) = report(&["--log-format", "json"]);
    assert!(json.lines().count() >= 2, "{json}");
    for line in json.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    assert!(
        json.contains("\"level\":\"warn\"") && json.contains("skipped bad row"),
        "{json}"
    );
    let both = kfleet(&["report", "-q", "-v", "-i", &fleet]);
    assert_eq!(both.status.code(), Some(2), "-q and -v conflict");
}

/// `kfleet man --dir DIR` writes one page per command and subcommand, and the main page names
/// every command's page (`kfleet-report(1)`).
#[test]
fn man_writes_a_page_per_command_and_the_main_page_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = kfleet(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let main = std::fs::read_to_string(dir.path().join("kfleet.1")).unwrap();
    let help = String::from_utf8(kfleet(&["--help"]).stdout).unwrap();
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() > 15, "{commands:?}");
    for command in commands {
        let page = dir.path().join(format!("kfleet-{command}.1"));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{command}");
        assert!(
            main.contains(&format!("kfleet\\-{}(1)", command.replace('-', "\\-"))),
            "the main page names {command}"
        );
    }
    assert!(dir.path().join("kfleet-headers-resolve.1").exists());
}

/// `--json` makes every command print its result as one JSON document: the same as `--format
/// json` where a command has one, and an object for those that print a line (identity,
/// gen-fleet).
#[test]
fn json_is_one_flag_for_every_command() {
    let parse = |out: std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let id = [
        "--distribution",
        "debian",
        "--distro-version",
        "12",
        "--architecture",
        "x86_64",
        "--kernel-version",
        "6.1.0-18-amd64",
    ];
    let mut args = vec!["identity", "check", "--json"];
    args.extend_from_slice(&id);
    let v = parse(kfleet(&args));
    assert_eq!(v["key"], "debian/12/x86_64/6.1.0-18-amd64");
    assert_eq!(v["verdict"], "valid");
    let mut args = vec!["identity", "check", "--json"];
    args.extend_from_slice(&id[..7]);
    args.push("6.1.0-18-arm64");
    let bad = kfleet(&args);
    assert_eq!(bad.status.code(), Some(1));
    let v = parse(bad);
    assert_eq!(v["verdict"], "invalid");
    assert!(v["reason"].as_str().unwrap().contains("arm64"), "{v}");

    let mut args = vec![
        "identity",
        "asset-name",
        "--driver-version",
        "v1.0.0",
        "--json",
    ];
    args.extend_from_slice(&id);
    let v = parse(kfleet(&args));
    assert!(v["asset"].as_str().unwrap().ends_with(".tar.xz"), "{v}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let v = parse(kfleet(&[
        "gen-fleet",
        "--nodes",
        "300",
        "--out",
        out,
        "--json",
    ]));
    assert_eq!(v["nodes"], 300);
    let fleet = v["fleet"].as_str().unwrap().to_string();
    let releases = v["releases"].as_str().unwrap().to_string();
    let as_json = parse(kfleet(&["report", "-i", &fleet, "-r", &releases, "--json"]));
    let as_format = parse(kfleet(&[
        "report", "-i", &fleet, "-r", &releases, "-f", "json",
    ]));
    assert_eq!(as_json, as_format);
}

/// Library errors say what failed; the command line adds which flag changes it, once, for every
/// command that meets the error.
#[test]
fn errors_end_with_the_flag_that_fixes_them() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("kfleet")
        .unwrap()
        .args(["runs", "--repo", "nonsense"])
        .env("HOME", home.path())
        .env("GITHUB_TOKEN", "not-a-real-token")
        .env_remove("KFLEET_REPO")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad repository 'nonsense': expected OWNER/NAME; pass --repo OWNER/NAME"),
        "{stderr}"
    );
    let checkout = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("kfleet")
        .unwrap()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["sandbox", "--runner", "local", "--checkout"])
        .arg(checkout.path())
        .env("HOME", home.path())
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has no .github/workflows/build-driver.yml")
            && stderr.contains("; check --checkout"),
        "{stderr}"
    );
}
