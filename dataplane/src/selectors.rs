//! The traffic selectors a child SA was negotiated for (RFC 7296 §2.9), as
//! the receive and send paths check them. RFC 4301 §5.2 has a receiver drop a
//! decrypted packet that its SA's selectors do not cover: a peer that
//! agreed to carry 10.1.0.0/16 → 10.2.0.0/16 must not reach other prefixes
//! behind this gateway through that SA, whatever its allowed_ips say (the
//! source filter checks those separately).
//!
//! An SA covers the cross product of its lists: a packet from the peer
//! matches when its source is in one of the remote selectors and its
//! destination in one of the local ones. An SA whose selectors take every
//! packet of both families (the route-based default, 0.0.0.0/0 and ::/0)
//! has none (`Selectors::new` returns None), so the common case costs
//! nothing per packet; one that takes every packet of one family (a
//! route-based peer that negotiates 0.0.0.0/0 only) costs a look at the
//! version.
//!
//! Ports are known for TCP, UDP, SCTP, DCCP and UDP-Lite in a first
//! fragment. ICMP (in IPv4) and ICMPv6 (in IPv6) have none; RFC 4301
//! §4.4.1.1 and RFC 7296 §3.13.1 put their message type and code in a
//! selector's port fields instead, the type in the high octet and the
//! code in the low one, so a range such as 0x0800-0x08ff is "echo
//! requests, any code". A packet's type and code stand for its port on
//! both sides: a peer narrows one of the two selectors (strongSwan reads
//! the type and code from whichever is narrowed), and the other, left at
//! all ports, takes any. strongSwan writes `[icmp/8]` (a number below 256
//! is a type) and `[icmp/2048]` alike as 0x0800-0x0800, type 8 code 0 as
//! the RFC reads it, while the Linux policy it installs from such a
//! selector takes a code of 0 as any code (XFRM has no ranges of type and
//! code); Causeway reads the range as written, so from such a peer other
//! codes of the type count as outside its selectors. For any other protocol a selector with a port
//! range narrower than all ports does not match. ICMP errors about a flow
//! of a port-narrowed SA (Packet Too Big among them) are dropped, as
//! Linux's IPsec does by default (RFC 4301 §6.2 leaves that to the
//! implementation). The IKE core refuses OPAQUE selectors (ports 65535-0)
//! when it parses them, so none reach here.

use std::net::IpAddr;

use causeway_config::protocol_has_ports as has_ports;

/// One selector: a range of addresses of one family, an IP protocol (0 is
/// any) and a range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selector {
    pub proto: u8,
    pub ports: (u16, u16),
    pub start: IpAddr,
    pub end: IpAddr,
}

/// The part of a packet a selector looks at, on one side of it.
struct Side {
    addr: IpAddr,
    port: Option<u16>,
}

impl Selector {
    fn is_everything(&self) -> bool {
        let all_addresses = match (self.start, self.end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => s.is_unspecified() && e.to_bits() == u32::MAX,
            (IpAddr::V6(s), IpAddr::V6(e)) => s.is_unspecified() && e.to_bits() == u128::MAX,
            _ => false,
        };
        all_addresses && self.proto == 0 && self.ports == (0, u16::MAX)
    }

    fn matches(&self, proto: u8, side: &Side) -> bool {
        let in_range = match (self.start, self.end, side.addr) {
            (IpAddr::V4(s), IpAddr::V4(e), IpAddr::V4(a)) => s <= a && a <= e,
            (IpAddr::V6(s), IpAddr::V6(e), IpAddr::V6(a)) => s <= a && a <= e,
            _ => false,
        };
        let any_port = self.ports == (0, u16::MAX);
        // ICMP's type and code count as ports only for a selector that
        // names ICMP: RFC 7296 has the ports of a selector for any
        // protocol (0) be all of them, so a narrowed one can only mean
        // the protocols that have ports.
        let port_applies = self.proto != 0 || has_ports(proto);
        in_range
            && (self.proto == 0 || self.proto == proto)
            && (any_port || port_applies && side.port.is_some_and(|p| self.ports.0 <= p && p <= self.ports.1))
    }
}

/// What a child SA may carry, seen from this gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selectors {
    local: Vec<Selector>,
    remote: Vec<Selector>,
    /// When every selector takes all of its family: whether IPv4, and
    /// whether IPv6, are carried, which is all there is to check.
    families: Option<(bool, bool)>,
}

