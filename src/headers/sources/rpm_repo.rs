//! `rpm-repo`: DNF repositories. `repodata/repomd.xml` names the `primary` metadata (XML) or
//! `primary_db` (SQLite); either gives each package's location and checksum.

use super::{Ctx, Outcome, decompress, expanded, join, on_base_host};
use crate::headers::parts::KernelParts;
use crate::headers::spec::{Protocol, SourceSpec};
use crate::headers::trust::Vouch;
use crate::headers::{Checksum, HeaderPackage};
use quick_xml::events::Event;

/// One package a repository holds for the kernel.
#[derive(Clone, Debug)]
struct Hit {
    location: String,
    checksum: Option<Checksum>,
    /// `NAME-VERSION-RELEASE.ARCH` as the repository has it (a SUSE rebuild counter, `noarch`).
    stem: String,
    /// [`KernelParts::rpm_release_rank`]: the highest wins.
    rank: u64,
}

/// The packages one repository gave, by wanted package: `None` where it has none.
type Found = Vec<Option<Hit>>;

/// Keeps `candidate` for wanted package `i` unless a better-ranked build is there already.
fn keep(found: &mut Found, i: usize, candidate: Hit) {
    if found[i].as_ref().is_none_or(|h| candidate.rank > h.rank) {
        found[i] = Some(candidate);
    }
}

/// Whether a listed package is one of the kernel's: its version, its release (with SUSE's
/// rebuild counter) and its architecture or `noarch` (SUSE's `kernel-devel` source tree).
fn rank_of(parts: &KernelParts, version: &str, release: &str, arch: &str) -> Option<u64> {
    if version != parts.version || (arch != parts.arch && arch != "noarch") {
        return None;
    }
    parts.rpm_release_rank(release)
}

/// One repository of a source: its base URL, or a `mirror.list` whose first line names it
/// (Amazon Linux).
pub(super) enum Repository {
    Base(String),
    MirrorList(String),
}

impl Repository {
    pub(super) fn first_request(&self) -> String {
        match self {
            Self::Base(base) => join(base, "repodata/repomd.xml"),
            Self::MirrorList(url) => url.clone(),
        }
    }
}

pub(super) fn repositories(spec: &SourceSpec, parts: &KernelParts) -> Vec<Repository> {
    let mirrorlist = matches!(
        spec.protocol,
        Protocol::RpmRepo {
            mirrorlist: true,
            ..
        }
    );
    expanded(spec, parts)
        .into_iter()
        .map(|u| {
            if mirrorlist {
                Repository::MirrorList(u)
            } else {
                Repository::Base(u)
            }
        })
        .collect()
}

/// The base URL of a repository: itself, or the first mirror its mirror.list names.
async fn base_of(ctx: &mut Ctx<'_>, repository: Repository) -> Option<String> {
    match repository {
        Repository::Base(base) => Some(base),
        Repository::MirrorList(url) => {
            let list = ctx.get(&url).await.ok()?;
            let mirror = String::from_utf8_lossy(&list)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string);
            if mirror.is_none() {
                ctx.outcome("mirror.list names no mirror".into());
            }
            mirror
        }
    }
}

/// One version of a package in a repository's metadata.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Listed {
    pub version: String,
    pub release: String,
    /// When it was built (seconds since the epoch), where the metadata says.
    pub built: Option<i64>,
}

/// Every version of the identity's headers package (`kernel-devel`, `kernel6.12-devel`,
/// `kernel-64k-devel`, …) for its architecture in the source's repositories.
pub(super) async fn list(ctx: &mut Ctx<'_>) -> Vec<Listed> {
    let Some(name) = ctx
        .source
        .rpm_packages_for(ctx.parts)
        .into_iter()
        .find(|n| n.ends_with("-devel"))
    else {
        return Vec::new();
    };
    let arch = ctx.parts.arch.clone();
    let mut out = Vec::new();
    for repository in repositories(ctx.source, ctx.parts) {
        let Some(base) = base_of(ctx, repository).await else {
            continue;
        };
        let (name, arch, deadline) = (name.clone(), arch.clone(), ctx.deadline);
        let listed = scan_metadata(ctx, &base, move |kind, raw| {
            if kind == "primary" {
                list_in_primary(raw, &name, &arch)
            } else {
                list_in_primary_db(raw, &name, &arch, deadline)
            }
        })
        .await;
        out.extend(listed.into_iter().flat_map(|(l, _)| l));
    }
    out
}

