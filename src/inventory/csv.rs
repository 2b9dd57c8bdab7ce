//! CSV inventories: header aliases, then the rows counted per identity by the parallel line
//! scanner, or by the `csv` crate when lines are not records (see [`super::tally`]).

use super::tally::{self, Layout, Source, Stop, Tally};
use super::{COLUMNS, Data, FleetGroups, InventoryError};
use crate::text::Cause;
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

pub(super) fn read(
    file: &str,
    data: Data,
    fleet: &mut FleetGroups,
    exactly: bool,
) -> Result<(), InventoryError> {
    let io = |source| InventoryError::Io {
        file: file.to_string(),
        source,
    };
    let mut rdr = csv_reader(reader(&data).map_err(io)?);
    let header = rdr.headers().cloned().map_err(|e| InventoryError::Format {
        file: file.to_string(),
        source: Cause::from(format!("cannot read the CSV header: {e}")),
    })?;
    let data_start = rdr.position().byte();
    let positions = header_positions(file, &header)?;
    let installed = header.iter().position(|h| {
        h.trim()
            .trim_start_matches('\u{feff}')
            .eq_ignore_ascii_case(super::INSTALLED_KERNELS)
    });
    let file_handle;
    let source: &dyn Source = match &data {
        Data::Path(p) => {
            file_handle = std::fs::File::open(p).map_err(io)?;
            &file_handle
        }
        Data::Bytes(b) => b,
    };
    // The header's own lines (a quoted header field may hold a newline).
    let mut head = vec![0u8; usize::try_from(data_start).unwrap_or(usize::MAX)];
    let mut n = 0;
    while n < head.len() {
        match source.read_at(&mut head[n..], n as u64).map_err(io)? {
            0 => break,
            read => n += read,
        }
    }
    let layout = Layout {
        data_start,
        first_line: memchr::memchr_iter(b'\n', &head[..n]).count() as u64 + 1,
        positions,
        installed,
        width: header.len(),
    };
    // The line scanner counts identities only; a file that lists installed kernels is read by
    // the exact reader, which counts them too.
    let scanned = if exactly || installed.is_some() {
        Err(Stop::NotLines)
    } else {
        tally::scan(source, layout)
    };
    let tally = match scanned {
        Ok(tally) => tally,
        Err(Stop::Io(e)) => return Err(io(e)),
        Err(Stop::NotLines) => read_exactly(file, &data, layout)?,
    };
    tally.absorb(file, fleet, tally::Position::Line);
    Ok(())
}

/// Reads the whole file with the `csv` crate, one record at a time: for files whose lines are
/// not one record each (quoted newlines), and to check the scanner against.
pub(super) fn read_exactly(
    file: &str,
    data: &Data,
    layout: Layout,
) -> Result<Tally, InventoryError> {
    let lines = LineIndex::new(reader(data).map_err(|source| InventoryError::Io {
        file: file.to_string(),
        source,
    })?);
    let mut rdr = csv_reader(lines);
    let mut tally = Tally::default();
    let mut record = ::csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut record) {
            Ok(false) => return Ok(tally),
            Ok(true) => {
                // The csv crate's own line count skips newlines in quoted fields and after `\r`.
                let byte = record.position().map(|p| p.byte()).unwrap_or(0);
                let line = rdr.get_mut().line_at(byte);
                let field = |k: usize| record.get(layout.positions[k]).unwrap_or_default();
                let fields = [field(0), field(1), field(2), field(3)];
                tally.record(line, record.len(), layout.width, fields);
                if let Some(at) = layout.installed
                    && record.len() == layout.width
                {
                    tally.record_next_boot(fields, record.get(at).unwrap_or_default());
                }
            }
            Err(e) => {
                return Err(InventoryError::Format {
                    file: file.to_string(),
                    source: Cause::of(e),
                });
            }
        }
    }
}

/// A reader that can say on which line a byte it has passed on is: it keeps the chunks read
/// since the last question (the csv reader's read-ahead, a few KiB) and the newlines before them.
struct LineIndex<R> {
    inner: R,
    window: std::collections::VecDeque<(u64, Vec<u8>)>,
    newlines_before_window: u64,
    offset: u64,
}

impl<R: Read> LineIndex<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            window: Default::default(),
            newlines_before_window: 0,
            offset: 0,
        }
    }

    /// 1-based line of the record the csv reader says starts at `byte`: that is where the
    /// previous record ended, so the terminators and blank lines after it are skipped first.
    /// Records are asked for in increasing order.
    fn line_at(&mut self, mut byte: u64) -> u64 {
        for (start, chunk) in &self.window {
            let Some(from) = byte.checked_sub(*start) else {
                break;
            };
            let from = usize::try_from(from).unwrap_or(usize::MAX);
            if from >= chunk.len() {
                continue;
            }
            match chunk[from..]
                .iter()
                .position(|b| *b != b'\r' && *b != b'\n')
            {
                Some(skip) => {
                    byte += skip as u64;
                    break;
                }
                None => byte = start + chunk.len() as u64,
            }
        }
        while let Some((start, chunk)) = self.window.front() {
            if start + chunk.len() as u64 > byte {
                break;
            }
            self.newlines_before_window += memchr::memchr_iter(b'\n', chunk).count() as u64;
            self.window.pop_front();
        }
        let within = match self.window.front() {
            Some((start, chunk)) => {
                let upto = usize::try_from(byte.saturating_sub(*start))
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                memchr::memchr_iter(b'\n', &chunk[..upto]).count() as u64
            }
            None => 0,
        };
        self.newlines_before_window + within + 1
    }
}

impl<R: Read> Read for LineIndex<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.window.push_back((self.offset, buf[..n].to_vec()));
            self.offset += n as u64;
        }
        Ok(n)
    }
}
