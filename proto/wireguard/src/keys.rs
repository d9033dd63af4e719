//! Key types. Secrets are wiped on drop, never printed, and compared in
//! constant time; public keys print as base64 like `wg` does.

use std::fmt;

use base64::Engine;

use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;

/// A Curve25519 public key.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub(crate) [u8; 32]);

impl PublicKey {
    pub fn from_bytes(b: [u8; 32]) -> PublicKey {
        PublicKey(b)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn dalek(&self) -> x25519_dalek::PublicKey {
        x25519_dalek::PublicKey::from(self.0)
    }

    /// The key in base64, the form `wg` prints and accepts.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// A Curve25519 private key. `Debug` shows only the derived public key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StaticSecret([u8; 32]);

impl StaticSecret {
    /// A fresh key from the caller's CSPRNG, clamped as `wg genkey` clamps.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> StaticSecret {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        let s = StaticSecret::from_bytes(b);
        b.zeroize();
        s
    }

    /// Takes the raw key; clamping is applied, so a key from `wg genkey`
    /// (already clamped) is unchanged.
    pub fn from_bytes(mut b: [u8; 32]) -> StaticSecret {
        b[0] &= 248;
        b[31] &= 127;
        b[31] |= 64;
        StaticSecret(b)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.dalek()).to_bytes())
    }

    pub(crate) fn dalek(&self) -> x25519_dalek::StaticSecret {
        x25519_dalek::StaticSecret::from(self.0)
    }

    /// DH(self, public), refusing an all-zero result: that only happens for
    /// low-order points, and accepting it would let an attacker force a known
    /// shared secret.
    pub(crate) fn diffie_hellman(&self, public: &PublicKey) -> Result<zeroize::Zeroizing<[u8; 32]>, Error> {
        let shared = self.dalek().diffie_hellman(&public.dalek());
        if !shared.was_contributory() {
            return Err(Error::LowOrderKey);
        }
        Ok(zeroize::Zeroizing::new(shared.to_bytes()))
    }
}

impl PartialEq for StaticSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for StaticSecret {}

impl fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StaticSecret(public {})", self.public_key())
    }
}

/// An optional 32-byte pre-shared key mixed into the handshake (psk2).
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; 32]);

impl PresharedKey {
    pub fn from_bytes(b: [u8; 32]) -> PresharedKey {
        PresharedKey(b)
    }

    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> PresharedKey {
        let mut p = PresharedKey([0; 32]);
        rng.fill_bytes(&mut p.0);
        p
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The all-zero key is what "no PSK" means on the wire.
    pub fn is_zero(&self) -> bool {
        self.0.ct_eq(&[0u8; 32]).into()
    }
}

impl PartialEq for PresharedKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for PresharedKey {}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn secrets_are_wiped() {
        fn wiped_on_drop<T: ZeroizeOnDrop>() {}
        wiped_on_drop::<StaticSecret>();
        wiped_on_drop::<PresharedKey>();
        let mut k = StaticSecret::random(&mut OsRng);
        k.zeroize();
        assert_eq!(k.as_bytes(), &[0; 32]);
        let mut p = PresharedKey::random(&mut OsRng);
        p.zeroize();
        assert_eq!(p.as_bytes(), &[0; 32]);
    }

    #[test]
    fn public_key_base64_matches_the_base64_crate() {
        for _ in 0..20 {
            let k = StaticSecret::random(&mut OsRng).public_key();
            assert_eq!(k.to_base64(), base64::engine::general_purpose::STANDARD.encode(k.as_bytes()));
        }
    }

    #[test]
    fn debug_output_never_contains_the_secret() {
        let s = StaticSecret::random(&mut OsRng);
        let secret_b64 = base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let shown = format!("{s:?}");
        assert!(!shown.contains(&secret_b64));
        assert!(shown.contains(&s.public_key().to_base64()));
        let p = PresharedKey::random(&mut OsRng);
        assert!(!format!("{p:?}").contains(&base64::engine::general_purpose::STANDARD.encode(p.as_bytes())));
    }

    #[test]
    fn low_order_points_are_refused() {
        let s = StaticSecret::random(&mut OsRng);
        // The identity and a point of order 8 on Curve25519.
        let zero = PublicKey([0u8; 32]);
        let order8 = [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09,
            0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
        ];
        assert_eq!(s.diffie_hellman(&zero).unwrap_err(), Error::LowOrderKey);
        assert_eq!(s.diffie_hellman(&PublicKey(order8)).unwrap_err(), Error::LowOrderKey);
        let other = StaticSecret::random(&mut OsRng).public_key();
        assert!(s.diffie_hellman(&other).is_ok());
    }

    #[test]
    fn clamping_and_equality() {
        let s = StaticSecret::from_bytes([0xff; 32]);
        assert_eq!(s.as_bytes()[0] & 7, 0);
        assert_eq!(s.as_bytes()[31] & 0xc0, 0x40);
        assert_eq!(s, StaticSecret::from_bytes(*s.as_bytes()));
        assert_ne!(s, StaticSecret::from_bytes([1; 32]));
    }
}
