//! Transport keys of one session (whitepaper section 5.4.6), shared by every
//! worker thread.
//!
//! Invariants:
//! - A counter is handed out by `reserve` exactly once, so no (key, nonce)
//!   pair is ever used twice, whichever threads seal concurrently.
//! - `reserve` never hands out a counter at or beyond REJECT_AFTER_MESSAGES
//!   and never lets the atomic wrap, even when called after exhaustion.
//! - No lock is held while sealing or opening. The replay window's mutex is
//!   taken only after a packet authenticated, for a few instructions.
//!
//! The keys are aws-lc-rs's `LessSafeKey`s: AWS-LC zeroes their context when
//! they are dropped, and the raw key bytes this crate derives are wiped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use aws_lc_rs::aead::LessSafeKey;

use crate::messages::{data, read_u64, DATA_MIN_LEN, TYPE_DATA};
use crate::primitives::{aead_key, aead_open, aead_seal};
use crate::{
    Error, ReplayWindow, Time, AEAD_TAG_LEN, DATA_HEADER_LEN, PADDING_MULTIPLE, REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
};

pub struct Keypair {
    sending: LessSafeKey,
    sending_counter: AtomicU64,
    receiving: LessSafeKey,
    replay: Mutex<ReplayWindow>,
    /// Our index: the receiver index on data the peer sends us with this keypair.
    pub local_index: u32,
    /// The peer's index: written into every data message we send.
    pub remote_index: u32,
    /// When the handshake that made this keypair completed.
    pub created: Time,
    /// Whether we initiated the handshake; only the initiator rekeys on age.
    pub is_initiator: bool,
    /// A responder's keypair until the initiator's first data proves it
    /// holds the keys; lets receivers skip the peer's slot lock afterwards.
    awaiting_confirmation: AtomicBool,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("created", &self.created)
            .field("is_initiator", &self.is_initiator)
            .field("next_counter", &self.sending_counter.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The length plaintext is padded to: the next multiple of 16, but never past
/// the MTU, so a full-MTU packet does not grow beyond what the path carries.
pub fn padded_len(payload_len: usize, mtu: usize) -> usize {
    let rounded = payload_len.div_ceil(PADDING_MULTIPLE) * PADDING_MULTIPLE;
    if payload_len <= mtu {
        rounded.min(mtu)
    } else {
        rounded
    }
}

impl Keypair {
    pub(crate) fn new(
        send_key: &[u8; 32],
        recv_key: &[u8; 32],
        local_index: u32,
        remote_index: u32,
        created: Time,
        is_initiator: bool,
    ) -> Keypair {
        Keypair {
            sending: aead_key(send_key),
            sending_counter: AtomicU64::new(0),
            receiving: aead_key(recv_key),
            replay: Mutex::new(ReplayWindow::new()),
            local_index,
            remote_index,
            created,
            is_initiator,
            awaiting_confirmation: AtomicBool::new(!is_initiator),
        }
    }

    /// Reserves `n` consecutive counters and returns the first.
    pub fn reserve(&self, n: u64) -> Result<u64, Error> {
        self.sending_counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                c.checked_add(n).filter(|&end| end <= REJECT_AFTER_MESSAGES)
            })
            .map_err(|_| Error::KeypairExpired)
    }

    /// The next counter `reserve` would hand out (for rekey decisions).
    pub fn next_counter(&self) -> u64 {
        self.sending_counter.load(Ordering::Relaxed)
    }

    /// Whether the keypair is too old to send or receive with.
    pub fn is_expired(&self, now: Time) -> bool {
        now.saturating_since(self.created) >= REJECT_AFTER_TIME
    }

