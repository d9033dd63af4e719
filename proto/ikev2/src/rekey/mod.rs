//! CREATE_CHILD_SA (RFC 7296 §1.3): rekeying child SAs (§1.3.3, §2.8) and
//! the IKE SA (§1.3.2, §2.18), for both roles, and the resolution of
//! simultaneous rekeys (§2.8.1, §2.8.2).
//!
//! Invariants: a rekeyed SA stays installed until the new one is, and is
//! deleted by the rekey's initiator — or, after a collision, by the winner,
//! while the loser deletes the redundant SA it created (the one made with
//! the lowest of the four nonces). A new child SA other than a rekey is
//! asked for and accepted only in place of one that is gone
//! (`new_child.rs`), and refused with NO_ADDITIONAL_SAS beside a live one:
//! Causeway negotiates one child SA per IKE SA.

mod child;
mod ike;
pub(crate) mod new_child;

use std::time::{Duration, Instant};

pub(crate) use child::{on_child_rekey_response, start_child_rekey};
pub(crate) use ike::{hand_over, on_ike_rekey_response, start_ike_rekey};
pub(crate) use new_child::ChildCreate;

use zeroize::Zeroizing;

use crate::child_keys::ChildKeys;
use crate::config::{EspProposal, PeerConfig};
use crate::crypto::{DhGroup, DhPrivate, PrfAlg};
use crate::effect::Effect;
use crate::event::Failure;
use crate::ids::{notify as n, protocol, ExchangeType};
use crate::ike_auth::{child_parts, keymat};
use crate::io::Io;
use crate::negotiate::{accept_esp, choose_esp, describe, describe_ts, esp_offer, narrow, short_nonce};
use crate::peer::Peer;
use crate::sa::{notify, IkeSa, SaState};
use crate::sa_init::NONCE_LEN;
use crate::wire::notify::Notify;
use crate::wire::payload::Payload;
use crate::wire::traffic_selector::TrafficSelector;

/// A failed rekey is tried again after this.
pub const REKEY_RETRY: Duration = Duration::from_secs(30);

pub(crate) fn nonce(p: &[Payload]) -> Option<&[u8]> {
    p.iter().find_map(|x| if let Payload::Nonce(v) = x { Some(v.as_slice()) } else { None })
}

pub(crate) fn ke(p: &[Payload]) -> Option<(u16, &[u8])> {
    p.iter().find_map(|x| if let Payload::Ke { group, data } = x { Some((*group, data.as_slice())) } else { None })
}

/// Our request's offer of a child SA: its payloads (SA, Nonce, KE, TSi,
/// TSr) and what reading the answer takes.
pub(crate) struct ChildOffer {
    pub payloads: Vec<Payload>,
    pub spi_in: u32,
    pub ni: Vec<u8>,
    pub dh: Option<DhPrivate>,
}

/// Offers `cfg`'s ESP proposals with a fresh inbound SPI and nonce, a KE
/// in `group` (else in the first proposal's group, if it has one), and
/// the selectors. None if no key could be made.
pub(crate) fn child_offer(
    cfg: &PeerConfig,
    io: &mut Io,
    group: Option<DhGroup>,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
) -> Option<ChildOffer> {
    let mut dh = None;
    let mut ke_payload = None;
    if let Some(g) = group.or(cfg.esp_proposals.first().and_then(|e| e.dh)) {
        let (d, public) = DhPrivate::generate(g, &mut *io.rng).ok()?;
        dh = Some(d);
        ke_payload = Some(Payload::Ke { group: g.id(), data: public });
    }
    let spi_in = io.new_spi_in();
    let ni = io.random(NONCE_LEN);
    let mut payloads = vec![Payload::Sa(esp_offer(&cfg.esp_proposals, spi_in, true)), Payload::Nonce(ni.clone())];
    payloads.extend(ke_payload);
    payloads.push(Payload::TsI(local_ts));
    payloads.push(Payload::TsR(remote_ts));
    Some(ChildOffer { payloads, spi_in, ni, dh })
}

/// What the peer's answer to our CREATE_CHILD_SA for a child SA settled.
pub(crate) struct ChildResponse<'a> {
    pub esp: EspProposal,
    pub spi_out: u32,
    pub tsi: &'a [TrafficSelector],
    pub tsr: &'a [TrafficSelector],
    pub nr: &'a [u8],
    /// The key exchange's secret, when the proposal taken has a group.
    pub shared: Option<Zeroizing<Vec<u8>>>,
}

