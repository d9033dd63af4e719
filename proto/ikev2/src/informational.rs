//! INFORMATIONAL exchanges (RFC 7296 §1.4): deleting child and IKE SAs,
//! liveness checks (an empty request, §2.4), and the events owed when SAs
//! go away.
//!
//! Invariants: a child SA is reported down once, when it leaves its IKE
//! SA's list; an IKE SA that was reported up is reported down once, after
//! all its children.

use std::time::Instant;

use crate::effect::Effect;
use crate::event::{ChildStatus, DownReason, Event};
use crate::ids::{protocol, ExchangeType};
use crate::io::Io;
use crate::sa::{ChildSa, IkeSa, Planned, Req, SaState};
use crate::wire::notify::Delete;
use crate::wire::payload::Payload;

/// Also unlinks children that replaced `c`, so that its SPI, once free
/// again, can never name their predecessor.
fn child_down(sa: &mut IkeSa, io: &mut Io, c: &ChildSa) {
    for x in sa.children.iter_mut().filter(|x| x.replaces == Some(c.spi_in)) {
        x.replaces = None;
    }
    io.free_spi_in(c.spi_in);
    io.events.push_back(Event::ChildDown { peer: sa.peer.clone(), spi_in: c.spi_in, spi_out: c.spi_out });
}

/// A child SA whose Delete is going out sends no more; it receives until
/// its `ChildDown`.
fn stops_sending(io: &mut Io, peer: &crate::config::PeerId, spi_in: u32) {
    io.events.push_back(Event::ChildStopSending { peer: peer.clone(), spi_in });
}

/// Reports the SA and all its children down, without telling the peer.
pub(crate) fn forget(sa: &mut IkeSa, io: &mut Io, reason: DownReason) {
    for c in std::mem::take(&mut sa.children) {
        child_down(sa, io, &c);
    }
    if sa.up {
        sa.up = false;
        io.events.push_back(Event::IkeDown { peer: sa.peer.clone(), reason });
    }
    sa.state = SaState::Dead;
}

/// Tells the peer once (no retransmission) and forgets the SA.
///
/// The Delete goes out even while a request of ours is unanswered, one
/// request beyond the window of one that RFC 7296 §2.3 allows, knowingly:
/// it is the last message of the SA. A peer that has answered the first
/// request (the usual case: it was only in flight) expects this message ID
/// and deletes its side at once; one that has not seen the first drops it,
/// which is what withholding it would achieve. Withheld, the peer would
/// send into a dead SA until its liveness check gives up, minutes with
/// strongSwan's defaults.
pub(crate) fn delete_now(sa: &mut IkeSa, io: &mut Io, _now: Instant, reason: DownReason) {
    if sa.keys.is_some() && !matches!(sa.state, SaState::Dead | SaState::InitSent) {
        let del = Payload::Delete(Delete { protocol: protocol::IKE, spis: Vec::new() });
        if let Some(data) = sa.seal(io, sa.header(ExchangeType::Informational, false, sa.next_id), &[del]) {
            sa.transmit(io, data);
        }
    }
    forget(sa, io, reason);
}

/// Asks the peer to delete child SAs. They send no more from now on
/// (another SA of the peer takes over where there is one), so that the
/// data plane, when a sending SA goes, never hands over to one of these,
/// about to go too; they receive until the answer.
pub(crate) fn send_delete_children(sa: &mut IkeSa, io: &mut Io, now: Instant, spis: Vec<u32>) {
    let spis: Vec<u32> = spis.into_iter().filter(|s| sa.child(*s).is_some()).collect();
    if spis.is_empty() {
        return;
    }
    for c in sa.children.iter_mut().filter(|c| spis.contains(&c.spi_in)) {
        c.retiring = true;
        stops_sending(io, &sa.peer, c.spi_in);
    }
    let del = Delete { protocol: protocol::ESP, spis: spis.iter().map(|s| s.to_be_bytes().to_vec()).collect() };
    sa.send_request(io, now, ExchangeType::Informational, &[Payload::Delete(del)], Req::DeleteChildren(spis));
}

/// Asks the peer to delete the child SA it made for an answer we refused
/// (`Planned::DeleteRefused`). Nothing of it is ours to report down: it
/// was never installed, and its SPI was freed with the refusal, so the
/// request names no child of ours for its answer to remove (one that got
/// the freed SPI meanwhile is not this one).
pub(crate) fn send_delete_refused(sa: &mut IkeSa, io: &mut Io, now: Instant, spi_in: u32) {
    let del = Delete { protocol: protocol::ESP, spis: vec![spi_in.to_be_bytes().to_vec()] };
    sa.send_request(io, now, ExchangeType::Informational, &[Payload::Delete(del)], Req::DeleteChildren(Vec::new()));
}

