//! The files of an RPM package, read without rpm: the lead, the signature header (padded to 8
//! bytes) and the header are skipped by their own lengths, and the payload, a compressed cpio
//! archive (`newc`), is read entry by entry. Only regular files are handed on; every length
//! comes from the package and is checked against what is there.

use std::io::Read;

/// An RPM's lead starts with these bytes.
pub const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
const LEAD_LEN: usize = 96;
const HEADER_MAGIC: [u8; 4] = [0x8e, 0xad, 0xe8, 0x01];
/// The longest file name read from the archive.
const MAX_NAME: u32 = 4096;

/// Where a header starting at `at` ends: its 16-byte preamble, 16 bytes per index entry, and its
/// data.
fn header_end(bytes: &[u8], at: usize, what: &str) -> Result<usize, String> {
    let preamble = bytes
        .get(at..at + 16)
        .ok_or_else(|| format!("the package ends inside its {what}"))?;
    if preamble[..4] != HEADER_MAGIC {
        return Err(format!("no {what} at byte {at}"));
    }
    let word = |i: usize| {
        u32::from_be_bytes([
            preamble[i],
            preamble[i + 1],
            preamble[i + 2],
            preamble[i + 3],
        ])
    };
    let (entries, data) = (word(8) as usize, word(12) as usize);
    entries
        .checked_mul(16)
        .and_then(|e| e.checked_add(data))
        .and_then(|n| n.checked_add(at + 16))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| format!("the {what} runs past the end of the package"))
}

/// The compressed payload of the RPM `bytes`.
fn payload(bytes: &[u8]) -> Result<&[u8], String> {
    Ok(Parts::of(bytes)?.payload)
}

/// An RPM cut into its signature header, header (with its magic, as signed) and payload.
pub struct Parts<'a> {
    pub signature: &'a [u8],
    pub header: &'a [u8],
    pub payload: &'a [u8],
}

// rpm's tags: signature header (rpmtag.h's RPMSIGTAG_*) and header (RPMTAG_*).
const SIG_DSAHEADER: u32 = 267;
const SIG_RSAHEADER: u32 = 268;
const SIG_OPENPGP: u32 = 278;
const SIG_PGP: u32 = 1002;
const SIG_GPG: u32 = 1005;
const TAG_PAYLOADDIGEST: u32 = 5092;
const TAG_PAYLOADDIGESTALGO: u32 = 5093;
const TYPE_INT32: u32 = 4;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_BIN: u32 = 7;

