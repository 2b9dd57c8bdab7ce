//! Fleet inventory readers (CSV, Kubernetes NodeList, JSON Lines; optionally gzipped), reduced
//! by polars to one row per distinct raw identity with its node count.

mod csv;
mod json;
pub mod kube;
mod nodes;
mod parquet;
mod parquet_codes;
mod tally;

pub use nodes::{NodeEntry, NodesOf, nodes_of};

/// How far inventory reading has got, in bytes: what a progress bar shows while a 100M-node file
/// is read. Readers add to it as they go; the command layer reads it.
#[derive(Debug, Default)]
pub struct Progress {
    read: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
}

impl Progress {
    pub fn read(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }
    pub fn total(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }
    pub(crate) fn add_read(&self, bytes: u64) {
        self.read
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
    fn add_total(&self, bytes: u64) {
        self.total
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

static PROGRESS: Progress = Progress {
    read: std::sync::atomic::AtomicU64::new(0),
    total: std::sync::atomic::AtomicU64::new(0),
};

/// This process's inventory reading so far.
pub fn progress() -> &'static Progress {
    &PROGRESS
}

use crate::text::Cause;
use polars::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Canonical column names of the inventory frame.
pub const COLUMNS: [&str; 4] = [
    "distribution",
    "distro_version",
    "architecture",
    "kernel_version",
];
/// The Kubernetes osImage a row was derived from (null for CSV and JSON Lines).
pub const OS_IMAGE: &str = "os_image";
/// The CSV column and JSON Lines field that list the kernels a node has installed besides the
/// one it runs (Kubernetes nodes say it in [`crate::readiness::INSTALLED_ANNOTATION`]).
pub const INSTALLED_KERNELS: &str = "installed_kernels";

/// The kernels a node may boot next: those in its installed list (separated by spaces, commas or
/// semicolons) other than the one it runs, each once.
pub fn next_boot_kernels<'a>(installed: &'a str, running: &str) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for kernel in installed.split([' ', '\t', ',', ';']) {
        if !kernel.is_empty() && kernel != running && !out.contains(&kernel) {
            out.push(kernel);
        }
    }
    out
}

/// Nodes per raw identity that have it installed but do not run it, gathered while reading;
/// [`NextBoot::into_groups`] makes them groups of their own (no running nodes).
#[derive(Default)]
pub(crate) struct NextBoot(std::collections::HashMap<([String; 4], Option<String>), u64>);

impl NextBoot {
    /// Counts `n` nodes of `running` (on `os_image`, where the identity came from one) that have
    /// the kernels of `installed` too.
    pub(crate) fn add(
        &mut self,
        running: [&str; 4],
        os_image: Option<&str>,
        installed: &str,
        n: u64,
    ) {
        for kernel in next_boot_kernels(installed, running[3]) {
            let key = [running[0], running[1], running[2], kernel].map(str::to_string);
            *self
                .0
                .entry((key, os_image.map(str::to_string)))
                .or_default() += n;
        }
    }

    /// The demand as groups of their own, seen in `context`.
    pub(crate) fn into_groups(self, context: Option<&str>) -> Vec<RawGroup> {
        let mut groups: Vec<RawGroup> = self
            .0
            .into_iter()
            .map(
                |(([distribution, distro_version, architecture, kernel_version], os_image), n)| {
                    RawGroup {
                        distribution,
                        distro_version,
                        architecture,
                        kernel_version,
                        os_image,
                        context: context.map(str::to_string),
                        nodes: 0,
                        next_boot: n,
                    }
                },
            )
            .collect();
        groups.sort_by(|a, b| a.kernel_version.cmp(&b.kernel_version));
        groups
    }
}
/// Bad rows listed individually; the rest are only counted.
pub const MAX_LISTED_BAD_ROWS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error(
        "{file}: no {column} column (looked for {aliases}); the header has: {found}. Rename the column or add it"
    )]
    MissingColumn {
        file: String,
        column: &'static str,
        aliases: String,
        found: String,
    },
    #[error("{file}: {source}")]
    Format { file: String, source: Cause },
    #[error("{file}: the polars pipeline failed: {source}")]
    Polars { file: String, source: PolarsError },
    #[error("{count} bad inventory row(s) in a strict read; first: {first}")]
    Strict { count: u64, first: String },
}

