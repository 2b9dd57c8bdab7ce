//! Counting CSV rows per distinct identity without keeping the rows: memory is bounded by the
//! number of identities (a few thousand), not by the number of nodes.
//!
//! Two readers fill the same [`Tally`]: a parallel line scanner (the file split into one byte
//! range per core, `memchr` over each line) and the `csv` crate, which reads everything exactly
//! (quoted newlines, lone carriage returns) one record at a time. The scanner gives up, and the
//! exact reader takes over, as soon as a line is not one whole record. Both check a row the same
//! way, so identities, counts and bad rows (file:line) are the same whichever ran.

use super::{BadRow, COLUMNS, FleetGroups, MAX_LISTED_BAD_ROWS, RawGroup};
use std::collections::HashMap;

/// Randomly seeded: a crafted inventory cannot pick colliding keys.
type Map<V> = HashMap<Vec<u8>, V, foldhash::fast::RandomState>;

/// Rows counted per identity key, and the bad rows with their lines.
#[derive(Default)]
pub(super) struct Tally {
    good: Map<u64>,
    /// Keys already found bad, with the reason: checked once per distinct key.
    bad_keys: Map<String>,
    /// (line, reason), the first [`MAX_LISTED_BAD_ROWS`] by line.
    bad: Vec<(u64, String)>,
    bad_count: u64,
    key: Vec<u8>,
    /// Good rows counted by the raw bytes of their four identity fields, commas included, where
    /// the fields are adjacent and unquoted (the scanner's common case): no key is built per row.
    spans: SpanCounts,
    /// Nodes per identity that have its kernel installed without running it.
    next_boot: Map<u64>,
}

/// The four fields of a span (adjacent unquoted fields, three commas).
fn span_fields(span: &[u8]) -> [&[u8]; 4] {
    let mut parts = span.splitn(4, |&b| b == b',');
    std::array::from_fn(|_| parts.next().unwrap_or_default())
}

/// Why a row is bad, checked field by field in column order (as the exact reader always did).
fn key_problem(fields: &[&[u8]; 4]) -> Option<String> {
    for (k, raw) in fields.iter().enumerate() {
        if std::str::from_utf8(raw).is_err() {
            return Some(format!("{} is not valid UTF-8", COLUMNS[k]));
        }
        if raw.is_empty() {
            return Some(format!("{} is empty", COLUMNS[k]));
        }
    }
    None
}

impl Tally {
    /// Counts one record: `count` fields in all, `fields` the four identity fields.
    pub(super) fn record(&mut self, line: u64, count: usize, width: usize, fields: [&[u8]; 4]) {
        if count != width {
            self.add_bad(
                line,
                format!("has {count} fields but the header has {width}"),
            );
            return;
        }
        self.set_key(&fields);
        if let Some(n) = self.good.get_mut(self.key.as_slice()) {
            *n += 1;
            return;
        }
        if let Some(reason) = self.bad_keys.get(self.key.as_slice()) {
            let reason = reason.clone();
            self.add_bad(line, reason);
            return;
        }
        match key_problem(&fields) {
            None => {
                self.good.insert(self.key.clone(), 1);
            }
            Some(reason) => {
                self.bad_keys.insert(self.key.clone(), reason.clone());
                self.add_bad(line, reason);
            }
        }
    }

    /// Counts one unquoted record of `count` fields whose four identity fields are adjacent:
    /// `span` is their bytes from the first field's start to the last one's end (three commas).
    #[inline]
    pub(super) fn record_span(&mut self, line: u64, count: usize, width: usize, span: &[u8]) {
        if count == width {
            let hash = self.spans.hash(span);
            if self.spans.add(hash, span, 1) {
                return;
            }
            if key_problem(&span_fields(span)).is_none() && self.spans.insert(hash, span, 1) {
                return;
            }
        }
        self.record(line, count, width, span_fields(span));
    }

