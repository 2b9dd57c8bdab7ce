//! A kernel's ABI (the vermagic modules built against it get, and the CRC of every symbol it
//! exports) read from the headers package the chain finds for it: the `.deb`'s data archive holds
//! the built tree (`usr/src/linux-headers-RELEASE/`: `Module.symvers`, `.config`, the release in
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
        let resolution = self.resolved(id).await?;
        let mut packages: Vec<&super::HeaderPackage> = resolution.packages.iter().collect();
        packages.sort_by_key(|p| p.name.contains("-common"));
        let unread = |message: String| HeaderError::Download {
            url: key.clone(),
            source: Cause::from(message),
        };
        let mut found = None;
        for package in &packages {
            let path = self.download(&resolution, package, work.path()).await?;
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

/// The built tree in a `.deb` at `path`, if it holds one.
fn tree_files(path: &Path) -> Result<Option<TreeFiles>, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > MAX_PACKAGE {
        return Err(format!("larger than {MAX_PACKAGE} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if !bytes.starts_with(b"!<arch>\n") {
        return Err(
            "not a Debian package (reading symbol versions from RPM packages is not supported yet)"
                .into(),
        );
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
    let mut files: HashMap<&'static str, String> = HashMap::new();
    const WANTED: [&str; 4] = [
        "Module.symvers",
        ".config",
        "include/generated/utsrelease.h",
        "include/generated/randstruct_hash.h",
    ];
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
        let Some(tree_path) = name
            .trim_start_matches("./")
            .strip_prefix("usr/src/")
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, inside)| inside.to_string())
        else {
            continue;
        };
        let Some(wanted) = WANTED.iter().find(|w| **w == tree_path) else {
            continue;
        };
        let mut text = String::new();
        (&mut entry)
            .take(MAX_TREE_FILE)
            .read_to_string(&mut text)
            .map_err(|e| format!("{name}: {e}"))?;
        files.insert(wanted, text);
    }
    let (Some(symvers), Some(config), Some(uts)) = (
        files.remove("Module.symvers"),
        files.remove(".config"),
        files.remove("include/generated/utsrelease.h"),
    ) else {
        return Ok(None);
    };
    let Some(release) = crate::kabi::define(&uts, "UTS_RELEASE") else {
        return Err("include/generated/utsrelease.h defines no UTS_RELEASE".into());
    };
    let randstruct_seed = files
        .remove("include/generated/randstruct_hash.h")
        .and_then(|h| crate::kabi::define(&h, "RANDSTRUCT_HASHED_SEED"));
    Ok(Some(TreeFiles {
        symvers,
        config,
        release,
        randstruct_seed,
    }))
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
