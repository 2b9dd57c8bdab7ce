//! A kernel's ABI (the vermagic modules built against it get, and the CRC of every symbol it
//! exports) read from the headers package the chain finds for it: a `.deb`'s data archive or an
//! RPM's payload holds the built tree (`usr/src/linux-headers-RELEASE/`, `usr/src/kernels/RELEASE/`
//! or SUSE's `usr/src/linux-V-R-obj/ARCH/FLAVOUR/`: `Module.symvers`, `.config`, the release in
//! `include/generated/utsrelease.h`). Kept per kernel under the cache directory, so a fleet's
//! kernels are fetched once.

use super::{HeaderError, Resolver};
use crate::identity::KernelIdentity;
use crate::kabi::{KernelAbi, Symvers};
use crate::text::Cause;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The largest package read, and the most a data archive may unpack to.
const MAX_PACKAGE: u64 = 256 << 20;
const MAX_UNPACKED: u64 = 1 << 30;
/// The largest tree file kept (a distribution's `Module.symvers` is about 2 MiB).
const MAX_TREE_FILE: u64 = 64 << 20;

/// What the cache keeps per kernel.
#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    key: String,
    vermagic: String,
    crcs: HashMap<String, u32>,
}

impl Resolver {
    /// The ABI of kernel `id`: from `cache/KEY.json` when it was read before, else from the
    /// headers packages the chain finds, downloaded one at a time until one holds the built
    /// tree (architecture packages first: Debian's `-common` package, the largest, holds none).
    pub async fn kernel_abi(
        &self,
        id: &KernelIdentity,
        cache: &Path,
    ) -> Result<KernelAbi, HeaderError> {
        let key = id.key();
        let kept_path = cache.join(format!("{}.json", key.replace('/', "_")));
        if let Ok(bytes) = std::fs::read(&kept_path)
            && let Ok(kept) = serde_json::from_slice::<Kept>(&bytes)
            && kept.key == key
        {
            return Ok(KernelAbi {
                vermagic: kept.vermagic,
                symvers: Symvers::from_crcs(kept.crcs),
            });
        }
        let work = tempfile::tempdir().map_err(|source| HeaderError::Write {
            path: std::env::temp_dir().display().to_string(),
            source,
        })?;
        let resolution = self.resolved(id, &[]).await?;
        let parts = super::KernelParts::of(id);
        let mut packages: Vec<&super::HeaderPackage> = resolution.packages.iter().collect();
        packages.sort_by_key(|p| p.name.contains("-common"));
        let unread = |message: String| HeaderError::Download {
            url: key.clone(),
            source: Cause::from(message),
        };
        let mut found = None;
        for package in &packages {
            let path = self
                .download(&resolution, package, &parts, work.path())
                .await?;
            let tree = crate::fsio::off_runtime(move || Ok(tree_files(&path)))
                .await
                .map_err(|e| HeaderError::Download {
                    url: key.clone(),
                    source: Cause::of(e),
                })?
                .map_err(|e| unread(format!("{}: {e}", package.name)))?;
            if let Some(tree) = tree {
                found = Some(tree);
                break;
            }
        }
        let Some(tree) = found else {
            return Err(unread(format!(
                "no headers package holds a built tree (Module.symvers, .config, utsrelease.h); read: {}",
                packages
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let symvers =
            Symvers::parse(&format!("{key}: Module.symvers"), &tree.symvers).map_err(|e| {
                HeaderError::Download {
                    url: key.clone(),
                    source: Cause::of(e),
                }
            })?;
        let abi = KernelAbi::new(
            &tree.release,
            &tree.config,
            tree.randstruct_seed.as_deref(),
            symvers,
        );
        if abi.vermagic.split_whitespace().next() != Some(id.kernel_version.as_str()) {
            return Err(unread(format!(
                "the headers package is for {}, not {}",
                tree.release, id.kernel_version
            )));
        }
        let kept = Kept {
            key: key.clone(),
            vermagic: abi.vermagic.clone(),
            crcs: abi.symvers.crcs().clone(),
        };
        if let Ok(json) = serde_json::to_vec(&kept) {
            let dir = cache.to_path_buf();
            // A cache that cannot be written only costs a fetch next time.
            let _ = crate::fsio::off_runtime(move || {
                crate::fsio::create_private_dir(&dir)?;
                crate::fsio::write_private(&kept_path, &json)
            })
            .await;
        }
        Ok(abi)
    }
}

/// The files of a built tree a package holds.
struct TreeFiles {
    symvers: String,
    config: String,
    release: String,
    randstruct_seed: Option<String>,
}

/// The files of a built tree that are read, by their path inside the tree.
const WANTED: [&str; 4] = [
    "Module.symvers",
    ".config",
    "include/generated/utsrelease.h",
    "include/generated/randstruct_hash.h",
];

/// The wanted files a package holds, by the tree they are in: a `.deb`'s
/// `usr/src/linux-headers-RELEASE/`, EL's `usr/src/kernels/RELEASE/`, SUSE's
/// `usr/src/linux-VERSION-RELEASE-obj/ARCH/FLAVOUR/`.
#[derive(Default)]
struct Trees(HashMap<String, HashMap<&'static str, String>>);

impl Trees {
    /// Keeps `reader`'s text if `name` is a wanted file under `usr/src/`.
    fn offer(&mut self, name: &str, reader: &mut dyn Read) -> Result<(), String> {
        let Some(inside) = name.trim_start_matches("./").strip_prefix("usr/src/") else {
            return Ok(());
        };
        let Some((root, wanted)) = WANTED.iter().find_map(|w| {
            inside
                .strip_suffix(w)
                .and_then(|root| root.strip_suffix('/'))
                .filter(|root| !root.is_empty())
                .map(|root| (root, *w))
        }) else {
            return Ok(());
        };
        let mut text = String::new();
        reader
            .take(MAX_TREE_FILE)
            .read_to_string(&mut text)
            .map_err(|e| format!("{name}: {e}"))?;
        self.0
            .entry(root.to_string())
            .or_default()
            .insert(wanted, text);
        Ok(())
    }

    /// The tree that holds `Module.symvers`, `.config` and `utsrelease.h`, if one does.
    fn built(self) -> Result<Option<TreeFiles>, String> {
        let Some((symvers, config, uts, mut rest)) = self.0.into_values().find_map(|mut f| {
            let symvers = f.remove("Module.symvers")?;
            let config = f.remove(".config")?;
            let uts = f.remove("include/generated/utsrelease.h")?;
            Some((symvers, config, uts, f))
        }) else {
            return Ok(None);
        };
        let Some(release) = crate::kabi::define(&uts, "UTS_RELEASE") else {
            return Err("include/generated/utsrelease.h defines no UTS_RELEASE".into());
        };
        let randstruct_seed = rest
            .remove("include/generated/randstruct_hash.h")
            .and_then(|h| crate::kabi::define(&h, "RANDSTRUCT_HASHED_SEED"));
        Ok(Some(TreeFiles {
            symvers,
            config,
            release,
            randstruct_seed,
        }))
    }
}

/// The built tree in the `.deb` or `.rpm` at `path`, if it holds one.
fn tree_files(path: &Path) -> Result<Option<TreeFiles>, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > MAX_PACKAGE {
        return Err(format!("larger than {MAX_PACKAGE} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut trees = Trees::default();
    if bytes.starts_with(&super::rpm_payload::LEAD_MAGIC) {
        super::rpm_payload::for_each_file(&bytes, MAX_UNPACKED, |name, reader| {
            trees.offer(name, reader)
        })?;
        return trees.built();
    }
    if !bytes.starts_with(b"!<arch>\n") {
        return Err("neither a Debian nor an RPM package".into());
    }
    let (member, data) = deb_data(&bytes)?;
    let reader: Box<dyn Read + '_> = match member.rsplit('.').next() {
        Some("xz") => Box::new(liblzma::read::XzDecoder::new_multi_decoder(data)),
        Some("zst") => Box::new(zstd::stream::read::Decoder::new(data).map_err(|e| e.to_string())?),
        Some("gz") => Box::new(flate2::read::GzDecoder::new(data)),
        Some("tar") => Box::new(data),
        _ => return Err(format!("{member}: an unknown compression")),
    };
    let mut archive = tar::Archive::new(reader.take(MAX_UNPACKED));
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        trees.offer(&name, &mut entry)?;
    }
    trees.built()
}

/// The `data.tar*` member of a `.deb` (an `ar` archive): its name and bytes.
fn deb_data(bytes: &[u8]) -> Result<(String, &[u8]), String> {
    let mut at = 8;
    while at + 60 <= bytes.len() {
        let header = &bytes[at..at + 60];
        if &header[58..60] != b"`\n" {
            return Err(format!("a damaged ar member header at byte {at}"));
        }
        let name = String::from_utf8_lossy(&header[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: usize = String::from_utf8_lossy(&header[48..58])
            .trim()
            .parse()
            .map_err(|_| format!("{name}: a damaged ar member size"))?;
        let start = at + 60;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| format!("{name}: the member runs past the end of the package"))?;
        if name.starts_with("data.tar") {
            return Ok((name, &bytes[start..end]));
        }
        at = end + (size % 2);
    }
    Err("no data.tar member".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::rpm_payload::tests::rpm_with;

    fn tree_of(rpm: &[u8]) -> Option<TreeFiles> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.rpm");
        std::fs::write(&path, rpm).unwrap();
        tree_files(&path).unwrap()
    }

    /// EL's kernel-devel and SUSE's kernel-default-devel hold their built trees in their own
    /// places; a package with only part of a tree (SUSE's noarch source tree) holds none.
    #[test]
    fn rpm_headers_packages_give_their_built_tree() {
        let symvers = "0x9060323f\tmodule_layout\tvmlinux\tEXPORT_SYMBOL\t\n";
        let el = rpm_with(&[
            (
                "./usr/src/kernels/5.14.0-427.13.1.el9_4.x86_64/Module.symvers",
                symvers.as_bytes(),
            ),
            (
                "./usr/src/kernels/5.14.0-427.13.1.el9_4.x86_64/.config",
                b"CONFIG_MODVERSIONS=y\n",
            ),
            (
                "./usr/src/kernels/5.14.0-427.13.1.el9_4.x86_64/include/generated/utsrelease.h",
                b"#define UTS_RELEASE \"5.14.0-427.13.1.el9_4.x86_64\"\n",
            ),
        ]);
        let tree = tree_of(&el).unwrap();
        assert_eq!(tree.release, "5.14.0-427.13.1.el9_4.x86_64");
        assert_eq!(tree.symvers, symvers);
        let obj = "./usr/src/linux-6.4.0-150600.23.73-obj/x86_64/default";
        let suse = rpm_with(&[
            (&format!("{obj}/Module.symvers"), symvers.as_bytes()),
            (&format!("{obj}/.config"), b"CONFIG_MODVERSIONS=y\n"),
            (
                &format!("{obj}/include/generated/utsrelease.h"),
                b"#define UTS_RELEASE \"6.4.0-150600.23.73-default\"\n",
            ),
        ]);
        assert_eq!(
            tree_of(&suse).unwrap().release,
            "6.4.0-150600.23.73-default"
        );
        let source_tree = rpm_with(&[("./usr/src/linux-6.4.0-150600.23.73/Makefile", b"x")]);
        assert!(tree_of(&source_tree).is_none());
        // Files of two trees are never mixed into one.
        let mixed = rpm_with(&[
            ("./usr/src/kernels/a/Module.symvers", symvers.as_bytes()),
            ("./usr/src/kernels/b/.config", b"CONFIG_MODVERSIONS=y\n"),
            (
                "./usr/src/kernels/b/include/generated/utsrelease.h",
                b"#define UTS_RELEASE \"b\"\n",
            ),
        ]);
        assert!(tree_of(&mixed).is_none());
    }
}