impl<'a> Parts<'a> {
    pub fn of(bytes: &'a [u8]) -> Result<Parts<'a>, String> {
        if !bytes.starts_with(&LEAD_MAGIC) || bytes.len() < LEAD_LEN {
            return Err("not an RPM package".into());
        }
        let signature_end = header_end(bytes, LEAD_LEN, "signature header")?;
        let header_start = signature_end.next_multiple_of(8);
        let end = header_end(bytes, header_start, "header")?;
        Ok(Parts {
            signature: &bytes[LEAD_LEN..signature_end],
            header: &bytes[header_start..end],
            payload: &bytes[end..],
        })
    }

    /// The OpenPGP signature of the header alone, as bytes.
    pub fn header_signature(&self) -> Option<Vec<u8>> {
        [SIG_OPENPGP, SIG_RSAHEADER, SIG_DSAHEADER]
            .into_iter()
            .find_map(|tag| binary(self.signature, tag))
    }

    /// The legacy OpenPGP signature of header and payload together.
    pub fn whole_signature(&self) -> Option<Vec<u8>> {
        [SIG_PGP, SIG_GPG]
            .into_iter()
            .find_map(|tag| binary(self.signature, tag))
    }

    /// Whether the header carries the payload's digest (rpm 4.14 and later).
    pub fn has_payload_digest(&self) -> bool {
        entry(self.header, TAG_PAYLOADDIGEST).is_some()
    }

    /// Compares the payload with the digest its (signed) header carries.
    pub fn check_payload_digest(&self) -> Result<(), String> {
        use sha2::Digest;
        let expected = entry(self.header, TAG_PAYLOADDIGEST)
            .filter(|(kind, _, _)| *kind == TYPE_STRING_ARRAY)
            .and_then(|(_, data, _)| data.split(|&b| b == 0).next())
            .map(|hex| String::from_utf8_lossy(hex).to_ascii_lowercase())
            .ok_or("its signed header carries no payload digest")?;
        let algorithm = entry(self.header, TAG_PAYLOADDIGESTALGO)
            .filter(|(kind, _, _)| *kind == TYPE_INT32)
            .and_then(|(_, data, _)| data.get(..4))
            .map_or(8, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let actual = match algorithm {
            8 => crate::fsio::hex(&sha2::Sha256::digest(self.payload)),
            10 => crate::fsio::hex(&sha2::Sha512::digest(self.payload)),
            other => {
                return Err(format!(
                    "its payload digest uses algorithm {other}, which kfleet does not check"
                ));
            }
        };
        if actual != expected {
            return Err(
                "its payload is not the one its signed header names (payload digest mismatch)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The (type, data from the entry's offset on, count) of `tag` in a header blob (with magic).
fn entry(blob: &[u8], tag: u32) -> Option<(u32, &[u8], usize)> {
    let word = |at: usize| {
        blob.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let entries = word(8)? as usize;
    let store = 16usize.checked_add(entries.checked_mul(16)?)?;
    (0..entries).find_map(|i| {
        let at = 16 + 16 * i;
        (word(at)? == tag).then_some(())?;
        let (kind, offset, count) = (
            word(at + 4)?,
            word(at + 8)? as usize,
            word(at + 12)? as usize,
        );
        let data = blob.get(store.checked_add(offset)?..)?;
        Some((kind, data, count))
    })
}

/// A binary entry's bytes, or the first of a string array's, base64-decoded (rpm 6's
/// `OPENPGP`).
fn binary(blob: &[u8], tag: u32) -> Option<Vec<u8>> {
    let (kind, data, count) = entry(blob, tag)?;
    match kind {
        TYPE_BIN => data.get(..count).map(<[u8]>::to_vec),
        TYPE_STRING_ARRAY => {
            use base64::Engine;
            let first = data.split(|&b| b == 0).next()?;
            base64::engine::general_purpose::STANDARD.decode(first).ok()
        }
        _ => None,
    }
}

/// The payload's decompressor, told by its first bytes.
fn decoder(payload: &[u8]) -> Result<Box<dyn Read + '_>, String> {
    Ok(if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(payload))
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(payload).map_err(|e| e.to_string())?)
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(payload))
    } else if payload.starts_with(b"BZh") {
        Box::new(bzip2::read::MultiBzDecoder::new(payload))
    } else if payload.starts_with(b"0707") {
        Box::new(payload)
    } else {
        return Err("the payload's compression is not one of xz, zstd, gzip or bzip2".into());
    })
}

fn skip(reader: &mut impl Read, n: u64) -> Result<(), String> {
    let copied = std::io::copy(&mut reader.take(n), &mut std::io::sink())
        .map_err(|e| format!("reading the payload: {e}"))?;
    if copied < n {
        return Err("the payload ends inside an entry".into());
    }
    Ok(())
}

/// Hands each regular file of the RPM `bytes` to `visit` with its path (`./usr/src/...`) and a
/// reader of its contents; the payload is unpacked to at most `limit` bytes.
pub fn for_each_file(
    bytes: &[u8],
    limit: u64,
    mut visit: impl FnMut(&str, &mut dyn Read) -> Result<(), String>,
) -> Result<(), String> {
    let mut reader = decoder(payload(bytes)?)?.take(limit);
    loop {
        let mut header = [0u8; 110];
        reader
            .read_exact(&mut header)
            .map_err(|_| "the payload ends before its trailer".to_string())?;
        match &header[..6] {
            b"070701" | b"070702" => {}
            b"07070X" => {
                return Err(
                    "a stripped cpio payload (rpm's large-file format) is not read".to_string(),
                );
            }
            _ => return Err("the payload is not a cpio (newc) archive".into()),
        }
        let field = |i: usize| -> Result<u32, String> {
            std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a damaged cpio header".to_string())
        };
        let (mode, size, name_len) = (field(1)?, field(6)?, field(11)?);
        if name_len == 0 || name_len > MAX_NAME {
            return Err("a cpio entry's name is empty or too long".into());
        }
        let mut name = vec![0u8; name_len as usize];
        reader
            .read_exact(&mut name)
            .map_err(|_| "the payload ends inside an entry's name".to_string())?;
        skip(&mut reader, ((4 - (110 + name_len) % 4) % 4).into())?;
        let name = String::from_utf8_lossy(name.strip_suffix(&[0]).unwrap_or(&name)).into_owned();
        if name == "TRAILER!!!" {
            // The rest (cpio's padding) is read too: the compressed stream's own checks (xz's
            // CRC, its end) then say whether the payload arrived whole.
            std::io::copy(&mut reader, &mut std::io::sink())
                .map_err(|e| format!("the payload is damaged: {e}"))?;
            return Ok(());
        }
        let mut data = (&mut reader).take(size.into());
        if mode & 0o170000 == 0o100000 {
            visit(&name, &mut data)?;
        }
        let left = data.limit();
        skip(&mut reader, left)?;
        skip(&mut reader, ((4 - size % 4) % 4).into())?;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An RPM of the real layout (lead, empty signature header padded to 8, empty header, and
    /// an xz cpio `newc` payload) holding `files` as regular files and one directory.
    pub(crate) fn rpm_with(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut cpio = Vec::new();
        let mut entry = |name: &str, mode: u32, data: &[u8]| {
            let name_len = name.len() + 1;
            cpio.extend_from_slice(
                format!(
                    "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{name_len:08x}{:08x}",
                    1, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, 0
                )
                .as_bytes(),
            );
            cpio.extend_from_slice(name.as_bytes());
            cpio.push(0);
            cpio.resize(cpio.len().next_multiple_of(4), 0);
            cpio.extend_from_slice(data);
            cpio.resize(cpio.len().next_multiple_of(4), 0);
        };
        entry("./usr/src/kernels", 0o040755, b"");
        for (name, data) in files {
            entry(name, 0o100644, data);
        }
        entry("TRAILER!!!", 0, b"");
        let mut out = LEAD_MAGIC.to_vec();
        out.resize(LEAD_LEN, 0);
        // Signature header: no entries, 5 bytes of data, so the padding to 8 matters.
        out.extend_from_slice(&HEADER_MAGIC);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&5u32.to_be_bytes());
        out.extend_from_slice(&[0; 5]);
        out.resize(out.len().next_multiple_of(8), 0);
        out.extend_from_slice(&HEADER_MAGIC);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(cpio.as_slice(), 6)
            .read_to_end(&mut xz)
            .unwrap();
        out.extend_from_slice(&xz);
        out
    }

    #[test]
    fn regular_files_are_read_and_damage_is_named() {
        let rpm = rpm_with(&[("./usr/src/kernels/k/a", b"alpha"), ("./b", b"bee!x")]);
        let mut seen = Vec::new();
        for_each_file(&rpm, 1 << 20, |name, r| {
            let mut text = String::new();
            r.read_to_string(&mut text).map_err(|e| e.to_string())?;
            seen.push((name.to_string(), text));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                ("./usr/src/kernels/k/a".to_string(), "alpha".to_string()),
                ("./b".to_string(), "bee!x".to_string())
            ]
        );
        let cut = &rpm[..rpm.len() - 20];
        assert!(for_each_file(cut, 1 << 20, |_, _| Ok(())).is_err());
        assert!(
            for_each_file(&rpm, 64, |_, _| Ok(()))
                .unwrap_err()
                .contains("ends")
        );
        let mut lying = rpm.clone();
        lying[96 + 12..96 + 16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            for_each_file(&lying, 1 << 20, |_, _| Ok(()))
                .unwrap_err()
                .contains("runs past the end")
        );
        assert_eq!(
            for_each_file(b"!<arch>\n", 1 << 20, |_, _| Ok(())).unwrap_err(),
            "not an RPM package"
        );
    }
}
