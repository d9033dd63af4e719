//! The IPsec half of a reload: IPsec peers added, changed or removed as a
//! difference, like WireGuard peers (`reload.rs`). A peer whose IKE
//! settings did not change keeps its IKE and child SAs; a changed one is
//! negotiated anew.

use std::collections::HashSet;
use std::sync::Arc;

use causeway_config::{Config, Encap, IpsecPeer};
use causeway_dataplane::udp::OsBind;
use ipnet::IpNet;

use crate::endpoint_names::Resolved;
use crate::gateway::Gateway;
use crate::ipsec::driver::Ike;
use crate::report::Report;

/// IKE, started for `peers` if it was not (None when there is nothing to
/// start it for). Err names why it could not start.
pub fn ike_for(gw: &Gateway, peers: &[IpsecPeer]) -> Result<Option<Arc<Ike>>, String> {
    match gw.ike() {
        Some(ike) => Ok(Some(ike)),
        None if peers.is_empty() => Ok(None),
        None => {
            let raw = peers.iter().any(|p| p.encap == Encap::Auto);
            gw.ensure_ike(&OsBind, raw).map(Some).map_err(|e| e.to_string())
        }
    }
}

/// Makes the IPsec peers match `cfg`. IKE starts with the first of them.
pub fn reconcile(gw: &Gateway, cfg: &Config, resolved: &Resolved, report: &mut Report) {
    let ike = match ike_for(gw, &cfg.ipsec_peers) {
        Ok(Some(ike)) => ike,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot start IKE (UDP ports 500 and 4500): IPsec peers not added");
            report.needs_restart.extend(cfg.ipsec_peers.iter().map(|p| format!("{} (IKE: {e})", p.name)));
            return;
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
        apply_peer(gw, &ike, p, resolved, report);
    }
}

/// Makes one IPsec peer match `p`, adding it if needed, and its routes;
/// its endpoint names as `resolved` ahead, if they were.
pub fn apply_peer(gw: &Gateway, ike: &Ike, p: &IpsecPeer, resolved: &Resolved, report: &mut Report) {
    let before = ike.config(&p.name);
    let renegotiated = ike.set_peer(p, resolved.ipsec_addresses(p));
    let Some(peer) = gw.ipsec.peer(&p.name) else { return };
    let want: HashSet<IpNet> = p.allowed_ips.iter().map(|n| n.trunc()).collect();
    let have: HashSet<IpNet> = gw.allowed_ips_of(&peer).into_iter().collect();
    if have != want {
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
        Some(_) if renegotiated => report.changed.push(format!("{} (IPsec settings; SAs negotiated anew)", p.name)),
        Some(_) => report.changed.push(format!("{} (IPsec settings)", p.name)),
    }
}
