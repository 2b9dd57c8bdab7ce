//! The header fallback chain against fixture servers on 127.0.0.1 that speak each protocol with
//! documents generated here: DNF metadata (gzip and zstd primaries, an Amazon Linux mirror.list),
//! APT indexes (xz), explicit URLs, Koji XML-RPC, snapshot.debian.org and Launchpad JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use assert_cmd::Command;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use kfleet::headers::{Chain, Resolver, ResolverOptions};
use kfleet::identity::KernelIdentity;
use sha2::Digest;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Files {
    files: HashMap<String, Vec<u8>>,
    /// Paths that never answer.
    hang: Vec<String>,
    /// Koji hub: NVR -> (build id, RPMs as (name, arch)).
    koji: HashMap<String, (i64, Vec<(String, String)>)>,
    /// Conditional GETs answered 304.
    not_modified: usize,
    /// GET requests per path.
    gets: std::collections::HashMap<String, usize>,
    /// Paths under these prefixes answer 401 without this `Authorization` header.
    guarded: Vec<(String, String)>,
    /// The `Authorization` header of every request, by path.
    authorizations: Vec<(String, Option<String>)>,
    /// Paths answered with a 302 to this URL.
    redirects: HashMap<String, String>,
    /// Paths under these prefixes answer 403 without this query (a token, as updates.suse.com
    /// wants one).
    tokens: Vec<(String, String)>,
    /// Signatures made, by the SHA256 of what they sign: the same metadata keeps one signature
    /// (and its ETag), as an archive's does.
    signatures: HashMap<String, Vec<u8>>,
}

type Shared = Arc<Mutex<Files>>;