impl Selectors {
    /// None when the selectors take every packet of both families.
    pub fn new(local: Vec<Selector>, remote: Vec<Selector>) -> Option<Selectors> {
        let all_of = |list: &[Selector], v6: bool| list.iter().any(|s| s.is_everything() && s.start.is_ipv6() == v6);
        let carried = |v6: bool| all_of(&local, v6) && all_of(&remote, v6);
        if carried(false) && carried(true) {
            return None;
        }
        let whole = local.iter().chain(&remote).all(Selector::is_everything);
        let families = whole.then(|| (carried(false), carried(true)));
        Some(Selectors { local, remote, families })
    }

    /// Whether the SA carries `packet` (a whole inner IP packet) from the
    /// peer: its source in a remote selector, its destination in a local one.
    pub fn admits(&self, packet: &[u8]) -> bool {
        self.covers(packet, &self.remote, &self.local)
    }

    /// Whether the SA may carry `packet` to the peer: its source in a local
    /// selector, its destination in a remote one. The send path drops what
    /// it may not (RFC 4301 §5.1), which the peer would drop anyway after
    /// the wire and its cipher had carried it.
    pub fn admits_outbound(&self, packet: &[u8]) -> bool {
        self.covers(packet, &self.local, &self.remote)
    }

    fn covers(&self, packet: &[u8], sources: &[Selector], destinations: &[Selector]) -> bool {
        if let Some((v4, v6)) = self.families {
            return match packet.first().map(|b| b >> 4) {
                Some(4) => v4 && packet.len() >= 20,
                Some(6) => v6 && packet.len() >= 40,
                _ => false,
            };
        }
        let Some((proto, source, destination)) = parse(packet) else {
            return false;
        };
        sources.iter().any(|s| s.matches(proto, &source)) && destinations.iter().any(|s| s.matches(proto, &destination))
    }
}

