//! `kfleet report` end to end: the counts, shapes and exit codes a user sees.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample-data")
        .join(name)
}

fn kfleet() -> Command {
    let mut cmd = Command::cargo_bin("kfleet").expect("binary is built");
    // Keep a developer's own config out of the tests.
    cmd.env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("KFLEET_MODULE");
    cmd
}

/// Runs `cmd`, asserts it succeeded (showing its stderr if not) and returns its stdout.
fn stdout_of(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn small_report(extra: &[&str]) -> Value {
    serde_json::from_str(&fixture_report("json", extra)).unwrap()
}

#[test]
fn small_fleet_counts_statuses_head_and_plan() {
    let r = small_report(&[]);
    let s = &r["summary"];
    assert_eq!(
        s["driver_version"], "v1.1.0",
        "newest published, not draft or prerelease"
    );
    assert_eq!(s["nodes"], 100);
    assert_eq!(s["identities"], 8);
    assert_eq!(s["covered_nodes"], 65);
    assert_eq!(s["node_coverage_pct"], 65.0);
    assert_eq!(s["identity_coverage_pct"], 25.0);
    assert_eq!(s["head_identities"], 4);
    assert_eq!(s["bad_rows"], 2);
    assert_eq!(s["artifacts"], 3);
    assert_eq!(s["unused_artifacts"], 1);
    assert_eq!(s["unrecognised_assets"], 2);
    let st = &s["statuses"];
    for (status, ids, nodes) in [
        ("covered", 2, 65),
        ("missing", 2, 26),
        ("long-tail", 2, 6),
        ("unsupported", 1, 2),
        ("invalid", 1, 1),
    ] {
        assert_eq!(st[status]["identities"], ids, "{status}");
        assert_eq!(st[status]["nodes"], nodes, "{status}");
    }
    let plan = &s["batch_plan"];
    assert_eq!(plan["builds"], 4);
    assert_eq!(
        plan["reachable"], false,
        "3 nodes are unsupported or invalid"
    );
    assert_eq!(plan["node_coverage_after_pct"], 97.0);

    let ids = r["identities"].as_array().unwrap();
    let keyed: Vec<(&str, u64, &str)> = ids
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap(),
                i["nodes"].as_u64().unwrap(),
                i["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keyed[..6],
        [
            ("ubuntu/22.04/x86_64/5.15.0-91-generic", 50, "covered"),
            (
                "amazonlinux/2023/x86_64/6.1.66-91.160.amzn2023.x86_64",
                20,
                "missing"
            ),
            ("debian/12/x86_64/6.1.0-18-amd64", 15, "covered"),
            ("fedora/40/aarch64/6.8.9-300.fc40.aarch64", 6, "missing"),
            ("centos/9/x86_64/5.14.0-362.el9.x86_64", 4, "long-tail"),
            (
                "almalinux/9.4/x86_64/5.14.0-427.13.1.el9_4.x86_64",
                2,
                "long-tail"
            ),
        ],
        "aliases (os, arch=amd64) merge into one identity; sorted by nodes then key"
    );
    let invalid = ids.iter().find(|i| i["status"] == "invalid").unwrap();
    assert_eq!(
        invalid["reason"],
        "fc38 in kernel_version but distro_version is 39"
    );
}

#[test]
fn lower_target_needs_fewer_builds() {
    let r = small_report(&["--target", "90"]);
    let plan = &r["summary"]["batch_plan"];
    assert_eq!(plan["builds"], 2);
    assert_eq!(plan["reachable"], true);
    assert_eq!(
        plan["identities"],
        serde_json::json!([
            "amazonlinux/2023/x86_64/6.1.66-91.160.amzn2023.x86_64",
            "fedora/40/aarch64/6.8.9-300.fc40.aarch64"
        ])
    );
}

#[test]
fn head_share_moves_the_long_tail_boundary() {
    let r = small_report(&["--head-share", "0.5"]);
    let st = &r["summary"]["statuses"];
    assert_eq!(r["summary"]["head_identities"], 1);
    assert_eq!(st["missing"]["identities"], 0);
    assert_eq!(st["long-tail"]["identities"], 4);
}

#[test]
fn older_release_by_tag_and_unknown_tag() {
    let r = small_report(&["--driver-version", "v1.0.0"]);
    assert_eq!(r["summary"]["covered_nodes"], 50);
    kfleet()
        .arg("report")
        .arg("-i")
        .arg(fixture("small-fleet.csv"))
        .arg("-r")
        .arg(fixture("small-releases.json"))
        .args(["--driver-version", "v9"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no release tagged 'v9'"))
        .stderr(predicate::str::contains("v1.1.0, v1.0.0"));
}

/// Only a prerelease: the library says what is missing, the command line which flag picks one.
#[test]
fn only_a_prerelease_names_the_flag_that_picks_it() {
    let dir = tempfile::tempdir().unwrap();
    let releases = dir.path().join("releases.json");
    std::fs::write(
        &releases,
        r#"[{"id": 1, "tag_name": "v2.0.0-rc.1", "draft": false, "prerelease": true, "assets": []}]"#,
    )
    .unwrap();
    kfleet()
        .arg("report")
        .arg("-i")
        .arg(fixture("small-fleet.csv"))
        .arg("-r")
        .arg(&releases)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "no published release that is neither draft nor prerelease (of 1); pass --driver-version TAG to pick one",
        ));
}

#[test]
fn csv_shape_and_status_filter() {
    let out = kfleet()
        .arg("report")
        .arg("-i")
        .arg(fixture("small-fleet.csv"))
        .arg("-r")
        .arg(fixture("small-releases.json"))
        .args(["--format", "csv", "--status", "missing,long-tail"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "distribution,distro_version,architecture,kernel_version,nodes,status,reason,asset"
    );
    assert_eq!(
        lines[1],
        "amazonlinux,2023,x86_64,6.1.66-91.160.amzn2023.x86_64,20,missing,,"
    );
    assert_eq!(lines.len(), 5);
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains(",missing,") || l.contains(",long-tail,"))
    );
}

