//! Peer endpoints given as names, resolved before a change takes the
//! gateway's change lock, several at a time.
//!
//! A lookup can take seconds (a name server that does not answer costs
//! resolv.conf's timeout times its attempts). Resolved one after another
//! under the change lock, a file or registry with many named endpoints held
//! every other change (tunctl, a UAPI set, the registry's next update) for
//! the sum of those seconds; resolved ahead and side by side, for about the
//! slowest one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use causeway_config::{Endpoint, IpsecPeer, Peer};
use causeway_wireguard::PublicKey;

use crate::gateway::Gateway;

/// At most this many lookups run at once, so a fleet's worth of names does
/// not start a thread each.
const LOOKUPS_AT_ONCE: usize = 16;

/// The first endpoint of a list that resolves: its index and address.
pub type FirstAddress = Option<(usize, SocketAddr)>;

/// Endpoint lists already resolved: WireGuard peers' first address by
/// key, IPsec peers' every address by name.
#[derive(Default)]
pub struct Resolved {
    wireguard: HashMap<PublicKey, (Vec<Endpoint>, FirstAddress)>,
    ipsec: HashMap<String, (Vec<Endpoint>, Vec<IpAddr>)>,
}

/// One peer whose names are looked up ahead.
enum Todo<'a> {
    WireGuard(&'a Peer),
    Ipsec(&'a IpsecPeer),
}

fn has_name(endpoints: &[Endpoint]) -> bool {
    endpoints.iter().any(|e| matches!(e, Endpoint::Host { .. }))
}

impl Resolved {
    /// Resolves, without any lock held, the endpoints of each peer that has
    /// a name among them and would be looked up when applied: a WireGuard
    /// peer whose list differs from the running peer's, an IPsec peer
    /// whose configuration differs from the running one.
    pub fn ahead(gw: &Gateway, peers: &[Peer], ipsec_peers: &[IpsecPeer]) -> Resolved {
        let wireguard = peers.iter().filter(|p| has_name(&p.endpoints)).filter(|p| {
            gw.peer(&p.public_key).is_none_or(|running| {
                *running.configured_endpoints.lock().unwrap_or_else(|e| e.into_inner()) != p.endpoints
            })
        });
        let ike = gw.ike();
        let ipsec = ipsec_peers
            .iter()
            .filter(|p| has_name(&p.endpoints))
            .filter(|p| ike.as_ref().and_then(|ike| ike.config(&p.name)).is_none_or(|running| running != **p));
        let todo: Vec<Todo<'_>> = wireguard.map(Todo::WireGuard).chain(ipsec.map(Todo::Ipsec)).collect();
        let next = AtomicUsize::new(0);
        let done = Mutex::new(Resolved::default());
        let lock = || done.lock().unwrap_or_else(|e| e.into_inner());
        // Each looks its names up before taking the lock for the insert.
        let work = || {
            while let Some(t) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                match t {
                    Todo::WireGuard(p) => {
                        let first = first_address(&p.name, &p.endpoints);
                        lock().wireguard.insert(p.public_key, (p.endpoints.clone(), first));
                    }
                    Todo::Ipsec(p) => {
                        let all = crate::ipsec::lookup::resolve_all(p);
                        lock().ipsec.insert(p.name.clone(), (p.endpoints.clone(), all));
                    }
                }
            }
        };
        std::thread::scope(|scope| {
            // The caller's thread is one of them.
            for _ in 1..todo.len().min(LOOKUPS_AT_ONCE) {
                // Out of threads (RLIMIT_NPROC), the lookups still run:
                // the helpers that started, and this thread, share them.
                if std::thread::Builder::new().name("cw-dns".into()).spawn_scoped(scope, work).is_err() {
                    break;
                }
            }
            work();
        });
        done.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    /// The first address of `p`'s endpoints: as resolved ahead when it was
    /// for this list, looked up now otherwise (the running peer changed
    /// between `ahead` and the change lock).
    pub fn first_address(&self, p: &Peer) -> FirstAddress {
        match self.wireguard.get(&p.public_key) {
            Some((endpoints, first)) if *endpoints == p.endpoints => *first,
            _ => first_address(&p.name, &p.endpoints),
        }
    }

    /// Records that `p`'s endpoints resolved to nothing, as a lookup that
    /// failed would: a test's lookup that stays on the host.
    #[cfg(test)]
    pub(crate) fn found_nothing(&mut self, p: &Peer) {
        self.wireguard.insert(p.public_key, (p.endpoints.clone(), None));
    }

    /// Every address of IPsec peer `p`'s endpoints when they were resolved
    /// ahead for this list; None to look them up when applied.
    pub fn ipsec_addresses(&self, p: &IpsecPeer) -> Option<Vec<IpAddr>> {
        match self.ipsec.get(&p.name) {
            Some((endpoints, all)) if *endpoints == p.endpoints => Some(all.clone()),
            _ => None,
        }
    }
}

/// Tries `endpoints` in order; the first that resolves wins.
fn first_address(name: &str, endpoints: &[Endpoint]) -> FirstAddress {
    for (i, ep) in endpoints.iter().enumerate() {
        match ep.resolve() {
            Ok(addrs) if !addrs.is_empty() => return Some((i, addrs[0])),
            _ => tracing::warn!(peer = %name, endpoint = %ep, "cannot resolve endpoint; trying the next"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "CE5vbW26f1Ayh5znQQ3b1pWt4oE+w3ScwymAsBl6lkU=";
    const PUB_B: &str = "429kEP7A6Eoqwhuq9S1svBRBfglokdMLy0ksTS3R2S8=";

    fn peer(endpoints: &[&str]) -> Peer {
        let list = endpoints.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
        let text = format!(
            "[interface]\nprivate_key = \"{KEY_A}\"\n[[peer]]\nname = \"b\"\npublic_key = \"{PUB_B}\"\nendpoints = [{list}]\n"
        );
        causeway_config::parse(&text, std::path::Path::new("/test.toml")).unwrap().peers.remove(0)
    }

    #[test]
    fn what_was_resolved_ahead_serves_only_the_list_it_was_resolved_for() {
        let ahead = peer(&["localhost:51820"]);
        let mut resolved = Resolved::default();
        resolved
            .wireguard
            .insert(ahead.public_key, (ahead.endpoints.clone(), Some((0, "198.18.0.9:7".parse().unwrap()))));
        assert_eq!(resolved.first_address(&ahead), Some((0, "198.18.0.9:7".parse().unwrap())), "taken as resolved");
        let changed = peer(&["198.18.0.2:51820"]);
        assert_eq!(resolved.first_address(&changed), Some((0, "198.18.0.2:51820".parse().unwrap())), "looked up");
    }
}