async fn serve(State(files): State<Shared>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let query = request
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let method = request.method().clone();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    {
        let mut f = files.lock().unwrap();
        f.authorizations.push((path.clone(), authorization.clone()));
        let refused = f.guarded.iter().any(|(prefix, wanted)| {
            path.starts_with(prefix.as_str()) && authorization.as_ref() != Some(wanted)
        });
        if refused {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let forbidden = f.tokens.iter().any(|(prefix, token)| {
            path.starts_with(prefix.as_str()) && query != format!("?{token}")
        });
        if forbidden {
            return StatusCode::FORBIDDEN.into_response();
        }
        if let Some(to) = f.redirects.get(&path) {
            return (StatusCode::FOUND, [("location", to.clone())]).into_response();
        }
    }
    if files
        .lock()
        .unwrap()
        .hang
        .iter()
        .any(|h| path.starts_with(h))
    {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    if method == Method::POST {
        let body = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .unwrap();
        return koji(&files, &body);
    }
    if method == Method::GET {
        *files.lock().unwrap().gets.entry(path.clone()).or_default() += 1;
    }
    let key = format!("{path}{query}");
    let found = {
        let mut f = files.lock().unwrap();
        let Files {
            files, signatures, ..
        } = &mut *f;
        files
            .get(&key)
            .or_else(|| files.get(&path))
            .cloned()
            .or_else(|| signed_metadata(files, signatures, &path))
    };
    // Every file has an ETag (its sha256) and answers a matching If-None-Match with a 304.
    let etag = found.as_ref().map(|b| format!("\"{}\"", sha256(b)));
    let conditional = request
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match found {
        Some(body) if method == Method::HEAD => {
            (StatusCode::OK, [("content-length", body.len().to_string())]).into_response()
        }
        Some(_) if conditional.is_some() && conditional == etag => {
            files.lock().unwrap().not_modified += 1;
            StatusCode::NOT_MODIFIED.into_response()
        }
        Some(body) => (StatusCode::OK, [("etag", etag.unwrap_or_default())], body).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// What an archive signs, made on request from the files served: a suite's `InRelease` listing
/// every file put under `dists/{suite}/`, and `repomd.xml.asc` over a repository's repomd.xml.
fn signed_metadata(
    files: &HashMap<String, Vec<u8>>,
    signatures: &mut HashMap<String, Vec<u8>>,
    path: &str,
) -> Option<Vec<u8>> {
    // A suite that publishes Release and Release.gpg instead.
    if let Some(dir) = path.strip_suffix("InRelease")
        && !files.contains_key(&format!("{dir}Release"))
    {
        let mut listed: Vec<(String, Vec<u8>)> = files
            .iter()
            .filter_map(|(p, body)| Some((p.strip_prefix(dir)?.to_string(), body.clone())))
            .collect();
        if listed.is_empty() {
            return None;
        }
        listed.sort();
        let release = archive_signing::release(&listed);
        let signed = signatures
            .entry(sha256(release.as_bytes()))
            .or_insert_with(|| archive_signing::clearsign(&release));
        return Some(signed.clone());
    }
    let repomd = path
        .strip_suffix(".asc")
        .filter(|p| p.ends_with("/repomd.xml"))?;
    let repomd = files.get(repomd)?;
    let signed = signatures
        .entry(sha256(repomd))
        .or_insert_with(|| archive_signing::detach_sign(repomd));
    Some(signed.clone())
}

#[path = "support/archive_signing.rs"]
#[allow(dead_code)]
mod archive_signing;

fn koji(files: &Shared, body: &Bytes) -> Response {
    let text = String::from_utf8_lossy(body);
    let f = files.lock().unwrap();
    let value = if text.contains("<methodName>getBuild</methodName>") {
        let nvr = text
            .split("<string>")
            .nth(1)
            .and_then(|s| s.split("</string>").next())
            .unwrap_or("");
        // The package is the NVR without its version and release (`kernel-rt-4.18.0-...`).
        let name = nvr.rsplitn(3, '-').nth(2).unwrap_or(nvr);
        match f.koji.get(nvr) {
            Some((id, _)) => format!(
                "<struct><member><name>id</name><value><int>{id}</int></value></member><member><name>name</name><value><string>{name}</string></value></member><member><name>nvr</name><value><string>{nvr}</string></value></member><member><name>state</name><value><int>1</int></value></member></struct>"
            ),
            None => "<nil/>".to_string(),
        }
    } else {
        let id: i64 = text
            .split("<int>")
            .nth(1)
            .and_then(|s| s.split("</int>").next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1);
        let rpms = f
            .koji
            .values()
            .find(|(b, _)| *b == id)
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        format!(
            "<array><data>{}</data></array>",
            rpms.iter()
                .map(|(n, a)| format!("<value><struct><member><name>name</name><value><string>{n}</string></value></member><member><name>arch</name><value><string>{a}</string></value></member></struct></value>"))
                .collect::<String>()
        )
    };
    (
        StatusCode::OK,
        [("content-type", "text/xml")],
        format!("<?xml version='1.0'?><methodResponse><params><param><value>{value}</value></param></params></methodResponse>"),
    )
        .into_response()
}

struct Fixture {
    base: String,
    files: Shared,
    _rt: tokio::runtime::Runtime,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let files: Shared = Arc::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().fallback(serve).with_state(files.clone());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Fixture {
        base,
        files,
        _rt: rt,
    }
}

#[path = "support/certs.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod certs;

/// The fixture over TLS only, for 127.0.0.1 with a certificate of a CA of its own (written in
/// `pki` as `ca.crt`), accepting only clients that present a certificate that CA signed, as
/// Red Hat's CDN accepts only entitled systems.
fn fixture_requiring_client_certificates(pki: &std::path::Path) -> Fixture {
    let ca = certs::issue(pki, "server.key", "server.crt");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let files: Shared = Arc::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    // A client without a certificate the CA signed fails the handshake.
    let acceptor = client_certificate_acceptor(pki, &ca, false);
    let app = Router::new().fallback(serve).with_state(files.clone());
    serve_tls(&rt, listener, acceptor, app);
    Fixture {
        base,
        files,
        _rt: rt,
    }
}

/// Whether a connection's client presented a certificate its server's CA signed.
#[derive(Clone, Copy)]
struct ClientCert(bool);

/// TLS for 127.0.0.1 with `pki`'s `server.crt`, checking client certificates against `ca`;
/// `optional`: a client may present none (then [`ClientCert`] is false).
fn client_certificate_acceptor(
    pki: &std::path::Path,
    ca: &std::path::Path,
    optional: bool,
) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots));
    let verifier = if optional {
        verifier.allow_unauthenticated()
    } else {
        verifier
    }
    .build()
    .unwrap();
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(pki.join("server.crt"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(pki.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Serves `app` on `listener` through `acceptor`, each connection's requests carrying its
/// [`ClientCert`].
fn serve_tls(
    rt: &tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
) {
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let presented = stream.get_ref().1.peer_certificates().is_some();
                let app = app.layer(axum::extract::Extension(ClientCert(presented)));
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

impl Fixture {
    fn put(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.files
            .lock()
            .unwrap()
            .files
            .insert(path.to_string(), body.into());
    }
}

fn sha256(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn xz(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    lzma_rs::xz_compress(&mut std::io::Cursor::new(b), &mut out).unwrap();
    out
}

/// When the fixture repositories' packages were built (seconds since the epoch).
const PUBLISHED: i64 = 1_764_000_000;

/// A DNF repository at `dir` whose primary lists `packages` (name, ver, rel, arch, body).
fn rpm_repo(
    fx: &Fixture,
    dir: &str,
    packages: &[(&str, &str, &str, &str, &[u8])],
    zstd: bool,
    wrong_checksum: bool,
) {
    let meta = if zstd { Meta::XmlZst } else { Meta::XmlGz };
    rpm_repo_with(fx, dir, packages, &[meta], "Packages/k/", wrong_checksum);
}

/// How a fixture repository publishes its package list.
#[derive(Clone, Copy, PartialEq)]
enum Meta {
    XmlGz,
    XmlZst,
    /// createrepo's `primary_db`: SQLite, bzip2-compressed.
    SqliteBz2,
    /// A `primary` entry in repomd.xml whose file is missing.
    XmlMissing,
}

/// The same with the metadata kinds listed in repomd.xml (in that order) and the packages at
/// `pool` relative to the repository (Amazon Linux 2 uses `../../../../../blobstore/HASH/`).
fn rpm_repo_with(
    fx: &Fixture,
    dir: &str,
    packages: &[(&str, &str, &str, &str, &[u8])],
    meta: &[Meta],
    pool: &str,
    wrong_checksum: bool,
) {
    // A package that must not match: same name, another release.
    let mut rows: Vec<(String, String, String, String, String, String)> = vec![(
        "kernel-devel".into(),
        "x86_64".into(),
        "1.0.0".into(),
        "1.fc1".into(),
        "00".into(),
        "Packages/k/other.rpm".into(),
    )];
    for (name, ver, rel, arch, body) in packages {
        let file = format!("{pool}{name}-{ver}-{rel}.{arch}.rpm");
        let sum = if wrong_checksum {
            "ab".repeat(32)
        } else {
            sha256(body)
        };
        let served = reqwest::Url::parse(&format!("http://h{dir}"))
            .unwrap()
            .join(&file)
            .unwrap()
            .path()
            .to_string();
        fx.put(&served, body.to_vec());
        rows.push((
            name.to_string(),
            arch.to_string(),
            ver.to_string(),
            rel.to_string(),
            sum,
            file,
        ));
    }
    let mut data = String::new();
    for m in meta {
        let (kind, href, bytes) = match m {
            Meta::XmlGz | Meta::XmlZst | Meta::XmlMissing => {
                let mut primary = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"{}\">\n",
                    rows.len()
                );
                for (name, arch, ver, rel, sum, file) in &rows {
                    primary.push_str(&format!(
                        "<package type=\"rpm\">\n  <name>{name}</name>\n  <arch>{arch}</arch>\n  <version epoch=\"0\" ver=\"{ver}\" rel=\"{rel}\"/>\n  <checksum type=\"sha256\" pkgid=\"YES\">{sum}</checksum>\n  <time file=\"{PUBLISHED}\" build=\"{PUBLISHED}\"/>\n  <summary>Development package for building kernel modules</summary>\n  <location href=\"{file}\"/>\n  <format><rpm:license>GPLv2</rpm:license></format>\n</package>\n"
                    ));
                }
                primary.push_str("</metadata>\n");
                match m {
                    Meta::XmlZst => (
                        "primary",
                        "repodata/abc123-primary.xml.zst",
                        Some(zstd::encode_all(primary.as_bytes(), 3).unwrap()),
                    ),
                    Meta::XmlGz => (
                        "primary",
                        "repodata/abc123-primary.xml.gz",
                        Some(gzip(primary.as_bytes())),
                    ),
                    _ => ("primary", "repodata/gone-primary.xml.gz", None),
                }
            }
            Meta::SqliteBz2 => (
                "primary_db",
                "repodata/def456-primary.sqlite.bz2",
                Some(bzip2_bytes(&primary_db(&rows))),
            ),
        };
        let checksum = bytes.as_deref().map_or_else(|| "ff".into(), sha256);
        if let Some(bytes) = bytes {
            fx.put(&format!("{dir}{href}"), bytes);
        }
        data.push_str(&format!(
            "  <data type=\"{kind}\">\n    <checksum type=\"sha256\">{checksum}</checksum>\n    <open-checksum type=\"sha256\">ee</open-checksum>\n    <location href=\"{href}\"/>\n{}  </data>\n",
            if kind == "primary_db" {
                "    <database_version>10</database_version>\n"
            } else {
                ""
            }
        ));
    }
    fx.put(
        &format!("{dir}repodata/repomd.xml"),
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">\n  <revision>1700000000</revision>\n  <data type=\"filelists\"><location href=\"repodata/x-filelists.xml.gz\"/></data>\n{data}</repomd>\n"
        ),
    );
}

/// A primary_db with createrepo's schema holding `rows` (name, arch, ver, rel, sha256, href).
/// repomd.xml of the repository at `dir` rewritten with the checksums of the metadata now
/// served: a hostile repository whose signed metadata names its own hostile files.
fn rechecksum(fx: &Fixture, dir: &str) {
    let path = format!("{dir}repodata/repomd.xml");
    let repomd = String::from_utf8(fx.files.lock().unwrap().files[&path].clone()).unwrap();
    let mut out = String::new();
    for data in repomd.split_inclusive("</data>") {
        let href = data
            .split("<location href=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        let current = href.and_then(|h| {
            fx.files
                .lock()
                .unwrap()
                .files
                .get(&format!("{dir}{h}"))
                .map(|b| sha256(b))
        });
        match (current, data.find("<checksum type=\"sha256\">")) {
            (Some(sum), Some(at)) => {
                let start = at + "<checksum type=\"sha256\">".len();
                let end = start + data[start..].find('<').unwrap();
                out.push_str(&format!("{}{sum}{}", &data[..start], &data[end..]));
            }
            _ => out.push_str(data),
        }
    }
    fx.put(&path, out);
}

fn primary_db(rows: &[(String, String, String, String, String, String)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("primary.sqlite");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "CREATE TABLE db_info (dbversion INTEGER, checksum TEXT);
         INSERT INTO db_info VALUES (10, 'ff');
         CREATE TABLE packages (pkgKey INTEGER PRIMARY KEY, pkgId TEXT, name TEXT, arch TEXT,
           version TEXT, epoch TEXT, release TEXT, summary TEXT, description TEXT, url TEXT,
           time_file INTEGER, time_build INTEGER, rpm_license TEXT, rpm_vendor TEXT,
           rpm_group TEXT, rpm_buildhost TEXT, rpm_sourcerpm TEXT, rpm_header_start INTEGER,
           rpm_header_end INTEGER, rpm_packager TEXT, size_package INTEGER,
           size_installed INTEGER, size_archive INTEGER, location_href TEXT,
           location_base TEXT, checksum_type TEXT);
         CREATE INDEX packagename ON packages (name);",
    )
    .unwrap();
    for (name, arch, ver, rel, sum, href) in rows {
        db.execute(
            "INSERT INTO packages (pkgId, name, arch, version, epoch, release, summary, \
             rpm_sourcerpm, location_href, checksum_type) \
             VALUES (?1, ?2, ?3, ?4, '0', ?5, 'kernel', 'kernel.src.rpm', ?6, 'sha256')",
            [sum, name, arch, ver, rel, href],
        )
        .unwrap();
    }
    drop(db);
    std::fs::read(path).unwrap()
}

fn bzip2_bytes(b: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn chain(fx: &Fixture, extra: &str) -> Chain {
    Chain::parse("test-sources.toml", &chain_text(fx, extra)).unwrap()
}

/// The test chain's sources file.
fn chain_text(fx: &Fixture, extra: &str) -> String {
    signed(&unsigned_chain_text(fx, extra))
}

/// `text` with every apt-repo, rpm-repo, url and koji source that names no keyring trusting the
/// tests' archive key, as the fixture signs its metadata.
fn signed(text: &str) -> String {
    let line = format!(
        "signed_by = \"{}\"\n",
        archive_signing::keyring_path().display()
    );
    text.split("[[sources]]")
        .map(|block| {
            if block.contains("signed_by") || block.contains("unverified") {
                return block.to_string();
            }
            let mut out = String::new();
            for l in block.split_inclusive('\n') {
                out.push_str(l);
                if ["apt-repo", "rpm-repo", "url", "koji"]
                    .iter()
                    .any(|k| l.trim() == format!("kind = \"{k}\""))
                {
                    out.push_str(&line);
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("[[sources]]")
}

fn unsigned_chain_text(fx: &Fixture, extra: &str) -> String {
    let b = &fx.base;
    format!(
        r#"
[[sources]]
family = "fedora"
name = "fedora-updates"
kind = "rpm-repo"
urls = ["{b}/updates/{{distro_version}}/{{arch}}/"]

[[sources]]
family = "fedora"
name = "fedora-releases"
kind = "rpm-repo"
urls = ["{b}/releases/{{distro_version}}/{{arch}}/os/"]

[[sources]]
family = "fedora"
name = "fedora-kojipkgs"
kind = "url"
urls = ["{b}/packages/kernel/{{version}}/{{release}}/{{arch}}/kernel-devel-{{version}}-{{release}}.{{arch}}.rpm"]

[[sources]]
family = "fedora"
name = "fedora-koji"
kind = "koji"
urls = ["{b}/kojihub"]
files = "{b}/kojifiles"

[[sources]]
family = "amazonlinux"
name = "al2023-core"
kind = "rpm-repo"
mirrorlist = true
urls = ["{b}/al2023/core/mirrors/latest/{{arch}}/mirror.list"]

[[sources]]
family = "debian"
name = "debian-mirror"
kind = "apt-repo"
urls = ["{b}/debian/"]
suites = ["{{codename}}", "{{codename}}-updates"]
components = ["main"]

[[sources]]
family = "debian"
name = "debian-snapshot"
kind = "snapshot"
urls = ["{b}/snapshot"]

[[sources]]
family = "ubuntu"
name = "ubuntu-archive"
kind = "apt-repo"
urls = ["{b}/ubuntu/"]
suites = ["{{codename}}-updates"]
components = ["main"]

[[sources]]
family = "ubuntu"
name = "ubuntu-launchpad"
kind = "launchpad"
urls = ["{b}/lp/1.0"]
{extra}
"#
    )
}

fn resolver(chain: Chain, timeout_ms: u64) -> Resolver {
    Resolver::new(
        chain,
        ResolverOptions {
            source_timeout: Duration::from_millis(timeout_ms),
            cache: None,
            ..ResolverOptions::default()
        },
    )
    .unwrap()
}

fn id(key: &str) -> KernelIdentity {
    KernelIdentity::from_key(key).unwrap()
}

const FEDORA: &str = "fedora/40/x86_64/6.8.9-300.fc40.x86_64";

/// The outcome of reading a signature the tests' archive key made.
const SIGNED: &str = "ok, signed by kfleet test archive <archive@kfleet.test> (179F15D00B276F8CDABC94001CDAD09CEF527078)";

#[test]
fn found_in_the_first_source() {
    let fx = fixture();
    rpm_repo(
        &fx,
        "/updates/40/x86_64/",
        &[("kernel-devel", "6.8.9", "300.fc40", "x86_64", b"RPM-A")],
        false,
        false,
    );
    let r = fx
        ._rt
        .block_on(resolver(chain(&fx, ""), 2000).resolve(&id(FEDORA)))
        .unwrap();
    assert_eq!(r.resolved_by.as_deref(), Some("fedora-updates"));
    assert_eq!(r.packages.len(), 1);
    assert_eq!(
        r.packages[0].url,
        format!(
            "{}/updates/40/x86_64/Packages/k/kernel-devel-6.8.9-300.fc40.x86_64.rpm",
            fx.base
        )
    );
    assert_eq!(
        r.packages[0].checksum.as_ref().unwrap().hex,
        sha256(b"RPM-A")
    );
    assert_eq!(
        r.attempts.len(),
        3,
        "repomd.xml, its signature, then primary: {:?}",
        r.attempts
    );
    assert_eq!(r.attempts[1].outcome, SIGNED);
    assert_eq!(r.attempts[2].outcome, "found kernel-devel");
    let by = signed_index(&r.packages[0]);
    assert!(
        by.ends_with(&format!("/updates/40/x86_64/ repomd.xml, {}", &SIGNED[4..])),
        "{by}"
    );
}

/// Which signed index vouches for `package` (it must be one).
fn signed_index(package: &kfleet::headers::HeaderPackage) -> &str {
    match &package.vouch {
        Some(kfleet::headers::trust::Vouch::SignedIndex(by)) => by,
        other => panic!("not vouched for by a signed index: {other:?}"),
    }
}

#[test]
fn rolled_off_the_first_repo_found_in_the_second_then_fetched_and_verified() {
    let fx = fixture();
    rpm_repo(
        &fx,
        "/updates/40/x86_64/",
        &[("kernel-devel", "6.8.10", "300.fc40", "x86_64", b"newer")],
        false,
        false,
    );
    rpm_repo(
        &fx,
        "/releases/40/x86_64/os/",
        &[("kernel-devel", "6.8.9", "300.fc40", "x86_64", b"RPM-B")],
        true,
        false,
    );
    let r = resolver(chain(&fx, ""), 2000);
    let out = tempfile::tempdir().unwrap();
    let (res, files) = fx._rt.block_on(r.fetch(&id(FEDORA), out.path())).unwrap();
    assert_eq!(res.resolved_by.as_deref(), Some("fedora-releases"));
    assert_eq!(
        res.attempts[2].outcome,
        "no kernel-devel-6.8.9-300.fc40.x86_64 in the metadata"
    );
    assert_eq!(files.len(), 1);
    assert_eq!(std::fs::read(&files[0]).unwrap(), b"RPM-B");
}

#[test]
fn only_on_kojipkgs_the_third_source() {
    let fx = fixture();
    rpm_repo(&fx, "/updates/40/x86_64/", &[], false, false);
    rpm_repo(&fx, "/releases/40/x86_64/os/", &[], false, false);
    fx.put(
        "/packages/kernel/6.8.9/300.fc40/x86_64/kernel-devel-6.8.9-300.fc40.x86_64.rpm",
        b"RPM-C".to_vec(),
    );
    let r = fx
        ._rt
        .block_on(resolver(chain(&fx, ""), 2000).resolve(&id(FEDORA)))
        .unwrap();
    assert_eq!(r.resolved_by.as_deref(), Some("fedora-kojipkgs"));
    assert_eq!(r.attempts.last().unwrap().outcome, "found");
}

#[test]
fn koji_xmlrpc_finds_the_build_when_everything_else_rolled_off() {
    let fx = fixture();
    fx.files.lock().unwrap().koji.insert(
        "kernel-6.8.9-300.fc40".into(),
        (
            2451234,
            vec![
                ("kernel".into(), "x86_64".into()),
                ("kernel-devel".into(), "x86_64".into()),
                ("kernel-devel".into(), "aarch64".into()),
            ],
        ),
    );
    let r = fx
        ._rt
        .block_on(resolver(chain(&fx, ""), 2000).resolve(&id(FEDORA)))
        .unwrap();
    assert_eq!(r.resolved_by.as_deref(), Some("fedora-koji"));
    assert_eq!(
        r.packages[0].url,
        format!(
            "{}/kojifiles/packages/kernel/6.8.9/300.fc40/x86_64/kernel-devel-6.8.9-300.fc40.x86_64.rpm",
            fx.base
        )
    );
}

#[test]
fn nowhere_lists_every_attempt_and_fetch_fails_with_them() {
    let fx = fixture();
    let r = resolver(chain(&fx, ""), 2000);
    let res = fx._rt.block_on(r.resolve(&id(FEDORA))).unwrap();
    assert_eq!(res.resolved_by, None);
    let sources: Vec<&str> = res.attempts.iter().map(|a| a.source.as_str()).collect();
    assert_eq!(
        sources,
        [
            "fedora-updates",
            "fedora-releases",
            "fedora-kojipkgs",
            "fedora-koji"
        ]
    );
    assert!(
        res.attempts.iter().take(3).all(|a| a.outcome == "HTTP 404"),
        "{:?}",
        res.attempts
    );
    assert_eq!(res.attempts[3].outcome, "no such build");
    let out = tempfile::tempdir().unwrap();
    let err = fx
        ._rt
        .block_on(r.fetch(&id(FEDORA), out.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unresolvable"), "{err}");
    assert!(err.contains("fedora-kojipkgs (url)"), "{err}");
}

#[test]
fn a_checksum_mismatch_leaves_no_file_behind() {
    let fx = fixture();
    rpm_repo(
        &fx,
        "/updates/40/x86_64/",
        &[("kernel-devel", "6.8.9", "300.fc40", "x86_64", b"TAMPERED")],
        false,
        true,
    );
    let out = tempfile::tempdir().unwrap();
    let err = fx
        ._rt
        .block_on(resolver(chain(&fx, ""), 2000).fetch(&id(FEDORA), out.path()))
        .unwrap_err();
    assert!(err.to_string().contains("sha256 is"), "{err}");
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "nothing kept, no temp file"
    );
}

#[test]
fn a_hanging_source_times_out_and_the_chain_moves_on() {
    let fx = fixture();
    fx.files.lock().unwrap().hang.push("/updates/".into());
    rpm_repo(
        &fx,
        "/releases/40/x86_64/os/",
        &[("kernel-devel", "6.8.9", "300.fc40", "x86_64", b"RPM")],
        false,
        false,
    );
    let started = std::time::Instant::now();
    let r = fx
        ._rt
        .block_on(resolver(chain(&fx, ""), 500).resolve(&id(FEDORA)))
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(r.resolved_by.as_deref(), Some("fedora-releases"));
    assert!(
        r.attempts[0].outcome.contains("timed out"),
        "{:?}",
        r.attempts[0]
    );
}

#[test]
fn amazon_linux_through_its_mirror_list() {
    let fx = fixture();
    fx.put(
        "/al2023/core/mirrors/latest/x86_64/mirror.list",
        format!("{}/al2023/core/guids/d5db1113b620ab2b/x86_64/\n", fx.base),
    );
    rpm_repo(
        &fx,
        "/al2023/core/guids/d5db1113b620ab2b/x86_64/",
        &[("kernel-devel", "6.1.66", "91.160.amzn2023", "x86_64", b"AL")],
        false,
        false,
    );
    let r = fx
        ._rt
        .block_on(
            resolver(chain(&fx, ""), 2000)
                .resolve(&id("amazonlinux/2023/x86_64/6.1.66-91.160.amzn2023.x86_64")),
        )
        .unwrap();
    assert_eq!(r.resolved_by.as_deref(), Some("al2023-core"));
    assert_eq!(
        r.attempts[0].url,
        format!("{}/al2023/core/mirrors/latest/x86_64/mirror.list", fx.base)
    );
}

fn stanza(pkg: &str, file: &str, body: &[u8], depends: &str) -> String {
    format!(
        "Package: {pkg}\nSource: linux\nVersion: 6.1.76-1\nInstalled-Size: 100\nMaintainer: Debian Kernel Team\nArchitecture: amd64\nDepends: {depends}\nFilename: {file}\nSize: {}\nSHA256: {}\nDescription: headers\n",
        body.len(),
        sha256(body)
    )
}

/// Debian 12's headers, common and kbuild packages in the fixture's `/debian/pool/`; returns
/// their `Packages` index.
fn debian_pool(fx: &Fixture) -> String {
    let (h, c, k) = (
        b"HDR".as_slice(),
        b"COMMON".as_slice(),
        b"KBUILD".as_slice(),
    );
    for (file, body) in [
        ("linux-headers-6.1.0-18-amd64_6.1.76-1_amd64.deb", h),
        ("linux-headers-6.1.0-18-common_6.1.76-1_all.deb", c),
        ("linux-kbuild-6.1_6.1.76-1_amd64.deb", k),
    ] {
        fx.put(&format!("/debian/pool/main/l/linux/{file}"), body.to_vec());
    }
    [
        stanza("linux-headers-6.1.0-18-amd64", "pool/main/l/linux/linux-headers-6.1.0-18-amd64_6.1.76-1_amd64.deb", h, "linux-headers-6.1.0-18-common (= 6.1.76-1), linux-kbuild-6.1 (>= 6.1.76-1), linux-compiler-gcc-12-x86 (>= 6.1.76-1)"),
        stanza("linux-headers-6.1.0-18-common", "pool/main/l/linux/linux-headers-6.1.0-18-common_6.1.76-1_all.deb", c, ""),
        stanza("linux-kbuild-6.1", "pool/main/l/linux/linux-kbuild-6.1_6.1.76-1_amd64.deb", k, "libc6 (>= 2.34)"),
        stanza("linux-compiler-gcc-12-x86", "pool/main/l/linux/linux-compiler-gcc-12-x86_6.1.76-1_amd64.deb", b"GCC", ""),
    ]
    .join("\n")
}

#[test]
fn debian_headers_with_common_and_kbuild_from_packages_xz() {
    let fx = fixture();
    let index = debian_pool(&fx);
    fx.put(
        "/debian/dists/bookworm-updates/main/binary-amd64/Packages.xz",
        xz(index.as_bytes()),
    );
    let out = tempfile::tempdir().unwrap();
    let (res, files) = fx
        ._rt
        .block_on(
            resolver(chain(&fx, ""), 2000)
                .fetch(&id("debian/12/x86_64/6.1.0-18-amd64"), out.path()),
        )
        .unwrap();
    assert_eq!(res.resolved_by.as_deref(), Some("debian-mirror"));
    let mut names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "linux-headers-6.1.0-18-amd64_6.1.76-1_amd64.deb",
            "linux-headers-6.1.0-18-common_6.1.76-1_all.deb",
            "linux-kbuild-6.1_6.1.76-1_amd64.deb"
        ]
    );
    assert_eq!(
        res.attempts[0].outcome, "HTTP 404",
        "bookworm has no index here; the chain reads on"
    );
}

#[test]
fn debian_rolled_off_everything_found_on_snapshot() {
    let fx = fixture();
    let hash = |b: &[u8]| -> String {
        use sha1::Digest as _;
        sha1::Sha1::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    };
    for (pkg, body, arch) in [
        (
            "linux-headers-5.10.0-0.deb10.30-amd64",
            b"H".as_slice(),
            "amd64",
        ),
        (
            "linux-headers-5.10.0-0.deb10.30-common",
            b"C".as_slice(),
            "all",
        ),
        ("linux-kbuild-5.10", b"K".as_slice(), "amd64"),
    ] {
        let h = hash(body);
        fx.put(&format!("/snapshot/mr/binary/{pkg}/"), format!(r#"{{"_comment":"foo","binary":"{pkg}","result":[{{"binary_version":"5.10.218-1~deb10u1","name":"{pkg}","source":"linux-5.10","version":"5.10.218-1~deb10u1"}}]}}"#));
        fx.put(
            &format!("/snapshot/mr/binary/{pkg}/5.10.218-1~deb10u1/binfiles?fileinfo=1"),
            format!(r#"{{"binary":"{pkg}","binary_version":"5.10.218-1~deb10u1","fileinfo":{{"{h}":[{{"archive_name":"debian-security","first_seen":"20240620T000000Z","name":"{pkg}_5.10.218-1~deb10u1_{arch}.deb","path":"/pool/updates/main/l/linux-5.10","size":1}}]}},"result":[{{"architecture":"{arch}","hash":"{h}"}}]}}"#),
        );
        fx.put(&format!("/snapshot/file/{h}"), body.to_vec());
    }
    let out = tempfile::tempdir().unwrap();
    let (res, files) = fx
        ._rt
        .block_on(
            resolver(chain(&fx, ""), 2000)
                .fetch(&id("debian/10/x86_64/5.10.0-0.deb10.30-amd64"), out.path()),
        )
        .unwrap();
    assert_eq!(res.resolved_by.as_deref(), Some("debian-snapshot"));
    assert_eq!(files.len(), 3);
    assert!(
        res.packages
            .iter()
            .all(|p| p.checksum.as_ref().unwrap().algorithm == "sha1")
    );
}

#[test]
fn ubuntu_from_launchpad_with_the_derived_kernel_common_package() {
    let fx = fixture();
    let lp = format!("{}/lp/1.0", fx.base);
    for (name, source, file) in [
        (
            "linux-headers-5.4.0-1031-gkeop",
            "linux-gkeop-5.4",
            "linux-headers-5.4.0-1031-gkeop_5.4.0-1031.32~18.04.1_amd64.deb",
        ),
        (
            "linux-gkeop-5.4-headers-5.4.0-1031",
            "linux-gkeop-5.4",
            "linux-gkeop-5.4-headers-5.4.0-1031_5.4.0-1031.32~18.04.1_all.deb",
        ),
    ] {
        fx.put(
            &format!("/lp/1.0/ubuntu/+archive/primary?ws.op=getPublishedBinaries&binary_name={name}&exact_match=true&distro_arch_series={lp}/ubuntu/bionic/amd64"),
            format!(r#"{{"total_size":1,"start":0,"entries":[{{"self_link":"{lp}/ubuntu/+archive/primary/+binarypub/{name}","binary_package_name":"{name}","binary_package_version":"5.4.0-1031.32~18.04.1","source_package_name":"{source}","status":"Superseded"}}]}}"#),
        );
        fx.put(
            &format!("/lp/1.0/ubuntu/+archive/primary/+binarypub/{name}?ws.op=binaryFileUrls&include_meta=true"),
            format!(r#"[{{"url":"https://launchpad.net/ubuntu/+archive/primary/+files/{file}","size":1,"sha1":"x","sha256":"{}"}}]"#, "c".repeat(64)),
        );
    }
    let r = fx
        ._rt
        .block_on(
            resolver(chain(&fx, ""), 2000).resolve(&id("ubuntu/18.04/x86_64/5.4.0-1031-gkeop")),
        )
        .unwrap();
    assert_eq!(r.resolved_by.as_deref(), Some("ubuntu-launchpad"));
    let urls: Vec<&str> = r.packages.iter().map(|p| p.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://launchpad.net/ubuntu/+archive/primary/+files/linux-headers-5.4.0-1031-gkeop_5.4.0-1031.32~18.04.1_amd64.deb",
            "https://launchpad.net/ubuntu/+archive/primary/+files/linux-gkeop-5.4-headers-5.4.0-1031_5.4.0-1031.32~18.04.1_all.deb",
        ],
        "the real header URLs kernel-crawler lists for this kernel"
    );
}

/// `kfleet headers resolve KEY --offline --format json`: each source with the URLs it would try.
fn offline_plan(key: &str) -> serde_json::Value {
    let out = Command::cargo_bin("kfleet")
        .unwrap()
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .args(["headers", "resolve", key, "--offline", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `--offline` names the exact kojipkgs URL for real Fedora kernels, with no network.
#[test]
fn offline_plans_for_real_fedora_kernels_name_the_kojipkgs_url() {
    let text = include_str!("fixtures/real-kernels.csv");
    let (mut checked, mut signed) = (0, 0);
    for line in text.lines().skip(1).filter(|l| l.starts_with("fedora,")) {
        let f: Vec<&str> = line.split(',').collect();
        let key = format!("{}/{}/{}/{}", f[0], f[1], f[2], f[3]);
        let plan = offline_plan(&key);
        let koji = plan
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "fedora-kojipkgs")
            .unwrap();
        let k = f[3];
        let arch = k.rsplit('.').next().unwrap();
        let (ver, rel) = k
            .trim_end_matches(&format!(".{arch}"))
            .split_once('-')
            .unwrap();
        // Koji's copy signed with the release's key (its short id), where that key is built in;
        // none for the releases whose keys are not (their keyring is looked for on the machine).
        match f[1] {
            "40" | "41" => {
                let sigkey = if f[1] == "40" { "a15b79cc" } else { "e99d6ad1" };
                assert_eq!(
                    koji["urls"][0],
                    format!(
                        "https://kojipkgs.fedoraproject.org/packages/kernel/{ver}/{rel}/data/signed/{sigkey}/{arch}/kernel-devel-{ver}-{rel}.{arch}.rpm"
                    )
                );
                signed += 1;
            }
            _ => assert_eq!(koji["urls"], serde_json::json!([]), "{key}"),
        }
        checked += 1;
    }
    assert_eq!((checked, signed), (19, 2));
}

/// A fixture with Fedora's updates repository holding one kernel-devel, and a state directory.
fn fedora_updates() -> (Fixture, tempfile::TempDir) {
    let fx = fixture();
    rpm_repo(
        &fx,
        "/updates/40/x86_64/",
        &[("kernel-devel", "6.8.9", "300.fc40", "x86_64", b"RPM")],
        false,
        false,
    );
    (fx, tempfile::tempdir().unwrap())
}

/// A resolver over the test chain that caches in `dir` for `ttl`.
fn caching_resolver(fx: &Fixture, dir: &std::path::Path, ttl: Duration) -> Resolver {
    Resolver::new(
        chain(fx, ""),
        ResolverOptions {
            source_timeout: Duration::from_secs(2),
            cache: Some((dir.to_path_buf(), ttl)),
            ..ResolverOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn resolutions_are_cached_with_a_ttl() {
    let (fx, state) = fedora_updates();
    let cached = |ttl: Duration| caching_resolver(&fx, state.path(), ttl);
    let first = fx
        ._rt
        .block_on(cached(Duration::from_secs(3600)).resolve(&id(FEDORA)))
        .unwrap();
    assert_eq!(first.resolved_by.as_deref(), Some("fedora-updates"));
    fx.files.lock().unwrap().files.clear();
    let again = fx
        ._rt
        .block_on(cached(Duration::from_secs(3600)).resolve(&id(FEDORA)))
        .unwrap();
    assert_eq!(again, first, "served from the cache while fresh");
    let stale = fx
        ._rt
        .block_on(cached(Duration::ZERO).resolve(&id(FEDORA)))
        .unwrap();
    assert_eq!(
        stale.resolved_by, None,
        "an expired entry is resolved again"
    );
    assert_private(state.path());
}

/// Every directory under `dir` is 0700 and every file 0600 (caches hold private listings).
fn assert_private(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut seen = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            if path.is_dir() {
                assert_eq!(mode, 0o700, "{}", path.display());
                stack.push(path);
            } else {
                assert_eq!(mode, 0o600, "{}", path.display());
                seen += 1;
            }
        }
    }
    assert!(seen > 0, "nothing cached under {}", dir.display());
}

/// With a cache directory, repository metadata is kept with its ETag: resolving again (the
/// resolution itself expired) asks conditionally, and unchanged indexes cost a 304 and no body;
/// a changed index is read again.
#[test]
fn unchanged_repository_metadata_costs_a_304() {
    let (fx, state) = fedora_updates();
    let resolver = || caching_resolver(&fx, state.path(), Duration::ZERO);
    let first = fx._rt.block_on(resolver().resolve(&id(FEDORA))).unwrap();
    assert_eq!(first.resolved_by.as_deref(), Some("fedora-updates"));
    assert_eq!(fx.files.lock().unwrap().not_modified, 0);
    let again = fx._rt.block_on(resolver().resolve(&id(FEDORA))).unwrap();
    assert_eq!(again.packages, first.packages);
    assert!(
        again.attempts[0].outcome == "ok (not modified)",
        "{:?}",
        again.attempts
    );
    assert_eq!(
        fx.files.lock().unwrap().not_modified,
        3,
        "repomd.xml, its signature and primary: {:?}",
        again.attempts
    );

    // A new kernel in the repository: its primary changes.
    rpm_repo(
        &fx,
        "/updates/40/x86_64/",
        &[
            ("kernel-devel", "6.8.9", "300.fc40", "x86_64", b"RPM"),
            ("kernel-devel", "6.8.10", "300.fc40", "x86_64", b"RPM2"),
        ],
        false,
        false,
    );
    let changed = fx._rt.block_on(resolver().resolve(&id(FEDORA))).unwrap();
    assert_eq!(changed.packages, first.packages);
    // repomd.xml names the new primary's checksum: all three are read in full.
    assert_eq!(
        fx.files.lock().unwrap().not_modified,
        3,
        "the changed primary was read in full: {:?}",
        changed.attempts
    );
}

const STREAM: &str = "centos/9/x86_64/5.14.0-404.el9.x86_64";

fn stream_sources(fx: &Fixture) -> String {
    let b = &fx.base;
    format!(
        r#"
[[sources]]
family = "centos"
name = "centos-stream-mirror"
kind = "rpm-repo"
packages = ["kernel-devel", "kernel-headers"]
urls = ["{b}/{{major}}-stream/AppStream/{{arch}}/os/", "{b}/{{major}}-stream/BaseOS/{{arch}}/os/"]

[[sources]]
family = "centos"
name = "centos-stream-koji"
kind = "koji"
packages = ["kernel-devel", "kernel-headers"]
urls = ["{b}/kojihub"]
files = "{b}/kojifiles"
"#
    )
}

/// EL splits its repositories: one source's repositories together must hold both packages.
#[test]
fn stream_kernel_devel_and_kernel_headers_found_across_the_sources_repositories() {
    let fx = fixture();
    rpm_repo(
        &fx,
        "/9-stream/AppStream/x86_64/os/",
        &[("kernel-devel", "5.14.0", "404.el9", "x86_64", b"DEVEL")],
        true,
        false,
    );
    rpm_repo(
        &fx,
        "/9-stream/BaseOS/x86_64/os/",
        &[("kernel-headers", "5.14.0", "404.el9", "x86_64", b"HEADERS")],
        false,
        false,
    );
    let r = resolver(chain(&fx, &stream_sources(&fx)), 2000);
    let out = tempfile::tempdir().unwrap();
    let (res, files) = fx._rt.block_on(r.fetch(&id(STREAM), out.path())).unwrap();
    assert_eq!(res.resolved_by.as_deref(), Some("centos-stream-mirror"));
    let outcomes: Vec<&str> = res.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "ok",
            SIGNED,
            "found kernel-devel; no kernel-headers-5.14.0-404.el9.x86_64 in the metadata",
            "ok",
            SIGNED,
            "found kernel-headers"
        ]
    );
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "kernel-devel-5.14.0-404.el9.x86_64.rpm",
            "kernel-headers-5.14.0-404.el9.x86_64.rpm"
        ]
    );
    assert_eq!(std::fs::read(&files[1]).unwrap(), b"HEADERS");
}

#[test]
fn without_kernel_headers_the_repo_misses_and_koji_gives_both() {
    let fx = fixture();
    rpm_repo(
        &fx,
        "/9-stream/AppStream/x86_64/os/",
        &[("kernel-devel", "5.14.0", "404.el9", "x86_64", b"DEVEL")],
        false,
        false,
    );
    fx.files.lock().unwrap().koji.insert(
        "kernel-5.14.0-404.el9".into(),
        (
            77,
            vec![
                ("kernel-devel".into(), "x86_64".into()),
                ("kernel-headers".into(), "x86_64".into()),
            ],
        ),
    );
    let res = fx
        ._rt
        .block_on(resolver(chain(&fx, &stream_sources(&fx)), 2000).resolve(&id(STREAM)))
        .unwrap();
    assert_eq!(res.resolved_by.as_deref(), Some("centos-stream-koji"));
    assert!(
        res.attempts.iter().any(|a| a.outcome
            == "found kernel-devel; no kernel-headers-5.14.0-404.el9.x86_64 in the metadata"),
        "{:?}",
        res.attempts
    );
    assert!(
        res.attempts
            .iter()
            .any(|a| a.outcome == "found kernel-devel, kernel-headers"),
        "{:?}",
        res.attempts
    );
    // No copy signed with the source's key: the build as built (refused when downloaded).
    assert!(
        res.attempts
            .last()
            .unwrap()
            .outcome
            .starts_with("no copy signed with "),
        "{:?}",
        res.attempts
    );
    let urls: Vec<String> = res.packages.iter().map(|p| p.url.clone()).collect();
    assert_eq!(
        urls,
        [
            format!(
                "{}/kojifiles/packages/kernel/5.14.0/404.el9/x86_64/kernel-devel-5.14.0-404.el9.x86_64.rpm",
                fx.base
            ),
            format!(
                "{}/kojifiles/packages/kernel/5.14.0/404.el9/x86_64/kernel-headers-5.14.0-404.el9.x86_64.rpm",
                fx.base
            )
        ]
    );

    // A build without kernel-headers for the arch is no hit either.
    fx.files
        .lock()
        .unwrap()
        .koji
        .get_mut("kernel-5.14.0-404.el9")
        .unwrap()
        .1
        .retain(|(n, _)| n == "kernel-devel");
    let res = fx
        ._rt
        .block_on(resolver(chain(&fx, &stream_sources(&fx)), 2000).resolve(&id(STREAM)))
        .unwrap();
    assert_eq!(res.resolved_by, None);
    assert_eq!(
        res.attempts.last().unwrap().outcome,
        "build kernel-5.14.0-404.el9 has no kernel-headers for x86_64"
    );
}

const AL2: &str = "amazonlinux/2/x86_64/4.9.85-47.59.amzn2.x86_64";

fn al2_source(fx: &Fixture) -> String {
    format!(
        r#"
[[sources]]
family = "amazonlinux"
name = "al2-core"
kind = "rpm-repo"
mirrorlist = true
when_distro_version = "2"
packages = ["kernel-devel", "kernel-headers"]
urls = ["{}/2/core/latest/{{arch}}/mirror.list"]
"#,
        fx.base
    )
}

/// Amazon Linux 2 as it is published: a mirror.list, a SQLite `primary_db` (bzip2), and package
/// locations that climb out of the repository into a shared blob store.
#[test]
fn amazon_linux_2_from_a_sqlite_primary_db_through_the_blob_store() {
    let fx = fixture();
    let repo =
        "/2/core/2.0/x86_64/9477c9704ca99071f0371ac4eccbfc529c83fca01ef5baecc511a8b6bb6b4e54/";
    fx.put(
        "/2/core/latest/x86_64/mirror.list",
        format!("{}{repo}\n", fx.base),
    );
    rpm_repo_with(
        &fx,
        repo,
        &[
            (
                "kernel-devel",
                "4.9.85",
                "47.59.amzn2",
                "x86_64",
                b"AL2-DEVEL",
            ),
            (
                "kernel-headers",
                "4.9.85",
                "47.59.amzn2",
                "x86_64",
                b"AL2-HEADERS",
            ),
        ],
        &[Meta::SqliteBz2],
        "../../../../../blobstore/05b73c14084f2f5986549eae006bed1c695ca1342f5bbcb7882369bf199c457c/",
        false,
    );
    let r = resolver(chain(&fx, &al2_source(&fx)), 2000);
    let out = tempfile::tempdir().unwrap();
    let (res, files) = fx._rt.block_on(r.fetch(&id(AL2), out.path())).unwrap();
    assert_eq!(res.resolved_by.as_deref(), Some("al2-core"));
    // The URL kernel-crawler lists for this kernel, on the fixture host, with the ../ resolved.
    let real = include_str!("fixtures/real-header-urls.csv")
        .lines()
        .find(|l| l.starts_with("amazonlinux,2,x86_64,4.9.85-47.59.amzn2.x86_64,"))
        .unwrap()
        .split(',')
        .nth(4)
        .unwrap();
    let expected = reqwest::Url::parse(real).unwrap();
    assert_eq!(
        res.packages[0].url,
        format!("{}{}", fx.base, expected.path())
    );
    assert_eq!(
        res.packages[0].checksum.as_ref().unwrap().hex,
        sha256(b"AL2-DEVEL")
    );
    assert_eq!(
        res.attempts.last().unwrap().outcome,
        "found kernel-devel, kernel-headers"
    );
    assert_eq!(std::fs::read(&files[0]).unwrap(), b"AL2-DEVEL");
    assert_eq!(std::fs::read(&files[1]).unwrap(), b"AL2-HEADERS");
}

#[test]
fn a_primary_that_cannot_be_read_falls_back_to_primary_db() {
    let fx = fixture();
    let repo = "/2/core/2.0/x86_64/abc/";
    fx.put(
        "/2/core/latest/x86_64/mirror.list",
        format!("# mirrors\n\n{}{repo}\n", fx.base),
    );
    rpm_repo_with(
        &fx,
        repo,
        &[
            ("kernel-devel", "4.9.85", "47.59.amzn2", "x86_64", b"D"),
            ("kernel-headers", "4.9.85", "47.59.amzn2", "x86_64", b"H"),
        ],
        &[Meta::XmlMissing, Meta::SqliteBz2],
        "Packages/",
        false,
    );
    let res = fx
        ._rt
        .block_on(resolver(chain(&fx, &al2_source(&fx)), 2000).resolve(&id(AL2)))
        .unwrap();
    assert_eq!(res.resolved_by.as_deref(), Some("al2-core"));
    let tried: Vec<(&str, &str)> = res
        .attempts
        .iter()
        .filter(|a| a.source == "al2-core")
        .map(|a| (a.url.rsplit('/').next().unwrap(), a.outcome.as_str()))
        .collect();
    assert_eq!(
        tried,
        [
            ("mirror.list", "ok"),
            ("repomd.xml", "ok"),
            ("repomd.xml.asc", SIGNED),
            ("gone-primary.xml.gz", "HTTP 404"),
            (
                "def456-primary.sqlite.bz2",
                "found kernel-devel, kernel-headers"
            ),
        ]
    );
}

#[test]
fn a_corrupt_primary_db_is_reported_not_fatal() {
    let fx = fixture();
    let repo = "/2/core/2.0/x86_64/abc/";
    fx.put(
        "/2/core/latest/x86_64/mirror.list",
        format!("{}{repo}\n", fx.base),
    );
    rpm_repo_with(&fx, repo, &[], &[Meta::SqliteBz2], "Packages/", false);
    fx.put(
        &format!("{repo}repodata/def456-primary.sqlite.bz2"),
        bzip2_bytes(b"this is not a database"),
    );
    rechecksum(&fx, repo);
    let res = fx
        ._rt
        .block_on(resolver(chain(&fx, &al2_source(&fx)), 2000).resolve(&id(AL2)))
        .unwrap();
    assert_eq!(res.resolved_by, None);
    let last = &res.attempts.last().unwrap().outcome;
    assert!(last.starts_with("bad primary_db: "), "{last}");
}

/// A hostile `primary_db` whose `packages` is a view that recurses without end is refused at once
/// (before the source's timeout, with no thread left spinning on it).
#[test]
fn a_primary_db_whose_packages_is_an_endless_view_is_refused() {
    let fx = fixture();
    let repo = "/2/core/2.0/x86_64/abc/";
    fx.put(
        "/2/core/latest/x86_64/mirror.list",
        format!("{}{repo}\n", fx.base),
    );
    rpm_repo_with(&fx, repo, &[], &[Meta::SqliteBz2], "Packages/", false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("primary.sqlite");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "CREATE VIEW packages AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r)
         SELECT n AS pkgKey, 'x' AS pkgId, 'kernel-devel' AS name, 'x86_64' AS arch,
           '4.9.85' AS version, 'nope' AS release, 0 AS time_build, 'h' AS location_href,
           'sha256' AS checksum_type FROM r;",
    )
    .unwrap();
    drop(db);
    fx.put(
        &format!("{repo}repodata/def456-primary.sqlite.bz2"),
        bzip2_bytes(&std::fs::read(&path).unwrap()),
    );
    rechecksum(&fx, repo);
    let started = std::time::Instant::now();
    let res = fx
        ._rt
        .block_on(resolver(chain(&fx, &al2_source(&fx)), 2000).resolve(&id(AL2)))
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(res.resolved_by, None);
    let last = &res.attempts.last().unwrap().outcome;
    assert!(
        last.contains("bad primary_db: 'packages' is a view, not a table"),
        "{last}"
    );
}

/// `--offline` plans for the real CentOS Linux 8 kernels name their vault point release: the
/// vault repository and the exact package URL kernel-crawler found on CERN's vault mirror.
#[test]
fn offline_plans_for_real_centos_8_kernels_name_the_vault_point_release() {
    let text = include_str!("fixtures/real-header-urls.csv");
    let mut checked = 0;
    for line in text.lines().filter(|l| l.starts_with("centos,8,")) {
        let f: Vec<&str> = line.split(',').collect();
        let key = format!("{}/{}/{}/{}", f[0], f[1], f[2], f[3]);
        let plan = offline_plan(&key);
        let source = |name: &str| {
            plan.as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name)
                .unwrap_or_else(|| panic!("{key}: no {name} in {plan}"))
                .clone()
        };
        let real = f[4];
        assert_eq!(
            source("centos-vault-cern")["urls"][0],
            real.replacen("http://", "https://", 1),
            "{key}"
        );
        let kernel = f[3].trim_end_matches(&format!(".{}", f[2]));
        assert_eq!(
            source("centos-vault")["packages"],
            serde_json::json!([
                format!("kernel-devel-{kernel}.{}", f[2]),
                format!("kernel-headers-{kernel}.{}", f[2])
            ]),
            "{key}"
        );
        let point = real.split('/').nth(4).unwrap();
        assert_eq!(
            source("centos-vault")["urls"][0],
            format!(
                "https://vault.centos.org/{point}/BaseOS/{}/os/repodata/repomd.xml",
                f[2]
            ),
            "{key}"
        );
        checked += 1;
    }
    assert_eq!(checked, 7);
}

/// A repository whose primary.xml.gz is a compression bomb (a few hundred KB expanding to
/// gigabytes) is a failed attempt with the reason, bounded in memory and time, and the chain
/// goes on to the next source; xz metadata is bounded the same way.
#[test]
fn a_metadata_bomb_is_a_failed_attempt_and_the_chain_moves_on() {
    let fx = fixture();
    rpm_repo(
        &fx,
        "/updates/40/x86_64/",
        &[("kernel-devel", "6.8.9", "300.fc40", "x86_64", b"RPM-A")],
        false,
        false,
    );
    rpm_repo(
        &fx,
        "/releases/40/x86_64/os/",
        &[("kernel-devel", "6.8.9", "300.fc40", "x86_64", b"RPM-B")],
        false,
        false,
    );
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let block = vec![b' '; 1 << 20];
    for _ in 0..200 {
        bomb.write_all(&block).unwrap();
    }
    let bomb = bomb.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    fx.put("/updates/40/x86_64/repodata/abc123-primary.xml.gz", bomb);
    rechecksum(&fx, "/updates/40/x86_64/");
    let started = std::time::Instant::now();
    let r = fx
        ._rt
        .block_on(resolver(chain(&fx, ""), 20_000).resolve(&id(FEDORA)))
        .unwrap();
    assert_eq!(
        r.resolved_by.as_deref(),
        Some("fedora-releases"),
        "{:?}",
        r.attempts
    );
    assert!(
        r.attempts
            .iter()
            .any(|a| a.outcome.contains("gzip content expands past")),
        "{:?}",
        r.attempts
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    // The same for zstd metadata.
    let fx = fixture();
    rpm_repo(
        &fx,
        "/updates/40/x86_64/",
        &[("kernel-devel", "6.8.9", "300.fc40", "x86_64", b"RPM-A")],
        true,
        false,
    );
    let spaces = vec![b' '; 200 << 20];
    fx.put(
        "/updates/40/x86_64/repodata/abc123-primary.xml.zst",
        zstd::encode_all(spaces.as_slice(), 3).unwrap(),
    );
    rechecksum(&fx, "/updates/40/x86_64/");
    let r = fx
        ._rt
        .block_on(resolver(chain(&fx, ""), 20_000).resolve(&id(FEDORA)))
        .unwrap();
    assert!(
        r.attempts
            .iter()
            .any(|a| a.outcome.contains("zstd content expands past")),
        "{:?}",
        r.attempts
    );
}

/// Ubuntu's (and Debian's) `Packages.xz` are two xz streams, the second one empty. Served alone,
/// with no `.gz` beside it, such an index still resolves.
#[test]
fn a_two_stream_packages_xz_served_alone_resolves() {
    use std::io::Read;
    let two_streams = |data: &[u8]| {
        let mut out = Vec::new();
        for part in [data, b"".as_slice()] {
            liblzma::read::XzEncoder::new(part, 6)
                .read_to_end(&mut out)
                .unwrap();
        }
        out
    };
    let fx = fixture();
    let index = debian_pool(&fx);
    let packages = two_streams(index.as_bytes());
    assert!(
        lzma_rs::xz_decompress(&mut packages.as_slice(), &mut Vec::new()).is_err(),
        "the single-stream decoder kfleet used before refuses this file"
    );
    fx.put(
        "/debian/dists/bookworm/main/binary-amd64/Packages.xz",
        packages,
    );
    let r = fx
        ._rt
        .block_on(resolver(chain(&fx, ""), 2000).resolve(&id("debian/12/x86_64/6.1.0-18-amd64")))
        .unwrap();
    assert_eq!(
        r.resolved_by.as_deref(),
        Some("debian-mirror"),
        "{:?}",
        r.attempts
    );
    assert_eq!(r.packages.len(), 3);
}

/// Each kernel variant has its own header package, and a pinned Alma/Rocky kernel is looked for
/// in its own minor release's repositories.
#[test]
fn offline_plans_name_the_variant_package_and_the_kernels_minor() {
    let packages_of = |key: &str, source: &str| -> Vec<String> {
        let plan = offline_plan(key);
        let s = plan
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == source)
            .unwrap_or_else(|| panic!("{key}: no {source} in {plan}"))
            .clone();
        s["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    };
    for (key, source, want) in [
        (
            "centos/9/aarch64/5.14.0-570.el9.aarch64+64k",
            "centos-stream-koji",
            vec![
                "kernel-64k-devel-5.14.0-570.el9.aarch64",
                "kernel-headers-5.14.0-570.el9.aarch64",
            ],
        ),
        (
            "centos/10/aarch64/6.12.0-55.el10.aarch64+64k-debug",
            "centos-stream-koji",
            vec![
                "kernel-64k-debug-devel-6.12.0-55.el10.aarch64",
                "kernel-headers-6.12.0-55.el10.aarch64",
            ],
        ),
        (
            "almalinux/8.10/x86_64/4.18.0-553.16.1.rt7.357.el8_10.x86_64",
            "almalinux-rt",
            vec!["kernel-rt-devel-4.18.0-553.16.1.rt7.357.el8_10.x86_64"],
        ),
        (
            "fedora/41/aarch64/6.11.4-301.fc41.aarch64+16k",
            "fedora-kojipkgs",
            vec!["kernel-16k-devel-6.11.4-301.fc41.aarch64"],
        ),
        (
            "fedora/40/x86_64/6.8.9-300.fc40.x86_64",
            "fedora-kojipkgs",
            vec!["kernel-devel-6.8.9-300.fc40.x86_64"],
        ),
    ] {
        assert_eq!(packages_of(key, source), want, "{key}");
    }
    let plan = offline_plan("almalinux/9.5/x86_64/5.14.0-427.42.1.el9_4.x86_64");
    let repo = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "almalinux-vault")
        .unwrap();
    let urls = repo["urls"].to_string();
    assert!(
        urls.contains("https://vault.almalinux.org/9.4/BaseOS/x86_64/os/"),
        "{urls}"
    );
    assert!(!urls.contains("/9.5/"), "{urls}");
}

/// A variant kernel's package is found in the repository's primary beside the stock one.
#[test]
fn a_variant_kernel_resolves_to_its_own_package() {
    let fx = fixture();
    rpm_repo(
        &fx,
        "/updates/41/aarch64/",
        &[
            ("kernel-devel", "6.11.4", "301.fc41", "aarch64", b"STOCK"),
            (
                "kernel-16k-devel",
                "6.11.4",
                "301.fc41",
                "aarch64",
                b"SIXTEEN-K",
            ),
        ],
        false,
        false,
    );
    let r = fx
        ._rt
        .block_on(
            resolver(chain(&fx, ""), 2000)
                .resolve(&id("fedora/41/aarch64/6.11.4-301.fc41.aarch64+16k")),
        )
        .unwrap();
    assert_eq!(
        r.resolved_by.as_deref(),
        Some("fedora-updates"),
        "{:?}",
        r.attempts
    );
    assert_eq!(r.packages.len(), 1);
    assert!(
        r.packages[0]
            .url
            .ends_with("/kernel-16k-devel-6.11.4-301.fc41.aarch64.rpm"),
        "{}",
        r.packages[0].url
    );
    assert_eq!(
        r.packages[0].checksum.as_ref().unwrap().hex,
        sha256(b"SIXTEEN-K")
    );
}

/// Codenames come from `assets/distro-releases.toml`: Ubuntu 26.04 is `resolute`; a release the
/// file lacks is a problem that names the file, never an empty suite like `dists/-updates/`.
#[test]
fn codenames_come_from_the_data_file_and_a_missing_one_says_where_to_add_it() {
    let plan = offline_plan("ubuntu/26.04/x86_64/6.17.0-5-generic");
    let archive = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "apt-repo")
        .unwrap()
        .clone();
    let urls = archive["urls"].to_string();
    assert!(urls.contains("/dists/resolute-updates/"), "{urls}");
    assert!(!urls.contains("dists/-"), "{urls}");

    let plan = offline_plan("ubuntu/27.10/x86_64/6.20.0-5-generic");
    for source in plan.as_array().unwrap() {
        if source["kind"] == "apt-repo" || source["kind"] == "launchpad" {
            assert_eq!(
                source["problem"],
                "no codename for ubuntu 27.10: add the release to assets/distro-releases.toml",
                "{source}"
            );
            assert_eq!(source["urls"], serde_json::json!([]));
        }
    }
}

/// The built-in chain with every `https://HOST/` moved to `{fixture}/HOST/`: the real sources,
/// layouts, filters and order, served from 127.0.0.1.
fn builtin_chain_at(fx: &Fixture) -> Chain {
    Chain::parse("built-in, re-hosted", &builtin_sources_text(fx)).unwrap()
}

/// `key` resolved through the built-in chain re-hosted on the fixture.
fn resolve_builtin(fx: &Fixture, key: &str) -> kfleet::headers::Resolution {
    fx._rt
        .block_on(resolver(builtin_chain_at(fx), 2000).resolve(&id(key)))
        .unwrap()
}

/// The built-in chain with every host moved to the fixture, and every source's keyring the
/// tests' own archive key.
fn builtin_sources_text(fx: &Fixture) -> String {
    let keyring = format!(
        "signed_by = [\"{}\"]",
        archive_signing::keyring_path().display()
    );
    kfleet::headers::chain::BUILTIN_SOURCES
        .replace("https://", &format!("{}/", fx.base))
        .lines()
        .map(|l| {
            if l.starts_with("signed_by = ") {
                keyring.as_str()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The built-in chain re-hosted on `fx` as a sources file in `dir`, and the binary run on it:
/// its state in `dir`, none of the header chain's credentials of the environment it runs in,
/// and `env` besides.
fn kfleet_on_builtin_chain<V: AsRef<std::ffi::OsStr>>(
    fx: &Fixture,
    dir: &std::path::Path,
) -> impl Fn(&[(&str, V)], &[&str]) -> std::process::Output {
    let sources = dir.join("sources.toml");
    std::fs::write(&sources, builtin_sources_text(fx)).unwrap();
    let state = dir.join("state");
    move |env, args| {
        let mut cmd = Command::cargo_bin("kfleet").unwrap();
        cmd.env("XDG_CONFIG_HOME", "/nonexistent")
            .env("KFLEET_STATE_DIR", &state)
            .env("KFLEET_HEADER_SOURCES", &sources)
            .args(args);
        for credential in [
            "KFLEET_UBUNTU_PRO_TOKEN",
            "KFLEET_UBUNTU_PRO_TOKEN_FILE",
            "KFLEET_RHEL_ENTITLEMENT_CERT",
            "KFLEET_RHEL_ENTITLEMENT_KEY",
            "KFLEET_RHEL_CDN_CA",
            "KFLEET_SUSE_REGISTRATION",
            "KFLEET_SUSE_REGCODE",
            "KFLEET_SUSE_REGCODE_FILE",
            "KFLEET_SCC_URL",
            "KFLEET_BUILD_CREDENTIALS",
        ] {
            cmd.env_remove(credential);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

fn attempted(r: &kfleet::headers::Resolution) -> String {
    r.attempts
        .iter()
        .map(|a| format!("{} {} -> {}", a.source, a.url, a.outcome))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `--offline` for each kernel the issue names: the right archive, repository and package, from
/// the built-in chain, with no network.
#[test]
fn offline_plans_name_the_archive_and_the_package_for_real_edge_kernels() {
    // (kernel, the first source tried, a URL it tries, its packages, sources it must not try)
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [&'a str], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "debian/10/x86_64/4.19.0-27-amd64",
            "debian-archive",
            "https://archive.debian.org/debian/dists/buster/InRelease",
            &["linux-headers-4.19.0-27-amd64"],
            &["debian-mirror", "debian-security"],
        ),
        (
            "debian/12/aarch64/6.1.0-26-cloud-arm64",
            "debian-mirror",
            "https://deb.debian.org/debian/dists/bookworm/InRelease",
            &["linux-headers-6.1.0-26-cloud-arm64"],
            &["debian-archive", "debian-archive-security"],
        ),
        (
            "ubuntu/23.10/aarch64/6.5.0-44-generic",
            "ubuntu-old-releases",
            "https://old-releases.ubuntu.com/ubuntu/dists/mantic-updates/InRelease",
            &["linux-headers-6.5.0-44-generic"],
            &["ubuntu-ports", "ubuntu-archive"],
        ),
        (
            "ubuntu/26.04/x86_64/7.0.0-14-generic",
            "ubuntu-archive",
            "https://archive.ubuntu.com/ubuntu/dists/resolute-updates/InRelease",
            &["linux-headers-7.0.0-14-generic"],
            &["ubuntu-old-releases"],
        ),
        (
            "centos/8/x86_64/4.18.0-277.el8.x86_64",
            "centos-stream-mirror",
            "https://vault.centos.org/8-stream/BaseOS/x86_64/os/repodata/repomd.xml",
            &[
                "kernel-devel-4.18.0-277.el8.x86_64",
                "kernel-headers-4.18.0-277.el8.x86_64",
            ],
            &[],
        ),
        (
            "centos/8/x86_64/4.18.0-305.10.2.el8_4.x86_64",
            "centos-stream-mirror",
            "https://linuxsoft.cern.ch/centos-vault/8.4.2105/BaseOS/x86_64/os/Packages/kernel-devel-4.18.0-305.10.2.el8_4.x86_64.rpm",
            &[
                "kernel-devel-4.18.0-305.10.2.el8_4.x86_64",
                "kernel-headers-4.18.0-305.10.2.el8_4.x86_64",
            ],
            &["centos7-vault-cern"],
        ),
        (
            "centos/7/x86_64/3.10.0-1160.119.1.el7.x86_64",
            "centos7-vault",
            "https://linuxsoft.cern.ch/centos-vault/7.9.2009/updates/x86_64/Packages/kernel-devel-3.10.0-1160.119.1.el7.x86_64.rpm",
            &[
                "kernel-devel-3.10.0-1160.119.1.el7.x86_64",
                "kernel-headers-3.10.0-1160.119.1.el7.x86_64",
            ],
            &["centos-stream-mirror", "centos-vault", "centos-vault-cern"],
        ),
        (
            "centos/8/x86_64/4.18.0-513.5.1.rt7.307.el8.x86_64",
            "centos-stream-rt",
            "https://kojihub.stream.centos.org/kojihub getBuild(kernel-rt-4.18.0-513.5.1.rt7.307.el8)",
            &["kernel-rt-devel-4.18.0-513.5.1.rt7.307.el8.x86_64"],
            &["centos-stream-mirror", "centos-vault"],
        ),
        (
            "almalinux/8.10/x86_64/4.18.0-553.16.1.rt7.357.el8_10.x86_64",
            "almalinux-rt",
            "https://repo.almalinux.org/almalinux/8.10/RT/x86_64/os/repodata/repomd.xml",
            &["kernel-rt-devel-4.18.0-553.16.1.rt7.357.el8_10.x86_64"],
            &["almalinux-repo", "almalinux-vault"],
        ),
        (
            "rocky/9.5/x86_64/5.14.0-427.13.1.el9_4.x86_64+rt",
            "rocky-rt",
            "https://dl.rockylinux.org/pub/rocky/9.4/NFV/x86_64/os/repodata/repomd.xml",
            &["kernel-rt-devel-5.14.0-427.13.1.el9_4.x86_64"],
            &["rocky-repo"],
        ),
        (
            "rocky/9.4/aarch64/5.14.0-427.13.1.el9_4.aarch64+64k",
            "rocky-repo",
            "https://dl.rockylinux.org/pub/rocky/9.4/AppStream/aarch64/os/repodata/repomd.xml",
            &[
                "kernel-64k-devel-5.14.0-427.13.1.el9_4.aarch64",
                "kernel-headers-5.14.0-427.13.1.el9_4.aarch64",
            ],
            &["rocky-rt"],
        ),
        (
            "amazonlinux/2023/x86_64/6.12.40-63.114.amzn2023.x86_64",
            "al2023-core",
            "https://cdn.amazonlinux.com/al2023/core/mirrors/latest/x86_64/mirror.list",
            &[
                "kernel6.12-devel-6.12.40-63.114.amzn2023.x86_64",
                "kernel6.12-headers-6.12.40-63.114.amzn2023.x86_64",
            ],
            &[],
        ),
        (
            "amazonlinux/2023/aarch64/6.1.115-126.197.amzn2023.aarch64",
            "al2023-core",
            "https://cdn.amazonlinux.com/al2023/core/mirrors/latest/aarch64/mirror.list",
            &[
                "kernel-devel-6.1.115-126.197.amzn2023.aarch64",
                "kernel-headers-6.1.115-126.197.amzn2023.aarch64",
            ],
            &[],
        ),
        (
            "amazonlinux/2/x86_64/5.10.228-219.884.amzn2.x86_64",
            "al2-kernel-extras",
            "https://amazonlinux.us-east-1.amazonaws.com/2/extras/kernel-5.10/latest/x86_64/mirror.list",
            &[
                "kernel-devel-5.10.228-219.884.amzn2.x86_64",
                "kernel-headers-5.10.228-219.884.amzn2.x86_64",
            ],
            &["al2-core"],
        ),
        (
            "amazonlinux/2/x86_64/4.14.355-275.582.amzn2.x86_64",
            "al2-core",
            "https://amazonlinux.us-east-1.amazonaws.com/2/core/latest/x86_64/mirror.list",
            &[
                "kernel-devel-4.14.355-275.582.amzn2.x86_64",
                "kernel-headers-4.14.355-275.582.amzn2.x86_64",
            ],
            &["al2-kernel-extras"],
        ),
        (
            "fedora/41/aarch64/6.11.4-301.fc41.aarch64+16k",
            "fedora-kojipkgs",
            "https://kojipkgs.fedoraproject.org/packages/kernel/6.11.4/301.fc41/data/signed/e99d6ad1/aarch64/kernel-16k-devel-6.11.4-301.fc41.aarch64.rpm",
            &["kernel-16k-devel-6.11.4-301.fc41.aarch64"],
            &[],
        ),
    ];
    for (key, first, url, packages, absent) in cases {
        let plan = offline_plan(key);
        let sources = plan.as_array().unwrap();
        assert_eq!(sources[0]["name"], *first, "{key}: {plan:#}");
        let holder = sources
            .iter()
            .find(|s| s["urls"].as_array().unwrap().iter().any(|u| u == url))
            .unwrap_or_else(|| panic!("{key}: no source tries {url}: {plan:#}"));
        assert_eq!(holder["packages"], serde_json::json!(packages), "{key}");
        for name in *absent {
            assert!(
                sources.iter().all(|s| s["name"] != *name),
                "{key} must not try {name}: {plan:#}"
            );
        }
    }
}

/// Debian 10's headers come from archive.debian.org's security archive: the mirror and
/// snapshot.debian.org are never asked.
#[test]
fn a_debian_10_kernel_is_fetched_from_archive_debian_org() {
    let fx = fixture();
    let root = "/archive.debian.org/debian-security/";
    let mut index = Vec::new();
    for (pkg, file, depends) in [
        (
            "linux-headers-4.19.0-27-amd64",
            "linux-headers-4.19.0-27-amd64_4.19.316-1_amd64.deb",
            "linux-headers-4.19.0-27-common (= 4.19.316-1), linux-kbuild-4.19 (>= 4.19.316-1)",
        ),
        (
            "linux-headers-4.19.0-27-common",
            "linux-headers-4.19.0-27-common_4.19.316-1_all.deb",
            "",
        ),
        (
            "linux-kbuild-4.19",
            "linux-kbuild-4.19_4.19.316-1_amd64.deb",
            "",
        ),
    ] {
        let path = format!("pool/updates/main/l/linux/{file}");
        fx.put(&format!("{root}{path}"), pkg.as_bytes().to_vec());
        index.push(stanza(pkg, &path, pkg.as_bytes(), depends));
    }
    fx.put(
        &format!("{root}dists/buster/updates/main/binary-amd64/Packages.xz"),
        xz(index.join("\n").as_bytes()),
    );
    let out = tempfile::tempdir().unwrap();
    let (r, files) = fx
        ._rt
        .block_on(
            resolver(builtin_chain_at(&fx), 2000)
                .fetch(&id("debian/10/x86_64/4.19.0-27-amd64"), out.path()),
        )
        .unwrap();
    assert_eq!(
        r.resolved_by.as_deref(),
        Some("debian-archive-security"),
        "{}",
        attempted(&r)
    );
    assert_eq!(files.len(), 3);
    let log = attempted(&r);
    assert!(
        !log.contains("deb.debian.org")
            && !log.contains("snapshot")
            && !log.contains("/security.debian.org"),
        "{log}"
    );
}

/// An Ubuntu interim release past its end of life is read from old-releases.ubuntu.com, on arm64
/// too (ports.ubuntu.com dropped it).
#[test]
fn an_end_of_life_ubuntu_kernel_is_found_on_old_releases() {
    let fx = fixture();
    let root = "/old-releases.ubuntu.com/ubuntu/";
    let index = [
        stanza(
            "linux-headers-6.5.0-44-generic",
            "pool/main/l/linux/linux-headers-6.5.0-44-generic_6.5.0-44.44_arm64.deb",
            b"G",
            "linux-headers-6.5.0-44, libc6 (>= 2.34)",
        ),
        stanza(
            "linux-headers-6.5.0-44",
            "pool/main/l/linux/linux-headers-6.5.0-44_6.5.0-44.44_all.deb",
            b"C",
            "",
        ),
    ]
    .join("\n");
    fx.put(
        &format!("{root}dists/mantic-security/main/binary-arm64/Packages.xz"),
        xz(index.as_bytes()),
    );
    let r = resolve_builtin(&fx, "ubuntu/23.10/aarch64/6.5.0-44-generic");
    assert_eq!(
        r.resolved_by.as_deref(),
        Some("ubuntu-old-releases"),
        "{}",
        attempted(&r)
    );
    let urls: Vec<String> = r.packages.iter().map(|p| p.url.clone()).collect();
    assert_eq!(
        urls,
        [
            format!(
                "{}{root}pool/main/l/linux/linux-headers-6.5.0-44-generic_6.5.0-44.44_arm64.deb",
                fx.base
            ),
            format!(
                "{}{root}pool/main/l/linux/linux-headers-6.5.0-44_6.5.0-44.44_all.deb",
                fx.base
            ),
        ]
    );
    assert!(
        !attempted(&r).contains("ports.ubuntu.com"),
        "{}",
        attempted(&r)
    );
}

/// Amazon Linux 2023's 6.12 kernel is `kernel6.12-devel` and `kernel6.12-headers` in core; a
/// `kernel-devel` of the same version-release is not it.
#[test]
fn amazon_linux_2023_6_12_resolves_to_its_series_packages() {
    let fx = fixture();
    fx.put(
        "/cdn.amazonlinux.com/al2023/core/mirrors/latest/x86_64/mirror.list",
        format!("{}/al2023/core/guids/abc/x86_64/\n", fx.base),
    );
    let (v, r) = ("6.12.40", "63.114.amzn2023");
    rpm_repo(
        &fx,
        "/al2023/core/guids/abc/x86_64/",
        &[
            ("kernel-devel", v, r, "x86_64", b"NOT-IT"),
            (
                "kernel-devel",
                "6.1.115",
                "126.197.amzn2023",
                "x86_64",
                b"DEV61",
            ),
            ("kernel6.12-devel", v, r, "x86_64", b"DEV612"),
            ("kernel6.12-headers", v, r, "x86_64", b"HDR612"),
        ],
        true,
        false,
    );
    let out = tempfile::tempdir().unwrap();
    let (res, files) = fx
        ._rt
        .block_on(resolver(builtin_chain_at(&fx), 2000).fetch(
            &id("amazonlinux/2023/x86_64/6.12.40-63.114.amzn2023.x86_64"),
            out.path(),
        ))
        .unwrap();
    assert_eq!(
        res.resolved_by.as_deref(),
        Some("al2023-core"),
        "{}",
        attempted(&res)
    );
    let mut got: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| {
            (
                f.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(f).unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                format!("kernel6.12-devel-{v}-{r}.x86_64.rpm"),
                b"DEV612".to_vec()
            ),
            (
                format!("kernel6.12-headers-{v}-{r}.x86_64.rpm"),
                b"HDR612".to_vec()
            ),
        ]
    );
}

/// Amazon Linux 2's 5.10 kernel is read from its own extras repository, not from core.
#[test]
fn amazon_linux_2_extras_kernel_is_read_from_its_series_repository() {
    let fx = fixture();
    fx.put(
        "/amazonlinux.us-east-1.amazonaws.com/2/extras/kernel-5.10/latest/aarch64/mirror.list",
        format!("{}/2/extras/kernel-5.10/stable/aarch64/\n", fx.base),
    );
    let (v, r) = ("5.10.228", "219.884.amzn2");
    rpm_repo(
        &fx,
        "/2/extras/kernel-5.10/stable/aarch64/",
        &[
            ("kernel-devel", v, r, "aarch64", b"DEV"),
            ("kernel-headers", v, r, "aarch64", b"HDR"),
        ],
        false,
        false,
    );
    let res = resolve_builtin(&fx, "amazonlinux/2/aarch64/5.10.228-219.884.amzn2.aarch64");
    assert_eq!(
        res.resolved_by.as_deref(),
        Some("al2-kernel-extras"),
        "{}",
        attempted(&res)
    );
    assert_eq!(res.packages.len(), 2);
    assert!(!attempted(&res).contains("/2/core/"), "{}", attempted(&res));
}

/// EL 8's real-time kernels: `kernel-rt-devel` from the RT repository (kernel-rt builds no
/// kernel-headers); BaseOS and AppStream are not read.
#[test]
fn an_el8_real_time_kernel_is_found_in_the_rt_repository() {
    let fx = fixture();
    let (v, r) = ("4.18.0", "553.16.1.rt7.357.el8_10");
    rpm_repo(
        &fx,
        "/repo.almalinux.org/almalinux/8.10/RT/x86_64/os/",
        &[("kernel-rt-devel", v, r, "x86_64", b"RT")],
        false,
        false,
    );
    let res = resolve_builtin(
        &fx,
        "almalinux/8.10/x86_64/4.18.0-553.16.1.rt7.357.el8_10.x86_64",
    );
    assert_eq!(
        res.resolved_by.as_deref(),
        Some("almalinux-rt"),
        "{}",
        attempted(&res)
    );
    let names: Vec<&str> = res.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, [format!("kernel-rt-devel-{v}-{r}.x86_64.rpm")]);
    let log = attempted(&res);
    assert!(
        !log.contains("AppStream") && !log.contains("BaseOS"),
        "{log}"
    );
}

/// A CentOS Stream 8 real-time kernel the mirrors no longer hold: the Koji build is `kernel-rt`,
/// and its files are under `packages/kernel-rt/`.
#[test]
fn a_stream_8_real_time_kernel_comes_from_its_kernel_rt_koji_build() {
    let fx = fixture();
    let nvr = "kernel-rt-4.18.0-513.5.1.rt7.307.el8";
    fx.files.lock().unwrap().koji.insert(
        nvr.to_string(),
        (
            77,
            vec![
                ("kernel-rt".into(), "src".into()),
                ("kernel-rt-devel".into(), "x86_64".into()),
            ],
        ),
    );
    let res = resolve_builtin(&fx, "centos/8/x86_64/4.18.0-513.5.1.rt7.307.el8.x86_64");
    assert_eq!(
        res.resolved_by.as_deref(),
        Some("centos-stream-koji"),
        "{}",
        attempted(&res)
    );
    let urls: Vec<&str> = res.packages.iter().map(|p| p.url.as_str()).collect();
    assert_eq!(
        urls,
        [format!(
            "{}/kojihub.stream.centos.org/kojifiles/packages/kernel-rt/4.18.0/513.5.1.rt7.307.el8/x86_64/kernel-rt-devel-4.18.0-513.5.1.rt7.307.el8.x86_64.rpm",
            fx.base
        )]
    );
}

/// Fedora: one HEAD on kojipkgs finds the package; no repository metadata is downloaded.
#[test]
fn fedora_probes_kojipkgs_before_downloading_primaries() {
    let fx = fixture();
    // The copy signed with the archive key (the re-hosted chain's keyring: the tests' key).
    let path = "/kojipkgs.fedoraproject.org/packages/kernel/6.11.4/301.fc41/data/signed/c8d69559/x86_64/kernel-devel-6.11.4-301.fc41.x86_64.rpm";
    fx.put(path, b"RPM".to_vec());
    rpm_repo(
        &fx,
        "/dl.fedoraproject.org/pub/fedora/linux/updates/41/Everything/x86_64/",
        &[("kernel-devel", "6.11.4", "301.fc41", "x86_64", b"RPM")],
        false,
        false,
    );
    let res = resolve_builtin(&fx, "fedora/41/x86_64/6.11.4-301.fc41.x86_64");
    assert_eq!(res.resolved_by.as_deref(), Some("fedora-kojipkgs"));
    assert_eq!(res.attempts.len(), 1, "{}", attempted(&res));
    assert_eq!(res.attempts[0].url, format!("{}{path}", fx.base));
}

/// With every source answering 404, the resolver's requests are the offline plan's: the plan is
/// computed by the code that resolves (APT's `.gz` beside `.xz`, Launchpad's series). A url source
/// stops at its first missing package, so it asks for a prefix of its plan.
#[test]
fn the_offline_plan_is_what_the_resolver_asks_for() {
    let fx = fixture();
    let chain = builtin_chain_at(&fx);
    for key in [
        "ubuntu/22.04/x86_64/5.15.0-91-generic",
        "debian/12/aarch64/6.1.0-26-cloud-arm64",
        "debian/9/x86_64/4.9.0-19-amd64",
        "fedora/41/aarch64/6.11.4-301.fc41.aarch64+16k",
        "centos/8/x86_64/4.18.0-513.5.1.rt7.307.el8.x86_64",
        "centos/7/x86_64/3.10.0-1160.119.1.el7.x86_64",
        "amazonlinux/2023/x86_64/6.12.40-63.114.amzn2023.x86_64",
        "rocky/9.5/x86_64/5.14.0-427.13.1.el9_4.x86_64+rt",
    ] {
        let id = id(key);
        let plan = kfleet::headers::plan(&chain, &id);
        let r = fx
            ._rt
            .block_on(resolver(chain.clone(), 2000).resolve(&id))
            .unwrap();
        assert_eq!(r.resolved_by, None, "{key}");
        let asked_by = |name: &str| -> Vec<&str> {
            r.attempts
                .iter()
                .filter(|a| a.source == name)
                .map(|a| a.url.as_str())
                .collect()
        };
        for source in &plan {
            let asked = asked_by(&source.name);
            if source.credential.is_some() {
                // Without a login the source is not tried: one attempt, no URL.
                assert_eq!(asked, [""], "{key} {}", source.name);
            } else if source.kind == kfleet::headers::SourceKind::Url {
                assert!(
                    !asked.is_empty()
                        && source
                            .urls
                            .starts_with(&asked.iter().map(|u| u.to_string()).collect::<Vec<_>>()),
                    "{key} {}: asked {asked:?}, planned {:?}",
                    source.name,
                    source.urls
                );
            } else {
                assert_eq!(asked, source.urls, "{key} {}", source.name);
            }
        }
        let planned: Vec<&str> = plan.iter().map(|s| s.name.as_str()).collect();
        assert!(
            r.attempts
                .iter()
                .all(|a| planned.contains(&a.source.as_str())),
            "{key}: a source outside the plan was asked"
        );
    }
}

/// An Ubuntu 22.04 index with GA (5.15.0) and HWE (6.8.0) generic kernels and an AWS flavour,
/// and Amazon Linux 2023 with its 6.1 and 6.12 series (separate source packages).
fn upcoming_repositories() -> Fixture {
    let fx = fixture();
    let mut index = String::new();
    for kernel in [
        "5.15.0-91-generic",
        "5.15.0-94-generic",
        "5.15.0-100-generic",
        "6.8.0-40-generic",
        "6.8.0-45-generic",
        "5.15.0-101-aws",
        "5.15.0-100",
    ] {
        let file = format!("pool/main/l/linux/linux-headers-{kernel}_amd64.deb");
        index.push_str(&stanza(
            &format!("linux-headers-{kernel}"),
            &file,
            b"DEB",
            "",
        ));
        index.push('\n');
    }
    fx.put(
        "/ubuntu/dists/jammy-updates/main/binary-amd64/Packages.xz",
        xz(index.as_bytes()),
    );
    fx.put(
        "/al2023/core/mirrors/latest/x86_64/mirror.list",
        format!("{}/al2023/core/guids/d5db1113b620ab2b/x86_64/\n", fx.base),
    );
    rpm_repo(
        &fx,
        "/al2023/core/guids/d5db1113b620ab2b/x86_64/",
        &[
            ("kernel-devel", "6.1.100", "1.amzn2023", "x86_64", b"A"),
            ("kernel-devel", "6.1.102", "1.amzn2023", "x86_64", b"B"),
            ("kernel-devel", "6.1.102", "1.amzn2023", "aarch64", b"C"),
            ("kernel6.12-devel", "6.12.10", "1.amzn2023", "x86_64", b"D"),
            ("kernel6.12-devel", "6.12.20", "1.amzn2023", "x86_64", b"E"),
        ],
        false,
        false,
    );
    fx
}

/// The lines the fleet runs and the newer kernels the repositories already publish on them: an
/// Ubuntu 22.04 index with GA (5.15.0) and HWE (6.8.0) generic kernels and an AWS flavour, and
/// Amazon Linux 2023 with its 6.1 and 6.12 series (separate source packages).
#[test]
fn newer_kernels_on_a_line_and_none_of_other_lines() {
    let fx = upcoming_repositories();
    let r = resolver(chain(&fx, ""), 2000);
    let newer = |key: &str| -> Vec<String> {
        let (found, _) = fx._rt.block_on(r.newer_on_line(&id(key))).unwrap();
        found
            .into_iter()
            .map(|u| u.identity.kernel_version)
            .collect()
    };
    assert_eq!(
        newer("ubuntu/22.04/x86_64/5.15.0-94-generic"),
        ["5.15.0-100-generic"]
    );
    assert_eq!(
        newer("ubuntu/22.04/x86_64/6.8.0-40-generic"),
        ["6.8.0-45-generic"]
    );
    assert!(newer("ubuntu/22.04/x86_64/6.8.0-45-generic").is_empty());
    assert_eq!(
        newer("amazonlinux/2023/x86_64/6.1.100-1.amzn2023.x86_64"),
        ["6.1.102-1.amzn2023.x86_64"]
    );
    assert_eq!(
        newer("amazonlinux/2023/x86_64/6.12.10-1.amzn2023.x86_64"),
        ["6.12.20-1.amzn2023.x86_64"]
    );
    let (found, _) = fx
        ._rt
        .block_on(r.newer_on_line(&id("amazonlinux/2023/x86_64/6.1.100-1.amzn2023.x86_64")))
        .unwrap();
    assert_eq!(
        found[0].published.map(|t| t.timestamp()),
        Some(PUBLISHED),
        "the primary's build time"
    );
    assert_eq!(found[0].source, "al2023-core");
}

/// `kfleet upcoming` on a fleet of those lines: the newer kernels of each, the release's
/// artifacts deciding covered or missing, and no kernel of a line the fleet does not run.
#[test]
fn upcoming_reports_the_fleets_lines_against_the_release() {
    let fx = upcoming_repositories();
    let dir = tempfile::tempdir().unwrap();
    let sources = dir.path().join("sources.toml");
    std::fs::write(&sources, chain_text(&fx, "")).unwrap();
    let mut fleet = String::from("node,distribution,distro_version,architecture,kernel_version\n");
    for (n, kernel) in [
        (30, "5.15.0-91-generic"),
        (50, "5.15.0-94-generic"),
        (20, "6.8.0-40-generic"),
    ] {
        for i in 0..n {
            fleet.push_str(&format!("u{kernel}-{i},ubuntu,22.04,x86_64,{kernel}\n"));
        }
    }
    for i in 0..10 {
        fleet.push_str(&format!(
            "a{i},amazonlinux,2023,x86_64,6.1.100-1.amzn2023.x86_64\n"
        ));
    }
    std::fs::write(dir.path().join("fleet.csv"), fleet).unwrap();
    std::fs::write(
        dir.path().join("releases.json"),
        serde_json::json!([{
            "id": 1, "tag_name": "1.0.0", "draft": false, "prerelease": false,
            "created_at": "2026-11-01T00:00:00Z", "published_at": "2026-11-01T00:00:00Z",
            "assets": [{"id": 5, "name": "kdriver-1.0.0-ubuntu-22.04-x86_64-5.15.0-100-generic.tar.xz"}]
        }])
        .to_string(),
    )
    .unwrap();
    // kfleet in the fixture's directory, its chain the fixture's sources.
    let kfleet = |args: &[&str]| {
        let mut c = Command::cargo_bin("kfleet").unwrap();
        c.env("XDG_CONFIG_HOME", "/nonexistent")
            .env("KFLEET_STATE_DIR", dir.path().join("state"))
            .env("KFLEET_HEADER_SOURCES", &sources)
            .current_dir(dir.path())
            .args(args);
        c
    };
    let run = |format: &str| {
        let out = kfleet(&[
            "upcoming",
            "-i",
            "fleet.csv",
            "--releases",
            "releases.json",
            "--format",
            format,
        ])
        .assert()
        .success();
        String::from_utf8_lossy(&out.get_output().stdout).into_owned()
    };
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    // The GA and HWE lines share Ubuntu 22.04's index: it is read once for both.
    let index_gets = || fx.files.lock().unwrap().gets["/ubuntu/dists/jammy-updates/main/binary-amd64/Packages.xz"];
    assert_eq!(index_gets(), 1);
    assert_eq!(json["errors"], serde_json::json!([]), "{json}");
    let rows: Vec<(String, u64, String, String)> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["identity"]["kernel_version"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                r["nodes"].as_u64().unwrap(),
                r["fleet_newest"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "5.15.0-100-generic".into(),
                80,
                "5.15.0-94-generic".into(),
                "upcoming-covered".into()
            ),
            (
                "6.8.0-45-generic".into(),
                20,
                "6.8.0-40-generic".into(),
                "upcoming-missing".into()
            ),
            (
                "6.1.102-1.amzn2023.x86_64".into(),
                10,
                "6.1.100-1.amzn2023.x86_64".into(),
                "upcoming-missing".into()
            ),
        ]
    );
    let table = run("table");
    assert!(
        table.contains("ubuntu/22.04/x86_64 5.15.0-*-generic"),
        "{table}"
    );
    assert!(
        table.contains("3 upcoming kernels on 3 of 3 lines; 2 without an artifact in 1.0.0"),
        "{table}"
    );
    assert!(!table.contains("aws"), "{table}");

    // Every repository down (nothing listens there): not "nothing new" but a warning per line,
    // the lines in the JSON's errors, and exit 1, so a nightly job tells a broken mirror from a
    // quiet week.
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        chain_text(&fx, "").replace(&fx.base, "http://127.0.0.1:9"),
    )
    .unwrap();
    let out = kfleet(&[
        "upcoming",
        "-i",
        "fleet.csv",
        "--releases",
        "releases.json",
        "--format",
        "json",
    ])
    .env("KFLEET_HEADER_SOURCES", &broken)
    .assert()
    .code(1);
    let out = out.get_output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(failed["rows"], serde_json::json!([]), "{failed}");
    let unread: Vec<&str> = failed["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_str().unwrap())
        .collect();
    assert_eq!(unread.len(), 3, "{failed}");
    for line in unread {
        assert!(
            stderr.contains(&format!("warning: {line}: no repository could be read")),
            "{stderr}"
        );
    }
    let out = kfleet(&["upcoming", "-i", "fleet.csv", "--releases", "releases.json"])
        .env("KFLEET_HEADER_SOURCES", &broken)
        .assert()
        .code(1);
    let table = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        table.contains(
            "0 upcoming kernels on 0 of 3 lines; 0 without an artifact in 1.0.0; 3 lines unread"
        ),
        "{table}"
    );

    // The same kernels through the planner: the covered one needs nothing, the others would be
    // dispatched (the sandbox serves the same release).
    let planned = kfleet(&[
        "dispatch",
        "--upcoming",
        "-i",
        "fleet.csv",
        "--dry-run",
        "--sandbox",
        ".",
        "--format",
        "json",
    ])
    .assert()
    .success();
    let planned = String::from_utf8_lossy(&planned.get_output().stdout).into_owned();
    let decisions: serde_json::Value = serde_json::from_str(&planned).unwrap();
    let outcomes: Vec<(String, String)> = decisions
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["key"].as_str().unwrap().to_string(),
                d["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (
                "ubuntu/22.04/x86_64/5.15.0-100-generic".into(),
                "available".into()
            ),
            (
                "ubuntu/22.04/x86_64/6.8.0-45-generic".into(),
                "would-dispatch".into()
            ),
            (
                "amazonlinux/2023/x86_64/6.1.102-1.amzn2023.x86_64".into(),
                "would-dispatch".into()
            ),
        ],
        "one decision per upcoming kernel: {planned}"
    );

    // `report --upcoming` counts them apart: node coverage is the running kernels' alone, and
    // the artifact built ahead is a prebuilt upcoming kernel, not just an unused one.
    let report = |extra: &[&str]| {
        let mut args = vec!["report", "-i", "fleet.csv", "--releases", "releases.json"];
        args.extend_from_slice(extra);
        let out = kfleet(&args).assert().success();
        String::from_utf8_lossy(&out.get_output().stdout).into_owned()
    };
    let plain: serde_json::Value = serde_json::from_str(&report(&["-f", "json"])).unwrap();
    let with: serde_json::Value =
        serde_json::from_str(&report(&["-f", "json", "--upcoming"])).unwrap();
    assert_eq!(with["summary"], plain["summary"], "coverage is not moved");
    assert!(plain.get("upcoming").is_none());
    let up = &with["upcoming"];
    assert_eq!(
        (
            up["kernels"].as_u64(),
            up["covered"].as_u64(),
            up["missing"].as_u64()
        ),
        (Some(3), Some(1), Some(2)),
        "{up}"
    );
    assert_eq!(up["prebuilt_unused_artifacts"], 1, "{up}");
    assert_eq!(with["summary"]["unused_artifacts"], 1);
    let table = report(&["--upcoming"]);
    assert!(
        table.contains("upcoming (not counted in coverage): 3 upcoming kernels on 3 of the fleet's 3 lines: 1 prebuilt, 2 without an artifact; 1 of the 1 unused artifacts are prebuilt upcoming kernels"),
        "{table}"
    );
    let markdown = report(&["--upcoming", "-f", "markdown"]);
    assert!(
        markdown.contains("| 20 | 6.8.0-40-generic | 6.8.0-45-generic | - | upcoming-missing |"),
        "{markdown}"
    );

    // The upgrade gate: `preflight -i` targets the same kernels and exits 2 while any still
    // needs its build; `--kernel-line` targets one line's newer kernel; with `-i`, explicit
    // targets on a line the fleet does not run are skipped.
    let preflight = |extra: &[&str]| {
        let mut args = vec!["preflight", "--sandbox", ".", "--format", "json"];
        args.extend_from_slice(extra);
        let out = kfleet(&args).output().unwrap();
        let decisions: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        let keys: Vec<(String, String)> = decisions
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["key"].as_str().unwrap().into(),
                    d["outcome"].as_str().unwrap().into(),
                )
            })
            .collect();
        (
            out.status.code(),
            keys,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, keys, _) = preflight(&["-i", "fleet.csv", "--dry-run"]);
    assert_eq!(code, Some(2), "{keys:?}");
    assert_eq!(
        keys, outcomes,
        "the fleet's upcoming kernels are the targets"
    );
    let (code, keys, _) = preflight(&[
        "--kernel-line",
        "ubuntu/22.04/x86_64/6.8.0-40-generic",
        "--dry-run",
    ]);
    assert_eq!(code, Some(2));
    assert_eq!(
        keys,
        [(
            "ubuntu/22.04/x86_64/6.8.0-45-generic".into(),
            "would-dispatch".into()
        )]
    );
    let (code, keys, stderr) = preflight(&[
        "-i",
        "fleet.csv",
        "--identity",
        "ubuntu/22.04/x86_64/5.15.0-100-generic",
        "--identity",
        "debian/12/x86_64/6.1.0-44-amd64",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        keys,
        [(
            "ubuntu/22.04/x86_64/5.15.0-100-generic".into(),
            "available".into()
        )]
    );
    assert!(
        stderr.contains("debian/12/x86_64/6.1.0-44-amd64: not on a line the fleet runs"),
        "{stderr}"
    );
    // Lines whose repositories cannot be read leave the targets unknown: not ready, exit 1.
    let (code, keys, stderr) = {
        let out = kfleet(&[
            "preflight",
            "-i",
            "fleet.csv",
            "--sandbox",
            ".",
            "--dry-run",
        ])
        .env("KFLEET_HEADER_SOURCES", &broken)
        .output()
        .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(1), "{keys}{stderr}");
    assert!(stderr.contains("3 line(s) could not be read"), "{stderr}");
}

/// Ubuntu's `Packages` stanza of a headers package in `root` (served by `fx`), and its file.
fn ubuntu_headers(fx: &Fixture, root: &str, package: &str, file: &str) -> String {
    let path = format!("pool/main/l/linux/{file}");
    fx.put(&format!("{root}{path}"), package.as_bytes().to_vec());
    stanza(package, &path, package.as_bytes(), "")
}

/// A release past its end of life that has not moved for good (Ubuntu 25.10, whose support
/// ended in July 2026) is read from the main archive first, where it stays for a while, then
/// from old-releases.ubuntu.com once it moved.
#[test]
fn an_end_of_life_release_is_read_from_the_archive_then_from_old_releases() {
    let fx = fixture();
    let archive = "/archive.ubuntu.com/ubuntu/";
    let old = "/old-releases.ubuntu.com/ubuntu/";
    let on_archive = ubuntu_headers(
        &fx,
        archive,
        "linux-headers-6.17.0-19-generic",
        "linux-headers-6.17.0-19-generic_6.17.0-19.19_amd64.deb",
    );
    fx.put(
        &format!("{archive}dists/questing-updates/main/binary-amd64/Packages.xz"),
        xz(on_archive.as_bytes()),
    );
    let moved = ubuntu_headers(
        &fx,
        old,
        "linux-headers-6.17.0-8-generic",
        "linux-headers-6.17.0-8-generic_6.17.0-8.8_amd64.deb",
    );
    fx.put(
        &format!("{old}dists/questing/main/binary-amd64/Packages.xz"),
        xz(moved.as_bytes()),
    );
    let resolver = resolver(builtin_chain_at(&fx), 2000);
    let r = fx
        ._rt
        .block_on(resolver.resolve(&id("ubuntu/25.10/x86_64/6.17.0-19-generic")))
        .unwrap();
    assert_eq!(
        r.resolved_by.as_deref(),
        Some("ubuntu-archive"),
        "{}",
        attempted(&r)
    );
    let r = fx
        ._rt
        .block_on(resolver.resolve(&id("ubuntu/25.10/x86_64/6.17.0-8-generic")))
        .unwrap();
    assert_eq!(
        r.resolved_by.as_deref(),
        Some("ubuntu-old-releases"),
        "{}",
        attempted(&r)
    );
    assert_eq!(
        r.attempts[0].source,
        "ubuntu-archive",
        "the main archive is asked first: {}",
        attempted(&r)
    );
}

/// A release kfleet's facts do not list, found only in the archive of old releases (its suites
/// moved from the main archive): learned as past its end of life and moved for good, so its
/// headers come from old-releases and the main archive is not asked for them.
#[test]
fn a_release_found_only_among_old_releases_is_learned_as_end_of_life() {
    let fx = fixture();
    let (archive, old) = (
        "/archive.ubuntu.com/ubuntu/",
        "/old-releases.ubuntu.com/ubuntu/",
    );
    fx.put(
        &format!("{archive}dists/"),
        "<html><body><a href=\"noble/\">noble/</a> <a href=\"resolute/\">resolute/</a></body></html>",
    );
    fx.put(
        &format!("{old}dists/"),
        "<html><body><a href=\"wobbly/\">wobbly/</a> <a href=\"wobbly-updates/\">wobbly-updates/</a></body></html>",
    );
    fx.put(
        &format!("{old}dists/wobbly/Release"),
        "Origin: Ubuntu\nLabel: Ubuntu\nSuite: wobbly\nVersion: 30.04\nCodename: wobbly\nDescription: Ubuntu 30.04\n",
    );
    let index = ubuntu_headers(
        &fx,
        old,
        "linux-headers-9.0.0-3-generic",
        "linux-headers-9.0.0-3-generic_9.0.0-3.3_amd64.deb",
    );
    fx.put(
        &format!("{old}dists/wobbly-updates/main/binary-amd64/Packages.xz"),
        xz(index.as_bytes()),
    );
    let r = resolve_builtin(&fx, "ubuntu/30.04/x86_64/9.0.0-3-generic");
    assert_eq!(
        r.resolved_by.as_deref(),
        Some("ubuntu-old-releases"),
        "{}",
        attempted(&r)
    );
    assert!(kfleet::distros::end_of_life("ubuntu", "30.04"));
    assert!(kfleet::distros::archived("ubuntu", "30.04"));
    assert!(
        r.attempts
            .iter()
            .all(|a| !a.url.contains("/archive.ubuntu.com/ubuntu/dists/wobbly")),
        "the main archive is not asked for a release that moved: {}",
        attempted(&r)
    );
}

/// A release kfleet's own facts do not list (an Ubuntu release published after this kfleet was
/// built) gets its codename from the archive: the suites its `dists/` index lists, and the
/// `Version:` and `Codename:` of each one's `Release` file: here 27.04, Ubuntu's development
/// release in December 2026, with the archive's real `Release` (`devel` is the same suite).
#[test]
fn a_release_missing_from_the_facts_is_read_from_the_archives_release_files() {
    let fx = fixture();
    let archive = "/archive.ubuntu.com/ubuntu/";
    fx.put(
        &format!("{archive}dists/"),
        r#"<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">
<html><head><title>Index of /ubuntu/dists</title></head><body><h1>Index of /ubuntu/dists</h1>
<pre><a href="?C=N;O=D">Name</a> <a href="?C=M;O=A">Last modified</a><hr><a href="/ubuntu/">Parent Directory</a>
<a href="devel/">devel/</a>                  2026-10-16 11:10    -
<a href="noble/">noble/</a>                  2024-04-25 15:19    -
<a href="noble-updates/">noble-updates/</a>          2026-12-06 09:02    -
<a href="resolute/">resolute/</a>               2026-04-23 15:10    -
<a href="stonking/">stonking/</a>               2026-10-15 12:18    -
<a href="tenacious/">tenacious/</a>             2026-10-30 14:43    -
<a href="tenacious-updates/">tenacious-updates/</a>   2026-12-06 09:02    -
</pre></body></html>"#,
    );
    fx.put(
        &format!("{archive}dists/devel/Release"),
        "Origin: Ubuntu\nLabel: Ubuntu\nSuite: tenacious\nVersion: 27.04\nCodename: tenacious\nDate: Fri, 30 Oct 2026 14:43:55 UTC\n",
    );
    fx.put(
        &format!("{archive}dists/tenacious/Release"),
        "Origin: Ubuntu\nLabel: Ubuntu\nSuite: tenacious\nVersion: 27.04\nCodename: tenacious\nDate: Fri, 30 Oct 2026 14:43:55 UTC\nArchitectures: amd64 amd64v3 arm64 armhf i386 ppc64el riscv64 s390x\nComponents: main restricted universe multiverse\nDescription: Ubuntu Tenacious Tarsier 27.04\nSHA256:\n 0123 1234 main/binary-amd64/Packages.xz\n",
    );
    let index = ubuntu_headers(
        &fx,
        archive,
        "linux-headers-7.1.0-9-generic",
        "linux-headers-7.1.0-9-generic_7.1.0-9.9_amd64.deb",
    );
    fx.put(
        &format!("{archive}dists/tenacious-updates/main/binary-amd64/Packages.xz"),
        xz(index.as_bytes()),
    );
    let r = resolve_builtin(&fx, "ubuntu/27.04/x86_64/7.1.0-9-generic");
    assert_eq!(
        r.resolved_by.as_deref(),
        Some("ubuntu-archive"),
        "{}",
        attempted(&r)
    );
    assert_eq!(
        r.packages[0].url,
        format!(
            "{}{archive}pool/main/l/linux/linux-headers-7.1.0-9-generic_7.1.0-9.9_amd64.deb",
            fx.base
        )
    );
    assert_eq!(
        kfleet::distros::codename("ubuntu", "27.04"),
        Some("tenacious")
    );
    let gets = fx.files.lock().unwrap().gets.clone();
    assert_eq!(
        gets.get(&format!("{archive}dists/noble/Release")),
        None,
        "a suite kfleet knows is not read"
    );
    let r = resolve_builtin(&fx, "ubuntu/27.10/x86_64/7.3.0-2-generic");
    assert!(r.resolved_by.is_none());
    assert!(
        attempted(&r).contains("no codename for ubuntu 27.10"),
        "a release no archive lists says so: {}",
        attempted(&r)
    );
    // However many unknown releases an inventory names, an archive's suites are read once.
    let gets = fx.files.lock().unwrap().gets.clone();
    assert_eq!(gets.get(&format!("{archive}dists/")), Some(&1), "{gets:?}");
    assert_eq!(
        gets.get(&format!("{archive}dists/tenacious/Release")),
        Some(&1),
        "{gets:?}"
    );
}

/// The built-in Ubuntu chain on `fx`: for a kernel key, the newer kernels on its line and the
/// meta-package that leads to each.
fn ubuntu_lines(fx: &Fixture) -> impl Fn(&str) -> Vec<(String, Option<String>)> + '_ {
    let r = resolver(chain(fx, ""), 2000);
    move |key| {
        let (found, _) = fx._rt.block_on(r.newer_on_line(&id(key))).unwrap();
        found
            .into_iter()
            .map(|u| (u.identity.kernel_version, u.via))
            .collect()
    }
}

/// A line is where its nodes move: besides the newer kernels of the series, the kernel the
/// flavour's meta-package points at now, as noble's `linux-headers-aws` moved from 6.17 to 7.0
/// (and `-hwe-24.04` for HWE nodes); a meta of another flavour or release leads nowhere.
#[test]
fn upcoming_follows_the_flavours_meta_package_into_its_next_series() {
    let fx = fixture();
    let mut index = String::new();
    for (package, depends) in [
        ("linux-headers-6.17.0-19-aws", ""),
        ("linux-headers-6.17.0-21-aws", ""),
        ("linux-headers-7.0.0-1018-aws", ""),
        ("linux-headers-aws", "linux-headers-7.0.0-1018-aws"),
        ("linux-headers-7.0.0-44-generic", ""),
        ("linux-headers-6.17.0-42-generic", ""),
        (
            "linux-headers-generic-hwe-24.04",
            "linux-headers-7.0.0-44-generic",
        ),
        (
            "linux-headers-generic-hwe-22.04",
            "linux-headers-6.17.0-42-generic",
        ),
        ("linux-headers-7.1.0-3-azure", ""),
        ("linux-headers-azure", "linux-headers-7.1.0-3-azure"),
    ] {
        let file = format!("pool/main/l/linux/{package}_amd64.deb");
        index.push_str(&stanza(package, &file, b"DEB", depends));
        index.push('\n');
    }
    fx.put(
        "/ubuntu/dists/noble-updates/main/binary-amd64/Packages.xz",
        xz(index.as_bytes()),
    );
    let newer = ubuntu_lines(&fx);
    assert_eq!(
        newer("ubuntu/24.04/x86_64/6.17.0-19-aws"),
        [
            ("6.17.0-21-aws".to_string(), None),
            (
                "7.0.0-1018-aws".to_string(),
                Some("linux-headers-aws".to_string())
            ),
        ]
    );
    assert_eq!(
        newer("ubuntu/24.04/x86_64/6.17.0-40-generic"),
        [
            ("6.17.0-42-generic".to_string(), None),
            (
                "7.0.0-44-generic".to_string(),
                Some("linux-headers-generic-hwe-24.04".to_string())
            ),
        ],
        "22.04's HWE meta is not noble's"
    );
}

/// Ubuntu 26.10's archive as it is: since 26.10 its `Release` files and `Packages` stanzas carry
/// only SHA512. `tests/fixtures/ubuntu-stonking-updates/` holds the real `stonking-updates`
/// InRelease (recorded 2026-12-07 from archive.ubuntu.com, signed with Ubuntu's archive key,
/// which is built in) and its real main index: the kernel is found with the SHA512 its stanza
/// lists, vouched for by the real signature, and a package whose bytes do not match it is
/// refused. Reading SHA256 alone found nothing in any 26.10 suite.
#[test]
fn ubuntu_26_10_indexes_list_sha512_only_and_are_read_and_checked() {
    let fx = fixture();
    let recorded = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ubuntu-stonking-updates");
    let dists = "/archive.ubuntu.com/ubuntu/dists/stonking-updates/";
    fx.put(
        &format!("{dists}InRelease"),
        std::fs::read(recorded.join("InRelease")).unwrap(),
    );
    fx.put(
        &format!("{dists}main/binary-amd64/Packages.xz"),
        std::fs::read(recorded.join("main-binary-amd64-Packages.xz")).unwrap(),
    );
    let text = format!(
        "[[sources]]\nfamily = \"ubuntu\"\nname = \"ubuntu-archive\"\nkind = \"apt-repo\"\nsigned_by = \"ubuntu-archive-2018.asc\"\nurls = [\"{}/archive.ubuntu.com/ubuntu/\"]\nsuites = [\"{{codename}}-updates\"]\ncomponents = [\"main\"]\n",
        fx.base
    );
    let r = resolver(Chain::parse("stonking.toml", &text).unwrap(), 10_000);
    let kernel = id("ubuntu/26.10/x86_64/7.3.0-10-generic");
    let res = fx._rt.block_on(r.resolve(&kernel)).unwrap();
    assert_eq!(
        res.resolved_by.as_deref(),
        Some("ubuntu-archive"),
        "{}",
        attempted(&res)
    );
    assert!(
        attempted(&res).contains(
            "ok, signed by Ubuntu Archive Automatic Signing Key (2018) <ftpmaster@ubuntu.com>"
        ),
        "{}",
        attempted(&res)
    );
    let pool = format!("{}/archive.ubuntu.com/ubuntu/pool/main/l/linux/", fx.base);
    let urls: Vec<(&str, &str, &str)> = res
        .packages
        .iter()
        .map(|p| {
            let c = p.checksum.as_ref().unwrap();
            (p.url.as_str(), c.algorithm.as_str(), &c.hex[..16])
        })
        .collect();
    assert_eq!(
        urls,
        [
            (
                format!("{pool}linux-headers-7.3.0-10-generic_7.3.0-10.10_amd64.deb").as_str(),
                "sha512",
                "75882e3461d379cf"
            ),
            (
                format!("{pool}linux-headers-7.3.0-10_7.3.0-10.10_all.deb").as_str(),
                "sha512",
                "83b42050646bfd7f"
            ),
        ]
    );
    // A mirror that serves other bytes under the package's name: the SHA512 refuses them.
    fx.put(
        "/archive.ubuntu.com/ubuntu/pool/main/l/linux/linux-headers-7.3.0-10-generic_7.3.0-10.10_amd64.deb",
        b"not the package".to_vec(),
    );
    let out = tempfile::tempdir().unwrap();
    let err = fx._rt.block_on(r.fetch(&kernel, out.path())).unwrap_err();
    assert!(
        err.to_string().contains("sha512 is") && err.to_string().contains("nothing was kept"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

/// The same on the archive's own entries: `tests/fixtures/ubuntu-noble-updates-kernel-headers.Packages`
/// holds stanzas of noble-updates' real `Packages` index (recorded 2026-12-07 from
/// archive.ubuntu.com, trimmed to the fields apt reads), where `linux-headers-aws` depends on
/// 7.0.0-1021-aws, `-generic` on 6.8.0-155 and `-generic-hwe-24.04` on 7.0.0-44.
#[test]
fn upcoming_follows_noble_updates_real_meta_packages() {
    let fx = fixture();
    let recorded = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ubuntu-noble-updates-kernel-headers.Packages"),
    )
    .unwrap();
    fx.put(
        "/ubuntu/dists/noble-updates/main/binary-amd64/Packages.xz",
        xz(&recorded),
    );
    let newer = ubuntu_lines(&fx);
    // 7.0.0-1018-aws is in neither the node's series nor where the meta points now.
    assert_eq!(
        newer("ubuntu/24.04/x86_64/6.8.0-1073-aws"),
        [(
            "7.0.0-1021-aws".to_string(),
            Some("linux-headers-aws".to_string())
        )]
    );
    assert_eq!(
        newer("ubuntu/24.04/x86_64/6.8.0-151-generic"),
        [
            (
                "6.8.0-155-generic".to_string(),
                Some("linux-headers-generic".to_string())
            ),
            (
                "7.0.0-44-generic".to_string(),
                Some("linux-headers-generic-hwe-24.04".to_string())
            ),
        ]
    );
}

/// AlmaLinux nodes on 9.6 move to 9.7's kernels by updating: their line is the major release's,
/// read from its repositories (`/9/`, the current minor), not the node's minor.
#[test]
fn alma_lines_follow_the_major_release_into_the_next_minor() {
    let fx = fixture();
    rpm_repo(
        &fx,
        "/almalinux/9/BaseOS/x86_64/os/",
        &[
            ("kernel-devel", "5.14.0", "570.12.1.el9_6", "x86_64", b"A"),
            ("kernel-devel", "5.14.0", "611.5.1.el9_7", "x86_64", b"B"),
        ],
        false,
        false,
    );
    let extra = format!(
        r#"
[[sources]]
family = "almalinux"
name = "almalinux-repo"
kind = "rpm-repo"
urls = ["{}/almalinux/{{vault_release}}/BaseOS/{{arch}}/os/"]
"#,
        fx.base
    );
    let r = resolver(chain(&fx, &extra), 2000);
    let (found, attempts) = fx
        ._rt
        .block_on(r.newer_on_line(&id("almalinux/9.6/x86_64/5.14.0-570.12.1.el9_6.x86_64")))
        .unwrap();
    let keys: Vec<String> = found.iter().map(|u| u.identity.key()).collect();
    assert_eq!(
        keys,
        ["almalinux/9.7/x86_64/5.14.0-611.5.1.el9_7.x86_64"],
        "{attempts:?}"
    );
    assert_eq!(found[0].line, "almalinux/9/x86_64 kernel");
}

/// Pockets before release are an opt-in for earlier builds: `-proposed`'s kernels are upcoming
/// only when asked for, and a kernel only -proposed holds still resolves there.
#[test]
fn proposed_pockets_are_upcoming_only_on_request() {
    let fx = fixture();
    let mut updates = String::new();
    let mut proposed = String::new();
    for (index, kernel) in [
        (&mut updates, "6.8.0-45-generic"),
        (&mut proposed, "6.8.0-47-generic"),
    ] {
        let file = format!("pool/main/l/linux/linux-headers-{kernel}_amd64.deb");
        fx.put(
            &format!("/archive.ubuntu.com/ubuntu/{file}"),
            b"DEB".to_vec(),
        );
        index.push_str(&stanza(
            &format!("linux-headers-{kernel}"),
            &file,
            b"DEB",
            "",
        ));
    }
    fx.put(
        "/archive.ubuntu.com/ubuntu/dists/noble-updates/main/binary-amd64/Packages.xz",
        xz(updates.as_bytes()),
    );
    fx.put(
        "/archive.ubuntu.com/ubuntu/dists/noble-proposed/main/binary-amd64/Packages.xz",
        xz(proposed.as_bytes()),
    );
    let resolver = |proposed: bool| {
        Resolver::new(
            builtin_chain_at(&fx),
            ResolverOptions {
                source_timeout: Duration::from_secs(2),
                cache: None,
                proposed,
                ..ResolverOptions::default()
            },
        )
        .unwrap()
    };
    let newest = id("ubuntu/24.04/x86_64/6.8.0-40-generic");
    let newer = |proposed: bool| -> Vec<(String, String)> {
        let (found, _) = fx
            ._rt
            .block_on(resolver(proposed).newer_on_line(&newest))
            .unwrap();
        found
            .into_iter()
            .map(|u| (u.identity.kernel_version, u.source))
            .collect()
    };
    assert_eq!(
        newer(false),
        [("6.8.0-45-generic".to_string(), "ubuntu-archive".to_string())]
    );
    assert_eq!(
        newer(true),
        [
            ("6.8.0-45-generic".to_string(), "ubuntu-archive".to_string()),
            (
                "6.8.0-47-generic".to_string(),
                "ubuntu-proposed".to_string()
            ),
        ]
    );
    let r = fx
        ._rt
        .block_on(resolver(false).resolve(&id("ubuntu/24.04/x86_64/6.8.0-47-generic")))
        .unwrap();
    assert_eq!(
        r.resolved_by.as_deref(),
        Some("ubuntu-proposed"),
        "{}",
        attempted(&r)
    );
}

/// Ubuntu Pro: a focal kernel past its standard support is `unsupported: needs Ubuntu Pro`
/// without a login; with one (a token, or an apt auth.conf naming the service) it is an ordinary
/// kernel whose headers come from the Pro archive, the index and the packages fetched with apt's
/// Basic login, the token printed nowhere. A wrong token is a 401 the chain reports and moves past.
#[test]
fn ubuntu_pro_kernels_resolve_through_the_pro_archive_with_a_token() {
    use base64::Engine as _;
    const TOKEN: &str = "pro-resource-token-4f1c9e";
    let fx = fixture();
    let (h, c) = (b"PRO-HDR".as_slice(), b"PRO-COMMON".as_slice());
    let pool = "pool/main/l/linux";
    let esm = "/esm.ubuntu.com/infra/ubuntu";
    for (file, body) in [
        ("linux-headers-5.4.0-218-generic_5.4.0-218.238_amd64.deb", h),
        ("linux-headers-5.4.0-218_5.4.0-218.238_all.deb", c),
    ] {
        fx.put(&format!("{esm}/{pool}/{file}"), body.to_vec());
    }
    let stanza = |pkg: &str, file: &str, body: &[u8], depends: &str| {
        format!(
            "Package: {pkg}\nSource: linux\nVersion: 5.4.0-218.238\nArchitecture: amd64\nDepends: {depends}\nFilename: {pool}/{file}\nSize: {}\nSHA256: {}\nDescription: headers\n",
            body.len(),
            sha256(body)
        )
    };
    let index = [
        stanza(
            "linux-headers-5.4.0-218-generic",
            "linux-headers-5.4.0-218-generic_5.4.0-218.238_amd64.deb",
            h,
            "linux-headers-5.4.0-218, libc6 (>= 2.31)",
        ),
        stanza(
            "linux-headers-5.4.0-218",
            "linux-headers-5.4.0-218_5.4.0-218.238_all.deb",
            c,
            "",
        ),
    ]
    .join("\n");
    // An index entry whose Filename names another host: the login never goes there.
    let elsewhere = fixture();
    elsewhere.put("/x.deb", b"X".to_vec());
    let index = format!(
        "{index}\nPackage: linux-headers-5.4.0-219-generic\nSource: linux\nVersion: 5.4.0-219.239\nArchitecture: amd64\nDepends: \nFilename: {}/x.deb\nSize: 1\nSHA256: {}\nDescription: headers\n",
        elsewhere.base,
        sha256(b"X")
    );
    fx.put(
        &format!("{esm}/dists/focal-infra-security/main/binary-amd64/Packages.xz"),
        xz(index.as_bytes()),
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("bearer:{TOKEN}"))
    );
    fx.files
        .lock()
        .unwrap()
        .guarded
        .push(("/esm.ubuntu.com/".into(), basic.clone()));
    let dir = tempfile::tempdir().unwrap();
    // Declared before the runner, which borrows what it is given for as long as it lives.
    let conf = dir.path().join("90ubuntu-advantage");
    let kfleet = kfleet_on_builtin_chain::<&str>(&fx, dir.path());
    let identity = [
        "--distribution",
        "ubuntu",
        "--distro-version",
        "20.04",
        "--architecture",
        "x86_64",
        "--kernel-version",
        "5.4.0-218-generic",
    ];
    fn with<'a>(first: &[&'a str], identity: &[&'a str]) -> Vec<&'a str> {
        [first, identity].concat()
    }

    // No login: not a kernel kfleet can build, and it says what it needs.
    let out = kfleet(&[], &with(&["identity", "check"], &identity));
    assert!(!out.status.success());
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("needs Ubuntu Pro"), "{said}");

    // A token: the identity is valid and the Pro archive holds its headers.
    let pro = [("KFLEET_UBUNTU_PRO_TOKEN", TOKEN)];
    let out = kfleet(&pro, &with(&["identity", "check"], &identity));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers = dir.path().join("headers");
    let out = kfleet(
        &pro,
        &with(
            &["headers", "fetch", "--out", headers.to_str().unwrap()],
            &identity,
        ),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("ubuntu-pro-esm-infra"), "{stderr}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
    assert_eq!(
        std::fs::read(headers.join("linux-headers-5.4.0-218_5.4.0-218.238_all.deb")).unwrap(),
        c
    );
    {
        let f = fx.files.lock().unwrap();
        let sent = |suffix: &str| {
            f.authorizations
                .iter()
                .filter(|(p, _)| p.ends_with(suffix))
                .all(|(_, a)| a.as_deref() == Some(basic.as_str()))
                && f.authorizations.iter().any(|(p, _)| p.ends_with(suffix))
        };
        assert!(sent("focal-infra-security/main/binary-amd64/Packages.xz"));
        assert!(sent(
            "linux-headers-5.4.0-218-generic_5.4.0-218.238_amd64.deb"
        ));
        // The public archive never sees the login.
        assert!(
            f.authorizations
                .iter()
                .filter(|(p, _)| !p.starts_with("/esm.ubuntu.com/"))
                .all(|(_, a)| a.is_none())
        );
    }

    let resolve_json = with(
        &[
            "headers",
            "resolve",
            "--cache-ttl",
            "0s",
            "--format",
            "json",
        ],
        &identity,
    );
    // apt's auth.conf of an attached machine, from a file: the entry for the service is used.
    let host = fx.base.trim_start_matches("http://");
    std::fs::write(
        &conf,
        format!(
            "machine {host}/esm.ubuntu.com/fips-updates/ubuntu/ login bearer password other\nmachine {host}/esm.ubuntu.com/infra/ubuntu/ login bearer password {TOKEN}\n"
        ),
    )
    .unwrap();
    let out = kfleet(
        &[("KFLEET_UBUNTU_PRO_TOKEN_FILE", conf.to_str().unwrap())],
        &resolve_json,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["resolved_by"], "ubuntu-pro-esm-infra", "{json}");

    // A wrong token: the archive's 401 is in the attempts, and nothing resolves.
    let out = kfleet(
        &[("KFLEET_UBUNTU_PRO_TOKEN", "stale-token-0000")],
        &resolve_json,
    );
    assert!(!out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let attempts = json["attempts"].to_string();
    assert!(
        attempts.contains("infra-security") && attempts.contains("HTTP 401"),
        "{attempts}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("stale-token-0000"));

    // The Pro index names a package on another host: refused; nothing goes there, the login
    // least of all.
    let mut other = identity;
    other[7] = "5.4.0-219-generic";
    let out = kfleet(
        &pro,
        &with(
            &["headers", "fetch", "--out", headers.to_str().unwrap()],
            &other,
        ),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "the repository's metadata names {}/x.deb, outside",
            elsewhere.base
        )) && stderr.contains("refused")
            && !stderr.contains(TOKEN),
        "{stderr}"
    );
    assert!(elsewhere.files.lock().unwrap().authorizations.is_empty());
}

/// Oracle Linux through the built-in chain, served from 127.0.0.1 in yum.oracle.com's layout
/// (packages under `getPackage/`): a UEK R7 kernel's `kernel-uek-devel` from the major's UEKR7
/// repository (an R8 kernel is never looked for there), and a Red Hat compatible kernel's
/// `kernel-devel` and `kernel-headers` from AppStream after BaseOS does not have them.
#[test]
fn oracle_linux_uek_and_rhck_from_their_repositories() {
    let fx = fixture();
    let ol = "/yum.oracle.com/repo/OracleLinux/OL9";
    rpm_repo_with(
        &fx,
        &format!("{ol}/UEKR7/x86_64/"),
        &[(
            "kernel-uek-devel",
            "5.15.0",
            "305.176.4.el9uek",
            "x86_64",
            b"UEK-DEVEL",
        )],
        &[Meta::XmlGz],
        "getPackage/",
        false,
    );
    rpm_repo_with(
        &fx,
        &format!("{ol}/appstream/x86_64/"),
        &[
            (
                "kernel-devel",
                "5.14.0",
                "503.11.1.0.1.el9_5",
                "x86_64",
                b"RHCK-DEVEL",
            ),
            (
                "kernel-headers",
                "5.14.0",
                "503.11.1.0.1.el9_5",
                "x86_64",
                b"RHCK-HEADERS",
            ),
        ],
        &[Meta::XmlGz],
        "getPackage/",
        false,
    );
    let r = Resolver::new(builtin_chain_at(&fx), ResolverOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();

    let uek = id("oraclelinux/9.5/x86_64/5.15.0-305.176.4.el9uek.x86_64");
    let (res, files) = fetched_by(&fx, &r, &uek, out.path(), "oraclelinux-uek7");
    assert!(res.attempts.iter().all(|a| !a.url.contains("UEKR8")));
    assert_eq!(files.len(), 1);
    assert_eq!(
        files[0].file_name().unwrap(),
        "kernel-uek-devel-5.15.0-305.176.4.el9uek.x86_64.rpm"
    );
    assert_eq!(std::fs::read(&files[0]).unwrap(), b"UEK-DEVEL");
    assert_eq!(
        kfleet::headers::line_of(&uek),
        "oraclelinux/9/x86_64 kernel-uek 5.15"
    );

    let rhck = id("oraclelinux/9.5/x86_64/5.14.0-503.11.1.0.1.el9_5.x86_64");
    let (res, files) = fetched_by(&fx, &r, &rhck, out.path(), "oraclelinux-rhck");
    assert!(
        res.attempts
            .iter()
            .any(|a| a.url.contains("/baseos/latest/") && a.outcome == "HTTP 404"),
        "{}",
        attempted(&res)
    );
    let mut names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "kernel-devel-5.14.0-503.11.1.0.1.el9_5.x86_64.rpm",
            "kernel-headers-5.14.0-503.11.1.0.1.el9_5.x86_64.rpm"
        ]
    );
    assert_eq!(
        kfleet::headers::line_of(&rhck),
        "oraclelinux/9/x86_64 kernel"
    );
}

/// Azure Linux 3 through the built-in chain, served from 127.0.0.1 in packages.microsoft.com's
/// layout: `kernel-devel` of a `uname -r` without an architecture, from the release's base
/// repository for the node's architecture.
#[test]
fn azure_linux_kernel_devel_from_the_base_repository() {
    let fx = fixture();
    rpm_repo(
        &fx,
        "/packages.microsoft.com/azurelinux/3.0/prod/base/aarch64/",
        &[(
            "kernel-devel",
            "6.6.92.2",
            "2.azl3",
            "aarch64",
            b"AZL-DEVEL",
        )],
        false,
        false,
    );
    let r = Resolver::new(builtin_chain_at(&fx), ResolverOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let azl = id("azurelinux/3.0/aarch64/6.6.92.2-2.azl3");
    let (_, files) = fetched_by(&fx, &r, &azl, out.path(), "azurelinux-base");
    assert_eq!(
        files[0].file_name().unwrap(),
        "kernel-devel-6.6.92.2-2.azl3.aarch64.rpm"
    );
    assert_eq!(std::fs::read(&files[0]).unwrap(), b"AZL-DEVEL");
}

/// A RHEL 9.4 kernel's `kernel-devel` and `kernel-headers`, as the CDN fixtures serve them.
const RHEL_9_4_PACKAGES: [(&str, &str, &str, &str, &[u8]); 2] = [
    (
        "kernel-devel",
        "5.14.0",
        "427.13.1.el9_4",
        "x86_64",
        b"RHEL-DEVEL",
    ),
    (
        "kernel-headers",
        "5.14.0",
        "427.13.1.el9_4",
        "x86_64",
        b"RHEL-HEADERS",
    ),
];

/// RHEL through Red Hat's CDN with an entitlement certificate, served over TLS from 127.0.0.1 by a
/// server that accepts only clients presenting a certificate its CA signed. Without the
/// entitlement a RHEL kernel is `unsupported: needs a Red Hat entitlement`; with it, the kernel is
/// valid and its `kernel-devel` and `kernel-headers` come from the minor's AppStream after its
/// BaseOS has neither; a certificate the CDN does not trust gets nothing, and nothing is written.
#[test]
fn rhel_headers_come_from_the_cdn_with_an_entitlement_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let fx = fixture_requiring_client_certificates(pki.path());
    let (cert, key) = certs::issue_client(pki.path(), "entitlement", true);
    let (stranger, stranger_key) = certs::issue_client(pki.path(), "stranger", false);
    rpm_repo(
        &fx,
        "/cdn.redhat.com/content/dist/rhel9/9.4/x86_64/appstream/os/",
        &RHEL_9_4_PACKAGES,
        false,
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    // Declared before the runner, which borrows what it is given for as long as it lives.
    let (ca, bad) = (pki.path().join("ca.crt"), dir.path().join("bad.key"));
    let kfleet = kfleet_on_builtin_chain::<&std::path::Path>(&fx, dir.path());
    let key_name = "rhel/9.4/x86_64/5.14.0-427.13.1.el9_4.x86_64";
    let out = tempfile::tempdir().unwrap();
    let fetch = [
        "headers",
        "fetch",
        "--out",
        out.path().to_str().unwrap(),
        key_name,
    ];
    let check_args = [
        "identity",
        "check",
        "--distribution",
        "rhel",
        "--distro-version",
        "9.4",
        "--architecture",
        "x86_64",
        "--kernel-version",
        "5.14.0-427.13.1.el9_4.x86_64",
    ];

    let check = kfleet(&[], &check_args);
    assert_eq!(check.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.starts_with("unsupported: needs a Red Hat entitlement"),
        "{stderr}"
    );
    assert!(!kfleet(&[], &fetch).status.success());

    let entitled = [
        ("KFLEET_RHEL_ENTITLEMENT_CERT", cert.as_path()),
        ("KFLEET_RHEL_ENTITLEMENT_KEY", key.as_path()),
        ("KFLEET_RHEL_CDN_CA", ca.as_path()),
    ];
    let check = kfleet(&entitled, &check_args);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let got = kfleet(&entitled, &fetch);
    let stderr = String::from_utf8_lossy(&got.stderr);
    assert!(got.status.success(), "{stderr}");
    let mut names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "kernel-devel-5.14.0-427.13.1.el9_4.x86_64.rpm",
            "kernel-headers-5.14.0-427.13.1.el9_4.x86_64.rpm"
        ]
    );
    assert_eq!(
        std::fs::read(
            out.path()
                .join("kernel-devel-5.14.0-427.13.1.el9_4.x86_64.rpm")
        )
        .unwrap(),
        b"RHEL-DEVEL"
    );
    let gets = fx.files.lock().unwrap().gets.clone();
    assert!(
        gets.contains_key(
            "/cdn.redhat.com/content/dist/rhel9/9.4/x86_64/baseos/os/repodata/repomd.xml"
        ),
        "{gets:?}"
    );

    // A redirect to another host is not followed: the certificate is presented to the CDN only.
    let elsewhere = fixture();
    fx.files.lock().unwrap().redirects.insert(
        "/cdn.redhat.com/content/dist/rhel9/9.5/x86_64/baseos/os/repodata/repomd.xml".into(),
        format!("{}/repomd.xml", elsewhere.base),
    );
    let redirected = tempfile::tempdir().unwrap();
    let got = kfleet(
        &entitled,
        &[
            "headers",
            "fetch",
            "--out",
            redirected.path().to_str().unwrap(),
            "rhel/9.5/x86_64/5.14.0-503.11.1.el9_5.x86_64",
        ],
    );
    assert!(!got.status.success());
    assert!(
        String::from_utf8_lossy(&got.stderr).contains("HTTP 302"),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(elsewhere.files.lock().unwrap().authorizations.is_empty());

    // A certificate the CDN's CA did not sign: the handshake fails, nothing is fetched.
    let elsewhere = tempfile::tempdir().unwrap();
    let refused = kfleet(
        &[
            ("KFLEET_RHEL_ENTITLEMENT_CERT", stranger.as_path()),
            ("KFLEET_RHEL_ENTITLEMENT_KEY", stranger_key.as_path()),
            ("KFLEET_RHEL_CDN_CA", ca.as_path()),
        ],
        &[
            "headers",
            "fetch",
            "--out",
            elsewhere.path().to_str().unwrap(),
            key_name,
        ],
    );
    assert!(!refused.status.success());
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);

    // A key that is not one: refused before any request, without quoting the file.
    std::fs::write(&bad, "not-a-key-secret-words").unwrap();
    let broken = kfleet(
        &[
            ("KFLEET_RHEL_ENTITLEMENT_CERT", cert.as_path()),
            ("KFLEET_RHEL_ENTITLEMENT_KEY", bad.as_path()),
        ],
        &check_args,
    );
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        !broken.status.success()
            && stderr.contains("rhel-entitlement credential's key")
            && !stderr.contains("secret-words"),
        "{stderr}"
    );
}

/// RHEL's real-time kernels through the CDN with the entitlement: RHEL 9.3 and later name them
/// `…x86_64+rt`, RHEL 8 `…rt7.307.el8_9…`; their `kernel-rt-devel` lives in the rt (or nfv)
/// repository, here a 9.4 z-stream kept by E4S after the minor's own rt repository no longer has
/// it, and BaseOS and AppStream are never asked for it.
#[test]
fn rhel_real_time_headers_come_from_the_cdn_rt_repositories() {
    let pki = tempfile::tempdir().unwrap();
    let fx = fixture_requiring_client_certificates(pki.path());
    let (cert, key) = certs::issue_client(pki.path(), "entitlement", true);
    rpm_repo(
        &fx,
        "/cdn.redhat.com/content/dist/rhel9/9.4/x86_64/rt/os/",
        &[(
            "kernel-rt-devel",
            "5.14.0",
            "427.13.1.el9_4",
            "x86_64",
            b"OLDER-Z-STREAM",
        )],
        false,
        false,
    );
    rpm_repo(
        &fx,
        "/cdn.redhat.com/content/e4s/rhel9/9.4/x86_64/rt/os/",
        &[(
            "kernel-rt-devel",
            "5.14.0",
            "427.96.1.el9_4",
            "x86_64",
            b"RHEL-RT-DEVEL",
        )],
        false,
        false,
    );
    rpm_repo(
        &fx,
        "/cdn.redhat.com/content/dist/rhel8/8.9/x86_64/rt/os/",
        &[(
            "kernel-rt-devel",
            "4.18.0",
            "513.5.1.rt7.307.el8_9",
            "x86_64",
            b"RHEL8-RT-DEVEL",
        )],
        false,
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.path().join("ca.crt");
    let kfleet = kfleet_on_builtin_chain::<&std::path::Path>(&fx, dir.path());
    let entitled = [
        ("KFLEET_RHEL_ENTITLEMENT_CERT", cert.as_path()),
        ("KFLEET_RHEL_ENTITLEMENT_KEY", key.as_path()),
        ("KFLEET_RHEL_CDN_CA", ca.as_path()),
    ];
    let fetched = |key_name: &str| {
        let out = tempfile::tempdir().unwrap();
        let got = kfleet(
            &entitled,
            &[
                "headers",
                "fetch",
                "--out",
                out.path().to_str().unwrap(),
                key_name,
            ],
        );
        let stderr = String::from_utf8_lossy(&got.stderr).into_owned();
        assert!(got.status.success(), "{key_name}: {stderr}");
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    };

    assert_eq!(
        fetched("rhel/9.4/x86_64/5.14.0-427.96.1.el9_4.x86_64+rt"),
        [(
            "kernel-rt-devel-5.14.0-427.96.1.el9_4.x86_64.rpm".to_string(),
            b"RHEL-RT-DEVEL".to_vec()
        )]
    );
    assert_eq!(
        fetched("rhel/8.9/x86_64/4.18.0-513.5.1.rt7.307.el8_9.x86_64"),
        [(
            "kernel-rt-devel-4.18.0-513.5.1.rt7.307.el8_9.x86_64.rpm".to_string(),
            b"RHEL8-RT-DEVEL".to_vec()
        )]
    );
    let gets = fx.files.lock().unwrap().gets.clone();
    assert!(
        gets.contains_key(
            "/cdn.redhat.com/content/dist/rhel9/9.4/x86_64/rt/os/repodata/repomd.xml"
        ) && gets
            .keys()
            .all(|path| !path.contains("/baseos/") && !path.contains("/appstream/")),
        "{gets:?}"
    );

    // Without the entitlement a real-time RHEL kernel is unsupported like any other.
    let check = kfleet(
        &[],
        &[
            "identity",
            "check",
            "--distribution",
            "rhel",
            "--distro-version",
            "9.4",
            "--architecture",
            "x86_64",
            "--kernel-version",
            "5.14.0-427.96.1.el9_4.x86_64+rt",
        ],
    );
    assert!(
        String::from_utf8_lossy(&check.stderr)
            .starts_with("unsupported: needs a Red Hat entitlement"),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Red Hat Subscription Management on 127.0.0.1, as candlepin answers: registration with an
/// activation key (no client certificate), then, only to a client presenting the consumer's
/// identity certificate, its certificates and its unregistration. `content` is the content
/// access certificate and key it hands out; activation key `broken` registers a system whose
/// certificates cannot be read. Every request is logged as `METHOD PATH CLIENT-CERT?`.
struct Rhsm {
    base: String,
    log: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

fn rhsm_fixture(pki: &std::path::Path, content: (String, String)) -> Rhsm {
    use axum::extract::{Extension, Path as UrlPath, Query};
    use axum::routing::{delete, get, post};
    let ca = certs::issue(pki, "server.key", "server.crt");
    let (id_cert, id_key) = certs::issue_client(pki, "consumer", true);
    let identity = (
        std::fs::read_to_string(id_cert).unwrap(),
        std::fs::read_to_string(id_key).unwrap(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("https://{}/subscription", listener.local_addr().unwrap());
    let acceptor = client_certificate_acceptor(pki, &ca, true);
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let exception = |status: StatusCode, message: &str| {
        (
            status,
            axum::Json(serde_json::json!({
                "displayMessage": message,
                "requestUuid": "c4347004-8792-41fe-a4d8-fccaa0d3898a",
            })),
        )
            .into_response()
    };
    let register = move |Query(q): Query<HashMap<String, String>>,
                         body: axum::Json<serde_json::Value>| {
        let identity = identity.clone();
        async move {
            let uuid = match q.get("activation_keys").map(String::as_str) {
                _ if q.get("owner").map(String::as_str) != Some("acme") => {
                    return exception(
                        StatusCode::NOT_FOUND,
                        "Owner with this key could not be found.",
                    );
                }
                _ if body["type"]["label"] != "system" => {
                    return exception(StatusCode::BAD_REQUEST, "Consumer type must be specified.");
                }
                Some("ci-key-1") => "3ae36a11-e6b8-4f27-92a7-468358d0c4f7",
                Some("broken") => "8c98ce41-9479-4453-bcc4-d52eb0d91af7",
                Some("stuck") => "5d1c0a77-2f4e-4c1a-9d55-0e6b1c2a3f40",
                _ => {
                    return exception(
                        StatusCode::BAD_REQUEST,
                        "None of the activation keys specified exist for this org.",
                    );
                }
            };
            axum::Json(serde_json::json!({
                "uuid": uuid,
                "name": body["name"],
                "type": {"label": "system", "manifest": false},
                "contentAccessMode": "org_environment",
                "idCert": {"key": identity.1, "cert": identity.0, "serial": {"id": 1, "serial": 1}},
            }))
            .into_response()
        }
    };
    let certificates = move |Extension(ClientCert(presented)): Extension<ClientCert>,
                             UrlPath(uuid): UrlPath<String>| {
        let content = content.clone();
        async move {
            if !presented {
                exception(StatusCode::UNAUTHORIZED, "Invalid credentials.")
            } else if uuid.starts_with("8c98") || uuid.starts_with("5d1c") {
                exception(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Runtime Error could not build the content access payload",
                )
            } else {
                axum::Json(serde_json::json!([{
                    "id": "8a8d01f5", "key": content.1, "cert": content.0,
                    "serial": {"id": 42, "serial": 42},
                }]))
                .into_response()
            }
        }
    };
    // The stuck system's first unregistration fails; a second one goes through.
    let refused_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let unregister = move |Extension(ClientCert(presented)): Extension<ClientCert>,
                           UrlPath(uuid): UrlPath<String>| async move {
        if !presented {
            StatusCode::UNAUTHORIZED.into_response()
        } else if uuid.starts_with("5d1c")
            && !refused_once.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            exception(
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is down for maintenance.",
            )
        } else {
            StatusCode::NO_CONTENT.into_response()
        }
    };
    let seen = log.clone();
    let app = Router::new()
        .route("/subscription/consumers", post(register))
        .route(
            "/subscription/consumers/{uuid}/certificates",
            get(certificates),
        )
        .route("/subscription/consumers/{uuid}", delete(unregister))
        .layer(axum::middleware::from_fn(
            move |Extension(ClientCert(presented)): Extension<ClientCert>,
                  req: Request,
                  next: axum::middleware::Next| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(format!(
                        "{} {} {presented}",
                        req.method(),
                        req.uri()
                    ));
                    next.run(req).await
                }
            },
        ));
    serve_tls(&rt, listener, acceptor, app);
    Rhsm { base, log, _rt: rt }
}

/// A build job with an activation key instead of an entitlement certificate: `kfleet rhel
/// register` registers a system, writes its content access certificate (which the CDN then
/// accepts for the kernel's headers) and says only where; `unregister` removes the system with
/// its own identity. A wrong key says what the service said and writes nothing; a system whose
/// certificate cannot be read is unregistered again at once. The key is never printed.
#[test]
fn rhel_activation_key_registers_a_system_for_the_cdn_and_unregisters_it() {
    let (cdn_pki, rhsm_pki) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fx = fixture_requiring_client_certificates(cdn_pki.path());
    let (cert, key) = certs::issue_client(cdn_pki.path(), "content-access", true);
    let content = (
        std::fs::read_to_string(cert).unwrap(),
        std::fs::read_to_string(key).unwrap(),
    );
    let rhsm = rhsm_fixture(rhsm_pki.path(), content);
    rpm_repo(
        &fx,
        "/cdn.redhat.com/content/dist/rhel9/9.4/x86_64/baseos/os/",
        &RHEL_9_4_PACKAGES,
        false,
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("rhel");
    let (rhsm_ca, cdn_ca) = (
        rhsm_pki.path().join("ca.crt"),
        cdn_pki.path().join("ca.crt"),
    );
    let entitlement = certs_dir.join("entitlement.pem");
    let key_file = certs_dir.join("entitlement-key.pem");
    // Declared before the runner, which borrows what it is given for as long as it lives.
    let kfleet = kfleet_on_builtin_chain::<&std::ffi::OsStr>(&fx, dir.path());
    let service = [
        ("KFLEET_RHEL_ORG", std::ffi::OsStr::new("acme")),
        ("KFLEET_RHSM_URL", rhsm.base.as_ref()),
        ("KFLEET_RHSM_CA", rhsm_ca.as_os_str()),
    ];
    let register = |activation_key: &'static str| {
        let mut env = service.to_vec();
        env.push(("KFLEET_RHEL_ACTIVATION_KEY", activation_key.as_ref()));
        kfleet(
            &env,
            &["rhel", "register", "--out", certs_dir.to_str().unwrap()],
        )
    };

    // A service that cannot be reached: the error names it, never the key its URL carries.
    let unreachable = {
        let mut env = service.to_vec();
        env[1] = (
            "KFLEET_RHSM_URL",
            "https://127.0.0.1:9/subscription".as_ref(),
        );
        env.push(("KFLEET_RHEL_ACTIVATION_KEY", "ci-key-1".as_ref()));
        kfleet(
            &env,
            &["rhel", "register", "--out", certs_dir.to_str().unwrap()],
        )
    };
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(!unreachable.status.success());
    assert!(
        stderr.contains("127.0.0.1:9") && !stderr.contains("ci-key-1"),
        "{stderr}"
    );

    let refused = register("wrong-key");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("HTTP 400: None of the activation keys specified exist for this org."),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-key"), "{stderr}");
    assert!(!certs_dir.join("entitlement.pem").exists());

    let half = register("broken");
    let stderr = String::from_utf8_lossy(&half.stderr);
    assert!(!half.status.success());
    assert!(
        stderr.contains("HTTP 500") && stderr.contains("unregistered again"),
        "{stderr}"
    );
    assert!(
        rhsm.log.lock().unwrap().iter().any(
            |l| l == "DELETE /subscription/consumers/8c98ce41-9479-4453-bcc4-d52eb0d91af7 true"
        ),
        "{:?}",
        rhsm.log.lock().unwrap()
    );
    assert_eq!(std::fs::read_dir(&certs_dir).unwrap().count(), 0);

    // The system cannot be unregistered either: the message names it and where to remove it.
    let stuck = register("stuck");
    let stderr = String::from_utf8_lossy(&stuck.stderr);
    assert!(!stuck.status.success());
    assert!(
        stderr.contains("system 5d1c0a77-2f4e-4c1a-9d55-0e6b1c2a3f40 could not be unregistered")
            && stderr.contains("HTTP 503: The service is down for maintenance.")
            && stderr.contains("remove it in the Hybrid Cloud Console"),
        "{stderr}"
    );
    // Its identity stays, so unregistering is tried again (the build job's last step does).
    assert!(!entitlement.exists() && certs_dir.join("consumer.json").exists());
    let retried = kfleet(
        &[("KFLEET_RHSM_CA", rhsm_ca.as_os_str())],
        &["rhel", "unregister", certs_dir.to_str().unwrap()],
    );
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    assert_eq!(std::fs::read_dir(&certs_dir).unwrap().count(), 0);

    let registered = register("ci-key-1");
    let stdout = String::from_utf8_lossy(&registered.stdout).into_owned();
    assert!(
        registered.status.success(),
        "{}",
        String::from_utf8_lossy(&registered.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "KFLEET_RHEL_ENTITLEMENT_CERT={}",
            entitlement.display()
        )) && !stdout.contains("PRIVATE KEY")
            && !stdout.contains("ci-key-1"),
        "{stdout}"
    );
    use std::os::unix::fs::PermissionsExt;
    for file in ["entitlement.pem", "entitlement-key.pem", "consumer.pem"] {
        let mode = std::fs::metadata(certs_dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is private");
    }
    {
        let log = rhsm.log.lock().unwrap();
        assert!(
            log.iter()
                .any(|l| l.starts_with("POST /subscription/consumers?") && l.ends_with(" false"))
        );
        assert!(log.contains(
            &"GET /subscription/consumers/3ae36a11-e6b8-4f27-92a7-468358d0c4f7/certificates true"
                .to_string()
        ));
    }

    // The CDN takes the written certificate.
    let out = tempfile::tempdir().unwrap();
    let got = kfleet(
        &[
            ("KFLEET_RHEL_ENTITLEMENT_CERT", entitlement.as_os_str()),
            ("KFLEET_RHEL_ENTITLEMENT_KEY", key_file.as_os_str()),
            ("KFLEET_RHEL_CDN_CA", cdn_ca.as_os_str()),
        ],
        &[
            "headers",
            "fetch",
            "--out",
            out.path().to_str().unwrap(),
            "rhel/9.4/x86_64/5.14.0-427.13.1.el9_4.x86_64",
        ],
    );
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(
        std::fs::read(
            out.path()
                .join("kernel-devel-5.14.0-427.13.1.el9_4.x86_64.rpm")
        )
        .unwrap(),
        b"RHEL-DEVEL"
    );

    let gone = kfleet(
        &[("KFLEET_RHSM_CA", rhsm_ca.as_os_str())],
        &["rhel", "unregister", certs_dir.to_str().unwrap()],
    );
    assert!(
        gone.status.success(),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
    assert!(rhsm.log.lock().unwrap().contains(
        &"DELETE /subscription/consumers/3ae36a11-e6b8-4f27-92a7-468358d0c4f7 true".to_string()
    ));
    assert_eq!(std::fs::read_dir(&certs_dir).unwrap().count(), 0);
}

struct Scc {
    base: String,
    log: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

/// SUSE Customer Center's registration API on 127.0.0.1, in the shapes SUSEConnect reads
/// (`announce_success.json`, `activate_success.json`, a service's `repoindex`): `GOOD-CODE`
/// registers system 4242, whose Basesystem service lists the two repositories of `fx` with
/// their tokens; `HALF-CODE` registers system 4343, whose module activation fails;
/// `STUCK-CODE` system 4444, whose activation fails and whose first deregistration fails too;
/// `EMPTY-CODE` system 4545, whose services list no repository. Every
/// request is logged as `METHOD PATH AUTHORIZATION-KIND`.
fn scc_fixture(fx: &Fixture) -> Scc {
    use axum::extract::Path as UrlPath;
    use axum::http::HeaderMap;
    use axum::routing::{delete, get, post};
    const LOGINS: [(&str, &str, u64); 4] = [
        ("SCC_4242", "pw-secret-4242", 4242),
        ("SCC_4343", "pw-secret-4343", 4343),
        ("SCC_4444", "pw-secret-4444", 4444),
        ("SCC_4545", "pw-secret-4545", 4545),
    ];
    let system_of = |headers: &HeaderMap| {
        use base64::Engine;
        let value = headers.get("authorization")?.to_str().ok()?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.strip_prefix("Basic ")?)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        LOGINS
            .iter()
            .find(|(login, password, _)| text == format!("{login}:{password}"))
            .map(|l| l.2)
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let error = |status: StatusCode, message: &str| {
        (
            status,
            axum::Json(
                serde_json::json!({"type": "error", "error": message, "localized_error": message}),
            ),
        )
            .into_response()
    };
    let announce = move |headers: HeaderMap, body: axum::Json<serde_json::Value>| async move {
        let code = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let (login, password, id) = match code.as_str() {
            _ if body["hostname"] != "kfleet-build" => {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "hostname missing");
            }
            "Token token=GOOD-CODE" => LOGINS[0],
            "Token token=HALF-CODE" => LOGINS[1],
            "Token token=STUCK-CODE" => LOGINS[2],
            "Token token=EMPTY-CODE" => LOGINS[3],
            _ => return error(StatusCode::UNAUTHORIZED, "Unknown Registration Code."),
        };
        axum::Json(serde_json::json!({"id": id, "login": login, "password": password}))
            .into_response()
    };
    let services = base.clone();
    let activate = move |headers: HeaderMap, body: axum::Json<serde_json::Value>| {
        let services = services.clone();
        async move {
            let Some(system) = system_of(&headers) else {
                return error(StatusCode::UNAUTHORIZED, "Invalid system credentials");
            };
            let (service, name) = match (body["identifier"].as_str(), body["token"].as_str()) {
                (Some("SLES"), Some("GOOD-CODE" | "HALF-CODE" | "STUCK-CODE")) => {
                    (1887, "SUSE_Linux_Enterprise_Server_15_SP7_x86_64")
                }
                // A subscription whose services list nothing for this release.
                (_, _) if system == 4545 => (1999, "Empty_Service"),
                (Some("sle-module-basesystem"), None) if system == 4242 => {
                    (2502, "Basesystem_Module_15_SP7_x86_64")
                }
                (Some("sle-module-basesystem"), None) => {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "The product you are attempting to activate (Basesystem Module 15 SP7 x86_64) is not available on your system's base product.",
                    );
                }
                _ => {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "No valid subscription found",
                    );
                }
            };
            if body["version"] != "15.7" || body["arch"] != "x86_64" {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "No product found");
            }
            axum::Json(serde_json::json!({
                "id": service,
                "name": name,
                "url": format!("{services}/access/services/{service}?credentials={name}"),
                "obsoleted_service_name": "",
                "product": {"identifier": body["identifier"], "version": "15.7", "arch": "x86_64"},
            }))
            .into_response()
        }
    };
    let repos = fx.base.clone();
    let repoindex = move |headers: HeaderMap, UrlPath(service): UrlPath<u32>| {
        let repos = repos.clone();
        async move {
            if system_of(&headers).is_none() {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            let body = match service {
                1999 => r#"<?xml version="1.0" encoding="UTF-8"?><repoindex ttl="86400"/>"#.to_string(),
                2502 => format!(
                    r#"<?xml version="1.0" encoding="UTF-8"?>
<repoindex ttl="86400">
<repo url="{repos}/updates.suse.com/SUSE/Updates/SLE-Module-Basesystem/15-SP7/x86_64/update?upd-T0KEN_a1&amp;exp=2030" alias="Basesystem_Module_15_SP7_x86_64:SLE-Module-Basesystem15-SP7-Updates" name="SLE-Module-Basesystem15-SP7-Updates" autorefresh="true" enabled="true" distro_target="sle-15-x86_64"/>
<repo url="{repos}/updates.suse.com/SUSE/Products/SLE-Module-Basesystem/15-SP7/x86_64/product?pool-T0KEN_b2" alias="Basesystem_Module_15_SP7_x86_64:SLE-Module-Basesystem15-SP7-Pool" name="SLE-Module-Basesystem15-SP7-Pool" autorefresh="false" enabled="true" distro_target="sle-15-x86_64"/>
</repoindex>"#
                ),
                _ => r#"<?xml version="1.0" encoding="UTF-8"?>
<repoindex ttl="86400">
<repo url="https://updates.suse.com/SUSE/Products/SLE-Product-SLES/15-SP7/x86_64/product?sles-T0KEN" alias="SLES15-SP7-Pool" name="SLES15-SP7-Pool" autorefresh="false" enabled="true"/>
</repoindex>"#
                    .to_string(),
            };
            (StatusCode::OK, [("content-type", "application/xml")], body).into_response()
        }
    };
    // System 4444's first deregistration fails; a second one goes through.
    let refused_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deregister = move |headers: HeaderMap| {
        let refused_once = refused_once.clone();
        async move {
            match system_of(&headers) {
                Some(4444) if !refused_once.swap(true, std::sync::atomic::Ordering::SeqCst) => {
                    error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
                }
                Some(_) => StatusCode::NO_CONTENT.into_response(),
                None => StatusCode::UNAUTHORIZED.into_response(),
            }
        }
    };
    let seen = log.clone();
    let app = Router::new()
        .route("/connect/subscriptions/systems", post(announce))
        .route("/connect/systems/products", post(activate))
        .route(
            "/access/services/{service}/repo/repoindex.xml",
            get(repoindex),
        )
        .route("/connect/systems", delete(deregister))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                let seen = seen.clone();
                async move {
                    let kind = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split(' ').next())
                        .unwrap_or("none")
                        .to_string();
                    seen.lock().unwrap().push(format!(
                        "{} {} {kind}",
                        req.method(),
                        req.uri().path()
                    ));
                    next.run(req).await
                }
            },
        ));
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Scc { base, log, _rt: rt }
}

/// SLES 15 SP7 with a registration code: `kfleet suse register` announces a system at SUSE
/// Customer Center, activates SLES and the Basesystem module, and writes the repositories the
/// module's service lists with their tokens; the header chain then reads updates.suse.com's
/// Basesystem repository with its token on every request (without it: 403), and a repository
/// the registration lacks is not asked. A wrong code says what the service said and writes
/// nothing; a system whose module cannot be activated is deregistered again at once. The code,
/// the system's password and the tokens are never printed.
#[test]
fn suse_registration_code_opens_the_registered_repositories_for_sles_15_sp7() {
    let fx = fixture();
    let update = "/updates.suse.com/SUSE/Updates/SLE-Module-Basesystem/15-SP7/x86_64/update/";
    rpm_repo(
        &fx,
        update,
        &[
            (
                "kernel-default-devel",
                "6.4.0",
                "150700.53.3.1",
                "x86_64",
                b"SP7-DEFAULT-DEVEL",
            ),
            (
                "kernel-devel",
                "6.4.0",
                "150700.53.3.1",
                "noarch",
                b"SP7-SOURCE-TREE",
            ),
        ],
        false,
        false,
    );
    fx.files.lock().unwrap().tokens = vec![
        (update.into(), "upd-T0KEN_a1&exp=2030".into()),
        (
            "/updates.suse.com/SUSE/Products/SLE-Module-Basesystem/15-SP7/x86_64/product/".into(),
            "pool-T0KEN_b2".into(),
        ),
    ];
    let scc = scc_fixture(&fx);
    let dir = tempfile::tempdir().unwrap();
    let reg_dir = dir.path().join("suse");
    let registration = reg_dir.join("registration.json");
    let bad = dir.path().join("bad.json");
    // Declared before the runner, which borrows what it is given for as long as it lives.
    let kfleet = kfleet_on_builtin_chain::<&str>(&fx, dir.path());
    let register = |code: &'static str| {
        kfleet(
            &[
                ("KFLEET_SCC_URL", scc.base.as_str()),
                ("KFLEET_SUSE_REGCODE", code),
            ],
            &[
                "suse",
                "register",
                "--release",
                "15.7",
                "--out",
                reg_dir.to_str().unwrap(),
            ],
        )
    };
    let secrets = [
        "GOOD-CODE",
        "HALF-CODE",
        "STUCK-CODE",
        "EMPTY-CODE",
        "WRONG-CODE",
        "pw-secret",
        "T0KEN",
    ];
    let shown = |out: &std::process::Output| {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        text
    };
    let key = "sles/15.7/x86_64/6.4.0-150700.53.3-default";
    let out = tempfile::tempdir().unwrap();
    let fetch = [
        "headers",
        "fetch",
        "--out",
        out.path().to_str().unwrap(),
        key,
    ];

    let without = kfleet(&[], &fetch);
    assert!(
        shown(&without).contains("needs a SUSE registration"),
        "{}",
        shown(&without)
    );
    // A dispatcher whose build workflow holds the registration code takes the kernel as any
    // other, though it cannot read the headers itself.
    let check = [
        "identity",
        "check",
        "--distribution",
        "sles",
        "--distro-version",
        "15.7",
        "--architecture",
        "x86_64",
        "--kernel-version",
        "6.4.0-150700.53.3-default",
    ];
    assert!(!kfleet(&[], &check).status.success());
    let declared = kfleet(&[("KFLEET_BUILD_CREDENTIALS", "suse-registration")], &check);
    assert!(declared.status.success(), "{}", shown(&declared));
    let unknown = kfleet(&[("KFLEET_BUILD_CREDENTIALS", "suse-registraton")], &check);
    assert!(
        shown(&unknown).contains("KFLEET_BUILD_CREDENTIALS: unknown credential 'suse-registraton'"),
        "{}",
        shown(&unknown)
    );

    // No code, or one that is not a code: said before any request, without quoting it.
    let missing = kfleet(
        &[("KFLEET_SCC_URL", scc.base.as_str())],
        &[
            "suse",
            "register",
            "--release",
            "15.7",
            "--out",
            reg_dir.to_str().unwrap(),
        ],
    );
    assert!(
        shown(&missing).contains("no registration code: set KFLEET_SUSE_REGCODE"),
        "{}",
        shown(&missing)
    );
    let mangled = register("WRONG-CODE with spaces");
    assert!(
        shown(&mangled).contains("KFLEET_SUSE_REGCODE: not a valid registration code"),
        "{}",
        shown(&mangled)
    );
    assert!(scc.log.lock().unwrap().is_empty());

    let refused = register("WRONG-CODE");
    assert!(!refused.status.success());
    assert!(
        shown(&refused).contains("HTTP 401: Unknown Registration Code."),
        "{}",
        shown(&refused)
    );
    assert!(!registration.exists());

    let half = register("HALF-CODE");
    let text = shown(&half);
    assert!(!half.status.success());
    assert!(
        text.contains("HTTP 422: The product you are attempting to activate")
            && text.contains("system 4343 deregistered again"),
        "{text}"
    );
    assert!(
        scc.log
            .lock()
            .unwrap()
            .contains(&"DELETE /connect/systems Basic".to_string())
    );
    assert!(!registration.exists());
    // Services that list no repository: said, and the system deregistered again.
    let empty = register("EMPTY-CODE");
    let text = shown(&empty);
    assert!(!empty.status.success());
    assert!(
        text.contains("list no repository") && text.contains("system 4545 deregistered again"),
        "{text}"
    );
    assert!(!registration.exists());
    // The system cannot be deregistered either: the message names it and where to remove it.
    let stuck = register("STUCK-CODE");
    let text = shown(&stuck);
    assert!(!stuck.status.success());
    assert!(
        text.contains("system 4444 could not be deregistered")
            && text.contains("HTTP 500: Internal Server Error")
            && text.contains("remove it in SUSE Customer Center"),
        "{text}"
    );
    // The system stays on file, so deregistering is tried again (the build job's last step).
    assert!(registration.exists());
    let retried = kfleet(&[], &["suse", "deregister", reg_dir.to_str().unwrap()]);
    assert!(
        shown(&retried).contains("deregistered system 4444"),
        "{}",
        shown(&retried)
    );
    assert!(!registration.exists());
    scc.log.lock().unwrap().clear();

    let registered = register("GOOD-CODE");
    let text = shown(&registered);
    assert!(registered.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "KFLEET_SUSE_REGISTRATION={}",
            registration.display()
        )) && text.contains("SLES/15.7/x86_64, sle-module-basesystem/15.7/x86_64: 3 repositories"),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&registration)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the registration is private");
    assert_eq!(
        *scc.log.lock().unwrap(),
        [
            "POST /connect/subscriptions/systems Token",
            "POST /connect/systems/products Basic",
            "GET /access/services/1887/repo/repoindex.xml Basic",
            "POST /connect/systems/products Basic",
            "GET /access/services/2502/repo/repoindex.xml Basic",
        ]
    );

    let env = [("KFLEET_SUSE_REGISTRATION", registration.to_str().unwrap())];
    let got = kfleet(&env, &fetch);
    let text = shown(&got);
    assert!(got.status.success(), "{text}");
    let mut names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "kernel-default-devel-6.4.0-150700.53.3.1.x86_64.rpm",
            "kernel-devel-6.4.0-150700.53.3.1.noarch.rpm"
        ]
    );
    assert_eq!(
        std::fs::read(
            out.path()
                .join("kernel-devel-6.4.0-150700.53.3.1.noarch.rpm")
        )
        .unwrap(),
        b"SP7-SOURCE-TREE"
    );
    {
        let f = fx.files.lock().unwrap();
        assert!(f.gets.contains_key(&format!("{update}repodata/repomd.xml")));
        assert!(
            f.gets.contains_key(&format!(
                "{update}kernel-default-devel-6.4.0-150700.53.3.1.x86_64.rpm"
            )) || f
                .gets
                .keys()
                .any(|k| k.ends_with("kernel-default-devel-6.4.0-150700.53.3.1.x86_64.rpm"))
        );
        // No login goes to the repositories: the token opens them.
        assert!(f.authorizations.iter().all(|(_, a)| a.is_none()));
        // The LTSS repository the registration lacks is never asked.
        assert!(!f.gets.keys().any(|k| k.contains("LTSS")), "{:?}", f.gets);
    }
    // A kernel the update repository does not have: the pool is asked with its own token, the
    // LTSS repository the registration lacks is not.
    let resolved = kfleet(
        &env,
        &[
            "headers",
            "resolve",
            "sles/15.7/x86_64/6.4.0-150700.51.1-default",
        ],
    );
    assert!(!resolved.status.success());
    assert!(
        fx.files.lock().unwrap().gets.keys().any(|k| k.starts_with(
            "/updates.suse.com/SUSE/Products/SLE-Module-Basesystem/15-SP7/x86_64/product/repodata/repomd.xml"
        ))
    );
    assert!(
        shown(&resolved)
            .contains("no repository of the suse-registration credential holds this URL"),
        "{}",
        shown(&resolved)
    );
    // A registration file that is not one: refused, without quoting it.
    std::fs::write(&bad, "{\"system\": \"pw-secret-9\"}").unwrap();
    let broken = kfleet(
        &[("KFLEET_SUSE_REGISTRATION", bad.to_str().unwrap())],
        &fetch,
    );
    assert!(!broken.status.success());
    assert!(shown(&broken).contains("suse-registration credential is not usable"));

    let gone = kfleet(&[], &["suse", "deregister", reg_dir.to_str().unwrap()]);
    let text = shown(&gone);
    assert!(gone.status.success(), "{text}");
    assert!(text.contains("deregistered system 4242"), "{text}");
    assert_eq!(
        scc.log.lock().unwrap().last().map(String::as_str),
        Some("DELETE /connect/systems Basic")
    );
    assert!(!registration.exists());
}

