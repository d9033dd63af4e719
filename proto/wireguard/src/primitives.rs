//! The whitepaper's primitives (section 5.4): HASH, MAC, HMAC, KDF, AEAD and
//! XAEAD, over BLAKE2s and ChaCha20-Poly1305.
//!
//! Every intermediate secret is returned as `Zeroizing` so that chaining keys
//! and derived keys are wiped when they go out of scope.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::XChaCha20Poly1305;
use hmac::SimpleHmac;
use zeroize::Zeroizing;

use crate::Error;

pub(crate) const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
pub(crate) const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
pub(crate) const LABEL_MAC1: &[u8] = b"mac1----";
pub(crate) const LABEL_COOKIE: &[u8] = b"cookie--";

pub(crate) type Key = Zeroizing<[u8; 32]>;

/// HASH(a || b || ...): unkeyed BLAKE2s-256.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// MAC(key, input): keyed BLAKE2s with a 16-byte output.
pub(crate) fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    // A key of at most 32 bytes is always accepted by keyed BLAKE2s.
    let mut m = <Blake2sMac<U16> as KeyInit>::new_from_slice(key).expect("key <= 32 bytes");
    for p in parts {
        Update::update(&mut m, p);
    }
    m.finalize_fixed().into()
}

/// HMAC(key, input) over BLAKE2s, as the whitepaper's KDF needs.
fn hmac(key: &[u8], parts: &[&[u8]]) -> Key {
    let mut m = <SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    for p in parts {
        Mac::update(&mut m, p);
    }
    Zeroizing::new(m.finalize().into_bytes().into())
}

/// KDF_n(key, input) for n = 1, 2, 3: the HKDF-like chain of the whitepaper.
pub(crate) fn kdf<const N: usize>(key: &[u8; 32], input: &[u8]) -> [Key; N] {
    let t0 = hmac(key, &[input]);
    let mut out: [Key; N] = std::array::from_fn(|_| Zeroizing::new([0u8; 32]));
    let mut prev: Option<Key> = None;
    for (i, slot) in out.iter_mut().enumerate() {
        let counter = [i as u8 + 1];
        let ti = match &prev {
            None => hmac(&t0[..], &[&counter]),
            Some(p) => hmac(&t0[..], &[&p[..], &counter]),
        };
        *slot = ti.clone();
        prev = Some(ti);
    }
    out
}

fn counter_nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

pub(crate) fn aead_key(key: &[u8; 32]) -> LessSafeKey {
    // CHACHA20_POLY1305 takes exactly 32-byte keys, which the type guarantees.
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("32-byte key"))
}

/// AEAD(key, counter, plaintext, aad) in place: `buf` holds the plaintext
/// followed by 16 spare bytes that receive the tag.
pub(crate) fn aead_seal(key: &LessSafeKey, counter: u64, buf: &mut [u8], aad: &[u8]) {
    let (data, tag_out) = buf.split_at_mut(buf.len() - 16);
    let tag = key
        .seal_in_place_separate_tag(counter_nonce(counter), Aad::from(aad), data)
        .expect("ChaCha20-Poly1305 seals any length this protocol produces");
    tag_out.copy_from_slice(tag.as_ref());
}

/// Opens `buf` (ciphertext || tag) in place; the plaintext is `buf[..len-16]`.
pub(crate) fn aead_open(key: &LessSafeKey, counter: u64, buf: &mut [u8], aad: &[u8]) -> Result<(), Error> {
    key.open_in_place(counter_nonce(counter), Aad::from(aad), buf).map(|_| ()).map_err(|_| Error::DecryptionFailed)
}

/// One-shot handshake AEAD with a freshly derived key (counter is always 0).
pub(crate) fn seal_once(key: &[u8; 32], plaintext: &[u8], aad: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), plaintext.len() + 16);
    out[..plaintext.len()].copy_from_slice(plaintext);
    aead_seal(&aead_key(key), 0, out, aad);
}

