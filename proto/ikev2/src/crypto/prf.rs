//! The IKE pseudo-random function and its expansion prf+ (RFC 7296 §2.13).
//!
//! aws-lc-rs's HMAC is used: audited, constant-time, and its keys are
//! wiped when dropped. Outputs are `Zeroizing` because every caller derives key
//! material from them. Invariant: `prf_plus` never produces more than 255
//! blocks, the limit the RFC puts on its one-byte counter.

use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use super::PrfAlg;

/// prf(key, data).
pub fn prf(alg: PrfAlg, key: &[u8], data: &[u8]) -> Zeroizing<Vec<u8>> {
    prf_parts(alg, key, &[data])
}

/// prf(key, parts[0] | parts[1] | ...). The parts (the concatenations of
/// §2.14 and §2.17 include secrets) are copied together into a buffer that
/// is wiped, and the output written straight into another: aws-lc-rs's
/// `Tag` would leave a copy of it in memory nobody wipes.
pub(crate) fn prf_parts(alg: PrfAlg, key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let key = hmac::Key::new(alg.hmac(), key);
    let data = Zeroizing::new(parts.concat());
    let mut out = Zeroizing::new(vec![0u8; alg.output_len()]);
    sign_into(&key, &data, &mut out);
    out
}

/// HMAC(key, data) into `out`, which is exactly the prf's output length.
fn sign_into(key: &hmac::Key, data: &[u8], out: &mut [u8]) {
    let written = hmac::sign_to_buffer(key, data, out).expect("the buffer is the prf's output length").len();
    debug_assert_eq!(written, out.len());
}

/// prf+(key, seed) truncated to `len` bytes:
/// T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n), output T1 | T2 | ...
///
/// `len` comes from the negotiated algorithms, never from the wire; asking
/// for more than 255 prf outputs is a caller bug and panics.
pub fn prf_plus(alg: PrfAlg, key: &[u8], seed: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    prf_plus_parts(alg, key, &[seed], len)
}

/// prf+ with the seed given as parts to be concatenated.
pub(crate) fn prf_plus_parts(alg: PrfAlg, key: &[u8], seed: &[&[u8]], len: usize) -> Zeroizing<Vec<u8>> {
    let block = alg.output_len();
    assert!(len <= 255 * block, "prf+ asked for {len} bytes, more than 255 blocks of {block}");
    let key = hmac::Key::new(alg.hmac(), key);
    let seed_len: usize = seed.iter().map(|p| p.len()).sum();
    // Both are sized up front and never grow: a Vec that grew would leave
    // its old allocation, unwiped, to the allocator.
    let mut out = Zeroizing::new(vec![0u8; len.div_ceil(block) * block]);
    let mut input = Zeroizing::new(Vec::with_capacity(block + seed_len + 1));
    for (i, counter) in (0..out.len() / block).zip(1u8..=255) {
        input.clear();
        if i > 0 {
            input.extend_from_slice(&out[(i - 1) * block..i * block]);
        }
        for part in seed {
            input.extend_from_slice(part);
        }
        input.push(counter);
        sign_into(&key, &input, &mut out[i * block..(i + 1) * block]);
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).expect("test hex")
    }

    /// RFC 4231 test cases 1, 2, 3, 4, 6 and 7 (case 5 tests truncation,
    /// which the prf does not do).
    #[test]
    fn rfc4231_vectors() {
        let cases: [(Vec<u8>, Vec<u8>, &str, &str); 6] = [
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c\
                 faea9ea9076ede7f4af152e8b2fa9cb6",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e\
                 8e2240ca5e69e2c78b3239ecfab21649",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
                "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b\
                 2a5ab39dc13814b94e3ab6e101a34f27",
            ),
            (
                (1..=25).collect(),
                vec![0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
                "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e\
                 6801dd23c4a7d679ccf8a386c674cffb",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
                "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c6\
                 0c2ef6ab4030fe8296248df163f44952",
            ),
            (
                vec![0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. \
                  The key needs to be hashed before being used by the HMAC algorithm."
                    .to_vec(),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
                "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5\
                 a678cc31e799176d3860e6110c46523e",
            ),
        ];
        for (key, data, sha256, sha384) in &cases {
            assert_eq!(*prf(PrfAlg::HmacSha256, key, data), unhex(sha256));
            assert_eq!(*prf(PrfAlg::HmacSha384, key, data), unhex(sha384));
        }
    }

    /// prf+ checked against the definition written out block by block with
    /// ring's one-shot HMAC (another implementation than ours).
    #[test]
    fn prf_plus_follows_its_definition() {
        use ring::hmac;
        let key = b"prf+ key";
        let seed = b"some seed bytes";
        for alg in [PrfAlg::HmacSha256, PrfAlg::HmacSha384] {
            let ring_alg = if alg == PrfAlg::HmacSha256 { hmac::HMAC_SHA256 } else { hmac::HMAC_SHA384 };
            let k = hmac::Key::new(ring_alg, key);
            let t1 = hmac::sign(&k, &[&seed[..], &[1]].concat());
            let t2 = hmac::sign(&k, &[t1.as_ref(), &seed[..], &[2]].concat());
            let t3 = hmac::sign(&k, &[t2.as_ref(), &seed[..], &[3]].concat());
            let expected = [t1.as_ref(), t2.as_ref(), t3.as_ref()].concat();
            let n = alg.output_len();
            for len in [0, 1, n - 1, n, n + 1, 2 * n, 3 * n - 5, 3 * n] {
                assert_eq!(*prf_plus(alg, key, seed, len), expected[..len], "{alg:?} len {len}");
            }
        }
    }

    #[test]
    fn prf_plus_reaches_255_blocks() {
        let out = prf_plus(PrfAlg::HmacSha256, b"k", b"s", 255 * 32);
        assert_eq!(out.len(), 255 * 32);
        // The last block is distinct from the first: the counter moved on.
        assert_ne!(out[..32], out[254 * 32..]);
    }

    #[test]
    fn parts_equal_concatenation() {
        let whole = prf(PrfAlg::HmacSha384, b"key", b"abcdef");
        assert_eq!(whole, prf_parts(PrfAlg::HmacSha384, b"key", &[b"ab", b"", b"cdef"]));
        let whole = prf_plus(PrfAlg::HmacSha256, b"key", b"abcdef", 100);
        assert_eq!(whole, prf_plus_parts(PrfAlg::HmacSha256, b"key", &[b"abc", b"def"], 100));
    }
}
