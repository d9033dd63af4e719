//! IPv6's extension headers, walked to the upper-layer protocol (TCP,
//! UDP, ICMPv6) whose ports or type the traffic selectors and GRO read.
//! Every read past the fixed header is bounds-checked: the packets are
//! untrusted.

/// The protocol after IPv6's extension headers, and where its header
/// starts (None in a fragment other than the first, which has no ports).
/// Only the headers RFC 8200 places before the upper layer are walked,
/// at most eight of them. `p` holds at least the 40-byte fixed header.
pub fn upper_layer(p: &[u8]) -> (u8, Option<usize>) {
    walk(p, |_| {})
}

/// Whether the chain of extension headers before the upper layer holds a
/// Fragment header or AH. `p` holds at least the 40-byte fixed header.
pub fn has_fragment_or_ah(p: &[u8]) -> bool {
    let mut found = false;
    walk(p, |header| found |= matches!(header, 44 | 51));
    found
}

/// `upper_layer`'s walk, telling `passed` the type of each extension
/// header it walks past.
fn walk(p: &[u8], mut passed: impl FnMut(u8)) -> (u8, Option<usize>) {
    let (mut next, mut at) = (p[6], 40usize);
    for _ in 0..8 {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-octet units beyond the first.
            0 | 43 | 60 => {
                passed(next);
                let Some(h) = p.get(at..at + 2) else { return (next, None) };
                (next, at) = (h[0], at + (h[1] as usize + 1) * 8);
            }
            // AH: length in 4-octet units beyond the first two.
            51 => {
                passed(next);
                let Some(h) = p.get(at..at + 2) else { return (next, None) };
                (next, at) = (h[0], at + (h[1] as usize + 2) * 4);
            }
            44 => {
                passed(next);
                let Some(h) = p.get(at..at + 4) else { return (next, None) };
                let offset = u16::from_be_bytes([h[2], h[3]]) >> 3;
                (next, at) = (h[0], at + 8);
                if offset != 0 {
                    return (next, None);
                }
            }
            _ => return (next, Some(at)),
        }
    }
    (next, None)
}
