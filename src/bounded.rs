//! Bounded decompression: compressed input from files and the network is read through a cap on
//! the bytes it may expand to (and, for line-oriented text, on the length of one line), so a
//! small hostile file cannot take the machine's memory or minutes of CPU.

use std::io::Read;

/// How far a compressed input may expand.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most bytes the output may hold.
    pub max_bytes: u64,
    /// Longest line (bytes between newlines), for line-oriented text.
    pub max_line: Option<usize>,
}

impl Limits {
    /// `ratio` times the compressed size, within `floor..=ceiling`.
    pub fn by_ratio(compressed: u64, ratio: u64, floor: u64, ceiling: u64) -> Self {
        Self {
            max_bytes: compressed.saturating_mul(ratio).clamp(floor, ceiling),
            max_line: None,
        }
    }

    pub fn with_max_line(mut self, max_line: usize) -> Self {
        self.max_line = Some(max_line);
        self
    }
}

/// Why a bounded read stopped.
#[derive(Debug, thiserror::Error)]
pub enum BoundedError {
    #[error("expands past {max} bytes (a compression bomb, or an input too large for this use)")]
    TooLarge { max: u64 },
    #[error("has a line longer than {max} bytes; it is not line-oriented text")]
    LineTooLong { max: usize },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A file's bytes within `max_bytes`; a `.xz` or `.gz` file (EL's `/boot/symvers-RELEASE.xz`, a
/// compressed module) decompressed.
pub fn read_file(path: &std::path::Path, max_bytes: u64) -> Result<Vec<u8>, BoundedError> {
    let file = std::fs::File::open(path)?;
    let limits = Limits {
        max_bytes,
        max_line: None,
    };
    let name = path.to_string_lossy();
    if name.ends_with(".xz") {
        read_to_end(liblzma::read::XzDecoder::new_multi_decoder(file), limits)
    } else if name.ends_with(".gz") {
        read_to_end(flate2::read::MultiGzDecoder::new(file), limits)
    } else {
        read_to_end(file, limits)
    }
}

/// Reads `reader` to its end within `limits`.
pub fn read_to_end(mut reader: impl Read, limits: Limits) -> Result<Vec<u8>, BoundedError> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut line = 0usize;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if out.len() as u64 + n as u64 > limits.max_bytes {
            return Err(BoundedError::TooLarge {
                max: limits.max_bytes,
            });
        }
        let chunk = &buf[..n];
        if let Some(max) = limits.max_line {
            match memchr::memrchr(b'\n', chunk) {
                Some(last) => {
                    let first = memchr::memchr(b'\n', chunk).unwrap_or(last);
                    let longest_inside = chunk[first..=last]
                        .split(|b| *b == b'\n')
                        .map(<[u8]>::len)
                        .max()
                        .unwrap_or(0);
                    if line + first > max || longest_inside > max {
                        return Err(BoundedError::LineTooLong { max });
                    }
                    line = n - last - 1;
                }
                None => line += n,
            }
            if line > max {
                return Err(BoundedError::LineTooLong { max });
            }
        }
        out.extend_from_slice(chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bomb_stops_at_the_cap_and_honest_input_passes() {
        let zeros = std::io::repeat(0).take(10 << 20);
        let err = read_to_end(zeros, Limits::by_ratio(1, 1, 1 << 20, 1 << 20)).unwrap_err();
        assert!(matches!(err, BoundedError::TooLarge { max } if max == 1 << 20));

        let one_line = std::io::repeat(b'a').take(3 << 20);
        let limits = Limits::by_ratio(1, 1, 64 << 20, 64 << 20).with_max_line(1 << 20);
        let err = read_to_end(one_line, limits).unwrap_err();
        assert!(matches!(err, BoundedError::LineTooLong { .. }), "{err}");

        let text = "a,b\n".repeat(100_000);
        let got = read_to_end(text.as_bytes(), limits).unwrap();
        assert_eq!(got.len(), text.len());
    }
}
