//! Durable file output shared by every module: atomic replace (temp file, fsync, rename, fsync of
//! the directory), private directories (0700, this user's, checked before use), random tokens from
//! the operating system and lowercase hex for digests.

use std::io::Write as _;
use std::path::Path;

/// The directory a path lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Fsyncs a directory so a rename or a new file in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees half a file and a failure leaves any previous file intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`] for state and private listings: the file is 0600 whatever it was.
/// Runs file work (fsync'd writes) on tokio's blocking pool and waits for it, so it never holds
/// an async worker.
pub async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_as(path, true, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], streaming the content through `fill`.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write_atomic_as(path, false, fill)
}

fn write_atomic_as(
    path: &Path,
    private: bool,
    fill: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = parent_dir(path);
    let tmp = tempfile::Builder::new()
        .prefix(".kfleet-")
        .tempfile_in(dir)?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        fill(&mut w)?;
        w.flush()?;
    }
    // Temp files are created 0600 (kept for private files); an output is an ordinary file, or
    // keeps the mode it had.
    #[cfg(unix)]
    if !private {
        use std::os::unix::fs::PermissionsExt;
        let permissions = std::fs::metadata(path)
            .map(|m| m.permissions())
            .unwrap_or_else(|_| std::fs::Permissions::from_mode(0o644));
        tmp.as_file().set_permissions(permissions)?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Creates `dir` (and missing parents) for state or private listings: a new directory is made
/// 0700; an existing one is used as it is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Why a directory another user could have prepared must not be used.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeDir {
    #[error("{0} is a symbolic link: give a real directory")]
    Symlink(String),
    #[error("{0} is not a directory")]
    NotADirectory(String),
    #[error(
        "{path} belongs to user {owner}, not to this user ({me}): give a directory of your own"
    )]
    NotOwned { path: String, owner: u32, me: u32 },
    #[error("{path} is writable by group or others (mode {mode:o}): chmod go-w it or give another")]
    Writable { path: String, mode: u32 },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Makes sure `dir` is a directory only this user controls before code or secrets are put in it:
/// created 0700 when missing; refused when it is a symbolic link, belongs to another user, or is
/// writable by group or others (another local user could have made it first and swap files).
pub fn own_private_dir(dir: &Path) -> Result<(), UnsafeDir> {
    let shown = || dir.display().to_string();
    let io = |source| UnsafeDir::Io {
        path: shown(),
        source,
    };
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let meta = std::fs::symlink_metadata(dir).map_err(io)?;
        if meta.file_type().is_symlink() {
            return Err(UnsafeDir::Symlink(shown()));
        }
        if !meta.is_dir() {
            return Err(UnsafeDir::NotADirectory(shown()));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(UnsafeDir::NotOwned {
                path: shown(),
                owner: meta.uid(),
                me,
            });
        }
        if meta.mode() & 0o022 != 0 {
            return Err(UnsafeDir::Writable {
                path: shown(),
                mode: meta.mode() & 0o7777,
            });
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(io)?;
    Ok(())
}

/// `bytes` random bytes from the operating system's source, as lowercase hex: for tokens, request
/// ids and sandbox secrets. Falls back to nothing weaker: an unreadable source is a failure.
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| std::io::Error::other(format!("no random source: {e}")))?;
    Ok(hex(&buf))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}