pub(crate) fn open_once<const N: usize>(
    key: &[u8; 32],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<[u8; N]>, Error> {
    debug_assert_eq!(ciphertext.len(), N + 16);
    let mut buf = Zeroizing::new([0u8; 64]);
    buf[..ciphertext.len()].copy_from_slice(ciphertext);
    aead_open(&aead_key(key), 0, &mut buf[..ciphertext.len()], aad)?;
    let mut out = Zeroizing::new([0u8; N]);
    out.copy_from_slice(&buf[..N]);
    Ok(out)
}

/// XAEAD(key, nonce, plaintext, aad) for cookie replies. aws-lc-rs has no
/// XChaCha20-Poly1305, so this one uses the RustCrypto implementation.
pub(crate) fn xaead_seal(key: &[u8; 32], nonce: &[u8; 24], plaintext: &[u8; 16], aad: &[u8], out: &mut [u8; 32]) {
    let cipher = XChaCha20Poly1305::new(key.into());
    out[..16].copy_from_slice(plaintext);
    let tag = cipher.encrypt_in_place_detached(nonce.into(), aad, &mut out[..16]).expect("16-byte plaintext");
    out[16..].copy_from_slice(&tag);
}

pub(crate) fn xaead_open(
    key: &[u8; 32],
    nonce: &[u8; 24],
    ciphertext: &[u8; 32],
    aad: &[u8],
) -> Result<Zeroizing<[u8; 16]>, Error> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut out = Zeroizing::new([0u8; 16]);
    out.copy_from_slice(&ciphertext[..16]);
    cipher
        .decrypt_in_place_detached(nonce.into(), aad, &mut out[..], ciphertext[16..].into())
        .map_err(|_| Error::DecryptionFailed)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn blake2s_matches_rfc7693_vector() {
        // RFC 7693 appendix B: BLAKE2s-256("abc").
        assert_eq!(hash(&[b"abc"]).to_vec(), hex("508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"));
    }

    #[test]
    fn initial_chaining_key_matches_the_reference() {
        // HASH(CONSTRUCTION) is a constant every WireGuard implementation
        // precomputes; the kernel's noise.c carries it literally.
        assert_eq!(
            hash(&[CONSTRUCTION]).to_vec(),
            hex("60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36")
        );
    }

    #[test]
    fn kdf_outputs_chain() {
        let key = [7u8; 32];
        let [a] = kdf::<1>(&key, b"in");
        let [b, c] = kdf::<2>(&key, b"in");
        let [d, e, f] = kdf::<3>(&key, b"in");
        assert_eq!(*a, *b);
        assert_eq!(*b, *d);
        assert_eq!(*c, *e);
        assert_ne!(*e, *f);
        // t2 = HMAC(t0, t1 || 0x2)
        let t0 = hmac(&key, &[b"in"]);
        assert_eq!(*hmac(&t0[..], &[&a[..], &[2]]), *c);
    }

    #[test]
    fn aead_round_trip_and_tamper() {
        let key = aead_key(&[1u8; 32]);
        let mut buf = [0u8; 21];
        buf[..5].copy_from_slice(b"hello");
        aead_seal(&key, 9, &mut buf, b"ad");
        let mut tampered = buf;
        tampered[0] ^= 1;
        assert_eq!(aead_open(&key, 9, &mut tampered, b"ad"), Err(Error::DecryptionFailed));
        assert_eq!(aead_open(&key, 8, &mut buf.clone(), b"ad"), Err(Error::DecryptionFailed));
        aead_open(&key, 9, &mut buf, b"ad").unwrap();
        assert_eq!(&buf[..5], b"hello");
    }

    #[test]
    fn xaead_round_trip_and_tamper() {
        let mut out = [0u8; 32];
        xaead_seal(&[3u8; 32], &[4u8; 24], &[5u8; 16], b"aad", &mut out);
        assert_eq!(*xaead_open(&[3u8; 32], &[4u8; 24], &out, b"aad").unwrap(), [5u8; 16]);
        assert!(xaead_open(&[3u8; 32], &[4u8; 24], &out, b"aae").is_err());
    }
}
