//! The hash of an inner packet's flow, which picks the gateway of a site
//! that carries it (`site.rs`): addresses, protocol, and the TCP, UDP,
//! SCTP (and DCCP, UDP-Lite) ports where the packet has them.
//!
//! Invariants: the hash is a pure function of those header fields, with
//! fixed constants, so it is the same on every worker and across restarts
//! (a flow keeps its gateway through a daemon restart); it reads only the
//! fixed IPv4 or IPv6 header and the first four bytes after it, and never
//! panics or allocates, whatever the bytes.
//!
//! Fragments hash without ports, so every fragment of one datagram takes
//! the same gateway: an IPv4 fragment (more-fragments set or an offset)
//! has ports only in the first, and an IPv6 fragment header stands where
//! the fixed-header parse would look for them. This is what Linux's flow
//! dissector does for ECMP. The IPv6 flow label is left out on purpose:
//! Linux changes a TCP connection's label after a timeout, which would
//! move the flow to another gateway in the middle of its life.
//!
//! Not keyed: someone who controls inner flows could aim them all at one
//! gateway, but could as well just send more. A secret key would break
//! the stability across restarts.

/// Protocols whose first four bytes after the IP header are the source
/// and destination ports: TCP, UDP, DCCP, UDP-Lite and SCTP.
fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 33 | 136 | 132)
}

const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// Folds one word into the running hash.
fn fold(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(K).rotate_left(29)
}

/// splitmix64's finaliser: every input bit reaches every output bit, so
/// the top bits (the bucket) depend on ports and addresses alike.
pub fn finish(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(w)
}

fn half(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u64::from(u32::from_be_bytes(w))
}

/// The flow hash of an IP packet; packets that are not IP (which the send
/// path never routes) all hash alike.
pub fn flow_hash(packet: &[u8]) -> u64 {
    let Some(first) = packet.first() else { return finish(0) };
    match first >> 4 {
        4 if packet.len() >= 20 => {
            let ihl = usize::from(first & 0x0f) * 4;
            let protocol = packet[9];
            let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0;
            let ports = if !fragment && ihl >= 20 && has_ports(protocol) && packet.len() >= ihl + 4 {
                half(packet, ihl)
            } else {
                0
            };
            let addresses = half(packet, 12) << 32 | half(packet, 16);
            finish(fold(fold(4, addresses), u64::from(protocol) << 32 | ports))
        }
        6 if packet.len() >= 40 => {
            let next = packet[6];
            let ports = if has_ports(next) && packet.len() >= 44 { half(packet, 40) } else { 0 };
            let mut h = 6;
            for at in [8, 16, 24, 32] {
                h = fold(h, word(packet, at));
            }
            finish(fold(h, u64::from(next) << 32 | ports))
        }
        _ => finish(0),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An IPv4 packet of `protocol` from 10.1.0.`a`:`sport` to 10.2.0.`b`:`dport`.
    pub(crate) fn v4(a: u8, b: u8, protocol: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[8] = 64;
        p[9] = protocol;
        p[12..16].copy_from_slice(&[10, 1, 0, a]);
        p[16..20].copy_from_slice(&[10, 2, 0, b]);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    fn v6(sport: u16, dport: u16, next: u8) -> Vec<u8> {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&20u16.to_be_bytes());
        p[6] = next;
        p[7] = 64;
        p[8] = 0xfd;
        p[23] = 1;
        p[24] = 0xfd;
        p[25] = 2;
        p[39] = 1;
        p[40..42].copy_from_slice(&sport.to_be_bytes());
        p[42..44].copy_from_slice(&dport.to_be_bytes());
        p
    }

    /// Fixed values: a change of the function (which would move every
    /// flow to another gateway on upgrade) fails here first.
    #[test]
    fn stable_across_builds_and_runs() {
        assert_eq!(flow_hash(&v4(1, 1, 6, 40000, 5201)), flow_hash(&v4(1, 1, 6, 40000, 5201)));
        let known = [flow_hash(&v4(1, 1, 6, 40000, 5201)), flow_hash(&v6(40000, 5201, 17)), flow_hash(&[])];
        assert_eq!(known, [0xdafb_4753_5a6f_aabc, 0x54fe_4adf_2efd_c18f, 0]);
    }

    #[test]
    fn every_field_of_the_flow_counts() {
        let base = flow_hash(&v4(1, 1, 6, 40000, 5201));
        for other in [v4(2, 1, 6, 40000, 5201), v4(1, 2, 6, 40000, 5201), v4(1, 1, 17, 40000, 5201)] {
            assert_ne!(flow_hash(&other), base);
        }
        assert_ne!(flow_hash(&v4(1, 1, 6, 40001, 5201)), base, "source port");
        assert_ne!(flow_hash(&v4(1, 1, 6, 40000, 5202)), base, "destination port");
        assert_ne!(flow_hash(&v6(40000, 5201, 6)), flow_hash(&v6(40001, 5201, 6)));
        assert_ne!(flow_hash(&v6(40000, 5201, 132)), flow_hash(&v6(40000, 5202, 132)), "SCTP has ports");
    }

    #[test]
    fn what_is_not_the_flow_does_not_count() {
        let base = flow_hash(&v4(1, 1, 6, 40000, 5201));
        let mut p = v4(1, 1, 6, 40000, 5201);
        p[8] = 3; // TTL
        p[1] = 0xb8; // DSCP
        p[24..28].copy_from_slice(&[1, 2, 3, 4]); // TCP sequence number
        assert_eq!(flow_hash(&p), base);
        // ICMP and GRE have no ports: the bytes after the header are not read.
        let (mut a, mut b) = (v4(1, 1, 1, 1, 2), v4(1, 1, 1, 3, 4));
        assert_eq!(flow_hash(&a), flow_hash(&b));
        a[9] = 47;
        b[9] = 47;
        assert_eq!(flow_hash(&a), flow_hash(&b));
        // The IPv6 flow label and hop limit.
        let mut q = v6(40000, 5201, 6);
        q[1] = 0x0a;
        q[2] = 0xbc;
        q[7] = 1;
        assert_eq!(flow_hash(&q), flow_hash(&v6(40000, 5201, 6)));
    }

    #[test]
    fn fragments_of_one_datagram_hash_alike() {
        let mut first = v4(1, 1, 17, 40000, 53);
        first[6] = 0x20; // more fragments, offset 0
        let mut later = v4(1, 1, 17, 9, 9); // payload bytes, not ports
        later[6..8].copy_from_slice(&185u16.to_be_bytes());
        assert_eq!(flow_hash(&first), flow_hash(&later));
        // IPv6: a fragment header (44) hides the ports.
        assert_eq!(flow_hash(&v6(1, 2, 44)), flow_hash(&v6(3, 4, 44)));
    }

    #[test]
    fn hostile_bytes_do_not_panic() {
        for len in 0..60 {
            for b0 in [0x45, 0x4f, 0x41, 0x60, 0x00, 0xff] {
                let mut p = vec![0xffu8; len];
                if let Some(f) = p.first_mut() {
                    *f = b0;
                }
                let _ = flow_hash(&p);
            }
        }
        // An IHL past the end: no ports read.
        let (mut p, mut q) = (v4(1, 1, 6, 1, 2), v4(1, 1, 6, 3, 4));
        (p[0], q[0]) = (0x4f, 0x4f);
        assert_eq!(flow_hash(&p), flow_hash(&q));
    }
}
