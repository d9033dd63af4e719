//! Traffic selectors as an IPsec peer's `local_ts` and `remote_ts` write
//! them: a prefix, and optionally in square brackets one IP protocol and a
//! port or range of ports, in strongSwan's notation (`10.1.0.0/16`,
//! `10.1.0.0/16[tcp]`, `10.1.0.0/16[tcp/443]`, `10.1.0.0/16[udp/1000-2000]`),
//! so a swanctl.conf selector reads the same here.
//!
//! For ICMP and ICMPv6 the port fields hold the type times 256 plus the
//! code (RFC 4301 §4.4.1.1, RFC 7296 §3.13.1). As strongSwan does, a
//! number below 256 is a type (code 0): `[icmp/8]` and `[icmp/2048]` are
//! both an echo request of code 0, and `[icmp/2048-2303]` is an echo
//! request of any code. Numbers are read as strongSwan reads them (`0x`
//! for hexadecimal, a leading 0 for octal), so an imported swanctl.conf
//! means what it meant there. Protocol names are the few an operator uses
//! (tcp, udp, icmp, ipv6-icmp, sctp); anything else is written as its
//! number. Service names (`[tcp/https]`) are not read: `/etc/services`
//! differs between machines, and a number does not.
//!
//! Ports narrow only protocols that have them (TCP, UDP, SCTP, DCCP,
//! UDP-Lite) and ICMP of the prefix's family: the data plane reads no
//! ports of any other, so such a selector would carry nothing, and is
//! refused.

use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;

use crate::prefix::{parse_allowed_ip, PrefixError};

/// The protocols known by name, as `/etc/protocols` names them.
const PROTOCOLS: [(&str, u8); 6] =
    [("tcp", 6), ("udp", 17), ("icmp", 1), ("ipv6-icmp", 58), ("icmpv6", 58), ("sctp", 132)];

/// A selector refused; its text says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    #[error("\"{0}\" does not close its [protocol/port] with ]")]
    Unclosed(String),
    #[error("\"{0}\" has text after its [protocol/port]")]
    Trailing(String),
    #[error("protocol {0} has no ports: only TCP, UDP, SCTP, DCCP, UDP-Lite and ICMP can be narrowed by port")]
    NoPorts(u8),
    #[error("{0} on an {1} prefix carries nothing: write {2}")]
    WrongIcmp(&'static str, &'static str, &'static str),
    #[error(
        "\"{0}\" is not a protocol: write tcp, udp, icmp, ipv6-icmp, sctp or a number from 0 to 255 (any: leave it out)"
    )]
    Protocol(String),
    #[error("\"{0}\" is not a port: write a number from 0 to 65535, or a range such as 1000-2000 (service names are not read)")]
    Port(String),
    #[error("the port range {0}-{1} runs backwards")]
    Backwards(u16, u16),
    #[error("a port needs a protocol: RFC 7296 has a selector of any protocol take every port")]
    PortWithoutProtocol,
    #[error("OPAQUE ports are not supported: leave the port out to take every one")]
    Opaque,
}

/// A prefix, narrowed to one protocol (0: any) and a range of its ports
/// (every port unless narrowed). Invariant: `proto == 0` implies every port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficSelector {
    pub net: IpNet,
    pub proto: u8,
    pub ports: (u16, u16),
}

impl TrafficSelector {
    /// All traffic to and from `net`.
    pub fn prefix(net: IpNet) -> TrafficSelector {
        TrafficSelector { net, proto: 0, ports: (0, u16::MAX) }
    }
}

impl From<IpNet> for TrafficSelector {
    fn from(net: IpNet) -> TrafficSelector {
        TrafficSelector::prefix(net)
    }
}

