//! Anti-DoS cookies (RFC 7296 §2.6): a responder under load answers an
//! IKE_SA_INIT request with a COOKIE notification and keeps no state; the
//! initiator repeats its request with the cookie, which the responder checks
//! by recomputing it.
//!
//! Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>), the
//! RFC's suggested shape; the construction is local to the responder. Ours:
//! a 1-byte version, then HMAC-SHA-256 keyed with the secret over
//! len(Ni) (2 bytes) | Ni | IPi (4 or 16 bytes) | SPIi — HMAC rather than a
//! bare hash of data | secret so the tag is a proper MAC, and the length
//! prefix so no two (Ni, IPi) pairs hash the same bytes. 33 bytes in all,
//! within the notification's 64-byte limit.
//!
//! Invariants: the current and the previous secret are honoured (so a
//! rotation does not fail an exchange in flight), nothing older; versions of
//! the two always differ; secrets are zeroized on drop and never shown;
//! cookies are compared in constant time.

use std::net::IpAddr;

use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{fill_random, CryptoError};

const SECRET_LEN: usize = 32;
const TAG_LEN: usize = 32;

/// Length of the cookies this module makes.
pub const COOKIE_LEN: usize = 1 + TAG_LEN;

struct Secret {
    version: u8,
    key: Zeroizing<[u8; SECRET_LEN]>,
}

impl Secret {
    fn random(version: u8, rng: &mut dyn rand_core::RngCore) -> Result<Secret, CryptoError> {
        let mut key = Zeroizing::new([0u8; SECRET_LEN]);
        fill_random(rng, &mut key[..])?;
        Ok(Secret { version, key })
    }

    fn tag(&self, ni: &[u8], ip: IpAddr, spi_i: u64) -> hmac::Tag {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.key[..]);
        let mut ctx = hmac::Context::with_key(&key);
        // Nonces are 16..=256 bytes (§3.9); saturating keeps a hostile
        // length from panicking and still separates every legal one.
        ctx.update(&u16::try_from(ni.len()).unwrap_or(u16::MAX).to_be_bytes());
        ctx.update(ni);
        match ip {
            IpAddr::V4(a) => ctx.update(&a.octets()),
            IpAddr::V6(a) => ctx.update(&a.octets()),
        }
        ctx.update(&spi_i.to_be_bytes());
        ctx.sign()
    }
}

/// The responder's cookie secret, current and previous.
pub struct CookieSecret {
    current: Secret,
    previous: Option<Secret>,
}

impl std::fmt::Debug for CookieSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieSecret").field("version", &self.current.version).finish_non_exhaustive()
    }
}

impl CookieSecret {
    pub fn new(rng: &mut dyn rand_core::RngCore) -> Result<CookieSecret, CryptoError> {
        Ok(CookieSecret { current: Secret::random(0, rng)?, previous: None })
    }

    /// Replaces the secret; cookies made with the one replaced stay valid
    /// until the next rotation. The caller rotates on its own schedule (the
    /// RFC suggests frequently, e.g. every few minutes).
    pub fn rotate(&mut self, rng: &mut dyn rand_core::RngCore) -> Result<(), CryptoError> {
        let next = Secret::random(self.current.version.wrapping_add(1), rng)?;
        self.previous = Some(std::mem::replace(&mut self.current, next));
        Ok(())
    }

    /// The cookie for an initiator's nonce Ni, address IPi and SPIi.
    pub fn make(&self, ni: &[u8], ip: IpAddr, spi_i: u64) -> Vec<u8> {
        let mut cookie = Vec::with_capacity(COOKIE_LEN);
        cookie.push(self.current.version);
        cookie.extend_from_slice(self.current.tag(ni, ip, spi_i).as_ref());
        cookie
    }