    /// Counts a good row's installed kernels (its `installed_kernels` field) as next-boot
    /// demand on its distribution, release and architecture.
    pub(super) fn record_next_boot(&mut self, fields: [&[u8]; 4], installed: &[u8]) {
        if key_problem(&fields).is_some() {
            return;
        }
        let (Ok(installed), Ok(running)) = (
            std::str::from_utf8(installed),
            std::str::from_utf8(fields[3]),
        ) else {
            return;
        };
        for kernel in super::next_boot_kernels(installed, running) {
            self.set_key(&[fields[0], fields[1], fields[2], kernel.as_bytes()]);
            match self.next_boot.get_mut(self.key.as_slice()) {
                Some(n) => *n += 1,
                None => {
                    self.next_boot.insert(self.key.clone(), 1);
                }
            }
        }
    }

    /// Moves the span counts into the keyed counts.
    fn fold_spans(&mut self) {
        let spans = std::mem::take(&mut self.spans);
        for (span, n) in spans.iter() {
            self.record_many(span_fields(span), n);
        }
    }

    /// Whether rows of this identity are counted (the others are bad rows).
    pub(super) fn is_good(fields: [&[u8]; 4]) -> bool {
        key_problem(&fields).is_none()
    }

    /// Counts `n` rows of one good identity ([`Tally::is_good`]).
    pub(super) fn record_many(&mut self, fields: [&[u8]; 4], n: u64) {
        self.set_key(&fields);
        match self.good.get_mut(self.key.as_slice()) {
            Some(count) => *count += n,
            None => {
                self.good.insert(self.key.clone(), n);
            }
        }
    }

    fn set_key(&mut self, fields: &[&[u8]; 4]) {
        self.key.clear();
        for f in fields {
            self.key
                .extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_le_bytes());
            self.key.extend_from_slice(f);
        }
    }

    fn add_bad(&mut self, line: u64, reason: String) {
        self.bad_count += 1;
        if self.bad.len() < MAX_LISTED_BAD_ROWS {
            self.bad.push((line, reason));
        }
    }

    /// Adds another tally whose lines are `offset` further down the file.
    pub(super) fn merge(&mut self, other: Tally, offset: u64) {
        for (span, n) in other.spans.iter() {
            let hash = self.spans.hash(span);
            if !self.spans.add(hash, span, n) && !self.spans.insert(hash, span, n) {
                self.record_many(span_fields(span), n);
            }
        }
        for (k, n) in other.good {
            *self.good.entry(k).or_insert(0) += n;
        }
        for (k, n) in other.next_boot {
            *self.next_boot.entry(k).or_insert(0) += n;
        }
        self.bad_count += other.bad_count;
        self.bad
            .extend(other.bad.into_iter().map(|(l, r)| (l + offset, r)));
        self.bad.sort_by_key(|(l, _)| *l);
        self.bad.truncate(MAX_LISTED_BAD_ROWS);
    }

    /// Moves the counts and bad rows into the fleet; bad rows are named by their line, or for a
    /// table without lines (Parquet) by their row in the reason.
    pub(super) fn absorb(mut self, file: &str, fleet: &mut FleetGroups, at: Position) {
        self.fold_spans();
        // Exactly, for the first file (the common case): growing by doubling left up to half
        // the table unused; amortised for the files after it.
        let adding = self.good.len() + self.next_boot.len();
        if fleet.groups.is_empty() {
            fleet.groups.reserve_exact(adding);
        } else {
            fleet.groups.reserve(adding);
        }
        let running = self.good.into_iter().map(|(key, n)| (key, n, 0));
        let next_boot = self.next_boot.into_iter().map(|(key, n)| (key, 0, n));
        for (key, nodes, next_boot) in running.chain(next_boot) {
            let mut fields = decode(&key).into_iter();
            let mut next = || fields.next().unwrap_or_default();
            fleet.groups.push(RawGroup {
                distribution: next(),
                distro_version: next(),
                architecture: next(),
                kernel_version: next(),
                os_image: None,
                context: None,
                nodes,
                next_boot,
            });
        }
        let listed = self.bad.len() as u64;
        for (n, reason) in self.bad {
            fleet.add_bad(match at {
                Position::Line => BadRow {
                    file: file.to_string(),
                    line: Some(n),
                    reason,
                },
                Position::Row => BadRow {
                    file: file.to_string(),
                    line: None,
                    reason: format!("row {n}: {reason}"),
                },
            });
        }
        fleet.bad_row_count += self.bad_count.saturating_sub(listed);
    }
}