#[test]
fn fail_under_exit_codes() {
    let base = |pct: &str| {
        let mut c = kfleet();
        c.arg("report")
            .arg("-i")
            .arg(fixture("small-fleet.csv"))
            .arg("-r")
            .arg(fixture("small-releases.json"))
            .args(["--fail-under", pct]);
        c
    };
    base("70").assert().code(2).stderr(predicate::str::contains(
        "node coverage 65% is below --fail-under 70%",
    ));
    base("65").assert().code(0);
}

#[test]
fn bad_rows_are_reported_with_file_and_line_and_strict_fails() {
    let file = fixture("small-fleet.csv");
    kfleet()
        .arg("report")
        .arg("-i")
        .arg(&file)
        .arg("-r")
        .arg(fixture("small-releases.json"))
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "{}:12: kernel_version is empty",
            file.display()
        )))
        .stderr(predicate::str::contains(format!(
            "{}:43: architecture is empty",
            file.display()
        )));
    kfleet()
        .arg("report")
        .arg("-i")
        .arg(&file)
        .arg("-r")
        .arg(fixture("small-releases.json"))
        .arg("--strict")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "2 bad inventory row(s) in a strict read",
        ))
        // The command line names the flag; the library's error does not.
        .stderr(predicate::str::contains(
            "; --strict refuses any bad row; without it bad rows are counted and skipped",
        ));
}

#[test]
fn ragged_and_non_utf8_rows_fall_back_to_exact_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ragged.csv");
    let mut bytes = b"node,distribution,distro_version,architecture,kernel_version\n\
a,ubuntu,22.04,x86_64,5.15.0-91-generic\n\
b,ubuntu,22.04,x86_64,5.15.0-91-generic,extra\n\
c,ubuntu,22.04,x86_64,5.15.0-91-generic\n"
        .to_vec();
    bytes.extend_from_slice(b"d,ubuntu,22.04,x86_64,5.15.0-\xff-generic\n");
    std::fs::write(&path, bytes).unwrap();
    let out = kfleet()
        .arg("report")
        .arg("-i")
        .arg(&path)
        .arg("-r")
        .arg(fixture("small-releases.json"))
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ragged.csv:3: has 6 fields but the header has 5"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ragged.csv:5: kernel_version is not valid UTF-8"),
        "{stderr}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["summary"]["nodes"], 2);
    assert_eq!(r["summary"]["bad_rows"], 2);
}

