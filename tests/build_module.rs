//! The build step end to end: `assets/build-module.sh` builds `assets/example-module` against the
//! Debian kernel headers installed on this machine (`.ci/run` installs `linux-headers-amd64` or
//! `-arm64`) into a real `.ko`, packaged under the naming template with its sha256, and kfleet reads
//! the asset name back to the same identity.

use kfleet::identity::{AssetTemplate, DEFAULT_ASSET_TEMPLATE, KernelIdentity};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODULE: &str = "kdriver";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The installed headers tree and its identity: `KFLEET_KERNEL_DIR`, or the tree Debian's
/// `linux-headers-{arch}` metapackage depends on.
fn installed_headers() -> (PathBuf, KernelIdentity) {
    let deb_arch = String::from_utf8(run(Command::new("dpkg").arg("--print-architecture")).stdout)
        .expect("dpkg prints the architecture")
        .trim()
        .to_string();
    let kdir = match std::env::var_os("KFLEET_KERNEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let meta = format!("linux-headers-{deb_arch}");
            let out = run(Command::new("dpkg-query").args(["-W", "-f", "${Depends}", &meta]));
            let depends = String::from_utf8_lossy(&out.stdout);
            let tree = depends
                .split([',', ' '])
                .find(|d| d.starts_with("linux-headers-") && d.ends_with(&format!("-{deb_arch}")))
                .unwrap_or_else(|| {
                    panic!(
                        "Debian's {meta} is not installed ({}); .ci/run installs it \
                         (apt-get install {meta}), or point KFLEET_KERNEL_DIR at a kernel build tree",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                });
            Path::new("/usr/src").join(tree)
        }
    };
    let uts = std::fs::read_to_string(kdir.join("include/generated/utsrelease.h"))
        .unwrap_or_else(|e| panic!("{} is not a kernel build tree: {e}", kdir.display()));
    let kernel = uts
        .split('"')
        .nth(1)
        .expect("utsrelease.h defines UTS_RELEASE")
        .to_string();
    let os = std::fs::read_to_string("/etc/os-release").expect("/etc/os-release");
    let version = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .map(|v| v.trim_matches('"').to_string())
        .expect("VERSION_ID in /etc/os-release");
    let arch = match deb_arch.as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        other => panic!("no kfleet architecture for Debian's {other}"),
    };
    let key = format!("debian/{version}/{arch}/{kernel}");
    let id = KernelIdentity::from_key(&key)
        .unwrap_or_else(|e| panic!("the installed headers' identity {key} is not valid: {e}"));
    (kdir, id)
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
        .env_remove("ASSET_NAME");
    cmd
}

#[test]
fn example_module_builds_into_a_packaged_ko_for_the_installed_headers() {
    let (kdir, id) = installed_headers();
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
    assert_eq!(parsed.checked.identity.as_ref(), Some(&id));

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
    let tar = run(Command::new("tar")
        .arg("-xJf")
        .arg(&asset)
        .arg("-C")
        .arg(unpacked.path()));
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let ko = unpacked.path().join(format!("{MODULE}.ko"));
    let modinfo = run(Command::new("modinfo").arg("-F").arg("vermagic").arg(&ko));
    assert!(
        modinfo.status.success(),
        "modinfo {}: {}",
        ko.display(),
        String::from_utf8_lossy(&modinfo.stderr)
    );
    let vermagic = String::from_utf8_lossy(&modinfo.stdout);
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
    let (kdir, id) = installed_headers();
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
    let (kdir, id) = installed_headers();
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
    let (kdir, id) = installed_headers();
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

/// The real header packages for this machine's kernel headers, downloaded by `.ci/run` into
/// `KFLEET_DEBS` (default `~/.cache/kfleet-debs`): the flavour package, its common package and kbuild.
fn real_header_debs() -> Vec<PathBuf> {
    let dir = std::env::var_os("KFLEET_DEBS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kfleet-debs")))
        .expect("HOME or KFLEET_DEBS is set");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; .ci/run downloads the header packages there (apt-get download)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    assert_eq!(
        debs.len(),
        3,
        "headers, common and kbuild in {}: {debs:?}",
        dir.display()
    );
    debs
}

fn control_field(deb: &Path, field: &str) -> String {
    let out = run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field));
    assert!(out.status.success(), "dpkg-deb -f {}", deb.display());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The shipped build path with real packages and no container: `kfleet headers fetch` resolves
/// the kernel's headers from an APT repository on 127.0.0.1 that serves Debian's real `.deb`
/// files under a `Packages.xz` made from their control fields, downloads and verifies them; then
/// `build-module.sh --extract` unpacks them and builds the example module into a real `.ko`.
#[test]
fn fetched_real_debian_packages_build_the_module_without_a_container() {
    use std::io::Write as _;
    let debs = real_header_debs();
    let (_, installed) = installed_headers();
    let flavour_deb = debs
        .iter()
        .find(|d| {
            let p = control_field(d, "Package");
            p.starts_with("linux-headers-") && !p.ends_with("-common")
        })
        .expect("a linux-headers-VERSION-FLAVOUR package");
    let kernel = control_field(flavour_deb, "Package")
        .trim_start_matches("linux-headers-")
        .to_string();
    let key = format!(
        "debian/{}/{}/{kernel}",
        installed.distro_version,
        installed.architecture.as_str()
    );
    let id = KernelIdentity::from_key(&key).unwrap();
    let deb_arch = installed.architecture.debian_name();

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
    files.insert(
        format!("/debian/dists/{codename}/main/binary-{deb_arch}/Packages.xz"),
        xz,
    );
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

    let mut chain = tempfile::NamedTempFile::new().unwrap();
    write!(
        chain,
        "[[sources]]\nfamily = \"debian\"\nname = \"local-mirror\"\nkind = \"apt-repo\"\nurls = [\"{base}/debian/\"]\nsuites = [\"{{codename}}\"]\ncomponents = [\"main\"]\n"
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let headers = work.path().join("headers");
    let fetched = run(Command::new(env!("CARGO_BIN_EXE_kfleet"))
        .args(["headers", "fetch", &key, "--sources"])
        .arg(chain.path())
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
    let want: Vec<String> = debs
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, want, "the headers package and the two it depends on");

    let out = work.path().join("out");
    let mut built = build_command(Headers::Extract(&headers), &id, &id.kernel_version, &out);
    let result = run(&mut built);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, MODULE).unwrap();
    let asset = out.join(template.render(&id, "1.4.2"));
    let unpacked = tempfile::tempdir().unwrap();
    assert!(
        run(Command::new("tar")
            .arg("-xJf")
            .arg(&asset)
            .arg("-C")
            .arg(unpacked.path()))
        .status
        .success()
    );
    let modinfo = run(Command::new("modinfo")
        .args(["-F", "vermagic"])
        .arg(unpacked.path().join(format!("{MODULE}.ko"))));
    let vermagic = String::from_utf8_lossy(&modinfo.stdout);
    assert_eq!(vermagic.split_whitespace().next(), Some(kernel.as_str()));
}
