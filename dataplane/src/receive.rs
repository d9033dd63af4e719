//! The receive path, in one place. One datagram from the wire to the TUN:
//!
//! 1. `worker.rs` `Worker::read_udp`: a socket read (GRO batches of one
//!    source, split here by stride).
//! 2. `Receiver::receive_batch` / `take_datagram` (here): the protocol
//!    sorts the datagram (`Protocol::classify`): its own messages are
//!    handled at once (`Protocol::handle_control`, after the data read
//!    before them is queued); one it refuses may be kept to be read again
//!    later (`Protocol::keep_refused`: ESP before its SA, `early_esp.rs`,
//!    read again by `Receiver::read_again`); data is copied into a batch
//!    of one session and source (`batch.rs`), which joins the peer's
//!    receive queue in arrival order (`submit`, `ordered.rs`) and becomes
//!    a job (`jobs.rs`).
//! 3. `open_batch`: any worker opens the batch in place (`Session::open`)
//!    and marks it done.
//! 4. `Receiver::deliver_batch`: the drainer of the peer's queue, in
//!    arrival order, runs the replay check and timers
//!    (`Protocol::accept`), roaming (where the session roams, to the
//!    source of a datagram the protocol calls current: for ESP not one
//!    overtaken by a later one), the inner-packet check, the crypto
//!    source filter (the source must be in the sending peer's allowed
//!    IPs, or in a site's prefixes when the peer is one of the site's
//!    gateways), the session's traffic selectors (`selectors.rs`) and the
//!    MSS clamp, and queues the packet for the TUN.
//!    Each packet is copied into a TUN write buffer, joining its flow's
//!    run where it continues one (GRO, `gro.rs`).
//! 5. `Receiver::write_tun`: the TUN writes, one per buffer, before
//!    another worker may drain this peer (`Sink::flush`).
//!
//! Nothing here knows the protocol: it calls `Protocol` and `Session`.

use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use causeway_wireguard::Time;

use crate::batch::{RxData, RxItem, RX_BATCH_BYTES, RX_BATCH_DATAGRAMS};
use crate::counters::{Drop, WorkerStats};
use crate::gro::TunWrites;
use crate::interface::Interface;
use crate::io::{Offload, RecvMeta, Socket, Tun, TunGone};
use crate::jobs::Job;
use crate::last_lookup::LastLookup;
use crate::ordered::Sink;
use crate::peer::{PeerState, RxBatch};
use crate::protocol::{Accepted, Inbound, Protocol};
use crate::route::Route;
use crate::session::Carrier;

/// Datagram buffers per receive call; with GRO each holds up to 64 KiB.
const RX_SLOTS: usize = 16;
/// TUN write buffers per batch of writes (each a packet or a coalesced
/// run of up to 64 KiB).
const TUN_BATCH: usize = 128;

/// Length and source of a well-formed inner IP packet inside the padded plaintext.
pub fn inner_packet(plain: &[u8]) -> Option<(usize, IpAddr)> {
    match plain.first()? >> 4 {
        4 if plain.len() >= 20 => {
            let len = u16::from_be_bytes([plain[2], plain[3]]) as usize;
            let ihl = (plain[0] & 0x0f) as usize * 4;
            (len >= ihl && ihl >= 20 && len <= plain.len())
                .then(|| (len, IpAddr::from(<[u8; 4]>::try_from(&plain[12..16]).expect("4 bytes"))))
        }
        6 if plain.len() >= 40 => {
            let len = 40 + u16::from_be_bytes([plain[4], plain[5]]) as usize;
            (len <= plain.len()).then(|| (len, IpAddr::from(<[u8; 16]>::try_from(&plain[8..24]).expect("16 bytes"))))
        }
        _ => None,
    }
}

/// Authenticates and decrypts a batch (on any worker) and marks it done;
/// returns its peer, whose receive queue the caller drains next. The replay
/// check waits for the drain, where the batches are back in order.
pub fn open_batch(iface: &Interface, batch: &RxBatch, worker: usize) -> Option<Arc<PeerState>> {
    let mut d = batch.lock();
    let RxData { source, buf, items, reader, .. } = &mut *d;
    let peer = source.clone().map(|(peer, session)| {
        for item in items.iter_mut() {
            item.opened = session.open(&mut buf[item.at..item.at + item.len]);
        }
        peer
    });
    iface.worker_stats[worker].count_batch(*reader != worker);
    drop(d);
    // Done even without a source, so a queue can never stall behind it.
    batch.finish();
    peer
}

