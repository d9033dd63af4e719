//! CREATE_CHILD_SA (RFC 7296 §1.3): rekeying child SAs (§1.3.3, §2.8) and
//! the IKE SA (§1.3.2, §2.18), for both roles, and the resolution of
//! simultaneous rekeys (§2.8.1, §2.8.2).
//!
//! Invariants: a rekeyed SA stays installed until the new one is, and is
//! deleted by the rekey's initiator — or, after a collision, by the winner,
//! while the loser deletes the redundant SA it created (the one made with
//! the lowest of the four nonces). New child SAs other than rekeys are
//! refused with NO_ADDITIONAL_SAS: Causeway negotiates one child SA per
//! IKE SA.

mod child;
mod ike;

use std::time::{Duration, Instant};

pub(crate) use child::{on_child_rekey_response, start_child_rekey, ChildRekey};
pub(crate) use ike::{hand_over, on_ike_rekey_response, start_ike_rekey, IkeRekey};

use crate::endpoint::{Effect, Io, Peer};
use crate::ids::{notify as n, protocol, ExchangeType};
use crate::sa::{notify, IkeSa, SaState};
use crate::wire::notify::Notify;
use crate::wire::payload::Payload;

/// A failed rekey is tried again after this.
pub const REKEY_RETRY: Duration = Duration::from_secs(30);

/// A rekey we answered while our own rekey of the same SA was out.
#[derive(Debug, Clone)]
pub(crate) struct Collision {
    /// The peer's request nonce and our response nonce.
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    /// The SA that exchange created: our inbound SPI (child) or our SPI
    /// of the new IKE SA.
    pub created: u64,
}

/// Whether the exchange with nonces (`ours_ni`, `ours_nr`) holds the
/// lowest of the four nonces, making the SA it created redundant.
pub(crate) fn ours_is_redundant(ours_ni: &[u8], ours_nr: &[u8], c: &Collision) -> bool {
    let ours = ours_ni.min(ours_nr);
    let theirs = c.ni.as_slice().min(c.nr.as_slice());
    ours < theirs
}

pub(crate) fn nonce(p: &[Payload]) -> Option<&[u8]> {
    p.iter().find_map(|x| if let Payload::Nonce(v) = x { Some(v.as_slice()) } else { None })
}

pub(crate) fn ke(p: &[Payload]) -> Option<(u16, &[u8])> {
    p.iter().find_map(|x| if let Payload::Ke { group, data } = x { Some((*group, data.as_slice())) } else { None })
}

pub(crate) fn refuse(sa: &mut IkeSa, io: &mut Io, id: u32, kind: u16, data: Vec<u8>) {
    sa.send_response(io, ExchangeType::CreateChildSa, id, &[Payload::Notify(Notify::new(kind, data))]);
}

/// A CREATE_CHILD_SA request from the peer.
pub(crate) fn on_request(
    sa: &mut IkeSa,
    peer: &Peer,
    io: &mut Io,
    now: Instant,
    id: u32,
    p: &[Payload],
) -> Vec<Effect> {
    if sa.state != SaState::Established {
        refuse(sa, io, id, n::TEMPORARY_FAILURE, Vec::new());
        return Vec::new();
    }
    if let Some(r) = notify(p, n::REKEY_SA) {
        return child::on_request(sa, peer, io, now, id, p, &r.spi.clone());
    }
    let ike = p.iter().any(|x| matches!(x, Payload::Sa(props) if props.iter().any(|q| q.protocol == protocol::IKE)));
    if ike {
        return ike::on_request(sa, peer, io, now, id, p);
    }
    refuse(sa, io, id, n::NO_ADDITIONAL_SAS, Vec::new());
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exchange_with_the_lowest_nonce_is_redundant() {
        let c = Collision { ni: vec![5; 32], nr: vec![7; 32], created: 1 };
        assert!(ours_is_redundant(&[9; 32], &[4; 32], &c));
        assert!(!ours_is_redundant(&[6; 32], &[9; 32], &c));
        // Both ends reach opposite verdicts over the same four nonces.
        let theirs = Collision { ni: vec![9; 32], nr: vec![4; 32], created: 2 };
        assert!(!ours_is_redundant(&[5; 32], &[7; 32], &theirs));
    }
}
