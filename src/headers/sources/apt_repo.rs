//! `apt-repo`: APT repositories. `dists/{suite}/{component}/binary-{arch}/Packages.xz` (or
//! `.gz`) gives `linux-headers-{kernel}` and the header and kbuild packages it depends on.

use super::{Ctx, decompress, expanded, join, on_base_host};
use crate::headers::parts::KernelParts;
use crate::headers::spec::{Protocol, SourceSpec};
use crate::headers::trust::Vouch;
use crate::headers::{Checksum, HeaderPackage};
use crate::locks::Lock;
use std::collections::HashMap;

/// One stanza of an APT `Packages` index.
#[derive(Clone, Debug, Default)]
struct Stanza {
    pub package: String,
    pub filename: String,
    /// The package's checksum: its `SHA256`, else its `SHA512` (Ubuntu's indexes since 26.10
    /// carry only SHA512).
    pub checksum: Option<Checksum>,
    pub depends: Vec<String>,
}

fn parse_packages(text: &str) -> HashMap<String, Stanza> {
    let mut out = HashMap::new();
    for block in text.split("\n\n") {
        let mut s = Stanza::default();
        let mut sha512 = None;
        for line in block.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "Package" => s.package = v.to_string(),
                "Filename" => s.filename = v.to_string(),
                "SHA256" => {
                    s.checksum = Some(Checksum {
                        algorithm: "sha256".into(),
                        hex: v.to_ascii_lowercase(),
                    })
                }
                "SHA512" => sha512 = Some(v.to_ascii_lowercase()),
                "Depends" => {
                    s.depends = v
                        .split(',')
                        .flat_map(|alt| alt.split('|'))
                        .filter_map(|d| d.split_whitespace().next())
                        .map(str::to_string)
                        .collect()
                }
                _ => {}
            }
        }
        if s.checksum.is_none() {
            s.checksum = sha512.map(|hex| Checksum {
                algorithm: "sha512".into(),
                hex,
            });
        }
        if !s.package.is_empty() {
            out.insert(s.package.clone(), s);
        }
    }
    out
}

/// Dependencies of a headers package that carry headers or build tools.
fn header_dependency(name: &str) -> bool {
    (name.starts_with("linux-") && name.contains("-headers-")) || name.starts_with("linux-kbuild-")
}

/// The headers package and the header/kbuild packages it depends on, all from `index`.
fn resolve_in_index(
    index: &HashMap<String, Stanza>,
    root: &str,
    base: &str,
    vouch: Option<&Vouch>,
) -> Option<Vec<HeaderPackage>> {
    let mut out = Vec::new();
    let mut queue = vec![root.to_string()];
    let mut seen = std::collections::HashSet::new();
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(s) = index.get(&name) else {
            if name == root {
                return None;
            }
            continue;
        };
        out.push(HeaderPackage {
            name: s
                .filename
                .rsplit('/')
                .next()
                .unwrap_or(&s.filename)
                .to_string(),
            url: join(base, &s.filename),
            checksum: s.checksum.clone(),
            vouch: vouch.cloned(),
        });
        queue.extend(s.depends.iter().filter(|d| header_dependency(d)).cloned());
    }
    Some(out)
}

/// The indexes of one suite of one repository: per component, `Packages.xz` then `.gz`.
pub(super) struct SuiteIndexes {
    pub base: String,
    pub suite: String,
    pub components: Vec<(String, Vec<String>)>,
}

/// Every suite of every repository of the source, in the order they are read.
pub(super) fn indexes(spec: &SourceSpec, parts: &KernelParts) -> Vec<SuiteIndexes> {
    let Protocol::AptRepo { suites, components } = &spec.protocol else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for base in expanded(spec, parts) {
        for suite in suites.iter().map(|s| parts.expand(s)) {
            let components = components
                .iter()
                .map(|c| {
                    let dir = format!("dists/{suite}/{c}/binary-{}/", parts.deb_arch);
                    let urls = INDEX_FILES
                        .iter()
                        .map(|f| join(&base, &format!("{dir}{f}")))
                        .collect();
                    (c.clone(), urls)
                })
                .collect();
            out.push(SuiteIndexes {
                base: base.clone(),
                suite,
                components,
            });
        }
    }
    out
}