#[test]
fn missing_column_names_the_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nokernel.csv");
    std::fs::write(&path, "node,os,version,arch\na,ubuntu,22.04,x86_64\n").unwrap();
    kfleet()
        .arg("report")
        .arg("-i")
        .arg(&path)
        .arg("-r")
        .arg(fixture("small-releases.json"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "no kernel_version column (looked for kernel_version|kernel|kernel_release|uname_r)",
        ));
}

#[test]
fn node_list_gzip_and_jsonl_inputs_merge() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("fleet.csv.gz");
    {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(&std::fs::read(fixture("small-fleet.csv")).unwrap())
            .unwrap();
        enc.finish().unwrap();
    }
    let jsonl = dir.path().join("extra.jsonl");
    std::fs::write(
        &jsonl,
        "{\"node\":\"x1\",\"distribution\":\"fedora\",\"distro_version\":\"40\",\"architecture\":\"arm64\",\"kernel_version\":\"6.8.9-300.fc40.aarch64\"}\n\
         not json\n\
         {\"ID\":\"ubuntu\",\"VERSION_ID\":\"22.04\",\"uname_m\":\"x86_64\"}\n",
    )
    .unwrap();
    let out = kfleet()
        .arg("report")
        .arg("-i")
        .arg(&gz)
        .arg("-i")
        .arg(sample("nodes.json"))
        .arg("-i")
        .arg(&jsonl)
        .arg("-r")
        .arg(fixture("small-releases.json"))
        .args(["--format", "json", "--verbose"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("extra.jsonl:2: not valid JSON"), "{stderr}");
    assert!(
        stderr.contains("extra.jsonl:3: kernel_version is missing or empty"),
        "{stderr}"
    );
    assert!(
        stderr.contains("nodes.json: items[38] (node ip-10-0-9-99.ec2.internal): status.nodeInfo.kernelVersion is missing"),
        "{stderr}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["summary"]["nodes"], 100 + 38 + 1);
    assert_eq!(r["summary"]["bad_rows"], 2 + 1 + 2);
    let ids = r["identities"].as_array().unwrap();
    let find = |key: &str| {
        ids.iter()
            .find(|i| i["key"] == key)
            .unwrap_or_else(|| panic!("{key}"))
    };
    assert_eq!(
        find("fedora/40/aarch64/6.8.9-300.fc40.aarch64")["nodes"],
        6 + 1
    );
    assert_eq!(find("ubuntu/22.04/aarch64/5.15.0-1034-aws")["nodes"], 4);
    assert_eq!(
        find("amazonlinux/2/x86_64/5.10.205-195.807.amzn2.x86_64")["nodes"],
        6
    );
    let bottlerocket = find("bottlerocket/1.26.1/x86_64/6.1.112");
    assert_eq!(bottlerocket["status"], "unsupported");
    assert_eq!(bottlerocket["nodes"], 3);
    assert!(
        bottlerocket["reason"]
            .as_str()
            .unwrap()
            .starts_with("Bottlerocket OS 1.26.1 (aws-k8s-1.31): "),
        "{bottlerocket}"
    );
}

#[test]
fn unused_artifacts_and_atomic_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("unused.csv");
    kfleet()
        .arg("report")
        .arg("-i")
        .arg(fixture("small-fleet.csv"))
        .arg("-r")
        .arg(fixture("small-releases.json"))
        .args(["--unused", "--format", "csv", "-o"])
        .arg(&out)
        .assert()
        .success()
        .stdout("");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text,
        "asset,key,url,digest\n\
kdriver-v1.1.0-ubuntu-22.04-x86_64-5.15.0-92-generic.tar.xz,ubuntu/22.04/x86_64/5.15.0-92-generic,\
https://github.com/acme/kdriver/releases/download/v1.1.0/kdriver-v1.1.0-ubuntu-22.04-x86_64-5.15.0-92-generic.tar.xz,\
sha256:00000000000000000000000000000000000000000000000000000000000000ca\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temp files left: {leftovers:?}");
}

