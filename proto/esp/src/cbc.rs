//! AES-CBC (RFC 3602) with HMAC-SHA-256-128 (RFC 4868) for ESP: encrypt
//! then MAC over SPI, sequence number, IV and ciphertext (RFC 4303 §3.3.4).
//!
//! Invariants:
//! - Opening verifies the ICV, in constant time, before decrypting
//!   anything, so a forged packet never reaches the CBC decryption and
//!   there is no padding oracle.
//! - The IV is AES_K'(0^64 || seq) under an IV key K' derived from the
//!   encryption key: HMAC-SHA-256(encryption key, IV_KEY_LABEL), cut to
//!   the AES key size. RFC 3602 §3 asks for an unpredictable IV; without
//!   K' nobody can predict the next one, and since AES is a permutation
//!   and sequence numbers never repeat on an SA, no IV repeats either.
//!   This is NIST SP 800-38A appendix C's "encrypt a nonce" method, with a
//!   separate key so that IVs bear no relation to ciphertext blocks under
//!   the data key. Chosen over a random IV because it is deterministic
//!   (a sealed packet is a function of key and sequence number, so
//!   known-answer tests check whole packets and the core stays sans-IO),
//!   costs one AES block instead of a call into a DRBG per packet, and
//!   guarantees uniqueness instead of making collisions unlikely. Peers
//!   never need K': the IV travels in the packet.
//!
//! aws-lc-rs for AES-CBC and HMAC too, so the crate has one crypto
//! dependency (ring has no AES-CBC). aws-lc-rs zeroizes its AES key
//! schedules on drop, and AWS-LC cleanses HMAC contexts it frees.

use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256,
};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use zeroize::Zeroizing;

use crate::keys::{KeyParts, HMAC_SHA256_KEY_LEN};
use crate::layout::{ICV_LEN, SPI_SEQ_LEN};
use crate::Error;

/// The explicit IV carried in each packet: one AES block.
pub(crate) const IV_LEN: usize = 16;
const HEADER_LEN: usize = SPI_SEQ_LEN + IV_LEN;
/// What the IV key is derived with; changing it changes every IV (but
/// nothing a peer sees as a protocol change).
pub(crate) const IV_KEY_LABEL: &[u8] = b"Causeway ESP AES-CBC IV key";

fn unbound(key: &[u8]) -> Result<UnboundCipherKey, Error> {
    let algorithm = match key.len() {
        16 => &AES_128,
        32 => &AES_256,
        _ => return Err(Error::BadKeys),
    };
    UnboundCipherKey::new(algorithm, key).map_err(|_| Error::BadKeys)
}

fn mac_key(parts: &KeyParts<'_>) -> Result<hmac::Key, Error> {
    if parts.integrity.len() != HMAC_SHA256_KEY_LEN {
        return Err(Error::BadKeys);
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, parts.integrity))
}

/// HMAC-SHA-256 over `covered`, truncated to the 16-byte ICV.
fn icv(mac: &hmac::Key, covered: &[u8]) -> Zeroizing<[u8; ICV_LEN]> {
    let tag = hmac::sign(mac, covered);
    let mut out = Zeroizing::new([0; ICV_LEN]);
    out.copy_from_slice(&tag.as_ref()[..ICV_LEN]);
    out
}

/// K' (the module's header): HMAC-SHA-256(encryption key, IV_KEY_LABEL),
/// cut to the encryption key's length. Signed straight into a wiped
/// buffer: aws-lc-rs's `hmac::Tag` is a plain array, never wiped, and this
/// one is a key.
fn iv_key(encryption: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut derived = Zeroizing::new(vec![0; hmac::HMAC_SHA256.digest_algorithm().output_len()]);
    hmac::sign_to_buffer(&hmac::Key::new(hmac::HMAC_SHA256, encryption), IV_KEY_LABEL, &mut derived[..])
        .map_err(|_| Error::BadKeys)?;
    if encryption.len() > derived.len() {
        return Err(Error::BadKeys);
    }
    // Truncating keeps the allocation: the bytes cut off are wiped with it.
    derived.truncate(encryption.len());
    Ok(derived)
}

/// The outbound half: encrypts with a derived IV, then MACs.
pub(crate) struct CbcSeal {
    cipher: EncryptingKey,
    iv_key: EncryptingKey,
    mac: hmac::Key,
}

impl CbcSeal {
    pub fn new(parts: &KeyParts<'_>) -> Result<CbcSeal, Error> {
        Ok(CbcSeal {
            cipher: EncryptingKey::cbc(unbound(parts.encryption)?).map_err(|_| Error::BadKeys)?,
            iv_key: EncryptingKey::ecb(unbound(&iv_key(parts.encryption)?)?).map_err(|_| Error::BadKeys)?,
            mac: mac_key(parts)?,
        })
    }

    /// The IV of the packet with sequence number `seq`.
    fn iv(&self, seq: u32) -> Result<[u8; IV_LEN], Error> {
        let mut block = [0; IV_LEN];
        block[8..].copy_from_slice(&u64::from(seq).to_be_bytes());
        self.iv_key.less_safe_encrypt(&mut block, EncryptionContext::None).map_err(|_| Error::BadKeys)?;
        Ok(block)
    }