/// What one suite's indexes list for the upcoming-kernel view: every header package name, and
/// each header meta-package (`linux-headers-aws`, `linux-headers-generic-hwe-24.04`,
/// `linux-headers-cloud-amd64`) with the kernel's header package it depends on now.
#[derive(Debug, Default)]
pub(crate) struct SuiteListing {
    headers: Vec<String>,
    metas: HashMap<String, String>,
}

/// The meta-packages a node of this flavour follows: Ubuntu's `linux-headers-{flavour}` and its
/// HWE and edge variants (`-hwe-24.04`, `-hwe-24.04-edge`), Debian's `linux-headers-{flavour}`
/// (`linux-headers-amd64`, `linux-headers-cloud-amd64`).
fn follows(meta: &str, flavour: &str, distro_version: &str) -> bool {
    let Some(rest) = meta
        .strip_prefix("linux-headers-")
        .and_then(|m| m.strip_prefix(flavour))
    else {
        return false;
    };
    rest.is_empty()
        || rest
            .strip_prefix("-hwe-")
            .and_then(|r| r.strip_prefix(distro_version))
            .is_some_and(|r| r.is_empty() || r == "-edge")
}

/// Every kernel of the identity's flavour whose headers package the source's indexes list
/// (`linux-headers-{kernel}` ending in `-{flavour}`), and the kernels the flavour's
/// meta-packages point at (with the meta's name), for the upcoming-kernel view.
pub(super) async fn list(ctx: &mut Ctx<'_>) -> Vec<(String, Option<String>)> {
    let suffix = format!("-{}", ctx.parts.flavour);
    // Backports are opt-in: their metas lead only the nodes that already run a backports kernel
    // (another series than the release's own).
    let on_backports = crate::distros::release(&ctx.parts.distribution, &ctx.parts.distro_version)
        .and_then(|r| r.kernel_series.as_deref())
        .is_some_and(|stock| stock != ctx.parts.series);
    let mut kernels: Vec<(String, Option<String>)> = Vec::new();
    for suite in indexes(ctx.source, ctx.parts) {
        let metas_apply = on_backports || !suite.suite.ends_with("-backports");
        let index = read_suite_once(ctx, &suite).await;
        kernels.extend(index.headers.iter().filter_map(|p| {
            let kernel = p.strip_prefix("linux-headers-")?;
            kernel
                .ends_with(&suffix)
                .then(|| (kernel.to_string(), None))
        }));
        for (meta, target) in index.metas.iter().filter(|_| metas_apply) {
            if follows(meta, &ctx.parts.flavour, &ctx.parts.distro_version)
                && let Some(kernel) = target.strip_prefix("linux-headers-")
                && kernel.ends_with(&suffix)
            {
                kernels.push((kernel.to_string(), Some(meta.clone())));
            }
        }
    }
    kernels.sort();
    kernels.dedup();
    kernels
}

