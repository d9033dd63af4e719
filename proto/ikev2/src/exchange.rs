//! Routing a received message of an existing IKE SA to its exchange:
//! responses to our outstanding request, requests from the peer in
//! message-ID order (RFC 7296 §2.1–2.3), and starting the next queued
//! exchange when the window frees.
//!
//! Invariants: a response is taken only for the ID of our outstanding
//! request; a request only for the next expected ID, its predecessor
//! getting the cached response again; responses go back the way their
//! request came; INFORMATIONAL requests only once the SA is up; no state
//! changes before the SK payload authenticates; every message not taken
//! is counted by why (`drops.rs`), a retransmission answered again aside.

use std::net::SocketAddr;
use std::time::Instant;

use crate::drops::DropReason;
use crate::effect::Effect;
use crate::event::{DownReason, Event};
use crate::ids::{notify as n, ExchangeType, NAT_T_PORT};
use crate::io::Io;
use crate::peer::Peer;
use crate::sa::{IkeSa, Path, Planned, Req, SaState, RETRANSMIT_BASE};
use crate::wire::message::Message;
use crate::wire::notify::Notify;
use crate::wire::payload::Payload;
use crate::wire::WireError;

#[allow(clippy::too_many_arguments)] // a datagram's whole context
pub(crate) fn on_message(
    sa: &mut IkeSa,
    peer: &Peer,
    io: &mut Io,
    now: Instant,
    local: SocketAddr,
    remote: SocketAddr,
    data: &[u8],
    msg: &Message,
) -> Vec<Effect> {
    let h = msg.header;
    if h.is_response() {
        if sa.pending.as_ref().map(|p| p.id) != Some(h.message_id) {
            io.dropped(DropReason::UnexpectedMessageId);
            return Vec::new();
        }
        if h.exchange == ExchangeType::IkeSaInit {
            if sa.state == SaState::InitSent {
                return crate::sa_init::on_init_response(sa, peer, io, now, local, remote, data, msg);
            }
            io.dropped(DropReason::UnexpectedExchange);
            return Vec::new();
        }
        let payloads = match sa.open(data, msg) {
            Some(Ok(p)) => p,
            // Authentic but unreadable: the exchange cannot finish.
            Some(Err(_)) => vec![Payload::Notify(Notify::new(n::INVALID_SYNTAX, Vec::new()))],
            None => {
                io.dropped(DropReason::IntegrityCheckFailed);
                return Vec::new();
            }
        };
        sa.last_received = now;
        let Some(pending) = sa.pending.take() else { return Vec::new() };
        let mut effects = match pending.req {
            Req::Init => Vec::new(),
            Req::Auth { spi_in } => crate::ike_auth::on_auth_response(sa, peer, io, now, &payloads, spi_in),
            Req::Informational => Vec::new(),
            Req::DeleteChildren(spis) => crate::informational::on_delete_children_response(sa, io, &spis),
            Req::DeleteIke => {
                // Children still held (a duplicate's) go down now, when
                // the peer no longer sends on them.
                let reason = sa.down_reason(DownReason::DeletedLocally);
                crate::informational::forget(sa, io, reason);
                vec![Effect::Destroy]
            }
            Req::RekeyChild(r) => crate::rekey::on_child_rekey_response(sa, peer, io, now, *r, &payloads),
            Req::RekeyIke(r) => crate::rekey::on_ike_rekey_response(sa, peer, io, now, *r, &payloads),
            Req::CreateChild(r) => crate::rekey::new_child::on_response(sa, peer, io, now, *r, &payloads),
        };
        // Not on an SA going away, nor before its children moved on.
        if !effects.iter().any(|e| matches!(e, Effect::Destroy | Effect::MoveChildren { .. })) {
            effects.extend(kick(sa, peer, io, now));
        }
        return effects;
    }

    // RFC 7296 §1.4: INFORMATIONAL only after the initial exchanges. Taken
    // before, it would use up the message ID of the IKE_AUTH to come, which
    // would then get its response as if a retransmission.
    if h.exchange == ExchangeType::Informational && !matches!(sa.state, SaState::Established | SaState::Deleting) {
        io.dropped(DropReason::UnexpectedExchange);
        return Vec::new();
    }
    // RFC 7296 §2.11: a response goes back to where its request came from,
    // from where it arrived, whatever `sa.path` says.
    let back = Path::answering(local, remote);
    if sa.peer_next_id > 0 && h.message_id == sa.peer_next_id.wrapping_sub(1) {
        match &sa.cached {
            // Only to a retransmission that authenticates: made-up bytes
            // from a spoofed source get nothing. A captured real one,
            // replayed from a spoofed source, still gets one response per
            // copy, which §2.11 asks for (no amplification: one for one).
            Some((id, cached)) if *id == h.message_id => match sa.open(data, msg) {
                Some(_) => back.transmit(io, cached.clone()),
                None => io.dropped(DropReason::IntegrityCheckFailed),
            },
            // Nothing to answer it with.
            _ => io.dropped(DropReason::UnexpectedMessageId),
        }
        return Vec::new();
    }
    if h.message_id != sa.peer_next_id {
        io.dropped(DropReason::UnexpectedMessageId);
        return Vec::new();
    }
    if h.exchange == ExchangeType::IkeSaInit {
        io.dropped(DropReason::UnexpectedExchange);
        return Vec::new();
    }
    sa.reply_path = Some(back);
    let effects = on_request(sa, peer, io, now, back, data, msg);
    sa.reply_path = None;
    effects
}

