//! The IKE_AUTH exchange with pre-shared keys (RFC 7296 §1.2, §2.15) and
//! the first child SA it carries (§1.3 via §2.9 narrowing).
//!
//! Invariants: an ID is accepted only if it is the configured remote ID
//! and the AUTH over it verifies (constant-time) with the PSK; the IKE SA
//! is up — and `IkeUp` sent — only after that; a failed child SA leaves
//! the IKE SA up (§2.21.1) and is reported as `Failed`.

use std::time::Instant;

use crate::child_keys::ChildKeys;
use crate::config::{PeerConfig, PeerId};
use crate::crypto::{child_keymat, psk_auth, signed_octets, verify_psk_auth};
use crate::duplicates::VENDOR_ID;
use crate::effect::Effect;
use crate::event::{ChildSend, Event, Failure};
use crate::ids::{auth_method, notify as n, ExchangeType};
use crate::io::Io;
use crate::lifetime::rekey_after;
use crate::negotiate::{accept_esp, choose_esp, describe, describe_ts, esp_offer, narrow, within};
use crate::peer::Peer;
use crate::sa::{error_notify, notify, ChildSa, IkeSa, Planned, Req, SaState};
use crate::wire::identity::IdPayload;
use crate::wire::message::Message;
use crate::wire::notify::Notify;
use crate::wire::payload::Payload;
use crate::wire::traffic_selector::TrafficSelector;

/// The initiator's IKE_AUTH request.
pub(crate) fn start(sa: &mut IkeSa, peer: &Peer, io: &mut Io, now: Instant) {
    let cfg = &peer.cfg;
    let (Some(prf), Some(keys)) = (sa.prf(), sa.keys.as_ref()) else { return };
    let idi = cfg.local_id.to_payload();
    let octets = signed_octets(prf, &sa.init_request, &sa.nr, &keys.keys.sk_pi, &idi.body());
    let auth = psk_auth(prf, &cfg.psk, &octets);
    let spi_in = io.new_spi_in();
    let mut p = vec![Payload::IdI(idi)];
    if !peer.contacted {
        p.push(Payload::Notify(Notify::new(n::INITIAL_CONTACT, Vec::new())));
    }
    p.push(Payload::IdR(cfg.remote_id.to_payload()));
    p.push(Payload::Auth { method: auth_method::SHARED_KEY_MIC, data: auth.to_vec() });
    p.push(Payload::Sa(esp_offer(&cfg.esp_proposals, spi_in, false)));
    p.push(Payload::TsI(cfg.local_ts.clone()));
    p.push(Payload::TsR(cfg.remote_ts.clone()));
    p.push(Payload::Vendor(VENDOR_ID.to_vec()));
    sa.state = SaState::AuthSent;
    sa.send_request(io, now, ExchangeType::IkeAuth, &p, Req::Auth { spi_in });
}

fn find_id(p: &[Payload], initiator: bool) -> Option<&IdPayload> {
    p.iter().find_map(|x| match x {
        Payload::IdI(id) if initiator => Some(id),
        Payload::IdR(id) if !initiator => Some(id),
        _ => None,
    })
}

/// Which of `candidates` (the configured peers the request's address
/// fits, best first) a responder's IKE_AUTH request `msg` comes from: the
/// first whose remote ID is the request's IDi and that accepts the suite
/// IKE_SA_INIT chose. IKE_SA_INIT names no one, so the SA was filed under
/// the peer whose proposals fitted its offer best (`Endpoint::peer_for`);
/// peers behind one address (a shared NAT) are told apart here. None when
/// the request does not open or no candidate fits: the SA's own peer then
/// refuses it, naming the mismatch. The PSK check that follows is the new peer's.
pub(crate) fn peer_by_identity<'a>(
    sa: &IkeSa,
    data: &[u8],
    msg: &Message,
    mut candidates: impl Iterator<Item = (&'a PeerId, &'a PeerConfig)>,
) -> Option<PeerId> {
    let payloads = sa.open(data, msg)?.ok()?;
    let (idi, suite) = (find_id(&payloads, true)?, sa.suite?);
    let fits = |c: &PeerConfig| c.remote_id.to_payload() == *idi && c.ike_proposals.contains(&suite);
    candidates.find(|(_, c)| fits(c)).map(|(id, _)| id.clone())
}