    /// Seals in place with a counter from `reserve`.
    ///
    /// `buf` holds the plaintext at `buf[16..16 + payload_len]`; the header is
    /// written in front, zero padding up to `padded_len`, and the tag after.
    /// Returns the length of the data message.
    pub fn seal(&self, counter: u64, buf: &mut [u8], payload_len: usize, padded_len: usize) -> Result<usize, Error> {
        debug_assert!(padded_len >= payload_len);
        let total = DATA_HEADER_LEN + padded_len + AEAD_TAG_LEN;
        if buf.len() < total || padded_len < payload_len {
            return Err(Error::BufferTooSmall);
        }
        buf[..4].copy_from_slice(&TYPE_DATA.to_le_bytes());
        buf[data::RECEIVER..data::RECEIVER + 4].copy_from_slice(&self.remote_index.to_le_bytes());
        buf[data::COUNTER..data::COUNTER + 8].copy_from_slice(&counter.to_le_bytes());
        buf[DATA_HEADER_LEN + payload_len..DATA_HEADER_LEN + padded_len].fill(0);
        aead_seal(&self.sending, counter, &mut buf[DATA_HEADER_LEN..total], &[]);
        Ok(total)
    }

    /// Reserves one counter and seals: the single-packet convenience path.
    pub fn encrypt(&self, buf: &mut [u8], payload_len: usize, mtu: usize) -> Result<usize, Error> {
        let counter = self.reserve(1)?;
        self.seal(counter, buf, payload_len, padded_len(payload_len, mtu))
    }

