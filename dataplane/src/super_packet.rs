//! A TSO or USO super-packet as a TUN queue with offload hands it over:
//! one IP and TCP (or UDP) header for a run of up to 64 KiB of payload,
//! which the virtio header says how to cut. Its segments are cut here one
//! at a time, each straight into the place it takes in its batch
//! (`send.rs`), with its own lengths, IPv4 ID, TCP sequence number, flags
//! and checksums, as the kernel would have sent them.
//!
//! Written here rather than left to tun-rs, which cuts a super-packet
//! into a buffer per segment: the send path then copied every segment
//! again into its batch, 2.1% of a single stream's CPU
//! (benches/results/profile-20261202T055600Z-esp.txt). The rules are
//! tun-rs's and wireguard-go's (`gsoSplit`), and the tests hold this
//! to tun-rs's `gso_split` segment for segment.

use crate::ipv6;
use tun_rs::{
    checksum, checksum_no_fold, VirtioNetHdr, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4,
};

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM` (linux/virtio_net.h): the checksum is
/// partial, to be completed from `csum_start` (seeded with the
/// pseudo-header's sum, which the field holds).
pub const NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`: a packet that is not cut.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_ECN`: a TCP GSO type's flag that the segments
/// carry ECN (the CWR rule below covers it).
const GSO_ECN: u8 = 0x80;
const TCP: u8 = 6;
const UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// A super-packet whose header and virtio header were checked, so that
/// every segment can be cut without another check.
///
/// Invariants: `csum_start` is the IP header's length (with IPv6's
/// extension headers), `hdr_len` the IP and transport headers' length,
/// and `input` holds both and at least one byte of payload; every
/// segment's length fits the IP length field.
#[derive(Debug)]
pub struct SuperPacket<'a> {
    input: &'a [u8],
    v6: bool,
    proto: u8,
    csum_start: usize,
    hdr_len: usize,
    gso_size: usize,
    count: usize,
}

impl<'a> SuperPacket<'a> {
    /// Checks `input` against its virtio header `hdr`; None when the two do
    /// not describe a segmentation (the kernel never hands one over; the
    /// caller counts it as malformed).
    pub fn parse(hdr: &VirtioNetHdr, input: &'a [u8]) -> Option<SuperPacket<'a>> {
        let v6 = match input.first()? >> 4 {
            4 => false,
            6 => true,
            _ => return None,
        };
        // ECN's flag goes with TCP only, as tun-rs and the kernel have it.
        let proto = match (hdr.gso_type & !GSO_ECN, v6) {
            (VIRTIO_NET_HDR_GSO_TCPV4, false) | (VIRTIO_NET_HDR_GSO_TCPV6, true) => TCP,
            (VIRTIO_NET_HDR_GSO_UDP_L4, _) if hdr.gso_type & GSO_ECN == 0 => UDP,
            _ => return None,
        };
        let csum_start = usize::from(hdr.csum_start);
        let csum_offset = if proto == TCP { 16 } else { 6 };
        if usize::from(hdr.csum_offset) != csum_offset || hdr.gso_size == 0 {
            return None;
        }
        // IPv4's header length is its IHL; IPv6's may include extension
        // headers, which the segments carry as they are.
        let ip_ok =
            if v6 { csum_start >= 40 } else { csum_start == usize::from(input[0] & 0x0f) * 4 && csum_start >= 20 };
        if !ip_ok {
            return None;
        }
        // The transport header's own length, not the virtio header's
        // `hdr_len`: on the forwarding path the kernel may put the whole
        // first segment there (tun-rs and wireguard-go do the same).
        let l4_len = if proto == TCP { usize::from(*input.get(csum_start + 12)? >> 4) * 4 } else { 8 };
        if proto == TCP && l4_len < 20 {
            return None;
        }
        let hdr_len = csum_start + l4_len;
        if input.len() <= hdr_len {
            return None;
        }
        // The IP header must name the protocol the virtio header cuts, and
        // carry no fragment (nor, in IPv6, AH, which Linux's GSO does not
        // walk past either): the kernel hands over neither, and a cut
        // would write sequence numbers and checksums over another
        // protocol's header, or copy fragment bits into every segment.
        let names_proto = if v6 {
            ipv6::upper_layer(input) == (proto, Some(csum_start)) && !ipv6::has_fragment_or_ah(input)
        } else {
            input[9] == proto && u16::from_be_bytes([input[6], input[7]]) & 0x3fff == 0
        };
        if !names_proto {
            return None;
        }
        let gso_size = usize::from(hdr.gso_size);
        let payload = input.len() - hdr_len;
        // The IP length field of the largest segment: IPv4's counts the
        // whole packet, IPv6's what follows its fixed header.
        let largest = hdr_len + payload.min(gso_size) - if v6 { 40 } else { 0 };
        if largest > usize::from(u16::MAX) {
            return None;
        }
        Some(SuperPacket { input, v6, proto, csum_start, hdr_len, gso_size, count: payload.div_ceil(gso_size) })
    }

    /// How many segments it is cut into.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The headers every segment starts with (as far as routing, the flow
    /// hash and traffic selectors read: addresses, protocol and ports are
    /// the same in all).
    pub fn header(&self) -> &'a [u8] {
        &self.input[..self.hdr_len]
    }

    /// Where segment `i`'s payload lies in the super-packet.
    fn payload(&self, i: usize) -> (usize, usize) {
        let start = self.hdr_len + i * self.gso_size;
        (start, (start + self.gso_size).min(self.input.len()))
    }

    /// Length of segment `i` (< `count`).
    pub fn len(&self, i: usize) -> usize {
        let (start, end) = self.payload(i);
        self.hdr_len + end - start
    }

    /// Writes segment `i` (< `count`) at the start of `out`, which holds at
    /// least `len(i)` bytes; returns its length.
    pub fn write(&self, i: usize, out: &mut [u8]) -> usize {
        let (start, end) = self.payload(i);
        let (cs, hl) = (self.csum_start, self.hdr_len);
        let total = hl + end - start;
        let out = &mut out[..total];
        out[..hl].copy_from_slice(&self.input[..hl]);
        out[hl..].copy_from_slice(&self.input[start..end]);
        if self.v6 {
            out[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        } else {
            out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            let id = u16::from_be_bytes([out[4], out[5]]).wrapping_add(i as u16);
            out[4..6].copy_from_slice(&id.to_be_bytes());
            out[10..12].fill(0);
            let sum = !checksum(&out[..cs], 0);
            out[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        let l4_len = total - cs;
        let csum_at = if self.proto == TCP {
            let seq = u32::from_be_bytes([out[cs + 4], out[cs + 5], out[cs + 6], out[cs + 7]])
                .wrapping_add((i * self.gso_size) as u32);
            out[cs + 4..cs + 8].copy_from_slice(&seq.to_be_bytes());
            // CWR only on the first segment (Linux's ECN segmentation);
            // FIN and PSH only on the last.
            if i > 0 {
                out[cs + 13] &= !TCP_CWR;
            }
            if end != self.input.len() {
                out[cs + 13] &= !(TCP_FIN | TCP_PSH);
            }
            cs + 16
        } else {
            out[cs + 4..cs + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            cs + 6
        };
        out[csum_at..csum_at + 2].fill(0);
        let addrs = if self.v6 { &self.input[8..40] } else { &self.input[12..20] };
        let mut sum = !checksum(&out[cs..], pseudo_header(self.proto, addrs, l4_len));
        // A UDP checksum of 0 means "none"; a computed 0 is sent as all
        // ones (RFC 768), as the kernel does.
        if self.proto == UDP && sum == 0 {
            sum = 0xffff;
        }
        out[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());
        total
    }
}

/// The unfolded sum of a TCP or UDP pseudo-header: `addrs` is the source
/// then the destination address (8 or 32 bytes), `l4_len` the length of
/// the transport header and payload.
pub fn pseudo_header(proto: u8, addrs: &[u8], l4_len: usize) -> u64 {
    let len = (l4_len as u16).to_be_bytes();
    checksum_no_fold(&[0, proto, len[0], len[1]], checksum_no_fold(addrs, 0))
}

/// Completes a checksum the kernel left partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`
/// on a packet that is not cut): the field holds the pseudo-header's sum,
/// and the sum from `csum_start` on goes in its place. A result of 0 is
/// written as 0xffff, as the kernel's `skb_checksum_help` writes it: to
/// UDP, 0 means "no checksum" (RFC 768), which IPv6 refuses (RFC 8200
/// 8.1), so about one datagram in 65,536 would lose its check or be
/// dropped; to TCP and ICMP the two are the same sum. (tun-rs leaves 0.)
/// Returns false when the offsets lie outside the packet.
pub fn complete_checksum(packet: &mut [u8], csum_start: u16, csum_offset: u16) -> bool {
    let start = usize::from(csum_start);
    let at = start + usize::from(csum_offset);
    if at + 2 > packet.len() {
        return false;
    }
    let partial = u16::from_be_bytes([packet[at], packet[at + 1]]);
    packet[at..at + 2].fill(0);
    let sum = match !checksum(&packet[start..], u64::from(partial)) {
        0 => 0xffff,
        sum => sum,
    };
    packet[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_checksum_of_zero_is_written_as_all_ones() {
        // The field holds a partial sum of 0 and the rest sums to 0xffff,
        // so the complement is 0.
        let mut p = [0, 0, 0xff, 0xff];
        assert!(complete_checksum(&mut p, 0, 0));
        assert_eq!(p[..2], [0xff, 0xff]);
        let mut p = [0, 0, 0x12, 0x34];
        assert!(complete_checksum(&mut p, 0, 0));
        assert_eq!(p[..2], (!0x1234u16).to_be_bytes(), "any other sum as it comes");
        assert!(!complete_checksum(&mut p, 2, 1), "offsets outside the packet");
    }

    /// A super-packet as the kernel hands one over: IPv4 or IPv6, TCP with
    /// `flags` (and 12 bytes of options) or UDP, `payload` bytes.
    fn super_packet(v6: bool, tcp: bool, flags: u8, payload: usize) -> Vec<u8> {
        let l4 = if tcp { 32 } else { 8 };
        let ip = if v6 { 40 } else { 20 };
        let mut p = vec![0u8; ip + l4 + payload];
        if v6 {
            p[0] = 0x60;
            p[6] = if tcp { TCP } else { UDP };
            p[7] = 64;
            p[8] = 0xfd;
            p[23] = 1;
            p[24] = 0xfd;
            p[39] = 2;
        } else {
            p[0] = 0x45;
            p[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = if tcp { TCP } else { UDP };
            p[12..16].copy_from_slice(&[10, 1, 0, 1]);
            p[16..20].copy_from_slice(&[10, 2, 0, 2]);
        }
        p[ip..ip + 4].copy_from_slice(&[0x12, 0x34, 0x01, 0xbb]);
        if tcp {
            p[ip + 4..ip + 8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
            p[ip + 12] = 0x80;
            p[ip + 13] = flags;
            p[ip + 20..ip + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        }
        for (i, b) in p[ip + l4..].iter_mut().enumerate() {
            *b = (i * 7 + i / 251) as u8;
        }
        // The partial checksum the kernel leaves: whatever it is, it is
        // recomputed per segment.
        p[ip + if tcp { 16 } else { 6 }] = 0x5a;
        p
    }

    fn header(v6: bool, tcp: bool, gso_size: u16) -> VirtioNetHdr {
        let ip = if v6 { 40 } else { 20 };
        VirtioNetHdr {
            flags: 1,
            gso_type: match (tcp, v6) {
                (true, false) => VIRTIO_NET_HDR_GSO_TCPV4,
                (true, true) => VIRTIO_NET_HDR_GSO_TCPV6,
                _ => VIRTIO_NET_HDR_GSO_UDP_L4,
            },
            hdr_len: ip + if tcp { 32 } else { 8 },
            gso_size,
            csum_start: ip,
            csum_offset: if tcp { 16 } else { 6 },
        }
    }

    /// tun-rs's cut of the same super-packet, the reference.
    fn reference(input: &[u8], hdr: VirtioNetHdr, v6: bool) -> Vec<Vec<u8>> {
        let mut input = input.to_vec();
        let mut out = vec![vec![0u8; 65_536]; 128];
        let mut sizes = vec![0usize; 128];
        let n = tun_rs::gso_split(&mut input, hdr, &mut out, &mut sizes, 0, v6).expect("tun-rs cuts it");
        out.into_iter()
            .zip(sizes)
            .take(n)
            .map(|(mut p, len)| {
                p.truncate(len);
                p
            })
            .collect()
    }

    #[test]
    fn segments_are_cut_as_tun_rs_cuts_them() {
        let cases = [
            // (v6, tcp, flags, payload, gso_size)
            (false, true, 0x10 | TCP_PSH | TCP_FIN | TCP_CWR, 64_000, 1_368),
            (true, true, 0x10 | TCP_PSH, 40_001, 1_348),
            (false, true, 0x10, 1_368 * 3, 1_368),
            (false, false, 0, 9_000, 1_400),
            (true, false, 0, 2_801, 1_400),
            (false, true, 0x10, 10, 1_368),
        ];
        for (v6, tcp, flags, payload, gso) in cases {
            let input = super_packet(v6, tcp, flags, payload);
            let hdr = header(v6, tcp, gso);
            let want = reference(&input, hdr, v6);
            let sp = SuperPacket::parse(&hdr, &input).expect("a well-formed super-packet");
            assert_eq!(sp.count(), want.len(), "{v6} {tcp} {payload}");
            assert_eq!(sp.header(), &input[..hdr.hdr_len as usize]);
            // Cut out of order and into dirty buffers: each segment stands
            // alone.
            for i in (0..sp.count()).rev() {
                let mut out = vec![0xee; 70_000];
                assert_eq!(sp.len(i), want[i].len());
                assert_eq!(sp.write(i, &mut out), want[i].len());
                assert_eq!(&out[..want[i].len()], &want[i][..], "segment {i} of {v6} {tcp} {payload}");
            }
        }
    }

    #[test]
    fn every_segment_checksums_to_zero() {
        let input = super_packet(false, true, 0x10, 5_000);
        let sp = SuperPacket::parse(&header(false, true, 1_000), &input).unwrap();
        for i in 0..sp.count() {
            let mut out = vec![0u8; 2_000];
            let n = sp.write(i, &mut out);
            let seg = &out[..n];
            assert_eq!(checksum(&seg[..20], 0), 0xffff, "IPv4 header of {i}");
            assert_eq!(checksum(&seg[20..], pseudo_header(TCP, &seg[12..20], n - 20)), 0xffff, "TCP of {i}");
            let seq = u32::from_be_bytes(seg[24..28].try_into().unwrap());
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add(i as u32 * 1_000), "sequence numbers wrap");
        }
    }

    #[test]
    fn what_does_not_describe_a_segmentation_is_refused() {
        let v4 = super_packet(false, true, 0x10, 3_000);
        let good = header(false, true, 1_000);
        assert!(SuperPacket::parse(&good, &v4).is_some());
        let refuse = |hdr: VirtioNetHdr, p: &[u8]| SuperPacket::parse(&hdr, p).is_none();
        assert!(refuse(VirtioNetHdr { gso_size: 0, ..good }, &v4), "no segment size");
        assert!(refuse(VirtioNetHdr { gso_type: VIRTIO_NET_HDR_GSO_TCPV6, ..good }, &v4), "TCPv6 on IPv4");
        assert!(refuse(VirtioNetHdr { gso_type: 9, ..good }, &v4), "an unknown type");
        assert!(refuse(VirtioNetHdr { csum_offset: 6, ..good }, &v4), "UDP's checksum offset for TCP");
        assert!(refuse(VirtioNetHdr { csum_start: 24, ..good }, &v4), "csum_start past the IHL");
        assert!(refuse(good, &v4[..52]), "headers and no payload");
        assert!(refuse(good, &v4[..30]), "a cut TCP header");
        assert!(refuse(good, &[]), "nothing");
        let mut bad_doff = v4.clone();
        bad_doff[32] = 0x40;
        assert!(refuse(good, &bad_doff), "a TCP header shorter than 20 bytes");
        let v6 = super_packet(true, false, 0, 66_000);
        assert!(refuse(header(true, false, 65_535), &v6), "a segment longer than the length field");
        assert!(SuperPacket::parse(&header(true, false, 65_487), &v6).is_some(), "the longest that fits");
        assert!(
            SuperPacket::parse(&VirtioNetHdr { gso_type: VIRTIO_NET_HDR_GSO_TCPV4 | GSO_ECN, ..good }, &v4).is_some()
        );
        let udp = super_packet(false, false, 0, 3_000);
        let uso = header(false, false, 1_000);
        assert!(SuperPacket::parse(&uso, &udp).is_some());
        assert!(refuse(VirtioNetHdr { gso_type: VIRTIO_NET_HDR_GSO_UDP_L4 | GSO_ECN, ..uso }, &udp), "ECN on USO");

        // The IP header must name what the virtio header cuts.
        let mut udp_as_tcp = udp.clone();
        udp_as_tcp[32] = 5 << 4;
        assert!(refuse(good, &udp_as_tcp), "a UDP packet cut as TCP");
        let mut fragment = v4.clone();
        fragment[6] |= 0x20;
        assert!(refuse(good, &fragment), "an IPv4 fragment");
        let v6_tcp = super_packet(true, true, 0x10, 3_000);
        let tcp6 = header(true, true, 1_000);
        assert!(SuperPacket::parse(&tcp6, &v6_tcp).is_some());
        let mut v6_udp_named = v6_tcp.clone();
        v6_udp_named[6] = UDP;
        assert!(refuse(tcp6, &v6_udp_named), "IPv6 naming UDP, cut as TCP");

        // Extension headers: those Linux's GSO walks past are taken, a
        // Fragment header (or AH) is not, since every segment would carry
        // a copy of it.
        let with_ext = |kind: u8, ext: [u8; 8]| {
            let mut p = v6_tcp.clone();
            p.splice(40..40, ext);
            p[6] = kind;
            let len = u16::from_be_bytes([p[4], p[5]]) + 8;
            p[4..6].copy_from_slice(&len.to_be_bytes());
            p
        };
        let behind = VirtioNetHdr { csum_start: 48, ..tcp6 };
        let options = with_ext(60, [TCP, 0, 1, 4, 0, 0, 0, 0]);
        assert!(SuperPacket::parse(&behind, &options).is_some(), "behind destination options");
        let fragment = with_ext(44, [TCP, 0, 0, 1, 0, 0, 0, 9]);
        assert!(refuse(behind, &fragment), "behind a Fragment header");
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let mut p = super_packet(false, false, 0, 100);
        let len = ((p.len() - 20) as u16).to_be_bytes();
        p[24..26].copy_from_slice(&len);
        let pseudo = pseudo_header(UDP, &p[12..20], p.len() - 20);
        p[26..28].copy_from_slice(&checksum(&[], pseudo).to_be_bytes());
        assert!(complete_checksum(&mut p, 20, 6));
        assert_eq!(checksum(&p[20..], pseudo), 0xffff);
        assert!(!complete_checksum(&mut p[..27], 20, 6), "a field past the end is refused");
    }
}