/// Counts per distinct span (a row's identity fields as they stand in the file), the spans kept
/// end to end in one arena. The table holds only an offset, a length and the count, so a
/// lookup touches one small entry and the arena instead of a separate allocation per key: at
/// 12,000 identities table and arena stay within a core's L2 cache.
#[derive(Default)]
struct SpanCounts {
    table: hashbrown::HashTable<SpanEntry>,
    arena: Vec<u8>,
    /// Randomly seeded: a crafted inventory cannot pick colliding spans.
    state: foldhash::fast::RandomState,
}

#[derive(Clone, Copy)]
struct SpanEntry {
    start: u32,
    len: u32,
    count: u64,
}

impl SpanCounts {
    fn hash(&self, span: &[u8]) -> u64 {
        std::hash::BuildHasher::hash_one(&self.state, span)
    }

    fn bytes<'a>(arena: &'a [u8], e: &SpanEntry) -> &'a [u8] {
        &arena[e.start as usize..e.start as usize + e.len as usize]
    }

    /// Adds `n` to the count of `span` (whose hash is `hash`) if it is counted already.
    #[inline]
    fn add(&mut self, hash: u64, span: &[u8], n: u64) -> bool {
        let arena = &self.arena;
        match self
            .table
            .find_mut(hash, |e| same(Self::bytes(arena, e), span))
        {
            Some(e) => {
                e.count += n;
                true
            }
            None => false,
        }
    }

    /// Counts a new span `n` times; false when the arena is full (4 GiB of distinct spans),
    /// and the caller counts it another way.
    fn insert(&mut self, hash: u64, span: &[u8], n: u64) -> bool {
        let (Ok(start), Ok(len)) = (u32::try_from(self.arena.len()), u32::try_from(span.len()))
        else {
            return false;
        };
        if start.checked_add(len).is_none() {
            return false;
        }
        self.arena.extend_from_slice(span);
        let (arena, state) = (&self.arena, &self.state);
        self.table.insert_unique(
            hash,
            SpanEntry {
                start,
                len,
                count: n,
            },
            |e| std::hash::BuildHasher::hash_one(state, Self::bytes(arena, e)),
        );
        true
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> {
        self.table
            .iter()
            .map(|e| (Self::bytes(&self.arena, e), e.count))
    }
}