/// The upper-layer protocol, source and destination of an IP packet, with
/// ports, or ICMP's type and code on both sides, where it has them.
fn parse(p: &[u8]) -> Option<(u8, Side, Side)> {
    let (proto, src, dst, upper) = match p.first()? >> 4 {
        // A header length under 20 bytes would put the ports inside the IP
        // header; such a packet is no packet, and no selector covers it.
        4 if p.len() >= 20 && p[0] & 0x0f >= 5 => {
            let ihl = (p[0] & 0x0f) as usize * 4;
            let first_fragment = u16::from_be_bytes([p[6], p[7]]) & 0x1fff == 0;
            let src = IpAddr::from(<[u8; 4]>::try_from(&p[12..16]).ok()?);
            let dst = IpAddr::from(<[u8; 4]>::try_from(&p[16..20]).ok()?);
            (p[9], src, dst, first_fragment.then_some(ihl))
        }
        6 if p.len() >= 40 => {
            let src = IpAddr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?);
            let dst = IpAddr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?);
            let (proto, upper) = crate::ipv6::upper_layer(p);
            (proto, src, dst, upper)
        }
        _ => return None,
    };
    let icmp = matches!((p[0] >> 4, proto), (4, 1) | (6, 58));
    let ports = upper.and_then(|at| {
        if has_ports(proto) {
            let b = p.get(at..at + 4)?;
            Some((u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]])))
        } else if icmp {
            let b = p.get(at..at + 2)?;
            let type_and_code = u16::from_be_bytes([b[0], b[1]]);
            Some((type_and_code, type_and_code))
        } else {
            None
        }
    });
    Some((proto, Side { addr: src, port: ports.map(|p| p.0) }, Side { addr: dst, port: ports.map(|p| p.1) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(start: &str, end: &str) -> Selector {
        Selector { proto: 0, ports: (0, u16::MAX), start: start.parse().unwrap(), end: end.parse().unwrap() }
    }

    fn any4() -> Selector {
        net("0.0.0.0", "255.255.255.255")
    }

    fn any6() -> Selector {
        net("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
    }

    /// An IPv4 packet of `proto` with ports 1000 → 80 (when it has ports).
    fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, fragment_offset: u16) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[6..8].copy_from_slice(&fragment_offset.to_be_bytes());
        p[9] = proto;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..24].copy_from_slice(&[0x03, 0xe8, 0, 80]);
        p
    }

    /// An IPv6 packet with `ext` (next header, bytes) before a TCP header with ports 1000 → 80.
    fn v6(src: &str, dst: &str, ext: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[6] = ext.first().map_or(6, |e| e.0);
        p[8..24].copy_from_slice(&src.parse::<std::net::Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&dst.parse::<std::net::Ipv6Addr>().unwrap().octets());
        for (i, (_, bytes)) in ext.iter().enumerate() {
            let mut h = bytes.clone();
            h[0] = ext.get(i + 1).map_or(6, |e| e.0);
            p.extend_from_slice(&h);
        }
        p.extend_from_slice(&[0x03, 0xe8, 0, 80, 0, 0, 0, 0]);
        p
    }

    #[test]
    fn the_route_based_default_needs_no_check() {
        assert_eq!(Selectors::new(vec![any4(), any6()], vec![any6(), any4()]), None);
        assert!(Selectors::new(vec![any4()], vec![any4(), any6()]).is_some(), "IPv6 is not carried");
        let mut tcp = any4();
        tcp.proto = 6;
        assert!(Selectors::new(vec![tcp, any6()], vec![any4(), any6()]).is_some());
    }

    #[test]
    fn one_whole_family_is_told_by_the_version_alone() {
        let v4_only = Selectors::new(vec![any4()], vec![any4()]).unwrap();
        assert_eq!(v4_only.families, Some((true, false)));
        assert!(v4_only.admits(&v4([10, 9, 0, 5], [192, 0, 2, 4], 1, 0)));
        assert!(!v4_only.admits(&v6("fd00:1::5", "fd00:2::4", &[])), "IPv6 is not carried");
        assert!(!v4_only.admits(&[0x45, 0, 0]), "too short");
        let v6_dst = Selectors::new(vec![any4(), any6()], vec![any4()]).unwrap();
        assert_eq!(v6_dst.families, Some((true, false)), "IPv6 needs both ends");
        assert_eq!(Selectors::new(vec![net("10.2.0.0", "10.2.255.255")], vec![any4()]).unwrap().families, None);
    }

    #[test]
    fn source_and_destination_must_both_be_covered() {
        let s = Selectors::new(vec![net("10.2.0.0", "10.2.255.255")], vec![net("10.1.0.0", "10.1.255.255")]).unwrap();
        assert!(s.admits(&v4([10, 1, 0, 5], [10, 2, 3, 4], 6, 0)));
        assert!(!s.admits(&v4([10, 9, 0, 5], [10, 2, 3, 4], 6, 0)), "source outside the remote selector");
        assert!(!s.admits(&v4([10, 1, 0, 5], [10, 3, 3, 4], 6, 0)), "destination outside the local selector");
        assert!(!s.admits(&v4([10, 2, 3, 4], [10, 1, 0, 5], 6, 0)), "the reverse direction");
        assert!(!s.admits(&v6("fd00:1::5", "fd00:2::4", &[])), "a family not negotiated");
        assert!(!s.admits(&[0x45, 0, 0]), "too short to say");
    }

    #[test]
    fn outbound_is_the_mirror_of_inbound() {
        let s = Selectors::new(vec![net("10.2.0.0", "10.2.255.255")], vec![net("10.1.0.0", "10.1.255.255")]).unwrap();
        assert!(s.admits_outbound(&v4([10, 2, 3, 4], [10, 1, 0, 5], 6, 0)));
        assert!(!s.admits_outbound(&v4([10, 1, 0, 5], [10, 2, 3, 4], 6, 0)), "the inbound direction");
        assert!(!s.admits_outbound(&v4([10, 9, 3, 4], [10, 1, 0, 5], 6, 0)), "source outside the local selector");
        assert!(!s.admits_outbound(&v4([10, 2, 3, 4], [10, 3, 0, 5], 6, 0)), "destination outside the remote one");
        let mut to_80 = net("10.1.0.0", "10.1.255.255");
        (to_80.proto, to_80.ports) = (6, (80, 80));
        let s = Selectors::new(vec![net("10.2.0.0", "10.2.255.255")], vec![to_80]).unwrap();
        assert!(s.admits_outbound(&v4([10, 2, 3, 4], [10, 1, 0, 5], 6, 0)), "TCP from port 1000 to 80");
        assert!(!s.admits_outbound(&v4([10, 2, 3, 4], [10, 1, 0, 5], 17, 0)), "UDP");
        let v4_only = Selectors::new(vec![any4()], vec![any4()]).unwrap();
        assert!(v4_only.admits_outbound(&v4([10, 2, 3, 4], [192, 0, 2, 4], 1, 0)));
        assert!(!v4_only.admits_outbound(&v6("fd00:1::5", "fd00:2::4", &[])));
    }

    #[test]
    fn protocols_and_ports_narrow_it() {
        let mut web = net("10.2.0.0", "10.2.255.255");
        (web.proto, web.ports) = (6, (80, 80));
        let s = Selectors::new(vec![web], vec![net("10.1.0.0", "10.1.255.255")]).unwrap();
        assert!(s.admits(&v4([10, 1, 0, 5], [10, 2, 3, 4], 6, 0)), "TCP to port 80");
        assert!(!s.admits(&v4([10, 1, 0, 5], [10, 2, 3, 4], 17, 0)), "UDP");
        assert!(!s.admits(&v4([10, 1, 0, 5], [10, 2, 3, 4], 6, 100)), "a later fragment has no ports");
        let mut from_1000 = net("10.1.0.0", "10.1.255.255");
        from_1000.ports = (1000, 1000);
        let s = Selectors::new(vec![net("10.2.0.0", "10.2.255.255")], vec![from_1000]).unwrap();
        assert!(s.admits(&v4([10, 1, 0, 5], [10, 2, 3, 4], 17, 0)), "source port 1000");
        // v4's ICMP packet has type 3, code 232: 0x03e8 is 1000, the port.
        assert!(!s.admits(&v4([10, 1, 0, 5], [10, 2, 3, 4], 1, 0)), "ICMP's type and code are not ports of protocol 0");
        // Source port 2000, and an IP ID of 1000 where a header length of 4
        // bytes would put the source port.
        let mut short_header = v4([10, 1, 0, 5], [10, 2, 3, 4], 17, 0);
        short_header[20..22].copy_from_slice(&2000u16.to_be_bytes());
        short_header[4..6].copy_from_slice(&1000u16.to_be_bytes());
        assert!(!s.admits(&short_header), "source port 2000");
        short_header[0] = 0x41;
        assert!(!s.admits(&short_header), "a header length under 20 bytes is refused, not read");
        assert!(!s.admits_outbound(&short_header));
    }

    /// An ICMP (IPv4) or ICMPv6 (IPv6) packet 10.1.0.5 → 10.2.3.4 or
    /// fd00:1::5 → fd00:2::4 of a type and code.
    fn icmp(v6: bool, ty: u8, code: u8) -> Vec<u8> {
        let mut p = if v6 { self::v6("fd00:1::5", "fd00:2::4", &[]) } else { v4([10, 1, 0, 5], [10, 2, 3, 4], 1, 0) };
        let at = if v6 {
            p[6] = 58;
            40
        } else {
            20
        };
        p[at..at + 4].copy_from_slice(&[ty, code, 0, 0]);
        p
    }

    #[test]
    fn icmp_is_narrowed_by_type_and_code_on_either_side() {
        let (local4, remote4) = (net("10.2.0.0", "10.2.255.255"), net("10.1.0.0", "10.1.255.255"));
        let (local6, remote6) = (net("fd00:2::", "fd00:2::ffff"), net("fd00:1::", "fd00:1::ffff"));
        // Echo requests of any code (type 8, or 128 in ICMPv6), narrowed
        // on the remote side and then on the local one.
        for narrow_remote in [true, false] {
            let with = |sel: Selector, proto: u8, ty: u8| {
                let mut s = sel;
                (s.proto, s.ports) = (proto, (u16::from(ty) << 8, u16::from(ty) << 8 | 0xff));
                s
            };
            let (l4, r4) = if narrow_remote { (local4, with(remote4, 1, 8)) } else { (with(local4, 1, 8), remote4) };
            let (l6, r6) =
                if narrow_remote { (local6, with(remote6, 58, 128)) } else { (with(local6, 58, 128), remote6) };
            let s = Selectors::new(vec![l4, l6], vec![r4, r6]).unwrap();
            assert!(s.admits(&icmp(false, 8, 0)), "an echo request");
            assert!(s.admits(&icmp(false, 8, 5)), "an echo request of another code");
            assert!(!s.admits(&icmp(false, 0, 0)), "an echo reply");
            assert!(!s.admits(&icmp(false, 3, 4)), "fragmentation needed");
            assert!(s.admits(&icmp(true, 128, 0)), "an ICMPv6 echo request");
            assert!(!s.admits(&icmp(true, 129, 0)), "an ICMPv6 echo reply");
            assert!(!s.admits(&icmp(true, 8, 0)), "type 8 is not an ICMPv6 echo request");
            assert!(!s.admits(&v4([10, 1, 0, 5], [10, 2, 3, 4], 17, 0)), "UDP");
            let mut later = icmp(false, 8, 0);
            later[6..8].copy_from_slice(&100u16.to_be_bytes());
            assert!(!s.admits(&later), "a later fragment has no type");
        }
        // One type and code exactly: "destination unreachable, fragmentation needed".
        let mut ptb = remote4;
        (ptb.proto, ptb.ports) = (1, (0x0304, 0x0304));
        let s = Selectors::new(vec![local4], vec![ptb]).unwrap();
        assert!(s.admits(&icmp(false, 3, 4)));
        assert!(!s.admits(&icmp(false, 3, 1)), "host unreachable");
        // Outbound, the same range on the local side: this end sends the
        // echo requests.
        let mut requests = local4;
        (requests.proto, requests.ports) = (1, (0x0800, 0x08ff));
        let s = Selectors::new(vec![requests], vec![remote4]).unwrap();
        let mut out = icmp(false, 8, 0);
        out[12..20].copy_from_slice(&[10, 2, 3, 4, 10, 1, 0, 5]);
        assert!(s.admits_outbound(&out), "an echo request to the peer");
        out[20] = 0;
        assert!(!s.admits_outbound(&out), "an echo reply to the peer");
        // ICMPv6 behind extension headers, and in fragments.
        let mut requests6 = remote6;
        (requests6.proto, requests6.ports) = (58, (0x8000, 0x80ff));
        let s = Selectors::new(vec![local6], vec![requests6]).unwrap();
        let behind = |ext: &[(u8, Vec<u8>)], ty: u8| {
            let mut p = v6("fd00:1::5", "fd00:2::4", ext);
            let at = p.len() - 8;
            p[at..at + 2].copy_from_slice(&[ty, 0]);
            let last =
                if ext.is_empty() { 6 } else { 40 + ext[..ext.len() - 1].iter().map(|e| e.1.len()).sum::<usize>() };
            p[last] = 58;
            p
        };
        let hop = (0, vec![0u8; 8]);
        assert!(s.admits(&behind(std::slice::from_ref(&hop), 128)), "after a hop-by-hop header");
        assert!(!s.admits(&behind(std::slice::from_ref(&hop), 129)), "an echo reply after it");
        assert!(s.admits(&behind(&[(44, vec![0u8; 8])], 128)), "in a first fragment");
        assert!(!s.admits(&behind(&[(44, vec![0, 0, 0x01, 0x00, 0, 0, 0, 1])], 128)), "in a later fragment");
        // ICMP as a protocol without narrowing takes every type.
        let mut all = remote4;
        all.proto = 1;
        let s = Selectors::new(vec![local4], vec![all]).unwrap();
        assert!(s.admits(&icmp(false, 0, 0)) && s.admits(&icmp(false, 13, 0)));
        assert!(!s.admits(&v4([10, 1, 0, 5], [10, 2, 3, 4], 6, 0)), "TCP");
    }

    #[test]
    fn ipv6_extension_headers_are_walked_to_the_ports() {
        let mut web = net("fd00:2::", "fd00:2::ffff");
        (web.proto, web.ports) = (6, (80, 80));
        let s = Selectors::new(vec![web], vec![net("fd00:1::", "fd00:1::ffff")]).unwrap();
        assert!(s.admits(&v6("fd00:1::5", "fd00:2::4", &[])));
        let hop = (0, vec![0u8; 8]);
        let dest = (60, vec![0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(s.admits(&v6("fd00:1::5", "fd00:2::4", &[hop.clone(), dest])));
        let first = (44, vec![0u8; 8]);
        assert!(s.admits(&v6("fd00:1::5", "fd00:2::4", &[hop.clone(), first])), "a first fragment");
        let ah = (51, vec![0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(s.admits(&v6("fd00:1::5", "fd00:2::4", &[hop.clone(), ah])), "past an AH header");
        let later = (44, vec![0, 0, 0x01, 0x00, 0, 0, 0, 1]);
        assert!(!s.admits(&v6("fd00:1::5", "fd00:2::4", &[hop, later])), "a later fragment");
        assert!(!s.admits(&v6("fd00:1::5", "fd00:2::1:4", &[])), "outside the range");
    }
}