/// Per-worker state of the receive path; buffers are reused across batches.
pub struct Receiver {
    slots: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    /// Where handling of the last receive stopped when every batch buffer
    /// was in flight: (slots filled, slot, offset in it).
    cursor: Option<(usize, usize, usize)>,
    /// Decrypted packets waiting for the TUN.
    to_tun: TunWrites,
    /// Last peer seen, to skip the map lookup for runs from one peer.
    last_peer: Option<Arc<PeerState>>,
    /// Index of the worker this belongs to, for its statistics.
    worker: usize,
    /// (peer, source, local address) last reported to a peer by this drainer.
    observed: Option<(usize, SocketAddr, Option<IpAddr>)>,
    /// Reading kept datagrams again (`read_again`): one refused again is
    /// dropped, never kept a second time.
    reading_again: bool,
}

/// Outcome of a receive call.
pub enum RxStatus {
    /// Datagrams were processed; call again.
    More,
    /// The socket is drained.
    Empty,
    /// Every batch buffer is in flight: help with the crypto, then call
    /// again to go on where this stopped.
    Stalled,
}

/// A batch being filled, and the buffer it came from in the pool.
type Open = Option<(Arc<RxBatch>, RxData<PeerState>)>;

impl Receiver {
    /// For worker `worker`, whose TUN queue takes `offload`.
    pub fn new(worker: usize, offload: Offload) -> Receiver {
        Receiver {
            worker,
            observed: None,
            slots: (0..RX_SLOTS).map(|_| vec![0u8; 65_536]).collect(),
            meta: vec![RecvMeta::default(); RX_SLOTS],
            cursor: None,
            to_tun: TunWrites::new(TUN_BATCH, offload),
            last_peer: None,
            reading_again: false,
        }
    }

    /// Reads again datagrams a protocol kept (`Protocol::keep_refused`),
    /// now that their session may exist, as `receive_batch` reads a
    /// socket's; `sock` answers any protocol message among them. Returns
    /// those it could not take yet, every batch buffer being in flight.
    pub fn read_again<P: Protocol>(
        &mut self,
        proto: &P,
        iface: &Interface,
        sock: &dyn Socket,
        kept: Vec<crate::early_esp::Kept>,
        now: Time,
    ) -> Vec<crate::early_esp::Kept> {
        self.reading_again = true;
        let mut open: Open = None;
        let mut kept = kept.into_iter();
        let mut left = Vec::new();
        for mut k in kept.by_ref() {
            if !self.take_datagram(proto, iface, (sock, k.carrier), k.from, &mut k.bytes, &mut open, now) {
                left.push(k);
                break;
            }
        }
        left.extend(kept);
        if let Some((b, d)) = open.take() {
            submit(iface, b, d);
        }
        self.reading_again = false;
        left
    }

    fn peer_state<P: Protocol>(&mut self, proto: &P, iface: &Interface, owner: &P::Owner) -> Option<Arc<PeerState>> {
        if let Some(p) = &self.last_peer {
            if proto.owns(p, owner) {
                return Some(p.clone());
            }
        }
        let p = proto.peer_of(iface, owner)?;
        self.last_peer = Some(p.clone());
        Some(p)
    }

    /// Whether a receive is only partly handled.
    pub fn is_stalled(&self) -> bool {
        self.cursor.is_some()
    }

    /// Receives one batch from `sock` (or goes on with a stalled one):
    /// the protocol's own messages are handled here, data is queued for
    /// opening.
    pub fn receive_batch<P: Protocol>(
        &mut self,
        proto: &P,
        iface: &Interface,
        sock: &dyn Socket,
        carrier: Carrier,
        now: Time,
    ) -> RxStatus {
        let (n, first_slot, first_offset) = match self.cursor.take() {
            Some(c) => c,
            None => match self.recv(iface, sock) {
                Ok(n) => (n, 0, 0),
                Err(status) => return status,
            },
        };
        let mut open: Open = None;
        for i in first_slot..n {
            let meta = self.meta[i];
            let stride = meta.stride.max(1);
            let from = (meta.addr, meta.dst_ip);
            let mut slot = std::mem::take(&mut self.slots[i]);
            let mut offset = if i == first_slot { first_offset } else { 0 };
            while offset < meta.len {
                let end = (offset + stride).min(meta.len);
                let datagram = &mut slot[offset..end];
                if !self.take_datagram(proto, iface, (sock, carrier), from, datagram, &mut open, now) {
                    self.slots[i] = slot;
                    self.cursor = Some((n, i, offset));
                    if let Some((b, d)) = open.take() {
                        submit(iface, b, d);
                    }
                    WorkerStats::add(&iface.worker_stats[self.worker].pool_stalls, 1);
                    return RxStatus::Stalled;
                }
                offset = end;
            }
            self.slots[i] = slot;
        }
        if let Some((b, d)) = open.take() {
            submit(iface, b, d);
        }
        // A receive that filled fewer slots than it had found the socket
        // empty (recvmmsg returns early only at EAGAIN): asking again would
        // cost a syscall that only says so, on a lone packet's path. Poll
        // is level-triggered, so anything that arrived since is not missed.
        if n < self.slots.len() {
            RxStatus::Empty
        } else {
            RxStatus::More
        }
    }