/// `kfleet report` of the fixture fleet against the fixture releases in `format`.
/// The JSON report is written as it is serialised, to standard output or to `-o FILE`
/// (atomically): both are the same document, ending in a newline, and a file that cannot be
/// written is named.
#[test]
fn the_json_report_streams_to_stdout_and_to_a_file_alike() {
    let printed = fixture_report("json", &[]);
    assert!(printed.ends_with("}\n"), "{printed}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("coverage.json");
    let to_file = fixture_report("json", &["-o", out.to_str().unwrap()]);
    assert_eq!(to_file, "");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), printed);
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 1, "no temp files left");
    let failed = fixture_report_cmd("json", &["-o", "/nonexistent/dir/coverage.json"])
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&failed.stderr)
            .contains("cannot write /nonexistent/dir/coverage.json"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
}

/// `kfleet report` of the small fixture fleet and releases in `format`.
fn fixture_report_cmd(format: &str, extra: &[&str]) -> Command {
    let mut cmd = kfleet();
    cmd.arg("report")
        .arg("-i")
        .arg(fixture("small-fleet.csv"))
        .arg("-r")
        .arg(fixture("small-releases.json"))
        .args(["--format", format])
        .args(extra);
    cmd
}

fn fixture_report(format: &str, extra: &[&str]) -> String {
    String::from_utf8(stdout_of(&mut fixture_report_cmd(format, extra))).unwrap()
}

#[test]
fn table_and_markdown_read_like_a_report() {
    let run = |format: &str| fixture_report(format, &["--verbose"]);
    let table = run("table");
    assert!(table.contains("node coverage 65%"), "{table}");
    assert!(
        table.contains("head: 4 identities hold 90% of the nodes"),
        "{table}"
    );
    assert!(
        table.contains("batch plan to 99%: 4 build(s) lift node coverage to 97%"),
        "{table}"
    );
    assert!(
        table.contains("SHA256SUMS: does not follow the naming template"),
        "{table}"
    );
    assert!(
        table.contains("names driver version v1.0.0 but belongs to release v1.1.0"),
        "{table}"
    );
    let md = run("markdown");
    assert!(md.starts_with("## kfleet coverage: driver v1.1.0"), "{md}");
    assert!(md.contains("| 100 | 8 | **65%** | 25% | 1 | 2 |"), "{md}");
    assert!(
        md.contains("| amazonlinux/2023/x86\\_64/6.1.66-91.160.amzn2023.x86\\_64 | 20 | missing |"),
        "{md}"
    );
    // Mermaid charts GitHub renders, above the tables: coverage per distribution and
    // architecture, and the head/tail curve (50% of the nodes on the most-run identity).
    let charts = md.split("| status |").next().unwrap();
    assert_eq!(
        charts.matches("```mermaid\nxychart-beta").count(),
        2,
        "{md}"
    );
    assert!(
        charts.contains("x-axis [\"ubuntu x86_64\", \"amazonlinux x86_64\", \"debian x86_64\""),
        "{md}"
    );
    assert!(charts.contains("bar [100, 0, 100, 0, 0, 0, 0, 0]"), "{md}");
    assert!(
        charts.contains("line [50, 70, 85, 91, 95, 97, 99, 100]"),
        "{md}"
    );
}

#[test]
fn malformed_release_listing_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("releases.json");
    std::fs::write(&path, "[{\"tag_name\": \"v1\", \"assets\": [}]").unwrap();
    kfleet()
        .arg("report")
        .arg("-i")
        .arg(fixture("small-fleet.csv"))
        .arg("-r")
        .arg(&path)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("releases.json:1:"))
        .stderr(predicate::str::contains("not a GitHub release listing"));
}

#[test]
fn bad_row_lines_stay_exact_with_blank_lines_and_quoted_newlines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quoted.csv");
    std::fs::write(
        &path,
        "node,distribution,distro_version,architecture,kernel_version\n\
\"a\nb\",ubuntu,22.04,x86_64,5.15.0-91-generic\n\
\n\
c,ubuntu,22.04,x86_64,5.15.0-91-generic\n\
d,ubuntu,22.04,,5.15.0-91-generic\n",
    )
    .unwrap();
    let out = kfleet()
        .arg("report")
        .arg("-i")
        .arg(&path)
        .arg("-r")
        .arg(fixture("small-releases.json"))
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("quoted.csv:6: architecture is empty"),
        "{stderr}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["summary"]["nodes"], 2);
}

