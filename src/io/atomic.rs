//! Atomic file writes: write a sibling temp file, flush it to disk, rename it over the target.
//!
//! A rename within one directory replaces the target in one step, so a reader (or a crash) sees
//! either the old file or the complete new one, never a half-written file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Distinguishes temp files of concurrent writes from the same process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically.
///
/// Steps: create the parent directories; write `bytes` to `.<name>.tmp-<pid>-<n>` in the same
/// directory (a name no other writer uses); `fsync` it; rename it over `path`; `fsync` the
/// directory (best effort, Unix only). An existing file at `path` is replaced; the new file gets
/// default permissions.
///
/// # Errors
/// [`Error::Io`] naming `path` if any step fails (no space, no permission, `path` is a directory,
/// `path` has no file name). The temp file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "expected a path ending in a file name",
            ),
        )
    })?;
    let dir: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;

    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.flush()?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // Best effort: the temp file may not exist if creating it was what failed.
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_dir(&dir);
    Ok(())
}

/// Flushes the directory entry of the rename to disk, so the new name survives a power loss.
/// Best effort: some file systems and platforms do not allow syncing a directory.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}
