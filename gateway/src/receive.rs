//! The receive path, in one place: datagrams from the UDP socket (GRO
//! batches split by stride) go through the protocol core; decrypted packets
//! pass the inner-packet check and the crypto source filter (the source
//! must be in the sending peer's allowed IPs) and are written to the TUN,
//! coalesced by GRO. Handshake replies go back the way they came.

use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use causeway_crypto::{Received, Time};
use quinn_udp::RecvMeta;

use crate::counters::{Drop, WorkerStats};
use crate::interface::{Interface, Routes};
use crate::peer::PeerState;
use crate::send::{flush_staged, send_initiation, transmit_to};
use crate::tun::{TunQueue, WRITE_HEADROOM};
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

/// Per-worker state of the receive path; buffers are reused across batches.
pub struct Receiver {
    slots: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    /// Decrypted packets, each after WRITE_HEADROOM bytes, for the TUN.
    tun_bufs: Vec<Vec<u8>>,
    tun_len: usize,
    /// Last peer seen, to skip the map lookup for runs from one peer.
    last_peer: Option<Arc<PeerState>>,
    /// Index of the worker this belongs to, for its statistics.
    worker: usize,
    /// (peer, source, local address) last reported to a peer in this batch.
    observed: Option<(usize, SocketAddr, Option<IpAddr>)>,
}

impl Receiver {
    pub fn new(worker: usize) -> Receiver {
        Receiver {
            worker,
            observed: None,
            slots: (0..RX_SLOTS).map(|_| vec![0u8; 65_536]).collect(),
            meta: vec![RecvMeta::default(); RX_SLOTS],
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
    /// The TUN is gone (interface deleted): stop.
    TunGone,
}

impl Receiver {
    fn peer_state(&mut self, iface: &Interface, crypto: &Arc<causeway_crypto::Peer>) -> Option<Arc<PeerState>> {
        if let Some(p) = &self.last_peer {
            if Arc::ptr_eq(&p.crypto, crypto) {
                return Some(p.clone());
            }
        }
        let p = iface.peer_for_crypto(crypto)?;
        self.last_peer = Some(p.clone());
        Some(p)
    }

    /// Receives and handles one batch from `sock`.
    pub fn receive_batch(&mut self, iface: &Interface, sock: &UdpEndpoint, tun: &mut TunQueue, now: Time) -> RxStatus {
        let n = {
            let mut slots = self.slots.iter_mut();
            let mut slices: [IoSliceMut<'_>; RX_SLOTS] =
                std::array::from_fn(|_| IoSliceMut::new(slots.next().expect("RX_SLOTS buffers")));
            match sock.recv(&mut slices, &mut self.meta) {
                Ok(n) => {
                    let stats = &iface.worker_stats[self.worker];
                    WorkerStats::add(&stats.udp_receives, 1);
                    let datagrams: usize = self.meta[..n].iter().map(|m| m.len.div_ceil(m.stride.max(1))).sum();
                    WorkerStats::add(&stats.udp_datagrams_received, datagrams as u64);
                    n
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return RxStatus::Empty,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return RxStatus::More,
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive failed");
                    return RxStatus::Empty;
                }
            }
        };
        // One routing snapshot and fresh endpoint observations per batch.
        let routes = iface.routes();
        self.observed = None;
        for i in 0..n {
            let meta = self.meta[i];
            let stride = meta.stride.max(1);
            let mut slot = std::mem::take(&mut self.slots[i]);
            for chunk in slot[..meta.len].chunks_mut(stride) {
                self.handle(iface, &routes, sock, (meta.addr, meta.dst_ip), chunk, now);
                if self.tun_len == TUN_BATCH && self.write_tun(iface, tun).is_err() {
                    self.slots[i] = slot;
                    return RxStatus::TunGone;
                }
            }
            self.slots[i] = slot;
        }
        match self.write_tun(iface, tun) {
            Ok(()) => RxStatus::More,
            Err(()) => RxStatus::TunGone,
        }
    }

    /// Roaming on the data path: tells the peer where its packet came from,
    /// skipping the peer's lock when this batch already said the same.
    fn observe(&mut self, ps: &Arc<PeerState>, src: SocketAddr, local: Option<IpAddr>) {
        let seen = (Arc::as_ptr(ps) as usize, src, local);
        if self.observed != Some(seen) {
            ps.observe(src, local);
            self.observed = Some(seen);
        }
    }

    fn handle(
        &mut self,
        iface: &Interface,
        routes: &Routes,
        sock: &UdpEndpoint,
        (src, local): (SocketAddr, Option<IpAddr>),
        datagram: &mut [u8],
        now: Time,
    ) {
        let received = match iface.device.receive(src, datagram, now) {
            Ok(r) => r,
            Err(e) => {
                tracing::trace!(from = %src, error = %e, "dropped datagram");
                iface.counters.count(Drop::from_error(e));
                return;
            }
        };
        match received {
            Received::Data { peer, plaintext, rekey } => {
                let Some(ps) = self.peer_state(iface, &peer) else {
                    return;
                };
                self.observe(&ps, src, local);
                let Some((len, source)) = inner_packet(plaintext) else {
                    iface.counters.count(Drop::InvalidInnerPacket);
                    return;
                };
                if let Some(limits) = iface.mss_limits() {
                    crate::mss::clamp(&mut plaintext[..len], limits);
                }
                let allowed = routes.lookup(source).is_some_and(|owner| Arc::ptr_eq(owner, &ps));
                if !allowed {
                    iface.counters.count(Drop::SourceNotAllowed);
                    return;
                }
                let buf = &mut self.tun_bufs[self.tun_len];
                buf.clear();
                buf.resize(WRITE_HEADROOM, 0);
                buf.extend_from_slice(&plaintext[..len]);
                self.tun_len += 1;
                if rekey {
                    send_initiation(iface, &ps, sock, now);
                }
                if ps.has_staged() {
                    flush_staged(iface, &ps, sock, now, false);
                }
            }
            Received::Keepalive { peer } => {
                if let Some(ps) = self.peer_state(iface, &peer) {
                    ps.observe(src, local);
                    if ps.has_staged() {
                        flush_staged(iface, &ps, sock, now, false);
                    }
                }
            }
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
        }
    }

    /// Writes queued packets to the TUN; Err when the TUN is gone.
    fn write_tun(&mut self, iface: &Interface, tun: &mut TunQueue) -> Result<(), ()> {
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
            Err(e) if e.raw_os_error() == Some(libc::EBADFD) || e.raw_os_error() == Some(libc::EIO) => Err(()),
            Err(e) => {
                tracing::debug!(error = %e, "TUN write failed");
                iface.counters.count(Drop::TunWrite);
                Ok(())
            }
        }
    }
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
