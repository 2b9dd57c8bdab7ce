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

fn build_module(kdir: &Path, id: &KernelIdentity, kernel_version: &str, out: &Path) -> Output {
    run(&mut build_command(kdir, id, kernel_version, out))
}

fn build_command(kdir: &Path, id: &KernelIdentity, kernel_version: &str, out: &Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("assets/build-module.sh"))
        .arg("--kernel-dir")
        .arg(kdir)
        .arg("--module")
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
    let result =
        run(build_command(&kdir, &id, &id.kernel_version, out.path()).env("ASSET_NAME", &name));
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(out.path().join(&name).is_file());
    assert!(out.path().join(format!("{name}.sha256")).is_file());
}
