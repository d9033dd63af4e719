//! The receive path, in one place: datagrams from the UDP socket (GRO
//! batches split by stride) are sorted by type. Handshake messages are
//! answered at once. Data messages are copied into batches of one keypair
//! and source, queued on their peer's receive queue in arrival order and
//! opened by any worker; the drainer then runs the replay check, the
//! inner-packet check and the crypto source filter (the source must be in
//! the sending peer's allowed IPs) and writes to the TUN, coalesced by GRO.

use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use causeway_wireguard::messages::{self, Message};
use causeway_wireguard::{Keypair, Received, Time, DATA_HEADER_LEN};
use quinn_udp::RecvMeta;

use crate::counters::{Drop, WorkerStats};
use crate::interface::Interface;
use crate::jobs::Job;
use crate::ordered::{Batch, Sink};
use crate::peer::PeerState;
use crate::send::{flush_staged, send_initiation, transmit_to};
use crate::tun::{TunGone, TunQueue, WRITE_HEADROOM};
use crate::udp::UdpEndpoint;

/// Datagram buffers per receive call; with GRO each holds up to 64 KiB.
const RX_SLOTS: usize = 16;
/// Decrypted packets queued for one TUN write batch. tun-rs coalesces
/// any number of packets of one UDP flow into a single GSO_UDP_L4 write,
/// and the kernel refuses (EINVAL) such a write of more than
/// UDP_MAX_SEGMENTS = 128 segments, losing the whole batch; at most 128
/// packets per batch keeps every coalesced write within that limit.
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

/// Datagrams of one peer's keypair from one source, copied out of the
/// receive buffers; opened in place by any worker and delivered to the TUN
/// by the drainer of the peer's receive queue, in arrival order.
pub type RxBatch = Batch<RxData>;

/// Most datagrams in one receive batch.
const BATCH_DATAGRAMS: usize = 64;
/// Bytes of datagrams in one receive batch.
const BATCH_BYTES: usize = 65_536;

struct RxItem {
    at: usize,
    len: usize,
    /// After opening: the counter and the padded plaintext's length.
    opened: Result<(u64, usize), causeway_wireguard::Error>,
}

pub struct RxData {
    source: Option<(Arc<PeerState>, Arc<Keypair>)>,
    from: (SocketAddr, Option<IpAddr>),
    buf: Vec<u8>,
    len: usize,
    items: Vec<RxItem>,
    /// The worker that received the datagrams, to count help.
    reader: usize,
}

impl RxData {
    /// With its buffers allocated, for the pool.
    pub fn with_buffers() -> RxData {
        RxData { buf: vec![0u8; BATCH_BYTES], items: Vec::with_capacity(BATCH_DATAGRAMS), ..RxData::empty() }
    }

    /// A placeholder that allocates nothing, left in the mutex while the
    /// reader fills the batch outside it.
    fn empty() -> RxData {
        RxData {
            source: None,
            from: (SocketAddr::from(([0, 0, 0, 0], 0)), None),
            buf: Vec::new(),
            len: 0,
            items: Vec::new(),
            reader: 0,
        }
    }

    fn reset(&mut self) {
        self.source = None;
        self.len = 0;
        self.items.clear();
    }
}

