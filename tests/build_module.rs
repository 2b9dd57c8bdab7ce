//! The build step end to end: `assets/build-module.sh` builds `assets/example-module` into a real
//! `.ko` against Debian's kernel headers for this machine's architecture, packaged under the
//! naming template with its sha256, and kfleet reads the asset name back to the same identity.
//!
//! The tests need no root and install nothing: they fetch the header packages themselves with
//! `apt-get download` (the flavour package, its common package and kbuild, at the versions the
//! `linux-headers-ARCH` metapackage names) into `KFLEET_DEBS` (default `~/.cache/kfleet-debs`),
//! unpack them with `dpkg-deb`, and read the module's vermagic from its `.modinfo` section.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

#[path = "support/archive_signing.rs"]
#[allow(dead_code)]
mod archive_signing;
#[path = "support/registry.rs"]
#[allow(dead_code)]
mod registry;

use kfleet::artifacts::{AssetTemplate, DEFAULT_ASSET_TEMPLATE};
use kfleet::identity::KernelIdentity;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const MODULE: &str = "kdriver";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn stdout(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn deb_arch() -> String {
    stdout(Command::new("dpkg").arg("--print-architecture"))
}

fn control_field(deb: &Path, field: &str) -> String {
    stdout(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field))
}

/// `name (= version)` entries of a Depends field as `name=version` (or `name`).
fn pinned(depends: &str, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    depends
        .split(',')
        .filter_map(|d| {
            let d = d.split('|').next()?.trim();
            let (name, rest) = d.split_once(' ').unwrap_or((d, ""));
            wanted(name).then(|| {
                match rest
                    .trim()
                    .strip_prefix("(=")
                    .and_then(|v| v.strip_suffix(')'))
                {
                    Some(v) => format!("{name}={}", v.trim()),
                    None => name.to_string(),
                }
            })
        })
        .collect()
}

/// The real header packages for this machine's architecture: downloaded once (under a file lock,
/// tests run in parallel) into `KFLEET_DEBS` or `~/.cache/kfleet-debs`.
fn header_debs() -> &'static [PathBuf] {
    static DEBS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    DEBS.get_or_init(|| {
        let dir = std::env::var_os("KFLEET_DEBS")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kfleet-debs"))
            })
            .expect("HOME or KFLEET_DEBS is set");
        std::fs::create_dir_all(&dir).unwrap();
        let lock = std::fs::File::create(dir.join(".lock")).unwrap();
        lock.lock().unwrap();
        let list = |dir: &Path| -> Vec<PathBuf> {
            let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "deb"))
                .collect();
            debs.sort();
            debs
        };
        if list(&dir).len() != 3 {
            download_header_debs(&dir);
        }
        let debs = list(&dir);
        assert_eq!(
            debs.len(),
            3,
            "headers, common and kbuild in {}: {debs:?}",
            dir.display()
        );
        debs
    })
}

fn download_header_debs(dir: &Path) {
    for old in std::fs::read_dir(dir).unwrap() {
        let path = old.unwrap().path();
        if path.extension().is_some_and(|x| x == "deb") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let meta = format!("linux-headers-{}", deb_arch());
    let shown = run(Command::new("apt-cache").args(["show", "--no-all-versions", &meta]));
    let text = String::from_utf8_lossy(&shown.stdout);
    let depends = text
        .lines()
        .find_map(|l| l.strip_prefix("Depends:"))
        .unwrap_or_else(|| {
            panic!(
                "apt-cache knows no {meta} ({}); the package lists are empty: run apt-get update once",
                String::from_utf8_lossy(&shown.stderr).trim()
            )
        });
    let flavour = pinned(depends, |n| n.starts_with("linux-headers-"));
    assert_eq!(
        flavour.len(),
        1,
        "{meta} depends on one headers package: {depends}"
    );
    let download = |packages: &[String]| {
        let out = run(Command::new("apt-get")
            .args(["download", "-qq"])
            .args(packages)
            .current_dir(dir));
        assert!(
            out.status.success(),
            "apt-get download {packages:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    download(&flavour);
    let name = flavour[0].split('=').next().unwrap();
    let deb = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{name}_")))
        })
        .expect("the downloaded headers package");
    let deps = pinned(&control_field(&deb, "Depends"), |n| {
        (n.starts_with("linux-headers-") && n.ends_with("-common"))
            || n.starts_with("linux-kbuild-")
    });
    download(&deps);
}

/// The kernel the header packages are for, and its identity on this Debian release.
fn headers_identity() -> KernelIdentity {
    let flavour = header_debs()
        .iter()
        .map(|d| control_field(d, "Package"))
        .find(|p| p.starts_with("linux-headers-") && !p.ends_with("-common"))
        .expect("a linux-headers-VERSION-FLAVOUR package");
    let kernel = flavour.trim_start_matches("linux-headers-");
    let os = std::fs::read_to_string("/etc/os-release").expect("/etc/os-release");
    let version = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .map(|v| v.trim_matches('"').to_string())
        .expect("VERSION_ID in /etc/os-release");
    let arch = match deb_arch().as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        other => panic!("no kfleet architecture for Debian's {other}"),
    };
    let key = format!("debian/{version}/{arch}/{kernel}");
    KernelIdentity::from_key(&key)
        .unwrap_or_else(|e| panic!("the headers' identity {key} is not valid: {e}"))
}

/// The packages unpacked into a kernel build tree, as a distribution installs them (links and
/// the flavour Makefile's include pointed into the tree), for `--kernel-dir`; or
/// `KFLEET_KERNEL_DIR` when it names one.
fn kernel_tree() -> (PathBuf, KernelIdentity) {
    static TREE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let id = headers_identity();
    if let Some(dir) = std::env::var_os("KFLEET_KERNEL_DIR") {
        return (PathBuf::from(dir), id);
    }
    let (_, kdir) = TREE.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        for deb in header_debs() {
            stdout(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root.path()));
        }
        let base = root.path().to_string_lossy().into_owned();
        for entry in walk(root.path()) {
            if let Ok(target) = std::fs::read_link(&entry)
                && target.is_absolute()
            {
                std::fs::remove_file(&entry).unwrap();
                std::os::unix::fs::symlink(format!("{base}{}", target.display()), &entry).unwrap();
            }
        }
        let kdir = root
            .path()
            .join(format!("usr/src/linux-headers-{}", id.kernel_version));
        let makefile = kdir.join("Makefile");
        let text = std::fs::read_to_string(&makefile).unwrap();
        std::fs::write(
            &makefile,
            text.replace("include /usr/src/", &format!("include {base}/usr/src/")),
        )
        .unwrap();
        (root, kdir)
    });
    (kdir.clone(), id)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// The vermagic of the module packaged in `asset`, read from its `.modinfo`.
fn packaged_vermagic(asset: &Path) -> String {
    let unpacked = tempfile::tempdir().unwrap();
    stdout(
        Command::new("tar")
            .arg("-xJf")
            .arg(asset)
            .arg("-C")
            .arg(unpacked.path()),
    );
    let ko = std::fs::read(unpacked.path().join(format!("{MODULE}.ko"))).unwrap();
    kfleet::kmod::vermagic(&ko)
        .unwrap()
        .expect("the module has a vermagic")
}

/// What build-module.sh builds against.
enum Headers<'a> {
    /// An installed kernel build tree (`--kernel-dir`).
    Tree(&'a Path),
    /// Fetched packages, unpacked without a container (`--headers DIR --extract`).
    Extract(&'a Path),
}

fn build_module(kdir: &Path, id: &KernelIdentity, kernel_version: &str, out: &Path) -> Output {
    run(&mut build_command(
        Headers::Tree(kdir),
        id,
        kernel_version,
        out,
    ))
}

fn build_command(
    headers: Headers,
    id: &KernelIdentity,
    kernel_version: &str,
    out: &Path,
) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("assets/build-module.sh"));
    match headers {
        Headers::Tree(dir) => cmd.arg("--kernel-dir").arg(dir),
        Headers::Extract(dir) => cmd.arg("--headers").arg(dir).arg("--extract"),
    };
    cmd.arg("--module")
        .arg(root().join("assets/example-module"))
        .arg("--out")
        .arg(out)
        .env("DISTRIBUTION", id.distribution.as_str())
        .env("DISTRO_VERSION", &id.distro_version)
        .env("ARCHITECTURE", id.architecture.as_str())
        .env("KERNEL_VERSION", kernel_version)
        .env("DRIVER_VERSION", "1.4.2")
        .env("MODULE", MODULE)
        .env_remove("ASSET_TEMPLATE")
        .env_remove("ASSET_NAME")
        .env_remove("SIGN_KEY")
        .env_remove("SIGN_CERT");
    cmd
}

#[test]
fn example_module_builds_into_a_packaged_ko_for_a_kernel_tree() {
    let (kdir, id) = kernel_tree();
    let out = tempfile::tempdir().unwrap();
    let result = build_module(&kdir, &id, &id.kernel_version, out.path());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "build-module.sh failed:\n{stderr}");

    // The asset carries the name kfleet's template gives, and kfleet reads it back.
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, MODULE).unwrap();
    let name = template.render(&id, "1.4.2");
    let asset = out.path().join(&name);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert_eq!(stdout.lines().last(), Some(asset.to_str().unwrap()));
    let parsed = template
        .parse(&name)
        .expect("the name follows the template");
    assert_eq!(parsed.driver_version.as_deref(), Some("1.4.2"));
    assert_eq!(parsed.checked.identity(), Some(&id));

    // The digest file matches the bytes, in sha256sum's format.
    let bytes = std::fs::read(&asset).unwrap();
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let sums = std::fs::read_to_string(out.path().join(format!("{name}.sha256"))).unwrap();
    assert_eq!(sums, format!("{digest}  {name}\n"));
    let mut files: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [name.clone(), format!("{name}.sha256")],
        "no partial files left"
    );

    // Inside: a real module whose vermagic starts with the headers' kernel version.
    let unpacked = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xJf")
        .arg(&asset)
        .arg("-C")
        .arg(unpacked.path()));
    let vermagic = packaged_vermagic(&asset);
    assert_eq!(
        vermagic.split_whitespace().next(),
        Some(id.kernel_version.as_str()),
        "vermagic: {vermagic}"
    );
    let manifest = std::fs::read_to_string(unpacked.path().join("MANIFEST")).unwrap();
    assert!(
        manifest.contains(&format!("identity={}\n", id.key())),
        "{manifest}"
    );
    assert!(
        manifest.contains(&format!("vermagic[{MODULE}.ko]={}", vermagic.trim())),
        "{manifest}"
    );
}

