//! Creating a child SA on an IKE SA that has none (RFC 7296 §1.3.1): a
//! CREATE_CHILD_SA without REKEY_SA, with a fresh key exchange when the
//! ESP proposal asks for PFS.
//!
//! An IKE SA is left without a child SA when the peer deletes its child
//! (`swanctl --terminate --child`, an SRX's `clear security ipsec sa`)
//! or when the child offered in IKE_AUTH was refused while the IKE SA
//! came up. Liveness checks keep such an IKE SA alive, so without this
//! the tunnel would carry nothing until the IKE SA itself went away.
//!
//! Invariant: Causeway keeps one child SA per IKE SA; a new one is asked
//! for and accepted only while the IKE SA has no child that is not being
//! deleted. When both peers ask at once, the IKE SA's initiator refuses
//! the responder's request and the responder takes the initiator's. A
//! peer that takes ours while its own is out (strongSwan does) leaves two;
//! both carry traffic and are rekeyed, the later one sending.

use std::time::Instant;

use super::{answer_child, child_offer, read_response, refuse, ChildOffer, ChildResponse};
use crate::child_keys::ChildKeys;
use crate::crypto::{DhGroup, DhPrivate};
use crate::effect::Effect;
use crate::event::{ChildSend, Failure};
use crate::ids::{notify as n, ExchangeType};
use crate::ike_auth::{install_child, keymat};
use crate::io::Io;
use crate::negotiate::{describe, describe_ts, esp_offer, within};
use crate::peer::Peer;
use crate::sa::{error_notify, IkeSa, Planned, Req};
use crate::wire::payload::Payload;

/// Our outstanding request for a new child SA.
pub(crate) struct ChildCreate {
    /// Our inbound SPI of the new child.
    pub spi_in: u32,
    pub ni: Vec<u8>,
    pub dh: Option<DhPrivate>,
    /// The KE's group was one the peer named (INVALID_KE_PAYLOAD): a
    /// second such answer is a failure, not another try.
    pub retried: bool,
}

/// Whether `sa` carries no child SA other than ones being deleted, and
/// has no new one asked for already.
pub(crate) fn childless(sa: &IkeSa) -> bool {
    let asked = sa.queue.iter().any(|q| matches!(q, Planned::CreateChild(_))) || asking(sa);
    !asked && !has_live_child(sa)
}

/// Whether `sa` has a child SA that is not being rekeyed or deleted.
fn has_live_child(sa: &IkeSa) -> bool {
    sa.children.iter().any(|c| !c.retiring)
}

/// Whether our request for a new child SA is out.
fn asking(sa: &IkeSa) -> bool {
    matches!(&sa.pending, Some(p) if matches!(p.req, Req::CreateChild(_)))
}

/// Sends our request for a child SA of the configured selectors and ESP
/// proposals, with a KE in `group` (one the peer asked for), else in the
/// first proposal's group if it has one.
pub(crate) fn start(sa: &mut IkeSa, peer: &Peer, io: &mut Io, now: Instant, group: Option<DhGroup>) {
    if has_live_child(sa) {
        return;
    }
    let cfg = &peer.cfg;
    let Some(offer) = child_offer(cfg, io, group, cfg.local_ts.clone(), cfg.remote_ts.clone()) else { return };
    let ChildOffer { payloads, spi_in, ni, dh } = offer;
    let create = Req::CreateChild(Box::new(ChildCreate { spi_in, ni, dh, retried: group.is_some() }));
    sa.send_request(io, now, ExchangeType::CreateChildSa, &payloads, create);
}

