//! The state of one IKE SA and of the child SAs it carries, and the
//! plumbing every exchange shares: message IDs with a window of one,
//! retransmission with backoff, the cached response for duplicate
//! requests, and sealing and opening SK payloads.
//!
//! Invariants: at most one request of ours is outstanding (`pending`);
//! the next ones wait in `queue`. A request from the peer is processed
//! only if its ID is the one expected; the previous ID gets the cached
//! response again, any other ID is dropped. Nothing received changes
//! state before its SK payload has been authenticated.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::child_keys::EspCipher;
use crate::config::PeerId;
use crate::crypto::{DhGroup, DhPrivate, IkeKeys, IkeSuite, SkCrypto};
use crate::event::Transmit;
use crate::ids::{flags, ExchangeType};
use crate::io::Io;
use crate::rekey_state::{ChildRekey, Collision, IkeRekey};
use crate::wire::header::Header;
use crate::wire::message::{parse_inner, Message};
use crate::wire::payload::Payload;
use crate::wire::traffic_selector::TrafficSelector;
use crate::wire::WireError;

/// First retransmission after this long; each later one waits twice as long.
pub const RETRANSMIT_BASE: Duration = Duration::from_millis(500);
/// Transmissions of one request (the first included) before giving up.
pub const RETRANSMIT_TRIES: u32 = 5;

/// Where an IKE SA's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Path {
    pub remote: SocketAddr,
    pub local: Option<IpAddr>,
    pub local_port: u16,
}

impl Path {
    /// The way back to `remote` from `local`, where its datagram arrived (a
    /// wildcard address is left for the caller's socket to choose).
    pub(crate) fn answering(local: SocketAddr, remote: SocketAddr) -> Path {
        let ip = local.ip();
        Path { remote, local: (!ip.is_unspecified()).then_some(ip), local_port: local.port() }
    }

