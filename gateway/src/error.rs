//! The gateway library's error type. Each variant's message is what an
//! operator reads today (tests check some), and the underlying cause is a
//! separate `source`, never repeated in the message: printed as a chain
//! ("what failed: why") it then says everything once.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use causeway_config::ConfigError;

use crate::privileges::PrivilegeError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "interface {0} exists already (another causewayd, wireguard-go or a kernel device); \
         choose another name or remove it first"
    )]
    InterfaceExists(String),
    #[error(transparent)]
    NameLock(#[from] crate::name_lock::NameLockError),
    #[error("{name:?} is not a valid interface name: {expected}")]
    InvalidName { name: String, expected: causeway_config::rules::RuleError },
    #[error("cannot create TUN interface {name} (are you root, and is /dev/net/tun present?)")]
    CreateTun { name: String, source: io::Error },
    #[error("cannot bind UDP port {port}")]
    BindUdp { port: u16, source: io::Error },
    #[error("cannot start the data-plane workers")]
    StartWorkers(#[source] io::Error),
    #[error("a data-plane worker failed (see the panic above); the interface was stopped")]
    WorkerFailed,
    #[error("cannot open a netlink socket")]
    Netlink(#[source] io::Error),
    /// The configuration is valid, but what it needs could not be had (the
    /// ports of IKE, say).
    #[error("the configuration cannot be applied: {0}")]
    NotApplied(String),

    // Control sockets.
    #[error("cannot create {}", path.display())]
    SocketDir { path: PathBuf, source: io::Error },
    #[error("{} is in use: another daemon serves this interface", .0.display())]
    SocketInUse(PathBuf),
    #[error("cannot bind {}", path.display())]
    BindSocket { path: PathBuf, source: io::Error },
    #[error("cannot restrict {} to root", path.display())]
    RestrictSocket { path: PathBuf, source: io::Error },
    #[error("cannot listen for metrics on {addr}")]
    Metrics { addr: std::net::SocketAddr, source: io::Error },

    // Running in the background.
    #[error("cannot find my own executable")]
    OwnExecutable(#[source] io::Error),
    #[error("cannot open CAUSEWAYD_LOG_FILE")]
    LogFile(#[source] io::Error),
    #[error("cannot start the background daemon")]
    StartBackground(#[source] io::Error),
    /// `message` is what the child reported on its readiness pipe.
    #[error("the daemon failed to start ({status}): {message}")]
    BackgroundFailed { status: ExitStatus, message: String },

    #[error("cannot start the registry client")]
    Registry(#[source] crate::registry::RegistryError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    /// A system call whose failure needs no more words than the OS gives
    /// (the runtime, signal handlers, a thread): shown as the OS error alone.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Shows an error and its sources as "what: why: why", as anyhow's `{:#}`
/// does, for readers without anyhow (the readiness pipe to a parent).
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_names_each_cause_once() {
        let e = Error::BindUdp { port: 51820, source: io::Error::from_raw_os_error(libc::EADDRINUSE) };
        let shown = Chain(&e).to_string();
        assert!(shown.starts_with("cannot bind UDP port 51820: "), "{shown}");
        assert_eq!(shown.matches("in use").count(), 1, "{shown}");
    }

    #[test]
    fn transparent_variants_show_their_inner_error() {
        let e = Error::Io(io::Error::other("no threads left"));
        assert_eq!(Chain(&e).to_string(), "no threads left");
    }
}