/// A number as C's strtol with base 0 reads it, as strongSwan does.
fn number(text: &str) -> Option<u32> {
    let t = text.trim();
    let (digits, radix) = match (t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")), t.len()) {
        (Some(hex), _) => (hex, 16),
        (None, 2..) if t.starts_with('0') => (&t[1..], 8),
        _ => (t, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

fn protocol(text: &str) -> Result<u8, SelectorError> {
    let t = text.trim().to_ascii_lowercase();
    PROTOCOLS
        .iter()
        .find(|(name, _)| *name == t)
        .map(|&(_, p)| p)
        .or_else(|| number(&t).and_then(|n| u8::try_from(n).ok()))
        .ok_or_else(|| SelectorError::Protocol(text.trim().to_string()))
}

/// Whether a protocol's header starts with its source and destination
/// ports (TCP, UDP, DCCP, SCTP, UDP-Lite): the one list both what a
/// configuration may narrow and what the data plane's selectors read.
#[inline]
pub fn protocol_has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 33 | 132 | 136)
}

fn ports(text: &str, icmp: bool) -> Result<(u16, u16), SelectorError> {
    let t = text.trim().to_ascii_lowercase();
    match t.as_str() {
        "opaque" => return Err(SelectorError::Opaque),
        "any" | "" => return Ok((0, u16::MAX)),
        _ => {}
    }
    let port = |s: &str| -> Result<u16, SelectorError> {
        let n = number(s).and_then(|n| u16::try_from(n).ok()).ok_or_else(|| SelectorError::Port(t.clone()))?;
        // strongSwan's reading: below 256, an ICMP type of code 0.
        Ok(if icmp && n < 256 { n << 8 } else { n })
    };
    let (from, to) = match t.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(&t)?, port(&t)?),
    };
    if from > to {
        return Err(SelectorError::Backwards(from, to));
    }
    Ok((from, to))
}

impl FromStr for TrafficSelector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<TrafficSelector, SelectorError> {
        let text = text.trim();
        let Some((prefix, rest)) = text.split_once('[') else {
            return Ok(TrafficSelector::prefix(parse_allowed_ip(text)?));
        };
        let net = parse_allowed_ip(prefix)?;
        let (inside, after) = rest.split_once(']').ok_or_else(|| SelectorError::Unclosed(text.to_string()))?;
        if !after.trim().is_empty() {
            return Err(SelectorError::Trailing(text.to_string()));
        }
        let (proto, port) = match inside.split_once('/') {
            Some((p, port)) => (p, Some(port)),
            None => (inside, None),
        };
        let proto = match proto.trim().to_ascii_lowercase().as_str() {
            "" | "any" => 0,
            p => protocol(p)?,
        };
        let v6 = matches!(net, IpNet::V6(_));
        match (proto, v6) {
            (1, true) => return Err(SelectorError::WrongIcmp("icmp", "IPv6", "ipv6-icmp")),
            (58, false) => return Err(SelectorError::WrongIcmp("ipv6-icmp", "IPv4", "icmp")),
            _ => {}
        }
        let ports = port.map(|p| ports(p, matches!(proto, 1 | 58))).transpose()?.unwrap_or((0, u16::MAX));
        if ports != (0, u16::MAX) {
            if proto == 0 {
                return Err(SelectorError::PortWithoutProtocol);
            }
            if !protocol_has_ports(proto) && !matches!(proto, 1 | 58) {
                return Err(SelectorError::NoPorts(proto));
            }
        }
        Ok(TrafficSelector { net, proto, ports })
    }
}

