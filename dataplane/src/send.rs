//! The send path, in one place: packets from the TUN are routed to a peer
//! by destination (cryptokey routing) and gathered into batches of one
//! peer, keypair and endpoint. A batch takes its nonces and its place in
//! the peer's send queue before any sealing, so that whichever worker seals
//! it, it leaves in reading order: runs of equal-size datagrams in one GSO
//! syscall (or, where GSO is missing, runs of any sizes in one sendmmsg).
//! Packets for a peer without a session are staged and a handshake started.
//! Handshake messages and keepalives leave through here too, directly.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use causeway_wireguard::{padded_len, Error, Keypair, Time, DATA_HEADER_LEN, DATA_OVERHEAD};

use crate::counters::{Drop, WorkerStats};
use crate::interface::Interface;
use crate::jobs::Job;
use crate::ordered::Batch;
use crate::peer::{Endpoint, PeerState};
use crate::udp::{SourceUse, UdpEndpoint, MMSG_BATCH};

/// Largest UDP payload one GSO send may carry in total.
const GSO_MAX_BYTES: usize = 65_000;

/// Destination address of an IP packet, if it is one.
pub fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some(IpAddr::from(<[u8; 4]>::try_from(&packet[16..20]).ok()?)),
        6 if packet.len() >= 40 => Some(IpAddr::from(<[u8; 16]>::try_from(&packet[24..40]).ok()?)),
        _ => None,
    }
}

/// Sends to a peer's endpoint from its sticky source; forgets a source
/// that is no longer ours. Returns whether the datagrams left.
pub fn transmit(
    iface: &Interface,
    peer: &PeerState,
    ep: Endpoint,
    sock: &UdpEndpoint,
    contents: &[u8],
    segment: Option<usize>,
) -> bool {
    transmit_to(iface, Some(peer), ep.addr, ep.local, sock, contents, segment)
}

/// Sends to an address (a reply to whoever wrote to us, known peer or not).
pub fn transmit_to(
    iface: &Interface,
    peer: Option<&PeerState>,
    addr: SocketAddr,
    local: Option<IpAddr>,
    sock: &UdpEndpoint,
    contents: &[u8],
    segment: Option<usize>,
) -> bool {
    settle(iface, peer, addr, sock.send(addr, local, contents, segment))
}

/// Sends datagrams of `lens` bytes, laid end to end in `contents`, to a
/// peer with sendmmsg (for sockets without GSO).
fn transmit_many(
    iface: &Interface,
    peer: &PeerState,
    ep: Endpoint,
    sock: &UdpEndpoint,
    contents: &[u8],
    lens: &[usize],
) -> bool {
    settle(iface, Some(peer), ep.addr, sock.send_many(ep.addr, ep.local, contents, lens))
}

/// Accounts for a send: a dropped sticky source is forgotten, an error
/// counted. Returns whether the datagrams left.
fn settle(iface: &Interface, peer: Option<&PeerState>, addr: SocketAddr, result: std::io::Result<SourceUse>) -> bool {
    match result {
        Ok(SourceUse::Kept) => true,
        Ok(SourceUse::Dropped) => {
            if let Some(p) = peer {
                p.forget_source(addr);
            }
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, to = %addr, "UDP send failed");
            iface.counters.count(Drop::UdpSend);
            false
        }
    }
}

/// Sends a handshake initiation if the endpoint is known and REKEY_TIMEOUT
/// allows one now.
pub fn send_initiation(iface: &Interface, peer: &PeerState, sock: &UdpEndpoint, now: Time) {
    let Some(ep) = peer.endpoint() else {
        iface.counters.count(Drop::NoEndpoint);
        return;
    };
    match iface.device.create_initiation(&peer.crypto, now, SystemTime::now()) {
        Ok(msg) => {
            peer.handshakes_initiated.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            transmit(iface, peer, ep, sock, &msg, None);
        }
        Err(Error::InitiationTooSoon) => {}
        Err(e) => {
            tracing::debug!(peer = %peer.public_key(), error = %e, "cannot create initiation");
            iface.counters.count(Drop::from_error(e));
        }
    }
}

/// Where an off-path packet goes: the peer, its session and its endpoint.
struct Target<'a> {
    peer: &'a PeerState,
    kp: &'a Keypair,
    ep: Endpoint,
}

