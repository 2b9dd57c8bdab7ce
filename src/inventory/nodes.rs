//! Which nodes run one kernel identity: the inventories are read again on demand (files row by
//! row, clusters listed live) and at most `limit` nodes are kept, with their source and labels,
//! so memory is bounded by the limit and the fleet's distinct raw identities, never by its nodes.

use super::json::{FIELD_ALIASES, as_text, node_row};
use super::{InventoryError, Loaded, io_err};
use crate::identity::{RawIdentity, check_with_os_image};
use crate::text::Cause;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;

/// Column (or JSON field) names that hold a node's name, in order of preference.
const NAME_COLUMNS: [&str; 5] = ["node", "name", "node_name", "hostname", "host"];

/// One node that runs the identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeEntry {
    pub name: String,
    /// The inventory file, or `kube:CONTEXT`.
    pub source: String,
    /// Kubernetes labels; for CSV and JSON Lines, the row's other fields.
    pub labels: BTreeMap<String, String>,
}

/// The nodes that run `key`: how many, and the first `limit` of them in inventory order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodesOf {
    pub key: String,
    pub total: u64,
    pub nodes: Vec<NodeEntry>,
}

impl NodesOf {
    fn add(&mut self, limit: usize, entry: impl FnOnce() -> NodeEntry) {
        self.total += 1;
        if self.nodes.len() < limit {
            self.nodes.push(entry());
        }
    }
}

/// Whether a raw identity is `key` once checked (as coverage checks it), remembered per distinct
/// raw identity: a fleet has few, so each is checked once.
struct Matcher {
    key: String,
    seen: HashMap<String, bool>,
    /// The raw identity being looked up, reused row after row (no allocation per row).
    raw: String,
}

impl Matcher {
    fn matches(&mut self, fields: [&str; 4], os_image: Option<&str>) -> bool {
        self.raw.clear();
        for part in fields.iter().chain([&os_image.unwrap_or_default()]) {
            self.raw.push_str(part);
            self.raw.push('\0');
        }
        if let Some(&hit) = self.seen.get(self.raw.as_str()) {
            return hit;
        }
        let checked = check_with_os_image(
            &RawIdentity {
                distribution: fields[0],
                distro_version: fields[1],
                architecture: fields[2],
                kernel_version: fields[3],
            },
            os_image,
        );
        let hit = checked.key() == self.key;
        self.seen.insert(self.raw.clone(), hit);
        hit
    }
}

/// The nodes of every inventory (files, `kube:` clusters) that run identity `key`, keeping the
/// first `limit`. Rows that cannot be read are skipped here: `report` names them.
pub fn nodes_of(paths: &[PathBuf], key: &str, limit: usize) -> Result<NodesOf, InventoryError> {
    let mut out = NodesOf {
        key: key.to_string(),
        total: 0,
        nodes: Vec::new(),
    };
    let mut matcher = Matcher {
        key: key.to_string(),
        seen: HashMap::new(),
        raw: String::new(),
    };
    for path in paths {
        if let Some(source) = path.to_str().and_then(super::kube::KubeSource::parse) {
            let listed = super::kube::list_blocking(&source)?;
            let context = format!("kube:{}", listed.context);
            for (name, row, labels) in listed.rows() {
                let fields = [
                    row.distribution.as_str(),
                    row.distro_version.as_deref().unwrap_or_default(),
                    row.architecture.as_str(),
                    row.kernel_version.as_str(),
                ];
                if matcher.matches(fields, Some(&row.os_image)) {
                    out.add(limit, || NodeEntry {
                        name: name.to_string(),
                        source: context.clone(),
                        labels: labels.clone(),
                    });
                }
            }
            continue;
        }
        let (file, loaded) = super::load(path)?;
        match loaded {
            Loaded::Parquet => parquet(&file, path, &mut matcher, &mut out, limit)?,
            Loaded::Json(bytes) => json(&file, &bytes, &mut matcher, &mut out, limit)?,
            Loaded::Csv(data) => {
                let reader: Box<dyn Read> = match data {
                    super::Data::Path(p) => {
                        Box::new(std::fs::File::open(&p).map_err(io_err(&file))?)
                    }
                    super::Data::Bytes(b) => Box::new(std::io::Cursor::new(b)),
                };
                csv(&file, reader, &mut matcher, &mut out, limit)?;
            }
        }
    }
    Ok(out)
}

fn name_position(headers: &[String]) -> Option<usize> {
    NAME_COLUMNS
        .iter()
        .find_map(|n| headers.iter().position(|h| h == n))
}