#[test]
fn headers_for_another_kernel_are_refused_and_nothing_is_written() {
    let (kdir, id) = kernel_tree();
    let out = tempfile::tempdir().unwrap();
    let result = build_module(&kdir, &id, "6.1.0-999-amd64", out.path());
    assert_eq!(result.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains(&format!(
            "is for kernel {}, not KERNEL_VERSION=6.1.0-999-amd64",
            id.kernel_version
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn metacharacters_in_the_identity_never_reach_make() {
    let (kdir, id) = kernel_tree();
    let out = tempfile::tempdir().unwrap();
    let result = build_module(&kdir, &id, "6.1.0-1-amd64;touch${IFS}pwned", out.path());
    assert_eq!(result.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("KERNEL_VERSION='6.1.0-1-amd64;touch${IFS}pwned' has characters outside"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

/// The workflow names the asset with `kfleet identity asset-name` (so a kfleet.toml template
/// applies) and hands the name to the script, which packages under exactly that name.
#[test]
fn the_asset_name_kfleet_gives_is_the_one_packaged() {
    let (kdir, id) = kernel_tree();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "asset_template = \"{module}_{driver_version}_{distribution}{distro_version}_{architecture}_{kernel_version}.tgz\"\n",
    )
    .unwrap();
    let named = run(Command::new(env!("CARGO_BIN_EXE_kfleet"))
        .arg("--config")
        .arg(config.path())
        .args(["identity", "asset-name", "--distribution"])
        .arg(id.distribution.as_str())
        .args(["--distro-version", &id.distro_version])
        .args(["--architecture", id.architecture.as_str()])
        .args(["--kernel-version", &id.kernel_version])
        .args(["--driver-version", "1.4.2", "--module", MODULE]));
    assert!(
        named.status.success(),
        "{}",
        String::from_utf8_lossy(&named.stderr)
    );
    let name = String::from_utf8(named.stdout).unwrap().trim().to_string();
    assert_eq!(
        name,
        format!(
            "{MODULE}_1.4.2_debian{}_{}_{}.tgz",
            id.distro_version,
            id.architecture.as_str(),
            id.kernel_version
        )
    );
    let out = tempfile::tempdir().unwrap();
    let result = run(
        build_command(Headers::Tree(&kdir), &id, &id.kernel_version, out.path())
            .env("ASSET_NAME", &name),
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(out.path().join(&name).is_file());
    assert!(out.path().join(format!("{name}.sha256")).is_file());
}

/// An APT repository on 127.0.0.1 serving Debian's real header packages (the flavour package,
/// its common package and kbuild) under a `Packages.xz` made from their control fields, and a
/// header sources file whose one source is that repository.
struct Mirror {
    /// The Debian kernel the packages are for.
    id: KernelIdentity,
    /// Where it is served.
    base: String,
    sources: tempfile::NamedTempFile,
    _rt: tokio::runtime::Runtime,
}

fn debian_mirror() -> Mirror {
    debian_mirror_with(&[], Vec::new())
}

/// [`debian_mirror`] that also serves `extra` packages (their control fields indexed the same
/// way) and `files` (path, bytes) as they are.
fn debian_mirror_with(extra: &[PathBuf], files_too: Vec<(String, Vec<u8>)>) -> Mirror {
    use std::io::Write as _;
    let debs: Vec<PathBuf> = header_debs().iter().chain(extra).cloned().collect();
    let installed = headers_identity();
    let deb_arch = installed.architecture.debian_name();
    let id = installed;

    // A Debian mirror: dists/CODENAME/main/binary-ARCH/Packages.xz and the pool.
    let mut files: std::collections::HashMap<String, Vec<u8>> = Default::default();
    let mut index = String::new();
    for deb in &debs {
        let bytes = std::fs::read(deb).unwrap();
        let name = deb.file_name().unwrap().to_string_lossy().into_owned();
        let pool = format!("pool/main/l/linux/{name}");
        let digest: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        index.push_str(&format!(
            "Package: {}\nVersion: {}\nArchitecture: {}\nDepends: {}\nFilename: {pool}\nSize: {}\nSHA256: {digest}\n\n",
            control_field(deb, "Package"),
            control_field(deb, "Version"),
            control_field(deb, "Architecture"),
            control_field(deb, "Depends"),
            bytes.len()
        ));
        files.insert(format!("/debian/{pool}"), bytes);
    }
    let mut xz = Vec::new();
    lzma_rs::xz_compress(&mut std::io::Cursor::new(index.as_bytes()), &mut xz).unwrap();
    let codename = kfleet::headers::KernelParts::of(&id).codename;
    let index_path = format!("main/binary-{deb_arch}/Packages.xz");
    // Signed as the archive signs its suites, with the tests' archive key.
    files.insert(
        format!("/debian/dists/{codename}/InRelease"),
        archive_signing::clearsign(&archive_signing::release(&[(
            index_path.clone(),
            xz.clone(),
        )])),
    );
    files.insert(format!("/debian/dists/{codename}/{index_path}"), xz);
    files.extend(files_too);
    let files = std::sync::Arc::new(files);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let files = files.clone();
        async move {
            match files.get(uri.path()) {
                Some(body) => (axum::http::StatusCode::OK, body.clone()),
                None => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
            }
        }
    });
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut sources = tempfile::NamedTempFile::new().unwrap();
    write!(
        sources,
        "[[sources]]\nfamily = \"debian\"\nname = \"local-mirror\"\nkind = \"apt-repo\"\nsigned_by = \"{}\"\nurls = [\"{base}/debian/\"]\nsuites = [\"{{codename}}\"]\ncomponents = [\"main\"]\n",
        archive_signing::keyring_path().display()
    )
    .unwrap();
    Mirror {
        id,
        base,
        sources,
        _rt: rt,
    }
}

/// The shipped build path with real packages and no container: `kfleet headers fetch` resolves
/// the kernel's headers from an APT repository on 127.0.0.1 that serves Debian's real `.deb`
/// files, downloads and verifies them; then `build-module.sh --extract` unpacks them and builds
/// the example module into a real `.ko`.
#[test]
fn fetched_real_debian_packages_build_the_module_without_a_container() {
    let mirror = debian_mirror();
    let id = &mirror.id;
    let work = tempfile::tempdir().unwrap();
    let headers = work.path().join("headers");
    let fetched = run(Command::new(env!("CARGO_BIN_EXE_kfleet"))
        .args(["headers", "fetch", &id.key(), "--sources"])
        .arg(mirror.sources.path())
        .arg("--out")
        .arg(&headers)
        .env("KFLEET_STATE_DIR", work.path().join("state")));
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let mut got: Vec<String> = std::fs::read_dir(&headers)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    let want: Vec<String> = header_debs()
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, want, "the headers package and the two it depends on");

    let out = work.path().join("out");
    let mut built = build_command(Headers::Extract(&headers), id, &id.kernel_version, &out);
    let result = run(&mut built);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, MODULE).unwrap();
    let asset = out.join(template.render(id, "1.4.2"));
    let vermagic = packaged_vermagic(&asset);
    assert_eq!(
        vermagic.split_whitespace().next(),
        Some(id.kernel_version.as_str())
    );
}

/// Debian's 7.x headers name their own tree by absolute path too (`KBUILD_OUTPUT=/usr/src/
/// linux-headers-RELEASE` before the `include` of the common tree): `--extract` points both
/// into its private root, or kbuild looks for (or makes) the tree under the host's /usr/src.
/// The real packages, with the arch package's Makefile in that form.
#[test]
fn extract_builds_headers_whose_makefile_names_its_own_tree() {
    let id = headers_identity();
    let headers = tempfile::tempdir().unwrap();
    let tree = format!("usr/src/linux-headers-{}", id.kernel_version);
    for deb in header_debs() {
        let target = headers.path().join(deb.file_name().unwrap());
        if !control_field(deb, "Package").ends_with(&id.kernel_version) {
            std::fs::copy(deb, &target).unwrap();
            continue;
        }
        let raw = tempfile::tempdir().unwrap();
        stdout(Command::new("dpkg-deb").arg("-R").arg(deb).arg(raw.path()));
        let makefile = raw.path().join(&tree).join("Makefile");
        let text = std::fs::read_to_string(&makefile).unwrap();
        assert!(text.starts_with("include /usr/src/"), "{text}");
        std::fs::write(&makefile, format!("KBUILD_OUTPUT=/{tree}\n{text}")).unwrap();
        stdout(
            Command::new("dpkg-deb")
                .arg("-b")
                .arg(raw.path())
                .arg(&target),
        );
    }
    let out = tempfile::tempdir().unwrap();
    let result = run(&mut build_command(
        Headers::Extract(headers.path()),
        &id,
        &id.kernel_version,
        out.path(),
    ));
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, MODULE).unwrap();
    let vermagic = packaged_vermagic(&out.path().join(template.render(&id, "1.4.2")));
    assert_eq!(
        vermagic.split_whitespace().next(),
        Some(id.kernel_version.as_str())
    );
}

/// A child process whose stderr is collected, and the first stdout or stderr line that matters.
struct Child {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Child {
    /// Starts `cmd`; returns it and the text after `marker` on the first line of its output that
    /// holds it.
    fn start(cmd: &mut Command, marker: &'static str) -> (Self, String) {
        use std::io::BufRead as _;
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (sink, tx) = (log.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Some(rest) = line.split(marker).nth(1) {
                        let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                    }
                    let mut log = sink.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        drop(tx);
        let found = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no '{marker}' from {cmd:?}: {}", log.lock().unwrap()));
        (Self { child, log }, found)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The product end to end. A node asks `kfleet serve --sandbox DIR --runner local` for the
/// driver of a Debian kernel that has none; the service dispatches build-driver.yml to its
/// sandbox, whose local runner runs the workflow's own steps here: it installs the kfleet release the workflow pins (checking its
/// sha256), checks the identity and the release, fetches the real headers through the chain,
/// builds the module with build-module.sh and uploads the `.tar.xz` and its `.sha256` with
/// `kfleet release upload`. `kfleet ensure` then downloads and verifies the real asset and
/// installs it; the module carries the kernel's vermagic; the report and the dashboard show the
/// kernel `covered`.
#[test]
fn a_node_gets_a_driver_built_by_the_workflows_own_steps() {
    let mirror = debian_mirror();
    let id = &mirror.id;
    let kfleet = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kfleet"));
        c.env("XDG_CONFIG_HOME", "/nonexistent")
            .env_remove("KFLEET_CONFIG")
            .env_remove("GITHUB_TOKEN")
            .env_remove("GH_TOKEN");
        c
    };
    // The driver repository: the workflows `kfleet workflow init` writes, and the module.
    let checkout = tempfile::tempdir().unwrap();
    let init = run(kfleet()
        .args(["workflow", "init"])
        .current_dir(checkout.path()));
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    for file in ["Kbuild", "Makefile", "kdriver.c"] {
        std::fs::copy(
            root().join("assets/example-module").join(file),
            checkout.path().join(file),
        )
        .unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("releases.json"),
        serde_json::json!([{
            "id": 7, "tag_name": "1.4.2", "name": "kdriver 1.4.2", "draft": false,
            "prerelease": false, "created_at": "2026-11-20T00:00:00Z",
            "published_at": "2026-11-20T00:00:00Z", "assets": []
        }])
        .to_string(),
    )
    .unwrap();
    // The service with its in-process sandbox forge, whose token other commands are given.
    let token = "ghp_localRunnerSandbox0123456789";
    let state = tempfile::tempdir().unwrap();
    let (service, url) = Child::start(
        kfleet()
            .args(["serve", "--listen", "127.0.0.1:0", "--listing-ttl", "1"])
            .arg("--sandbox")
            .arg(data.path())
            .args(["--runner", "local", "--checkout"])
            .arg(checkout.path())
            .arg("--runner-dir")
            .arg(state.path().join("runner"))
            .env("KFLEET_SANDBOX_TOKEN", token)
            .env("KFLEET_HEADER_SOURCES", mirror.sources.path())
            .env("KFLEET_CLIENT_TOKENS", "node-token-0123456789")
            .env("KFLEET_STATE_DIR", state.path()),
        "kfleet build service on ",
    );
    let forge = service
        .log()
        .split("SANDBOX ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .expect("the service names its sandbox");
    let repo = "example/kdriver";

    let (out, node_root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ensured = run(kfleet()
        .args(["ensure", "--service", &url, "--driver-version", "1.4.2"])
        .args(["--deadline", "10m"])
        .args(["--distribution", id.distribution.as_str()])
        .args(["--distro-version", &id.distro_version])
        .args(["--architecture", id.architecture.as_str()])
        .args(["--kernel-version", &id.kernel_version])
        .env("KFLEET_SERVICE_TOKEN", "node-token-0123456789")
        .env("KFLEET_STATE_DIR", state.path().join("node"))
        .arg("--out")
        .arg(out.path())
        .args(["--install", "--no-load", "--root"])
        .arg(node_root.path())
        .arg("--depmod")
        .arg(depmod()));
    let logs = format!(
        "ensure:\n{}\nservice:\n{}",
        String::from_utf8_lossy(&ensured.stderr),
        service.log()
    );
    assert!(ensured.status.success(), "{logs}");
    eprintln!("{logs}");

    let name = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, MODULE)
        .unwrap()
        .render(id, "1.4.2");
    let package = out.path().join(&name);
    let vermagic = packaged_vermagic(&package);
    assert_eq!(
        vermagic.split_whitespace().next(),
        Some(id.kernel_version.as_str()),
        "{logs}"
    );
    let deps = std::fs::read_to_string(
        node_root
            .path()
            .join(format!("lib/modules/{}/modules.dep", id.kernel_version)),
    )
    .unwrap();
    // A Debian node: updates/, which its depmod ranks above the kernel's own modules.
    assert!(deps.contains(&format!("updates/{MODULE}.ko:")), "{deps}");
    assert!(
        service.log().contains("Install kfleet"),
        "the job installed the pinned kfleet: {logs}"
    );
    // The job planned its environment and built with the gcc the kernel was built with.
    let work = service
        .log()
        .split("work and logs in ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .map(PathBuf::from)
        .expect("the runner names its work directory");
    let job_log = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().path().join("job.log"))
        .find(|p| p.is_file())
        .expect("a job log");
    let job_log = std::fs::read_to_string(job_log).unwrap();
    assert!(
        job_log.contains("## Plan the build environment"),
        "{job_log}"
    );
    assert!(
        job_log.contains("image         docker.io/library/debian:12"),
        "{job_log}"
    );
    assert!(
        job_log.contains("build-module.sh: building with gcc-12: the kernel was built with gcc 12"),
        "{job_log}"
    );

    // The release now holds the artifact and its checksum, as the job uploaded them.
    let fleet = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        fleet.path(),
        format!(
            "node,distribution,distro_version,architecture,kernel_version\nn1,{},{},{},{}\n",
            id.distribution.as_str(),
            id.distro_version,
            id.architecture.as_str(),
            id.kernel_version
        ),
    )
    .unwrap();
    let report = run(kfleet()
        .args(["report", "-i"])
        .arg(fleet.path())
        .args(["--repo", repo, "--api-url", &forge])
        .args(["--driver-version", "1.4.2", "--format", "csv"])
        .env("GITHUB_TOKEN", token)
        .env("KFLEET_STATE_DIR", state.path().join("report")));
    let csv = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(
        csv.contains(&id.kernel_version) && csv.contains("covered"),
        "{csv}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let _entered = rt.enter();
    let client = kfleet::forge::GithubClient::new(
        &forge,
        repo.parse().unwrap(),
        token.into(),
        kfleet::forge::RetryPolicy::default(),
        None,
    )
    .unwrap();
    let listing = rt.block_on(client.list_releases()).unwrap();
    let release = kfleet::forge::select_release(&listing.releases, Some("1.4.2")).unwrap();
    let names: Vec<&str> = release.assets.iter().map(|a| a.name.as_str()).collect();
    assert!(names.contains(&name.as_str()), "{names:?}");
    assert!(
        names.contains(&format!("{name}.sha256").as_str()),
        "{names:?}"
    );
    // Beside them, what the module imports: the same record `kabi imports` reads from the
    // installed module, and not an unrecognised asset in the report.
    let kabi_url = release
        .assets
        .iter()
        .find(|a| a.name == format!("{name}.kabi.json"))
        .and_then(|a| a.browser_download_url.clone())
        .unwrap_or_else(|| panic!("no {name}.kabi.json in {names:?}"));
    let recorded: serde_json::Value = rt
        .block_on(async { reqwest::get(&kabi_url).await?.json().await })
        .unwrap();
    let installed = node_root.path().join(format!(
        "lib/modules/{}/updates/{MODULE}.ko",
        id.kernel_version
    ));
    let read = run(kfleet().args(["--json", "kabi", "imports"]).arg(&installed));
    let read: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(recorded["modules"][0]["module"], MODULE);
    assert_eq!(recorded["modules"][0]["vermagic"], read["vermagic"]);
    assert_eq!(recorded["modules"][0]["imports"], read["imports"]);
    assert!(
        read["imports"].as_array().unwrap().len() > 3,
        "a real module imports symbols: {read}"
    );
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, MODULE).unwrap();
    let inventory =
        kfleet::inventory::read_inventory(&[fleet.path().to_path_buf()], false).unwrap();
    let index = kfleet::forge::index_assets(release, &template);
    assert!(index.unrecognised.is_empty(), "{:?}", index.unrecognised);
    assert_eq!(
        index.matched[0].kabi_url.as_deref(),
        Some(kabi_url.as_str())
    );
    let coverage = kfleet::coverage::compute(
        &inventory,
        &index,
        &release.tag_name,
        kfleet::coverage::CoverageOptions::default(),
        &kfleet::coverage::BuildStates::new(),
    )
    .unwrap();
    let mut app = kfleet::tui::app::App::new(format!("SANDBOX {forge}"), coverage, 900);
    app.update(kfleet::tui::app::Action::Key(
        crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::Char('2'),
            crossterm::event::KeyModifiers::NONE,
        ),
    ));
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(160, 12)).unwrap();
    terminal
        .draw(|f| {
            kfleet::tui::views::render(&mut app, f, &kfleet::tui::views::Theme { color: false })
        })
        .unwrap();
    let screen = terminal.backend().to_string();
    assert!(
        screen.contains(&id.kernel_version) && screen.contains("covered"),
        "{screen}"
    );
}

/// Builds a .deb named `name` holding `entries` (path, symlink target or file body).
fn make_deb(dir: &Path, name: &str, entries: &[(&str, Result<&str, &str>)]) -> PathBuf {
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("DEBIAN")).unwrap();
    std::fs::write(
        tree.path().join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.invalid>\nDescription: test\n"
        ),
    )
    .unwrap();
    for (path, what) in entries {
        let full = tree.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        match what {
            Ok(link) => std::os::unix::fs::symlink(link, &full).unwrap(),
            Err(body) => std::fs::write(&full, body).unwrap(),
        }
    }
    let deb = dir.join(format!("{name}.deb"));
    stdout(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(tree.path())
            .arg(&deb),
    );
    deb
}

/// A package's symlink cannot redirect the next package's files outside the private root, and
/// no link may point outside it.
#[test]
fn extract_refuses_packages_that_reach_outside_the_root() {
    let id = KernelIdentity::from_key("debian/12/x86_64/6.1.0-18-amd64").unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_string_lossy().into_owned();

    let headers = tempfile::tempdir().unwrap();
    make_deb(headers.path(), "a-evil", &[("usr/src/evil", Ok(&target))]);
    make_deb(
        headers.path(),
        "b-evil",
        &[("usr/src/evil/pwned", Err("written through a link"))],
    );
    let out = tempfile::tempdir().unwrap();
    let extract = |headers: &Path| {
        run(&mut build_command(
            Headers::Extract(headers),
            &id,
            &id.kernel_version,
            out.path(),
        ))
    };
    let result = extract(headers.path());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        !outside.path().join("pwned").exists(),
        "written outside: {stderr}"
    );
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is a symlink made by another package"),
        "{stderr}"
    );

    let headers = tempfile::tempdir().unwrap();
    let escape = format!("../../../../../../../../../../..{target}");
    make_deb(
        headers.path(),
        "c-evil",
        &[
            (
                "usr/src/linux-headers-6.1.0-18-amd64/Makefile",
                Err("all:\n"),
            ),
            ("usr/src/linux-headers-6.1.0-18-amd64/secrets", Ok(&escape)),
        ],
    );
    let result = extract(headers.path());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("points outside the unpacked packages"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

/// The example module built once for this test binary's install tests: the package's path.
fn built_package() -> &'static (tempfile::TempDir, PathBuf, KernelIdentity) {
    static BUILT: OnceLock<(tempfile::TempDir, PathBuf, KernelIdentity)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let (kdir, id) = kernel_tree();
        let out = tempfile::tempdir().unwrap();
        let result = build_module(&kdir, &id, &id.kernel_version, out.path());
        assert!(
            result.status.success(),
            "build-module.sh failed:\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
        let name = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, MODULE)
            .unwrap()
            .render(&id, "1.4.2");
        let package = out.path().join(name);
        (out, package, id)
    })
}