/// Every version of `name` for `arch` in primary.xml, with its build time.
fn list_in_primary(primary: &[u8], name: &str, arch: &str) -> Outcome<Vec<Listed>> {
    let mut reader = quick_xml::Reader::from_reader(primary);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let (mut in_package, mut field) = (false, None::<Vec<u8>>);
    let (mut p_name, mut p_arch) = (String::new(), String::new());
    let mut listed = Listed {
        version: String::new(),
        release: String::new(),
        built: None,
    };
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("bad primary.xml at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(e) => {
                let local = e.local_name().as_ref().to_vec();
                if local.as_slice() == b"package" {
                    in_package = true;
                    p_name.clear();
                    p_arch.clear();
                    listed.built = None;
                }
                field = matches!(local.as_slice(), b"name" | b"arch").then_some(local);
            }
            Event::Empty(e) if in_package => match e.local_name().as_ref() {
                b"version" => read_version(&e, Some((&mut listed.version, &mut listed.release))),
                b"time" => {
                    listed.built = e
                        .try_get_attribute("build")
                        .ok()
                        .flatten()
                        .and_then(|a| String::from_utf8_lossy(&a.value).parse().ok());
                }
                _ => {}
            },
            Event::Text(t) if in_package => {
                let text = String::from_utf8_lossy(t.as_ref()).trim().to_string();
                match field.as_deref() {
                    Some(b"name") => p_name = text,
                    Some(b"arch") => p_arch = text,
                    _ => {}
                }
            }
            Event::End(e) => {
                field = None;
                if e.local_name().as_ref() == b"package" {
                    in_package = false;
                    if p_name == name && p_arch == arch {
                        out.push(listed.clone());
                    }
                }
            }
            Event::Eof => return Ok(out),
            _ => {}
        }
        buf.clear();
    }
}

fn bad_db(e: &dyn std::fmt::Display) -> String {
    format!("bad primary_db: {e}")
}

/// A `primary_db` opened read-only from a private copy (the copy lives as long as the file
/// handle returned with it). The file came over the network: its schema is not trusted (no
/// functions or virtual tables run from it), `packages` must be a plain table (a view could
/// recurse without end), and every statement is stopped at the source's `deadline` (the async
/// timeout cannot stop this blocking thread).
fn open_primary_db(
    db: &[u8],
    deadline: std::time::Instant,
) -> Outcome<(tempfile::NamedTempFile, rusqlite::Connection)> {
    use std::io::Write;
    let mut file = tempfile::NamedTempFile::new().map_err(|e| bad_db(&e))?;
    file.write_all(db).map_err(|e| bad_db(&e))?;
    let conn = rusqlite::Connection::open_with_flags(
        file.path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| bad_db(&e))?;
    conn.progress_handler(10_000, Some(move || std::time::Instant::now() >= deadline))
        .map_err(|e| bad_db(&e))?;
    conn.pragma_update(None, "trusted_schema", "OFF")
        .map_err(|e| bad_db(&e))?;
    let kind: Option<String> = rusqlite::OptionalExtension::optional(conn.query_row(
        "SELECT type FROM sqlite_master WHERE name = 'packages'",
        [],
        |row| row.get(0),
    ))
    .map_err(|e| bad_db(&e))?;
    if kind.as_deref() != Some("table") {
        return Err(bad_db(&format!(
            "'packages' is {}, not a table",
            kind.map_or("missing".to_string(), |k| format!("a {k}"))
        )));
    }
    Ok((file, conn))
}

/// The same listing in a `primary_db` SQLite database.
fn list_in_primary_db(
    db: &[u8],
    name: &str,
    arch: &str,
    deadline: std::time::Instant,
) -> Outcome<Vec<Listed>> {
    let (_file, conn) = open_primary_db(db, deadline)?;
    let mut query = conn
        .prepare("SELECT version, release, time_build FROM packages WHERE name = ?1 AND arch = ?2")
        .map_err(|e| bad_db(&e))?;
    let rows = query
        .query_map([name, arch], |row| {
            Ok(Listed {
                version: row.get(0)?,
                release: row.get(1)?,
                built: row.get::<_, Option<i64>>(2)?,
            })
        })
        .map_err(|e| bad_db(&e))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(|e| bad_db(&e))
}

