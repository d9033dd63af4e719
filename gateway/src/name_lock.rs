//! One daemon per interface name. Two causewayd started at the same
//! moment for one name (a unit and a hand-started copy, a retry racing
//! the first try) both found no interface of that name and both went on:
//! the second one's TUN open attached to the first one's device as more
//! queues, and until it failed on a socket it took part of the traffic,
//! handshook with the same key and, for IPsec, sent INITIAL_CONTACT,
//! which makes the peer delete the first one's SAs. tun-rs has no way to
//! ask for IFF_TUN_EXCL, so the name is claimed here first: an exclusive
//! flock on IFNAME.lock beside the API socket (`sockets::lock_path`), taken
//! before anything is created and held until the daemon has stopped.
//!
//! A lock held by a daemon whose interface is gone belongs to one that is
//! stopping (`wg-quick down` deletes the link, and the stop may take a few
//! seconds): a start then waits for it, so that `down` followed by `up`
//! works, instead of being refused.
//!
//! The file is removed on the way out so that nothing is left behind,
//! and removing a lock file races with whoever opened it just before.
//! The rule that keeps one holder: a file is removed only by whoever holds
//! its lock, and a daemon that got a lock checks that the path still names
//! the file it locked (else it locked a removed file, and tries again).

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a name could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum NameLockError {
    #[error("another causewayd serves interface {0} (its lock is held); stop it first or choose another name")]
    Held(String),
    #[error("cannot lock {}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// An interface name held by this process.
#[derive(Debug)]
pub struct NameLock {
    path: PathBuf,
    // Held for the flock; dropping it releases the name.
    file: File,
}

/// Claims `path` for this process, or says that another daemon holds it.
/// While the holder is not `serving` (it is stopping), waits up to
/// `patience` for it to let go.
pub fn acquire(
    path: &Path,
    ifname: &str,
    patience: Duration,
    serving: impl Fn() -> bool,
) -> Result<NameLock, NameLockError> {
    let deadline = Instant::now() + patience;
    let failed = |source| NameLockError::Io { path: path.to_path_buf(), source };
    // 0755 whatever the umask, as the sockets' folder (the same one).
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(failed)?;
    // Each pass that ends with a lock on a removed file lost a race with a
    // daemon that was leaving; a few are plenty.
    let mut replaced = 0;
    while replaced < 8 {
        // Never truncated (it holds nothing); never through a symlink.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) if !serving() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(TryLockError::WouldBlock) => return Err(NameLockError::Held(ifname.to_string())),
            Err(TryLockError::Error(e)) => return Err(failed(e)),
        }
        if names_file(path, &file) {
            return Ok(NameLock { path: path.to_path_buf(), file });
        }
        replaced += 1;
    }
    Err(failed(io::Error::other("the lock file kept being replaced")))
}

/// Whether `path` is, right now, the file open as `file`.
fn names_file(path: &Path, file: &File) -> bool {
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(at_path), Ok(open)) => at_path.dev() == open.dev() && at_path.ino() == open.ino(),
        _ => false,
    }
}

/// Removes the lock file at `path` if nobody holds it: the cleanup
/// helper's part, for a daemon that ran without the right to remove it.
pub fn remove_if_unheld(path: &Path) {
    let Ok(file) = File::open(path) else { return };
    if file.try_lock().is_ok() && names_file(path, &file) {
        let _ = std::fs::remove_file(path);
    }
}

impl Drop for NameLock {
    fn drop(&mut self) {
        // Still holding the lock, so nobody else has it; a daemon that
        // dropped its privileges cannot, and leaves it to the helper.
        if names_file(&self.path, &self.file) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_name_and_nothing_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/causeway/cw0.lock");
        let first = acquire(&path, "cw0", Duration::ZERO, || true).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let e = acquire(&path, "cw0", Duration::from_secs(5), || true).unwrap_err().to_string();
        assert!(e.contains("another causewayd serves interface cw0"), "{e}");
        // Another name is another lock.
        let other = acquire(&dir.path().join("run/causeway/cw1.lock"), "cw1", Duration::ZERO, || true).unwrap();
        drop(first);
        assert!(!path.exists(), "the holder removes its file");
        let again = acquire(&path, "cw0", Duration::ZERO, || true).unwrap();
        drop((again, other));
        assert_eq!(std::fs::read_dir(dir.path().join("run/causeway")).unwrap().count(), 0);
    }

    #[test]
    fn a_start_waits_for_a_stopping_holder_and_no_longer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cw0.lock");
        let stopping = acquire(&path, "cw0", Duration::ZERO, || true).unwrap();
        let started = Instant::now();
        // Serving: refused at once, however patient.
        assert!(matches!(acquire(&path, "cw0", Duration::from_secs(30), || true), Err(NameLockError::Held(_))));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // Stopping: refused once the patience is spent...
        let e = acquire(&path, "cw0", Duration::from_millis(200), || false).unwrap_err();
        assert!(matches!(e, NameLockError::Held(_)) && started.elapsed() >= Duration::from_millis(200));
        // ...and taken once the holder lets go within it.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(stopping);
        });
        let next = acquire(&path, "cw0", Duration::from_secs(30), || false).unwrap();
        assert!(names_file(&path, &next.file), "the new file, not the removed one");
        release.join().unwrap();
    }

    #[test]
    fn a_file_removed_under_a_late_opener_is_not_a_second_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cw0.lock");
        let leaving = acquire(&path, "cw0", Duration::ZERO, || true).unwrap();
        // Opened while the holder was still there, locked once it had gone.
        let late = File::open(&path).unwrap();
        drop(leaving);
        assert!(late.try_lock().is_ok(), "the removed file's lock is free");
        assert!(!names_file(&path, &late), "but it is no longer the name's file");
        let current = acquire(&path, "cw0", Duration::ZERO, || true).unwrap();
        assert!(names_file(&path, &current.file));
        // The helper leaves a held file alone and removes a free one (what
        // a daemon without the right to remove its own leaves behind).
        remove_if_unheld(&path);
        assert!(path.exists(), "held: kept");
        let left = dir.path().join("cw1.lock");
        std::fs::write(&left, b"").unwrap();
        remove_if_unheld(&left);
        assert!(!left.exists(), "free: removed");
    }
}