    /// Queues `data` to go this way.
    pub(crate) fn transmit(&self, io: &mut Io, data: Vec<u8>) {
        io.transmits.push_back(Transmit { remote: self.remote, local: self.local, local_port: self.local_port, data });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaState {
    /// Initiator: IKE_SA_INIT sent.
    InitSent,
    /// Initiator: IKE_AUTH sent.
    AuthSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
    InitReplied,
    Established,
    /// Our Delete for it is out, or it was replaced by a rekey.
    Deleting,
    /// Failed during establishment; kept only to answer retransmissions.
    Dead,
}

/// A child SA as the IKE SA keeps it (the keys went out in `ChildUp`).
#[derive(Debug, Clone)]
pub(crate) struct ChildSa {
    pub spi_in: u32,
    pub spi_out: u32,
    pub cipher: EspCipher,
    pub pfs: Option<DhGroup>,
    pub created: Instant,
    pub rekey_at: Instant,
    pub expire_at: Instant,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// A rekey or delete of it is under way.
    pub retiring: bool,
    /// The PFS group the peer asked for (INVALID_KE_PAYLOAD) when we last
    /// rekeyed this child SA; the next rekey's KE uses it.
    pub rekey_group: Option<DhGroup>,
    /// The peer's rekey of it we answered while ours was out.
    pub collision: Option<Collision>,
    /// The inbound SPI of the child SA this one replaced (a rekey).
    pub replaces: Option<u32>,
}

/// What our outstanding request is, with what its answer needs.
pub(crate) enum Req {
    Init,
    Auth { spi_in: u32 },
    Informational,
    DeleteChildren(Vec<u32>),
    DeleteIke,
    RekeyChild(Box<ChildRekey>),
    RekeyIke(Box<IkeRekey>),
    CreateChild(Box<crate::rekey::ChildCreate>),
}

/// Exchanges waiting for the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Planned {
    Dpd,
    DeleteChildren(Vec<u32>),
    DeleteIke,
    RekeyChild(u32),
    RekeyIke,
    /// A new child SA, its KE in this group (else the first ESP
    /// proposal's).
    CreateChild(Option<DhGroup>),
    /// A Delete of the child SA the peer made answering a request of ours
    /// that we then refused (a choice we did not offer, selectors outside
    /// ours): only the peer holds it, and would otherwise send into it
    /// until it expired. Named by our inbound SPI, the one the peer sends
    /// with, as a Delete names every child SA.
    DeleteRefused(u32),
}

impl Req {
    /// The inbound SPI this request reserved, freed if the SA goes.
    pub(crate) fn reserved_spi(&self) -> Option<u32> {
        match self {
            Req::Auth { spi_in } => Some(*spi_in),
            Req::RekeyChild(r) => Some(r.spi_in),
            Req::CreateChild(r) => Some(r.spi_in),
            _ => None,
        }
    }
}

pub(crate) struct Pending {
    pub id: u32,
    pub data: Vec<u8>,
    pub sent: u32,
    pub next_at: Instant,
    pub req: Req,
    /// A liveness check gives up here, before its retransmissions run
    /// out, so a dead peer is known within the liveness interval.
    pub give_up_at: Option<Instant>,
}

/// The keys of an IKE SA once IKE_SA_INIT is done.
pub(crate) struct SaKeys {
    pub keys: IkeKeys,
    pub sk: SkCrypto,
}

pub(crate) struct IkeSa {
    pub peer: PeerId,
    /// Whether we are this SA's original initiator.
    pub initiator: bool,
    pub spi_i: u64,
    pub spi_r: u64,
    pub state: SaState,
    pub suite: Option<IkeSuite>,
    pub keys: Option<SaKeys>,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    pub dh: Option<DhPrivate>,
    pub ke_public: Vec<u8>,
    pub cookie: Option<Vec<u8>>,
    pub init_retries: u32,
    /// The last unauthenticated error that answered our IKE_SA_INIT while
    /// it was not yet believed (`sa_init::unauthenticated`): what the
    /// attempt failed of if the retransmissions run out.
    pub init_error: Option<crate::event::Failure>,
    /// A new IKE_SA_INIT an unauthenticated notify asked for (COOKIE, or
    /// INVALID_KE_PAYLOAD with the group), and when it goes out unless a
    /// response to the request out comes first (`sa_init::redo_due`).
    pub init_redo: Option<(Option<DhGroup>, Instant)>,
    /// IKE_SA_INIT request and response as sent, for AUTH.
    pub init_request: Vec<u8>,
    pub init_response: Vec<u8>,
    pub path: Path,
    /// While a request of the peer is handled, the way back to where it
    /// came from: RFC 7296 §2.11 sends the response there, which need not
    /// be `path` (the peer may ask from another port, or the request be a
    /// retransmission taking another way).
    pub reply_path: Option<Path>,
    /// UDP encapsulation (port 4500) is in use: a NAT was detected or
    /// `encap_always` forces it.
    pub nat: bool,
    /// A NAT was detected (NAT_DETECTION hashes), as opposed to UDP
    /// encapsulation forced by `encap_always`; for operators.
    pub nat_detected: bool,
    /// The peer's address follows its authenticated messages and ESP
    /// packets: a NAT is in front of it, and none in front of us unless
    /// we answered the IKE_SA_INIT (`NatSeen::apply`).
    pub roams: bool,
    pub next_id: u32,
    pub pending: Option<Pending>,
    pub queue: VecDeque<Planned>,
    pub peer_next_id: u32,
    pub cached: Option<(u32, Vec<u8>)>,
    pub children: Vec<ChildSa>,
    pub created: Instant,
    /// Where this SA's creation falls among the creations and
    /// establishments of every SA (`next_order`), and its establishment
    /// (IKE_AUTH done, or made by a rekey): INITIAL_CONTACT on one SA
    /// forgets only the SAs established before it was created.
    pub created_order: u64,
    pub established_order: Option<u64>,
    pub last_received: Instant,
    pub rekey_at: Option<Instant>,
    pub expire_at: Option<Instant>,
    /// Whether `IkeUp` went out (so `IkeDown` is owed when it goes).
    pub up: bool,
    /// A rekey of this IKE SA answered by us, kept to resolve a collision.
    pub responded_ike_rekey: Option<Collision>,
    /// The DH group the peer asked for (INVALID_KE_PAYLOAD) when we last
    /// rekeyed this IKE SA; the next rekey's KE uses it.
    pub rekey_group: Option<DhGroup>,
    /// The peer sent Causeway's Vendor ID in IKE_AUTH: it deletes a
    /// duplicate IKE SA by the rule of `duplicates.rs`.
    pub peer_resolves_duplicates: bool,
    /// We are deleting this SA as the redundant one of a duplicate pair.
    pub duplicate: bool,
}

/// The next number of a sequence that orders SA creations and
/// establishments. A counter rather than the clock: `now` is the caller's
/// and may stand still over many of them (tests, one batch of messages).
pub(crate) fn next_order() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl IkeSa {
    pub(crate) fn new(peer: PeerId, initiator: bool, spi_i: u64, path: Path, now: Instant) -> IkeSa {
        IkeSa {
            peer,
            initiator,
            spi_i,
            spi_r: 0,
            state: if initiator { SaState::InitSent } else { SaState::InitReplied },
            suite: None,
            keys: None,
            ni: Vec::new(),
            nr: Vec::new(),
            dh: None,
            ke_public: Vec::new(),
            cookie: None,
            init_retries: 0,
            init_error: None,
            init_redo: None,
            init_request: Vec::new(),
            init_response: Vec::new(),
            path,
            reply_path: None,
            nat: false,
            nat_detected: false,
            roams: false,
            next_id: 0,
            pending: None,
            queue: VecDeque::new(),
            peer_next_id: 0,
            cached: None,
            children: Vec::new(),
            created: now,
            created_order: next_order(),
            established_order: None,
            last_received: now,
            rekey_at: None,
            expire_at: None,
            up: false,
            responded_ike_rekey: None,
            rekey_group: None,
            peer_resolves_duplicates: false,
            duplicate: false,
        }
    }

    /// Our SPI for this SA, the key it is filed under.
    pub(crate) fn local_spi(&self) -> u64 {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    pub(crate) fn header(&self, exchange: ExchangeType, response: bool, message_id: u32) -> Header {
        let mut f = if self.initiator { flags::INITIATOR } else { 0 };
        if response {
            f |= flags::RESPONSE;
        }
        Header { spi_i: self.spi_i, spi_r: self.spi_r, next_payload: 0, exchange, flags: f, message_id, length: 0 }
    }

    pub(crate) fn transmit(&self, io: &mut Io, data: Vec<u8>) {
        self.path.transmit(io, data);
    }

    /// Seals `payloads` into an SK message with this SA's keys.
    pub(crate) fn seal(&self, io: &mut Io, header: Header, payloads: &[Payload]) -> Option<Vec<u8>> {
        let keys = self.keys.as_ref()?;
        let rng = &mut *io.rng;
        Message::encode_encrypted(header, payloads, |n| keys.sk.body_len(n), |aad, inner| keys.sk.seal(aad, inner, rng))
            .ok()
    }

    /// Opens the SK payload of a received message; `None` if it has none or
    /// it does not authenticate. `Some(Err)` if the inner chain is malformed.
    pub(crate) fn open(&self, data: &[u8], msg: &Message) -> Option<Result<Vec<Payload>, WireError>> {
        let keys = self.keys.as_ref()?;
        let enc = msg.encrypted?;
        let aad = data.get(..enc.aad_len)?;
        let body = data.get(enc.aad_len..)?;
        let plain = keys.sk.open(aad, body).ok()?;
        Some(parse_inner(enc.first_inner, &plain))
    }

    /// Sends a new request (the window is free: the caller checked).
    pub(crate) fn send_request(
        &mut self,
        io: &mut Io,
        now: Instant,
        exchange: ExchangeType,
        payloads: &[Payload],
        req: Req,
    ) {
        let id = self.next_id;
        let Some(data) = self.seal(io, self.header(exchange, false, id), payloads) else { return };
        self.next_id = self.next_id.wrapping_add(1);
        self.start_pending(io, now, id, data, req);
    }

    pub(crate) fn start_pending(&mut self, io: &mut Io, now: Instant, id: u32, data: Vec<u8>, req: Req) {
        self.transmit(io, data.clone());
        self.pending = Some(Pending { id, data, sent: 1, next_at: now + RETRANSMIT_BASE, req, give_up_at: None });
    }

    /// Sends and caches the response to the request with `message_id`,
    /// back the way that request came (`reply_path`).
    pub(crate) fn send_response(&mut self, io: &mut Io, exchange: ExchangeType, message_id: u32, payloads: &[Payload]) {
        let Some(data) = self.seal(io, self.header(exchange, true, message_id), payloads) else { return };
        self.reply_path.unwrap_or(self.path).transmit(io, data.clone());
        self.cached = Some((message_id, data));
    }

    /// Retransmits a due request; `true` when every try is spent.
    pub(crate) fn retransmit_due(&mut self, io: &mut Io, now: Instant) -> bool {
        let Some(p) = self.pending.as_mut() else { return false };
        if p.give_up_at.is_some_and(|t| now >= t) {
            return true;
        }
        if p.next_at > now {
            return false;
        }
        if p.sent >= RETRANSMIT_TRIES {
            return true;
        }
        p.next_at = now + RETRANSMIT_BASE * 2u32.pow(p.sent);
        if let Some(t) = p.give_up_at {
            p.next_at = p.next_at.min(t);
        }
        p.sent += 1;
        let data = p.data.clone();
        self.transmit(io, data);
        false
    }

    /// The earliest instant this SA needs attention.
    pub(crate) fn next_timeout(&self, dpd: Duration) -> Option<Instant> {
        let mut t: Vec<Instant> = Vec::new();
        t.extend(self.pending.as_ref().map(|p| p.next_at));
        t.extend(self.init_redo.map(|(_, at)| at));
        t.extend(self.rekey_at);
        t.extend(self.expire_at);
        if self.state == SaState::Established && !dpd.is_zero() && self.pending.is_none() {
            t.push(self.last_received + dpd);
        }
        for c in &self.children {
            if !c.retiring {
                t.push(c.rekey_at);
            }
            t.push(c.expire_at);
        }
        t.into_iter().min()
    }

    pub(crate) fn prf(&self) -> Option<crate::crypto::PrfAlg> {
        self.suite.map(|s| s.prf)
    }

    pub(crate) fn sk_d(&self) -> Option<&Zeroizing<Vec<u8>>> {
        self.keys.as_ref().map(|k| &k.keys.sk_d)
    }

    /// Why this SA went, for `IkeDown`: `Duplicate` if we were deleting it
    /// as one (whatever then ended it), else `otherwise`.
    pub(crate) fn down_reason(&self, otherwise: crate::event::DownReason) -> crate::event::DownReason {
        if self.duplicate {
            crate::event::DownReason::Duplicate
        } else {
            otherwise
        }
    }

    /// Whether an IKE SA rekey is in flight on this SA: ours sent, or the
    /// peer's answered in a collision still to be settled.
    pub(crate) fn ike_rekey_in_flight(&self) -> bool {
        self.responded_ike_rekey.is_some() || matches!(&self.pending, Some(p) if matches!(p.req, Req::RekeyIke(_)))
    }

    pub(crate) fn child(&self, spi_in: u32) -> Option<&ChildSa> {
        self.children.iter().find(|c| c.spi_in == spi_in)
    }
}

/// The notification of `kind` among `payloads`.
pub(crate) fn notify(payloads: &[Payload], kind: u16) -> Option<&crate::wire::notify::Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind == kind => Some(n),
        _ => None,
    })
}

/// The DH group an INVALID_KE_PAYLOAD notification asks for (0 if none).
pub(crate) fn invalid_ke_group(payloads: &[Payload]) -> u16 {
    notify(payloads, crate::ids::notify::INVALID_KE_PAYLOAD)
        .and_then(|x| x.data.get(..2))
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

/// The first error notification among `payloads`.
pub(crate) fn error_notify(payloads: &[Payload]) -> Option<u16> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if crate::ids::notify::is_error(n.kind) => Some(n.kind),
        _ => None,
    })
}
