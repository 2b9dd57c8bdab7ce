#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The parallel CSV scanner against the `csv` crate read one record at a time: the same
//! identities, node counts and bad rows (file:line) on every shape of file.

use kfleet::inventory::{FleetGroups, read_inventory, read_inventory_exactly};
use std::io::Write;
use std::path::{Path, PathBuf};

type Group = (String, String, String, String, u64);

fn summary(f: &FleetGroups) -> (Vec<Group>, Vec<String>, u64) {
    let mut groups: Vec<Group> = f
        .groups
        .iter()
        .map(|g| {
            (
                g.distribution.clone(),
                g.distro_version.clone(),
                g.architecture.clone(),
                g.kernel_version.clone(),
                g.nodes,
            )
        })
        .collect();
    groups.sort();
    let bad = f.bad_rows.iter().map(ToString::to_string).collect();
    (groups, bad, f.bad_row_count)
}

/// Reads `path` both ways, asserts they agree, and returns the scanner's result.
fn both(path: &Path) -> (Vec<Group>, Vec<String>, u64) {
    let paths = [path.to_path_buf()];
    let fast = summary(&read_inventory(&paths, false).unwrap());
    let exact = summary(&read_inventory_exactly(&paths, false).unwrap());
    assert_eq!(
        fast,
        exact,
        "scanner and csv crate disagree on {}",
        path.display()
    );
    fast
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

const HEADER: &str = "node,distribution,distro_version,architecture,kernel_version\n";

#[test]
fn small_files_of_every_shape_agree() {
    let dir = tempfile::tempdir().unwrap();
    let crlf = format!(
        "{}\r\na,ubuntu,22.04,x86_64,5.15.0-91-generic\r\nb,ubuntu,22.04,x86_64,5.15.0-91-generic\r\n\r\nc,debian,12,,6.1.0-18-amd64\r\n",
        HEADER.trim_end()
    ) + "\r\n";
    let (groups, bad, count) = both(&write(dir.path(), "crlf.csv", crlf.as_bytes()));
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].4, 2);
    assert_eq!(
        bad,
        vec![format!(
            "{}:5: architecture is empty",
            dir.path().join("crlf.csv").display()
        )]
    );
    assert_eq!(count, 1);

    let bom = format!(
        "\u{feff}{HEADER}a,ubuntu,22.04,x86_64,5.15.0-91-generic\n\n\nb,ubuntu,22.04,arm64,5.15.0-91-generic"
    );
    let (groups, bad, _) = both(&write(dir.path(), "bom.csv", bom.as_bytes()));
    assert_eq!(
        groups.len(),
        2,
        "the last line has no newline and still counts"
    );
    assert!(bad.is_empty());

    // Quoted fields on one line each: the scanner reads them itself.
    let quoted = format!(
        "{HEADER}\"a,1\",\"ubuntu\",\"22.04\",x86_64,\"5.15.0-91-generic\"\n\"say \"\"hi\"\"\",ubuntu,22.04,x86_64,5.15.0-91-generic\n\"q\"x,ubuntu,\"\",x86_64,5.15.0-91-generic\n"
    );
    let (groups, bad, _) = both(&write(dir.path(), "quoted.csv", quoted.as_bytes()));
    assert_eq!(
        groups,
        vec![(
            "ubuntu".into(),
            "22.04".into(),
            "x86_64".into(),
            "5.15.0-91-generic".into(),
            2
        )]
    );
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0].ends_with("quoted.csv:4: distro_version is empty"),
        "{bad:?}"
    );

    // A quoted newline: lines are not records, the exact reader takes over.
    let newline = format!(
        "{HEADER}\"a\nb\",ubuntu,22.04,x86_64,5.15.0-91-generic\n\nc,ubuntu,22.04,,5.15.0-91-generic\n"
    );
    let (_, bad, _) = both(&write(dir.path(), "newline.csv", newline.as_bytes()));
    assert!(
        bad[0].ends_with("newline.csv:5: architecture is empty"),
        "{bad:?}"
    );

    // A lone carriage return ends a record for the csv crate; the scanner hands over.
    let lone_cr = format!(
        "{HEADER}a,ubuntu,22.04,x86_64,5.15.0-91-generic\rb,ubuntu,22.04,x86_64,5.15.0-91-generic\n"
    );
    let (groups, _, _) = both(&write(dir.path(), "cr.csv", lone_cr.as_bytes()));
    assert_eq!(groups[0].4, 2);

    let mut ragged =
        format!("{HEADER}a,ubuntu,22.04,x86_64,5.15.0-91-generic,extra\nb,ubuntu\n").into_bytes();
    ragged.extend_from_slice(b"d,ubuntu,22.04,x86_64,5.15.0-\xff-generic\n");
    let (groups, bad, count) = both(&write(dir.path(), "ragged.csv", &ragged));
    assert!(groups.is_empty());
    assert_eq!(count, 3);
    assert!(
        bad[0].ends_with(":2: has 6 fields but the header has 5"),
        "{bad:?}"
    );
    assert!(
        bad[1].ends_with(":3: has 2 fields but the header has 5"),
        "{bad:?}"
    );
    assert!(
        bad[2].ends_with(":4: kernel_version is not valid UTF-8"),
        "{bad:?}"
    );

    // Gzip: decompressed in memory, then scanned the same way.
    let gz = dir.path().join("fleet.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(crlf.as_bytes()).unwrap();
    enc.finish().unwrap();
    let (groups, bad, _) = both(&gz);
    assert_eq!(groups[0].4, 2);
    assert!(
        bad[0].ends_with("fleet.csv.gz:5: architecture is empty"),
        "{bad:?}"
    );
}