/// Debian's depmod, fetched like the header packages (`apt-get download kmod`, unpacked; its
/// library is part of every Debian base system) when the machine has none.
fn depmod() -> PathBuf {
    kmod_tool("depmod")
}

/// A kmod program (`depmod`, `modprobe`): the machine's, or kmod's multi-call binary fetched
/// like the header packages and linked under that name.
fn kmod_tool(name: &'static str) -> PathBuf {
    static TOOLS: std::sync::Mutex<Vec<(&str, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut tools = TOOLS.lock().unwrap();
    if let Some((_, p)) = tools.iter().find(|(n, _)| *n == name) {
        return p.clone();
    }
    let path = find_or_fetch_kmod_tool(name);
    tools.push((name, path.clone()));
    path
}

fn find_or_fetch_kmod_tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    let cache = debs_dir().join("kmod");
    std::fs::create_dir_all(&cache).unwrap();
    let lock = std::fs::File::create(cache.join(".lock")).unwrap();
    lock.lock().unwrap();
    if !cache.join("root/bin/kmod").exists() {
        let out = run(Command::new("apt-get")
            .args(["download", "-qq", "kmod"])
            .current_dir(&cache));
        assert!(
            out.status.success(),
            "apt-get download kmod: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deb = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .expect("the kmod package");
        stdout(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(cache.join("root")),
        );
    }
    let link = cache.join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(cache.join("root/bin/kmod"), &link).unwrap();
    }
    link
}

fn install_cmd(package: &Path, root: &Path, kernel: &str, extra: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_kfleet"))
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .arg("install")
        .arg(package)
        .arg("--root")
        .arg(root)
        .args(["--kernel-version", kernel])
        .arg("--depmod")
        .arg(depmod())
        .args(extra))
}

/// `kfleet install` puts the real module under ROOT/lib/modules/KERNEL/extra, depmod lists it, a
/// second run changes nothing; a package for another kernel or an unsigned module where a
/// signature is required is refused with its own exit code, and nothing is written.
#[test]
fn a_built_module_installs_into_a_root_where_depmod_lists_it() {
    let (_, package, id) = built_package();
    let kernel = id.kernel_version.as_str();
    let root = tempfile::tempdir().unwrap();
    let out = install_cmd(package, root.path(), kernel, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ko = root
        .path()
        .join(format!("lib/modules/{kernel}/extra/{MODULE}.ko"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        ko.to_str().unwrap()
    );
    assert!(stderr.contains("depmod ran"), "{stderr}");
    assert!(
        stderr.contains("not loaded"),
        "another root is never loaded: {stderr}"
    );
    let deps = std::fs::read_to_string(
        root.path()
            .join(format!("lib/modules/{kernel}/modules.dep")),
    )
    .unwrap();
    assert!(deps.contains(&format!("extra/{MODULE}.ko:")), "{deps}");
    assert_eq!(
        kfleet::kmod::vermagic(&std::fs::read(&ko).unwrap())
            .unwrap()
            .unwrap()
            .split_whitespace()
            .next(),
        Some(kernel)
    );

    let again = install_cmd(package, root.path(), kernel, &[]);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already installed"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let other = tempfile::tempdir().unwrap();
    let wrong = install_cmd(package, other.path(), "6.1.0-0-other-amd64", &[]);
    assert_eq!(wrong.status.code(), Some(6));
    assert!(
        String::from_utf8_lossy(&wrong.stderr)
            .contains(&format!("is built for {kernel}, not 6.1.0-0-other-amd64")),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let unsigned = install_cmd(package, other.path(), kernel, &["--require-signed"]);
    assert_eq!(unsigned.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&unsigned.stderr).contains("mokutil --import"));
    assert_eq!(
        std::fs::read_dir(other.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

/// A loader that records what it was asked and says what the test tells it.
#[derive(Default)]
struct FakeLoader {
    loaded: std::sync::Mutex<Option<kfleet::node::install::Loaded>>,
    enforced: Option<String>,
    calls: std::sync::Mutex<Vec<String>>,
}

impl kfleet::node::install::Loader for FakeLoader {
    fn loaded(&self, _: &str) -> Option<kfleet::node::install::Loaded> {
        self.loaded.lock().unwrap().clone()
    }
    fn load(&self, name: &str) -> Result<(), String> {
        self.calls.lock().unwrap().push(format!("load {name}"));
        Ok(())
    }
    fn unload(&self, name: &str) -> Result<(), String> {
        self.calls.lock().unwrap().push(format!("unload {name}"));
        Ok(())
    }
    fn load_file(&self, path: &Path) -> Result<(), String> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("insmod {}", path.display()));
        Ok(())
    }
    fn signatures_enforced(&self) -> Option<String> {
        self.enforced.clone()
    }
}

/// An image-based OS keeps /lib/modules in a read-only image: the driver goes to
/// /var/lib/kfleet/modules/KERNEL, no depmod runs, it is loaded by path, and the OS's own route
/// is named; an ostree deployment is told apart by /run/ostree-booted. Through the binary the
/// same install says so in its JSON and on stderr.
#[test]
fn an_image_based_os_gets_the_driver_from_var_loaded_by_path() {
    use kfleet::node::install::{InstallOptions, InstallOutcome, ModulePlace, install};
    let (_, package, id) = built_package();
    let kernel = &id.kernel_version;
    let options = |root: &Path| InstallOptions {
        root: root.to_path_buf(),
        kernel_version: kernel.clone(),
        running_kernel: Some(kernel.clone()),
        subdir: "updates".into(),
        load: true,
        replace: false,
        require_signed: false,
        check_signer: true,
        depmod: PathBuf::from("/nonexistent/depmod"),
        kabi: false,
    };
    let flatcar = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(flatcar.path().join("etc")).unwrap();
    std::fs::write(
        flatcar.path().join("etc/os-release"),
        "NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nVERSION_ID=4152.2.0\n",
    )
    .unwrap();
    let loader = FakeLoader::default();
    let done = install(package, &options(flatcar.path()), &loader).unwrap();
    let path = flatcar
        .path()
        .join(format!("var/lib/kfleet/modules/{kernel}/{MODULE}.ko"));
    match &done {
        InstallOutcome::Installed {
            paths,
            loaded: true,
            place: ModulePlace::Writable { os, route },
        } => {
            assert_eq!(paths, std::slice::from_ref(&path));
            assert_eq!(os, "Flatcar Container Linux");
            assert!(route.contains("systemd-sysext"), "{route}");
        }
        other => panic!("{other:?}"),
    }
    assert!(path.exists());
    assert!(
        !flatcar.path().join("lib/modules").exists(),
        "nothing in the read-only tree, no depmod (its path does not exist)"
    );
    assert_eq!(
        *loader.calls.lock().unwrap(),
        [format!("insmod {}", path.display())]
    );

    // Fedora CoreOS is ID=fedora with VARIANT_ID=coreos; plain Fedora is a package-based root.
    for (variant, writable) in [("coreos", true), ("workstation", false)] {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/os-release"),
            format!("ID=fedora\nVERSION_ID=41\nVARIANT_ID={variant}\n"),
        )
        .unwrap();
        assert_eq!(
            matches!(
                kfleet::node::install::module_place(root.path()),
                ModulePlace::Writable { .. }
            ),
            writable,
            "{variant}"
        );
    }
    let ostree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ostree.path().join("run")).unwrap();
    std::fs::write(ostree.path().join("run/ostree-booted"), "").unwrap();
    assert!(matches!(
        kfleet::node::install::module_place(ostree.path()),
        ModulePlace::Writable { .. }
    ));

    // The binary, not loading (no insmod here): the JSON and the log name the route.
    let bottlerocket = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(bottlerocket.path().join("usr/lib")).unwrap();
    std::fs::write(
        bottlerocket.path().join("usr/lib/os-release"),
        "ID=bottlerocket\nVERSION_ID=1.30.0\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kfleet"))
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .args(["install", "--json", "--no-load", "--kernel-version", kernel])
        .arg("--host-root")
        .arg(bottlerocket.path())
        .arg(package)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["status"], "installed");
    assert_eq!(json["loaded"], false);
    assert_eq!(json["image_based"]["os"], "Bottlerocket");
    assert!(
        bottlerocket
            .path()
            .join(format!("var/lib/kfleet/modules/{kernel}/{MODULE}.ko"))
            .exists()
    );
}

