//! Key derivation for the IKE SA (RFC 7296 §2.14), its rekeying (§2.18) and
//! child SAs (§2.17).
//!
//! Invariants: each `IkeKeys` field has the length the suite needs
//! (SK_d/SK_pi/SK_pr: the prf's preferred key length; SK_ai/SK_ar: the
//! integrity key length, empty for an AEAD; SK_ei/SK_er: the cipher key plus,
//! for GCM, its 4 salt bytes at the end, RFC 5282 §7.1); keys are zeroized on
//! drop and never shown by `Debug`.

use zeroize::Zeroizing;

use super::prf::{prf_parts, prf_plus_parts};
use super::{IkeSuite, PrfAlg};

/// The seven keys of an IKE SA, in the order prf+ produces them.
#[derive(Clone)]
pub struct IkeKeys {
    /// Derives child SA keys and the next IKE SA's SKEYSEED.
    pub sk_d: Zeroizing<Vec<u8>>,
    pub sk_ai: Zeroizing<Vec<u8>>,
    pub sk_ar: Zeroizing<Vec<u8>>,
    pub sk_ei: Zeroizing<Vec<u8>>,
    pub sk_er: Zeroizing<Vec<u8>>,
    /// Enter the AUTH payloads (§2.15).
    pub sk_pi: Zeroizing<Vec<u8>>,
    pub sk_pr: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Lengths only: they are what a bug report needs, and not secret.
        f.debug_struct("IkeKeys")
            .field("sk_d_len", &self.sk_d.len())
            .field("sk_a_len", &self.sk_ai.len())
            .field("sk_e_len", &self.sk_ei.len())
            .field("sk_p_len", &self.sk_pi.len())
            .finish_non_exhaustive()
    }
}

/// Keys of a new IKE SA from IKE_SA_INIT:
/// SKEYSEED = prf(Ni | Nr, g^ir), then
/// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
///
/// Both prfs here are HMAC, which takes a key of any length, so the key is
/// Ni | Nr whole (the halves rule of §2.14 is for fixed-key-size prfs).
pub fn derive_ike_keys(suite: &IkeSuite, shared: &[u8], ni: &[u8], nr: &[u8], spi_i: u64, spi_r: u64) -> IkeKeys {
    let nonces = Zeroizing::new([ni, nr].concat());
    let skeyseed = prf_parts(suite.prf, &nonces, &[shared]);
    expand(suite, &skeyseed, ni, nr, spi_i, spi_r)
}

/// Keys of the IKE SA that replaces an old one (§2.18):
/// SKEYSEED = prf_old(SK_d_old, g^ir (new) | Ni | Nr), then the same prf+
/// expansion as `derive_ike_keys` with the new suite's prf, the new nonces
/// and the new SA's SPIs.
#[allow(clippy::too_many_arguments)] // the RFC's inputs, each one distinct
pub fn derive_rekeyed_ike_keys(
    old_prf: PrfAlg,
    old_sk_d: &[u8],
    suite: &IkeSuite,
    shared: &[u8],
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> IkeKeys {
    let skeyseed = prf_parts(old_prf, old_sk_d, &[shared, ni, nr]);
    expand(suite, &skeyseed, ni, nr, spi_i, spi_r)
}

fn expand(suite: &IkeSuite, skeyseed: &[u8], ni: &[u8], nr: &[u8], spi_i: u64, spi_r: u64) -> IkeKeys {
    let prf_len = suite.prf.key_len();
    let integ_len = suite.integ_key_len();
    let encr_len = suite.encr.keymat_len();
    let total = 3 * prf_len + 2 * integ_len + 2 * encr_len;
    let keymat = prf_plus_parts(suite.prf, skeyseed, &[ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()], total);
    let mut rest: &[u8] = &keymat;
    let mut take = |n: usize| {
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Zeroizing::new(head.to_vec())
    };
    IkeKeys {
        sk_d: take(prf_len),
        sk_ai: take(integ_len),
        sk_ar: take(integ_len),
        sk_ei: take(encr_len),
        sk_er: take(encr_len),
        sk_pi: take(prf_len),
        sk_pr: take(prf_len),
    }
}

/// Keying material for a child SA (§2.17): KEYMAT = prf+(SK_d, [g^ir (new)] | Ni | Nr),
/// with the optional fresh Diffie-Hellman secret of a CREATE_CHILD_SA that
/// carried KE payloads. The caller splits it (§2.17: the initiator-to-
/// responder SA's encryption then integrity keys first, then the other
/// direction's).
pub fn child_keymat(
    prf: PrfAlg,
    sk_d: &[u8],
    shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    len: usize,
) -> Zeroizing<Vec<u8>> {
    prf_plus_parts(prf, sk_d, &[shared.unwrap_or(&[]), ni, nr], len)
}

/// The keying material of a child SA cut into its two directions (§2.17:
/// everything for the initiator-to-responder SA first). Each half is laid
/// out as `causeway-esp` takes it: the encryption key (followed, for
/// AES-GCM, by its 4-byte salt, RFC 4106 §8.1), then the integrity key.
#[derive(Clone)]
pub struct ChildKeymat {
    /// Keys of the SA carrying traffic from the IKE initiator to the responder.
    pub initiator_to_responder: Zeroizing<Vec<u8>>,
    /// Keys of the SA carrying traffic from the responder to the initiator.
    pub responder_to_initiator: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ChildKeymat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildKeymat").field("per_direction_len", &self.initiator_to_responder.len()).finish()
    }
}

