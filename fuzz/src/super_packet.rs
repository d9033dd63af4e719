//! The TUN's super-packets (`causeway_dataplane::super_packet`), from any
//! virtio header and bytes: refused, or cut without a panic into segments
//! whose lengths and checksums are right and whose payloads, end to end,
//! are the super-packet's; and where tun-rs cuts the same super-packet,
//! byte for byte what tun-rs cuts, which must cut it too. A partial
//! checksum is completed wherever the header puts it, or refused.

use causeway_dataplane::super_packet::{complete_checksum, SuperPacket};
use tun_rs::{checksum, checksum_no_fold, VirtioNetHdr, VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_LEN};

/// Bytes of output buffers tun-rs is given to cut into; larger cuts are
/// checked by their properties alone, to keep each input fast.
const ORACLE_BYTES: usize = 1 << 20;

pub fn super_packet(data: &[u8]) {
    let Some((h, input)) = data.split_at_checked(VIRTIO_NET_HDR_LEN) else { return };
    let hdr = VirtioNetHdr::decode(h).expect("a header's worth of bytes");
    let mut completed = input.to_vec();
    let at = usize::from(hdr.csum_start) + usize::from(hdr.csum_offset);
    let partial = completed.get(at..at + 2).map(|f| u16::from_be_bytes([f[0], f[1]]));
    // A field at an even offset from where the sum starts: the sum then
    // checks out (at an odd one its bytes count swapped, as in tun-rs).
    if complete_checksum(&mut completed, hdr.csum_start, hdr.csum_offset) && hdr.csum_offset.is_multiple_of(2) {
        let partial = u64::from(partial.expect("completed inside the packet"));
        assert_eq!(checksum(&completed[usize::from(hdr.csum_start)..], partial), 0xffff, "a completed checksum");
    }
    let Some(sp) = SuperPacket::parse(&hdr, input) else { return };
    let v6 = input[0] >> 4 == 6;
    let cs = usize::from(hdr.csum_start);
    let hl = sp.header().len();
    let proto = if hdr.gso_type & 0x7f == VIRTIO_NET_HDR_GSO_UDP_L4 { 17 } else { 6 };
    let mut segments = Vec::with_capacity(sp.count());
    let mut payload = Vec::with_capacity(input.len());
    for i in 0..sp.count() {
        let mut seg = vec![0u8; sp.len(i)];
        assert_eq!(sp.write(i, &mut seg), seg.len());
        let at = if v6 { 4 } else { 2 };
        let ip_len = usize::from(u16::from_be_bytes([seg[at], seg[at + 1]]));
        assert_eq!(ip_len, if v6 { seg.len() - 40 } else { seg.len() }, "segment {i}'s IP length");
        if !v6 {
            assert_eq!(checksum(&seg[..cs], 0), 0xffff, "segment {i}'s IPv4 header checksum");
        }
        let l4 = ((seg.len() - cs) as u16).to_be_bytes();
        let addrs = if v6 { &seg[8..40] } else { &seg[12..20] };
        let pseudo = checksum_no_fold(&[0, proto, l4[0], l4[1]], checksum_no_fold(addrs, 0));
        assert_eq!(checksum(&seg[cs..], pseudo), 0xffff, "segment {i}'s transport checksum");
        payload.extend_from_slice(&seg[hl..]);
        segments.push(seg);
    }
    assert!(payload == input[hl..], "the payloads cut are not the super-packet's");
    let longest = segments.iter().map(Vec::len).max().unwrap_or(0);
    if segments.len() * longest > ORACLE_BYTES {
        return;
    }
    // tun-rs is given the header length the cut used: the kernel's own
    // may cover more (the forwarding path), which tun-rs's reader mends
    // the same way before it cuts.
    let mut h = hdr;
    h.hdr_len = hl as u16;
    let mut bufs = vec![vec![0u8; longest]; segments.len()];
    let mut sizes = vec![0usize; segments.len()];
    // What is cut here tun-rs cuts too (the converse does not hold: an
    // IPv4 header whose IHL is not where the checksum starts, one that
    // names another protocol than the cut's or is a fragment, and a
    // super-packet without payload, are refused here).
    let n = tun_rs::gso_split(&mut input.to_vec(), h, &mut bufs, &mut sizes, 0, v6).expect("tun-rs cuts it too");
    assert_eq!(n, segments.len(), "tun-rs cut another number of segments");
    for (i, seg) in segments.iter().enumerate() {
        assert!(bufs[i][..sizes[i]] == seg[..], "segment {i} differs from tun-rs's");
    }
}