/// A long tail is sampled: the curve has at most 20 points, from the most-run identity to the
/// last, and ends at 100% of the nodes.
#[test]
fn the_markdown_head_tail_curve_samples_a_long_fleet() {
    let out = kfleet()
        .args([
            "report",
            "-i",
            "sample-data/fleet.csv",
            "-r",
            "sample-data/releases.json",
        ])
        .args(["--format", "markdown"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let md = String::from_utf8(out.stdout).unwrap();
    let axis = md
        .lines()
        .find(|l| l.contains("x-axis \"identities, most nodes first\""))
        .unwrap();
    let ranks: Vec<&str> = axis
        .split('[')
        .nth(1)
        .unwrap()
        .trim_end_matches(']')
        .split(", ")
        .collect();
    assert_eq!(ranks.len(), 20, "{axis}");
    assert_eq!(ranks[0], "\"1\"");
    let line = md
        .lines()
        .find(|l| l.trim_start().starts_with("line ["))
        .unwrap();
    assert!(line.ends_with(", 100]"), "{line}");
    let identities: usize = md
        .lines()
        .nth(4)
        .and_then(|l| l.split('|').nth(2))
        .map(|n| n.trim().replace(',', "").parse().unwrap())
        .unwrap();
    assert_eq!(ranks[19], format!("\"{identities}\""), "{axis}");
}

/// The Markdown and HTML reports of the fixture fleet, as a reviewer reads them: Mermaid charts
/// above the tables; one self-contained HTML file (inline SVG, inline styles and sorting script,
/// nothing fetched from elsewhere).
#[test]
fn markdown_and_html_reports_snapshot() {
    let run = |format: &str| fixture_report(format, &[]);
    insta::assert_snapshot!("report-markdown", run("markdown"));
    let html = run("html");
    for external in ["src=\"http", "href=\"http", "<link", "@import", "url("] {
        assert!(
            !html.contains(external),
            "{external} in a self-contained file"
        );
    }
    assert_eq!(html.matches("<svg").count(), 1);
    assert_eq!(html.matches("class=\"bars\"").count(), 1);
    assert!(html.contains("<table id=\"identities\">"));
    insta::assert_snapshot!("report-html", html);
}

/// A Parquet inventory (detected by its magic bytes) gives the same report as the same fleet in
/// CSV, mixes with CSV inventories, and a Parquet file without an identity column says which
/// columns it has.
#[test]
fn parquet_inventories_report_like_their_csv() {
    let dir = tempfile::tempdir().unwrap();
    let (pq, csv) = (dir.path().join("pq"), dir.path().join("csv"));
    for (out, format) in [(&pq, "parquet"), (&csv, "csv")] {
        stdout_of(
            kfleet()
                .args(["gen-fleet", "--nodes", "20000", "--format", format, "--out"])
                .arg(out),
        );
    }
    assert_eq!(
        &std::fs::read(pq.join("fleet.parquet")).unwrap()[..4],
        b"PAR1"
    );
    assert!(!pq.join("fleet.csv").exists());
    let json = |inventories: &[&Path]| -> serde_json::Value {
        let mut cmd = kfleet();
        cmd.arg("report");
        for i in inventories {
            cmd.arg("-i").arg(i);
        }
        let out = stdout_of(
            cmd.arg("-r")
                .arg(csv.join("releases.json"))
                .args(["--format", "json"]),
        );
        serde_json::from_slice(&out).unwrap()
    };
    let from_parquet = json(&[&pq.join("fleet.parquet")]);
    let from_csv = json(&[&csv.join("fleet.csv")]);
    assert_eq!(from_parquet["identities"], from_csv["identities"]);
    assert_eq!(
        from_parquet["summary"]["nodes"],
        from_csv["summary"]["nodes"]
    );
    assert_eq!(
        from_parquet["summary"]["bad_rows"],
        from_csv["summary"]["bad_rows"]
    );
    let both = json(&[&pq.join("fleet.parquet"), &csv.join("fleet.csv")]);
    assert_eq!(
        both["summary"]["nodes"].as_u64().unwrap(),
        2 * from_csv["summary"]["nodes"].as_u64().unwrap()
    );

    // Another lake table: other column names, no kernel column.
    use polars::prelude::*;
    let mut frame = df!(
        "node" => ["a", "b"],
        "os" => ["ubuntu", "ubuntu"],
        "version_id" => ["22.04", "22.04"],
        "arch" => ["x86_64", "x86_64"],
    )
    .unwrap();
    let bad = dir.path().join("no-kernel.parquet");
    ParquetWriter::new(std::fs::File::create(&bad).unwrap())
        .finish(&mut frame)
        .unwrap();
    let out = kfleet()
        .arg("report")
        .arg("-i")
        .arg(&bad)
        .arg("-r")
        .arg(csv.join("releases.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kernel_version"), "{stderr}");
    assert!(stderr.contains("node, os, version_id, arch"), "{stderr}");
}

/// A Parquet footer that claims billions of rows in a few kilobytes is refused with a clear error
/// naming the file, before anything is sized from it (run under a 4 GiB address-space limit).
#[test]
fn a_parquet_footer_that_lies_about_its_rows_is_refused() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let rows = 12345;
    let mut frame = df!(
        "distribution" => vec!["ubuntu"; rows],
        "distro_version" => vec!["22.04"; rows],
        "architecture" => vec!["x86_64"; rows],
        "kernel_version" => vec!["5.15.0-91-generic"; rows],
    )
    .unwrap();
    let honest = dir.path().join("honest.parquet");
    ParquetWriter::new(std::fs::File::create(&honest).unwrap())
        .finish(&mut frame)
        .unwrap();
    // The footer's row counts (the file's, the row group's, each column's values) are thrift
    // compact i64 fields with a field delta of 1: 0x16, then the zigzag varint.
    let varint = |mut v: u64| {
        let mut out = vec![0x16u8];
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    };
    let bytes = std::fs::read(&honest).unwrap();
    let footer_len =
        u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap()) as usize;
    let footer_at = bytes.len() - 8 - footer_len;
    let (from, to) = (varint(2 * rows as u64), varint(2 * (1u64 << 33)));
    let mut footer = Vec::new();
    let mut rest = &bytes[footer_at..bytes.len() - 8];
    let mut replaced = 0;
    while !rest.is_empty() {
        if rest.starts_with(&from) {
            footer.extend_from_slice(&to);
            rest = &rest[from.len()..];
            replaced += 1;
        } else {
            footer.push(rest[0]);
            rest = &rest[1..];
        }
    }
    assert!(replaced >= 3, "{replaced}");
    let mut lying = bytes[..footer_at].to_vec();
    lying.extend_from_slice(&footer);
    lying.extend_from_slice(&(footer.len() as u32).to_le_bytes());
    lying.extend_from_slice(b"PAR1");
    let bad = dir.path().join("lying.parquet");
    std::fs::write(&bad, &lying).unwrap();
    assert!(lying.len() < 16 << 10);
    let releases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small-releases.json");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -v 4194304; exec \"$@\"")
        .arg("kfleet")
        .arg(env!("CARGO_BIN_EXE_kfleet"))
        .args(["report", "-i"])
        .arg(&bad)
        .arg("-r")
        .arg(&releases)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lying.parquet"), "{stderr}");
    assert!(stderr.contains("declares 8589934592 rows"), "{stderr}");

    // The honest file reads under the same limit.
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -v 4194304; exec \"$@\"")
        .arg("kfleet")
        .arg(env!("CARGO_BIN_EXE_kfleet"))
        .args(["report", "--format", "json", "-i"])
        .arg(&honest)
        .arg("-r")
        .arg(&releases)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["nodes"], 12345);
}

