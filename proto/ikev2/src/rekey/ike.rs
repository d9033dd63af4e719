//! Rekeying the IKE SA with CREATE_CHILD_SA (RFC 7296 §1.3.2, §2.18): a
//! new IKE SA with fresh SPIs, nonces and key exchange, keyed from the old
//! SA's SK_d, inherits the child SAs; the rekey's initiator deletes the old
//! one. Message IDs start again at zero on the new SA.
//!
//! Invariants: whoever initiated the rekey is the new SA's initiator; the
//! child SAs live in exactly one IKE SA at any time; an SA that was
//! replaced is no longer `up`, so its removal reports nothing.

use std::time::Instant;

use super::{ke, nonce, refuse, REKEY_RETRY};
use crate::crypto::{derive_rekeyed_ike_keys, DhGroup, DhPrivate, IkeSuite, SkCrypto};
use crate::effect::Effect;
use crate::event::Failure;
use crate::ids::{notify as n, ExchangeType};
use crate::io::Io;
use crate::lifetime::{rekey_after, REPLACED_SA_LINGER};
use crate::negotiate::{accept_ike, choose_ike, describe, ike_offer, short_nonce};
use crate::peer::Peer;
use crate::rekey_state::{ours_is_redundant, Collision, IkeRekey};
use crate::sa::{error_notify, invalid_ke_group, IkeSa, Planned, Req, SaKeys, SaState};
use crate::sa_init::NONCE_LEN;
use crate::wire::payload::Payload;

/// The suites an IKE rekey of `sa` offers and accepts: those with the
/// PRF `sa` was made with, its own suite first, when any is configured;
/// else all. RFC 7296 §2.18 expands the new SA's keys with the new suite's
/// PRF, strongSwan 5.9 with the old SA's (`keymat_v2.c`): on a suite of
/// another PRF the two ends would derive different keys, and the moved
/// children would ride an IKE SA neither could read.
pub(crate) fn rekey_suites(old: Option<IkeSuite>, ours: &[IkeSuite]) -> Vec<IkeSuite> {
    let Some(old) = old else { return ours.to_vec() };
    let mut same: Vec<IkeSuite> = ours.iter().filter(|s| s.prf == old.prf).copied().collect();
    if same.is_empty() {
        return ours.to_vec();
    }
    // A stable sort: the old suite first, the rest in the configured order.
    same.sort_by_key(|s| *s != old);
    same
}

pub(crate) fn start_ike_rekey(sa: &mut IkeSa, peer: &Peer, io: &mut Io, now: Instant) {
    let suites = rekey_suites(sa.suite, &peer.cfg.ike_proposals);
    let Some(first) = suites.first() else { return };
    // The KE is in the group the peer asked for last time, else the one
    // this SA was made with (the peer took it before), as long as we
    // still offer it; only then our first proposal's. A peer that picks
    // another of our proposals than the first answers a KE in the
    // first's group with INVALID_KE_PAYLOAD.
    let offered = |g: &DhGroup| suites.iter().any(|s| s.dh == *g);
    let group = sa.rekey_group.or(sa.suite.as_ref().map(|s| s.dh)).filter(offered).unwrap_or(first.dh);
    let Ok((dh, public)) = DhPrivate::generate(group, &mut *io.rng) else { return };
    let spi = io.new_ike_spi();
    let ni = io.random(NONCE_LEN);
    sa.responded_ike_rekey = None;
    let p = vec![
        Payload::Sa(ike_offer(&suites, &spi.to_be_bytes())),
        Payload::Nonce(ni.clone()),
        Payload::Ke { group: group.id(), data: public },
    ];
    sa.send_request(io, now, ExchangeType::CreateChildSa, &p, Req::RekeyIke(Box::new(IkeRekey { spi, ni, dh })));
}

/// The new IKE SA of a rekey, keyed and established (children not yet moved).
#[allow(clippy::too_many_arguments)] // the RFC's inputs
fn successor(
    old: &IkeSa,
    peer: &Peer,
    io: &mut Io,
    now: Instant,
    initiator: bool,
    (spi_i, spi_r): (u64, u64),
    suite: IkeSuite,
    shared: &[u8],
    (ni, nr): (&[u8], &[u8]),
) -> Option<IkeSa> {
    let (old_prf, old_sk_d) = (old.prf()?, old.sk_d()?);
    let keys = derive_rekeyed_ike_keys(old_prf, old_sk_d, &suite, shared, ni, nr, spi_i, spi_r);
    let sk = SkCrypto::new(&suite, &keys, initiator);
    let mut new = IkeSa::new(old.peer.clone(), initiator, spi_i, old.path, now);
    new.spi_r = spi_r;
    new.ni = ni.to_vec();
    new.nr = nr.to_vec();
    new.suite = Some(suite);
    new.keys = Some(SaKeys { keys, sk });
    new.state = SaState::Established;
    new.established_order = Some(crate::sa::next_order());
    new.nat = old.nat;
    new.nat_detected = old.nat_detected;
    new.roams = old.roams;
    new.peer_resolves_duplicates = old.peer_resolves_duplicates;
    let cfg = &peer.cfg;
    new.rekey_at = Some(now + rekey_after(cfg.ike_lifetime, cfg.rekey_jitter_percent, &mut *io.rng));
    new.expire_at = Some(now + cfg.ike_lifetime);
    Some(new)
}

