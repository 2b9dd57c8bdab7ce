//! Counting a Parquet inventory on dictionary codes: the fast path for the files data lakes write.
//!
//! Fleet columns hold a few hundred distinct values in millions of rows, and every common writer
//! (DuckDB, pyarrow, Spark, polars) dictionary-encodes them. Each of the (at most four) identity
//! column chunks of a row group is read page by page: its dictionary page is decoded once into a
//! table of values, each data page into one small integer code per row, and rows are counted by
//! the tuple of their four codes. No string is built per row; codes become identities once per
//! distinct tuple, at the end of the row group. Plain-encoded pages (a writer's fallback when a
//! dictionary grows too large, alone or mixed with dictionary pages) add their values to the same
//! table, so they count the same way.
//!
//! What this path does not read (another physical type such as a number column, nesting, the
//! delta encodings) is declined up front or at the first such page, and the caller reads the
//! file through polars instead: the answer is the same, only slower. A damaged file is an error
//! naming the row group and column.

use super::InventoryError;
use super::tally::{Tally, on_threads};
use crate::text::Cause;
use polars_parquet::parquet::compression::{Compression, DecompressionContext, decompress};
use polars_parquet::parquet::encoding::hybrid_rle::{HybridRleChunk, HybridRleDecoder};
use polars_parquet::parquet::metadata::{ColumnChunkMetadata, FileMetadata, RowGroupMetadata};
use polars_parquet::parquet::schema::types::PhysicalType;
use polars_parquet_format::thrift::protocol::TCompactInputProtocol;
use polars_parquet_format::{Encoding, PageHeader, PageType};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// The largest page (compressed or not) this reader holds; writers cut pages at about 1 MiB.
const MAX_PAGE: usize = 64 << 20;
/// The most rows of one data page decoded at once (writers cut pages at 20,000 rows or about
/// 1 MiB): 16 MiB of codes per column.
const MAX_PAGE_ROWS: usize = 1 << 22;
/// Bytes read from the file at a time while walking a column chunk's pages.
const WINDOW: usize = 256 << 10;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Why the fast path stopped.
enum Stop {
    /// Something it does not decode: read the file through polars instead.
    Unsupported(String),
    /// The file is damaged: an error for the operator.
    Damaged(String),
    Io(std::io::Error),
}

/// The counts of a Parquet inventory, or `None` where the file needs the general reader.
/// `names` are the four identity columns (as the schema spells them); `first_row` numbers rows
/// from 1 in the tally.
pub(super) fn count(
    file: &str,
    handle: &File,
    metadata: &FileMetadata,
    names: [&str; 4],
    threads: usize,
) -> Result<Option<Tally>, InventoryError> {
    let Some(first) = metadata.row_groups.first() else {
        return Ok(Some(Tally::default()));
    };
    // The distinct leaf columns to read, and which of them each identity field is.
    let mut leaves: Vec<usize> = Vec::new();
    let mut which = [0usize; 4];
    for (k, name) in names.iter().enumerate() {
        let Some(leaf) = first.parquet_columns().iter().position(|c| {
            c.descriptor().path_in_schema.len() == 1
                && c.descriptor().path_in_schema[0].as_str() == *name
        }) else {
            return Ok(None);
        };
        which[k] = match leaves.iter().position(|&l| l == leaf) {
            Some(i) => i,
            None => {
                leaves.push(leaf);
                leaves.len() - 1
            }
        };
    }
    for group in &metadata.row_groups {
        for &leaf in &leaves {
            let Some(chunk) = group.parquet_columns().get(leaf) else {
                return Ok(None);
            };
            let d = &chunk.descriptor().descriptor;
            if d.primitive_type.physical_type != PhysicalType::ByteArray
                || d.max_rep_level != 0
                || d.max_def_level > 1
            {
                return Ok(None);
            }
        }
    }
    let mut starts = Vec::with_capacity(metadata.row_groups.len());
    let mut at = 0u64;
    for group in &metadata.row_groups {
        starts.push(at);
        at += group.num_rows() as u64;
    }
    let threads = threads.clamp(1, metadata.row_groups.len());
    // Each thread takes the next row group not yet taken: writers mix large and small groups.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = |_: usize| -> Result<Tally, Stop> {
        let mut counter = Counter::new(leaves.len(), which);
        loop {
            let g = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(group) = metadata.row_groups.get(g) else {
                break;
            };
            counter.count_group(handle, group, g, &leaves, starts[g])?;
            super::progress().add_read(group.compressed_size() as u64);
        }
        Ok(counter.finish())
    };
    let parts = on_threads(threads, work, || {
        Stop::Damaged("a reader thread failed".into())
    });
    let mut tally = Tally::default();
    for part in parts {
        match part {
            Ok(part) => tally.merge(part, 0),
            Err(Stop::Unsupported(reason)) => {
                tracing::debug!(file, reason, "read through the general Parquet reader");
                return Ok(None);
            }
            Err(Stop::Damaged(message)) => {
                return Err(InventoryError::Format {
                    file: file.to_string(),
                    source: Cause::from(format!(
                        "{message}; the file is damaged, nothing was read"
                    )),
                });
            }
            Err(Stop::Io(source)) => {
                return Err(InventoryError::Io {
                    file: file.to_string(),
                    source,
                });
            }
        }
    }
    Ok(Some(tally))
}

