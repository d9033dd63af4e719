//! Applying a configuration to a running interface, as a difference: peers
//! that did not change keep their sessions, counters and traffic; new ones
//! are added, missing ones removed, changed ones updated in place; sites
//! likewise (`sites.rs`). The same code applies the first configuration
//! (everything is new).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use causeway_config::{Config, ConfigError};
use causeway_wireguard::PublicKey;
use ipnet::IpNet;

use crate::endpoint_names::Resolved;
use crate::gateway::Gateway;
use causeway_dataplane::interface::Interface;
use causeway_dataplane::peer::PeerState;

pub use crate::report::Report;
use crate::start_settings::FixedAtStart;

/// Makes the running interface match `cfg`. The settings fixed at start-up
/// (`FixedAtStart`, MTU, the route table) are not changed: a file that
/// changes them gets them named in `needs_restart`.
pub fn reconcile(iface: &Gateway, cfg: &Config) -> Report {
    let resolved = Resolved::ahead(iface, &cfg.peers, &cfg.ipsec_peers);
    let _one_change = iface.changing();
    let mut report = Report::default();
    let i = &cfg.interface;
    // What can fail for reasons outside the file comes first, before
    // anything changes, and refuses the whole change. IKE above all: a file
    // that moves a prefix from a WireGuard peer (or a site) to an IPsec
    // peer would otherwise lose the first and never get the second, and
    // the prefix's kernel route would go with it, leaving its traffic to
    // the default route, unencrypted.
    let ike_was_running = iface.ike().is_some();
    if let Err(e) = crate::ipsec::reconcile::ike_for(iface, &cfg.ipsec_peers) {
        return Report::refused(format!("cannot start IKE (UDP ports 500 and 4500): {e}"));
    }
    // 0 asks for any port, which the one bound is: rebinding would move
    // the gateway to a new port at every reload (and every registry
    // update), where its peers do not look for it.
    if i.listen_port != 0 && i.listen_port != iface.listen_port() {
        match iface.rebind(i.listen_port) {
            Ok(port) => tracing::info!(port, "listen port changed"),
            Err(e) => {
                // Started for this change only: nothing of it stays.
                if !ike_was_running {
                    iface.stop_ike();
                }
                return Report::refused(format!("cannot bind listen_port {}: {e}", i.listen_port));
            }
        }
    }
    if !iface.device.has_private_key(&i.private_key) {
        if iface.device.public_key().is_some() {
            tracing::warn!("private key changed: every session restarts");
        }
        iface.device.set_private_key(Some(i.private_key.clone()));
    }
    iface.set_mss_clamp(i.mss_clamp);
    iface.set_dns_refresh(i.dns_refresh);
    if iface.route_table() != i.routes.map(|t| t.0) {
        report.needs_restart.push("install_routes/route_table".into());
    }
    if let Some(started) = iface.started_with() {
        report.needs_restart.extend(started.changed(&FixedAtStart::of(i)));
    }

    let current_nets: HashMap<*const PeerState, HashSet<IpNet>> =
        iface.allowed_ips_by_peer().into_iter().map(|(p, nets)| (p, nets.into_iter().collect())).collect();

    let wanted: HashSet<PublicKey> = cfg.peers.iter().map(|p| p.public_key).collect();
    let unwanted: Vec<PublicKey> =
        iface.peers().iter().map(|p| *p.public_key()).filter(|k| !wanted.contains(k)).collect();
    for peer in iface.remove_peers(&unwanted) {
        let name = peer.name();
        report.removed.push(if name.is_empty() { peer.public_key().to_base64() } else { name });
    }

    // Every peer's new prefixes go in with one copy of the routing table
    // (a copy per peer made a large configuration's start quadratic), and
    // a prefix moving between two peers moves in that one swap.
    let mut prefixes = Vec::new();
    for p in &cfg.peers {
        let have =
            iface.peer(&p.public_key).map(|peer| current_nets.get(&Arc::as_ptr(&peer)).cloned().unwrap_or_default());
        match apply_peer_settings(iface, p, have.as_ref(), &resolved) {
            Ok(applied) => {
                match (applied.existed, &applied.changed) {
                    (false, _) => report.added.push(p.name.clone()),
                    (true, changed) if changed.is_empty() => report.unchanged += 1,
                    (true, changed) => report.changed.push(format!("{} ({})", p.name, changed.join(", "))),
                }
                prefixes.extend(applied.prefixes);
            }
            Err(e) => tracing::warn!(peer = %p.name, error = %e, "peer not added"),
        }
    }
    iface.set_peer_prefixes(&prefixes);
    crate::ipsec::reconcile::reconcile(iface, cfg, &resolved, &mut report);
    crate::sites::reconcile(iface, cfg, &mut report);
    report
}

