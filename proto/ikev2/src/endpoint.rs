//! The endpoint: every IKE SA of a gateway and its configured peers, driven
//! quinn-proto style — the caller feeds datagrams and the time in and polls
//! datagrams, events and the next timer out. It is the crate's top module:
//! it owns the SA table and the peers and calls the exchanges, which work
//! on one SA, an `Io` and a `Peer` and hand back `Effect`s — they
//! never reach back into the endpoint.
//!
//! Invariants: IKE SAs are filed under our own SPI (unique: chosen by us);
//! an SA is removed only through [`Endpoint::destroy`], which also frees its
//! inbound ESP SPIs; every SA refers to a configured peer (removing a peer
//! removes its SAs first).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_core::RngCore;

use crate::config::{PeerConfig, PeerId};
use crate::cookies::Cookies;
use crate::crypto::CookieSecret;
use crate::drops::{DropReason, Drops};
use crate::effect::Effect;
use crate::event::{DownReason, Event, IkeState, PeerStatus, Transmit};
use crate::exchange;
use crate::ids::{ExchangeType, IKE_PORT, NAT_T_PORT};
use crate::informational;
use crate::io::Io;
use crate::peer::Peer;
use crate::rekey;
use crate::sa::{IkeSa, Path, Planned, Req, SaState};
use crate::sa_init;
use crate::timers;
use crate::wire::message::Message;

/// Half-open IKE SAs from which on cookies are required, unless
/// [`Endpoint::set_cookie_threshold`] says otherwise.
pub const DEFAULT_COOKIE_THRESHOLD: usize = 64;

/// Half-open IKE SAs kept at most: past this, the oldest makes way for a
/// new one. Cookies stop spoofed requests from making them, but not
/// requests from a host that can answer (anyone, when a peer is
/// configured without endpoints), and each holds its request, up to 64 KiB,
/// for 30 s: this bounds that memory at 64 MiB. Taking the oldest rather
/// than refusing the newest means a flood must make this many in one
/// round trip of a genuine initiator to push it out.
pub const MAX_HALF_OPEN: usize = 1024;

/// A failed or dead IKE SA of a peer that initiates is started again after this.
pub const RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// All IKE SAs of a gateway.
pub struct Endpoint {
    pub(crate) io: Io,
    pub(crate) peers: BTreeMap<PeerId, Peer>,
    pub(crate) sas: BTreeMap<u64, IkeSa>,
    /// Responder: (initiator's SPI, its address) → our SPIs, to answer a
    /// retransmitted IKE_SA_INIT from the SA it created. More than one
    /// when requests with that SPI differed (`respond_init`).
    pub(crate) init_index: HashMap<(u64, SocketAddr), Vec<u64>>,
    pub(crate) cookies: Cookies,
    /// The latest `now` we were given, for ages in [`Endpoint::status`].
    pub(crate) clock: Option<Instant>,
    /// `MAX_HALF_OPEN`, lowered by tests.
    pub(crate) max_half_open: usize,
}

/// Whether an IKE SA stands for its peer: one we started, or one the peer
/// started that has authenticated. A responder's half-open SA does not:
/// anyone can make one with a request from the peer's address (it is not
/// authenticated until IKE_AUTH), and if it counted, one spoofed request
/// every half minute would keep us from ever connecting to the peer, and
/// the peer's status at "connecting".
fn stands_for_peer(sa: &IkeSa) -> bool {
    (sa.initiator || sa.up) && !matches!(sa.state, SaState::Dead | SaState::Deleting)
}

impl Endpoint {
    /// An endpoint with no peers, drawing all randomness from `rng`.
    pub fn new(mut rng: Box<dyn RngCore + Send>) -> Endpoint {
        let secret = CookieSecret::new(&mut *rng).ok();
        Endpoint {
            io: Io::new(rng),
            peers: BTreeMap::new(),
            sas: BTreeMap::new(),
            init_index: HashMap::new(),
            cookies: Cookies { secret, threshold: DEFAULT_COOKIE_THRESHOLD, rotated_at: None, window: None },
            clock: None,
            max_half_open: MAX_HALF_OPEN,
        }
    }

    /// Half-open IKE SAs beyond which IKE_SA_INIT requests must carry a
    /// cookie (RFC 7296 §2.6).
    pub fn set_cookie_threshold(&mut self, half_open: usize) {
        self.cookies.threshold = half_open;
    }

    /// Adds a peer or replaces its configuration (existing SAs keep running
    /// and use the new settings from their next exchange on).
    pub fn set_peer(&mut self, id: PeerId, cfg: PeerConfig, _now: Instant) {
        match self.peers.get_mut(&id) {
            Some(p) => p.cfg = cfg,
            None => {
                self.peers.insert(id, Peer::new(cfg));
            }
        }
    }

