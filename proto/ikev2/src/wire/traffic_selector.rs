//! Traffic selectors (RFC 7296 §3.13): address ranges with a protocol and
//! a port range, and the narrowing a responder applies to them (§2.9).
//!
//! Invariants: a selector's two addresses are of the same family and
//! `start <= end` for addresses and ports (parsing refuses anything else);
//! the intersection of two selectors is empty or again such a selector.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::reader::Reader;
use super::WireError;
use crate::ids::ts_type;

/// One traffic selector. `ip_proto` 0 means any protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    pub ip_proto: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start: IpAddr,
    pub end: IpAddr,
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn like(family: IpAddr, v: u128) -> IpAddr {
    match family {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

impl TrafficSelector {
    /// All traffic to and from a prefix (`prefix_len` is clamped to the
    /// family's width).
    pub fn subnet(addr: IpAddr, prefix_len: u8) -> TrafficSelector {
        let bits: u32 = if addr.is_ipv4() { 32 } else { 128 };
        let host_bits = bits - u32::from(prefix_len).min(bits);
        let mask: u128 = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
        let base = to_u128(addr) & !mask;
        TrafficSelector {
            ip_proto: 0,
            start_port: 0,
            end_port: 65535,
            start: like(addr, base),
            end: like(addr, base | mask),
        }
    }

    /// Whether both selectors are of the same address family.
    pub fn same_family(&self, other: &TrafficSelector) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4()
    }

    /// The traffic both selectors cover, if any.
    pub fn intersect(&self, other: &TrafficSelector) -> Option<TrafficSelector> {
        if !self.same_family(other) {
            return None;
        }
        let ip_proto = match (self.ip_proto, other.ip_proto) {
            (0, p) | (p, 0) => p,
            (a, b) if a == b => a,
            _ => return None,
        };
        let start_port = self.start_port.max(other.start_port);
        let end_port = self.end_port.min(other.end_port);
        let start = to_u128(self.start).max(to_u128(other.start));
        let end = to_u128(self.end).min(to_u128(other.end));
        if start_port > end_port || start > end {
            return None;
        }
        Some(TrafficSelector {
            ip_proto,
            start_port,
            end_port,
            start: like(self.start, start),
            end: like(self.start, end),
        })
    }

    fn parse(r: &mut Reader<'_>) -> Result<Option<TrafficSelector>, WireError> {
        let kind = r.u8()?;
        let ip_proto = r.u8()?;
        let len = r.u16()? as usize;
        if len < 4 {
            return Err(WireError::Malformed("TS"));
        }
        let mut b = Reader::new(r.bytes(len - 4)?);
        let addr_len = match kind {
            ts_type::IPV4_ADDR_RANGE => 4,
            ts_type::IPV6_ADDR_RANGE => 16,
            _ => return Ok(None), // a selector type we do not use: skipped
        };
        if len != 8 + 2 * addr_len {
            return Err(WireError::Malformed("TS"));
        }
        let start_port = b.u16()?;
        let end_port = b.u16()?;
        let addr = |b: &mut Reader<'_>| -> Result<IpAddr, WireError> {
            let raw = b.bytes(addr_len)?;
            Ok(match <[u8; 4]>::try_from(raw) {
                Ok(v4) => IpAddr::V4(v4.into()),
                Err(_) => {
                    let v6 = <[u8; 16]>::try_from(raw).map_err(|_| WireError::Malformed("TS"))?;
                    IpAddr::V6(v6.into())
                }
            })
        };
        let start = addr(&mut b)?;
        let end = addr(&mut b)?;
        if start_port > end_port || to_u128(start) > to_u128(end) {
            return Err(WireError::Malformed("TS"));
        }
        Ok(Some(TrafficSelector { ip_proto, start_port, end_port, start, end }))
    }

    fn write(&self, out: &mut Vec<u8>) {
        let (kind, len) =
            if self.start.is_ipv4() { (ts_type::IPV4_ADDR_RANGE, 16u16) } else { (ts_type::IPV6_ADDR_RANGE, 40) };
        out.push(kind);
        out.push(self.ip_proto);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.start_port.to_be_bytes());
        out.extend_from_slice(&self.end_port.to_be_bytes());
        for a in [self.start, self.end] {
            match a {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
        }
    }
}

impl fmt::Display for TrafficSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, e) = (to_u128(self.start), to_u128(self.end));
        let span = e - s;
        if span.wrapping_add(1) & span == 0 && s & span == 0 {
            let bits = if self.start.is_ipv4() { 32 } else { 128 };
            write!(f, "{}/{}", self.start, bits - (128 - span.leading_zeros()))?;
        } else {
            write!(f, "{}..{}", self.start, self.end)?;
        }
        // In the notation of strongSwan and of Causeway's local_ts and
        // remote_ts, so that a log line compares with the configuration.
        // Ports are the raw 16 bits (an ICMP type is the high octet), which
        // the configuration reads back as such from 256 up; 1 to 255 (type
        // 0 with a code), which a peer may send but no configuration can
        // say, print as they are.
        let name = match self.ip_proto {
            1 => Some("icmp"),
            6 => Some("tcp"),
            17 => Some("udp"),
            58 => Some("ipv6-icmp"),
            132 => Some("sctp"),
            _ => None,
        };
        let full = (self.start_port, self.end_port) == (0, u16::MAX);
        if self.ip_proto == 0 && full {
            return Ok(());
        }
        match name {
            Some(n) => write!(f, "[{n}")?,
            None => write!(f, "[{}", self.ip_proto)?,
        }
        match (self.start_port, self.end_port) {
            _ if full => f.write_str("]"),
            (a, b) if a == b => write!(f, "/{a}]"),
            (a, b) => write!(f, "/{a}-{b}]"),
        }
    }
}