/// Makes one peer match `p`, adding it if needed. `have` is the peer's
/// current prefixes (None for a new peer); `resolved` the endpoint names
/// resolved ahead (`Resolved::ahead`). Returns whether it existed and
/// which fields changed.
pub fn apply_peer(
    iface: &Interface,
    p: &causeway_config::Peer,
    have: Option<&HashSet<IpNet>>,
    resolved: &Resolved,
) -> Result<(bool, Vec<&'static str>), causeway_wireguard::Error> {
    let applied = apply_peer_settings(iface, p, have, resolved)?;
    iface.set_peer_prefixes(applied.prefixes.as_slice());
    Ok((applied.existed, applied.changed))
}

/// What `apply_peer_settings` did, and the prefixes it left to the caller.
pub struct Applied {
    pub existed: bool,
    pub changed: Vec<&'static str>,
    /// The peer's prefixes, when they change (`Interface::set_peer_prefixes`).
    pub prefixes: Option<(Arc<PeerState>, HashSet<IpNet>)>,
}

/// `apply_peer` but for the prefixes, which it returns when they change.
pub fn apply_peer_settings(
    iface: &Interface,
    p: &causeway_config::Peer,
    have: Option<&HashSet<IpNet>>,
    resolved: &Resolved,
) -> Result<Applied, causeway_wireguard::Error> {
    let existing = iface.peer(&p.public_key);
    let peer = match &existing {
        Some(peer) => peer.clone(),
        None => iface.add_peer(p.public_key, p.name.clone())?,
    };
    let mut changed = Vec::new();
    if peer.name() != p.name {
        *peer.name.lock().unwrap_or_else(|e| e.into_inner()) = p.name.clone();
        changed.push("name");
    }
    if peer.crypto().preshared_key() != p.preshared_key.clone().unwrap_or_default() {
        iface.set_preshared_key(&peer, p.preshared_key.clone());
        changed.push("preshared_key");
    }
    if peer.crypto().timers.persistent_keepalive() != p.persistent_keepalive {
        peer.crypto().timers.set_persistent_keepalive(p.persistent_keepalive);
        changed.push("persistent_keepalive");
    }
    if peer.failover_after() != p.failover_after {
        peer.set_failover_after(p.failover_after);
        changed.push("failover_after");
    }
    let mut eps = peer.configured_endpoints.lock().unwrap_or_else(|e| e.into_inner());
    if *eps != p.endpoints {
        *eps = p.endpoints.clone();
        drop(eps);
        match resolved.first_address(p) {
            Some((i, addr)) => {
                peer.set_endpoint(addr);
                peer.set_endpoint_index(i);
                changed.push("endpoints");
            }
            // Nothing resolves now: the address in use stays, but the
            // index goes back to the first entry, so that the name
            // refresh and failover follow the new list (an index past a
            // shorter list matched no entry, and its name was never
            // looked up again). The report says so: "changed" alone
            // would pass for traffic moved.
            None => {
                peer.set_endpoint_index(0);
                changed.push(if p.endpoints.is_empty() {
                    "endpoints"
                } else {
                    "endpoints, none resolving now: traffic stays on the address in use until one does"
                });
            }
        }
    }
    let want: HashSet<IpNet> = p.allowed_ips.iter().map(|n| n.trunc()).collect();
    let mut prefixes = None;
    if have.cloned().unwrap_or_default() != want {
        prefixes = Some((peer.clone(), want));
        changed.push("allowed_ips");
    }
    Ok(Applied { existed: existing.is_some(), changed, prefixes })
}

