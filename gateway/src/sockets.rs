//! Where the daemon's Unix sockets live, side by side: the WireGuard UAPI
//! socket, which wg and wg-quick find by its path, and the tunctl API
//! socket. Both are root-only.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::error::Error;

/// Where wg and wg-quick look for a userspace interface's UAPI socket.
pub const UAPI_SOCKET_DIR: &str = "/var/run/wireguard";
/// Where tunctl looks for the control API socket.
pub const API_SOCKET_DIR: &str = "/var/run/causeway";

/// The UAPI socket of interface `ifname` (see `control`).
pub fn uapi_socket_path(ifname: &str) -> PathBuf {
    Path::new(UAPI_SOCKET_DIR).join(format!("{ifname}.sock"))
}

/// The control API socket of interface `ifname` (see `api`).
pub fn api_socket_path(ifname: &str) -> PathBuf {
    Path::new(API_SOCKET_DIR).join(format!("{ifname}.sock"))
}

/// The lock by which one daemon holds interface `ifname` (`name_lock`).
pub fn lock_path(ifname: &str) -> PathBuf {
    Path::new(API_SOCKET_DIR).join(format!("{ifname}.lock"))
}

/// Binds a root-only Unix socket. A live socket of another daemon with
/// the same name is an error; a stale file is replaced.
pub fn bind_private_socket(path: &Path) -> Result<UnixListener, Error> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    // 0755 as wireguard-go makes it, whatever the umask: with create_dir_all
    // (0777 less the umask) a umask of 0 left it writable by anyone, who
    // could then put their own socket where `wg` sends keys.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| Error::SocketDir { path: dir.to_path_buf(), source })?;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::SocketInUse(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = bind_owner_only(path).map_err(|source| Error::BindSocket { path: path.to_path_buf(), source })?;
    // The mode at bind is 0600 less the umask's bits: a umask that took
    // the owner's write bit would leave the socket unusable to a client
    // that is not root.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| Error::RestrictSocket { path: path.to_path_buf(), source })?;
    Ok(listener)
}

/// Serves each connection to `listener` with `serve`, for ever. A failed
/// accept is logged (`what` names the socket) and waited out for 100 ms:
/// out of descriptors, the connection stays queued, and accepting again at
/// once would spin the runtime's thread.
pub async fn serve_each<F>(listener: UnixListener, what: &str, mut serve: impl FnMut(tokio::net::UnixStream) -> F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream));
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// A listening Unix socket whose file is created 0600 (less the umask):
/// Linux gives the file the socket's own mode, so it is set before bind.
/// Bound first and restricted after, it was open to anyone under a umask
/// of 0 or 002 until the chmod, and a connection made then is kept.
fn bind_owner_only(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::fd::AsRawFd;
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    // SAFETY: fchmod on a descriptor we own, which outlives the call.
    if unsafe { libc::fchmod(socket.as_raw_fd(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(socket)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_sockets_differ() {
        assert_eq!(uapi_socket_path("cw0"), Path::new("/var/run/wireguard/cw0.sock"));
        assert_eq!(api_socket_path("cw0"), Path::new("/var/run/causeway/cw0.sock"));
    }

    #[tokio::test]
    async fn binds_private_and_refuses_a_live_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.sock");
        let listener = bind_private_socket(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // 0600 from the bind on, not only after the chmod that follows.
        let early = dir.path().join("early.sock");
        let _held = bind_owner_only(&early).unwrap();
        assert_eq!(std::fs::metadata(&early).unwrap().permissions().mode() & 0o077, 0);
        let mut client = tokio::net::UnixStream::connect(&early).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut client, b"x").await.unwrap();
        let e = bind_private_socket(&path).unwrap_err().to_string();
        assert!(e.contains("is in use"), "{e}");
        drop(listener);
        // The file stays behind a dropped listener: stale, so replaced.
        bind_private_socket(&path).unwrap();
    }

    #[tokio::test]
    async fn the_socket_folder_is_0755_under_any_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/wireguard/x.sock");
        // SAFETY: umask takes and returns a mode; restored right after.
        let old = unsafe { libc::umask(0) };
        let bound = bind_private_socket(&path);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let _listener = bound.unwrap();
        for d in [dir.path().join("run"), dir.path().join("run/wireguard")] {
            assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o755, "{}", d.display());
        }
    }
}