/// Asks the peer to delete the IKE SA. Children it still holds (a
/// duplicate's; a rekeyed SA's went to its successor) stop sending now
/// and receive until the answer: the peer sends on them until the Delete
/// arrives and not after, and what we sent on them before normally
/// arrives ahead of the Delete, which takes the same path.
pub(crate) fn send_delete_ike(sa: &mut IkeSa, io: &mut Io, now: Instant) {
    for c in &sa.children {
        stops_sending(io, &sa.peer, c.spi_in);
    }
    let del = Payload::Delete(Delete { protocol: protocol::IKE, spis: Vec::new() });
    sa.state = SaState::Deleting;
    sa.send_request(io, now, ExchangeType::Informational, &[del], Req::DeleteIke);
}

/// Our Delete of child SAs was answered: they are gone on both ends.
pub(crate) fn on_delete_children_response(sa: &mut IkeSa, io: &mut Io, spis: &[u32]) -> Vec<Effect> {
    let (gone, kept): (Vec<ChildSa>, Vec<ChildSa>) =
        std::mem::take(&mut sa.children).into_iter().partition(|c| spis.contains(&c.spi_in));
    sa.children = kept;
    for c in &gone {
        child_down(sa, io, c);
    }
    Vec::new()
}

/// An INFORMATIONAL request from the peer: deletes, or a liveness check.
pub(crate) fn on_request(sa: &mut IkeSa, io: &mut Io, id: u32, p: &[Payload]) -> Vec<Effect> {
    let mut answer = Vec::new();
    let mut delete_ike = false;
    for d in p.iter().filter_map(|x| if let Payload::Delete(d) = x { Some(d) } else { None }) {
        match d.protocol {
            protocol::IKE => delete_ike = true,
            protocol::ESP => {
                let mut ours = Vec::new();
                for spi in &d.spis {
                    let Ok(raw) = <[u8; 4]>::try_from(spi.as_slice()) else { continue };
                    let spi_out = u32::from_be_bytes(raw);
                    if let Some(i) = sa.children.iter().position(|c| c.spi_out == spi_out) {
                        let c = sa.children.remove(i);
                        child_down(sa, io, &c);
                        revive_predecessor(sa, &c);
                        // Deletes that cross (§1.4.1): our own Delete of it
                        // is out, and the answer MUST NOT name it again,
                        // which could delete the wrong SA. Our Delete's
                        // answer then finds it gone, and nothing is
                        // reported twice.
                        let ours_out = matches!(&sa.pending,
                            Some(q) if matches!(&q.req, Req::DeleteChildren(s) if s.contains(&c.spi_in)));
                        if !ours_out {
                            ours.push(c.spi_in.to_be_bytes().to_vec());
                        }
                    }
                }
                if !ours.is_empty() {
                    answer.push(Payload::Delete(Delete { protocol: protocol::ESP, spis: ours }));
                }
            }
            _ => {}
        }
    }
    if delete_ike {
        sa.send_response(io, ExchangeType::Informational, id, &[]);
        // Mid-collision (we answered the peer's IKE rekey while ours was
        // out): the peer settled it first, and deletes the old SA because
        // the one it made survives, the one we made answering it. The
        // children go there, as if ours had completed and lost.
        if let Some(c) = sa.responded_ike_rekey.take() {
            return vec![Effect::MoveChildren { to: c.created }, Effect::Destroy];
        }
        forget(sa, io, DownReason::DeletedByPeer);
        return vec![Effect::Destroy];
    }
    sa.send_response(io, ExchangeType::Informational, id, &answer);
    Vec::new()
}

/// The peer deleted `gone`, which replaced another child SA of ours: it
/// refused our answer to its rekey. The one `gone` was to replace, marked
/// retiring when we answered, is the child SA again and may be rekeyed,
/// unless a rekey or Delete of our own is out or planned for it (then
/// `gone` was the loser of crossing rekeys, or the old SA goes anyway).
/// Without this the peer's next rekey of it would be refused as already
/// replaced, until its hard expiry.
///
/// Whatever else happens, a collision with `gone` is over: our rekey of
/// the predecessor, if out, then completes as an uncontested one.
fn revive_predecessor(sa: &mut IkeSa, gone: &ChildSa) {
    let Some(old) = gone.replaces else { return };
    let ours_pending = matches!(&sa.pending, Some(q) if match &q.req {
        Req::RekeyChild(r) => r.old == old,
        Req::DeleteChildren(s) => s.contains(&old),
        _ => false,
    });
    let ours_planned = sa.queue.iter().any(|q| match q {
        Planned::RekeyChild(s) => *s == old,
        Planned::DeleteChildren(s) => s.contains(&old),
        _ => false,
    });
    let ours_out = ours_pending || ours_planned;
    let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == old) else { return };
    if !ours_out || c.collision.as_ref().is_some_and(|k| k.created == u64::from(gone.spi_in)) {
        c.collision = None;
    }
    if !ours_out {
        c.retiring = false;
    }
}

pub(crate) fn child_status(sa: &IkeSa, c: &ChildSa, now: Option<Instant>) -> ChildStatus {
    ChildStatus {
        spi_in: c.spi_in,
        spi_out: c.spi_out,
        cipher: c.cipher,
        pfs: c.pfs,
        age: now.map(|n| n.saturating_duration_since(c.created)).unwrap_or_default(),
        encap: sa.nat,
        local_ts: c.local_ts.clone(),
        remote_ts: c.remote_ts.clone(),
    }
}