/// On the running kernel: the module is loaded once; the same version loaded is a no-op; another
/// version is replaced only with `replace`; a kernel that enforces signatures refuses an
/// unsigned module before anything is written.
#[test]
fn loading_is_idempotent_and_replaces_only_when_asked() {
    use kfleet::node::install::{
        InstallError, InstallOptions, InstallOutcome, install, read_package,
    };
    let (_, package, id) = built_package();
    let module = read_package(package).unwrap().remove(0);
    let options = |root: &Path| InstallOptions {
        root: root.to_path_buf(),
        kernel_version: id.kernel_version.clone(),
        running_kernel: Some(id.kernel_version.clone()),
        subdir: "updates".into(),
        load: true,
        replace: false,
        require_signed: false,
        check_signer: true,
        depmod: depmod(),
        kabi: false,
    };
    let root = tempfile::tempdir().unwrap();
    let loader = FakeLoader::default();
    let first = install(package, &options(root.path()), &loader).unwrap();
    assert!(
        matches!(first, InstallOutcome::Installed { loaded: true, .. }),
        "{first:?}"
    );
    assert_eq!(*loader.calls.lock().unwrap(), [format!("load {MODULE}")]);
    assert!(
        root.path()
            .join(format!(
                "lib/modules/{}/updates/{MODULE}.ko",
                id.kernel_version
            ))
            .exists()
    );

    *loader.loaded.lock().unwrap() = Some(kfleet::node::install::Loaded {
        srcversion: module.srcversion.clone(),
        version: None,
    });
    let again = install(package, &options(root.path()), &loader).unwrap();
    assert!(
        matches!(again, InstallOutcome::AlreadyInstalled { .. }),
        "{again:?}"
    );
    assert_eq!(
        loader.calls.lock().unwrap().len(),
        1,
        "nothing loaded again"
    );

    let elsewhere = tempfile::tempdir().unwrap();
    let older = FakeLoader::default();
    *older.loaded.lock().unwrap() = Some(kfleet::node::install::Loaded {
        srcversion: Some("0123456789ABCDEF0123456".into()),
        version: Some("1.4.1".into()),
    });
    let refused = install(package, &options(elsewhere.path()), &older).unwrap_err();
    assert!(
        matches!(&refused, InstallError::OtherVersionLoaded { loaded, .. } if loaded == "1.4.1"),
        "{refused}"
    );
    assert_eq!(refused.exit_code(), 8);
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    let replaced = install(
        package,
        &InstallOptions {
            replace: true,
            ..options(elsewhere.path())
        },
        &older,
    )
    .unwrap();
    assert!(matches!(
        replaced,
        InstallOutcome::Installed { loaded: true, .. }
    ));
    assert_eq!(
        *older.calls.lock().unwrap(),
        [format!("unload {MODULE}"), format!("load {MODULE}")]
    );

    let locked = FakeLoader {
        enforced: Some("the kernel is in lockdown [integrity]".into()),
        ..FakeLoader::default()
    };
    let strict = tempfile::tempdir().unwrap();
    let err = install(package, &options(strict.path()), &locked).unwrap_err();
    assert!(
        matches!(err, InstallError::SignatureRequired { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("lockdown [integrity]"));
    assert_eq!(std::fs::read_dir(strict.path()).unwrap().count(), 0);
    assert!(locked.calls.lock().unwrap().is_empty());
}

/// A loader that knows modules by the kernel's name, and refuses the first `fail_loads` loads.
#[derive(Default)]
struct KernelLoader {
    loaded: std::sync::Mutex<std::collections::BTreeMap<String, kfleet::node::install::Loaded>>,
    fail_loads: std::sync::Mutex<u32>,
    calls: std::sync::Mutex<Vec<String>>,
}

impl kfleet::node::install::Loader for KernelLoader {
    fn loaded(&self, name: &str) -> Option<kfleet::node::install::Loaded> {
        self.calls.lock().unwrap().push(format!("loaded? {name}"));
        self.loaded.lock().unwrap().get(name).cloned()
    }
    fn load(&self, name: &str) -> Result<(), String> {
        self.calls.lock().unwrap().push(format!("load {name}"));
        let mut fail = self.fail_loads.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(format!(
                "modprobe: ERROR: could not insert '{name}': Exec format error"
            ));
        }
        Ok(())
    }
    fn unload(&self, name: &str) -> Result<(), String> {
        self.calls.lock().unwrap().push(format!("unload {name}"));
        Ok(())
    }
    fn signatures_enforced(&self) -> Option<String> {
        None
    }
}

/// A `.tar.xz` package holding `entries` (path in the package, bytes).
fn repack(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, *bytes).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
    std::io::Write::write_all(&mut xz, &tar).unwrap();
    let path = dir.join(format!("package-{}.tar.xz", entries.len()));
    std::fs::write(&path, xz.finish().unwrap()).unwrap();
    path
}

/// The built module with its `.modinfo` `name=` changed to another of the same length.
fn renamed_module(bytes: &[u8], to: &str) -> Vec<u8> {
    let from = format!("name={MODULE}\0");
    let to = format!("name={to}\0");
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .expect("the module's name= in .modinfo");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to.as_bytes());
    out
}

/// Installing into `root` for `id`'s kernel as the running one, loading and replacing.
fn replacing(root: &Path, id: &KernelIdentity) -> kfleet::node::install::InstallOptions {
    kfleet::node::install::InstallOptions {
        root: root.to_path_buf(),
        kernel_version: id.kernel_version.clone(),
        running_kernel: Some(id.kernel_version.clone()),
        subdir: "extra".into(),
        load: true,
        replace: true,
        require_signed: false,
        check_signer: true,
        depmod: depmod(),
        kabi: false,
    }
}

