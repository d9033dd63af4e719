//! Ephemeral Diffie-Hellman for the KE payload, in the four groups of
//! `DhGroup`, with the IKEv2 wire formats:
//! - MODP: g^x big-endian, zero-padded to 256 bytes (RFC 7296 §3.4);
//! - ECP: x | y, each coordinate zero-padded to the field size, without the
//!   0x04 prefix of SEC1 (RFC 5903 §7); the shared secret is the x
//!   coordinate alone (RFC 5903 §9);
//! - Curve25519: the 32-byte u-coordinate (RFC 8031 §2).
//!
//! ECDH (P-256, P-384, X25519) is aws-lc-rs's: constant-time,
//! assembly-backed, and AWS-LC zeroes a private key when it frees it
//! (ring, used before, did not wipe its scalars). It validates that an ECP
//! peer value is a point on the curve and refuses an all-zero X25519
//! result; we check the lengths ourselves so the error is ours. AWS-LC
//! draws ECDH private keys from its own generator (aws-lc-rs takes a
//! `SystemRandom` for the API's sake and does not use it), so the caller's
//! rng serves the MODP group only. MODP-2048 lives in `modp.rs`.
//!
//! Invariant: a `DhPrivate` is used for exactly one agreement (`agree`
//! consumes it) and its secret is dropped with it (zeroized for MODP; by
//! AWS-LC for ECDH).

use aws_lc_rs::agreement;
use zeroize::Zeroizing;

use super::modp::ModpPrivate;
use super::{CryptoError, DhGroup};

/// SEC1 prefix of an uncompressed point, which the ECDH public keys carry
/// and IKEv2's KE payload leaves out.
const SEC1_UNCOMPRESSED: u8 = 0x04;

enum Secret {
    Modp(ModpPrivate),
    Ecdh(agreement::EphemeralPrivateKey),
}

/// Our ephemeral secret for one key exchange.
pub struct DhPrivate {
    group: DhGroup,
    secret: Secret,
}

impl std::fmt::Debug for DhPrivate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhPrivate").field("group", &self.group).finish_non_exhaustive()
    }
}

fn ecdh_algorithm(group: DhGroup) -> Option<&'static agreement::Algorithm> {
    match group {
        DhGroup::Modp2048 => None,
        DhGroup::Ecp256 => Some(&agreement::ECDH_P256),
        DhGroup::Ecp384 => Some(&agreement::ECDH_P384),
        DhGroup::Curve25519 => Some(&agreement::X25519),
    }
}

fn is_ecp(group: DhGroup) -> bool {
    matches!(group, DhGroup::Ecp256 | DhGroup::Ecp384)
}

/// Whether a peer's Key Exchange Data can be a public value of `group`:
/// its length, and for MODP its range. A responder asks before it spends a
/// DH on a request (`agree` checks all of it again, and the curve points).
pub fn plausible_public(group: DhGroup, data: &[u8]) -> bool {
    data.len() == group.public_len() && (group != DhGroup::Modp2048 || super::modp::in_range(data))
}

