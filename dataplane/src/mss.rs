//! TCP MSS clamping: lowers the MSS option of SYN and SYN-ACK segments that
//! cross the tunnel to what fits its MTU, so hosts on 1500-byte LANs never
//! send segments the tunnel would have to refuse. Without it, a path that
//! drops the ICMP "fragmentation needed" replies stalls large transfers
//! (a PMTU black hole).

use crate::checksum::fold;
use crate::ipv6;

/// Largest MSS for IPv4 and IPv6 through a tunnel of this MTU (MTU minus
/// IP and TCP headers without options).
pub fn max_mss(mtu: u32) -> (u16, u16) {
    (mtu.saturating_sub(40).min(u16::MAX as u32) as u16, mtu.saturating_sub(60).min(u16::MAX as u32) as u16)
}

/// Incremental checksum update for one 16-bit word (RFC 1624, eqn. 3).
fn update(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!checksum) + u64::from(!old) + u64::from(new))
}

/// Clamps the MSS options of a TCP SYN in an IP packet; returns whether
/// the packet changed. Every MSS option is clamped, not only the first:
/// Linux's `tcp_parse_options` takes the last, so a SYN with a small one
/// first and a large one after would otherwise get past. Anything else
/// (not TCP, not SYN, fragments) is left alone, and so are the options
/// from the first malformed one on.
pub fn clamp(packet: &mut [u8], (max_v4, max_v6): (u16, u16)) -> bool {
    let (tcp_at, max) = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff != 0;
            if packet[9] != 6 || fragment || ihl < 20 {
                return false;
            }
            (ihl, max_v4)
        }
        // Behind extension headers too; a later fragment has no TCP header.
        Some(6) if packet.len() >= 40 => match ipv6::upper_layer(packet) {
            (6, Some(at)) => (at, max_v6),
            _ => return false,
        },
        _ => return false,
    };
    let Some(tcp) = packet.get_mut(tcp_at..) else { return false };
    if tcp.len() < 20 || tcp[13] & 0x02 == 0 {
        return false;
    }
    let header = usize::from(tcp[12] >> 4) * 4;
    if header < 20 || header > tcp.len() {
        return false;
    }
    let mut i = 20;
    let mut changed = false;
    while i < header {
        match tcp[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(*tcp.get(i + 1).unwrap_or(&0));
                if len < 2 || i + len > header {
                    break;
                }
                if kind == 2 && len == 4 && u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]) > max {
                    // The checksum covers 16-bit words from the TCP header's
                    // start; an option at an odd offset spans two words.
                    let at = i + 2;
                    let word_start = at & !1;
                    let words_end = (at + 2 + 1) & !1;
                    let mut old = [0u16; 2];
                    for (k, w) in (word_start..words_end).step_by(2).enumerate() {
                        old[k] = u16::from_be_bytes([tcp[w], tcp[w + 1]]);
                    }
                    tcp[at..at + 2].copy_from_slice(&max.to_be_bytes());
                    let mut csum = u16::from_be_bytes([tcp[16], tcp[17]]);
                    for (k, w) in (word_start..words_end).step_by(2).enumerate() {
                        csum = update(csum, old[k], u16::from_be_bytes([tcp[w], tcp[w + 1]]));
                    }
                    tcp[16..18].copy_from_slice(&csum.to_be_bytes());
                    changed = true;
                }
                i += len;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::checksum;

    /// An IPv4 SYN with the given TCP options and a valid checksum.
    fn syn_v4(options: &[u8]) -> Vec<u8> {
        let tcp_len = 20 + options.len();
        let mut p = vec![0u8; 20 + tcp_len];
        p[0] = 0x45;
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[12] = ((tcp_len / 4) as u8) << 4;
        t[13] = 0x02;
        t[20..].copy_from_slice(options);
        fix(&mut p);
        p
    }

    fn pseudo(p: &[u8]) -> u32 {
        let tcp_len = (p.len() - 20) as u32;
        p[12..20].chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum::<u32>() + 6 + tcp_len
    }

    fn fix(p: &mut [u8]) {
        p[36..38].fill(0);
        let c = checksum(&p[20..], pseudo(p));
        p[36..38].copy_from_slice(&c.to_be_bytes());
    }

    fn valid(p: &[u8]) -> bool {
        checksum(&p[20..], pseudo(p)) == 0
    }

    #[test]
    fn lowers_a_large_mss_and_keeps_the_checksum_valid() {
        let mut p = syn_v4(&[2, 4, 0x05, 0xb4, 1, 1, 4, 2]); // MSS 1460, NOP, NOP, SACK-permitted
        assert!(valid(&p));
        assert!(clamp(&mut p, max_mss(1420)));
        assert_eq!(u16::from_be_bytes([p[42], p[43]]), 1380);
        assert!(valid(&p), "incremental checksum matches a full recomputation");
    }

    #[test]
    fn option_at_an_odd_offset() {
        let mut p = syn_v4(&[1, 2, 4, 0x23, 0x28, 1, 1, 1]); // NOP, MSS 9000 at offset 21
        assert!(clamp(&mut p, max_mss(1420)));
        assert_eq!(u16::from_be_bytes([p[43], p[44]]), 1380);
        assert!(valid(&p));
    }

    /// Linux takes the last MSS option of a SYN: a small one before a
    /// large one must not shield it.
    #[test]
    fn every_mss_option_is_clamped() {
        let mut p = syn_v4(&[2, 4, 0x03, 0xe8, 2, 4, 0x23, 0x28]); // MSS 1000, then MSS 9000
        assert!(clamp(&mut p, max_mss(1420)));
        assert_eq!(u16::from_be_bytes([p[42], p[43]]), 1000, "the small one stays");
        assert_eq!(u16::from_be_bytes([p[46], p[47]]), 1380);
        assert!(valid(&p));
    }

    #[test]
    fn leaves_everything_else_alone() {
        let small = syn_v4(&[2, 4, 0x05, 0x00, 0, 0, 0, 0]); // MSS 1280 already fits
        let mut p = small.clone();
        assert!(!clamp(&mut p, max_mss(1420)));
        assert_eq!(p, small);
        let mut ack = syn_v4(&[2, 4, 0x05, 0xb4, 0, 0, 0, 0]);
        ack[33] = 0x10; // ACK, no SYN
        let before = ack.clone();
        assert!(!clamp(&mut ack, max_mss(1420)));
        assert_eq!(ack, before);
        let mut udp = syn_v4(&[2, 4, 0x05, 0xb4]);
        udp[9] = 17;
        assert!(!clamp(&mut udp, max_mss(1420)));
        let mut bad = syn_v4(&[2, 9, 0x05, 0xb4]); // option length past the header
        assert!(!clamp(&mut bad, max_mss(1420)));
        assert!(!clamp(&mut [], max_mss(1420)));
        assert!(!clamp(&mut [0x45; 30], max_mss(1420)));
    }

    #[test]
    fn ipv6_limit_is_twenty_bytes_lower() {
        assert_eq!(max_mss(1420), (1380, 1360));
        let v4 = syn_v4(&[2, 4, 0x05, 0xb4]);
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((v4.len() - 20) as u16).to_be_bytes());
        p[6] = 6;
        p.extend_from_slice(&v4[20..]);
        let mut plain = p.clone();
        assert!(clamp(&mut plain, max_mss(1420)));
        assert_eq!(u16::from_be_bytes([plain[62], plain[63]]), 1360);

        // Behind a destination options header.
        let mut behind = p[..40].to_vec();
        behind[6] = 60;
        behind.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        behind.extend_from_slice(&p[40..]);
        let len = (behind.len() - 40) as u16;
        behind[4..6].copy_from_slice(&len.to_be_bytes());
        assert!(clamp(&mut behind, max_mss(1420)));
        assert_eq!(u16::from_be_bytes([behind[70], behind[71]]), 1360);
    }
}
