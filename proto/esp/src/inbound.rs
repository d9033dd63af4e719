//! An inbound SA: any worker thread opens with it at once; the replay
//! check waits for the data plane's drain, where one thread per peer sees
//! packets back in order.
//!
//! Invariants:
//! - `open` authenticates before it trusts anything but the SPI and the
//!   length: the ICV (constant time, before decrypting for CBC; GCM's tag
//!   check) comes before padding, pad length and next header are read.
//! - `open` never panics, whatever the bytes; every failure is an `Error`.
//! - `open` only reads the replay window, before the ICV (RFC 4303
//!   §3.4.3): a duplicate or a number left of the window is refused without
//!   decrypting, so a replayed flood costs no AES. A packet counts as
//!   received only once `accept` took its sequence number, after
//!   authentication, so a forged sequence number never moves the window.
//!   The pre-check is sound however late it runs: the window only ever
//!   refuses more, so a number it refuses now `accept` would refuse later.
//! - No lock is held while opening, and `open` never waits for one: its
//!   pre-check only tries the window's mutex and is skipped when the drain
//!   holds it, since `accept` decides anyway.

use std::sync::Mutex;

use crate::cbc::CbcOpen;
use crate::gcm::Gcm;
use crate::layout::{self, Layout, ICV_LEN, NEXT_HEADER_DUMMY, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6};
use crate::replay::ReplayWindow;
use crate::{spi_of, Cipher, Error, SaKeys};

// One per SA, built once and never moved on the packet path; boxing the
// larger CBC keys would only add a pointer chase per packet.
#[allow(clippy::large_enum_variant)]
enum Opener {
    Gcm(Gcm),
    Cbc(CbcOpen),
}

/// Where the inner packet of an opened datagram lies, and its sequence
/// number for the replay check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The sequence number, to pass to `InboundSa::accept` in order.
    pub seq: u64,
    /// Offset of the inner packet in the datagram (the header length).
    pub at: usize,
    /// Length of the inner packet, ESP padding and trailer removed. The
    /// sender's TFC padding (RFC 4303 §2.7), if any, is still included:
    /// the inner IP header's length tells where the packet ends. 0 for a
    /// dummy packet.
    pub len: usize,
    /// 4 (IPv4), 41 (IPv6) or 59 (a dummy packet).
    pub next_header: u8,
}

/// Where an accepted sequence number fell in the replay window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Above every number accepted before: the peer's latest packet.
    Newest,
    /// Inside the window, below the highest: overtaken on the way, so its
    /// outer addresses may be ones the peer has since left. RFC 7296 §2.23
    /// moves the peer's address only for new packets, lest old ones move
    /// it back; this one is new to the window but older than one seen.
    Late,
}

impl Opened {
    /// A dummy packet (RFC 4303 §2.6): authenticated, counts for the replay
    /// window and liveness like a WireGuard keepalive, carries nothing;
    /// drop it silently after `accept`.
    pub fn is_dummy(&self) -> bool {
        self.next_header == NEXT_HEADER_DUMMY
    }
}

/// The receiving half of a child SA.
pub struct InboundSa {
    spi: u32,
    cipher: Cipher,
    layout: Layout,
    opener: Opener,
    replay: Mutex<ReplayWindow>,
}

