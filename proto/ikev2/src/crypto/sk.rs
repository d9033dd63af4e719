//! Protection of the Encrypted payload, SK (RFC 7296 §3.14), for one IKE SA
//! and one side of it: we seal with our keys (SK_ei/SK_ai as initiator,
//! SK_er/SK_ar as responder) and open with the peer's.
//!
//! Body layout (what follows the SK payload's 4-byte generic header):
//! - AES-GCM (RFC 5282): 8-byte explicit IV | ciphertext | 16-byte tag; the
//!   nonce is the 4-byte salt (last bytes of SK_e) | IV, the AAD is the IKE
//!   header through the SK generic header (plus any cleartext payloads in
//!   between: whatever the caller passes as `aad`).
//! - AES-CBC + HMAC-SHA2-256-128: 16-byte random IV | ciphertext | 16-byte
//!   ICV, the ICV being the truncated HMAC over aad | IV | ciphertext (§3.14:
//!   "from the fixed IKE header through the Pad Length").
//!
//! The same calls protect an Encrypted Fragment payload (SKF, RFC 7383 §2.5)
//! when `aad` runs through its Fragment Number and Total Fragments fields.
//!
//! In both, the plaintext is inner payloads | padding | Pad Length. We pad
//! with zeros (any value is allowed) to the cipher's block size, none for
//! GCM; we accept any padding value and any pad length that fits.
//!
//! Invariants:
//! - a GCM nonce never repeats under one key in one `SkCrypto`: the IV is
//!   a random 64-bit base drawn at the first seal plus a counter that is
//!   never reused and never wraps (it fails with `IvExhausted` first). The
//!   random base also keeps two `SkCrypto`s built from the same keys (a
//!   caller's mistake) from colliding in practice. `SkCrypto` is not `Clone`
//!   so the counter cannot be forked.
//! - CBC: the ICV is checked, in constant time, before anything is
//!   decrypted.
//! - `open` never panics: every length is checked before slicing.
//! - an inconsistent suite or keys of the wrong length give an `SkCrypto`
//!   whose every seal and open fails with `InvalidSuite`.
//!
//! Primitives: aws-lc-rs's AES-GCM (constant-time, hardware-accelerated;
//! AWS-LC wipes its key context when dropped), RustCrypto's `aes`
//! (constant-time bitsliced or AES-NI) and `cbc` crates for AES-CBC, with
//! aws-lc-rs's HMAC for the ICV.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use aws_lc_rs::{aead, hmac};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{fill_random, CryptoError, EncrAlg, IkeKeys, IkeSuite, GCM_SALT_LEN};

const GCM_IV_LEN: usize = 8;
const GCM_TAG_LEN: usize = 16;
const AES_BLOCK: usize = 16;
const CBC_IV_LEN: usize = AES_BLOCK;

/// A GCM direction: key and salt.
struct GcmKey {
    key: aead::LessSafeKey,
    salt: Zeroizing<[u8; GCM_SALT_LEN]>,
}

impl GcmKey {
    fn new(key_bits: u16, sk_e: &[u8]) -> Option<GcmKey> {
        let alg = match key_bits {
            128 => &aead::AES_128_GCM,
            256 => &aead::AES_256_GCM,
            _ => return None,
        };
        let split = sk_e.len().checked_sub(GCM_SALT_LEN)?;
        let (key, salt) = sk_e.split_at(split);
        let key = aead::UnboundKey::new(alg, key).ok()?;
        Some(GcmKey { key: aead::LessSafeKey::new(key), salt: Zeroizing::new(salt.try_into().ok()?) })
    }

    fn nonce(&self, iv: &[u8; GCM_IV_LEN]) -> aead::Nonce {
        let mut n = [0u8; aead::NONCE_LEN];
        n[..GCM_SALT_LEN].copy_from_slice(&self.salt[..]);
        n[GCM_SALT_LEN..].copy_from_slice(iv);
        aead::Nonce::assume_unique_for_key(n)
    }
}

/// A CBC direction: cipher key and integrity key.
struct CbcKey {
    key_bits: u16,
    key: Zeroizing<Vec<u8>>,
    mac: hmac::Key,
}

