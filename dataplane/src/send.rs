//! The send path, in one place. One packet from the TUN to the wire:
//!
//! 1. `worker.rs` `Worker::read_tun`: a TUN queue read, of packets or of
//!    one TSO or USO super-packet, which stays whole until step 2.
//! 2. `Sender::enqueue` or `enqueue_super` (here): MSS clamp, the peer by
//!    longest-prefix match on the destination (cryptokey routing,
//!    `allowed_ips.rs`; for a site, one of its gateways by the flow's
//!    hash, `site.rs`), the protocol's session for it
//!    (`Protocol::sending_session`; without one the packet is held and a
//!    handshake started, `Protocol::hold`), the session's traffic
//!    selectors (`selectors.rs`, IPsec), and a place in a batch of one
//!    peer, session and endpoint (`batch.rs`). A packet is copied there; a
//!    super-packet's segments are cut there (`super_packet.rs`), so a TSO
//!    stream is copied once in user space on its way out.
//! 3. `Sender::submit`: the batch reserves its counters
//!    (`Session::reserve`) and joins the peer's send queue under one lock
//!    (`ordered.rs`), then becomes a job any worker may take (`jobs.rs`).
//! 4. `seal_batch`: any worker seals the batch in place (`Session::seal`)
//!    and marks it done.
//! 5. `Sender::transmit_batch`: the drainer of the peer's queue sends the
//!    finished batches in queue order, runs of equal-size datagrams in one
//!    GSO send (or, without GSO, runs of any sizes in one sendmmsg), and
//!    returns the buffers to the pool.
//!
//! Nothing here knows the protocol: it calls `Protocol` and `Session`.

use std::net::IpAddr;
use std::sync::Arc;

use causeway_wireguard::Time;

use crate::batch::{TxData, GSO_MAX_BYTES, TX_BATCH_PACKETS};
use crate::counters::{Drop, WorkerStats};
use crate::interface::Interface;
use crate::io::Socket;
use crate::jobs::Job;
use crate::last_lookup::LastLookup;
use crate::peer::{Endpoint, PeerState, TxBatch};
use crate::protocol::Protocol;
use crate::route::Route;
use crate::session::Session;
use crate::site::{Site, SiteTable};
use crate::super_packet::SuperPacket;
use crate::transmit::{transmit, transmit_many};
use crate::udp::MMSG_BATCH;

/// Destination address of an IP packet, if it is one.
pub fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some(IpAddr::from(<[u8; 4]>::try_from(&packet[16..20]).ok()?)),
        6 if packet.len() >= 40 => Some(IpAddr::from(<[u8; 16]>::try_from(&packet[24..40]).ok()?)),
        _ => None,
    }
}

