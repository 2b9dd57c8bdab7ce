//! What a kernel module file says about itself: the `key=value` strings of its `.modinfo` ELF
//! section (`vermagic`, `name`, `version`, `license`, ...), read without `modinfo`, and the
//! symbols it imports with the CRCs it was built against (its modversions).

use crate::text::Cause;
use object::{Object, ObjectSection};

#[derive(Debug, thiserror::Error)]
pub enum ModInfoError {
    #[error("not an ELF object: {0}")]
    NotElf(#[source] Cause),
    #[error("has no .modinfo section; not a kernel module")]
    NoModInfo,
    #[error("its {section} section is damaged: {reason}")]
    Damaged {
        section: &'static str,
        reason: String,
    },
}

/// Every `key=value` entry of the module's `.modinfo`, in file order.
pub fn modinfo(bytes: &[u8]) -> Result<Vec<(String, String)>, ModInfoError> {
    let file = object::File::parse(bytes).map_err(|e| ModInfoError::NotElf(Cause::of(e)))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or(ModInfoError::NoModInfo)?;
    let data = section
        .data()
        .map_err(|e| ModInfoError::NotElf(Cause::of(e)))?;
    Ok(data
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let text = String::from_utf8_lossy(entry);
            let (key, value) = text.split_once('=')?;
            Some((key.to_string(), value.to_string()))
        })
        .collect())
}

/// The module's `vermagic` (`6.1.0-18-amd64 SMP preempt mod_unload modversions`).
pub fn vermagic(bytes: &[u8]) -> Result<Option<String>, ModInfoError> {
    Ok(modinfo(bytes)?
        .into_iter()
        .find(|(k, _)| k == "vermagic")
        .map(|(_, v)| v))
}

/// One entry of `__versions`: `struct modversion_info { unsigned long crc; char name[64 -
/// sizeof(unsigned long)]; }`, 64 bytes whatever the word size.
const VERSION_ENTRY: usize = 64;

/// The symbols the module imports, each with the CRC of its prototype in the kernel the module
/// was built against, in file order: the `__versions` section (`CONFIG_MODVERSIONS`), and the
/// extended `__version_ext_crcs`/`__version_ext_names` pair of kernels since 6.13, where names
/// are not cut at 56 bytes. Empty for a module built without modversions.
pub fn modversions(bytes: &[u8]) -> Result<Vec<(String, u32)>, ModInfoError> {
    let file = object::File::parse(bytes).map_err(|e| ModInfoError::NotElf(Cause::of(e)))?;
    let little = file.is_little_endian();
    let word = if file.is_64() { 8 } else { 4 };
    let data = |name: &str| -> Result<Option<&[u8]>, ModInfoError> {
        match file.section_by_name(name) {
            None => Ok(None),
            Some(section) => section.data().map(Some).map_err(|e| ModInfoError::Damaged {
                section: "modversions",
                reason: e.to_string(),
            }),
        }
    };
    let u32_at = |b: &[u8]| {
        let four = [b[0], b[1], b[2], b[3]];
        if little {
            u32::from_le_bytes(four)
        } else {
            u32::from_be_bytes(four)
        }
    };
    let mut out = Vec::new();
    if let Some(versions) = data("__versions")? {
        if versions.len() % VERSION_ENTRY != 0 {
            return Err(ModInfoError::Damaged {
                section: "__versions",
                reason: format!("{} bytes, not whole 64-byte entries", versions.len()),
            });
        }
        for entry in versions.chunks_exact(VERSION_ENTRY) {
            // The CRC is an unsigned long holding 32 bits: its low half sits first on a
            // little-endian machine, last on a big-endian one.
            let crc = if little || word == 4 {
                u32_at(&entry[..4])
            } else {
                u32_at(&entry[4..8])
            };
            let name = &entry[word..];
            let end = name
                .iter()
                .position(|&b| b == 0)
                .ok_or(ModInfoError::Damaged {
                    section: "__versions",
                    reason: "a symbol name without its terminating NUL".into(),
                })?;
            out.push((String::from_utf8_lossy(&name[..end]).into_owned(), crc));
        }
    }
    if let (Some(crcs), Some(names)) = (data("__version_ext_crcs")?, data("__version_ext_names")?) {
        let mut names = names.split(|&b| b == 0).filter(|n| !n.is_empty());
        for crc in crcs.chunks_exact(4) {
            let name = names.next().ok_or(ModInfoError::Damaged {
                section: "__version_ext_names",
                reason: "fewer names than CRCs".into(),
            })?;
            out.push((String::from_utf8_lossy(name).into_owned(), u32_at(crc)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_elf_is_an_error() {
        assert!(matches!(modinfo(b"hello"), Err(ModInfoError::NotElf(_))));
    }
}