    /// Seals `packet` (exactly header, plaintext through next header in
    /// whole blocks, and ICV room) whose SPI and sequence number are
    /// written: writes the IV, encrypts in place, writes the ICV.
    pub fn seal(&self, packet: &mut [u8], seq: u32) -> Result<(), Error> {
        let covered_len =
            packet.len().checked_sub(ICV_LEN).filter(|&c| c >= HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        let iv = self.iv(seq)?;
        let (covered, icv_out) = packet.split_at_mut(covered_len);
        let (header, plaintext) = covered.split_at_mut(HEADER_LEN);
        header[SPI_SEQ_LEN..].copy_from_slice(&iv);
        self.cipher
            .less_safe_encrypt(plaintext, EncryptionContext::Iv128(FixedLength::from(iv)))
            .map_err(|_| Error::BadPaddedLen)?;
        icv_out.copy_from_slice(&*icv(&self.mac, covered));
        Ok(())
    }
}

/// The inbound half: verifies the ICV, then decrypts.
pub(crate) struct CbcOpen {
    cipher: DecryptingKey,
    mac: hmac::Key,
}

impl CbcOpen {
    pub fn new(parts: &KeyParts<'_>) -> Result<CbcOpen, Error> {
        Ok(CbcOpen {
            cipher: DecryptingKey::cbc(unbound(parts.encryption)?).map_err(|_| Error::BadKeys)?,
            mac: mac_key(parts)?,
        })
    }

    /// Verifies and decrypts `packet` in place; on success the bytes
    /// between header and ICV are plaintext. A packet that fails the ICV
    /// is left as it was. The caller checked the length is plausible.
    pub fn open(&self, packet: &mut [u8]) -> Result<(), Error> {
        let covered_len = packet.len().checked_sub(ICV_LEN).ok_or(Error::Malformed)?;
        let (covered, received) = packet.split_at_mut(covered_len);
        verify_slices_are_equal(&*icv(&self.mac, covered), received).map_err(|_| Error::Authentication)?;
        if covered.len() < HEADER_LEN {
            return Err(Error::Malformed);
        }
        let (header, ciphertext) = covered.split_at_mut(HEADER_LEN);
        let iv: [u8; IV_LEN] = header[SPI_SEQ_LEN..].try_into().map_err(|_| Error::Malformed)?;
        self.cipher
            .decrypt(ciphertext, DecryptionContext::Iv128(FixedLength::from(iv)))
            .map_err(|_| Error::Malformed)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use aes::cipher::block_padding::NoPadding;
    use aes::cipher::{BlockEncrypt, BlockEncryptMut, KeyInit, KeyIvInit};
    use hmac::Mac;
    use zeroize::Zeroizing;

    use super::IV_KEY_LABEL;
    use crate::testutil::{hex, ipv4, ipv6, sealed};
    use crate::{Cipher, Error, InboundSa, OutboundSa, SaKeys};

    type HmacSha256 = hmac::Hmac<sha2::Sha256>;

    fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }

    const INTEGRITY_KEY: [u8; 32] = [0x42; 32];