/// Whether two spans are equal, compared eight bytes at a time inline (a span is a few dozen
/// bytes: a call to `memcmp` per lookup cost more than the comparison).
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a, mut b) = (a, b);
    while let (Some((x, rest_a)), Some((y, rest_b))) =
        (a.split_first_chunk::<8>(), b.split_first_chunk::<8>())
    {
        if u64::from_ne_bytes(*x) != u64::from_ne_bytes(*y) {
            return false;
        }
        (a, b) = (rest_a, rest_b);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// What the numbers a [`Tally`] records bad rows by are.
pub(super) enum Position {
    /// 1-based lines of a text file.
    Line,
    /// 1-based rows of a table.
    Row,
}

/// The four fields of a key (valid UTF-8: only good keys are decoded).
fn decode(mut key: &[u8]) -> Vec<String> {
    let mut out = Vec::with_capacity(4);
    while key.len() >= 4 {
        let len = u32::from_le_bytes([key[0], key[1], key[2], key[3]]) as usize;
        let end = (4 + len).min(key.len());
        out.push(String::from_utf8_lossy(&key[4..end]).into_owned());
        key = &key[end..];
    }
    out
}

/// Bytes that can be read at an offset: a file (each thread reads its own range) or memory.
pub(super) trait Source: Sync {
    fn len(&self) -> std::io::Result<u64>;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
}

impl Source for std::fs::File {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl Source for Vec<u8> {
    fn len(&self) -> std::io::Result<u64> {
        Ok(Vec::len(self) as u64)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(Vec::len(self));
        let n = buf.len().min(Vec::len(self) - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// Where the records are and what they look like.
#[derive(Clone, Copy)]
pub(super) struct Layout {
    /// Byte offset of the first data record (after the header).
    pub data_start: u64,
    /// Line number of the first data record.
    pub first_line: u64,
    /// Where the four identity columns are.
    pub positions: [usize; 4],
    /// Where the installed-kernels column is, if the file has one (read by the exact reader).
    pub installed: Option<usize>,
    /// Fields in the header.
    pub width: usize,
}

/// Read size per thread; a line longer than this sends the file to the exact reader.
const CHUNK: usize = 256 << 10;
/// Below this, one thread.
const PARALLEL_FROM: u64 = 8 << 20;

/// Why the scanner stopped.
pub(super) enum Stop {
    /// A line is not one record (a quoted newline, a lone `\r`) or is too long: read exactly.
    NotLines,
    Io(std::io::Error),
}

/// Counts the records of `source` with one thread per core.
pub(super) fn scan(source: &dyn Source, layout: Layout) -> Result<Tally, Stop> {
    let len = source.len().map_err(Stop::Io)?;
    let size = len.saturating_sub(layout.data_start);
    let threads = if size < PARALLEL_FROM {
        1
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(16) as u64
    };
    let bounds: Vec<u64> = (0..=threads)
        .map(|i| layout.data_start + size * i / threads)
        .collect();
    let parts = on_threads(
        threads as usize,
        |i| scan_range(source, layout, bounds[i], bounds[i + 1], len),
        // A range that panicked is read again by the exact reader.
        || Stop::NotLines,
    );
    let mut total = Tally::default();
    let mut lines_before = 0u64;
    for part in parts {
        let (tally, lines) = part?;
        total.merge(tally, layout.first_line + lines_before);
        lines_before += lines;
    }
    Ok(total)
}

/// Runs `work(0..n)` on `n` threads and returns their results in order; a thread that panicked
/// gives `panicked()`.
pub(super) fn on_threads<T: Send, E: Send>(
    n: usize,
    work: impl Fn(usize) -> Result<T, E> + Sync,
    panicked: impl Fn() -> E,
) -> Vec<Result<T, E>> {
    std::thread::scope(|s| {
        let work = &work;
        let handles: Vec<_> = (0..n).map(|i| s.spawn(move || work(i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(panicked())))
            .collect()
    })
}

/// Counts the lines that start in `[start, end)`. Returns the tally (lines relative to the
/// range's first line, 0-based) and how many physical lines started in the range.
fn scan_range(
    source: &dyn Source,
    layout: Layout,
    start: u64,
    end: u64,
    len: u64,
) -> Result<(Tally, u64), Stop> {
    let mut tally = Tally::default();
    let mut buf = vec![0u8; CHUNK];
    // A line starts at `start` only if the byte before it ends a line: read from one byte
    // earlier and skip to the first line start.
    let mut pos = if start > layout.data_start {
        start - 1
    } else {
        start
    };
    let mut skip_partial = start > layout.data_start;
    let mut lines = 0u64;
    let mut filled = 0usize;
    let mut line_start_pos = pos;
    loop {
        if line_start_pos >= end {
            break;
        }
        let n = source.read_at(&mut buf[filled..], pos).map_err(Stop::Io)?;
        super::progress().add_read(n as u64);
        pos += n as u64;
        filled += n;
        let at_eof = pos >= len || n == 0;
        let mut cursor = 0usize;
        if !skip_partial {
            let (used, counted) = clean_lines(
                &mut tally,
                lines,
                &buf[..filled],
                line_start_pos,
                end,
                layout,
            );
            cursor = used;
            lines += counted;
            line_start_pos += used as u64;
        }
        while line_start_pos < end {
            let rest = &buf[cursor..filled];
            let (line, next) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], cursor + i + 1),
                None if at_eof && !rest.is_empty() => (rest, filled),
                None => break,
            };
            if skip_partial {
                skip_partial = false;
            } else {
                on_line(&mut tally, lines, line, layout)?;
                lines += 1;
            }
            line_start_pos += (next - cursor) as u64;
            cursor = next;
        }
        if at_eof {
            break;
        }
        if cursor == 0 && filled == buf.len() {
            return Err(Stop::NotLines);
        }
        buf.copy_within(cursor..filled, 0);
        filled -= cursor;
    }
    Ok((tally, lines))
}

/// Counts the whole lines at the start of `buf` (the first starts at file offset `at`) that
/// start before `end`, in one pass over their commas and newlines, when none of them holds a
/// quote or a carriage return other than a CRLF's; returns the bytes and lines used. Anything
/// else is left to the line-by-line reader (nothing is used when the buffer holds one).
fn clean_lines(
    tally: &mut Tally,
    first_line: u64,
    buf: &[u8],
    at: u64,
    end: u64,
    layout: Layout,
) -> (usize, u64) {
    let Some(last) = memchr::memrchr(b'\n', buf) else {
        return (0, 0);
    };
    let region = &buf[..last + 1];
    // A `\r` is allowed only as the end of a CRLF line break.
    if memchr::memchr(b'"', region).is_some()
        || memchr::memchr_iter(b'\r', region).any(|r| region.get(r + 1) != Some(&b'\n'))
    {
        return (0, 0);
    }
    let p = layout.positions;
    if (1..4).all(|k| p[k] == p[0] + k) {
        return adjacent_lines(tally, first_line, region, at, end, layout);
    }
    let mut fields: [&[u8]; 4] = [&[]; 4];
    let (mut count, mut field_start, mut line_start) = (0usize, 0usize, 0usize);
    let mut lines = 0u64;
    for_each_delimiter(region, |i| {
        if at + line_start as u64 >= end {
            return false;
        }
        let newline = region[i] == b'\n';
        let field_end = if newline && i > field_start && region[i - 1] == b'\r' {
            i - 1
        } else {
            i
        };
        take(&mut fields, &p, count, &region[field_start..field_end]);
        count += 1;
        field_start = i + 1;
        if newline {
            if field_end > line_start {
                tally.record(first_line + lines, count, layout.width, fields);
            }
            lines += 1;
            fields = [&[]; 4];
            count = 0;
            line_start = i + 1;
        }
        true
    });
    (line_start, lines)
}

/// [`clean_lines`] where the four identity columns are adjacent (the common layout): only the
/// commas before and after them are noted, and each row is counted by that span of bytes.
fn adjacent_lines(
    tally: &mut Tally,
    first_line: u64,
    region: &[u8],
    at: u64,
    end: u64,
    layout: Layout,
) -> (usize, u64) {
    if at >= end {
        return (0, 0);
    }
    // The identity fields are fields `first..=last`: they start after comma `first` (or at the
    // line's start) and end at comma `last + 1` (or at the line's end).
    let (first, last) = (layout.positions[0], layout.positions[3]);
    let (mut commas, mut line_start, mut lines) = (0usize, 0usize, 0u64);
    let (mut span_start, mut span_end) = (0usize, 0usize);
    for_each_delimiter(region, |i| {
        if region[i] == b',' {
            commas += 1;
            if commas == first {
                span_start = i + 1;
            } else if commas == last + 1 {
                span_end = i;
            }
            return true;
        }
        let line_end = if i > line_start && region[i - 1] == b'\r' {
            i - 1
        } else {
            i
        };
        if line_end > line_start {
            let (line_no, count) = (first_line + lines, commas + 1);
            if count > last {
                let from = if first == 0 { line_start } else { span_start };
                let to = if commas == last { line_end } else { span_end };
                tally.record_span(line_no, count, layout.width, &region[from..to]);
            } else {
                // Too few fields: a bad row whatever its fields hold.
                tally.record(line_no, count, layout.width, [&[]; 4]);
            }
        }
        lines += 1;
        commas = 0;
        line_start = i + 1;
        at + (line_start as u64) < end
    });
    (line_start, lines)
}

/// Calls `f` with the index of each `,` and `\n` of `bytes`, in order, until it returns false.
/// 64 bytes at a time: a mask of the delimiters' positions, then its set bits. Searching for the
/// next delimiter from each one instead (`memchr2`) paid a search's setup for every field of a
/// few bytes.
#[inline]
fn for_each_delimiter(bytes: &[u8], mut f: impl FnMut(usize) -> bool) {
    let mut blocks = bytes.chunks_exact(64);
    let mut base = 0usize;
    for block in &mut blocks {
        let mut mask = delimiter_mask(block);
        while mask != 0 {
            if !f(base + mask.trailing_zeros() as usize) {
                return;
            }
            mask &= mask - 1;
        }
        base += 64;
    }
    for (i, &b) in blocks.remainder().iter().enumerate() {
        if (b == b',' || b == b'\n') && !f(base + i) {
            return;
        }
    }
}

/// Bit `i` set where `block[i]` (64 bytes) is `,` or `\n`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn delimiter_mask(block: &[u8]) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let mut mask = 0u64;
    // SAFETY: SSE2 is part of every x86_64 target, so the intrinsics run on any x86_64 CPU;
    // each `lane` is 16 readable bytes, and `_mm_loadu_si128` takes any alignment.
    unsafe {
        let (comma, newline) = (_mm_set1_epi8(b',' as i8), _mm_set1_epi8(b'\n' as i8));
        for (k, lane) in block.chunks_exact(16).take(4).enumerate() {
            let v = _mm_loadu_si128(lane.as_ptr().cast::<__m128i>());
            let hits = _mm_or_si128(_mm_cmpeq_epi8(v, comma), _mm_cmpeq_epi8(v, newline));
            mask |= u64::from(_mm_movemask_epi8(hits) as u16) << (16 * k);
        }
    }
    mask
}

/// Bit `i` set where `block[i]` (64 bytes) is `,` or `\n`.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn delimiter_mask(block: &[u8]) -> u64 {
    block
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b',' || b == b'\n')
        .fold(0, |mask, (i, _)| mask | 1 << i)
}

