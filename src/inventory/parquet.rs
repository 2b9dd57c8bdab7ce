//! Parquet inventories (a fleet table exported from a data lake): only the four identity columns
//! are read (projection pushdown), grouped by the same streaming query as CSV. A row with a
//! missing field is a bad row named by its 1-based row number.

use super::{BAD_ROW, BadRow, COLUMNS, FleetGroups, InventoryError, absorb, group, mark_bad_rows};
use polars::prelude::*;
use std::path::Path;

/// Parquet files start (and end) with these four bytes.
pub(super) const MAGIC: &[u8; 4] = b"PAR1";

pub(super) fn read(file: &str, path: &Path, fleet: &mut FleetGroups) -> Result<(), InventoryError> {
    let polars_err = |source| InventoryError::Polars {
        file: file.to_string(),
        source,
    };
    let location = path.to_str().ok_or_else(|| InventoryError::Format {
        file: file.to_string(),
        message: "the path is not UTF-8; rename the file".into(),
    })?;
    let args = ScanArgsParquet {
        row_index: Some(RowIndex {
            name: "row".into(),
            offset: 0,
        }),
        ..ScanArgsParquet::default()
    };
    let mut lf = LazyFrame::scan_parquet(PlRefPath::new(location), args).map_err(polars_err)?;
    let schema = lf.collect_schema().map_err(polars_err)?;
    let names: Vec<&str> = schema.iter_names().map(|n| n.as_str()).collect();
    let positions = super::csv::column_positions(file, &names)?;
    let mut select: Vec<Expr> = positions
        .iter()
        .zip(COLUMNS)
        .map(|(&i, name)| col(names[i]).cast(DataType::String).alias(name))
        .collect();
    select.push(col("row"));
    // Empty strings are missing too, as in CSV.
    let missing = COLUMNS
        .iter()
        .map(|c| col(*c).is_null().or(col(*c).str().len_bytes().eq(lit(0))))
        .reduce(Expr::or)
        .ok_or_else(|| InventoryError::Format {
            file: file.to_string(),
            message: "no identity columns".into(),
        })?;
    let frame = mark_bad_rows(lf.select(select), missing);
    let keys = [COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[3], BAD_ROW];
    let groups = group(file, frame, &keys)?;
    let found = absorb(file, &groups, fleet)?;
    let mut located = found.located;
    located.sort();
    for (row, reason) in located {
        fleet.add_bad(BadRow {
            file: file.to_string(),
            // Parquet has rows, not lines: the row number is in the reason.
            line: None,
            reason: format!("row {}: {reason}", row + 1),
        });
    }
    Ok(())
}