    fn recv(&mut self, iface: &Interface, sock: &dyn Socket) -> Result<usize, RxStatus> {
        let mut slots = self.slots.iter_mut();
        let mut slices: [IoSliceMut<'_>; RX_SLOTS] =
            std::array::from_fn(|_| IoSliceMut::new(slots.next().expect("RX_SLOTS buffers")));
        match sock.recv(&mut slices, &mut self.meta) {
            Ok(n) => {
                let stats = &iface.worker_stats[self.worker];
                WorkerStats::add(&stats.udp_receives, 1);
                let datagrams: usize = self.meta[..n].iter().map(|m| m.len.div_ceil(m.stride.max(1))).sum();
                WorkerStats::add(&stats.udp_datagrams_received, datagrams as u64);
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(RxStatus::Empty),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(RxStatus::More),
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive failed");
                Err(RxStatus::Empty)
            }
        }
    }

    /// Queues a data datagram into the open batch, or hands one of the
    /// protocol's own messages over at once. False when a batch was needed
    /// and none was free; the datagram is then left for the next call.
    #[allow(clippy::too_many_arguments)]
    fn take_datagram<P: Protocol>(
        &mut self,
        proto: &P,
        iface: &Interface,
        (sock, carrier): (&dyn Socket, Carrier),
        from: (SocketAddr, Option<IpAddr>),
        datagram: &mut [u8],
        open: &mut Open,
        now: Time,
    ) -> bool {
        let (owner, session) = match proto.classify(iface, carrier, datagram, now) {
            Inbound::Data { owner, session } => (owner, session),
            Inbound::Control => {
                // Control messages change which sessions exist; the data
                // queued so far was looked up before, and is sent on first.
                if let Some((b, d)) = open.take() {
                    submit(iface, b, d);
                }
                proto.handle_control(iface, sock, from, datagram, now);
                return true;
            }
            Inbound::Refused(reason) => {
                self.refused(proto, iface, carrier, from, datagram, reason, now);
                return true;
            }
        };
        let fits = open.as_ref().is_some_and(|(_, d)| {
            d.source.as_ref().is_some_and(|(_, s)| Arc::ptr_eq(s, &session))
                && d.from == from
                && d.items.len() < RX_BATCH_DATAGRAMS
                && d.len + datagram.len() <= RX_BATCH_BYTES
        });
        if !fits {
            let Some(peer) = self.peer_state(proto, iface, &owner) else {
                // A session whose peer was removed a moment ago.
                iface.refuse(from.0, Drop::UnknownPeer);
                return true;
            };
            if let Some((b, d)) = open.take() {
                submit(iface, b, d);
            }
            let Some(b) = iface.jobs.rx_pool.pop() else {
                return false;
            };
            let mut d = std::mem::take(&mut *b.lock());
            d.source = Some((peer, session));
            d.from = from;
            d.reader = self.worker;
            *open = Some((b, d));
        }
        let (_, d) = open.as_mut().expect("opened above");
        if datagram.len() > d.buf.len() {
            iface.counters.count(Drop::Malformed);
            return true;
        }
        d.buf[d.len..d.len + datagram.len()].copy_from_slice(datagram);
        d.items.push(RxItem { at: d.len, len: datagram.len(), opened: Err(Drop::Decryption) });
        d.len += datagram.len();
        true
    }

    /// A datagram refused before any batch: kept by the protocol to be read
    /// again, or dropped. Out of line and cold, so that the path of every
    /// datagram taken stays as small as before keeping existed.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn refused<P: Protocol>(
        &self,
        proto: &P,
        iface: &Interface,
        carrier: Carrier,
        from: (SocketAddr, Option<IpAddr>),
        datagram: &[u8],
        reason: Drop,
        now: Time,
    ) {
        if self.reading_again || !proto.keep_refused(iface, carrier, from, datagram, reason, self.worker, now) {
            iface.refuse(from.0, reason);
        }
    }