/// Reads the answer `p` to our request for a child SA (`what`, for the
/// log: "the rekey", "a new child SA"), which offered `cfg`'s ESP
/// proposals with a KE made with `ours`, over an IKE SA whose prf is
/// `prf`. Err says what was wrong with it.
pub(crate) fn read_response<'a>(
    cfg: &PeerConfig,
    ours: Option<DhPrivate>,
    prf: Option<PrfAlg>,
    p: &'a [Payload],
    what: &str,
) -> Result<ChildResponse<'a>, String> {
    let Some(((answer, tsi, tsr), nr)) = child_parts(p).zip(nonce(p)) else {
        return Err("CREATE_CHILD_SA response without SA, Nonce or TS".into());
    };
    if let Some(why) = prf.and_then(|prf| short_nonce(nr, prf)) {
        return Err(format!("{what} answered with {why}"));
    }
    let Some((esp, spi_out)) = accept_esp(answer, &cfg.esp_proposals, true) else {
        return Err(format!("the peer chose {} for {what}, which we did not offer", describe(answer)));
    };
    let shared = match (esp.dh, ours) {
        (None, _) => None,
        (Some(g), Some(d)) if d.group() == g => match ke(p) {
            Some((grp, data)) if grp == g.id() => {
                Some(d.agree(data).map_err(|_| format!("invalid KE in the answer to {what}"))?)
            }
            _ => return Err(format!("the answer to {what} lacks the KE of its group")),
        },
        (Some(_), _) => return Err(format!("the peer chose another PFS group for {what}")),
    };
    Ok(ChildResponse { esp, spi_out, tsi, tsr, nr, shared })
}

/// A child SA negotiated in answer to the peer's CREATE_CHILD_SA (a rekey
/// or a new one), not yet installed or answered.
pub(crate) struct ChildAnswer {
    pub esp: EspProposal,
    pub keys: ChildKeys,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    /// Our selectors and the peer's, as narrowed.
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// The answer: SA, Nonce, KE (with PFS), TSi, TSr.
    pub payloads: Vec<Payload>,
}

/// Negotiates the child SA of the peer's CREATE_CHILD_SA request `id`:
/// the first of its proposals we take, a KE when that has a group, the
/// selectors narrowed to ours, a fresh inbound SPI and the keys. None
/// when it cannot be: the refusal has then been sent and the failure
/// reported.
pub(crate) fn answer_child(
    sa: &mut IkeSa,
    cfg: &PeerConfig,
    io: &mut Io,
    id: u32,
    p: &[Payload],
) -> Option<ChildAnswer> {
    let (Some((offered, tsi, tsr)), Some(ni)) = (child_parts(p), nonce(p)) else {
        refuse(sa, io, id, n::INVALID_SYNTAX, Vec::new());
        return None;
    };
    if let Some(why) = sa.suite.and_then(|s| short_nonce(ni, s.prf)) {
        io.fail(&sa.peer, Failure::Protocol(format!("CREATE_CHILD_SA request with {why}")));
        refuse(sa, io, id, n::INVALID_SYNTAX, Vec::new());
        return None;
    }
    let Some((esp, peer_spi, mut answer)) = choose_esp(offered, &cfg.esp_proposals, true, ke(p).map(|(g, _)| g)) else {
        io.fail(&sa.peer, Failure::NoProposalChosen { offered: describe(offered) });
        refuse(sa, io, id, n::NO_PROPOSAL_CHOSEN, Vec::new());
        return None;
    };
    let mut our_ke = None;
    let mut shared = None;
    if let Some(g) = esp.dh {
        let agreed = match ke(p) {
            Some((grp, data)) if grp == g.id() => {
                DhPrivate::generate(g, &mut *io.rng).ok().and_then(|(d, public)| Some((public, d.agree(data).ok()?)))
            }
            _ => None,
        };
        let Some((public, s)) = agreed else {
            refuse(sa, io, id, n::INVALID_KE_PAYLOAD, g.id().to_be_bytes().to_vec());
            return None;
        };
        our_ke = Some(Payload::Ke { group: g.id(), data: public });
        shared = Some(s);
    }
    let (tsi_n, tsr_n) = (narrow(tsi, &cfg.remote_ts), narrow(tsr, &cfg.local_ts));
    if tsi_n.is_empty() || tsr_n.is_empty() {
        let offered = format!("{} === {}", describe_ts(tsi), describe_ts(tsr));
        io.fail(&sa.peer, Failure::TsUnacceptable { offered });
        refuse(sa, io, id, n::TS_UNACCEPTABLE, Vec::new());
        return None;
    }
    let nr = io.random(NONCE_LEN);
    let spi_in = io.new_spi_in();
    answer.spi = spi_in.to_be_bytes().to_vec();
    let Some(km) = keymat(sa, esp.cipher, shared.as_ref().map(|s| s.as_slice()), ni, &nr) else {
        io.free_spi_in(spi_in);
        refuse(sa, io, id, n::TEMPORARY_FAILURE, Vec::new());
        return None;
    };
    let keys = ChildKeys::from_keymat(&km, false, spi_in, peer_spi, esp.cipher);
    let mut payloads = vec![Payload::Sa(vec![answer]), Payload::Nonce(nr.clone())];
    payloads.extend(our_ke);
    payloads.push(Payload::TsI(tsi_n.clone()));
    payloads.push(Payload::TsR(tsr_n.clone()));
    Some(ChildAnswer { esp, keys, ni: ni.to_vec(), nr, local_ts: tsr_n, remote_ts: tsi_n, payloads })
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
        return child::on_request(sa, peer, io, now, id, p, &r.clone());
    }
    let ike = p.iter().any(|x| matches!(x, Payload::Sa(props) if props.iter().any(|q| q.protocol == protocol::IKE)));
    if ike {
        return ike::on_request(sa, peer, io, now, id, p);
    }
    new_child::on_request(sa, peer, io, now, id, p)
}
