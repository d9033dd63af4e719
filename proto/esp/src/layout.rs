//! The ESP packet format (RFC 4303 §2), shared by both ciphers:
//!
//! ```text
//! | SPI (4) | Sequence Number (4) | IV (8 GCM, 16 CBC) |
//! | Payload Data | Padding (0-255) | Pad Length (1) | Next Header (1) |  <- encrypted
//! | ICV (16) |
//! ```
//!
//! Invariants:
//! - Padding bytes are 1, 2, 3, ... (RFC 4303 §2.4); sealing writes them
//!   and opening checks them.
//! - The encrypted part (payload, padding, pad length, next header) ends
//!   on the cipher's alignment: 4 bytes for GCM (RFC 4303 §2.4), the
//!   16-byte block for CBC (RFC 3602 §2.4).
//! - Nothing here indexes past a slice: lengths are checked first, so
//!   hostile bytes make errors, never panics.

use crate::{Cipher, Error};

/// SPI and sequence number.
pub const SPI_SEQ_LEN: usize = 8;
/// The ICV of both ciphers: GCM's 16-byte tag, HMAC-SHA-256 cut to 128 bits.
pub const ICV_LEN: usize = 16;
/// Pad length and next header.
pub const TRAILER_FIELDS_LEN: usize = 2;
/// Padding RFC 4303 allows at most (the pad length is one byte).
pub const MAX_PADDING: usize = 255;

/// Next header of a tunnelled IPv4 packet (IP-in-IP).
pub const NEXT_HEADER_IPV4: u8 = 4;
/// Next header of a tunnelled IPv6 packet.
pub const NEXT_HEADER_IPV6: u8 = 41;
/// Next header of a dummy packet (RFC 4303 §2.6), to drop silently.
pub const NEXT_HEADER_DUMMY: u8 = 59;

/// The sizes one cipher gives the packet format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub iv_len: usize,
    /// What payload, padding, pad length and next header together align to.
    pub align: usize,
}

impl Layout {
    pub fn of(cipher: Cipher) -> Layout {
        match cipher {
            Cipher::AesGcm16 { .. } => Layout { iv_len: 8, align: 4 },
            Cipher::AesCbcHmacSha256 { .. } => Layout { iv_len: 16, align: 16 },
        }
    }

    pub fn header_len(&self) -> usize {
        SPI_SEQ_LEN + self.iv_len
    }

    pub fn trailer_len(&self) -> usize {
        TRAILER_FIELDS_LEN + ICV_LEN
    }

    /// The smallest padded length for a payload of `len` bytes.
    pub fn padded_len(&self, len: usize) -> usize {
        let encrypted = len.saturating_add(TRAILER_FIELDS_LEN);
        let aligned = encrypted.div_ceil(self.align).saturating_mul(self.align);
        aligned - TRAILER_FIELDS_LEN
    }

    /// Whether `padded` pads `len` bytes to the alignment with at most 255
    /// bytes of padding.
    pub fn padding_fits(&self, len: usize, padded: usize) -> bool {
        padded >= len
            && padded - len <= MAX_PADDING
            && padded.checked_add(TRAILER_FIELDS_LEN).is_some_and(|e| e % self.align == 0)
    }

    /// Header, padded payload and trailer; `None` on overflow.
    pub fn wire_len(&self, padded: usize) -> Option<usize> {
        padded.checked_add(self.header_len() + self.trailer_len())
    }

    /// Whether a received datagram of `len` bytes has room for the fields
    /// and a ciphertext the cipher could have produced. GCM is not held
    /// to the 4-byte alignment a sender owes: the ICV is what matters, and
    /// a receiver loses nothing by being lenient there. CBC ciphertext is
    /// whole blocks or it cannot be decrypted at all.
    pub fn plausible_len(&self, len: usize) -> bool {
        let Some(encrypted) = len.checked_sub(self.header_len() + ICV_LEN) else {
            return false;
        };
        encrypted >= TRAILER_FIELDS_LEN && (self.align == 4 || encrypted % self.align == 0)
    }
}

/// The next header for a payload: 4 or 41 from the IP version nibble,
/// or 59 for an empty payload (a dummy packet, ESP's keepalive).
pub(crate) fn next_header_of(payload: &[u8]) -> Result<u8, Error> {
    match payload.first().map(|b| b >> 4) {
        None => Ok(NEXT_HEADER_DUMMY),
        Some(4) => Ok(NEXT_HEADER_IPV4),
        Some(6) => Ok(NEXT_HEADER_IPV6),
        Some(_) => Err(Error::NotIp),
    }
}

