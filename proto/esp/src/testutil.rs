//! Helpers for the tests of every module: keys, inner packets and sealing
//! a payload into a fresh buffer. Addresses are from fd00::/8 and 10.x,
//! as the house rules ask.

use zeroize::Zeroizing;

use crate::{Cipher, InboundSa, OutboundSa, SaKeys};

pub const SPI: u32 = 0xc0de_0001;

/// Keying material 0, 1, 2, ... offset by `seed`.
pub fn keys(cipher: Cipher, seed: u8) -> SaKeys {
    let keymat = (0..cipher.keymat_len()).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect();
    SaKeys { spi: SPI, cipher, keymat: Zeroizing::new(keymat) }
}

/// An outbound SA and the inbound SA with the same keys.
pub fn pair(cipher: Cipher) -> (OutboundSa, InboundSa) {
    (OutboundSa::new(keys(cipher, 3)).unwrap(), InboundSa::new(keys(cipher, 3)).unwrap())
}

/// An IPv4 packet of `len` bytes (at least 1): version nibble 4, then a
/// pattern. Only the first byte matters to ESP.
pub fn ipv4(len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i * 31 + 5) as u8).collect();
    if let Some(b) = p.first_mut() {
        *b = 0x45;
    }
    if len >= 20 {
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    }
    p
}

/// An IPv6 packet of `len` bytes (at least 1), fd00::/8 addresses.
pub fn ipv6(len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i * 17 + 3) as u8).collect();
    if let Some(b) = p.first_mut() {
        *b = 0x60;
    }
    if len >= 40 {
        p[8] = 0xfd;
        p[24] = 0xfd;
    }
    p
}

/// A buffer laid out for `seal`: header room, `payload`, padding and
/// trailer room, and `slack` extra bytes after.
pub fn buffer(sa: &OutboundSa, payload: &[u8], slack: usize) -> (Vec<u8>, usize) {
    let padded = sa.padded_len(payload.len());
    let mut buf = vec![0xee; sa.wire_len(padded) + slack];
    let h = sa.header_len();
    buf[h..h + payload.len()].copy_from_slice(payload);
    (buf, padded)
}

/// `payload` sealed with sequence number `seq`, as a datagram.
pub fn sealed(sa: &OutboundSa, seq: u64, payload: &[u8]) -> Vec<u8> {
    let (mut buf, padded) = buffer(sa, payload, 0);
    let n = sa.seal(seq, &mut buf, payload.len(), padded).unwrap();
    buf.truncate(n);
    buf
}

/// Bytes from hex, ignoring whitespace.
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits.chunks(2).map(|d| u8::from_str_radix(std::str::from_utf8(d).unwrap(), 16).unwrap()).collect()
}
