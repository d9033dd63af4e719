//! Coalescing for TUN writes (GRO, as a NIC's receive offload does it):
//! decrypted packets are copied into TUN write buffers, and a segment that
//! continues a TCP connection or a UDP flow is appended to the buffer of
//! that flow's newest packet instead of taking a buffer of its own. The
//! kernel then takes the run as one super-packet in one write (a virtio
//! header describes how to cut it) and runs its stack once for it.
//!
//! Written here rather than taken from tun-rs, whose `GROTable` does the
//! same after the packets are copied: tun-rs 2.8 copies every packet it
//! examines into a fresh heap allocation (`tcp_gro`, `udp_gro`) and then
//! copies each coalesced payload again, which puts a malloc and a free on
//! every received packet (about 1.3% of the CPU of a single-stream run,
//! plus 0.9% for the second copy). Coalescing while copying in costs one
//! copy and no allocation.
//!
//! The rules are the kernel's GRO rules, as wireguard-go applies them to
//! its TUN writes:
//! - IPv4 without options or fragments, or IPv6 without extension headers;
//!   TCP with only ACK (or ACK and PSH) set, or UDP (only where the TUN
//!   takes UDP segmentation offload).
//! - A segment joins only the newest buffer of its flow (so a flow's
//!   packets keep their order), with equal IP header fields (TOS/traffic
//!   class, DF, TTL/hop limit), for IPv4 without DF the next ID (the
//!   kernel's `inet_gro_flush`), for TCP equal options and acknowledgment
//!   and the next sequence number, and no more payload than the first
//!   segment's. A shorter segment, or one with PSH, ends the run.
//! - A packet of the flow that may not join (a pure ACK, a SYN, options,
//!   IPv6 extension headers, a first fragment) ends the flow's run.
//! - Every segment's checksum is verified before it joins: the kernel
//!   recomputes the checksum of a coalesced packet, and a bad one must not
//!   come out good.

use tun_rs::{checksum, VirtioNetHdr, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4};

use crate::io::Offload;
use crate::ipv6;
use crate::super_packet::{self, NEEDS_CSUM};
use crate::tun::{MAX_PACKET, WRITE_HEADROOM};

const TCP: u8 = 6;
const UDP: u8 = 17;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// Segments in one coalesced UDP packet; the kernel refuses (EINVAL) more
/// than UDP_MAX_SEGMENTS = 128.
const UDP_SEGMENTS: u16 = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    proto: u8,
    v6: bool,
    /// Source then destination address (8 or 32 bytes used).
    addrs: [u8; 32],
    ports: [u8; 4],
}

/// One packet parsed as a candidate for coalescing.
struct Segment {
    key: FlowKey,
    iph_len: usize,
    l4h_len: usize,
    payload: usize,
    seq: u32,
    ack: u32,
    psh: bool,
    /// Whether it may join a run (else it only ends its flow's run).
    joinable: bool,
}

/// A buffer's state: the flow it holds and whether it may grow.
#[derive(Clone, Copy)]
struct Item {
    /// None for a packet that never coalesces.
    key: Option<FlowKey>,
    iph_len: usize,
    l4h_len: usize,
    gso_size: usize,
    segments: u16,
    next_seq: u32,
    ack: u32,
    /// Whether another segment may be appended.
    open: bool,
    /// Whether the first segment's checksum was verified (done once a
    /// second segment is about to join).
    head_verified: bool,
}

const EMPTY: Item = Item {
    key: None,
    iph_len: 0,
    l4h_len: 0,
    gso_size: 0,
    segments: 1,
    next_seq: 0,
    ack: 0,
    open: false,
    head_verified: false,
};

/// Packets waiting for one batch of TUN writes: each buffer is a virtio
/// header (`WRITE_HEADROOM` bytes) and one packet, or a super-packet
/// of coalesced segments. Buffers are allocated once, at their largest.
pub struct TunWrites {
    bufs: Vec<Vec<u8>>,
    items: Vec<Item>,
    used: usize,
    packets: usize,
    offload: Offload,
}

impl TunWrites {
    /// Room for `capacity` buffers; coalesces what `offload` allows.
    pub fn new(capacity: usize, offload: Offload) -> TunWrites {
        TunWrites {
            bufs: (0..capacity).map(|_| Vec::with_capacity(WRITE_HEADROOM + MAX_PACKET)).collect(),
            items: vec![EMPTY; capacity],
            used: 0,
            packets: 0,
            offload,
        }
    }

