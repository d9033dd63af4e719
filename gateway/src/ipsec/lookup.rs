//! Looking up IPsec peers' endpoint names. Names resolve on a thread of
//! their own: a resolver that does not answer would otherwise stall, on
//! the IKE thread, every peer's retransmissions, liveness checks and
//! rekeys, and, under its locks, `tunctl` and reloads.

use std::net::{IpAddr, SocketAddr};

use causeway_config::{Endpoint, IpsecPeer};

/// Where a lookup of a peer's endpoint names stands.
pub(super) enum Lookup {
    Idle,
    Running,
    /// The address of endpoint `index` (None when it did not resolve), and
    /// every endpoint's addresses.
    Done {
        index: usize,
        remote: Option<SocketAddr>,
        addrs: Vec<IpAddr>,
    },
}

/// Every configured endpoint's addresses (names resolved now, on the
/// caller's thread: the control plane, when a peer is set).
pub(crate) fn resolve_all(config: &IpsecPeer) -> Vec<IpAddr> {
    config.endpoints.iter().flat_map(|e| e.resolve().unwrap_or_default()).map(|a| a.ip()).collect()
}

/// Resolves `endpoints` on a new thread, and hands `done` the answer for
/// endpoint `index` with every endpoint's addresses.
pub(super) fn spawn(
    endpoints: Vec<Endpoint>,
    index: usize,
    done: impl FnOnce(&[Endpoint], Lookup) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("cw-ike-dns".into()).spawn(move || {
        let all: Vec<Vec<SocketAddr>> = endpoints.iter().map(|e| e.resolve().unwrap_or_default()).collect();
        let remote = all.get(index).and_then(|a| a.first().copied());
        let addrs = all.iter().flatten().map(|a| a.ip()).collect();
        done(&endpoints, Lookup::Done { index, remote, addrs });
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // A literal address given as a name resolves without a resolver.
    #[test]
    fn a_lookup_answers_on_its_thread_for_its_endpoint() {
        let (tx, rx) = std::sync::mpsc::channel();
        let endpoints = vec![
            Endpoint::Addr("198.18.0.2:500".parse().unwrap()),
            Endpoint::Host { host: "198.18.0.3".into(), port: 500 },
        ];
        spawn(endpoints, 1, move |_, done| tx.send(done).unwrap()).unwrap();
        let Lookup::Done { index, remote, addrs } = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap() else {
            panic!("not done")
        };
        assert_eq!((index, remote), (1, Some("198.18.0.3:500".parse().unwrap())));
        assert_eq!(addrs, ["198.18.0.2".parse::<IpAddr>().unwrap(), "198.18.0.3".parse().unwrap()]);
    }
}
