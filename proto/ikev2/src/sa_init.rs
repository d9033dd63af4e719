//! The IKE_SA_INIT exchange (RFC 7296 §1.2): proposals, key exchange and
//! nonces, cookies (§2.6), INVALID_KE_PAYLOAD retries (§1.2) and NAT
//! detection (§2.23), for both roles.
//!
//! Invariants: the responder keeps no state for a request it answers with
//! an error, a cookie request or INVALID_KE_PAYLOAD; the initiator keeps
//! its SPI and nonce across cookie and group retries, and the message it
//! finally signs in AUTH is the last one it sent; an unauthenticated error
//! ends its attempt only once it answered several transmissions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::{PeerConfig, PeerId};
use crate::cookies::Cookies;
use crate::crypto::{derive_ike_keys, nat_detection_hash, DhGroup, DhPrivate, IkeSuite, SkCrypto};
use crate::drops::DropReason;
use crate::effect::Effect;
use crate::event::{Failure, Transmit};
use crate::ids::{flags, notify as n, ExchangeType, IKE_PORT, NAT_T_PORT};
use crate::io::Io;
use crate::lifetime::HALF_OPEN_TIMEOUT;
use crate::negotiate::{accept_ike, choose_ike, describe, ike_offer, short_nonce};
use crate::peer::Peer;
use crate::sa::{notify, IkeSa, Path, Req, SaKeys, SaState};
use crate::wire::header::Header;
use crate::wire::message::Message;
use crate::wire::notify::Notify;
use crate::wire::payload::Payload;
use crate::wire::WireError;

/// Octets of our nonces (RFC 7296 §2.10: at least half the prf key size).
pub const NONCE_LEN: usize = 32;
/// IKE_SA_INIT retries (cookie or group) before giving up.
const MAX_INIT_RETRIES: u32 = 3;
/// Transmissions of our IKE_SA_INIT (the first included) before an
/// unauthenticated error answering it ends the attempt: the third goes
/// out 1.5 s after the first (`RETRANSMIT_BASE` doubling), ample for a
/// real answer to beat a forged one, yet a genuine refusal is reported
/// well before the retransmissions would run out (15.5 s).
const INIT_ERROR_AFTER_SENDS: u32 = 3;

/// Sends (or resends, after a cookie or group request) our IKE_SA_INIT.
pub(crate) fn start(
    sa: &mut IkeSa,
    cfg: &PeerConfig,
    io: &mut Io,
    now: Instant,
    group: Option<DhGroup>,
) -> Result<(), ()> {
    let first = cfg.ike_proposals.first().ok_or(())?;
    let group = group.unwrap_or(first.dh);
    if sa.dh.as_ref().map(|d| d.group()) != Some(group) {
        let (dh, public) = DhPrivate::generate(group, &mut *io.rng).map_err(|_| ())?;
        sa.dh = Some(dh);
        sa.ke_public = public;
    }
    if sa.ni.is_empty() {
        sa.ni = io.random(NONCE_LEN);
    }
    let mut payloads = Vec::new();
    if let Some(c) = &sa.cookie {
        payloads.push(Payload::Notify(Notify::new(n::COOKIE, c.clone())));
    }
    payloads.push(Payload::Sa(ike_offer(&cfg.ike_proposals, &[])));
    payloads.push(Payload::Ke { group: group.id(), data: sa.ke_public.clone() });
    payloads.push(Payload::Nonce(sa.ni.clone()));
    let local = local_addr(sa.path.local, sa.path.local_port, sa.path.remote);
    payloads.extend(nat_payloads(io, sa.spi_i, 0, local, sa.path.remote, cfg.encap_always));
    let data = Message::encode(sa.header(ExchangeType::IkeSaInit, false, 0), &payloads);
    sa.init_request = data.clone();
    sa.state = SaState::InitSent;
    sa.start_pending(io, now, 0, data, Req::Init);
    Ok(())
}

fn local_addr(local: Option<IpAddr>, port: u16, remote: SocketAddr) -> SocketAddr {
    let unspecified =
        if remote.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
    SocketAddr::new(local.unwrap_or(unspecified), port)
}

