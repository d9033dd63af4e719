//! Giving up root once the interface is up: the daemon continues as an
//! ordinary user holding only CAP_NET_ADMIN (enough for routes, the fwmark
//! and the interface), so a flaw in the packet path cannot become root.
//!
//! What root alone could do later is arranged before the drop: the TUN
//! queues, UDP sockets, control sockets and the netlink socket are open, and
//! a root helper started beforehand removes the control sockets when the
//! daemon exits, however it exits.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid, User};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("user {0:?} does not exist")]
    UnknownUser(String),
    // The cause is the error's source: `{:#}` prints it once, after this.
    #[error("cannot look up user {user:?}")]
    Lookup { user: String, source: io::Error },
    #[error("{what} failed")]
    Syscall { what: &'static str, source: io::Error },
    #[error("cannot set capabilities")]
    Caps(#[from] caps::errors::CapsError),
    #[error("cannot start the socket clean-up helper: {0}")]
    Helper(io::Error),
}

/// A user's ids from the password database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// A name with a NUL byte cannot be in the database: nix reports it as
/// absent, as any unknown name.
pub fn lookup(user: &str) -> Result<Ids, PrivilegeError> {
    match User::from_name(user) {
        Ok(Some(u)) => Ok(Ids { uid: u.uid.as_raw(), gid: u.gid.as_raw() }),
        Ok(None) => Err(PrivilegeError::UnknownUser(user.to_string())),
        Err(errno) => Err(PrivilegeError::Lookup { user: user.to_string(), source: errno.into() }),
    }
}

fn check(what: &'static str, result: nix::Result<()>) -> Result<(), PrivilegeError> {
    result.map_err(|errno| PrivilegeError::Syscall { what, source: errno.into() })
}

/// Switches the whole process to `ids` and keeps CAP_NET_ADMIN on the
/// calling thread (and threads it starts later). Threads already running,
/// the data-plane workers, end with no capabilities at all: they only read
/// and write descriptors they hold.
pub fn drop_to(ids: Ids) -> Result<(), PrivilegeError> {
    let keep: CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
    // The bounding set caps what any later exec could regain. Only the
    // capabilities this kernel knows: dropping others fails.
    for cap in caps::runtime::thread_all_supported() {
        if cap != Capability::CAP_NET_ADMIN {
            caps::drop(None, CapSet::Bounding, cap)?;
        }
    }
    check("prctl(PR_SET_KEEPCAPS)", nix::sys::prctl::set_keepcaps(true))?;
    // glibc applies setgroups, setgid and setuid to every thread.
    check("setgroups", nix::unistd::setgroups(&[]))?;
    check("setgid", nix::unistd::setgid(Gid::from_raw(ids.gid)))?;
    check("setuid", nix::unistd::setuid(Uid::from_raw(ids.uid)))?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    caps::clear(None, CapSet::Inheritable)?;
    check("prctl(PR_SET_KEEPCAPS)", nix::sys::prctl::set_keepcaps(false))?;
    // Going back to root must be impossible.
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::Syscall { what: "dropping root", source: io::Error::other("setuid(0) succeeded") });
    }
    Ok(())
}

/// Starts `causewayd cleanup-sockets --daemon PID PATH...` as root: it
/// waits for this process to end (its stdin pipe closes, then the process
/// is gone) and then removes the control sockets and the name lock, which
/// the unprivileged daemon can no longer unlink. The child is returned so the daemon holds
/// the pipe for its whole life.
pub fn spawn_cleanup(paths: &[PathBuf]) -> Result<Child, PrivilegeError> {
    let exe = std::env::current_exe().map_err(PrivilegeError::Helper)?;
    // The daemon's pid is passed, not read by the helper as its parent:
    // a daemon killed before the helper has run that far leaves it
    // reparented to init, and it would wait on init instead.
    Command::new(exe)
        .arg("cleanup-sockets")
        .arg("--daemon")
        .arg(std::process::id().to_string())
        .args(paths)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(PrivilegeError::Helper)
}

/// The helper's side: blocks until stdin closes and process `daemon` has
/// exited, then removes each path that is still a socket nobody listens on
/// or a name lock nobody holds (a daemon started since then keeps its own).
pub fn cleanup_after_daemon(daemon: u32, paths: &[PathBuf]) {
    // systemd and terminals signal the whole group at stop; the helper's
    // job comes right after, when the daemon is gone.
    // By hand: nix's signal() is as unsafe as libc's, so it would add
    // nothing here.
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installing SIG_IGN runs no code in signal context.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    cleanup_after(io::stdin(), daemon, paths, std::time::Duration::from_secs(60));
}

