//! Rekeying a child SA with CREATE_CHILD_SA (RFC 7296 §1.3.3, §2.8),
//! with a fresh key exchange when the ESP proposal asks for PFS.
//!
//! Invariants: the old child SA is marked `retiring` from the moment a
//! rekey of it starts (ours) or is answered (the peer's), so it is never
//! rekeyed twice; its replacement is announced with `replaces` before the
//! old one is deleted, so no packet is lost in between.

use std::time::Instant;

use super::{answer_child, child_offer, read_response, refuse, ChildResponse, REKEY_RETRY};
use crate::child_keys::ChildKeys;
use crate::crypto::DhGroup;
use crate::effect::Effect;
use crate::event::{ChildSend, Event, Failure};
use crate::ids::{notify as n, protocol, ExchangeType};
use crate::ike_auth::{install_child, keymat};
use crate::io::Io;
use crate::negotiate::{describe, describe_ts, esp_offer, within};
use crate::peer::Peer;
use crate::rekey_state::{ours_is_redundant, ChildRekey, Collision};
use crate::sa::{error_notify, invalid_ke_group, IkeSa, Planned, Req};
use crate::wire::notify::Notify;
use crate::wire::payload::Payload;

/// Sends our rekey of the child SA `old` (our inbound SPI).
pub(crate) fn start_child_rekey(sa: &mut IkeSa, peer: &Peer, io: &mut Io, now: Instant, old: u32) {
    let cfg = &peer.cfg;
    let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == old) else { return };
    c.retiring = true;
    c.collision = None;
    let (local_ts, remote_ts) = (c.local_ts.clone(), c.remote_ts.clone());
    // PFS in the group the peer asked for last time, else the child's own
    // (which the peer took), while we still offer it; else our first
    // proposal's. A peer that took another of our proposals than the
    // first answers a KE in the first's group with INVALID_KE_PAYLOAD.
    let offered = |g: &DhGroup| cfg.esp_proposals.iter().any(|e| e.dh == Some(*g));
    let wanted = c.rekey_group.or(c.pfs).filter(offered);
    let mut p = vec![Payload::Notify(Notify {
        protocol: protocol::ESP,
        spi: old.to_be_bytes().to_vec(),
        kind: n::REKEY_SA,
        data: Vec::new(),
    })];
    let Some(offer) = child_offer(cfg, io, wanted, local_ts, remote_ts) else { return };
    p.extend(offer.payloads);
    let rekey = ChildRekey { old, spi_in: offer.spi_in, ni: offer.ni, dh: offer.dh };
    sa.send_request(io, now, ExchangeType::CreateChildSa, &p, Req::RekeyChild(Box::new(rekey)));
}