/// NAT_DETECTION_SOURCE_IP and _DESTINATION_IP. With `encap_always` the
/// source hash is random, so the peer sees a NAT (strongSwan's `encap = yes`).
fn nat_payloads(
    io: &mut Io,
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
    force: bool,
) -> [Payload; 2] {
    let src = if force { io.random(20) } else { nat_detection_hash(spi_i, spi_r, local).to_vec() };
    let dst = nat_detection_hash(spi_i, spi_r, remote).to_vec();
    [
        Payload::Notify(Notify::new(n::NAT_DETECTION_SOURCE_IP, src)),
        Payload::Notify(Notify::new(n::NAT_DETECTION_DESTINATION_IP, dst)),
    ]
}

/// Where the peer's NAT detection notifications show a NAT.
#[derive(Clone, Copy, Default)]
struct NatSeen {
    /// In front of the peer: its source hash is not of the address we see.
    peer: bool,
    /// In front of us: its destination hash is not of our address.
    us: bool,
}

impl NatSeen {
    /// Records it on the SA: whether UDP encapsulation is used, and
    /// whether the peer's address follows its authenticated packets.
    /// Without a NAT in front of the peer its address has no reason to
    /// change. RFC 7296 §2.23: a host behind a NAT should not update it
    /// (one forged packet would then move the SA); but a responder behind
    /// one is taken to be behind a static NAT (a port forward, a cloud's
    /// 1:1 address), where the peer's mapping is still the one to follow,
    /// as strongSwan takes it. Decided once, at IKE_SA_INIT, and kept
    /// through rekeys, so `initiator` is the original initiator.
    fn apply(self, sa: &mut IkeSa, cfg: &PeerConfig) {
        sa.nat_detected = self.peer || self.us;
        sa.nat = cfg.encap_always || sa.nat_detected;
        sa.roams = self.peer && (!self.us || !sa.initiator);
    }
}

/// Where the peer's NAT detection notifications show a NAT on the path
/// (`None`: it sent none, so it does not do NAT traversal).
fn nat_seen(payloads: &[Payload], spi_i: u64, spi_r: u64, local: SocketAddr, remote: SocketAddr) -> Option<NatSeen> {
    let of = |kind: u16| -> Vec<&[u8]> {
        payloads
            .iter()
            .filter_map(|p| match p {
                Payload::Notify(x) if x.kind == kind => Some(x.data.as_slice()),
                _ => None,
            })
            .collect()
    };
    let (src, dst) = (of(n::NAT_DETECTION_SOURCE_IP), of(n::NAT_DETECTION_DESTINATION_IP));
    if src.is_empty() || dst.is_empty() {
        return None;
    }
    let peer_hash = nat_detection_hash(spi_i, spi_r, remote);
    let our_hash = nat_detection_hash(spi_i, spi_r, local);
    Some(NatSeen { peer: !src.iter().any(|h| *h == peer_hash), us: !dst.iter().any(|h| *h == our_hash) })
}