    /// Removes a peer: each of its IKE SAs is deleted (one Delete, not
    /// retransmitted — the peer's liveness check covers a lost one).
    pub fn remove_peer(&mut self, id: &PeerId, now: Instant) {
        self.delete_sas_of(id, now, DownReason::DeletedLocally);
        self.peers.remove(id);
        self.io.failures.remove(id);
    }

    /// Deletes every IKE SA of the peer, each with one Delete (see
    /// `remove_peer`), and forgets it; returns how many there were.
    pub(crate) fn delete_sas_of(&mut self, id: &PeerId, now: Instant, reason: DownReason) -> usize {
        let spis = self.sa_spis_of(id);
        for &spi in &spis {
            if let Some(sa) = self.sas.get_mut(&spi) {
                informational::delete_now(sa, &mut self.io, now, reason.clone());
            }
            self.destroy(spi, now);
        }
        spis.len()
    }

    /// Starts an IKE SA with a configured peer as initiator. `remote` is
    /// normally port 500; `local` is our address, which NAT detection
    /// hashes (without it a NAT is assumed and UDP encapsulation used).
    /// Does nothing while the peer has an IKE SA being set up or up.
    pub fn connect(&mut self, id: &PeerId, remote: SocketAddr, local: Option<IpAddr>, now: Instant) {
        self.clock = Some(now);
        let Some(peer) = self.peers.get_mut(id) else { return };
        peer.target = Some((remote, local));
        peer.reconnect_at = None;
        let busy = self.sas.values().any(|sa| &sa.peer == id && stands_for_peer(sa));
        if busy {
            return;
        }
        let spi_i = self.io.new_ike_spi();
        let local_port = if remote.port() == NAT_T_PORT { NAT_T_PORT } else { IKE_PORT };
        let mut sa = IkeSa::new(id.clone(), true, spi_i, Path { remote, local, local_port }, now);
        let Some(peer) = self.peers.get(id) else { return };
        if sa_init::start(&mut sa, &peer.cfg, &mut self.io, now, None).is_ok() {
            self.sas.insert(spi_i, sa);
        } else {
            self.io.ike_spis.remove(&spi_i);
        }
    }