/// The first of `nets` that overlaps a prefix of a peer other than `key`
/// or of a site, with its owner's name: each address belongs to one peer
/// or site only.
pub fn overlap(iface: &Interface, key: &PublicKey, nets: &[IpNet]) -> Option<String> {
    overlap_where(iface, nets, |owner| owner.peer().and_then(|p| p.wireguard()).is_some_and(|p| p.public_key() == key))
}

/// The first of `nets` that overlaps a prefix of a site or of a peer
/// that is not a WireGuard peer (which a UAPI set may not take).
pub fn overlap_beyond_wireguard(iface: &Interface, nets: &[IpNet]) -> Option<String> {
    overlap_where(iface, nets, |owner| owner.peer().is_some_and(|p| p.wireguard().is_some()))
}

/// As `overlap`, for a peer not running yet: every prefix routed is another's.
pub fn overlap_new(iface: &Interface, nets: &[IpNet]) -> Option<String> {
    overlap_where(iface, nets, |_| false)
}

fn overlap_where(
    iface: &Interface,
    nets: &[IpNet],
    own: impl Fn(&causeway_dataplane::route::Route) -> bool,
) -> Option<String> {
    let routes = iface.routes();
    for n in nets {
        if let Some((other, owner)) = routes.overlapping(*n).into_iter().find(|(_, owner)| !own(owner)) {
            return Some(format!("{n} overlaps {other} of {}", owner.label()));
        }
    }
    None
}

/// Applies a configuration file's contents: merged with the registry's
/// view when the gateway runs one, as is otherwise.
pub fn apply_file(iface: &Gateway, cfg: Config) -> Report {
    match iface.registry() {
        Some(registry) => registry.apply_file(cfg),
        None => {
            let mut report = reconcile(iface, &cfg);
            if cfg.registry.is_some() {
                report.needs_restart.push("registry".into());
            }
            report
        }
    }
}

