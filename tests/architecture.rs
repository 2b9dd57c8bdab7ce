//! The layering docs/ARCHITECTURE.md declares, checked on the source: every `crate::` edge between
//! top-level modules points down the layer order (identity at the bottom, commands at the top),
//! no two files of a folder import each other, and every module under `src/` is in the code map.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first: a module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["text"],
    &[
        "bounded",
        "clock",
        "distros",
        "environment",
        "fsio",
        "kmod",
        "locks",
        "modsign",
        "net",
        "notice",
        "protocol",
    ],
    &[
        "conditional",
        "config",
        "identity",
        "kabi",
        "oci",
        "openpgp",
        "provenance",
        "readiness",
    ],
    &["artifacts", "headers", "localrun", "state"],
    &["buildenv", "forge", "inventory"],
    &["coverage"],
    &["builds"],
    &["app", "node", "report", "service"],
    &["sample", "tui"],
    &["cli"],
    &["commands"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code without `//` comments (doc links name paths that are not dependencies).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| match l.find("//") {
            Some(at) if !l[..at].contains('"') => &l[..at],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segments after `prefix::` in `text`, braces included (`prefix::{a, b::c}`).
fn segments_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let needle = format!("{prefix}::");
    let mut rest = text;
    while let Some(at) = rest.find(&needle) {
        let before = rest[..at].chars().last();
        rest = &rest[at + needle.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(first_ident(&item));
        } else {
            out.insert(first_ident(rest));
        }
    }
    out.remove("");
    out.remove("self");
    out
}

fn first_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every top-level module's edges: module -> modules it names through `crate::`.
fn module_edges() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src()).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let used = segments_after(&code(&file), "crate");
        edges
            .entry(top.clone())
            .or_default()
            .extend(used.into_iter().filter(|m| *m != top));
    }
    edges
}

#[test]
fn every_edge_points_down_the_layers() {
    let edges = module_edges();
    let mut wrong = Vec::new();
    for (from, targets) in &edges {
        let Some(own) = layer_of(from) else {
            wrong.push(format!(
                "src/{from} is in no layer: add it to LAYERS and ARCHITECTURE.md"
            ));
            continue;
        };
        for to in targets {
            match layer_of(to) {
                Some(layer) if layer < own => {}
                Some(_) => wrong.push(format!("{from} uses {to}, which is not below it")),
                None => wrong.push(format!("{from} uses {to}, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The checker itself sees edges (a parser that saw none would pass anything).
    assert!(edges["commands"].contains("cli") && edges["builds"].contains("forge"));
}

#[test]
fn no_two_files_of_a_folder_import_each_other() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut by_dir: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        if f.file_name().is_some_and(|n| n != "mod.rs") {
            by_dir
                .entry(f.parent().unwrap().to_path_buf())
                .or_default()
                .push(f);
        }
    }
    let mut mutual = Vec::new();
    let mut seen_edges = 0;
    for (dir, files) in by_dir {
        let name = |f: &PathBuf| f.file_stem().unwrap().to_string_lossy().into_owned();
        let siblings: BTreeSet<String> = files.iter().map(name).collect();
        let uses: BTreeMap<String, BTreeSet<String>> = files
            .iter()
            .map(|f| {
                let used: BTreeSet<String> = segments_after(&code(f), "super")
                    .into_iter()
                    .filter(|s| siblings.contains(s) && *s != name(f))
                    .collect();
                (name(f), used)
            })
            .collect();
        for (a, targets) in &uses {
            seen_edges += targets.len();
            for b in targets {
                if a < b && uses.get(b).is_some_and(|t| t.contains(a)) {
                    mutual.push(format!("{}: {a} and {b}", dir.display()));
                }
            }
        }
    }
    assert!(
        mutual.is_empty(),
        "files that import each other:\n{}",
        mutual.join("\n")
    );
    assert!(seen_edges > 0);
}

#[test]
fn every_module_is_in_the_code_map() {
    let map =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md"))
            .unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(src()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let shown = if path.is_dir() {
            format!("`{name}/`")
        } else {
            format!("`{name}`")
        };
        if !map.contains(&shown) {
            missing.push(shown);
        }
    }
    assert!(
        missing.is_empty(),
        "not in docs/ARCHITECTURE.md's code map: {missing:?}"
    );
    for layer in LAYERS {
        for module in *layer {
            assert!(
                map.contains(&format!("`{module}`"))
                    || map.contains(&format!("`{module}/`"))
                    || map.contains(&format!("`{module}.rs`")),
                "{module}"
            );
        }
    }
}

/// Environment variables are read in one module, and every one it names is documented for
/// operators.
#[test]
fn the_environment_is_read_in_one_place_and_documented() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for file in &files {
        if file.ends_with("environment.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for read in ["env::var(", "env::var_os("] {
            assert!(
                !text.contains(read),
                "{} reads the environment itself ({read}); name the variable in environment.rs and read it there",
                file.display()
            );
        }
    }
    let names = std::fs::read_to_string(src().join("environment.rs")).unwrap();
    let operations =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .unwrap();
    let mut count = 0;
    for line in names.lines() {
        let Some(rest) = line.strip_prefix("pub const ") else {
            continue;
        };
        let name = rest.split(':').next().unwrap();
        count += 1;
        assert!(
            operations.contains(&format!("`{name}`")),
            "{name} is read but docs/operations.md's environment table does not name it"
        );
    }
    assert!(count > 20, "only {count} variables found in environment.rs");
}

/// An error that wraps another keeps it as its source: `#[error(transparent)]` forwards
/// `source()` past the wrapped error, which hides it from the chain (and the command line's
/// hints, which look for it there).
#[test]
fn wrapping_errors_keep_the_wrapped_error_in_the_chain() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            !text.contains("#[error(transparent)]"),
            "{} wraps an error transparently; write #[error(\"{{0}}\")] and keep it as the source",
            file.display()
        );
    }
}