/// Moves the children and the exchanges planned for them to `new`.
pub(crate) fn hand_over(old: &mut IkeSa, new: &mut IkeSa) {
    new.children.append(&mut old.children);
    new.queue.extend(old.queue.drain(..).filter(|q| {
        matches!(
            q,
            Planned::RekeyChild(_) | Planned::DeleteChildren(_) | Planned::CreateChild(_) | Planned::DeleteRefused(_)
        )
    }));
    new.up = old.up || new.up;
    old.up = false;
}

fn spi_of(answer: &[crate::wire::proposal::Proposal]) -> Option<u64> {
    let p = answer.first()?;
    Some(u64::from_be_bytes(<[u8; 8]>::try_from(p.spi.as_slice()).ok()?))
}

/// The answer to our IKE SA rekey.
pub(crate) fn on_ike_rekey_response(
    sa: &mut IkeSa,
    peer: &Peer,
    io: &mut Io,
    now: Instant,
    r: IkeRekey,
    p: &[Payload],
) -> Vec<Effect> {
    let cfg = &peer.cfg;
    let retry = |sa: &mut IkeSa, io: &mut Io, reason: Option<Failure>| {
        io.ike_spis.remove(&r.spi);
        if let Some(reason) = reason {
            io.fail(&sa.peer, reason);
        }
        if sa.responded_ike_rekey.is_none() {
            sa.rekey_at = Some(now + REKEY_RETRY);
        }
        Vec::new()
    };
    if let Some(e) = error_notify(p) {
        let reason = match e {
            n::TEMPORARY_FAILURE => None,
            n::INVALID_KE_PAYLOAD => {
                let requested = invalid_ke_group(p);
                let ours =
                    rekey_suites(sa.suite, &cfg.ike_proposals).into_iter().map(|s| s.dh).find(|g| g.id() == requested);
                match ours {
                    // Asked once for a group we offer: again at once, in it.
                    Some(g) if sa.rekey_group.is_none() && g != r.dh.group() => {
                        io.ike_spis.remove(&r.spi);
                        sa.rekey_group = Some(g);
                        if sa.responded_ike_rekey.is_none() {
                            sa.rekey_at = Some(now);
                        }
                        return Vec::new();
                    }
                    _ => Some(Failure::InvalidKe { requested }),
                }
            }
            n::NO_PROPOSAL_CHOSEN => Some(Failure::NoProposalChosen {
                offered: describe(&ike_offer(&rekey_suites(sa.suite, &cfg.ike_proposals), &[])),
            }),
            e => Some(Failure::PeerError { notify: e }),
        };
        return retry(sa, io, reason);
    }
    let answer = p.iter().find_map(|x| if let Payload::Sa(s) = x { Some(s.as_slice()) } else { None });
    let (Some(answer), Some(nr), Some((group, data))) = (answer, nonce(p), ke(p)) else {
        return retry(sa, io, Some(Failure::Protocol("IKE rekey response without SA, Nonce or KE".into())));
    };
    let (Some(suite), Some(spi_r)) = (accept_ike(answer, &rekey_suites(sa.suite, &cfg.ike_proposals)), spi_of(answer))
    else {
        return retry(sa, io, Some(Failure::Protocol(format!("IKE rekey answered with {}", describe(answer)))));
    };
    if let Some(why) = short_nonce(nr, suite.prf) {
        return retry(sa, io, Some(Failure::Protocol(format!("IKE rekey answered with {why}"))));
    }
    if suite.dh != r.dh.group() || group != suite.dh.id() {
        return retry(sa, io, Some(Failure::Protocol("IKE rekey KE does not match the chosen group".into())));
    }
    let Ok(shared) = r.dh.agree(data) else {
        return retry(sa, io, Some(Failure::Protocol("invalid KE in the IKE rekey".into())));
    };
    let Some(mut new) = successor(sa, peer, io, now, true, (r.spi, spi_r), suite, &shared, (&r.ni, nr)) else {
        return Vec::new();
    };
    let mut effects = Vec::new();
    match sa.responded_ike_rekey.take() {
        // §2.8.2: ours is the redundant SA: delete it; the children go to
        // the peer's, and the peer deletes the old SA.
        Some(c) if ours_is_redundant(&r.ni, nr, &c) => {
            new.queue.push_back(Planned::DeleteIke);
            effects.push(Effect::MoveChildren { to: c.created });
            sa.state = SaState::Deleting;
            sa.expire_at = Some(now + REPLACED_SA_LINGER);
        }
        // Ours survives: it takes the children and we delete the old SA
        // (the peer deletes the one it made).
        _ => {
            hand_over(sa, &mut new);
            sa.queue.clear();
            sa.queue.push_back(Planned::DeleteIke);
        }
    }
    sa.rekey_at = None;
    effects.insert(0, Effect::NewSa(Box::new(new)));
    effects
}