    /// RFC 3602 §4 cases 5 (transport mode, ICMP) and 7 (tunnel mode,
    /// IPv4): published ESP packets with AES-128-CBC and no integrity. The
    /// ICV is appended here with RustCrypto's HMAC-SHA-256 over the
    /// packet, so `open` is checked against the published decryption.
    #[test]
    fn opens_the_published_rfc_3602_packets() {
        let case5_key = hex("90d382b4 10eeba7a d938c46c ec1a82bf");
        let case5 = hex("00004321 00000001 e96e8c08 ab465763 fd098d45 dd3ff893
             f663c25d 325c18c6 a9453e19 4e120849 a4870b66 cc6b9965 330013b4 898dc856
             a4699e52 3a55db08 0b59ec3a 8e4b7e52 775b07d1 db34ed9c 538ab50c 551b874a
             a269add0 47ad2d59 13ac19b7 cfbad4a6");
        let case5_plain = hex("08000ebd a70a0000 8e9c083d b95b0700 08090a0b 0c0d0e0f 10111213 14151617
             18191a1b 1c1d1e1f 20212223 24252627 28292a2b 2c2d2e2f 30313233 34353637
             01020304 05060708 090a0b0c 0d0e 0e01");
        let case7_key = hex("01234567 89abcdef 01234567 89abcdef");
        let case7 = hex("00008765 00000002 f4e76524 4f6407ad f13dc138 0f673f37
             773b5241 a4c44922 5e4f3ce5 ed611b0c 237ca96c f74a9301 3c1b0ea1 a0cf70f8
             e4ecaec7 8ac53aad 7a0f022b 859243c6 47752e94 a859352b 8a4d4d2d ecd136e5
             c177f132 ad3fbfb2 201ac990 4c74ee0a 109e0ca1 e4dfe9d5 a100b842 f1c22f0d");
        let case7_inner = hex("45000054 09040000 4001f988 c0a87b03 c0a87bc8 08009f76 a90a0100 b49c083d
             02a20400 08090a0b 0c0d0e0f 10111213 14151617 18191a1b 1c1d1e1f 20212223
             24252627 28292a2b 2c2d2e2f 30313233 34353637");
        let sa = |spi, key: &[u8]| {
            let keymat = Zeroizing::new([key, &INTEGRITY_KEY].concat());
            InboundSa::new(SaKeys { spi, cipher: Cipher::AesCbcHmacSha256 { key_bits: 128 }, keymat }).unwrap()
        };
        let with_icv = |p: &[u8]| [p, &hmac_sha256(&INTEGRITY_KEY, &[p])[..16]].concat();

        let mut p5 = with_icv(&case5);
        assert_eq!(sa(0x4321, &case5_key).open(&mut p5), Err(Error::NextHeader(1)), "transport-mode ICMP");
        assert_eq!(&p5[24..p5.len() - 16], &case5_plain[..]);

        let packet7 = with_icv(&case7);
        let inbound7 = sa(0x8765, &case7_key);
        let mut p7 = packet7.clone();
        let o = inbound7.open(&mut p7).unwrap();
        assert_eq!((o.seq, o.at, o.len, o.next_header), (2, 24, 0x54, 4));
        assert_eq!(&p7[o.at..o.at + o.len], &case7_inner[..]);

        let mut forged = packet7;
        forged[30] ^= 1;
        let before = forged.clone();
        assert_eq!(inbound7.open(&mut forged), Err(Error::Authentication));
        assert_eq!(forged, before, "a packet failing the ICV is never decrypted");
    }

    /// Sealing checked against RustCrypto's AES, CBC and HMAC: IV key, IV,
    /// ciphertext and ICV computed here from the module's description.
    #[test]
    fn seal_matches_an_independent_implementation() {
        for key_bits in [128u16, 256] {
            let cipher = Cipher::AesCbcHmacSha256 { key_bits };
            let keymat: Vec<u8> = (0..cipher.keymat_len() as u8).map(|i| i.wrapping_mul(3) ^ 0x3c).collect();
            let (key, integrity) = keymat.split_at(usize::from(key_bits / 8));
            let spi = 0x0a0b_0c0du32;
            let sa = OutboundSa::new(SaKeys { spi, cipher, keymat: Zeroizing::new(keymat.clone()) }).unwrap();
            let iv_key = &hmac_sha256(key, &[IV_KEY_LABEL])[..key.len()];
            for (seq, payload) in [(1u32, ipv4(45)), (0x0102_0304, ipv6(96)), (u32::MAX, ipv4(14))] {
                let ours = sealed(&sa, u64::from(seq), &payload);

                let mut iv = [0u8; 16];
                iv[8..].copy_from_slice(&u64::from(seq).to_be_bytes());
                let mut body = payload.clone();
                let pad = (16 - (payload.len() + 2) % 16) % 16;
                body.extend((1..=pad as u8).chain([pad as u8, if payload[0] >> 4 == 4 { 4 } else { 41 }]));
                let n = body.len();
                if key_bits == 128 {
                    aes::Aes128::new_from_slice(iv_key).unwrap().encrypt_block((&mut iv).into());
                    cbc::Encryptor::<aes::Aes128>::new_from_slices(key, &iv)
                        .unwrap()
                        .encrypt_padded_mut::<NoPadding>(&mut body, n)
                        .unwrap();
                } else {
                    aes::Aes256::new_from_slice(iv_key).unwrap().encrypt_block((&mut iv).into());
                    cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &iv)
                        .unwrap()
                        .encrypt_padded_mut::<NoPadding>(&mut body, n)
                        .unwrap();
                }
                let header = [&spi.to_be_bytes()[..], &seq.to_be_bytes(), &iv].concat();
                let icv = hmac_sha256(integrity, &[&header, &body]);
                let expected = [&header[..], &body, &icv[..16]].concat();
                assert_eq!(ours, expected, "{cipher} seq {seq}");
            }
        }
    }

    #[test]
    fn ivs_differ_per_sequence_number_and_per_key() {
        let cipher = Cipher::AesCbcHmacSha256 { key_bits: 128 };
        let make = |seed: u8| {
            let keymat = Zeroizing::new(vec![seed; cipher.keymat_len()]);
            OutboundSa::new(SaKeys { spi: 1, cipher, keymat }).unwrap()
        };
        let (a, b) = (make(1), make(2));
        let iv = |sa: &OutboundSa, seq| sealed(sa, seq, &ipv4(20))[8..24].to_vec();
        let ivs: std::collections::HashSet<_> = (1..=1000).map(|s| iv(&a, s)).collect();
        assert_eq!(ivs.len(), 1000);
        assert_ne!(iv(&a, 1), iv(&b, 1));
        assert_ne!(iv(&a, 1)[..8], [0; 8], "not the sequence number in the clear");
    }
}