/// The initiator's handling of the IKE_SA_INIT response.
#[allow(clippy::too_many_arguments)] // a datagram's whole context
pub(crate) fn on_init_response(
    sa: &mut IkeSa,
    peer: &Peer,
    io: &mut Io,
    now: Instant,
    local: SocketAddr,
    remote: SocketAddr,
    data: &[u8],
    msg: &Message,
) -> Vec<Effect> {
    let cfg = &peer.cfg;
    let p = &msg.payloads;
    // A COOKIE or INVALID_KE_PAYLOAD is unauthenticated: anyone on the
    // path can send one. The new request it asks for waits INIT_REDO_WAIT
    // (`redo_due`), so a real response to the request out, arriving
    // meanwhile, is taken instead; acting at once would leave that response
    // unusable (our AUTH would sign the new request), and a forger could
    // end every attempt with one datagram. Retries are counted as they go
    // out, so a burst of notifies spends one.
    if let Some(c) = notify(p, n::COOKIE) {
        if sa.init_retries >= MAX_INIT_RETRIES {
            return unauthenticated(sa, io, Failure::Protocol("the responder keeps asking for cookies".into()));
        }
        sa.cookie = Some(c.data.clone());
        let group = sa.init_redo.and_then(|(g, _)| g);
        defer_redo(sa, group, now);
        return Vec::new();
    }
    if notify(p, n::INVALID_KE_PAYLOAD).is_some() {
        let requested = crate::sa::invalid_ke_group(p);
        let group = cfg.ike_proposals.iter().map(|s| s.dh).find(|g| g.id() == requested);
        return match group {
            Some(g) if sa.init_retries < MAX_INIT_RETRIES && sa.dh.as_ref().map(|d| d.group()) != Some(g) => {
                defer_redo(sa, Some(g), now);
                Vec::new()
            }
            _ => unauthenticated(sa, io, Failure::InvalidKe { requested }),
        };
    }
    if notify(p, n::NO_PROPOSAL_CHOSEN).is_some() {
        let offered = describe(&ike_offer(&cfg.ike_proposals, &[]));
        return unauthenticated(sa, io, Failure::NoProposalChosen { offered });
    }
    if let Some(e) = crate::sa::error_notify(p) {
        return unauthenticated(sa, io, Failure::PeerError { notify: e });
    }
    let (Some(answer), Some((group, ke)), Some(nr)) = parts(p) else {
        return unauthenticated(sa, io, Failure::Protocol("IKE_SA_INIT response without SA, KE or Nonce".into()));
    };
    let Some(suite) = accept_ike(answer, &cfg.ike_proposals) else {
        let chose = format!("the responder chose {}, which we did not offer", describe(answer));
        return unauthenticated(sa, io, Failure::Protocol(chose));
    };
    if let Some(why) = short_nonce(nr, suite.prf) {
        return unauthenticated(sa, io, Failure::Protocol(format!("IKE_SA_INIT response with {why}")));
    }
    let ours = sa.dh.as_ref().map(|d| d.group());
    if group != suite.dh.id() || ours != Some(suite.dh) || msg.header.spi_r == 0 {
        let why = "IKE_SA_INIT response KE does not match the chosen group";
        return unauthenticated(sa, io, Failure::Protocol(why.into()));
    }
    if !usable_public(io, suite.dh, ke) {
        let why = "invalid key exchange value from the responder";
        return unauthenticated(sa, io, Failure::Protocol(why.into()));
    }
    let Some(dh) = sa.dh.take() else { return Vec::new() };
    let Ok(shared) = dh.agree(ke) else {
        // Our key judges the value as the probe did; were it not so, the
        // secret is spent and no later answer could be used.
        return fail(sa, io, Failure::Protocol("invalid key exchange value from the responder".into()));
    };
    sa.pending = None;
    sa.init_error = None;
    sa.init_redo = None;
    sa.spi_r = msg.header.spi_r;
    sa.nr = nr.to_vec();
    sa.init_response = data.to_vec();
    install_keys(sa, suite, &shared);
    sa.last_received = now;
    nat_seen(p, sa.spi_i, sa.spi_r, local, remote).unwrap_or_default().apply(sa, cfg);
    if sa.nat {
        // RFC 7296 §2.23: move to 4500 from IKE_AUTH on.
        if sa.path.remote.port() == IKE_PORT {
            sa.path.remote.set_port(NAT_T_PORT);
        }
        sa.path.local_port = NAT_T_PORT;
    }
    sa.next_id = 1;
    crate::ike_auth::start(sa, peer, io, now);
    Vec::new()
}

/// How long a new IKE_SA_INIT that an unauthenticated COOKIE or
/// INVALID_KE_PAYLOAD asked for waits for a response to the request out:
/// a round trip between sites, with room.
pub(crate) const INIT_REDO_WAIT: Duration = Duration::from_secs(1);

