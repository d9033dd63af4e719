//! The send path, in one place: packets from the TUN are routed to a peer
//! by destination (cryptokey routing), sealed with the peer's current
//! keypair, and sent as runs of equal-size datagrams in one GSO syscall
//! (or, where GSO is missing, runs of any sizes in one sendmmsg).
//! Packets for a peer without a session are staged and a handshake started.
//! Handshake messages and keepalives leave through here too.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use causeway_crypto::{padded_len, Error, Keypair, Time, DATA_HEADER_LEN, DATA_OVERHEAD};

use crate::counters::{Drop, WorkerStats};
use crate::interface::Interface;
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

/// A run of sealed datagrams for one peer, one endpoint and one size,
/// waiting in the GSO buffer.
struct Run {
    peer: Arc<PeerState>,
    ep: Endpoint,
    segment: usize,
    count: usize,
    /// Set once a datagram shorter than `segment` ends the run (GSO allows
    /// only the last to be short).
    closed: bool,
}

/// Per-worker state of the send path; buffers are reused across batches.
pub struct Sender {
    gso: Vec<u8>,
    len: usize,
    run: Option<Run>,
    /// Without GSO: the length of each datagram of the run in `gso`, for
    /// one sendmmsg.
    lens: Vec<usize>,
    /// Index of the worker this belongs to, for its statistics.
    worker: usize,
}

impl Sender {
    pub fn new(worker: usize) -> Sender {
        Sender {
            gso: vec![0u8; GSO_MAX_BYTES + crate::tun::MAX_PACKET + 64],
            len: 0,
            run: None,
            lens: Vec::with_capacity(MMSG_BATCH),
            worker,
        }
    }
}

impl Sender {
    fn flush(&mut self, iface: &Interface, sock: &UdpEndpoint, now: Time) {
        if let Some(run) = self.run.take() {
            let segment = (run.count > 1).then_some(run.segment);
            let stats = &iface.worker_stats[self.worker];
            WorkerStats::add(&stats.udp_sends, 1);
            WorkerStats::add(&stats.udp_datagrams_sent, run.count as u64);
            let contents = &self.gso[..self.len];
            let sent = if self.lens.len() > 1 {
                transmit_many(iface, &run.peer, run.ep, sock, contents, &self.lens)
            } else {
                transmit(iface, &run.peer, run.ep, sock, contents, segment)
            };
            if sent {
                run.peer.crypto.on_sent(now, self.len as u64, run.count as u64, true);
            }
        }
        self.len = 0;
        self.lens.clear();
    }

    /// Routes, seals and sends a batch of packets read from the TUN.
    pub fn send_batch(
        &mut self,
        iface: &Interface,
        sock: &UdpEndpoint,
        bufs: &mut [Vec<u8>],
        sizes: &[usize],
        now: Time,
    ) {
        let routes = iface.routes();
        let mss = iface.mss_limits();
        let mtu = iface.mtu() as usize;
        let max_segments = sock.max_gso_segments();
        // No GSO: runs of any sizes, sent with one sendmmsg.
        let mmsg = max_segments == 1;
        // Per batch, not per packet: the keypair of the peer last seen.
        let mut cached: Option<(Arc<PeerState>, Arc<Keypair>)> = None;
        let mut rekey: Vec<Arc<PeerState>> = Vec::new();
        for (buf, &size) in bufs.iter_mut().zip(sizes) {
            if let Some(limits) = mss {
                crate::mss::clamp(&mut buf[..size], limits);
            }
            let packet = &buf[..size];
            let Some(peer) = destination(packet).and_then(|d| routes.lookup(d)) else {
                iface.counters.count(Drop::NoRoute);
                continue;
            };
            let kp = match &cached {
                Some((p, kp)) if Arc::ptr_eq(p, peer) => kp.clone(),
                _ => match peer.crypto.keypair_for_sending(now) {
                    Ok(kp) => {
                        if peer.crypto.needs_rekey_on_send(&kp, now) && !rekey.iter().any(|p| Arc::ptr_eq(p, peer)) {
                            rekey.push(peer.clone());
                        }
                        cached = Some((peer.clone(), kp.clone()));
                        kp
                    }
                    Err(_) => {
                        if !peer.stage(packet) {
                            iface.counters.count(Drop::StagedQueueFull);
                        }
                        send_initiation(iface, peer, sock, now);
                        continue;
                    }
                },
            };
            let Some(ep) = peer.endpoint() else {
                iface.counters.count(Drop::NoEndpoint);
                continue;
            };
            let padded = padded_len(size, mtu);
            let wire = DATA_OVERHEAD + padded;
            let fits = self.run.as_ref().is_some_and(|r| {
                let shape =
                    if mmsg { r.count < MMSG_BATCH } else { !r.closed && wire <= r.segment && r.count < max_segments };
                Arc::ptr_eq(&r.peer, peer) && r.ep == ep && shape && self.len + wire <= GSO_MAX_BYTES
            });
            if !fits {
                self.flush(iface, sock, now);
                self.run = Some(Run { peer: peer.clone(), ep, segment: wire, count: 0, closed: false });
            }
            let at = self.len;
            let out = &mut self.gso[at..at + wire];
            out[DATA_HEADER_LEN..DATA_HEADER_LEN + size].copy_from_slice(packet);
            match kp.reserve(1).and_then(|c| kp.seal(c, out, size, padded)) {
                Ok(_) => {
                    self.len += wire;
                    if mmsg {
                        self.lens.push(wire);
                    }
                    let run = self.run.as_mut().expect("run started above");
                    run.count += 1;
                    run.closed = wire < run.segment;
                }
                Err(e) => iface.counters.count(Drop::from_error(e)),
            }
        }
        self.flush(iface, sock, now);
        for peer in rekey {
            send_initiation(iface, &peer, sock, now);
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
