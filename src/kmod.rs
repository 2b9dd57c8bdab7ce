//! What a kernel module file says about itself: the `key=value` strings of its `.modinfo` ELF
//! section (`vermagic`, `name`, `version`, `license`, ...), read without `modinfo`.

use object::{Object, ObjectSection};

#[derive(Debug, thiserror::Error)]
pub enum ModInfoError {
    #[error("not an ELF object: {0}")]
    NotElf(String),
    #[error("has no .modinfo section; not a kernel module")]
    NoModInfo,
}

/// Every `key=value` entry of the module's `.modinfo`, in file order.
pub fn modinfo(bytes: &[u8]) -> Result<Vec<(String, String)>, ModInfoError> {
    let file = object::File::parse(bytes).map_err(|e| ModInfoError::NotElf(e.to_string()))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or(ModInfoError::NoModInfo)?;
    let data = section
        .data()
        .map_err(|e| ModInfoError::NotElf(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_elf_is_an_error() {
        assert!(matches!(modinfo(b"hello"), Err(ModInfoError::NotElf(_))));
    }
}