/// One physical line (without its `\n`).
fn on_line(tally: &mut Tally, line_no: u64, mut line: &[u8], layout: Layout) -> Result<(), Stop> {
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    if line.is_empty() {
        return Ok(());
    }
    let mut fields: [&[u8]; 4] = [&[]; 4];
    let mut count = 0usize;
    let mut field_start = 0usize;
    let mut at = 0usize;
    loop {
        match memchr::memchr3(b',', b'"', b'\r', &line[at..]) {
            Some(i) if line[at + i] == b',' => {
                take(
                    &mut fields,
                    &layout.positions,
                    count,
                    &line[field_start..at + i],
                );
                count += 1;
                at += i + 1;
                field_start = at;
            }
            Some(_) => return quoted_line(tally, line_no, line, layout),
            None => {
                take(&mut fields, &layout.positions, count, &line[field_start..]);
                count += 1;
                break;
            }
        }
    }
    tally.record(line_no, count, layout.width, fields);
    Ok(())
}

fn take<'a>(fields: &mut [&'a [u8]; 4], positions: &[usize; 4], index: usize, value: &'a [u8]) {
    for (k, &p) in positions.iter().enumerate() {
        if p == index {
            fields[k] = value;
        }
    }
}

/// A line with quotes, read the way the `csv` crate reads a record (RFC 4180 with doubled
/// quotes; bytes after a closing quote join the field). A line that ends inside quotes, or a
/// `\r` outside quotes, is not one record.
fn quoted_line(tally: &mut Tally, line_no: u64, line: &[u8], layout: Layout) -> Result<(), Stop> {
    #[derive(PartialEq)]
    enum State {
        Start,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let mut owned: [Vec<u8>; 4] = Default::default();
    let mut current = Vec::new();
    let mut count = 0usize;
    let mut state = State::Start;
    let mut finish = |current: &mut Vec<u8>, count: &mut usize| {
        for (k, &p) in layout.positions.iter().enumerate() {
            if p == *count {
                owned[k] = current.clone();
            }
        }
        current.clear();
        *count += 1;
    };
    for &b in line {
        state = match (state, b) {
            (State::Quoted, b'"') => State::QuoteInQuoted,
            (State::Quoted, b) => {
                current.push(b);
                State::Quoted
            }
            (State::QuoteInQuoted, b'"') => {
                current.push(b'"');
                State::Quoted
            }
            (_, b'\r') => return Err(Stop::NotLines),
            (_, b',') => {
                finish(&mut current, &mut count);
                State::Start
            }
            (State::Start, b'"') => State::Quoted,
            (_, b) => {
                current.push(b);
                State::Unquoted
            }
        };
    }
    if state == State::Quoted {
        return Err(Stop::NotLines);
    }
    finish(&mut current, &mut count);
    let [a, b, c, d] = &owned;
    tally.record(line_no, count, layout.width, [a, b, c, d]);
    Ok(())
}