/// A request with the expected message ID, which came the way `back`
/// answers (`sa.reply_path` is set to it).
fn on_request(
    sa: &mut IkeSa,
    peer: &Peer,
    io: &mut Io,
    now: Instant,
    back: Path,
    data: &[u8],
    msg: &Message,
) -> Vec<Effect> {
    let h = msg.header;
    let payloads = match sa.open(data, msg) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            let answer = match e {
                WireError::UnsupportedCritical(t) => Notify::new(n::UNSUPPORTED_CRITICAL_PAYLOAD, vec![t]),
                _ => Notify::new(n::INVALID_SYNTAX, Vec::new()),
            };
            sa.peer_next_id = sa.peer_next_id.wrapping_add(1);
            sa.send_response(io, h.exchange, h.message_id, &[Payload::Notify(answer)]);
            return Vec::new();
        }
        None => {
            io.dropped(DropReason::IntegrityCheckFailed);
            return Vec::new();
        }
    };
    sa.last_received = now;
    // RFC 7296 §2.23: follow a peer behind a NAT to its latest address
    // where the SA roams (not when we initiated from behind a NAT of our
    // own: a forged packet would move us; `NatSeen::apply`), and follow
    // its move to 4500, after which we stay there.
    let floated = back.local_port == NAT_T_PORT && sa.path.local_port != NAT_T_PORT;
    if floated {
        sa.path.local_port = NAT_T_PORT;
    }
    if (floated || sa.roams) && sa.path.remote != back.remote {
        sa.path.remote = back.remote;
        if sa.up {
            io.events.push_back(Event::PeerMoved { peer: sa.peer.clone(), remote: back.remote });
        }
    }
    sa.peer_next_id = sa.peer_next_id.wrapping_add(1);
    let id = h.message_id;
    let mut effects = match (h.exchange, sa.state) {
        (ExchangeType::IkeAuth, SaState::InitReplied) if !sa.initiator => {
            crate::ike_auth::on_auth_request(sa, peer, io, now, id, &payloads)
        }
        (ExchangeType::CreateChildSa, SaState::Established | SaState::Deleting) => {
            crate::rekey::on_request(sa, peer, io, now, id, &payloads)
        }
        (ExchangeType::Informational, _) => crate::informational::on_request(sa, io, id, &payloads),
        (ex, _) => {
            let refuse = Notify::new(n::INVALID_SYNTAX, Vec::new());
            sa.send_response(io, ex, id, &[Payload::Notify(refuse)]);
            Vec::new()
        }
    };
    if !effects.iter().any(|e| matches!(e, Effect::Destroy)) {
        effects.extend(kick(sa, peer, io, now));
    }
    effects
}

/// Starts the next queued exchange if the window is free.
pub(crate) fn kick(sa: &mut IkeSa, peer: &Peer, io: &mut Io, now: Instant) -> Vec<Effect> {
    if sa.pending.is_some() || !matches!(sa.state, SaState::Established | SaState::Deleting) {
        return Vec::new();
    }
    while let Some(next) = sa.queue.pop_front() {
        match next {
            Planned::Dpd => {
                sa.send_request(io, now, ExchangeType::Informational, &[], Req::Informational);
                // Answered within the liveness interval, or the peer is dead.
                if let Some(p) = sa.pending.as_mut() {
                    p.give_up_at = Some(now + peer.cfg.dpd_interval.max(RETRANSMIT_BASE * 2));
                }
            }
            Planned::DeleteChildren(spis) => crate::informational::send_delete_children(sa, io, now, spis),
            Planned::DeleteIke => crate::informational::send_delete_ike(sa, io, now),
            Planned::RekeyChild(spi_in) => crate::rekey::start_child_rekey(sa, peer, io, now, spi_in),
            Planned::RekeyIke => crate::rekey::start_ike_rekey(sa, peer, io, now),
            Planned::CreateChild(group) => crate::rekey::new_child::start(sa, peer, io, now, group),
            Planned::DeleteRefused(spi_in) => crate::informational::send_delete_refused(sa, io, now, spi_in),
        }
        if sa.pending.is_some() {
            break;
        }
    }
    Vec::new()
}
