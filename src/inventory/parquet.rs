//! Parquet inventories (a fleet table exported from a data lake): only the four identity columns
//! are read (projection pushdown), a million rows at a time, and counted per identity in the same
//! tally as CSV: memory is bounded by the slice and the identities, not the fleet. A row with a
//! missing field is a bad row named by its 1-based row number.

use super::tally::{Position, Tally};
use super::{FleetGroups, InventoryError};
use polars::prelude::*;
use std::path::Path;

/// Parquet files start (and end) with these four bytes.
pub(super) const MAGIC: &[u8; 4] = b"PAR1";

/// Rows decoded at a time.
const SLICE: usize = 1 << 20;

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
    let mut tally = Tally::default();
    let mut offset = 0usize;
    while offset < total {
        let len = SLICE.min(total - offset);
        let mut reader = ParquetReader::new(open()?)
            .with_columns(Some(distinct.clone()))
            .with_slice(Some((offset, len)));
        reader.set_metadata(metadata.clone());
        let frame = reader.finish().map_err(polars_err)?;
        let strings = columns
            .iter()
            .map(|name| {
                frame
                    .column(name)
                    .and_then(|c| c.cast(&DataType::String))
                    .and_then(|c| c.str().cloned())
            })
            .collect::<PolarsResult<Vec<StringChunked>>>()
            .map_err(polars_err)?;
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
        offset += len;
    }
    tally.absorb(file, fleet, Position::Row);
    Ok(())
}