    /// Whether `cookie` is one we made, with the current or the previous
    /// secret, for these Ni, IPi and SPIi.
    pub fn check(&self, cookie: &[u8], ni: &[u8], ip: IpAddr, spi_i: u64) -> bool {
        let Some((&version, tag)) = cookie.split_first() else {
            return false;
        };
        if tag.len() != TAG_LEN {
            return false;
        }
        let secret = if version == self.current.version {
            &self.current
        } else {
            match &self.previous {
                Some(p) if p.version == version => p,
                _ => return false,
            }
        };
        bool::from(secret.tag(ni, ip, spi_i).as_ref().ct_eq(tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn made_cookies_check() {
        let secret = CookieSecret::new(&mut OsRng).expect("secret");
        let ni = [0x11; 32];
        let cookie = secret.make(&ni, ip("198.18.0.1"), 0xdead_beef);
        assert_eq!(cookie.len(), COOKIE_LEN);
        assert!(cookie.len() <= 64);
        assert!(secret.check(&cookie, &ni, ip("198.18.0.1"), 0xdead_beef));
        let v6 = secret.make(&ni, ip("fd00::1"), 7);
        assert!(secret.check(&v6, &ni, ip("fd00::1"), 7));
    }

    #[test]
    fn any_other_input_fails() {
        let secret = CookieSecret::new(&mut OsRng).expect("secret");
        let ni = [0x11; 32];
        let a = ip("198.18.0.1");
        let cookie = secret.make(&ni, a, 5);
        assert!(!secret.check(&cookie, &[0x12; 32], a, 5));
        assert!(!secret.check(&cookie, &ni[..31], a, 5));
        assert!(!secret.check(&cookie, &ni, ip("198.18.0.2"), 5));
        assert!(!secret.check(&cookie, &ni, a, 6));
        assert!(!secret.check(&cookie[..32], &ni, a, 5));
        assert!(!secret.check(&[cookie.as_slice(), &[0]].concat(), &ni, a, 5));
        assert!(!secret.check(&[], &ni, a, 5));
        for pos in 0..cookie.len() {
            let mut bad = cookie.clone();
            bad[pos] ^= 1;
            assert!(!secret.check(&bad, &ni, a, 5), "byte {pos}");
        }
        let other = CookieSecret::new(&mut OsRng).expect("secret");
        assert!(!other.check(&cookie, &ni, a, 5));
    }

    #[test]
    fn rotation_keeps_exactly_one_previous_secret() {
        let mut secret = CookieSecret::new(&mut OsRng).expect("secret");
        let ni = [0x22; 16];
        let a = ip("198.18.0.9");
        let old = secret.make(&ni, a, 1);
        secret.rotate(&mut OsRng).expect("rotate");
        let new = secret.make(&ni, a, 1);
        assert_ne!(old, new);
        assert_ne!(old[0], new[0]);
        assert!(secret.check(&old, &ni, a, 1));
        assert!(secret.check(&new, &ni, a, 1));
        secret.rotate(&mut OsRng).expect("rotate");
        assert!(!secret.check(&old, &ni, a, 1));
        assert!(secret.check(&new, &ni, a, 1));
        // Versions wrap without ever equalling the previous one.
        for _ in 0..300 {
            secret.rotate(&mut OsRng).expect("rotate");
            let c = secret.make(&ni, a, 1);
            assert!(secret.check(&c, &ni, a, 1));
        }
        assert!(!format!("{secret:?}").contains("key"));
    }

    /// The tag, recomputed in the test from its documented layout.
    #[test]
    fn tag_layout() {
        let secret = CookieSecret::new(&mut OsRng).expect("secret");
        let ni = [0x33; 20];
        let cookie = secret.make(&ni, ip("198.18.1.2"), 0x0102030405060708);
        use ring::hmac;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret.current.key[..]);
        let data = [&20u16.to_be_bytes()[..], &ni, &[198, 18, 1, 2], &0x0102030405060708u64.to_be_bytes()].concat();
        assert_eq!(&cookie[1..], hmac::sign(&key, &data).as_ref());
        assert_eq!(cookie[0], 0);
    }
}