/// A report on an immutable release with kernels missing says they cannot be built into it.
#[test]
fn a_report_on_an_immutable_release_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut releases =
        kfleet::forge::read_release_file(&fixtures.join("small-releases.json")).unwrap();
    for r in &mut releases {
        r.immutable = true;
    }
    let file = dir.path().join("releases.json");
    std::fs::write(&file, serde_json::to_string(&releases).unwrap()).unwrap();
    let out = kfleet()
        .args(["report", "-i"])
        .arg(fixtures.join("small-fleet.csv"))
        .arg("-r")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is immutable") && stderr.contains("draft"),
        "{stderr}"
    );
    // The report itself says it beside the batch plan, and the JSON summary carries it.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let plan = stdout
        .lines()
        .find(|l| l.contains("batch plan"))
        .unwrap_or_default();
    assert!(
        plan.contains("; but release v1.1.0 is immutable"),
        "{stdout}"
    );
    let json = kfleet()
        .args(["report", "--format", "json", "-i"])
        .arg(fixtures.join("small-fleet.csv"))
        .arg("-r")
        .arg(&file)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["summary"]["release_immutable"], true);
}

/// With more distribution and architecture pairs than the chart holds, the Markdown chart is
/// horizontal (one label per line, readable at 12 bars) and says how many more the table has.
#[test]
fn a_markdown_chart_of_many_pairs_stays_readable() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data");
    let out = kfleet()
        .args(["report", "-f", "markdown", "-i"])
        .arg(sample.join("fleet.csv"))
        .arg("-r")
        .arg(sample.join("releases.json"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let md = String::from_utf8(out.stdout).unwrap();
    let json = kfleet()
        .args(["report", "-f", "json", "-i"])
        .arg(sample.join("fleet.csv"))
        .arg("-r")
        .arg(sample.join("releases.json"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let pairs = v["summary"]["breakdown"].as_array().unwrap().len();
    assert!(pairs > 12, "{pairs}");
    let chart = md.split("```mermaid\n").nth(1).unwrap();
    assert!(chart.starts_with("xychart-beta horizontal"), "{chart}");
    assert_eq!(
        chart
            .split("x-axis [")
            .nth(1)
            .unwrap()
            .split("]")
            .next()
            .unwrap()
            .matches("\", \"")
            .count(),
        11
    );
    assert!(
        md.contains(&format!(
            "+{} more distribution and architecture pairs in the table below.",
            pairs - 12
        )),
        "{md}"
    );
}

/// Nodes that say which kernels they have installed (a CSV column, a JSON Lines field, a
/// NodeList annotation) make those kernels next-boot demand: a kernel no node runs yet but some
/// will boot into is `missing` (never long tail, so `dispatch --missing` builds it before the
/// reboot), one with an artifact is covered, and node coverage still counts running nodes only.
#[test]
fn installed_kernels_are_next_boot_demand_in_every_inventory_format() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("fleet.csv");
    let mut text = String::from("hostname,os,version,arch,kernel,installed_kernels\n");
    // Twenty nodes on one kernel make every other identity tail by node count.
    for n in 0..20 {
        let installed = match n {
            // The running kernel listed too, separators of every kind, a repeat.
            0 => "\"6.1.0-18-amd64;6.1.0-21-amd64, 6.1.0-21-amd64\"",
            1 => "6.1.0-21-amd64",
            _ => "",
        };
        text.push_str(&format!(
            "n{n},debian,12,x86_64,6.1.0-18-amd64,{installed}\n"
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let jsonl = dir.path().join("fleet.jsonl");
    std::fs::write(
        &jsonl,
        "{\"os\":\"ubuntu\",\"version\":\"22.04\",\"arch\":\"x86_64\",\"kernel\":\"5.15.0-91-generic\",\"installed_kernels\":[\"5.15.0-91-generic\",\"5.15.0-92-generic\",\"5.15.0-94-generic\"]}\n",
    )
    .unwrap();
    let nodelist = dir.path().join("nodes.json");
    std::fs::write(
        &nodelist,
        serde_json::json!({"kind": "NodeList", "items": [{
            "metadata": {"name": "k1", "annotations": {"kfleet.io/installed-kernels": "6.1.0-18-amd64 6.1.0-21-amd64"}},
            "status": {"nodeInfo": {"kernelVersion": "6.1.0-18-amd64", "osImage": "Debian GNU/Linux 12 (bookworm)", "architecture": "amd64"}}
        }]})
        .to_string(),
    )
    .unwrap();
    let run = |format: &str| {
        String::from_utf8(stdout_of(
            kfleet()
                .arg("report")
                .arg("-i")
                .arg(&csv)
                .arg("-i")
                .arg(&jsonl)
                .arg("-i")
                .arg(&nodelist)
                .arg("-r")
                .arg(fixture("small-releases.json"))
                .args(["--driver-version", "v1.1.0"])
                .args(["--format", format, "--limit", "0"]),
        ))
        .unwrap()
    };
    let report: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    let row = |key: &str| {
        report["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {report}"))
            .clone()
    };
    let next = row("debian/12/x86_64/6.1.0-21-amd64");
    assert_eq!(next["nodes"], 0);
    assert_eq!(
        next["next_boot"], 3,
        "two CSV nodes and the NodeList's node"
    );
    assert_eq!(next["status"], "missing");
    let ubuntu = row("ubuntu/22.04/x86_64/5.15.0-94-generic");
    assert_eq!(
        (ubuntu["next_boot"].clone(), ubuntu["status"].clone()),
        (1.into(), "missing".into())
    );
    // The release has a driver for this one: covered before any node boots it.
    let covered = row("ubuntu/22.04/x86_64/5.15.0-92-generic");
    assert_eq!(
        (covered["next_boot"].clone(), covered["status"].clone()),
        (1.into(), "covered".into())
    );
    let running = row("debian/12/x86_64/6.1.0-18-amd64");
    assert_eq!(running["nodes"], 21);
    assert!(running.get("next_boot").is_none(), "{running}");
    let s = &report["summary"];
    assert_eq!(s["nodes"], 22, "only running nodes are nodes");
    assert_eq!(s["next_boot_nodes"], 5);
    assert_eq!(s["next_boot_uncovered"], 4);

    let table = run("table");
    assert!(table.contains("NEXT BOOT"), "{table}");
    assert!(
        table.contains("next boot: nodes have 5 installed kernel(s) they do not run yet; 4 of those, across 2 kernel version(s), have no driver"),
        "{table}"
    );
    let csv_out = run("csv");
    assert!(
        csv_out.lines().next().unwrap().ends_with(",next_boot"),
        "{csv_out}"
    );

    // A fleet that says nothing about installed kernels reads as before: no column, no line.
    let plain = fixture_report("table", &[]);
    assert!(
        !plain.contains("NEXT BOOT") && !plain.contains("next boot:"),
        "{plain}"
    );
}

/// `report` says which kernels run on a release past its end of life (Debian 11 since its LTS
/// ended in August 2026, Amazon Linux 2 since June 2026), in every format, and not for a
/// supported one.
#[test]
fn report_names_the_releases_past_their_end_of_life() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.csv");
    std::fs::write(
        &file,
        "node,distribution,distro_version,architecture,kernel_version\n\
         n1,debian,11,x86_64,5.10.0-32-amd64\n\
         n2,debian,11,x86_64,5.10.0-32-amd64\n\
         n3,ubuntu,24.04,x86_64,6.8.0-45-generic\n\
         n4,amazonlinux,2,x86_64,4.14.355-275.582.amzn2.x86_64\n",
    )
    .unwrap();
    let run = |format: &str| {
        let out = kfleet()
            .arg("report")
            .arg("-i")
            .arg(&file)
            .arg("-r")
            .arg(fixture("small-releases.json"))
            .args(["--format", format])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run("table").contains(
        "end of life: 3 nodes on 2 kernel(s) run a release past its end of life, with no more fixes from its distribution: debian 11 (2 nodes), amazonlinux 2 (1 node)"
    ));
    assert!(run("markdown").contains("**End of life:** 3 nodes"));
    assert!(run("html").contains("<p><b>End of life:</b> 3 nodes"));
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(
        json["summary"]["end_of_life"],
        serde_json::json!([
            {"distribution": "debian", "distro_version": "11", "identities": 1, "nodes": 2},
            {"distribution": "amazonlinux", "distro_version": "2", "identities": 1, "nodes": 1},
        ])
    );
    std::fs::write(
        &file,
        "node,distribution,distro_version,architecture,kernel_version\nn3,ubuntu,24.04,x86_64,6.8.0-45-generic\n",
    )
    .unwrap();
    assert!(!run("table").contains("end of life"));
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    assert!(json["summary"].get("end_of_life").is_none());
}