/// A file large enough to be split between threads, with bad rows, quotes, CRLF and blank lines
/// spread through it: every bad row keeps its exact line across the split points.
#[test]
fn a_file_split_between_threads_keeps_exact_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::from(HEADER);
    let mut line = 1u64;
    let mut expected_bad = Vec::new();
    let mut good = 0u64;
    for i in 0..300_000u64 {
        line += 1;
        match i % 997 {
            0 => {
                body.push_str(&format!("n{i},ubuntu,22.04,,5.15.0-{}-generic\n", i % 40));
                expected_bad.push(line);
            }
            1 => {
                body.push('\n');
            }
            2 => {
                body.push_str(&format!(
                    "\"n{i}\",\"ubuntu\",22.04,x86_64,5.15.0-{}-generic\r\n",
                    i % 40
                ));
                good += 1;
            }
            _ => {
                body.push_str(&format!(
                    "n{i},ubuntu,22.04,x86_64,5.15.0-{}-generic\n",
                    i % 40
                ));
                good += 1;
            }
        }
    }
    assert!(
        body.len() > 12 << 20,
        "big enough for several ranges: {}",
        body.len()
    );
    let path = write(dir.path(), "big.csv", body.as_bytes());
    let (groups, bad, count) = both(&path);
    assert_eq!(groups.len(), 40);
    assert_eq!(groups.iter().map(|g| g.4).sum::<u64>(), good);
    assert_eq!(count, expected_bad.len() as u64);
    let lines: Vec<u64> = bad
        .iter()
        .map(|b| b.rsplit(':').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(lines, expected_bad);
}

/// Past the listing limit, bad rows are counted, and the listed ones are the first by line.
#[test]
fn many_bad_rows_list_the_first_thousand() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::from(HEADER);
    for i in 0..250_000u64 {
        if i % 50 == 0 {
            body.push_str(&format!("n{i},debian,12,x86_64,\n"));
        } else {
            body.push_str(&format!("n{i},debian,12,x86_64,6.1.0-{}-amd64\n", i % 30));
        }
    }
    let (_, bad, count) = both(&write(dir.path(), "many.csv", body.as_bytes()));
    assert_eq!(count, 5000);
    assert_eq!(bad.len(), 1000);
    assert!(
        bad[0].ends_with(":2: kernel_version is empty"),
        "{}",
        bad[0]
    );
    assert!(
        bad[999].ends_with(&format!(":{}: kernel_version is empty", 999 * 50 + 2)),
        "{}",
        bad[999]
    );
}