impl CbcKey {
    fn new(key_bits: u16, sk_e: &[u8], sk_a: &[u8], suite: &IkeSuite) -> Option<CbcKey> {
        let integ = suite.integ?;
        if sk_e.len() != usize::from(key_bits) / 8 || sk_a.len() != integ.key_len() {
            return None;
        }
        Some(CbcKey { key_bits, key: Zeroizing::new(sk_e.to_vec()), mac: hmac::Key::new(integ.hmac(), sk_a) })
    }

    fn icv(&self, aad: &[u8], iv_and_ciphertext: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(aad);
        ctx.update(iv_and_ciphertext);
        ctx.sign()
    }

    fn encrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
        let len = buf.len();
        let done = match self.key_bits {
            128 => cbc::Encryptor::<aes::Aes128>::new_from_slices(&self.key, iv)
                .map_err(|_| CryptoError::Internal)?
                .encrypt_padded_mut::<NoPadding>(buf, len)
                .map(|c| c.len()),
            _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(&self.key, iv)
                .map_err(|_| CryptoError::Internal)?
                .encrypt_padded_mut::<NoPadding>(buf, len)
                .map(|c| c.len()),
        };
        match done {
            Ok(n) if n == len => Ok(()),
            _ => Err(CryptoError::Internal),
        }
    }

    fn decrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
        let len = buf.len();
        let done = match self.key_bits {
            128 => cbc::Decryptor::<aes::Aes128>::new_from_slices(&self.key, iv)
                .map_err(|_| CryptoError::Internal)?
                .decrypt_padded_mut::<NoPadding>(buf)
                .map(|p| p.len()),
            _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(&self.key, iv)
                .map_err(|_| CryptoError::Internal)?
                .decrypt_padded_mut::<NoPadding>(buf)
                .map(|p| p.len()),
        };
        match done {
            Ok(n) if n == len => Ok(()),
            _ => Err(CryptoError::Malformed),
        }
    }
}

// One per IKE SA, built once and never moved on a hot path: the size
// difference between variants costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
enum Protection {
    Gcm { seal: GcmKey, open: GcmKey },
    Cbc { seal: CbcKey, open: CbcKey, icv_len: usize },
    Invalid,
}

/// The IV sequence of GCM sealing (see the invariants above).
struct IvSequence {
    base: OnceLock<u64>,
    next: AtomicU64,
}

impl IvSequence {
    fn next(&self, rng: &mut dyn rand_core::RngCore) -> Result<[u8; GCM_IV_LEN], CryptoError> {
        let base = match self.base.get() {
            Some(b) => *b,
            None => {
                let mut b = [0u8; 8];
                fill_random(rng, &mut b)?;
                // Another thread may have set it first; either way, one base.
                let _ = self.base.set(u64::from_be_bytes(b));
                *self.base.get().ok_or(CryptoError::Internal)?
            }
        };
        let n = self
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .map_err(|_| CryptoError::IvExhausted)?;
        Ok(base.wrapping_add(n).to_be_bytes())
    }
}

/// Seals and opens the SK payloads of one IKE SA, for one side.
pub struct SkCrypto {
    encr: EncrAlg,
    protection: Protection,
    ivs: IvSequence,
}

impl std::fmt::Debug for SkCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let valid = !matches!(self.protection, Protection::Invalid);
        f.debug_struct("SkCrypto").field("encr", &self.encr).field("valid", &valid).finish_non_exhaustive()
    }
}

impl SkCrypto {
    /// Protection for our side of the SA whose keys are `keys`.
    pub fn new(suite: &IkeSuite, keys: &IkeKeys, we_are_initiator: bool) -> SkCrypto {
        let (our_e, our_a, peer_e, peer_a) = if we_are_initiator {
            (&keys.sk_ei, &keys.sk_ai, &keys.sk_er, &keys.sk_ar)
        } else {
            (&keys.sk_er, &keys.sk_ar, &keys.sk_ei, &keys.sk_ai)
        };
        let protection = if !suite.is_consistent() {
            None
        } else {
            match suite.encr {
                EncrAlg::AesGcm16 { key_bits } => {
                    let expected = suite.encr.keymat_len();
                    if our_e.len() != expected || peer_e.len() != expected {
                        None
                    } else {
                        GcmKey::new(key_bits, our_e)
                            .zip(GcmKey::new(key_bits, peer_e))
                            .map(|(seal, open)| Protection::Gcm { seal, open })
                    }
                }
                EncrAlg::AesCbc { key_bits } => CbcKey::new(key_bits, our_e, our_a, suite)
                    .zip(CbcKey::new(key_bits, peer_e, peer_a, suite))
                    .zip(suite.integ)
                    .map(|((seal, open), integ)| Protection::Cbc { seal, open, icv_len: integ.icv_len() }),
            }
        };
        SkCrypto {
            encr: suite.encr,
            protection: protection.unwrap_or(Protection::Invalid),
            ivs: IvSequence { base: OnceLock::new(), next: AtomicU64::new(0) },
        }
    }