/// Seals and sends one packet (or a keepalive, when empty) on its own.
/// Used off the hot path: staged packets, keepalives.
fn send_one(iface: &Interface, t: &Target<'_>, sock: &UdpEndpoint, payload: &[u8], scratch: &mut Vec<u8>, now: Time) {
    let padded = padded_len(payload.len(), iface.mtu() as usize);
    scratch.clear();
    scratch.resize(DATA_OVERHEAD + padded, 0);
    scratch[DATA_HEADER_LEN..DATA_HEADER_LEN + payload.len()].copy_from_slice(payload);
    let sealed = t.kp.reserve(1).and_then(|c| t.kp.seal(c, scratch, payload.len(), padded));
    match sealed {
        Ok(len) => {
            if transmit(iface, t.peer, t.ep, sock, &scratch[..len], None) {
                t.peer.crypto.on_sent(now, len as u64, 1, !payload.is_empty());
            }
        }
        Err(e) => iface.counters.count(Drop::from_error(e)),
    }
}

/// Sends a keepalive, or starts a handshake if there is no session.
pub fn send_keepalive(iface: &Interface, peer: &PeerState, sock: &UdpEndpoint, now: Time) {
    match (peer.crypto.keypair_for_sending(now), peer.endpoint()) {
        (Ok(kp), Some(ep)) => {
            let target = Target { peer, kp: &kp, ep };
            send_one(iface, &target, sock, &[], &mut Vec::with_capacity(64), now)
        }
        (Err(_), _) => send_initiation(iface, peer, sock, now),
        (_, None) => iface.counters.count(Drop::NoEndpoint),
    }
}

/// A new session is up: send what waited for it, or a keepalive so the
/// responder can confirm the session.
pub fn flush_staged(iface: &Interface, peer: &PeerState, sock: &UdpEndpoint, now: Time, keepalive_if_empty: bool) {
    let (Ok(kp), Some(ep)) = (peer.crypto.keypair_for_sending(now), peer.endpoint()) else {
        return;
    };
    let target = Target { peer, kp: &kp, ep };
    let staged = peer.take_staged();
    if staged.is_empty() {
        if keepalive_if_empty {
            send_one(iface, &target, sock, &[], &mut Vec::with_capacity(64), now);
        }
        return;
    }
    let mut scratch = Vec::with_capacity(iface.mtu() as usize + 64);
    for p in staged {
        send_one(iface, &target, sock, &p, &mut scratch, now);
    }
}

/// Most datagrams one batch carries (and so one GSO send).
const BATCH_PACKETS: usize = 64;

/// Packets of one peer, one keypair and one endpoint, laid out as the
/// datagrams they become; sealed in place by any worker and sent by the
/// peer queue's drainer.
pub type TxBatch = Batch<TxData>;

/// Default: a placeholder that allocates nothing, left in the mutex while
/// the reader fills the batch outside it.
#[derive(Default)]
pub struct TxData {
    target: Option<(Arc<PeerState>, Arc<Keypair>, Endpoint)>,
    /// Counter of the first datagram; the others follow in order.
    first_counter: u64,
    /// Datagrams end to end: header, padded payload, tag.
    buf: Vec<u8>,
    len: usize,
    /// (payload, padded payload) lengths per datagram.
    packets: Vec<(usize, usize)>,
    /// Per datagram, whether sealing succeeded.
    sealed: Vec<bool>,
    /// The worker that read the packets, to count help.
    reader: usize,
}

impl TxData {
    /// With its buffers allocated, for the pool.
    pub fn with_buffers() -> TxData {
        TxData {
            // A batch stays within one GSO send, except that its first
            // datagram may be as large as any packet.
            buf: vec![0u8; GSO_MAX_BYTES.max(crate::tun::MAX_PACKET + 64)],
            packets: Vec::with_capacity(BATCH_PACKETS),
            sealed: Vec::with_capacity(BATCH_PACKETS),
            ..TxData::default()
        }
    }

    fn reset(&mut self) {
        self.target = None;
        self.len = 0;
        self.packets.clear();
        self.sealed.clear();
    }
}

/// Seals a batch (on any worker) and marks it done; returns its peer,
/// whose queue the caller drains next.
pub fn seal_batch(iface: &Interface, batch: &TxBatch, worker: usize) -> Option<Arc<PeerState>> {
    let mut d = batch.lock();
    let TxData { target, first_counter, buf, packets, sealed, reader, .. } = &mut *d;
    let peer = target.clone().map(|(peer, kp, _)| {
        let mut at = 0;
        sealed.clear();
        for (i, &(payload, padded)) in packets.iter().enumerate() {
            let wire = DATA_OVERHEAD + padded;
            let ok = kp.seal(*first_counter + i as u64, &mut buf[at..at + wire], payload, padded).is_ok();
            if !ok {
                iface.counters.count(Drop::Malformed);
            }
            sealed.push(ok);
            at += wire;
        }
        peer
    });
    iface.worker_stats[worker].count_batch(*reader != worker);
    drop(d);
    // Done even without a target, so a queue can never stall behind it.
    batch.finish();
    peer
}