/// Fills `tail` (padding, pad length, next header: the bytes after the
/// payload) with 1, 2, 3, ..., the pad length and `next_header`. `tail` is
/// 2 to 257 bytes long (checked by `padding_fits`).
pub(crate) fn write_trailer(tail: &mut [u8], next_header: u8) {
    let pad = tail.len() - TRAILER_FIELDS_LEN;
    for (i, b) in tail[..pad].iter_mut().enumerate() {
        *b = (i + 1) as u8;
    }
    tail[pad] = pad as u8;
    tail[pad + 1] = next_header;
}

/// Reads the trailer of decrypted `plaintext` (payload through next
/// header) and checks its padding; returns the payload length and the
/// next header.
pub(crate) fn read_trailer(plaintext: &[u8]) -> Result<(usize, u8), Error> {
    let [.., pad_len, next_header] = *plaintext else {
        return Err(Error::Malformed);
    };
    let pad = usize::from(pad_len);
    let payload_len = plaintext.len().checked_sub(TRAILER_FIELDS_LEN + pad).ok_or(Error::BadPadding)?;
    let padding = &plaintext[payload_len..payload_len + pad];
    // The padding is authenticated plaintext by now, so checking it in
    // variable time reveals nothing an attacker could not read anyway.
    if padding.iter().enumerate().any(|(i, &b)| usize::from(b) != i + 1) {
        return Err(Error::BadPadding);
    }
    Ok((payload_len, next_header))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCM: Layout = Layout { iv_len: 8, align: 4 };
    const CBC: Layout = Layout { iv_len: 16, align: 16 };

    #[test]
    fn padded_len_aligns_the_trailer_minimally() {
        for layout in [GCM, CBC] {
            for len in 0..=1600 {
                let p = layout.padded_len(len);
                assert!(layout.padding_fits(len, p), "{layout:?} {len} -> {p}");
                assert!(p - len < layout.align, "minimal padding");
                assert_eq!((p + 2) % layout.align, 0);
            }
        }
        assert_eq!(GCM.padded_len(0), 2);
        assert_eq!(GCM.padded_len(2), 2);
        assert_eq!(CBC.padded_len(0), 14);
        assert_eq!(CBC.padded_len(1420), 1422);
        assert_eq!(CBC.padded_len(1422), 1422);
    }

    #[test]
    fn padding_fits_refuses_misalignment_and_too_much() {
        assert!(!GCM.padding_fits(10, 9), "shorter than the payload");
        assert!(!GCM.padding_fits(10, 11), "misaligned");
        assert!(GCM.padding_fits(10, 14), "more than minimal is allowed");
        assert!(GCM.padding_fits(0, 254), "255 bytes of padding would not align; 254 does");
        assert!(!GCM.padding_fits(0, 258), "more than 255 bytes of padding");
        assert!(!CBC.padding_fits(0, usize::MAX - 1), "no overflow");
    }

    #[test]
    fn next_header_follows_the_version_nibble() {
        assert_eq!(next_header_of(&[0x45, 0]), Ok(4));
        assert_eq!(next_header_of(&[0x60]), Ok(41));
        assert_eq!(next_header_of(&[]), Ok(59));
        assert_eq!(next_header_of(&[0x50]), Err(Error::NotIp));
    }

    #[test]
    fn trailer_round_trips_and_bad_padding_is_refused() {
        let mut pt = [0xaau8; 20];
        write_trailer(&mut pt[10..], 41);
        assert_eq!(&pt[10..], &[1, 2, 3, 4, 5, 6, 7, 8, 8, 41]);
        assert_eq!(read_trailer(&pt), Ok((10, 41)));
        let mut bad = pt;
        bad[13] = 9;
        assert_eq!(read_trailer(&bad), Err(Error::BadPadding));
        let mut too_long = pt;
        too_long[18] = 19;
        assert_eq!(read_trailer(&too_long), Err(Error::BadPadding), "pad length past the start");
        assert_eq!(read_trailer(&[0, 4]), Ok((0, 4)));
        assert_eq!(read_trailer(&[4]), Err(Error::Malformed));
    }

    #[test]
    fn plausible_lengths() {
        assert!(!GCM.plausible_len(8 + 8 + 16 + 1));
        assert!(GCM.plausible_len(8 + 8 + 16 + 2));
        assert!(GCM.plausible_len(8 + 8 + 16 + 3), "lenient on GCM alignment");
        assert!(!CBC.plausible_len(8 + 16 + 16));
        assert!(CBC.plausible_len(8 + 16 + 16 + 16));
        assert!(!CBC.plausible_len(8 + 16 + 16 + 17));
        assert!(!CBC.plausible_len(0));
    }
}