/// `child_keymat` for `2 * per_direction_len` bytes, cut in two.
/// `per_direction_len` is the ESP transform's encryption key length (with
/// salt) plus its integrity key length.
pub fn child_sa_keymat(
    prf: PrfAlg,
    sk_d: &[u8],
    shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    per_direction_len: usize,
) -> ChildKeymat {
    let all = child_keymat(prf, sk_d, shared, ni, nr, 2 * per_direction_len);
    let (i_to_r, r_to_i) = all.split_at(per_direction_len);
    ChildKeymat {
        initiator_to_responder: Zeroizing::new(i_to_r.to_vec()),
        responder_to_initiator: Zeroizing::new(r_to_i.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{prf, prf_plus, DhGroup, EncrAlg, IntegAlg};

    fn suites() -> Vec<IkeSuite> {
        let mut out = Vec::new();
        for prf in [PrfAlg::HmacSha256, PrfAlg::HmacSha384] {
            for bits in [128, 256] {
                out.push(IkeSuite {
                    encr: EncrAlg::AesGcm16 { key_bits: bits },
                    prf,
                    integ: None,
                    dh: DhGroup::Ecp256,
                });
                out.push(IkeSuite {
                    encr: EncrAlg::AesCbc { key_bits: bits },
                    prf,
                    integ: Some(IntegAlg::HmacSha256_128),
                    dh: DhGroup::Modp2048,
                });
            }
        }
        out
    }

    /// One published IKEv2 KDF case (NIST CAVS SP 800-135 IKEv2 samples, as
    /// carried in NSS's gtests/common/testvectors/ike_sha{256,384}_vectors.h:
    /// the ikeGxy, ikePlus and ikeV2Rekey entries).
    struct Cavs {
        prf: PrfAlg,
        gir: &'static str,
        gir_new: &'static str,
        ni: &'static str,
        nr: &'static str,
        spi_i: u64,
        spi_r: u64,
        skeyseed: &'static str,
        /// prf+(SKEYSEED, Ni | Nr | SPIi | SPIr), 132 bytes.
        dkm: &'static str,
        skeyseed_rekey: &'static str,
    }

    const CAVS: [Cavs; 2] = [
        Cavs {
            prf: PrfAlg::HmacSha256,
            gir: "0f4d257d7a58fc4545c7d7a88119eee5d5c9690c5b4c989171d3abbfd99d1d29",
            gir_new: "25f3b12d6f282739256e39bf54eda53b60ffcf379bb7bcc90c27b4c4c578616c",
            ni: "3f302be1abcb28e1",
            nr: "8c332ee006064c9b",
            spi_i: 0x40dac39e1e1a8640,
            spi_r: 0x8619a1cf9a6e4c07,
            skeyseed: "5f00d1bd2c58ec224b1e6b71fa0f19a1faa7a193952c444411b47c1a9d8ba6fe",
            dkm: "0b137d669b0947d7d026d593f0305ad401ff0c471357d695778a9c7f4b4869ece98aca531\
                  188d16041b3bb936d2dbb3b4993a6e768a809160de45d0283f273a6cdf6854379e31be72b\
                  8d3d1fa990cf9c5b015ca9f918a7df6253c958114a09d4e1c19bdcd4db14b29d98db1a74a\
                  d405c588662c14a04d0d36aa4ab55e90f8986d12d4aad",
            skeyseed_rekey: "2d63f6debc92048b4fef3889c4c99ca67d6496e0fac14a2bca9a2d6566ff2398",
        },
        Cavs {
            prf: PrfAlg::HmacSha384,
            gir: "d3288cd87565101e88fe3bad918f31939d8dd26ff1071f8b2d7f447524e58d7c",
            gir_new: "3358f620539473aee8d07e779764c4c6a9aabddc79a28e136b3bac021dbde44a",
            ni: "fd1b572a8e735591",
            nr: "6013b0ef88dacd3d",
            spi_i: 0x2116ad07ce61f749,
            spi_r: 0x24880e55f11a65b7,
            skeyseed: "69fe7a1ac94adaeb711295f5fe004b1a8d6a0b65d05692758ce8ad2f7a45f59d7d0b596f5\
                       1f7dfcf3330061888f6a94f",
            dkm: "4f904c2025c90c817ea5ff9b662a6fdb445a73b57cdf09eacd379b95e1f03cacb04cd6dee\
                  da4f952191dd9bc1f7a9502471a648d74dc06d38112de48a42501f6b1a3ad55c2099cd9a6\
                  48e5f17e5bf3e34bf9b5953decb768a34f875fe2b78dca0c2fcca81ec1a412006dfaed38f\
                  a06882e61f4c148105fb8e231fdb33c4d484c001721d4",
            skeyseed_rekey: "e0548c1682e13bce454026b3b1bdf42985b24e4e7408095a7c529de38c3d1fcb04c9fe686\
                             8042a34c9614c6c99e3fcea",
        },
    ];

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).expect("test hex")
    }

    fn joined(keys: &IkeKeys) -> Vec<u8> {
        [&keys.sk_d, &keys.sk_ai, &keys.sk_ar, &keys.sk_ei, &keys.sk_er, &keys.sk_pi, &keys.sk_pr]
            .map(|k| k.as_slice())
            .concat()
    }

    #[test]
    fn nist_cavs_ikev2_kdf() {
        for v in &CAVS {
            let (gir, gir_new, ni, nr) = (unhex(v.gir), unhex(v.gir_new), unhex(v.ni), unhex(v.nr));
            let dkm = unhex(v.dkm);
            assert_eq!(dkm.len(), 132);
            assert_eq!(*prf(v.prf, &[&ni[..], &nr[..]].concat(), &gir), unhex(v.skeyseed));
            for suite in suites().into_iter().map(|s| IkeSuite { prf: v.prf, ..s }) {
                // Every suite takes more than 132 bytes: the published DKM is
                // a prefix of the keys in prf+ order.
                let keys = derive_ike_keys(&suite, &gir, &ni, &nr, v.spi_i, v.spi_r);
                assert_eq!(joined(&keys)[..132], dkm[..], "{suite:?}");

                // Rekeying from that SA: SK_d(old) is the DKM's first prf-key-length bytes.
                let sk_d = &dkm[..v.prf.key_len()];
                assert_eq!(*prf(v.prf, sk_d, &[&gir_new[..], &ni[..], &nr[..]].concat()), unhex(v.skeyseed_rekey));
                let rekeyed = derive_rekeyed_ike_keys(v.prf, sk_d, &suite, &gir_new, &ni, &nr, v.spi_i, v.spi_r);
                let seed = [&ni[..], &nr[..], &v.spi_i.to_be_bytes(), &v.spi_r.to_be_bytes()].concat();
                let all = joined(&rekeyed);
                assert_eq!(all, *prf_plus(v.prf, &unhex(v.skeyseed_rekey), &seed, all.len()), "{suite:?}");
            }
        }
    }

    #[test]
    fn key_lengths_follow_the_suite() {
        for suite in suites() {
            let keys = derive_ike_keys(&suite, &[1; 32], &[2; 32], &[3; 32], 1, 2);
            let p = suite.prf.output_len();
            let (a, e) = match suite.encr {
                EncrAlg::AesGcm16 { key_bits } => (0, usize::from(key_bits) / 8 + 4),
                EncrAlg::AesCbc { key_bits } => (32, usize::from(key_bits) / 8),
            };
            let lens = [&keys.sk_d, &keys.sk_ai, &keys.sk_ar, &keys.sk_ei, &keys.sk_er, &keys.sk_pi, &keys.sk_pr]
                .map(|k| k.len());
            assert_eq!(lens, [p, a, a, e, e, p, p], "{suite:?}");
            assert_ne!(keys.sk_ei, keys.sk_er);
            assert_ne!(keys.sk_pi, keys.sk_pr);
        }
    }

    /// The derivation written out with the public prf and prf+ on
    /// concatenated inputs, independent of the parts-based code above.
    #[test]
    fn derivation_follows_rfc7296_2_14() {
        let suite = IkeSuite {
            encr: EncrAlg::AesCbc { key_bits: 128 },
            prf: PrfAlg::HmacSha256,
            integ: Some(IntegAlg::HmacSha256_128),
            dh: DhGroup::Curve25519,
        };
        let (g, ni, nr) = ([9u8; 32], [0xaa; 16], [0xbb; 24]);
        let (spi_i, spi_r) = (0x0102030405060708u64, 0x1112131415161718u64);
        let keys = derive_ike_keys(&suite, &g, &ni, &nr, spi_i, spi_r);

        let skeyseed = prf(PrfAlg::HmacSha256, &[&ni[..], &nr[..]].concat(), &g);
        let seed = [&ni[..], &nr[..], &spi_i.to_be_bytes(), &spi_r.to_be_bytes()].concat();
        let km = prf_plus(PrfAlg::HmacSha256, &skeyseed, &seed, 32 + 32 + 32 + 16 + 16 + 32 + 32);
        let joined = [&keys.sk_d, &keys.sk_ai, &keys.sk_ar, &keys.sk_ei, &keys.sk_er, &keys.sk_pi, &keys.sk_pr]
            .map(|k| k.as_slice())
            .concat();
        assert_eq!(joined, *km);
        assert_eq!(&keys.sk_ei[..], &km[96..112]);
    }

    #[test]
    fn rekey_uses_the_old_prf_and_sk_d() {
        let new = IkeSuite {
            encr: EncrAlg::AesGcm16 { key_bits: 256 },
            prf: PrfAlg::HmacSha256,
            integ: None,
            dh: DhGroup::Ecp384,
        };
        let old_sk_d = [0x5d; 48];
        let (g, ni, nr) = ([7u8; 48], [1u8; 32], [2u8; 32]);
        let keys = derive_rekeyed_ike_keys(PrfAlg::HmacSha384, &old_sk_d, &new, &g, &ni, &nr, 3, 4);

        let skeyseed = prf(PrfAlg::HmacSha384, &old_sk_d, &[&g[..], &ni[..], &nr[..]].concat());
        assert_eq!(skeyseed.len(), 48);
        let seed = [&ni[..], &nr[..], &3u64.to_be_bytes(), &4u64.to_be_bytes()].concat();
        let km = prf_plus(PrfAlg::HmacSha256, &skeyseed, &seed, 32 + 36 + 36 + 32 + 32);
        assert_eq!(&keys.sk_d[..], &km[..32]);
        assert!(keys.sk_ai.is_empty() && keys.sk_ar.is_empty());
        assert_eq!(&keys.sk_ei[..], &km[32..68]);
        assert_eq!(&keys.sk_er[..], &km[68..104]);
        assert_eq!(&keys.sk_pr[..], &km[136..]);
        // A different old prf gives different keys.
        let other = derive_rekeyed_ike_keys(PrfAlg::HmacSha256, &old_sk_d, &new, &g, &ni, &nr, 3, 4);
        assert_ne!(other.sk_d, keys.sk_d);
    }

    #[test]
    fn child_keymat_with_and_without_pfs() {
        let sk_d = [0x11; 32];
        let (ni, nr, g) = ([1u8; 16], [2u8; 16], [3u8; 32]);
        let plain = child_keymat(PrfAlg::HmacSha256, &sk_d, None, &ni, &nr, 72);
        assert_eq!(*plain, *prf_plus(PrfAlg::HmacSha256, &sk_d, &[&ni[..], &nr[..]].concat(), 72));
        let pfs = child_keymat(PrfAlg::HmacSha256, &sk_d, Some(&g), &ni, &nr, 72);
        assert_eq!(*pfs, *prf_plus(PrfAlg::HmacSha256, &sk_d, &[&g[..], &ni[..], &nr[..]].concat(), 72));
        assert_ne!(plain, pfs);

        // Cut in two: initiator-to-responder first (§2.17).
        let halves = child_sa_keymat(PrfAlg::HmacSha256, &sk_d, Some(&g), &ni, &nr, 36);
        assert_eq!(&halves.initiator_to_responder[..], &pfs[..36]);
        assert_eq!(&halves.responder_to_initiator[..], &pfs[36..72]);
    }

    #[test]
    fn debug_shows_lengths_only() {
        let suite = suites()[0];
        let keys = derive_ike_keys(&suite, &[1; 32], &[2; 32], &[3; 32], 1, 2);
        let shown = format!("{keys:?}");
        assert!(shown.contains("sk_d_len: 32"), "{shown}");
        // A Vec<u8> would show as a bracketed list of numbers.
        assert!(!shown.contains('['), "{shown}");
        let child = child_sa_keymat(PrfAlg::HmacSha256, &keys.sk_d, None, &[1; 16], &[2; 16], 36);
        assert_eq!(format!("{child:?}"), "ChildKeymat { per_direction_len: 36 }");
    }
}
