#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Parquet inventories written by other tools (DuckDB, pyarrow, polars) count exactly like the
//! same fleet in CSV, whatever their compression, row groups, page versions and encodings; a
//! damaged file is an error naming it, never a panic or a wrong count.
//!
//! The DuckDB and pyarrow files are fixtures (`tests/fixtures/parquet/write.py` wrote them from
//! `fleet.csv`); the polars files are written here.

use kfleet::inventory::{FleetGroups, read_inventory};
use polars::prelude::*;
use std::path::{Path, PathBuf};

type Group = (String, String, String, String, u64);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parquet")
}

/// Identities with their node counts, and the bad rows as (row, reason): a CSV line is the row
/// after the header.
fn summary(f: &FleetGroups) -> (Vec<Group>, Vec<(u64, String)>, u64) {
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
    let bad = f
        .bad_rows
        .iter()
        .map(|b| match b.line {
            Some(line) => (line - 1, b.reason.clone()),
            None => {
                let (row, reason) = b
                    .reason
                    .strip_prefix("row ")
                    .and_then(|r| r.split_once(": "))
                    .unwrap();
                (row.parse().unwrap(), reason.to_string())
            }
        })
        .collect();
    (groups, bad, f.bad_row_count)
}

fn read(path: &Path) -> (Vec<Group>, Vec<(u64, String)>, u64) {
    summary(&read_inventory(&[path.to_path_buf()], false).unwrap())
}

#[test]
fn parquet_from_duckdb_and_pyarrow_counts_like_the_csv() {
    let csv = read(&fixtures().join("fleet.csv"));
    assert!(
        csv.1.len() >= 4,
        "the fixture has four blanked fields and more bad rows"
    );
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        seen += 1;
        assert_eq!(
            read(&path),
            csv,
            "{} disagrees with fleet.csv",
            path.display()
        );
    }
    assert_eq!(seen, 10);
}

#[test]
fn parquet_from_polars_counts_like_the_csv_in_every_layout() {
    let csv_path = fixtures().join("fleet.csv");
    let csv = read(&csv_path);
    let mut frame = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .try_into_reader_with_file_path(Some(csv_path))
        .unwrap()
        .finish()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layouts: Vec<(&str, ParquetCompression, Option<usize>, Option<usize>)> = vec![
        ("snappy", ParquetCompression::Snappy, Some(700), None),
        (
            "zstd",
            ParquetCompression::Zstd(None),
            Some(4000),
            Some(512),
        ),
        ("gzip", ParquetCompression::Gzip(None), None, None),
        ("lz4", ParquetCompression::Lz4Raw, Some(333), Some(1024)),
        ("none", ParquetCompression::Uncompressed, Some(1), None),
    ];
    for (name, compression, group, page) in layouts {
        let path = dir.path().join(format!("polars-{name}.parquet"));
        ParquetWriter::new(std::fs::File::create(&path).unwrap())
            .with_compression(compression)
            .with_row_group_size(group)
            .with_data_page_size(page)
            .finish(&mut frame)
            .unwrap();
        assert_eq!(read(&path), csv, "polars {name} disagrees with fleet.csv");
    }
}

/// A distro version written as a number (a careless export) is read as text, as CSV would give
/// it: the whole answer comes through the general reader.
#[test]
fn a_number_column_reads_as_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("numbers.parquet");
    let mut frame = df!(
        "distribution" => ["debian", "debian", "debian"],
        "distro_version" => [12i64, 12, 13],
        "architecture" => ["x86_64", "x86_64", "x86_64"],
        "kernel_version" => ["6.1.0-26-amd64", "6.1.0-26-amd64", "6.12.48+deb13-amd64"],
    )
    .unwrap();
    ParquetWriter::new(std::fs::File::create(&path).unwrap())
        .finish(&mut frame)
        .unwrap();
    let (groups, bad, _) = read(&path);
    assert!(bad.is_empty());
    assert_eq!(
        groups,
        vec![
            (
                "debian".into(),
                "12".into(),
                "x86_64".into(),
                "6.1.0-26-amd64".into(),
                2
            ),
            (
                "debian".into(),
                "13".into(),
                "x86_64".into(),
                "6.12.48+deb13-amd64".into(),
                1
            ),
        ]
    );
}

/// Every byte of the column data of a DuckDB and a pyarrow file, changed in turn: the reader
/// answers (a count or an error naming the file) and never panics or allocates from a lie.
#[test]
fn damaged_column_data_is_an_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut errors = 0;
    for name in [
        "duckdb-zstd.parquet",
        "pyarrow-v2-zstd.parquet",
        "pyarrow-mixed.parquet",
    ] {
        let original = std::fs::read(fixtures().join(name)).unwrap();
        // Column data sits between the leading magic and the footer (its length is in the
        // eight bytes before the trailing magic).
        let n = original.len();
        let footer = u32::from_le_bytes(original[n - 8..n - 4].try_into().unwrap()) as usize;
        let data_end = n - 8 - footer;
        let path = dir.path().join(name);
        let step = (data_end / 400).max(1);
        for at in (4..data_end).step_by(step) {
            let mut bytes = original.clone();
            bytes[at] ^= 0x5a;
            std::fs::write(&path, &bytes).unwrap();
            match read_inventory(std::slice::from_ref(&path), false) {
                Ok(_) => {}
                Err(e) => {
                    errors += 1;
                    let message = e.to_string();
                    assert!(message.contains(name), "{message}");
                }
            }
        }
    }
    assert!(errors > 0, "no damage was ever noticed");
}