/// Asks for a new IKE_SA_INIT in `group` (None: the same), at the time a
/// first such ask set, or INIT_REDO_WAIT from now.
fn defer_redo(sa: &mut IkeSa, group: Option<DhGroup>, now: Instant) {
    let at = sa.init_redo.map_or(now + INIT_REDO_WAIT, |(_, at)| at);
    sa.init_redo = Some((group, at));
}

/// Sends the new IKE_SA_INIT a COOKIE or INVALID_KE_PAYLOAD asked for, once
/// its time has come and nothing answered the request out meanwhile.
/// Returns None when there was none to send.
pub(crate) fn redo_due(sa: &mut IkeSa, cfg: &PeerConfig, io: &mut Io, now: Instant) -> Option<Vec<Effect>> {
    let (group, at) = sa.init_redo?;
    if sa.state != SaState::InitSent || now < at {
        return None;
    }
    sa.init_redo = None;
    sa.init_retries += 1;
    sa.pending = None;
    Some(retry(sa, cfg, io, now, group))
}

fn retry(sa: &mut IkeSa, cfg: &PeerConfig, io: &mut Io, now: Instant, group: Option<DhGroup>) -> Vec<Effect> {
    let group = group.or(sa.dh.as_ref().map(|d| d.group()));
    match start(sa, cfg, io, now, group) {
        Ok(()) => Vec::new(),
        Err(()) => fail(sa, io, Failure::Protocol("could not restart IKE_SA_INIT".into())),
    }
}

/// An error notification or unusable answer to our IKE_SA_INIT. Nothing in
/// it is authenticated (RFC 7296 §2.21.1): whoever saw our SPI can forge
/// one, so acting on the first would let an on-path observer kill every
/// attempt. It is ignored, our retransmissions going on, until it answers
/// our `INIT_ERROR_AFTER_SENDS`th transmission: by then the real responder
/// had that long to answer validly. A genuine refusal, repeated for every
/// transmission, is so still reported as itself, and soon.
/// Kept meanwhile, it is what the attempt reports if the retransmissions
/// run out first (a responder that answers only some transmissions).
/// Cookie requests and INVALID_KE_PAYLOAD are acted on at once (a retry,
/// which a forger can only delay); only giving up on them waits here too.
fn unauthenticated(sa: &mut IkeSa, io: &mut Io, reason: Failure) -> Vec<Effect> {
    if sa.pending.as_ref().is_some_and(|p| p.sent < INIT_ERROR_AFTER_SENDS) {
        sa.init_error = Some(reason);
        return Vec::new();
    }
    fail(sa, io, reason)
}

/// Whether our secret can agree with the responder's `ke`, asked without
/// spending it (`agree` consumes it): a forged KE must leave it for the
/// real answer. A MODP value in range always agrees (a safe prime has no
/// small subgroup to hit); a curve value is judged by a throwaway key as
/// it would be by ours, the check being on the point alone (X25519 clamps
/// every scalar to a multiple of the cofactor).
fn usable_public(io: &mut Io, group: DhGroup, ke: &[u8]) -> bool {
    if !crate::crypto::plausible_public(group, ke) {
        return false;
    }
    group == DhGroup::Modp2048
        || DhPrivate::generate(group, &mut *io.rng).is_ok_and(|(probe, _)| probe.agree(ke).is_ok())
}

fn fail(sa: &mut IkeSa, io: &mut Io, reason: Failure) -> Vec<Effect> {
    io.fail(&sa.peer, reason);
    vec![Effect::Destroy]
}

type Parts<'a> = (Option<&'a [crate::wire::proposal::Proposal]>, Option<(u16, &'a [u8])>, Option<&'a [u8]>);

/// How a peer's IKE proposals fit an IKE_SA_INIT request's offer, worst
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fit {
    /// No suite in common (or no offer): the peer would refuse it.
    Refused,
    /// A suite in common, but in another group than the key share sent:
    /// the peer would answer INVALID_KE_PAYLOAD first.
    OtherGroup,
    /// A suite in common in the key share's group.
    Exact,
}