/// The slot of an identity found bad.
const BAD: u32 = u32::MAX;

/// One thread's counts: its columns keep their values (and codes) from one row group to the
/// next, so a tuple of codes is one identity for the whole thread. One hash lookup per change of
/// identity between rows finds its slot, one add per row counts it. A bad identity (a null, an
/// empty or non-UTF-8 value) is checked when first seen, and its rows are recorded one by one
/// with their numbers.
struct Counter {
    columns: Vec<Column>,
    which: [usize; 4],
    slots: FastMap<u128, u32>,
    /// By the code of the kernel release (the fourth field): the last identity seen with it and
    /// its slot. A release nearly always comes with the same distribution, version and
    /// architecture, so most rows find their slot here without hashing.
    recent: Vec<(u128, u32)>,
    keys: Vec<u128>,
    counts: Vec<u64>,
    tally: Tally,
}

impl Counter {
    fn new(leaves: usize, which: [usize; 4]) -> Self {
        Counter {
            columns: (0..leaves).map(|_| Column::new()).collect(),
            which,
            slots: FastMap::default(),
            recent: Vec::new(),
            keys: Vec::new(),
            counts: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// Counts row group `g`, whose first row is `first_row` (0-based) in the file.
    fn count_group(
        &mut self,
        handle: &File,
        group: &RowGroupMetadata,
        g: usize,
        leaves: &[usize],
        first_row: u64,
    ) -> Result<(), Stop> {
        let rows = group.num_rows();
        for (column, &leaf) in self.columns.iter_mut().zip(leaves) {
            column.start(&group.parquet_columns()[leaf], g, rows);
        }
        let mut done = 0usize;
        while done < rows {
            let mut n = rows - done;
            for c in self.columns.iter_mut() {
                while c.pending() == 0 {
                    if !c.next_page(handle)? {
                        return Err(Stop::Damaged(format!(
                            "row group {g}: column {} holds {done} of the group's {rows} rows",
                            c.name
                        )));
                    }
                }
                n = n.min(c.pending());
            }
            self.count_rows(n, first_row + done as u64);
            for c in self.columns.iter_mut() {
                c.at += n;
            }
            done += n;
        }
        Ok(())
    }

    /// Counts the next `n` rows of every column; the first is row `row` (0-based) of the file.
    fn count_rows(&mut self, n: usize, row: u64) {
        let slices: [&[u32]; 4] = std::array::from_fn(|i| {
            let c = &self.columns[self.which[i]];
            &c.codes[c.at..c.at + n]
        });
        let mut last = u128::MAX;
        let mut slot = BAD;
        let rows = slices[0]
            .iter()
            .zip(slices[1])
            .zip(slices[2])
            .zip(slices[3]);
        let releases = self.columns[self.which[3]].values.len();
        if self.recent.len() < releases {
            self.recent.resize(releases, (u128::MAX, BAD));
        }
        for (r, (((&a, &b), &c), &d)) in rows.enumerate() {
            let k = key([a, b, c, d]);
            if k != last {
                last = k;
                let recent = self.recent[d as usize];
                slot = if recent.0 == k {
                    recent.1
                } else {
                    let s = match self.slots.get(&k) {
                        Some(&s) => s,
                        None => {
                            let s = if Tally::is_good(fields(&self.columns, self.which, k)) {
                                self.keys.push(k);
                                self.counts.push(0);
                                (self.counts.len() - 1) as u32
                            } else {
                                BAD
                            };
                            self.slots.insert(k, s);
                            s
                        }
                    };
                    self.recent[d as usize] = (k, s);
                    s
                };
            }
            if slot == BAD {
                let fields = fields(&self.columns, self.which, k);
                self.tally.record(row + r as u64 + 1, 4, 4, fields);
            } else {
                self.counts[slot as usize] += 1;
            }
        }
    }

    fn finish(mut self) -> Tally {
        let mut tally = std::mem::take(&mut self.tally);
        for (&k, &n) in self.keys.iter().zip(&self.counts) {
            tally.record_many(fields(&self.columns, self.which, k), n);
        }
        tally
    }
}

/// The values the codes in `k` name.
fn fields(columns: &[Column], which: [usize; 4], k: u128) -> [&[u8]; 4] {
    std::array::from_fn(|i| columns[which[i]].value((k >> (32 * i)) as u32))
}

/// The four codes of a row in one integer: the key rows are counted by.
#[inline]
fn key(codes: [u32; 4]) -> u128 {
    codes[0] as u128
        | (codes[1] as u128) << 32
        | (codes[2] as u128) << 64
        | (codes[3] as u128) << 96
}

/// One identity column of a thread: its values, numbered by code for the whole thread (code 0
/// is a null), and the chunk of the current row group being decoded into codes page by page.
struct Column {
    name: String,
    group: usize,
    pos: u64,
    end: u64,
    compression: Compression,
    nullable: bool,
    /// Values by code; code 0 is the null (empty) value.
    values: Vec<Vec<u8>>,
    /// Codes of the values, to find a value's code.
    interned: FastMap<Vec<u8>, u32>,
    /// The codes of the current chunk's dictionary entries.
    dictionary: Vec<u32>,
    has_dictionary: bool,
    /// Whether a data page of the current chunk was decoded (a dictionary page must come first).
    seen_data: bool,
    /// Rows of the row group not yet in a decoded page.
    remaining: usize,
    codes: Vec<u32>,
    at: usize,
    /// File bytes `window_at..window_at + window.len()`.
    window: Vec<u8>,
    window_at: u64,
    page: Vec<u8>,
    context: DecompressionContext,
}

impl Column {
    fn new() -> Self {
        Column {
            name: String::new(),
            group: 0,
            pos: 0,
            end: 0,
            compression: Compression::Uncompressed,
            nullable: false,
            values: vec![Vec::new()],
            interned: FastMap::default(),
            dictionary: Vec::new(),
            has_dictionary: false,
            seen_data: false,
            remaining: 0,
            codes: Vec::new(),
            at: 0,
            window: Vec::new(),
            window_at: 0,
            page: Vec::new(),
            context: DecompressionContext::Unset,
        }
    }

    /// Starts on the column's chunk in row group `group`.
    fn start(&mut self, chunk: &ColumnChunkMetadata, group: usize, rows: usize) {
        self.remaining = rows;
        let range = chunk.byte_range();
        self.name = chunk.descriptor().path_in_schema.join(".");
        self.group = group;
        self.pos = range.start;
        self.end = range.end;
        self.compression = chunk.compression();
        self.nullable = chunk.descriptor().descriptor.max_def_level > 0;
        self.dictionary.clear();
        self.has_dictionary = false;
        self.seen_data = false;
        self.codes.clear();
        self.at = 0;
        self.window.clear();
        self.window_at = 0;
    }

    /// The code of `value`, given one if it is new.
    fn intern(&mut self, value: &[u8]) -> u32 {
        if let Some(&code) = self.interned.get(value) {
            return code;
        }
        let code = self.values.len() as u32;
        self.values.push(value.to_vec());
        self.interned.insert(value.to_vec(), code);
        code
    }

    fn value(&self, code: u32) -> &[u8] {
        self.values
            .get(code as usize)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn pending(&self) -> usize {
        self.codes.len() - self.at
    }

    fn damaged(&self, what: impl std::fmt::Display) -> Stop {
        Stop::Damaged(format!(
            "row group {}, column {}: {what}",
            self.group, self.name
        ))
    }

    /// Brings the file's bytes `at..at + len` (within the chunk) into the read window; returns
    /// where they start in it.
    fn load(&mut self, handle: &File, at: u64, len: usize) -> Result<usize, Stop> {
        let inside =
            at >= self.window_at && at + len as u64 <= self.window_at + self.window.len() as u64;
        if !inside {
            let want = (len.max(WINDOW) as u64).min(self.end - at) as usize;
            if want < len {
                return Err(self.damaged("a page runs past the end of its column chunk"));
            }
            self.window.resize(want, 0);
            handle
                .read_exact_at(&mut self.window, at)
                .map_err(Stop::Io)?;
            self.window_at = at;
        }
        Ok((at - self.window_at) as usize)
    }

    /// Decodes the next page; false when the chunk has no more pages.
    fn next_page(&mut self, handle: &File) -> Result<bool, Stop> {
        if self.pos >= self.end {
            return Ok(false);
        }
        let avail = (self.end - self.pos).min(WINDOW as u64) as usize;
        let pos = self.pos;
        let (header, header_len) = {
            let start = self.load(handle, pos, avail)?;
            let bytes = &self.window[start..start + avail];
            let mut cursor = std::io::Cursor::new(bytes);
            let mut protocol = TCompactInputProtocol::new(&mut cursor, avail);
            let header = PageHeader::read_from_in_protocol(&mut protocol);
            let len = cursor.position();
            (header, len)
        };
        let header = match header {
            Ok(header) => header,
            // A header longer than the window (huge statistics) is not damage: read it elsewhere.
            Err(_) if avail == WINDOW => {
                return Err(Stop::Unsupported(
                    "a page header over the read window".into(),
                ));
            }
            Err(e) => return Err(self.damaged(format!("unreadable page header ({e})"))),
        };
        let compressed = usize::try_from(header.compressed_page_size).unwrap_or(usize::MAX);
        let uncompressed = usize::try_from(header.uncompressed_page_size).unwrap_or(usize::MAX);
        if compressed > MAX_PAGE || uncompressed > MAX_PAGE {
            return Err(self.damaged(format!(
                "a page claims {} bytes ({} compressed), more than the {} MiB a page may hold",
                header.uncompressed_page_size,
                header.compressed_page_size,
                MAX_PAGE >> 20
            )));
        }
        let body_at = pos + header_len;
        if body_at + compressed as u64 > self.end {
            return Err(self.damaged("a page runs past the end of its column chunk"));
        }
        self.pos = body_at + compressed as u64;
        match header.type_ {
            PageType::DICTIONARY_PAGE => {
                let Some(dict) = &header.dictionary_page_header else {
                    return Err(self.damaged("a dictionary page without its header"));
                };
                if self.seen_data || self.has_dictionary {
                    return Err(self.damaged("a dictionary page after the first page"));
                }
                if dict.encoding != Encoding::PLAIN && dict.encoding != Encoding::PLAIN_DICTIONARY {
                    return Err(Stop::Unsupported(format!(
                        "dictionary encoding {:?}",
                        dict.encoding
                    )));
                }
                let entries = usize::try_from(dict.num_values).unwrap_or(usize::MAX);
                self.inflate(handle, body_at, compressed, uncompressed, 0)?;
                let page = std::mem::take(&mut self.page);
                let result = self.plain_values(&page, entries, |col, v| {
                    let code = col.intern(v);
                    col.dictionary.push(code);
                });
                self.page = page;
                result?;
                self.has_dictionary = true;
                Ok(true)
            }
            PageType::DATA_PAGE => {
                let Some(data) = &header.data_page_header else {
                    return Err(self.damaged("a data page without its header"));
                };
                let (values, encoding) = (data.num_values, data.encoding);
                if self.nullable && data.definition_level_encoding != Encoding::RLE {
                    return Err(Stop::Unsupported("bit-packed definition levels".into()));
                }
                self.inflate(handle, body_at, compressed, uncompressed, 0)?;
                let page = std::mem::take(&mut self.page);
                let result = (|| {
                    let rows = self.row_count(values)?;
                    let (def, rest) = if self.nullable {
                        let len = page
                            .get(..4)
                            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                            .ok_or_else(|| self.damaged("a data page too short for its levels"))?;
                        if page.len() < 4 + len {
                            return Err(self.damaged("definition levels run past their page"));
                        }
                        (Some(&page[4..4 + len]), &page[4 + len..])
                    } else {
                        (None, &page[..])
                    };
                    self.decode_page(rows, def, rest, encoding)
                })();
                self.page = page;
                result?;
                Ok(true)
            }
            PageType::DATA_PAGE_V2 => {
                let Some(data) = &header.data_page_header_v2 else {
                    return Err(self.damaged("a data page without its header"));
                };
                let levels = usize::try_from(data.definition_levels_byte_length)
                    .ok()
                    .zip(usize::try_from(data.repetition_levels_byte_length).ok())
                    .filter(|(d, r)| d + r <= compressed && *r == 0)
                    .ok_or_else(|| self.damaged("data page levels do not fit their page"))?;
                let compressed_values = data.is_compressed.unwrap_or(true);
                let (values, encoding) = (data.num_values, data.encoding);
                if compressed_values {
                    self.inflate(handle, body_at, compressed, uncompressed, levels.0)?;
                } else {
                    let start = self.load(handle, body_at, compressed)?;
                    self.page.clear();
                    self.page
                        .extend_from_slice(&self.window[start..start + compressed]);
                }
                let page = std::mem::take(&mut self.page);
                let result = (|| {
                    let rows = self.row_count(values)?;
                    let def = self.nullable.then(|| &page[..levels.0.min(page.len())]);
                    let rest = page.get(levels.0..).unwrap_or_default();
                    self.decode_page(rows, def, rest, encoding)
                })();
                self.page = page;
                result?;
                Ok(true)
            }
            _ => Ok(true),
        }
    }

    /// The rows a data page claims, within what its row group has left; a page of more than
    /// [`MAX_PAGE_ROWS`] (its codes would be held at once) goes to the general reader.
    fn row_count(&mut self, values: i32) -> Result<usize, Stop> {
        let rows = usize::try_from(values)
            .ok()
            .filter(|&n| n <= self.remaining)
            .ok_or_else(|| {
                self.damaged(format!(
                    "a page claims {values} rows where the row group has {} left",
                    self.remaining
                ))
            })?;
        if rows > MAX_PAGE_ROWS {
            return Err(Stop::Unsupported(format!("a page of {rows} rows")));
        }
        self.remaining -= rows;
        Ok(rows)
    }

    /// Reads a page body into `self.page`, decompressed; the first `plain` bytes (a v2 page's
    /// levels) are stored uncompressed.
    fn inflate(
        &mut self,
        handle: &File,
        at: u64,
        compressed: usize,
        uncompressed: usize,
        plain: usize,
    ) -> Result<(), Stop> {
        let start = self.load(handle, at, compressed)?;
        let body = &self.window[start..start + compressed];
        self.page.clear();
        if self.compression == Compression::Uncompressed {
            self.page.extend_from_slice(body);
            return Ok(());
        }
        if plain > uncompressed {
            return Err(self.damaged("page levels larger than the page"));
        }
        self.page.resize(uncompressed, 0);
        self.page[..plain].copy_from_slice(&body[..plain]);
        if compressed > plain
            && let Err(e) = decompress(
                self.compression,
                &body[plain..],
                &mut self.page[plain..],
                &mut self.context,
            )
        {
            return Err(self.damaged(format!("a page does not decompress ({e})")));
        }
        Ok(())
    }

    /// Calls `each` on the `count` plain-encoded byte arrays at the start of `bytes`.
    fn plain_values(
        &mut self,
        bytes: &[u8],
        count: usize,
        mut each: impl FnMut(&mut Self, &[u8]),
    ) -> Result<(), Stop> {
        let mut rest = bytes;
        for _ in 0..count {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return Err(self.damaged("a value runs past its page"));
            };
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return Err(self.damaged("a value runs past its page"));
            }
            each(self, &tail[..len]);
            rest = &tail[len..];
        }
        Ok(())
    }

    /// Decodes a data page of `rows` rows into `self.codes`.
    fn decode_page(
        &mut self,
        rows: usize,
        def: Option<&[u8]>,
        values: &[u8],
        encoding: Encoding,
    ) -> Result<(), Stop> {
        self.seen_data = true;
        self.codes.drain(..self.at);
        self.at = 0;
        // Which rows hold a value (the others are nulls, code 0).
        let present: Option<Vec<bool>> = match def {
            None => None,
            Some(def) => {
                let mut present = Vec::with_capacity(rows);
                for chunk in HybridRleDecoder::new(def, 1, rows).into_chunk_iter() {
                    match chunk.map_err(|e| self.damaged(format!("bad definition levels ({e})")))? {
                        HybridRleChunk::Rle(v, n) => present.extend(std::iter::repeat_n(v == 1, n)),
                        HybridRleChunk::Bitpacked(d) => {
                            let mut levels = Vec::new();
                            d.collect_into(&mut levels);
                            present.extend(levels.into_iter().map(|v| v == 1));
                        }
                    }
                }
                if present.len() != rows {
                    return Err(self.damaged("fewer definition levels than rows"));
                }
                Some(present)
            }
        };
        let filled = present
            .as_ref()
            .map_or(rows, |p| p.iter().filter(|&&v| v).count());
        let mut decoded: Vec<u32> = Vec::with_capacity(filled);
        if encoding == Encoding::RLE_DICTIONARY || encoding == Encoding::PLAIN_DICTIONARY {
            let Some((&width, indices)) = values.split_first() else {
                if filled == 0 {
                    self.place(rows, present, decoded);
                    return Ok(());
                }
                return Err(self.damaged("a dictionary page without its indices"));
            };
            if width > 32 {
                return Err(self.damaged(format!("dictionary indices {width} bits wide")));
            }
            for chunk in HybridRleDecoder::new(indices, u32::from(width), filled).into_chunk_iter()
            {
                match chunk.map_err(|e| self.damaged(format!("bad dictionary indices ({e})")))? {
                    HybridRleChunk::Rle(v, n) => decoded.extend(std::iter::repeat_n(v, n)),
                    HybridRleChunk::Bitpacked(d) => d.collect_into(&mut decoded),
                }
            }
            if decoded.len() != filled {
                return Err(self.damaged("fewer dictionary indices than values"));
            }
            let entries = self.dictionary.len();
            for i in decoded.iter_mut() {
                match self.dictionary.get(*i as usize) {
                    Some(&code) => *i = code,
                    None => {
                        return Err(self.damaged(format!(
                            "a dictionary index beyond the dictionary's {entries} entries"
                        )));
                    }
                }
            }
        } else if encoding == Encoding::PLAIN {
            self.plain_values(values, filled, |col, v| decoded.push(col.intern(v)))?;
        } else {
            return Err(Stop::Unsupported(format!("page encoding {encoding:?}")));
        }
        self.place(rows, present, decoded);
        Ok(())
    }

    /// Appends a page's codes: `decoded` are the non-null rows' codes in order.
    fn place(&mut self, rows: usize, present: Option<Vec<bool>>, decoded: Vec<u32>) {
        match present {
            None => self.codes.extend(decoded),
            Some(present) => {
                let mut values = decoded.into_iter();
                self.codes.reserve(rows);
                for p in present {
                    self.codes
                        .push(if p { values.next().unwrap_or(0) } else { 0 });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::{ParquetReader, SerReader};

    /// Which fixtures the code counter reads itself (the rest go to polars).
    #[test]
    fn dictionary_and_plain_pages_are_counted_on_codes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parquet");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "parquet") {
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let handle = File::open(&path).unwrap();
            let metadata = ParquetReader::new(File::open(&path).unwrap())
                .get_metadata()
                .unwrap()
                .clone();
            let names = [
                "distribution",
                "distro_version",
                "architecture",
                "kernel_version",
            ];
            let counted = count(&name, &handle, &metadata, names, 2).unwrap();
            // Only the delta-encoded kernel column is left to the general reader.
            assert_eq!(counted.is_some(), !name.contains("delta"), "{name}");
        }
    }
}