/// Written as it is read: the prefix alone when it takes everything.
impl fmt::Display for TrafficSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.net)?;
        if self.proto == 0 {
            return Ok(());
        }
        let name = PROTOCOLS.iter().find(|&&(_, p)| p == self.proto).map(|&(n, _)| n.to_string());
        let name = name.unwrap_or_else(|| self.proto.to_string());
        match self.ports {
            (0, u16::MAX) => write!(f, "[{name}]"),
            (a, b) if a == b => write!(f, "[{name}/{a}]"),
            (a, b) => write!(f, "[{name}/{a}-{b}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Result<TrafficSelector, SelectorError> {
        s.parse()
    }

    #[test]
    fn strongswan_notation_is_read_and_written_back() {
        for (text, proto, ports) in [
            ("10.1.0.0/16", 0, (0, u16::MAX)),
            ("10.1.0.0/16[tcp]", 6, (0, u16::MAX)),
            ("10.1.0.0/16[tcp/443]", 6, (443, 443)),
            ("10.1.0.0/16[udp/1000-2000]", 17, (1000, 2000)),
            ("10.1.0.0/16[icmp/2048-2303]", 1, (2048, 2303)),
            ("fd00:1::/64[ipv6-icmp/32768]", 58, (32768, 32768)),
            ("10.1.0.0/16[icmp/768-1023]", 1, (768, 1023)),
            ("10.1.0.0/16[47]", 47, (0, u16::MAX)),
        ] {
            let t = ts(text).unwrap();
            assert_eq!((t.proto, t.ports), (proto, ports), "{text}");
            assert_eq!(t.to_string(), text);
        }
        assert_eq!(ts(" 10.1.0.0/16[ TCP / 443 ] ").unwrap().to_string(), "10.1.0.0/16[tcp/443]");
        assert_eq!(ts("10.1.0.0/16[any]").unwrap(), TrafficSelector::prefix("10.1.0.0/16".parse().unwrap()));
        assert_eq!(ts("10.1.0.0/16[tcp/any]").unwrap().ports, (0, u16::MAX));
        assert_eq!(ts("fd00::/8[icmpv6]").unwrap().to_string(), "fd00::/8[ipv6-icmp]");
        assert_eq!(ts("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        // As strongSwan reads them: an empty or "any" port, any case,
        // strtol's hex and octal, an ICMP type below 256.
        assert_eq!(ts("10.1.0.0/16[tcp/]").unwrap().to_string(), "10.1.0.0/16[tcp]");
        assert_eq!(ts("10.1.0.0/16[ANY]").unwrap().to_string(), "10.1.0.0/16");
        assert_eq!(ts("10.1.0.0/16[0x11/0x35]").unwrap().to_string(), "10.1.0.0/16[udp/53]");
        assert_eq!(ts("10.1.0.0/16[tcp/010]").unwrap().ports, (8, 8));
        assert_eq!(ts("10.1.0.0/16[icmp/8]").unwrap().ports, (0x0800, 0x0800));
        assert_eq!(ts("10.1.0.0/16[icmp/3-4]").unwrap().ports, (0x0300, 0x0400));
        assert_eq!(ts("fd00::/8[ipv6-icmp/128]").unwrap().to_string(), "fd00::/8[ipv6-icmp/32768]");
        assert_eq!(ts("10.1.0.0/16[tcp/8]").unwrap().ports, (8, 8), "only ICMP's numbers are types");
    }

    #[test]
    fn mistakes_say_what_to_write() {
        assert!(matches!(ts("10.1.2.3/16[tcp]"), Err(SelectorError::Prefix(PrefixError::HostBits(_)))));
        assert_eq!(ts("10.1.0.0/16[tcp/443"), Err(SelectorError::Unclosed("10.1.0.0/16[tcp/443".into())));
        assert_eq!(ts("10.1.0.0/16[gre2]"), Err(SelectorError::Protocol("gre2".into())));
        assert_eq!(ts("10.1.0.0/16[256]"), Err(SelectorError::Protocol("256".into())));
        assert_eq!(ts("10.1.0.0/16[tcp/https]"), Err(SelectorError::Port("https".into())));
        assert_eq!(ts("10.1.0.0/16[tcp/70000]"), Err(SelectorError::Port("70000".into())));
        assert_eq!(ts("10.1.0.0/16[tcp/2000-1000]"), Err(SelectorError::Backwards(2000, 1000)));
        assert_eq!(ts("10.1.0.0/16[/53]"), Err(SelectorError::PortWithoutProtocol));
        assert_eq!(ts("10.1.0.0/16[any/53]"), Err(SelectorError::PortWithoutProtocol));
        assert_eq!(ts("10.1.0.0/16[udp/opaque]"), Err(SelectorError::Opaque));
        assert_eq!(ts("10.1.0.0/16[tcp]x"), Err(SelectorError::Trailing("10.1.0.0/16[tcp]x".into())));
        assert_eq!(ts("10.1.0.0/16[47/100]"), Err(SelectorError::NoPorts(47)));
        assert_eq!(ts("10.1.0.0/16[47]").unwrap().proto, 47, "a protocol without ports, whole");
        assert_eq!(ts("fd00::/8[icmp]"), Err(SelectorError::WrongIcmp("icmp", "IPv6", "ipv6-icmp")));
        assert_eq!(ts("10.0.0.0/8[ipv6-icmp]"), Err(SelectorError::WrongIcmp("ipv6-icmp", "IPv4", "icmp")));
        assert_eq!(ts("10.1.0.0/16[tcp/09]"), Err(SelectorError::Port("09".into())), "not octal");
    }
}
