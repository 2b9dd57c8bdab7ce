//! CSV inventories: header aliases, a lazy polars scan for the counting, and an exact
//! `csv`-crate pass for file:line reports of bad rows (or for files polars cannot parse).

use super::{
    BadRow, COLUMNS, Data, FleetGroups, InventoryError, OS_IMAGE, absorb, frame_from_rows, group,
};
use polars::prelude::*;
use std::io::Read;

const ALIASES: [&[&str]; 4] = [
    &["distribution", "distro", "os", "id"],
    &["distro_version", "version", "version_id"],
    &["architecture", "arch", "uname_m"],
    &["kernel_version", "kernel", "kernel_release", "uname_r"],
];

fn reader(data: &Data) -> std::io::Result<Box<dyn Read + '_>> {
    Ok(match data {
        Data::Path(p) => Box::new(std::io::BufReader::new(std::fs::File::open(p)?)),
        Data::Bytes(b) => Box::new(b.as_slice()),
    })
}

fn csv_reader<R: Read>(r: R) -> ::csv::Reader<R> {
    ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(r)
}

/// Index of each canonical column in the header.
fn header_positions(
    file: &str,
    header: &::csv::StringRecord,
) -> Result<[usize; 4], InventoryError> {
    let names: Vec<String> = header
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let mut out = [0usize; 4];
    for (i, aliases) in ALIASES.iter().enumerate() {
        out[i] = aliases
            .iter()
            .find_map(|a| names.iter().position(|n| n == a))
            .ok_or_else(|| InventoryError::MissingColumn {
                file: file.to_string(),
                column: COLUMNS[i],
                aliases: aliases.join("|"),
                found: header.iter().collect::<Vec<_>>().join(", "),
            })?;
    }
    Ok(out)
}

pub(super) fn read(file: &str, data: Data, fleet: &mut FleetGroups) -> Result<(), InventoryError> {
    let io = |source| InventoryError::Io {
        file: file.to_string(),
        source,
    };
    let header = csv_reader(reader(&data).map_err(io)?)
        .headers()
        .cloned()
        .map_err(|e| InventoryError::Format {
            file: file.to_string(),
            message: format!("cannot read the CSV header: {e}"),
        })?;
    let positions = header_positions(file, &header)?;
    let groups = scan(&data, &header, positions).and_then(|lf| group(file, lf).ok());
    match groups {
        Some(groups) => {
            let bad = absorb(file, &groups, fleet)?;
            if bad > 0 {
                list_bad_rows(file, &data, positions, fleet)?;
            }
            Ok(())
        }
        // polars rejects ragged or non-UTF-8 files; the csv crate reads them row by row instead.
        None => read_exactly(file, &data, positions, header.len(), fleet),
    }
}

fn scan(data: &Data, header: &::csv::StringRecord, positions: [usize; 4]) -> Option<LazyFrame> {
    let reader = match data {
        Data::Path(p) => LazyCsvReader::new(PlRefPath::new(p.to_str()?)).with_glob(false),
        Data::Bytes(b) => LazyCsvReader::new_with_sources(ScanSources::Buffers(
            vec![polars_buffer::Buffer::from(b.clone())].into(),
        )),
    };
    let lf = reader
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .finish()
        .ok()?;
    let mut select: Vec<Expr> = positions
        .iter()
        .zip(COLUMNS)
        .map(|(&i, name)| col(header.get(i).unwrap_or_default()).alias(name))
        .collect();
    select.push(lit(NULL).cast(DataType::String).alias(OS_IMAGE));
    Some(lf.select(select))
}

fn row_problem(
    record: &::csv::ByteRecord,
    positions: [usize; 4],
    width: Option<usize>,
) -> Result<[String; 4], String> {
    if let Some(width) = width
        && record.len() != width
    {
        return Err(format!(
            "has {} fields but the header has {width}",
            record.len()
        ));
    }
    let mut out: [String; 4] = Default::default();
    for (k, &i) in positions.iter().enumerate() {
        let raw = record.get(i).unwrap_or_default();
        let text =
            std::str::from_utf8(raw).map_err(|_| format!("{} is not valid UTF-8", COLUMNS[k]))?;
        if text.is_empty() {
            return Err(format!("{} is empty", COLUMNS[k]));
        }
        out[k] = text.to_string();
    }
    Ok(out)
}

/// Second pass, only when the scan found rows with missing fields: names each bad row.
fn list_bad_rows(
    file: &str,
    data: &Data,
    positions: [usize; 4],
    fleet: &mut FleetGroups,
) -> Result<(), InventoryError> {
    let mut rdr = csv_reader(reader(data).map_err(|source| InventoryError::Io {
        file: file.to_string(),
        source,
    })?);
    let mut record = ::csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = record.position().map(|p| p.line());
                // The scan reads a missing trailing field as empty, so only emptiness makes a row bad here.
                if let Err(reason) = row_problem(&record, positions, None) {
                    fleet.add_bad(BadRow {
                        file: file.to_string(),
                        line,
                        reason,
                    });
                }
            }
            Err(e) => {
                return Err(InventoryError::Format {
                    file: file.to_string(),
                    message: e.to_string(),
                });
            }
        }
    }
}

/// Reads a file polars could not parse, row by row, keeping the good rows.
fn read_exactly(
    file: &str,
    data: &Data,
    positions: [usize; 4],
    width: usize,
    fleet: &mut FleetGroups,
) -> Result<(), InventoryError> {
    let mut rdr = csv_reader(reader(data).map_err(|source| InventoryError::Io {
        file: file.to_string(),
        source,
    })?);
    let mut rows: [Vec<Option<String>>; 5] = Default::default();
    let mut record = ::csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map(|p| p.line());
                match row_problem(&record, positions, Some(width)) {
                    Ok(fields) => {
                        for (k, f) in fields.into_iter().enumerate() {
                            rows[k].push(Some(f));
                        }
                        rows[4].push(None);
                    }
                    Err(reason) => fleet.add_bad(BadRow {
                        file: file.to_string(),
                        line,
                        reason,
                    }),
                }
            }
            Err(e) => {
                return Err(InventoryError::Format {
                    file: file.to_string(),
                    message: e.to_string(),
                });
            }
        }
    }
    let groups = group(file, frame_from_rows(file, rows)?)?;
    absorb(file, &groups, fleet)?;
    Ok(())
}