impl DhPrivate {
    /// A fresh secret and the Key Exchange Data to send in our KE payload.
    pub fn generate(group: DhGroup, rng: &mut dyn rand_core::RngCore) -> Result<(DhPrivate, Vec<u8>), CryptoError> {
        let Some(alg) = ecdh_algorithm(group) else {
            let (secret, public) = ModpPrivate::generate(rng)?;
            return Ok((DhPrivate { group, secret: Secret::Modp(secret) }, public));
        };
        let system = aws_lc_rs::rand::SystemRandom::new();
        let key = agreement::EphemeralPrivateKey::generate(alg, &system).map_err(|_| CryptoError::Rng)?;
        let public = key.compute_public_key().map_err(|_| CryptoError::Internal)?;
        let public = public.as_ref();
        let data = if is_ecp(group) {
            match public.split_first() {
                Some((&SEC1_UNCOMPRESSED, xy)) => xy.to_vec(),
                _ => return Err(CryptoError::Internal),
            }
        } else {
            public.to_vec()
        };
        if data.len() != group.public_len() {
            return Err(CryptoError::Internal);
        }
        Ok((DhPrivate { group, secret: Secret::Ecdh(key) }, data))
    }

    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// The shared secret g^ir from the peer's Key Exchange Data, after
    /// validating it. Consumes the secret: one exchange per key.
    pub fn agree(self, peer_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if peer_public.len() != self.group.public_len() {
            return Err(CryptoError::InvalidPublicKey);
        }
        match self.secret {
            Secret::Modp(secret) => secret.agree(peer_public),
            Secret::Ecdh(key) => {
                let alg = key.algorithm();
                let peer = if is_ecp(self.group) {
                    let mut sec1 = Vec::with_capacity(peer_public.len() + 1);
                    sec1.push(SEC1_UNCOMPRESSED);
                    sec1.extend_from_slice(peer_public);
                    sec1
                } else {
                    peer_public.to_vec()
                };
                let peer = agreement::UnparsedPublicKey::new(alg, peer);
                let shared = agreement::agree_ephemeral(key, &peer, CryptoError::InvalidPublicKey, |material| {
                    Ok(Zeroizing::new(material.to_vec()))
                })?;
                // AWS-LC already refuses the all-zero X25519 output (RFC 7748
                // §6.1, RFC 8031 §2.3); kept as a guard of our own contract.
                if shared.iter().all(|b| *b == 0) {
                    return Err(CryptoError::InvalidPublicKey);
                }
                Ok(shared)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::modp::p_bytes;
    use rand_core::{OsRng, RngCore};

    const GROUPS: [DhGroup; 4] = [DhGroup::Modp2048, DhGroup::Ecp256, DhGroup::Ecp384, DhGroup::Curve25519];

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).expect("test hex")
    }

    #[test]
    fn both_sides_agree_in_every_group() {
        for group in GROUPS {
            let (a, a_pub) = DhPrivate::generate(group, &mut OsRng).expect("generate");
            let (b, b_pub) = DhPrivate::generate(group, &mut OsRng).expect("generate");
            assert_eq!(a.group(), group);
            assert_eq!(a_pub.len(), group.public_len());
            assert_eq!(b_pub.len(), group.public_len());
            assert_ne!(a_pub, b_pub);
            let s1 = a.agree(&b_pub).expect("agree");
            let s2 = b.agree(&a_pub).expect("agree");
            assert_eq!(s1, s2, "{group:?}");
            assert_eq!(s1.len(), group.shared_len());
        }
    }

    #[test]
    fn wrong_lengths_are_refused() {
        for group in GROUPS {
            let (_, good) = DhPrivate::generate(group, &mut OsRng).expect("generate");
            for bad in [Vec::new(), good[1..].to_vec(), [&good[..], &[0]].concat(), [&[0x04], &good[..]].concat()] {
                let (ours, _) = DhPrivate::generate(group, &mut OsRng).expect("generate");
                assert_eq!(ours.agree(&bad).unwrap_err(), CryptoError::InvalidPublicKey, "{group:?} len {}", bad.len());
            }
        }
    }

    #[test]
    fn modp_refuses_degenerate_values() {
        let p = p_bytes();
        let mut p_minus_1 = p.clone();
        p_minus_1[255] -= 1; // p ends in 0xff
        let mut zero = vec![0u8; 256];
        let mut one = zero.clone();
        one[255] = 1;
        let all_ones = vec![0xff; 256];
        for bad in [&zero, &one, &p_minus_1, &p, &all_ones] {
            let (ours, _) = DhPrivate::generate(DhGroup::Modp2048, &mut OsRng).expect("generate");
            assert_eq!(ours.agree(bad).unwrap_err(), CryptoError::InvalidPublicKey);
        }
        // The smallest and largest values that pass: 2 and p-2.
        zero[255] = 2;
        let mut p_minus_2 = p.clone();
        p_minus_2[255] -= 2;
        for good in [&zero, &p_minus_2] {
            let (ours, _) = DhPrivate::generate(DhGroup::Modp2048, &mut OsRng).expect("generate");
            assert_eq!(ours.agree(good).expect("in range").len(), 256);
        }
    }

    #[test]
    fn modp_public_is_padded_and_below_p() {
        let p = p_bytes();
        for _ in 0..4 {
            let (_, public) = DhPrivate::generate(DhGroup::Modp2048, &mut OsRng).expect("generate");
            assert_eq!(public.len(), 256);
            assert!(public < p);
        }
    }

    /// A generator whose every byte is the same, to check that the MODP
    /// secret really comes from the rng given.
    struct Fixed(u8);
    impl RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            u32::from_ne_bytes([self.0; 4])
        }
        fn next_u64(&mut self) -> u64 {
            u64::from_ne_bytes([self.0; 8])
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.fill(self.0)
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            dest.fill(self.0);
            Ok(())
        }
    }

    #[test]
    fn modp_uses_the_callers_rng() {
        let (_, a) = DhPrivate::generate(DhGroup::Modp2048, &mut Fixed(7)).expect("generate");
        let (_, b) = DhPrivate::generate(DhGroup::Modp2048, &mut Fixed(7)).expect("generate");
        let (_, c) = DhPrivate::generate(DhGroup::Modp2048, &mut Fixed(8)).expect("generate");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// RFC 5903 §8.1 (P-256) and §8.2 (P-384). An ephemeral key, which our
    /// side uses, cannot be given a fixed private key, so the vectors are
    /// checked in two steps:
    /// 1. with the RustCrypto p256/p384 crates, the vector's private key i
    ///    gives the vector's gi (as x|y, our KE format) and, with the
    ///    vector's gr, the vector's shared x coordinate — this pins down the
    ///    wire format and the x-only shared secret;
    /// 2. our side exchanges with the vector's responder key r
    ///    (held by the p256/p384 crate): our `agree` on the vector's gr and
    ///    the crate's agreement on our KE data must give the same secret.
    #[test]
    fn rfc5903_ecp256() {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let i = unhex("C88F01F5 10D9AC3F 70A292DA A2316DE5 44E9AAB8 AFE84049 C62A9C57 862D1433");
        let gi = unhex(
            "DAD0B653 94221CF9 B051E1FE CA5787D0 98DFE637 FC90B9EF 945D0C37 72581180
             5271A046 1CDB8252 D61F1C45 6FA3E59A B1F45B33 ACCF5F58 389E0577 B8990BB3",
        );
        let r = unhex("C6EF9C5D 78AE012A 011164AC B397CE20 88685D8F 06BF9BE0 B283AB46 476BEE53");
        let gr = unhex(
            "D12DFB52 89C8D4F8 1208B702 70398C34 2296970A 0BCCB74C 736FC755 4494BF63
             56FBF3CA 366CC23E 8157854C 13C58D6A AC23F046 ADA30F83 53E74F33 039872AB",
        );
        let gir = unhex("D6840F6B 42F6EDAF D13116E0 E1256520 2FEF8E9E CE7DCE03 812464D0 4B9442DE");

        let sec1 = |xy: &[u8]| p256::PublicKey::from_sec1_bytes(&[&[0x04], xy].concat()).expect("on curve");
        let i_key = p256::SecretKey::from_slice(&i).expect("scalar");
        let i_pub = i_key.public_key().to_encoded_point(false);
        assert_eq!(&i_pub.as_bytes()[1..], &gi[..]);
        let shared = p256::ecdh::diffie_hellman(i_key.to_nonzero_scalar(), sec1(&gr).as_affine());
        assert_eq!(shared.raw_secret_bytes().as_slice(), &gir[..]);

        let r_key = p256::SecretKey::from_slice(&r).expect("scalar");
        let (ours, our_pub) = DhPrivate::generate(DhGroup::Ecp256, &mut OsRng).expect("generate");
        let theirs = p256::ecdh::diffie_hellman(r_key.to_nonzero_scalar(), sec1(&our_pub).as_affine());
        assert_eq!(*ours.agree(&gr).expect("agree"), theirs.raw_secret_bytes().as_slice());
    }

    #[test]
    fn rfc5903_ecp384() {
        use p384::elliptic_curve::sec1::ToEncodedPoint;
        let i = unhex(
            "099F3C70 34D4A2C6 99884D73 A375A67F 7624EF7C 6B3C0F16 0647B674 14DCE655
             E35B5380 41E649EE 3FAEF896 783AB194",
        );
        let gi = unhex(
            "667842D7 D180AC2C DE6F74F3 7551F557 55C7645C 20EF73E3 1634FE72 B4C55EE6
             DE3AC808 ACB4BDB4 C88732AE E95F41AA 9482ED1F C0EEB9CA FC498462 5CCFC23F
             65032149 E0E144AD A0241815 35A0F38E EB9FCFF3 C2C947DA E69B4C63 4573A81C",
        );
        let r = unhex(
            "41CB0779 B4BDB85D 47846725 FBEC3C94 30FAB46C C8DC5060 855CC9BD A0AA2942
             E0308312 916B8ED2 960E4BD5 5A7448FC",
        );
        let gr = unhex(
            "E558DBEF 53EECDE3 D3FCCFC1 AEA08A89 A987475D 12FD950D 83CFA417 32BC509D
             0D1AC43A 0336DEF9 6FDA41D0 774A3571 DCFBEC7A ACF31964 72169E83 8430367F
             66EEBE3C 6E70C416 DD5F0C68 759DD1FF F83FA401 42209DFF 5EAAD96D B9E6386C",
        );
        let gir = unhex(
            "11187331 C279962D 93D60424 3FD592CB 9D0A926F 422E4718 7521287E 7156C5C4
             D6031355 69B9E9D0 9CF5D4A2 70F59746",
        );

        let sec1 = |xy: &[u8]| p384::PublicKey::from_sec1_bytes(&[&[0x04], xy].concat()).expect("on curve");
        let i_key = p384::SecretKey::from_slice(&i).expect("scalar");
        assert_eq!(&i_key.public_key().to_encoded_point(false).as_bytes()[1..], &gi[..]);
        let shared = p384::ecdh::diffie_hellman(i_key.to_nonzero_scalar(), sec1(&gr).as_affine());
        assert_eq!(shared.raw_secret_bytes().as_slice(), &gir[..]);

        let r_key = p384::SecretKey::from_slice(&r).expect("scalar");
        let (ours, our_pub) = DhPrivate::generate(DhGroup::Ecp384, &mut OsRng).expect("generate");
        let theirs = p384::ecdh::diffie_hellman(r_key.to_nonzero_scalar(), sec1(&our_pub).as_affine());
        assert_eq!(*ours.agree(&gr).expect("agree"), theirs.raw_secret_bytes().as_slice());
    }

    #[test]
    fn implausible_key_shares_are_told_apart_before_any_dh() {
        for group in GROUPS {
            let (_, public) = DhPrivate::generate(group, &mut OsRng).expect("generate");
            assert!(plausible_public(group, &public), "{group:?}");
            assert!(!plausible_public(group, &public[1..]), "{group:?}: short");
            assert!(!plausible_public(group, &[public.as_slice(), &[0]].concat()), "{group:?}: long");
        }
        let p = p_bytes();
        let mut one = vec![0u8; 256];
        one[255] = 1;
        let mut p_minus_1 = p.clone();
        p_minus_1[255] -= 1;
        for bad in [vec![0u8; 256], one, p_minus_1, p] {
            assert!(!plausible_public(DhGroup::Modp2048, &bad));
        }
    }

    #[test]
    fn ecp_refuses_points_off_the_curve() {
        for group in [DhGroup::Ecp256, DhGroup::Ecp384] {
            let (_, mut public) = DhPrivate::generate(group, &mut OsRng).expect("generate");
            let last = public.len() - 1;
            public[last] ^= 1; // y changes, x stays: off the curve
            let (ours, _) = DhPrivate::generate(group, &mut OsRng).expect("generate");
            assert_eq!(ours.agree(&public).unwrap_err(), CryptoError::InvalidPublicKey);
            let (ours, _) = DhPrivate::generate(group, &mut OsRng).expect("generate");
            assert_eq!(ours.agree(&vec![0; group.public_len()]).unwrap_err(), CryptoError::InvalidPublicKey);
        }
    }

    /// RFC 7748 §6.1: our ephemeral key cannot be Alice's fixed one, so
    /// x25519-dalek checks the vector and then stands in for Bob against
    /// our side.
    #[test]
    fn rfc7748_x25519() {
        let a: [u8; 32] =
            unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").try_into().expect("32");
        let a_pub = unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let b: [u8; 32] =
            unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb").try_into().expect("32");
        let b_pub = unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let k = unhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        let a_secret = x25519_dalek::StaticSecret::from(a);
        let b_secret = x25519_dalek::StaticSecret::from(b);
        assert_eq!(x25519_dalek::PublicKey::from(&a_secret).as_bytes(), &a_pub[..]);
        assert_eq!(x25519_dalek::PublicKey::from(&b_secret).as_bytes(), &b_pub[..]);
        assert_eq!(a_secret.diffie_hellman(&b_pub_key(&b_pub)).as_bytes(), &k[..]);

        let (ours, our_pub) = DhPrivate::generate(DhGroup::Curve25519, &mut OsRng).expect("generate");
        let theirs = b_secret.diffie_hellman(&b_pub_key(&our_pub));
        assert_eq!(*ours.agree(&b_pub).expect("agree"), theirs.as_bytes());
    }

    fn b_pub_key(bytes: &[u8]) -> x25519_dalek::PublicKey {
        let arr: [u8; 32] = bytes.try_into().expect("32 bytes");
        x25519_dalek::PublicKey::from(arr)
    }

    /// A small-order point gives an all-zero X25519 result (RFC 8031 §2.3).
    #[test]
    fn x25519_refuses_small_order_points() {
        let mut one = [0u8; 32];
        one[0] = 1;
        for bad in [[0u8; 32], one] {
            let (ours, _) = DhPrivate::generate(DhGroup::Curve25519, &mut OsRng).expect("generate");
            assert_eq!(ours.agree(&bad).unwrap_err(), CryptoError::InvalidPublicKey);
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let (ours, _) = DhPrivate::generate(DhGroup::Modp2048, &mut OsRng).expect("generate");
        assert_eq!(format!("{ours:?}"), "DhPrivate { group: Modp2048, .. }");
    }
}