    /// Length of the SK payload body (IV, ciphertext with padding and Pad
    /// Length, ICV) that `seal` returns for `inner_len` bytes of inner
    /// payloads.
    pub fn body_len(&self, inner_len: usize) -> usize {
        match (&self.protection, self.encr) {
            (Protection::Cbc { icv_len, .. }, _) => CBC_IV_LEN + cbc_padded_len(inner_len) + icv_len,
            (_, EncrAlg::AesCbc { .. }) => CBC_IV_LEN + cbc_padded_len(inner_len) + AES_BLOCK,
            (_, EncrAlg::AesGcm16 { .. }) => GCM_IV_LEN + inner_len + 1 + GCM_TAG_LEN,
        }
    }

    /// Encrypts and authenticates `inner` (the inner payloads). `aad` is the
    /// message from the IKE header through the SK payload's generic header,
    /// exactly as sent, with the final lengths (see `body_len`).
    pub fn seal(&self, aad: &[u8], inner: &[u8], rng: &mut dyn rand_core::RngCore) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(self.body_len(inner.len()));
        match &self.protection {
            Protection::Invalid => return Err(CryptoError::InvalidSuite),
            Protection::Gcm { seal, .. } => {
                let iv = self.ivs.next(rng)?;
                out.extend_from_slice(&iv);
                out.extend_from_slice(inner);
                out.push(0); // Pad Length: GCM needs no padding
                let tag = seal
                    .key
                    .seal_in_place_separate_tag(seal.nonce(&iv), aead::Aad::from(aad), &mut out[GCM_IV_LEN..])
                    .map_err(|_| CryptoError::Internal)?;
                out.extend_from_slice(tag.as_ref());
            }
            Protection::Cbc { seal, icv_len, .. } => {
                let mut iv = [0u8; CBC_IV_LEN];
                fill_random(rng, &mut iv)?;
                out.extend_from_slice(&iv);
                let padded = cbc_padded_len(inner.len());
                let pad = padded - inner.len() - 1;
                out.extend_from_slice(inner);
                out.resize(CBC_IV_LEN + padded - 1, 0);
                // At most 15 bytes of padding: always fits the Pad Length byte.
                out.push(u8::try_from(pad).map_err(|_| CryptoError::Internal)?);
                seal.encrypt(&iv, &mut out[CBC_IV_LEN..])?;
                let icv = seal.icv(aad, &out);
                let icv = icv.as_ref().get(..*icv_len).ok_or(CryptoError::Internal)?;
                out.extend_from_slice(icv);
            }
        }
        Ok(out)
    }

    /// Verifies and decrypts an SK payload body sealed by the peer; returns
    /// the inner payloads without padding.
    pub fn open(&self, aad: &[u8], body: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut plain = match &self.protection {
            Protection::Invalid => return Err(CryptoError::InvalidSuite),
            Protection::Gcm { open, .. } => {
                if body.len() < GCM_IV_LEN + 1 + GCM_TAG_LEN {
                    return Err(CryptoError::Malformed);
                }
                let (iv, sealed) = body.split_at(GCM_IV_LEN);
                let iv: [u8; GCM_IV_LEN] = iv.try_into().map_err(|_| CryptoError::Malformed)?;
                let mut buf = Zeroizing::new(sealed.to_vec());
                let len = open
                    .key
                    .open_in_place(open.nonce(&iv), aead::Aad::from(aad), &mut buf)
                    .map_err(|_| CryptoError::Authentication)?
                    .len();
                buf.truncate(len);
                buf
            }
            Protection::Cbc { open, icv_len, .. } => {
                let icv_len = *icv_len;
                let Some(ct_len) = body.len().checked_sub(CBC_IV_LEN + icv_len) else {
                    return Err(CryptoError::Malformed);
                };
                if ct_len == 0 || ct_len % AES_BLOCK != 0 {
                    return Err(CryptoError::Malformed);
                }
                let (covered, icv) = body.split_at(CBC_IV_LEN + ct_len);
                let expected = open.icv(aad, covered);
                let expected = expected.as_ref().get(..icv_len).ok_or(CryptoError::Internal)?;
                if !bool::from(expected.ct_eq(icv)) {
                    return Err(CryptoError::Authentication);
                }
                let (iv, ciphertext) = covered.split_at(CBC_IV_LEN);
                let mut buf = Zeroizing::new(ciphertext.to_vec());
                open.decrypt(iv, &mut buf)?;
                buf
            }
        };
        // Authenticated from here on: a bad Pad Length is the peer's bug, not
        // an attacker's probe, and reporting it reveals nothing.
        let Some(&pad_len) = plain.last() else {
            return Err(CryptoError::Malformed);
        };
        let Some(inner_len) = plain.len().checked_sub(usize::from(pad_len) + 1) else {
            return Err(CryptoError::Malformed);
        };
        plain.truncate(inner_len);
        Ok(plain)
    }
}