/// How `cfg`'s IKE proposals fit the IKE_SA_INIT request `msg`.
pub(crate) fn offer_fit(cfg: &PeerConfig, msg: &Message) -> Fit {
    let (Some(offered), Some((group, _)), _) = parts(&msg.payloads) else { return Fit::Refused };
    match choose_ike(offered, &cfg.ike_proposals, group) {
        Some((suite, _)) if suite.dh.id() == group => Fit::Exact,
        Some(_) => Fit::OtherGroup,
        None => Fit::Refused,
    }
}

fn parts(p: &[Payload]) -> Parts<'_> {
    let mut out: Parts<'_> = (None, None, None);
    for x in p {
        match x {
            Payload::Sa(s) if out.0.is_none() => out.0 = Some(s),
            Payload::Ke { group, data } if out.1.is_none() => out.1 = Some((*group, data)),
            Payload::Nonce(nonce) if out.2.is_none() => out.2 = Some(nonce),
            _ => {}
        }
    }
    out
}

fn install_keys(sa: &mut IkeSa, suite: IkeSuite, shared: &[u8]) {
    let keys = derive_ike_keys(&suite, shared, &sa.ni, &sa.nr, sa.spi_i, sa.spi_r);
    let sk = SkCrypto::new(&suite, &keys, sa.initiator);
    sa.suite = Some(suite);
    sa.keys = Some(SaKeys { keys, sk });
}

/// A stateless answer to an IKE_SA_INIT request.
pub(crate) fn answer_plain(io: &mut Io, local: SocketAddr, remote: SocketAddr, spi_i: u64, notify: Notify) {
    let header = Header {
        spi_i,
        spi_r: 0,
        next_payload: 0,
        exchange: ExchangeType::IkeSaInit,
        flags: flags::RESPONSE,
        message_id: 0,
        length: 0,
    };
    let data = Message::encode(header, &[Payload::Notify(notify)]);
    let path = Path::answering(local, remote);
    io.transmits.push_back(Transmit { remote, local: path.local, local_port: path.local_port, data });
}

/// An IKE_SA_INIT request with an unsupported critical payload is answered
/// (RFC 7296 §2.5); anything else unparsable is dropped.
pub(crate) fn refuse_unparsable(io: &mut Io, local: SocketAddr, remote: SocketAddr, data: &[u8], e: &WireError) {
    let WireError::UnsupportedCritical(t) = e else { return };
    let Ok(h) = Header::parse(data) else { return };
    if h.exchange == ExchangeType::IkeSaInit && !h.is_response() && h.spi_r == 0 && h.message_id == 0 {
        answer_plain(io, local, remote, h.spi_i, Notify::new(n::UNSUPPORTED_CRITICAL_PAYLOAD, vec![*t]));
    }
}