    /// Authenticates and decrypts a data message in place, without touching
    /// the replay window. Returns the counter and the padded plaintext.
    /// The caller must pass the counter to `accept_counter` before using the
    /// plaintext.
    pub fn open<'a>(&self, msg: &'a mut [u8]) -> Result<(u64, &'a mut [u8]), Error> {
        if msg.len() < DATA_MIN_LEN {
            return Err(Error::InvalidLength);
        }
        let counter = read_u64(msg, data::COUNTER);
        if counter >= REJECT_AFTER_MESSAGES {
            return Err(Error::Replayed);
        }
        let body = &mut msg[DATA_HEADER_LEN..];
        aead_open(&self.receiving, counter, body, &[])?;
        let plain_len = body.len() - AEAD_TAG_LEN;
        Ok((counter, &mut body[..plain_len]))
    }

    /// Whether this may still be a responder's unconfirmed `next` keypair.
    pub(crate) fn awaiting_confirmation(&self) -> bool {
        self.awaiting_confirmation.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_confirmed(&self) {
        self.awaiting_confirmation.store(false, Ordering::Relaxed);
    }

    /// The replay check: accepts an authenticated counter once.
    pub fn accept_counter(&self, counter: u64) -> Result<(), Error> {
        let mut w = self.replay.lock().unwrap_or_else(|e| e.into_inner());
        if w.check_and_update(counter) {
            Ok(())
        } else {
            Err(Error::Replayed)
        }
    }

    /// `open` then `accept_counter`: the single-packet convenience path.
    pub fn decrypt<'a>(&self, msg: &'a mut [u8]) -> Result<&'a mut [u8], Error> {
        let (counter, plain) = self.open(msg)?;
        self.accept_counter(counter)?;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    pub(crate) fn pair() -> (Keypair, Keypair) {
        let a = Keypair::new(&[1; 32], &[2; 32], 10, 20, Time::ZERO, true);
        let b = Keypair::new(&[2; 32], &[1; 32], 20, 10, Time::ZERO, false);
        (a, b)
    }

    #[test]
    fn round_trip_with_padding() {
        let (a, b) = pair();
        let mut buf = vec![0u8; 200];
        buf[16..16 + 5].copy_from_slice(b"hello");
        let n = a.encrypt(&mut buf, 5, 1420).unwrap();
        assert_eq!(n, 16 + 16 + 16, "5 bytes pad to 16");
        let plain = b.decrypt(&mut buf[..n]).unwrap();
        assert_eq!(&plain[..5], b"hello");
        assert!(plain[5..].iter().all(|&x| x == 0));
    }

    #[test]
    fn keepalive_is_an_empty_payload() {
        let (a, b) = pair();
        let mut buf = [0u8; 32];
        assert_eq!(a.encrypt(&mut buf, 0, 1420).unwrap(), 32);
        assert!(b.decrypt(&mut buf).unwrap().is_empty());
    }

    #[test]
    fn padding_respects_mtu() {
        assert_eq!(padded_len(0, 1420), 0);
        assert_eq!(padded_len(1, 1420), 16);
        assert_eq!(padded_len(1419, 1420), 1420);
        assert_eq!(padded_len(1420, 1420), 1420);
        assert_eq!(padded_len(1417, 1420), 1420);
        assert_eq!(padded_len(33_999, 34_000), 34_000);
    }

    #[test]
    fn replayed_and_tampered_messages_are_refused() {
        let (a, b) = pair();
        let mut buf = [0u8; 64];
        let n = a.encrypt(&mut buf, 10, 1420).unwrap();
        let copy = buf;
        b.decrypt(&mut buf[..n]).unwrap();
        assert_eq!(b.decrypt(&mut { copy }[..n]).unwrap_err(), Error::Replayed);
        let mut bad = copy;
        bad[20] ^= 0x80;
        assert_eq!(b.decrypt(&mut bad[..n]).unwrap_err(), Error::DecryptionFailed);
        // A forged counter must not advance the window: it fails to authenticate first.
        let mut forged = copy;
        forged[8..16].copy_from_slice(&1_000_000u64.to_le_bytes());
        assert_eq!(b.decrypt(&mut forged[..n]).unwrap_err(), Error::DecryptionFailed);
        let n2 = a.encrypt(&mut buf, 10, 1420).unwrap();
        b.decrypt(&mut buf[..n2]).unwrap();
    }

    #[test]
    fn counter_never_wraps() {
        let (a, _) = pair();
        a.sending_counter.store(REJECT_AFTER_MESSAGES - 2, Ordering::Relaxed);
        assert_eq!(a.reserve(1).unwrap(), REJECT_AFTER_MESSAGES - 2);
        assert_eq!(a.reserve(2).unwrap_err(), Error::KeypairExpired);
        assert_eq!(a.reserve(1).unwrap(), REJECT_AFTER_MESSAGES - 1);
        for _ in 0..20_000 {
            assert_eq!(a.reserve(1).unwrap_err(), Error::KeypairExpired);
        }
        assert_eq!(a.next_counter(), REJECT_AFTER_MESSAGES, "exhausted, not wrapped");
        let mut buf = [0u8; 32];
        assert_eq!(a.encrypt(&mut buf, 0, 1420).unwrap_err(), Error::KeypairExpired);
    }

    #[test]
    fn receiver_refuses_counters_at_the_limit() {
        let (a, b) = pair();
        let mut buf = [0u8; 32];
        a.seal(REJECT_AFTER_MESSAGES, &mut buf, 0, 0).unwrap();
        assert_eq!(b.decrypt(&mut buf).unwrap_err(), Error::Replayed);
    }

    #[test]
    fn expiry_by_age() {
        let (a, _) = pair();
        assert!(!a.is_expired(Time::from_secs(179)));
        assert!(a.is_expired(Time::from_secs(180)));
    }

    /// Many threads seal with one keypair and open with the other, with no
    /// lock around the AEAD: every counter is used once and every packet
    /// decrypts exactly once.
    #[test]
    fn concurrent_seal_and_open() {
        let (a, b) = pair();
        let (a, b) = (Arc::new(a), Arc::new(b));
        let threads = 4;
        let per_thread = 2_000;
        let sealed: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let a = a.clone();
                    s.spawn(move || {
                        (0..per_thread)
                            .map(|i| {
                                let mut buf = vec![0u8; 16 + 64 + 16];
                                buf[16..24].copy_from_slice(&((t * per_thread + i) as u64).to_le_bytes());
                                let n = a.encrypt(&mut buf, 64, 1420).unwrap();
                                buf.truncate(n);
                                buf
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let counters: HashSet<u64> = sealed.iter().flatten().map(|m| read_u64(m, 8)).collect();
        assert_eq!(counters.len(), threads * per_thread, "no counter reused");
        let opened: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = sealed
                .into_iter()
                .rev()
                .map(|batch| {
                    let b = b.clone();
                    s.spawn(move || {
                        batch
                            .into_iter()
                            .map(|mut m| u64::from_le_bytes(b.decrypt(&mut m).unwrap()[..8].try_into().unwrap()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let ids: HashSet<u64> = opened.into_iter().collect();
        assert_eq!(ids.len(), threads * per_thread);
    }
}