    /// Packets taken since the last `clear`.
    pub fn packets(&self) -> usize {
        self.packets
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Whether every buffer is taken: write before pushing again.
    pub fn is_full(&self) -> bool {
        self.used == self.bufs.len()
    }

    /// Copies `packet` (a whole IP packet) in, appending it to its flow's
    /// newest buffer where the rules allow. The caller writes first when
    /// `is_full`.
    pub fn push(&mut self, packet: &[u8]) {
        assert!(!self.is_full(), "TunWrites::push on a full batch");
        // A datagram's plaintext is shorter than 64 KiB, so this holds;
        // were it not to, the copy below would grow the buffer, not fail.
        debug_assert!(packet.len() <= MAX_PACKET, "an IP packet is at most 64 KiB");
        self.packets += 1;
        let segment = parse(packet, self.offload);
        if let Some(s) = segment.as_ref().filter(|s| s.joinable) {
            if let Some(i) = self.items[..self.used].iter().rposition(|it| it.key == Some(s.key)) {
                if self.joins(i, s, packet) {
                    self.append(i, s, packet);
                    return;
                }
            }
        }
        let buf = &mut self.bufs[self.used];
        buf.clear();
        buf.resize(WRITE_HEADROOM, 0);
        buf.extend_from_slice(packet);
        self.items[self.used] = match segment {
            Some(s) if s.joinable => Item {
                key: Some(s.key),
                iph_len: s.iph_len,
                l4h_len: s.l4h_len,
                gso_size: s.payload,
                segments: 1,
                next_seq: s.seq.wrapping_add(s.payload as u32),
                ack: s.ack,
                open: !s.psh,
                head_verified: false,
            },
            // The flow's newest buffer now, and closed: nothing after it
            // may join a run before it.
            Some(s) => Item { key: Some(s.key), ..EMPTY },
            None => EMPTY,
        };
        self.used += 1;
    }

    /// Whether segment `s` may be appended to buffer `i`, its flow's newest.
    fn joins(&mut self, i: usize, s: &Segment, packet: &[u8]) -> bool {
        let item = self.items[i];
        let head = &self.bufs[i][WRITE_HEADROOM..];
        let fits = item.open
            && item.iph_len == s.iph_len
            && item.l4h_len == s.l4h_len
            && s.payload <= item.gso_size
            && head.len() + s.payload <= MAX_PACKET
            && ip_fields_equal(head, packet)
            && ipv4_id_follows(head, packet, item.segments);
        if !fits {
            return false;
        }
        let t = s.iph_len;
        let continues = match s.key.proto {
            // As the kernel's tcp_gro_receive: the same ACK, options,
            // data offset with the reserved and AE bits, and window; the
            // flags are ACK or ACK|PSH (`parse`).
            TCP => {
                s.seq == item.next_seq
                    && s.ack == item.ack
                    && head[t + 12] == packet[t + 12]
                    && head[t + 14..t + 16] == packet[t + 14..t + 16]
                    && head[t + 20..t + s.l4h_len] == packet[t + 20..t + s.l4h_len]
            }
            _ => item.segments < UDP_SEGMENTS,
        };
        // The IPv4 header checksum too: the run's is written anew, which
        // would make a corrupt header look sound.
        if !(continues && ipv4_header_valid(packet) && checksum_valid(packet, s.iph_len, &s.key)) {
            return false;
        }
        if !item.head_verified {
            if !(ipv4_header_valid(head) && checksum_valid(head, item.iph_len, &s.key)) {
                self.items[i].open = false;
                return false;
            }
            self.items[i].head_verified = true;
        }
        true
    }

    fn append(&mut self, i: usize, s: &Segment, packet: &[u8]) {
        let item = &mut self.items[i];
        let buf = &mut self.bufs[i];
        buf.extend_from_slice(&packet[s.iph_len + s.l4h_len..]);
        item.segments += 1;
        item.next_seq = item.next_seq.wrapping_add(s.payload as u32);
        if s.psh {
            // PSH belongs on the last segment the run will be cut into.
            buf[WRITE_HEADROOM + s.iph_len + 13] |= TCP_PSH;
            item.open = false;
        }
        if s.payload < item.gso_size {
            item.open = false;
        }
    }

    /// Completes the headers of coalesced buffers (lengths, checksums and
    /// the virtio header) and returns the buffers to write, in order.
    pub fn finish(&mut self) -> &mut [Vec<u8>] {
        for (item, buf) in self.items[..self.used].iter().zip(&mut self.bufs) {
            if item.segments > 1 {
                if let Some(key) = item.key {
                    complete(buf, item, &key);
                }
            }
        }
        &mut self.bufs[..self.used]
    }

    /// Empties the batch (after a write).
    pub fn clear(&mut self) {
        self.used = 0;
        self.packets = 0;
    }
}

/// Writes the coalesced packet's lengths, IPv4 header checksum, the
/// pseudo-header sum the kernel completes, and the virtio header.
fn complete(buf: &mut [u8], item: &Item, key: &FlowKey) {
    let (hdr, pkt) = buf.split_at_mut(WRITE_HEADROOM);
    let total = pkt.len();
    let l4_len = total - item.iph_len;
    if key.v6 {
        pkt[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    } else {
        pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        pkt[10..12].fill(0);
        let sum = !checksum(&pkt[..item.iph_len], 0);
        pkt[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    let (gso_type, csum_offset) = match (key.proto, key.v6) {
        (TCP, false) => (VIRTIO_NET_HDR_GSO_TCPV4, 16),
        (TCP, true) => (VIRTIO_NET_HDR_GSO_TCPV6, 16),
        _ => {
            pkt[item.iph_len + 4..item.iph_len + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            (VIRTIO_NET_HDR_GSO_UDP_L4, 6)
        }
    };
    let at = item.iph_len + csum_offset;
    let partial = checksum(&[], pseudo_header(key, l4_len));
    pkt[at..at + 2].copy_from_slice(&partial.to_be_bytes());
    let header = VirtioNetHdr {
        flags: NEEDS_CSUM,
        gso_type,
        hdr_len: (item.iph_len + item.l4h_len) as u16,
        gso_size: item.gso_size as u16,
        csum_start: item.iph_len as u16,
        csum_offset: csum_offset as u16,
    };
    header.encode(hdr).expect("the headroom holds a virtio header");
}

/// The unfolded sum of the TCP/UDP pseudo-header.
fn pseudo_header(key: &FlowKey, l4_len: usize) -> u64 {
    let addrs = if key.v6 { &key.addrs[..32] } else { &key.addrs[..8] };
    super_packet::pseudo_header(key.proto, addrs, l4_len)
}

/// Whether the TCP or UDP checksum of `packet`, a packet of flow `key`, is right.
fn checksum_valid(packet: &[u8], iph_len: usize, key: &FlowKey) -> bool {
    checksum(&packet[iph_len..], pseudo_header(key, packet.len() - iph_len)) == 0xffff
}

/// Whether an IPv4 header's checksum is right (an IPv6 packet has none).
/// Coalesced packets have 20-byte headers (`parse`).
fn ipv4_header_valid(packet: &[u8]) -> bool {
    packet[0] >> 4 != 4 || checksum(&packet[..20], 0) == 0xffff
}

/// IP header fields that must match for two packets to be one run: TOS and
/// DF (IPv4), traffic class and flow label (IPv6: the kernel's GRO compares
/// the label too, and a sender changes it to move a flow to another path),
/// TTL or hop limit.
fn ip_fields_equal(a: &[u8], b: &[u8]) -> bool {
    if a[0] >> 4 == 6 {
        a[..4] == b[..4] && a[7] == b[7]
    } else {
        a[1] == b[1] && a[6] >> 5 == b[6] >> 5 && a[8] == b[8]
    }
}

/// For IPv4 without DF, a datagram routers may still fragment, the ID must
/// be the run's first plus the segments before it, as the kernel's GRO
/// requires (`inet_gro_flush`): the kernel cuts a run into segments whose
/// IDs count up from the first, so another ID would be rewritten, and
/// fragments of two datagrams could then meet at reassembly. With DF the
/// ID identifies nothing (RFC 6864) and is not checked, as in
/// wireguard-go.
fn ipv4_id_follows(head: &[u8], packet: &[u8], segments: u16) -> bool {
    let id = |p: &[u8]| u16::from_be_bytes([p[4], p[5]]);
    head[0] >> 4 != 4 || packet[6] & 0x40 != 0 || id(packet) == id(head).wrapping_add(segments)
}

/// The packet's flow, for a TCP or UDP packet of a protocol the TUN
/// coalesces, and whether it may join a run. A packet of the flow that
/// may not (a pure ACK, a SYN, a datagram without a checksum) still ends
/// the flow's run, or a later segment would be written before it.
fn parse(p: &[u8], offload: Offload) -> Option<Segment> {
    let (v6, iph_len, proto, plain) = match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let ihl = (p[0] & 0x0f) as usize * 4;
            let offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
            let more_fragments = p[6] & 0x20 != 0;
            // A later fragment has no ports: it is no flow's.
            if ihl < 20 || offset != 0 {
                return None;
            }
            let whole = u16::from_be_bytes([p[2], p[3]]) as usize == p.len();
            (false, ihl, p[9], ihl == 20 && whole && !more_fragments)
        }
        // Only a packet without extension headers may join a run. One
        // behind them (hop-by-hop or destination options, a routing
        // header, the first fragment of a datagram) has the ports: it is
        // its flow's, and ends the flow's run, as an IPv4 packet with
        // options does, or what follows it would be written before it. A
        // later fragment has none and is no flow's.
        6 if p.len() >= 40 => {
            let (proto, at) = ipv6::upper_layer(p);
            let at = at?;
            (true, at, proto, at == 40 && 40 + u16::from_be_bytes([p[4], p[5]]) as usize == p.len())
        }
        _ => return None,
    };
    let coalesced = match proto {
        TCP => offload.tcp,
        UDP => offload.udp,
        _ => false,
    };
    if !coalesced || p.len() < iph_len + 4 {
        return None;
    }
    let mut addrs = [0u8; 32];
    if v6 {
        addrs.copy_from_slice(&p[8..40]);
    } else {
        addrs[..8].copy_from_slice(&p[12..20]);
    }
    let l4 = &p[iph_len..];
    let key = FlowKey { proto, v6, addrs, ports: [l4[0], l4[1], l4[2], l4[3]] };
    let mut s = Segment { key, iph_len, l4h_len: 0, payload: 0, seq: 0, ack: 0, psh: false, joinable: false };
    if !plain {
        return Some(s);
    }
    match proto {
        TCP if l4.len() >= 20 => {
            let l4h_len = (l4[12] >> 4) as usize * 4;
            let flags = l4[13];
            if (20..l4.len()).contains(&l4h_len) && (flags == TCP_ACK || flags == TCP_ACK | TCP_PSH) {
                let word = |at: usize| u32::from_be_bytes([l4[at], l4[at + 1], l4[at + 2], l4[at + 3]]);
                s.l4h_len = l4h_len;
                (s.seq, s.ack, s.psh) = (word(4), word(8), flags & TCP_PSH != 0);
                s.joinable = true;
            }
        }
        UDP if l4.len() > 8 => {
            let length_ok = u16::from_be_bytes([l4[4], l4[5]]) as usize == l4.len();
            // A datagram without a checksum (zero) has none to verify.
            let has_checksum = l4[6] != 0 || l4[7] != 0;
            s.l4h_len = 8;
            s.joinable = length_ok && has_checksum;
        }
        _ => {}
    }
    s.payload = l4.len() - s.l4h_len.min(l4.len());
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::checksum as reference_checksum;

    const BOTH: Offload = Offload { tcp: true, udp: true };
    /// IPv6's Fragment extension header.
    const FRAGMENT: u8 = 44;

    /// Sum of the pseudo-header, written out independently of the code
    /// under test.
    fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
        let words = |b: &[u8]| b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum::<u32>();
        words(src) + words(dst) + u32::from(proto) + len as u32
    }

    /// An IP packet (v4 with `id`, or v6) around `l4`, checksums filled in.
    fn ip(v6: bool, proto: u8, id: u16, mut l4: Vec<u8>) -> Vec<u8> {
        let (src, dst): (Vec<u8>, Vec<u8>) = if v6 {
            (
                [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1].to_vec(),
                [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2].to_vec(),
            )
        } else {
            (vec![10, 0, 0, 1], vec![10, 0, 0, 2])
        };
        let csum_at = if proto == TCP { 16 } else { 6 };
        if proto == UDP {
            let len = l4.len() as u16;
            l4[4..6].copy_from_slice(&len.to_be_bytes());
        }
        let c = reference_checksum(&l4, pseudo(&src, &dst, proto, l4.len()));
        l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        let mut p = if v6 {
            let mut h = vec![0x60, 0, 0, 0, 0, 0, proto, 64];
            h[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
            h.extend_from_slice(&src);
            h.extend_from_slice(&dst);
            h
        } else {
            let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
            h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&id.to_be_bytes());
            h.extend_from_slice(&src);
            h.extend_from_slice(&dst);
            let c = reference_checksum(&h, 0);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h
        };
        p.extend_from_slice(&l4);
        p
    }

    fn tcp(v6: bool, id: u16, seq: u32, ack: u32, flags: u8, payload: usize) -> Vec<u8> {
        let mut l4 = vec![0u8; 20];
        l4[0..2].copy_from_slice(&5001u16.to_be_bytes());
        l4[2..4].copy_from_slice(&40000u16.to_be_bytes());
        l4[4..8].copy_from_slice(&seq.to_be_bytes());
        l4[8..12].copy_from_slice(&ack.to_be_bytes());
        l4[12] = 5 << 4;
        l4[13] = flags;
        l4[14..16].copy_from_slice(&512u16.to_be_bytes());
        l4.extend((0..payload).map(|i| (seq as usize + i) as u8));
        ip(v6, TCP, id, l4)
    }

    fn udp(v6: bool, id: u16, port: u16, payload: usize, fill: u8) -> Vec<u8> {
        let mut l4 = vec![0u8; 8];
        l4[0..2].copy_from_slice(&port.to_be_bytes());
        l4[2..4].copy_from_slice(&5201u16.to_be_bytes());
        l4.extend(std::iter::repeat_n(fill, payload));
        ip(v6, UDP, id, l4)
    }

    /// Each written buffer as the packets the kernel would make of it,
    /// cut by tun-rs's segmentation (an implementation independent of
    /// this one).
    fn written(w: &mut TunWrites) -> Vec<Vec<Vec<u8>>> {
        w.finish()
            .iter()
            .map(|buf| {
                let hdr = VirtioNetHdr::decode(buf).unwrap();
                let mut pkt = buf[WRITE_HEADROOM..].to_vec();
                if hdr.gso_type == 0 {
                    assert_eq!(hdr.flags, 0, "a lone packet keeps its own checksum");
                    return vec![pkt];
                }
                let v6 = pkt[0] >> 4 == 6;
                let mut out = vec![vec![0u8; 65_536]; 128];
                let mut sizes = vec![0usize; 128];
                let n = tun_rs::gso_split(&mut pkt, hdr, &mut out, &mut sizes, 0, v6).unwrap();
                out.truncate(n);
                out.iter_mut().zip(&sizes).for_each(|(o, &s)| o.truncate(s));
                out
            })
            .collect()
    }

    #[test]
    fn a_tcp_stream_becomes_one_write_that_cuts_back_into_its_segments() {
        for v6 in [false, true] {
            let mut w = TunWrites::new(8, BOTH);
            let mut sent = Vec::new();
            for i in 0..10u32 {
                sent.push(tcp(v6, 100 + i as u16, 1000 + i * 1380, 7, TCP_ACK, 1380));
            }
            sent.push(tcp(v6, 110, 1000 + 10 * 1380, 7, TCP_ACK | TCP_PSH, 300));
            sent.iter().for_each(|p| w.push(p));
            assert_eq!(w.packets(), 11);
            let out = written(&mut w);
            assert_eq!(out.len(), 1, "one write (v6: {v6})");
            assert_eq!(out[0], sent, "the kernel's segments are the packets sent (v6: {v6})");
        }
    }

    #[test]
    fn a_gap_a_new_ack_or_a_push_starts_a_new_write() {
        let mut w = TunWrites::new(8, BOTH);
        let sent = [
            tcp(false, 1, 0, 7, TCP_ACK, 1000),
            tcp(false, 2, 1000, 7, TCP_ACK | TCP_PSH, 1000),
            // After PSH.
            tcp(false, 3, 2000, 7, TCP_ACK, 1000),
            // A gap in the sequence.
            tcp(false, 4, 4000, 7, TCP_ACK, 1000),
            // Another acknowledgment.
            tcp(false, 5, 5000, 9, TCP_ACK, 1000),
            // Larger than the run's segments.
            tcp(false, 6, 6000, 9, TCP_ACK, 1200),
        ];
        sent.iter().for_each(|p| w.push(p));
        let out = written(&mut w);
        let sizes: Vec<usize> = out.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1, 1, 1, 1]);
        assert_eq!(out.concat(), sent, "every packet arrives, in order");
    }