/// A row that could not be read, with where it is and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BadRow {
    pub file: String,
    /// 1-based line; `None` for documents addressed by item (NodeList `items[i]`).
    pub line: Option<u64>,
    pub reason: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// One distinct raw identity in the fleet and how many nodes run it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawGroup {
    pub distribution: String,
    pub distro_version: String,
    pub architecture: String,
    pub kernel_version: String,
    pub os_image: Option<String>,
    /// The kube context the nodes were seen in (`None` for files).
    pub context: Option<String>,
    pub nodes: u64,
    /// Nodes that have this kernel installed without running it: they may boot into it next.
    pub next_boot: u64,
}

/// The fleet reduced to distinct raw identities.
#[derive(Clone, Debug, Default)]
pub struct FleetGroups {
    pub files: Vec<String>,
    pub groups: Vec<RawGroup>,
    pub bad_rows: Vec<BadRow>,
    pub bad_row_count: u64,
}

impl FleetGroups {
    /// Adds another reading's files, groups and bad rows (listed up to the limit, the rest
    /// counted) to this one.
    pub(crate) fn extend(&mut self, other: FleetGroups) {
        let only_counted = other.bad_row_count - other.bad_rows.len() as u64;
        self.files.extend(other.files);
        self.groups.extend(other.groups);
        for bad in other.bad_rows {
            self.add_bad(bad);
        }
        self.bad_row_count += only_counted;
    }

    fn add_bad(&mut self, row: BadRow) {
        self.bad_row_count += 1;
        if self.bad_rows.len() < MAX_LISTED_BAD_ROWS {
            self.bad_rows.push(row);
        }
    }
}

/// Longest inventory line accepted from a compressed file (a node row is ~100 bytes; a NodeList
/// from kubectl is indented JSON, one field per line).
const MAX_LINE: usize = 16 << 20;

/// The inventory path that means standard input (`kubectl get nodes -o json | kfleet report -i -`).
pub const STDIN: &str = "-";
/// Most bytes read from standard input (a file is read in place instead, with no such limit).
const MAX_STDIN: u64 = 2 << 30;

/// An inventory piped in: CSV, a NodeList or JSON Lines (gzipped too), told apart by content as
/// files are; kept in memory up to [`MAX_STDIN`].
fn load_stdin() -> Result<(String, Loaded), InventoryError> {
    let file = "standard input".to_string();
    let limits = crate::bounded::Limits {
        max_bytes: MAX_STDIN,
        max_line: Some(MAX_LINE),
    };
    let too_much = |e: crate::bounded::BoundedError| InventoryError::Format {
        file: file.clone(),
        source: Cause::from(format!(
            "{e}; write it to a file and pass the file (files are read in place)"
        )),
    };
    let mut bytes =
        crate::bounded::read_to_end(std::io::stdin().lock(), limits).map_err(too_much)?;
    if bytes.starts_with(parquet::MAGIC) {
        return Err(InventoryError::Format {
            file,
            source: Cause::from(
                "Parquet is read from its footer, which needs a file: pass the file instead of -",
            ),
        });
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let decoder = flate2::read::MultiGzDecoder::new(&bytes[..]);
        bytes = crate::bounded::read_to_end(decoder, limits).map_err(too_much)?;
    }
    let data = Data::Bytes(bytes);
    let loaded = match sniff(&data).map_err(io_err(&file))? {
        Sniffed::Json => Loaded::Json(match data {
            Data::Bytes(b) => b,
            Data::Path(_) => Vec::new(),
        }),
        Sniffed::Csv => Loaded::Csv(data),
    };
    Ok((file, loaded))
}

/// Where an inventory's bytes are: a file polars can scan in place, or decompressed memory.
pub(crate) enum Data {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

fn io_err(file: &str) -> impl FnOnce(std::io::Error) -> InventoryError + '_ {
    move |source| InventoryError::Io {
        file: file.to_string(),
        source,
    }
}

/// Reads every inventory (files, and `kube:`/`kube:CONTEXT` clusters) and reduces the fleet to
/// distinct raw identities.
/// With `strict`, any bad row is an error. Inside tokio, call it from a multi-threaded runtime:
/// polars blocks in place when it finds a runtime.
pub fn read_inventory(paths: &[PathBuf], strict: bool) -> Result<FleetGroups, InventoryError> {
    read_with(paths, strict, CsvReader::Scanner)
}