/// Re-reads the configuration file and applies the difference. An invalid
/// file changes nothing and returns its problems.
pub fn reload(iface: &Gateway, path: &Path) -> Result<Report, ConfigError> {
    let cfg = causeway_config::load(path)?;
    let report = apply_file(iface, cfg);
    if report.refused.is_some() {
        tracing::error!(config = %path.display(), %report, "configuration not reloaded");
    } else {
        tracing::info!(config = %path.display(), %report, "configuration reloaded");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_wireguard::StaticSecret;

    const KEY: &str = "CE5vbW26f1Ayh5znQQ3b1pWt4oE+w3ScwymAsBl6lkU=";

    fn config(interface: &str) -> Config {
        let text = format!("[interface]\nprivate_key = \"{KEY}\"\nlisten_port = 0\n{interface}");
        causeway_config::parse(&text, Path::new("/test.toml")).unwrap()
    }

    // A reload that changes what only a restart applies says so; it must
    // not pass for applied (a new address would, with a registry, even be
    // published while the interface keeps the old one).
    #[test]
    fn a_reload_names_every_setting_only_a_restart_applies() {
        let iface = Interface::new("cwreload0".into(), Some(StaticSecret::random(&mut rand_core::OsRng)), 1420, 1, 0);
        let gw = Gateway::new(Arc::new(iface.unwrap()));
        let start = config("addresses = [\"10.255.2.3/32\"]\nworkers = 1\n");
        gw.set_started_with(FixedAtStart::of(&start.interface));
        let same = reconcile(&gw, &start);
        assert!(same.needs_restart.is_empty(), "{same}");
        let changed = config(concat!(
            "name = \"cw9\"\naddresses = [\"10.255.2.4/32\"]\nworkers = 4\n",
            "metrics_listen = \"127.0.0.1:9586\"\nuser = \"nobody\"\n",
        ));
        let report = reconcile(&gw, &changed);
        assert_eq!(report.needs_restart, ["name", "addresses", "workers", "metrics_listen", "user"], "{report}");
        // The interface is named on the command line (`--interface`) and
        // the file names none, at start and now: no change to report.
        assert!(reconcile(&gw, &start).needs_restart.is_empty());
        // The link's MTU changed by hand (the timer reads it from /sys) is
        // not a change of the file; the file's is.
        gw.set_mtu(1380);
        assert!(reconcile(&gw, &start).needs_restart.is_empty());
        let mut mtu = start.clone();
        mtu.interface.mtu = 1300;
        assert_eq!(reconcile(&gw, &mtu).needs_restart, ["mtu"]);
    }

    // A file that moves a prefix from a WireGuard peer to an IPsec peer,
    // while IKE cannot start (another socket holds its port), is refused
    // whole: the WireGuard peer keeps the prefix (and so its kernel route),
    // instead of the prefix going to nobody. A listen port that cannot be
    // bound refuses the file the same way, the new private key with it.
    #[test]
    fn a_file_that_cannot_be_applied_changes_nothing() {
        let held = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let iface = Interface::new("cwreload3".into(), Some(StaticSecret::random(&mut rand_core::OsRng)), 1420, 1, 0);
        let gw = Gateway::new(Arc::new(iface.unwrap()));
        gw.set_ipsec_ports(port, port);
        let key = StaticSecret::random(&mut rand_core::OsRng).public_key();
        let wg = config(&format!(
            "[[peer]]\nname = \"east\"\npublic_key = \"{}\"\nallowed_ips = [\"10.1.0.0/16\"]\n",
            key.to_base64()
        ));
        assert_eq!(reconcile(&gw, &wg).added, ["east"]);
        let east_routed = |gw: &Gateway| {
            gw.peer(&key).is_some_and(|p| gw.allowed_ips_of(&p) == ["10.1.0.0/16".parse::<IpNet>().unwrap()])
        };
        assert!(east_routed(&gw));

        let mut moved = wg.clone();
        moved.peers.clear();
        let routed = "initiate = false\nremote_id = \"east.example\"\nallowed_ips = [\"10.1.0.0/16\"]\n";
        moved.ipsec_peers.push(crate::ipsec::convert::tests::parsed_peer("east", routed));
        let report = reconcile(&gw, &moved);
        let why = report.refused.clone().unwrap_or_default();
        assert!(why.starts_with("cannot start IKE (UDP ports 500 and 4500)"), "{report}");
        assert!(report.to_string().starts_with("refused, nothing changed: cannot start IKE"), "{report}");
        assert!(east_routed(&gw), "the WireGuard peer keeps its prefix");
        assert!(gw.ike().is_none());

        let before = gw.listen_port();
        let mut busy = wg.clone();
        busy.interface.listen_port = port;
        busy.interface.private_key = StaticSecret::random(&mut rand_core::OsRng);
        let report = reconcile(&gw, &busy);
        assert!(report.refused.as_deref().is_some_and(|w| w.starts_with(&format!("cannot bind listen_port {port}"))));
        assert_eq!(gw.listen_port(), before);
        assert!(gw.device.has_private_key(&wg.interface.private_key), "the key stays with the refused file");
        assert!(east_routed(&gw));
    }

    // Prefixes are applied for all peers at once: two peers trading their
    // prefixes, one peer gone, one new and one untouched all end as the
    // file says.
    #[test]
    fn a_reload_gives_every_peer_exactly_its_prefixes() {
        let iface = Interface::new("cwreload2".into(), Some(StaticSecret::random(&mut rand_core::OsRng)), 1420, 1, 0);
        let gw = Gateway::new(Arc::new(iface.unwrap()));
        let keys: Vec<String> =
            (0..4).map(|_| StaticSecret::random(&mut rand_core::OsRng).public_key().to_base64()).collect();
        let peers = |list: &[(&str, usize, &str)]| {
            let mut text = String::new();
            for (name, key, nets) in list {
                text +=
                    &format!("[[peer]]\nname = \"{name}\"\npublic_key = \"{}\"\nallowed_ips = [{nets}]\n", keys[*key]);
            }
            config(&text)
        };
        let routes = |gw: &Gateway| {
            let mut r: Vec<String> = gw.routes().iter().map(|(n, o)| format!("{n} {}", o.label())).collect();
            r.sort();
            r
        };
        reconcile(
            &gw,
            &peers(&[("a", 0, "\"10.1.0.0/16\""), ("b", 1, "\"10.2.0.0/16\""), ("c", 2, "\"10.3.0.0/16\"")]),
        );
        assert_eq!(routes(&gw), ["10.1.0.0/16 peer a", "10.2.0.0/16 peer b", "10.3.0.0/16 peer c"]);
        let report = reconcile(
            &gw,
            &peers(&[
                ("a", 0, "\"10.2.0.0/16\""),
                ("b", 1, "\"10.1.0.0/16\", \"fd00:2::/32\""),
                ("d", 3, "\"10.4.0.0/16\""),
            ]),
        );
        assert_eq!(report.removed, ["c"], "{report}");
        assert_eq!(report.added, ["d"], "{report}");
        assert_eq!(
            routes(&gw),
            ["10.1.0.0/16 peer b", "10.2.0.0/16 peer a", "10.4.0.0/16 peer d", "fd00:2::/32 peer b"]
        );
        assert_eq!(reconcile(&gw, &peers(&[("a", 0, "\"10.2.0.0/16\"")])).removed, ["b", "d"]);
        assert_eq!(routes(&gw), ["10.2.0.0/16 peer a"]);
    }

    // A new endpoint list none of whose names resolves is applied, and the
    // report says the traffic stays where it was.
    #[test]
    fn a_reload_to_endpoints_that_do_not_resolve_says_traffic_stays() {
        let iface = Interface::new("cwreload3".into(), Some(StaticSecret::random(&mut rand_core::OsRng)), 1420, 1, 0);
        let gw = Gateway::new(Arc::new(iface.unwrap()));
        let key = StaticSecret::random(&mut rand_core::OsRng).public_key().to_base64();
        let file = |endpoint: &str| {
            config(&format!("[[peer]]\nname = \"b\"\npublic_key = \"{key}\"\nendpoints = [\"{endpoint}\"]\n"))
        };
        reconcile(&gw, &file("198.18.0.2:51820"));
        let peer = gw.peers().pop().unwrap();
        let old: std::net::SocketAddr = "198.18.0.2:51820".parse().unwrap();
        assert_eq!(peer.endpoint().map(|e| e.addr), Some(old));
        // Looked up ahead and found nothing: no lookup leaves the host.
        let moved = file("gw-b.example:51820");
        let mut nothing = Resolved::default();
        nothing.found_nothing(&moved.peers[0]);
        let applied = apply_peer(&gw, &moved.peers[0], None, &nothing).unwrap();
        assert_eq!(
            applied.1,
            ["endpoints, none resolving now: traffic stays on the address in use until one does"],
            "{applied:?}"
        );
        assert_eq!(peer.endpoint().map(|e| e.addr), Some(old));
        assert_eq!(*peer.configured_endpoints.lock().unwrap(), moved.peers[0].endpoints);
        // No endpoints at all: nothing to resolve, nothing to say of it.
        let none = config(&format!("[[peer]]\nname = \"b\"\npublic_key = \"{key}\"\nendpoints = []\n"));
        assert_eq!(apply_peer(&gw, &none.peers[0], None, &Resolved::default()).unwrap().1, ["endpoints"]);
    }

    #[test]
    fn a_reload_with_listen_port_0_keeps_the_port_bound() {
        let iface = Interface::new("cwreload1".into(), Some(StaticSecret::random(&mut rand_core::OsRng)), 1420, 1, 0);
        let gw = Gateway::new(Arc::new(iface.unwrap()));
        let port = gw.listen_port();
        assert_ne!(port, 0);
        for _ in 0..3 {
            reconcile(&gw, &config(""));
            assert_eq!(gw.listen_port(), port, "moved to another port");
        }
    }
}