    #[test]
    fn interleaved_flows_each_coalesce_and_keep_their_order() {
        let mut w = TunWrites::new(8, BOTH);
        let a = |i: u16| udp(false, i, 1111, 500, i as u8);
        let b = |i: u16| udp(false, i, 2222, 500, i as u8);
        let c = |i: u32| tcp(false, i as u16, i * 100, 1, TCP_ACK, 100);
        for i in 0..5 {
            w.push(&a(i));
            w.push(&b(i));
            w.push(&c(i as u32));
        }
        let out = written(&mut w);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], (0..5).map(a).collect::<Vec<_>>());
        assert_eq!(out[1], (0..5).map(b).collect::<Vec<_>>());
        assert_eq!(out[2], (0..5u32).map(c).collect::<Vec<_>>());
    }

    #[test]
    fn a_bad_checksum_is_never_coalesced_into_a_good_one() {
        let good0 = tcp(false, 1, 0, 7, TCP_ACK, 1000);
        let mut bad = tcp(false, 2, 1000, 7, TCP_ACK, 1000);
        bad[60] ^= 0xff;
        let good2 = tcp(false, 3, 2000, 7, TCP_ACK, 1000);
        let good3 = tcp(false, 4, 3000, 7, TCP_ACK, 1000);
        // The bad packet first: nothing may join it.
        let mut w = TunWrites::new(8, BOTH);
        w.push(&bad);
        w.push(&good2);
        w.push(&good3);
        let out = written(&mut w);
        assert_eq!(out, [vec![bad.clone()], vec![good2.clone(), good3.clone()]]);
        // The bad packet after a good one: it may not join either.
        let mut w = TunWrites::new(8, BOTH);
        w.push(&good0);
        w.push(&bad);
        w.push(&good2);
        let out = written(&mut w);
        assert_eq!(out, [vec![good0], vec![bad.clone()], vec![good2]]);
        assert_eq!(out[1][0], bad, "written as it came, its checksum still wrong");
    }

    /// A packet of the flow that may not join (a datagram without a
    /// checksum, a pure ACK) ends the run: what follows it is written
    /// after it, not appended to the run before it.
    #[test]
    fn a_packet_that_cannot_join_keeps_its_place_in_the_flow() {
        let mut unchecked = udp(false, 1, 1111, 500, 1);
        unchecked[26..28].fill(0);
        let sent = [udp(false, 0, 1111, 500, 0), unchecked, udp(false, 2, 1111, 500, 2), udp(false, 3, 1111, 500, 3)];
        let mut w = TunWrites::new(8, BOTH);
        sent.iter().for_each(|p| w.push(p));
        let out = written(&mut w);
        assert_eq!(out.concat(), sent, "in the order sent");
        assert_eq!(out.len(), 3, "the datagrams after it still coalesce");

        // A new IPv6 flow label (the sender moved the flow): a new run.
        let mut relabelled = tcp(true, 0, 2000, 7, TCP_ACK, 1000);
        relabelled[3] = 1;
        let sent = [tcp(true, 0, 0, 7, TCP_ACK, 1000), tcp(true, 0, 1000, 7, TCP_ACK, 1000), relabelled];
        let mut w = TunWrites::new(8, BOTH);
        sent.iter().for_each(|p| w.push(p));
        assert_eq!(written(&mut w), [sent[..2].to_vec(), sent[2..].to_vec()]);

        let pure_ack = tcp(false, 2, 2000, 7, TCP_ACK, 0);
        let sent = [tcp(false, 1, 1000, 7, TCP_ACK, 1000), pure_ack, tcp(false, 3, 2000, 7, TCP_ACK, 1000)];
        let mut w = TunWrites::new(8, BOTH);
        sent.iter().for_each(|p| w.push(p));
        assert_eq!(written(&mut w).concat(), sent, "in the order sent");
    }

    // An IPv6 datagram sent in fragments between two whole ones of its
    // flow: the first fragment ends the run (the datagram after it may not
    // join the one before and overtake it); the later fragment is no
    // flow's.
    #[test]
    fn an_ipv6_first_fragment_ends_its_flows_run() {
        let whole = |fill: u8| udp(true, 0, 1111, 700, fill);
        let fragment = |offset: u16, more: bool| {
            let d = udp(true, 0, 1111, 1200, 9);
            let mut p = d[..40].to_vec();
            p[6] = FRAGMENT;
            p.extend_from_slice(&[UDP, 0]);
            p.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
            p.extend_from_slice(&7u32.to_be_bytes());
            p.extend_from_slice(if offset == 0 { &d[40..640] } else { &d[640..] });
            let len = (p.len() - 40) as u16;
            p[4..6].copy_from_slice(&len.to_be_bytes());
            p
        };
        let sent = [whole(1), fragment(0, true), fragment(75, false), whole(2)];
        let mut w = TunWrites::new(8, BOTH);
        sent.iter().for_each(|p| w.push(p));
        assert_eq!(written(&mut w).concat(), sent, "in the order sent");
    }

    /// An IPv6 packet behind extension headers (here destination options)
    /// ends its flow's run like a first fragment: the datagram after it
    /// may not join the one before and overtake it.
    #[test]
    fn an_ipv6_packet_behind_extension_headers_ends_its_flows_run() {
        let behind_options = |next_is_fragment: bool| {
            let d = udp(true, 0, 1111, 700, 5);
            let mut p = d[..40].to_vec();
            p[6] = 60;
            let mut options = vec![if next_is_fragment { FRAGMENT } else { UDP }, 0, 1, 4, 0, 0, 0, 0];
            if next_is_fragment {
                options.extend_from_slice(&[UDP, 0, 0, 1, 0, 0, 0, 7]);
            }
            p.extend_from_slice(&options);
            p.extend_from_slice(&d[40..]);
            let len = (p.len() - 40) as u16;
            p[4..6].copy_from_slice(&len.to_be_bytes());
            p
        };
        for next_is_fragment in [false, true] {
            let sent = [udp(true, 0, 1111, 700, 1), behind_options(next_is_fragment), udp(true, 0, 1111, 700, 2)];
            let mut w = TunWrites::new(8, BOTH);
            sent.iter().for_each(|p| w.push(p));
            let out = written(&mut w);
            assert_eq!(out.concat(), sent, "in the order sent (a fragment: {next_is_fragment})");
            assert_eq!(out.len(), 3);
        }
    }

    /// IPv4 without DF: a segment joins only with the ID that follows the
    /// run's (the kernel cuts the run with IDs counted up from the first);
    /// with DF the ID is not looked at.
    #[test]
    fn ipv4_ids_must_count_up_unless_df_is_set() {
        let without_df = |mut p: Vec<u8>| {
            p[6] &= !0x40;
            p[10..12].fill(0);
            let c = reference_checksum(&p[..20], 0);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p
        };
        let counting: Vec<Vec<u8>> = (0..3u16)
            .map(|i| without_df(tcp(false, 0xfffe_u16.wrapping_add(i), u32::from(i) * 1000, 7, TCP_ACK, 1000)))
            .collect();
        let mut w = TunWrites::new(8, BOTH);
        counting.iter().for_each(|p| w.push(p));
        let out = written(&mut w);
        assert_eq!(out, [counting], "one run, the IDs wrapping through zero as the kernel's do");

        let sent = [
            without_df(tcp(false, 0x1234, 0, 7, TCP_ACK, 1000)),
            without_df(tcp(false, 0x9999, 1000, 7, TCP_ACK, 1000)),
        ];
        let mut w = TunWrites::new(8, BOTH);
        sent.iter().for_each(|p| w.push(p));
        let out = written(&mut w);
        assert_eq!(out.len(), 2, "not joined");
        assert_eq!(out.concat(), sent, "each keeps its own ID");

        let with_df = [tcp(false, 0x1234, 0, 7, TCP_ACK, 1000), tcp(false, 0x9999, 1000, 7, TCP_ACK, 1000)];
        let mut w = TunWrites::new(8, BOTH);
        with_df.iter().for_each(|p| w.push(p));
        assert_eq!(written(&mut w).len(), 1, "DF: one run");
    }

    // A window update or a bad IPv4 header checksum ends a run, as in the
    // kernel's GRO: the first would be lost in the run's one header, the
    // second made to look sound by the header written for it.
    #[test]
    fn a_new_window_or_a_bad_ipv4_header_is_not_coalesced() {
        let mut new_window = tcp(false, 2, 2000, 7, TCP_ACK, 1000);
        new_window[34..36].copy_from_slice(&1024u16.to_be_bytes());
        new_window[36..38].fill(0);
        let c = reference_checksum(&new_window[20..], pseudo(&[10, 0, 0, 1], &[10, 0, 0, 2], TCP, 1020));
        new_window[36..38].copy_from_slice(&c.to_be_bytes());
        let sent = [tcp(false, 0, 0, 7, TCP_ACK, 1000), tcp(false, 1, 1000, 7, TCP_ACK, 1000), new_window];
        let mut w = TunWrites::new(8, BOTH);
        sent.iter().for_each(|p| w.push(p));
        assert_eq!(written(&mut w), [sent[..2].to_vec(), sent[2..].to_vec()]);

        let mut bad_header = tcp(false, 1, 1000, 7, TCP_ACK, 1000);
        bad_header[10] ^= 0xff;
        let sent = [tcp(false, 0, 0, 7, TCP_ACK, 1000), bad_header.clone()];
        let mut w = TunWrites::new(8, BOTH);
        sent.iter().for_each(|p| w.push(p));
        let out = written(&mut w);
        assert_eq!(out.len(), 2, "not joined");
        assert_eq!(out[1][0], bad_header, "written as it came, its header checksum still wrong");
    }

    #[test]
    fn udp_coalesces_only_where_the_tun_takes_uso_and_shorter_ends_a_run() {
        let sent: Vec<Vec<u8>> = (0..4).map(|i| udp(true, i, 1111, if i == 2 { 100 } else { 700 }, i as u8)).collect();
        let mut w = TunWrites::new(8, Offload { tcp: true, udp: false });
        sent.iter().for_each(|p| w.push(p));
        assert_eq!(written(&mut w).len(), 4, "no USO: each datagram alone");
        let mut w = TunWrites::new(8, BOTH);
        sent.iter().for_each(|p| w.push(p));
        let out = written(&mut w);
        assert_eq!(out, [sent[..3].to_vec(), sent[3..].to_vec()]);
    }

    #[test]
    fn runs_stay_within_64_kib_and_the_udp_segment_limit() {
        let mut w = TunWrites::new(8, BOTH);
        let sent: Vec<Vec<u8>> = (0..60u32).map(|i| tcp(false, i as u16, i * 1400, 1, TCP_ACK, 1400)).collect();
        sent.iter().for_each(|p| w.push(p));
        w.finish();
        assert!(w.bufs[..w.used].iter().all(|b| b.len() - WRITE_HEADROOM <= MAX_PACKET));
        assert_eq!(written(&mut w).concat(), sent);

        let mut w = TunWrites::new(8, BOTH);
        let sent: Vec<Vec<u8>> = (0..100).map(|i| udp(false, i, 1111, 64, i as u8)).collect();
        sent.iter().for_each(|p| w.push(p));
        let out = written(&mut w);
        assert!(out.iter().all(|run| run.len() <= UDP_SEGMENTS as usize));
        assert_eq!(out.concat(), sent);
    }

    #[test]
    fn other_packets_pass_unchanged_with_an_empty_header() {
        let mut w = TunWrites::new(8, BOTH);
        let syn = tcp(false, 1, 0, 0, 0x02, 0);
        let mut icmp = ip(false, 1, 9, vec![8, 0, 0, 0, 0, 0, 0, 0]);
        icmp[20 + 4] = 1;
        let mut fragment = udp(false, 3, 1111, 100, 0);
        fragment[6] |= 0x20;
        for p in [&syn, &icmp, &fragment, &fragment] {
            w.push(p);
        }
        assert_eq!(w.packets(), 4);
        assert_eq!(written(&mut w), [vec![syn], vec![icmp], vec![fragment.clone()], vec![fragment]]);
    }
}
