//! The HTML report in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs), driven by Selenium from PyPI, opens the report
//! kfleet wrote, measures the bars, the curve and the table at two window widths, sorts the table
//! with the keyboard and the mouse, and takes a screenshot.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at the first surprise

#[path = "support/python.rs"]
mod python;

use assert_cmd::Command;
use serde_json::Value;
use std::cmp::Ordering;
use std::path::Path;

const SELENIUM: [&str; 1] = ["selenium==4.51.0"];

fn kfleet_report(format: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::cargo_bin("kfleet")
        .unwrap()
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .arg("report")
        .arg("-i")
        .arg(root.join("sample-data/fleet.csv"))
        .arg("-r")
        .arg(root.join("sample-data/releases.json"))
        .args(["--format", format])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Orders names as the page's sort does: runs of digits by value, the rest as text.
fn natural(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, run)) if *d == digit => run.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    }
    for (x, y) in chunks(a).iter().zip(chunks(b).iter()) {
        let o = match (x, y) {
            ((true, p), (true, q)) => p.parse::<u64>().unwrap().cmp(&q.parse::<u64>().unwrap()),
            ((_, p), (_, q)) => p.to_lowercase().cmp(&q.to_lowercase()),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

fn numbers(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().replace(',', "").parse().unwrap())
        .collect()
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
        .collect()
}

fn sort_of(v: &Value, column: &str) -> String {
    pairs(v).into_iter().find(|(c, _)| c == column).unwrap().1
}

#[test]
fn the_html_report_reads_and_sorts_in_headless_chromium() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: apt-get install chromium chromium-driver (.ci/run does this)"
        );
    }
    let python = python::venv("selenium", &SELENIUM);
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("coverage.html");
    std::fs::write(&page, kfleet_report("html")).unwrap();
    let summary: Value = serde_json::from_slice(&kfleet_report("json")).unwrap();
    let head = &summary["summary"];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/browser_check.py");

    for width in [1400u32, 700] {
        let shot = dir.path().join(format!("report-{width}.png"));
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg(&page)
            .arg(&shot)
            .arg(width.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
        let viewport = seen["viewport"].as_f64().unwrap();

        // The page's width: the table spans it (less the body's margins), the curve too where the
        // page is narrower than its reading width.
        assert!(
            seen["table_width"].as_f64().unwrap() >= viewport - 60.0,
            "{width}: {seen}"
        );
        let curve = seen["curve_width"].as_f64().unwrap();
        assert!(curve >= (viewport - 60.0).min(1000.0), "{width}: {seen}");

        // Every bar label whole and left of its bar; the bars take the rest of the width.
        let labels = seen["labels"].as_array().unwrap();
        assert_eq!(labels.len(), 12, "{seen}");
        for label in labels {
            assert_eq!(label["cut"], false, "{width}: {label}");
            assert!(
                label["text"].as_str().unwrap().ends_with(" nodes)"),
                "{label}"
            );
            assert!(
                label["right"].as_f64() <= label["track"].as_f64(),
                "{width}: {label}"
            );
            assert!(
                label["track_width"].as_f64().unwrap() >= (viewport - 60.0) * 0.35,
                "{width}: {label}"
            );
        }
        assert!(
            labels
                .iter()
                .any(|l| l["text"] == "amazonlinux aarch64 (102 nodes)"),
            "{seen}"
        );

        // The curve's axes, ticks and the head mark at the report's own head.
        let texts: Vec<&str> = seen["curve_texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        for wanted in [
            "0%",
            "50%",
            "100%",
            "share of nodes",
            "identities, most nodes first",
        ] {
            assert!(texts.contains(&wanted), "{wanted} not in {texts:?}");
        }
        let mark = format!(
            "head: {} identities hold {}% of nodes",
            head["head_identities"],
            (head["head_share"].as_f64().unwrap() * 100.0).round()
        );
        assert!(texts.contains(&mark.as_str()), "{mark} not in {texts:?}");
        assert!(
            texts.contains(&head["identities"].to_string().as_str()),
            "{texts:?}"
        );
        assert_eq!(seen["head_mark"], 1);

        // Sorting: nodes, most first, to begin with; Tab reaches the first header button, Enter
        // sorts names up (naturally), Space turns them down, a click sorts nodes up.
        assert_eq!(sort_of(&seen["sorts_initial"], "nodes"), "descending");
        assert_eq!(sort_of(&seen["sorts_initial"], "identity"), "none");
        assert!(numbers(&seen["nodes_initial"]).is_sorted_by(|a, b| a >= b));
        assert_eq!(seen["tab_reaches"], "identity");
        assert_eq!(sort_of(&seen["sorts_after_enter"], "identity"), "ascending");
        assert_eq!(sort_of(&seen["sorts_after_enter"], "nodes"), "none");
        let names: Vec<&str> = seen["identities_after_enter"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert_eq!(names.len() as u64, head["identities"].as_u64().unwrap());
        assert!(
            names.is_sorted_by(|a, b| natural(a, b) != Ordering::Greater),
            "{names:?}"
        );
        assert_eq!(
            sort_of(&seen["sorts_after_space"], "identity"),
            "descending"
        );
        assert_eq!(sort_of(&seen["sorts_after_click"], "nodes"), "ascending");
        assert!(numbers(&seen["nodes_after_click"]).is_sorted());
        assert_eq!(seen["arrow"], "\" \u{25b2}\"");

        // The screenshot: a PNG of the window's width.
        let png = std::fs::read(&shot).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let png_width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        assert_eq!(png_width, width, "the screenshot is the window");
    }
}