/// [`read_inventory`] with every CSV file read by the `csv` crate one record at a time: the
/// slow reference the parallel scanner is checked against (same groups, counts and bad rows).
pub fn read_inventory_exactly(
    paths: &[PathBuf],
    strict: bool,
) -> Result<FleetGroups, InventoryError> {
    read_with(paths, strict, CsvReader::Exact)
}

/// Gives the pages the readers freed back to the system. The parallel readers' threads each
/// allocate in an allocator arena of their own (read windows, decompressed pages); glibc keeps
/// those arenas' freed memory when the threads end, and the report that follows allocates
/// elsewhere, so at 100M Parquet rows the process held twice its heap at its peak. One trim
/// after reading costs milliseconds.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of glibc's own arenas; it has no
    // preconditions and returns whether anything was released.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Which reader counts CSV rows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CsvReader {
    Scanner,
    Exact,
}

fn read_with(
    paths: &[PathBuf],
    strict: bool,
    csv_reader: CsvReader,
) -> Result<FleetGroups, InventoryError> {
    let mut fleet = FleetGroups::default();
    let mut clusters = Vec::new();
    for path in paths {
        match path.to_str().and_then(kube::KubeSource::parse) {
            Some(source) => clusters.push(source),
            None => read_one(path, &mut fleet, csv_reader)?,
        }
    }
    if !clusters.is_empty() {
        kube::read_blocking(&clusters, &mut fleet)?;
    }
    return_freed_memory();
    if strict && fleet.bad_row_count > 0 {
        return Err(InventoryError::Strict {
            count: fleet.bad_row_count,
            first: fleet
                .bad_rows
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
        });
    }
    Ok(fleet)
}

fn read_one(
    path: &Path,
    fleet: &mut FleetGroups,
    csv_reader: CsvReader,
) -> Result<(), InventoryError> {
    let (file, loaded) = load(path)?;
    fleet.files.push(file.clone());
    let size = match &loaded {
        Loaded::Parquet | Loaded::Csv(Data::Path(_)) => {
            std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
        }
        Loaded::Json(bytes) | Loaded::Csv(Data::Bytes(bytes)) => bytes.len() as u64,
    };
    PROGRESS.add_total(size);
    let before = PROGRESS.read();
    let read = match loaded {
        Loaded::Parquet => parquet::read(&file, path, fleet),
        Loaded::Json(bytes) => json::read(&file, &bytes, fleet),
        Loaded::Csv(data) => csv::read(&file, data, fleet, csv_reader == CsvReader::Exact),
    };
    // Whatever the reader did not count as it went (JSON, the exact CSV reader) is done now.
    let counted = PROGRESS.read().saturating_sub(before);
    PROGRESS.add_read(size.saturating_sub(counted));
    read
}

/// An inventory file by what its bytes are.
pub(crate) enum Loaded {
    /// Read in place, by row group.
    Parquet,
    /// A NodeList or JSON Lines, decompressed when it was gzipped.
    Json(Vec<u8>),
    Csv(Data),
}

/// Opens an inventory file: Parquet by its magic, gzip decompressed (bounded), then JSON or CSV
/// by the first byte that is not whitespace. Returns the file's name as errors show it.
pub(crate) fn load(path: &Path) -> Result<(String, Loaded), InventoryError> {
    if path == Path::new(STDIN) {
        return load_stdin();
    }
    let file = path.display().to_string();
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(io_err(&file))?;
    if n == 4 && &head == parquet::MAGIC {
        return Ok((file, Loaded::Parquet));
    }
    let data = if n >= 2 && head[..2] == [0x1f, 0x8b] {
        let compressed = std::fs::File::open(path).map_err(io_err(&file))?;
        let size = compressed.metadata().map_err(io_err(&file))?.len();
        // Fleet CSV compresses about 10:1; 100:1 is generous, and lines are short.
        let limits =
            crate::bounded::Limits::by_ratio(size, 100, 64 << 20, u64::MAX).with_max_line(MAX_LINE);
        let decoder = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(compressed));
        let out = crate::bounded::read_to_end(decoder, limits).map_err(|e| {
            InventoryError::Format {
                file: file.clone(),
                source: Cause::from(match e {
                    crate::bounded::BoundedError::Io(e) => {
                        format!("looks gzipped but does not decompress: {e}")
                    }
                    other => format!(
                        "gzip content {other}; refusing it (decompress it yourself and pass the plain file if it is right)"
                    ),
                }),
            }
        })?;
        Data::Bytes(out)
    } else {
        Data::Path(path.to_path_buf())
    };
    let loaded = match sniff(&data).map_err(io_err(&file))? {
        Sniffed::Json => Loaded::Json(match data {
            Data::Bytes(b) => b,
            Data::Path(p) => std::fs::read(&p).map_err(io_err(&file))?,
        }),
        Sniffed::Csv => Loaded::Csv(data),
    };
    Ok((file, loaded))
}