fn find_auth(p: &[Payload]) -> Option<(u8, &[u8])> {
    p.iter().find_map(|x| match x {
        Payload::Auth { method, data } => Some((*method, data.as_slice())),
        _ => None,
    })
}

/// The SA, TSi and TSr payloads of a child SA exchange, if all are there.
pub(crate) fn child_parts(
    p: &[Payload],
) -> Option<(&[crate::wire::proposal::Proposal], &[TrafficSelector], &[TrafficSelector])> {
    let sa = p.iter().find_map(|x| if let Payload::Sa(s) = x { Some(s.as_slice()) } else { None })?;
    let tsi = p.iter().find_map(|x| if let Payload::TsI(t) = x { Some(t.as_slice()) } else { None })?;
    let tsr = p.iter().find_map(|x| if let Payload::TsR(t) = x { Some(t.as_slice()) } else { None })?;
    Some((sa, tsi, tsr))
}

/// Marks the IKE SA up: `IkeUp`, its rekey and expiry times.
fn established(sa: &mut IkeSa, cfg: &PeerConfig, io: &mut Io, now: Instant) {
    sa.state = SaState::Established;
    sa.up = true;
    sa.established_order = Some(crate::sa::next_order());
    sa.created = now;
    sa.rekey_at = Some(now + rekey_after(cfg.ike_lifetime, cfg.rekey_jitter_percent, &mut *io.rng));
    sa.expire_at = Some(now + cfg.ike_lifetime);
    if let Some(suite) = sa.suite {
        io.events.push_back(Event::IkeUp {
            peer: sa.peer.clone(),
            suite,
            nat: sa.nat_detected,
            remote: sa.path.remote,
        });
    }
}

/// Files a new child SA and hands its keys out in `ChildUp`.
#[allow(clippy::too_many_arguments)] // the child SA's whole description
pub(crate) fn install_child(
    sa: &mut IkeSa,
    cfg: &PeerConfig,
    io: &mut Io,
    now: Instant,
    keys: ChildKeys,
    pfs: Option<crate::crypto::DhGroup>,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    replaces: Option<u32>,
    send: ChildSend,
) {
    sa.children.push(ChildSa {
        spi_in: keys.spi_in,
        spi_out: keys.spi_out,
        cipher: keys.cipher,
        pfs,
        created: now,
        rekey_at: now + rekey_after(cfg.child_lifetime, cfg.rekey_jitter_percent, &mut *io.rng),
        expire_at: now + cfg.child_lifetime,
        local_ts: local_ts.clone(),
        remote_ts: remote_ts.clone(),
        retiring: false,
        rekey_group: None,
        collision: None,
        replaces,
    });
    io.events.push_back(Event::ChildUp {
        peer: sa.peer.clone(),
        keys,
        remote: sa.path.remote,
        local: sa.path.local,
        encap: sa.nat,
        roams: sa.roams,
        replaces,
        send,
        local_ts,
        remote_ts,
    });
}

/// KEYMAT for a child SA of `cipher` (both directions).
pub(crate) fn keymat(
    sa: &IkeSa,
    cipher: crate::child_keys::EspCipher,
    shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let (prf, sk_d) = (sa.prf()?, sa.sk_d()?);
    Some(child_keymat(prf, sk_d, shared, ni, nr, 2 * cipher.keymat_len()))
}

