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

pub(crate) use child::{on_child_rekey_response, start_child_rekey};
pub(crate) use ike::{hand_over, on_ike_rekey_response, start_ike_rekey};

use crate::effect::Effect;
use crate::ids::{notify as n, protocol, ExchangeType};
use crate::io::Io;
use crate::peer::Peer;
use crate::sa::{notify, IkeSa, SaState};
use crate::wire::notify::Notify;
use crate::wire::payload::Payload;

/// A failed rekey is tried again after this.
pub const REKEY_RETRY: Duration = Duration::from_secs(30);

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
