//! JSON inventories: `kubectl get nodes -o json` NodeLists and JSON Lines with the CSV field names.

use super::{
    BadRow, COLUMNS, FleetGroups, INSTALLED_KERNELS, InventoryError, NextBoot, OS_IMAGE, absorb,
    frame_from_rows, group,
};
use crate::identity::distribution_from_os_image;
use crate::text::Cause;
use serde_json::Value;

pub(super) const FIELD_ALIASES: [&[&str]; 4] = [
    &["distribution", "distro", "os", "ID", "id"],
    &["distro_version", "version", "VERSION_ID", "version_id"],
    &["architecture", "arch", "uname_m"],
    &["kernel_version", "kernel", "kernel_release", "uname_r"],
];

type Rows = [Vec<Option<String>>; 5];

pub(super) fn read(
    file: &str,
    bytes: &[u8],
    fleet: &mut FleetGroups,
) -> Result<(), InventoryError> {
    let text = std::str::from_utf8(bytes).map_err(|e| InventoryError::Format {
        file: file.to_string(),
        source: Cause::from(format!("not UTF-8 JSON: {e}")),
    })?;
    let text = text.trim_start_matches('\u{feff}');
    let first_line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut rows: Rows = Default::default();
    let mut next_boot = NextBoot::default();
    match serde_json::from_str::<Value>(first_line) {
        Ok(Value::Object(obj)) if !obj.contains_key("items") => {
            jsonl(file, text, &mut rows, &mut next_boot, fleet);
        }
        _ => {
            let doc: Value = serde_json::from_str(text).map_err(|e| InventoryError::Format {
                file: file.to_string(),
                source: Cause::from(format!(
                    "not a Kubernetes NodeList nor JSON Lines: {e} (line {}, column {})",
                    e.line(),
                    e.column()
                )),
            })?;
            node_list(file, &doc, &mut rows, &mut next_boot, fleet)?;
        }
    }
    let keys = [COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[3], OS_IMAGE];
    let groups = group(file, frame_from_rows(file, rows)?, &keys)?;
    absorb(file, &groups, fleet)?;
    fleet.groups.extend(next_boot.into_groups(None));
    Ok(())
}

/// A node's installed kernels as a JSON value: a list of strings or one separated string.
fn installed_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

pub(super) fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn jsonl(
    file: &str,
    text: &str,
    rows: &mut Rows,
    next_boot: &mut NextBoot,
    fleet: &mut FleetGroups,
) {
    for (i, line) in text.lines().enumerate() {
        let line_no = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| BadRow {
            file: file.to_string(),
            line: Some(line_no),
            reason,
        };
        let obj = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(obj)) => obj,
            Ok(_) => {
                fleet.add_bad(bad("not a JSON object".into()));
                continue;
            }
            Err(e) => {
                fleet.add_bad(bad(format!("not valid JSON: {e}")));
                continue;
            }
        };
        let mut fields: [Option<String>; 4] = Default::default();
        let mut missing = None;
        for (k, aliases) in FIELD_ALIASES.iter().enumerate() {
            fields[k] = aliases.iter().find_map(|a| obj.get(*a).and_then(as_text));
            if fields[k].is_none() && missing.is_none() {
                missing = Some(aliases[0]);
            }
        }
        if let Some(name) = missing {
            fleet.add_bad(bad(format!("{name} is missing or empty")));
            continue;
        }
        let running = fields.each_ref().map(|f| f.as_deref().unwrap_or_default());
        next_boot.add(
            running,
            None,
            &installed_text(obj.get(INSTALLED_KERNELS)),
            1,
        );
        for (k, f) in fields.into_iter().enumerate() {
            rows[k].push(f);
        }
        rows[4].push(None);
    }
}

fn node_list(
    file: &str,
    doc: &Value,
    rows: &mut Rows,
    next_boot: &mut NextBoot,
    fleet: &mut FleetGroups,
) -> Result<(), InventoryError> {
    let items = doc
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| InventoryError::Format {
            file: file.to_string(),
            source: Cause::from("a JSON document without an 'items' array; expected `kubectl get nodes -o json` output or JSON Lines"),
        })?;
    for (i, item) in items.iter().enumerate() {
        match node_row(item) {
            Ok(row) => {
                row.count_next_boot(next_boot, 1);
                rows[0].push(Some(row.distribution));
                rows[1].push(row.distro_version);
                rows[2].push(Some(row.architecture));
                rows[3].push(Some(row.kernel_version));
                rows[4].push(Some(row.os_image));
            }
            Err(missing) => fleet.add_bad(BadRow {
                file: file.to_string(),
                line: None,
                reason: format!(
                    "items[{i}] (node {}): status.nodeInfo.{} is missing",
                    crate::text::clean(&missing.node),
                    missing.field
                ),
            }),
        }
    }
    Ok(())
}

/// What one Kubernetes Node says about its kernel identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct NodeRow {
    pub distribution: String,
    /// `None` when the OS has no version (a rolling release).
    pub distro_version: Option<String>,
    pub architecture: String,
    pub kernel_version: String,
    pub os_image: String,
    /// Kernels installed besides the running one (the node's
    /// [`crate::readiness::INSTALLED_ANNOTATION`]).
    pub installed: Vec<String>,
}

impl NodeRow {
    /// Counts the kernels `n` nodes like this one have installed as next-boot demand.
    pub(crate) fn count_next_boot(&self, next_boot: &mut NextBoot, n: u64) {
        next_boot.add(
            [
                &self.distribution,
                self.distro_version.as_deref().unwrap_or_default(),
                &self.architecture,
                &self.kernel_version,
            ],
            Some(&self.os_image),
            &self.installed.join(" "),
            n,
        );
    }
}

/// A node whose kubelet has not reported a field kfleet needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MissingField {
    pub node: String,
    pub field: &'static str,
}

impl std::fmt::Display for MissingField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {}: status.nodeInfo.{} is missing",
            crate::text::clean(&self.node),
            self.field
        )
    }
}

/// A Node object from a NodeList file to its identity fields.
pub(crate) fn node_row(item: &Value) -> Result<NodeRow, MissingField> {
    let name = item
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let mut row = node_info_row(name, item.pointer("/status/nodeInfo"))?;
    row.installed = installed_of(item.pointer("/metadata/annotations"), &row.kernel_version);
    Ok(row)
}

/// The kernels a Node's annotations say it has installed besides `running`.
pub(crate) fn installed_of(annotations: Option<&Value>, running: &str) -> Vec<String> {
    let listed = annotations
        .and_then(|a| a.get(crate::readiness::INSTALLED_ANNOTATION))
        .and_then(Value::as_str)
        .unwrap_or_default();
    super::next_boot_kernels(listed, running)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The `status.nodeInfo` of node `name` to its identity fields: the one mapping every Kubernetes
/// source uses (NodeList files and the API).
pub(crate) fn node_info_row(name: &str, info: Option<&Value>) -> Result<NodeRow, MissingField> {
    let get = |field: &'static str| {
        info.and_then(|i| i.get(field))
            .and_then(as_text)
            .ok_or_else(|| MissingField {
                node: name.to_string(),
                field,
            })
    };
    let kernel = get("kernelVersion")?;
    let image = get("osImage")?;
    let arch = get("architecture")?;
    let (distribution, version) = distribution_from_os_image(&image);
    Ok(NodeRow {
        distribution,
        distro_version: (!version.is_empty()).then_some(version),
        architecture: arch,
        kernel_version: kernel,
        os_image: image,
        installed: Vec::new(),
    })
}