/// Authenticates and decrypts a batch (on any worker) and marks it done;
/// returns its peer, whose receive queue the caller drains next. The replay
/// check waits for the drain, where the batches are back in order.
pub fn open_batch(iface: &Interface, batch: &RxBatch, worker: usize) -> Option<Arc<PeerState>> {
    let mut d = batch.lock();
    let RxData { source, buf, items, reader, .. } = &mut *d;
    let peer = source.clone().map(|(peer, kp)| {
        for item in items.iter_mut() {
            item.opened = kp.open(&mut buf[item.at..item.at + item.len]).map(|(counter, plain)| (counter, plain.len()));
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
    /// Decrypted packets, each after WRITE_HEADROOM bytes, for the TUN.
    tun_bufs: Vec<Vec<u8>>,
    tun_len: usize,
    /// Last peer seen, to skip the map lookup for runs from one peer.
    last_peer: Option<Arc<PeerState>>,
    /// Index of the worker this belongs to, for its statistics.
    worker: usize,
    /// (peer, source, local address) last reported to a peer by this drainer.
    observed: Option<(usize, SocketAddr, Option<IpAddr>)>,
}

impl Receiver {
    pub fn new(worker: usize) -> Receiver {
        Receiver {
            worker,
            observed: None,
            slots: (0..RX_SLOTS).map(|_| vec![0u8; 65_536]).collect(),
            meta: vec![RecvMeta::default(); RX_SLOTS],
            cursor: None,
            tun_bufs: (0..TUN_BATCH).map(|_| Vec::with_capacity(WRITE_HEADROOM + crate::tun::MAX_PACKET)).collect(),
            tun_len: 0,
            last_peer: None,
        }
    }
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

impl Receiver {
    fn peer_state(&mut self, iface: &Interface, crypto: &Arc<causeway_wireguard::Peer>) -> Option<Arc<PeerState>> {
        if let Some(p) = &self.last_peer {
            if Arc::ptr_eq(&p.crypto, crypto) {
                return Some(p.clone());
            }
        }
        let p = iface.peer_for_crypto(crypto)?;
        self.last_peer = Some(p.clone());
        Some(p)
    }

    /// Whether a receive is only partly handled.
    pub fn is_stalled(&self) -> bool {
        self.cursor.is_some()
    }

    /// Receives one batch from `sock` (or goes on with a stalled one):
    /// handshake messages are answered here, data is queued for opening.
    pub fn receive_batch(&mut self, iface: &Interface, sock: &UdpEndpoint, now: Time) -> RxStatus {
        let (n, first_slot, first_offset) = match self.cursor.take() {
            Some(c) => c,
            None => match self.recv(iface, sock) {
                Ok(n) => (n, 0, 0),
                Err(status) => return status,
            },
        };
        let mut open: Option<(Arc<RxBatch>, RxData)> = None;
        for i in first_slot..n {
            let meta = self.meta[i];
            let stride = meta.stride.max(1);
            let from = (meta.addr, meta.dst_ip);
            let mut slot = std::mem::take(&mut self.slots[i]);
            let mut offset = if i == first_slot { first_offset } else { 0 };
            while offset < meta.len {
                let end = (offset + stride).min(meta.len);
                let datagram = &mut slot[offset..end];
                if !self.take_datagram(iface, sock, from, datagram, &mut open, now) {
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
        RxStatus::More
    }

    fn recv(&mut self, iface: &Interface, sock: &UdpEndpoint) -> Result<usize, RxStatus> {
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

    /// Queues a data message into the open batch, or answers a handshake
    /// message at once. False when a batch was needed and none was free;
    /// the datagram is then left for the next call.
    fn take_datagram(
        &mut self,
        iface: &Interface,
        sock: &UdpEndpoint,
        from: (SocketAddr, Option<IpAddr>),
        datagram: &mut [u8],
        open: &mut Option<(Arc<RxBatch>, RxData)>,
        now: Time,
    ) -> bool {
        match messages::parse(datagram) {
            Ok(Message::Data(_)) => {}
            Ok(_) => {
                // Handshake messages change which keypairs exist; the data
                // queued so far was looked up before, and is sent on first.
                if let Some((b, d)) = open.take() {
                    submit(iface, b, d);
                }
                self.handle_handshake(iface, sock, from, datagram, now);
                return true;
            }
            Err(e) => {
                dropped(iface, from.0, e);
                return true;
            }
        }
        let (crypto, kp) = match iface.device.data_keypair(datagram, now) {
            Ok(found) => found,
            Err(e) => {
                dropped(iface, from.0, e);
                return true;
            }
        };
        let fits = open.as_ref().is_some_and(|(_, d)| {
            d.source.as_ref().is_some_and(|(_, k)| Arc::ptr_eq(k, &kp))
                && d.from == from
                && d.items.len() < BATCH_DATAGRAMS
                && d.len + datagram.len() <= BATCH_BYTES
        });
        if !fits {
            let Some(peer) = self.peer_state(iface, &crypto) else {
                return true;
            };
            if let Some((b, d)) = open.take() {
                submit(iface, b, d);
            }
            let Some(b) = iface.jobs.rx_pool.pop() else {
                return false;
            };
            let mut d = std::mem::replace(&mut *b.lock(), RxData::empty());
            d.source = Some((peer, kp));
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
        d.items.push(RxItem {
            at: d.len,
            len: datagram.len(),
            opened: Err(causeway_wireguard::Error::DecryptionFailed),
        });
        d.len += datagram.len();
        true
    }

    fn handle_handshake(
        &mut self,
        iface: &Interface,
        sock: &UdpEndpoint,
        (src, local): (SocketAddr, Option<IpAddr>),
        datagram: &mut [u8],
        now: Time,
    ) {
        let received = match iface.device.receive(src, datagram, now) {
            Ok(r) => r,
            Err(e) => {
                dropped(iface, src, e);
                return;
            }
        };
        match received {
            Received::HandshakeResponse { peer, response } => {
                let ps = self.peer_state(iface, &peer);
                if let Some(ps) = &ps {
                    ps.observe(src, local);
                }
                transmit_to(iface, ps.as_deref(), src, local, sock, &response, None);
            }
            Received::SessionEstablished { peer } => {
                if let Some(ps) = self.peer_state(iface, &peer) {
                    ps.observe(src, local);
                    tracing::debug!(peer = %ps.public_key(), "session established");
                    flush_staged(iface, &ps, sock, now, true);
                }
            }
            Received::CookieReply { reply } => {
                iface.counters.cookie_replies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                transmit_to(iface, None, src, local, sock, &reply, None);
            }
            Received::CookieStored { .. } => {}
            // Data messages never come this way: `take_datagram` batches them.
            Received::Data { .. } | Received::Keepalive { .. } => {}
        }
    }

    /// Roaming on the data path: tells the peer where its packet came from,
    /// skipping the peer's lock when this drain already said the same.
    fn observe(&mut self, ps: &Arc<PeerState>, src: SocketAddr, local: Option<IpAddr>) {
        let seen = (Arc::as_ptr(ps) as usize, src, local);
        if self.observed != Some(seen) {
            ps.observe(src, local);
            self.observed = Some(seen);
        }
    }

    /// Delivers an opened batch (the drainer of its peer's receive queue
    /// calls this, in arrival order): the replay check, timers, roaming,
    /// the inner-packet check and the source filter, then the TUN. Returns
    /// the buffer to the pool. Err when the TUN is gone.
    pub fn deliver_batch(
        &mut self,
        iface: &Interface,
        sock: &UdpEndpoint,
        tun: &mut TunQueue,
        batch: Arc<RxBatch>,
        now: Time,
    ) -> Result<(), TunGone> {
        let mut gone = false;
        let mut d = batch.lock();
        let RxData { source, from: (src, local), buf, items, .. } = &mut *d;
        if let Some((ps, kp)) = source.take() {
            let routes = iface.routes();
            let mss = iface.mss_limits();
            let mut staged_checked = false;
            for item in items.iter() {
                let (counter, plain_len) = match item.opened {
                    Ok(o) => o,
                    Err(e) => {
                        iface.counters.count(Drop::from_error(e));
                        continue;
                    }
                };
                let rekey = match iface.device.accept_data(&ps.crypto, &kp, counter, item.len, plain_len > 0, now) {
                    Ok(r) => r,
                    Err(e) => {
                        iface.counters.count(Drop::from_error(e));
                        continue;
                    }
                };
                self.observe(&ps, *src, *local);
                if rekey {
                    send_initiation(iface, &ps, sock, now);
                }
                if !staged_checked && ps.has_staged() {
                    flush_staged(iface, &ps, sock, now, false);
                }
                staged_checked = true;
                if plain_len == 0 {
                    continue;
                }
                let plaintext = &mut buf[item.at + DATA_HEADER_LEN..item.at + DATA_HEADER_LEN + plain_len];
                let Some((len, inner_source)) = inner_packet(plaintext) else {
                    iface.counters.count(Drop::InvalidInnerPacket);
                    continue;
                };
                if let Some(limits) = mss {
                    crate::mss::clamp(&mut plaintext[..len], limits);
                }
                let allowed = routes.lookup(inner_source).is_some_and(|owner| Arc::ptr_eq(owner, &ps));
                if !allowed {
                    iface.counters.count(Drop::SourceNotAllowed);
                    continue;
                }
                let out = &mut self.tun_bufs[self.tun_len];
                out.clear();
                out.resize(WRITE_HEADROOM, 0);
                out.extend_from_slice(&plaintext[..len]);
                self.tun_len += 1;
                if self.tun_len == TUN_BATCH && self.write_tun(iface, tun).is_err() {
                    gone = true;
                }
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
    pub fn write_tun(&mut self, iface: &Interface, tun: &mut TunQueue) -> Result<(), TunGone> {
        self.observed = None;
        if self.tun_len == 0 {
            return Ok(());
        }
        let result = tun.write_batch(&mut self.tun_bufs[..self.tun_len]);
        let stats = &iface.worker_stats[self.worker];
        WorkerStats::add(&stats.tun_writes, 1);
        WorkerStats::add(&stats.tun_packets_written, self.tun_len as u64);
        self.tun_len = 0;
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBADFD) || e.raw_os_error() == Some(libc::EIO) => Err(TunGone),
            Err(e) => {
                tracing::debug!(error = %e, "TUN write failed");
                iface.counters.count(Drop::TunWrite);
                Ok(())
            }
        }
    }
}

/// A drain of a peer's receive queue into this worker's TUN queue.
pub struct ToTun<'a> {
    pub receiver: &'a mut Receiver,
    pub tun: &'a mut TunQueue,
    pub iface: &'a Interface,
    pub sock: &'a UdpEndpoint,
    pub now: Time,
    /// Set when the TUN is gone.
    pub gone: bool,
}

impl Sink<RxBatch> for ToTun<'_> {
    fn emit(&mut self, batch: Arc<RxBatch>) {
        self.gone |= self.receiver.deliver_batch(self.iface, self.sock, self.tun, batch, self.now).is_err();
    }

    /// Packets kept for one coalesced write leave before another worker
    /// may deliver this peer's later packets.
    fn flush(&mut self) {
        self.gone |= self.receiver.write_tun(self.iface, self.tun).is_err();
    }
}

/// A datagram refused before any batch: counted under its reason.
fn dropped(iface: &Interface, from: SocketAddr, e: causeway_wireguard::Error) {
    tracing::trace!(%from, error = %e, "dropped datagram");
    iface.counters.count(Drop::from_error(e));
}

/// Puts a filled batch in its peer's receive queue and offers it to the workers.
fn submit(iface: &Interface, batch: Arc<RxBatch>, d: RxData) {
    let (peer, _) = d.source.clone().expect("a filled batch has a source");
    *batch.lock() = d;
    let _ = peer.rx.push_with(batch.clone(), || Ok::<(), ()>(()));
    iface.jobs.push(Job::Open(batch));
}

#[cfg(test)]
mod tests {
    use super::*;

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