    /// Gives up an IKE SA of `id` that we are still setting up as initiator
    /// (IKE_SA_INIT or IKE_AUTH unanswered), without waiting for its
    /// retransmissions to run out: for a driver that fails over to the
    /// peer's next address. Nothing is sent (a half-open SA has nobody to
    /// tell); established SAs are left alone. Returns whether one was.
    pub fn abandon_setup(&mut self, id: &PeerId, now: Instant) -> bool {
        self.clock = Some(now);
        let setting_up: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, sa)| &sa.peer == id && sa.initiator && !sa.up && !matches!(sa.state, SaState::Dead))
            .map(|(spi, _)| *spi)
            .collect();
        for spi in &setting_up {
            self.destroy(*spi, now);
        }
        !setting_up.is_empty()
    }

    /// Rekeys the child SA whose inbound SPI is `spi_in` at the next
    /// `handle_timeout`, ahead of its lifetime: for a data plane whose SA
    /// runs low on sequence numbers. Does nothing to an SA being rekeyed
    /// or deleted already. Returns whether one was found to rekey.
    pub fn rekey_child_now(&mut self, spi_in: u32, now: Instant) -> bool {
        self.clock = Some(now);
        let child = self.sas.values_mut().find_map(|sa| sa.children.iter_mut().find(|c| c.spi_in == spi_in));
        match child {
            Some(c) if !c.retiring => {
                c.rekey_at = c.rekey_at.min(now);
                true
            }
            _ => false,
        }
    }

    /// The data plane found the peer `id` at `remote`: an ESP packet that
    /// authenticated came from there. Its IKE SAs that follow the peer
    /// (`IkeSa::roams`) send there from now on, as they would after a
    /// request from there; the others keep their address. Those not up
    /// yet move too: the peer's SA of a rekey collision may be the one
    /// that survives. Returns whether one moved.
    pub fn peer_moved(&mut self, id: &PeerId, remote: SocketAddr, now: Instant) -> bool {
        self.clock = Some(now);
        let mut moved = false;
        let follows = |sa: &IkeSa| &sa.peer == id && sa.roams && sa.state != SaState::Dead;
        for sa in self.sas.values_mut().filter(|sa| follows(sa)) {
            moved |= sa.path.remote != remote;
            sa.path.remote = remote;
        }
        moved
    }

    /// Asks the peer for a child SA on the established IKE SA of `id` if
    /// that has none (the peer deleted it, or refused the one of
    /// IKE_AUTH): RFC 7296 §1.3.1. Returns whether one was asked for; a
    /// failure is reported as for IKE_AUTH's child, and the driver decides
    /// when to ask again.
    pub fn create_child(&mut self, id: &PeerId, now: Instant) -> bool {
        self.clock = Some(now);
        let Some(peer) = self.peers.get(id) else { return false };
        let found = self.sas.iter_mut().find(|(_, sa)| &sa.peer == id && sa.up && sa.state == SaState::Established);
        let Some((&spi, sa)) = found.filter(|(_, sa)| rekey::new_child::childless(sa)) else { return false };
        sa.queue.push_back(Planned::CreateChild(None));
        let effects = exchange::kick(sa, peer, &mut self.io, now);
        self.apply(spi, effects, now);
        true
    }

    /// Deletes the child SA whose inbound SPI is `spi_in` and tells the
    /// peer (an INFORMATIONAL Delete): for a driver that could not install
    /// it, so that the peer does not send into an SA that is not there.
    /// Returns whether it was found.
    pub fn delete_child(&mut self, spi_in: u32, now: Instant) -> bool {
        self.clock = Some(now);
        let found = self.sas.iter_mut().find(|(_, sa)| sa.children.iter().any(|c| c.spi_in == spi_in && !c.retiring));
        let Some((&spi, sa)) = found else { return false };
        let Some(peer) = self.peers.get(&sa.peer) else { return false };
        if let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == spi_in) {
            c.retiring = true;
        }
        sa.queue.push_front(Planned::DeleteChildren(vec![spi_in]));
        let effects = exchange::kick(sa, peer, &mut self.io, now);
        self.apply(spi, effects, now);
        true
    }

    /// Takes in one IKE datagram (non-ESP marker already removed) that
    /// arrived at `local` (our address and port, 500 or 4500) from
    /// `remote`. Give the real local address (e.g. from IP_PKTINFO), not a
    /// wildcard: NAT detection hashes it, and a wildcard looks like a NAT
    /// (the SA then works, but with UDP encapsulation).
    pub fn handle(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, datagram: &[u8]) {
        self.clock = Some(now);
        self.cookies.rotate_if_due(now, &mut *self.io.rng);
        let msg = match Message::parse(datagram) {
            Ok(m) => m,
            Err(e) => {
                self.io.dropped(DropReason::Malformed);
                // Answered only to an address a peer may call from: a
                // stranger learns nothing, not even that we speak IKE.
                if self.peer_for(remote.ip(), None).is_some() {
                    sa_init::refuse_unparsable(&mut self.io, local, remote, datagram, &e);
                }
                return;
            }
        };
        let h = msg.header;
        if h.exchange == ExchangeType::IkeSaInit && !h.is_response() && h.spi_r == 0 {
            self.respond_init(now, local, remote, datagram, &msg);
            return;
        }
        let our_spi = if h.from_initiator() { h.spi_r } else { h.spi_i };
        if h.exchange == ExchangeType::IkeAuth && !h.is_response() {
            self.bind_by_identity(our_spi, remote.ip(), datagram, &msg);
        }
        let Some(peer_id) = self.sas.get(&our_spi).map(|sa| sa.peer.clone()) else {
            self.io.dropped(DropReason::UnknownSpi);
            return;
        };
        // INITIAL_CONTACT goes out only when no other IKE SA with the peer is up.
        let other_up = self.sas.iter().any(|(s, x)| *s != our_spi && x.peer == peer_id && x.up);
        if let Some(p) = self.peers.get_mut(&peer_id) {
            p.contacted = other_up;
        }
        let Some(sa) = self.sas.get_mut(&our_spi) else { return };
        let roles_fit = sa.initiator != h.from_initiator();
        let other_fits =
            if sa.initiator { sa.spi_r == h.spi_r || sa.state == SaState::InitSent } else { sa.spi_i == h.spi_i };
        if !roles_fit || !other_fits {
            self.io.dropped(DropReason::SaMismatch);
            return;
        }
        let Some(peer) = self.peers.get(&sa.peer) else { return };
        let effects = exchange::on_message(sa, peer, &mut self.io, now, local, remote, datagram, &msg);
        self.apply(our_spi, effects, now);
    }

    pub(crate) fn apply(&mut self, spi: u64, effects: Vec<Effect>, now: Instant) {
        let Some(peer_id) = self.sas.get(&spi).map(|sa| sa.peer.clone()) else { return };
        for e in effects {
            match e {
                Effect::Destroy => {
                    // A responder's SA that never authenticated says
                    // nothing of the peer: anyone may make one from its
                    // address, and letting its end reschedule the
                    // reconnect would let a forger put it off for ever.
                    let unheard = self.sas.get(&spi).is_some_and(|sa| !sa.initiator && sa.established_order.is_none());
                    self.destroy(spi, now);
                    if !unheard {
                        self.maybe_reconnect(&peer_id, now);
                    }
                }
                // The peer holds no other IKE SA with us: it restarted
                // before it began this one. Only SAs established before
                // this one was created can be from before that. One set up
                // meanwhile the peer holds: both ends initiating at once,
                // each IKE_AUTH carries INITIAL_CONTACT and they cross;
                // forgetting our own SA then would leave each end on an SA
                // the other had dropped.
                Effect::InitialContact => {
                    let began = self.sas.get(&spi).map_or(0, |sa| sa.created_order);
                    for other in self.sa_spis_of(&peer_id) {
                        let Some(sa) = self.sas.get_mut(&other) else { continue };
                        if other == spi || sa.established_order.is_none_or(|e| e >= began) {
                            continue;
                        }
                        informational::forget(sa, &mut self.io, DownReason::Replaced);
                        self.destroy(other, now);
                    }
                }
                Effect::Contacted => {
                    if let Some(p) = self.peers.get_mut(&peer_id) {
                        p.reconnect_at = None;
                    }
                    self.io.failures.remove(&peer_id);
                }
                Effect::CheckDuplicates => self.delete_duplicates(spi, &peer_id, now),
                Effect::NewSa(sa) => {
                    if let Some(p) = self.peers.get_mut(&peer_id).filter(|_| sa.up) {
                        p.ike_rekeys += 1;
                    }
                    let new_spi = sa.local_spi();
                    self.sas.insert(new_spi, *sa);
                    // A new SA may start with work queued (a redundant one's Delete).
                    if let (Some(new), Some(p)) = (self.sas.get_mut(&new_spi), self.peers.get(&peer_id)) {
                        exchange::kick(new, p, &mut self.io, now);
                    }
                }
                Effect::MoveChildren { to } => {
                    let Some(mut from) = self.sas.remove(&spi) else { continue };
                    if let Some(target) = self.sas.get_mut(&to) {
                        rekey::hand_over(&mut from, target);
                        if let Some(p) = self.peers.get_mut(&peer_id) {
                            p.ike_rekeys += 1;
                            exchange::kick(target, p, &mut self.io, now);
                        }
                    } else {
                        // The SA they were to go to is gone already (the
                        // peer deleted it, or it died): they go down here,
                        // told to the data plane, not dropped unsaid with
                        // the SA that held them.
                        informational::forget(&mut from, &mut self.io, DownReason::DeletedByPeer);
                    }
                    self.sas.insert(spi, from);
                }
                Effect::ChildRekeyed => {
                    if let Some(p) = self.peers.get_mut(&peer_id) {
                        p.child_rekeys += 1;
                    }
                }
            }
        }
    }

    /// Deletes the peer's IKE SAs that duplicate `spi`, just up, and are
    /// ours to delete (`duplicates::ours_to_delete`). Nothing else queued
    /// on the SA goes first; a request already out is answered first (no
    /// IKE rekey: `duplicates::eligible`). Its children stop sending when
    /// the Delete leaves (`informational::send_delete_ike`).
    fn delete_duplicates(&mut self, spi: u64, peer_id: &PeerId, now: Instant) {
        let Some(new) = self.sas.get(&spi) else { return };
        let others = self.sas.values().filter(|sa| &sa.peer == peer_id);
        for doomed in crate::duplicates::ours_to_delete(new, others) {
            let (Some(sa), Some(p)) = (self.sas.get_mut(&doomed), self.peers.get(peer_id)) else { continue };
            sa.duplicate = true;
            sa.rekey_at = None;
            sa.queue.clear();
            sa.queue.push_back(Planned::DeleteIke);
            exchange::kick(sa, p, &mut self.io, now);
        }
    }

    /// Removes an SA and frees what it held.
    pub(crate) fn destroy(&mut self, spi: u64, _now: Instant) {
        self.io.ike_spis.remove(&spi);
        if let Some(sa) = self.sas.remove(&spi) {
            for c in &sa.children {
                self.io.free_spi_in(c.spi_in);
            }
            if let Some(s) = sa.pending.as_ref().and_then(|p| p.req.reserved_spi()) {
                self.io.free_spi_in(s);
            }
            if let Some(Req::RekeyIke(r)) = sa.pending.as_ref().map(|p| &p.req) {
                self.io.ike_spis.remove(&r.spi);
            }
        }
        self.init_index.retain(|_, v| {
            v.retain(|s| *s != spi);
            !v.is_empty()
        });
    }

    fn maybe_reconnect(&mut self, id: &PeerId, now: Instant) {
        let alive = self.sas.values().any(|sa| &sa.peer == id && stands_for_peer(sa));
        if let Some(p) = self.peers.get_mut(id) {
            if p.cfg.initiate && p.target.is_some() && !alive {
                // Never later than one already due: only sooner.
                let at = now + RECONNECT_DELAY;
                p.reconnect_at = Some(p.reconnect_at.map_or(at, |t| t.min(at)));
            }
        }
    }

    pub(crate) fn sa_spis_of(&self, id: &PeerId) -> Vec<u64> {
        self.sas.iter().filter(|(_, sa)| &sa.peer == id).map(|(s, _)| *s).collect()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.io.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.io.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sas = self.sas.values().filter_map(|sa| {
            let dpd = self.peers.get(&sa.peer).map_or(Duration::ZERO, |p| p.cfg.dpd_interval);
            sa.next_timeout(dpd)
        });
        let cookies = self.cookies.rotation_due();
        sas.chain(self.peers.values().filter_map(|p| p.reconnect_at)).chain(cookies).min()
    }

    /// Runs every timer due at `now`: retransmissions, liveness checks,
    /// rekeys, expiries and restarts.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = Some(now);
        self.cookies.rotate_if_due(now, &mut *self.io.rng);
        let spis: Vec<u64> = self.sas.keys().copied().collect();
        for spi in spis {
            let Some(sa) = self.sas.get_mut(&spi) else { continue };
            let Some(p) = self.peers.get(&sa.peer) else { continue };
            let effects = timers::on_timeout(sa, p, &mut self.io, now);
            self.apply(spi, effects, now);
        }
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.reconnect_at.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let target = self.peers.get(&id).and_then(|p| p.target);
            if let Some((remote, local)) = target {
                self.connect(&id, remote, local, now);
            }
        }
    }

    /// Our inbound ESP SPIs reserved now: those of child SAs up, and those
    /// offered in a request or answer not yet settled. ESP on any other
    /// SPI is for no SA of ours, now or to come; the SPIs offered travel
    /// only inside encrypted IKE messages, so nobody off the path learns
    /// one before the peer uses it.
    pub fn reserved_spis_in(&self) -> &std::collections::HashSet<u32> {
        &self.io.spis_in
    }

    /// Grows whenever `reserved_spis_in` changes, so a caller can copy the
    /// set only then.
    pub fn reserved_spis_in_version(&self) -> u64 {
        self.io.spis_in_version
    }

    /// IKE messages dropped so far, by reason (`drops.rs`): interface-wide,
    /// since most are for no known SA or peer.
    pub fn drops(&self) -> Drops {
        self.io.drops
    }

    /// A peer's state: its newest established IKE SA, else the one being
    /// set up. Never keys.
    pub fn status(&self, id: &PeerId) -> Option<PeerStatus> {
        let peer = self.peers.get(id)?;
        let mut sas: Vec<&IkeSa> = self.sas.values().filter(|sa| &sa.peer == id && (sa.initiator || sa.up)).collect();
        sas.sort_by_key(|sa| (sa.state == SaState::Established, sa.created));
        let sa = sas.last();
        let now = self.clock;
        Some(PeerStatus {
            state: match sa.map(|s| s.state) {
                None | Some(SaState::Dead) => IkeState::Down,
                Some(SaState::Established) => IkeState::Established,
                Some(SaState::Deleting) => IkeState::Deleting,
                Some(_) => IkeState::Connecting,
            },
            initiator: sa.is_some_and(|s| s.initiator),
            spi_i: sa.map_or(0, |s| s.spi_i),
            spi_r: sa.map_or(0, |s| s.spi_r),
            suite: sa.and_then(|s| s.suite),
            remote: sa.map(|s| s.path.remote),
            nat: sa.is_some_and(|s| s.nat_detected),
            children: sas
                .iter()
                .flat_map(|s| s.children.iter().map(|c| informational::child_status(s, c, now)))
                .collect(),
            ike_rekeys: peer.ike_rekeys,
            child_rekeys: peer.child_rekeys,
            last_received: sa.map(|s| s.last_received),
            failure: self.io.failures.get(id).cloned(),
        })
    }
}
