//! The IPsec half of a reload: IPsec peers added, changed or removed as a
//! difference, like WireGuard peers (`reload.rs`). A peer whose IKE
//! settings did not change keeps its IKE and child SAs; a changed one is
//! negotiated anew.

use std::collections::HashSet;

use causeway_config::{Config, Encap};
use causeway_dataplane::udp::OsBind;
use ipnet::IpNet;

use crate::gateway::Gateway;
use crate::report::Report;

/// Makes the IPsec peers match `cfg`. IKE starts with the first of them.
pub fn reconcile(gw: &Gateway, cfg: &Config, report: &mut Report) {
    let ike = match gw.ike() {
        Some(ike) => ike,
        None if cfg.ipsec_peers.is_empty() => return,
        None => {
            let raw = cfg.ipsec_peers.iter().any(|p| p.encap == Encap::Auto);
            match gw.ensure_ike(&OsBind, raw) {
                Ok(ike) => ike,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start IKE (UDP ports 500 and 4500): IPsec peers not added");
                    report.needs_restart.extend(cfg.ipsec_peers.iter().map(|p| format!("{} (IKE: {e})", p.name)));
                    return;
                }
            }
        }
    };
    let wanted: HashSet<&str> = cfg.ipsec_peers.iter().map(|p| p.name.as_str()).collect();
    for name in ike.peer_names() {
        if !wanted.contains(name.as_str()) {
            ike.remove_peer(&name);
            report.removed.push(name);
        }
    }
    for p in &cfg.ipsec_peers {
        let before = ike.config(&p.name);
        ike.set_peer(p);
        let Some(peer) = gw.ipsec.peer(&p.name) else { continue };
        let want: HashSet<IpNet> = p.allowed_ips.iter().map(|n| n.trunc()).collect();
        let have: HashSet<IpNet> = gw.allowed_ips_of(&peer).into_iter().collect();
        let routes_changed = have != want;
        if routes_changed {
            gw.update_routes(|r| {
                r.retain(|_, owner| !owner.is_peer(&peer));
                for n in &want {
                    r.insert(*n, peer.clone().into());
                }
            });
        }
        match before {
            None => report.added.push(p.name.clone()),
            Some(b) if b == *p => report.unchanged += 1,
            Some(_) => report.changed.push(format!("{} (IPsec settings)", p.name)),
        }
    }
}
