//! The Internet checksum (RFC 1071): the one's complement of the
//! one's-complement sum of 16-bit words. The MSS clamp updates it
//! incrementally; tests and the labs compute it whole.

/// A one's-complement sum folded to 16 bits.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum of `bytes` (an odd last byte padded with zero), starting
/// from `initial` (a pseudo-header's sum, or 0).
pub fn checksum(bytes: &[u8], initial: u32) -> u16 {
    // Each word adds at most 0xffff: a u64 does not overflow.
    let sum = bytes
        .chunks(2)
        .fold(u64::from(initial), |s, c| s + u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])));
    !fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_header_checksums_to_zero_with_its_checksum_in_place() {
        // RFC 1071's example words, and a real IPv4 header.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        let c = checksum(&h, 0);
        assert_eq!(c, 0xb861);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&h, 0), 0);
        assert_eq!(fold(0x0001_fffe), 0xffff);
    }
}