    /// Roaming on the data path: tells the peer where its packet came from,
    /// skipping the peer's lock when this drain already said the same.
    /// Returns whether the peer's address changed.
    fn observe(&mut self, ps: &Arc<PeerState>, src: SocketAddr, local: Option<IpAddr>) -> bool {
        let seen = (Arc::as_ptr(ps) as usize, src, local);
        if self.observed == Some(seen) {
            return false;
        }
        self.observed = Some(seen);
        ps.observe(src, local)
    }

    /// Delivers an opened batch (the drainer of its peer's receive queue
    /// calls this, in arrival order): the replay check, timers, roaming,
    /// the inner-packet check and the source filter, then the TUN. Returns
    /// the buffer to the pool. Err when the TUN is gone.
    #[allow(clippy::too_many_arguments)]
    pub fn deliver_batch<P: Protocol>(
        &mut self,
        proto: &P,
        iface: &Interface,
        sock: &dyn Socket,
        tun: &mut dyn Tun,
        batch: Arc<RxBatch>,
        now: Time,
    ) -> Result<(), TunGone> {
        let mut gone = false;
        let mut d = batch.lock();
        let RxData { source, from: (src, local), buf, items, .. } = &mut *d;
        if let Some((ps, session)) = source.take() {
            let routes = iface.routes();
            let mss = iface.mss_limits();
            let mut first = true;
            // The batch is one peer's: whether it serves the site last
            // looked up holds for the whole batch.
            let mut site_checked = LastLookup::new();
            // A batch is mostly one flow's packets: the verdict for the
            // source last looked up holds for the next with that source.
            let mut last_source = LastLookup::new();
            let selectors = session.selectors();
            let roams = session.roams();
            for item in items.iter() {
                let opened = match item.opened {
                    Ok(o) => o,
                    Err(reason) => {
                        iface.counters.count(reason);
                        continue;
                    }
                };
                let accepted = proto.accept(iface, &ps, &*session, opened.counter, item.len, opened.len > 0, sock, now);
                let current = match accepted {
                    Ok(a) => a == Accepted::Current,
                    Err(reason) => {
                        iface.counters.count(reason);
                        continue;
                    }
                };
                if roams && current && self.observe(&ps, *src, *local) {
                    proto.on_moved(iface, &ps, *src);
                }
                if first {
                    proto.on_authenticated(iface, &ps, sock, now);
                    first = false;
                }
                if opened.len == 0 {
                    continue;
                }
                let start = item.at + opened.at;
                let plaintext = &mut buf[start..start + opened.len];
                let Some((len, inner_source)) = inner_packet(plaintext) else {
                    iface.counters.count(Drop::InvalidInnerPacket);
                    continue;
                };
                let allowed = *last_source.get(inner_source, || match routes.lookup(inner_source) {
                    Some(Route::Peer(owner)) => Arc::ptr_eq(owner, &ps),
                    Some(Route::Site(site)) => *site_checked.get(Arc::as_ptr(site), || site.table().has_member(&ps)),
                    None => false,
                });
                if !allowed {
                    iface.counters.count(Drop::SourceNotAllowed);
                    continue;
                }
                if selectors.is_some_and(|s| !s.admits(&plaintext[..len])) {
                    iface.counters.count(Drop::OutsideSelectors);
                    continue;
                }
                if let Some(limits) = mss {
                    crate::mss::clamp(&mut plaintext[..len], limits);
                }
                if self.to_tun.is_full() && self.write_tun(iface, tun).is_err() {
                    gone = true;
                }
                self.to_tun.push(&plaintext[..len]);
            }
        }
        d.reset();
        drop(d);
        batch.recycle();
        let _ = iface.jobs.rx_pool.push(batch);
        if gone {
            Err(TunGone)
        } else {
            Ok(())
        }
    }

    /// Writes queued packets to the TUN; Err when the TUN is gone.
    pub fn write_tun(&mut self, iface: &Interface, tun: &mut dyn Tun) -> Result<(), TunGone> {
        self.observed = None;
        if self.to_tun.is_empty() {
            return Ok(());
        }
        let bufs = self.to_tun.finish();
        let writes = bufs.len();
        let result = tun.write_batch(bufs);
        let stats = &iface.worker_stats[self.worker];
        // One write syscall per buffer: packets per write is how well
        // the runs coalesced.
        WorkerStats::add(&stats.tun_writes, writes as u64);
        WorkerStats::add(&stats.tun_packets_written, self.to_tun.packets() as u64);
        self.to_tun.clear();
        match result {
            Ok(()) => Ok(()),
            // Gone is EBADFD only: EIO is the kernel refusing writes while
            // the link is down (`ip link set down`), which is no reason to
            // stop; those packets are dropped as any failed write.
            Err(e) if e.raw_os_error() == Some(libc::EBADFD) => Err(TunGone),
            Err(e) => {
                tracing::debug!(error = %e, "TUN write failed");
                iface.counters.count(Drop::TunWrite);
                Ok(())
            }
        }
    }
}