/// The initiator's handling of the IKE_AUTH response.
pub(crate) fn on_auth_response(
    sa: &mut IkeSa,
    peer: &Peer,
    io: &mut Io,
    now: Instant,
    p: &[Payload],
    spi_in: u32,
) -> Vec<Effect> {
    let cfg = &peer.cfg;
    let fail = |sa: &mut IkeSa, io: &mut Io, reason: Failure| {
        io.free_spi_in(spi_in);
        io.fail(&sa.peer, reason);
        sa.state = SaState::Dead;
        vec![Effect::Destroy]
    };
    if notify(p, n::AUTHENTICATION_FAILED).is_some() {
        return fail(sa, io, Failure::AuthenticationFailed { by_peer: true });
    }
    let (Some(idr), Some((method, auth))) = (find_id(p, false), find_auth(p)) else {
        let reason = match error_notify(p) {
            Some(e) => Failure::PeerError { notify: e },
            None => Failure::Protocol("IKE_AUTH response without IDr or AUTH".into()),
        };
        return fail(sa, io, reason);
    };
    if *idr != cfg.remote_id.to_payload() {
        return fail(
            sa,
            io,
            Failure::IdentityMismatch { expected: cfg.remote_id.to_string(), received: idr.describe() },
        );
    }
    let (Some(prf), Some(keys)) = (sa.prf(), sa.keys.as_ref()) else { return Vec::new() };
    let octets = signed_octets(prf, &sa.init_response, &sa.ni, &keys.keys.sk_pr, &idr.body());
    if method != auth_method::SHARED_KEY_MIC || !verify_psk_auth(prf, &cfg.psk, &octets, auth) {
        return fail(sa, io, Failure::AuthenticationFailed { by_peer: false });
    }
    sa.peer_resolves_duplicates = says_causeway(p);
    established(sa, cfg, io, now);
    let effects = vec![Effect::Contacted, Effect::CheckDuplicates];
    let offered = esp_offer(&cfg.esp_proposals, spi_in, false);
    let child = match child_parts(p) {
        Some((answer, tsi, tsr)) => match accept_esp(answer, &cfg.esp_proposals, false) {
            None => Err(Failure::Protocol(format!("the responder chose {}, which we did not offer", describe(answer)))),
            Some(_) if !within(tsi, &cfg.local_ts) || !within(tsr, &cfg.remote_ts) => Err(Failure::TsUnacceptable {
                offered: format!("{} === {}", describe_ts(&cfg.local_ts), describe_ts(&cfg.remote_ts)),
            }),
            Some((esp, spi_out)) => Ok((esp, spi_out, tsi.to_vec(), tsr.to_vec())),
        },
        None => Err(match error_notify(p) {
            Some(n::NO_PROPOSAL_CHOSEN) => Failure::NoProposalChosen { offered: describe(&offered) },
            Some(n::TS_UNACCEPTABLE) => Failure::TsUnacceptable {
                offered: format!("{} === {}", describe_ts(&cfg.local_ts), describe_ts(&cfg.remote_ts)),
            },
            Some(e) => Failure::PeerError { notify: e },
            None => Failure::Protocol("IKE_AUTH response without a child SA".into()),
        }),
    };
    match child {
        Ok((esp, spi_out, tsi, tsr)) => {
            let Some(km) = keymat(sa, esp.cipher, None, &sa.ni, &sa.nr) else { return effects };
            let keys = ChildKeys::from_keymat(&km, true, spi_in, spi_out, esp.cipher);
            install_child(sa, cfg, io, now, keys, esp.dh, tsi, tsr, None, ChildSend::Now);
        }
        Err(reason) => {
            io.free_spi_in(spi_in);
            io.fail(&sa.peer, reason);
            // A child SA in the answer is one the peer made: refused here,
            // it is deleted there too.
            if child_parts(p).is_some() {
                sa.queue.push_front(Planned::DeleteRefused(spi_in));
            }
        }
    }
    effects
}