/// The answer to our request: the child SA is installed and used at once,
/// or the failure is reported (the driver asks again later).
pub(crate) fn on_response(
    sa: &mut IkeSa,
    peer: &Peer,
    io: &mut Io,
    now: Instant,
    r: ChildCreate,
    p: &[Payload],
) -> Vec<Effect> {
    let cfg = &peer.cfg;
    let offered = || format!("{} === {}", describe_ts(&cfg.local_ts), describe_ts(&cfg.remote_ts));
    let fail = |sa: &IkeSa, io: &mut Io, reason: Option<Failure>| {
        io.free_spi_in(r.spi_in);
        if let Some(reason) = reason {
            io.fail(&sa.peer, reason);
        }
        Vec::new()
    };
    if let Some(e) = error_notify(p) {
        let reason = match e {
            n::TEMPORARY_FAILURE => None,
            n::NO_PROPOSAL_CHOSEN => {
                Some(Failure::NoProposalChosen { offered: describe(&esp_offer(&cfg.esp_proposals, r.spi_in, true)) })
            }
            n::TS_UNACCEPTABLE => Some(Failure::TsUnacceptable { offered: offered() }),
            n::INVALID_KE_PAYLOAD => {
                // Once more at once, in the group the peer asked for, if
                // we offer it (the peer chose a proposal other than our
                // first, or one with PFS where our first has none).
                let requested = crate::sa::invalid_ke_group(p);
                let sent = r.dh.as_ref().map(|d| d.group());
                let ours = cfg.esp_proposals.iter().filter_map(|e| e.dh).find(|g| g.id() == requested);
                if let Some(g) = ours.filter(|g| Some(*g) != sent && !r.retried) {
                    sa.queue.push_front(Planned::CreateChild(Some(g)));
                    return fail(sa, io, None);
                }
                Some(Failure::InvalidKe { requested })
            }
            e => Some(Failure::PeerError { notify: e }),
        };
        return fail(sa, io, reason);
    }
    // From here on the answer is no error: where it carries a child SA,
    // the peer holds it, and one we refuse is deleted there too.
    let refused = |sa: &mut IkeSa, io: &mut Io, reason: Failure| {
        if crate::ike_auth::child_parts(p).is_some() {
            sa.queue.push_front(Planned::DeleteRefused(r.spi_in));
        }
        fail(sa, io, Some(reason))
    };
    let ChildResponse { esp, spi_out, tsi, tsr, nr, shared } =
        match read_response(cfg, r.dh, sa.suite.map(|s| s.prf), p, "a new child SA") {
            Ok(answer) => answer,
            Err(why) => return refused(sa, io, Failure::Protocol(why)),
        };
    if !within(tsi, &cfg.local_ts) || !within(tsr, &cfg.remote_ts) {
        return refused(sa, io, Failure::TsUnacceptable { offered: offered() });
    }
    let Some(km) = keymat(sa, esp.cipher, shared.as_ref().map(|s| s.as_slice()), &r.ni, nr) else {
        return fail(sa, io, None);
    };
    let keys = ChildKeys::from_keymat(&km, true, r.spi_in, spi_out, esp.cipher);
    install_child(sa, cfg, io, now, keys, esp.dh, tsi.to_vec(), tsr.to_vec(), None, ChildSend::Now);
    Vec::new()
}

/// The peer's request for a new child SA: accepted while this IKE SA has
/// none (see the module's invariant), refused with NO_ADDITIONAL_SAS
/// otherwise.
///
/// Both ends asking at once would leave two child SAs: the IKE SA's
/// initiator refuses the peer's request while its own is out
/// (TEMPORARY_FAILURE, RFC 7296 §2.25), and the responder takes the
/// initiator's, so one is made.
pub(crate) fn on_request(
    sa: &mut IkeSa,
    peer: &Peer,
    io: &mut Io,
    now: Instant,
    id: u32,
    p: &[Payload],
) -> Vec<Effect> {
    let cfg = &peer.cfg;
    if has_live_child(sa) {
        refuse(sa, io, id, n::NO_ADDITIONAL_SAS, Vec::new());
        return Vec::new();
    }
    if sa.initiator && asking(sa) {
        refuse(sa, io, id, n::TEMPORARY_FAILURE, Vec::new());
        return Vec::new();
    }
    let Some(a) = answer_child(sa, cfg, io, id, p) else { return Vec::new() };
    // As for IKE_AUTH's responder: the answer leaves after the SA's inbound
    // half is in the data plane and before it sends (the driver's order),
    // and there is no other child SA whose traffic could be moved too
    // early.
    install_child(sa, cfg, io, now, a.keys, a.esp.dh, a.local_ts, a.remote_ts, None, ChildSend::Now);
    sa.send_response(io, ExchangeType::CreateChildSa, id, &a.payloads);
    Vec::new()
}
