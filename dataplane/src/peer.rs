//! The gateway's view of a peer: the protocol state from the core plus what
//! only a networked gateway has — where the peer is, which local address it
//! reached us on, and the packets waiting for a session.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use causeway_config::Endpoint as ConfigEndpoint;
use causeway_wireguard::{PublicKey, Time};

pub use crate::batch::Endpoint;
use crate::batch::{RxData, TxData};
use crate::ordered::{Batch, OrderedQueue};

/// Packets held per peer while a handshake completes; the oldest is dropped
/// beyond this, as the kernel does, so a dead peer cannot pin memory.
pub const MAX_STAGED: usize = 256;

/// How long packets are held for a peer without a session, from the
/// first of them, before they are dropped as stale (a TCP segment long
/// retransmitted, a DNS query long answered elsewhere): WireGuard's
/// REKEY_ATTEMPT_TIME, after which WireGuard gives its handshake up and
/// drops them; the same for IPsec peers.
pub const HELD_PATIENCE: Duration = causeway_wireguard::REKEY_ATTEMPT_TIME;

/// Packets held for a peer without a session, and since when (protocol
/// time) they have waited: set by the first, cleared when they go.
#[derive(Default)]
struct Staged {
    packets: VecDeque<Vec<u8>>,
    since: Option<Time>,
}

impl Staged {
    /// Every packet held, leaving none, so the next starts a new wait.
    fn take(&mut self) -> VecDeque<Vec<u8>> {
        self.since = None;
        std::mem::take(&mut self.packets)
    }
}

/// A batch of a peer's packets on their way out: sealed by any worker,
/// sent by the drainer of the peer's send queue.
pub type TxBatch = Batch<TxData<PeerState>>;
/// A batch of datagrams from a peer: opened by any worker, delivered to
/// the TUN by the drainer of the peer's receive queue.
pub type RxBatch = Batch<RxData<PeerState>>;

/// Which protocol a peer speaks, with that protocol's per-peer state.
pub enum Link {
    /// The WireGuard core's peer: handshake, keypairs, timers.
    WireGuard(Arc<causeway_wireguard::Peer>),
    /// The child SAs that IKE (on the control plane) installed.
    Ipsec(crate::esp_link::EspLink),
}

pub struct PeerState {
    pub link: Link,
    /// Operator's name for the peer; empty for peers added through `wg`.
    pub name: Mutex<String>,
    endpoint: Mutex<Option<Endpoint>>,
    /// The address last set by hand or from the configuration (a name's
    /// resolution); the endpoint differs from it once the peer roams.
    set_addr: Mutex<Option<SocketAddr>>,
    /// Endpoints from the configuration, in order of preference.
    pub configured_endpoints: Mutex<Vec<ConfigEndpoint>>,
    staged: Mutex<Staged>,
    /// Insertion order, so listings are stable.
    pub order: u64,
    pub handshakes_initiated: AtomicU64,
    /// Failover among the configured endpoints.
    failover: Mutex<Failover>,
    /// A failover's lookup of the next endpoint is running (on the control
    /// plane, which starts one at a time per peer: a name server that does
    /// not answer must not pile up lookups every `failover_after`).
    pub failover_lookup: AtomicBool,
    /// The same for the periodic refresh of the endpoint's name (every
    /// `dns_refresh`). Apart from `failover_lookup`, so that a refresh
    /// stuck on a silent name server does not hold up a failover to an
    /// endpoint given as an address.
    pub refresh_lookup: AtomicBool,
    /// Receive and send rates in bytes per second over the last second,
    /// sampled by the control plane; and the counters at that sample.
    rate: Mutex<Rate>,
    /// Batches read from the TUN for this peer, leaving in reading order.
    pub tx: OrderedQueue<TxBatch>,
    /// Batches received from this peer, reaching the TUN in arrival order.
    pub rx: OrderedQueue<RxBatch>,
}

#[derive(Clone, Copy)]
struct Failover {
    /// Index of the configured endpoint in use.
    index: usize,
    /// How long failing handshakes wait before the next endpoint.
    after: Duration,
    /// When the last switch happened.
    last: Option<Time>,
    count: u64,
    /// The `heard` counter at the last look, and when it last changed:
    /// a peer still heard on its session is not failed over.
    heard: Option<u64>,
    heard_at: Option<Time>,
}

