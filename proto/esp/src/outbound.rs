//! An outbound SA: any worker thread seals with it at once.
//!
//! Invariants:
//! - A sequence number is handed out by `reserve` exactly once and lies in
//!   1..=2^32-1; the counter never wraps (RFC 4303 §3.3.3, no ESN), even
//!   when `reserve` is called again after exhaustion. So no GCM nonce and
//!   no CBC IV repeats under the SA's key, whichever thread seals.
//! - Sealing takes no lock and touches no shared mutable state: workers
//!   seal disjoint buffers with shared, read-only keys.
//! - The SA counts no packets or bytes itself: an atomic written by every
//!   worker for every packet would bounce one cache line between cores;
//!   the data plane counts per batch. `next_seq` tells how many sequence
//!   numbers were reserved, for IKE's packet-count rekey.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cbc::CbcSeal;
use crate::gcm::Gcm;
use crate::layout::{self, Layout, SPI_SEQ_LEN};
use crate::{Cipher, Error, SaKeys};

/// The last sequence number an SA may send without ESN.
pub const MAX_SEQ: u64 = u32::MAX as u64;

// One per SA, built once and never moved on the packet path; boxing the
// larger CBC keys would only add a pointer chase per packet.
#[allow(clippy::large_enum_variant)]
enum Sealer {
    Gcm(Gcm),
    Cbc(CbcSeal),
}

/// The sending half of a child SA.
pub struct OutboundSa {
    spi: u32,
    cipher: Cipher,
    layout: Layout,
    sealer: Sealer,
    /// The next sequence number `reserve` hands out; MAX_SEQ + 1 once
    /// every number was taken.
    next_seq: AtomicU64,
}

impl std::fmt::Debug for OutboundSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundSa")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("cipher", &self.cipher)
            .field("next_seq", &self.next_seq())
            .finish_non_exhaustive()
    }
}

impl OutboundSa {
    /// Keys the SA; the first sequence number it hands out is 1.
    pub fn new(keys: SaKeys) -> Result<OutboundSa, Error> {
        let parts = keys.parts()?;
        let sealer = match keys.cipher {
            Cipher::AesGcm16 { .. } => Sealer::Gcm(Gcm::new(&parts)?),
            Cipher::AesCbcHmacSha256 { .. } => Sealer::Cbc(CbcSeal::new(&parts)?),
        };
        Ok(OutboundSa {
            spi: keys.spi,
            cipher: keys.cipher,
            layout: Layout::of(keys.cipher),
            sealer,
            next_seq: AtomicU64::new(1),
        })
    }