pub(super) async fn resolve(ctx: &mut Ctx<'_>) -> Option<Vec<HeaderPackage>> {
    let wanted: Vec<String> = ctx.source.rpm_packages_for(ctx.parts);
    // One source's repositories together hold the packages (EL splits BaseOS and AppStream).
    let mut found: Vec<Option<HeaderPackage>> = vec![None; wanted.len()];
    for repository in repositories(ctx.source, ctx.parts) {
        let Some(base) = base_of(ctx, repository).await else {
            continue;
        };
        let missing: Vec<usize> = (0..wanted.len()).filter(|&i| found[i].is_none()).collect();
        let names: Vec<&str> = missing.iter().map(|&i| wanted[i].as_str()).collect();
        let Some((hits, vouch)) = rpm_repo_base(ctx, &base, &names).await else {
            continue;
        };
        for (i, hit) in missing.into_iter().zip(hits) {
            if let Some(hit) = hit {
                let url = join(&base, &hit.location);
                if let Err(e) = on_base_host(&base, &url) {
                    ctx.outcome(e);
                    continue;
                }
                found[i] = Some(HeaderPackage {
                    name: format!("{}.rpm", hit.stem),
                    url,
                    checksum: hit.checksum,
                    vouch: vouch.clone(),
                });
            }
        }
        if found.iter().all(Option::is_some) {
            return Some(found.into_iter().flatten().collect());
        }
    }
    None
}

/// The metadata of a repomd.xml that list packages, best first: `primary` (XML), then
/// `primary_db` (SQLite), as (type, location href, checksum of the file).
fn primary_locations(repomd: &[u8]) -> Vec<(String, String, Option<Checksum>)> {
    let mut reader = quick_xml::Reader::from_reader(repomd);
    // The <data> being read: its type, location and checksum.
    let mut data: Option<(String, Option<String>, Option<Checksum>)> = None;
    let mut checksum_type: Option<String> = None;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e) | Event::Empty(e)) => match e.local_name().as_ref() {
                b"data" => {
                    data = e
                        .try_get_attribute("type")
                        .ok()
                        .flatten()
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                        .filter(|t| t == "primary" || t == "primary_db")
                        .map(|t| (t, None, None));
                }
                b"location" => {
                    if let (Some(d), Some(href)) =
                        (data.as_mut(), e.try_get_attribute("href").ok().flatten())
                    {
                        d.1 = Some(String::from_utf8_lossy(&href.value).into_owned());
                    }
                }
                b"checksum" => {
                    checksum_type = e
                        .try_get_attribute("type")
                        .ok()
                        .flatten()
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned());
                }
                _ => {}
            },
            Ok(Event::Text(t)) => {
                if let (Some(kind), Some(d)) = (checksum_type.take(), data.as_mut()) {
                    let hex = String::from_utf8_lossy(t.as_ref()).trim().to_string();
                    d.2 = rpm_checksum(&kind, &hex);
                }
            }
            Ok(Event::End(e)) => match e.local_name().as_ref() {
                b"data" => {
                    if let Some((t, Some(href), checksum)) = data.take() {
                        out.push((t, href, checksum));
                    }
                }
                b"checksum" => checksum_type = None,
                _ => {}
            },
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
        buf.clear();
    }
    out.sort_by_key(|(t, _, _)| t != "primary");
    out
}

fn rpm_checksum(kind: &str, hex: &str) -> Option<Checksum> {
    if hex.is_empty() {
        return None;
    }
    Some(Checksum {
        algorithm: if kind == "sha" { "sha1" } else { kind }.to_string(),
        hex: hex.to_ascii_lowercase(),
    })
}