/// A run of datagrams in a batch that leaves in one send.
#[derive(Clone, Copy)]
struct Run {
    start: usize,
    end: usize,
    /// GSO segment size: the first datagram's; only the last may be shorter.
    segment: usize,
    count: usize,
    closed: bool,
}

/// Per-worker state of the send path; buffers are reused across batches.
pub struct Sender {
    /// Without GSO: the length of each datagram of a run, for sendmmsg.
    lens: Vec<usize>,
    /// Index of the worker this belongs to, for its statistics.
    worker: usize,
    /// Peers that asked for a new handshake while their packets were read.
    rekey: Vec<Arc<PeerState>>,
}

impl Sender {
    pub fn new(worker: usize) -> Sender {
        Sender { lens: Vec::with_capacity(MMSG_BATCH), worker, rekey: Vec::new() }
    }

    /// Routes packets read from the TUN to their peers and queues them as
    /// batches for sealing. Returns how many packets were taken; fewer than
    /// given when every batch buffer is in flight (the caller helps with
    /// the crypto, then calls again with the rest).
    pub fn enqueue(
        &mut self,
        iface: &Interface,
        sock: &UdpEndpoint,
        bufs: &mut [Vec<u8>],
        sizes: &[usize],
        now: Time,
    ) -> usize {
        let routes = iface.routes();
        let mss = iface.mss_limits();
        let mtu = iface.mtu() as usize;
        let max_segments = sock.max_gso_segments();
        let per_batch = if max_segments == 1 { MMSG_BATCH } else { max_segments }.min(BATCH_PACKETS);
        // Per batch, not per packet: the keypair of the peer last seen.
        let mut cached: Option<(Arc<PeerState>, Arc<Keypair>)> = None;
        let mut open: Option<(Arc<TxBatch>, TxData)> = None;
        let mut taken = 0;
        for (buf, &size) in bufs.iter_mut().zip(sizes) {
            if let Some(limits) = mss {
                crate::mss::clamp(&mut buf[..size], limits);
            }
            let packet = &buf[..size];
            let Some(peer) = destination(packet).and_then(|d| routes.lookup(d)) else {
                iface.counters.count(Drop::NoRoute);
                taken += 1;
                continue;
            };
            let kp = match &cached {
                Some((p, kp)) if Arc::ptr_eq(p, peer) => kp.clone(),
                _ => match peer.crypto.keypair_for_sending(now) {
                    Ok(kp) => {
                        if peer.crypto.needs_rekey_on_send(&kp, now) && !self.rekey.iter().any(|p| Arc::ptr_eq(p, peer))
                        {
                            self.rekey.push(peer.clone());
                        }
                        cached = Some((peer.clone(), kp.clone()));
                        kp
                    }
                    Err(_) => {
                        if !peer.stage(packet) {
                            iface.counters.count(Drop::StagedQueueFull);
                        }
                        send_initiation(iface, peer, sock, now);
                        taken += 1;
                        continue;
                    }
                },
            };
            let Some(ep) = peer.endpoint() else {
                iface.counters.count(Drop::NoEndpoint);
                taken += 1;
                continue;
            };
            let padded = padded_len(size, mtu);
            let wire = DATA_OVERHEAD + padded;
            let fits = open.as_ref().is_some_and(|(_, d)| {
                d.target.as_ref().is_some_and(|(p, k, e)| Arc::ptr_eq(p, peer) && Arc::ptr_eq(k, &kp) && *e == ep)
                    && d.packets.len() < per_batch
                    && d.len + wire <= GSO_MAX_BYTES
            });
            if !fits {
                if let Some((b, d)) = open.take() {
                    self.submit(iface, b, d);
                }
                let Some(b) = iface.jobs.tx_pool.pop() else {
                    WorkerStats::add(&iface.worker_stats[self.worker].pool_stalls, 1);
                    break;
                };
                let mut d = std::mem::take(&mut *b.lock());
                d.target = Some((peer.clone(), kp.clone(), ep));
                d.reader = self.worker;
                open = Some((b, d));
            }
            let (_, d) = open.as_mut().expect("opened above");
            d.buf[d.len + DATA_HEADER_LEN..d.len + DATA_HEADER_LEN + size].copy_from_slice(packet);
            d.packets.push((size, padded));
            d.len += wire;
            taken += 1;
        }
        if let Some((b, d)) = open.take() {
            self.submit(iface, b, d);
        }
        for peer in std::mem::take(&mut self.rekey) {
            send_initiation(iface, &peer, sock, now);
        }
        taken
    }

