//! IKEv2's cryptographic suite (RFC 7296 §2.13–2.18, §3.14; RFC 5282 for
//! AES-GCM in IKE): the negotiable algorithms, prf and prf+, ephemeral
//! Diffie-Hellman, key derivation for IKE and child SAs, protection of SK
//! payloads, PSK authentication, NAT detection hashes and anti-DoS cookies.
//!
//! Everything here is sans-IO: randomness comes in as `&mut dyn RngCore`
//! (only the ECDH key generation draws from the OS itself, see `dh.rs`).
//! Secrets live in `Zeroizing` buffers or zeroize-on-drop types and have no
//! `Debug` that shows them; secret comparisons are constant-time.

mod algorithms;
mod auth;
mod cookie;
mod dh;
mod error;
mod keys;
mod modp;
mod nat;
mod prf;
mod sk;

pub use algorithms::{DhGroup, EncrAlg, IkeSuite, IntegAlg, PrfAlg, GCM_SALT_LEN};
pub use auth::{psk_auth, signed_octets, verify_psk_auth};
pub use cookie::{CookieSecret, COOKIE_LEN};
pub use dh::{plausible_public, DhPrivate};
pub use error::CryptoError;
pub use keys::{child_keymat, child_sa_keymat, derive_ike_keys, derive_rekeyed_ike_keys, ChildKeymat, IkeKeys};
pub use nat::nat_detection_hash;
pub use prf::{prf, prf_plus};
pub use sk::SkCrypto;

/// Fills `buf` from the caller's generator, turning its failure into an error
/// instead of the panic `fill_bytes` would give.
pub(crate) fn fill_random(rng: &mut dyn rand_core::RngCore, buf: &mut [u8]) -> Result<(), CryptoError> {
    rng.try_fill_bytes(buf).map_err(|_| CryptoError::Rng)
}

/// The pieces used together the way an IKE_SA_INIT + IKE_AUTH exchange uses
/// them, for every group and cipher: both sides must end with the same keys,
/// read each other's SK payloads and accept each other's AUTH.
#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn both_sides_of_an_exchange_agree() {
        let ciphers = [
            (EncrAlg::AesGcm16 { key_bits: 256 }, None),
            (EncrAlg::AesCbc { key_bits: 128 }, Some(IntegAlg::HmacSha256_128)),
        ];
        let groups = [DhGroup::Modp2048, DhGroup::Ecp256, DhGroup::Ecp384, DhGroup::Curve25519];
        for (encr, integ) in ciphers {
            for dh in groups {
                let suite = IkeSuite::new(encr, PrfAlg::HmacSha256, integ, dh).expect("consistent");
                let (ni, nr) = ([0x1a; 32], [0x2b; 32]);
                let (spi_i, spi_r) = (0x0011_2233_4455_6677, 0x8899_aabb_ccdd_eeff);
                let (i_dh, ke_i) = DhPrivate::generate(dh, &mut OsRng).expect("generate");
                let (r_dh, ke_r) = DhPrivate::generate(dh, &mut OsRng).expect("generate");
                let i_keys = derive_ike_keys(&suite, &i_dh.agree(&ke_r).expect("agree"), &ni, &nr, spi_i, spi_r);
                let r_keys = derive_ike_keys(&suite, &r_dh.agree(&ke_i).expect("agree"), &ni, &nr, spi_i, spi_r);
                assert_eq!(i_keys.sk_d, r_keys.sk_d);

                let i_sk = SkCrypto::new(&suite, &i_keys, true);
                let r_sk = SkCrypto::new(&suite, &r_keys, false);
                let header = [0x5c; 32];
                let body = i_sk.seal(&header, b"IDi AUTH SAi2 TSi TSr", &mut OsRng).expect("seal");
                assert_eq!(&r_sk.open(&header, &body).expect("open")[..], b"IDi AUTH SAi2 TSi TSr");

                let psk = b"shared between the two gateways";
                let init_request = b"the IKE_SA_INIT request as sent";
                let id_i = [1, 0, 0, 0, 198, 18, 0, 1];
                let octets_i = signed_octets(suite.prf, init_request, &nr, &i_keys.sk_pi, &id_i);
                let auth_i = psk_auth(suite.prf, psk, &octets_i);
                // The responder rebuilds the initiator's octets with its own SK_pi.
                let octets_check = signed_octets(suite.prf, init_request, &nr, &r_keys.sk_pi, &id_i);
                assert!(verify_psk_auth(suite.prf, psk, &octets_check, &auth_i));
                assert!(!verify_psk_auth(suite.prf, b"another key", &octets_check, &auth_i));
            }
        }
    }
}