#[derive(Default, Clone, Copy)]
struct Rate {
    rx_per_sec: u64,
    tx_per_sec: u64,
    last_rx: u64,
    last_tx: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PeerState {
    pub fn new(crypto: Arc<causeway_wireguard::Peer>, name: String, order: u64) -> PeerState {
        PeerState::with_link(Link::WireGuard(crypto), name, order)
    }

    pub fn with_link(link: Link, name: String, order: u64) -> PeerState {
        PeerState {
            link,
            name: Mutex::new(name),
            endpoint: Mutex::new(None),
            set_addr: Mutex::new(None),
            configured_endpoints: Mutex::new(Vec::new()),
            staged: Mutex::new(Staged::default()),
            order,
            handshakes_initiated: AtomicU64::new(0),
            failover_lookup: AtomicBool::new(false),
            refresh_lookup: AtomicBool::new(false),
            rate: Mutex::new(Rate::default()),
            tx: OrderedQueue::default(),
            rx: OrderedQueue::default(),
            failover: Mutex::new(Failover {
                index: 0,
                after: causeway_config::DEFAULT_FAILOVER_AFTER,
                last: None,
                count: 0,
                heard: None,
                heard_at: None,
            }),
        }
    }

    /// The WireGuard core's peer, for a WireGuard peer.
    pub fn wireguard(&self) -> Option<&Arc<causeway_wireguard::Peer>> {
        match &self.link {
            Link::WireGuard(p) => Some(p),
            Link::Ipsec(_) => None,
        }
    }

    /// The child SAs of an IPsec peer.
    pub fn ipsec(&self) -> Option<&crate::esp_link::EspLink> {
        match &self.link {
            Link::Ipsec(l) => Some(l),
            Link::WireGuard(_) => None,
        }
    }

    /// The WireGuard core's peer. Only for peers from `Interface::peers`
    /// and `Interface::peer`, which hold WireGuard peers alone (IPsec
    /// peers live in `Interface::ipsec_peers`): that is the invariant this
    /// relies on, and the WireGuard code paths take their peers from there.
    pub fn crypto(&self) -> &Arc<causeway_wireguard::Peer> {
        self.wireguard().expect("Interface::peers holds only WireGuard peers")
    }

    /// A WireGuard peer's public key (see `crypto` for which peers).
    pub fn public_key(&self) -> &PublicKey {
        self.crypto().public_key()
    }

    /// How logs name the peer: its name, else (WireGuard) its key.
    pub fn label(&self) -> String {
        let name = self.name();
        match (&self.link, name.is_empty()) {
            (Link::WireGuard(p), true) => p.public_key().to_string(),
            _ => name,
        }
    }

    pub fn name(&self) -> String {
        lock(&self.name).clone()
    }

    pub fn endpoint(&self) -> Option<Endpoint> {
        *lock(&self.endpoint)
    }

    /// Sets the endpoint by hand (configuration or `wg set`); the sticky
    /// source is forgotten since it belonged to the old address.
    pub fn set_endpoint(&self, addr: SocketAddr) {
        let mut ep = lock(&self.endpoint);
        *lock(&self.set_addr) = Some(addr);
        *ep = Some(Endpoint { addr, local: None });
    }

    /// A fresh resolution of the configured endpoint's name, while the
    /// session may be healthy: follows the name when it no longer lists the
    /// address in use, unless the peer has roamed away from the configured
    /// address (its authenticated packets are the better word). Returns the
    /// new address when the endpoint changed.
    pub fn refresh_from_name(&self, addrs: &[SocketAddr]) -> Option<SocketAddr> {
        let first = *addrs.first()?;
        let mut ep = lock(&self.endpoint);
        let mut set = lock(&self.set_addr);
        let current = ep.map(|e| e.addr);
        if current.is_some_and(|c| addrs.contains(&c)) {
            *set = current;
            return None;
        }
        if current.is_some() && current != *set {
            return None;
        }
        *set = Some(first);
        *ep = Some(Endpoint { addr: first, local: None });
        Some(first)
    }

    /// Roaming: the source of an authenticated packet becomes the endpoint,
    /// and the address it arrived on becomes our source for replies.
    /// Returns whether the peer's address changed.
    pub fn observe(&self, addr: SocketAddr, local: Option<IpAddr>) -> bool {
        let new = Some(Endpoint { addr, local });
        let mut ep = lock(&self.endpoint);
        let moved = ep.is_some_and(|e| e.addr != addr);
        if *ep != new {
            if moved {
                tracing::info!(peer = %self.label(), from = %ep.map(|e| e.addr.to_string()).unwrap_or_default(), to = %addr, "peer roamed");
            }
            *ep = new;
        }
        moved
    }

    /// Forgets the sticky source (it is no longer one of our addresses).
    pub fn forget_source(&self, addr: SocketAddr) {
        let mut ep = lock(&self.endpoint);
        if let Some(e) = ep.as_mut().filter(|e| e.addr == addr) {
            e.local = None;
        }
    }

    /// Holds a packet until a session exists; returns false if the oldest
    /// had to be dropped to make room.
    pub fn stage(&self, packet: &[u8], now: Time) -> bool {
        let mut q = lock(&self.staged);
        let full = q.packets.len() >= MAX_STAGED;
        if full {
            q.packets.pop_front();
        }
        q.packets.push_back(packet.to_vec());
        q.since.get_or_insert(now);
        !full
    }

    pub fn take_staged(&self) -> VecDeque<Vec<u8>> {
        lock(&self.staged).take()
    }

    /// Drops the held packets once they have waited `patience` for a
    /// session (counted from when the first of them was held): a peer
    /// that stays unreachable must not get hours-old packets when it
    /// comes back. Returns how many went.
    pub fn expire_staged(&self, now: Time, patience: Duration) -> usize {
        let mut q = lock(&self.staged);
        if q.since.is_none_or(|t| now.saturating_since(t) < patience) {
            return 0;
        }
        q.take().len()
    }

    pub fn failover_after(&self) -> Duration {
        lock(&self.failover).after
    }

    pub fn set_failover_after(&self, after: Duration) {
        lock(&self.failover).after = after;
    }

    /// Which configured endpoint is in use (after a configuration change).
    pub fn set_endpoint_index(&self, index: usize) {
        lock(&self.failover).index = index;
    }

    /// Which configured endpoint is in use.
    pub fn endpoint_index(&self) -> usize {
        lock(&self.failover).index
    }

    pub fn failovers(&self) -> u64 {
        lock(&self.failover).count
    }

    /// A counter that changes whenever something authenticated arrives
    /// from the peer. WireGuard: a packet, or a completed handshake.
    /// IPsec: an ESP packet, or a new child SA (IKE heard from it).
    pub fn heard(&self) -> u64 {
        match &self.link {
            Link::WireGuard(p) => {
                let s = p.stats();
                s.rx_packets.wrapping_add(s.handshakes)
            }
            Link::Ipsec(l) => {
                let spi = l.sending().map_or(0, |s| u64::from(s.spi_out()));
                l.packets().0.wrapping_add(spi << 32)
            }
        }
    }

    /// If handshakes have failed for `failover_after` (since they began, or
    /// since the last switch) and nothing was heard from the peer for as
    /// long, picks the next of `count` configured endpoints and returns its
    /// index. With one endpoint that is the same one again: resolving its
    /// name anew finds a gateway that moved. Called every tick: what it
    /// hears is compared from call to call. A peer still heard is alive
    /// on its current session (a rekey whose packet was lost), and its
    /// traffic is not moved to a standby.
    pub fn next_endpoint(&self, count: usize, now: Time) -> Option<usize> {
        if count == 0 {
            return None;
        }
        let heard = self.heard();
        let mut f = lock(&self.failover);
        if f.heard.is_some_and(|h| h != heard) {
            f.heard_at = Some(now);
        }
        f.heard = Some(heard);
        let started = match &self.link {
            Link::WireGuard(p) => p.timers.handshake_attempts_started()?,
            Link::Ipsec(l) => l.negotiation_started()?,
        };
        let since = [f.last, f.heard_at].into_iter().flatten().fold(started, Time::max);
        if now.saturating_since(since) < f.after {
            return None;
        }
        f.index = (f.index + 1) % count;
        f.last = Some(now);
        if count > 1 {
            f.count += 1;
        }
        Some(f.index)
    }

    /// Records a counter sample taken `secs` after the previous one.
    pub fn sample_rate(&self, secs: f64) {
        let (rx_bytes, tx_bytes) = match &self.link {
            Link::WireGuard(p) => {
                let stats = p.stats();
                (stats.rx_bytes, stats.tx_bytes)
            }
            Link::Ipsec(l) => l.bytes(),
        };
        let mut r = lock(&self.rate);
        if secs > 0.0 {
            r.rx_per_sec = (rx_bytes.saturating_sub(r.last_rx) as f64 / secs) as u64;
            r.tx_per_sec = (tx_bytes.saturating_sub(r.last_tx) as f64 / secs) as u64;
        }
        r.last_rx = rx_bytes;
        r.last_tx = tx_bytes;
    }

    /// (receive, send) bytes per second over the last sampled second.
    pub fn rates(&self) -> (u64, u64) {
        let r = lock(&self.rate);
        (r.rx_per_sec, r.tx_per_sec)
    }

    pub fn staged_len(&self) -> usize {
        lock(&self.staged).packets.len()
    }

    pub fn has_staged(&self) -> bool {
        !lock(&self.staged).packets.is_empty()
    }

    pub fn clear_staged(&self) -> usize {
        lock(&self.staged).take().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_wireguard::{Device, StaticSecret};

    fn peer() -> PeerState {
        let device = Device::new(Some(StaticSecret::random(&mut rand_core::OsRng)));
        let key = StaticSecret::random(&mut rand_core::OsRng).public_key();
        PeerState::new(device.add_peer(key, None, 0).unwrap(), "dc".into(), 0)
    }

    // Held packets go once they have waited the patience for a session,
    // counted from the first of them; a session taking them starts over.
    #[test]
    fn held_packets_expire_after_waiting_from_the_first() {
        let at = |s: u64| Time::from_nanos(s * 1_000_000_000);
        let patience = Duration::from_secs(90);
        let p = peer();
        assert_eq!(p.expire_staged(at(1000), patience), 0, "nothing held");
        p.stage(b"first", at(10));
        p.stage(b"second", at(60));
        assert_eq!(p.expire_staged(at(99), patience), 0, "89 s after the first");
        assert_eq!(p.expire_staged(at(100), patience), 2, "90 s after the first, both");
        assert_eq!(p.staged_len(), 0);
        p.stage(b"third", at(150));
        assert_eq!(p.expire_staged(at(200), patience), 0, "the wait starts again with the next");
        assert_eq!(p.take_staged().len(), 1);
        p.stage(b"fourth", at(230));
        assert_eq!(p.expire_staged(at(300), patience), 0, "a session took the last: counted from this one");
        assert_eq!(p.expire_staged(at(320), patience), 1);
    }

    #[test]
    fn a_renamed_endpoint_is_followed_unless_the_peer_roamed() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let p = peer();
        p.set_endpoint(addr("198.18.1.2:51820"));
        assert_eq!(p.refresh_from_name(&[addr("198.18.1.2:51820"), addr("198.18.3.2:51820")]), None, "still listed");
        assert_eq!(p.refresh_from_name(&[]), None, "a failed lookup changes nothing");
        assert_eq!(p.refresh_from_name(&[addr("198.18.2.2:51820")]), Some(addr("198.18.2.2:51820")));
        assert_eq!(p.endpoint().unwrap().addr, addr("198.18.2.2:51820"));
        // The peer's authenticated packets now come from elsewhere (NAT):
        // the name's answer must not pull the endpoint back.
        p.observe(addr("198.18.9.9:40000"), None);
        assert_eq!(p.refresh_from_name(&[addr("198.18.4.2:51820")]), None);
        assert_eq!(p.endpoint().unwrap().addr, addr("198.18.9.9:40000"));
    }

    // A rekey's initiation is lost while the peer's packets still arrive on
    // the session: no failover, however long the attempts run, until the
    // peer has also been silent for failover_after.
    #[test]
    fn a_peer_still_heard_is_not_failed_over() {
        use causeway_wireguard::Received;
        let at = |ms: u64| Time::from_nanos(ms * 1_000_000);
        let wall = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (ka, kb) = (StaticSecret::random(&mut rand_core::OsRng), StaticSecret::random(&mut rand_core::OsRng));
        let (da, db) = (Device::new(Some(ka.clone())), Device::new(Some(kb.clone())));
        let (a_of_b, b_of_a) =
            (da.add_peer(kb.public_key(), None, 0).unwrap(), db.add_peer(ka.public_key(), None, 0).unwrap());
        let src: SocketAddr = "198.18.0.1:51820".parse().unwrap();
        let mut init = da.create_initiation(&a_of_b, at(0), wall).unwrap().to_vec();
        let mut resp = match db.receive(src, &mut init, at(0)).unwrap() {
            Received::HandshakeResponse { response, .. } => response.to_vec(),
            _ => panic!("no response"),
        };
        assert!(matches!(da.receive(src, &mut resp, at(0)).unwrap(), Received::SessionEstablished { .. }));
        let seal = |d: &Device, p: &causeway_wireguard::Peer, now| {
            let mut buf = vec![0u8; 128];
            let len = d.seal(p, &mut buf, 0, 1420, now).unwrap().len;
            buf.truncate(len);
            buf
        };
        // a's keepalive confirms b's session, so b can send.
        db.receive(src, &mut seal(&da, &a_of_b, at(0)), at(0)).unwrap();

        let p = PeerState::new(a_of_b.clone(), "dc".into(), 0);
        p.set_failover_after(Duration::from_secs(3));
        // The rekey at 10 s goes unanswered; b keeps sending every 100 ms.
        let _ = da.create_initiation(&a_of_b, at(10_000), wall).unwrap();
        for t in (10_000..20_000).step_by(100) {
            da.receive(src, &mut seal(&db, &b_of_a, at(t)), at(t)).unwrap();
            assert_eq!(p.next_endpoint(2, at(t)), None, "failed over at {t} ms while b was heard");
        }
        // b falls silent after its packet at 19.9 s.
        for t in (20_000..22_900).step_by(100) {
            assert_eq!(p.next_endpoint(2, at(t)), None, "at {t} ms");
        }
        assert_eq!(p.next_endpoint(2, at(22_900)), Some(1));
        assert_eq!(p.failovers(), 1);
    }
}