    pub fn spi(&self) -> u32 {
        self.spi
    }

    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Bytes in front of the payload: SPI, sequence number and IV (16 for
    /// GCM, 24 for CBC).
    pub fn header_len(&self) -> usize {
        self.layout.header_len()
    }

    /// Bytes after the padded payload: pad length, next header, ICV (18).
    pub fn trailer_len(&self) -> usize {
        self.layout.trailer_len()
    }

    /// The payload length after padding: the least length from `len` up
    /// that aligns the encrypted part (padded payload plus pad length and
    /// next header) to 4 bytes (GCM) or 16 (CBC).
    pub fn padded_len(&self, len: usize) -> usize {
        self.layout.padded_len(len)
    }

    /// The datagram length for a payload padded to `padded` bytes.
    pub fn wire_len(&self, padded: usize) -> usize {
        self.header_len() + padded + self.trailer_len()
    }

    /// Takes `count` consecutive sequence numbers and returns the first;
    /// the first call returns 1. Fails, taking nothing, when fewer than
    /// `count` remain below 2^32, and for a `count` of 0, whose answer
    /// would be the number the next call hands out too (a nonce used
    /// twice if both were sealed with). A compare-and-swap loop rather
    /// than a plain `fetch_add`, so that calls after exhaustion never push
    /// the counter on towards a wrap; it is called once per batch, so the
    /// loop rarely spins.
    pub fn reserve(&self, count: u64) -> Result<u64, Error> {
        if count == 0 {
            return Err(Error::EmptyReservation);
        }
        self.next_seq
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                next.checked_add(count).filter(|&end| end <= MAX_SEQ + 1)
            })
            .map_err(|_| Error::SequenceExhausted)
    }

    /// The sequence number the next `reserve` would start at; every number
    /// below it was handed out.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Relaxed)
    }

    /// Seals in place with a sequence number from `reserve`.
    ///
    /// `datagram` holds `header_len()` bytes of room, then the payload (an
    /// IPv4 or IPv6 packet, or nothing for a dummy packet) of
    /// `payload_len` bytes, room up to `padded_len` (from `padded_len()`)
    /// and `trailer_len()` bytes of room. Writes SPI, sequence number, IV,
    /// padding 1, 2, 3, ..., pad length and next header (4, 41, or 59 for
    /// an empty payload), encrypts, writes the ICV. Returns the datagram's
    /// length; bytes of `datagram` beyond it are untouched.
    pub fn seal(&self, seq: u64, datagram: &mut [u8], payload_len: usize, padded_len: usize) -> Result<usize, Error> {
        let seq = u32::try_from(seq).ok().filter(|&s| s != 0).ok_or(Error::InvalidSequence)?;
        let total = self.layout.wire_len(padded_len).ok_or(Error::BufferTooSmall)?;
        if padded_len < payload_len || datagram.len() < total {
            return Err(Error::BufferTooSmall);
        }
        if !self.layout.padding_fits(payload_len, padded_len) {
            return Err(Error::BadPaddedLen);
        }
        let packet = &mut datagram[..total];
        let start = self.layout.header_len();
        let next_header = layout::next_header_of(&packet[start..start + payload_len])?;
        packet[..4].copy_from_slice(&self.spi.to_be_bytes());
        packet[4..SPI_SEQ_LEN].copy_from_slice(&seq.to_be_bytes());
        let tail_end = start + padded_len + layout::TRAILER_FIELDS_LEN;
        layout::write_trailer(&mut packet[start + payload_len..tail_end], next_header);
        match &self.sealer {
            Sealer::Gcm(g) => g.seal(packet, seq)?,
            Sealer::Cbc(c) => c.seal(packet, seq)?,
        }
        Ok(total)
    }

    /// Reserves one sequence number and seals: the single-packet path
    /// (keepalives, packets sent off the batch path).
    pub fn encrypt(&self, datagram: &mut [u8], payload_len: usize) -> Result<usize, Error> {
        let seq = self.reserve(1)?;
        self.seal(seq, datagram, payload_len, self.padded_len(payload_len))
    }

    /// Writes SPI and `seq` and seals `packet` whose plaintext, trailer
    /// included, the test wrote itself (to craft bad padding).
    #[cfg(test)]
    pub(crate) fn seal_crafted(&self, packet: &mut [u8], seq: u32) {
        packet[..4].copy_from_slice(&self.spi.to_be_bytes());
        packet[4..SPI_SEQ_LEN].copy_from_slice(&seq.to_be_bytes());
        match &self.sealer {
            Sealer::Gcm(g) => g.seal(packet, seq).unwrap(),
            Sealer::Cbc(c) => c.seal(packet, seq).unwrap(),
        }
    }

    #[cfg(test)]
    pub(crate) fn set_next_seq(&self, next: u64) {
        self.next_seq.store(next, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{buffer, ipv4, keys, pair};
    use std::collections::HashSet;
    use std::sync::Arc;

    const GCM: Cipher = Cipher::AesGcm16 { key_bits: 128 };

    #[test]
    fn sizes_per_cipher() {
        let gcm = OutboundSa::new(keys(GCM, 1)).unwrap();
        assert_eq!((gcm.header_len(), gcm.trailer_len(), gcm.padded_len(1420)), (16, 18, 1422));
        assert_eq!(gcm.padded_len(1421), 1422);
        assert_eq!(gcm.padded_len(1423), 1426);
        let cbc = OutboundSa::new(keys(Cipher::AesCbcHmacSha256 { key_bits: 256 }, 1)).unwrap();
        assert_eq!((cbc.header_len(), cbc.trailer_len(), cbc.padded_len(1420)), (24, 18, 1422));
        assert_eq!(cbc.padded_len(1423), 1438);
        assert_eq!(cbc.wire_len(1422), 24 + 1422 + 18);
    }

    #[test]
    fn reserve_starts_at_one_and_hands_out_consecutive_ranges() {
        let sa = OutboundSa::new(keys(GCM, 1)).unwrap();
        assert_eq!(sa.reserve(1), Ok(1));
        assert_eq!(sa.reserve(128), Ok(2));
        assert_eq!(sa.reserve(1), Ok(130));
        assert_eq!(sa.next_seq(), 131);
    }

    #[test]
    fn concurrent_reserves_are_disjoint_and_complete() {
        let sa = Arc::new(OutboundSa::new(keys(GCM, 1)).unwrap());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let sa = Arc::clone(&sa);
                std::thread::spawn(move || {
                    (0..2000u64)
                        .map(|i| {
                            let count = 1 + (t + i) % 64;
                            (sa.reserve(count).unwrap(), count)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = HashSet::new();
        let mut total = 0;
        for t in threads {
            for (first, count) in t.join().unwrap() {
                for s in first..first + count {
                    assert!(seen.insert(s), "sequence number {s} handed out twice");
                }
                total += count;
            }
        }
        assert_eq!(seen.len() as u64, total);
        assert_eq!(seen.iter().min(), Some(&1));
        assert_eq!(seen.iter().max(), Some(&total), "no gaps");
        assert_eq!(sa.next_seq(), total + 1);
    }

    #[test]
    fn a_reservation_of_nothing_is_refused_and_takes_nothing() {
        let (sa, _) = pair(GCM);
        assert_eq!(sa.reserve(0), Err(Error::EmptyReservation));
        assert_eq!(sa.reserve(1), Ok(1), "the number 0 would have returned is still the next one");
        assert_eq!(sa.reserve(0), Err(Error::EmptyReservation));
        assert_eq!(sa.reserve(1), Ok(2));
    }

    #[test]
    fn exhaustion_at_2_pow_32_never_wraps() {
        let (sa, inb) = pair(GCM);
        sa.set_next_seq(MAX_SEQ - 2);
        assert_eq!(sa.reserve(4), Err(Error::SequenceExhausted), "a batch that does not fit takes nothing");
        assert_eq!(sa.reserve(2), Ok(MAX_SEQ - 2));
        assert_eq!(sa.reserve(1), Ok(MAX_SEQ));
        for _ in 0..3 {
            assert_eq!(sa.reserve(1), Err(Error::SequenceExhausted));
            assert_eq!(sa.reserve(u64::MAX), Err(Error::SequenceExhausted));
        }
        assert_eq!(sa.next_seq(), MAX_SEQ + 1, "exhausted, not wrapped");
        // The last number seals and opens; one past it is refused.
        let payload = ipv4(40);
        let (mut buf, padded) = buffer(&sa, &payload, 0);
        let n = sa.seal(MAX_SEQ, &mut buf, 40, padded).unwrap();
        assert_eq!(inb.open(&mut buf[..n]).unwrap().seq, MAX_SEQ);
        assert_eq!(sa.seal(MAX_SEQ + 1, &mut buf, 40, padded), Err(Error::InvalidSequence));
        assert_eq!(sa.seal(0, &mut buf, 40, padded), Err(Error::InvalidSequence));
        assert_eq!(sa.encrypt(&mut buf, 40), Err(Error::SequenceExhausted));
    }

    #[test]
    fn seal_refuses_bad_arguments() {
        for cipher in Cipher::ALL {
            let sa = OutboundSa::new(keys(cipher, 1)).unwrap();
            let payload = ipv4(30);
            let (mut buf, padded) = buffer(&sa, &payload, 64);
            let short = sa.wire_len(padded) - 1;
            assert_eq!(sa.seal(1, &mut buf[..short], 30, padded), Err(Error::BufferTooSmall), "{cipher}");
            assert_eq!(sa.seal(1, &mut buf, 30, 29), Err(Error::BufferTooSmall), "{cipher}");
            assert_eq!(sa.seal(1, &mut buf, 30, padded + 1), Err(Error::BadPaddedLen), "{cipher}: misaligned");
            assert_eq!(sa.seal(1, &mut buf, 30, usize::MAX), Err(Error::BufferTooSmall), "{cipher}");
            let mut big = vec![0; 2000];
            big[sa.header_len()] = 0x45;
            assert_eq!(sa.seal(1, &mut big, 1, 1 + 256 + 1), Err(Error::BadPaddedLen), "{cipher}: > 255");
            let h = sa.header_len();
            buf[h] = 0x50;
            assert_eq!(sa.seal(1, &mut buf, 30, padded), Err(Error::NotIp), "{cipher}");
            buf[h] = 0x45;
            assert!(sa.seal(1, &mut buf, 30, padded).is_ok(), "{cipher}");
        }
    }

    #[test]
    fn extra_padding_within_limits_is_sealed_and_opened() {
        for cipher in Cipher::ALL {
            let (sa, inb) = pair(cipher);
            let payload = ipv4(10);
            let padded = sa.padded_len(10) + 64;
            let mut buf = vec![0; sa.wire_len(padded)];
            buf[sa.header_len()..sa.header_len() + 10].copy_from_slice(&payload);
            let n = sa.seal(1, &mut buf, 10, padded).unwrap();
            let o = inb.open(&mut buf[..n]).unwrap();
            assert_eq!(&buf[o.at..o.at + o.len], &payload[..], "{cipher}");
        }
    }

    #[test]
    fn bad_keys_and_reserved_spi_are_refused() {
        let mut k = keys(GCM, 1);
        k.keymat.pop();
        assert_eq!(OutboundSa::new(k).err(), Some(Error::BadKeys));
        let mut k = keys(GCM, 1);
        k.spi = 0;
        assert_eq!(OutboundSa::new(k).err(), Some(Error::ReservedSpi));
        let debug = format!("{:?}", OutboundSa::new(keys(GCM, 1)).unwrap());
        assert!(debug.contains("spi") && !debug.contains("key:"), "{debug}");
    }
}