/// inner + Pad Length, rounded up to whole AES blocks.
fn cbc_padded_len(inner_len: usize) -> usize {
    (inner_len + 1).div_ceil(AES_BLOCK) * AES_BLOCK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{derive_ike_keys, DhGroup, IntegAlg, PrfAlg};
    use rand_core::OsRng;
    use std::collections::HashSet;

    fn suites() -> Vec<IkeSuite> {
        let mut out = Vec::new();
        for bits in [128, 256] {
            out.push(IkeSuite {
                encr: EncrAlg::AesGcm16 { key_bits: bits },
                prf: PrfAlg::HmacSha256,
                integ: None,
                dh: DhGroup::Curve25519,
            });
            out.push(IkeSuite {
                encr: EncrAlg::AesCbc { key_bits: bits },
                prf: PrfAlg::HmacSha384,
                integ: Some(IntegAlg::HmacSha256_128),
                dh: DhGroup::Ecp256,
            });
        }
        out
    }

    fn pair(suite: &IkeSuite) -> (IkeKeys, SkCrypto, SkCrypto) {
        let keys = derive_ike_keys(suite, &[0x42; 32], &[1; 32], &[2; 32], 0x1111, 0x2222);
        let i = SkCrypto::new(suite, &keys, true);
        let r = SkCrypto::new(suite, &keys, false);
        (keys, i, r)
    }

    /// A stand-in for the IKE header and SK generic header.
    fn aad() -> Vec<u8> {
        (0..32u8).collect()
    }

    #[test]
    fn round_trip_both_ways_every_suite() {
        for suite in suites() {
            let (_, i, r) = pair(&suite);
            for len in (0..50).chain([255, 256, 1000]) {
                let inner: Vec<u8> = (0..len).map(|b| b as u8).collect();
                let body = i.seal(&aad(), &inner, &mut OsRng).expect("seal");
                assert_eq!(body.len(), i.body_len(len), "{suite:?} {len}");
                assert_eq!(*r.open(&aad(), &body).expect("open"), inner);
                let back = r.seal(&aad(), &inner, &mut OsRng).expect("seal");
                assert_eq!(*i.open(&aad(), &back).expect("open"), inner);
                // Each side's own messages do not open with the peer's keys.
                assert_eq!(i.open(&aad(), &body).unwrap_err(), CryptoError::Authentication);
            }
        }
    }

    #[test]
    fn body_lengths() {
        let [gcm, cbc, ..] = &suites()[..] else { unreachable!() };
        let (_, g, _) = pair(gcm);
        let (_, c, _) = pair(cbc);
        assert_eq!(g.body_len(0), 8 + 1 + 16);
        assert_eq!(g.body_len(100), 8 + 101 + 16);
        assert_eq!(c.body_len(0), 16 + 16 + 16);
        assert_eq!(c.body_len(15), 16 + 16 + 16);
        assert_eq!(c.body_len(16), 16 + 32 + 16);
    }

    #[test]
    fn any_altered_byte_fails_authentication() {
        for suite in suites() {
            let (_, i, r) = pair(&suite);
            let body = i.seal(&aad(), b"inner payloads here", &mut OsRng).expect("seal");
            for pos in 0..body.len() {
                for bit in [0x01, 0x80] {
                    let mut bad = body.clone();
                    bad[pos] ^= bit;
                    assert_eq!(r.open(&aad(), &bad).unwrap_err(), CryptoError::Authentication, "{suite:?} {pos}");
                }
            }
            for pos in 0..aad().len() {
                let mut bad = aad();
                bad[pos] ^= 0x01;
                assert_eq!(r.open(&bad, &body).unwrap_err(), CryptoError::Authentication, "{suite:?} aad {pos}");
            }
            assert_eq!(r.open(&aad()[1..], &body).unwrap_err(), CryptoError::Authentication);
        }
    }

    #[test]
    fn truncated_or_extended_bodies_fail_without_panic() {
        for suite in suites() {
            let (_, i, r) = pair(&suite);
            let body = i.seal(&aad(), &[7; 40], &mut OsRng).expect("seal");
            for len in 0..body.len() {
                let err = r.open(&aad(), &body[..len]).unwrap_err();
                assert!(matches!(err, CryptoError::Malformed | CryptoError::Authentication), "{suite:?} {len}");
                // Dropping the front instead of the end.
                let err = r.open(&aad(), &body[body.len() - len..]).unwrap_err();
                assert!(matches!(err, CryptoError::Malformed | CryptoError::Authentication), "{suite:?} -{len}");
            }
            for extra in [1, 15, 16] {
                let longer = [&body[..], &vec![0; extra]].concat();
                assert!(r.open(&aad(), &longer).is_err());
            }
            assert!(r.open(&[], &[]).is_err());
        }
    }

    /// Arbitrary bodies and AADs: errors only, never a panic.
    #[test]
    fn random_input_never_panics() {
        use rand_core::RngCore;
        for suite in suites() {
            let (_, _, r) = pair(&suite);
            for _ in 0..500 {
                let len = (OsRng.next_u32() % 200) as usize;
                let mut body = vec![0u8; len];
                OsRng.fill_bytes(&mut body);
                let mut aad = vec![0u8; (OsRng.next_u32() % 40) as usize];
                OsRng.fill_bytes(&mut aad);
                assert!(r.open(&aad, &body).is_err());
            }
        }
    }

    #[test]
    fn gcm_ivs_never_repeat() {
        let suite = suites()[0];
        let (_, i, _) = pair(&suite);
        let mut seen = HashSet::new();
        for _ in 0..2000 {
            let body = i.seal(&aad(), b"x", &mut OsRng).expect("seal");
            assert!(seen.insert(body[..8].to_vec()), "IV repeated");
        }
        // A second SkCrypto over the same keys starts elsewhere.
        let (_, again, _) = pair(&suite);
        let first = again.seal(&aad(), b"x", &mut OsRng).expect("seal");
        assert!(!seen.contains(&first[..8]));
    }

    #[test]
    fn gcm_iv_counter_refuses_to_wrap() {
        let suite = suites()[0];
        let (_, i, r) = pair(&suite);
        i.ivs.next.store(u64::MAX - 1, Ordering::Relaxed);
        let body = i.seal(&aad(), b"last", &mut OsRng).expect("seal");
        assert_eq!(*r.open(&aad(), &body).expect("open"), b"last");
        assert_eq!(i.seal(&aad(), b"x", &mut OsRng).unwrap_err(), CryptoError::IvExhausted);
        assert_eq!(i.seal(&aad(), b"x", &mut OsRng).unwrap_err(), CryptoError::IvExhausted);
    }

    /// The GCM body checked with ring directly: IV first, nonce = the salt
    /// from the end of SK_ei | IV, tag last, plaintext = inner | Pad Length.
    #[test]
    fn gcm_layout_follows_rfc5282() {
        use ring::aead;
        for suite in suites().into_iter().filter(|s| s.encr.is_aead()) {
            let (keys, i, _) = pair(&suite);
            let body = i.seal(&aad(), b"inner", &mut OsRng).expect("seal");
            let key_len = suite.encr.key_len();
            let alg = if key_len == 16 { &aead::AES_128_GCM } else { &aead::AES_256_GCM };
            let key = aead::LessSafeKey::new(aead::UnboundKey::new(alg, &keys.sk_ei[..key_len]).expect("key"));
            let nonce: [u8; 12] = [&keys.sk_ei[key_len..], &body[..8]].concat().try_into().expect("12");
            let mut sealed = body[8..].to_vec();
            let plain = key
                .open_in_place(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(aad()), &mut sealed)
                .expect("opens with the RFC 5282 nonce");
            assert_eq!(plain, b"inner\0");
        }
    }

    /// The CBC body checked with the cbc crate and ring's HMAC directly.
    #[test]
    fn cbc_layout_follows_rfc7296() {
        use ring::hmac;
        for suite in suites().into_iter().filter(|s| !s.encr.is_aead()) {
            let (keys, i, _) = pair(&suite);
            let body = i.seal(&aad(), b"twenty inner bytes..", &mut OsRng).expect("seal");
            assert_eq!(body.len(), 16 + 32 + 16);
            let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &keys.sk_ai), &[&aad()[..], &body[..48]].concat());
            assert_eq!(&body[48..], &mac.as_ref()[..16]);
            let mut buf = body[16..48].to_vec();
            let plain = if suite.encr.key_len() == 16 {
                cbc::Decryptor::<aes::Aes128>::new_from_slices(&keys.sk_ei, &body[..16])
                    .expect("key")
                    .decrypt_padded_mut::<NoPadding>(&mut buf)
                    .expect("blocks")
                    .to_vec()
            } else {
                cbc::Decryptor::<aes::Aes256>::new_from_slices(&keys.sk_ei, &body[..16])
                    .expect("key")
                    .decrypt_padded_mut::<NoPadding>(&mut buf)
                    .expect("blocks")
                    .to_vec()
            };
            assert_eq!(&plain[..20], b"twenty inner bytes..");
            assert_eq!(plain[31], 11, "Pad Length");
        }
    }

    /// Authentic messages whose Pad Length overruns the plaintext are
    /// refused as malformed; padding with any content is accepted.
    #[test]
    fn pad_length_is_checked() {
        for suite in suites() {
            let (keys, _, r) = pair(&suite);
            let peer = SkCrypto::new(&suite, &keys, true);
            // A plaintext of 16 bytes ending in `pad`: sealed raw through
            // the peer's keys, bypassing our own padding.
            for (pad, ok) in [(15u8, true), (0xaa, false), (16, false)] {
                let mut plain = vec![0x5a; 16];
                plain[15] = pad;
                let body = raw_seal(&peer, &aad(), &plain);
                match r.open(&aad(), &body) {
                    Ok(inner) if ok => assert!(inner.is_empty()),
                    Err(CryptoError::Malformed) if !ok => {}
                    other => panic!("{suite:?} pad {pad}: {other:?}"),
                }
            }
        }
    }

    /// Seals `plain` as-is (already padded, Pad Length included).
    fn raw_seal(s: &SkCrypto, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        match &s.protection {
            Protection::Gcm { seal, .. } => {
                let iv = [9u8; 8];
                let mut buf = plain.to_vec();
                let tag =
                    seal.key.seal_in_place_separate_tag(seal.nonce(&iv), aead::Aad::from(aad), &mut buf).expect("seal");
                [&iv[..], &buf, tag.as_ref()].concat()
            }
            Protection::Cbc { seal, icv_len, .. } => {
                let iv = [3u8; 16];
                let mut buf = plain.to_vec();
                seal.encrypt(&iv, &mut buf).expect("blocks");
                let covered = [&iv[..], &buf].concat();
                let icv = seal.icv(aad, &covered);
                [&covered[..], &icv.as_ref()[..*icv_len]].concat()
            }
            Protection::Invalid => unreachable!(),
        }
    }

    #[test]
    fn inconsistent_suites_and_keys_refuse_to_work() {
        let gcm = suites()[0];
        let cbc = suites()[1];
        let (keys, _, _) = pair(&gcm);
        // CBC without integrity, GCM with integrity.
        for suite in [IkeSuite { integ: None, ..cbc }, IkeSuite { integ: Some(IntegAlg::HmacSha256_128), ..gcm }] {
            let s = SkCrypto::new(&suite, &keys, true);
            assert_eq!(s.seal(&aad(), b"x", &mut OsRng).unwrap_err(), CryptoError::InvalidSuite);
            assert_eq!(s.open(&aad(), &[0; 64]).unwrap_err(), CryptoError::InvalidSuite);
        }
        // GCM keys (with salt, without SK_a) handed to a CBC suite.
        let s = SkCrypto::new(&cbc, &keys, false);
        assert_eq!(s.seal(&aad(), b"x", &mut OsRng).unwrap_err(), CryptoError::InvalidSuite);
        assert!(format!("{s:?}").contains("valid: false"));
    }
}