/// The kernel knows a module by its `.modinfo` name with `-` as `_`, whatever its file is called:
/// that is the name asked about, unloaded and loaded. Two modules of one name refuse the package.
#[test]
fn modules_are_known_by_the_kernels_name_and_twins_are_refused() {
    use kfleet::node::install::{install, read_package};
    let (_, package, id) = built_package();
    let ko = read_package(package).unwrap().remove(0).bytes;
    let dir = tempfile::tempdir().unwrap();
    let dashed = renamed_module(&ko, "k_drivr");
    let options = |root: &Path| replacing(root, id);
    let package = repack(dir.path(), &[("k-drivr.ko", &dashed)]);
    let loader = KernelLoader::default();
    loader.loaded.lock().unwrap().insert(
        "k_drivr".into(),
        kfleet::node::install::Loaded {
            srcversion: Some("0123456789ABCDEF0123456".into()),
            version: Some("1.4.1".into()),
        },
    );
    let root = tempfile::tempdir().unwrap();
    install(&package, &options(root.path()), &loader).unwrap();
    assert_eq!(
        *loader.calls.lock().unwrap(),
        ["loaded? k_drivr", "unload k_drivr", "load k_drivr"]
    );
    assert!(
        root.path()
            .join(format!(
                "lib/modules/{}/extra/k-drivr.ko",
                id.kernel_version
            ))
            .is_file()
    );

    for twins in [
        vec![
            ("kdriver.ko", ko.as_slice()),
            ("sub/kdriver.ko", ko.as_slice()),
        ],
        vec![
            ("k-drivr.ko", dashed.as_slice()),
            ("k_drivr.ko", dashed.as_slice()),
        ],
    ] {
        let package = repack(dir.path(), &twins);
        let root = tempfile::tempdir().unwrap();
        let err = install(&package, &options(root.path()), &KernelLoader::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("one would silently replace the other"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }
}

/// `--replace` whose new module will not load puts the node back: the old file, depmod again,
/// and the old module loaded again; with two modules, the first one's new version is unloaded
/// too (all or nothing).
#[test]
fn a_failed_load_puts_the_node_back_as_it_was() {
    use kfleet::node::install::{install, read_package};
    let (_, package, id) = built_package();
    let ko = read_package(package).unwrap().remove(0).bytes;
    let options = |root: &Path| replacing(root, id);
    let old = |name: &str| {
        (
            name.to_string(),
            kfleet::node::install::Loaded {
                srcversion: Some("0123456789ABCDEF0123456".into()),
                version: Some("1.4.1".into()),
            },
        )
    };
    let root = tempfile::tempdir().unwrap();
    let dir = root
        .path()
        .join(format!("lib/modules/{}/extra", id.kernel_version));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{MODULE}.ko")), b"the old module").unwrap();
    let loader = KernelLoader::default();
    loader.loaded.lock().unwrap().extend([old(MODULE)]);
    *loader.fail_loads.lock().unwrap() = 1;
    let err = install(package, &options(root.path()), &loader).unwrap_err();
    let said = err.to_string();
    assert!(said.contains("could not insert"), "{said}");
    assert!(said.contains("the previous files were restored"), "{said}");
    assert!(said.contains("depmod ran again"), "{said}");
    assert!(
        said.contains(&format!("the previous {MODULE} is loaded again")),
        "{said}"
    );
    assert_eq!(err.exit_code(), 8);
    assert_eq!(
        std::fs::read(dir.join(format!("{MODULE}.ko"))).unwrap(),
        b"the old module"
    );
    assert_eq!(
        *loader.calls.lock().unwrap(),
        [
            format!("loaded? {MODULE}"),
            format!("unload {MODULE}"),
            format!("load {MODULE}"),
            format!("load {MODULE}"),
        ]
    );

    // Two modules, the second will not load: the first one's new version goes too.
    let second = renamed_module(&ko, "kdrivez");
    let pair = tempfile::tempdir().unwrap();
    let package = repack(
        pair.path(),
        &[
            ("kdriver.ko", ko.as_slice()),
            ("kdrivez.ko", second.as_slice()),
        ],
    );
    let root = tempfile::tempdir().unwrap();
    let loader = KernelLoader::default();
    loader.loaded.lock().unwrap().extend([old(MODULE)]);
    let loader = FailSecond(loader);
    let err = install(&package, &options(root.path()), &loader).unwrap_err();
    assert!(err.to_string().contains("kdrivez"), "{err}");
    let calls = loader.0.calls.lock().unwrap().clone();
    assert_eq!(
        calls[2..],
        [
            format!("unload {MODULE}"),
            format!("load {MODULE}"),
            "load kdrivez".to_string(),
            format!("unload {MODULE}"),
            format!("load {MODULE}"),
        ],
        "{calls:?}"
    );
    let modules = root
        .path()
        .join(format!("lib/modules/{}/extra", id.kernel_version));
    assert!(!modules.join("kdriver.ko").exists() && !modules.join("kdrivez.ko").exists());
}

/// Fails the load of `kdrivez` only.
struct FailSecond(KernelLoader);

impl kfleet::node::install::Loader for FailSecond {
    fn loaded(&self, name: &str) -> Option<kfleet::node::install::Loaded> {
        self.0.loaded(name)
    }
    fn load(&self, name: &str) -> Result<(), String> {
        if name == "kdrivez" {
            self.0.calls.lock().unwrap().push(format!("load {name}"));
            return Err("modprobe: ERROR: could not insert 'kdrivez': Unknown symbol".into());
        }
        self.0.calls.lock().unwrap().push(format!("load {name}"));
        Ok(())
    }
    fn unload(&self, name: &str) -> Result<(), String> {
        self.0.unload(name)
    }
    fn signatures_enforced(&self) -> Option<String> {
        None
    }
}

/// The whole last mile without GitHub: the sandbox serves the real package from its assets
/// directory (size and sha256 from the file), `kfleet ensure --repo … --install` finds it in the
/// release, downloads and verifies it, and installs the module into a root where depmod lists it.
#[test]
fn ensure_installs_a_real_package_served_by_the_sandbox() {
    let (_, package, id) = built_package();
    let name = package.file_name().unwrap().to_str().unwrap();
    let assets = tempfile::tempdir().unwrap();
    std::fs::copy(package, assets.path().join(name)).unwrap();
    let release = serde_json::json!([{
        "id": 1, "tag_name": "1.4.2", "name": "kdriver 1.4.2", "draft": false, "prerelease": false,
        "created_at": "2026-11-20T00:00:00Z", "published_at": "2026-11-20T00:00:00Z",
        "assets": [{"id": 10, "name": name, "size": 1, "digest": null,
                    "browser_download_url": null, "updated_at": "2026-11-20T00:00:00Z"}]
    }]);
    let releases =
        kfleet::artifacts::parse_release_listing("releases.json", release.to_string().as_bytes())
            .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sandbox = rt
        .block_on(kfleet::forge::Sandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            releases,
            kfleet::forge::SandboxOptions {
                repo: "acme/kdriver".into(),
                assets_dir: Some(assets.path().to_path_buf()),
                ..Default::default()
            },
        ))
        .unwrap();
    let (state, out, root) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let result = run(Command::new(env!("CARGO_BIN_EXE_kfleet"))
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("GITHUB_TOKEN", "ghp_sandboxTOKEN0123456789")
        .env("KFLEET_STATE_DIR", state.path())
        .args(["ensure", "--repo", "acme/kdriver", "--api-url"])
        .arg(sandbox.base_url())
        .args(["--driver-version", "1.4.2", "--deadline", "60s"])
        .args(["--distribution", id.distribution.as_str()])
        .args(["--distro-version", &id.distro_version])
        .args(["--architecture", id.architecture.as_str()])
        .args(["--kernel-version", &id.kernel_version])
        .arg("--out")
        .arg(out.path())
        .args(["--install", "--no-load", "--root"])
        .arg(root.path())
        .arg("--depmod")
        .arg(depmod()));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert_eq!(
        std::fs::read(out.path().join(name)).unwrap(),
        std::fs::read(package).unwrap(),
        "the verified download is the package"
    );
    let deps = std::fs::read_to_string(
        root.path()
            .join(format!("lib/modules/{}/modules.dep", id.kernel_version)),
    )
    .unwrap();
    assert!(
        deps.contains(&format!("updates/{MODULE}.ko:")),
        "{deps}\n{stderr}"
    );
    drop(sandbox);
}

/// A copy of the unpacked kernel root (hard links: Debian's headers link into -common beside
/// them and into linux-kbuild under usr/lib) whose tree's `files` lose their lines that start
/// with any of `dropped` and end with `appended`. Each edited file is a new file, not the hard
/// link's shared one, written in the order given (auto.conf last stays the newer). `None` where
/// KFLEET_KERNEL_DIR names a tree of the machine's own, which has no unpacked root to copy.
fn edited_tree(
    files: &[&str],
    dropped: &[&str],
    appended: &str,
) -> Option<(tempfile::TempDir, PathBuf, KernelIdentity)> {
    if std::env::var_os("KFLEET_KERNEL_DIR").is_some() {
        eprintln!("skipped: KFLEET_KERNEL_DIR names a tree this test must not copy");
        return None;
    }
    let (kdir, id) = kernel_tree();
    let copy = tempfile::tempdir().unwrap();
    let unpacked = kdir.ancestors().nth(3).unwrap();
    let root_copy = copy.path().join("root");
    stdout(Command::new("cp").arg("-al").arg(unpacked).arg(&root_copy));
    let tree = root_copy.join(kdir.strip_prefix(unpacked).unwrap());
    for file in files {
        let path = tree.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: String = text
            .lines()
            .filter(|l| !dropped.iter().any(|d| l.starts_with(d)))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, format!("{kept}{appended}")).unwrap();
    }
    Some((copy, tree, id))
}

/// Kernels before 5.8 name their compiler only as CONFIG_GCC_VERSION (90400 is gcc 9.4): the
/// build reads the gcc major from it as it reads CONFIG_CC_VERSION_TEXT from newer ones.
#[test]
fn a_kernel_that_names_only_its_gcc_version_is_built_knowing_it() {
    let Some((_copy, tree, id)) = edited_tree(
        &[".config", "include/config/auto.conf"],
        &["CONFIG_CC_VERSION_TEXT=", "CONFIG_GCC_VERSION="],
        "CONFIG_GCC_VERSION=120200\n",
    ) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let result = run(&mut build_command(
        Headers::Tree(&tree),
        &id,
        &id.kernel_version,
        out.path(),
    ));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("the kernel was built with gcc 12 (CONFIG_GCC_VERSION=120200)"),
        "{stderr}"
    );
    assert!(result.status.success(), "{stderr}");
}

/// A tree that holds `vmlinux` of a kernel with `CONFIG_DEBUG_INFO_BTF_MODULES=y` makes kbuild run
/// pahole for each module: without one the build stops before compiling and says what to
/// install, and nothing is written.
#[test]
fn a_tree_whose_modules_get_btf_needs_pahole_and_says_so_first() {
    let Some((_copy, tree, id)) = edited_tree(
        &["include/config/auto.conf"],
        &["CONFIG_DEBUG_INFO_BTF_MODULES="],
        "CONFIG_DEBUG_INFO_BTF_MODULES=y\n",
    ) else {
        return;
    };
    std::fs::write(tree.join("vmlinux"), b"\x7fELF").unwrap();
    let out = tempfile::tempdir().unwrap();
    let result = run(
        build_command(Headers::Tree(&tree), &id, &id.kernel_version, out.path())
            .env("PAHOLE", "/nonexistent/pahole"),
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(
        stderr.contains("CONFIG_DEBUG_INFO_BTF_MODULES=y, so kbuild runs /nonexistent/pahole")
            && stderr.contains("install pahole"),
        "{stderr}"
    );
    assert!(!stderr.contains("CC [M]"), "it compiled first: {stderr}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

/// Where the root's os-release names Debian or Ubuntu, `install` puts the module in `updates/`
/// (their depmod searches it before the kernel's own modules, `extra/` after them); an
/// explicit `--module-dir` still wins.
#[test]
fn a_debian_root_takes_the_module_in_updates() {
    let (_, package, id) = built_package();
    let kernel = id.kernel_version.as_str();
    for (extra, dir) in [
        (&[][..], "updates"),
        (&["--module-dir", "extra"][..], "extra"),
    ] {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        )
        .unwrap();
        let out = install_cmd(package, root.path(), kernel, extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deps = std::fs::read_to_string(
            root.path()
                .join(format!("lib/modules/{kernel}/modules.dep")),
        )
        .unwrap();
        assert!(deps.contains(&format!("{dir}/{MODULE}.ko:")), "{deps}");
    }
}

/// A UEFI variable as efivarfs shows it (attributes, then one `EFI_SIGNATURE_LIST` of type
/// X.509) holding the PEM certificate `cert`.
fn efi_signature_list(cert: &Path) -> Vec<u8> {
    let der = run(Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(cert))
    .stdout;
    let x509: [u8; 16] = [
        0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0,
        0x72,
    ];
    let entry = 16 + der.len();
    let mut var = vec![7, 0, 0, 0];
    var.extend_from_slice(&x509);
    var.extend_from_slice(&((28 + entry) as u32).to_le_bytes());
    var.extend_from_slice(&0u32.to_le_bytes());
    var.extend_from_slice(&(entry as u32).to_le_bytes());
    var.extend_from_slice(&[0x11; 16]);
    var.extend_from_slice(&der);
    var
}

/// With SIGN_KEY and SIGN_CERT the build signs each module with the kernel tree's sign-file; the
/// MANIFEST says so and names the certificate, and `kfleet install --require-signed` takes it
/// (the unsigned build is refused with exit 7, above).
#[test]
fn a_module_signed_in_the_build_installs_where_signatures_are_required() {
    let (kdir, id) = kernel_tree();
    let keys = tempfile::tempdir().unwrap();
    let (key, cert) = (keys.path().join("sign.key"), keys.path().join("sign.crt"));
    stdout(
        Command::new("openssl")
            .args([
                "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=kfleet test signing key", "-outform", "PEM"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    let out = tempfile::tempdir().unwrap();
    let result = run(
        build_command(Headers::Tree(&kdir), &id, &id.kernel_version, out.path())
            .env("SIGN_KEY", &key)
            .env("SIGN_CERT", &cert),
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let name = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, MODULE)
        .unwrap()
        .render(&id, "1.4.2");
    let package = out.path().join(&name);
    let modules = kfleet::node::install::read_package(&package).unwrap();
    assert!(
        modules.iter().all(|m| m.signed),
        "every module carries a signature"
    );
    let unpacked = tempfile::tempdir().unwrap();
    stdout(
        Command::new("tar")
            .arg("-xJf")
            .arg(&package)
            .arg("-C")
            .arg(unpacked.path()),
    );
    let manifest = std::fs::read_to_string(unpacked.path().join("MANIFEST")).unwrap();
    let cert_sum: String = Sha256::digest(std::fs::read(&cert).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        manifest.contains(&format!(
            "signed[{MODULE}.ko]=sha256 certificate-sha256:{cert_sum}"
        )),
        "{manifest}"
    );
    let root = tempfile::tempdir().unwrap();
    let installed = install_cmd(
        &package,
        root.path(),
        &id.kernel_version,
        &["--require-signed"],
    );
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );

    // A root whose firmware trusts the signing certificate (enrolled in shim's MOK list) takes
    // the module; one whose db holds only another certificate refuses it before writing.
    let other = keys.path().join("other.crt");
    stdout(
        Command::new("openssl")
            .args([
                "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=someone else's key",
                "-outform",
                "PEM",
                "-keyout",
            ])
            .arg(keys.path().join("other.key"))
            .arg("-out")
            .arg(&other),
    );
    let trusting = |var: &str, cert: &Path| {
        let root = tempfile::tempdir().unwrap();
        let efivars = root.path().join("sys/firmware/efi/efivars");
        std::fs::create_dir_all(&efivars).unwrap();
        std::fs::write(efivars.join(var), efi_signature_list(cert)).unwrap();
        root
    };
    let mok = trusting("MokListRT-605dab50-e046-4300-abb6-3dd810dd8b23", &cert);
    let installed = install_cmd(
        &package,
        mok.path(),
        &id.kernel_version,
        &["--require-signed"],
    );
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let db = trusting("db-d719b2cb-3d3a-4596-a3bc-dad00e67656f", &other);
    let refused = install_cmd(
        &package,
        db.path(),
        &id.kernel_version,
        &["--require-signed"],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("CN=kfleet test signing key")
            && stderr.contains("which this machine does not trust")
            && stderr.contains("mokutil --import"),
        "{stderr}"
    );
    assert!(
        !db.path().join("lib/modules").exists(),
        "nothing was written"
    );
    let waived = install_cmd(
        &package,
        db.path(),
        &id.kernel_version,
        &["--require-signed", "--no-signer-check"],
    );
    assert!(
        waived.status.success(),
        "{}",
        String::from_utf8_lossy(&waived.stderr)
    );

    // Half a key is a mistake, not an unsigned build.
    let half = run(
        build_command(Headers::Tree(&kdir), &id, &id.kernel_version, out.path())
            .env("SIGN_KEY", &key),
    );
    assert!(!half.status.success());
    assert!(
        String::from_utf8_lossy(&half.stderr)
            .contains("SIGN_KEY and SIGN_CERT must both name PEM files"),
        "{}",
        String::from_utf8_lossy(&half.stderr)
    );
}

/// Where downloaded packages are kept between runs: `KFLEET_DEBS` or `~/.cache/kfleet-debs`.
fn debs_dir() -> PathBuf {
    std::env::var_os("KFLEET_DEBS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kfleet-debs")))
        .expect("HOME or KFLEET_DEBS is set")
}

/// Another ABI of the metapackage's kernel line and flavour (the lowest one the package lists
/// still name, such as 6.1.0-42-amd64 beside 6.1.0-48-amd64): its headers package alone,
/// unpacked, for its Module.symvers, .config and release. Downloaded once.
fn other_abi_tree() -> PathBuf {
    static TREE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, dir) = TREE.get_or_init(|| {
        let current = headers_identity().kernel_version;
        let (line, rest) = current.split_once('-').expect("LINE-ABI-FLAVOUR");
        let (abi, flavour) = rest.split_once('-').expect("LINE-ABI-FLAVOUR");
        let pattern = format!(
            "^linux-headers-{}-[0-9]+-{}$",
            line.replace('.', "\\."),
            flavour
        );
        let listed = stdout(Command::new("apt-cache").args(["search", "--names-only", &pattern]));
        let other = listed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|name| {
                let n: u32 = name
                    .strip_prefix(&format!("linux-headers-{line}-"))?
                    .strip_suffix(&format!("-{flavour}"))?
                    .parse()
                    .ok()?;
                (n.to_string() != abi).then_some((n, name.to_string()))
            })
            .min()
            .unwrap_or_else(|| {
                panic!("the package lists name no other ABI than {current}: {listed}")
            })
            .1;
        let cache = debs_dir().join("other-abi");
        std::fs::create_dir_all(&cache).unwrap();
        let lock = std::fs::File::create(cache.join(".lock")).unwrap();
        lock.lock().unwrap();
        let find = || {
            std::fs::read_dir(&cache)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{other}_")))
                })
        };
        if find().is_none() {
            let out = run(Command::new("apt-get")
                .args(["download", "-qq", &other])
                .current_dir(&cache));
            assert!(
                out.status.success(),
                "apt-get download {other}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let deb = find().expect("the downloaded headers package");
        let root = tempfile::tempdir().unwrap();
        stdout(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(root.path()),
        );
        let release = other.trim_start_matches("linux-headers-");
        let dir = root.path().join(format!("usr/src/linux-headers-{release}"));
        (root, dir)
    });
    dir.clone()
}

fn kabi(args: &[&std::ffi::OsStr]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_kfleet"))
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .arg("kabi")
        .args(args))
}