    /// Puts a filled batch in its peer's queue, with its nonces reserved in
    /// queue order, and offers it to the workers.
    fn submit(&mut self, iface: &Interface, batch: Arc<TxBatch>, mut d: TxData) {
        let (peer, kp, _) = d.target.clone().expect("a filled batch has a target");
        let count = d.packets.len() as u64;
        let queued = peer.tx.push_with(batch.clone(), || {
            d.first_counter = kp.reserve(count)?;
            Ok::<(), causeway_wireguard::Error>(())
        });
        match queued {
            Ok(()) => {
                // Nobody looks at the batch before the job below runs.
                *batch.lock() = d;
                iface.jobs.push(Job::Seal(batch));
            }
            Err(e) => {
                for _ in 0..count {
                    iface.counters.count(Drop::from_error(e));
                }
                d.reset();
                *batch.lock() = d;
                let _ = iface.jobs.tx_pool.push(batch);
            }
        }
    }

    /// Sends a sealed batch (the drainer of its peer's queue calls this,
    /// in queue order) and returns its buffer to the pool.
    pub fn transmit_batch(&mut self, iface: &Interface, batch: Arc<TxBatch>, now: Time) {
        let mut d = batch.lock();
        if let Some((peer, _, ep)) = d.target.take() {
            // One socket per peer, whichever worker drains: the kernel then
            // hashes all of the peer's datagrams to one transmit queue.
            let set = iface.sockets();
            let sock = &*set.sockets[peer.order as usize % set.sockets.len()];
            let max_segments = sock.max_gso_segments();
            let mmsg = max_segments == 1;
            let limit = if mmsg { MMSG_BATCH } else { max_segments };
            let mut run: Option<Run> = None;
            let mut at = 0;
            for (i, &(_, padded)) in d.packets.iter().enumerate() {
                let wire = DATA_OVERHEAD + padded;
                let joins =
                    d.sealed[i] && run.is_some_and(|r| r.count < limit && (mmsg || (!r.closed && wire <= r.segment)));
                if !joins {
                    if let Some(r) = run.take() {
                        self.send_run(iface, sock, &peer, ep, &d.buf, r, mmsg, now);
                    }
                    if d.sealed[i] {
                        run = Some(Run { start: at, end: at, segment: wire, count: 0, closed: false });
                    }
                }
                if let Some(r) = run.as_mut().filter(|_| d.sealed[i]) {
                    r.end = at + wire;
                    r.count += 1;
                    r.closed = wire < r.segment;
                    if mmsg {
                        self.lens.push(wire);
                    }
                }
                at += wire;
            }
            if let Some(r) = run {
                self.send_run(iface, sock, &peer, ep, &d.buf, r, mmsg, now);
            }
        }
        d.reset();
        drop(d);
        batch.recycle();
        let _ = iface.jobs.tx_pool.push(batch);
    }

    #[allow(clippy::too_many_arguments)]
    fn send_run(
        &mut self,
        iface: &Interface,
        sock: &UdpEndpoint,
        peer: &PeerState,
        ep: Endpoint,
        buf: &[u8],
        r: Run,
        mmsg: bool,
        now: Time,
    ) {
        let stats = &iface.worker_stats[self.worker];
        WorkerStats::add(&stats.udp_sends, 1);
        WorkerStats::add(&stats.udp_datagrams_sent, r.count as u64);
        let contents = &buf[r.start..r.end];
        let sent = if mmsg && r.count > 1 {
            transmit_many(iface, peer, ep, sock, contents, &self.lens)
        } else {
            transmit(iface, peer, ep, sock, contents, (r.count > 1).then_some(r.segment))
        };
        self.lens.clear();
        if sent {
            peer.crypto.on_sent(now, contents.len() as u64, r.count as u64, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_of_ipv4_and_ipv6() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[16..20].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(destination(&v4), Some("10.1.2.3".parse().unwrap()));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[24] = 0xfd;
        v6[39] = 1;
        assert_eq!(destination(&v6), Some("fd00::1".parse().unwrap()));
        assert_eq!(destination(&v4[..19]), None);
        assert_eq!(destination(&[0x50; 40]), None);
    }
}