/// The header package names of one suite's indexes, read once per listing pass: lines that share
/// a release (Ubuntu's GA, HWE and cloud flavours) share its index instead of each downloading
/// (or asking again) and parsing it.
async fn read_suite_once(ctx: &mut Ctx<'_>, suite: &SuiteIndexes) -> std::sync::Arc<SuiteListing> {
    let key: String = suite
        .components
        .iter()
        .flat_map(|(_, urls)| urls.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("\n");
    let memo = ctx
        .listings
        .and_then(|memo| memo.locked().get(&key).cloned());
    if let Some(names) = memo {
        let first = key.lines().next().unwrap_or_default().to_string();
        ctx.record(
            &first,
            std::time::Instant::now(),
            "ok (read for another line)",
        );
        return names;
    }
    let before = ctx.attempts.len();
    let mut listing = SuiteListing::default();
    for (name, stanza) in read_suite(ctx, suite).await.0 {
        let Some(kernel) = name.strip_prefix("linux-headers-") else {
            continue;
        };
        // A kernel's headers name its version (`6.8.0-45-generic`); a meta-package's do not.
        if kernel.starts_with(|c: char| c.is_ascii_digit()) {
            listing.headers.push(name);
        } else if let Some(target) = stanza.depends.iter().find(|d| {
            d.strip_prefix("linux-headers-")
                .is_some_and(|k| k.starts_with(|c: char| c.is_ascii_digit()))
        }) {
            listing.metas.insert(name, target.clone());
        }
    }
    let names = std::sync::Arc::new(listing);
    // Only a suite that was read is shared: one that failed is tried again for the next line.
    let read = ctx.attempts[before..]
        .iter()
        .any(|a| a.outcome.starts_with("ok"));
    if read && let Some(memo) = ctx.listings {
        memo.locked().insert(key, names.clone());
    }
    names
}

/// A suite's `Release` as its signature vouches for it: the checksum of each index file it
/// lists (by path under `dists/{suite}/`), and what signed it.
struct SignedRelease {
    checksums: HashMap<String, Checksum>,
    vouch: Vouch,
}

/// The suite's `InRelease` (or `Release` and `Release.gpg`) checked against the source's
/// keyring, then its `Valid-Until`. `Ok(None)`: the source is used unverified; `Err`: the suite
/// cannot be trusted and is not read (the attempt says why).
async fn signed_release(
    ctx: &mut Ctx<'_>,
    suite: &SuiteIndexes,
) -> Result<Option<SignedRelease>, ()> {
    let Some(keyring) = ctx.keyring.clone() else {
        return Ok(None);
    };
    let dir = join(&suite.base, &format!("dists/{}/", suite.suite));
    let now = ctx.verify_at;
    let (text, signer, file) = match ctx.get(&format!("{dir}InRelease")).await {
        Ok(body) => match keyring.verify_cleartext(&body, now) {
            Ok((text, signer)) => (text, signer, "InRelease"),
            Err(e) => {
                ctx.outcome(format!("InRelease refused: {e}"));
                return Err(());
            }
        },
        Err(e) if e == "HTTP 404" => {
            let release = ctx.get(&format!("{dir}Release")).await.map_err(|_| ())?;
            let signature = ctx
                .get(&format!("{dir}Release.gpg"))
                .await
                .map_err(|_| ())?;
            match keyring.verify_detached(&release, &signature, now) {
                Ok(signer) => (
                    String::from_utf8_lossy(&release).into_owned(),
                    signer,
                    "Release",
                ),
                Err(e) => {
                    ctx.outcome(format!("Release.gpg refused: {e}"));
                    return Err(());
                }
            }
        }
        Err(_) => return Err(()),
    };
    let fields = parse_release(&text);
    if let Some(until) = &fields.valid_until {
        match chrono::DateTime::parse_from_rfc2822(&until.replace("UTC", "+0000")) {
            Ok(t) if std::time::SystemTime::from(t) < now => {
                ctx.outcome(format!(
                    "{file} refused: it was valid until {until}; a mirror that serves it is stale \
                     (or replays old metadata)"
                ));
                return Err(());
            }
            Ok(_) => {}
            Err(_) => {
                ctx.outcome(format!(
                    "{file} refused: its Valid-Until '{}' is not a date",
                    crate::text::clean(until)
                ));
                return Err(());
            }
        }
    }
    ctx.outcome(format!("ok, signed by {signer}"));
    Ok(Some(SignedRelease {
        checksums: fields.checksums,
        vouch: Vouch::SignedIndex(format!("{}'s {file}, signed by {signer}", suite.suite)),
    }))
}

/// The fields of a `Release` that kfleet reads.
#[derive(Default)]
struct ReleaseFields {
    valid_until: Option<String>,
    /// Each index file's `SHA256`, else its `SHA512` (Ubuntu's `Release` files since 26.10 list
    /// only SHA512; MD5Sum and SHA1 are not trusted).
    checksums: HashMap<String, Checksum>,
}

fn parse_release(text: &str) -> ReleaseFields {
    let mut out = ReleaseFields::default();
    let mut section: Option<&'static str> = None;
    for line in text.lines() {
        if let Some(entry) = line.strip_prefix(' ') {
            if let Some(algorithm) = section
                && let [hash, _size, path] = entry.split_whitespace().collect::<Vec<_>>()[..]
            {
                let listed = out.checksums.get(path).map(|c| c.algorithm.as_str());
                if listed != Some("sha256") {
                    out.checksums.insert(
                        path.to_string(),
                        Checksum {
                            algorithm: algorithm.into(),
                            hex: hash.to_ascii_lowercase(),
                        },
                    );
                }
            }
            continue;
        }
        section = match line.trim_end() {
            "SHA256:" => Some("sha256"),
            "SHA512:" => Some("sha512"),
            _ => None,
        };
        if let Some(v) = line.strip_prefix("Valid-Until:") {
            out.valid_until = Some(v.trim().to_string());
        }
    }
    out
}

/// Every component's index of one suite, merged (dependencies may live in another component):
/// per component the first index file that reads (`Packages.xz`, then `.gz`), decompressed off
/// the async workers. Where the source is checked, only index files the suite's signed
/// `Release` lists, with the SHA256 it lists, are read; the packages then carry what vouches
/// for them.
async fn read_suite(
    ctx: &mut Ctx<'_>,
    suite: &SuiteIndexes,
) -> (HashMap<String, Stanza>, Option<Vouch>) {
    let mut index = HashMap::new();
    let Ok(release) = signed_release(ctx, suite).await else {
        return (index, None);
    };
    let dir = join(&suite.base, &format!("dists/{}/", suite.suite));
    for (_, urls) in &suite.components {
        for url in urls {
            let listed = match &release {
                None => None,
                Some(r) => {
                    let path = url.strip_prefix(&dir).unwrap_or(url);
                    match r.checksums.get(path) {
                        Some(hash) => Some(hash.clone()),
                        // Not listed: not published (Packages.gz next to a Packages.xz).
                        None => continue,
                    }
                }
            };
            let Ok(body) = ctx.get(url).await else {
                continue;
            };
            if let Some(expected) = listed
                && expected.of(&body).as_deref() != Some(expected.hex.as_str())
            {
                ctx.outcome(format!(
                    "refused: its {} is not the one the signed Release lists",
                    expected.algorithm.to_ascii_uppercase()
                ));
                continue;
            }
            let name = url.clone();
            let text = tokio::task::spawn_blocking(move || decompress(&name, &body))
                .await
                .unwrap_or_else(|e| Err(format!("decompressing failed: {e}")));
            match text {
                Ok(text) => {
                    index.extend(parse_packages(&String::from_utf8_lossy(&text)));
                    break;
                }
                Err(e) => ctx.outcome(e),
            }
        }
    }
    (index, release.map(|r| r.vouch))
}

/// The index files of a component, best first (any one is enough; the uncompressed one last).
const INDEX_FILES: [&str; 3] = ["Packages.xz", "Packages.gz", "Packages"];

pub(super) async fn resolve(ctx: &mut Ctx<'_>) -> Option<Vec<HeaderPackage>> {
    let root = format!("linux-headers-{}", ctx.parts.kernel);
    for suite in indexes(ctx.source, ctx.parts) {
        let (index, vouch) = read_suite(ctx, &suite).await;
        let name = &suite.suite;
        if let Some(found) = resolve_in_index(&index, &root, &suite.base, vouch.as_ref()) {
            if let Some(e) = found
                .iter()
                .find_map(|p| on_base_host(&suite.base, &p.url).err())
            {
                ctx.outcome(e);
                continue;
            }
            ctx.outcome(format!("found {root} in {name}"));
            return Some(found);
        }
        if ctx
            .attempts
            .last()
            .is_some_and(|a| a.outcome.starts_with("ok"))
        {
            ctx.outcome(format!("no {root} in {name}"));
        }
    }
    None
}
