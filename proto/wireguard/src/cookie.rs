//! MAC1, MAC2 and cookie replies (whitepaper section 5.4.4 and 5.4.7).
//!
//! The responder side ([`CookieChecker`]) verifies MAC1 on every handshake
//! message before spending a Diffie-Hellman on it, and under load demands a
//! MAC2 keyed by a cookie bound to the sender's address. The initiator side
//! ([`CookieGenerator`], one per peer) writes MACs and remembers the cookie it
//! was given.

use std::sync::Mutex;
use std::time::Duration;

use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::messages::{cookie_reply, read_u32, COOKIE_REPLY_LEN, MACS_LEN, TYPE_COOKIE_REPLY};
use crate::primitives::{hash, mac, xaead_open, xaead_seal, LABEL_COOKIE, LABEL_MAC1};
use crate::{Error, PublicKey, Time, COOKIE_SECRET_MAX_AGE};

/// A received cookie is trusted for a little less than the responder's
/// secret lifetime, so it is never used just as the responder rotates.
const COOKIE_FRESHNESS: Duration = Duration::from_secs(COOKIE_SECRET_MAX_AGE.as_secs() - 5);

fn mac1_offset(msg: &[u8]) -> usize {
    msg.len() - MACS_LEN
}

fn mac2_offset(msg: &[u8]) -> usize {
    msg.len() - 16
}

/// Responder side: verifies MACs of incoming handshake messages and makes
/// cookie replies. One per local identity.
pub struct CookieChecker {
    mac1_key: [u8; 32],
    cookie_key: Zeroizing<[u8; 32]>,
    /// Random secret and when it was made; rotated lazily every two minutes.
    secret: Mutex<(Zeroizing<[u8; 32]>, Option<Time>)>,
}

impl CookieChecker {
    pub fn new(local: &PublicKey) -> CookieChecker {
        CookieChecker {
            mac1_key: hash(&[LABEL_MAC1, local.as_bytes()]),
            cookie_key: Zeroizing::new(hash(&[LABEL_COOKIE, local.as_bytes()])),
            secret: Mutex::new((Zeroizing::new([0u8; 32]), None)),
        }
    }

    /// Verifies MAC1 of a handshake message (initiation or response), in
    /// constant time. This is the cheap filter applied before any DH.
    pub fn check_mac1(&self, msg: &[u8]) -> Result<(), Error> {
        let at = mac1_offset(msg);
        let expected = mac(&self.mac1_key, &[&msg[..at]]);
        if bool::from(expected.ct_eq(&msg[at..at + 16])) {
            Ok(())
        } else {
            Err(Error::InvalidMac1)
        }
    }

    /// The cookie for a source address: MAC(secret, address bytes).
    fn cookie_for(&self, src: &[u8], now: Time) -> Zeroizing<[u8; 16]> {
        let mut guard = self.secret.lock().unwrap_or_else(|e| e.into_inner());
        let stale = match guard.1 {
            None => true,
            Some(made) => now.saturating_since(made) >= COOKIE_SECRET_MAX_AGE,
        };
        if stale {
            OsRng.fill_bytes(&mut guard.0[..]);
            guard.1 = Some(now);
        }
        Zeroizing::new(mac(&guard.0[..], &[src]))
    }

    /// Verifies MAC2 against the cookie this responder would give `src`.
    pub fn check_mac2(&self, msg: &[u8], src: &[u8], now: Time) -> Result<(), Error> {
        let cookie = self.cookie_for(src, now);
        let at = mac2_offset(msg);
        let expected = mac(&cookie[..], &[&msg[..at]]);
        if bool::from(expected.ct_eq(&msg[at..])) {
            Ok(())
        } else {
            Err(Error::InvalidMac2)
        }
    }

    /// Builds the cookie reply to a handshake message whose MAC1 verified.
    pub fn create_reply(&self, msg: &[u8], sender_index: u32, src: &[u8], now: Time) -> [u8; COOKIE_REPLY_LEN] {
        let cookie = self.cookie_for(src, now);
        let mut out = [0u8; COOKIE_REPLY_LEN];
        out[0] = TYPE_COOKIE_REPLY as u8;
        out[cookie_reply::RECEIVER..cookie_reply::RECEIVER + 4].copy_from_slice(&sender_index.to_le_bytes());
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        out[cookie_reply::NONCE..cookie_reply::COOKIE].copy_from_slice(&nonce);
        let at = mac1_offset(msg);
        let mut sealed = [0u8; 32];
        xaead_seal(&self.cookie_key, &nonce, &cookie, &msg[at..at + 16], &mut sealed);
        out[cookie_reply::COOKIE..].copy_from_slice(&sealed);
        out
    }
}

/// Initiator side, one per peer: writes MAC1/MAC2 and keeps the cookie.
pub struct CookieGenerator {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    state: Mutex<GeneratorState>,
}

#[derive(Default)]
struct GeneratorState {
    /// MAC1 of the last handshake message sent: the AAD of a cookie reply.
    last_mac1: Option<[u8; 16]>,
    cookie: Option<(Zeroizing<[u8; 16]>, Time)>,
}

impl CookieGenerator {
    pub fn new(remote: &PublicKey) -> CookieGenerator {
        CookieGenerator {
            mac1_key: hash(&[LABEL_MAC1, remote.as_bytes()]),
            cookie_key: hash(&[LABEL_COOKIE, remote.as_bytes()]),
            state: Mutex::new(GeneratorState::default()),
        }
    }

