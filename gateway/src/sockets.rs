//! Where the daemon's Unix sockets live, side by side: the WireGuard UAPI
//! socket, which wg and wg-quick find by its path, and the tunctl API
//! socket. Both are root-only.

use std::os::unix::fs::PermissionsExt;
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

/// Binds a root-only Unix socket. A live socket of another daemon with
/// the same name is an error; a stale file is replaced.
pub fn bind_private_socket(path: &Path) -> Result<UnixListener, Error> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|source| Error::SocketDir { path: dir.to_path_buf(), source })?;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::SocketInUse(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| Error::BindSocket { path: path.to_path_buf(), source })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| Error::RestrictSocket { path: path.to_path_buf(), source })?;
    Ok(listener)
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
        let e = bind_private_socket(&path).unwrap_err().to_string();
        assert!(e.contains("is in use"), "{e}");
        drop(listener);
        // The file stays behind a dropped listener: stale, so replaced.
        bind_private_socket(&path).unwrap();
    }
}