/// A drain of a peer's receive queue into this worker's TUN queue.
pub struct ToTun<'a, P> {
    pub proto: &'a P,
    pub receiver: &'a mut Receiver,
    pub tun: &'a mut dyn Tun,
    pub iface: &'a Interface,
    pub sock: &'a dyn Socket,
    pub now: Time,
    /// Set when the TUN is gone.
    pub gone: bool,
}

impl<P: Protocol> Sink<RxBatch> for ToTun<'_, P> {
    fn emit(&mut self, batch: Arc<RxBatch>) {
        self.gone |= self.receiver.deliver_batch(self.proto, self.iface, self.sock, self.tun, batch, self.now).is_err();
    }

    /// Packets kept for one coalesced write leave before another worker
    /// may deliver this peer's later packets.
    fn flush(&mut self) {
        self.gone |= self.receiver.write_tun(self.iface, self.tun).is_err();
    }
}

/// Puts a filled batch in its peer's receive queue and offers it to the workers.
fn submit(iface: &Interface, batch: Arc<RxBatch>, d: RxData<PeerState>) {
    let (peer, _) = d.source.clone().expect("a filled batch has a source");
    *batch.lock() = d;
    let _ = peer.rx.push_with(batch.clone(), || Ok::<(), ()>(()));
    iface.jobs.push(Job::Open(batch));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interface::Options;
    use crate::io::Bind;
    use crate::memory::MemNet;
    use crate::tunnels::Tunnels;

    // A receive that returns fewer datagrams than it had slots found the
    // socket empty; calling again would only cost a syscall that says so.
    #[test]
    fn a_receive_that_leaves_slots_free_reports_the_socket_drained() {
        let net = MemNet::new();
        let here = SocketAddr::new("198.18.0.1".parse().unwrap(), 51820);
        let options =
            Options { mtu: 1420, workers: 1, port: here.port(), binder: net.host(here.ip(), 1), batches_per_worker: 2 };
        let secret = causeway_wireguard::StaticSecret::random(&mut rand_core::OsRng);
        let iface = Interface::with_options("rx-test".into(), Some(secret), options).unwrap();
        let sock = iface.sockets().sockets[0].clone();
        let (far, _) = net.host("198.18.0.2".parse().unwrap(), 1).bind(1, 40000, 0).unwrap();
        // Not a WireGuard message: each is dropped where it is classified.
        let junk = [0xeeu8; 64];
        let send = |n: usize| {
            for _ in 0..n {
                far[0].send(here, None, &junk, None).unwrap();
            }
        };
        let mut rx = Receiver::new(0, Offload::default());
        let now = iface.clock.now();

        send(3);
        assert!(matches!(rx.receive_batch(&Tunnels, &iface, &*sock, Carrier::WireGuard, now), RxStatus::Empty));
        send(RX_SLOTS + 1);
        assert!(
            matches!(rx.receive_batch(&Tunnels, &iface, &*sock, Carrier::WireGuard, now), RxStatus::More),
            "every slot filled"
        );
        assert!(
            matches!(rx.receive_batch(&Tunnels, &iface, &*sock, Carrier::WireGuard, now), RxStatus::Empty),
            "one was left"
        );
        assert!(
            matches!(rx.receive_batch(&Tunnels, &iface, &*sock, Carrier::WireGuard, now), RxStatus::Empty),
            "none left"
        );
        let received = iface.worker_stats[0].udp_datagrams_received.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(received, 3 + RX_SLOTS as u64 + 1);
    }

    #[test]
    fn inner_packet_checks_lengths() {
        let mut p = vec![0u8; 48];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[12..16].copy_from_slice(&[10, 0, 0, 7]);
        assert_eq!(inner_packet(&p), Some((40, "10.0.0.7".parse().unwrap())), "padding is cut off");
        p[2..4].copy_from_slice(&49u16.to_be_bytes());
        assert_eq!(inner_packet(&p), None, "claims more than arrived");
        p[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(inner_packet(&p), None, "shorter than its header");
        let mut v6 = vec![0u8; 64];
        v6[0] = 0x60;
        v6[4..6].copy_from_slice(&8u16.to_be_bytes());
        v6[8] = 0xfd;
        assert_eq!(inner_packet(&v6).map(|(l, _)| l), Some(48));
        assert_eq!(inner_packet(&[0x70; 64]), None);
        assert_eq!(inner_packet(&[]), None);
    }
}