/// Seals a batch (on any worker) and marks it done; returns its peer,
/// whose queue the caller drains next.
pub fn seal_batch(iface: &Interface, batch: &TxBatch, worker: usize) -> Option<Arc<PeerState>> {
    let mut d = batch.lock();
    let TxData { target, first_counter, buf, packets, sealed, reader, .. } = &mut *d;
    let peer = target.clone().map(|(peer, session, _)| {
        let mut at = 0;
        sealed.clear();
        for (i, &(payload, padded)) in packets.iter().enumerate() {
            let wire = session.wire_len(padded);
            let ok = session.seal(*first_counter + i as u64, &mut buf[at..at + wire], payload, padded).is_ok();
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

/// Sends the packets held for `peer` while it had no session, now that it
/// has one. They take the peer's send queue like any batch, so their
/// counters are reserved in the queue's order and a worker's batch sealed
/// after them cannot leave before them: ESP peers often keep a replay
/// window of only 32 packets, and up to `MAX_STAGED` (256) wait here.
/// The caller may be the control plane rather than a worker, so it seals
/// itself, counted as worker 0, and drains the queue as far as it is
/// done (a worker's batch ahead, not sealed yet, leaves it to that
/// worker's drain). With every pooled batch in flight, they get batches
/// of their own (`TxData::spilled`) rather than wait or be dropped.
pub fn send_held<P: Protocol>(
    proto: &P,
    iface: &Interface,
    peer: &Arc<PeerState>,
    held: &[Vec<u8>],
    sock: &dyn Socket,
    now: Time,
) {
    let Some(sending) = proto.sending_session(peer, now) else {
        // The session went again meanwhile: held again, and the next one
        // asked for, as the send path holds a packet.
        for p in held {
            proto.hold(iface, peer, p, sock, now);
        }
        return;
    };
    let Some(ep) = peer.endpoint() else {
        iface.counters.count_many(Drop::NoEndpoint, held.len());
        return;
    };
    let session = &sending.session;
    let sizes: Vec<usize> = held.iter().map(Vec::len).collect();
    let source = Packets { bufs: held, sizes: &sizes };
    let shape = Shape::of(iface, sock);
    let mut sender = Sender { inline: true, ..Sender::new(0) };
    let mut open = None;
    for (i, p) in held.iter().enumerate() {
        if session.selectors().is_some_and(|s| !s.admits_outbound(p)) {
            iface.counters.count(Drop::OutboundOutsideSelectors);
            continue;
        }
        let placed = sender.put(proto, iface, &mut open, (peer, session, ep), &source, i, shape, now);
        debug_assert!(placed, "an inline sender makes a batch when the pool has none");
    }
    if let Some((b, d)) = open.take() {
        sender.submit(proto, iface, b, d, now);
    }
}

/// Returns a batch to the pool, unless it was made beyond it.
fn give_back(iface: &Interface, batch: Arc<TxBatch>, spilled: bool) {
    if !spilled {
        let _ = iface.jobs.tx_pool.push(batch);
    }
}

/// A peer with the session and endpoint its packets take.
type Target = (Arc<PeerState>, Arc<dyn Session>, Option<Endpoint>);

/// Packets for step 2: read one by one, or the segments of a super-packet,
/// each cut into its batch as it is placed.
trait Source {
    fn count(&self) -> usize;
    /// Packet `i`'s length.
    fn len(&self, i: usize) -> usize;
    /// Packet `i`'s headers, as far as routing and selectors read: the
    /// packet itself, or the headers a super-packet's segments share.
    fn head(&self, i: usize) -> &[u8];
    /// Writes packet `i` into `out`, which is `len(i)` bytes long.
    fn write(&self, i: usize, out: &mut [u8]);
}

/// Packets read one by one, in buffers.
struct Packets<'a> {
    bufs: &'a [Vec<u8>],
    sizes: &'a [usize],
}

impl Source for Packets<'_> {
    fn count(&self) -> usize {
        self.sizes.len().min(self.bufs.len())
    }
    fn len(&self, i: usize) -> usize {
        self.sizes[i]
    }
    fn head(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.sizes[i]]
    }
    fn write(&self, i: usize, out: &mut [u8]) {
        out.copy_from_slice(self.head(i));
    }
}

impl Source for SuperPacket<'_> {
    fn count(&self) -> usize {
        SuperPacket::count(self)
    }
    fn len(&self, i: usize) -> usize {
        SuperPacket::len(self, i)
    }
    fn head(&self, _: usize) -> &[u8] {
        self.header()
    }
    fn write(&self, i: usize, out: &mut [u8]) {
        SuperPacket::write(self, i, out);
    }
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

/// How batches are cut for one socket.
#[derive(Clone, Copy)]
struct Shape {
    mtu: usize,
    /// Most datagrams in a batch: one GSO send's, or one sendmmsg's.
    per_batch: usize,
}

impl Shape {
    fn of(iface: &Interface, sock: &dyn Socket) -> Shape {
        let max_segments = sock.max_gso_segments();
        let per_batch = if max_segments == 1 { MMSG_BATCH } else { max_segments }.min(TX_BATCH_PACKETS);
        Shape { mtu: iface.mtu() as usize, per_batch }
    }
}

/// Per-worker state of the send path; buffers are reused across batches.
pub struct Sender {
    /// Without GSO: the length of each datagram of a run, for sendmmsg.
    lens: Vec<usize>,
    /// Index of the worker this belongs to, for its statistics.
    worker: usize,
    /// Peers that asked for a new session while their packets were read.
    rekey: Vec<Arc<PeerState>>,
    /// A super-packet's segment held for a peer without a session.
    scratch: Vec<u8>,
    /// Seals and sends each batch itself instead of offering it to the
    /// workers: for packets held until a session came (`send_held`).
    inline: bool,
}

impl Sender {
    pub fn new(worker: usize) -> Sender {
        Sender { lens: Vec::with_capacity(MMSG_BATCH), worker, rekey: Vec::new(), scratch: Vec::new(), inline: false }
    }

    /// Routes packets read from the TUN to their peers and queues them as
    /// batches for sealing. Returns how many packets were taken; fewer than
    /// given when every batch buffer is in flight (the caller helps with
    /// the crypto, then calls again with the rest).
    pub fn enqueue<P: Protocol>(
        &mut self,
        proto: &P,
        iface: &Interface,
        sock: &dyn Socket,
        bufs: &mut [Vec<u8>],
        sizes: &[usize],
        now: Time,
    ) -> usize {
        if let Some(limits) = iface.mss_limits() {
            for (buf, &size) in bufs.iter_mut().zip(sizes) {
                crate::mss::clamp(&mut buf[..size], limits);
            }
        }
        self.place(proto, iface, sock, &Packets { bufs, sizes }, 0, now)
    }

    /// Queues the segments of a super-packet from segment `from` on, each
    /// cut straight into its batch. Returns the segment reached: fewer
    /// than all when every batch buffer is in flight, as `enqueue`.
    pub fn enqueue_super<P: Protocol>(
        &mut self,
        proto: &P,
        iface: &Interface,
        sock: &dyn Socket,
        packet: &SuperPacket<'_>,
        from: usize,
        now: Time,
    ) -> usize {
        self.place(proto, iface, sock, packet, from, now)
    }

    /// Step 2 for packets `from..` of `source`; returns the index reached.
    fn place<P: Protocol, S: Source>(
        &mut self,
        proto: &P,
        iface: &Interface,
        sock: &dyn Socket,
        source: &S,
        from: usize,
        now: Time,
    ) -> usize {
        let routes = iface.routes();
        let shape = Shape::of(iface, sock);
        // Per call, not per packet: the peer last seen, with its session
        // and endpoint. Keyed by the peer, not the route: two flows of one
        // site may go to two gateways, and a batch never mixes peers.
        let mut cached: Option<Target> = None;
        // The table of the site last seen, loaded once per call rather than
        // per packet; `routes` keeps the site alive, so its address is a
        // safe key.
        let mut site_table: LastLookup<*const Site, Arc<SiteTable>> = LastLookup::new();
        let mut open: Option<(Arc<TxBatch>, TxData<PeerState>)> = None;
        // The segments of one TSO read share their destination: one
        // lookup for a run of them (2% of the CPU of a single stream when
        // every packet had its own).
        let mut last_route = LastLookup::new();
        let mut i = from;
        while i < source.count() {
            let head = source.head(i);
            i += 1;
            let Some(route) = destination(head).and_then(|d| *last_route.get(d, || routes.lookup(d))) else {
                iface.counters.count(Drop::NoRoute);
                continue;
            };
            let peer = match route {
                Route::Peer(peer) => peer,
                Route::Site(site) => {
                    let table = site_table.get(Arc::as_ptr(site), || site.table_full());
                    match table.pick(crate::flow_hash::flow_hash(head)) {
                        Some(peer) => peer,
                        // A site without gateways: its prefixes are unrouted.
                        None => {
                            iface.counters.count(Drop::NoRoute);
                            continue;
                        }
                    }
                }
            };
            if !cached.as_ref().is_some_and(|(p, _, _)| Arc::ptr_eq(p, peer)) {
                match proto.sending_session(peer, now) {
                    Some(sending) => {
                        if sending.rekey && !self.rekey.iter().any(|p| Arc::ptr_eq(p, peer)) {
                            self.rekey.push(peer.clone());
                        }
                        cached = Some((peer.clone(), sending.session, peer.endpoint()));
                    }
                    None => {
                        self.hold(proto, iface, peer, source, i - 1, sock, now);
                        continue;
                    }
                }
            }
            let (_, session, ep) = cached.as_ref().expect("set above");
            // An IPsec SA negotiated for narrower selectors than the
            // prefixes routed to its peer: what it may not carry is
            // dropped here rather than by the peer.
            if session.selectors().is_some_and(|s| !s.admits_outbound(head)) {
                iface.counters.count(Drop::OutboundOutsideSelectors);
                continue;
            }
            let Some(ep) = *ep else {
                iface.counters.count(Drop::NoEndpoint);
                continue;
            };
            if !self.put(proto, iface, &mut open, (peer, session, ep), source, i - 1, shape, now) {
                i -= 1;
                break;
            }
        }
        if let Some((b, d)) = open.take() {
            self.submit(proto, iface, b, d, now);
        }
        // Drained, not taken: the vector keeps its capacity for the next
        // batch, so a peer due a rekey costs no allocation per read.
        for peer in self.rekey.drain(..) {
            proto.rekey(iface, &peer, sock, now);
        }
        i
    }

    /// Holds packet `i` of `source` for `peer`, which has no session yet.
    /// A segment of a super-packet is cut into the scratch buffer first
    /// (the one allocation, on the first such hold).
    #[allow(clippy::too_many_arguments)]
    fn hold<P: Protocol, S: Source>(
        &mut self,
        proto: &P,
        iface: &Interface,
        peer: &Arc<PeerState>,
        source: &S,
        i: usize,
        sock: &dyn Socket,
        now: Time,
    ) {
        let (head, size) = (source.head(i), source.len(i));
        if head.len() == size {
            proto.hold(iface, peer, head, sock, now);
            return;
        }
        if self.scratch.len() < size {
            self.scratch.resize(size.max(crate::tun::MAX_PACKET), 0);
        }
        source.write(i, &mut self.scratch[..size]);
        proto.hold(iface, peer, &self.scratch[..size], sock, now);
    }

    /// Packet `i` of `source` into the open batch if it has room and the
    /// same target, or else into a new batch (the open one is submitted).
    /// False when every batch buffer is in flight.
    #[allow(clippy::too_many_arguments)]
    fn put<P: Protocol, S: Source>(
        &mut self,
        proto: &P,
        iface: &Interface,
        open: &mut Option<(Arc<TxBatch>, TxData<PeerState>)>,
        (peer, session, ep): (&Arc<PeerState>, &Arc<dyn Session>, Endpoint),
        source: &S,
        i: usize,
        shape: Shape,
        now: Time,
    ) -> bool {
        let size = source.len(i);
        let padded = session.padded_len(size, shape.mtu);
        let wire = session.wire_len(padded);
        let fits = open.as_ref().is_some_and(|(_, d)| {
            d.target.as_ref().is_some_and(|(p, s, e)| Arc::ptr_eq(p, peer) && Arc::ptr_eq(s, session) && *e == ep)
                && d.packets.len() < shape.per_batch
                && d.len + wire <= GSO_MAX_BYTES
        });
        if !fits {
            if let Some((b, d)) = open.take() {
                self.submit(proto, iface, b, d, now);
            }
            let b = match iface.jobs.tx_pool.pop() {
                Some(b) => b,
                // Held packets are few and rare, and dropping them for a
                // moment's empty pool would cost a new tunnel its first
                // packets (SYNs, DNS): a batch of their own instead.
                None if self.inline => Arc::new(TxBatch::new(TxData { spilled: true, ..TxData::with_buffers() })),
                None => {
                    WorkerStats::add(&iface.worker_stats[self.worker].pool_stalls, 1);
                    return false;
                }
            };
            let mut d = std::mem::take(&mut *b.lock());
            d.target = Some((peer.clone(), session.clone(), ep));
            d.reader = self.worker;
            *open = Some((b, d));
        }
        let (_, d) = open.as_mut().expect("opened above");
        let at = d.len + session.header_len();
        source.write(i, &mut d.buf[at..at + size]);
        d.packets.push((size, padded));
        d.len += wire;
        true
    }

    /// Puts a filled batch in its peer's queue, with its counters reserved
    /// in queue order, and offers it to the workers; or, for held packets
    /// (`inline`), seals it here and drains the peer's queue.
    fn submit<P: Protocol>(
        &mut self,
        proto: &P,
        iface: &Interface,
        batch: Arc<TxBatch>,
        mut d: TxData<PeerState>,
        now: Time,
    ) {
        let (peer, session, _) = d.target.clone().expect("a filled batch has a target");
        let count = d.packets.len() as u64;
        let queued = peer.tx.push_with(batch.clone(), || {
            d.first_counter = session.reserve(count)?;
            Ok::<(), Drop>(())
        });
        match queued {
            Ok(()) if self.inline => {
                *batch.lock() = d;
                seal_batch(iface, &batch, self.worker);
                drop(batch);
                peer.tx.drain(&mut |b| self.transmit_batch(proto, iface, b, now));
            }
            Ok(()) => {
                // Nobody looks at the batch before the job below runs.
                *batch.lock() = d;
                iface.jobs.push(Job::Seal(batch));
            }
            Err(reason) => {
                iface.counters.count_many(reason, d.packets.len());
                d.reset();
                let spilled = d.spilled;
                *batch.lock() = d;
                give_back(iface, batch, spilled);
            }
        }
    }

    /// Sends a sealed batch (the drainer of its peer's queue calls this,
    /// in queue order) and returns its buffer to the pool.
    pub fn transmit_batch<P: Protocol>(&mut self, proto: &P, iface: &Interface, batch: Arc<TxBatch>, now: Time) {
        let mut d = batch.lock();
        if let Some((peer, session, ep)) = d.target.take() {
            // One socket per peer, whichever worker drains: the kernel then
            // hashes all of the peer's datagrams to one transmit queue.
            let set = iface.sockets_for(session.carrier());
            let Some(sock) = set.sockets.get(peer.order as usize % set.sockets.len().max(1)) else {
                // An ESP session before its sockets were bound: the
                // control plane binds them before it installs one.
                iface.counters.count_many(Drop::UdpSend, d.packets.len());
                d.reset();
                let spilled = d.spilled;
                drop(d);
                batch.recycle();
                give_back(iface, batch, spilled);
                return;
            };
            let sock = &**sock;
            let max_segments = sock.max_gso_segments();
            let mmsg = max_segments == 1;
            let limit = if mmsg { MMSG_BATCH } else { max_segments };
            let mut run: Option<Run> = None;
            let mut at = 0;
            for (i, &(_, padded)) in d.packets.iter().enumerate() {
                let wire = session.wire_len(padded);
                let joins =
                    d.sealed[i] && run.is_some_and(|r| r.count < limit && (mmsg || (!r.closed && wire <= r.segment)));
                if !joins {
                    if let Some(r) = run.take() {
                        self.send_run(proto, iface, sock, &peer, ep, &d.buf, r, mmsg, now);
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
                self.send_run(proto, iface, sock, &peer, ep, &d.buf, r, mmsg, now);
            }
        }
        d.reset();
        let spilled = d.spilled;
        drop(d);
        batch.recycle();
        give_back(iface, batch, spilled);
    }

    #[allow(clippy::too_many_arguments)]
    fn send_run<P: Protocol>(
        &mut self,
        proto: &P,
        iface: &Interface,
        sock: &dyn Socket,
        peer: &PeerState,
        ep: Endpoint,
        buf: &[u8],
        r: Run,
        mmsg: bool,
        now: Time,
    ) {
        let stats = &iface.worker_stats[self.worker];
        WorkerStats::add(&stats.udp_sends, 1);
        let contents = &buf[r.start..r.end];
        // What left, datagrams and bytes: a batched send can stop part
        // way, and what did leave still counts as sent.
        let (datagrams, bytes) = if mmsg && r.count > 1 {
            let left = transmit_many(iface, peer, ep, sock, contents, &self.lens);
            (left, self.lens[..left].iter().sum())
        } else if transmit(iface, peer, ep, sock, contents, (r.count > 1).then_some(r.segment)) {
            (r.count, contents.len())
        } else {
            (0, 0)
        };
        self.lens.clear();
        WorkerStats::add(&stats.udp_datagrams_sent, datagrams as u64);
        if datagrams > 0 {
            proto.on_sent(peer, now, bytes as u64, datagrams as u64);
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