/// The peer's rekey of this IKE SA.
pub(crate) fn on_request(
    sa: &mut IkeSa,
    peer: &Peer,
    io: &mut Io,
    now: Instant,
    id: u32,
    p: &[Payload],
) -> Vec<Effect> {
    let cfg = &peer.cfg;
    // An exchange of ours for a child SA is out (a rekey, a new child, a
    // delete): its answer will come to this SA, which would by then have
    // handed its children to the new one, and a child rekeyed or deleted
    // that way is left half done. The peer tries again later, as
    // strongSwan does in the same case (RFC 7296 §2.25.2). A liveness
    // check is no such exchange: the request answers it. An SA we are
    // about to delete (a duplicate's Delete waiting behind the check; once
    // sent, it is the pending request refused here) is put off too
    // (§2.25.2 again): the rekey would clear that Delete, and both SAs of
    // the duplicate pair would live on.
    let closing = sa.queue.contains(&Planned::DeleteIke);
    if closing || matches!(&sa.pending, Some(q) if !matches!(q.req, Req::RekeyIke(_) | Req::Informational)) {
        refuse(sa, io, id, n::TEMPORARY_FAILURE, Vec::new());
        return Vec::new();
    }
    let offered = p.iter().find_map(|x| if let Payload::Sa(s) = x { Some(s.as_slice()) } else { None });
    let (Some(offered), Some(ni), Some((group, data))) = (offered, nonce(p), ke(p)) else {
        refuse(sa, io, id, n::INVALID_SYNTAX, Vec::new());
        return Vec::new();
    };
    let Some((suite, mut answer)) = choose_ike(offered, &rekey_suites(sa.suite, &cfg.ike_proposals), group) else {
        io.fail(&sa.peer, Failure::NoProposalChosen { offered: describe(offered) });
        refuse(sa, io, id, n::NO_PROPOSAL_CHOSEN, Vec::new());
        return Vec::new();
    };
    if let Some(why) = short_nonce(ni, suite.prf) {
        io.fail(&sa.peer, Failure::Protocol(format!("IKE rekey request with {why}")));
        refuse(sa, io, id, n::INVALID_SYNTAX, Vec::new());
        return Vec::new();
    }
    if suite.dh.id() != group {
        refuse(sa, io, id, n::INVALID_KE_PAYLOAD, suite.dh.id().to_be_bytes().to_vec());
        return Vec::new();
    }
    let Some(spi_i) = spi_of(std::slice::from_ref(&answer)) else {
        refuse(sa, io, id, n::INVALID_SYNTAX, Vec::new());
        return Vec::new();
    };
    let Ok((dh, public)) = DhPrivate::generate(suite.dh, &mut *io.rng) else { return Vec::new() };
    let Ok(shared) = dh.agree(data) else {
        refuse(sa, io, id, n::INVALID_SYNTAX, Vec::new());
        return Vec::new();
    };
    let nr = io.random(NONCE_LEN);
    let spi_r = io.new_ike_spi();
    let Some(mut new) = successor(sa, peer, io, now, false, (spi_i, spi_r), suite, &shared, (ni, &nr)) else {
        return Vec::new();
    };
    answer.spi = spi_r.to_be_bytes().to_vec();
    let out = vec![Payload::Sa(vec![answer]), Payload::Nonce(nr.clone()), Payload::Ke { group, data: public }];
    sa.send_response(io, ExchangeType::CreateChildSa, id, &out);
    let ours_pending = matches!(&sa.pending, Some(q) if matches!(q.req, Req::RekeyIke(_)));
    if ours_pending {
        // A collision: which new SA survives is known when ours completes.
        sa.responded_ike_rekey = Some(Collision { ni: ni.to_vec(), nr, created: spi_r });
    } else {
        hand_over(sa, &mut new);
        sa.state = SaState::Deleting;
        sa.rekey_at = None;
        sa.queue.clear();
        // Our liveness check, if out, is not retransmitted on an SA the
        // peer is about to delete: its retransmissions running out there
        // would report a timeout of a peer that just spoke. The new SA
        // checks liveness from here on.
        if matches!(&sa.pending, Some(q) if matches!(q.req, Req::Informational)) {
            sa.pending = None;
        }
        // The peer deletes the old SA; if that Delete is lost it expires.
        sa.expire_at = Some(now + REPLACED_SA_LINGER);
    }
    vec![Effect::NewSa(Box::new(new))]
}