fn cleanup_after(mut pipe: impl Read, daemon: u32, paths: &[PathBuf], within: std::time::Duration) {
    let mut sink = [0u8; 64];
    while matches!(pipe.read(&mut sink), Ok(n) if n > 0) {}
    wait_until_closed(daemon, within);
    for p in paths {
        remove_stale_socket(p);
    }
}

/// Waits (at most `within`) until process `pid` has closed all its
/// descriptors: it is gone, or every thread of it has exited (a zombie).
/// An exiting process closes them in order, the pipe to this helper
/// possibly before its listening sockets, and closing TUN queues can take
/// seconds under the kernel's rtnl lock: a socket probed before then still
/// accepts, and would be left behind (the privileges test caught this).
/// The main thread alone is not enough: it can be a zombie while another
/// thread still holds the descriptor table, so every thread is looked at.
fn wait_until_closed(pid: u32, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline && has_live_threads(pid) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether any thread of process `pid` has yet to exit.
fn has_live_threads(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|t| {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else { return false };
        // The state letter follows the command name's closing parenthesis.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        !matches!(state, None | Some('Z') | Some('X'))
    })
}

fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return };
    if meta.file_type().is_socket() {
        if std::os::unix::net::UnixStream::connect(path).is_err() {
            let _ = std::fs::remove_file(path);
        }
    } else if meta.file_type().is_file() && path.extension().is_some_and(|e| e == "lock") {
        // The interface's name lock (`name_lock`); no other file.
        crate::name_lock::remove_if_unheld(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_users() {
        assert_eq!(lookup("root").unwrap(), Ids { uid: 0, gid: 0 });
        assert!(matches!(lookup("no-such-user-causeway"), Err(PrivilegeError::UnknownUser(_))));
        assert!(matches!(lookup("bad\0name"), Err(PrivilegeError::UnknownUser(_))));
    }

    #[test]
    fn a_failed_call_names_its_cause_once() {
        let e = crate::Error::from(PrivilegeError::Syscall { what: "setuid", source: io::Error::from_raw_os_error(1) });
        let shown = crate::error::Chain(&e).to_string();
        assert_eq!(shown.matches("Operation not permitted").count(), 1, "{shown}");
        assert!(shown.starts_with("setuid failed: "), "{shown}");
    }

    #[test]
    fn waits_for_a_process_to_close_its_descriptors() {
        let mut child = std::process::Command::new("sleep").arg("0.3").spawn().unwrap();
        let started = std::time::Instant::now();
        wait_until_closed(child.id(), std::time::Duration::from_secs(10));
        // Returned once the child was a zombie (not yet reaped), not before.
        assert!(started.elapsed() >= std::time::Duration::from_millis(250), "{:?}", started.elapsed());
        child.wait().unwrap();
        let started = std::time::Instant::now();
        wait_until_closed(child.id(), std::time::Duration::from_secs(10));
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "a reaped process is gone");
        // This test process runs several threads, none of them exited.
        assert!(has_live_threads(std::process::id()));
    }

    #[test]
    fn cleanup_waits_for_the_named_daemon_not_its_parent() {
        // The helper's pipe is already closed (an empty reader) and the
        // "daemon" is not this process's parent: the sockets go only once
        // that process has exited, and well before the time bound.
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let mut daemon = std::process::Command::new("sleep").arg("0.3").spawn().unwrap();
        let started = std::time::Instant::now();
        cleanup_after(io::empty(), daemon.id(), std::slice::from_ref(&dead), std::time::Duration::from_secs(10));
        let took = started.elapsed();
        assert!(took >= std::time::Duration::from_millis(250), "returned before the daemon exited: {took:?}");
        assert!(took < std::time::Duration::from_secs(5), "waited for the time bound: {took:?}");
        assert!(!dead.exists());
        daemon.wait().unwrap();
    }

    #[test]
    fn cleanup_removes_only_dead_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("dead.sock");
        let live = dir.path().join("live.sock");
        let plain = dir.path().join("plain");
        let (free, held) = (dir.path().join("free.lock"), dir.path().join("held.lock"));
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        std::fs::write(&plain, b"x").unwrap();
        std::fs::write(&free, b"").unwrap();
        let _holder = crate::name_lock::acquire(&held, "cw0", std::time::Duration::ZERO, || true).unwrap();
        for p in [&dead, &live, &plain, &free, &held] {
            remove_stale_socket(p);
        }
        assert!(!dead.exists(), "a socket nobody serves is removed");
        assert!(live.exists(), "a served socket stays");
        assert!(!free.exists(), "a name lock nobody holds is removed");
        assert!(held.exists(), "a held one stays");
        assert!(plain.exists(), "other files are never removed");
    }
}
