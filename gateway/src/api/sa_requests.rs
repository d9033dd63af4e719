//! New keys, or a fresh start, for one peer on an operator's request
//! (`tunctl peer rekey`, `tunctl peer reset`), as strongSwan's `swanctl
//! --rekey` and `--terminate`, or an SRX's `clear security ike
//! security-associations`, give them. The
//! protocols do the work: IKE's ordinary rekeys and Deletes
//! (`causeway_ikev2::Endpoint::rekey_peer_now`, `reset_peer`), and a
//! WireGuard handshake, which is all a WireGuard rekey is.

use std::sync::atomic::Ordering;

use causeway_dataplane::peer::PeerState;
use causeway_dataplane::wireguard::send_initiation;
use causeway_ikev2::IkeState;

use super::status::ike_state_name;
use super::{find_peer, ipsec_peer, ApiError};
use crate::gateway::Gateway;

fn child_sas(n: usize) -> String {
    if n == 1 {
        "1 child SA".into()
    } else {
        format!("{n} child SAs")
    }
}

pub(super) fn rekey(gw: &Gateway, who: &str, ike: bool) -> Result<String, ApiError> {
    if let Some(driver) = ipsec_peer(gw, who) {
        let state = driver.status(who).map_or(IkeState::Down, |s| s.state);
        if state != IkeState::Established {
            return Err(ApiError::NotUp(who.to_string(), ike_state_name(state).to_string()));
        }
        let done = driver.rekey_now(who, ike);
        // Asked for but not scheduled: its rekey is under way already.
        let ike_busy = if ike && !done.ike { "; the IKE SA's rekey is under way already" } else { "" };
        return Ok(match (done.ike, done.children) {
            (false, 0) => format!("{who}: nothing to rekey now: a rekey is under way, or no child SA is up"),
            (false, n) => format!("{who}: rekeying {}{ike_busy}", child_sas(n)),
            (true, n) => format!("{who}: rekeying {} and the IKE SA", child_sas(n)),
        });
    }
    let peer = find_peer(gw, who)?;
    if ike {
        return Err(ApiError::Field {
            field: "ike",
            message: format!("{who} is a WireGuard peer; its one handshake renews everything"),
        });
    }
    handshake_allowed(gw, &peer, who)?;
    Ok(handshake(gw, &peer, who))
}

pub(super) fn reset(gw: &Gateway, who: &str) -> Result<String, ApiError> {
    if let Some(driver) = ipsec_peer(gw, who) {
        let initiates = driver.config(who).is_some_and(|c| c.initiate);
        let before = driver.status(who).map_or(IkeState::Down, |s| s.state);
        let gone = match (driver.reset(who), before) {
            (None, _) => return Err(ApiError::RekeyUnderWay(who.to_string())),
            (Some(0), _) => "had no IKE SA".to_string(),
            // Half-open: nobody to tell.
            (Some(_), IkeState::Connecting) => "the IKE SA being set up abandoned".to_string(),
            (Some(1), _) => "IKE SA and its child SAs deleted, the peer told".to_string(),
            (Some(n), _) => format!("{n} IKE SAs and their child SAs deleted, the peer told"),
        };
        let next = if initiates {
            "setting up a new one now"
        } else {
            "this gateway does not initiate to it: the peer (or traffic, where endpoints are set) starts the next"
        };
        return Ok(format!("{who}: {gone}; {next}"));
    }
    let peer = find_peer(gw, who)?;
    // Checked before anything is dropped: refused, the sessions stay.
    handshake_allowed(gw, &peer, who)?;
    gw.device.clear_sessions(peer.crypto());
    Ok(format!("{who}: sessions dropped; {}", handshake(gw, &peer, who)))
}

/// Whether a handshake initiation can leave now; the error says why not.
fn handshake_allowed(gw: &Gateway, peer: &PeerState, who: &str) -> Result<(), ApiError> {
    if peer.endpoint().is_none() {
        return Err(ApiError::NoEndpoint(who.to_string()));
    }
    if !peer.crypto().initiation_allowed(gw.clock.now()) {
        return Err(ApiError::HandshakeTooSoon(who.to_string()));
    }
    Ok(())
}

/// Sends a handshake initiation; says whether it left.
fn handshake(gw: &Gateway, peer: &PeerState, who: &str) -> String {
    let before = peer.handshakes_initiated.load(Ordering::Relaxed);
    let sockets = gw.sockets();
    if let Some(sock) = sockets.sockets.first() {
        send_initiation(gw, peer, &**sock, gw.clock.now());
    }
    if peer.handshakes_initiated.load(Ordering::Relaxed) > before {
        format!("handshake initiation sent to {who}")
    } else {
        format!("no initiation could be sent to {who} (`tunctl show` counts why under drops)")
    }
}