/// Finds each of `names` at the kernel's version-release.arch in primary.xml: location,
/// checksum and file name.
fn find_in_primary(primary: &[u8], names: &[&str], parts: &KernelParts) -> Outcome<Found> {
    let mut found: Found = vec![None; names.len()];
    let mut reader = quick_xml::Reader::from_reader(primary);
    let mut buf = Vec::new();
    #[derive(Default)]
    struct Pkg {
        name: String,
        arch: String,
        ver: String,
        rel: String,
        checksum: Option<Checksum>,
        location: String,
    }
    let mut pkg: Option<Pkg> = None;
    let mut field: Option<Vec<u8>> = None;
    let mut checksum_type = String::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("bad primary.xml at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(e) => {
                let local = e.local_name().as_ref().to_vec();
                match local.as_slice() {
                    b"package" => pkg = Some(Pkg::default()),
                    b"name" | b"arch" => field = Some(local.clone()),
                    b"checksum" => {
                        checksum_type = e
                            .try_get_attribute("type")
                            .ok()
                            .flatten()
                            .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                            .unwrap_or_default();
                        field = Some(local.clone());
                    }
                    _ => field = None,
                }
                if local.as_slice() == b"version" {
                    read_version(&e, pkg.as_mut().map(|p| (&mut p.ver, &mut p.rel)));
                }
            }
            Event::Empty(e) => match e.local_name().as_ref() {
                b"version" => read_version(&e, pkg.as_mut().map(|p| (&mut p.ver, &mut p.rel))),
                b"location" => {
                    if let (Some(p), Some(href)) =
                        (pkg.as_mut(), e.try_get_attribute("href").ok().flatten())
                    {
                        p.location = String::from_utf8_lossy(&href.value).into_owned();
                    }
                }
                _ => {}
            },
            Event::Text(t) => {
                if let (Some(p), Some(f)) = (pkg.as_mut(), field.as_deref()) {
                    let text = String::from_utf8_lossy(t.as_ref()).trim().to_string();
                    match f {
                        b"name" => p.name = text,
                        b"arch" => p.arch = text,
                        b"checksum" => p.checksum = rpm_checksum(&checksum_type, &text),
                        _ => {}
                    }
                }
            }
            Event::End(e) => {
                field = None;
                if e.local_name().as_ref() == b"package"
                    && let Some(p) = pkg.take()
                    && let Some(rank) = rank_of(parts, &p.ver, &p.rel, &p.arch)
                    && let Some(i) = names.iter().position(|n| n.split('|').any(|a| a == p.name))
                {
                    let stem = format!("{}-{}-{}.{}", p.name, p.ver, p.rel, p.arch);
                    keep(
                        &mut found,
                        i,
                        Hit {
                            location: p.location,
                            checksum: p.checksum,
                            stem,
                            rank,
                        },
                    );
                    // An exact release cannot be bettered: stop at the last one wanted.
                    if !parts.suse && found.iter().all(Option::is_some) {
                        return Ok(found);
                    }
                }
            }
            Event::Eof => return Ok(found),
            _ => {}
        }
        buf.clear();
    }
}

/// The same lookup in a `primary_db` SQLite database (createrepo's `packages` table).
fn find_in_primary_db(
    db: &[u8],
    names: &[&str],
    parts: &KernelParts,
    deadline: std::time::Instant,
) -> Outcome<Found> {
    let (_file, conn) = open_primary_db(db, deadline)?;
    let mut query = conn
        .prepare(
            "SELECT location_href, checksum_type, pkgId, release, arch FROM packages \
             WHERE name = ?1 AND version = ?2",
        )
        .map_err(|e| bad_db(&e))?;
    let mut found: Found = vec![None; names.len()];
    let alternatives = names
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.split('|').map(move |a| (i, a)));
    for (i, name) in alternatives {
        let mut rows = query
            .query([name, parts.version.as_str()])
            .map_err(|e| bad_db(&e))?;
        while let Some(row) = rows.next().map_err(|e| bad_db(&e))? {
            let text = |i: usize| -> Outcome<String> {
                row.get::<_, Option<String>>(i)
                    .map(Option::unwrap_or_default)
                    .map_err(|e| bad_db(&e))
            };
            let (release, arch) = (text(3)?, text(4)?);
            let Some(rank) = rank_of(parts, &parts.version, &release, &arch) else {
                continue;
            };
            let hit = Hit {
                location: text(0)?,
                checksum: rpm_checksum(&text(1)?, &text(2)?),
                stem: format!("{name}-{}-{release}.{arch}", parts.version),
                rank,
            };
            keep(&mut found, i, hit);
        }
    }
    Ok(found)
}

fn read_version(e: &quick_xml::events::BytesStart<'_>, target: Option<(&mut String, &mut String)>) {
    let Some((ver, rel)) = target else {
        return;
    };
    let attr = |n: &str| {
        e.try_get_attribute(n)
            .ok()
            .flatten()
            .map(|a| String::from_utf8_lossy(&a.value).into_owned())
            .unwrap_or_default()
    };
    *ver = attr("ver");
    *rel = attr("rel");
}

/// Reads one repository's metadata for `names`: `None` when the metadata could not be read.
async fn rpm_repo_base(
    ctx: &mut Ctx<'_>,
    base: &str,
    names: &[&str],
) -> Option<(Found, Option<Vouch>)> {
    let p = ctx.parts.clone();
    let wanted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let deadline = ctx.deadline;
    let scanned = p.clone();
    let (hits, vouch) = scan_metadata(ctx, base, move |kind, raw| {
        let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
        if kind == "primary" {
            find_in_primary(raw, &names, &scanned)
        } else {
            find_in_primary_db(raw, &names, &scanned, deadline)
        }
    })
    .await?;
    let (present, absent): (Vec<_>, Vec<_>) =
        names.iter().zip(&hits).partition(|(_, h)| h.is_some());
    // Of alternatives, the one found.
    let present: Vec<&str> = present
        .into_iter()
        .filter_map(|(n, h)| {
            let stem = &h.as_ref()?.stem;
            n.split('|')
                .find(|a| stem.starts_with(&format!("{a}-{}-", p.version)))
        })
        .collect();
    let absent: Vec<String> = absent.into_iter().map(|(n, _)| p.rpm_wanted(n)).collect();
    let outcome = match (present.is_empty(), absent.is_empty()) {
        (false, true) => format!("found {}", present.join(", ")),
        (true, _) => format!("no {} in the metadata", absent.join(", ")),
        (false, false) => format!(
            "found {}; no {} in the metadata",
            present.join(", "),
            absent.join(", ")
        ),
    };
    ctx.outcome(outcome);
    Some((hits, vouch))
}