/// The responder's handling of the IKE_AUTH request.
pub(crate) fn on_auth_request(
    sa: &mut IkeSa,
    peer: &Peer,
    io: &mut Io,
    now: Instant,
    id: u32,
    p: &[Payload],
) -> Vec<Effect> {
    let cfg = &peer.cfg;
    let refuse = |sa: &mut IkeSa, io: &mut Io, reason: Failure| {
        sa.send_response(
            io,
            ExchangeType::IkeAuth,
            id,
            &[Payload::Notify(Notify::new(n::AUTHENTICATION_FAILED, Vec::new()))],
        );
        io.fail(&sa.peer, reason);
        // Kept until the half-open timeout to answer retransmissions.
        sa.state = SaState::Dead;
        Vec::new()
    };
    let (Some(idi), Some((method, auth))) = (find_id(p, true), find_auth(p)) else {
        return refuse(sa, io, Failure::Protocol("IKE_AUTH request without IDi or AUTH".into()));
    };
    if *idi != cfg.remote_id.to_payload() {
        return refuse(
            sa,
            io,
            Failure::IdentityMismatch { expected: cfg.remote_id.to_string(), received: idi.describe() },
        );
    }
    let (Some(prf), Some(keys)) = (sa.prf(), sa.keys.as_ref()) else { return Vec::new() };
    let octets = signed_octets(prf, &sa.init_request, &sa.nr, &keys.keys.sk_pi, &idi.body());
    if method != auth_method::SHARED_KEY_MIC || !verify_psk_auth(prf, &cfg.psk, &octets, auth) {
        return refuse(sa, io, Failure::AuthenticationFailed { by_peer: false });
    }
    let idr = cfg.local_id.to_payload();
    let octets = signed_octets(prf, &sa.init_response, &sa.ni, &keys.keys.sk_pr, &idr.body());
    let our_auth = psk_auth(prf, &cfg.psk, &octets);
    let mut out =
        vec![Payload::IdR(idr), Payload::Auth { method: auth_method::SHARED_KEY_MIC, data: our_auth.to_vec() }];
    let mut effects = vec![Effect::Contacted];
    if notify(p, n::INITIAL_CONTACT).is_some() {
        effects.push(Effect::InitialContact);
    }
    // After INITIAL_CONTACT's clearing: an SA it removes is no duplicate.
    effects.push(Effect::CheckDuplicates);
    sa.peer_resolves_duplicates = says_causeway(p);
    established(sa, cfg, io, now);
    match child_parts(p) {
        Some((offered, tsi, tsr)) => out.extend(respond_child(sa, cfg, io, now, offered, tsi, tsr)),
        None => out.push(Payload::Notify(Notify::new(n::NO_PROPOSAL_CHOSEN, Vec::new()))),
    }
    out.push(Payload::Vendor(VENDOR_ID.to_vec()));
    sa.send_response(io, ExchangeType::IkeAuth, id, &out);
    effects
}

/// Whether IKE_AUTH's payloads carry Causeway's Vendor ID.
fn says_causeway(p: &[Payload]) -> bool {
    p.iter().any(|x| matches!(x, Payload::Vendor(v) if v == VENDOR_ID))
}

/// The responder's child SA of IKE_AUTH: the answer's payloads.
#[allow(clippy::too_many_arguments)] // the offer's three payloads and the SA's context
fn respond_child(
    sa: &mut IkeSa,
    cfg: &PeerConfig,
    io: &mut Io,
    now: Instant,
    offered: &[crate::wire::proposal::Proposal],
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
) -> Vec<Payload> {
    let Some((esp, spi_out, mut answer)) = choose_esp(offered, &cfg.esp_proposals, false, None) else {
        io.fail(&sa.peer, Failure::NoProposalChosen { offered: describe(offered) });
        return vec![Payload::Notify(Notify::new(n::NO_PROPOSAL_CHOSEN, Vec::new()))];
    };
    let (tsi_n, tsr_n) = (narrow(tsi, &cfg.remote_ts), narrow(tsr, &cfg.local_ts));
    if tsi_n.is_empty() || tsr_n.is_empty() {
        let offered = format!("{} === {}", describe_ts(tsi), describe_ts(tsr));
        io.fail(&sa.peer, Failure::TsUnacceptable { offered });
        return vec![Payload::Notify(Notify::new(n::TS_UNACCEPTABLE, Vec::new()))];
    }
    let spi_in = io.new_spi_in();
    answer.spi = spi_in.to_be_bytes().to_vec();
    let Some(km) = keymat(sa, esp.cipher, None, &sa.ni, &sa.nr) else { return Vec::new() };
    let keys = ChildKeys::from_keymat(&km, false, spi_in, spi_out, esp.cipher);
    install_child(sa, cfg, io, now, keys, esp.dh, tsr_n.clone(), tsi_n.clone(), None, ChildSend::Now);
    vec![Payload::Sa(vec![answer]), Payload::TsI(tsi_n), Payload::TsR(tsr_n)]
}
