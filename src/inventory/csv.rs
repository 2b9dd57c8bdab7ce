//! CSV inventories: header aliases, a lazy polars scan for the counting, and an exact
//! `csv`-crate pass for file:line reports of bad rows (or for files polars cannot parse).

use super::{
    BAD_ROW, BadRow, COLUMNS, Data, FleetGroups, InventoryError, OS_IMAGE, absorb, frame_from_rows,
    group, mark_bad_rows,
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
    column_positions(file, &header.iter().collect::<Vec<_>>())
}

/// Where the four identity columns are among `columns` (by their aliases, in any case).
pub(super) fn column_positions(file: &str, columns: &[&str]) -> Result<[usize; 4], InventoryError> {
    let names: Vec<String> = columns
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
                found: columns.join(", "),
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
    let keys = [COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[3], BAD_ROW];
    let groups = scan(&data, &header, positions).and_then(|lf| group(file, lf, &keys).ok());
    let Some(groups) = groups else {
        // polars rejects ragged or non-UTF-8 files; the csv crate reads them row by row instead.
        return read_exactly(file, &data, positions, header.len(), fleet);
    };
    let found = absorb(file, &groups, fleet)?;
    if found.bad == 0 {
        return Ok(());
    }
    if lines_are_records(&data).map_err(io)? {
        let mut located = found.located;
        located.sort();
        for (row, reason) in located {
            fleet.add_bad(BadRow {
                file: file.to_string(),
                line: Some(row + 2),
                reason,
            });
        }
        Ok(())
    } else {
        list_bad_rows(file, &data, positions, fleet)
    }
}

/// Whether data row `i` is on line `i + 2`: no quotes (so no quoted newlines) and no blank lines.
fn lines_are_records(data: &Data) -> std::io::Result<bool> {
    let clean = |bytes: &[u8]| {
        memchr::memchr(b'"', bytes).is_none()
            && memchr::memmem::find(bytes, b"\n\n").is_none()
            && memchr::memmem::find(bytes, b"\n\r\n").is_none()
    };
    let mut r = reader(data)?;
    // Streamed in chunks, each starting with the previous chunk's last two bytes.
    let mut buf = vec![0u8; 1 << 20];
    let mut carry = 0;
    loop {
        let n = r.read(&mut buf[carry..])?;
        if n == 0 {
            return Ok(true);
        }
        let end = carry + n;
        if !clean(&buf[..end]) {
            return Ok(false);
        }
        carry = end.min(2);
        buf.copy_within(end - carry..end, 0);
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
        .with_row_index(Some(RowIndex {
            name: "row".into(),
            offset: 0,
        }))
        .finish()
        .ok()?;
    let mut select: Vec<Expr> = positions
        .iter()
        .zip(COLUMNS)
        .map(|(&i, name)| col(header.get(i).unwrap_or_default()).alias(name))
        .collect();
    let any_missing = COLUMNS.iter().map(|c| col(*c).is_null()).reduce(Expr::or)?;
    select.push(col("row"));
    Some(mark_bad_rows(lf.select(select), any_missing))
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

/// Second pass, only when the scan found rows with missing fields in a file whose lines are not
/// one record each: names each bad row by its real line.
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
    let keys = [COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[3], OS_IMAGE];
    let groups = group(file, frame_from_rows(file, rows)?, &keys)?;
    absorb(file, &groups, fleet)?;
    Ok(())
}