/// The answer to our child rekey.
pub(crate) fn on_child_rekey_response(
    sa: &mut IkeSa,
    peer: &Peer,
    io: &mut Io,
    now: Instant,
    r: ChildRekey,
    p: &[Payload],
) -> Vec<Effect> {
    let cfg = &peer.cfg;
    let give_up = |sa: &mut IkeSa, io: &mut Io, reason: Option<Failure>| {
        io.free_spi_in(r.spi_in);
        if let Some(reason) = reason {
            io.fail(&sa.peer, reason);
        }
        if let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == r.old) {
            // Unless the peer's own rekey of it won, try again later.
            if c.collision.is_none() {
                c.retiring = false;
                c.rekey_at = now + REKEY_RETRY;
            }
        }
        Vec::new()
    };
    if let Some(e) = error_notify(p) {
        let reason = match e {
            n::CHILD_SA_NOT_FOUND => {
                io.free_spi_in(r.spi_in);
                if let Some(i) = sa.children.iter().position(|c| c.spi_in == r.old) {
                    let c = sa.children.remove(i);
                    io.free_spi_in(c.spi_in);
                    io.events.push_back(Event::ChildDown {
                        peer: sa.peer.clone(),
                        spi_in: c.spi_in,
                        spi_out: c.spi_out,
                    });
                }
                return Vec::new();
            }
            n::TEMPORARY_FAILURE => None,
            n::NO_PROPOSAL_CHOSEN => {
                Some(Failure::NoProposalChosen { offered: describe(&esp_offer(&cfg.esp_proposals, r.spi_in, true)) })
            }
            n::INVALID_KE_PAYLOAD => {
                let requested = invalid_ke_group(p);
                let ours = cfg.esp_proposals.iter().filter_map(|e| e.dh).find(|g| g.id() == requested);
                let sent = r.dh.as_ref().map(|d| d.group());
                let child = sa.children.iter_mut().find(|c| c.spi_in == r.old);
                match (ours, child) {
                    // Asked once for a group we offer: again at once, in it.
                    (Some(g), Some(c)) if c.rekey_group.is_none() && Some(g) != sent && c.collision.is_none() => {
                        io.free_spi_in(r.spi_in);
                        c.rekey_group = Some(g);
                        c.retiring = false;
                        c.rekey_at = now;
                        return Vec::new();
                    }
                    _ => Some(Failure::InvalidKe { requested }),
                }
            }
            e => Some(Failure::PeerError { notify: e }),
        };
        return give_up(sa, io, reason);
    }
    // From here on the answer is no error: where it carries a child SA,
    // the peer holds it, and one we refuse is deleted there too.
    let refused = |sa: &mut IkeSa, io: &mut Io, reason: Option<Failure>| {
        if crate::ike_auth::child_parts(p).is_some() {
            sa.queue.push_front(Planned::DeleteRefused(r.spi_in));
        }
        give_up(sa, io, reason)
    };
    let ChildResponse { esp, spi_out, tsi, tsr, nr, shared } =
        match read_response(cfg, r.dh, sa.suite.map(|s| s.prf), p, "the rekey") {
            Ok(answer) => answer,
            Err(why) => return refused(sa, io, Some(Failure::Protocol(why))),
        };
    let Some(old) = sa.child(r.old).cloned() else {
        return refused(sa, io, None);
    };
    if !within(tsi, &old.local_ts) || !within(tsr, &old.remote_ts) {
        let offered = format!("{} === {}", describe_ts(&old.local_ts), describe_ts(&old.remote_ts));
        return refused(sa, io, Some(Failure::TsUnacceptable { offered }));
    }
    let Some(km) = keymat(sa, esp.cipher, shared.as_ref().map(|s| s.as_slice()), &r.ni, nr) else { return Vec::new() };
    let keys = ChildKeys::from_keymat(&km, true, r.spi_in, spi_out, esp.cipher);
    let (tsi, tsr) = (tsi.to_vec(), tsr.to_vec());
    match old.collision {
        // §2.8.1: we made the redundant SA; install it (the peer may already
        // send on it) without moving traffic, then delete it.
        Some(c) if ours_is_redundant(&r.ni, nr, &c) => {
            install_child(sa, cfg, io, now, keys, esp.dh, tsi, tsr, None, ChildSend::Never);
            if let Some(new) = sa.children.iter_mut().find(|x| x.spi_in == r.spi_in) {
                new.retiring = true;
            }
            sa.queue.push_front(Planned::DeleteChildren(vec![r.spi_in]));
        }
        Some(c) => {
            // The data plane hands sending over from the peer's SA of the
            // collision; the IKE SA's predecessor is still the old one.
            install_child(sa, cfg, io, now, keys, esp.dh, tsi, tsr, Some(c.created as u32), ChildSend::Now);
            if let Some(new) = sa.children.iter_mut().find(|x| x.spi_in == r.spi_in) {
                new.replaces = Some(r.old);
            }
            sa.queue.push_front(Planned::DeleteChildren(vec![r.old]));
        }
        None => {
            install_child(sa, cfg, io, now, keys, esp.dh, tsi, tsr, Some(r.old), ChildSend::Now);
            sa.queue.push_front(Planned::DeleteChildren(vec![r.old]));
        }
    }
    vec![Effect::ChildRekeyed]
}

/// The peer's rekey of the child SA it receives on with the SPI of its
/// REKEY_SA notification, `rekey`.
#[allow(clippy::too_many_arguments)] // the request's whole context
pub(crate) fn on_request(
    sa: &mut IkeSa,
    peer: &Peer,
    io: &mut Io,
    now: Instant,
    id: u32,
    p: &[Payload],
    rekey: &Notify,
) -> Vec<Effect> {
    let cfg = &peer.cfg;
    let spi_out = <[u8; 4]>::try_from(rekey.spi.as_slice()).map(u32::from_be_bytes).unwrap_or(0);
    let Some(idx) = sa.children.iter().position(|c| c.spi_out == spi_out) else {
        // RFC 7296 §2.25: the answer names the SA it did not find, with the
        // protocol and SPI of the request's REKEY_SA, so that the peer
        // knows which of its rekeys failed.
        let missing =
            Notify { protocol: rekey.protocol, spi: rekey.spi.clone(), kind: n::CHILD_SA_NOT_FOUND, data: Vec::new() };
        sa.send_response(io, ExchangeType::CreateChildSa, id, &[Payload::Notify(missing)]);
        return Vec::new();
    };
    let old_in = sa.children[idx].spi_in;
    let ours_pending = matches!(&sa.pending, Some(q) if matches!(&q.req, Req::RekeyChild(r) if r.old == old_in));
    let queued = sa.queue.contains(&Planned::RekeyChild(old_in));
    if sa.children[idx].retiring && !ours_pending && !queued {
        // Already replaced or being deleted (§2.25).
        refuse(sa, io, id, n::TEMPORARY_FAILURE, Vec::new());
        return Vec::new();
    }
    let Some(a) = answer_child(sa, cfg, io, id, p) else { return Vec::new() };
    sa.queue.retain(|q| q != &Planned::RekeyChild(old_in));
    if let Some(old) = sa.children.get_mut(idx) {
        old.retiring = true;
        if ours_pending {
            old.collision = Some(Collision { ni: a.ni, nr: a.nr, created: u64::from(a.keys.spi_in) });
        }
    }
    install_child(sa, cfg, io, now, a.keys, a.esp.dh, a.local_ts, a.remote_ts, Some(old_in), ChildSend::OnceUsed);
    sa.send_response(io, ExchangeType::CreateChildSa, id, &a.payloads);
    vec![Effect::ChildRekeyed]
}