/// An RPM in the real layout (lead, signature header padded to 8 bytes, header, xz cpio `newc`
/// payload) holding `files`, as `rpmbuild` lays one out; the headers hold no tags kfleet reads.
fn rpm_package(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut cpio = Vec::new();
    let entries = files
        .iter()
        .map(|(n, d)| (n.as_str(), 0o100644u32, d.as_slice()))
        .chain([("TRAILER!!!", 0, &[][..])]);
    for (name, mode, data) in entries {
        let fields = [
            1,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        cpio.extend_from_slice(b"070701");
        for f in fields {
            cpio.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        cpio.extend_from_slice(name.as_bytes());
        cpio.push(0);
        cpio.resize(cpio.len().next_multiple_of(4), 0);
        cpio.extend_from_slice(data);
        cpio.resize(cpio.len().next_multiple_of(4), 0);
    }
    let mut rpm = vec![0xed, 0xab, 0xee, 0xdb];
    rpm.resize(96, 0);
    for data_len in [3u32, 0] {
        rpm.extend_from_slice(&[0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0]);
        rpm.extend_from_slice(&0u32.to_be_bytes());
        rpm.extend_from_slice(&data_len.to_be_bytes());
        rpm.resize(rpm.len() + data_len as usize, 0);
        rpm.resize(rpm.len().next_multiple_of(8), 0);
    }
    rpm.extend_from_slice(&xz(&cpio));
    rpm
}

/// A kernel's ABI from an RPM headers package (`kernel-devel`'s payload, read by kfleet itself):
/// the built tree under `usr/src/kernels/RELEASE/` gives the CRCs and the vermagic, which names
/// the kernel's release; a package of another kernel is refused, not believed.
#[test]
fn a_kernels_abi_is_read_from_its_rpm_headers_package() {
    let fx = fixture();
    let release = "5.14.0-427.13.1.el9_4.x86_64";
    let tree = format!("./usr/src/kernels/{release}");
    let files = |uts: &str| {
        vec![
            (
                format!("{tree}/Module.symvers"),
                b"0x9060323f\tmodule_layout\tvmlinux\tEXPORT_SYMBOL\t\n0x1b2c3d4e\t_printk\tvmlinux\tEXPORT_SYMBOL\t\n".to_vec(),
            ),
            (
                format!("{tree}/.config"),
                b"CONFIG_SMP=y\nCONFIG_PREEMPT_VOLUNTARY=y\nCONFIG_MODULE_UNLOAD=y\nCONFIG_MODVERSIONS=y\n".to_vec(),
            ),
            (
                format!("{tree}/include/generated/utsrelease.h"),
                format!("#define UTS_RELEASE \"{uts}\"\n").into_bytes(),
            ),
        ]
    };
    let devel = rpm_package(&files(release));
    let headers = rpm_package(&[("./usr/include/linux/version.h".into(), b"x".to_vec())]);
    rpm_repo(
        &fx,
        "/repo.almalinux.org/almalinux/9.4/AppStream/x86_64/os/",
        &[
            ("kernel-devel", "5.14.0", "427.13.1.el9_4", "x86_64", &devel),
            (
                "kernel-headers",
                "5.14.0",
                "427.13.1.el9_4",
                "x86_64",
                &headers,
            ),
        ],
        false,
        false,
    );
    let r = Resolver::new(builtin_chain_at(&fx), ResolverOptions::default()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let el = id(&format!("almalinux/9.4/x86_64/{release}"));
    let abi = fx._rt.block_on(r.kernel_abi(&el, cache.path())).unwrap();
    assert_eq!(abi.symvers.get("_printk"), Some(0x1b2c_3d4e));
    assert_eq!(abi.symvers.len(), 2);
    assert!(
        abi.vermagic.starts_with(&format!("{release} SMP")),
        "{}",
        abi.vermagic
    );
    assert!(abi.vermagic.contains("modversions"), "{}", abi.vermagic);

    // A kernel-devel whose tree is another kernel's.
    let other = "5.14.0-427.18.1.el9_4.x86_64";
    let lying = rpm_package(&files("5.14.0-427.13.1.el9_4.x86_64"));
    rpm_repo(
        &fx,
        "/repo.almalinux.org/almalinux/9.4/BaseOS/x86_64/os/",
        &[
            ("kernel-devel", "5.14.0", "427.18.1.el9_4", "x86_64", &lying),
            (
                "kernel-headers",
                "5.14.0",
                "427.18.1.el9_4",
                "x86_64",
                &headers,
            ),
        ],
        false,
        false,
    );
    let err = fx
        ._rt
        .block_on(r.kernel_abi(&id(&format!("almalinux/9.4/x86_64/{other}")), cache.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&format!("not {other}")), "{err}");
}

/// File names of fetched packages, sorted.
fn file_names(files: &[std::path::PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// openSUSE Leap 15.6 through the built-in chain, served from 127.0.0.1 in download.opensuse.org's
/// layout: the kernel's `kernel-default-devel` and the noarch source tree `kernel-devel` from the
/// `sle` update repository, at the uname's release with SUSE's rebuild counter added (the
/// highest counter wins; 150600.23.7 is another kernel). Upcoming kernels on the line are named
/// back as `uname -r` strings, without the counter.
#[test]
fn opensuse_leap_kernel_default_devel_and_its_source_tree() {
    let fx = fixture();
    rpm_repo(
        &fx,
        "/download.opensuse.org/update/leap/15.6/sle/",
        &[
            (
                "kernel-default-devel",
                "6.4.0",
                "150600.23.7.1",
                "x86_64",
                b"OTHER-KERNEL",
            ),
            (
                "kernel-default-devel",
                "6.4.0",
                "150600.23.73.1",
                "x86_64",
                b"FIRST-BUILD",
            ),
            (
                "kernel-default-devel",
                "6.4.0",
                "150600.23.73.2",
                "x86_64",
                b"DEFAULT-DEVEL",
            ),
            (
                "kernel-devel",
                "6.4.0",
                "150600.23.73.1",
                "noarch",
                b"SOURCE-TREE",
            ),
            (
                "kernel-default-devel",
                "6.4.0",
                "150600.23.80.1",
                "x86_64",
                b"NEXT",
            ),
        ],
        false,
        false,
    );
    let r = Resolver::new(builtin_chain_at(&fx), ResolverOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let leap = id("opensuse-leap/15.6/x86_64/6.4.0-150600.23.73-default");
    let (_, files) = fetched_by(&fx, &r, &leap, out.path(), "opensuse-leap");
    assert_eq!(
        file_names(&files),
        [
            "kernel-default-devel-6.4.0-150600.23.73.2.x86_64.rpm",
            "kernel-devel-6.4.0-150600.23.73.1.noarch.rpm"
        ]
    );
    let devel = files
        .iter()
        .find(|f| f.to_string_lossy().contains("default-devel"))
        .unwrap();
    assert_eq!(std::fs::read(devel).unwrap(), b"DEFAULT-DEVEL");

    let line = kfleet::headers::line_of(&leap);
    assert_eq!(line, "leap/15.6/x86_64 kernel-default");
    let (found, _) = fx._rt.block_on(r.newer_on_line(&leap)).unwrap();
    let kernels: Vec<&str> = found
        .iter()
        .map(|u| u.identity.kernel_version.as_str())
        .collect();
    assert_eq!(kernels, ["6.4.0-150600.23.80-default"]);
}

/// SLES 16.0's azure kernel on aarch64 from openSUSE Leap 16.0's repository (the same binaries):
/// `kernel-azure-devel` with the azure flavour's own source tree `kernel-devel-azure`, not the
/// default tree of another release; the `sle` update repository Leap 16 does not have is a 404.
#[test]
fn sles_16_azure_kernel_from_the_leap_repository_of_its_architecture() {
    let fx = fixture();
    rpm_repo(
        &fx,
        "/download.opensuse.org/distribution/leap/16.0/repo/oss/aarch64/",
        &[
            (
                "kernel-azure-devel",
                "6.12.0",
                "160000.9.1",
                "aarch64",
                b"AZURE-DEVEL",
            ),
            (
                "kernel-devel",
                "6.12.0",
                "160000.26.1",
                "noarch",
                b"DEFAULT-TREE",
            ),
            (
                "kernel-devel-azure",
                "6.12.0",
                "160000.9.1",
                "noarch",
                b"AZURE-TREE",
            ),
        ],
        false,
        false,
    );
    let r = Resolver::new(builtin_chain_at(&fx), ResolverOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let sles = id("sles/16.0/aarch64/6.12.0-160000.9-azure");
    let (res, files) = fetched_by(&fx, &r, &sles, out.path(), "sles-via-opensuse-leap");
    assert!(
        res.attempts
            .iter()
            .any(|a| a.url.contains("/update/leap/16.0/sle/") && a.outcome == "HTTP 404"),
        "{}",
        attempted(&res)
    );
    assert_eq!(
        file_names(&files),
        [
            "kernel-azure-devel-6.12.0-160000.9.1.aarch64.rpm",
            "kernel-devel-azure-6.12.0-160000.9.1.noarch.rpm"
        ]
    );
}

/// Tumbleweed: the node's snapshot from openSUSE's history of snapshots (the current repository
/// is not asked); upcoming kernels of a rolling release are not predicted, and say why.
#[test]
fn tumbleweed_from_the_history_of_its_snapshot() {
    let fx = fixture();
    rpm_repo(
        &fx,
        "/download.opensuse.org/history/20250727/tumbleweed/repo/oss/",
        &[
            (
                "kernel-default-devel",
                "6.15.8",
                "1.1",
                "x86_64",
                b"TW-DEVEL",
            ),
            ("kernel-devel", "6.15.8", "1.1", "noarch", b"TW-TREE"),
        ],
        true,
        false,
    );
    let r = Resolver::new(builtin_chain_at(&fx), ResolverOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let tw = id("tumbleweed/20250727/x86_64/6.15.8-1-default");
    let (res, files) = fetched_by(&fx, &r, &tw, out.path(), "tumbleweed-history");
    assert!(
        res.attempts
            .iter()
            .all(|a| !a.url.contains("/tumbleweed/repo/oss/") || a.url.contains("/history/"))
    );
    assert_eq!(
        file_names(&files),
        [
            "kernel-default-devel-6.15.8-1.1.x86_64.rpm",
            "kernel-devel-6.15.8-1.1.noarch.rpm"
        ]
    );
    let err = fx
        ._rt
        .block_on(r.newer_on_line(&tw))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("tumbleweed/*/x86_64 kernel-default: a rolling release"),
        "{err}"
    );
    // `upcoming` on a fleet of Tumbleweed nodes of two snapshots: one line, a note, exit 0 (a
    // rolling line is read, not unreadable).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fleet.csv"),
        "hostname,os,version,arch,kernel\nn1,opensuse-tumbleweed,20250727,x86_64,6.15.8-1-default\nn2,opensuse-tumbleweed,20250801,x86_64,6.15.8-1-default\n",
    )
    .unwrap();
    let out = Command::cargo_bin("kfleet")
        .unwrap()
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("KFLEET_STATE_DIR", dir.path().join("state"))
        .args(["upcoming", "-i", "fleet.csv", "--format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["lines"], 1, "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert!(
        report["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("tumbleweed/*/x86_64 kernel-default: a rolling release"),
        "{report}"
    );
}

/// Fetches `id`'s headers into `out`, which `source` must have resolved.
fn fetched_by(
    fx: &Fixture,
    r: &Resolver,
    id: &KernelIdentity,
    out: &std::path::Path,
    source: &str,
) -> (kfleet::headers::Resolution, Vec<std::path::PathBuf>) {
    let (res, files) = fx._rt.block_on(r.fetch(id, out)).unwrap();
    assert_eq!(
        res.resolved_by.as_deref(),
        Some(source),
        "{}",
        attempted(&res)
    );
    (res, files)
}

/// A Debian release past Debian's LTS: its later kernels are in Freexian's Extended LTS archive
/// (free to read), which the built-in chain asks after archive.debian.org and before snapshot.
#[test]
fn debian_past_lts_resolves_from_the_extended_lts_archive() {
    let fx = fixture();
    let elts = "/deb.freexian.com/extended-lts";
    let pool = "pool/main/l/linux";
    let packages: [(&str, &str, &[u8], &str); 3] = [
        (
            "linux-headers-4.19.0-28-amd64",
            "linux-headers-4.19.0-28-amd64_4.19.316-1~deb10u1_amd64.deb",
            b"ELTS-HDR",
            "linux-headers-4.19.0-28-common (= 4.19.316-1~deb10u1), linux-kbuild-4.19 (>= 4.19.316-1~deb10u1)",
        ),
        (
            "linux-headers-4.19.0-28-common",
            "linux-headers-4.19.0-28-common_4.19.316-1~deb10u1_all.deb",
            b"ELTS-COMMON",
            "",
        ),
        (
            "linux-kbuild-4.19",
            "linux-kbuild-4.19_4.19.316-1~deb10u1_amd64.deb",
            b"ELTS-KBUILD",
            "libc6 (>= 2.14)",
        ),
    ];
    let mut index = Vec::new();
    for (name, file, body, depends) in packages {
        fx.put(&format!("{elts}/{pool}/{file}"), body.to_vec());
        index.push(format!(
            "Package: {name}\nSource: linux\nVersion: 4.19.316-1~deb10u1\nArchitecture: amd64\nDepends: {depends}\nFilename: {pool}/{file}\nSize: {}\nSHA256: {}\nDescription: headers\n",
            body.len(),
            sha256(body)
        ));
    }
    fx.put(
        &format!("{elts}/dists/buster/main/binary-amd64/Packages.xz"),
        xz(index.join("\n").as_bytes()),
    );
    let r = Resolver::new(builtin_chain_at(&fx), ResolverOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let kernel = id("debian/10/x86_64/4.19.0-28-amd64");
    let (res, files) = fetched_by(&fx, &r, &kernel, out.path(), "debian-elts");
    let tried: Vec<&str> = res.attempts.iter().map(|a| a.source.as_str()).collect();
    assert!(
        tried.contains(&"debian-archive") && !tried.contains(&"debian-snapshot"),
        "{}",
        attempted(&res)
    );
    assert_eq!(files.len(), 3);
    assert!(
        files
            .iter()
            .any(|f| std::fs::read(f).unwrap() == b"ELTS-KBUILD")
    );
}

/// A fixture Debian suite `bookworm-updates` holding `linux-headers-6.1.0-18-amd64` (with its
/// Packages.xz), signed as the archive would be unless a test puts its own `InRelease`.
fn debian_suite(fx: &Fixture) -> Vec<u8> {
    let deb = b"DEB-HEADERS".to_vec();
    fx.put(
        "/debian/pool/main/l/linux/linux-headers-6.1.0-18-amd64_6.1.76-1_amd64.deb",
        deb.clone(),
    );
    let packages = stanza(
        "linux-headers-6.1.0-18-amd64",
        "pool/main/l/linux/linux-headers-6.1.0-18-amd64_6.1.76-1_amd64.deb",
        &deb,
        "",
    );
    let index = xz(packages.as_bytes());
    fx.put(
        "/debian/dists/bookworm-updates/main/binary-amd64/Packages.xz",
        index.clone(),
    );
    index
}

const BOOKWORM: &str = "debian/12/x86_64/6.1.0-18-amd64";

fn resolve_debian(fx: &Fixture) -> kfleet::headers::Resolution {
    fx._rt
        .block_on(resolver(chain(fx, ""), 2000).resolve(&id(BOOKWORM)))
        .unwrap()
}

/// The fixture suite resolved, which must be by the Debian mirror, and what was tried.
fn resolved_by_the_mirror(fx: &Fixture) -> (kfleet::headers::Resolution, String) {
    let r = resolve_debian(fx);
    let tried = attempted(&r);
    assert_eq!(r.resolved_by.as_deref(), Some("debian-mirror"), "{tried}");
    (r, tried)
}

#[test]
fn an_apt_suite_is_read_through_its_signed_inrelease() {
    let fx = fixture();
    debian_suite(&fx);
    let (r, tried) = resolved_by_the_mirror(&fx);
    assert!(
        tried.contains("dists/bookworm-updates/InRelease -> ok, signed by kfleet test archive"),
        "{tried}"
    );
    let by = signed_index(&r.packages[0]);
    assert!(
        by.starts_with("bookworm-updates's InRelease, signed by kfleet test archive"),
        "{by}"
    );
}

/// The fixture suite with `in_release` served: nothing resolves; what was tried.
fn refused_with(fx: &Fixture, in_release: Vec<u8>) -> String {
    fx.put("/debian/dists/bookworm-updates/InRelease", in_release);
    let r = resolve_debian(fx);
    let tried = attempted(&r);
    assert_eq!(r.resolved_by, None, "{tried}");
    tried
}

#[test]
fn an_inrelease_signed_by_another_key_is_refused_and_names_the_key() {
    let fx = fixture();
    let index = debian_suite(&fx);
    let release = archive_signing::release(&[("main/binary-amd64/Packages.xz".into(), index)]);
    let tried = refused_with(
        &fx,
        archive_signing::clearsign_with("other-archive.sec.asc", &release),
    );
    assert!(
        tried.contains("InRelease refused: signed by key 07D27B5B5337D0F4FCBF6F340C5FA0279DEDF0A5, which is not in keyring"),
        "{tried}"
    );
    assert!(
        !tried.contains("Packages.xz"),
        "no index of an untrusted suite is read: {tried}"
    );
}

#[test]
fn an_index_that_is_not_the_one_the_release_lists_is_refused() {
    let fx = fixture();
    debian_suite(&fx);
    let release =
        archive_signing::release(&[("main/binary-amd64/Packages.xz".into(), b"other".to_vec())]);
    let tried = refused_with(&fx, archive_signing::clearsign(&release));
    assert!(
        tried
            .contains("Packages.xz -> refused: its SHA256 is not the one the signed Release lists"),
        "{tried}"
    );
}

#[test]
fn a_release_past_its_valid_until_is_refused_as_stale() {
    let fx = fixture();
    let index = debian_suite(&fx);
    let release = archive_signing::release(&[("main/binary-amd64/Packages.xz".into(), index)])
        .replace(
            "Valid-Until: Fri, 31 Dec 2100 00:00:00 UTC",
            "Valid-Until: Sat, 01 Aug 2026 00:00:00 UTC",
        );
    let tried = refused_with(&fx, archive_signing::clearsign(&release));
    assert!(
        tried.contains("InRelease refused: it was valid until Sat, 01 Aug 2026 00:00:00 UTC"),
        "{tried}"
    );
}

#[test]
fn a_suite_with_release_and_release_gpg_is_read_too() {
    let fx = fixture();
    let index = debian_suite(&fx);
    let release = archive_signing::release(&[("main/binary-amd64/Packages.xz".into(), index)]);
    fx.put("/debian/dists/bookworm-updates/Release", release.clone());
    fx.put(
        "/debian/dists/bookworm-updates/Release.gpg",
        archive_signing::detach_sign(release.as_bytes()),
    );
    let (_, tried) = resolved_by_the_mirror(&fx);
    assert!(
        tried.contains("bookworm-updates/InRelease -> HTTP 404"),
        "{tried}"
    );
    assert!(
        tried.contains("bookworm-updates/Release.gpg -> ok, signed by kfleet test archive"),
        "{tried}"
    );

    // Release altered after signing: refused.
    fx.put(
        "/debian/dists/bookworm-updates/Release",
        format!("{release} 00 1 main/x\n"),
    );
    let r = resolve_debian(&fx);
    assert_eq!(r.resolved_by, None);
    assert!(
        attempted(&r).contains("Release.gpg refused: "),
        "{}",
        attempted(&r)
    );
}

#[test]
fn a_source_without_its_keyring_is_not_tried_and_one_opted_out_is_marked_unverified() {
    let fx = fixture();
    debian_suite(&fx);
    let text = chain_text(&fx, "").replace(
        &archive_signing::keyring_path().display().to_string(),
        "/nonexistent/debian-archive-keyring.gpg",
    );
    let r = fx
        ._rt
        .block_on(resolver(Chain::parse("t", &text).unwrap(), 2000).resolve(&id(BOOKWORM)))
        .unwrap();
    assert_eq!(r.resolved_by, None);
    let tried = attempted(&r);
    assert!(
        tried.contains("debian-mirror  -> not tried: no keyring to check source debian-mirror with: /nonexistent/debian-archive-keyring.gpg (no such file)"),
        "{tried}"
    );

    let text = unsigned_chain_text(&fx, "").replace(
        "name = \"debian-mirror\"\nkind = \"apt-repo\"\n",
        "name = \"debian-mirror\"\nkind = \"apt-repo\"\nunverified = true\n",
    );
    let r = fx
        ._rt
        .block_on(resolver(Chain::parse("t", &text).unwrap(), 2000).resolve(&id(BOOKWORM)))
        .unwrap();
    assert_eq!(r.resolved_by.as_deref(), Some("debian-mirror"));
    assert_eq!(
        r.packages[0].vouch,
        Some(kfleet::headers::trust::Vouch::Unverified)
    );
    assert!(!attempted(&r).contains("InRelease"), "{}", attempted(&r));
}

fn fixture_rpm(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/openpgp")
            .join(name),
    )
    .unwrap()
}

/// kojipkgs serves Koji's unsigned build (or one signed by a key the source does not trust);
/// the chain refuses it when it is downloaded, nothing is kept, and Koji's hub then gives the
/// signed package, whose signature and payload digest verify.
#[test]
fn an_rpm_its_signature_does_not_vouch_for_is_refused_and_the_chain_moves_on() {
    for (served, reason) in [
        ("kernel-devel-unsigned.rpm", "carries no OpenPGP signature"),
        ("kernel-devel-other.rpm", "not in keyring"),
    ] {
        let fx = fixture();
        rpm_repo(&fx, "/updates/40/x86_64/", &[], false, false);
        rpm_repo(&fx, "/releases/40/x86_64/os/", &[], false, false);
        fx.put(
            "/packages/kernel/6.8.9/300.fc40/x86_64/kernel-devel-6.8.9-300.fc40.x86_64.rpm",
            fixture_rpm(served),
        );
        fx.files.lock().unwrap().koji.insert(
            "kernel-6.8.9-300.fc40".into(),
            (2451234, vec![("kernel-devel".into(), "x86_64".into())]),
        );
        // Koji keeps the build as built, unsigned, and a copy per key it was signed with.
        fx.put(
            "/kojifiles/packages/kernel/6.8.9/300.fc40/x86_64/kernel-devel-6.8.9-300.fc40.x86_64.rpm",
            fixture_rpm("kernel-devel-unsigned.rpm"),
        );
        fx.put(
            "/kojifiles/packages/kernel/6.8.9/300.fc40/data/signed/ef527078/x86_64/kernel-devel-6.8.9-300.fc40.x86_64.rpm",
            fixture_rpm("kernel-devel-signed.rpm"),
        );
        let out = tempfile::tempdir().unwrap();
        let (res, files) = fx
            ._rt
            .block_on(resolver(chain(&fx, ""), 2000).fetch(&id(FEDORA), out.path()))
            .unwrap();
        assert_eq!(
            res.resolved_by.as_deref(),
            Some("fedora-koji"),
            "{}",
            attempted(&res)
        );
        let tried = attempted(&res);
        assert!(
            tried.contains("fedora-kojipkgs") && tried.contains("kernel-devel-6.8.9-300.fc40.x86_64.rpm refused: its signature does not vouch for it") && tried.contains(reason),
            "{tried}"
        );
        assert!(
            res.packages[0]
                .url
                .ends_with("/data/signed/ef527078/x86_64/kernel-devel-6.8.9-300.fc40.x86_64.rpm"),
            "{tried}"
        );
        assert_eq!(files.len(), 1);
        assert_eq!(
            std::fs::read(&files[0]).unwrap(),
            fixture_rpm("kernel-devel-signed.rpm")
        );
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            1,
            "nothing else kept"
        );
    }

    // Nowhere else to go: the fetch fails and says why.
    let fx = fixture();
    fx.put(
        "/packages/kernel/6.8.9/300.fc40/x86_64/kernel-devel-6.8.9-300.fc40.x86_64.rpm",
        fixture_rpm("kernel-devel-unsigned.rpm"),
    );
    let out = tempfile::tempdir().unwrap();
    let e = fx
        ._rt
        .block_on(resolver(chain(&fx, ""), 2000).fetch(&id(FEDORA), out.path()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unresolvable") && e.contains("carries no OpenPGP signature"),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

/// Through the binary: `headers resolve` says what vouches for each package, and `headers fetch`
/// from a source the operator opted out warns that nothing checked it.
#[test]
fn the_binary_names_what_vouches_for_each_package_and_warns_when_nothing_does() {
    let fx = fixture();
    debian_suite(&fx);
    let dir = tempfile::tempdir().unwrap();
    let sources = dir.path().join("sources.toml");
    std::fs::write(&sources, chain_text(&fx, "")).unwrap();
    let run = |sources: &std::path::Path, args: &[&str]| {
        Command::cargo_bin("kfleet")
            .unwrap()
            .env("KFLEET_STATE_DIR", dir.path().join("state"))
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .args(args)
            .arg("--sources")
            .arg(sources)
            .args(["--cache-ttl", "0s"])
            .output()
            .unwrap()
    };
    let out = run(&sources, &["headers", "resolve", BOOKWORM]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "vouched for by: checksum in bookworm-updates's InRelease, signed by kfleet test archive <archive@kfleet.test> (179F15D00B276F8CDABC94001CDAD09CEF527078)"
        ),
        "{stdout}"
    );

    // The offline plan says what will check each source, before anything is fetched.
    let out = run(&sources, &["headers", "resolve", BOOKWORM, "--offline"]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains(&format!(
            "checked by: {}",
            archive_signing::keyring_path().display()
        )) && plan.contains("dists/bookworm-updates/InRelease"),
        "{plan}"
    );
    let missing = dir.path().join("missing.toml");
    std::fs::write(
        &missing,
        chain_text(&fx, "").replace(
            &archive_signing::keyring_path().display().to_string(),
            "/nonexistent/keyring.gpg",
        ),
    )
    .unwrap();
    let out = run(&missing, &["headers", "resolve", BOOKWORM, "--offline"]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("cannot be tried: no keyring to check source debian-mirror with: /nonexistent/keyring.gpg (no such file)"),
        "{plan}"
    );

    let unverified = dir.path().join("unverified.toml");
    std::fs::write(
        &unverified,
        unsigned_chain_text(&fx, "").replace(
            "name = \"debian-mirror\"\nkind = \"apt-repo\"\n",
            "name = \"debian-mirror\"\nkind = \"apt-repo\"\nunverified = true\n",
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("headers");
    let out = run(
        &unverified,
        &[
            "headers",
            "fetch",
            BOOKWORM,
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("source debian-mirror is used UNVERIFIED (unverified = true)")
            && stderr.contains("linux-headers-6.1.0-18-amd64_6.1.76-1_amd64.deb is NOT VERIFIED"),
        "{stderr}"
    );
    assert!(
        out_dir
            .join("linux-headers-6.1.0-18-amd64_6.1.76-1_amd64.deb")
            .exists()
    );
    let out = run(&unverified, &["headers", "resolve", BOOKWORM, "--offline"]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("checked by: NOTHING: unverified = true"),
        "{plan}"
    );
}

/// Debian's real bookworm-security suite as this machine's apt fetched it on 2026-05-20: its
/// signed InRelease and the exact `Packages` it lists, served on 127.0.0.1.
fn real_debian_security(fx: &Fixture) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openpgp");
    let in_release = std::fs::read(dir.join("debian-bookworm-security.InRelease")).unwrap();
    let mut packages = Vec::new();
    lzma_rs::xz_decompress(
        &mut std::io::Cursor::new(
            std::fs::read(dir.join("debian-bookworm-security.Packages.xz")).unwrap(),
        ),
        &mut packages,
    )
    .unwrap();
    fx.put(
        "/debian-security/dists/bookworm-security/InRelease",
        in_release,
    );
    fx.put(
        "/debian-security/dists/bookworm-security/main/binary-amd64/Packages",
        packages,
    );
}

fn real_security_chain(fx: &Fixture) -> Chain {
    let text = format!(
        "[[sources]]\nfamily = \"debian\"\nname = \"debian-security\"\nkind = \"apt-repo\"\nsigned_by = \"debian-archive-keyring.gpg\"\nurls = [\"{}/debian-security/\"]\nsuites = [\"{{codename}}-security\"]\ncomponents = [\"main\"]\n",
        fx.base
    );
    Chain::parse("real debian-security", &text).unwrap()
}

/// The whole APT chain on real data: Debian's signature on the real InRelease (checked against
/// the built-in Debian keyring on the day it was valid), the SHA256 it lists for the real
/// `Packages`, and the headers package with its common and kbuild packages and their SHA256 from
/// that index. On today's date the same metadata is refused as stale.
#[test]
fn a_real_debian_security_suite_resolves_through_its_signature_and_hash_chain() {
    let fx = fixture();
    real_debian_security(&fx);
    let may_21 = std::time::UNIX_EPOCH + Duration::from_secs(1_779_321_600);
    let resolver = |at: Option<std::time::SystemTime>| {
        Resolver::new(
            real_security_chain(&fx),
            ResolverOptions {
                source_timeout: Duration::from_secs(5),
                verify_at: at,
                ..ResolverOptions::default()
            },
        )
        .unwrap()
    };
    let key = id("debian/12/x86_64/6.1.0-48-amd64");
    let r = fx
        ._rt
        .block_on(resolver(Some(may_21)).resolve(&key))
        .unwrap();
    let tried = attempted(&r);
    assert_eq!(r.resolved_by.as_deref(), Some("debian-security"), "{tried}");
    assert!(
        // The first of its signatures that verifies: bullseye's security key, still valid.
        tried.contains("bookworm-security/InRelease -> ok, signed by Debian Security Archive Automatic Signing Key (11/bullseye) <ftpmaster@debian.org> (ED541312A33F1128F10B1C6C54404762BBB6E853)"),
        "{tried}"
    );
    let mut names: Vec<&str> = r.packages.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "linux-headers-6.1.0-48-amd64_6.1.172-1_amd64.deb",
            "linux-headers-6.1.0-48-common_6.1.172-1_all.deb",
            "linux-kbuild-6.1_6.1.172-1_amd64.deb",
        ]
    );
    let headers = r
        .packages
        .iter()
        .find(|p| p.name.starts_with("linux-headers-6.1.0-48-amd64"))
        .unwrap();
    assert_eq!(
        headers.url,
        format!(
            "{}/debian-security/pool/updates/main/l/linux/linux-headers-6.1.0-48-amd64_6.1.172-1_amd64.deb",
            fx.base
        )
    );
    assert_eq!(
        headers.checksum.as_ref().unwrap().hex,
        "1f0a29646568d71a40063864a69f5a81f78f8e29b901a25ff8f32e39a1633d68"
    );
    assert!(
        signed_index(headers).starts_with(
            "bookworm-security's InRelease, signed by Debian Security Archive Automatic Signing Key"
        ),
        "{:?}",
        headers.vouch
    );

    // Today: past its Valid-Until (2026-05-27), the same signed metadata is a replay.
    let r = fx._rt.block_on(resolver(None).resolve(&key)).unwrap();
    assert_eq!(r.resolved_by, None);
    assert!(
        attempted(&r)
            .contains("InRelease refused: it was valid until Wed, 27 May 2026 16:28:12 UTC"),
        "{}",
        attempted(&r)
    );
}