fn csv(
    file: &str,
    reader: Box<dyn Read>,
    matcher: &mut Matcher,
    out: &mut NodesOf,
    limit: usize,
) -> Result<(), InventoryError> {
    let mut rows = ::csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(std::io::BufReader::new(reader));
    let headers: Vec<String> = rows
        .headers()
        .map_err(|e| InventoryError::Format {
            file: file.to_string(),
            source: Cause::from(format!("cannot read the header: {e}")),
        })?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let names: Vec<&str> = headers.iter().map(String::as_str).collect();
    let at = super::csv::column_positions(file, &names)?;
    let name_at = name_position(&headers);
    let mut record = ::csv::StringRecord::new();
    let mut line = 1u64;
    loop {
        line += 1;
        match rows.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) if e.is_io_error() => {
                return Err(InventoryError::Format {
                    file: file.to_string(),
                    source: Cause::from(format!("cannot read line {line}: {e}")),
                });
            }
            // A bad row is skipped here as the report skips it.
            Err(_) => continue,
        }
        let field = |i: usize| record.get(i).unwrap_or_default().trim();
        if !matcher.matches(
            [field(at[0]), field(at[1]), field(at[2]), field(at[3])],
            None,
        ) {
            continue;
        }
        out.add(limit, || NodeEntry {
            name: name_at
                .map(|i| field(i).to_string())
                .unwrap_or_else(|| format!("{file}:{line}")),
            source: file.to_string(),
            labels: headers
                .iter()
                .enumerate()
                .filter(|(i, _)| !at.contains(i) && Some(*i) != name_at)
                .filter(|(i, _)| !field(*i).is_empty())
                .map(|(i, h)| (h.clone(), field(i).to_string()))
                .collect(),
        });
    }
    Ok(())
}

fn json(
    file: &str,
    bytes: &[u8],
    matcher: &mut Matcher,
    out: &mut NodesOf,
    limit: usize,
) -> Result<(), InventoryError> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_start_matches('\u{feff}');
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let jsonl = matches!(
        serde_json::from_str::<serde_json::Value>(first),
        Ok(serde_json::Value::Object(obj)) if !obj.contains_key("items")
    );
    if jsonl {
        for (i, line) in text.lines().enumerate() {
            let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(line) else {
                continue;
            };
            let fields: Vec<String> = FIELD_ALIASES
                .iter()
                .map(|aliases| {
                    aliases
                        .iter()
                        .find_map(|a| obj.get(*a).and_then(as_text))
                        .unwrap_or_default()
                })
                .collect();
            let refs = [
                fields[0].as_str(),
                fields[1].as_str(),
                fields[2].as_str(),
                fields[3].as_str(),
            ];
            if !matcher.matches(refs, None) {
                continue;
            }
            let named = NAME_COLUMNS.iter().find(|n| obj.contains_key(**n));
            out.add(limit, || NodeEntry {
                name: named
                    .and_then(|n| obj.get(*n).and_then(as_text))
                    .unwrap_or_else(|| format!("{file}:{}", i + 1)),
                source: file.to_string(),
                labels: obj
                    .iter()
                    .filter(|(k, _)| {
                        Some(&k.as_str()) != named
                            && !FIELD_ALIASES.iter().any(|a| a.contains(&k.as_str()))
                    })
                    .filter_map(|(k, v)| as_text(v).map(|v| (k.clone(), v)))
                    .collect(),
            });
        }
        return Ok(());
    }
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| InventoryError::Format {
            file: file.to_string(),
            source: Cause::from(format!("not a Kubernetes NodeList nor JSON Lines: {e}")),
        })?;
    let items = doc
        .get("items")
        .and_then(serde_json::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for item in items {
        let Ok(row) = node_row(item) else { continue };
        let fields = [
            row.distribution.as_str(),
            row.distro_version.as_deref().unwrap_or_default(),
            row.architecture.as_str(),
            row.kernel_version.as_str(),
        ];
        if !matcher.matches(fields, Some(&row.os_image)) {
            continue;
        }
        out.add(limit, || NodeEntry {
            name: item
                .pointer("/metadata/name")
                .and_then(as_text)
                .unwrap_or_default(),
            source: file.to_string(),
            labels: super::kube::labels_of(item.pointer("/metadata/labels")),
        });
    }
    Ok(())
}

fn parquet(
    file: &str,
    path: &std::path::Path,
    matcher: &mut Matcher,
    out: &mut NodesOf,
    limit: usize,
) -> Result<(), InventoryError> {
    use polars::prelude::*;
    let polars_err = |source| InventoryError::Polars {
        file: file.to_string(),
        source,
    };
    let open = || std::fs::File::open(path).map_err(io_err(file));
    let mut first = ParquetReader::new(open()?);
    let schema = first.schema().map_err(polars_err)?;
    let names: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
    let lower: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    let refs: Vec<&str> = lower.iter().map(String::as_str).collect();
    let at = super::csv::column_positions(file, &refs)?;
    let name_at = name_position(&lower);
    let mut wanted: Vec<String> = at.iter().map(|&i| names[i].clone()).collect();
    wanted.extend(name_at.map(|i| names[i].clone()));
    let mut projected = wanted.clone();
    projected.sort();
    projected.dedup();
    let total = first.num_rows().map_err(polars_err)?;
    // A slice at a time, so a 100M-row file is never in memory at once.
    const SLICE: usize = 1 << 20;
    let mut offset = 0;
    while offset < total {
        let frame = ParquetReader::new(open()?)
            .with_columns(Some(projected.clone()))
            .with_slice(Some((offset, SLICE)))
            .finish()
            .map_err(polars_err)?;
        let columns = super::parquet::string_columns(&frame, &wanted).map_err(polars_err)?;
        for row in 0..frame.height() {
            let field = |k: usize| columns[k].get(row).unwrap_or_default();
            if !matcher.matches([field(0), field(1), field(2), field(3)], None) {
                continue;
            }
            out.add(limit, || NodeEntry {
                name: if name_at.is_some() {
                    field(4).to_string()
                } else {
                    format!("{file}: row {}", offset + row + 1)
                },
                source: file.to_string(),
                labels: BTreeMap::new(),
            });
        }
        offset += frame.height().max(1);
    }
    Ok(())
}