/// Whether the repository signs its metadata: `repomd.xml.asc` checked against the source's
/// keyring. `Ok(Some)`: signed, and what signed it; `Ok(None)`: unsigned (or the source is used
/// unverified), so each package's own signature is checked when it is downloaded; `Err`: a
/// signature that does not verify, and the repository is not read.
async fn repomd_signature(
    ctx: &mut Ctx<'_>,
    base: &str,
    repomd: &[u8],
) -> Result<Option<Vouch>, ()> {
    let Some(keyring) = ctx.keyring.clone() else {
        return Ok(None);
    };
    let url = join(base, "repodata/repomd.xml.asc");
    match ctx.get(&url).await {
        Ok(signature) => match keyring.verify_detached(repomd, &signature, ctx.verify_at) {
            Ok(signer) => {
                ctx.outcome(format!("ok, signed by {signer}"));
                Ok(Some(Vouch::SignedIndex(format!(
                    "{} repomd.xml, signed by {signer}",
                    crate::text::clean(base)
                ))))
            }
            Err(e) => {
                ctx.outcome(format!("repomd.xml.asc refused: {e}"));
                Err(())
            }
        },
        Err(e) if e == "HTTP 404" => {
            ctx.outcome("none: each package's own signature is checked".into());
            Ok(None)
        }
        Err(_) => Err(()),
    }
}

/// Reads one repository's repomd.xml and its package list (`primary`, else `primary_db`) and
/// hands the decompressed metadata to `scan`, off the async workers (decompressing and scanning
/// is CPU work). The first metadata `scan` reads wins; `None` when none could be read. Where
/// the repository signs repomd.xml, the package list must have the checksum it names, and the
/// signature vouches for the packages.
async fn scan_metadata<T: Send + 'static>(
    ctx: &mut Ctx<'_>,
    base: &str,
    scan: impl Fn(&str, &[u8]) -> Outcome<T> + Clone + Send + 'static,
) -> Option<(T, Option<Vouch>)> {
    let repomd = ctx.get(&join(base, "repodata/repomd.xml")).await.ok()?;
    let locations = primary_locations(&repomd);
    if locations.is_empty() {
        ctx.outcome("repomd.xml names no primary or primary_db metadata".into());
        return None;
    }
    let vouch = repomd_signature(ctx, base, &repomd).await.ok()?;
    for (kind, href, checksum) in locations {
        let url = join(base, &href);
        if let Err(e) = on_base_host(base, &url) {
            ctx.outcome(e);
            continue;
        }
        let Ok(body) = ctx.get(&url).await else {
            continue;
        };
        if vouch.is_some()
            && let Err(e) = matches_checksum(&body, checksum.as_ref())
        {
            ctx.outcome(format!("refused: {e}"));
            continue;
        }
        let scan = scan.clone();
        let scanned = tokio::task::spawn_blocking(move || {
            decompress(&href, &body).and_then(|raw| scan(&kind, &raw))
        })
        .await
        .unwrap_or_else(|e| Err(format!("reading the metadata failed: {e}")));
        match scanned {
            Ok(found) => return Some((found, vouch)),
            Err(e) => ctx.outcome(e),
        }
    }
    None
}

/// Whether `body` has the checksum signed metadata names for it.
fn matches_checksum(body: &[u8], checksum: Option<&Checksum>) -> Result<(), String> {
    let checksum = checksum.ok_or("the signed repomd.xml names no checksum for it")?;
    // SHA-1 is too weak to carry a signature's word over to the metadata it names.
    let actual = Some(checksum)
        .filter(|c| c.algorithm != "sha1")
        .and_then(|c| c.of(body))
        .ok_or_else(|| {
            format!(
                "the signed repomd.xml names a {} checksum, which kfleet does not check",
                checksum.algorithm
            )
        })?;
    if actual != checksum.hex {
        return Err("its checksum is not the one the signed repomd.xml names".into());
    }
    Ok(())
}
