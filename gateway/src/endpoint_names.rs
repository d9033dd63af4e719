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
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use causeway_config::{Endpoint, Peer};
use causeway_dataplane::interface::Interface;
use causeway_wireguard::PublicKey;

/// At most this many lookups run at once, so a fleet's worth of names does
/// not start a thread each.
const LOOKUPS_AT_ONCE: usize = 16;

/// The first endpoint of a list that resolves: its index and address.
pub type FirstAddress = Option<(usize, SocketAddr)>;

/// Endpoint lists already resolved, by peer key.
#[derive(Default)]
pub struct Resolved(HashMap<PublicKey, (Vec<Endpoint>, FirstAddress)>);

impl Resolved {
    /// Resolves, without any lock held, the endpoints of each peer in
    /// `peers` that has a name among them and whose list differs from the
    /// running peer's (only those are resolved when applied).
    pub fn ahead(iface: &Interface, peers: &[Peer]) -> Resolved {
        let todo: Vec<&Peer> = peers
            .iter()
            .filter(|p| p.endpoints.iter().any(|e| matches!(e, Endpoint::Host { .. })))
            .filter(|p| {
                iface.peer(&p.public_key).is_none_or(|running| {
                    *running.configured_endpoints.lock().unwrap_or_else(|e| e.into_inner()) != p.endpoints
                })
            })
            .collect();
        let next = AtomicUsize::new(0);
        let done = Mutex::new(HashMap::with_capacity(todo.len()));
        std::thread::scope(|scope| {
            for _ in 0..todo.len().min(LOOKUPS_AT_ONCE) {
                scope.spawn(|| {
                    while let Some(p) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let first = first_address(&p.name, &p.endpoints);
                        let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
                        done.insert(p.public_key, (p.endpoints.clone(), first));
                    }
                });
            }
        });
        Resolved(done.into_inner().unwrap_or_else(|e| e.into_inner()))
    }

    /// The first address of `endpoints` for peer `p`: as resolved ahead
    /// when it was for this list, looked up now otherwise (the running
    /// peer changed between `ahead` and the change lock).
    pub fn first_address(&self, p: &Peer) -> FirstAddress {
        match self.0.get(&p.public_key) {
            Some((endpoints, first)) if *endpoints == p.endpoints => *first,
            _ => first_address(&p.name, &p.endpoints),
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
        resolved.0.insert(ahead.public_key, (ahead.endpoints.clone(), Some((0, "198.18.0.9:7".parse().unwrap()))));
        assert_eq!(resolved.first_address(&ahead), Some((0, "198.18.0.9:7".parse().unwrap())), "taken as resolved");
        let changed = peer(&["198.18.0.2:51820"]);
        assert_eq!(resolved.first_address(&changed), Some((0, "198.18.0.2:51820".parse().unwrap())), "looked up");
    }
}