/// The example module built for this machine's Debian ABI, checked against real kernels: exact
/// for its own tree (so the vermagic kfleet derives from the tree's .config is the one kbuild
/// wrote), compatible with a kernel that exports the same CRCs under another release, and not
/// compatible with the other ABI Debian ships, whose CRCs differ (a `compatible` there would load
/// a module that oopses). The imports kfleet reads are the ones `modprobe --dump-modversions`
/// lists.
#[test]
fn kabi_verdicts_on_a_real_module_against_real_debian_kernels() {
    let (kdir, id) = kernel_tree();
    let out = tempfile::tempdir().unwrap();
    let result = build_module(&kdir, &id, &id.kernel_version, out.path());
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let asset = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.xz"))
        .expect("the packaged module");
    let unpacked = tempfile::tempdir().unwrap();
    stdout(
        Command::new("tar")
            .arg("-xJf")
            .arg(&asset)
            .arg("-C")
            .arg(unpacked.path()),
    );
    let ko = unpacked.path().join(format!("{MODULE}.ko"));

    let dumped = stdout(
        Command::new(kmod_tool("modprobe"))
            .arg("--dump-modversions")
            .arg(&ko),
    );
    let imports = kabi(&["imports".as_ref(), ko.as_os_str()]);
    assert!(imports.status.success());
    let listed: Vec<String> = String::from_utf8_lossy(&imports.stdout)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    let mut expected: Vec<String> = dumped.lines().map(str::to_string).collect();
    assert!(expected.len() > 3, "{dumped}");
    let mut sorted = listed.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected);

    let own = kabi(&[
        "check".as_ref(),
        ko.as_os_str(),
        "--kernel-tree".as_ref(),
        kdir.as_os_str(),
    ]);
    let own_text = String::from_utf8_lossy(&own.stdout);
    assert_eq!(
        own.status.code(),
        Some(0),
        "{own_text}{}",
        String::from_utf8_lossy(&own.stderr)
    );
    assert!(
        own_text.starts_with("exact: built for this kernel"),
        "{own_text}"
    );

    let other = other_abi_tree();
    let verdict = kabi(&[
        "check".as_ref(),
        ko.as_os_str(),
        "--kernel-tree".as_ref(),
        other.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(
        verdict.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&verdict.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&verdict.stdout).unwrap();
    assert_eq!(json["verdict"], "incompatible");
    let reason = json["reason"].as_str().unwrap();
    assert!(
        reason.contains("the module was built against CRC") || reason.contains("does not export"),
        "{reason}"
    );

    let vermagic = kfleet::kmod::vermagic(&std::fs::read(&ko).unwrap())
        .unwrap()
        .unwrap()
        .replace(&id.kernel_version, "6.1.0-999-amd64");
    let same_crcs = kabi(&[
        "check".as_ref(),
        ko.as_os_str(),
        "--symvers".as_ref(),
        kdir.join("Module.symvers").as_os_str(),
        "--vermagic".as_ref(),
        vermagic.as_ref(),
    ]);
    let text = String::from_utf8_lossy(&same_crcs.stdout);
    assert_eq!(same_crcs.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with(&format!(
            "compatible: all {} imported symbols",
            listed.len()
        )),
        "{text}"
    );
}

/// A fake root whose kernel `release` has the symbol versions of the tree `symvers_from` and the
/// configuration of `config_from`: its `lib/modules/RELEASE/build` links to its headers, as the
/// headers package installs them.
fn root_with_kernel(release: &str, symvers_from: &Path, config_from: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join(format!("usr/src/linux-headers-{release}"));
    std::fs::create_dir_all(tree.join("include/generated")).unwrap();
    std::fs::copy(
        symvers_from.join("Module.symvers"),
        tree.join("Module.symvers"),
    )
    .unwrap();
    std::fs::copy(config_from.join(".config"), tree.join(".config")).unwrap();
    std::fs::write(
        tree.join("include/generated/utsrelease.h"),
        format!("#define UTS_RELEASE \"{release}\"\n"),
    )
    .unwrap();
    let modules = root.path().join(format!("lib/modules/{release}"));
    std::fs::create_dir_all(&modules).unwrap();
    std::os::unix::fs::symlink(
        format!("/usr/src/linux-headers-{release}"),
        modules.join("build"),
    )
    .unwrap();
    root
}

/// `install --kabi` takes a module built for another release of the kernel when the kernel
/// exports its imports with the same CRCs, into weak-updates/ where depmod finds it; against the
/// symbol versions of Debian's other ABI it refuses and names the symbol, and without --kabi the
/// release must match as before. Nothing is written when it refuses.
#[test]
fn install_kabi_takes_a_module_whose_symbol_versions_fit_and_refuses_one_that_does_not() {
    let (_, package, id) = built_package();
    let (kdir, _) = kernel_tree();
    let release = "6.1.0-999-amd64";

    let same = root_with_kernel(release, &kdir, &kdir);
    let plain = install_cmd(package, same.path(), release, &["--no-load"]);
    assert_eq!(
        plain.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let out = install_cmd(package, same.path(), release, &["--no-load", "--kabi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ko = same
        .path()
        .join(format!("lib/modules/{release}/weak-updates/{MODULE}.ko"));
    assert!(ko.is_file(), "{}", String::from_utf8_lossy(&out.stdout));
    let dep = std::fs::read_to_string(
        same.path()
            .join(format!("lib/modules/{release}/modules.dep")),
    )
    .unwrap();
    assert!(dep.contains(&format!("weak-updates/{MODULE}.ko:")), "{dep}");

    let other = root_with_kernel(release, &other_abi_tree(), &kdir);
    let out = install_cmd(package, other.path(), release, &["--no-load", "--kabi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "is built for {}, and its symbol versions do not fit {release}",
            id.kernel_version
        )) && stderr.contains("module_layout"),
        "{stderr}"
    );
    assert!(
        !other
            .path()
            .join(format!("lib/modules/{release}/weak-updates"))
            .exists()
    );

    // EL's way: /boot/symvers-RELEASE.xz beside /boot/config-RELEASE, no headers installed.
    let el = tempfile::tempdir().unwrap();
    let boot = el.path().join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::copy(kdir.join(".config"), boot.join(format!("config-{release}"))).unwrap();
    let symvers = boot.join(format!("symvers-{release}"));
    std::fs::copy(kdir.join("Module.symvers"), &symvers).unwrap();
    stdout(Command::new("xz").arg(&symvers));
    let out = install_cmd(package, el.path(), release, &["--no-load", "--kabi"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        el.path()
            .join(format!("lib/modules/{release}/weak-updates/{MODULE}.ko"))
            .is_file()
    );

    // The running kernel without headers or /boot/symvers: its /proc/kallsyms lists each CRC as
    // the value of the absolute symbol __crc_SYMBOL (EL 8 and 9 kernels do).
    let kallsyms_root = |edit: &dyn Fn(&str, u32) -> String| {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("proc/sys/kernel")).unwrap();
        std::fs::create_dir_all(root.path().join("boot")).unwrap();
        std::fs::write(
            root.path().join("proc/sys/kernel/osrelease"),
            format!("{release}\n"),
        )
        .unwrap();
        std::fs::copy(
            kdir.join(".config"),
            root.path().join(format!("boot/config-{release}")),
        )
        .unwrap();
        let symvers = kfleet::kabi::Symvers::read(&kdir.join("Module.symvers")).unwrap();
        let mut text = String::from("ffffffff81000000 T _stext\nffffffff81000100 T _printk\n");
        for (symbol, crc) in symvers.crcs() {
            text.push_str(&edit(symbol, *crc));
        }
        std::fs::write(root.path().join("proc/kallsyms"), text).unwrap();
        root
    };
    let fits = kallsyms_root(&|symbol, crc| format!("00000000{crc:08x} A __crc_{symbol}\n"));
    let out = install_cmd(package, fits.path(), release, &["--no-load", "--kabi"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        fits.path()
            .join(format!("lib/modules/{release}/weak-updates/{MODULE}.ko"))
            .is_file()
    );
    let changed = kallsyms_root(&|symbol, crc| {
        let crc = if symbol == "module_layout" {
            crc ^ 1
        } else {
            crc
        };
        format!("00000000{crc:08x} A __crc_{symbol}\n")
    });
    let out = install_cmd(package, changed.path(), release, &["--no-load", "--kabi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("module_layout"), "{stderr}");
    let hidden = kallsyms_root(&|symbol, _| format!("0000000000000000 A __crc_{symbol}\n"));
    let out = install_cmd(package, hidden.path(), release, &["--no-load", "--kabi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("kptr_restrict"), "{stderr}");
    let kcrctab = kallsyms_root(&|symbol, _| format!("ffffffff82a01234 r __crc_{symbol}\n"));
    let out = install_cmd(package, kcrctab.path(), release, &["--no-load", "--kabi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("__kcrctab"), "{stderr}");
    assert!(
        !kcrctab
            .path()
            .join(format!("lib/modules/{release}/weak-updates"))
            .exists()
    );

    let bare = tempfile::tempdir().unwrap();
    let out = install_cmd(package, bare.path(), release, &["--no-load", "--kabi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("no symbol versions of 6.1.0-999-amd64"),
        "{stderr}"
    );
}

/// A headers package of kernel `release` whose built tree has the symbol table, `.config` and
/// randstruct seed of `tree` (a real Debian tree): what Debian ships, under another release.
fn headers_deb_like(dir: &Path, release: &str, tree: &Path) -> PathBuf {
    let read = |rel: &str| std::fs::read_to_string(tree.join(rel)).unwrap();
    let base = format!("usr/src/linux-headers-{release}");
    let uts = format!("#define UTS_RELEASE \"{release}\"\n");
    let (symvers, config) = (read("Module.symvers"), read(".config"));
    let seed = std::fs::read_to_string(tree.join("include/generated/randstruct_hash.h")).ok();
    let paths = [
        format!("{base}/Module.symvers"),
        format!("{base}/.config"),
        format!("{base}/include/generated/utsrelease.h"),
        format!("{base}/include/generated/randstruct_hash.h"),
    ];
    let mut entries: Vec<(&str, Result<&str, &str>)> = vec![
        (&paths[0], Err(&symvers)),
        (&paths[1], Err(&config)),
        (&paths[2], Err(&uts)),
    ];
    if let Some(seed) = &seed {
        entries.push((&paths[3], Err(seed)));
    }
    make_deb(dir, &format!("linux-headers-{release}"), &entries)
}

/// `kabi check --kernel KEY` reads the kernel's ABI from the headers package the chain fetches
/// (the real Debian `.deb`, unpacked by kfleet itself): exact for the package's own kernel, kept
/// so a second check needs no mirror; compatible with a kernel whose package carries the same
/// CRCs under another release; not compatible with one carrying the other Debian ABI's CRCs.
#[test]
fn kabi_check_reads_the_kernel_from_its_headers_package_through_the_chain() {
    let (_, package, id) = built_package();
    let (_debs, mirror) = twin_and_other_mirror();
    let state = tempfile::tempdir().unwrap();
    let check = |kernel: &str| {
        run(Command::new(env!("CARGO_BIN_EXE_kfleet"))
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .env("KFLEET_STATE_DIR", state.path())
            .env("KFLEET_HEADER_SOURCES", mirror.sources.path())
            .args(["--json", "kabi", "check"])
            .arg(package)
            .args(["--kernel", kernel]))
    };
    let verdict = |out: &Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
    };
    let own = check(&id.key());
    assert_eq!(
        own.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    assert_eq!(verdict(&own)["verdict"], "exact", "{}", verdict(&own));
    let kept = std::fs::read_dir(state.path().join("kabi"))
        .unwrap()
        .count();
    assert_eq!(kept, 1, "the kernel's ABI is kept");

    let twin = check("debian/12/x86_64/6.1.0-99-amd64");
    assert_eq!(
        twin.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&twin.stderr)
    );
    assert_eq!(
        verdict(&twin)["verdict"],
        "compatible",
        "{}",
        verdict(&twin)
    );

    let other = check("debian/12/x86_64/6.1.0-98-amd64");
    assert_eq!(
        other.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let v = verdict(&other);
    assert_eq!(v["verdict"], "incompatible", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("CRC"), "{v}");

    // The kept ABI answers without the mirror.
    drop(mirror);
    let again = run(Command::new(env!("CARGO_BIN_EXE_kfleet"))
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("KFLEET_STATE_DIR", state.path())
        // The built-in chain: the public archives, which this machine cannot reach.
        .env_remove("KFLEET_HEADER_SOURCES")
        .args(["kabi", "check"])
        .arg(package)
        .args(["--kernel", &id.key()]));
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// `report --kabi`: a kernel without an artifact whose headers carry the CRCs the release's
/// artifact was built against is `compatible` (counted as covered, with the artifact it uses);
/// one whose CRCs differ stays uncovered. The artifact's record is the one the build job writes
/// (`kabi imports --json` of the package), downloaded from the release.
#[test]
fn report_kabi_counts_kernels_another_artifact_loads_into() {
    let (_, package, id) = built_package();
    let (kdir, _) = kernel_tree();
    let debs = tempfile::tempdir().unwrap();
    let twin = headers_deb_like(debs.path(), "6.1.0-99-amd64", &kdir);
    let other = headers_deb_like(debs.path(), "6.1.0-98-amd64", &other_abi_tree());
    let other_twin = headers_deb_like(debs.path(), "6.1.0-96-amd64", &other_abi_tree());
    let name = package.file_name().unwrap().to_string_lossy().into_owned();
    let record = kabi_record(package);
    // `--sandbox .` serves the release from here, the record's bytes from assets/.
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("assets")).unwrap();
    std::fs::write(
        work.path().join(format!("assets/{name}.kabi.json")),
        &record,
    )
    .unwrap();
    let mirror = debian_mirror_with(
        &[twin, other, other_twin],
        vec![(format!("/records/{name}.kabi.json"), record)],
    );
    write_kabi_release(work.path(), &mirror, &name);
    write_debian_fleet(
        &work.path().join("fleet.csv"),
        id,
        &[
            (id.kernel_version.as_str(), 10),
            ("6.1.0-99-amd64", 3),
            ("6.1.0-98-amd64", 2),
            ("6.1.0-96-amd64", 1),
        ],
    );
    let report = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "report",
            "-i",
            "fleet.csv",
            "-r",
            "releases.json",
            "--format",
            "json",
        ];
        args.extend(extra);
        kfleet_json_in(work.path(), &mirror, &args)
    };
    let status = |r: &serde_json::Value, kernel: &str| {
        let row = r["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["kernel_version"] == kernel)
            .unwrap()
            .clone();
        (
            row["status"].as_str().unwrap().to_string(),
            row["asset"].clone(),
        )
    };
    let plain = report(&[]);
    assert_ne!(status(&plain, "6.1.0-99-amd64").0, "compatible");
    assert_eq!(plain["summary"]["covered_nodes"], 10);
    assert_eq!(plain["summary"]["batch_plan"]["builds"], 3);

    let checked = report(&["--kabi"]);
    assert_eq!(
        status(&checked, "6.1.0-99-amd64"),
        (
            "compatible".to_string(),
            serde_json::Value::from(name.clone())
        )
    );
    let (other, _) = status(&checked, "6.1.0-98-amd64");
    assert!(other == "missing" || other == "long-tail", "{other}");
    let s = &checked["summary"];
    assert_eq!(
        s["covered_nodes"], 13,
        "compatible nodes count as covered: {s}"
    );
    assert_eq!(s["statuses"]["compatible"]["nodes"], 3);
    assert_eq!(s["node_coverage_pct"], 81.25);
    // 6.1.0-98 and 6.1.0-96 export the same CRCs for what the driver imports: one build serves
    // both, and the plan says so.
    let plan = &s["batch_plan"];
    assert_eq!(plan["builds"], 1, "{plan}");
    assert_eq!(
        plan["identities"],
        serde_json::json!(["debian/12/x86_64/6.1.0-98-amd64"])
    );
    assert_eq!(plan["nodes_gained"], 3, "{plan}");
    assert_eq!(plan["node_coverage_after_pct"], 100.0, "{plan}");

    // dispatch --kabi builds exactly that one kernel: 6.1.0-99 (missing) needs no build, and
    // 6.1.0-96 (long tail) is served by 6.1.0-98's.
    let dispatch = |which: &str| {
        let out = run(Command::new(env!("CARGO_BIN_EXE_kfleet"))
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .env("KFLEET_STATE_DIR", work.path().join("state"))
            .env("KFLEET_HEADER_SOURCES", mirror.sources.path())
            .current_dir(work.path())
            .args(["dispatch", which, "--kabi", "-i", "fleet.csv"])
            .args(["--sandbox", ".", "--dry-run", "--format", "json"]));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let decisions: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let keys: Vec<String> = decisions
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["key"].as_str().unwrap().to_string())
            .collect();
        (keys, stderr)
    };
    let (keys, stderr) = dispatch("--missing");
    assert_eq!(keys, ["debian/12/x86_64/6.1.0-98-amd64"], "{stderr}");
    assert!(stderr.contains("6.1.0-99-amd64: "), "{stderr}");
    let (keys, stderr) = dispatch("--long-tail");
    assert!(keys.is_empty(), "{keys:?}");
    assert!(
        stderr.contains("debian/12/x86_64/6.1.0-96-amd64: the build for debian/12/x86_64/6.1.0-98-amd64 serves it too"),
        "{stderr}"
    );

    // The dashboard with --kabi: the same verdict from a forge that serves the release (the
    // sandbox, its assets' bytes from a directory).
    let served = tempfile::tempdir().unwrap();
    let record = kabi_record(package);
    std::fs::write(served.path().join(format!("{name}.kabi.json")), record).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(async {
        use kfleet::forge::{Forge, RetryPolicy, SandboxForge, SandboxOptions};
        let releases =
            kfleet::forge::read_release_file(&work.path().join("releases.json")).unwrap();
        let sandbox = std::sync::Arc::new(
            SandboxForge::start(
                releases,
                SandboxOptions {
                    assets_dir: Some(served.path().to_path_buf()),
                    ..SandboxOptions::default()
                },
                RetryPolicy::default(),
            )
            .await
            .unwrap(),
        );
        let forge: std::sync::Arc<dyn Forge> = sandbox.clone();
        let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, MODULE).unwrap();
        let dashboard_state = tempfile::tempdir().unwrap();
        let planner = kfleet::builds::Planner::new(
            forge.clone(),
            template.clone(),
            kfleet::builds::PlannerConfig {
                workflow: "build-driver.yml".into(),
                git_ref: "main".into(),
                driver_version: "1.4.2".into(),
                deadline: std::time::Duration::from_secs(900),
                cancel_on_timeout: false,
                claim_lease: std::time::Duration::from_secs(60),
                dispatch_interval: std::time::Duration::ZERO,
                batch_workflow: "build-batch.yml".into(),
            },
            kfleet::state::Store::in_dir(dashboard_state.path())
                .await
                .unwrap(),
        );
        let fleet =
            kfleet::inventory::read_inventory(&[work.path().join("fleet.csv")], false).unwrap();
        let dash = kfleet::tui::Dashboard {
            forge,
            planner: std::sync::Arc::new(planner),
            fleet: std::sync::RwLock::new(std::sync::Arc::new(fleet)),
            live: Vec::new(),
            upcoming_lines: 10,
            kabi: Some(dashboard_state.path().join("kabi")),
            template,
            options: kfleet::coverage::CoverageOptions::default(),
            workflow: "build-driver.yml".into(),
            deadline: std::time::Duration::from_secs(900),
            driver_version: None,
            inventories: Vec::new(),
            resolver: kfleet::headers::Resolver::new(
                kfleet::headers::Chain::load(mirror.sources.path()).unwrap(),
                kfleet::headers::ResolverOptions::default(),
            )
            .unwrap(),
        };
        dash.report().await.unwrap()
    });
    let twin = report
        .identities
        .iter()
        .find(|r| r.kernel_version == "6.1.0-99-amd64")
        .unwrap();
    assert_eq!(twin.status, kfleet::coverage::CoverageStatus::Compatible);
    assert_eq!(twin.asset.as_deref(), Some(name.as_str()));
}

/// `upcoming --kabi`: a kernel the archive already publishes on the fleet's line, with no artifact
/// of its own, that the fleet's artifact loads into (the same CRCs for every symbol it imports)
/// is `upcoming-compatible`, with the artifact; one whose CRCs differ stays `upcoming-missing`.
#[test]
fn upcoming_kabi_marks_published_kernels_an_artifact_already_serves() {
    let (_, package, id) = built_package();
    let (kdir, _) = kernel_tree();
    let debs = tempfile::tempdir().unwrap();
    let twin = headers_deb_like(debs.path(), "6.1.0-99-amd64", &kdir);
    let other = headers_deb_like(debs.path(), "6.1.0-98-amd64", &other_abi_tree());
    let name = package.file_name().unwrap().to_string_lossy().into_owned();
    let record = kabi_record(package);
    let mirror = debian_mirror_with(
        &[twin, other],
        vec![(format!("/records/{name}.kabi.json"), record)],
    );
    let work = tempfile::tempdir().unwrap();
    write_kabi_release(work.path(), &mirror, &name);
    std::fs::write(
        work.path().join("fleet.csv"),
        format!(
            "distribution,distro_version,architecture,kernel_version\ndebian,12,{},{}\n",
            id.architecture.as_str(),
            id.kernel_version
        ),
    )
    .unwrap();
    let upcoming = |extra: &[&str]| -> Vec<(String, String, Option<String>)> {
        let mut args = vec![
            "upcoming",
            "-i",
            "fleet.csv",
            "-r",
            "releases.json",
            "--format",
            "json",
        ];
        args.extend(extra);
        let json = kfleet_json_in(work.path(), &mirror, &args);
        let mut rows: Vec<_> = json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["identity"]["kernel_version"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    r["status"].as_str().unwrap().to_string(),
                    r["served_by"].as_str().map(str::to_string),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(
        upcoming(&[]),
        [
            ("6.1.0-98-amd64".into(), "upcoming-missing".into(), None),
            ("6.1.0-99-amd64".into(), "upcoming-missing".into(), None),
        ]
    );
    assert_eq!(
        upcoming(&["--kabi"]),
        [
            ("6.1.0-98-amd64".into(), "upcoming-missing".into(), None),
            (
                "6.1.0-99-amd64".into(),
                "upcoming-compatible".into(),
                Some(name.clone())
            ),
        ]
    );
}

/// Debian's 7.x kernels are built without `CONFIG_MODVERSIONS` (their `Module.symvers` lists
/// every CRC as 0): the kernel then checks the whole vermagic, release included, so no build
/// serves two of them. `report --kabi` must neither call one compatible nor let one build stand
/// for several in the batch plan, though their (zero) CRCs are all equal.
#[test]
fn report_kabi_never_shares_a_build_between_kernels_without_modversions() {
    let (_, package, id) = built_package();
    let (kdir, _) = kernel_tree();
    let unversioned = unversioned_tree(&kdir);
    let debs = tempfile::tempdir().unwrap();
    let kernels = ["6.1.0-95-amd64", "6.1.0-94-amd64"];
    let packages = kernels.map(|k| headers_deb_like(debs.path(), k, unversioned.path()));
    let name = package.file_name().unwrap().to_string_lossy().into_owned();
    let mirror = debian_mirror_with(
        &packages,
        vec![(format!("/records/{name}.kabi.json"), kabi_record(package))],
    );
    let work = tempfile::tempdir().unwrap();
    write_kabi_release(work.path(), &mirror, &name);
    write_debian_fleet(
        &work.path().join("fleet.csv"),
        id,
        &[
            (id.kernel_version.as_str(), 10),
            (kernels[0], 3),
            (kernels[1], 2),
        ],
    );
    let report = kfleet_json_in(
        work.path(),
        &mirror,
        &[
            "report",
            "-i",
            "fleet.csv",
            "-r",
            "releases.json",
            "--kabi",
            "--target",
            "100",
            "--format",
            "json",
        ],
    );
    assert_eq!(report["summary"]["covered_nodes"], 10, "{report}");
    let plan = &report["summary"]["batch_plan"];
    assert_eq!(plan["builds"], 2, "one build per kernel: {plan}");
    let mut planned: Vec<&str> = plan["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    planned.sort();
    assert_eq!(
        planned,
        [
            "debian/12/x86_64/6.1.0-94-amd64",
            "debian/12/x86_64/6.1.0-95-amd64"
        ]
    );
}

/// A copy of `tree` as Debian builds its 7.x kernels: `CONFIG_MODVERSIONS` off and every CRC of
/// `Module.symvers` 0.
fn unversioned_tree(tree: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let symvers = std::fs::read_to_string(tree.join("Module.symvers")).unwrap();
    let zeroed: String = symvers
        .lines()
        .map(|l| format!("0x00000000{}\n", &l[10..]))
        .collect();
    std::fs::write(copy.path().join("Module.symvers"), zeroed).unwrap();
    let config = std::fs::read_to_string(tree.join(".config")).unwrap();
    assert!(config.contains("\nCONFIG_MODVERSIONS=y\n"));
    std::fs::write(
        copy.path().join(".config"),
        config.replace(
            "\nCONFIG_MODVERSIONS=y\n",
            "\n# CONFIG_MODVERSIONS is not set\n",
        ),
    )
    .unwrap();
    if let Ok(seed) = std::fs::read(tree.join("include/generated/randstruct_hash.h")) {
        std::fs::create_dir_all(copy.path().join("include/generated")).unwrap();
        std::fs::write(
            copy.path().join("include/generated/randstruct_hash.h"),
            seed,
        )
        .unwrap();
    }
    copy
}

/// In an OCI store the record is a layer of the driver's manifest: `store push` reads it off
/// the package (what `kabi imports --json` writes), skopeo sees the layer, and `report --kabi`
/// against the store (no release, no listing file) finds the kernel with the same CRCs
/// compatible and keeps the one with others uncovered.
#[test]
fn an_oci_store_carries_the_kabi_record_and_report_kabi_reads_it() {
    let (_, package, id) = built_package();
    let (_debs, mirror) = twin_and_other_mirror();
    let registry = registry::Registry::start(false);
    let store = registry.store("fleet/kdriver");
    let work = tempfile::tempdir().unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_kfleet"))
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("KFLEET_REGISTRY_USERNAME")
        .env_remove("KFLEET_REGISTRY_PASSWORD")
        .args([
            "store",
            "push",
            "--store",
            &store,
            "--driver-version",
            "1.4.2",
        ])
        .args(["--module", MODULE])
        .arg(package));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The layer, as a client kfleet did not write reads it.
    let name = package.file_name().unwrap().to_string_lossy().into_owned();
    let tag = name.replace('_', "__").replace('+', "_p");
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &registry.docker("fleet/kdriver", &tag),
    ]));
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let record = layers
        .iter()
        .find(|l| l["mediaType"] == "application/vnd.kfleet.kabi.v1+json")
        .unwrap_or_else(|| panic!("no kABI layer: {manifest}"));
    let expected = kabi_record(package);
    let expected: serde_json::Value = serde_json::from_slice(&expected).unwrap();
    let blob = tempfile::tempdir().unwrap();
    let copied = run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(registry.docker("fleet/kdriver", &tag))
        .arg(format!("dir:{}", blob.path().display())));
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let digest = record["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let bytes = std::fs::read(blob.path().join(digest)).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
        expected,
        "the layer is the package's record"
    );
    assert!(
        record["annotations"]["org.opencontainers.image.title"]
            .as_str()
            .unwrap()
            .ends_with(".kabi.json")
    );

    write_debian_fleet(
        &work.path().join("fleet.csv"),
        id,
        &[
            (id.kernel_version.as_str(), 10),
            ("6.1.0-99-amd64", 3),
            ("6.1.0-98-amd64", 2),
        ],
    );
    let report_through = |store: &str| {
        let out = kfleet_in(
            work.path(),
            &mirror,
            &[
                "report",
                "-i",
                "fleet.csv",
                "--store",
                store,
                "--kabi",
                "--format",
                "json",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (json, stderr)
    };
    let (report, _) = report_through(&store);
    let status = |kernel: &str| {
        report["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["kernel_version"] == kernel)
            .map(|row| (row["status"].clone(), row["asset"].clone()))
            .unwrap()
    };
    assert_eq!(
        status("6.1.0-99-amd64"),
        ("compatible".into(), serde_json::Value::from(name.clone())),
        "{report}"
    );
    let (other, _) = status("6.1.0-98-amd64");
    assert!(other == "missing" || other == "long-tail", "{other}");
    assert_eq!(report["summary"]["covered_nodes"], 13);

    // `upcoming --kabi` reads the record from the store too: a fleet on the built kernel only,
    // the archive publishing -98 and -99 on its line.
    write_debian_fleet(
        &work.path().join("head.csv"),
        id,
        &[(id.kernel_version.as_str(), 4)],
    );
    let upcoming = kfleet_json_in(
        work.path(),
        &mirror,
        &[
            "upcoming", "-i", "head.csv", "--store", &store, "--kabi", "--format", "json",
        ],
    );
    let mut rows: Vec<(String, String, Option<String>)> = upcoming["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["identity"]["kernel_version"].as_str().unwrap().into(),
                r["status"].as_str().unwrap().into(),
                r["served_by"].as_str().map(str::to_string),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("6.1.0-98-amd64".into(), "upcoming-missing".into(), None),
            (
                "6.1.0-99-amd64".into(),
                "upcoming-compatible".into(),
                Some(name.clone())
            ),
        ],
        "{upcoming}"
    );

    // A registry that serves a record over the 4 MiB bound, whether its manifest says so or
    // claims the real record's size: nothing is compatible through it, and the report says why.
    let big = vec![b' '; (4 << 20) + 1];
    for (repository, declared) in [("fleet/oversize", big.len()), ("fleet/liar", bytes.len())] {
        for descriptor in std::iter::once(&manifest["config"]).chain(layers) {
            let digest = descriptor["digest"].as_str().unwrap();
            let bytes =
                std::fs::read(blob.path().join(digest.trim_start_matches("sha256:"))).unwrap();
            assert_eq!(registry.put_blob(repository, &bytes), digest);
        }
        let mut hostile = manifest.clone();
        let kabi = hostile["layers"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|l| l["mediaType"] == "application/vnd.kfleet.kabi.v1+json")
            .unwrap();
        kabi["digest"] = registry.put_blob(repository, &big).into();
        kabi["size"] = declared.into();
        registry.put_manifest(repository, &tag, &hostile);
        let (report, stderr) = report_through(&registry.store(repository));
        assert_eq!(
            report["summary"]["covered_nodes"], 10,
            "{repository}: {report}"
        );
        assert!(
            stderr.contains(&name) && stderr.contains("4194304"),
            "{repository}: {stderr}"
        );
    }
}

/// A fleet of Debian 12 nodes on `id`'s architecture: `nodes` of each kernel.
fn write_debian_fleet(path: &Path, id: &KernelIdentity, kernels: &[(&str, usize)]) {
    let mut fleet = String::from("distribution,distro_version,architecture,kernel_version\n");
    for (kernel, nodes) in kernels {
        for _ in 0..*nodes {
            fleet.push_str(&format!(
                "debian,12,{},{kernel}\n",
                id.architecture.as_str()
            ));
        }
    }
    std::fs::write(path, fleet).unwrap();
}

/// A mirror of two Debian headers packages like the built module's kernel's: 6.1.0-99 with its
/// CRCs, 6.1.0-98 with the other real Debian ABI's. The directory holds the packages.
fn twin_and_other_mirror() -> (tempfile::TempDir, Mirror) {
    let (kdir, _) = kernel_tree();
    let debs = tempfile::tempdir().unwrap();
    let twin = headers_deb_like(debs.path(), "6.1.0-99-amd64", &kdir);
    let other = headers_deb_like(debs.path(), "6.1.0-98-amd64", &other_abi_tree());
    let mirror = debian_mirror_with(&[twin, other], Vec::new());
    (debs, mirror)
}

/// A release whose one artifact is `name`, with its kABI record, both served by `mirror`.
fn write_kabi_release(dir: &Path, mirror: &Mirror, name: &str) {
    std::fs::write(
        dir.join("releases.json"),
        serde_json::json!([{
            "id": 1, "tag_name": "1.4.2", "draft": false, "prerelease": false,
            "created_at": "2026-11-20T00:00:00Z", "published_at": "2026-11-20T00:00:00Z",
            "assets": [
                {"id": 10, "name": name, "browser_download_url": format!("{}/pool/{name}", mirror.base)},
                {"id": 11, "name": format!("{name}.kabi.json"),
                 "browser_download_url": format!("{}/records/{name}.kabi.json", mirror.base)}
            ]
        }])
        .to_string(),
    )
    .unwrap();
}

/// kfleet in `dir` with `mirror`'s header chain, its standard output read as JSON.
fn kfleet_json_in(dir: &Path, mirror: &Mirror, args: &[&str]) -> serde_json::Value {
    let out = kfleet_in(dir, mirror, args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The binary run in `dir` on `mirror`'s header chain, with its state under `dir`.
fn kfleet_in(dir: &Path, mirror: &Mirror, args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_kfleet"))
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("KFLEET_STATE_DIR", dir.join("state"))
        .env("KFLEET_HEADER_SOURCES", mirror.sources.path())
        .current_dir(dir)
        .args(args))
}

/// The record the build job writes beside a package (`kfleet --json kabi imports PACKAGE`).
fn kabi_record(package: &std::path::Path) -> Vec<u8> {
    let out = run(Command::new(env!("CARGO_BIN_EXE_kfleet"))
        .args(["--json", "kabi", "imports"])
        .arg(package));
    assert!(out.status.success());
    out.stdout
}
