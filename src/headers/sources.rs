//! One client per source kind, each speaking the real protocol: DNF repository metadata, APT
//! indexes, plain package URLs, Koji XML-RPC, snapshot.debian.org and Launchpad.

use super::chain::{KernelParts, SourceKind, SourceSpec};
use super::{Attempt, Checksum, HeaderPackage};
use quick_xml::events::Event;
use std::collections::HashMap;
use std::time::Instant;

/// Why one request of a source did not give what was wanted.
pub(super) type Outcome<T> = Result<T, String>;

pub(super) struct Ctx<'a> {
    pub http: &'a reqwest::Client,
    pub parts: &'a KernelParts,
    pub source: &'a SourceSpec,
    pub attempts: &'a mut Vec<Attempt>,
}

impl Ctx<'_> {
    /// The source's URL templates, expanded for this kernel.
    fn urls(&self) -> Vec<String> {
        self.source
            .urls
            .iter()
            .map(|u| self.parts.expand(u))
            .collect()
    }

    /// The same without trailing slashes, for APIs that append paths.
    fn api_bases(&self) -> Vec<String> {
        self.urls()
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect()
    }

    fn record(&mut self, url: &str, started: Instant, outcome: &str) {
        self.attempts.push(Attempt {
            source: self.source.name.clone(),
            kind: self.source.kind,
            url: url.to_string(),
            outcome: outcome.to_string(),
            millis: started.elapsed().as_millis() as u64,
        });
    }

    /// GET a body; a non-2xx answer is recorded and returned as `Err`.
    async fn get(&mut self, url: &str) -> Outcome<bytes::Bytes> {
        let started = Instant::now();
        let result = async {
            let r = self.http.get(url).send().await.map_err(|e| describe(&e))?;
            let status = r.status();
            if !status.is_success() {
                return Err(format!("HTTP {}", status.as_u16()));
            }
            if r.content_length().is_some_and(|n| n > MAX_DOWNLOAD) {
                return Err(format!("larger than {MAX_DOWNLOAD} bytes"));
            }
            let mut r = r;
            let mut body = Vec::new();
            while let Some(chunk) = r.chunk().await.map_err(|e| describe(&e))? {
                if body.len() as u64 + chunk.len() as u64 > MAX_DOWNLOAD {
                    return Err(format!("larger than {MAX_DOWNLOAD} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(bytes::Bytes::from(body))
        }
        .await;
        match &result {
            Ok(_) => self.record(url, started, "ok"),
            Err(e) => self.record(url, started, e),
        }
        result
    }

    /// Whether a package URL exists: HEAD, or a one-byte ranged GET where HEAD is refused.
    async fn probe(&mut self, url: &str) -> Outcome<()> {
        let started = Instant::now();
        let result = async {
            let head = self.http.head(url).send().await.map_err(|e| describe(&e))?;
            let status = head.status();
            if status.is_success() {
                return Ok(());
            }
            if matches!(status.as_u16(), 403 | 405 | 501) {
                let ranged = self
                    .http
                    .get(url)
                    .header(reqwest::header::RANGE, "bytes=0-0")
                    .send()
                    .await
                    .map_err(|e| describe(&e))?;
                if ranged.status().is_success() {
                    return Ok(());
                }
                return Err(format!(
                    "HTTP {} (ranged GET after HEAD {})",
                    ranged.status().as_u16(),
                    status.as_u16()
                ));
            }
            Err(format!("HTTP {}", status.as_u16()))
        }
        .await;
        match &result {
            Ok(()) => self.record(url, started, "found"),
            Err(e) => self.record(url, started, e),
        }
        result
    }

    async fn json(&mut self, url: &str) -> Outcome<serde_json::Value> {
        let body = self.get(url).await?;
        serde_json::from_slice(&body).map_err(|e| {
            let msg = format!("not JSON: {e}");
            if let Some(last) = self.attempts.last_mut() {
                last.outcome = msg.clone();
            }
            msg
        })
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

/// Largest metadata file or package downloaded (compressed).
pub(super) const MAX_DOWNLOAD: u64 = 512 << 20;

/// Decompresses by file name: `.gz`, `.xz`, `.zst`, `.bz2`, or plain; at most 50 times the
/// compressed size (64 MiB to 2 GiB: real primary.xml and Packages expand about 10:1).
fn decompress(name: &str, body: &[u8]) -> Outcome<Vec<u8>> {
    use crate::bounded::{Limits, read_to_end};
    let limits = Limits::by_ratio(body.len() as u64, 50, 64 << 20, 2 << 30);
    let (kind, result) = if name.ends_with(".gz") {
        (
            "gzip",
            read_to_end(flate2::read::MultiGzDecoder::new(body), limits),
        )
    } else if name.ends_with(".xz") {
        // Every stream: Ubuntu's Packages.xz are two xz streams, the second one empty.
        let decoder = liblzma::read::XzDecoder::new_multi_decoder(body);
        ("xz", read_to_end(decoder, limits))
    } else if name.ends_with(".zst") {
        match zstd::stream::read::Decoder::new(body) {
            Ok(d) => ("zstd", read_to_end(d, limits)),
            Err(e) => return Err(format!("bad zstd: {e}")),
        }
    } else if name.ends_with(".bz2") {
        (
            "bzip2",
            read_to_end(bzip2::read::MultiBzDecoder::new(body), limits),
        )
    } else {
        return Ok(body.to_vec());
    };
    result.map_err(|e| match e {
        crate::bounded::BoundedError::Io(e) => format!("bad {kind}: {e}"),
        other => format!("{name}: {kind} content {other}"),
    })
}

/// Tries one source; `Ok(None)` when it answered but does not hold the kernel.
pub(super) async fn try_source(ctx: &mut Ctx<'_>) -> Option<Vec<HeaderPackage>> {
    if let Some(problem) = super::chain::missing_codename(ctx.parts, ctx.source) {
        ctx.record("", Instant::now(), &problem);
        return None;
    }
    match ctx.source.kind {
        SourceKind::RpmRepo => rpm_repo(ctx).await,
        SourceKind::AptRepo => apt_repo(ctx).await,
        SourceKind::Url => url_source(ctx).await,
        SourceKind::Koji => koji(ctx).await,
        SourceKind::Snapshot => snapshot(ctx).await,
        SourceKind::Launchpad => launchpad(ctx).await,
    }
}

/// `path` resolved against the directory `base`, as a client would: repositories give relative
/// locations, Amazon Linux 2's with `../` up to a shared blob store.
fn join(base: &str, path: &str) -> String {
    let dir = if base.ends_with('/') {
        base.to_string()
    } else {
        format!("{base}/")
    };
    reqwest::Url::parse(&dir)
        .and_then(|d| d.join(path))
        .map_or_else(|_| format!("{dir}{path}"), String::from)
}

// ---- rpm-repo ------------------------------------------------------------------------------

/// The package locations one repository gave, by wanted package: `None` where it has none.
type Found = Vec<Option<(String, Option<Checksum>)>>;

async fn rpm_repo(ctx: &mut Ctx<'_>) -> Option<Vec<HeaderPackage>> {
    let wanted: Vec<String> = ctx.source.rpm_packages_for(ctx.parts);
    // One source's repositories together hold the packages (EL splits BaseOS and AppStream).
    let mut found: Vec<Option<HeaderPackage>> = vec![None; wanted.len()];
    for url in ctx.urls() {
        let base = if ctx.source.mirrorlist {
            let Ok(list) = ctx.get(&url).await else {
                continue;
            };
            match String::from_utf8_lossy(&list)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
            {
                Some(mirror) => mirror.to_string(),
                None => {
                    if let Some(a) = ctx.attempts.last_mut() {
                        a.outcome = "mirror.list names no mirror".into();
                    }
                    continue;
                }
            }
        } else {
            url
        };
        let missing: Vec<usize> = (0..wanted.len()).filter(|&i| found[i].is_none()).collect();
        let names: Vec<&str> = missing.iter().map(|&i| wanted[i].as_str()).collect();
        let Some(hits) = rpm_repo_base(ctx, &base, &names).await else {
            continue;
        };
        let p = ctx.parts;
        for ((i, name), hit) in missing.into_iter().zip(names).zip(hits) {
            if let Some((location, checksum)) = hit {
                found[i] = Some(HeaderPackage {
                    name: format!("{name}-{}-{}.{}.rpm", p.version, p.release, p.arch),
                    url: join(&base, &location),
                    checksum,
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
/// `primary_db` (SQLite), as (type, location href).
pub(super) fn primary_locations(repomd: &[u8]) -> Vec<(String, String)> {
    let mut reader = quick_xml::Reader::from_reader(repomd);
    let mut data_type: Option<String> = None;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e) | Event::Empty(e)) => match e.local_name().as_ref() {
                b"data" => {
                    data_type = e
                        .try_get_attribute("type")
                        .ok()
                        .flatten()
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                        .filter(|t| t == "primary" || t == "primary_db");
                }
                b"location" => {
                    if let (Some(t), Some(href)) =
                        (data_type.take(), e.try_get_attribute("href").ok().flatten())
                    {
                        out.push((t, String::from_utf8_lossy(&href.value).into_owned()));
                    }
                }
                _ => {}
            },
            Ok(Event::End(e)) if e.local_name().as_ref() == b"data" => data_type = None,
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
        buf.clear();
    }
    out.sort_by_key(|(t, _)| t != "primary");
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

/// Finds each of `names` at exactly version-release.arch in primary.xml: location and checksum.
pub(super) fn find_in_primary(
    primary: &[u8],
    names: &[&str],
    version: &str,
    release: &str,
    arch: &str,
) -> Outcome<Found> {
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
                    && p.arch == arch
                    && p.ver == version
                    && p.rel == release
                    && let Some(i) = names.iter().position(|n| *n == p.name)
                    && found[i].is_none()
                {
                    found[i] = Some((p.location, p.checksum));
                    if found.iter().all(Option::is_some) {
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
pub(super) fn find_in_primary_db(
    db: &[u8],
    names: &[&str],
    version: &str,
    release: &str,
    arch: &str,
) -> Outcome<Found> {
    use std::io::Write;
    let bad = |e: &dyn std::fmt::Display| format!("bad primary_db: {e}");
    let mut file = tempfile::NamedTempFile::new().map_err(|e| bad(&e))?;
    file.write_all(db).map_err(|e| bad(&e))?;
    let conn = rusqlite::Connection::open_with_flags(
        file.path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| bad(&e))?;
    let mut query = conn
        .prepare(
            "SELECT location_href, checksum_type, pkgId FROM packages \
             WHERE name = ?1 AND version = ?2 AND release = ?3 AND arch = ?4 LIMIT 1",
        )
        .map_err(|e| bad(&e))?;
    names
        .iter()
        .map(|name| {
            let mut rows = query
                .query([name, &version, &release, &arch])
                .map_err(|e| bad(&e))?;
            let Some(row) = rows.next().map_err(|e| bad(&e))? else {
                return Ok(None);
            };
            let text = |i: usize| -> Outcome<String> {
                row.get::<_, Option<String>>(i)
                    .map(Option::unwrap_or_default)
                    .map_err(|e| bad(&e))
            };
            Ok(Some((text(0)?, rpm_checksum(&text(1)?, &text(2)?))))
        })
        .collect()
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
async fn rpm_repo_base(ctx: &mut Ctx<'_>, base: &str, names: &[&str]) -> Option<Found> {
    let repomd_url = join(base, "repodata/repomd.xml");
    let repomd = ctx.get(&repomd_url).await.ok()?;
    let locations = primary_locations(&repomd);
    if locations.is_empty() {
        if let Some(a) = ctx.attempts.last_mut() {
            a.outcome = "repomd.xml names no primary or primary_db metadata".into();
        }
        return None;
    }
    let p = ctx.parts.clone();
    for (kind, href) in locations {
        let Ok(body) = ctx.get(&join(base, &href)).await else {
            continue;
        };
        let wanted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let (version, release, arch) = (p.version.clone(), p.release.clone(), p.arch.clone());
        // Decompressing and scanning metadata is CPU work: off the async workers.
        let looked_up = tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
            decompress(&href, &body).and_then(|raw| {
                if kind == "primary" {
                    find_in_primary(&raw, &names, &version, &release, &arch)
                } else {
                    find_in_primary_db(&raw, &names, &version, &release, &arch)
                }
            })
        })
        .await
        .unwrap_or_else(|e| Err(format!("reading the metadata failed: {e}")));
        let hits = match looked_up {
            Ok(hits) => hits,
            Err(e) => {
                if let Some(a) = ctx.attempts.last_mut() {
                    a.outcome = e;
                }
                continue;
            }
        };
        let (present, absent): (Vec<_>, Vec<_>) =
            names.iter().zip(&hits).partition(|(_, h)| h.is_some());
        let present: Vec<&str> = present.into_iter().map(|(n, _)| *n).collect();
        let absent: Vec<String> = absent
            .into_iter()
            .map(|(n, _)| format!("{n}-{}-{}.{}", p.version, p.release, p.arch))
            .collect();
        let outcome = match (present.is_empty(), absent.is_empty()) {
            (false, true) => format!("found {}", present.join(", ")),
            (true, _) => format!("no {} in the metadata", absent.join(", ")),
            (false, false) => format!(
                "found {}; no {} in the metadata",
                present.join(", "),
                absent.join(", ")
            ),
        };
        if let Some(a) = ctx.attempts.last_mut() {
            a.outcome = outcome;
        }
        return Some(hits);
    }
    None
}

// ---- apt-repo ------------------------------------------------------------------------------

/// One stanza of an APT `Packages` index.
#[derive(Clone, Debug, Default)]
pub(super) struct Stanza {
    pub package: String,
    pub filename: String,
    pub sha256: Option<String>,
    pub depends: Vec<String>,
}

pub(super) fn parse_packages(text: &str) -> HashMap<String, Stanza> {
    let mut out = HashMap::new();
    for block in text.split("\n\n") {
        let mut s = Stanza::default();
        for line in block.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "Package" => s.package = v.to_string(),
                "Filename" => s.filename = v.to_string(),
                "SHA256" => s.sha256 = Some(v.to_ascii_lowercase()),
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
pub(super) fn resolve_in_index(
    index: &HashMap<String, Stanza>,
    root: &str,
    base: &str,
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
            checksum: s.sha256.clone().map(|hex| Checksum {
                algorithm: "sha256".into(),
                hex,
            }),
        });
        queue.extend(s.depends.iter().filter(|d| header_dependency(d)).cloned());
    }
    Some(out)
}

async fn apt_repo(ctx: &mut Ctx<'_>) -> Option<Vec<HeaderPackage>> {
    let root = format!("linux-headers-{}", ctx.parts.kernel);
    let bases = ctx.urls();
    let suites: Vec<String> = ctx
        .source
        .suites
        .iter()
        .map(|s| ctx.parts.expand(s))
        .collect();
    let components = ctx.source.components.clone();
    for base in &bases {
        for suite in &suites {
            // Dependencies may live in another component of the same suite.
            let mut index = HashMap::new();
            for component in &components {
                let dir = format!("dists/{suite}/{component}/binary-{}/", ctx.parts.deb_arch);
                for file in ["Packages.xz", "Packages.gz"] {
                    let url = join(base, &format!("{dir}{file}"));
                    let Ok(body) = ctx.get(&url).await else {
                        continue;
                    };
                    let name = file.to_string();
                    let text = tokio::task::spawn_blocking(move || decompress(&name, &body))
                        .await
                        .unwrap_or_else(|e| Err(format!("decompressing failed: {e}")));
                    match text {
                        Ok(text) => {
                            index.extend(parse_packages(&String::from_utf8_lossy(&text)));
                            break;
                        }
                        Err(e) => {
                            if let Some(a) = ctx.attempts.last_mut() {
                                a.outcome = e;
                            }
                        }
                    }
                }
            }
            if let Some(found) = resolve_in_index(&index, &root, base) {
                if let Some(a) = ctx.attempts.last_mut() {
                    a.outcome = format!("found {root} in {suite}");
                }
                return Some(found);
            }
            if let Some(a) = ctx.attempts.last_mut()
                && a.outcome == "ok"
            {
                a.outcome = format!("no {root} in {suite}");
            }
        }
    }
    None
}

// ---- url -----------------------------------------------------------------------------------

async fn url_source(ctx: &mut Ctx<'_>) -> Option<Vec<HeaderPackage>> {
    let source = ctx.source;
    let mut out = Vec::new();
    let packages = source.rpm_packages_for(ctx.parts);
    for (i, package) in packages.iter().enumerate() {
        let package = package.as_str();
        let mut hit = None;
        for template in source.url_templates_for(package, i == 0) {
            let url = ctx.parts.expand(&template);
            if ctx.probe(&url).await.is_ok() {
                hit = Some(url);
                break;
            }
        }
        // Every package must be there; the first one missing ends this source.
        let url = hit?;
        out.push(HeaderPackage {
            name: url.rsplit('/').next().unwrap_or(&url).to_string(),
            url,
            checksum: None,
        });
    }
    Some(out)
}

// ---- koji ----------------------------------------------------------------------------------

/// An XML-RPC value, as much of it as Koji answers with.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum XmlRpc {
    Str(String),
    Int(i64),
    Bool(bool),
    Nil,
    Array(Vec<XmlRpc>),
    Struct(HashMap<String, XmlRpc>),
}

impl XmlRpc {
    fn get(&self, key: &str) -> Option<&XmlRpc> {
        match self {
            Self::Struct(m) => m.get(key),
            _ => None,
        }
    }
    fn str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

pub(super) fn xmlrpc_call(method: &str, params: &[XmlRpc]) -> String {
    fn value(v: &XmlRpc) -> String {
        match v {
            XmlRpc::Str(s) => format!(
                "<value><string>{}</string></value>",
                quick_xml::escape::escape(s.as_str())
            ),
            XmlRpc::Int(i) => format!("<value><int>{i}</int></value>"),
            XmlRpc::Bool(b) => format!("<value><boolean>{}</boolean></value>", u8::from(*b)),
            XmlRpc::Nil => "<value><nil/></value>".into(),
            XmlRpc::Array(a) => format!(
                "<value><array><data>{}</data></array></value>",
                a.iter().map(value).collect::<String>()
            ),
            XmlRpc::Struct(m) => format!(
                "<value><struct>{}</struct></value>",
                m.iter()
                    .map(|(k, v)| format!("<member><name>{k}</name>{}</member>", value(v)))
                    .collect::<String>()
            ),
        }
    }
    format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{}</params></methodCall>",
        params
            .iter()
            .map(|p| format!("<param>{}</param>", value(p)))
            .collect::<String>()
    )
}

/// Parses a methodResponse: the value, or the fault string.
pub(super) fn xmlrpc_response(body: &[u8]) -> Outcome<XmlRpc> {
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    // A stack of open containers; names of struct members wait on `names`.
    enum Frame {
        Array(Vec<XmlRpc>),
        Struct(HashMap<String, XmlRpc>),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut scalar: Option<String> = None;
    let mut text = String::new();
    let mut result: Option<XmlRpc> = None;
    let mut fault = false;
    let mut in_value = false;
    let mut value_had_type = false;
    let place = |v: XmlRpc,
                 stack: &mut Vec<Frame>,
                 names: &mut Vec<String>,
                 result: &mut Option<XmlRpc>| {
        match stack.last_mut() {
            Some(Frame::Array(a)) => a.push(v),
            Some(Frame::Struct(m)) => {
                let k = names.pop().unwrap_or_default();
                m.insert(k, v);
            }
            None => *result = Some(v),
        }
    };
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("bad XML-RPC: {e}"))?;
        match event {
            Event::Start(e) => match e.local_name().as_ref() {
                b"fault" => fault = true,
                b"value" => {
                    in_value = true;
                    value_had_type = false;
                    text.clear();
                }
                b"array" => {
                    value_had_type = true;
                    stack.push(Frame::Array(Vec::new()))
                }
                b"struct" => {
                    value_had_type = true;
                    stack.push(Frame::Struct(HashMap::new()))
                }
                b"name" => scalar = Some("name".into()),
                t @ (b"string" | b"int" | b"i4" | b"i8" | b"boolean" | b"double"
                | b"dateTime.iso8601" | b"base64") => {
                    value_had_type = true;
                    scalar = Some(String::from_utf8_lossy(t).into_owned());
                    text.clear();
                }
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                b"nil" => {
                    value_had_type = true;
                    place(XmlRpc::Nil, &mut stack, &mut names, &mut result)
                }
                b"string" => {
                    value_had_type = true;
                    place(
                        XmlRpc::Str(String::new()),
                        &mut stack,
                        &mut names,
                        &mut result,
                    )
                }
                b"value" => place(
                    XmlRpc::Str(String::new()),
                    &mut stack,
                    &mut names,
                    &mut result,
                ),
                _ => {}
            },
            Event::Text(t) => {
                let decoded = t.decode().map_err(|e| format!("bad XML-RPC text: {e}"))?;
                text.push_str(
                    &quick_xml::escape::unescape(&decoded)
                        .map_err(|e| format!("bad XML-RPC text: {e}"))?,
                );
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"name" => {
                    names.push(std::mem::take(&mut text));
                    scalar = None;
                }
                b"array" | b"struct" => {
                    let v = match stack.pop() {
                        Some(Frame::Array(a)) => XmlRpc::Array(a),
                        Some(Frame::Struct(m)) => XmlRpc::Struct(m),
                        None => return Err("bad XML-RPC: unbalanced containers".into()),
                    };
                    place(v, &mut stack, &mut names, &mut result);
                }
                b"value" => {
                    if in_value && !value_had_type {
                        place(
                            XmlRpc::Str(std::mem::take(&mut text)),
                            &mut stack,
                            &mut names,
                            &mut result,
                        );
                    }
                    in_value = false;
                    value_had_type = true;
                }
                _ => {
                    if let Some(kind) = scalar.take() {
                        let raw = std::mem::take(&mut text);
                        let v = match kind.as_str() {
                            "int" | "i4" | "i8" => XmlRpc::Int(
                                raw.trim()
                                    .parse()
                                    .map_err(|_| format!("bad XML-RPC int {raw}"))?,
                            ),
                            "boolean" => XmlRpc::Bool(raw.trim() == "1"),
                            _ => XmlRpc::Str(raw),
                        };
                        place(v, &mut stack, &mut names, &mut result);
                    }
                }
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let value = result.ok_or("XML-RPC response without a value")?;
    if fault {
        let msg = value
            .get("faultString")
            .and_then(XmlRpc::str)
            .unwrap_or("unknown fault");
        return Err(format!("Koji fault: {msg}"));
    }
    Ok(value)
}

async fn koji_call(
    ctx: &mut Ctx<'_>,
    hub: &str,
    method: &str,
    params: &[XmlRpc],
) -> Outcome<XmlRpc> {
    let started = Instant::now();
    let label = format!(
        "{hub} {method}({})",
        params
            .iter()
            .map(|p| match p {
                XmlRpc::Str(s) => s.clone(),
                XmlRpc::Int(i) => i.to_string(),
                _ => "…".into(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let result = async {
        let r = ctx
            .http
            .post(hub)
            .header(reqwest::header::CONTENT_TYPE, "text/xml")
            .body(xmlrpc_call(method, params))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if !r.status().is_success() {
            return Err(format!("HTTP {}", r.status().as_u16()));
        }
        let body = r.bytes().await.map_err(|e| describe(&e))?;
        xmlrpc_response(&body)
    }
    .await;
    let outcome = match &result {
        Ok(XmlRpc::Nil) => "no such build".to_string(),
        Ok(_) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    ctx.record(&label, started, &outcome);
    result
}

async fn koji(ctx: &mut Ctx<'_>) -> Option<Vec<HeaderPackage>> {
    let files = ctx.parts.expand(ctx.source.files.as_deref()?);
    let p = ctx.parts.clone();
    let nvr = format!("{}-{}-{}", p.srpm, p.version, p.release);
    let hubs = ctx.urls();
    for hub in hubs {
        let Ok(build) = koji_call(ctx, &hub, "getBuild", &[XmlRpc::Str(nvr.clone())]).await else {
            continue;
        };
        let Some(XmlRpc::Int(build_id)) = build.get("id").cloned() else {
            continue;
        };
        let package = build
            .get("name")
            .and_then(XmlRpc::str)
            .unwrap_or("kernel")
            .to_string();
        let Ok(XmlRpc::Array(rpms)) =
            koji_call(ctx, &hub, "listRPMs", &[XmlRpc::Int(build_id)]).await
        else {
            continue;
        };
        let wanted_names = ctx.source.rpm_packages_for(ctx.parts);
        let wanted: Vec<&str> = wanted_names.iter().map(String::as_str).collect();
        let has = |name: &str| {
            rpms.iter().any(|r| {
                r.get("name").and_then(XmlRpc::str) == Some(name)
                    && r.get("arch").and_then(XmlRpc::str) == Some(p.arch.as_str())
            })
        };
        let absent: Vec<&str> = wanted.iter().copied().filter(|w| !has(w)).collect();
        let outcome = if absent.is_empty() {
            format!("found {}", wanted.join(", "))
        } else {
            format!("build {nvr} has no {} for {}", absent.join(", "), p.arch)
        };
        if let Some(a) = ctx.attempts.last_mut() {
            a.outcome = outcome;
        }
        if absent.is_empty() {
            let dir = format!(
                "{}/packages/{package}/{}/{}/{}",
                files.trim_end_matches('/'),
                p.version,
                p.release,
                p.arch
            );
            return Some(
                wanted
                    .iter()
                    .map(|w| {
                        let file = format!("{w}-{}-{}.{}.rpm", p.version, p.release, p.arch);
                        HeaderPackage {
                            url: format!("{dir}/{file}"),
                            name: file,
                            checksum: None,
                        }
                    })
                    .collect(),
            );
        }
    }
    None
}

// ---- snapshot.debian.org -------------------------------------------------------------------

async fn snapshot_binary(ctx: &mut Ctx<'_>, base: &str, package: &str) -> Option<HeaderPackage> {
    let versions = ctx
        .json(&format!("{base}/mr/binary/{package}/"))
        .await
        .ok()?;
    let version = versions["result"]
        .as_array()?
        .first()?
        .get("binary_version")?
        .as_str()?
        .to_string();
    let files = ctx
        .json(&format!(
            "{base}/mr/binary/{package}/{version}/binfiles?fileinfo=1"
        ))
        .await
        .ok()?;
    let arch = &ctx.parts.deb_arch;
    let entry = files["result"].as_array()?.iter().find(|f| {
        let a = f["architecture"].as_str().unwrap_or("");
        a == arch || a == "all"
    })?;
    let hash = entry["hash"].as_str()?.to_string();
    let name = files["fileinfo"][&hash]
        .as_array()
        .and_then(|i| i.first())
        .and_then(|i| i["name"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{package}_{version}_{arch}.deb"));
    Some(HeaderPackage {
        name,
        url: format!("{base}/file/{hash}"),
        checksum: Some(Checksum {
            algorithm: "sha1".into(),
            hex: hash,
        }),
    })
}

async fn snapshot(ctx: &mut Ctx<'_>) -> Option<Vec<HeaderPackage>> {
    let p = ctx.parts.clone();
    let bases = ctx.api_bases();
    for base in bases {
        let Some(main) = snapshot_binary(ctx, &base, &format!("linux-headers-{}", p.kernel)).await
        else {
            continue;
        };
        let Some(common) =
            snapshot_binary(ctx, &base, &format!("linux-headers-{}-common", p.abi)).await
        else {
            continue;
        };
        let mut out = vec![main, common];
        let series = p
            .version
            .rsplit_once('.')
            .map_or(p.version.as_str(), |(s, _)| s)
            .to_string();
        for kbuild in [
            format!("linux-kbuild-{}", p.abi),
            format!("linux-kbuild-{series}"),
        ] {
            if let Some(k) = snapshot_binary(ctx, &base, &kbuild).await {
                out.push(k);
                break;
            }
        }
        return Some(out);
    }
    None
}

// ---- Launchpad -----------------------------------------------------------------------------

async fn launchpad_binary(
    ctx: &mut Ctx<'_>,
    api: &str,
    name: &str,
) -> Option<(HeaderPackage, String)> {
    let p = ctx.parts.clone();
    let query = format!(
        "{api}/ubuntu/+archive/primary?ws.op=getPublishedBinaries&binary_name={name}&exact_match=true&distro_arch_series={api}/ubuntu/{}/{}",
        p.codename, p.deb_arch
    );
    let listing = ctx.json(&query).await.ok()?;
    let entry = listing["entries"].as_array()?.first()?.clone();
    let source = entry["source_package_name"]
        .as_str()
        .unwrap_or("linux")
        .to_string();
    let self_link = entry["self_link"].as_str()?;
    let urls = ctx
        .json(&format!(
            "{self_link}?ws.op=binaryFileUrls&include_meta=true"
        ))
        .await
        .ok()?;
    let first = urls.as_array()?.first()?;
    // include_meta gives {url, sha256, size}; without it the list holds plain URLs.
    let (url, sha256) = match first {
        serde_json::Value::String(u) => (u.clone(), None),
        other => (
            other["url"].as_str()?.to_string(),
            other["sha256"].as_str().map(str::to_string),
        ),
    };
    Some((
        HeaderPackage {
            name: url.rsplit('/').next().unwrap_or(&url).to_string(),
            url,
            checksum: sha256.map(|hex| Checksum {
                algorithm: "sha256".into(),
                hex,
            }),
        },
        source,
    ))
}

async fn launchpad(ctx: &mut Ctx<'_>) -> Option<Vec<HeaderPackage>> {
    let p = ctx.parts.clone();
    let apis = ctx.api_bases();
    for api in apis {
        let Some((main, source)) =
            launchpad_binary(ctx, &api, &format!("linux-headers-{}", p.kernel)).await
        else {
            continue;
        };
        // The architecture-independent half: linux-headers-ABI, or SOURCE-headers-ABI for
        // derived kernels (linux-aws-headers-5.15.0-1034, linux-gkeop-5.4-headers-5.4.0-1031).
        let common = if source == "linux" {
            format!("linux-headers-{}", p.abi)
        } else {
            format!("{source}-headers-{}", p.abi)
        };
        let Some((common, _)) = launchpad_binary(ctx, &api, &common).await else {
            continue;
        };
        return Some(vec![main, common]);
    }
    None
}
