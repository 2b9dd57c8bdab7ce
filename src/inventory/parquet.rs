//! Parquet inventories (a fleet table exported from a data lake): only the four identity columns
//! are read (projection pushdown), a row group (at most a million rows) at a time on each core,
//! and counted per identity in the same tally as CSV: memory is bounded by the slice and the
//! identities, not the fleet. A row with a missing field is a bad row named by its 1-based row
//! number.

use super::tally::{Position, Tally, on_threads};
use super::{FleetGroups, InventoryError};
use crate::text::Cause;
use polars::prelude::*;
use std::path::Path;

/// Parquet files start (and end) with these four bytes.
pub(super) const MAGIC: &[u8; 4] = b"PAR1";

/// Rows decoded at a time.
const SLICE: usize = 1 << 20;

/// The most rows a byte of column data is believed to hold. A run-length-encoded column of one
/// repeated identity packs about 30,000 rows in a page header and a few bytes, and a row group has
/// four such columns with at least one page each; a footer that claims more than this is damaged
/// or hostile, and decoding it would size buffers from the claim.
const ROWS_PER_BYTE: u64 = 8192;

pub(super) fn read(file: &str, path: &Path, fleet: &mut FleetGroups) -> Result<(), InventoryError> {
    let polars_err = |source| InventoryError::Polars {
        file: file.to_string(),
        source,
    };
    let open = || {
        std::fs::File::open(path).map_err(|source| InventoryError::Io {
            file: file.to_string(),
            source,
        })
    };
    let mut first = ParquetReader::new(open()?);
    let schema = first.schema().map_err(polars_err)?;
    let names: Vec<&str> = schema.iter_names().map(|n| n.as_str()).collect();
    let positions = super::csv::column_positions(file, &names)?;
    let columns: Vec<String> = positions.iter().map(|&i| names[i].to_string()).collect();
    let mut distinct = columns.clone();
    distinct.sort();
    distinct.dedup();
    let metadata = first.get_metadata().map_err(polars_err)?.clone();
    let total = metadata.num_rows;
    let file_len = std::fs::metadata(path)
        .map_err(|source| InventoryError::Io {
            file: file.to_string(),
            source,
        })?
        .len();
    let damaged = |message: String| InventoryError::Format {
        file: file.to_string(),
        source: Cause::from(format!(
            "{message}; the file is damaged (or not what it claims), nothing was read"
        )),
    };
    // The footer is checked against what the file can hold before anything is sized from it.
    for (g, group) in metadata.row_groups.iter().enumerate() {
        let rows = group.num_rows() as u64;
        let mut bytes = 0u64;
        for chunk in group.parquet_columns() {
            let range = chunk.byte_range();
            if range.start > range.end || range.end > file_len {
                return Err(damaged(format!(
                    "row group {g} places column data at bytes {}..{} of a {file_len}-byte file",
                    range.start, range.end
                )));
            }
            let values = u64::try_from(chunk.num_values()).unwrap_or(u64::MAX);
            let flat = chunk.descriptor().descriptor.max_rep_level == 0;
            if flat && values != rows {
                return Err(damaged(format!(
                    "row group {g} declares {rows} rows but a column of it {values} values"
                )));
            }
            bytes += range.end - range.start;
        }
        let can_hold = bytes.saturating_mul(ROWS_PER_BYTE);
        if rows > can_hold {
            return Err(damaged(format!(
                "row group {g} declares {rows} rows in {bytes} bytes of column data, more than they can hold ({can_hold})"
            )));
        }
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let names: [&str; 4] = std::array::from_fn(|k| columns[k].as_str());
    if let Some(tally) = super::parquet_codes::count(file, &open()?, &metadata, names, threads)? {
        tally.absorb(file, fleet, Position::Row);
        return Ok(());
    }
    // Slices follow the row groups (a slice across two groups decodes both), cut to at most
    // SLICE rows, and are shared out between one thread per core, each with its own tally.
    let mut slices: Vec<(usize, usize)> = Vec::new();
    let mut group_start = 0usize;
    for group in &metadata.row_groups {
        let rows = group.num_rows();
        let mut at = 0;
        while at < rows {
            let len = SLICE.min(rows - at);
            slices.push((group_start + at, len));
            at += len;
        }
        group_start += rows;
    }
    if group_start != total {
        return Err(InventoryError::Format {
            file: file.to_string(),
            source: Cause::from(format!(
                "the row groups hold {group_start} rows but the footer says {total}; the file is damaged"
            )),
        });
    }
    let threads = threads.clamp(1, slices.len().max(1));
    let read_slices = |first: usize| -> Result<Tally, InventoryError> {
        let mut tally = Tally::default();
        for &(offset, len) in slices.iter().skip(first).step_by(threads) {
            let mut reader = ParquetReader::new(open()?)
                .with_columns(Some(distinct.clone()))
                .with_slice(Some((offset, len)))
                .read_parallel(ParallelStrategy::None);
            reader.set_metadata(metadata.clone());
            let frame = reader.finish().map_err(polars_err)?;
            let strings = string_columns(&frame, &columns).map_err(polars_err)?;
            let mut fields: Vec<_> = strings.iter().map(|c| c.iter()).collect();
            for row in 0..frame.height() {
                let mut next = |k: usize| {
                    fields[k]
                        .next()
                        .flatten()
                        .map(str::as_bytes)
                        .unwrap_or_default()
                };
                let values = [next(0), next(1), next(2), next(3)];
                tally.record((offset + row + 1) as u64, 4, 4, values);
            }
            // The file's share of these rows, for the progress bar.
            super::progress().add_read(
                file_len.saturating_mul(len as u64) / u64::try_from(total.max(1)).unwrap_or(1),
            );
        }
        Ok(tally)
    };
    let parts = on_threads(threads, read_slices, || InventoryError::Format {
        file: file.to_string(),
        source: Cause::from("a reader thread failed"),
    });
    let mut tally = Tally::default();
    for part in parts {
        tally.merge(part?, 0);
    }
    tally.absorb(file, fleet, Position::Row);
    Ok(())
}

/// `names` of `frame` as text columns (a column of numbers, a distro version, becomes text).
pub(super) fn string_columns(
    frame: &DataFrame,
    names: &[String],
) -> PolarsResult<Vec<StringChunked>> {
    names
        .iter()
        .map(|name| {
            frame
                .column(name)
                .and_then(|c| c.cast(&DataType::String))
                .and_then(|c| c.str().cloned())
        })
        .collect()
}