/// The most selectors a TS payload holds: its count is one octet.
pub const MAX_SELECTORS: usize = 255;

/// Parses a TSi or TSr payload's body (unknown selector types skipped).
pub fn parse_ts(body: &[u8]) -> Result<Vec<TrafficSelector>, WireError> {
    let mut r = Reader::new(body);
    let count = r.u8()? as usize;
    r.bytes(3)?;
    let mut out = Vec::new();
    for _ in 0..count {
        if let Some(ts) = TrafficSelector::parse(&mut r)? {
            out.push(ts);
        }
    }
    if !r.is_empty() {
        return Err(WireError::Malformed("TS"));
    }
    Ok(out)
}

/// Appends a TSi or TSr payload's body. The configuration and `narrow`
/// keep lists within [`MAX_SELECTORS`]; past it the payload would
/// misstate its count, so only the first ones are written (a narrowing,
/// which RFC 7296 §2.9 allows either end).
pub fn write_ts(list: &[TrafficSelector], out: &mut Vec<u8>) {
    let list = &list[..list.len().min(MAX_SELECTORS)];
    out.push(list.len() as u8);
    out.extend_from_slice(&[0, 0, 0]);
    for ts in list {
        ts.write(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str, len: u8) -> TrafficSelector {
        TrafficSelector::subnet(s.parse().expect("address"), len)
    }

    #[test]
    fn selectors_round_trip_and_print_as_prefixes() {
        let list = vec![net("10.1.0.0", 16), net("fd00::", 8), net("0.0.0.0", 0)];
        let mut out = Vec::new();
        write_ts(&list, &mut out);
        assert_eq!(parse_ts(&out), Ok(list));
        assert_eq!(net("10.1.2.3", 16).to_string(), "10.1.0.0/16");
        assert_eq!(net("0.0.0.0", 0).to_string(), "0.0.0.0/0");
        assert_eq!(net("fd00::1", 128).to_string(), "fd00::1/128");
    }

    #[test]
    fn narrowed_selectors_print_in_the_configurations_notation() {
        let with = |proto: u8, ports: (u16, u16)| TrafficSelector {
            ip_proto: proto,
            start_port: ports.0,
            end_port: ports.1,
            ..net("10.2.0.0", 16)
        };
        assert_eq!(with(6, (0, u16::MAX)).to_string(), "10.2.0.0/16[tcp]");
        assert_eq!(with(6, (443, 443)).to_string(), "10.2.0.0/16[tcp/443]");
        assert_eq!(with(17, (1000, 2000)).to_string(), "10.2.0.0/16[udp/1000-2000]");
        assert_eq!(with(1, (0x0800, 0x08ff)).to_string(), "10.2.0.0/16[icmp/2048-2303]");
        assert_eq!(with(47, (0, u16::MAX)).to_string(), "10.2.0.0/16[47]");
        // What a peer may send though no configuration could say it.
        assert_eq!(with(0, (53, 53)).to_string(), "10.2.0.0/16[0/53]");
        let v6 = TrafficSelector { ip_proto: 58, start_port: 0x8000, end_port: 0x8000, ..net("fd00::", 8) };
        assert_eq!(v6.to_string(), "fd00::/8[ipv6-icmp/32768]");
    }

    #[test]
    fn a_list_past_what_the_count_holds_is_written_as_its_first_255() {
        let list: Vec<_> = (0..300u32).map(|i| net(&std::net::Ipv4Addr::from(i << 8).to_string(), 24)).collect();
        let mut out = Vec::new();
        write_ts(&list, &mut out);
        assert_eq!(parse_ts(&out), Ok(list[..MAX_SELECTORS].to_vec()));
    }

    #[test]
    fn intersection_narrows_and_refuses_disjoint() {
        let wide = net("10.0.0.0", 8);
        let narrow = net("10.2.0.0", 16);
        assert_eq!(wide.intersect(&narrow), Some(narrow));
        assert_eq!(narrow.intersect(&wide), Some(narrow));
        assert_eq!(narrow.intersect(&net("10.3.0.0", 16)), None);
        assert_eq!(wide.intersect(&net("fd00::", 8)), None);
        let mut tcp = wide;
        tcp.ip_proto = 6;
        let mut udp = wide;
        udp.ip_proto = 17;
        assert_eq!(tcp.intersect(&udp), None);
        assert_eq!(tcp.intersect(&narrow).map(|t| t.ip_proto), Some(6));
    }

    #[test]
    fn reversed_ranges_are_refused() {
        let mut out = Vec::new();
        let mut ts = net("10.0.0.0", 8);
        std::mem::swap(&mut ts.start, &mut ts.end);
        write_ts(&[ts], &mut out);
        assert!(parse_ts(&out).is_err());
    }
}