impl std::fmt::Debug for InboundSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundSa")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl InboundSa {
    pub fn new(keys: SaKeys) -> Result<InboundSa, Error> {
        let parts = keys.parts()?;
        let opener = match keys.cipher {
            Cipher::AesGcm16 { .. } => Opener::Gcm(Gcm::new(&parts)?),
            Cipher::AesCbcHmacSha256 { .. } => Opener::Cbc(CbcOpen::new(&parts)?),
        };
        Ok(InboundSa {
            spi: keys.spi,
            cipher: keys.cipher,
            layout: Layout::of(keys.cipher),
            opener,
            replay: Mutex::new(ReplayWindow::new()),
        })
    }

    pub fn spi(&self) -> u32 {
        self.spi
    }

    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Bytes in front of the inner packet (16 for GCM, 24 for CBC).
    pub fn header_len(&self) -> usize {
        self.layout.header_len()
    }

    /// Authenticates and decrypts an ESP datagram in place, with the replay
    /// pre-check but not the replay check itself (see `accept`). Checks the
    /// length, the SPI, that the sequence number is not already refused,
    /// the ICV, then the padding (RFC 4303 §2.4) and the next header. On an error
    /// after the length and SPI checks the datagram's bytes may have been
    /// changed and must be dropped.
    pub fn open(&self, datagram: &mut [u8]) -> Result<Opened, Error> {
        if !self.layout.plausible_len(datagram.len()) {
            return Err(Error::Malformed);
        }
        if spi_of(datagram) != Some(self.spi) {
            return Err(Error::WrongSpi);
        }
        let seq = datagram
            .get(4..8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or(Error::Malformed)?;
        if let Ok(window) = self.replay.try_lock() {
            if !window.might_accept(u64::from(seq)) {
                return Err(Error::Replayed);
            }
        }
        match &self.opener {
            Opener::Gcm(g) => g.open(datagram)?,
            Opener::Cbc(c) => c.open(datagram)?,
        }
        let at = self.layout.header_len();
        let plaintext = datagram.get(at..datagram.len() - ICV_LEN).ok_or(Error::Malformed)?;
        let (len, next_header) = layout::read_trailer(plaintext)?;
        let len = match next_header {
            NEXT_HEADER_IPV4 | NEXT_HEADER_IPV6 => len,
            NEXT_HEADER_DUMMY => 0,
            other => return Err(Error::NextHeader(other)),
        };
        Ok(Opened { seq: u64::from(seq), at, len, next_header })
    }

    /// The replay check, for the drain: accepts an authenticated sequence
    /// number once, if inside the window, and says whether it was the
    /// highest so far.
    pub fn accept(&self, seq: u64) -> Result<Arrival, Error> {
        let mut w = self.replay.lock().unwrap_or_else(|e| e.into_inner());
        let newest = seq > w.top();
        if !w.check_and_update(seq) {
            return Err(Error::Replayed);
        }
        Ok(if newest { Arrival::Newest } else { Arrival::Late })
    }

    /// Whether `seq` might still be accepted (a cheap pre-check).
    pub fn might_accept(&self, seq: u64) -> bool {
        self.replay.lock().unwrap_or_else(|e| e.into_inner()).might_accept(seq)
    }

    /// `open` then `accept`: the single-packet path.
    pub fn decrypt(&self, datagram: &mut [u8]) -> Result<Opened, Error> {
        let opened = self.open(datagram)?;
        self.accept(opened.seq)?;
        Ok(opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{buffer, ipv4, ipv6, keys, pair, sealed, SPI};
    use crate::OutboundSa;

    #[test]
    fn round_trip_every_cipher_family_and_length() {
        for cipher in Cipher::ALL {
            let (out, inb) = pair(cipher);
            for len in 0..=1500 {
                for (payload, nh) in [(ipv4(len), 4), (ipv6(len), 41)] {
                    let payload = if len == 0 { Vec::new() } else { payload };
                    let seq = out.reserve(1).unwrap();
                    let (mut buf, padded) = buffer(&out, &payload, 7);
                    let n = out.seal(seq, &mut buf, len, padded).unwrap();
                    assert_eq!(n, out.wire_len(padded));
                    assert!(buf[n..].iter().all(|&b| b == 0xee), "{cipher} {len}: wrote past the datagram");
                    let encrypted = n - out.header_len() - ICV_LEN;
                    assert_eq!(encrypted % Layout::of(cipher).align, 0, "{cipher} {len}: trailer aligned");
                    let o = inb.open(&mut buf[..n]).unwrap_or_else(|e| panic!("{cipher} {len}: {e}"));
                    assert_eq!(o.seq, seq);
                    assert_eq!(o.at, out.header_len());
                    if len == 0 {
                        assert!(o.is_dummy() && o.len == 0, "{cipher}: an empty payload is a dummy packet");
                    } else {
                        assert_eq!((o.len, o.next_header), (len, nh), "{cipher} {len}");
                        assert_eq!(&buf[o.at..o.at + o.len], &payload[..], "{cipher} {len}");
                    }
                    inb.accept(o.seq).unwrap();
                }
            }
        }
    }

    #[test]
    fn any_single_byte_changed_fails_authentication() {
        for cipher in Cipher::ALL {
            let (out, inb) = pair(cipher);
            let good = sealed(&out, 7, &ipv4(100));
            for i in 0..good.len() {
                for mask in [0x01, 0x80, 0xff] {
                    let mut bad = good.clone();
                    bad[i] ^= mask;
                    let expected = if i < 4 { Error::WrongSpi } else { Error::Authentication };
                    assert_eq!(inb.open(&mut bad), Err(expected), "{cipher}: byte {i} ^ {mask:#x}");
                }
            }
            assert!(inb.open(&mut good.clone()).is_ok(), "the untouched packet opens");
        }
    }

    #[test]
    fn every_truncation_and_an_extension_fail_without_panic() {
        for cipher in Cipher::ALL {
            let (out, inb) = pair(cipher);
            let good = sealed(&out, 1, &ipv6(64));
            for len in 0..good.len() {
                let mut cut = good[..len].to_vec();
                let e = inb.open(&mut cut).unwrap_err();
                assert!(matches!(e, Error::Malformed | Error::Authentication), "{cipher} {len}: {e}");
            }
            let mut longer = good.clone();
            longer.push(0);
            assert!(inb.open(&mut longer).is_err(), "{cipher}: one byte more");
            let mut cut_front = good[1..].to_vec();
            assert!(inb.open(&mut cut_front).is_err(), "{cipher}: one byte less in front");
        }
    }

    #[test]
    fn wrong_spi_and_wrong_keys_are_refused() {
        for cipher in Cipher::ALL {
            let (out, _) = pair(cipher);
            let good = sealed(&out, 1, &ipv4(40));
            let mut other_spi = keys(cipher, 3);
            other_spi.spi = SPI + 1;
            let other = InboundSa::new(other_spi).unwrap();
            assert_eq!(other.open(&mut good.clone()), Err(Error::WrongSpi), "{cipher}");
            let other_keys = InboundSa::new(keys(cipher, 4)).unwrap();
            assert_eq!(other_keys.open(&mut good.clone()), Err(Error::Authentication), "{cipher}");
        }
    }

    /// Seals a crafted plaintext (`body`: payload, padding, pad length,
    /// next header) so it authenticates, then opens it.
    fn open_crafted(cipher: Cipher, body: &[u8]) -> Result<Opened, Error> {
        let (out, inb) = pair(cipher);
        let h = out.header_len();
        let mut packet = vec![0; h + body.len() + ICV_LEN];
        packet[h..h + body.len()].copy_from_slice(body);
        out.seal_crafted(&mut packet, 9);
        inb.open(&mut packet)
    }

    /// `payload` followed by `padding`, pad length and `next_header`,
    /// aligned for `cipher` by the caller's choice of lengths.
    fn crafted(payload: &[u8], padding: &[u8], pad_len: u8, next_header: u8) -> Vec<u8> {
        [payload, padding, &[pad_len, next_header]].concat()
    }

    #[test]
    fn authenticated_bad_padding_is_bad_padding() {
        let gcm = Cipher::AesGcm16 { key_bits: 256 };
        let cbc = Cipher::AesCbcHmacSha256 { key_bits: 128 };
        let p = ipv4(18);
        // Well-formed first, so the crafting itself is known to work.
        assert_eq!(open_crafted(gcm, &crafted(&p, &[1, 2, 3, 4], 4, 4)).unwrap().len, 18);
        assert_eq!(open_crafted(cbc, &crafted(&p, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 12, 4)).unwrap().len, 18);
        for cipher in [gcm, cbc] {
            let pad: Vec<u8> = if cipher == gcm { vec![1, 2, 3, 4] } else { (1..=12).collect() };
            let n = pad.len() as u8;
            let mut wrong_byte = pad.clone();
            wrong_byte[2] = 0;
            assert_eq!(open_crafted(cipher, &crafted(&p, &wrong_byte, n, 4)), Err(Error::BadPadding), "{cipher}");
            let zeros = vec![0; pad.len()];
            assert_eq!(open_crafted(cipher, &crafted(&p, &zeros, n, 41)), Err(Error::BadPadding), "{cipher}");
            assert_eq!(open_crafted(cipher, &crafted(&p, &pad, 200, 4)), Err(Error::BadPadding), "{cipher}: too long");
        }
        // Pad length claiming exactly the whole plaintext but for the two
        // trailer bytes is valid when the bytes count 1, 2, 3, ...
        let all_padding: Vec<u8> = (1..=14).collect();
        assert_eq!(open_crafted(gcm, &crafted(&[], &all_padding, 14, 4)).unwrap().len, 0);
    }

    #[test]
    fn next_header_59_is_a_dummy_and_others_are_refused() {
        let gcm = Cipher::AesGcm16 { key_bits: 128 };
        let o = open_crafted(gcm, &crafted(&[0xde, 0xad], &[1, 2, 3, 4, 5, 6], 6, 59)).unwrap();
        assert!(o.is_dummy());
        assert_eq!(o.len, 0, "a dummy's payload is never handed on");
        assert_eq!(open_crafted(gcm, &crafted(&ipv4(20), &[1, 2], 2, 6)), Err(Error::NextHeader(6)));
        let cbc = Cipher::AesCbcHmacSha256 { key_bits: 256 };
        assert_eq!(
            open_crafted(cbc, &crafted(&ipv4(20), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 10, 0)),
            Err(Error::NextHeader(0))
        );
    }

    #[test]
    fn accept_takes_each_sequence_number_once() {
        let (out, inb) = pair(Cipher::AesGcm16 { key_bits: 256 });
        let packet = sealed(&out, 5, &ipv4(60));
        let o = inb.decrypt(&mut packet.clone()).unwrap();
        assert_eq!(o.seq, 5);
        let (_, fresh) = pair(Cipher::AesGcm16 { key_bits: 256 });
        assert_eq!(fresh.accept(5), Ok(Arrival::Newest), "the first is the newest");
        assert_eq!(inb.decrypt(&mut packet.clone()), Err(Error::Replayed), "replayed datagram");
        assert!(!inb.might_accept(5));
        assert!(inb.might_accept(4));
        assert_eq!(inb.accept(0), Err(Error::Replayed), "seq 0 is never valid");
        assert_eq!(inb.accept(4), Ok(Arrival::Late), "overtaken by 5");
        assert_eq!(inb.accept(4), Err(Error::Replayed), "late once");
        assert_eq!(inb.accept(6), Ok(Arrival::Newest));
    }

    #[test]
    fn a_replayed_or_too_old_datagram_is_refused_before_its_icv_is_checked() {
        for cipher in Cipher::ALL {
            let (out, inb) = pair(cipher);
            let first = sealed(&out, 5, &ipv4(60));
            inb.decrypt(&mut first.clone()).unwrap();
            // The same sequence number with a broken ICV: were the ICV checked
            // first this would be an authentication failure.
            let mut forged = first.clone();
            *forged.last_mut().unwrap() ^= 1;
            assert_eq!(inb.open(&mut forged), Err(Error::Replayed), "{cipher}: duplicate");
            let far = 5 + crate::replay::WINDOW_SIZE + 10;
            inb.decrypt(&mut sealed(&out, far, &ipv4(60))).unwrap();
            let mut old = sealed(&out, 6, &ipv4(60));
            *old.last_mut().unwrap() ^= 1;
            assert_eq!(inb.open(&mut old), Err(Error::Replayed), "{cipher}: left of the window");
            // A fresh number still has its ICV checked, and a forged one does
            // not move the window: the genuine packet of that number opens.
            let genuine = sealed(&out, far + 1, &ipv4(60));
            let mut bad = genuine.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert_eq!(inb.open(&mut bad), Err(Error::Authentication), "{cipher}");
            assert!(inb.decrypt(&mut genuine.clone()).is_ok(), "{cipher}");
        }
    }

    #[test]
    fn the_pre_check_does_not_wait_for_the_drain() {
        let (out, inb) = pair(Cipher::AesGcm16 { key_bits: 256 });
        let first = sealed(&out, 5, &ipv4(60));
        inb.decrypt(&mut first.clone()).unwrap();
        // With the window held (the drain mid-accept), open skips the
        // pre-check instead of blocking; the ICV and `accept` still decide.
        // Opened on another thread, so that a wait fails the test rather
        // than hanging it.
        let inb = std::sync::Arc::new(inb);
        let held = inb.replay.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let opener = {
            let (inb, mut packet) = (inb.clone(), first.clone());
            std::thread::spawn(move || tx.send(inb.open(&mut packet).is_ok()))
        };
        let opened = rx.recv_timeout(std::time::Duration::from_secs(10));
        drop(held);
        assert_eq!(opened, Ok(true), "open waited for the window's lock, or failed");
        opener.join().unwrap().unwrap();
        assert_eq!(inb.decrypt(&mut first.clone()), Err(Error::Replayed));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for cipher in Cipher::ALL {
            let (out, inb) = pair(cipher);
            let good = sealed(&out, 3, &ipv4(80));
            for round in 0..2000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let len = (state % 200) as usize;
                let mut junk: Vec<u8> = (0..len).map(|i| (state >> (i % 56)) as u8 ^ i as u8).collect();
                if round % 2 == 0 && len >= 4 {
                    junk[..4].copy_from_slice(&SPI.to_be_bytes());
                }
                assert!(inb.open(&mut junk).is_err(), "{cipher}: junk of {len} bytes opened");
            }
            assert!(inb.open(&mut good.clone()).is_ok());
        }
    }

    #[test]
    fn sas_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<InboundSa>();
        check::<OutboundSa>();
    }
}