    /// Fills the last 32 bytes of `msg` (a handshake message) with MAC1 and,
    /// when a fresh cookie is held, MAC2; otherwise MAC2 is zero.
    pub fn add_macs(&self, msg: &mut [u8], now: Time) {
        let at1 = mac1_offset(msg);
        let mac1 = mac(&self.mac1_key, &[&msg[..at1]]);
        msg[at1..at1 + 16].copy_from_slice(&mac1);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.last_mac1 = Some(mac1);
        let at2 = mac2_offset(msg);
        let mac2 = match &st.cookie {
            Some((cookie, got)) if now.saturating_since(*got) < COOKIE_FRESHNESS => mac(&cookie[..], &[&msg[..at2]]),
            _ => [0u8; 16],
        };
        msg[at2..].copy_from_slice(&mac2);
    }

    /// Stores the cookie from a reply to our last handshake message. A reply
    /// that does not decrypt against that message changes nothing.
    pub fn consume_reply(&self, reply: &[u8; COOKIE_REPLY_LEN], now: Time) -> Result<(), Error> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let aad = st.last_mac1.ok_or(Error::UnexpectedCookieReply)?;
        let nonce: &[u8; 24] = reply[cookie_reply::NONCE..cookie_reply::COOKIE].try_into().expect("24 bytes");
        let sealed: &[u8; 32] = reply[cookie_reply::COOKIE..].try_into().expect("32 bytes");
        let cookie = xaead_open(&self.cookie_key, nonce, sealed, &aad)?;
        st.cookie = Some((cookie, now));
        // A reply is good for one message; a replayed reply must not verify again.
        st.last_mac1 = None;
        Ok(())
    }

    /// Whether a cookie is held and still fresh (for status output and tests).
    pub fn has_fresh_cookie(&self, now: Time) -> bool {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        matches!(&st.cookie, Some((_, got)) if now.saturating_since(*got) < COOKIE_FRESHNESS)
    }
}

/// The receiver index of a cookie reply.
pub(crate) fn reply_receiver(reply: &[u8; COOKIE_REPLY_LEN]) -> u32 {
    read_u32(&reply[..], cookie_reply::RECEIVER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StaticSecret;

    fn keys() -> (PublicKey, PublicKey) {
        (StaticSecret::random(&mut OsRng).public_key(), StaticSecret::random(&mut OsRng).public_key())
    }

    #[test]
    fn mac1_verifies_only_for_the_intended_responder() {
        let (responder, other) = keys();
        let gen = CookieGenerator::new(&responder);
        let mut msg = [7u8; 148];
        gen.add_macs(&mut msg, Time::ZERO);
        assert!(CookieChecker::new(&responder).check_mac1(&msg).is_ok());
        assert_eq!(CookieChecker::new(&other).check_mac1(&msg), Err(Error::InvalidMac1));
        msg[10] ^= 1;
        assert_eq!(CookieChecker::new(&responder).check_mac1(&msg), Err(Error::InvalidMac1));
    }

    #[test]
    fn cookie_round_trip_enables_mac2() {
        let (responder, _) = keys();
        let checker = CookieChecker::new(&responder);
        let gen = CookieGenerator::new(&responder);
        let src = [198, 18, 0, 1, 0x14, 0xe9];
        let now = Time::from_secs(10);
        let mut msg = [1u8; 148];
        gen.add_macs(&mut msg, now);
        assert_eq!(checker.check_mac2(&msg, &src, now), Err(Error::InvalidMac2));
        let reply = checker.create_reply(&msg, 42, &src, now);
        assert_eq!(reply_receiver(&reply), 42);
        gen.consume_reply(&reply, now).unwrap();
        // A replayed reply is refused and does not disturb the stored cookie.
        assert_eq!(gen.consume_reply(&reply, now), Err(Error::UnexpectedCookieReply));
        assert!(gen.has_fresh_cookie(now));
        gen.add_macs(&mut msg, now);
        checker.check_mac2(&msg, &src, now).unwrap();
        // The cookie is bound to the source address.
        assert_eq!(checker.check_mac2(&msg, &[198, 18, 0, 2, 0x14, 0xe9], now), Err(Error::InvalidMac2));
        // After the secret rotates, the old cookie no longer verifies, and the
        // initiator stops using its stale cookie.
        let later = now + Duration::from_secs(121);
        assert_eq!(checker.check_mac2(&msg, &src, later), Err(Error::InvalidMac2));
        assert!(!gen.has_fresh_cookie(later));
    }

    #[test]
    fn tampered_or_unsolicited_reply_changes_nothing() {
        let (responder, _) = keys();
        let checker = CookieChecker::new(&responder);
        let gen = CookieGenerator::new(&responder);
        let mut msg = [1u8; 92];
        assert_eq!(
            gen.consume_reply(&checker.create_reply(&msg, 1, b"a", Time::ZERO), Time::ZERO),
            Err(Error::UnexpectedCookieReply)
        );
        gen.add_macs(&mut msg, Time::ZERO);
        let mut reply = checker.create_reply(&msg, 1, b"a", Time::ZERO);
        reply[40] ^= 1;
        assert_eq!(gen.consume_reply(&reply, Time::ZERO), Err(Error::DecryptionFailed));
        assert!(!gen.has_fresh_cookie(Time::ZERO));
        reply[40] ^= 1;
        gen.consume_reply(&reply, Time::ZERO).unwrap();
    }
}