/// `kfleet nodes IDENTITY` in every file shape (CSV plain and gzipped, JSON Lines with labels,
/// Parquet, a NodeList): as many nodes as `report` counts for the identity, listed by name with
/// their source and the row's other fields, cut at `--limit` while all are counted.
#[test]
fn nodes_of_an_identity_agree_with_the_report_in_every_shape() {
    let dir = tempfile::tempdir().unwrap();
    let kfleet = |args: &[&str]| {
        let out = assert_cmd::Command::cargo_bin("kfleet")
            .unwrap()
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = dir.path().to_str().unwrap();
    kfleet(&["gen-fleet", "--nodes", "3000", "--seed", "7", "--out", out]);
    let csv = dir.path().join("fleet.csv");
    let parquet_dir = dir.path().join("pq");
    kfleet(&[
        "gen-fleet",
        "--nodes",
        "3000",
        "--seed",
        "7",
        "--format",
        "parquet",
        "--out",
        parquet_dir.to_str().unwrap(),
    ]);
    let parquet = std::fs::read_dir(&parquet_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    let gzipped = write(dir.path(), "fleet.csv.gz", &gz.finish().unwrap());
    let mut jsonl = String::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        jsonl.push_str(
            &serde_json::json!({"hostname": f[0], "distribution": f[1], "distro_version": f[2],
                "architecture": f[3], "kernel_version": f[4], "rack": "r7"})
            .to_string(),
        );
        jsonl.push('\n');
    }
    let jsonl = write(dir.path(), "fleet.jsonl", jsonl.as_bytes());
    let report: serde_json::Value = serde_json::from_str(&kfleet(&[
        "report",
        "-i",
        csv.to_str().unwrap(),
        "-r",
        dir.path().join("releases.json").to_str().unwrap(),
        "-f",
        "json",
    ]))
    .unwrap();
    let identities = report["identities"].as_array().unwrap();
    // The head, a long-tail kernel and the last (the rarest).
    for row in [
        &identities[0],
        &identities[identities.len() / 2],
        identities.last().unwrap(),
    ] {
        let key = row["key"].as_str().unwrap();
        let expected = row["nodes"].as_u64().unwrap();
        for file in [&csv, &gzipped, &jsonl, &parquet] {
            let v: serde_json::Value = serde_json::from_str(&kfleet(&[
                "nodes",
                key,
                "-i",
                file.to_str().unwrap(),
                "-f",
                "json",
                "--limit",
                "5",
            ]))
            .unwrap();
            assert_eq!(v["total"], expected, "{key} in {}", file.display());
            let listed = v["nodes"].as_array().unwrap();
            assert_eq!(listed.len() as u64, expected.min(5));
            assert!(
                listed[0]["name"].as_str().unwrap().starts_with("node-"),
                "{v}"
            );
            assert_eq!(listed[0]["source"], file.display().to_string());
            if file == &jsonl {
                assert_eq!(
                    listed[0]["labels"],
                    serde_json::json!({"rack": "r7"}),
                    "{v}"
                );
            }
        }
    }
    let key = identities[0]["key"].as_str().unwrap();
    let table = kfleet(&["nodes", key, "-i", csv.to_str().unwrap(), "--limit", "2"]);
    assert!(table.starts_with("NODE"), "{table}");
    assert!(
        table.ends_with(&format!(
            "{} nodes run {key} (the first 2 shown; --limit N shows more)\n",
            identities[0]["nodes"]
        )),
        "{table}"
    );

    // A NodeList: the nodes with their Kubernetes labels.
    let nodelist = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/nodes.json");
    let v: serde_json::Value = serde_json::from_str(&kfleet(&[
        "nodes",
        "ubuntu/22.04/x86_64/5.15.0-1034-aws",
        "-i",
        nodelist.to_str().unwrap(),
        "-f",
        "json",
    ]))
    .unwrap();
    assert_eq!(v["total"], 8, "{v}");
    assert_eq!(v["nodes"][0]["name"], "ip-10-0-0-11.ec2.internal");
    assert_eq!(v["nodes"][0]["labels"]["kubernetes.io/arch"], "amd64");
}

/// `-i -` reads the inventory from standard input, told apart by content as files are:
/// `kubectl get nodes -o json | kfleet report -i -` reports what the NodeList file does, a
/// gzipped CSV too; Parquet (read from its footer) asks for the file instead.
#[test]
fn an_inventory_piped_to_standard_input_reports_like_its_file() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data");
    let releases = sample.join("releases.json");
    let report = |inventory: &str, stdin: Option<Vec<u8>>| {
        let mut cmd = assert_cmd::Command::cargo_bin("kfleet").unwrap();
        cmd.env("XDG_CONFIG_HOME", "/nonexistent")
            .args(["report", "-f", "json", "-i", inventory, "-r"])
            .arg(&releases);
        if let Some(bytes) = stdin {
            cmd.write_stdin(bytes);
        }
        cmd.output().unwrap()
    };
    let summary = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (v["summary"].clone(), v["identities"].clone())
    };
    for (file, gzip) in [("nodes.json", false), ("fleet.csv", true)] {
        let bytes = std::fs::read(sample.join(file)).unwrap();
        let piped = if gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&bytes).unwrap();
            gz.finish().unwrap()
        } else {
            bytes
        };
        let from_file = report(sample.join(file).to_str().unwrap(), None);
        let from_stdin = report("-", Some(piped));
        assert_eq!(summary(&from_stdin), summary(&from_file), "{file}");
        assert!(
            String::from_utf8_lossy(&from_stdin.stderr).contains("standard input"),
            "bad rows name where they came from"
        );
    }
    let out = report("-", Some(b"PAR1 not really parquet".to_vec()));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pass the file instead of -"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Random files mixing LF and CRLF, blank lines, quoted fields, lone carriage returns, rows
    /// with missing or extra fields, and the identity columns in any order: the scanner (its
    /// one-pass path for clean lines and its line-by-line path) and the csv crate agree.
    #[test]
    fn the_scanner_agrees_with_the_csv_crate_on_random_files(
        order in proptest::sample::select(vec![
            "node,distribution,distro_version,architecture,kernel_version",
            "distribution,distro_version,architecture,kernel_version,node",
            "kernel_version,node,architecture,distribution,distro_version",
        ]),
        rows in proptest::collection::vec((0usize..9, 0usize..4, proptest::bool::ANY), 0..60),
    ) {
        let names: Vec<&str> = order.split(',').collect();
        let mut text = format!("{order}\n");
        for (shape, kernel, crlf) in rows {
            let value = |name: &str| match name {
                "node" => "n1".to_string(),
                "distribution" => "ubuntu".to_string(),
                "distro_version" => "22.04".to_string(),
                "architecture" => if kernel % 2 == 0 { "x86_64".into() } else { "arm64".into() },
                _ => format!("5.15.0-{}-generic", 90 + kernel),
            };
            let mut fields: Vec<String> = names.iter().map(|n| value(n)).collect();
            match shape {
                0 => fields[kernel % 5] = String::new(),
                1 => fields[kernel % 5] = format!("\"{}\"", fields[kernel % 5]),
                2 => { fields.pop(); }
                3 => fields.push("extra".into()),
                4 => fields = vec![],
                5 => fields[kernel % 5].push('\r'),
                _ => {}
            }
            text.push_str(&fields.join(","));
            text.push_str(if crlf { "\r\n" } else { "\n" });
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "random.csv", text.as_bytes());
        let paths = [path];
        let fast = read_inventory(&paths, false).map(|f| summary(&f));
        let exact = read_inventory_exactly(&paths, false).map(|f| summary(&f));
        match (fast, exact) {
            (Ok(fast), Ok(exact)) => proptest::prop_assert_eq!(fast, exact),
            (Err(a), Err(b)) => proptest::prop_assert_eq!(a.to_string(), b.to_string()),
            (a, b) => proptest::prop_assert!(false, "one failed: {:?} / {:?}", a.map(|_| ()), b.map(|_| ())),
        }
    }
}