enum Sniffed {
    Csv,
    Json,
}

fn sniff(data: &Data) -> std::io::Result<Sniffed> {
    let mut head = vec![0u8; 512];
    let n = match data {
        Data::Bytes(b) => {
            let n = b.len().min(head.len());
            head[..n].copy_from_slice(&b[..n]);
            n
        }
        Data::Path(p) => std::fs::File::open(p)?.read(&mut head)?,
    };
    let first = head[..n]
        .iter()
        .find(|b| !b.is_ascii_whitespace() && **b != 0xEF && **b != 0xBB && **b != 0xBF);
    Ok(match first {
        Some(b'{') | Some(b'[') => Sniffed::Json,
        _ => Sniffed::Csv,
    })
}

/// Reduces one source's rows (a frame with the canonical columns and `os_image`) to one row per
/// distinct key with its node count.
pub(crate) fn group(
    file: &str,
    frame: LazyFrame,
    keys: &[&str],
) -> Result<DataFrame, InventoryError> {
    frame
        .group_by(keys.iter().map(|c| col(*c)).collect::<Vec<_>>())
        .agg([len().alias("nodes")])
        .collect_with_engine(Engine::Streaming)
        .map(|r| r.unwrap_single())
        .map_err(|source| InventoryError::Polars {
            file: file.to_string(),
            source,
        })
}

/// Moves grouped rows into `fleet`. The JSON readers group only rows they checked (a NodeList
/// row may lack a distro version: the OS has none).
pub(crate) fn absorb(
    file: &str,
    groups: &DataFrame,
    fleet: &mut FleetGroups,
) -> Result<(), InventoryError> {
    let polars_err = |source| InventoryError::Polars {
        file: file.to_string(),
        source,
    };
    let strs: Vec<Option<&StringChunked>> = COLUMNS
        .iter()
        .chain(std::iter::once(&OS_IMAGE))
        .map(|c| groups.column(c).ok().map(|s| s.str()).transpose())
        .collect::<PolarsResult<_>>()
        .map_err(polars_err)?;
    let u64_column = |name: &str| -> Result<Option<UInt64Chunked>, InventoryError> {
        match groups.column(name) {
            Ok(c) => Ok(Some(
                c.cast(&DataType::UInt64)
                    .and_then(|c| c.u64().cloned())
                    .map_err(polars_err)?,
            )),
            Err(_) => Ok(None),
        }
    };
    let nodes = u64_column("nodes")?.unwrap_or_default();
    for i in 0..groups.height() {
        let n = nodes.get(i).unwrap_or(0);
        let field = |k: usize| strs[k].and_then(|ca| ca.get(i));
        let fields = [field(0), field(1), field(2), field(3)];
        let os_image = field(4);
        fleet.groups.push(RawGroup {
            distribution: fields[0].unwrap_or("").to_string(),
            distro_version: fields[1].unwrap_or("").to_string(),
            architecture: fields[2].unwrap_or("").to_string(),
            kernel_version: fields[3].unwrap_or("").to_string(),
            os_image: os_image.map(str::to_string),
            context: None,
            nodes: n,
            next_boot: 0,
        });
    }
    Ok(())
}

/// Builds a frame with the canonical columns from row vectors (the JSON readers).
pub(crate) fn frame_from_rows(
    file: &str,
    rows: [Vec<Option<String>>; 5],
) -> Result<LazyFrame, InventoryError> {
    let [d, v, a, k, o] = rows;
    let columns = vec![
        Column::new(COLUMNS[0].into(), d),
        Column::new(COLUMNS[1].into(), v),
        Column::new(COLUMNS[2].into(), a),
        Column::new(COLUMNS[3].into(), k),
        Column::new(OS_IMAGE.into(), o),
    ];
    DataFrame::new_infer_height(columns)
        .map(IntoLazy::lazy)
        .map_err(|source| InventoryError::Polars {
            file: file.to_string(),
            source,
        })
}