/// The responder's handling of a new IKE_SA_INIT request (message ID 0,
/// not a retransmission) from the configured peer `peer_id`: the
/// half-open SA it creates, for the caller to file, or `None` if the
/// request was answered statelessly or dropped. `half_open` counts the
/// caller's half-open SAs, for the cookie threshold.
#[allow(clippy::too_many_arguments)] // a datagram's whole context
pub(crate) fn respond_init(
    io: &mut Io,
    cookies: &Cookies,
    half_open: usize,
    (peer_id, cfg): (PeerId, &PeerConfig),
    now: Instant,
    local: SocketAddr,
    remote: SocketAddr,
    data: &[u8],
    msg: &Message,
) -> Option<IkeSa> {
    let h = msg.header;
    let p = &msg.payloads;
    // RFC 7296 §3.1: the initiator's SPI is never zero. Such a request is
    // dropped unanswered, as a responder keeps no state for strays.
    if h.spi_i == 0 {
        io.dropped(DropReason::Malformed);
        return None;
    }
    // Refusals here go in the clear, and RFC 7296 §3.10.1 allows
    // INVALID_SYNTAX only in an encrypted message; strongSwan answers a
    // missing SA or Nonce and a bad key share with NO_PROPOSAL_CHOSEN too.
    // Each is also one failure of the peer, naming the cause.
    let refuse = |io: &mut Io, why: Failure| {
        answer_plain(io, local, remote, h.spi_i, Notify::new(n::NO_PROPOSAL_CHOSEN, Vec::new()));
        io.fail(&peer_id, why);
        None
    };
    let (Some(offered), Some((group, ke)), Some(ni)) = parts(p) else {
        return refuse(io, Failure::Protocol("IKE_SA_INIT request without SA, KE or Nonce".into()));
    };
    if let Err(cookie) = cookies.admit(half_open, remote, h.spi_i, ni, p) {
        answer_plain(io, local, remote, h.spi_i, cookie);
        return None;
    }
    let Some((suite, answer)) = choose_ike(offered, &cfg.ike_proposals, group) else {
        return refuse(io, Failure::NoProposalChosen { offered: describe(offered) });
    };
    if suite.dh.id() != group {
        let want = Notify::new(n::INVALID_KE_PAYLOAD, suite.dh.id().to_be_bytes().to_vec());
        answer_plain(io, local, remote, h.spi_i, want);
        return None;
    }
    if let Some(why) = short_nonce(ni, suite.prf) {
        return refuse(io, Failure::Protocol(format!("IKE_SA_INIT request with {why}")));
    }
    // A key share that cannot be one is refused before a DH is spent on it.
    let bad_ke = || Failure::Protocol("invalid key exchange value from the initiator".into());
    if !crate::crypto::plausible_public(suite.dh, ke) {
        return refuse(io, bad_ke());
    }
    let (dh, public) = DhPrivate::generate(suite.dh, &mut *io.rng).ok()?;
    let Ok(shared) = dh.agree(ke) else {
        return refuse(io, bad_ke());
    };
    let spi_r = io.new_ike_spi();
    let mut sa = IkeSa::new(peer_id, false, h.spi_i, Path::answering(local, remote), now);
    sa.spi_r = spi_r;
    sa.ni = ni.to_vec();
    sa.nr = io.random(NONCE_LEN);
    install_keys(&mut sa, suite, &shared);
    let seen = nat_seen(p, h.spi_i, 0, local, remote);
    seen.unwrap_or_default().apply(&mut sa, cfg);
    let mut out = vec![
        Payload::Sa(vec![answer]),
        Payload::Ke { group: suite.dh.id(), data: public },
        Payload::Nonce(sa.nr.clone()),
    ];
    if seen.is_some() || cfg.encap_always {
        let local_sa = local_addr(sa.path.local, local.port(), remote);
        out.extend(nat_payloads(io, h.spi_i, spi_r, local_sa, remote, cfg.encap_always));
    }
    let response = Message::encode(sa.header(ExchangeType::IkeSaInit, true, 0), &out);
    sa.transmit(io, response.clone());
    sa.init_request = data.to_vec();
    sa.init_response = response.clone();
    sa.cached = Some((0, response));
    sa.peer_next_id = 1;
    sa.expire_at = Some(now + HALF_OPEN_TIMEOUT);
    Some(sa)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The peer's address is followed only with a NAT in front of it, and
    // not from behind our own NAT unless we answered the IKE_SA_INIT
    // (a responder's NAT is taken to be static).
    #[test]
    fn the_peer_roams_behind_its_nat_unless_we_initiated_from_behind_ours() {
        let cases = [
            // ((NAT in front of the peer, in front of us, we initiated), roams)
            ((false, false, true), false),
            ((false, true, false), false),
            ((true, false, true), true),
            ((true, false, false), true),
            ((true, true, true), false),
            ((true, true, false), true),
        ];
        let cfg = crate::tests::net::config_a();
        for ((peer, us, initiator), roams) in cases {
            let path = Path::answering("198.18.0.1:500".parse().unwrap(), "198.18.0.2:500".parse().unwrap());
            let mut sa = IkeSa::new(PeerId::from("p"), initiator, 1, path, Instant::now());
            NatSeen { peer, us }.apply(&mut sa, &cfg);
            assert_eq!(sa.roams, roams, "peer {peer}, us {us}, initiator {initiator}");
            assert_eq!(sa.nat, peer || us);
        }
    }
}
